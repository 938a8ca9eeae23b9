"""Who gets an account (issue 11): ``user_filter``, ``required_groups``, ``okta_app_id``, per
app with a per-target override, in full syncs.

Each end state is judged by the oracle (``oracle.Settings.user_scope``: the ids each target
lets in, worked out here from Okta's state and the issue's words, never from the engine); the
directories are small so the file runs in seconds.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from oktasync.engine import SyncOptions, run_sync
from oktasync.errors import Backoff, RetryPolicy
from oktasync.http import HttpClient, make_session
from oktasync.okta_source import OktaSource
from oktasync.ratelimit import OktaLimiter
from tests.engine.harness import break_answers, load, states, stats, write_config
from tests.engine.test_config import app_with, problems
from tests.engine.test_config import load as load_text
from tests.engine.test_sync_behaviour import (
    SETTINGS,
    account_json,
    assert_oracle,
    estate,
    ordinary,
    quiet,
    username,
)

REQUIRED = "jira-access"


def members(okta: dict[str, Any], name: str) -> frozenset[str]:
    group = next(g for g in okta["groups"] if g["profile"]["name"] == name)
    return frozenset(okta["memberships"].get(group["id"], []))


async def running_stats_reset(running: Any) -> None:
    async with aiohttp.ClientSession() as session, session.post(
            running.okta_url + "/_emulator/stats/reset") as response:
        response.raise_for_status()


def plan_rows(path: str) -> list[dict[str, str]]:
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def active_on(state: dict[str, Any], user: dict[str, Any]) -> bool | None:
    account = account_json(state, username(user))
    return None if account is None else bool(account["active"])


@pytest.mark.asyncio
async def test_required_groups_on_jira_only(tmp_path: Path) -> None:
    """The issue's test: a user removed from the required group is deactivated in Jira and
    stays active in Confluence. The required group is outside the group scope (excluded), so
    its members are read only for the scope; users never in it get no Jira account."""
    async with estate(users=60, groups=5) as running:
        directory = running.okta.directory
        before = await states(running)
        people = ordinary(before["okta"])
        group = directory.add_group(REQUIRED)
        for user in people[:20]:
            directory.add_membership(group.id, user["id"])
        config = load(write_config(
            tmp_path, running, extra_app=f'group_exclude = ["{REQUIRED}"]',
            extra_jira=f'required_groups = ["{REQUIRED}"]'))
        settings = replace(SETTINGS, exclude=(REQUIRED,))

        first = await run_sync(config, SyncOptions(), echo=quiet)
        assert first.exit_code == 0, first.summaries
        okta = (await states(running))["okta"]
        now = await assert_oracle(running, before, settings=replace(
            settings, user_scope={"jira": members(okta, REQUIRED)}))
        outsider = people[30]
        assert active_on(now["jira"], outsider) is None  # never created
        assert active_on(now["confluence"], outsider) is True

        leaver = people[0]
        directory.remove_membership(group.id, leaver["id"])
        planned = await run_sync(config, SyncOptions(full=True, dry_run=True), echo=quiet)
        rows = plan_rows(planned.summaries["test-app"]["plan_file"])
        assert [(r["target"], r["username"], r["reason"]) for r in rows
                if r["operation"] == "deactivate_user"] == [
            ("jira", username(leaver),
             f"out of the app's user scope: not in required groups {REQUIRED}")]
        second = await run_sync(config, SyncOptions(full=True), echo=quiet)
        assert second.exit_code == 0, second.summaries
        okta = (await states(running))["okta"]
        after = await assert_oracle(running, now, settings=replace(
            settings, user_scope={"jira": members(okta, REQUIRED)}))
        assert active_on(after["jira"], leaver) is False
        assert active_on(after["confluence"], leaver) is True
        jira = second.summaries["test-app"]["targets"]["jira"]["counts"]
        assert jira.get("users_deactivated") == 1, jira

        # and in an incremental run: the membership event names the user, its groups are
        # read again, the required group is gone from them
        another = people[1]
        directory.remove_membership(group.id, another["id"])
        third = await run_sync(config, SyncOptions(), echo=quiet)
        summary = third.summaries["test-app"]
        assert third.exit_code == 0, summary["notes"]
        assert summary["kind"] == "incremental", summary.get("full_because")
        okta = (await states(running))["okta"]
        last = await assert_oracle(running, after, settings=replace(
            settings, user_scope={"jira": members(okta, REQUIRED)}))
        assert active_on(last["jira"], another) is False
        assert active_on(last["confluence"], another) is True


@pytest.mark.asyncio
async def test_users_leaving_the_scope_count_against_max_deactivations(tmp_path: Path) -> None:
    """Scope leavers are deactivations like any other: past the guard none is written."""
    async with estate(users=60, groups=5) as running:
        directory = running.okta.directory
        people = ordinary((await states(running))["okta"])
        group = directory.add_group(REQUIRED)
        for user in people[:20]:
            directory.add_membership(group.id, user["id"])
        config = load(write_config(tmp_path, running, extra_app="max_deactivations = 2",
                                   extra_jira=f'required_groups = ["{REQUIRED}"]'))
        assert (await run_sync(config, SyncOptions(), echo=quiet)).exit_code == 0
        for user in people[:3]:
            directory.remove_membership(group.id, user["id"])
        held = await run_sync(config, SyncOptions(full=True), echo=quiet)
        assert held.exit_code == 3, held.summaries
        now = await states(running)
        assert all(active_on(now["jira"], u) is True for u in people[:3])


@pytest.mark.asyncio
async def test_user_filter_is_evaluated_by_okta(tmp_path: Path) -> None:
    """The filter goes to Okta as ``search``: the listing it makes returns only the users it
    selects (counted on the emulator's stats), deprovisioned ones included."""
    expression = 'profile.department eq "Engineering"'
    async with estate(users=80, groups=5) as running:
        before = await states(running)
        okta = before["okta"]
        chosen = frozenset(u["id"] for u in okta["users"]
                           if u["profile"].get("department") == "Engineering")
        assert 0 < len(chosen) < len(okta["users"]) // 2
        config = load(write_config(
            tmp_path, running, extra_app=f"user_filter = '{expression}'\nmax_deactivations = 5\n"
                                         "max_listing_shrink = \"50%\"\n"
                                         # the filter selects ~10 users: 20 % would be 2
                                         "full_sync_threshold = \"90%\""))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 0, result.summaries
        await assert_oracle(running, before, settings=replace(
            SETTINGS, user_scope={"jira": chosen, "confluence": chosen}))
        users = (await stats(running))["okta"]["by_endpoint"]["GET /api/v1/users"]
        assert users["items"] == len(chosen), users  # only those it selects are read

        # a synced user who no longer matches is read on its own (it is not in the filter's
        # listing) and deactivated as out of scope, not as deleted in Okta
        mover, gone = [u for u in ordinary(okta) if u["id"] in chosen][:2]
        running.okta.directory.update_profile(mover["id"], {"department": "Sales"})
        running.okta.directory.delete_user(gone["id"])  # deactivated,
        running.okta.directory.delete_user(gone["id"])  # then deleted
        await running_stats_reset(running)
        planned = await run_sync(config, SyncOptions(full=True, dry_run=True), echo=quiet)
        rows = plan_rows(planned.summaries["test-app"]["plan_file"])
        assert sorted((r["target"], r["username"], r["reason"]) for r in rows
                      if r["operation"] == "deactivate_user") == [
            (t, name, reason) for t in ("confluence", "jira") for name, reason in sorted([
                (username(mover), "out of the app's user scope: does not match user_filter "
                 f"{expression!r}"),
                (username(gone), "the Okta user it was synced for was deleted in Okta")])]
        read = (await stats(running))["okta"]["by_endpoint"]
        assert read["GET /api/v1/users"]["items"] == len(chosen) - 2
        assert read["GET /api/v1/users/{idOrLogin}"]["requests"] == 2  # the two left out
        again = await run_sync(config, SyncOptions(full=True), echo=quiet)
        assert again.exit_code == 0, again.summaries
        now = await states(running)
        assert active_on(now["jira"], mover) is False
        assert active_on(now["confluence"], mover) is False

        # incremental: one that leaves the filter is deactivated, one that joins it is
        # created; Okta judges both (a search for the changed users), nobody else is read
        leaver = [u for u in ordinary(okta) if u["id"] in chosen][2]
        joiner = next(u for u in ordinary(okta) if u["id"] not in chosen)
        running.okta.directory.update_profile(leaver["id"], {"department": "Sales"})
        running.okta.directory.update_profile(joiner["id"], {"department": "Engineering"})
        third = await run_sync(config, SyncOptions(), echo=quiet)
        summary = third.summaries["test-app"]
        assert third.exit_code == 0, summary["notes"]
        assert summary["kind"] == "incremental", summary.get("full_because")
        last = await states(running)
        for target in ("jira", "confluence"):
            assert active_on(last[target], leaver) is False, target
            assert active_on(last[target], joiner) is True, target


@pytest.mark.asyncio
async def test_okta_app_assignments_per_target(tmp_path: Path) -> None:
    """``okta_app_id`` on the app, lifted on Confluence by its own empty ``required_groups``
    and no app id: Confluence takes its own settings where set, the app's otherwise."""
    async with estate(users=60, groups=5) as running:
        directory = running.okta.directory
        before = await states(running)
        people = ordinary(before["okta"])
        app = directory.add_app("Jira DC")
        for user in people[:15]:
            directory.assign_app(app.id, user["id"])
        other = directory.add_app("Confluence DC")
        for user in people[10:25]:
            directory.assign_app(other.id, user["id"])
        # the 30 assignments just made are read again by the first incremental run (its
        # five minutes of overlap): over 20 % of 60 users, hence the threshold
        config = load(write_config(tmp_path, running,
                                   extra_app=f'okta_app_id = "{app.id}"\n'
                                             'full_sync_threshold = "90%"',
                                   extra_confluence=f'okta_app_id = "{other.id}"'))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 0, result.summaries
        await assert_oracle(running, before, settings=replace(SETTINGS, user_scope={
            "jira": frozenset(u["id"] for u in people[:15]),
            "confluence": frozenset(u["id"] for u in people[10:25])}))

        directory.unassign_app(app.id, people[0]["id"])
        directory.assign_app(app.id, people[-1]["id"])
        again = await run_sync(config, SyncOptions(), echo=quiet)
        assert again.exit_code == 0, again.summaries
        summary = again.summaries["test-app"]
        assert summary["kind"] == "incremental", summary.get("full_because")
        now = await states(running)
        assert active_on(now["jira"], people[0]) is False
        assert active_on(now["jira"], people[-1]) is True
        assert active_on(now["confluence"], people[-1]) is None  # not assigned to its app
        assert active_on(now["confluence"], people[10]) is True


@pytest.mark.asyncio
@pytest.mark.parametrize(("setting", "words"), [
    ('required_groups = ["No Such Group"]', "required_groups names 'No Such Group'"),
    ('okta_app_id = "0oanosuchapp"', "okta_app_id '0oanosuchapp': Okta has no app instance"),
    ("user_filter = 'profile.department eq'", "user_filter 'profile.department eq': Okta "
     "refused it"),
])
async def test_scope_mistakes_stop_the_run_before_writing(
        tmp_path: Path, setting: str, words: str) -> None:
    async with estate(users=30, groups=3) as running:
        before = await states(running)
        config = load(write_config(tmp_path, running, extra_app=setting))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 2, result.summaries
        notes = result.summaries["test-app"]["notes"]
        assert any(words in note for note in notes), notes
        after = await states(running)
        for target in ("jira", "confluence"):
            assert after[target]["users"] == before[target]["users"]
            assert after[target]["groups"] == before[target]["groups"]


def test_an_empty_filter_is_a_configuration_error(tmp_path: Path) -> None:
    found = problems(tmp_path, app_with(user_filter='"  "'))
    assert any("user_filter" in p and "non-empty" in p for p in found), found


def test_the_fingerprint_follows_the_scope(tmp_path: Path) -> None:
    plain = load_text(tmp_path, app_with())
    scoped = load_text(tmp_path, app_with(required_groups='["x"]'))
    app, other = plain.apps[0], scoped.apps[0]
    assert app.fingerprint(plain.targets) != other.fingerprint(scoped.targets)


@pytest.mark.asyncio
async def test_a_target_filter_overrides_the_apps(tmp_path: Path) -> None:
    """Each of a target's scope settings replaces the app's where set (``[]`` lifts the app's
    required groups); the others still come from the app."""
    async with estate(users=80, groups=5) as running:
        directory = running.okta.directory
        before = await states(running)
        okta = before["okta"]
        group = directory.add_group(REQUIRED)
        for user in ordinary(okta)[::2]:
            directory.add_membership(group.id, user["id"])

        def department(name: str) -> frozenset[str]:
            return frozenset(u["id"] for u in okta["users"]
                             if u["profile"].get("department") == name)

        config = load(write_config(
            tmp_path, running,
            extra_app=(f"user_filter = 'profile.department eq \"Engineering\"'\n"
                       f'required_groups = ["{REQUIRED}"]\ngroup_exclude = ["{REQUIRED}"]'),
            extra_confluence=("required_groups = []\n"
                              "user_filter = 'profile.department eq \"Sales\"'")))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 0, result.summaries
        required = members((await states(running))["okta"], REQUIRED)
        await assert_oracle(running, before, settings=replace(
            SETTINGS, exclude=(REQUIRED,), user_scope={
                "jira": department("Engineering") & required,
                "confluence": department("Sales")}))


@pytest.mark.asyncio
async def test_a_handful_of_users_are_judged_by_okta() -> None:
    """``OktaSource.users_matching``: the filter for a few ids (what an incremental run asks
    of changed users), evaluated by Okta in one request, deprovisioned users included;
    ``assigned_to_app``: one assignment read per user, 404 when not assigned."""
    async with estate(users=60, groups=3) as running:
        okta = (await states(running))["okta"]
        picked = okta["users"][:12]
        expected = {u["id"] for u in picked if u["profile"].get("department") == "Engineering"}
        session = make_session(connections=2, timeout_s=10)
        try:
            client = HttpClient(session, name="Okta", base_url=running.okta_url,
                                headers={"Authorization":
                                         f"SSWS {running.options.okta_token}"},
                                limiter=OktaLimiter(concurrency=2, max_share=0.5),
                                policy=RetryPolicy())
            source = OktaSource(client)
            before = (await stats(running))["okta"]["requests"]
            found = await source.users_matching('profile.department eq "Engineering"',
                                                [u["id"] for u in picked])
            after = (await stats(running))["okta"]["requests"]
            app = running.okta.directory.add_app("Jira DC")
            active = [u for u in picked if u["status"] == "ACTIVE"]
            running.okta.directory.assign_app(app.id, active[0]["id"])
            on_app = await source.assigned_to_app(app.id, [u["id"] for u in active[:3]])
        finally:
            await session.close()
    assert found == expected
    assert on_app == {active[0]["id"]}
    assert after - before == 1  # one search (stats reads are not counted)


@pytest.mark.asyncio
async def test_an_app_listing_that_fails_midway_resumes_from_its_cursor(tmp_path: Path) -> None:
    """The app's users are a checkpointed listing like the others: a failure on its second
    page stops the run with nothing removed (exit 4); the resumed run continues from the page
    it stopped at and reaches the oracle's state."""
    quick = RetryPolicy(max_attempts=2, backoff=Backoff(0.01, 2.0, 0.05),
                        unavailable_backoff=Backoff(0.01, 2.0, 0.05))
    async with estate(users=700, groups=3) as running:
        directory = running.okta.directory
        before = await states(running)
        people = ordinary(before["okta"])
        assert len(people) > 520
        app = directory.add_app("Jira DC")
        for user in people[:520]:  # two pages of 500
            directory.assign_app(app.id, user["id"])
        config = load(write_config(tmp_path, running, extra_app=f'okta_app_id = "{app.id}"\n'
                                   'max_deactivations = "100%"'))
        endpoint = "GET /api/v1/apps/{appId}/users"
        await break_answers(running.okta_url, endpoint, "html", skip=1, times=None)
        cut = await run_sync(config, SyncOptions(retry=quick), echo=quiet)
        assert cut.exit_code == 4, cut.summaries
        async with aiohttp.ClientSession() as session, session.delete(
                running.okta_url + "/_emulator/answers") as response:
            response.raise_for_status()
        first_pages = (await stats(running))["okta"]["by_endpoint"][endpoint]["items"]
        resumed = await run_sync(config, SyncOptions(resume=True), echo=quiet)
        assert resumed.exit_code == 0, resumed.summaries
        read = (await stats(running))["okta"]["by_endpoint"][endpoint]["items"]
        assert read - first_pages == 20  # only the second page
        await assert_oracle(running, before, settings=replace(SETTINGS, user_scope={
            "jira": frozenset(u["id"] for u in people[:520]),
            "confluence": frozenset(u["id"] for u in people[:520])}))
