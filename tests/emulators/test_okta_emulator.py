"""The Okta emulator answers like real Okta: recorded shapes, schemas, paging, limits, faults."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import jsonschema
import pytest
from aiohttp import web

from oktasync_emulators.common import FaultConfig
from oktasync_emulators.directory import (
    STATUSES,
    Directory,
    User,
    generate_directory,
    generate_user,
    iso,
    user_state,
)
from oktasync_emulators.okta import OktaEmulator, OktaRateConfig

# profile attributes the generated directory sets beyond the recorded users' ones
CUSTOM_ATTRS = ("department", "location", "costCenter")
PROFILE_EXTRA = frozenset({"displayName", "transitioningToStatus", *CUSTOM_ATTRS})
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "okta"
TOKEN = "00test-okta-token"
AUTH = {"Authorization": f"SSWS {TOKEN}"}


@asynccontextmanager
async def serve(emulator: OktaEmulator) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """The emulator on 127.0.0.1 (ephemeral port) and a client session with the API token."""
    runner = web.AppRunner(emulator.make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    try:
        async with aiohttp.ClientSession(base_url=base, headers=AUTH) as session:
            yield session, base
    finally:
        await runner.cleanup()


async def call(
    session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any, Any]:
    """(status, JSON body or text, headers)."""
    async with session.request(method, path, **kwargs) as resp:
        raw = await resp.read()
        body: Any = raw.decode()
        if resp.content_type == "application/json" and raw:
            body = json.loads(raw)
        return resp.status, body, resp.headers


def sample(name: str) -> Any:
    """A recorded real Okta answer's body."""
    return json.loads((FIXTURES / f"{name}.json").read_text())["response"]["body"]


def assert_shape(
    expected: Any, actual: Any, path: str = "$", extra: frozenset[str] = frozenset()
) -> None:
    """``actual`` has the keys and value types of the recorded ``expected``, recursively.

    ``extra`` names keys allowed beyond the recorded ones (e.g. ``displayName``); a null on
    either side matches any type (the field is nullable), lists compare every element with
    the recorded first one.
    """
    if expected is None or actual is None:
        return
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        missing = set(expected) - set(actual)
        surplus = set(actual) - set(expected) - extra
        assert not missing, f"{path}: missing keys {sorted(missing)}"
        assert not surplus, f"{path}: unexpected keys {sorted(surplus)}"
        for key in expected:
            assert_shape(expected[key], actual[key], f"{path}.{key}", extra)
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: expected a list, got {actual!r}"
        if expected:
            for i, item in enumerate(actual):
                assert_shape(expected[0], item, f"{path}[{i}]", extra)
    else:
        assert type(actual) is type(expected), f"{path}: {actual!r} is not {type(expected)}"


def _convert(node: Any) -> Any:
    """OpenAPI 3.0 -> JSON Schema: ``nullable`` becomes a null alternative, refs to $defs."""
    if isinstance(node, list):
        return [_convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _convert(v) for k, v in node.items() if k != "nullable"}
    if "$ref" in out:
        out["$ref"] = out["$ref"].replace("#/components/schemas/", "#/$defs/")
    if node.get("nullable"):
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            return {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for one of Okta's schemas (User, Group, Error)."""
    spec = json.loads((FIXTURES / "okta-openapi-schemas.json").read_text())
    defs = _convert(spec["components"]["schemas"])
    schema = {"$defs": defs, "$ref": f"#/$defs/{name}"}
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def assert_error(body: Any, code: str, summary: str | None = None) -> None:
    """A real Okta error body (shape of the recorded 404) with this code."""
    assert_shape(sample("get-user-404"), body)
    validator("Error").validate(body)
    assert body["errorCode"] == code
    assert body["errorLink"] == code
    assert body["errorId"].startswith("oae") and len(body["errorId"]) == 25
    if summary is not None:
        assert body["errorSummary"] == summary


# ---------------------------------------------------------------------------------------------
# Emulators under test


def make_okta(users: int = 1000, groups: int = 40, seed: int = 7, **kwargs: Any) -> OktaEmulator:
    kwargs.setdefault("rate", OktaRateConfig(scale=0))
    return OktaEmulator(
        generate_directory(users=users, groups=groups, seed=seed), token=TOKEN, **kwargs
    )


def by_status(directory: Directory, status: str) -> User:
    return next(u for u in directory.iter_users() if u.status == status)


def links_of(headers: Any) -> list[str]:
    return list(headers.getall("Link", []))


def next_link(headers: Any) -> str | None:
    for link in links_of(headers):
        if link.endswith('rel="next"'):
            url = link[1 : link.index(">")]
            return url
    return None


async def list_all(
    session: aiohttp.ClientSession, path: str, params: dict[str, str] | None = None
) -> tuple[list[Any], int]:
    """Follow ``next`` links as given; (items, pages)."""
    status, body, headers = await call(session, "GET", path, params=params or {})
    assert status == 200, body
    items, pages = list(body), 1
    url = next_link(headers)
    while url is not None:
        status, body, headers = await call(session, "GET", url)
        assert status == 200, body
        items.extend(body)
        pages += 1
        url = next_link(headers)
    return items, pages


ALL_STATUSES_SEARCH = " or ".join(f'status eq "{s}"' for s in STATUSES)


# ---------------------------------------------------------------------------------------------
# Generator


def test_generator_covers_every_case_with_1000_users() -> None:
    directory = generate_directory(users=1000, groups=40, seed=3)
    users = list(directory.iter_users())
    assert len(users) == 1000
    assert {u.status for u in users} == set(STATUSES)
    assert any(u.transitioning for u in users)
    usernames = Counter(re.sub(r"(.*)@.*", r"\1", u.login, count=1).lower() for u in users)
    assert any(n > 1 for n in usernames.values()), "no colliding username pair"
    assert len({u.login.lower() for u in users}) == 1000, "logins must be unique"
    assert any(u.login != u.login.lower() for u in users)
    assert any("+" in u.login.split("@")[0] for u in users)
    assert any(u.email != u.login for u in users)
    assert len({u.login.split("@")[1].lower() for u in users}) >= 3
    assert any(u.display_name for u in users) and any(u.display_name is None for u in users)
    names = " ".join(f"{u.first_name} {u.last_name}" for u in users)
    for char in ("é", "ø", "ß", "王"):
        assert char in names.lower() or char in names
    for u in users:
        assert len(u.id) == 20 and u.id.startswith("00u")
        assert u.created <= u.last_updated


def test_generator_groups_names_types_and_everyone() -> None:
    directory = generate_directory(users=1000, groups=40, seed=3)
    groups = [directory.groups[g] for g in directory.group_ids]
    names = {g.name for g in groups}
    assert "jira-software-users" in names
    assert any("&" in n for n in names) and any("/" in n for n in names)
    assert any(" " in n for n in names) and any(not n.isascii() for n in names)
    assert {g.type for g in groups} == {"OKTA_GROUP", "APP_GROUP", "BUILT_IN"}
    everyone = [g for g in groups if g.type == "BUILT_IN"]
    assert [g.name for g in everyone] == ["Everyone"]
    assert directory.member_count(everyone[0]) == 1000
    assert all(g.source_id for g in groups if g.type == "APP_GROUP")
    assert all(len(g.id) == 20 and g.id.startswith("00g") for g in groups)


def test_generator_skewed_sizes_and_exact_membership_total() -> None:
    directory = generate_directory(users=5000, groups=40, seed=3)
    sizes = sorted(len(g.members) for g in directory.groups.values() if g.type != "BUILT_IN")
    assert sizes[-1] > 1000
    assert sizes[0] < sizes[-1] / 10  # Zipf-like, not uniform
    assert sum(sizes) == 15000  # default: three per user
    small = generate_directory(users=300, groups=10, seed=3, memberships=450)
    assert sum(len(g.members) for g in small.groups.values()) == 450


def test_generator_is_deterministic_for_a_seed() -> None:
    one = generate_directory(users=300, groups=12, seed=11).state_json()
    two = generate_directory(users=300, groups=12, seed=11).state_json()
    other = generate_directory(users=300, groups=12, seed=12).state_json()
    assert one == two
    assert one != other
    assert generate_user(11, 42) == generate_user(11, 42)  # per-user: pure in (seed, index)
    assert [u["id"] for u in one["users"]] == sorted(u["id"] for u in one["users"])


# ---------------------------------------------------------------------------------------------
# Payloads against recordings and schemas


@pytest.mark.asyncio
async def test_list_users_matches_recording_schema_and_links() -> None:
    emulator = make_okta()
    staged = by_status(emulator.directory, "STAGED")
    async with serve(emulator) as (session, _):
        headers = {"Host": "acme.okta.example"}
        status, body, resp = await call(
            session, "GET", "/api/v1/users", params={"limit": "3"}, headers=headers
        )
        assert status == 200 and len(body) == 3
        links = links_of(resp)
        assert len(links) == 2
        assert links[0] == '<http://acme.okta.example/api/v1/users?limit=3>; rel="self"'
        assert links[1].startswith("<http://acme.okta.example/api/v1/users?after=")
        assert links[1].endswith('&limit=3>; rel="next"')
        assert resp["Date"]
        _, one, _ = await call(
            session, "GET", "/api/v1/users", params={"filter": f'id eq "{staged.id}"'}
        )
    user_validator = validator("User")
    recorded = sample("list-users-page")[0]
    for user in [*body, *one]:
        user_validator.validate(user)
        assert_shape(recorded, user, extra=PROFILE_EXTRA)
    assert [u["id"] for u in one] == [staged.id]
    # a STAGED user has exactly the recorded user's nulls
    assert {k for k, v in one[0].items() if v is None} == {
        k for k, v in recorded.items() if v is None
    }


@pytest.mark.asyncio
async def test_get_user_by_id_or_login_and_user_groups() -> None:
    emulator = make_okta()
    staged = by_status(emulator.directory, "STAGED")
    async with serve(emulator) as (session, base):
        status, body, _ = await call(session, "GET", f"/api/v1/users/{staged.id}")
        assert status == 200
        validator("User").validate(body)
        extra = frozenset({"deactivate", "displayName", *CUSTOM_ATTRS})
        assert_shape(sample("get-user"), body, extra=extra)
        assert body["_links"]["activate"]["method"] == "POST"
        status, by_login, _ = await call(
            session, "GET", f"/api/v1/users/{quote(staged.login.upper())}"
        )
        assert status == 200 and by_login["id"] == staged.id
        status, groups, headers = await call(session, "GET", f"/api/v1/users/{staged.id}/groups")
        assert status == 200
        assert links_of(headers) == [
            f'<{base}/api/v1/users/{staged.id}/groups?limit=200>; rel="self"'
        ]
    expected = {g.id for g in emulator.directory.groups_of(staged.id)}
    assert {g["id"] for g in groups} == expected
    assert groups[0]["profile"]["name"] == "Everyone"
    group_validator = validator("Group")
    for group in groups:
        group_validator.validate(group)
        if group["type"] != "APP_GROUP":
            assert_shape(sample("list-user-groups")[0], group)


@pytest.mark.asyncio
async def test_groups_listing_payloads_stats_filter_and_search() -> None:
    emulator = make_okta()
    async with serve(emulator) as (session, _):
        status, groups, headers = await call(session, "GET", "/api/v1/groups")
        assert status == 200 and len(groups) == 41
        assert len(links_of(headers)) == 1 and "limit=10000" in links_of(headers)[0]
        _, with_stats, _ = await call(session, "GET", "/api/v1/groups", params={"expand": "stats"})
        _, app_groups, _ = await call(
            session, "GET", "/api/v1/groups", params={"filter": 'type eq "APP_GROUP"'}
        )
        _, found, _ = await call(
            session, "GET", "/api/v1/groups", params={"search": 'profile.name sw "JIRA-soft"'}
        )
        _, okta_only, _ = await call(
            session, "GET", "/api/v1/groups", params={"search": 'type eq "OKTA_GROUP"'}
        )
    group_validator = validator("Group")
    recorded = sample("list-groups")[0]
    for group in groups:
        group_validator.validate(group)
        if group["type"] == "APP_GROUP":
            assert group["source"]["id"].startswith("0oa")
            assert set(recorded) <= set(group)
        else:
            assert_shape(recorded, group)
    counts = {g["id"]: g["_embedded"]["stats"]["usersCount"] for g in with_stats}
    for gid, count in counts.items():
        assert count == emulator.directory.member_count(emulator.directory.groups[gid])
    assert app_groups and all(g["type"] == "APP_GROUP" for g in app_groups)
    assert [g["profile"]["name"] for g in found] == ["jira-software-users"]
    assert okta_only and {g["type"] for g in okta_only} == {"OKTA_GROUP"}


@pytest.mark.asyncio
async def test_group_members_paging_and_recording() -> None:
    emulator = make_okta()
    directory = emulator.directory
    everyone = directory.everyone
    async with serve(emulator) as (session, _):
        members, pages = await list_all(session, f"/api/v1/groups/{everyone.id}/users")
        assert pages == 1 and len(members) == 1000  # default limit 1000
        paged, pages = await list_all(
            session, f"/api/v1/groups/{everyone.id}/users", {"limit": "300"}
        )
        assert pages == 4 and [u["id"] for u in paged] == directory.user_ids
        status, body, _ = await call(session, "GET", "/api/v1/groups/00gnosuchgroup0000000/users")
        assert status == 404
        assert_error(body, "E0000007")
        status, body, _ = await call(session, "GET", "/api/v1/groups/00gnosuchgroup0000000")
        assert status == 404
    for user in members[:50]:
        assert_shape(
            sample("list-group-users")[0],
            user,
            extra=PROFILE_EXTRA,
        )
    statuses = {u["status"] for u in members}
    assert "DEPROVISIONED" in statuses  # members of every status


# ---------------------------------------------------------------------------------------------
# Listing semantics


@pytest.mark.asyncio
async def test_deprovisioned_only_with_search_or_filter() -> None:
    emulator = make_okta()
    gone = sum(1 for u in emulator.directory.iter_users() if u.status == "DEPROVISIONED")
    assert gone > 0
    async with serve(emulator) as (session, _):
        plain, _ = await list_all(session, "/api/v1/users")
        searched, pages = await list_all(session, "/api/v1/users", {"search": ALL_STATUSES_SEARCH})
        filtered, _ = await list_all(
            session, "/api/v1/users", {"filter": 'status eq "DEPROVISIONED"'}
        )
    assert len(plain) == 1000 - gone
    assert all(u["status"] != "DEPROVISIONED" for u in plain)
    assert len(searched) == 1000 and pages == 5
    assert len(filtered) == gone


@pytest.mark.asyncio
async def test_search_and_filter_semantics() -> None:
    emulator = make_okta()
    directory = emulator.directory
    suspended = {u.id for u in directory.iter_users() if u.status == "SUSPENDED"}
    some = by_status(directory, "ACTIVE")
    async with serve(emulator) as (session, _):
        found, _ = await list_all(session, "/api/v1/users", {"search": 'status eq "suspended"'})
        assert {u["id"] for u in found} == suspended  # search values are case-insensitive
        by_filter, _ = await list_all(session, "/api/v1/users", {"filter": 'status eq "suspended"'})
        assert by_filter == []  # filter values are case-sensitive
        query = f'(profile.login eq "{some.login}") and (status eq "ACTIVE" or status pr)'
        found, _ = await list_all(session, "/api/v1/users", {"search": query})
        assert [u["id"] for u in found] == [some.id]
        recent = iso(some.last_updated - 1)
        changed, _ = await list_all(
            session, "/api/v1/users", {"filter": f'lastUpdated gt "{recent}"'}
        )
        assert some.id in {u["id"] for u in changed}
        assert all(u["lastUpdated"] > str(recent) for u in changed)
        sorted_users, pages = await list_all(
            session,
            "/api/v1/users",
            {"search": "id pr", "sortBy": "profile.lastName", "limit": "150"},
        )
        assert pages == 7 and len({u["id"] for u in sorted_users}) == 1000
        keys = [(u["profile"]["lastName"].lower(), u["id"]) for u in sorted_users]
        assert keys == sorted(keys)
        status, q_users, headers = await call(session, "GET", "/api/v1/users", params={"q": "john"})
        assert status == 200 and 0 < len(q_users) <= 10 and next_link(headers) is None


@pytest.mark.asyncio
async def test_paging_stays_consistent_while_users_change() -> None:
    emulator = make_okta(users=600)
    directory = emulator.directory
    before = [u.id for u in directory.iter_users()]
    async with serve(emulator) as (session, _):
        status, page, headers = await call(
            session, "GET", "/api/v1/users", params={"search": "id pr", "limit": "200"}
        )
        seen = [u["id"] for u in page]
        await call(
            session,
            "POST",
            "/_emulator/users",
            json={
                "login": "new.person@example.com",
                "firstName": "New",
                "lastName": "Person",
            },
        )
        await call(
            session,
            "POST",
            f"/_emulator/users/{before[-1]}/status",
            json={
                "status": "SUSPENDED",
            },
        )
        url = next_link(headers)
        while url is not None:
            status, page, headers = await call(session, "GET", url)
            assert status == 200
            seen.extend(u["id"] for u in page)
            url = next_link(headers)
    assert len(seen) == len(set(seen))
    assert set(before) <= set(seen)


@pytest.mark.asyncio
async def test_omit_credentials_header() -> None:
    emulator = make_okta(users=50)
    async with serve(emulator) as (session, _):
        _, with_creds, _ = await call(session, "GET", "/api/v1/users", params={"limit": "5"})
        _, without, _ = await call(
            session,
            "GET",
            "/api/v1/users",
            params={"limit": "5"},
            headers={"Content-Type": "application/json; okta-response=omitCredentials"},
        )
    assert all("credentials" in u for u in with_creds)
    assert all("credentials" not in u for u in without)


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.asyncio
async def test_error_answers_are_okta_errors_never_500() -> None:
    emulator = make_okta(users=50)
    async with serve(emulator) as (session, _):

        async def expect(code: str, status: int, path: str, **kwargs: Any) -> Any:
            got, body, headers = await call(session, kwargs.pop("method", "GET"), path, **kwargs)
            assert got == status, (path, kwargs, body)
            assert_error(body, code)
            assert "X-Rate-Limit-Limit" in headers
            return body

        body = await expect("E0000029", 400, "/api/v1/users", params={"after": "garbage!"})
        assert body["errorSummary"] == "Invalid paging request."
        assert body["errorCauses"] == [{"errorSummary": "Invalid cursor."}]
        groups_cursor = "WyJncm91cHMiLCIwMGd4IixudWxsXQ"  # a valid groups cursor, not a users one
        await expect("E0000029", 400, "/api/v1/users", params={"after": groups_cursor})
        for bad in (
            'status eq "ACTIVE',
            "status eq",
            'status equals "A"',
            "(status pr",
            'nosuch eq "x"',
            'status co "ACT"',
            'lastUpdated gt "yesterday"',
            "",
        ):
            await expect("E0000031", 400, "/api/v1/users", params={"search": bad})
        for bad in (
            'profile.displayName eq "x"',
            'status sw "A"',
            'created gt "2020-01-01T00:00:00.000Z"',
        ):
            body = await expect("E0000031", 400, "/api/v1/users", params={"filter": bad})
            assert body["errorSummary"] == "Invalid search criteria."
        await expect("E0000031", 400, "/api/v1/groups", params={"filter": 'profile.name eq "x"'})
        for headers in (
            {"Authorization": "SSWS wrong"},
            {"Authorization": f"Bearer {TOKEN}"},
            {"Authorization": ""},
        ):
            body = await expect("E0000011", 401, "/api/v1/users", headers=headers)
            assert body["errorSummary"] == "Invalid token provided"
        body = await expect("E0000007", 404, "/api/v1/users/00unosuchuser00000000")
        assert body["errorSummary"] == "Not found: Resource not found: 00unosuchuser00000000 (User)"
        await expect("E0000007", 404, "/api/v1/nosuchthing")
        await expect("E0000022", 405, "/api/v1/users", method="DELETE")
        await expect("E0000022", 405, "/api/v1/groups/x/users", method="PUT")
        for limit in ("0", "-3", "ten"):
            await expect("E0000001", 400, "/api/v1/users", params={"limit": limit})
        status, body, _ = await call(
            session,
            "GET",
            "/api/v1/users",
            headers={"Authorization": f"SSWS{TOKEN}"},
            params={"limit": "500", "search": "id pr"},
        )
        assert status == 200 and len(body) == 50  # no-space SSWS accepted; limit clamped
        status, body, headers = await call(session, "GET", "/api/v1/users", params={"limit": "999"})
        assert "limit=200" in links_of(headers)[0]
    assert emulator.stats.total.status[500] == 0


# ---------------------------------------------------------------------------------------------
# Mutations, control endpoints, search lag


@pytest.mark.asyncio
async def test_mutations_move_timestamps_and_show_in_state() -> None:
    emulator = make_okta(users=100, groups=10)
    directory = emulator.directory
    user = by_status(directory, "ACTIVE")
    group = next(g for g in directory.groups.values() if g.type == "OKTA_GROUP")
    old_user = user_state(user)
    old_group = iso(group.last_membership_updated)
    async with serve(emulator) as (session, _):
        status, changed, _ = await call(
            session, "POST", f"/_emulator/users/{user.id}/status", json={"status": "SUSPENDED"}
        )
        assert status == 200 and changed["status"] == "SUSPENDED"
        assert changed["lastUpdated"] > old_user["lastUpdated"]
        assert changed["statusChanged"] > (old_user["statusChanged"] or "")
        status, changed, _ = await call(
            session,
            "POST",
            f"/_emulator/users/{user.id}/profile",
            json={"displayName": "Renamed Person", "email": "renamed@example.com"},
        )
        assert status == 200 and changed["profile"]["email"] == "renamed@example.com"
        if user.id in group.members:
            await call(session, "DELETE", f"/_emulator/groups/{group.id}/members/{user.id}")
        status, added, _ = await call(
            session, "POST", f"/_emulator/groups/{group.id}/members/{user.id}"
        )
        assert status == 200 and added == {"changed": True}
        status, renamed, _ = await call(
            session, "POST", f"/_emulator/groups/{group.id}/profile", json={"name": "Renamed & Co"}
        )
        assert status == 200 and renamed["profile"]["name"] == "Renamed & Co"
        status, new, _ = await call(
            session,
            "POST",
            "/_emulator/users",
            json={
                "login": "Added.Person@example.com",
                "firstName": "Added",
                "lastName": "Person",
            },
        )
        assert status == 201
        bad = [
            await call(
                session, "POST", "/_emulator/users/00unosuch/status", json={"status": "ACTIVE"}
            ),
            await call(session, "POST", f"/_emulator/users/{user.id}/status", json={"status": "X"}),
            await call(session, "POST", "/_emulator/users", data=b"{not json"),
            await call(
                session,
                "POST",
                "/_emulator/users",
                json={"login": "Added.Person@example.com", "firstName": "A", "lastName": "B"},
            ),
        ]
        assert [b[0] for b in bad] == [404, 400, 400, 400]
        _, api_user, _ = await call(session, "GET", f"/api/v1/users/{user.id}")
        _, api_group, _ = await call(session, "GET", f"/api/v1/groups/{group.id}")
        status, state, _ = await call(session, "GET", "/_emulator/state")
    assert (
        api_user["status"] == "SUSPENDED" and api_user["profile"]["displayName"] == "Renamed Person"
    )
    assert api_group["lastMembershipUpdated"] > str(old_group)
    assert api_group["profile"]["name"] == "Renamed & Co"
    assert api_group["lastUpdated"] == renamed["lastUpdated"]
    assert status == 200 and set(state) == {"users", "groups", "memberships"}
    assert len(state["users"]) == 101
    assert user.id in state["memberships"][group.id]
    assert new["id"] in state["memberships"][directory.everyone.id]
    assert emulator.stats.total.requests == 2  # control endpoints are not counted


@pytest.mark.asyncio
async def test_search_lags_behind_changes() -> None:
    emulator = make_okta(users=100, groups=5, search_lag_s=0.4)
    user = by_status(emulator.directory, "ACTIVE")
    search = {"search": f'id eq "{user.id}" and status eq "SUSPENDED"'}
    async with serve(emulator) as (session, _):
        await call(
            session, "POST", f"/_emulator/users/{user.id}/status", json={"status": "SUSPENDED"}
        )
        _, direct, _ = await call(session, "GET", f"/api/v1/users/{user.id}")
        _, filtered, _ = await call(
            session, "GET", "/api/v1/users", params={"filter": f'id eq "{user.id}"'}
        )
        _, early, _ = await call(session, "GET", "/api/v1/users", params=search)
        await asyncio.sleep(0.5)
        _, late, _ = await call(session, "GET", "/api/v1/users", params=search)
    assert direct["status"] == "SUSPENDED" and filtered[0]["status"] == "SUSPENDED"
    assert early == []
    assert [u["id"] for u in late] == [user.id]


# ---------------------------------------------------------------------------------------------
# Rate limits, concurrency, faults


@pytest.mark.asyncio
async def test_rate_limit_buckets_headers_and_windows() -> None:
    # per-minute limit * scale * window_s / 60: users 600 -> 3, user 2000 -> 10 per 1 s window
    rate = OktaRateConfig(scale=0.3, window_s=1.0)
    emulator = make_okta(users=50, rate=rate)
    async with serve(emulator) as (session, _):
        answers = [
            await call(session, "GET", "/api/v1/users", params={"limit": "1"}) for _ in range(5)
        ]
        other = await call(session, "GET", f"/api/v1/users/{emulator.directory.user_ids[0]}")
        unauthorized = await call(
            session, "GET", "/api/v1/users", headers={"Authorization": "SSWS x"}
        )
        await asyncio.sleep(1.1)
        after_reset = await call(session, "GET", "/api/v1/users", params={"limit": "1"})
        _, stats, _ = await call(session, "GET", "/_emulator/stats")
    assert [a[0] for a in answers] == [200, 200, 200, 429, 429]
    assert [a[2]["X-Rate-Limit-Remaining"] for a in answers] == ["2", "1", "0", "0", "0"]
    recorded_429 = sample("rate-limited-429")
    for _, body, headers in answers[3:]:
        assert body.keys() == recorded_429.keys()
        assert {k: v for k, v in body.items() if k != "errorId"} == {
            k: v for k, v in recorded_429.items() if k != "errorId"
        }
        assert "Retry-After" not in headers
    assert answers[3][1]["errorId"] != answers[4][1]["errorId"]
    for _, _, headers in [*answers, other, unauthorized, after_reset]:
        assert headers["X-Rate-Limit-Limit"].isdigit() and headers["Date"]
        assert int(headers["X-Rate-Limit-Reset"]) >= int(time.time()) - 2
    assert answers[0][2]["X-Rate-Limit-Limit"] == "3"
    assert other[0] == 200 and other[2]["X-Rate-Limit-Limit"] == "10"  # its own bucket
    assert unauthorized[0] == 401
    assert after_reset[0] == 200 and after_reset[2]["X-Rate-Limit-Remaining"] == "2"
    assert stats["windows"]["users"] == [3]  # 429s do not count against the bucket
    assert stats["windows_current"]["users"] == 1
    assert stats["window_limits"]["users"] == 3
    assert stats["rate_limited"] == 2
    assert set(stats) >= {
        "requests",
        "reads",
        "writes_applied",
        "status",
        "rate_limited",
        "faults",
        "by_endpoint",
        "windows",
    }


@pytest.mark.asyncio
async def test_concurrency_limit_counts_requests_in_flight() -> None:
    rate = OktaRateConfig(scale=1.0, concurrency=3)
    emulator = make_okta(users=20, rate=rate, faults=FaultConfig(latency_ms=300))
    async with serve(emulator) as (session, _):
        answers = await asyncio.gather(
            *(call(session, "GET", "/api/v1/users", params={"limit": "1"}) for _ in range(8))
        )
    refused = [a for a in answers if a[0] == 429]
    assert len(refused) == 5 and sum(a[0] == 200 for a in answers) == 3
    for _, body, headers in refused:
        assert body["errorCode"] == "E0000047"
        assert headers["X-Rate-Limit-Limit"] == "0" and headers["X-Rate-Limit-Remaining"] == "0"
        assert "Retry-After" not in headers
    assert emulator.stats.total.rate_limited == 5
    assert emulator.in_flight == 0


@pytest.mark.asyncio
async def test_unavailable_faults_are_injected_and_harmless() -> None:
    emulator = make_okta(users=100, groups=5, faults=FaultConfig(fail_rate=0.3, seed=5))
    before = emulator.directory.state_json()
    async with serve(emulator) as (session, _):
        statuses = [
            (await call(session, "GET", "/api/v1/users", params={"limit": "2"}))[0]
            for _ in range(120)
        ]
        _, stats, _ = await call(session, "GET", "/_emulator/stats")
    assert stats["faults"]["unavailable"] >= 20
    assert statuses.count(503) == stats["faults"]["unavailable"]
    assert statuses.count(200) + statuses.count(503) == 120
    assert emulator.directory.state_json() == before


# ---------------------------------------------------------------------------------------------
# The official Okta SDK


@pytest.mark.asyncio
async def test_official_sdk_lists_everything_with_its_own_pagination(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from okta.api_response import OktaAPIResponse
    from okta.client import Client as OktaClient
    from okta.pagination import paginate_pages

    # the SDK insists on https unless its testing switch is set (config key testing.*)
    monkeypatch.setenv("OKTA_TESTING_TESTINGDISABLEHTTPSCHECK", "true")
    emulator = make_okta(users=1000, groups=40)
    everyone = emulator.directory.everyone
    async with serve(emulator) as (_, base):
        client = OktaClient({"orgUrl": base, "token": TOKEN})
        pages = [
            p async for p, _, _ in paginate_pages(client.list_users, limit=200, search="id pr")
        ]
        group_pages = [p async for p, _, _ in paginate_pages(client.list_groups, limit=200)]

        async def members(**kwargs: Any) -> Any:
            return await client.list_group_users(everyone.id, **kwargs)

        member_pages = [p async for p, _, _ in paginate_pages(members, limit=200)]
        # the SDK's response object with has_next()/next(), as older SDK code paginates
        executor = client.get_request_executor()
        request, error = await executor.create_request(
            "GET", f"/api/v1/users?search={quote(ALL_STATUSES_SEARCH)}", {}, {}
        )
        assert error is None
        request, details, body, error = await executor.fire_request(request)
        assert error is None
        response = OktaAPIResponse(executor, request, details, body, None)
        via_next = list(response.get_body())
        while response.has_next():
            page, error = await response.next()
            assert error is None
            via_next.extend(page)
    assert [len(p) for p in pages] == [200] * 5
    ids = [u.id for p in pages for u in p]
    assert sorted(ids) == emulator.directory.user_ids
    assert {
        u.status.value if hasattr(u.status, "value") else u.status for p in pages for u in p
    } == set(STATUSES)
    assert sum(len(p) for p in group_pages) == 41
    assert [len(p) for p in member_pages] == [200] * 5
    assert sorted(u["id"] for u in via_next) == emulator.directory.user_ids
    by_endpoint = emulator.stats.to_json()["by_endpoint"]
    assert by_endpoint["GET /api/v1/users"]["requests"] == 10  # 5 pages, twice
    assert by_endpoint["GET /api/v1/groups/{id}/users"]["requests"] == 5
