"""The real atlassian-python-api client works unchanged against both emulators.

The library is synchronous (``requests``), so each call runs in a worker thread while the emulator
serves from the test's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import pytest
from atlassian import Confluence, Jira
from atlassian.errors import ApiNotFoundError
from requests import HTTPError
from tests.engine.loopback import serve_app

from oktasync_emulators.atlassian_base import AtlassianEmulator
from oktasync_emulators.confluence import ConfluenceEmulator
from oktasync_emulators.jira import JiraEmulator

T = TypeVar("T")


def serve(emulator: AtlassianEmulator) -> AbstractAsyncContextManager[str]:
    """The emulator on 127.0.0.1 and an ephemeral port; yields its base URL."""
    return serve_app(emulator.make_app())


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def raises_http_error(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> HTTPError:
    with pytest.raises(HTTPError) as info:
        await run(fn, *args, **kwargs)
    return info.value


@pytest.mark.asyncio
async def test_jira_library_user_and_group_lifecycle() -> None:
    emulator = JiraEmulator(username="admin", password="secret", token="pat")
    async with serve(emulator) as url:
        jira = Jira(url=url, username="admin", password="secret")
        try:
            created = await run(jira.user_create, "Lib.User", "lib@example.com", "Lib User",
                                password="pw")
            assert created["name"] == "lib.user"
            error = await raises_http_error(
                jira.user_create, "LIB.USER", "lib@example.com", "Lib User", password="pw")
            assert error.response.status_code == 400
            assert str(error) == "A user with that username already exists."

            await run(jira.create_group, "Lib & Friends")
            group = await run(jira.add_user_to_group, "lib.user", "Lib & Friends")
            assert group["name"] == "Lib & Friends"
            error = await raises_http_error(jira.add_user_to_group, "Lib.User", "lib & friends")
            assert error.response.status_code == 400
            assert str(error) == (
                "Cannot add user. 'lib.user' is already a member of 'Lib & Friends'"
            )

            members = await run(jira.get_all_users_from_group, "Lib & Friends")
            assert [m["name"] for m in members["values"]] == ["lib.user"]

            await run(jira.user_deactivate, "lib.user")
            assert emulator.store.users["lib.user"].active is False
            members = await run(jira.get_all_users_from_group, "Lib & Friends")
            assert members["values"] == []  # inactive users hidden by default
            members = await run(jira.get_all_users_from_group, "Lib & Friends",
                                include_inactive_users=True)
            assert members["values"][0]["active"] is False

            user = await run(jira.user, "LIB.USER", expand="groups")
            assert [g["name"] for g in user["groups"]["items"]] == ["Lib & Friends"]
            found = await run(jira.user_find_by_user_string, username=".",
                              include_inactive_users=True)
            assert {u["name"] for u in found} == {"admin", "lib.user"}

            await run(jira.user_update_username, "lib.user", "renamed.user")
            assert "renamed.user" in emulator.store.users
            await run(jira.remove_user_from_group, "renamed.user", "Lib & Friends")
            assert emulator.store.members("Lib & Friends") == []

            info = await run(jira.get_server_info)
            assert info["versionNumbers"] == [10, 3, 4]
            picker = await run(jira.get_groups, "lib")
            assert [g["name"] for g in picker["groups"]] == ["Lib & Friends"]
            me = await run(jira.myself)
            assert me["name"] == "admin"
        finally:
            jira.close()


@pytest.mark.asyncio
async def test_jira_library_errors_for_unknown_and_bad_credentials() -> None:
    emulator = JiraEmulator(username="admin", password="secret", token="pat")
    async with serve(emulator) as url:
        jira = Jira(url=url, token="pat")
        bad = Jira(url=url, username="admin", password="wrong")
        try:
            error = await raises_http_error(jira.user, "ghost")
            assert error.response.status_code == 404
            assert str(error) == "The user named 'ghost' does not exist"
            error = await raises_http_error(jira.add_user_to_group, "admin", "no-such-group")
            assert error.response.status_code == 404
            error = await raises_http_error(bad.myself)
            assert error.response.status_code == 401
        finally:
            jira.close()
            bad.close()


@pytest.mark.asyncio
async def test_confluence_library_reads_users_and_groups() -> None:
    emulator = ConfluenceEmulator(username="admin", password="secret", token="pat")
    emulator.preload(
        [{"name": f"Person{i}", "email": f"p{i}@example.com", "displayName": f"P {i}"}
         for i in range(60)],
        memberships=[(f"person{i}", "Writers & Editors") for i in range(60)],
    )
    async with serve(emulator) as url:
        confluence = Confluence(url=url, username="admin", password="secret")
        try:
            user = await run(confluence.get_user_details_by_username, "PERSON1", expand="status")
            assert user["username"] == "Person1" and "status" not in user
            assert user["email"] == "p1@example.com"
            with pytest.raises(ApiNotFoundError):
                await run(confluence.get_user_details_by_username, "ghost")

            page = await run(confluence.get_group_members, "Writers & Editors", limit=25)
            assert len(page["results"]) == 25
            members = await run(confluence.get_all_members, "writers & editors")
            assert len(members) == 60
            assert len({m["userKey"] for m in members}) == 60

            await run(confluence.create_group, "Reviewers")
            groups = await run(confluence.get_all_groups)
            assert {g["name"] for g in groups} == {
                "confluence-users", "confluence-administrators", "Writers & Editors",
                "Reviewers"}

            created = await run(confluence.post, "rest/api/admin/user", data={
                "userName": "newbie", "fullName": "New Bie", "email": "n@example.com",
                "notifyViaEmail": True})
            assert created["username"] == "newbie"
            error = await raises_http_error(confluence.post, "rest/api/admin/user", data={
                "userName": "NEWBIE", "fullName": "New Bie", "email": "n@example.com",
                "password": "pw"})
            assert error.response.status_code == 409
            await run(confluence.put, "rest/api/user/newbie/group/Reviewers")
            await run(confluence.put, "rest/api/user/newbie/group/Reviewers")  # idempotent
            assert emulator.store.members("reviewers") == ["newbie"]
        finally:
            confluence.close()
