"""Atlassian Cloud through SCIM, end to end: one Okta read feeding the Jira Data Center emulator
and a real third-party SCIM server (scim2-server, started on loopback) in one run.

End states are judged by the tests' oracle: the SCIM server's users and groups, read from it
directly, against what the semantics page says the Okta directory makes of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from oktasync.engine import SyncOptions, run_sync, sync_user
from oktasync_emulators.runner import EmulatorOptions, RunningEmulators, running_emulators
from tests.engine import oracle
from tests.engine.harness import load, states, stats, write_config, write_requests
from tests.engine.scimfixtures import scim_faults, scim_server, scim_state

SCIM_KEY = "scim-directory-key-7Qp2"


def settings(domains: frozenset[str] = frozenset(),
             taken: frozenset[str] = frozenset()) -> oracle.Settings:
    return oracle.Settings(default_groups={"jira": ("jira-software-users",)},
                           target_rules={"cloud": ("email", None, "$1")},
                           cloud_domains=domains, cloud_taken_groups=taken)


def quiet(*_: Any) -> None:
    """Summaries are checked through the result, not printed during tests."""


@pytest_asyncio.fixture
async def estate() -> AsyncIterator[RunningEmulators]:
    options = EmulatorOptions(users=150, groups=12, seed=21, ports=(0, 0, 0), okta_rate_scale=0)
    async with running_emulators(options) as running:
        yield running


def cloud_config(tmp_path: Path, running: RunningEmulators, url: str, extra: str = "") -> Path:
    path = write_config(tmp_path, running, targets=("jira", "cloud"))
    with path.open("a", encoding="utf-8") as config:
        config.write(f'\n[target.cloud]\nkind = "atlassian-scim"\nurl = "{url}"\n'
                     f'token = "{SCIM_KEY}"\n{extra}\n')
    return path


def as_oracle_state(scim: dict[str, Any]) -> dict[str, Any]:
    """The SCIM server's state in the shape of the emulators' ``/_emulator/state``."""
    return {"users": [{"name": u["userName"], "email": (u["emails"] or [None])[0],
                       "displayName": u.get("displayName"), "active": u.get("active", True)}
                      for u in scim["users"].values()],
            "groups": [{"name": g["displayName"], "members": g["members"]}
                       for g in scim["groups"].values()]}


@asynccontextmanager
async def directory(tmp_path: Path, **atlassian: Any) -> AsyncIterator[tuple[str, str]]:
    """scim2-server, and the proxy that behaves as Atlassian in front of it: (the upstream's
    URL, read by the oracle; the URL the engine is given)."""
    async with scim_server(tmp_path / "scim") as upstream, \
            scim_faults(upstream, token=SCIM_KEY, **atlassian) as proxy:
        yield upstream, proxy.url


async def assert_oracle(running: RunningEmulators, scim_url: str, before: dict[str, Any],
                        s: oracle.Settings) -> None:
    now = await states(running)
    cloud = as_oracle_state(await scim_state(scim_url))
    for target, state in (("jira", now["jira"]), ("cloud", cloud)):
        expected = oracle.expected_accounts(now["okta"],
                                            oracle.target_accounts(before[target]), target, s)
        problems = oracle.differences(expected, oracle.target_accounts(state),
                                      emails_case_exact=target != "cloud")
        assert problems == [], f"{target}: {len(problems)} differences: {problems[:5]}"


@pytest.mark.asyncio
async def test_one_okta_read_feeds_jira_dc_and_a_scim_directory_then_writes_nothing(
        estate: RunningEmulators, tmp_path: Path) -> None:
    async with directory(tmp_path) as (scim_url, engine_url):
        before = {**(await states(estate)), "cloud": as_oracle_state(await scim_state(scim_url))}
        config = load(cloud_config(tmp_path, estate, engine_url))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        summary = result.summaries["test-app"]
        assert result.exit_code in (0, 1), summary["notes"]
        await assert_oracle(estate, scim_url, before, settings())
        cloud = summary["targets"]["cloud"]
        assert cloud["counts"]["users_created"] > 50, cloud["counts"]
        okta_reads = (await stats(estate))["okta"]["requests"]

        first = await stats(estate)
        scim_before = await scim_state(scim_url)
        again = await run_sync(config, SyncOptions(full=True), echo=quiet)
        assert again.exit_code == result.exit_code
        assert write_requests((await stats(estate))["jira"]) == write_requests(first["jira"])
        assert again.summaries["test-app"]["targets"]["cloud"]["requests"]["writes"] == 0
        assert await scim_state(scim_url) == scim_before
        assert okta_reads > 0


@pytest.mark.asyncio
async def test_users_off_the_verified_domains_are_reported_and_never_sent(
        estate: RunningEmulators, tmp_path: Path) -> None:
    okta = (await states(estate))["okta"]
    domains = sorted({u["profile"]["email"].rpartition("@")[2].lower() for u in okta["users"]})
    verified = frozenset(domains[: len(domains) // 2])
    assert verified and set(domains) - verified, domains  # some on each side
    async with directory(tmp_path, verified_domains=verified) as (scim_url, engine_url):
        before = {**(await states(estate)), "cloud": as_oracle_state(await scim_state(scim_url))}
        listed = ", ".join(f'"{d}"' for d in sorted(verified))
        config = load(cloud_config(tmp_path, estate, engine_url,
                                   f"verified_domains = [{listed}]"))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code in (0, 1), result.summaries["test-app"]["notes"]
        await assert_oracle(estate, scim_url, before, settings(domains=verified))
        created = {u.rpartition("@")[2] for u in (await scim_state(scim_url))["users"]}
        assert created and created <= verified
        skipped = [p for p in result.summaries["test-app"]["targets"]["cloud"]["problems"]
                   if "verified_domains" in p.get("reason", "")]
        assert skipped, result.summaries["test-app"]["targets"]["cloud"]["problems"][:3]


@pytest.mark.asyncio
async def test_an_incremental_sync_carries_okta_changes_to_the_directory(
        estate: RunningEmulators, tmp_path: Path) -> None:
    """Suspensions, a profile edit, an e-mail change (the Cloud username: the account is
    renamed, as the write report says) and membership changes reach the directory by an
    incremental run, which reads only what changed."""
    async with directory(tmp_path) as (scim_url, engine_url):
        config = load(cloud_config(tmp_path, estate, engine_url))
        assert (await run_sync(config, SyncOptions(), echo=quiet)).exit_code in (0, 1)
        synced = as_oracle_state(await scim_state(scim_url))  # every account this app's
        okta = estate.okta.directory
        now = await states(estate)
        active = [u for u in now["okta"]["users"] if u["status"] == "ACTIVE"
                  and "@" in u["profile"]["email"]]
        for user in active[:2]:
            okta.set_status(user["id"], "SUSPENDED")
        edited, moved = active[2], active[3]
        okta.update_profile(edited["id"], {"displayName": "Edited Person"})
        okta.update_profile(moved["id"], {"email": "moved.person@example.com"})
        member_of = {gid for gid, members in now["okta"]["memberships"].items()
                     if active[4]["id"] in members}
        if member_of:
            okta.remove_membership(sorted(member_of)[0], active[4]["id"])
        group = sorted(set(now["okta"]["memberships"]) - member_of)[0]
        okta.add_membership(group, active[5]["id"])

        result = await run_sync(config, SyncOptions(), echo=quiet)
        summary = result.summaries["test-app"]
        assert summary["kind"] == "incremental", summary["notes"]
        assert result.exit_code in (0, 1), summary["notes"]
        synced_as = {"cloud": {moved["id"]: moved["profile"]["email"].lower()}}
        now = await states(estate)
        cloud = as_oracle_state(await scim_state(scim_url))
        expected = oracle.expected_accounts(now["okta"], oracle.target_accounts(synced),
                                            "cloud", settings(), synced_as["cloud"])
        problems = oracle.differences(expected, oracle.target_accounts(cloud),
                                      emails_case_exact=False)
        assert problems == [], (problems, summary["targets"]["cloud"]["counts"], moved)
        counts = summary["targets"]["cloud"]["counts"]
        assert counts["users_renamed"] == 1 and counts["users_deactivated"] == 2, counts


@pytest.mark.asyncio
async def test_with_429s_and_lost_answers_the_directory_ends_exact_and_nothing_is_duplicated(
        estate: RunningEmulators, tmp_path: Path) -> None:
    """10 % of requests answered 429 (half with Retry-After, half without: backoff), 5 %
    applied and then their answer lost: every create retried after a lost answer meets its own
    earlier write (409), which is looked up and counted as done."""
    async with scim_server(tmp_path / "scim") as upstream, scim_faults(
            upstream, token=SCIM_KEY, rate_429=0.10, retry_after="mixed", rate_lost=0.05,
            seed=15) as proxy:
        before = {**(await states(estate)), "cloud": as_oracle_state(await scim_state(upstream))}
        config = load(cloud_config(tmp_path, estate, proxy.url))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        summary = result.summaries["test-app"]
        assert result.exit_code in (0, 1), summary["notes"]
        faults = proxy.stats.faults
        assert faults["rate_limited"] > 0 and faults["rate_limited_bare"] > 0, faults
        assert faults["lost_answer"] > 0, faults  # the faults were injected
        state = await scim_state(upstream)  # two groups of one name would fail this read
        await assert_oracle(estate, upstream, before, settings())
        external = [u["externalId"] for u in state["users"].values()]
        assert len(external) == len(set(external)), "an Okta user with two accounts"
        assert all(not m.startswith("?") for g in state["groups"].values()
                   for m in g["members"])
        cloud = summary["targets"]["cloud"]
        assert cloud["requests"]["rate_limited"] == faults["rate_limited"] + \
            faults["rate_limited_bare"]
        assert not [p for p in cloud["problems"] if p.get("kind") in ("failed", "refused")]


@pytest.mark.asyncio
async def test_a_group_name_the_organisation_has_is_reported_with_its_fix_not_failed(
        estate: RunningEmulators, tmp_path: Path) -> None:
    okta = (await states(estate))["okta"]
    taken = sorted(g["profile"]["name"] for g in okta["groups"]
                   if g["type"] == "OKTA_GROUP" and okta["memberships"].get(g["id"]))[0]
    async with directory(tmp_path, taken_groups=(taken,)) as (scim_url, engine_url):
        before = {**(await states(estate)), "cloud": as_oracle_state(await scim_state(scim_url))}
        config = load(cloud_config(tmp_path, estate, engine_url))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        summary = result.summaries["test-app"]
        assert result.exit_code == 0, summary["notes"]  # reported, never a failed run
        await assert_oracle(estate, scim_url, before,
                            settings(taken=frozenset({taken.lower()})))
        conflicts = [p["reason"] for p in summary["targets"]["cloud"]["problems"]
                     if p.get("kind") == "conflict"]
        assert (f"the organisation already has a group named {taken!r} that this directory "
                f'does not own: add group_rename = {{ "{taken}" = "{taken} (Okta)" }}'
                ) in " ".join(conflicts), conflicts
        assert taken not in (await scim_state(scim_url))["groups"]


@pytest.mark.asyncio
async def test_events_sync_one_user_into_the_directory_as_the_service_does(
        estate: RunningEmulators, tmp_path: Path) -> None:
    """The service's path (a sign-in, a hook delivery, ``oktasync sync-user``): what the event
    names is read from Okta now and written through the same target, by lookups alone."""
    async with directory(tmp_path) as (scim_url, engine_url):
        config = load(cloud_config(tmp_path, estate, engine_url))
        assert (await run_sync(config, SyncOptions(), echo=quiet)).exit_code in (0, 1)
        okta = estate.okta.directory
        now = (await states(estate))["okta"]
        group = next(g for g in now["groups"] if g["type"] == "OKTA_GROUP")
        hire = okta.add_user({"login": "new.hire@example.com", "email": "new.hire@example.com",
                              "firstName": "New", "lastName": "Hire"}, status="ACTIVE")
        okta.add_membership(group["id"], hire.id)
        synced = (await scim_state(scim_url))["users"]
        leaver = next(u for u in now["users"] if u["status"] == "ACTIVE"
                      and u["profile"]["email"].lower() in synced)
        okta.set_status(leaver["id"], "SUSPENDED")
        for who in ("new.hire@example.com", leaver["profile"]["login"]):
            summary = await sync_user(config, config.apps[0], who)
            assert summary is not None and summary["exit_code"] == 0, summary
        state = await scim_state(scim_url)
        assert state["users"]["new.hire@example.com"]["active"] is True
        assert "new.hire@example.com" in state["groups"][group["profile"]["name"]]["members"]
        assert state["users"][leaver["profile"]["email"].lower()]["active"] is False
