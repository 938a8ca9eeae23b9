"""The Jira DC emulator answers like a real Jira: shapes, status codes, limits, refusals, faults."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from oktasync_emulators.atlassian_base import AtlassianRate
from oktasync_emulators.common import FaultConfig
from oktasync_emulators.jira import JiraEmulator

API = "/rest/api/2"
ADMIN_AUTH = "Basic " + base64.b64encode(b"admin:secret").decode()
TOKEN = "jira-pat"


class FakeClock:
    """A clock the test moves by hand (rate-limit refills without sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def serve(emulator: JiraEmulator) -> AsyncIterator[aiohttp.ClientSession]:
    """The emulator on 127.0.0.1, an ephemeral port, and a client session signed in as admin."""
    runner = web.AppRunner(emulator.make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession(
            base_url=f"http://{host}:{port}", headers={"Authorization": ADMIN_AUTH}
        ) as session:
            yield session
    finally:
        await runner.cleanup()


def make_jira(**kwargs: Any) -> JiraEmulator:
    return JiraEmulator(username="admin", password="secret", token=TOKEN, **kwargs)


async def call(
    session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with session.request(method, path, **kwargs) as resp:
        raw = await resp.read()
        if resp.content_type == "application/json" and raw:
            return resp.status, await resp.json()
        return resp.status, raw.decode()


async def create_user(session: aiohttp.ClientSession, name: str, **extra: Any) -> tuple[int, Any]:
    body = {"name": name, "emailAddress": f"{name.lower()}@example.com",
            "displayName": name.title(), **extra}
    return await call(session, "POST", f"{API}/user", json=body)


def users_spec(n: int, prefix: str = "user") -> list[dict[str, Any]]:
    return [
        {"name": f"{prefix}{i:04d}", "email": f"{prefix}{i:04d}@example.com",
         "displayName": f"User {i:04d}"}
        for i in range(n)
    ]


# --------------------------------------------------------------------------- users


@pytest.mark.asyncio
async def test_fresh_instance_has_admin_in_default_groups() -> None:
    jira = make_jira()
    assert jira.store.members("jira-software-users") == ["admin"]
    assert jira.store.members("JIRA-Administrators") == ["admin"]
    async with serve(jira) as s:
        status, me = await call(s, "GET", f"{API}/myself")
    assert status == 200
    assert me["name"] == "admin" and me["active"] is True
    groups = {g["name"] for g in me["groups"]["items"]}
    assert groups == {"jira-software-users", "jira-administrators"}


@pytest.mark.asyncio
async def test_create_user_returns_jira_user_json_and_stores_lower_case() -> None:
    jira = make_jira()
    async with serve(jira) as s:
        status, body = await create_user(s, "Alice.Smith", password="pw")
        assert status == 201
        assert body["name"] == "alice.smith"
        assert body["key"].startswith("JIRAUSER")
        assert body["emailAddress"] == "alice.smith@example.com"
        assert body["displayName"] == "Alice.Smith"
        assert body["active"] is True and body["deleted"] is False
        assert body["groups"] == {"size": 0, "items": []}
        assert body["self"].endswith(f"{API}/user?username=alice.smith")
        assert body["self"].startswith(str(s._base_url))
        for key in ("timeZone", "locale", "applicationRoles", "expand", "avatarUrls"):
            assert key in body
        status, again = await call(s, "GET", f"{API}/user", params={"username": "ALICE.SMITH"})
        assert status == 200 and again["key"] == body["key"]
    assert "alice.smith" in jira.store.users


@pytest.mark.asyncio
async def test_create_existing_user_is_400_with_username_error_any_case() -> None:
    async with serve(make_jira()) as s:
        await create_user(s, "bob")
        status, body = await create_user(s, "BOB")
    assert status == 400
    assert body == {"errorMessages": [],
                    "errors": {"username": "A user with that username already exists."}}


@pytest.mark.asyncio
async def test_application_keys_grant_software_access_only_when_asked() -> None:
    jira = make_jira()
    async with serve(jira) as s:
        await create_user(s, "plain")
        await create_user(s, "coder", applicationKeys=["jira-software"])
    assert jira.store.members("jira-software-users") == ["admin", "coder"]


@pytest.mark.asyncio
async def test_read_unknown_user_is_404_with_jira_body() -> None:
    async with serve(make_jira()) as s:
        status, body = await call(s, "GET", f"{API}/user", params={"username": "ghost"})
    assert status == 404
    assert body == {"errorMessages": ["The user named 'ghost' does not exist"], "errors": {}}


@pytest.mark.asyncio
async def test_malformed_json_and_missing_fields_are_400() -> None:
    async with serve(make_jira()) as s:
        status, body = await call(
            s, "POST", f"{API}/user", data=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert status == 400 and body["errorMessages"]
        status, body = await call(s, "POST", f"{API}/user", json={"name": "x"})
        assert status == 400 and "email" in body["errors"]
        status, body = await call(
            s, "POST", f"{API}/user", json={"emailAddress": "x@e.com", "displayName": "X"}
        )
        assert status == 400 and "username" in body["errors"]
        status, body = await call(s, "POST", f"{API}/group", json=["not", "an", "object"])
        assert status == 400


@pytest.mark.asyncio
async def test_create_names_every_missing_field_at_once() -> None:
    jira = make_jira()
    async with serve(jira) as s:
        status, body = await call(s, "POST", f"{API}/user", json={"displayName": "X"})
        assert status == 400 and body["errorMessages"] == []
        assert body["errors"] == {
            "username": "You must specify a username.",
            "email": "You must specify an email address.",
        }
        status, body = await call(
            s, "POST", f"{API}/user", json={"name": "  ", "emailAddress": 7, "displayName": "X"}
        )
        assert status == 400 and set(body["errors"]) == {"username", "email"}
    assert set(jira.store.users) == {"admin"}


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["a<b", "b>c", "tom&jerry", "<script>", "&"])
async def test_usernames_with_angle_brackets_or_ampersand_are_refused(name: str) -> None:
    jira = make_jira()
    async with serve(jira) as s:
        status, body = await create_user(s, name)
        assert status == 400
        assert body == {
            "errorMessages": [],
            "errors": {"username": "The username must not contain '<', '>' or '&'."},
        }
        await create_user(s, "frank")
        status, body = await call(
            s, "PUT", f"{API}/user", params={"username": "frank"}, json={"name": name}
        )
        assert status == 400
        assert body["errors"] == {"username": "The username must not contain '<', '>' or '&'."}
    assert set(jira.store.users) == {"admin", "frank"}  # nothing created, nothing renamed


@pytest.mark.asyncio
async def test_usernames_with_other_punctuation_are_accepted() -> None:
    """Jira refuses only '<', '>' and '&': the emulator must not be stricter either."""
    jira = make_jira()
    async with serve(jira) as s:
        for name in ("o'brien", "a+b", "x,y", "back\\slash", "with space", "é.ü"):
            status, body = await create_user(s, name)
            assert status == 201, (name, body)
        status, body = await call(
            s, "PUT", f"{API}/user", params={"username": "a+b"}, json={"name": "a+b+c"}
        )
        assert status == 200 and body["name"] == "a+b+c"


@pytest.mark.asyncio
async def test_update_keeps_missing_fields_and_accepts_string_booleans() -> None:
    jira = make_jira()
    async with serve(jira) as s:
        await create_user(s, "carol")
        status, body = await call(
            s, "PUT", f"{API}/user", params={"username": "CAROL"},
            json={"displayName": "Carol C", "active": "false"},
        )
        assert status == 200
        assert body["displayName"] == "Carol C" and body["active"] is False
        assert body["emailAddress"] == "carol@example.com"
        status, body = await call(
            s, "PUT", f"{API}/user", params={"username": "carol"}, json={"active": True}
        )
        assert status == 200 and body["active"] is True
        status, body = await call(
            s, "PUT", f"{API}/user", params={"username": "carol"}, json={"active": "maybe"}
        )
        assert status == 400 and "active" in body["errors"]
    assert jira.store.users["carol"].display_name == "Carol C"


@pytest.mark.asyncio
async def test_rename_moves_account_and_memberships() -> None:
    jira = make_jira()
    async with serve(jira) as s:
        _, created = await create_user(s, "dave")
        await call(s, "POST", f"{API}/group/user", params={"groupname": "jira-software-users"},
                   json={"name": "dave"})
        status, body = await call(
            s, "PUT", f"{API}/user", params={"username": "dave"}, json={"name": "David"}
        )
        assert status == 200 and body["name"] == "david" and body["key"] == created["key"]
        status, _ = await call(s, "GET", f"{API}/user", params={"username": "dave"})
        assert status == 404
        # the same name in another case is no rename
        status, body = await call(
            s, "PUT", f"{API}/user", params={"username": "david"}, json={"name": "DAVID"}
        )
        assert status == 200 and body["name"] == "david"
        await create_user(s, "erin")
        status, body = await call(
            s, "PUT", f"{API}/user", params={"username": "david"}, json={"name": "Erin"}
        )
        assert status == 400
        assert body["errors"] == {"username": "A user with that username already exists."}
    assert "david" in jira.store.members("jira-software-users")
    assert "dave" not in jira.store.users


@pytest.mark.asyncio
async def test_user_expand_groups_lists_memberships() -> None:
    jira = make_jira()
    jira.preload(users_spec(1), groups=["Dev & Ops"], memberships=[("user0000", "dev & ops")])
    async with serve(jira) as s:
        status, body = await call(
            s, "GET", f"{API}/user", params={"username": "user0000", "expand": "groups"}
        )
    assert status == 200
    assert body["groups"]["size"] == 1
    assert body["groups"]["items"][0]["name"] == "Dev & Ops"


# --------------------------------------------------------------------------- auth


@pytest.mark.asyncio
async def test_bad_credentials_are_401_and_tokens_work() -> None:
    async with serve(make_jira()) as s:
        wrong = "Basic " + base64.b64encode(b"admin:nope").decode()
        status, body = await call(s, "GET", f"{API}/myself", headers={"Authorization": wrong})
        assert status == 401 and body["errorMessages"]
        status, _ = await call(s, "GET", f"{API}/myself", headers={"Authorization": "Bearer x"})
        assert status == 401
        async with aiohttp.ClientSession(base_url=s._base_url) as anonymous:
            status, _ = await call(anonymous, "GET", f"{API}/myself")
            assert status == 401
        status, me = await call(
            s, "GET", f"{API}/myself", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert status == 200 and me["name"] == "admin"


@pytest.mark.asyncio
async def test_non_admin_cannot_write() -> None:
    jira = make_jira()
    jira.preload([{"name": "reader", "email": "r@e.com", "password": "pw"}])
    async with serve(jira) as s:
        auth = "Basic " + base64.b64encode(b"reader:pw").decode()
        status, _ = await call(s, "GET", f"{API}/myself", headers={"Authorization": auth})
        assert status == 200
        status, body = await call(
            s, "POST", f"{API}/group", json={"name": "x"}, headers={"Authorization": auth}
        )
    assert status == 403 and body["errorMessages"]


# --------------------------------------------------------------------------- search and list


@pytest.mark.asyncio
@pytest.mark.parametrize(("version", "cap"), [("10.3.4", 100), ("9.12.15", 1000)])
async def test_user_search_is_capped_in_total(version: str, cap: int) -> None:
    jira = make_jira(version=version)
    jira.preload(users_spec(cap + 150))
    async with serve(jira) as s:
        seen: list[str] = []
        start = 0
        while True:
            status, page = await call(s, "GET", f"{API}/user/search", params={
                "username": ".", "startAt": start, "maxResults": 50, "includeInactive": "true"})
            assert status == 200
            if not page:
                break
            seen += [u["name"] for u in page]
            start += len(page)
        status, big = await call(s, "GET", f"{API}/user/search",
                                 params={"username": ".", "maxResults": 5000})
        _, beyond = await call(s, "GET", f"{API}/user/search",
                               params={"username": ".", "startAt": cap})
    assert len(seen) == cap and len(set(seen)) == cap
    assert len(big) == cap
    assert beyond == []


@pytest.mark.asyncio
async def test_user_search_matches_prefixes_and_hides_inactive_by_default() -> None:
    jira = make_jira()
    jira.preload([
        {"name": "jdoe", "email": "john.doe@corp.com", "displayName": "John Doe"},
        {"name": "asmith", "email": "anna@corp.com", "displayName": "Anna Smith", "active": False},
        {"name": "zed", "email": "zed@corp.com", "displayName": "Zed Doering"},
    ])
    async with serve(jira) as s:
        async def names(**params: Any) -> set[str]:
            _, page = await call(s, "GET", f"{API}/user/search", params=params)
            return {u["name"] for u in page}

        assert await names(username="doe") == {"jdoe", "zed"}
        assert await names(username="JOHN.") == {"jdoe"}
        assert await names(username="smith") == set()
        assert await names(username="smith", includeInactive="true") == {"asmith"}
        _, page = await call(s, "GET", f"{API}/user/search", params={"username": "."})
        assert len(page) == 3  # admin + two active users: default maxResults 50 suffices
        status, _ = await call(s, "GET", f"{API}/user/search")
        assert status == 400


@pytest.mark.asyncio
async def test_user_list_exists_from_10_3_only() -> None:
    async with serve(make_jira(version="10.2.1")) as s:
        status, _ = await call(s, "GET", f"{API}/user/list")
        assert status == 404
        _, info = await call(s, "GET", f"{API}/serverInfo")
        assert info["versionNumbers"] == [10, 2, 1]
    async with serve(make_jira(version="10.3.4")) as s:
        status, body = await call(s, "GET", f"{API}/user/list")
        assert status == 200 and body["isLast"] is True
        assert body["maxResults"] == 2000
        assert [u["name"] for u in body["values"]] == ["admin"]


@pytest.mark.asyncio
async def test_user_list_cursor_returns_every_user_once_even_across_renames() -> None:
    jira = make_jira()
    created = jira.preload(users_spec(60))
    jira.store.set_active(created[5], False)
    async with serve(jira) as s:
        seen: list[str] = []
        keys: list[str] = []
        params: dict[str, Any] = {"maxResults": 7}
        renamed = False
        while True:
            status, page = await call(s, "GET", f"{API}/user/list", params=params)
            assert status == 200
            assert len(page["values"]) <= 7
            seen += [u["name"] for u in page["values"]]
            keys += [u["key"] for u in page["values"]]
            if not renamed:  # rename one not yet seen: it must still come exactly once
                await call(s, "PUT", f"{API}/user", params={"username": "user0050"},
                           json={"name": "renamed0050"})
                renamed = True
            if page["isLast"]:
                assert "nextCursor" not in page
                break
            assert page["nextPage"].startswith(str(s._base_url))
            params = {"cursor": page["nextCursor"], "maxResults": 7}
    assert len(keys) == len(set(keys)) == 61
    assert "renamed0050" in seen and "user0050" not in seen
    assert "user0005" in seen  # inactive users are listed too


@pytest.mark.asyncio
async def test_server_info_shape() -> None:
    async with serve(make_jira()) as s:
        status, info = await call(s, "GET", f"{API}/serverInfo")
    assert status == 200
    assert info["version"] == "10.3.4" and info["versionNumbers"] == [10, 3, 4]
    assert info["deploymentType"] == "Server"
    for key in ("baseUrl", "buildNumber", "buildDate", "serverTime", "scmInfo", "serverTitle"):
        assert key in info


# --------------------------------------------------------------------------- groups


@pytest.mark.asyncio
async def test_group_create_duplicate_and_delete() -> None:
    jira = make_jira()
    async with serve(jira) as s:
        status, body = await call(s, "POST", f"{API}/group", json={"name": "R&D + Ops é"})
        assert status == 201
        assert body["name"] == "R&D + Ops é" and body["users"]["size"] == 0
        assert "expand" in body and "self" in body
        status, body = await call(s, "POST", f"{API}/group", json={"name": "r&d + OPS é"})
        assert status == 400
        assert body == {"errorMessages": ["A group with that name already exists."], "errors": {}}
        status, _ = await call(s, "DELETE", f"{API}/group", params={"groupname": "R&D + OPS É"})
        assert status == 200
        status, body = await call(s, "DELETE", f"{API}/group", params={"groupname": "R&D + Ops é"})
        assert status == 404 and body["errorMessages"]
    assert "r&d + ops é" not in jira.store.groups


@pytest.mark.asyncio
async def test_groups_picker_is_a_limited_search() -> None:
    jira = make_jira()
    jira.preload(groups=[f"team-{i:02d}" for i in range(30)] + ["Other"])
    async with serve(jira) as s:
        status, body = await call(s, "GET", f"{API}/groups/picker", params={"query": "TEAM"})
        assert status == 200
        assert body["total"] == 30 and len(body["groups"]) == 20
        assert body["header"] == "Showing 20 of 30 matching groups"
        assert body["groups"][0] == {"name": "team-00", "html": "<b>team</b>-00", "labels": []}
        _, body = await call(s, "GET", f"{API}/groups/picker",
                             params={"query": "", "maxResults": 100})
        assert body["total"] == 33  # 30 teams, Other, and the two default groups


@pytest.mark.asyncio
async def test_membership_add_duplicate_unknown_and_remove() -> None:
    jira = make_jira()
    jira.preload(users_spec(1), groups=["devs"])
    group = {"groupname": "DEVS"}
    async with serve(jira) as s:
        status, body = await call(s, "POST", f"{API}/group/user", params=group,
                                  json={"name": "USER0000"})
        assert status == 201 and body["name"] == "devs" and body["users"]["size"] == 1
        status, body = await call(s, "POST", f"{API}/group/user", params=group,
                                  json={"name": "user0000"})
        assert status == 400
        assert body["errorMessages"] == [
            "Cannot add user. 'user0000' is already a member of 'devs'"
        ]
        status, _ = await call(s, "POST", f"{API}/group/user", params=group,
                               json={"name": "nobody"})
        assert status == 404
        status, _ = await call(s, "POST", f"{API}/group/user", params={"groupname": "nogroup"},
                               json={"name": "user0000"})
        assert status == 404
        status, text = await call(s, "DELETE", f"{API}/group/user",
                                  params={"groupname": "devs", "username": "User0000"})
        assert status == 200 and text == ""
        status, body = await call(s, "DELETE", f"{API}/group/user",
                                  params={"groupname": "devs", "username": "user0000"})
        assert status == 400 and body["errorMessages"]
    assert jira.store.members("devs") == []


@pytest.mark.asyncio
async def test_group_members_paging_and_inactive_filter() -> None:
    jira = make_jira()
    users = users_spec(120)
    users[3]["active"] = False
    jira.preload(users, memberships=[(u["name"], "big group") for u in users])
    async with serve(jira) as s:
        params = {"groupname": "Big Group", "maxResults": 500}
        status, page = await call(s, "GET", f"{API}/group/member", params=params)
        assert status == 200
        assert page["maxResults"] == 50 and page["startAt"] == 0
        assert page["total"] == 119 and page["isLast"] is False
        assert page["nextPage"].startswith(str(s._base_url))
        names: list[str] = []
        url: str | None = f"{API}/group/member?groupname=Big%20Group"
        while url:
            status, page = await call(s, "GET", url.replace(str(s._base_url), ""))
            names += [u["name"] for u in page["values"]]
            url = page.get("nextPage")
        assert len(names) == 119 and "user0003" not in names
        _, page = await call(s, "GET", f"{API}/group/member", params={
            "groupname": "big group", "includeInactiveUsers": "true", "startAt": 100})
        assert page["total"] == 120 and page["isLast"] is True and len(page["values"]) == 20
        assert "nextPage" not in page
        status, body = await call(s, "GET", f"{API}/group/member", params={"groupname": "none"})
        assert status == 404 and body["errorMessages"]


# --------------------------------------------------------------------------- refusals


@pytest.mark.asyncio
async def test_project_lead_cannot_be_deactivated() -> None:
    jira = make_jira()
    jira.preload(users_spec(2))
    async with serve(jira) as s:
        status, _ = await call(s, "POST", "/_emulator/refusals",
                               json={"project_leads": ["USER0000"]})
        assert status == 200
        status, body = await call(s, "PUT", f"{API}/user", params={"username": "user0000"},
                                  json={"active": False})
        assert status == 400
        assert "project" in body["errors"]["active"]
        status, body = await call(s, "PUT", f"{API}/user", params={"username": "user0000"},
                                  json={"displayName": "Still Lead"})
        assert status == 200  # other changes are fine
        status, _ = await call(s, "PUT", f"{API}/user", params={"username": "user0001"},
                               json={"active": False})
        assert status == 200
    assert jira.store.users["user0000"].active is True
    assert jira.store.users["user0001"].active is False


@pytest.mark.asyncio
async def test_read_only_directory_refusals() -> None:
    jira = make_jira()
    jira.preload(users_spec(2))
    jira.set_refusals(read_only_users=["user0001"])
    async with serve(jira) as s:
        status, body = await call(s, "PUT", f"{API}/user", params={"username": "user0001"},
                                  json={"emailAddress": "new@example.com"})
        assert status == 400 and "read-only" in body["errorMessages"][0]
        status, _ = await call(s, "PUT", f"{API}/user", params={"username": "user0000"},
                               json={"emailAddress": "new@example.com"})
        assert status == 200
        await call(s, "POST", "/_emulator/refusals", json={"read_only_directory": True})
        status, body = await create_user(s, "newbie")
        assert status == 400 and "read-only" in body["errorMessages"][0]
        status, _ = await call(s, "POST", f"{API}/group/user",
                               params={"groupname": "jira-software-users"},
                               json={"name": "user0000"})
        assert status == 400
        _, state = await call(s, "GET", "/_emulator/state")
    assert state["refusals"]["read_only_directory"] is True
    assert jira.store.users["user0001"].email == "user0001@example.com"
    assert jira.store.user("newbie") is None


# --------------------------------------------------------------------------- rate limits


@pytest.mark.asyncio
async def test_rate_limit_headers_429_and_per_user_buckets() -> None:
    clock = FakeClock()
    jira = make_jira(rate=AtlassianRate.parse("3/2/10"), clock=clock)
    jira.preload([{"name": "other", "email": "o@e.com", "password": "pw"}],
                 memberships=[("other", "jira-administrators")])
    async with serve(jira) as s:
        remaining = []
        for _ in range(3):
            async with s.get(f"{API}/myself") as resp:
                assert resp.status == 200
                assert resp.headers["X-RateLimit-Limit"] == "3"
                assert resp.headers["X-RateLimit-FillRate"] == "2"
                assert resp.headers["X-RateLimit-Interval-Seconds"] == "10"
                assert resp.headers["Retry-After"] == "0"
                remaining.append(resp.headers["X-RateLimit-Remaining"])
        assert remaining == ["2", "1", "0"]
        async with s.get(f"{API}/myself") as resp:
            assert resp.status == 429
            # one token every Interval / FillRate = 5 s (Atlassian KB "Jira Rate Limiting is
            # not working as configured": tokens arrive one by one at a constant interval)
            assert int(resp.headers["Retry-After"]) == 5
            assert "message" in await resp.json()
        other = "Basic " + base64.b64encode(b"other:pw").decode()
        async with s.get(f"{API}/myself", headers={"Authorization": other}) as resp:
            assert resp.status == 200  # another user has their own bucket
        clock.now += 5
        statuses = []
        for _ in range(2):
            async with s.get(f"{API}/myself") as resp:
                statuses.append(resp.status)
        assert statuses == [200, 429]  # one token arrived in 5 s
        clock.now += 10
        statuses = []
        for _ in range(3):
            async with s.get(f"{API}/myself") as resp:
                statuses.append(resp.status)
        assert statuses == [200, 200, 429]  # two tokens refilled
        _, stats = await call(s, "GET", "/_emulator/stats")
    assert stats["rate_limited"] == 3


def test_rate_parse() -> None:
    rate = AtlassianRate.parse("20/100/1")
    assert (rate.capacity, rate.fill_rate, rate.interval_s) == (20, 100.0, 1.0)
    for bad in ("20/100", "0/1/1", "a/b/c", "5/0/1"):
        with pytest.raises(ValueError):
            AtlassianRate.parse(bad)


# --------------------------------------------------------------------------- faults and control


@pytest.mark.asyncio
async def test_503_faults_are_not_applied() -> None:
    jira = make_jira(faults=FaultConfig(fail_rate=0.3, seed=11))
    async with serve(jira) as s:
        failed, ok = [], []
        for i in range(100):
            status, _ = await create_user(s, f"f{i:03d}")
            (failed if status == 503 else ok).append(f"f{i:03d}")
            assert status in (201, 503)
        _, stats = await call(s, "GET", "/_emulator/stats")
        _, state = await call(s, "GET", "/_emulator/state")
    assert stats["faults"]["unavailable"] == len(failed) >= 20
    names = {u["name"] for u in state["users"]}
    assert not names & set(failed)
    assert set(ok) <= names


@pytest.mark.asyncio
async def test_lost_answers_are_applied() -> None:
    jira = make_jira(faults=FaultConfig(ambiguous_rate=0.3, seed=5))
    async with serve(jira) as s:
        lost = []
        for i in range(100):
            status, _ = await create_user(s, f"a{i:03d}")
            assert status in (201, 504)
            if status == 504:
                lost.append(f"a{i:03d}")
        _, stats = await call(s, "GET", "/_emulator/stats")
        _, state = await call(s, "GET", "/_emulator/state")
    assert stats["faults"]["lost_answer"] == len(lost) >= 20
    assert stats["writes_applied"] == 100
    assert set(lost) <= {u["name"] for u in state["users"]}


@pytest.mark.asyncio
async def test_state_preload_and_stats_reset() -> None:
    jira = make_jira()
    async with serve(jira) as s:
        status, body = await call(s, "POST", "/_emulator/preload", json={
            "users": users_spec(3), "groups": ["g1"], "memberships": [["user0001", "g1"]]})
        assert status == 200 and body == {"users_created": 3}
        await call(s, "GET", f"{API}/myself")
        _, state = await call(s, "GET", "/_emulator/state")
        assert jira.stats.total.requests == 1
        jira.reset_stats()
        assert jira.stats.total.requests == 0
    users = {u["name"]: u for u in state["users"]}
    assert set(users) == {"admin", "user0000", "user0001", "user0002"}
    assert users["user0001"] == {"name": "user0001", "key": users["user0001"]["key"],
                                 "email": "user0001@example.com", "displayName": "User 0001",
                                 "active": True}
    groups = {g["name"]: g["members"] for g in state["groups"]}
    assert groups["g1"] == ["user0001"]
    assert state["product"] == "jira"
