"""What a scenario is, what it hands back, and how a result is stored.

A scenario is a name, a one-line title and a ``run(ctx)`` that returns ``Figure``s (the numbers
the README shows, each with its target and the command that produced it) plus free-form
``details`` (raw stats, per-run measurements) that stay in the JSON. Keeping scenarios this
small is what lets later ones (latency-bound comparisons, rate-bound, Okta-bound, 1M-user scale)
be one module each.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.machine import machine_info
from benchmarks.procs import BIN, foreign_processes

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


@dataclass
class Figure:
    """One measured number, what it should be, and the commands that produced it."""

    name: str
    value: float
    unit: str
    commands: list[str]
    target: str = ""  # human form, e.g. "< 20 s"; empty: no target, just a figure
    met: bool | None = None  # None when there is no target
    note: str = ""


@dataclass
class Outcome:
    """What ``run`` returns: the README's figures and everything else worth keeping."""

    figures: list[Figure]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What every scenario gets: a scratch directory, the size switch, and profiling."""

    work_dir: Path
    quick: bool = False
    ci: bool = False  # the smallest sizes: CI runs every scenario to check it works, no timing
    profile_dir: Path | None = None  # run the engine under cProfile, .prof files here
    foreign_seen: set[str] = field(default_factory=set)  # busy processes seen mid-scenario

    def note_foreign(self, processes: list[str]) -> None:
        """Record busy processes a scenario saw around a measurement (flags the result)."""
        self.foreign_seen.update(processes)

    def pick(self, full: T, quick: T, ci: T) -> T:
        """The size this run uses: CI's, ``--quick``'s or the real one."""
        return ci if self.ci else quick if self.quick else full

    def scratch(self, name: str) -> Path:
        path = self.work_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class Scenario:
    """A named benchmark; ``run`` must stop by itself (every wait has a deadline)."""

    name: str
    title: str
    run: Callable[[Context], Outcome]


def display_command(argv: Sequence[str], scratch: Path | None = None) -> str:
    """A command line as a reader re-types it: venv paths as ``.venv/bin/``, temp as $TMP."""
    text = shlex.join(argv)
    text = text.replace(str(BIN) + "/", ".venv/bin/")
    if scratch is not None:
        text = text.replace(str(scratch), "$TMP")
    return text


def environment_sample() -> dict[str, Any]:
    """Load average and other busy processes now: was the machine ours alone?"""
    return {
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "foreign_processes": foreign_processes(),
    }


def engine_revision() -> dict[str, Any]:
    """The commit measured, and whether src/ had uncommitted changes (others edit it)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=30, check=False)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"),
            "src_uncommitted": sorted(git("status", "--porcelain", "--", "src").splitlines())}


def result_document(
    scenario: Scenario,
    outcome: Outcome,
    ctx: Context,
    started: float,
    wall_s: float,
    environment: dict[str, Any],
    revision: dict[str, Any],
) -> dict[str, Any]:
    """The JSON stored per scenario: figures, details, machine and date together."""
    return {
        "scenario": scenario.name,
        "title": scenario.title,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": machine_info(),
        "engine_revision": revision,  # taken when the scenario started
        "environment": environment,
        "quick": ctx.quick,
        "profiled": ctx.profile_dir is not None,
        "scenario_wall_s": round(wall_s, 1),
        "figures": [asdict(f) for f in outcome.figures],
        "details": outcome.details,
    }


def write_result(document: dict[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{document['scenario']}.json"
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def load_results(results_dir: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    """Every stored result, in file-name order (the README's order follows the registry)."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(results_dir.glob("*.json"))]
