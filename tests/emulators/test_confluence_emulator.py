"""The Confluence DC emulator answers like a real Confluence: 409s, 402s, idempotent memberships,
names in paths, the lagging active-user index, refusals, rate limits and faults."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from oktasync_emulators.atlassian_base import AtlassianRate
from oktasync_emulators.common import FaultConfig
from oktasync_emulators.confluence import ConfluenceEmulator

API = "/rest/api"
ADMIN_AUTH = "Basic " + base64.b64encode(b"admin:secret").decode()
TOKEN = "confluence-pat"


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def serve(emulator: ConfluenceEmulator) -> AsyncIterator[aiohttp.ClientSession]:
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


def make_confluence(**kwargs: Any) -> ConfluenceEmulator:
    return ConfluenceEmulator(username="admin", password="secret", token=TOKEN, **kwargs)


def seg(name: str) -> str:
    """One percent-encoded path segment."""
    return quote(name, safe="")


async def call(
    session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    """``path`` is sent as already encoded, so names with ``%2F`` reach the server unchanged."""
    url = URL(str(session._base_url) + path, encoded=True)
    async with (
        aiohttp.ClientSession(headers=session.headers) as raw,
        raw.request(method, url, **kwargs) as resp,
    ):
        body = await resp.read()
        if resp.content_type == "application/json" and body:
            return resp.status, await resp.json()
        return resp.status, body.decode()


async def create_user(s: aiohttp.ClientSession, name: str, **extra: Any) -> tuple[int, Any]:
    body = {"userName": name, "fullName": f"{name} Person", "email": f"{name.lower()}@example.com",
            "password": "pw", **extra}
    return await call(s, "POST", f"{API}/admin/user", json=body)


def users_spec(n: int, prefix: str = "user") -> list[dict[str, Any]]:
    return [{"name": f"{prefix}{i:03d}", "email": f"{prefix}{i:03d}@example.com",
             "displayName": f"User {i:03d}"} for i in range(n)]


# --------------------------------------------------------------------------- users


@pytest.mark.asyncio
async def test_fresh_instance_and_user_object() -> None:
    conf = make_confluence()
    assert conf.store.members("confluence-users") == ["admin"]
    assert conf.store.members("confluence-administrators") == ["admin"]
    async with serve(conf) as s:
        status, user = await call(s, "GET", f"{API}/user?username=ADMIN&expand=status")
    assert status == 200
    assert user["type"] == "known" and user["username"] == "admin"
    assert len(user["userKey"]) == 32
    assert user["displayName"] == "Administrator"
    assert user["email"] == "admin@example.com"  # the caller is an administrator
    # the reference's user JSON has no status, whatever expand asks (CONFCLOUD-69909)
    assert "status" not in user and "status" not in user["_expandable"]
    assert {"self", "base", "context"} <= set(user["_links"])
    assert "profilePicture" in user


@pytest.mark.asyncio
async def test_create_user_keeps_case_and_duplicate_is_409() -> None:
    conf = make_confluence()
    async with serve(conf) as s:
        status, body = await create_user(s, "Bob.Jones")
        assert status == 201 and body["username"] == "Bob.Jones" and body["userKey"]
        status, body = await call(s, "GET", f"{API}/user?username=bob.jones")
        assert status == 200 and body["username"] == "Bob.Jones"
        status, body = await create_user(s, "BOB.JONES")
    assert status == 409
    assert body["statusCode"] == 409 and body["reason"] == "Conflict"
    assert "already exists" in body["message"]
    assert set(body["data"]) == {"authorized", "valid", "errors", "successful"}


@pytest.mark.asyncio
async def test_unknown_user_404_bad_json_and_missing_fields_400() -> None:
    async with serve(make_confluence()) as s:
        status, body = await call(s, "GET", f"{API}/user?username=ghost")
        assert status == 404 and body["statusCode"] == 404 and "ghost" in body["message"]
        status, body = await call(s, "POST", f"{API}/admin/user", data=b"{oops",
                                  headers={"Content-Type": "application/json"})
        assert status == 400 and body["statusCode"] == 400
        status, body = await call(s, "POST", f"{API}/admin/user",
                                  json={"userName": "x", "fullName": "X", "password": "p"})
        assert status == 400 and "email" in body["message"]
        status, body = await call(s, "POST", f"{API}/admin/user",
                                  json={"userName": "x", "fullName": "X", "email": "x@e.com"})
        assert status == 400  # neither password nor notifyViaEmail
        status, _ = await create_user(s, "invited", password=None, notifyViaEmail=True)
        assert status == 201


@pytest.mark.asyncio
async def test_create_requires_user_name_and_email() -> None:
    conf = make_confluence()
    async with serve(conf) as s:
        for missing in ("userName", "email"):
            body = {"userName": "x", "fullName": "X", "email": "x@e.com", "password": "p"}
            del body[missing]
            status, answer = await call(s, "POST", f"{API}/admin/user", json=body)
            assert status == 400 and answer["statusCode"] == 400, missing
            assert missing in answer["message"]
            assert answer["data"]["errors"][0]["message"]["key"] == missing
            status, _ = await call(s, "POST", f"{API}/admin/user", json={**body, missing: " "})
            assert status == 400, missing
    assert set(conf.store.users) == {"admin"}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "name", ["a+b", "a,b", "a\\b", "a<b", "a>b", "o'brien", 'say"hi', "two words", "tab\tbed",
             "new\nline"]
)
async def test_usernames_with_forbidden_characters_are_400(name: str) -> None:
    conf = make_confluence()
    async with serve(conf) as s:
        status, body = await create_user(s, name)
    assert status == 400
    assert body["statusCode"] == 400 and body["reason"] == "Bad Request"
    assert body["message"].startswith("Usernames cannot contain the characters")
    assert body["data"]["valid"] is False
    assert body["data"]["errors"][0]["message"]["key"] == "userName"
    assert set(conf.store.users) == {"admin"}


@pytest.mark.asyncio
async def test_usernames_with_other_punctuation_are_accepted() -> None:
    """Confluence's list is short: '&', '@', '.', '-' and '_' (and non-ASCII) are fine."""
    conf = make_confluence()
    async with serve(conf) as s:
        for name in ("tom&jerry", "first.last@corp", "a-b_c", "zoë"):
            status, body = await create_user(s, name)
            assert status == 201, (name, body)


@pytest.mark.asyncio
async def test_no_seat_left_is_402_and_deactivation_frees_one() -> None:
    conf = make_confluence(seats=2)  # admin holds one
    async with serve(conf) as s:
        assert (await create_user(s, "first"))[0] == 201
        status, body = await create_user(s, "second")
        assert status == 402 and body["statusCode"] == 402
        assert (await call(s, "PUT", f"{API}/admin/user/first/disable"))[0] == 204
        assert (await create_user(s, "second"))[0] == 201
        status, _ = await call(s, "PUT", f"{API}/admin/user/first/enable")
        assert status == 402  # re-enabling needs a seat too
        status, body = await call(s, "POST", "/_emulator/seats", json={"seats": None})
        assert status == 200 and body["seats"] is None
        assert (await call(s, "PUT", f"{API}/admin/user/first/enable"))[0] == 204
    assert conf.state()["active_users"] == 3


@pytest.mark.asyncio
async def test_disable_enable_are_idempotent_204() -> None:
    conf = make_confluence()
    conf.preload(users_spec(1))
    async with serve(conf) as s:
        for _ in range(2):
            status, text = await call(s, "PUT", f"{API}/admin/user/USER000/disable")
            assert status == 204 and text == ""
        assert conf.store.users["user000"].active is False
        _, user = await call(s, "GET", f"{API}/user?username=user000&expand=status")
        assert "status" not in user  # a lookup never tells; only the active listing does
        for _ in range(2):
            assert (await call(s, "PUT", f"{API}/admin/user/user000/enable"))[0] == 204
        assert conf.store.users["user000"].active is True
        status, body = await call(s, "PUT", f"{API}/admin/user/nobody/disable")
        assert status == 404 and body["reason"] == "Not Found"


@pytest.mark.asyncio
async def test_delete_is_asynchronous_with_a_long_task() -> None:
    conf = make_confluence()
    conf.preload(users_spec(1), memberships=[("user000", "confluence-users")])
    async with serve(conf) as s:
        status, body = await call(s, "DELETE", f"{API}/admin/user/user000")
        assert status == 202
        assert body["links"]["status"] == f"{API}/longtask/{body['id']}"
        status, task = await call(s, "GET", body["links"]["status"])
        assert status == 200 and task["finished"] is True and task["successful"] is True
        assert (await call(s, "GET", f"{API}/user?username=user000"))[0] == 404
    assert conf.store.members("confluence-users") == ["admin"]


@pytest.mark.asyncio
async def test_password_change_and_no_profile_change_endpoint() -> None:
    conf = make_confluence()
    conf.preload([{"name": "pat", "email": "p@e.com", "password": "old"}])
    async with serve(conf) as s:
        status, _ = await call(s, "POST", f"{API}/admin/user/pat/password",
                               json={"password": "new"})
        assert status == 204
        assert (await call(s, "POST", f"{API}/admin/user/pat/password", json={}))[0] == 400
        status, _ = await call(s, "PUT", f"{API}/admin/user/pat", json={"fullName": "Other"})
        assert status in (404, 405)  # Confluence DC has no such call
    assert conf.store.users["pat"].password == "new"
    assert conf.store.users["pat"].display_name == "pat"


# --------------------------------------------------------------------------- groups


@pytest.mark.asyncio
async def test_group_create_and_duplicate() -> None:
    conf = make_confluence()
    async with serve(conf) as s:
        status, body = await call(s, "POST", f"{API}/admin/group", json={"name": "Design Team"})
        assert status == 201 and body == {
            "type": "group", "name": "Design Team",
            "_links": {"self": f"{s._base_url}{API}/group/Design%20Team"}}
        status, body = await call(s, "POST", f"{API}/admin/group", json={"name": "design TEAM"})
        assert status == 409 and body["statusCode"] == 409
        status, body = await call(s, "GET", f"{API}/group/{seg('DESIGN team')}")
        assert status == 200 and body["name"] == "Design Team"


@pytest.mark.asyncio
@pytest.mark.parametrize("group", ["R&D + Ops", "Équipe été", "a b", "plus+only"])
async def test_membership_calls_are_idempotent_with_awkward_names(group: str) -> None:
    conf = make_confluence()
    conf.preload([{"name": "Zoë Ünicode", "email": "z@e.com"}], groups=[group])
    path = f"{API}/user/{seg('zoë ünicode')}/group/{seg(group.upper())}"
    async with serve(conf) as s:
        for _ in range(2):
            status, text = await call(s, "PUT", path)
            assert status == 204 and text == ""
        assert conf.store.members(group) == ["Zoë Ünicode"]
        for _ in range(2):
            assert (await call(s, "DELETE", path))[0] == 204
    assert conf.store.members(group) == []


@pytest.mark.asyncio
async def test_membership_unknown_user_or_group_404_and_slash_400() -> None:
    conf = make_confluence()
    conf.preload(users_spec(1), groups=["a/b"])
    async with serve(conf) as s:
        status, body = await call(s, "PUT", f"{API}/user/ghost/group/confluence-users")
        assert status == 404 and body["statusCode"] == 404
        status, body = await call(s, "PUT", f"{API}/user/user000/group/ghosts")
        assert status == 404 and "ghosts" in body["message"]
        status, _ = await call(s, "PUT", f"{API}/user/user000/group/{seg('a/b')}")
        assert status == 400  # Tomcat rejects %2F before Confluence sees it
        status, _ = await call(s, "GET", f"{API}/group/{seg('a/b')}/member")
        assert status == 400
    assert conf.store.members("a/b") == []


@pytest.mark.asyncio
async def test_group_members_and_group_listing_paging() -> None:
    conf = make_confluence()
    users = users_spec(250)
    users[7]["active"] = False
    conf.preload(users, memberships=[(u["name"], "Big Group") for u in users])
    conf.preload(groups=[f"g{i:03d}" for i in range(300)])
    async with serve(conf) as s:
        names: list[str] = []
        path: str | None = f"{API}/group/{seg('big group')}/member?limit=100"
        while path:
            status, page = await call(s, "GET", path)
            assert status == 200 and page["limit"] == 100
            assert page["size"] == len(page["results"])
            names += [u["username"] for u in page["results"]]
            path = page["_links"].get("next")
        assert len(names) == 250 and "user007" in names  # deactivated members are listed
        _, page = await call(s, "GET", f"{API}/group/{seg('big group')}/member?expand=status")
        assert not any("status" in u for u in page["results"])  # a member's status is unknown
        status, page = await call(s, "GET", f"{API}/group/{seg('big group')}/member")
        assert page["limit"] == 200 and page["size"] == 200 and "next" in page["_links"]
        status, body = await call(s, "GET", f"{API}/group/nope/member")
        assert status == 404 and "nope" in body["message"]
        groups: list[str] = []
        path = f"{API}/group?limit=120"
        while path:
            _, page = await call(s, "GET", path)
            groups += [g["name"] for g in page["results"]]
            assert all(g["type"] == "group" for g in page["results"])
            path = page["_links"].get("next")
        assert len(groups) == 303 and len(set(groups)) == 303
        _, page = await call(s, "GET", f"{API}/user/memberof?username=user001")
        assert [g["name"] for g in page["results"]] == ["Big Group"]


# --------------------------------------------------------------------------- index lag


@pytest.mark.asyncio
async def test_active_listing_lags_behind_writes() -> None:
    clock = FakeClock()
    conf = make_confluence(index_lag_s=30.0, clock=clock)
    conf.preload(users_spec(3))  # preloaded users are indexed already

    async def active(s: aiohttp.ClientSession) -> set[str]:
        status, page = await call(s, "GET", f"{API}/admin/users/list/active?limit=1000")
        assert status == 200
        assert all("email" in u for u in page["results"])
        return {u["username"] for u in page["results"]}

    async with serve(conf) as s:
        assert await active(s) == {"admin", "user000", "user001", "user002"}
        _, page = await call(s, "GET", f"{API}/admin/users/list/active?limit=2")
        assert page["totalCount"] == 4 and page["size"] == 2 and "next" in page["_links"]
        await create_user(s, "fresh")
        await call(s, "PUT", f"{API}/admin/user/user000/disable")
        clock.now += 10
        assert await active(s) == {"admin", "user000", "user001", "user002"}
        await call(s, "PUT", f"{API}/admin/user/user001/disable")
        clock.now += 25  # the first two changes are 35 s old, the third 25 s
        assert await active(s) == {"admin", "fresh", "user001", "user002"}
        _, page = await call(s, "GET", f"{API}/admin/users/list?includeDeactivated=true")
        by_name = {u["username"]: u["status"] for u in page["results"]}
        assert by_name["user000"] == "Deactivated" and by_name["user001"] == "Active"
        clock.now += 10
        assert await active(s) == {"admin", "fresh", "user002"}
        _, page = await call(s, "GET", f"{API}/admin/users/list")
        assert {u["username"] for u in page["results"]} == {"admin", "fresh", "user002"}


# --------------------------------------------------------------------------- refusals, auth


@pytest.mark.asyncio
async def test_read_only_directory_refusals_are_403() -> None:
    conf = make_confluence()
    conf.preload(users_spec(2))
    conf.set_refusals(read_only_users=["USER001"])
    async with serve(conf) as s:
        status, body = await call(s, "PUT", f"{API}/admin/user/user001/disable")
        assert status == 403 and "read-only" in body["message"]
        assert (await call(s, "PUT", f"{API}/admin/user/user000/disable"))[0] == 204
        # guess under test: local-group memberships still work for read-only users
        assert (await call(s, "PUT", f"{API}/user/user001/group/confluence-users"))[0] == 204
        await call(s, "POST", "/_emulator/refusals", json={"read_only_directory": True})
        assert (await create_user(s, "new"))[0] == 403
        assert (await call(s, "DELETE", f"{API}/user/user001/group/confluence-users"))[0] == 403
    assert conf.store.users["user001"].active is True
    assert conf.store.user("new") is None


@pytest.mark.asyncio
async def test_auth_401_token_and_non_admin_403() -> None:
    conf = make_confluence()
    conf.preload([{"name": "reader", "email": "r@e.com", "password": "pw"}])
    async with serve(conf) as s:
        wrong = {"Authorization": "Basic " + base64.b64encode(b"admin:bad").decode()}
        status, body = await call(s, "GET", f"{API}/user/current", headers=wrong)
        assert status == 401 and body["statusCode"] == 401
        status, body = await call(s, "GET", f"{API}/user/current",
                                  headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and body["username"] == "admin"
        reader = {"Authorization": "Basic " + base64.b64encode(b"reader:pw").decode()}
        status, user = await call(s, "GET", f"{API}/user?username=admin", headers=reader)
        assert status == 200 and "email" not in user  # guess: e-mail only for admins
        status, _ = await call(s, "GET", f"{API}/admin/users/list/active", headers=reader)
        assert status == 403


@pytest.mark.asyncio
async def test_rate_limit_on_confluence() -> None:
    clock = FakeClock()
    conf = make_confluence(rate=AtlassianRate(2, 1, 1), clock=clock)
    async with serve(conf) as s:
        statuses, retry = [], []
        for _ in range(3):
            async with s.get(f"{API}/user/current") as resp:
                statuses.append(resp.status)
                retry.append(resp.headers["Retry-After"])
                assert resp.headers["X-RateLimit-Limit"] == "2"
        assert statuses == [200, 200, 429] and retry == ["0", "0", "1"]
        clock.now += 1
        async with s.get(f"{API}/user/current") as resp:
            assert resp.status == 200 and resp.headers["X-RateLimit-Remaining"] == "0"


# --------------------------------------------------------------------------- faults


@pytest.mark.asyncio
async def test_faults_503_not_applied_504_applied() -> None:
    conf = make_confluence(faults=FaultConfig(fail_rate=0.3, seed=3))
    async with serve(conf) as s:
        failed = []
        for i in range(100):
            status, _ = await create_user(s, f"u{i:03d}")
            if status == 503:
                failed.append(f"u{i:03d}")
        _, stats = await call(s, "GET", "/_emulator/stats")
    assert stats["faults"]["unavailable"] == len(failed) >= 20
    assert not any(conf.store.user(n) for n in failed)

    conf = make_confluence(faults=FaultConfig(ambiguous_rate=0.3, seed=3))
    conf.preload(users_spec(100))
    async with serve(conf) as s:
        lost = []
        for i in range(100):
            status, _ = await call(s, "PUT", f"{API}/user/user{i:03d}/group/confluence-users")
            if status == 504:
                lost.append(f"user{i:03d}")
        _, stats = await call(s, "GET", "/_emulator/stats")
        _, state = await call(s, "GET", "/_emulator/state")
    assert stats["faults"]["lost_answer"] == len(lost) >= 20
    members = next(g["members"] for g in state["groups"] if g["name"] == "confluence-users")
    assert set(lost) <= set(members) and len(members) == 101
    assert state["product"] == "confluence" and state["seats"] is None
