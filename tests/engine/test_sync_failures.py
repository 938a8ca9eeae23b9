"""Writes and lookups that keep failing after retries: reported per item, the run goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from oktasync.engine import SyncOptions, run_sync
from oktasync.errors import Backoff, RetryPolicy
from oktasync_emulators.runner import EmulatorOptions, running_emulators
from tests.engine.harness import get_json, load, write_config


def quiet(*_: Any) -> None:
    """Summaries are read from the result."""


# Give up after 3 quick attempts instead of minutes of backoff: the policy is passed in.
FAST_RETRIES = RetryPolicy(max_attempts=3, backoff=Backoff(0.01, 2, 0.05))


@pytest.mark.asyncio
async def test_a_write_failing_after_retries_is_reported_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = EmulatorOptions(users=60, groups=8, seed=5, ports=(0, 0, 0), okta_rate_scale=0)
    async with running_emulators(options) as running:
        store = running.jira.store
        add_member = store.add_member

        def broken_for_one_group(group: Any, user: Any) -> bool:  # test-only: a server bug
            if group.name.lower() == "jira-software-users":
                raise RuntimeError("simulated server error")
            return bool(add_member(group, user))

        monkeypatch.setattr(store, "add_member", broken_for_one_group)
        result = await run_sync(load(write_config(tmp_path, running)),
                                SyncOptions(retry=FAST_RETRIES), echo=quiet)
        summary = result.summaries["test-app"]
        assert result.exit_code == 1, summary["notes"]
        jira = summary["targets"]["jira"]
        failed = [p for p in jira["problems"] if p["kind"] == "failed"]
        assert failed and all(p.get("group") == "jira-software-users" for p in failed)
        assert all("500" in p["reason"] for p in failed), failed[:2]
        assert jira["counts"]["users_created"] > 20, "the run went on after the failures"
        assert summary["targets"]["confluence"]["counts"]["memberships_added"] > 20
        stat = await get_json(running.jira_url + "/_emulator/stats")
        assert stat["status"].get("500", 0) >= 3 * len(failed), "each was retried"
