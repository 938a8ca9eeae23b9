"""Which runs can be resumed, and whether this one may start: the checkpoint's policy.

The checkpoint itself is the run index (``<state dir>/<app>/run.db``, see runstore.py). This
module decides, before anything is read or written, what a ``sync`` may do with it:

* plain ``sync`` with an unfinished checkpoint: refuse (exit 2), name it, offer ``--resume``
  or ``--restart``;
* ``--resume`` with nothing to resume: refuse (exit 2), writing nothing;
* a checkpoint that is truncated, corrupt, from another version, another app or other
  settings (the fingerprint): refuse with the file named and ``--restart`` as the way out —
  never a silent fresh start that loses track of what was written.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oktasync import __version__
from oktasync.config import AppConfig, Config
from oktasync.errors import UsageError
from oktasync.runstore import SCHEMA_VERSION, RunStore

RUN_DB = "run.db"


def checkpoint_path(state_dir: Path, app: str) -> Path:
    return state_dir / app / RUN_DB


@dataclass
class Interrupted:
    """What an unfinished run left behind."""

    path: Path
    meta: dict[str, Any]

    def describe(self) -> str:
        started = self.meta.get("started", "?")
        return (f"run {self.meta.get('run_id', '?')} (started {started}, stopped in phase "
                f"{self.meta.get('phase', '?')})")


def read_checkpoint(path: Path) -> Interrupted | None:
    """The interrupted run at ``path``; None when there is none; UsageError when unreadable."""
    if not path.exists():
        return None
    try:
        store = RunStore.open_existing(path)
    except (sqlite3.Error, OSError) as exc:
        raise UsageError(f"checkpoint {path} is unreadable ({exc}); run again with --restart "
                         "to discard it and start a fresh full sync") from None
    try:
        return Interrupted(path, store.meta())
    finally:
        store.close()


def check_compatible(found: Interrupted, app: AppConfig, config: Config) -> None:
    """A resume must continue the same plan: same version of the file, app and settings."""
    meta, where = found.meta, found.path
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(f"checkpoint {where} was written by another version of oktasync "
                         f"(format {meta.get('schema_version')}, this one reads "
                         f"{SCHEMA_VERSION}); run with --restart to start afresh")
    if meta.get("app") != app.name:
        raise UsageError(f"checkpoint {where} belongs to app {meta.get('app')!r}, not "
                         f"{app.name!r}; run with --restart to start afresh")
    if meta.get("fingerprint") != app.fingerprint(config.targets):
        raise UsageError(f"checkpoint {where} was made with different settings for app "
                         f"{app.name!r} (username rule, scope, switches or targets changed "
                         "since); resuming would mix two plans. Restore the settings, or run "
                         "with --restart to start a fresh full sync")


def decide(config: Config, apps: list[AppConfig], *, resume: bool, restart: bool,
           dry_run: bool) -> dict[str, Interrupted | None]:
    """Per app, the checkpoint to resume (or None for a fresh run); raises before any I/O
    with the servers when the request cannot be honoured."""
    if resume and restart:
        raise UsageError("--resume and --restart exclude each other")
    found = {a.name: read_checkpoint(checkpoint_path(config.state_dir, a.name))
             if not restart else None for a in apps}
    if dry_run:
        return dict.fromkeys(found)
    if resume:
        if not any(found.values()):
            names = ", ".join(a.name for a in apps)
            raise UsageError(f"nothing to resume: no interrupted run for {names}")
        for app in apps:
            checkpoint = found[app.name]
            if checkpoint is not None:
                check_compatible(checkpoint, app, config)
        return found
    waiting = [(name, c) for name, c in found.items() if c is not None]
    if waiting:
        lines = "; ".join(f"app {name}: {c.describe()}" for name, c in waiting)
        raise UsageError(f"an interrupted sync can be resumed ({lines}). Run again with "
                         "--resume to continue it, or --restart to discard it and start afresh")
    return found


def start_meta(app: AppConfig, config: Config, run_id: str) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "oktasync_version": __version__,
            "app": app.name, "run_id": run_id, "fingerprint": app.fingerprint(config.targets),
            "targets": _rule_of_each_target(app, config),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "started_epoch": time.time(), "phase": "starting"}


def _rule_of_each_target(app: AppConfig, config: Config) -> dict[str, int]:
    """Target name -> the index of its username rule among the app's distinct rules (the
    pipeline numbers them the same way), so a progress report counts in the right order."""
    rules = {name: app.rule_for(config.targets[name]) for name in app.targets}
    distinct = list(dict.fromkeys(rules.values()))
    return {name: distinct.index(rule) for name, rule in rules.items()}


def progress(path: Path) -> dict[str, Any] | None:
    """For ``oktasync status``: phase, counts, rate of an interrupted or running run."""
    found = read_checkpoint(path)
    if found is None:
        return None
    store = RunStore.open_existing(path)
    try:
        meta = store.meta()
        total = store.okta_user_count()
        targets: dict[str, dict[str, int]] = {}
        for target, rule in meta.get("targets", {}).items():
            mark, done = store.cursor(f"target:{target}:users")
            users_done: int = total if done else store.users_up_to(rule, mark)
            targets[target] = {"users_done": users_done, "users_total": total,
                               "writes": sum(store.landed_counts(target).values())}
    finally:
        store.close()
    elapsed = max(1e-6, meta.get("checkpointed_at", time.time()) - meta.get("started_epoch",
                                                                            time.time()))
    users_done_total = sum(t["users_done"] for t in targets.values())
    return {"run_id": meta.get("run_id"), "phase": meta.get("phase"),
            "started": meta.get("started"), "okta_users_read": total, "targets": targets,
            "users_per_s": round(users_done_total / elapsed, 1), "resumable": True}
