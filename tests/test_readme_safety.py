"""The README's "Safety guarantees" table names, for each promise, the tests that hold it:
each named test must exist, so the table cannot point at a test that was renamed or removed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def safety_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return text.split("### Safety guarantees\n", 1)[1].split("\n### ", 1)[0]


def defined_in(module: str) -> set[str]:
    tree = ast.parse((REPO / "tests" / "engine" / f"{module}.py").read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")}


def test_every_test_the_safety_table_names_exists() -> None:
    named = re.findall(r"`(test_\w+)::(test_\w+)`", safety_section())
    assert len(named) >= 25, "the table names the tests that hold each guarantee"
    missing = [f"{module}::{test}" for module, test in named if test not in defined_in(module)]
    assert missing == []
    rows = [line for line in safety_section().splitlines() if line.startswith("| **")]
    assert rows and all("`test_" in row for row in rows), "every guarantee names a test"
