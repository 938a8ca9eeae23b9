"""The Okta emulator's change feeds: the System Log, lastUpdated filters, search, app users.

Each test drives the emulator over HTTP as the engine would (aiohttp, or the official SDK where
it covers the endpoint) and changes Okta only through the control endpoints, which is what
writes the System Log.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from test_okta_emulator import (
    TOKEN,
    assert_error,
    by_status,
    call,
    list_all,
    make_okta,
    next_link,
    serve,
)

from oktasync_emulators.cli import build_parser, options_from
from oktasync_emulators.directory import LazyDirectory, generate_directory
from oktasync_emulators.okta import OktaEmulator, OktaRateConfig
from oktasync_emulators.systemlog import iso_ms

LATER = "2025-06-01T00:00:00.000Z"  # after every generated timestamp, before any change


def iso_now(offset_s: float = 0.0) -> str:
    return iso_ms(int((time.time() + offset_s) * 1000))


async def poll(
    session: aiohttp.ClientSession, url: str | None = None, **params: str
) -> tuple[list[Any], str]:
    """One polling page: (events, the next link, which is always there)."""
    status, body, headers = await call(session, "GET", url or "/api/v1/logs", params=params)
    assert status == 200, body
    link = next_link(headers)
    assert link is not None, "a polling request always has a next link"
    return body, link


async def drain(session: aiohttp.ClientSession, url: str) -> tuple[list[Any], str]:
    """Follow ``next`` until a page comes back empty: (every event, the link to resume at)."""
    events: list[Any] = []
    while True:
        page, link = await poll(session, url)
        if not page:
            return events, url
        events.extend(page)
        url = link


def targets(event: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["type"], t["id"]) for t in event["target"]]


async def control(session: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> Any:
    status, body, _ = await call(session, method, path, **kw)
    assert status in (200, 201), (path, status, body)
    return body


# ---------------------------------------------------------------------------------------------
# What the control endpoints write


@pytest.mark.asyncio
async def test_every_control_change_writes_the_events_okta_writes() -> None:
    emulator = make_okta(users=50, groups=6)
    directory = emulator.directory
    user = by_status(directory, "ACTIVE")
    group = next(g for g in directory.groups.values() if g.type == "OKTA_GROUP")
    async with serve(emulator) as (session, _):
        assert await control(session, "GET", "/_emulator/logs") == {
            "events": 0, "visible": 0, "delay_s": 0.0,
        }  # the generated directory has no history
        _, start = await poll(session)
        await control(session, "POST", f"/_emulator/users/{user.id}/status",
                      json={"status": "SUSPENDED"})
        await control(session, "POST", f"/_emulator/users/{user.id}/status",
                      json={"status": "ACTIVE"})
        await control(session, "POST", f"/_emulator/users/{user.id}/profile",
                      json={"login": "renamed.person@example.com", "department": "Legal"})
        if user.id in group.members:
            await control(session, "DELETE", f"/_emulator/groups/{group.id}/members/{user.id}")
            _, start = await drain(session, start)
        await control(session, "POST", f"/_emulator/groups/{group.id}/members/{user.id}")
        await control(session, "DELETE", f"/_emulator/groups/{group.id}/members/{user.id}")
        unchanged = await control(
            session, "DELETE", f"/_emulator/groups/{group.id}/members/{user.id}")
        await control(session, "POST", f"/_emulator/groups/{group.id}/profile",
                      json={"name": "Renamed Group"})
        new_group = await control(session, "POST", "/_emulator/groups", json={"name": "New"})
        await control(session, "DELETE", f"/_emulator/groups/{new_group['id']}")
        new_user = await control(session, "POST", "/_emulator/users", json={
            "profile": {"login": "n.ew@example.com", "firstName": "N", "lastName": "Ew"}})
        await control(session, "DELETE", f"/_emulator/users/{new_user['id']}")
        await control(session, "DELETE", f"/_emulator/users/{new_user['id']}")
        await control(session, "POST", f"/_emulator/users/{user.id}/status",
                      json={"status": "DEPROVISIONED"})
        await control(session, "POST", f"/_emulator/users/{user.id}/status",
                      json={"status": "ACTIVE"})
        events, _ = await drain(session, start)
        counts = await control(session, "GET", "/_emulator/logs")
    assert unchanged == {"changed": False}  # no change, no event
    assert [e["eventType"] for e in events] == [
        "user.lifecycle.suspend",
        "user.lifecycle.unsuspend",
        "user.account.update_profile",
        "group.user_membership.add",
        "group.user_membership.remove",
        "group.profile.update",
        "group.lifecycle.create",
        "group.lifecycle.delete",
        "user.lifecycle.create",
        "user.lifecycle.activate",
        "user.lifecycle.deactivate",
        "user.lifecycle.delete.initiated",
        "user.lifecycle.deactivate",
        "user.lifecycle.activate",
    ]
    assert counts["events"] == counts["visible"] >= len(events)
    by_type = {e["eventType"]: e for e in events}
    membership = by_type["group.user_membership.add"]
    assert targets(membership) == [("User", user.id), ("UserGroup", group.id)]
    assert membership["target"][0]["alternateId"] == "renamed.person@example.com"
    profile = by_type["user.account.update_profile"]["target"][0]
    assert profile["changeDetails"]["to"] == {
        "login": "renamed.person@example.com", "department": "Legal"}
    assert profile["changeDetails"]["from"]["login"] == user_login_before(emulator, user.id)
    assert by_type["group.profile.update"]["target"][0]["changeDetails"]["to"] == {
        "name": "Renamed Group"}
    assert targets(by_type["user.lifecycle.delete.initiated"]) == [("User", new_user["id"])]
    created_at = [e["eventType"] for e in events].index("user.lifecycle.create")
    create, activate = events[created_at], events[created_at + 1]
    assert create["transaction"]["id"] == activate["transaction"]["id"]  # one request
    assert create["transaction"]["id"] != events[created_at + 2]["transaction"]["id"]
    assert len({e["uuid"] for e in events}) == len(events)
    for event in events:
        uuid.UUID(event["uuid"])
        assert event["version"] == "0" and event["severity"] == "INFO"
        assert event["outcome"] == {"result": "SUCCESS", "reason": None}
        assert event["actor"]["type"] == "User" and event["actor"]["id"].startswith("00u")
        assert event["displayMessage"] and event["transaction"]["id"]
        published = datetime.fromisoformat(event["published"].replace("Z", "+00:00"))
        assert abs(published.timestamp() - time.time()) < 60
        assert event["published"].endswith("Z") and len(event["published"]) == 24
    published_order = [e["published"] for e in events]
    assert published_order == sorted(published_order)


def user_login_before(emulator: OktaEmulator, user_id: str) -> str:
    """The generated login of a user (what it was before the test renamed it)."""
    seed = emulator.directory.seed
    fresh = generate_directory(users=50, groups=6, seed=seed)
    return fresh.users[user_id].login


@pytest.mark.asyncio
async def test_app_assignments_are_listed_paged_and_logged() -> None:
    emulator = make_okta(users=60, groups=4)
    directory = emulator.directory
    active = [u for u in directory.iter_users() if u.status == "ACTIVE"][:7]
    gone = by_status(directory, "DEPROVISIONED")
    async with serve(emulator) as (session, _):
        _, start = await poll(session)
        app = await control(session, "POST", "/_emulator/apps", json={"label": "Jira DC"})
        for user in active:
            assert await control(
                session, "POST", f"/_emulator/apps/{app['id']}/users/{user.id}"
            ) == {"changed": True}
        again = await control(session, "POST", f"/_emulator/apps/{app['id']}/users/{active[0].id}")
        refused = await call(session, "POST", f"/_emulator/apps/{app['id']}/users/{gone.id}")
        listed, pages = await list_all(session, f"/api/v1/apps/{app['id']}/users", {"limit": "3"})
        status, first, headers = await call(
            session, "GET", f"/api/v1/apps/{app['id']}/users", params={"expand": "user"})
        unknown = await call(session, "GET", "/api/v1/apps/0oanosuchapp/users")
        # unassigning, and deactivating (Okta removes a deactivated user's assignments)
        await control(session, "DELETE", f"/_emulator/apps/{app['id']}/users/{active[1].id}")
        await control(session, "POST", f"/_emulator/users/{active[2].id}/status",
                      json={"status": "DEPROVISIONED"})
        after, _ = await list_all(session, f"/api/v1/apps/{app['id']}/users")
        events, _ = await drain(session, start)
    assert again == {"changed": False} and refused[0] == 400
    assert pages == 3 and [u["id"] for u in listed] == sorted(u.id for u in active)
    assert listed[0]["scope"] == "USER" and listed[0]["credentials"]["userName"]
    assert status == 200 and len(first) == 7 and next_link(headers) is None
    assert first[0]["_embedded"]["user"]["id"] == first[0]["id"]
    assert unknown[0] == 404
    assert_error(unknown[1], "E0000007")
    assert {u["id"] for u in after} == {u.id for u in active} - {active[1].id, active[2].id}
    kinds = [e["eventType"] for e in events]
    assert kinds.count("application.user_membership.add") == 7
    assert kinds[-3:] == [
        "application.user_membership.remove",
        "user.lifecycle.deactivate",
        "application.user_membership.remove",
    ]
    assert targets(events[-1]) == [("User", active[2].id), ("AppInstance", app["id"])]


@pytest.mark.asyncio
async def test_control_users_take_any_profile_and_the_lazy_directory_refuses_changes() -> None:
    emulator = make_okta(users=20, groups=2)
    profile = {"login": "Ada.Lovelace@example.com", "firstName": "Ada", "lastName": "Lovelace",
               "email": "ada@example.com", "department": "Research & Development",
               "location": "London", "costCenter": "CC-1815", "displayName": "Ada L."}
    lazy = OktaEmulator(LazyDirectory(30, 3, 1), token=TOKEN, rate=OktaRateConfig(scale=0))
    async with serve(emulator) as (session, _):
        created = await control(session, "POST", "/_emulator/users",
                                json={"profile": profile, "status": "STAGED"})
        _, got, _ = await call(session, "GET", f"/api/v1/users/{created['id']}")
        suspended = await control(session, "POST", "/_emulator/users", json={
            "profile": {**profile, "login": "s@example.com"}, "status": "SUSPENDED"})
        written, _ = await poll(session)
        bad = await call(session, "POST", "/_emulator/users", json={
            "profile": {**profile, "login": "x@example.com", "shoeSize": "44"}})
    async with serve(lazy) as (session, _):
        events, link = await poll(session)
        refused = await call(session, "POST", "/_emulator/apps", json={"label": "Jira"})
    assert got["status"] == "STAGED"
    assert [(e["eventType"], e["target"][0]["id"]) for e in written] == [
        ("user.lifecycle.create", created["id"]),  # STAGED: not activated
        ("user.lifecycle.create", suspended["id"]),
        ("user.lifecycle.suspend", suspended["id"]),
    ]
    assert {k: got["profile"][k] for k in profile} == profile
    assert bad[0] == 400 and "shoeSize" in bad[1]["error"]
    assert events == [] and "after=" in link
    assert refused[0] == 501


# ---------------------------------------------------------------------------------------------
# Polling and bounded requests


@pytest.mark.asyncio
async def test_polling_pages_by_persistence_time_and_always_has_next() -> None:
    emulator = make_okta(users=30, groups=3)
    users = [u for u in emulator.directory.iter_users() if u.status == "ACTIVE"][:5]
    since = iso_now(-5)
    async with serve(emulator) as (session, base):
        empty, first_next = await poll(session, since=since, limit="2")
        for user in users:
            await control(session, "POST", f"/_emulator/users/{user.id}/profile",
                          json={"displayName": "X"})
        page1, next1 = await poll(session, first_next)
        page2, next2 = await poll(session, next1)
        page3, next3 = await poll(session, next2)
        page4, next4 = await poll(session, next3)
        again3, _ = await poll(session, next2)  # a next link can be followed twice
        await control(session, "POST", f"/_emulator/users/{users[0].id}/profile",
                      json={"displayName": "Y"})
        page5, _ = await poll(session, next4)
        status, zero, zero_headers = await call(
            session, "GET", "/api/v1/logs", params={"since": since, "limit": "0"})
        everything, _ = await poll(session, since=since, limit="1000")
        default, _ = await poll(session)  # since defaults to 7 days back
    assert empty == [] and first_next.startswith(base + "/api/v1/logs?")
    query = parse_qs(urlsplit(first_next).query)
    assert set(query) == {"after", "limit"} and query["limit"] == ["2"]  # since is dropped
    assert [len(p) for p in (page1, page2, page3, page4)] == [2, 2, 1, 0]
    ids = [t["id"] for p in (page1, page2, page3) for e in p for t in e["target"]]
    assert ids == [u.id for u in users]
    assert next4 == next3  # an empty page resumes where it was
    assert again3 == page3
    assert [e["target"][0]["id"] for e in page5] == [users[0].id]
    assert status == 200 and zero == [] and next_link(zero_headers) is not None
    assert len(everything) == len(default) == 6


@pytest.mark.asyncio
async def test_a_late_event_reaches_the_poller_but_a_bounded_request_may_miss_it() -> None:
    emulator = make_okta(users=30, groups=3)
    first, second = [u for u in emulator.directory.iter_users() if u.status == "ACTIVE"][:2]
    async with serve(emulator) as (session, _):
        _, start = await poll(session)
        since = iso_now(-1)
        delayed = await control(session, "POST", "/_emulator/logs/delay", json={"seconds": 0.6})
        await control(session, "POST", f"/_emulator/users/{first.id}/status",
                      json={"status": "SUSPENDED"})
        await control(session, "POST", "/_emulator/logs/delay", json={"seconds": 0})
        await asyncio.sleep(0.02)
        await control(session, "POST", f"/_emulator/users/{second.id}/status",
                      json={"status": "SUSPENDED"})
        counts = await control(session, "GET", "/_emulator/logs")
        early, resume = await poll(session, start)
        bounded_early, _ = await list_all(
            session, "/api/v1/logs", {"since": since, "until": iso_now(1)})
        await asyncio.sleep(0.7)
        late, _ = await poll(session, resume)
        bounded_late, _ = await list_all(
            session, "/api/v1/logs", {"since": since, "until": iso_now(1)})
        bad_delay = await call(session, "POST", "/_emulator/logs/delay", json={"seconds": -1})
    assert delayed == {"delay_s": 0.6} and bad_delay[0] == 400
    assert counts == {"events": 2, "visible": 1, "delay_s": 0.0}
    assert [e["target"][0]["id"] for e in early] == [second.id]
    assert [e["target"][0]["id"] for e in bounded_early] == [second.id]  # missed, as on Okta
    assert [e["target"][0]["id"] for e in late] == [first.id]  # out of published order
    assert late[0]["published"] < early[0]["published"]
    assert [e["target"][0]["id"] for e in bounded_late] == [first.id, second.id]


@pytest.mark.asyncio
async def test_bounded_requests_are_ordered_by_published_and_finite() -> None:
    emulator = make_okta(users=30, groups=3)
    users = [u for u in emulator.directory.iter_users() if u.status == "ACTIVE"][:5]
    async with serve(emulator) as (session, _):
        since = iso_now(-1)
        for user in users:
            await control(session, "POST", f"/_emulator/users/{user.id}/status",
                          json={"status": "SUSPENDED"})
            await asyncio.sleep(0.002)
        until = iso_now(1)
        ascending, pages = await list_all(
            session, "/api/v1/logs", {"since": since, "until": until, "limit": "2"})
        descending, _ = await list_all(
            session, "/api/v1/logs",
            {"since": since, "until": until, "limit": "2", "sortOrder": "DESCENDING"})
        status, last, headers = await call(
            session, "GET", "/api/v1/logs", params={"since": since, "until": until})
        before, _ = await list_all(session, "/api/v1/logs", {"since": since, "until": since})
        newest_first, _ = await list_all(session, "/api/v1/logs", {"sortOrder": "DESCENDING"})
    order = [u.id for u in users]
    assert pages == 3 and [e["target"][0]["id"] for e in ascending] == order
    assert [e["target"][0]["id"] for e in descending] == order[::-1]
    assert status == 200 and len(last) == 5 and next_link(headers) is None
    assert before == []
    assert [e["target"][0]["id"] for e in newest_first] == order[::-1]


# ---------------------------------------------------------------------------------------------
# filter, q, parameters and their errors


@pytest.mark.asyncio
async def test_log_filter_and_keywords() -> None:
    emulator = make_okta(users=40, groups=4)
    directory = emulator.directory
    group = min(
        (g for g in directory.groups.values() if g.type == "OKTA_GROUP"),
        key=lambda g: len(g.members),
    )
    one, two = [
        u for u in directory.iter_users() if u.status == "ACTIVE" and u.id not in group.members
    ][:2]
    async with serve(emulator) as (session, _):
        for user in (one, two):
            await control(session, "POST", f"/_emulator/groups/{group.id}/members/{user.id}")
        await control(session, "POST", f"/_emulator/users/{one.id}/status",
                      json={"status": "SUSPENDED"})

        async def types(expression: str | None = None, q: str | None = None) -> list[str]:
            params = {"since": iso_now(-60)}
            if expression is not None:
                params["filter"] = expression
            if q is not None:
                params["q"] = q
            events, _ = await poll(session, **params)
            return [e["eventType"] + ":" + e["target"][0]["id"] for e in events]

        added = await types('eventType eq "group.user_membership.add"')
        about_one = await types(f'target.id eq "{one.id}"')
        both = await types(f'target.id eq "{one.id}" and target.id eq "{group.id}"')
        either = await types(
            f'(eventType eq "user.lifecycle.suspend" or eventType sw "group.") '
            f'and target.id eq "{one.id}"')
        by_actor = await types('actor.id eq "00u0emulatedadmin0x7"')
        nobody = await types('actor.id eq "00unosuchactor"')
        not_added = await types('eventType ne "group.user_membership.add"')
        keyword = await types(q=f"suspend {one.id}")
        no_keyword = await types(q="nonexistentword")
    assert added == [f"group.user_membership.add:{one.id}", f"group.user_membership.add:{two.id}"]
    assert about_one == [f"group.user_membership.add:{one.id}", f"user.lifecycle.suspend:{one.id}"]
    assert both == [f"group.user_membership.add:{one.id}"]
    assert either == about_one
    assert len(by_actor) == 3 and nobody == []
    assert not_added == [f"user.lifecycle.suspend:{one.id}"]
    assert keyword == [f"user.lifecycle.suspend:{one.id}"] and no_keyword == []


@pytest.mark.asyncio
async def test_bad_log_requests_are_refused_as_okta_refuses_them() -> None:
    emulator = make_okta(users=10, groups=2)
    old = iso_now(-181 * 86400)
    cases = {
        "operator": ({"filter": 'eventType eqq "x"'}, "E0000053"),
        "field": ({"filter": 'nosuchfield eq "x"'}, "E0000053"),
        "published": ({"filter": 'published gt "2025-01-01T00:00:00Z"'}, "E0000053"),
        "unquoted": ({"filter": "eventType eq x"}, "E0000053"),
        "unbalanced": ({"filter": '(eventType eq "x"'}, "E0000053"),
        "dangling": ({"filter": 'eventType eq "x" and'}, "E0000053"),
        "limit low": ({"limit": "-1"}, "E0000001"),
        "limit high": ({"limit": "1001"}, "E0000001"),
        "limit text": ({"limit": "ten"}, "E0000001"),
        "since old": ({"since": old}, "E0000053"),
        "since date": ({"since": "yesterday"}, "E0000001"),
        "until zone": ({"until": "2025-01-01T00:00:00"}, "E0000001"),
        "sort": ({"sortOrder": "ascending"}, "E0000001"),
        "keyword": ({"q": "x" * 41}, "E0000001"),
        "keywords": ({"q": " ".join("abcdefghijk")}, "E0000001"),
        "after": ({"after": "not-a-cursor"}, "E0000029"),
    }
    async with serve(emulator) as (session, _):
        _, link = await poll(session)
        after = parse_qs(urlsplit(link).query)["after"][0]
        answers = {
            name: await call(session, "GET", "/api/v1/logs", params=params)
            for name, (params, _) in cases.items()
        }
        both = await call(
            session, "GET", "/api/v1/logs", params={"after": after, "since": iso_now()})
        foreign = await call(session, "GET", "/api/v1/users", params={"after": after})
        ok = await call(session, "GET", "/api/v1/logs", params={"since": iso_now(-179 * 86400)})
    for name, (_, code) in cases.items():
        status, body, _ = answers[name]
        assert status == 400, (name, body)
        assert_error(body, code)
    assert "eqq" in answers["operator"][1]["errorSummary"]
    assert answers["field"][1]["errorSummary"] == "field is not valid: nosuchfield"
    assert answers["since old"][1]["errorSummary"] == (
        "Invalid parameter: The since parameter is over 180 days prior to the current day.")
    assert both[0] == 400 and foreign[0] == 400
    assert ok[0] == 200


@pytest.mark.asyncio
async def test_the_log_has_its_own_rate_limit_bucket() -> None:
    # per-minute limit * scale * window_s / 60: logs 120 -> 2, users 600 -> 10 per 1 s window
    emulator = make_okta(users=10, groups=2, rate=OktaRateConfig(scale=1.0, window_s=1.0))
    async with serve(emulator) as (session, _):
        logs = [await call(session, "GET", "/api/v1/logs") for _ in range(3)]
        users = await call(session, "GET", "/api/v1/users", params={"limit": "1"})
        _, stats, _ = await call(session, "GET", "/_emulator/stats")
    assert [a[0] for a in logs] == [200, 200, 429]
    assert logs[0][2]["X-Rate-Limit-Limit"] == "2"
    assert logs[2][1]["errorCode"] == "E0000047"
    assert users[0] == 200 and users[2]["X-Rate-Limit-Limit"] == "10"
    assert stats["window_limits"]["logs"] == 2 and stats["windows_current"]["logs"] == 2


# ---------------------------------------------------------------------------------------------
# lastUpdated / lastMembershipUpdated and their filters


@pytest.mark.asyncio
async def test_timestamps_move_as_okta_moves_them_and_filters_find_the_changes() -> None:
    emulator = make_okta(users=200, groups=8)
    directory = emulator.directory
    member_user, status_user, profile_user = [
        u for u in directory.iter_users() if u.status == "ACTIVE"][:3]
    deprovisioned = by_status(directory, "DEPROVISIONED")
    groups = [g for g in directory.groups.values() if g.type == "OKTA_GROUP"]
    membership_group, renamed_group = groups[0], groups[1]
    before = {u: directory.users[u].last_updated for u in (member_user.id, deprovisioned.id)}
    renamed_members_at = renamed_group.last_membership_updated
    async with serve(emulator) as (session, _):
        if member_user.id in membership_group.members:
            await control(session, "DELETE",
                          f"/_emulator/groups/{membership_group.id}/members/{member_user.id}")
        else:
            await control(session, "POST",
                          f"/_emulator/groups/{membership_group.id}/members/{member_user.id}")
        await control(session, "POST", f"/_emulator/users/{status_user.id}/status",
                      json={"status": "DEPROVISIONED"})
        await control(session, "POST", f"/_emulator/users/{profile_user.id}/profile",
                      json={"department": "Finance"})
        await control(session, "POST", f"/_emulator/groups/{renamed_group.id}/profile",
                      json={"description": "now described"})

        async def ids(path: str, expression: str) -> set[str]:
            found, _ = await list_all(session, path, {"filter": expression})
            return {x["id"] for x in found}

        changed = await ids("/api/v1/users", f'lastUpdated gt "{LATER}"')
        changed_ge = await ids("/api/v1/users", f'lastUpdated ge "{LATER}"')
        old_ones = await ids("/api/v1/users", f'lastUpdated lt "{LATER}"')
        gone_since = await ids(
            "/api/v1/users", f'lastUpdated gt "{LATER}" and status eq "DEPROVISIONED"')
        either = await ids(
            "/api/v1/users", f'lastUpdated gt "{LATER}" or status eq "DEPROVISIONED"')
        member_groups = await ids("/api/v1/groups", f'lastMembershipUpdated gt "{LATER}"')
        profile_groups = await ids("/api/v1/groups", f'lastUpdated gt "{LATER}"')
        refused = [
            await call(session, "GET", "/api/v1/users", params={"filter": expression})
            for expression in (
                'lastUpdated sw "2025"',
                'profile.department eq "Finance"',
                'lastUpdated gt "yesterday"',
                f'lastMembershipUpdated gt "{LATER}"',
            )
        ] + [
            await call(session, "GET", "/api/v1/groups", params={"filter": expression})
            for expression in (f'lastMembershipUpdated sw "{LATER}"', 'profile.name eq "x"')
        ]
    assert directory.users[member_user.id].last_updated == before[member_user.id]
    assert changed == changed_ge == {status_user.id, profile_user.id}
    assert len(old_ones) == 200 - 2 and member_user.id in old_ones
    assert gone_since == {status_user.id}
    every_deprovisioned = {u.id for u in directory.iter_users() if u.status == "DEPROVISIONED"}
    assert deprovisioned.id in either and either == every_deprovisioned | {profile_user.id}
    assert member_groups == {membership_group.id}
    assert profile_groups == {renamed_group.id}
    assert renamed_group.last_membership_updated == renamed_members_at
    for status, body, _ in refused:
        assert status == 400
        assert_error(body, "E0000031")


# ---------------------------------------------------------------------------------------------
# search on profile attributes


@pytest.mark.asyncio
async def test_search_on_department_location_and_status_includes_deprovisioned() -> None:
    emulator = make_okta(users=400, groups=4)
    directory = emulator.directory
    users = list(directory.iter_users())
    again = {u.id: (u.department, u.location, u.cost_center)
             for u in generate_directory(users=400, groups=4, seed=7).iter_users()}
    assert again == {u.id: (u.department, u.location, u.cost_center) for u in users}
    assert {u.department for u in users} >= {"Engineering", "Sales", None}
    engineering = {u.id for u in users if u.department == "Engineering"}
    gone = {uid for uid in engineering if directory.users[uid].status == "DEPROVISIONED"}
    assert gone, "the seed gives a deprovisioned engineer"
    someone = next(u for u in users if u.department != "Engineering" and u.status == "ACTIVE")
    async with serve(emulator) as (session, _):

        async def ids(expression: str) -> set[str]:
            found, _ = await list_all(session, "/api/v1/users", {"search": expression})
            return {x["id"] for x in found}

        by_department = await ids('profile.department eq "engineering"')
        by_prefix = await ids('profile.department sw "Eng"')
        active_in_berlin = await ids(
            'profile.department eq "Engineering" and (status eq "ACTIVE" '
            'and profile.location eq "Berlin")')
        either = await ids('profile.department eq "Legal" or profile.costCenter eq "CC-1000"')
        by_login = await ids(f'profile.login co "{someone.login.split("@")[0][2:8]}"')
        co_refused = await call(session, "GET", "/api/v1/users",
                                params={"search": 'profile.department co "gine"'})
        await control(session, "POST", f"/_emulator/users/{someone.id}/profile",
                      json={"department": "Engineering", "location": None})
        moved = await ids('profile.department eq "Engineering"')
        _, shown, _ = await call(session, "GET", f"/api/v1/users/{someone.id}")
    assert by_department == by_prefix == engineering
    assert gone <= by_department  # search includes DEPROVISIONED users
    assert active_in_berlin == {
        u.id for u in users
        if u.department == "Engineering" and u.status == "ACTIVE" and u.location == "Berlin"}
    assert either == {u.id for u in users if u.department == "Legal" or u.cost_center == "CC-1000"}
    assert someone.id in by_login
    assert co_refused[0] == 400
    assert_error(co_refused[1], "E0000031")
    assert moved == engineering | {someone.id}
    assert shown["profile"]["department"] == "Engineering" and "location" not in shown["profile"]


# ---------------------------------------------------------------------------------------------
# The official SDK and the command line


@pytest.mark.asyncio
async def test_official_sdk_reads_the_log_and_app_users(monkeypatch: pytest.MonkeyPatch) -> None:
    from okta.client import Client as OktaClient
    from okta.pagination import paginate_pages

    monkeypatch.setenv("OKTA_TESTING_TESTINGDISABLEHTTPSCHECK", "true")
    emulator = make_okta(users=80, groups=5)
    active = [u for u in emulator.directory.iter_users() if u.status == "ACTIVE"][:5]
    async with serve(emulator) as (session, base):
        app = await control(session, "POST", "/_emulator/apps", json={"label": "Confluence"})
        for user in active:
            await control(session, "POST", f"/_emulator/apps/{app['id']}/users/{user.id}")
        client = OktaClient({"orgUrl": base, "token": TOKEN})
        events, response, error = await client.list_log_events(
            since=iso_now(-60), filter='eventType eq "application.user_membership.add"',
            limit=3)
        bounded, _, bounded_error = await client.list_log_events(
            since=iso_now(-60), until=iso_now(1), sort_order="DESCENDING")
        pages = [p async for p, _, _ in paginate_pages(
            lambda **kw: client.list_application_users(app["id"], **kw), limit=2)]
    assert error is None and bounded_error is None
    assert [e.event_type for e in events] == ["application.user_membership.add"] * 3
    assert events[0].target is not None and events[0].target[0].id == active[0].id
    assert events[0].actor is not None and events[0].actor.type == "User"
    assert events[0].published is not None and events[0].published.tzinfo is not None
    assert response is not None and 'rel="next"' in str(response.headers)  # polling
    assert [e.target[1].type for e in bounded if e.target] == ["AppInstance"] * 5
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [u.id for p in pages for u in p] == sorted(u.id for u in active)
    assert all(u.scope == "USER" for p in pages for u in p)


def test_log_delay_flag_reaches_the_emulator() -> None:
    options = options_from(build_parser().parse_args(["--log-delay-ms", "250"]))
    assert options.okta_log_delay_ms == 250.0
    defaults = options_from(build_parser().parse_args([]))
    assert defaults.okta_log_delay_ms == 0.0


@pytest.mark.asyncio
async def test_deleting_a_group_removes_it_everywhere_and_only_okta_groups_go() -> None:
    emulator = make_okta(users=100, groups=16)
    directory = emulator.directory
    group = max((g for g in directory.groups.values() if g.type == "OKTA_GROUP"),
                key=lambda g: len(g.members))
    member = directory.users[group.members[0]]
    member_updated = member.last_updated
    app_group = next(g for g in directory.groups.values() if g.type == "APP_GROUP")
    async with serve(emulator) as (session, _):
        deleted = await control(session, "DELETE", f"/_emulator/groups/{group.id}")
        gone = await call(session, "GET", f"/api/v1/groups/{group.id}")
        _, member_groups, _ = await call(session, "GET", f"/api/v1/users/{member.id}/groups")
        listed, _ = await list_all(session, "/api/v1/groups")
        refused = [
            await call(session, "DELETE", f"/_emulator/groups/{g.id}")
            for g in (app_group, directory.everyone)
        ]
        again = await call(session, "DELETE", f"/_emulator/groups/{group.id}")
    assert deleted == {"deleted": group.id}
    assert gone[0] == 404 and again[0] == 404
    assert group.id not in {g["id"] for g in member_groups}
    assert group.id not in {g["id"] for g in listed} and len(listed) == 16
    assert [r[0] for r in refused] == [400, 400]
    assert member.last_updated == member_updated


@pytest.mark.asyncio
async def test_one_app_assignment_is_read_or_404() -> None:
    emulator = make_okta(users=30, groups=2)
    directory = emulator.directory
    assigned, other = [u for u in directory.iter_users() if u.status == "ACTIVE"][:2]
    async with serve(emulator) as (session, _):
        app = await control(session, "POST", "/_emulator/apps", json={"label": "Jira DC"})
        await control(session, "POST", f"/_emulator/apps/{app['id']}/users/{assigned.id}")
        found = await call(session, "GET", f"/api/v1/apps/{app['id']}/users/{assigned.id}")
        missing = await call(session, "GET", f"/api/v1/apps/{app['id']}/users/{other.id}")
        no_app = await call(session, "GET", f"/api/v1/apps/0oanosuchapp/users/{assigned.id}")
    assert found[0] == 200 and found[1]["id"] == assigned.id and found[1]["scope"] == "USER"
    for status, body, _ in (missing, no_app):
        assert status == 404
        assert_error(body, "E0000007")
