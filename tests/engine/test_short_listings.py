"""A listing that ends early without an error is never taken for the truth.

Servers (and the proxies before them) sometimes end a listing early and say nothing: a page
without ``next``, Jira's ``isLast`` too soon. Where the API offers a count (Okta's
``expand=stats`` member counts, Jira's ``total``, Confluence's ``totalCount``) the engine checks
what it read against it; where it does not (Okta's user listing), it compares with the last
complete run and stops removals when a listing shrank beyond ``max_listing_shrink``. Membership
removals have a guard of their own, ``max_membership_removals``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from oktasync.engine import SyncOptions, run_sync
from tests.engine.harness import break_answers, load, states, stats, write_config, write_counts
from tests.engine.test_sync_behaviour import (
    APP,
    TARGETS,
    assert_oracle,
    estate,
    ordinary_groups,
    quiet,
    synced,
)

REMOVALS = ("DELETE /rest/api/2/group/user", "PUT /rest/api/2/user",
            "DELETE /rest/api/user/{username}/group/{groupName}",
            "PUT /rest/api/admin/user/{username}/disable")


def removal_writes(stat: dict[str, Any]) -> int:
    counted = {t: write_counts(stat[t]) for t in TARGETS}
    return sum(n for t in TARGETS for k, n in counted[t].items() if k in REMOVALS)


def notes(result: Any) -> str:
    return " ".join(result.summaries[APP]["notes"])


@pytest.mark.asyncio
async def test_an_okta_member_listing_cut_short_is_caught_by_the_groups_member_count(
    tmp_path: Path,
) -> None:
    async with estate(users=1050, groups=4, memberships=4000) as running:
        config = load(write_config(tmp_path, running))
        assert (await run_sync(config, SyncOptions(), echo=quiet)).exit_code == 0
        okta = (await states(running))["okta"]
        big = next(g for g in okta["groups"] if g["profile"]["name"] == "R&D/Platform")
        assert len(okta["memberships"][big["id"]]) > 1000  # two pages of members
        before = await stats(running)

        await break_answers(running.okta_url, "GET /api/v1/groups/{id}/users", "end-listing",
                            path=f"/api/v1/groups/{big['id']}/users")
        cut = await run_sync(config, SyncOptions(full=True), echo=quiet)
        after = await stats(running)
        assert after["okta"]["faults"]["altered"] == 1
        assert cut.exit_code == 4, notes(cut)
        assert "R&D/Platform" in notes(cut) and "1000" in notes(cut)
        assert removal_writes(after) == removal_writes(before), "memberships were removed"

        resumed = await run_sync(config, SyncOptions(resume=True), echo=quiet)
        assert resumed.exit_code == 0, notes(resumed)
        assert removal_writes(await stats(running)) == removal_writes(before)


@pytest.mark.asyncio
async def test_target_listings_cut_short_are_caught_by_their_totals(tmp_path: Path) -> None:
    async with estate(users=1050, groups=4, memberships=4000) as running:
        # enough active accounts for two pages of Confluence's active-user listing
        running.confluence.preload(users=[{"name": f"filler{i:04d}", "email": f"f{i}@x.example",
                                           "displayName": f"Filler {i}"} for i in range(600)])
        config = load(write_config(tmp_path, running))
        assert (await run_sync(config, SyncOptions(), echo=quiet)).exit_code == 0
        for url, endpoint, what in (
            (running.confluence_url, "GET /rest/api/admin/users/list/active", "active-user"),
            (running.jira_url, "GET /rest/api/2/group/member", "members of"),
        ):
            await break_answers(url, endpoint, "end-listing")
            cut = await run_sync(config, SyncOptions(restart=True), echo=quiet)
            assert cut.exit_code == 4, (endpoint, notes(cut))
            assert what in notes(cut) and "ended early" in notes(cut), notes(cut)
        assert (await stats(running))["jira"]["faults"]["altered"] == 1
        assert (await stats(running))["confluence"]["faults"]["altered"] == 1


@pytest.mark.asyncio
async def test_an_okta_user_listing_that_shrank_stops_every_removal(tmp_path: Path) -> None:
    async with estate(users=600) as running:
        config = load(write_config(tmp_path, running, extra_app="deactivate_missing = true"))
        assert (await run_sync(config, SyncOptions(), echo=quiet)).exit_code == 0
        now = await states(running)
        before = await stats(running)
        # the second page says it is the last: 400 of 600 users
        await break_answers(running.okta_url, "GET /api/v1/users", "end-listing", skip=1)
        shrunk = await run_sync(config, SyncOptions(full=True), echo=quiet)
        assert shrunk.exit_code == 3, notes(shrunk)
        assert "max_listing_shrink" in notes(shrunk) and "600" in notes(shrunk)
        assert removal_writes(await stats(running)) == removal_writes(before)
        after = await states(running)
        for target in TARGETS:  # every account active before still is
            was = {u["name"] for u in now[target]["users"] if u["active"]}
            assert was <= {u["name"] for u in after[target]["users"] if u["active"]}, target

        again = await run_sync(config, SyncOptions(), echo=quiet)
        assert again.exit_code == 0, notes(again)
        assert removal_writes(await stats(running)) == removal_writes(before)


@pytest.mark.asyncio
async def test_membership_removals_have_a_guard_of_their_own(tmp_path: Path) -> None:
    async with estate(users=120) as running:
        # this test is about one guard: the listing-shrink guard is set out of its way
        config = load(write_config(tmp_path, running, extra_app='max_listing_shrink = "50%"'))
        assert (await run_sync(config, SyncOptions(), echo=quiet)).exit_code == 0
        now = await states(running)
        scope = ordinary_groups(now["okta"])
        people = synced(now["okta"], now)
        removed = 0
        for user in people[:40]:
            for gid in sorted(scope):
                if user["id"] in now["okta"]["memberships"][gid]:
                    running.okta.directory.remove_membership(gid, user["id"])
                    removed += 1
        assert removed > 30
        before = await stats(running)
        held = await run_sync(config, SyncOptions(), echo=quiet)
        assert held.exit_code == 3, notes(held)
        assert "max_membership_removals" in notes(held)
        assert removal_writes(await stats(running)) == removal_writes(before)

        forced = await run_sync(config, SyncOptions(force=True), echo=quiet)
        assert forced.exit_code == 0, notes(forced)
        await assert_oracle(running, now)
