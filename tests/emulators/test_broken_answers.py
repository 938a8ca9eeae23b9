"""The emulators break answers on request as real servers and their proxies do, and count it.

``POST /_emulator/answers`` alters the next 200 answers of one endpoint: an HTML maintenance
page, a truncated JSON body, a JSON value of the wrong type, an empty body, a listing that
ends early without saying so, a page without its ``Link`` header, headers and then a stall, a
connection reset half-way through the body; ``POST /_emulator/clock`` sets a server's clock
off. Okta's control ``DELETE /_emulator/users/{id}`` deletes as Okta's API does: deactivate
first, delete the second time.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
import pytest

from oktasync_emulators.runner import EmulatorOptions, running_emulators

OKTA_AUTH = {"Authorization": "SSWS 00demo-oktasync-okta-api-token",
             "Accept": "application/json"}
JIRA_AUTH = {"Authorization": "Bearer demo-jira-personal-access-token",
             "Accept": "application/json"}


async def answer(session: aiohttp.ClientSession, url: str,
                 headers: dict[str, str]) -> tuple[int, str, bytes, list[str]]:
    async with session.get(url, headers=headers) as response:
        return (response.status, response.content_type, await response.read(),
                response.headers.getall("Link", []))


async def alter(session: aiohttp.ClientSession, base: str, **body: Any) -> None:
    async with session.post(base + "/_emulator/answers", json=body) as response:
        assert response.status == 200, await response.text()


@pytest.mark.asyncio
async def test_each_mode_breaks_the_next_answer_and_is_counted() -> None:
    options = EmulatorOptions(users=450, groups=5, seed=2, ports=(0, 0, 0), okta_rate_scale=0)
    async with running_emulators(options) as running, aiohttp.ClientSession() as session:
        users = running.okta_url + "/api/v1/users?limit=200"
        status, kind, body, links = await answer(session, users, OKTA_AUTH)
        assert status == 200 and any('rel="next"' in link for link in links)
        plain = orjson.loads(body)

        await alter(session, running.okta_url, endpoint="GET /api/v1/users", mode="html")
        status, kind, body, _ = await answer(session, users, OKTA_AUTH)
        assert (status, kind) == (200, "text/html") and body.startswith(b"<!DOCTYPE html>")

        await alter(session, running.okta_url, endpoint="GET /api/v1/users", mode="truncated")
        status, _, body, _ = await answer(session, users, OKTA_AUTH)
        assert status == 200 and 0 < len(body) < len(orjson.dumps(plain))
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(body)

        await alter(session, running.okta_url, endpoint="GET /api/v1/users", mode="wrong-type")
        assert orjson.loads((await answer(session, users, OKTA_AUTH))[2]) == {}

        await alter(session, running.okta_url, endpoint="GET /api/v1/users", mode="empty")
        assert (await answer(session, users, OKTA_AUTH))[2] == b""

        await alter(session, running.okta_url, endpoint="GET /api/v1/users",
                    mode="end-listing", skip=1)
        _, _, body, links = await answer(session, users, OKTA_AUTH)  # skipped: untouched
        assert any('rel="next"' in link for link in links)
        _, _, body, links = await answer(session, users, OKTA_AUTH)
        assert orjson.loads(body) == plain, "the page itself is whole"
        assert links and not any('rel="next"' in link for link in links), links

        _, _, body, links = await answer(session, users, OKTA_AUTH)  # all used up
        assert any('rel="next"' in link for link in links)
        async with session.get(running.okta_url + "/_emulator/stats") as response:
            stats = await response.json()
        assert stats["faults"]["altered"] == 5
        assert stats["by_endpoint"]["GET /api/v1/users"]["faults"]["altered"] == 5


@pytest.mark.asyncio
async def test_a_jira_listing_ends_early_saying_it_is_the_last() -> None:
    options = EmulatorOptions(users=10, groups=2, seed=2, ports=(0, 0, 0), okta_rate_scale=0)
    async with running_emulators(options) as running, aiohttp.ClientSession() as session:
        running.jira.preload(users=[{"name": f"u{i}", "email": f"u{i}@x.example",
                                     "displayName": f"U {i}"} for i in range(30)])
        listing = running.jira_url + "/rest/api/2/user/list?maxResults=10"
        page = orjson.loads((await answer(session, listing, JIRA_AUTH))[2])
        assert page["isLast"] is False and "nextCursor" in page
        await alter(session, running.jira_url, endpoint="GET /rest/api/2/user/list",
                    mode="end-listing", times=None)
        for _ in range(2):
            page = orjson.loads((await answer(session, listing, JIRA_AUTH))[2])
            assert page["isLast"] is True and "nextCursor" not in page and "nextPage" not in page
            assert len(page["values"]) == 10
        async with session.delete(running.jira_url + "/_emulator/answers") as response:
            assert response.status == 200
        page = orjson.loads((await answer(session, listing, JIRA_AUTH))[2])
        assert page["isLast"] is False


@pytest.mark.asyncio
async def test_a_bad_alteration_request_is_refused() -> None:
    options = EmulatorOptions(users=5, groups=1, seed=2, ports=(0, 0, 0), okta_rate_scale=0)
    async with running_emulators(options) as running, aiohttp.ClientSession() as session:
        for body in ({"endpoint": "GET /api/v1/users", "mode": "sideways"},
                     {"mode": "html"}):
            async with session.post(running.okta_url + "/_emulator/answers",
                                    json=body) as response:
                assert response.status == 400


@pytest.mark.asyncio
async def test_deleting_an_okta_user_deactivates_first_then_deletes() -> None:
    options = EmulatorOptions(users=20, groups=3, seed=4, ports=(0, 0, 0), okta_rate_scale=0)
    async with running_emulators(options) as running, aiohttp.ClientSession() as session:
        directory = running.okta.directory
        user = next(u for u in directory.iter_users()
                    if u.status == "ACTIVE" and len(directory.groups_of(u.id)) > 1)
        url = f"{running.okta_url}/_emulator/users/{user.id}"
        async with session.delete(url) as response:
            first = await response.json()
        assert first["deleted"] is False and first["user"]["status"] == "DEPROVISIONED"
        async with session.delete(url) as response:
            assert (await response.json())["deleted"] is True
        assert directory.user(user.id) is None
        assert all(user.id not in g.members for g in directory.groups.values())
        filtered = (running.okta_url + "/api/v1/users?filter=" +
                    'status%20eq%20%22DEPROVISIONED%22')
        async with session.get(filtered, headers=OKTA_AUTH) as response:
            assert user.id not in {u["id"] for u in await response.json()}
        async with session.delete(url) as response:
            assert response.status == 404


@pytest.mark.asyncio
async def test_an_answer_stalls_after_its_headers_resets_mid_body_or_loses_its_link() -> None:
    options = EmulatorOptions(users=450, groups=5, seed=2, ports=(0, 0, 0), okta_rate_scale=0)
    async with running_emulators(options) as running, aiohttp.ClientSession() as session:
        users = running.okta_url + "/api/v1/users?limit=200"
        await alter(session, running.okta_url, endpoint="GET /api/v1/users", mode="stall")
        async with session.get(users, headers=OKTA_AUTH) as response:
            assert response.status == 200 and int(response.headers["Content-Length"]) > 1000
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(response.read(), timeout=0.5)

        await alter(session, running.okta_url, endpoint="GET /api/v1/users", mode="reset")
        with pytest.raises(aiohttp.ClientPayloadError):
            await answer(session, users, OKTA_AUTH)

        await alter(session, running.okta_url, endpoint="GET /api/v1/users", mode="no-link")
        status, _, body, links = await answer(session, users, OKTA_AUTH)
        assert status == 200 and links == [] and len(orjson.loads(body)) == 200

        status, _, body, links = await answer(session, users, OKTA_AUTH)  # all used up
        assert status == 200 and len(orjson.loads(body)) == 200 and links
        async with session.get(running.okta_url + "/_emulator/stats") as response:
            assert (await response.json())["faults"]["altered"] == 3


@pytest.mark.asyncio
async def test_the_clock_of_a_server_can_be_set_off() -> None:
    options = EmulatorOptions(users=10, groups=2, seed=2, ports=(0, 0, 0))
    async with running_emulators(options) as running, aiohttp.ClientSession() as session:
        users = running.okta_url + "/api/v1/users"

        async def clocks() -> tuple[float, int]:
            async with session.get(users, headers=OKTA_AUTH) as response:
                assert response.status == 200
                return (parsedate_to_datetime(response.headers["Date"]).timestamp(),
                        int(response.headers["X-Rate-Limit-Reset"]))

        date, reset = await clocks()
        assert abs(date - time.time()) < 2 and 0 <= reset - date <= 61
        # the server's clock 2 h behind (Date and Reset agree), then a proxy's Date a day ahead
        for body, reset_moves in (({"skew_s": -7200}, True),
                                  ({"skew_s": 86400, "date_only": True}, False)):
            async with session.post(running.okta_url + "/_emulator/clock", json=body) as response:
                assert response.status == 200
            date, reset = await clocks()
            off = body["skew_s"]
            assert abs(date - (time.time() + off)) < 2
            assert (0 <= reset - date <= 61) is reset_moves, (reset, date)
        async with session.post(running.okta_url + "/_emulator/clock", json={}) as response:
            assert response.status == 400
