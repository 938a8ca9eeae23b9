"""What a target really says about an account, and nothing more.

Confluence's lookups and member listings do not state whether an account is deactivated (the
emulator answers as the REST reference documents: no status field); an account's status comes
only from the active-user listing or from the answers to enable / disable. Jira's "already
exists" on a create names an account the engine has not seen: whose it is must be asked, never
assumed (a foreign account is not taken over).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from oktasync.engine import SyncOptions, run_sync
from tests.engine.harness import (
    break_answers,
    load,
    states,
    stats,
    status_count,
    write_config,
)
from tests.engine.test_sync_behaviour import (
    APP,
    TARGETS,
    account_json,
    active_on,
    assert_oracle,
    counts,
    estate,
    ordinary,
    problems,
    quiet,
    synced,
    username,
)


@pytest.mark.asyncio
async def test_confluence_reactivates_an_account_whose_okta_user_is_active_again(
    tmp_path: Path,
) -> None:
    async with estate(users=60) as running:
        config = load(write_config(tmp_path, running))
        first = await run_sync(config, SyncOptions(), echo=quiet)
        assert first.exit_code == 0, first.summaries[APP]["notes"]
        now = await states(running)
        person = synced(now["okta"], now)[0]
        name = username(person)

        running.okta.directory.set_status(person["id"], "SUSPENDED")
        second = await run_sync(config, SyncOptions(), echo=quiet)
        assert second.exit_code == 0, second.summaries[APP]["notes"]
        suspended = await states(running)
        for target in TARGETS:
            assert not active_on(suspended[target], name), target

        running.okta.directory.set_status(person["id"], "ACTIVE")
        third = await run_sync(config, SyncOptions(), echo=quiet)
        assert third.exit_code == 0, third.summaries[APP]["notes"]
        await assert_oracle(running, suspended)
        back = await states(running)
        for target in TARGETS:
            assert active_on(back[target], name), target
            assert counts(third, target)["users_activated"] == 1, target
            assert counts(third, target)["users_created"] == 0, target


@pytest.mark.asyncio
async def test_an_existing_jira_account_the_listing_missed_is_not_taken_over(
    tmp_path: Path,
) -> None:
    async with estate(users=60) as running:
        okta = (await states(running))["okta"]
        victim = ordinary(okta)[0]
        name = username(victim)
        # a thousand other accounts fill /user/list's first page; then somebody else's account
        # at the username the Okta user maps to, with another e-mail
        running.jira.preload(users=[{"name": f"filler{i:04d}", "email": f"f{i}@x.example",
                                     "displayName": f"Filler {i}"} for i in range(1000)])
        running.jira.preload(users=[{"name": name, "email": "someone.else@elsewhere.example",
                                     "displayName": "Someone Else"}])
        before = await states(running)
        # Jira's /user/list ends early: its first page says it is the last
        await break_answers(running.jira_url, "GET /rest/api/2/user/list", "end-listing")
        config = load(write_config(tmp_path, running, targets=("jira",)))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert (await stats(running))["jira"]["faults"]["altered"] == 1

        after = await states(running)
        account = account_json(after["jira"], name)
        assert account is not None
        assert account["email"] == "someone.else@elsewhere.example"
        assert account["displayName"] == "Someone Else"
        assert account["groups"] == [], "the foreign account was given the Okta user's groups"
        conflicts = [p for p in problems(result, "jira", "conflict") if p["username"] == name]
        assert conflicts and "someone.else@elsewhere.example" in conflicts[0]["reason"]
        created = status_count((await stats(running))["jira"], 201, "POST /rest/api/2/user")
        assert counts(result, "jira")["users_created"] == created

        # the next run (a complete listing) leaves it alone too: never owned, never rewritten
        again = await run_sync(config, SyncOptions(), echo=quiet)
        assert again.exit_code == 0, again.summaries[APP]["notes"]
        account = account_json((await states(running))["jira"], name)
        assert account is not None and account["email"] == "someone.else@elsewhere.example"
        assert account["displayName"] == "Someone Else" and account["groups"] == []
        await assert_oracle(running, before, targets=("jira",), owned=set())
