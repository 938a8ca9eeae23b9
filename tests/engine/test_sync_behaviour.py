"""End to end, one behaviour of the semantics page at a time: faults, changes in Okta between
runs, Jira 9, adoption, protected users, the guards, refusals and the dry run.

Every end state is judged by the tests' oracle (``oracle.py``, written from the semantics page,
independent of the planner); every count of requests comes from the emulators'
``/_emulator/stats``. Directories are small (60-260 users) so the whole file runs in well under
a minute.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from oktasync.engine import RunResult, SyncOptions, run_sync
from oktasync.errors import UsageError
from oktasync_emulators.directory import generate_directory
from oktasync_emulators.okta import OktaError
from oktasync_emulators.runner import EmulatorOptions, RunningEmulators, running_emulators
from tests.engine import oracle
from tests.engine.harness import (
    endpoint_requests,
    load,
    read_requests,
    revoke_confluence_after,
    states,
    stats,
    status_count,
    write_config,
    write_counts,
    write_requests,
)

APP = "test-app"
TARGETS = ("jira", "confluence")
DEFAULT_GROUPS = {"jira": ("jira-software-users",), "confluence": ("confluence-users",)}
SETTINGS = oracle.Settings(default_groups=DEFAULT_GROUPS)


def quiet(*_: Any) -> None:
    """Summaries are checked through the run's result, not printed during tests."""


@asynccontextmanager
async def estate(**overrides: Any) -> AsyncIterator[RunningEmulators]:
    options: dict[str, Any] = {"users": 120, "groups": 12, "seed": 7, "ports": (0, 0, 0),
                               "okta_rate_scale": 0}
    options.update(overrides)
    async with running_emulators(EmulatorOptions(**options)) as running:
        yield running


# -- judging ----------------------------------------------------------------------------------

async def assert_oracle(
    running: RunningEmulators, before: dict[str, Any], *,
    synced_as: dict[str, dict[str, str]] | None = None, owned: set[str] | None = None,
    targets: Iterable[str] = TARGETS, settings: oracle.Settings = SETTINGS,
    deleted: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The targets are exactly as the oracle says; returns the states it judged."""
    now = await states(running)
    for target in targets:
        expected = oracle.expected_accounts(
            now["okta"], oracle.target_accounts(before[target]), target, settings,
            (synced_as or {}).get(target), owned=owned, deleted=deleted)
        problems = oracle.differences(expected, oracle.target_accounts(now[target]))
        assert problems == [], f"{target}: {len(problems)} differences, first: {problems[:5]}"
    return now


def counts(result: RunResult, target: str, app: str = APP) -> dict[str, int]:
    return dict(result.summaries[app]["targets"][target]["counts"])


def problems(result: RunResult, target: str, kind: str, app: str = APP) -> list[dict[str, Any]]:
    return [p for p in result.summaries[app]["targets"][target]["problems"] if p["kind"] == kind]


def username(user: dict[str, Any], settings: oracle.Settings = SETTINGS) -> str:
    return oracle.username_of(user["profile"]["login"], settings.regex, settings.replacement)


def ordinary(okta: dict[str, Any], status: str = "ACTIVE") -> list[dict[str, Any]]:
    """Okta users with ``status`` whose username is unique and allowed on both targets."""
    taken = Counter(username(u) for u in okta["users"])
    return sorted((u for u in okta["users"]
                   if u["status"] == status and taken[username(u)] == 1
                   and u["profile"].get("email") and username(u) not in SETTINGS.protected
                   and not any(oracle.FORBIDS[t](username(u)) for t in TARGETS)),
                  key=lambda u: u["id"])


def synced(okta: dict[str, Any], now: dict[str, Any]) -> list[dict[str, Any]]:
    """ACTIVE ordinary Okta users that have an account on both targets."""
    names = {t: {u["name"].lower() for u in now[t]["users"]} for t in TARGETS}
    return [u for u in ordinary(okta) if all(username(u) in names[t] for t in TARGETS)]


def ordinary_groups(okta: dict[str, Any]) -> dict[str, str]:
    """In-scope Okta groups (id -> name) that are no default group and no target forbids."""
    defaults = {g for names in DEFAULT_GROUPS.values() for g in names}
    return {g["id"]: g["profile"]["name"] for g in okta["groups"]
            if oracle.in_scope(g, SETTINGS) and g["profile"]["name"] not in defaults
            and not any(oracle.GROUP_FORBIDS[t](g["profile"]["name"]) for t in TARGETS)}


def groups_of(okta: dict[str, Any], user_id: str) -> set[str]:
    return {gid for gid, members in okta["memberships"].items() if user_id in members}


def account_json(state: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A target user's JSON in ``/_emulator/state`` plus the groups it is in (sorted)."""
    user = next((u for u in state["users"] if u["name"].lower() == name.lower()), None)
    if user is None:
        return None
    member_of = sorted(g["name"] for g in state["groups"]
                       if any(m.lower() == name.lower() for m in g["members"]))
    return {**user, "groups": member_of}


def active_on(state: dict[str, Any], name: str) -> bool:
    account = account_json(state, name)
    assert account is not None, f"{name} is missing"
    return bool(account["active"])


# -- 1. faults ----------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_faults_on_every_server_still_reach_the_oracle_state_and_rerun_writes_nothing(
    tmp_path: Path,
) -> None:
    # seed 18: the fault injectors' draws put a 503 among Okta's first requests, so each of the
    # three servers is seen failing even though Okta gets only a few dozen requests.
    async with estate(users=70, seed=18, fail_rate=0.05, ambiguous_rate=0.02) as running:
        before = await states(running)
        config = load(write_config(tmp_path, running))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        await assert_oracle(running, before)
        assert counts(result, "jira")["users_created"] > 40

        first = await stats(running)
        for server in ("okta", *TARGETS):
            assert first[server]["faults"]["unavailable"] > 0, f"no 503 injected on {server}"
        lost = sum(first[t]["faults"]["lost_answer"] for t in TARGETS)
        assert lost >= 5, f"only {lost} writes answered 504 after being applied"
        # the summary saw the retries the faults caused
        assert sum(result.summaries[APP]["targets"][t]["requests"]["retries"]
                   for t in TARGETS) >= lost

        again = await run_sync(config, SyncOptions(full=True), echo=quiet)
        second = await stats(running)
        assert again.exit_code == 0, again.summaries[APP]["notes"]
        for target in TARGETS:
            assert write_requests(second[target]) == write_requests(first[target]), target
            assert read_requests(second[target]) > read_requests(first[target]), target

        # removals and a rename under the same faults: every write stays safe to repeat
        now = await states(running)
        people, scope = synced(now["okta"], now), ordinary_groups(now["okta"])
        for user in people[:2]:
            running.okta.directory.set_status(user["id"], "SUSPENDED")
        for user in people[2:8]:
            for gid in groups_of(now["okta"], user["id"]) & scope.keys():
                running.okta.directory.remove_membership(gid, user["id"])
        mover = people[8]
        running.okta.directory.update_profile(mover["id"], {"login": "moved.person@example.com"})
        third = await run_sync(config, SyncOptions(), echo=quiet)
        assert third.exit_code == 0, third.summaries[APP]["notes"]
        moved = {mover["id"]: username(mover)}
        await assert_oracle(running, now, synced_as={"jira": moved, "confluence": moved})
        for target in TARGETS:
            assert counts(third, target)["users_deactivated"] == 2
            assert counts(third, target)["memberships_removed"] >= 3
        assert counts(third, "jira")["users_renamed"] == 1


# -- 2. changes in Okta between runs ------------------------------------------------------------

@pytest.mark.asyncio
@pytest.mark.parametrize("jira_version", ["10.3.4", "9.12.15"])
async def test_changes_in_okta_between_runs_reach_the_oracle_state(
    tmp_path: Path, jira_version: str,
) -> None:
    async with estate(users=150, jira_version=jira_version) as running:
        okta = running.okta.directory
        # an inactive Okta user whose (inactive) accounts exist already: adopted by e-mail in
        # the first run, re-activated in the second
        sleeper = ordinary((await states(running))["okta"], "SUSPENDED")[0]
        sleeper_name = username(sleeper)
        for emulator in (running.jira, running.confluence):
            emulator.preload(users=[{"name": sleeper_name, "email": sleeper["profile"]["email"],
                                     "displayName": oracle.display_name(sleeper["profile"]),
                                     "active": False}])
        before = await states(running)
        config = load(write_config(tmp_path, running))
        first = await run_sync(config, SyncOptions(), echo=quiet)
        assert first.exit_code == 0, first.summaries[APP]["notes"]
        now = await assert_oracle(running, before)
        assert not active_on(now["jira"], sleeper_name)

        people = synced(now["okta"], now)
        scope = ordinary_groups(now["okta"])
        suspended, gone, edited = people[0:3], people[3], people[4]
        for user in suspended:
            okta.set_status(user["id"], "SUSPENDED")
        okta.set_status(gone["id"], "DEPROVISIONED")
        okta.set_status(sleeper["id"], "ACTIVE")
        okta.update_profile(edited["id"], {"displayName": "Edited Person",
                                           "email": "edited.person@example.com"})
        leaver = next(u for u in people[5:] if groups_of(now["okta"], u["id"]) & scope.keys())
        left_group = sorted(groups_of(now["okta"], leaver["id"]) & scope.keys())[0]
        okta.remove_membership(left_group, leaver["id"])
        joiner = next(u for u in people[5:] if u is not leaver
                      and scope.keys() - groups_of(now["okta"], u["id"]))
        joined_group = sorted(scope.keys() - groups_of(now["okta"], joiner["id"]))[0]
        okta.add_membership(joined_group, joiner["id"])
        mover = next(u for u in people[5:] if u not in (leaver, joiner))
        okta.update_profile(mover["id"], {"login": "moved.person@example.com"})
        renamed = next(gid for gid in sorted(scope) if gid not in (left_group, joined_group)
                       and now["okta"]["memberships"][gid])
        okta.rename_group(renamed, "Renamed Team")
        # a newcomer whose login gives a synced user's username: neither is written, not even
        # the synced one's suspension
        twin = next(u for u in people[5:] if u not in (leaver, joiner, mover))
        newcomer = okta.add_user({"login": f"{username(twin)}@twin.example.net",
                                  "email": "newcomer@twin.example.net",
                                  "firstName": "New", "lastName": "Twin"})
        okta.set_status(twin["id"], "SUSPENDED")

        second = await run_sync(config, SyncOptions(), echo=quiet)
        notes = second.summaries[APP]["notes"]
        assert second.exit_code == 0, notes
        moved = {mover["id"]: username(mover)}
        after = await assert_oracle(running, now, synced_as={"jira": moved, "confluence": moved})

        jira, confluence = counts(second, "jira"), counts(second, "confluence")
        for target, c in (("jira", jira), ("confluence", confluence)):
            assert c["users_deactivated"] == 4, (target, c)
            assert c["users_activated"] == 1, (target, c)
            assert c["memberships_removed"] == 1, (target, c)
            assert c["memberships_added"] >= 2, (target, c)  # the joiner + the sleeper's defaults
            assert c["users_created"] == 0, (target, c)
            assert c["failed"] == c["refused"] == 0, (target, c)
        assert jira["users_renamed"] == 1 and jira["users_updated"] == 1, jira
        for target in TARGETS:
            assert active_on(after[target], username(twin)), target
            collided = {p["okta_id"] for p in problems(second, target, "collision")
                        if p["username"] == username(twin)}
            assert collided == {twin["id"], newcomer.id}, target
        for target in TARGETS:  # an Okta group rename is reported, not applied
            said = [p["reason"] for p in problems(second, target, "notice")]
            assert any(scope[renamed] in r and "Renamed Team" in r for r in said), said
            assert counts(second, target)["groups_created"] == 1  # the new name is in scope
            assert scope[renamed] in {g["name"] for g in after[target]["groups"]}
        assert jira["drift"] == 0, jira
        # Jira renamed the account; Confluence kept it and said so
        assert account_json(after["jira"], "moved.person") is not None
        assert account_json(after["jira"], username(mover)) is None
        assert account_json(after["confluence"], username(mover)) is not None
        assert account_json(after["confluence"], "moved.person") is None
        notices = problems(second, "confluence", "notice")
        assert [p["okta_id"] for p in notices if "login" in p["reason"]] == [mover["id"]]
        # Confluence cannot change a name or an e-mail: drift, once per value, not a failure
        assert confluence["users_renamed"] == confluence["users_updated"] == 0, confluence
        drift = problems(second, "confluence", "drift")
        assert confluence["drift"] == 2 and {p["okta_id"] for p in drift} == {edited["id"]}
        assert any("edited.person@example.com" in p["reason"] for p in drift)
        assert any("Edited Person" in p["reason"] for p in drift)


# -- 3. Jira 9 ----------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_jira_9_without_user_list_uses_member_listings_and_lookups(tmp_path: Path) -> None:
    async with estate(users=120, jira_version="9.12.15") as running:
        before = await states(running)
        config = load(write_config(tmp_path, running))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        await assert_oracle(running, before)
        first = await stats(running)
        assert endpoint_requests(first["jira"], "GET /rest/api/2/user/list") == 0
        assert status_count(first["jira"], 404, "GET /rest/api/2/user") > 50  # lookups: missing
        assert endpoint_requests(first["jira"], "GET /rest/api/2/group/member") > 0

        again = await run_sync(config, SyncOptions(full=True), echo=quiet)
        second = await stats(running)
        assert again.exit_code == 0
        assert endpoint_requests(second["jira"], "GET /rest/api/2/user/list") == 0
        assert endpoint_requests(second["jira"], "GET /rest/api/2/user") > \
            endpoint_requests(first["jira"], "GET /rest/api/2/user")
        for target in TARGETS:
            assert write_requests(second[target]) == write_requests(first[target]), target


# -- 4. adoption, 5. protected users ------------------------------------------------------------

@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["email-match", "always", "never"])
async def test_existing_accounts_are_adopted_as_adopt_existing_says(
    tmp_path: Path, mode: str,
) -> None:
    async with estate(users=80) as running:
        okta_state = (await states(running))["okta"]
        scope = ordinary_groups(okta_state)
        people = ordinary(okta_state)
        same_email, other_email = people[:3], people[3:5]
        spare_group = {u["id"]: sorted(scope.keys() - groups_of(okta_state, u["id"]))[0]
                       for u in same_email + other_email}
        preload = []
        for i, user in enumerate(same_email):  # upper-case name, upper-case e-mail, inactive
            email = user["profile"]["email"]
            preload.append({"name": username(user).upper() if i == 0 else username(user),
                            "email": email.upper() if i == 1 else email,
                            "displayName": "Old Name", "active": i != 2})
        for user in other_email:
            preload.append({"name": username(user), "email": "someone.else@elsewhere.example",
                            "displayName": "Somebody Else", "active": True})
        memberships = [(username(u), scope[spare_group[u["id"]]])
                       for u in same_email + other_email]
        memberships += [(username(u), "legacy-team") for u in same_email + other_email]
        running.jira.preload(users=preload, memberships=memberships)
        before = await states(running)

        config = load(write_config(tmp_path, running, targets=("jira",),
                                   extra_app=f'adopt_existing = "{mode}"'))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        settings = oracle.Settings(default_groups=DEFAULT_GROUPS, adopt=mode)
        after = await assert_oracle(running, before, owned=set(), targets=("jira",),
                                    settings=settings)

        adopted, conflicting = {
            "email-match": (same_email, other_email), "always": (same_email + other_email, []),
            "never": ([], same_email + other_email)}[mode]
        for user in adopted:  # adopted: profile follows Okta, active, groups as in Okta
            account = account_json(after["jira"], username(user))
            assert account is not None and account["active"]
            assert account["displayName"] == oracle.display_name(user["profile"])
            assert account["email"] == user["profile"]["email"]
            assert scope[spare_group[user["id"]]] not in account["groups"]
            assert "legacy-team" in account["groups"]  # out of scope: never removed
            assert "jira-software-users" in account["groups"]
        for user in conflicting:  # conflicts: byte for byte as they were
            assert account_json(after["jira"], username(user)) == \
                account_json(before["jira"], username(user))
        found = problems(result, "jira", "conflict")
        assert {(p["okta_id"], p["login"]) for p in found} == \
            {(u["id"], u["profile"]["login"]) for u in conflicting}
        assert counts(result, "jira")["conflict"] == len(conflicting)
        assert counts(result, "jira")["users_activated"] == (same_email[2] in adopted)


@pytest.mark.asyncio
async def test_an_okta_user_mapping_to_a_protected_user_is_skipped(tmp_path: Path) -> None:
    async with estate(users=60) as running:
        intruder = running.okta.directory.add_user(
            {"login": "Admin@example.com", "email": "admin@example.com",
             "firstName": "Not", "lastName": "Theadmin"})
        group = sorted(ordinary_groups((await states(running))["okta"]))[0]
        running.okta.directory.add_membership(group, intruder.id)
        before = await states(running)
        config = load(write_config(tmp_path, running))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        after = await assert_oracle(running, before)
        for target in TARGETS:
            assert account_json(after[target], "admin") == account_json(before[target], "admin")
            skipped = [p for p in problems(result, target, "skipped")
                       if p["okta_id"] == intruder.id]
            assert len(skipped) == 1 and "protected" in skipped[0]["reason"], skipped


@pytest.mark.asyncio
async def test_an_empty_username_is_skipped_and_reported(tmp_path: Path) -> None:
    async with estate(users=30) as running:
        nameless = running.okta.directory.add_user(  # the username rule leaves nothing
            {"login": "@example.com", "email": "nameless@example.com",
             "firstName": "No", "lastName": "Name"})
        before = await states(running)
        result = await run_sync(load(write_config(tmp_path, running)), SyncOptions(),
                                echo=quiet)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        await assert_oracle(running, before)
        for target in TARGETS:
            empty = [p for p in problems(result, target, "skipped")
                     if p["okta_id"] == nameless.id]
            assert len(empty) == 1 and "empty" in empty[0]["reason"], (target, empty)
            assert empty[0]["login"] == "@example.com"


# -- 6. max_deactivations -----------------------------------------------------------------------

@pytest.mark.asyncio
async def test_max_deactivations_stops_every_deactivation_until_forced(tmp_path: Path) -> None:
    async with estate(users=100) as running:
        config = load(write_config(tmp_path, running, extra_app="max_deactivations = 2"))
        first = await run_sync(config, SyncOptions(), echo=quiet)
        assert first.exit_code == 0, first.summaries[APP]["notes"]
        now = await states(running)
        leavers = synced(now["okta"], now)[:5]
        for user in leavers:
            running.okta.directory.set_status(user["id"], "SUSPENDED")
        before = await stats(running)

        stopped = await run_sync(config, SyncOptions(), echo=quiet)
        assert stopped.exit_code == 3
        notes = " ".join(stopped.summaries[APP]["notes"])
        assert "max_deactivations" in notes and "5 deactivations" in notes, notes
        held = await stats(running)
        held_states = await states(running)
        for target in TARGETS:
            assert write_counts(held[target]) == write_counts(before[target]), target
            assert counts(stopped, target)["users_deactivated"] == 0
            assert all(active_on(held_states[target], username(u)) for u in leavers), target

        forced = await run_sync(config, SyncOptions(force=True), echo=quiet)
        assert forced.exit_code == 0, forced.summaries[APP]["notes"]
        await assert_oracle(running, now)
        done = await states(running)
        for target in TARGETS:
            assert counts(forced, target)["users_deactivated"] == 5
            assert not any(active_on(done[target], username(u)) for u in leavers), target


# -- 7. a listing that breaks, zero users, rejected credentials ---------------------------------

@pytest.mark.asyncio
@pytest.mark.parametrize("broken", ["users page 2", "members of a group"])
async def test_an_okta_listing_failing_midway_removes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: str,
) -> None:
    async with estate(users=260) as running:  # two pages of users (200 a page)
        config = load(write_config(tmp_path, running))
        first = await run_sync(config, SyncOptions(), echo=quiet)
        assert first.exit_code == 0, first.summaries[APP]["notes"]
        now = await states(running)
        people = synced(now["okta"], now)
        for user in people[:3]:
            running.okta.directory.set_status(user["id"], "SUSPENDED")
        scope = ordinary_groups(now["okta"])
        for user in people[3:10]:
            for gid in groups_of(now["okta"], user["id"]) & scope.keys():
                running.okta.directory.remove_membership(gid, user["id"])
        before = await stats(running)

        # test-only hooks (the emulator looks these helpers up per request): Okta refuses the
        # users listing's second cursor, or answers 404 for one group's members (deleted
        # between the group listing and its member listing)
        if broken == "users page 2":
            picker = running.okta._user_picker

            def failing_picker(request: Any) -> Any:
                if request.path == "/api/v1/users" and "after" in request.query:
                    raise OktaError(400, "E0000029", "Invalid paging request.",
                                    ["Invalid cursor."])
                return picker(request)

            monkeypatch.setattr(running.okta, "_user_picker", failing_picker)
            endpoint, status, said = "GET /api/v1/users", 400, ("users listing", "E0000029")
        else:
            victim = sorted(scope)[-1]
            find = running.okta._group_or_404

            def vanished(request: Any) -> Any:
                if request.match_info["id"] == victim and request.path.endswith("/users"):
                    raise OktaError(404, "E0000007", f"Not found: {victim} (UserGroup)")
                return find(request)

            monkeypatch.setattr(running.okta, "_group_or_404", vanished)
            endpoint, status, said = "GET /api/v1/groups/{id}/users", 404, (victim, "E0000007")
        stopped = await run_sync(config, SyncOptions(full=True), echo=quiet)
        assert stopped.exit_code == 4
        notes = " ".join(stopped.summaries[APP]["notes"])
        assert all(s in notes for s in said), notes
        after = await stats(running)
        assert status_count(after["okta"], status, endpoint) == 1
        for target in TARGETS:
            assert write_counts(after[target]) == write_counts(before[target]), target
        final = await states(running)
        assert all(final[t] == now[t] for t in TARGETS)

        # the stopped run is a checkpoint: once Okta answers again, --resume finishes the job
        monkeypatch.undo()
        with pytest.raises(UsageError, match="--resume"):  # the CLI's exit 2
            await run_sync(config, SyncOptions(), echo=quiet)
        resumed = await run_sync(config, SyncOptions(resume=True), echo=quiet)
        assert resumed.exit_code == 0, resumed.summaries[APP]["notes"]
        await assert_oracle(running, now)
        for target in TARGETS:
            assert counts(resumed, target)["users_deactivated"] == 3, target


@pytest.mark.asyncio
async def test_zero_okta_users_trips_the_guard_even_with_deactivate_missing(
    tmp_path: Path,
) -> None:
    async with estate(users=80) as running:
        extra = 'deactivate_missing = true\nmax_deactivations = "100%"'
        config = load(write_config(tmp_path, running, extra_app=extra))
        first = await run_sync(config, SyncOptions(), echo=quiet)
        assert first.exit_code == 0, first.summaries[APP]["notes"]
        now = await states(running)
        before = await stats(running)
        # Okta suddenly answers with no users at all (same groups, now empty)
        running.okta.directory = generate_directory(users=0, groups=12, seed=7)
        stopped = await run_sync(config, SyncOptions(full=True), echo=quiet)
        assert stopped.exit_code == 3
        notes = " ".join(stopped.summaries[APP]["notes"])
        assert "zero users" in notes, notes
        after = await stats(running)
        for target in TARGETS:
            assert write_counts(after[target]) == write_counts(before[target]), target
        final = await states(running)
        assert all(final[t] == now[t] for t in TARGETS)


@pytest.mark.asyncio
async def test_jira_rejecting_the_credentials_is_exit_2_naming_the_target(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    async with estate(users=40) as running:
        path = write_config(tmp_path, running)
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace(f'token = "{running.options.jira_token}"',
                                     'token = "not-the-jira-token"'), encoding="utf-8")
        printed: list[str] = []
        result = await run_sync(load(path), SyncOptions(), echo=printed.append)
        assert result.exit_code == 2
        summary = result.summaries[APP]
        notes = " ".join(summary["notes"])
        assert "jira" in notes and "rejected the credentials" in notes, notes
        assert "not-the-jira-token" not in notes
        seen = "\n".join(printed) + caplog.text + "".join(capsys.readouterr())
        assert "Traceback" not in seen
        assert "jira" in "\n".join(printed)
        counted = await stats(running)
        assert write_requests(counted["jira"]) == 0
        # whatever landed on Confluence before the stop is in the summary
        assert write_requests(counted["confluence"]) == \
            summary["targets"]["confluence"]["requests"]["writes"]


WRITE_COUNTS = ("users_created", "users_updated", "users_renamed", "users_activated",
                "users_deactivated", "groups_created", "memberships_added",
                "memberships_removed")


@pytest.mark.asyncio
async def test_credentials_rejected_mid_run_the_summary_lists_every_write_that_landed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with estate(users=100, seed=3, groups=10) as running:
        revoke_confluence_after(running, monkeypatch, 40)
        result = await run_sync(load(write_config(tmp_path, running)), SyncOptions(),
                                echo=quiet)
        assert result.exit_code == 2
        notes = " ".join(result.summaries[APP]["notes"])
        assert "confluence" in notes and "rejected the credentials" in notes, notes
        counted = await stats(running)
        assert counted["confluence"]["status"].get("401", 0) > 0
        for target in TARGETS:
            listed = sum(counts(result, target)[k] for k in WRITE_COUNTS)
            assert listed == counted[target]["writes_applied"], target


@pytest.mark.asyncio
async def test_credentials_rejected_mid_run_then_resume_syncs_every_user_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stop in the users phase leaves the phase unfinished: --resume does the users the
    stopped run never reached (it once marked the phase done and skipped them, "done")."""
    async with estate(users=200, seed=3, groups=10) as running:
        before = await states(running)
        restore = revoke_confluence_after(running, monkeypatch, 150)
        config = load(write_config(tmp_path, running))
        stopped = await run_sync(config, SyncOptions(), echo=quiet)
        assert stopped.exit_code == 2, stopped.summaries[APP]["notes"]
        restore()  # the administrator fixes the password
        resumed = await run_sync(config, SyncOptions(resume=True), echo=quiet)
        assert resumed.exit_code == 0, resumed.summaries[APP]["notes"]
        await assert_oracle(running, before)


# -- 8. refusals --------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_full_confluence_licence_stops_creates_but_not_deactivations(
    tmp_path: Path,
) -> None:
    async with estate(users=100) as running:
        config = load(write_config(tmp_path, running, concurrency=4))
        first = await run_sync(config, SyncOptions(), echo=quiet)
        assert first.exit_code == 0, first.summaries[APP]["notes"]
        now = await states(running)
        leavers = synced(now["okta"], now)[:2]
        for user in leavers:
            running.okta.directory.set_status(user["id"], "SUSPENDED")
        newcomers = [running.okta.directory.add_user(
            {"login": f"new.person{i}@example.com", "email": f"new.person{i}@example.com",
             "firstName": "New", "lastName": f"Person{i}"}) for i in range(6)]
        running.confluence.set_seats(running.confluence.store.active_count)  # licence full
        before = await stats(running)

        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 1, result.summaries[APP]["notes"]
        after = await stats(running)
        refusals = status_count(after["confluence"], 402) - status_count(before["confluence"], 402)
        assert 1 <= refusals <= 4, f"{refusals} creates answered 402: the engine kept creating"
        confluence, jira = counts(result, "confluence"), counts(result, "jira")
        assert confluence["users_created"] == 0 and confluence["refused"] == 6, confluence
        refused = {p["okta_id"] for p in problems(result, "confluence", "refused")}
        assert refused == {u.id for u in newcomers}
        assert confluence["users_deactivated"] == 2, confluence
        assert jira["users_created"] == 6 and jira["users_deactivated"] == 2, jira
        done = await states(running)
        for user in newcomers:
            assert account_json(done["confluence"], user.login.split("@")[0]) is None
        for user in leavers:
            assert not active_on(done["confluence"], username(user))


@pytest.mark.asyncio
async def test_jira_refusing_to_deactivate_a_project_lead_is_reported(tmp_path: Path) -> None:
    async with estate(users=80) as running:
        config = load(write_config(tmp_path, running))
        first = await run_sync(config, SyncOptions(), echo=quiet)
        assert first.exit_code == 0, first.summaries[APP]["notes"]
        now = await states(running)
        lead, other = synced(now["okta"], now)[:2]
        running.jira.set_refusals(project_leads=[username(lead)])
        for user in (lead, other):
            running.okta.directory.set_status(user["id"], "SUSPENDED")
        before = await stats(running)

        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 1, result.summaries[APP]["notes"]
        refused = problems(result, "jira", "refused")
        assert [p["okta_id"] for p in refused] == [lead["id"]], refused
        assert "lead" in refused[0]["reason"]
        assert counts(result, "jira")["users_deactivated"] == 1
        assert counts(result, "confluence")["users_deactivated"] == 2
        after = await stats(running)
        puts = endpoint_requests(after["jira"], "PUT /rest/api/2/user") - \
            endpoint_requests(before["jira"], "PUT /rest/api/2/user")
        assert puts == 2, "a refusal is not retried"
        done = await states(running)
        assert active_on(done["jira"], username(lead))
        assert not active_on(done["jira"], username(other))
        assert not active_on(done["confluence"], username(lead))


# -- 9. dry run ---------------------------------------------------------------------------------

PLAN_COUNTS = {"create_user": "users_created", "update_user": "users_updated",
               "rename_user": "users_renamed", "activate_user": "users_activated",
               "deactivate_user": "users_deactivated", "create_group": "groups_created",
               "add_member": "memberships_added", "remove_member": "memberships_removed"}


@pytest.mark.asyncio
async def test_dry_run_writes_nothing_and_plans_every_operation(tmp_path: Path) -> None:
    async with estate(users=120) as running:
        before = await states(running)
        config = load(write_config(tmp_path, running))
        result = await run_sync(config, SyncOptions(dry_run=True), echo=quiet)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        counted = await stats(running)
        for target in TARGETS:
            assert write_requests(counted[target]) == 0, target
            assert read_requests(counted[target]) > 0, target
        assert await states(running) == before

        app_dir = tmp_path / "state" / APP
        run_id = result.summaries[APP]["run_id"]
        plan = app_dir / f"plan-{run_id}.csv"
        assert result.summaries[APP]["plan_file"] == str(plan)
        with plan.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == ["target", "operation", "username", "okta_id", "before", "after",
                           "reason"]
        per_kind = Counter((r[0], r[1]) for r in rows[1:])
        for target in TARGETS:
            c = counts(result, target)
            for kind, name in PLAN_COUNTS.items():
                assert per_kind[(target, kind)] == c[name], (target, kind)
            expected = oracle.expected_accounts(before["okta"],
                                                oracle.target_accounts(before[target]),
                                                target, SETTINGS)
            new = set(expected) - {u["name"].lower() for u in before[target]["users"]}
            assert per_kind[(target, "create_user")] == len(new) > 50, target
            created = {r[2] for r in rows[1:] if r[:2] == [target, "create_user"]}
            assert created == new, target
        assert not (app_dir / "run.db").exists()
        assert not list(app_dir.glob("*.db"))

        real = await run_sync(config, SyncOptions(), echo=quiet)  # the dry run claimed nothing
        assert real.exit_code == 0
        await assert_oracle(running, before)
        for target in TARGETS:
            assert counts(real, target)["users_created"] == per_kind[(target, "create_user")]


@pytest.mark.asyncio
async def test_a_guard_tripped_on_one_target_stops_deactivations_on_every_target(
    tmp_path: Path,
) -> None:
    async with estate(users=120) as running:
        config = load(write_config(tmp_path, running, extra_app="max_deactivations = 2"))
        first = await run_sync(config, SyncOptions(), echo=quiet)
        assert first.exit_code == 0, first.summaries[APP]["notes"]
        now = await states(running)
        # two leavers with accounts on both targets, one only on Jira ('+' is not allowed on
        # Confluence): Jira would deactivate 3 (> 2), Confluence 2 (within the limit)
        jira_names = {u["name"] for u in now["jira"]["users"]}
        plus = next(u for u in now["okta"]["users"] if u["status"] == "ACTIVE"
                    and "+" in username(u) and username(u) in jira_names)
        leavers = [*synced(now["okta"], now)[:2], plus]
        for user in leavers:
            running.okta.directory.set_status(user["id"], "SUSPENDED")
        before = await stats(running)
        stopped = await run_sync(config, SyncOptions(), echo=quiet)
        assert stopped.exit_code == 3, stopped.summaries[APP]["notes"]
        after = await stats(running)
        for target in TARGETS:
            assert write_counts(after[target]) == write_counts(before[target]), target
            assert counts(stopped, target)["users_deactivated"] == 0, target


# -- 10. several apps on one target -------------------------------------------------------------

A_GROUPS = ("Sales & Marketing", "Engineering", "Finance", "R&D/Platform")
B_GROUPS = ("Human Resources", "Customer Success", "Legal & Compliance", "AD Domain Users")


def _two_apps_config(tmp: Path, a: RunningEmulators, b: RunningEmulators) -> Path:
    def app(name: str, okta: RunningEmulators, groups: tuple[str, ...], extra: str) -> str:
        include = ", ".join(f'"{g}"' for g in groups)  # no regex metacharacters in them
        return f"""
[[app]]
name = "{name}"
okta_url = "{okta.okta_url}"
okta_token = "{okta.options.okta_token}"
username_regex = "(.*)@.*"
username_replacement = "$1"
targets = ["jira"]
group_include = [{include}]
{extra}
"""
    text = (app("app-a", a, A_GROUPS, "")
            + app("app-b", b, B_GROUPS, 'deactivate_missing = true\nmax_deactivations = "100%"')
            + f"""
[target.jira]
kind = "jira-dc"
url = "{a.jira_url}"
token = "{a.options.jira_token}"
default_groups = ["jira-software-users"]
protected_users = ["admin"]

[state]
dir = "{tmp / 'state'}"
""")
    path = tmp / "two-apps.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.asyncio
async def test_two_apps_on_one_target_never_take_access_the_other_app_gave(
    tmp_path: Path,
) -> None:
    settings_a = oracle.Settings(include=A_GROUPS,
                                 default_groups={"jira": ("jira-software-users",)})
    settings_b = oracle.Settings(include=B_GROUPS,
                                 default_groups={"jira": ("jira-software-users",)},
                                 deactivate_missing=True)
    async with estate(users=80, seed=7) as a, estate(users=80, seed=8) as b:
        config = load(_two_apps_config(tmp_path, a, b))
        before = oracle.target_accounts((await states(a))["jira"])
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 0, [s["notes"] for s in result.summaries.values()]
        okta_a, okta_b = (await states(a))["okta"], (await states(b))["okta"]
        after_a = oracle.expected_accounts(okta_a, before, "jira", settings_a, owned=set())
        owned_a = set(after_a) - set(before)
        expected = oracle.expected_accounts(okta_b, after_a, "jira", settings_b, owned=set(),
                                            foreign=owned_a)
        owned_b = set(expected) - set(after_a)
        jira_now = (await states(a))["jira"]
        problems_now = oracle.differences(expected, oracle.target_accounts(jira_now))
        assert problems_now == [], problems_now[:5]
        # the showcase users exist in both Okta orgs: app-a synced them, app-b only reports
        shared = sorted(owned_a & {username(u, settings_b) for u in okta_b["users"]})
        assert len(shared) >= 5, shared
        conflicts = problems(result, "jira", "conflict", app="app-b")
        assert all("app-a" in p["reason"] for p in conflicts)
        assert {p["username"] for p in conflicts} >= set(shared) - {"john.smith"}

        # app-b's Okta now says: the shared users are gone, and one of app-a's accounts sits in
        # an app-b group on Jira without app-b's Okta knowing it
        b_users = {username(u, settings_b): u for u in okta_b["users"]}
        for name in shared:
            b.okta.directory.set_status(b_users[name]["id"], "SUSPENDED")
        b_group = next(g for g in B_GROUPS if g in {x["name"] for x in jira_now["groups"]})
        a.jira.store.add_member(a.jira.store.group(b_group), a.jira.store.user(shared[0]))
        own = sorted(owned_b & {username(u, settings_b) for u in ordinary(okta_b)})[0]
        b.okta.directory.set_status(b_users[own]["id"], "SUSPENDED")  # app-b's own leaver
        jira_before = (await states(a))["jira"]

        second = await run_sync(config, SyncOptions(app="app-b"), echo=quiet)
        assert list(second.summaries) == ["app-b"]
        assert second.exit_code == 0, second.summaries["app-b"]["notes"]
        jira_after = (await states(a))["jira"]
        for name in owned_a:
            assert account_json(jira_after, name) == account_json(jira_before, name), name
        assert not active_on(jira_after, own)
        expected_b = oracle.expected_accounts(
            (await states(b))["okta"], oracle.target_accounts(jira_before), "jira", settings_b,
            owned=owned_b, foreign=owned_a)
        problems_b = oracle.differences(expected_b, oracle.target_accounts(jira_after))
        assert problems_b == [], problems_b[:5]
        assert counts(second, "jira", app="app-b")["users_deactivated"] == 1


@pytest.mark.asyncio
async def test_dry_run_past_the_guard_still_shows_the_deactivations_it_would_make(
    tmp_path: Path,
) -> None:
    async with estate(users=100) as running:
        config = load(write_config(tmp_path, running, extra_app="max_deactivations = 2"))
        first = await run_sync(config, SyncOptions(), echo=quiet)
        assert first.exit_code == 0, first.summaries[APP]["notes"]
        now = await states(running)
        leavers = synced(now["okta"], now)[:5]
        for user in leavers:
            running.okta.directory.set_status(user["id"], "SUSPENDED")
        before = await stats(running)
        result = await run_sync(config, SyncOptions(dry_run=True), echo=quiet)
        after = await stats(running)
        for target in TARGETS:
            assert write_counts(after[target]) == write_counts(before[target]), target
        assert result.exit_code == 3  # the real run would stop here
        with Path(result.summaries[APP]["plan_file"]).open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for target in TARGETS:
            planned = {r["username"] for r in rows
                       if r["target"] == target and r["operation"] == "deactivate_user"}
            assert planned == {username(u) for u in leavers}, target
