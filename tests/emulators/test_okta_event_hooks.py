"""The Okta emulator's event hooks: registered through the Event Hooks API (the official SDK
where it covers it), verified by the challenge GET, and delivered as Okta delivers them — over
HTTPS only, batched, with the configured header, at least once, one retry after a 5xx or a
timeout and none after a 4xx. The hooks' endpoint is a small HTTPS server of the test's own,
with a certificate from a test CA (trustme)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from test_okta_emulator import TOKEN, assert_error, by_status, call, make_okta, serve

from oktasync_emulators.eventhooks import DeliveryOptions
from oktasync_emulators.okta import OktaEmulator

SECRET = "hook-secret-in-the-header"
TYPES = ["user.lifecycle.create", "user.lifecycle.activate", "group.user_membership.add",
         "user.session.start"]


@dataclass
class Receiver:
    """An event hook endpoint that records what reaches it and answers as told."""

    url: str
    challenges: list[dict[str, str]] = field(default_factory=list)  # the GETs' headers
    posts: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # statuses for the next POSTs, then 200
    stalls: list[float] = field(default_factory=list)  # seconds before answering them
    echo: bool = True  # answer the verification challenge

    def events(self) -> list[dict[str, Any]]:
        return [e for _, body in self.posts for e in body["data"]["events"]]


@asynccontextmanager
async def receiver(ca: trustme.CA) -> AsyncIterator[Receiver]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    got = Receiver("")

    async def verify(request: web.Request) -> web.Response:
        got.challenges.append(dict(request.headers))
        challenge = request.headers.get("X-Okta-Verification-Challenge", "")
        return web.json_response({"verification": challenge if got.echo else "no"})

    async def deliver(request: web.Request) -> web.Response:
        got.posts.append((dict(request.headers), await request.json()))
        if got.stalls:
            await asyncio.sleep(got.stalls.pop(0))
        return web.Response(status=got.answers.pop(0) if got.answers else 200)

    app = web.Application()
    app.router.add_get("/hook", verify)
    app.router.add_post("/hook", deliver)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    got.url = f"https://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield got
    finally:
        await runner.cleanup()


def hook_body(uri: str, items: list[str] | None = None, **config: Any) -> dict[str, Any]:
    """A registration as the Event Hooks API takes it."""
    channel_config = {"uri": uri, "authScheme": {"type": "HEADER", "key": "Authorization",
                                                 "value": SECRET}, **config}
    return {"name": "oktasync", "events": {"type": "EVENT_TYPE", "items": items or TYPES},
            "channel": {"type": "HTTP", "version": "1.0.0", "config": channel_config}}


async def registered(session: aiohttp.ClientSession, uri: str, verify: bool = True,
                     **config: Any) -> str:
    status, hook, _ = await call(session, "POST", "/api/v1/eventHooks",
                                 json=hook_body(uri, **config))
    assert status == 200, hook
    if verify:
        status, body, _ = await call(session, "POST",
                                     f"/api/v1/eventHooks/{hook['id']}/lifecycle/verify")
        assert status == 200 and body["verificationStatus"] == "VERIFIED", body
    return str(hook["id"])


async def settled(got: Receiver, posts: int, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while len(got.posts) < posts:
        assert time.monotonic() < deadline, f"{len(got.posts)} of {posts} deliveries"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # and nothing more comes


def emulator_trusting(ca_file: Path, **options: Any) -> OktaEmulator:
    return make_okta(users=50, groups=4, hooks=DeliveryOptions(ca_file=str(ca_file), **options))


@pytest.fixture
def ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return authority, tmp_path / "ca.pem"


# ---------------------------------------------------------------------------------------------
# Registration


@pytest.mark.asyncio
async def test_the_official_sdk_registers_verifies_and_retires_a_hook(
    ca: tuple[trustme.CA, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from okta.client import Client as OktaClient
    from okta.models import (
        EventHook,
        EventHookChannel,
        EventHookChannelConfig,
        EventHookChannelConfigAuthScheme,
        EventSubscriptions,
    )

    monkeypatch.setenv("OKTA_TESTING_TESTINGDISABLEHTTPSCHECK", "true")
    emulator = emulator_trusting(ca[1])
    async with serve(emulator) as (session, base), receiver(ca[0]) as got:
        client = OktaClient({"orgUrl": base, "token": TOKEN})
        hook = EventHook(
            name="oktasync", events=EventSubscriptions(type="EVENT_TYPE", items=TYPES),
            channel=EventHookChannel(type="HTTP", version="1.0.0", config=EventHookChannelConfig(
                uri=got.url, auth_scheme=EventHookChannelConfigAuthScheme(
                    type="HEADER", key="Authorization", value=SECRET))))
        created, _, error = await client.create_event_hook(hook)
        assert error is None, error
        assert (created.status, created.verification_status) == ("ACTIVE", "UNVERIFIED")
        assert created.channel.config.auth_scheme.value is None  # the secret never comes back
        verified, _, error = await client.verify_event_hook(created.id)
        assert error is None and verified.verification_status == "VERIFIED", error
        assert [h["Authorization"] for h in got.challenges] == [SECRET]
        listed, _, _ = await client.list_event_hooks()
        assert [h.id for h in listed] == [created.id]
        status, body, _ = await call(session, "DELETE", f"/api/v1/eventHooks/{created.id}")
        assert status == 400, body  # only an INACTIVE hook may be deleted
        inactive, _, error = await client.deactivate_event_hook(created.id)
        assert error is None and inactive.status == "INACTIVE"
        *_, error = await client.delete_event_hook(created.id)
        assert error is None
        status, body, _ = await call(session, "GET", f"/api/v1/eventHooks/{created.id}")
        assert status == 404
        assert_error(body, "E0000007")


@pytest.mark.asyncio
async def test_bad_registrations_and_failed_verifications_are_refused(
    ca: tuple[trustme.CA, Path],
) -> None:
    emulator = emulator_trusting(ca[1])
    async with serve(emulator) as (session, _), receiver(ca[0]) as got:
        good = hook_body(got.url)
        bad: list[Any] = [
            hook_body(got.url.replace("https:", "http:")),  # HTTPS only
            hook_body(got.url, items=["user.no.such.event"]),
            {**good, "events": {"type": "EVENT_TYPE", "items": []}},
            {**good, "name": ""},
            {**good, "channel": {**good["channel"], "version": "2.0.0"}},
            hook_body(got.url, authScheme={"type": "BASIC", "key": "a", "value": "b"}),
            {**good, "events": {**good["events"], "filter": {"type": "EXPRESSION_LANGUAGE"}}},
            [good],
        ]
        for body in bad:
            status, answer, _ = await call(session, "POST", "/api/v1/eventHooks", json=body)
            assert status == 400, (body, answer)
            assert_error(answer, "E0000003" if isinstance(body, list) else "E0000001")
        status, answer, _ = await call(session, "POST", "/api/v1/eventHooks", data=b"{not json",
                                       headers={"Content-Type": "application/json"})
        assert status == 400
        assert_error(answer, "E0000003")
        got.echo = False
        hook_id = await registered(session, got.url, verify=False)
        status, answer, _ = await call(session, "POST",
                                       f"/api/v1/eventHooks/{hook_id}/lifecycle/verify")
        assert status == 400 and len(got.challenges) == 1, answer
        _, hook, _ = await call(session, "GET", f"/api/v1/eventHooks/{hook_id}")
        assert hook["verificationStatus"] == "UNVERIFIED"
        for _ in range(9):
            await registered(session, got.url, verify=False)
        status, answer, _ = await call(session, "POST", "/api/v1/eventHooks", json=good)
        assert status == 400, answer  # the eleventh
        assert len(emulator.event_hooks.hooks) == 10


# ---------------------------------------------------------------------------------------------
# Deliveries


@pytest.mark.asyncio
async def test_changes_are_delivered_batched_with_the_header_to_verified_active_hooks_only(
    ca: tuple[trustme.CA, Path],
) -> None:
    emulator = emulator_trusting(ca[1])
    directory = emulator.directory
    async with serve(emulator) as (session, _), receiver(ca[0]) as got, \
            receiver(ca[0]) as unverified:
        hook_id = await registered(session, got.url)
        await registered(session, unverified.url, verify=False)
        group = next(iter(directory.groups.values()))
        status, user, _ = await call(session, "POST", "/_emulator/users", json={
            "login": "new.hire@example.com", "email": "new.hire@example.com",
            "firstName": "New", "lastName": "Hire"})
        assert status == 201, user
        await call(session, "POST", f"/_emulator/groups/{group.id}/members/{user['id']}")
        await call(session, "POST", f"/_emulator/users/{user['id']}/sessions")
        await call(session, "POST", f"/_emulator/users/{user['id']}/profile",
                   json={"title": "Engineer"})  # not subscribed: never delivered
        await settled(got, 1)
        headers, body = got.posts[0]
        assert len(got.posts) == 1  # close in time: one delivery
        assert headers["Authorization"] == SECRET and "json" in headers["Content-Type"]
        assert body["eventType"] == "com.okta.event_hook" and body["data"]["events"]
        logged = {e.body["uuid"]: e.event_type for e in directory.log.events}
        delivered = [(e["uuid"], e["eventType"]) for e in got.events()]
        assert delivered == [(u, t) for u, t in logged.items() if t in TYPES]
        sign_in = next(e for e in got.events() if e["eventType"] == "user.session.start")
        assert sign_in["actor"]["id"] == user["id"] and sign_in["target"] is None
        assert unverified.posts == []
        await call(session, "POST", f"/api/v1/eventHooks/{hook_id}/lifecycle/deactivate")
        await call(session, "POST", f"/_emulator/users/{user['id']}/sessions")
        await asyncio.sleep(0.4)
        assert len(got.posts) == 1  # an inactive hook is sent nothing
        _, counts, _ = await call(session, "GET", "/_emulator/hooks")
        mine = next(h for h in counts["hooks"] if h["id"] == hook_id)
        assert (mine["deliveries"], mine["attempts"], mine["events"]) == (1, 1, len(delivered))


@pytest.mark.asyncio
async def test_one_retry_after_a_5xx_or_a_timeout_none_after_a_4xx(
    ca: tuple[trustme.CA, Path],
) -> None:
    emulator = emulator_trusting(ca[1])
    active = by_status(emulator.directory, "ACTIVE")
    async with serve(emulator) as (session, _), receiver(ca[0]) as got:
        await registered(session, got.url)

        async def signed_in_then(answers: list[int], stalls: list[float], posts: int) -> None:
            got.answers, got.stalls = answers, stalls
            await call(session, "POST", f"/_emulator/users/{active.id}/sessions")
            await settled(got, posts, within_s=10)

        await signed_in_then([503], [], 2)  # retried, then accepted
        await signed_in_then([400], [], 3)  # refused: never retried
        await signed_in_then([500, 502], [], 5)  # retried once, then given up
        await signed_in_then([], [3.5], 7)  # no answer within 3 s: retried
        _, counts, _ = await call(session, "GET", "/_emulator/hooks")
    (hook,) = counts["hooks"]
    assert (hook["deliveries"], hook["attempts"], hook["retries"], hook["failed"]) == (4, 7, 3, 2)
    assert hook["events"] == 2  # the two deliveries answered 200
    first_ids = [body["eventId"] for _, body in got.posts]
    assert first_ids[0] == first_ids[1] and first_ids[3] == first_ids[4]  # a retry, same id


@pytest.mark.asyncio
async def test_duplicated_and_reordered_deliveries_when_asked(
    ca: tuple[trustme.CA, Path],
) -> None:
    emulator = emulator_trusting(ca[1], duplicate=1.0, reorder=True)
    directory = emulator.directory
    users = [u for u in directory.iter_users() if u.status == "ACTIVE"][:20]
    async with serve(emulator) as (session, _), receiver(ca[0]) as got:
        await registered(session, got.url)
        for user in users:
            await call(session, "POST", f"/_emulator/users/{user.id}/sessions")
        await settled(got, 2)
    assert len(got.posts) == 2 and got.posts[0][1]["eventId"] == got.posts[1][1]["eventId"]
    events = [e["actor"]["id"] for e in got.posts[0][1]["data"]["events"]]
    assert sorted(events) == sorted(u.id for u in users)
    assert events != [u.id for u in users]  # shuffled


@pytest.mark.asyncio
async def test_only_an_active_user_signs_in(ca: tuple[trustme.CA, Path]) -> None:
    emulator = emulator_trusting(ca[1])
    suspended = by_status(emulator.directory, "SUSPENDED")
    async with serve(emulator) as (session, _):
        status, body, _ = await call(session, "POST",
                                     f"/_emulator/users/{suspended.id}/sessions")
        assert status == 400 and "SUSPENDED" in body["error"], body
        status, _, _ = await call(session, "POST", "/_emulator/users/00unknown/sessions")
        assert status == 404
    assert len(emulator.directory.log) == 0


def test_the_hook_flags_reach_the_emulator(tmp_path: Path) -> None:
    from oktasync_emulators.cli import build_parser, options_from

    options = options_from(build_parser().parse_args([
        "--hook-ca-file", str(tmp_path / "ca.pem"), "--hook-duplicate", "0.5",
        "--hook-reorder", "--hook-delay-s", "0.25"]))
    assert (options.hook_ca_file, options.hook_duplicate, options.hook_reorder,
            options.hook_delay_s) == (str(tmp_path / "ca.pem"), 0.5, True, 0.25)
    defaults = options_from(build_parser().parse_args([]))
    assert (defaults.hook_ca_file, defaults.hook_duplicate, defaults.hook_reorder,
            defaults.hook_delay_s) == (None, 0.0, False, 0.0)
