"""Users deleted in Okta lose access: the ownership record knows whom an account was for.

Deactivated and then deleted between two syncs, an Okta user vanishes from every listing; the
account the engine synced for that user is deactivated (sync-semantics "Which users are
active"), within the same guards, and even without ``deactivate_missing``. Accounts the app
never synced stay as they are.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from oktasync.engine import SyncOptions, run_sync
from tests.engine.harness import load, states, write_config
from tests.engine.test_sync_behaviour import (
    APP,
    TARGETS,
    active_on,
    assert_oracle,
    counts,
    estate,
    quiet,
    synced,
    username,
)


@pytest.mark.asyncio
async def test_a_user_deleted_in_okta_is_deactivated_on_every_target(tmp_path: Path) -> None:
    async with estate(users=80) as running:
        config = load(write_config(tmp_path, running))
        first = await run_sync(config, SyncOptions(), echo=quiet)
        assert first.exit_code == 0, first.summaries[APP]["notes"]
        now = await states(running)
        leaver, bystander = synced(now["okta"], now)[:2]
        okta = running.okta.directory
        okta.delete_user(leaver["id"])  # deactivated ...
        okta.delete_user(leaver["id"])  # ... then deleted
        assert okta.user(leaver["id"]) is None

        second = await run_sync(config, SyncOptions(), echo=quiet)
        assert second.exit_code == 0, second.summaries[APP]["notes"]
        after = await assert_oracle(running, now, deleted={username(leaver)})
        for target in TARGETS:
            assert not active_on(after[target], username(leaver)), target
            assert active_on(after[target], username(bystander)), target
            assert counts(second, target)["users_deactivated"] == 1, target

        third = await run_sync(config, SyncOptions(), echo=quiet)
        assert third.exit_code == 0
        for target in TARGETS:
            assert counts(third, target)["users_deactivated"] == 0, target


@pytest.mark.asyncio
async def test_deleting_many_okta_users_at_once_trips_the_deactivation_guard(
    tmp_path: Path,
) -> None:
    async with estate(users=80) as running:
        config = load(write_config(tmp_path, running))
        assert (await run_sync(config, SyncOptions(), echo=quiet)).exit_code == 0
        now = await states(running)
        gone = synced(now["okta"], now)[:20]
        for user in gone:
            running.okta.directory.delete_user(user["id"])
            running.okta.directory.delete_user(user["id"])
        held = await run_sync(config, SyncOptions(), echo=quiet)
        assert held.exit_code == 3, held.summaries[APP]["notes"]
        after = await states(running)
        for target in TARGETS:
            assert all(active_on(after[target], username(u)) for u in gone), target
        forced = await run_sync(config, SyncOptions(force=True), echo=quiet)
        assert forced.exit_code == 0, forced.summaries[APP]["notes"]
        await assert_oracle(running, now, deleted={username(u) for u in gone})
