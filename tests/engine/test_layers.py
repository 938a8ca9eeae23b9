"""Imports point one way: each engine module imports only from the layers below its own.

A new module must be placed in ``LAYERS`` (the test names it), so the order stays a decision,
not an accident. ARCHITECTURE.md's table lists the modules in this order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import oktasync

# top first; a module may import from any later layer, never from its own or an earlier one
LAYERS: list[set[str]] = [
    {"__main__"},
    {"cli"},
    {"demo", "serve", "console"},
    {"hooks", "poller", "metrics", "webconsole"},
    {"engine"},
    {"incremental"},
    {"pipeline"},
    {"removals"},
    {"writer", "statestore"},
    {"listings", "checkpointer", "changes", "drift"},
    {"targets.jira", "targets.confluence", "targets.scim", "targets.dryrun", "checkpoint"},
    {"targets.base", "okta_source", "report", "runstore", "concurrency", "history", "network",
     "oauth"},
    {"http", "ownership", "planner", "state", "config", "inbox", "audit"},
    {"settings"},
    {"logs"},
    {"ratelimit", "secrets", "db", "errors", "models", "text", "usernames", "signals", "__init__",
     "progress", "passwords",
     "schedules",
     "targets.__init__"},
]
ROOT = Path(oktasync.__file__).parent


def engine_modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts): p
            for p in ROOT.rglob("*.py") if "emulators" not in p.relative_to(ROOT).parts}


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            if name == "oktasync":
                found.add("__init__")
            elif name.startswith("oktasync.") and not name.startswith("oktasync.emulators"):
                found.add(name.removeprefix("oktasync."))
    return found


def layer_of(module: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if module in layer)


def test_every_module_has_a_layer() -> None:
    placed = set().union(*LAYERS)
    assert sorted(set(engine_modules()) - placed) == [], "place each new module in LAYERS"


def test_imports_point_down_only() -> None:
    upward = [f"{module} -> {imported}"
              for module, path in engine_modules().items()
              for imported in imports_of(path)
              if imported in set().union(*LAYERS) and layer_of(imported) <= layer_of(module)]
    assert upward == []
