"""End to end: a full sync into emulated Jira and Confluence, judged by the tests' oracle."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from oktasync.engine import SyncOptions, run_sync
from oktasync_emulators.runner import EmulatorOptions, RunningEmulators, running_emulators
from tests.engine import oracle
from tests.engine.harness import (
    load,
    read_requests,
    states,
    stats,
    write_config,
    write_requests,
)

SETTINGS = oracle.Settings(default_groups={"jira": ("jira-software-users",),
                                           "confluence": ("confluence-users",)})


def quiet(*_: Any) -> None:
    """Summaries are checked through last-run.json, not printed during tests."""


@pytest_asyncio.fixture
async def estate() -> AsyncIterator[RunningEmulators]:
    options = EmulatorOptions(users=400, groups=25, seed=7, ports=(0, 0, 0), okta_rate_scale=0)
    async with running_emulators(options) as running:
        yield running


async def assert_targets_match(running: RunningEmulators, before: dict[str, Any],
                               synced_as: dict[str, dict[str, str]] | None = None) -> None:
    now = await states(running)
    for target in ("jira", "confluence"):
        expected = oracle.expected_accounts(
            now["okta"], oracle.target_accounts(before[target]), target, SETTINGS,
            (synced_as or {}).get(target))
        actual = oracle.target_accounts(now[target])
        problems = oracle.differences(expected, actual)
        assert problems == [], f"{target}: {len(problems)} differences, first: {problems[:5]}"


@pytest.mark.asyncio
async def test_full_sync_reaches_the_oracle_state_and_a_second_run_writes_nothing(
    estate: RunningEmulators, tmp_path: Path,
) -> None:
    before = await states(estate)
    config = load(write_config(tmp_path, estate))
    result = await run_sync(config, SyncOptions(), echo=quiet)
    summary = result.summaries["test-app"]
    assert result.exit_code in (0, 1), summary["notes"]
    await assert_targets_match(estate, before)
    created = summary["targets"]["jira"]["counts"]["users_created"]
    assert created > 200, "most of 400 generated users are active and should be created"
    collisions = summary["targets"]["jira"]["counts"]["collision"]
    assert collisions >= 2, "the generator makes at least one colliding pair"

    first = await stats(estate)
    again = await run_sync(config, SyncOptions(full=True), echo=quiet)
    second = await stats(estate)
    for target in ("jira", "confluence"):
        assert write_requests(second[target]) == write_requests(first[target]), target
        assert read_requests(second[target]) > read_requests(first[target]), target
    assert again.exit_code == result.exit_code
    # and the incremental sync that follows (the default now) reads no target and writes nothing
    third = await run_sync(config, SyncOptions(), echo=quiet)
    assert third.summaries["test-app"]["kind"] == "incremental"
    after_third = await stats(estate)
    for target in ("jira", "confluence"):
        assert write_requests(after_third[target]) == write_requests(second[target]), target
        assert read_requests(after_third[target]) == read_requests(second[target]), target
    saved = json.loads((tmp_path / "state" / "test-app" / "last-run.json").read_text())
    assert saved["run_id"] == third.summaries["test-app"]["run_id"]
