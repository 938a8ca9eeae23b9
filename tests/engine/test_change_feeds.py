"""Reading only what changed (issue 11's first part): Okta's change feeds through the engine's
own ``OktaSource``, against the Okta emulator, and what each System Log event asks the engine
to read again (rule 4: events are signals, never facts)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from oktasync.errors import ListingError, RetryPolicy
from oktasync.http import HttpClient, make_session
from oktasync.okta_source import OktaSource
from oktasync.ratelimit import OktaLimiter
from oktasync.signals import Look, Signal, signals, signals_of
from oktasync_emulators.runner import EmulatorOptions, RunningEmulators, running_emulators
from tests.engine.harness import okta_time_now

# -- signals: the table ------------------------------------------------------------------------
USER = {"type": "User", "id": "00u1", "alternateId": "ann@example.com"}
GROUP = {"type": "UserGroup", "id": "00g1", "alternateId": "unknown"}
APP = {"type": "AppInstance", "id": "0oa1"}


def event(kind: str, *targets: dict[str, Any], result: str = "SUCCESS",
          actor: str = "00uADMIN") -> dict[str, Any]:
    return {"uuid": f"{kind}-{len(targets)}", "eventType": kind, "published": "x",
            "actor": {"id": actor, "type": "User"}, "outcome": {"result": result},
            "target": list(targets)}


SIGNAL_TABLE = [
    (event("user.lifecycle.suspend", USER), [Signal(Look.USER, "00u1")]),
    (event("user.lifecycle.delete.initiated", USER), [Signal(Look.USER, "00u1")]),
    (event("user.account.update_profile", USER), [Signal(Look.USER, "00u1")]),
    (event("user.lifecycle.create", USER), [Signal(Look.USER, "00u1")]),
    # a membership names the user and the group: the user's groups are read again
    (event("group.user_membership.add", USER, GROUP),
     [Signal(Look.MEMBERSHIPS, "00u1"), Signal(Look.MEMBERS, "00g1")]),
    (event("group.user_membership.remove", USER, GROUP),
     [Signal(Look.MEMBERSHIPS, "00u1"), Signal(Look.MEMBERS, "00g1")]),
    # an app assignment moves no group: the user is read again (its user scope is judged)
    (event("application.user_membership.add", APP, USER), [Signal(Look.USER, "00u1")]),
    (event("application.user_membership.remove", APP, USER), [Signal(Look.USER, "00u1")]),
    (event("group.profile.update", GROUP), [Signal(Look.GROUP, "00g1")]),
    (event("group.lifecycle.delete", GROUP), [Signal(Look.GROUP, "00g1")]),
    # a sign-in's user is its actor; the event has no user target
    (event("user.session.start", actor="00u7"), [Signal(Look.SIGN_IN, "00u7")]),
    (event("user.authentication.sso", APP, actor="00u7"), [Signal(Look.SIGN_IN, "00u7")]),
    # nothing to look at
    (event("user.session.start", actor="00u7", result="FAILURE"), []),
    (event("user.lifecycle.suspend", USER, result="DENIED"), []),
    (event("policy.lifecycle.update", {"type": "Policy", "id": "00p1"}), []),
    ({"uuid": "x", "eventType": "user.lifecycle.suspend", "target": "not a list"}, []),
    ({"uuid": "x"}, []),
]


@pytest.mark.parametrize(("raw", "expected"), SIGNAL_TABLE)
def test_what_each_event_asks_to_read_again(raw: dict[str, Any],
                                            expected: list[Signal]) -> None:
    assert signals_of(raw) == expected


def test_an_event_delivered_twice_and_many_edits_of_one_user_ask_for_one_read() -> None:
    edits = [event("user.account.update_profile", USER) for _ in range(10)]
    moved = event("group.user_membership.add", USER, GROUP)
    assert signals([*edits, moved, moved]) == [Signal(Look.USER, "00u1"),
                                              Signal(Look.MEMBERSHIPS, "00u1"),
                                              Signal(Look.MEMBERS, "00g1")]


# -- the feeds, against the emulator -----------------------------------------------------------
@asynccontextmanager
async def okta() -> AsyncIterator[tuple[RunningEmulators, OktaSource]]:
    options = EmulatorOptions(users=60, groups=8, seed=4, ports=(0, 0, 0), okta_rate_scale=0)
    async with running_emulators(options) as running:
        session = make_session(connections=4, timeout_s=10)
        client = HttpClient(session, name="Okta (test)", base_url=running.okta_url,
                            headers={"Authorization": f"SSWS {options.okta_token}"},
                            limiter=OktaLimiter(concurrency=4, max_share=0.5),
                            policy=RetryPolicy())
        try:
            yield running, OktaSource(client)
        finally:
            await session.close()


async def read_all(pages: AsyncIterator[Any]) -> tuple[list[Any], str | None]:
    items, last = [], None
    async for page in pages:
        items.extend(page.items)
        last = page.next_url
    return items, last


@pytest.mark.asyncio
async def test_only_what_changed_is_read_and_the_log_resumes_where_it_stopped() -> None:
    async with okta() as (running, source):
        directory = running.okta.directory
        users = [u for u in directory.iter_users() if u.status == "ACTIVE"]
        groups = sorted((g for g in directory.groups.values() if g.type == "OKTA_GROUP"),
                        key=lambda g: g.id)
        since = okta_time_now()
        await anyio.sleep(1.1)  # the changes land in a later second than ``since``
        suspended, edited, joined = users[0], users[1], users[2]
        directory.set_status(suspended.id, "SUSPENDED")
        directory.update_profile(edited.id, {"lastName": "Changed"})
        target_group = next(g for g in groups if joined.id not in directory.member_ids(g))
        directory.add_membership(target_group.id, joined.id)
        renamed = next(g for g in groups if g is not target_group)
        directory.rename_group(renamed.id, renamed.name + " (renamed)")

        changed_users, _ = await read_all(source.changed_user_pages(since))
        # a membership change moves the group's lastMembershipUpdated, not the user's
        assert {u.id for u in changed_users} == {suspended.id, edited.id}
        changed_groups, _ = await read_all(source.changed_group_pages(since))
        assert {g.id for g in changed_groups} == {target_group.id, renamed.id}

        events, position = await read_all(source.log_pages(source.first_log_url(since)))
        assert position is not None, "a polling read always ends with where to go on"
        assert set(signals(events)) == {
            Signal(Look.USER, suspended.id), Signal(Look.USER, edited.id),
            Signal(Look.MEMBERSHIPS, joined.id), Signal(Look.MEMBERS, target_group.id),
            Signal(Look.GROUP, renamed.id)}
        again, position_again = await read_all(source.log_pages(position))
        assert again == [] and position_again is not None

        directory.remove_membership(target_group.id, joined.id)
        later, _ = await read_all(source.log_pages(position))
        assert signals(later) == [Signal(Look.MEMBERSHIPS, joined.id),
                                  Signal(Look.MEMBERS, target_group.id)]


@pytest.mark.asyncio
async def test_a_delayed_event_is_read_on_a_later_poll_never_lost() -> None:
    async with okta() as (running, source):
        directory = running.okta.directory
        user = next(u for u in directory.iter_users() if u.status == "ACTIVE")
        since = okta_time_now()
        _, position = await read_all(source.log_pages(source.first_log_url(since)))
        assert position is not None
        directory.log.delay_s = 1.5  # test-only, as POST /_emulator/logs/delay does
        directory.set_status(user.id, "SUSPENDED")  # published now, readable 1.5 s later
        early, position = await read_all(source.log_pages(position))
        assert early == [] and position is not None
        await anyio.sleep(1.7)
        late, _ = await read_all(source.log_pages(position))
        assert signals(late) == [Signal(Look.USER, user.id)]


@pytest.mark.asyncio
async def test_a_log_link_to_another_host_is_never_followed() -> None:
    async with okta() as (_, source):
        with pytest.raises(ListingError, match="refusing to follow a link"):
            await read_all(source.log_pages("https://evil.example.com/api/v1/logs?after=x"))
