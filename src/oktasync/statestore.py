"""The state store: what the engine knows the targets hold, between runs.

It is the last complete sync's run index, kept: ``<state dir>/<app>/mirror.db``. A full sync
reads everything into its run index (``run.db``) and writes the difference through to it as
each write lands; when the run completes, the file is renamed into place (no copy, whatever
the size). It then holds, per target, every account and membership the run read or wrote, and
Okta's users, groups and memberships as the run read them, with the position the next run
reads changes from (Okta's clock at the run's start, and later the System Log's ``next``).
An incremental sync works on it in place: it stores what changed in Okta, plans against the
targets as the store has them (never reading a target), and writes through as a full run
does, so the next run starts from what is true.

Why a file per app beside ``state.db`` and not inside it: it has the run index's schema, so
the full sync's reader, planner feed and write-through serve the incremental one unchanged;
it is large (every user of the app, per target) and disposable (``--full`` rebuilds it),
while ``state.db`` is small, shared by the apps and holds ownership, which nothing rebuilds.
Claims reach ``state.db`` before the rows that depend on them reach the store (the
checkpoint's order), so a crash between the two leaves a claim with a stale row, which the
next run repairs by planning that user again.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from oktasync.changes import Position, too_old
from oktasync.config import AppConfig, Config
from oktasync.errors import UsageError
from oktasync.runstore import SCHEMA_VERSION, RunStore

MIRROR_DB = "mirror.db"


def mirror_path(state_dir: Path, app: str) -> Path:
    return state_dir / app / MIRROR_DB


@dataclass(frozen=True)
class Incremental:
    """An incremental run may go ahead on this store, from this position."""

    path: Path
    position: Position
    unfinished: bool  # the last incremental run on it did not finish (its intents are kept)


@dataclass(frozen=True)
class Full:
    """A full sync, and why (for the summary)."""

    reason: str


def choose(app: AppConfig, config: Config, *, full: bool,
           now: datetime | None = None) -> Incremental | Full:
    """Incremental when a complete sync left a store for these settings, whose position is
    still in Okta's System Log; else a full sync, with the reason. A store that cannot be
    read, or was written by another version, refuses the run (nothing is read or written):
    ``--full`` rebuilds it."""
    path = mirror_path(config.state_dir, app.name)
    if full:
        return Full("asked for (--full)")
    if not path.exists():
        return Full("no complete sync yet")
    meta = _read_meta(path)
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(f"state store {path} was written by another version of oktasync "
                         f"(format {meta.get('schema_version')}, this one reads "
                         f"{SCHEMA_VERSION}); run `oktasync sync --full` to rebuild it")
    if meta.get("app") != app.name:
        raise UsageError(f"state store {path} belongs to app {meta.get('app')!r}; run "
                         "`oktasync sync --full` to rebuild it")
    if meta.get("fingerprint") != app.fingerprint(config.targets):
        return Full("the settings changed since the last complete sync")
    okta_time = meta.get("okta_time")
    if not isinstance(okta_time, str):
        return Full("the last complete sync did not record Okta's time")
    log_next = meta.get("log_next")
    position = Position(okta_time, log_next if isinstance(log_next, str) else None)
    if too_old(position, now or datetime.now(UTC)):
        return Full(f"the last complete sync read Okta as of {okta_time}, longer ago than "
                    "the System Log keeps events (90 days)")
    return Incremental(path, position, bool(meta.get("unfinished")))


def _read_meta(path: Path) -> dict[str, object]:
    try:
        store = RunStore.open_existing(path)
    except (sqlite3.Error, OSError) as exc:
        raise UsageError(f"state store {path} is damaged ({exc}); run `oktasync sync --full` "
                         "to rebuild it") from None
    try:
        return store.meta()
    finally:
        store.close()


def keep(run_index: Path, state_dir: Path, app: str) -> None:
    """A complete full run's index becomes the app's state store (one rename)."""
    target = mirror_path(state_dir, app)
    for suffix in ("-wal", "-shm"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    os.replace(run_index, target)


def forget(state_dir: Path, app: str) -> None:
    """A full run a guard stopped may have read short listings: no store, so the next run
    is a full one too (and meets the same guard until Okta or ``--force`` settles it)."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(mirror_path(state_dir, app)) + suffix).unlink(missing_ok=True)


def copy_for_dry_run(path: Path, to: Path) -> RunStore:
    """A dry run plans on a copy: the store itself is never changed by one."""
    source = sqlite3.connect(path)
    try:
        copy = sqlite3.connect(to)
        try:
            source.backup(copy)
        finally:
            copy.close()
    finally:
        source.close()
    return RunStore(to)
