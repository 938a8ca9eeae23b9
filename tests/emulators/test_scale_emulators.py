"""Scale options of the emulators: ``--lazy`` (users generated as they are read), ``--memberships``
and ``--preload-fraction`` (the targets start with part of the desired state)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from oktasync.models import ACTIVE_STATUSES, OktaUser, name_key
from oktasync.targets import confluence as confluence_target
from oktasync.targets import jira as jira_target
from oktasync.usernames import UsernameRule
from oktasync_emulators import runner as runner_module
from oktasync_emulators.cli import build_parser, options_from
from oktasync_emulators.confluence import ConfluenceEmulator
from oktasync_emulators.directory import (
    STATUSES,
    Directory,
    LazyDirectory,
    draw_groups,
    generate_directory,
    generate_user,
    lazy_parts,
    user_group_indices,
    user_identity,
    user_state,
)
from oktasync_emulators.jira import JiraEmulator
from oktasync_emulators.okta import OktaEmulator, OktaRateConfig
from oktasync_emulators.runner import (
    EmulatorOptions,
    build_emulators,
    preload_selected,
    preload_targets,
    running_emulators,
)

TOKEN = "00test-okta-token"
ALL_STATUSES_FILTER = " or ".join(f'status eq "{s}"' for s in STATUSES)


def without_origin(value: Any, origin: str) -> Any:
    """Answers with the server's origin (``_links``) taken out, to compare two servers."""
    return json.loads(json.dumps(value).replace(origin, "ORIGIN"))


@asynccontextmanager
async def serve(directory: Directory | LazyDirectory) -> AsyncIterator[aiohttp.ClientSession]:
    emulator = OktaEmulator(directory, token=TOKEN, rate=OktaRateConfig(scale=0))
    runner = web.AppRunner(emulator.make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    headers = {"Authorization": f"SSWS {TOKEN}"}
    try:
        async with aiohttp.ClientSession(f"http://{host}:{port}", headers=headers) as session:
            yield session
    finally:
        await runner.cleanup()


async def get(session: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, Any, Any]:
    async with session.get(url, params=params or None) as resp:
        return resp.status, await resp.json(), resp.headers


def next_url(headers: Any) -> str | None:
    for link in headers.getall("Link", []):
        if link.endswith('rel="next"'):
            return str(link[1 : link.index(">")])
    return None


async def list_all(
    session: aiohttp.ClientSession, path: str, **params: str
) -> tuple[list[Any], int]:
    status, body, headers = await get(session, path, **params)
    assert status == 200, body
    items, pages, url = list(body), 1, next_url(headers)
    while url is not None:
        status, body, headers = await get(session, url)
        assert status == 200, body
        items.extend(body)
        pages += 1
        url = next_url(headers)
    return items, pages


# ---------------------------------------------------------------------------------------------
# The lazy directory equals the eager one


def test_lazy_directory_equals_eager_directory() -> None:
    eager = generate_directory(users=20_000, groups=300, seed=21)
    lazy = LazyDirectory(20_000, 300, 21)
    assert list(lazy.user_ids) == eager.user_ids
    assert lazy.group_ids == eager.group_ids
    for gid in eager.group_ids:
        assert list(lazy.member_ids(lazy.groups[gid])) == list(eager.member_ids(eager.groups[gid]))
        assert lazy.member_count(lazy.groups[gid]) == eager.member_count(eager.groups[gid])
    for user in list(eager.iter_users())[::97]:
        assert user_state(lazy.users[user.id]) == user_state(user)
        assert lazy.user(user.login.upper()) == user
        assert [g.id for g in lazy.groups_of(user.id)] == [g.id for g in eager.groups_of(user.id)]
    assert lazy.user("nobody@example.com") is None
    assert lazy.user("maria.smith99999999@example.com") is None
    assert lazy.user("00u" + "x" * 17) is None
    assert lazy.state_json() == eager.state_json()


def test_memberships_total_is_exact_in_both_modes() -> None:
    eager = generate_directory(users=2000, groups=50, seed=4, memberships=9000)
    lazy = LazyDirectory(2000, 50, 4, memberships=9000)
    total = sum(lazy.member_count(g) for g in lazy.groups.values() if g.type != "BUILT_IN")
    assert total == 9000
    assert total == sum(len(g.members) for g in eager.groups.values())


def test_group_draws_in_bulk_equal_one_at_a_time() -> None:
    cum = [1.0, 1.5, 1.8, 2.0, 2.1, 2.15]
    wanted = [(i, i % 8) for i in range(500)]
    bulk = list(draw_groups(3, wanted, cum))
    assert bulk == [tuple(user_group_indices(3, i, n, cum)) for i, n in wanted]
    assert all(len(set(p)) == len(p) == min(n, 6) for p, (_, n) in zip(bulk, wanted, strict=True))


def test_identity_is_what_the_full_user_has() -> None:
    for index in range(0, 3000, 7):
        user = generate_user(9, index)
        assert user_identity(9, index) == (
            user.status, user.first_name, user.last_name, user.login, user.email,
            user.display_name,
        )


def test_lazy_parts_can_come_from_elsewhere() -> None:
    parts = lazy_parts(500, 20, 5)
    assert list(LazyDirectory(500, 20, 5, parts=parts).user_ids) == list(
        LazyDirectory(500, 20, 5).user_ids
    )


# ---------------------------------------------------------------------------------------------
# The lazy directory through the API


@pytest.mark.asyncio
async def test_lazy_listing_equals_eager_listing_through_the_api() -> None:
    eager = generate_directory(users=10_000, groups=200, seed=8)
    lazy = LazyDirectory(10_000, 200, 8)
    listings = []
    for directory in (eager, lazy):
        async with serve(directory) as session:
            users, pages = await list_all(
                session, "/api/v1/users", limit="200", filter=ALL_STATUSES_FILTER
            )
            plain, _ = await list_all(session, "/api/v1/users", limit="200")
            groups, _ = await list_all(session, "/api/v1/groups", expand="stats")
            members = {}
            for group in groups[::9]:
                path = f"/api/v1/groups/{group['id']}/users"
                ids, _ = await list_all(session, path, limit="50")
                members[group["id"]] = [u["id"] for u in ids]
            origin = str(session._base_url).rstrip("/")
            listings.append(without_origin((users, pages, plain, groups, members), origin))
    assert listings[0] == listings[1]
    users, pages = listings[1][0], listings[1][1]
    assert pages == 50 and len({u["id"] for u in users}) == 10_000
    assert [u["id"] for u in users] == sorted(u["id"] for u in users)
    assert {u["status"] for u in users} == set(STATUSES)
    assert len(listings[1][2]) == sum(u["status"] != "DEPROVISIONED" for u in users)


@pytest.mark.asyncio
async def test_lazy_single_user_by_id_and_login_groups_and_errors() -> None:
    eager = generate_directory(users=3000, groups=60, seed=12)
    lazy = LazyDirectory(3000, 60, 12)
    picked = [u for i, u in enumerate(eager.iter_users()) if i % 301 == 0]
    async with serve(lazy) as session:
        for user in picked:
            for wanted in (user.id, user.login, user.login.upper()):
                status, body, _ = await get(session, f"/api/v1/users/{wanted}")
                assert status == 200 and body["id"] == user.id, wanted
                assert body["profile"]["login"] == user.login
            status, body, _ = await get(session, f"/api/v1/users/{user.id}/groups")
            assert status == 200
            assert [g["id"] for g in body] == [g.id for g in eager.groups_of(user.id)]
        status, body, _ = await get(session, "/api/v1/users/nobody@example.com")
        assert status == 404 and body["errorCode"] == "E0000007"
        status, body, _ = await get(session, "/api/v1/users", after="garbage")
        assert status == 400 and body["errorCode"] == "E0000029"
        searched, _ = await list_all(
            session, "/api/v1/users", search=f'profile.login eq "{picked[1].login}"'
        )
        assert [u["id"] for u in searched] == [picked[1].id]
        async with session.post(
            f"/_emulator/users/{picked[1].id}/status", json={"status": "SUSPENDED"}
        ) as resp:
            assert resp.status == 501
            assert "--lazy" in (await resp.json())["error"]


# ---------------------------------------------------------------------------------------------
# --preload-fraction


def expected_preload(
    options: EmulatorOptions,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """What the engine, with the demo config, would have created: by target, username ->
    {email, displayName, groups}. Built from the eager directory and the engine's own rules."""
    directory = generate_directory(options.users, options.groups, options.seed,
                                   options.memberships)
    rule = UsernameRule("(.*)@.*", "$1")
    by_name: dict[str, list[int]] = {}
    for index in range(options.users):
        by_name.setdefault(rule.apply(generate_user(options.seed, index).login), []).append(index)
    jira: dict[str, dict[str, Any]] = {}
    confluence: dict[str, dict[str, Any]] = {}
    for index in range(options.users):
        if not preload_selected(index, options.preload_fraction):
            continue
        user = generate_user(options.seed, index)
        name = rule.apply(user.login)
        if user.status not in ACTIVE_STATUSES or len(by_name[name]) > 1:
            continue
        okta_user = OktaUser(user.id, user.status, user.login, user.email, user.first_name,
                             user.last_name, user.display_name)
        groups = {g.name for g in directory.groups_of(user.id) if g.type != "BUILT_IN"}
        if jira_target.forbidden_username(name) is None:
            jira[name] = {"email": user.email, "displayName": okta_user.full_name,
                          "groups": groups | {"jira-software-users"}}
        if confluence_target.forbidden_username(name) is None:
            confluence[name] = {
                "email": user.email, "displayName": okta_user.full_name,
                "groups": {g for g in groups if confluence_target.forbidden_group(g) is None}
                | {"confluence-users"},
            }
    return jira, confluence


def accounts(emulator: JiraEmulator | ConfluenceEmulator) -> dict[str, dict[str, Any]]:
    store = emulator.store
    return {
        user.name: {"email": user.email, "displayName": user.display_name,
                    "groups": {g.name for g in store.groups_of(user)}}
        for user in store.all_users()
        if user.name != "admin"
    }


@pytest.mark.parametrize("lazy", [False, True])
def test_preload_creates_exactly_the_expected_accounts_and_memberships(lazy: bool) -> None:
    options = EmulatorOptions(users=3000, groups=45, seed=1, preload_fraction=0.4, lazy=lazy)
    _, jira, confluence = build_emulators(options)
    want_jira, want_confluence = expected_preload(options)
    assert accounts(jira) == want_jira
    assert accounts(confluence) == want_confluence
    assert 0.3 * 3000 * 0.8 < len(want_jira) < 0.5 * 3000 * 0.8  # about F of the active users
    assert any("+" in name for name in want_jira)  # plus-addressed: Jira only
    assert not any("+" in name for name in want_confluence)
    assert "john.smith" not in want_jira  # two Okta users map to it: nobody gets it
    for emulator in (jira, confluence):
        assert all(u.active for u in emulator.store.all_users())
        assert all(name_key(n) == n for n in accounts(emulator))
    # Confluence's search index knows the preloaded users at once
    assert len(confluence.index.view(active_only=True)) == len(want_confluence) + 1


def test_preload_with_lazy_directory_built_in_a_second_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner_module, "PARALLEL_START_USERS", 0)
    options = EmulatorOptions(users=1500, groups=30, seed=2, preload_fraction=0.5, lazy=True)
    okta, jira, _ = build_emulators(options)
    assert isinstance(okta.directory, LazyDirectory)
    assert list(okta.directory.user_ids) == generate_directory(1500, 30, 2).user_ids
    assert accounts(jira) == expected_preload(options)[0]


def test_preload_zero_and_one() -> None:
    options = EmulatorOptions(users=400, groups=10, seed=3)
    jira = JiraEmulator(username="admin", password="admin")
    confluence = ConfluenceEmulator(username="admin", password="admin")
    options.preload_fraction = 1.0
    summary = preload_targets(options, jira, confluence)
    active = sum(generate_user(3, i).status in ACTIVE_STATUSES for i in range(400))
    assert active - 2 <= summary.jira_users <= active  # minus the colliding showcase pair
    assert not [i for i in range(100) if preload_selected(i, 0.0)]
    assert len([i for i in range(1000) if preload_selected(i, 0.25)]) == 250


@pytest.mark.asyncio
async def test_preloaded_accounts_are_served() -> None:
    options = EmulatorOptions(users=300, groups=12, seed=5, ports=(0, 0, 0), okta_rate_scale=0,
                              lazy=True, preload_fraction=0.5)
    async with running_emulators(options) as running, aiohttp.ClientSession() as session:
        jira_auth = {"Authorization": f"Bearer {options.jira_token}"}
        name = next(iter(accounts(running.jira)))
        async with session.get(f"{running.jira_url}/rest/api/2/user",
                               params={"username": name, "expand": "groups"},
                               headers=jira_auth) as resp:
            body = await resp.json()
            assert resp.status == 200 and body["active"] is True
            assert "jira-software-users" in {g["name"] for g in body["groups"]["items"]}
        async with session.get(f"{running.jira_url}/rest/api/2/user",
                               params={"key": body["key"]}, headers=jira_auth) as resp:
            assert resp.status == 200 and (await resp.json())["name"] == name


# ---------------------------------------------------------------------------------------------
# Flags


def test_cli_flags_parse_into_options() -> None:
    parser = build_parser()
    options = options_from(parser.parse_args(
        ["--lazy", "--users", "1000000", "--groups", "2000", "--memberships", "5000000",
         "--preload-fraction", "0.5"]))
    assert options.lazy is True and options.preload_fraction == 0.5
    assert options.users == 1_000_000 and options.memberships == 5_000_000
    defaults = options_from(parser.parse_args([]))
    assert defaults.lazy is False and defaults.preload_fraction == 0.0
    with pytest.raises(SystemExit):
        parser.parse_args(["--preload-fraction", "1.5"])
