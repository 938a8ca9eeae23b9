"""Where Okta stood when the last complete sync read it: Okta's own clock (the ``Date`` of the
run's first Okta answer), kept across a resume, recorded only when the run completed — the
point an incremental sync reads changes from (issue 11)."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import anyio
import pytest

from oktasync.engine import SyncOptions, run_sync
from tests.engine.harness import load, okta_time_now, revoke_confluence_after, write_config
from tests.engine.test_sync_behaviour import APP, estate, quiet


def recorded(state_dir: Path) -> dict[str, str]:
    """Okta's time as each app's state store (``<app>/mirror.db``) keeps it."""
    found = {}
    for mirror in state_dir.glob("*/mirror.db"):
        db = sqlite3.connect(mirror)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'okta_time'").fetchone()
        finally:
            db.close()
        if row is not None:
            found[mirror.parent.name] = json.loads(row[0])
    return found


@pytest.mark.asyncio
async def test_a_complete_sync_records_okta_time_at_its_start(tmp_path: Path) -> None:
    async with estate(users=40) as running:
        path = write_config(tmp_path, running)
        before = okta_time_now()
        dry = await run_sync(load(path), SyncOptions(dry_run=True), echo=quiet)
        assert dry.exit_code == 0 and recorded(tmp_path / "state") == {}, "a dry run: none"
        result = await run_sync(load(path), SyncOptions(), echo=quiet)
        after = okta_time_now()
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        okta_time = recorded(tmp_path / "state")[APP]
        assert before <= okta_time <= after, (before, okta_time, after)
        last = json.loads((tmp_path / "state" / APP / "last-run.json").read_text())
        assert last["okta_time"] == okta_time
        status = await anyio.run_process(
            [sys.executable, "-m", "oktasync", "status", "--config", str(path)], check=True)
        assert f"read Okta as of {okta_time}" in status.stdout.decode()


@pytest.mark.asyncio
async def test_a_resumed_run_records_the_time_its_first_segment_read_okta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with estate(users=120, seed=3, groups=8) as running:
        restore = revoke_confluence_after(running, monkeypatch, 60)
        config = load(write_config(tmp_path, running))
        first_started = okta_time_now()
        stopped = await run_sync(config, SyncOptions(), echo=quiet)
        assert stopped.exit_code == 2 and recorded(tmp_path / "state") == {}
        await anyio.sleep(1.1)  # the resumed segment's first answer is a second later
        restore()
        resumed_at = okta_time_now()
        resumed = await run_sync(config, SyncOptions(resume=True), echo=quiet)
        assert resumed.exit_code == 0, resumed.summaries[APP]["notes"]
        okta_time = recorded(tmp_path / "state")[APP]
        assert first_started <= okta_time < resumed_at, (first_started, okta_time, resumed_at)
