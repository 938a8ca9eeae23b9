"""The SCIM fixtures of issue 15 hold: scim2-server (by others) on loopback behind our fault
proxy serves what the Atlassian Cloud target will do — create, filter by userName and
externalId, page with count at most 100, PATCH members in and out, PATCH active false — driven
by scim2-client and by plain aiohttp; and the proxy's Atlassian behaviours and faults fire,
counted: 401 without the token, unverified domains, taken group names, 429s with and without
Retry-After, 503s, and lost answers whose writes were applied all the same."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
from scim2_client import RequestNetworkException
from scim2_client.engines.httpx2 import AsyncSCIMClient
from scim2_models import Email, Group, ListResponse, PatchOp, ScimProvider, SearchRequest, User
from scim2_server.utils import (
    load_default_resource_types,
    load_default_schemas,
    load_default_service_provider_config,
)

from tests.engine.scimfixtures import (
    RetryAfter,
    RunningFaultProxy,
    scim_faults,
    scim_server,
    scim_state,
)

TOKEN = "directory-api-key"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@asynccontextmanager
async def behind_proxy(tmp_path: Path, **faults: Any) -> AsyncIterator[RunningFaultProxy]:
    """scim2-server and the fault proxy in front of it, verified domain example.com."""
    async with scim_server(tmp_path) as upstream, scim_faults(
        upstream, token=TOKEN, verified_domains=("example.com",), **faults
    ) as proxy:
        yield proxy


def new_user(name: str, domain: str = "example.com", **extra: Any) -> dict[str, Any]:
    """A SCIM user as the engine will write one: e-mail as userName, Okta's id as externalId."""
    email = f"{name}@{domain}"
    return {"schemas": [USER_SCHEMA], "userName": email, "externalId": f"00u-{name}",
            "emails": [{"value": email, "primary": True}], "displayName": name.title(),
            "name": {"givenName": name.title(), "familyName": "Test"}, "active": True, **extra}


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_SCHEMA], "Operations": list(operations)}


async def stats_json(proxy: RunningFaultProxy) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(proxy.stats_url) as answer:
        assert answer.status == 200
        body: dict[str, Any] = await answer.json()
        return body


# ---------------------------------------------------------------------------------------------
# What the engine's target will do, through the proxy


@pytest.mark.asyncio
async def test_scim2_client_creates_filters_patches_members_and_deactivates(
    tmp_path: Path,
) -> None:
    async with behind_proxy(tmp_path) as proxy, httpx2.AsyncClient(
        base_url=proxy.url, headers=AUTH
    ) as http:
        scim = AsyncSCIMClient(http)
        await scim.discover()
        alice = await scim.create(User(
            user_name="alice@example.com", external_id="00u-alice", display_name="Alice",
            emails=[Email(value="alice@example.com", primary=True)], active=True))
        assert alice.id is not None
        assert alice.meta is not None and str(alice.meta.location).startswith(proxy.url)
        devs = await scim.create(Group(display_name="devs", external_id="00g-devs"))
        assert devs.id is not None

        for query in ('userName eq "alice@example.com"', 'externalId eq "00u-alice"'):
            found = await scim.query(User, query_parameters=SearchRequest(filter=query))
            assert isinstance(found, ListResponse) and found.total_results == 1, query
            assert found.resources is not None and found.resources[0].id == alice.id

        await scim.modify(Group, devs.id, PatchOp[Group](operations=[
            {"op": "add", "path": "members", "value": [{"value": alice.id}]}]))
        state = await scim_state(proxy.upstream)
        assert state["groups"]["devs"]["members"] == ["alice@example.com"]

        await scim.modify(Group, devs.id, PatchOp[Group](operations=[
            {"op": "remove", "path": f'members[value eq "{alice.id}"]'}]))
        await scim.modify(User, alice.id, PatchOp[User](operations=[
            {"op": "replace", "path": "active", "value": False}]))

        state = await scim_state(proxy.upstream)
        assert state["groups"]["devs"]["members"] == []
        assert state["users"]["alice@example.com"] == {
            "id": alice.id, "userName": "alice@example.com", "externalId": "00u-alice",
            "active": False, "displayName": "Alice", "emails": ["alice@example.com"]}
        assert proxy.stats.writes_forwarded == 5  # 2 creates, 3 patches
        assert not proxy.stats.faults and not proxy.stats.refusals


@pytest.mark.asyncio
async def test_aiohttp_pages_250_users_100_at_a_time_and_a_larger_count_is_capped(
    tmp_path: Path,
) -> None:
    async with behind_proxy(tmp_path) as proxy, aiohttp.ClientSession(headers=AUTH) as session:
        limit = asyncio.Semaphore(16)

        async def create(i: int) -> None:
            async with limit, session.post(f"{proxy.url}/Users",
                                           json=new_user(f"user{i:03d}")) as answer:
                assert answer.status == 201, await answer.text()
                assert answer.headers["Location"].startswith(f"{proxy.url}/Users/")

        await asyncio.gather(*(create(i) for i in range(250)))

        seen: list[str] = []
        while True:
            params = {"startIndex": str(len(seen) + 1), "count": "100"}
            async with session.get(f"{proxy.url}/Users", params=params) as answer:
                page = await answer.json(content_type=None)
            assert page["totalResults"] == 250 and page["itemsPerPage"] <= 100
            seen += [u["userName"] for u in page["Resources"]]
            if len(seen) >= page["totalResults"]:
                break
        assert sorted(seen) == [f"user{i:03d}@example.com" for i in range(250)]
        assert proxy.stats.counts_capped == 0

        async with session.get(f"{proxy.url}/Users", params={"count": "500"}) as answer:
            page = await answer.json(content_type=None)
        assert page["itemsPerPage"] == 100 and len(page["Resources"]) == 100
        assert proxy.stats.counts_capped == 1
        assert len((await scim_state(proxy.upstream))["users"]) == 250


# ---------------------------------------------------------------------------------------------
# Atlassian's refusals


@pytest.mark.asyncio
async def test_without_the_bearer_token_401_and_nothing_is_forwarded(tmp_path: Path) -> None:
    async with behind_proxy(tmp_path) as proxy, aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            async with session.post(f"{proxy.url}/Users", json=new_user("eve"),
                                    headers=headers) as answer:
                assert answer.status == 401
                assert (await answer.json(content_type=None))["status"] == "401"
        assert proxy.stats.refusals == Counter(unauthorized=3)
        assert proxy.stats.writes_forwarded == 0
        assert (await stats_json(proxy))["refusals"] == {"unauthorized": 3}
        assert (await scim_state(proxy.upstream))["users"] == {}


@pytest.mark.asyncio
async def test_an_e_mail_on_an_unverified_domain_is_refused_on_create_put_and_patch(
    tmp_path: Path,
) -> None:
    async with behind_proxy(tmp_path) as proxy, aiohttp.ClientSession(headers=AUTH) as session:
        async with session.post(f"{proxy.url}/Users",
                                json=new_user("mallory", "elsewhere.org")) as answer:
            assert answer.status == 400
            error = await answer.json(content_type=None)
            assert "mallory@elsewhere.org" in error["detail"]
        async with session.post(f"{proxy.url}/Users", json=new_user("bob")) as answer:
            assert answer.status == 201
            bob = await answer.json(content_type=None)
        moved = {"value": "bob@elsewhere.org", "primary": True}
        for operation in ({"op": "replace", "path": "emails", "value": [moved]},
                          {"op": "replace", "value": {"emails": [moved]}}):
            async with session.patch(f"{proxy.url}/Users/{bob['id']}",
                                     json=patch(operation)) as answer:
                assert answer.status == 400, operation
        async with session.put(f"{proxy.url}/Users/{bob['id']}",
                               json=new_user("bob", "elsewhere.org")) as answer:
            assert answer.status == 400
        async with session.patch(f"{proxy.url}/Users/{bob['id']}", json=patch(
                {"op": "replace", "path": "displayName", "value": "Robert"})) as answer:
            assert answer.status in (200, 204)
        assert proxy.stats.refusals == Counter(unverified_domain=4)
        users = (await scim_state(proxy.upstream))["users"]
        assert list(users) == ["bob@example.com"]
        assert users["bob@example.com"]["emails"] == ["bob@example.com"]
        assert users["bob@example.com"]["displayName"] == "Robert"


@pytest.mark.asyncio
async def test_a_group_name_taken_in_the_organisation_or_the_directory_is_refused_409(
    tmp_path: Path,
) -> None:
    async with behind_proxy(tmp_path, taken_groups=("Site-Admins",)) as proxy, \
            aiohttp.ClientSession(headers=AUTH) as session:
        async def create_group(name: str) -> tuple[int, dict[str, Any]]:
            body = {"schemas": [GROUP_SCHEMA], "displayName": name}
            async with session.post(f"{proxy.url}/Groups", json=body) as answer:
                return answer.status, await answer.json(content_type=None)

        status, error = await create_group("site-admins")
        assert (status, error["scimType"]) == (409, "uniqueness")
        assert error["detail"] == "Resource [GROUP]: with displayName already exists."
        assert (await create_group("devs"))[0] == 201
        assert (await create_group("DEVS"))[0] == 409
        assert proxy.stats.refusals == Counter(taken_group=1, group_exists=1)
        assert list((await scim_state(proxy.upstream))["groups"]) == ["devs"]


@pytest.mark.asyncio
async def test_creating_an_existing_user_is_409_in_atlassian_s_words(tmp_path: Path) -> None:
    async with behind_proxy(tmp_path) as proxy, aiohttp.ClientSession(headers=AUTH) as session:
        for expected in (201, 409):
            async with session.post(f"{proxy.url}/Users", json=new_user("carol")) as answer:
                assert answer.status == expected
                body = await answer.json(content_type=None)
        assert body == {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                        "status": "409", "scimType": "uniqueness",
                        "detail": "Resource [USER]: with email[carol@example.com] already exists."}
        assert proxy.stats.refusals == Counter(user_exists=1)


# ---------------------------------------------------------------------------------------------
# Injected faults


async def outcomes(proxy: RunningFaultProxy, n: int) -> list[str]:
    """``n`` requests one after another (writes and reads alternating) and what each got: a
    status (``"429+"`` with Retry-After, ``"429"`` without) or ``"lost"``. httpx2, without
    keep-alive: it never resends a request whose answer was lost, where aiohttp resends an
    idempotent one (see the last test), which would hide lost reads from the count."""
    got: list[str] = []
    limits = httpx2.Limits(max_keepalive_connections=0)
    async with httpx2.AsyncClient(headers=AUTH, limits=limits) as http:
        for i in range(n):
            try:
                if i % 2 == 0:
                    answer = await http.post(f"{proxy.url}/Users", json=new_user(f"f{i:03d}"))
                else:
                    answer = await http.get(f"{proxy.url}/Users")
            except httpx2.RemoteProtocolError:
                got.append("lost")
                continue
            retry = answer.headers.get("Retry-After")
            assert retry in (None, "1")
            got.append(f"{answer.status_code}{'+' if retry else ''}")
    return got


@pytest.mark.asyncio
async def test_each_fault_fires_as_counted_and_a_lost_answer_s_write_was_applied(
    tmp_path: Path,
) -> None:
    async with behind_proxy(tmp_path, rate_429=0.15, retry_after="mixed", rate_5xx=0.15,
                            rate_lost=0.15, seed=15) as proxy:
        got = Counter(await outcomes(proxy, 120))
        faults = proxy.stats.faults
        assert got["429+"] == faults["rate_limited"] > 0
        assert got["429"] == faults["rate_limited_bare"] > 0
        assert got["503"] == faults["unavailable"] > 0
        assert got["lost"] == faults["lost_answer"] > 0
        assert proxy.stats.requests == 120
        assert (await stats_json(proxy)) == proxy.stats.to_json()
        lost_posts = [i for i, line in enumerate(proxy.stats.lost) if line.startswith("POST")]
        assert lost_posts, "no write's answer was lost"
        users = (await scim_state(proxy.upstream))["users"]
        assert len(users) == got["201"] + len(lost_posts)  # every lost create was applied


@pytest.mark.parametrize(("retry_after", "kind", "seen"),
                         [(True, "rate_limited", "429+"), (False, "rate_limited_bare", "429")])
@pytest.mark.asyncio
async def test_429s_carry_retry_after_as_asked(tmp_path: Path, retry_after: RetryAfter,
                                               kind: str, seen: str) -> None:
    async with behind_proxy(tmp_path, rate_429=0.5, retry_after=retry_after, seed=2) as proxy:
        got = Counter(await outcomes(proxy, 20))
    assert got[seen] == proxy.stats.faults[kind] > 0
    assert got["429"] + got["429+"] == got[seen]


@pytest.mark.asyncio
async def test_the_same_seed_gives_the_same_faults(tmp_path: Path) -> None:
    runs = []
    for run in range(2):
        async with behind_proxy(tmp_path / str(run), rate_429=0.2, retry_after="mixed",
                                rate_5xx=0.2, rate_lost=0.2, seed=99) as proxy:
            runs.append(await outcomes(proxy, 30))
    assert runs[0] == runs[1]
    assert len(set(runs[0])) >= 4


@pytest.mark.asyncio
async def test_scim2_client_sees_a_lost_answer_as_a_network_error(tmp_path: Path) -> None:
    async with behind_proxy(tmp_path, rate_lost=1.0) as proxy, httpx2.AsyncClient(
        base_url=proxy.url, headers=AUTH
    ) as http:
        # what scim2-server serves, told rather than discovered: discovery's answers are lost
        provider = ScimProvider.from_discovery(
            load_default_schemas().values(), load_default_resource_types().values(),
            config=load_default_service_provider_config())
        scim = AsyncSCIMClient(http, provider=provider)
        with pytest.raises(RequestNetworkException):
            await scim.create(User(user_name="dave@example.com"))
        assert "dave@example.com" in (await scim_state(proxy.upstream))["users"]
        assert proxy.stats.lost == ["POST /v2/Users"]


@pytest.mark.asyncio
async def test_aiohttp_resends_an_idempotent_request_whose_answer_was_lost(
    tmp_path: Path,
) -> None:
    """Not the proxy's doing but worth knowing for the engine's target: aiohttp (3.14) sends a
    GET, PUT or DELETE once more when the connection closes without an answer (RFC 9112
    §9.3.1.1), never a POST or PATCH; so a lost answer to a PUT is a PUT applied twice."""
    async with behind_proxy(tmp_path, rate_lost=1.0) as proxy, \
            aiohttp.ClientSession(headers=AUTH) as session:
        for method in ("GET", "POST"):
            with pytest.raises(aiohttp.ServerDisconnectedError):
                async with session.request(method, f"{proxy.url}/Users",
                                           json=new_user("erin")) as answer:
                    await answer.read()
        assert proxy.stats.lost == ["GET /v2/Users", "GET /v2/Users", "POST /v2/Users"]
