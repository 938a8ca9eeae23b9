"""Each run's record in the state directory: its JSON report, its retention, the listing.

Every run (full, incremental, from events, dry) leaves ``<app>/runs/<run id>.json`` — the
summary as printed, with where its audit CSV, findings and drift files are — so `oktasync
history` and `oktasync report` answer from files alone, without a server. Run ids begin with
their start time in UTC to the microsecond, so their order is the runs' order. Only the newest
``[state] keep_runs`` runs of an app keep their files; the run a checkpoint can resume is never
pruned.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from oktasync.errors import UsageError
from oktasync.state import read_json, write_json_atomically

RUNS = "runs"
# the files a run leaves, by the run id in their names
RUN_FILES = (f"{RUNS}/{{id}}.json", f"{RUNS}/{{id}}.audit.csv", "findings-{id}.csv",
             "drift-{id}.csv", "plan-{id}.csv")
_ID = r"(?P<id>\d{8}T\d{6}[-.\dZ]*)"
_PATTERNS = [re.compile(re.escape(f).replace(r"\{id\}", _ID) + "$") for f in RUN_FILES]


def report_path(app_dir: Path, run_id: str) -> Path:
    return app_dir / RUNS / f"{run_id}.json"


def audit_path(app_dir: Path, run_id: str) -> Path:
    return app_dir / RUNS / f"{run_id}.audit.csv"


def save_report(app_dir: Path, summary: dict[str, Any]) -> None:
    """The run's report, written whole (atomically) at the end of each of its segments."""
    path = report_path(app_dir, str(summary["run_id"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, summary)


def run_ids(app_dir: Path) -> list[str]:
    """Every run id an app's files name, oldest first."""
    found: set[str] = set()
    for folder in (app_dir, app_dir / RUNS):
        if folder.is_dir():
            for path in folder.iterdir():
                relative = path.relative_to(app_dir).as_posix()
                for pattern in _PATTERNS:
                    match = pattern.match(relative)
                    if match:
                        found.add(match.group("id"))
    return sorted(found)


def prune(app_dir: Path, keep: int, protected: set[str]) -> list[str]:
    """Delete the files of all but the newest ``keep`` runs (never a protected one: the run
    being written, the one a checkpoint can resume); the ids deleted."""
    ids = run_ids(app_dir)
    old = [i for i in ids[:max(0, len(ids) - keep)] if i not in protected]
    for run_id in old:
        for name in RUN_FILES:
            (app_dir / name.format(id=run_id)).unlink(missing_ok=True)
    return old


def reports(app_dir: Path) -> Iterator[dict[str, Any]]:
    """The reports kept, oldest first (a damaged file is skipped: history is a view)."""
    folder = app_dir / RUNS
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        try:
            report = read_json(path)
        except UsageError:  # damaged: left out of the view (``report`` names it)
            continue
        if isinstance(report, dict):
            yield report


def find_report(state_dir: Path, apps: list[str], run_id: str) -> dict[str, Any] | None:
    """The report of ``run_id`` in any of ``apps``; None when no app has it."""
    if not re.fullmatch(r"[\w.\-]+", run_id):
        return None
    for app in apps:
        report = read_json(report_path(state_dir / app, run_id)) \
            if report_path(state_dir / app, run_id).exists() else None
        if isinstance(report, dict):
            return report
    return None
