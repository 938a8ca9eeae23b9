"""The engine under test: a config pointing at a running ``EmulatorProcess``, and one sync.

The config mirrors what ``oktasync demo`` writes (one app, both targets, default settings)
so a benchmark measures what an administrator gets out of the box; scenarios may add settings
through ``extra_app`` / ``extra_target`` / ``pipeline`` rather than editing the template.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.procs import (
    EmulatorProcess,
    Measured,
    foreign_processes,
    get_json,
    oktasync_bin,
    run_measured,
)

APP = "bench"

CONFIG = """
[[app]]
name = "{app}"
okta_url = "{okta}"
{okta_auth}
username_regex = "(.*)@.*"
username_replacement = "$1"
targets = {targets}
{extra_app}

[target.jira]
kind = "jira-dc"
url = "{jira}"
token = "{jira_token}"
default_groups = ["jira-software-users"]
protected_users = ["admin"]
{extra_target}

[target.confluence]
kind = "confluence-dc"
url = "{confluence}"
token = "{confluence_token}"
default_groups = ["confluence-users"]
protected_users = ["admin"]
{extra_target}

[state]
dir = "{state}"
{state_extra}

[pipeline]
{pipeline}
{extra_sections}
"""


def write_config(
    folder: Path,
    emulators: EmulatorProcess,
    *,
    extra_app: str = "",
    extra_target: str = "",
    pipeline: str = "",
    state_extra: str = "",
    okta_auth: str = "",
    targets: str = '["jira", "confluence"]',
    extra_sections: str = "",
) -> Path:
    """A TOML config for one app syncing the emulated Okta into both emulated targets;
    ``okta_auth``: the lines that authenticate to Okta instead of the emulator's API token."""
    info = emulators.info
    path = folder / "bench.toml"
    path.write_text(
        CONFIG.format(
            app=APP,
            okta=info["okta"]["url"],
            okta_auth=okta_auth or f'okta_token = "{info["okta"]["token"]}"',
            targets=targets,
            extra_sections=extra_sections,
            jira=info["jira"]["url"],
            jira_token=info["jira"]["token"],
            confluence=info["confluence"]["url"],
            confluence_token=info["confluence"]["token"],
            state=(folder / "state").as_posix(),
            extra_app=extra_app,
            extra_target=extra_target,
            pipeline=pipeline,
            state_extra=state_extra,
        ),
        encoding="utf-8",
    )
    return path


@dataclass
class SyncRun:
    """One ``oktasync sync``: the process's cost and the run summary it wrote."""

    measured: Measured
    last_run: dict[str, Any]
    emulator_cpu_s: float  # the emulator process's CPU during the sync (is it the bottleneck?)
    stats: dict[str, Any]  # /_emulator/stats of the three emulators after the sync
    foreign: list[str]  # other busy processes seen just before or after (skewed figure?)

    def requests(self, service: str) -> int:
        return int(self.stats[service]["requests"])


@dataclass
class WatchedSync:
    """A sync seen by ``watching_syncs``: what the targets held before it, and all three
    servers after it (a sync only reads Okta)."""

    folder: Path
    argv: list[str]
    exit_code: int
    dry_run: bool
    stats: dict[str, Any]
    before: dict[str, Any] = field(default_factory=dict)  # jira, confluence
    after: dict[str, Any] = field(default_factory=dict)


_WATCHERS: list[list[WatchedSync]] = []


@contextlib.contextmanager
def watching_syncs() -> Iterator[list[WatchedSync]]:
    """Record every ``run_sync`` made meanwhile, with the servers' state around it, so a test
    can judge a scenario's end states with its own oracle (the states cost requests and
    time, so a benchmark that is not watched never fetches them)."""
    seen: list[WatchedSync] = []
    _WATCHERS.append(seen)
    try:
        yield seen
    finally:
        _WATCHERS.remove(seen)


def _server_states(emulators: EmulatorProcess,
                   services: tuple[str, ...] = ("okta", "jira", "confluence")) -> dict[str, Any]:
    return {s: get_json(emulators.url(s) + "/_emulator/state", timeout_s=120.0)
            for s in services}


def sync_argv(config: Path, extra: list[str], profile_to: Path | None) -> list[str]:
    """``oktasync sync``, or the same under cProfile (the module entry, same process count)."""
    args = ["sync", "--config", str(config), *extra]
    if profile_to is None:
        return [oktasync_bin(), *args]
    return [sys.executable, "-m", "cProfile", "-o", str(profile_to), "-m", "oktasync", *args]


def run_sync(
    emulators: EmulatorProcess,
    folder: Path,
    *,
    extra: list[str] | None = None,
    timeout_s: float = 1800.0,
    profile_to: Path | None = None,
    env: dict[str, str] | None = None,
    terminal: bool = False,
    **config: str,
) -> SyncRun:
    """Write the config, run one sync to its end, collect summary, stats and emulator CPU.

    ``env`` adds variables for the sync process (``PYTHONPATH`` runs another checkout's
    engine against the same emulators)."""
    path = write_config(folder, emulators, **config)
    argv = sync_argv(path, extra or [], profile_to)
    dry_run = "--dry-run" in (extra or [])
    watched = bool(_WATCHERS) and not dry_run  # a dry run's targets stay as they were
    before = _server_states(emulators, ("jira", "confluence")) if watched else {}
    foreign = foreign_processes()
    cpu_before = emulators.cpu_seconds()
    measured = run_measured(argv, timeout_s=timeout_s, log_dir=folder, label="sync", env=env,
                            terminal=terminal)
    emulator_cpu = emulators.cpu_seconds() - cpu_before
    foreign += foreign_processes()
    last_run_path = folder / "state" / APP / "last-run.json"
    last_run = (
        json.loads(last_run_path.read_text(encoding="utf-8")) if last_run_path.exists() else {}
    )
    run = SyncRun(
        measured=measured,
        last_run=last_run,
        emulator_cpu_s=emulator_cpu,
        stats=emulators.stats(),
        foreign=sorted(set(foreign)),
    )
    for seen in _WATCHERS:
        seen.append(WatchedSync(folder, argv, measured.exit_code, dry_run, run.stats, before,
                                _server_states(emulators) if watched else {}))
    return run
