"""Jira and Confluence refuse names longer than their user and group tables hold (255), as the real
servers do (embedded Crowd: "Value '...' exceeds maximum allowed length of 255 characters"),
counted as Java counts a String: in UTF-16 units.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from oktasync_emulators.atlassian_base import AtlassianEmulator
from oktasync_emulators.confluence import ConfluenceEmulator
from oktasync_emulators.jira import JiraEmulator

ADMIN_AUTH = "Basic " + base64.b64encode(b"admin:secret").decode()
JIRA_USER = "/rest/api/2/user"
CONFLUENCE_USER = "/rest/api/admin/user"
EMOJI = "\U0001f600"  # one character, two UTF-16 units


@asynccontextmanager
async def serve(emulator: AtlassianEmulator) -> AsyncIterator[aiohttp.ClientSession]:
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


async def call(
    session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any,
) -> tuple[int, Any]:
    async with session.request(method, path, **kwargs) as resp:
        raw = await resp.read()
        if resp.content_type == "application/json" and raw:
            return resp.status, await resp.json()
        return resp.status, raw.decode()


def jira() -> JiraEmulator:
    return JiraEmulator(username="admin", password="secret", token="t")


def confluence() -> ConfluenceEmulator:
    return ConfluenceEmulator(username="admin", password="secret", token="t")


TOO_LONG = {  # field -> a value one unit too long, counted like Java
    "name": "n" * 256,
    "display": "D" * 256,
    "display-astral": EMOJI * 128,  # 128 characters, 256 UTF-16 units
    "email": "e" * 244 + "@example.com",
}
LONGEST = {"name": "n" * 255, "display": "D" * 254 + "…", "email": "e" * 243 + "@example.com"}


def jira_body(name: str = "alice", display: str = "Alice", email: str = "a@example.com",
              ) -> dict[str, Any]:
    return {"name": name, "displayName": display, "emailAddress": email, "password": "p"}


def confluence_body(name: str = "alice", display: str = "Alice", email: str = "a@example.com",
                    ) -> dict[str, Any]:
    return {"userName": name, "fullName": display, "email": email, "password": "p"}


def field_of(case: str) -> str:
    return case.split("-")[0]


@pytest.mark.asyncio
@pytest.mark.parametrize("case", sorted(TOO_LONG))
async def test_jira_refuses_a_create_with_a_name_over_255(case: str) -> None:
    emulator = jira()
    async with serve(emulator) as session:
        status, body = await call(session, "POST", JIRA_USER,
                                  json=jira_body(**{field_of(case): TOO_LONG[case]}))
        assert status == 400, body
        assert "255" in str(body["errors"]), body
        assert emulator.store.user("alice") is None and len(emulator.store.users) == 1  # admin


@pytest.mark.asyncio
async def test_jira_takes_names_of_exactly_255() -> None:
    async with serve(jira()) as session:
        status, body = await call(session, "POST", JIRA_USER, json=jira_body(**LONGEST))
        assert status == 201, body
        assert body["displayName"] == LONGEST["display"]


@pytest.mark.asyncio
@pytest.mark.parametrize("field", ["displayName", "emailAddress", "name"])
async def test_jira_refuses_an_update_over_255(field: str) -> None:
    emulator = jira()
    async with serve(emulator) as session:
        assert (await call(session, "POST", JIRA_USER, json=jira_body()))[0] == 201
        value = "x" * 244 + "@example.com" if field == "emailAddress" else "x" * 256
        status, body = await call(session, "PUT", JIRA_USER, params={"username": "alice"},
                                  json={field: value})
        assert status == 400, body
        user = emulator.store.user("alice")
        assert user is not None
        assert (user.name, user.display_name, user.email) == ("alice", "Alice", "a@example.com")


@pytest.mark.asyncio
@pytest.mark.parametrize("case", sorted(TOO_LONG))
async def test_confluence_refuses_a_create_with_a_name_over_255(case: str) -> None:
    emulator = confluence()
    async with serve(emulator) as session:
        status, body = await call(session, "POST", CONFLUENCE_USER,
                                  json=confluence_body(**{field_of(case): TOO_LONG[case]}))
        assert status == 400, body
        assert "255" in str(body), body
        assert emulator.store.user("alice") is None


@pytest.mark.asyncio
async def test_confluence_takes_names_of_exactly_255() -> None:
    emulator = confluence()
    async with serve(emulator) as session:
        status, body = await call(session, "POST", CONFLUENCE_USER,
                                  json=confluence_body(**LONGEST))
        assert status == 201, body
        user = emulator.store.user(LONGEST["name"])
        assert user is not None and user.display_name == LONGEST["display"]


@pytest.mark.asyncio
@pytest.mark.parametrize(("make", "path"), [(jira, "/rest/api/2/group"),
                                             (confluence, "/rest/api/admin/group")],
                         ids=["jira", "confluence"])
async def test_a_group_name_over_255_is_refused_and_255_taken(make: Any, path: str) -> None:
    emulator = make()
    async with serve(emulator) as session:
        status, body = await call(session, "POST", path, json={"name": "g" * 256})
        assert status == 400 and "255" in str(body), body
        assert emulator.store.group("g" * 256) is None
        status, body = await call(session, "POST", path, json={"name": EMOJI * 128})
        assert status == 400, body  # 128 characters, 256 UTF-16 units
        status, body = await call(session, "POST", path, json={"name": "g" * 255})
        assert status == 201, body
