"""Rate governance against the emulators' real limiters (correctness, not timing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from oktasync.engine import SyncOptions, run_sync
from oktasync_emulators.atlassian_base import AtlassianRate
from oktasync_emulators.runner import EmulatorOptions, running_emulators
from tests.engine import oracle
from tests.engine.harness import load, states, stats, write_config

SETTINGS = oracle.Settings(default_groups={"jira": ("jira-software-users",),
                                           "confluence": ("confluence-users",)})


def quiet(*_: Any) -> None:
    """Summaries are read from the result."""


@pytest.mark.asyncio
async def test_token_buckets_on_both_targets_are_respected_with_almost_no_429(
    tmp_path: Path,
) -> None:
    options = EmulatorOptions(users=80, groups=8, seed=4, ports=(0, 0, 0), okta_rate_scale=0,
                              atlassian_rate=AtlassianRate(capacity=20, fill_rate=100,
                                                           interval_s=1))
    async with running_emulators(options) as running:
        before = await states(running)
        result = await run_sync(load(write_config(tmp_path, running)), SyncOptions(),
                                echo=quiet)
        assert result.exit_code == 0, result.summaries["test-app"]["notes"]
        now = await states(running)
        counted = await stats(running)
    for target in ("jira", "confluence"):
        expected = oracle.expected_accounts(now["okta"], oracle.target_accounts(before[target]),
                                            target, SETTINGS)
        assert oracle.differences(expected, oracle.target_accounts(now[target])) == []
        requests = counted[target]["requests"]
        assert requests > 150, "enough requests to run the bucket dry many times"
        assert counted[target]["rate_limited"] <= requests // 100, counted[target]["status"]


@pytest.mark.asyncio
async def test_okta_share_is_never_exceeded_and_no_429(tmp_path: Path) -> None:
    # 2 s windows; users bucket 600/min -> 20 a window; okta_max_share 0.5 -> 10 pages a window
    options = EmulatorOptions(users=3000, groups=6, seed=2, ports=(0, 0, 0),
                              okta_rate_scale=1, okta_window_s=2)
    async with running_emulators(options) as running:
        config = load(write_config(tmp_path, running, extra_app="okta_max_share = 0.5"))
        result = await run_sync(config, SyncOptions(dry_run=True), echo=quiet)
        assert result.exit_code == 0, result.summaries["test-app"]["notes"]
        okta = (await stats(running))["okta"]
    assert okta["rate_limited"] == 0, okta["status"]
    limits = okta["window_limits"]
    users_windows = okta["windows"]["users"]
    assert len(users_windows) >= 1, "the listing spanned more than one window"
    for bucket, counts in okta["windows"].items():
        allowed = int(limits[bucket] * 0.5)
        assert all(n <= allowed for n in counts), (bucket, counts, allowed)
    assert max(users_windows) == int(limits["users"] * 0.5), "the share was used, not wasted"
