"""The service's hook endpoints: Okta's event hook deliveries and the login hook.

``GET /hooks/okta/{app}`` answers Okta's one-time verification; ``POST /hooks/okta/{app}``
takes a delivery (okta-api.md, "Event hooks"); ``POST /hooks/login/{app}`` lets a Jira or
Confluence login listener have one user synced at sign-in and wait for it.

What a request must get through, in this order, each refusal said with its status and never
with the secret: an app by that name that takes hooks (404), the secret, compared in constant
time (401) — checked before the body is read, so a flood of forged deliveries costs a header
comparison each and holds no memory; the size (413); the content type (415); JSON of the
documented shape (400). A delivery that passes is committed to the app's inbox **before** the
answer (``inbox.Inbox``); a full inbox answers 503 (Okta retries once). The work is done after
answering: Okta wants an answer within 3 s.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from oktasync.config import AppConfig
from oktasync.inbox import Inbox, InboxFull
from oktasync.secrets import Secret
from oktasync.signals import matters

log = structlog.get_logger("oktasync.hooks")
MAX_DELIVERY = 4 * 1024 * 1024  # guess: Okta documents no size; a batch of events is ~KBs each
MAX_LOGIN_BODY = 16 * 1024
CHALLENGE = "X-Okta-Verification-Challenge"


class Refused(Exception):
    """A request refused: its status and why (logged and answered; never a secret)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass
class HookSide:
    """What the endpoints need from the service (``serve.Service`` provides it)."""

    app: Callable[[str], AppConfig | None]
    inbox: Callable[[str], Inbox]
    accepted: Callable[[str, int], None]  # (app, new events): wake the app's event worker
    sync_one: Callable[[AppConfig, str], Awaitable[tuple[int, dict[str, Any]]]]  # login hook


def routes(side: HookSide) -> list[web.RouteDef]:
    hooks = _Hooks(side)
    return [web.get("/hooks/okta/{app}", hooks.verify),
            web.post("/hooks/okta/{app}", hooks.deliver),
            web.post("/hooks/login/{app}", hooks.login)]


class _Hooks:
    def __init__(self, side: HookSide) -> None:
        self._side = side

    async def verify(self, request: web.Request) -> web.StreamResponse:
        """Okta's one-time ``GET`` with a challenge: echoed back, to the right caller only."""
        try:
            self._okta_app(request)
            challenge = request.headers.get(CHALLENGE)
            if not challenge:
                raise Refused(400, f"no {CHALLENGE} header: not an event hook verification")
        except Refused as refusal:
            return _refused(request, refusal)
        log.info("event hook verified", app=request.match_info["app"])
        return web.json_response({"verification": challenge})

    async def deliver(self, request: web.Request) -> web.StreamResponse:
        """A delivery: checked, its events kept (those a sync cares about), then answered."""
        try:
            app = self._okta_app(request)
            body = await _json_body(request, MAX_DELIVERY)
            events = _events_of(body)
            wanted = [e for e in events if matters(e)]
            added = await self._side.inbox(app.name).aadd(wanted) if wanted else None
        except Refused as refusal:
            return _refused(request, refusal)
        except InboxFull as full:
            return _refused(request, Refused(503, f"inbox full: {full}"))
        new = added.new if added else 0
        log.info("delivery accepted", app=app.name, events=len(events), kept=new,
                 duplicates=added.duplicates if added else 0)
        if new:
            self._side.accepted(app.name, new)
        return web.Response(status=200)

    async def login(self, request: web.Request) -> web.StreamResponse:
        """A target username signing in: its Okta user synced now; answered when done."""
        try:
            app = self._app(request)
            if app.login_hook_secret is None:
                raise Refused(404, f"the login hook is off for app {app.name!r} (set "
                                   "login_hook_secret)")
            _check_secret(request, app.login_hook_secret, bearer=True)
            body = await _json_body(request, MAX_LOGIN_BODY)
            username = body.get("username") if isinstance(body, dict) else None
            if not isinstance(username, str) or not username.strip():
                raise Refused(400, 'the body must be {"username": "<target username>"}')
            status, answer = await self._side.sync_one(app, username.strip())
        except Refused as refusal:
            return _refused(request, refusal)
        return web.json_response(answer, status=status)

    def _app(self, request: web.Request) -> AppConfig:
        name = request.match_info["app"]
        app = self._side.app(name)
        if app is None:
            raise Refused(404, "no app by that name")
        return app

    def _okta_app(self, request: web.Request) -> AppConfig:
        app = self._app(request)
        if not app.takes_hooks or app.okta_hook_secret is None:
            raise Refused(404, f"event hooks are off for app {app.name!r} (changes = "
                               f"{app.changes!r})")
        _check_secret(request, app.okta_hook_secret, bearer=False)
        return app


def _check_secret(request: web.Request, secret: Secret, *, bearer: bool) -> None:
    given = request.headers.get("Authorization", "")
    if bearer:
        scheme, _, given = given.partition(" ")
        given = given if scheme.lower() == "bearer" else ""
    if not hmac.compare_digest(given.encode(), secret.reveal().encode()):
        raise Refused(401, "wrong or missing Authorization")


async def _json_body(request: web.Request, limit: int) -> Any:
    if request.content_length is not None and request.content_length > limit:
        raise Refused(413, f"body of {request.content_length} bytes, more than {limit}")
    if request.content_type != "application/json":
        raise Refused(415, f"content type {request.content_type!r}, not application/json")
    raw = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        raw += chunk
        if len(raw) > limit:
            raise Refused(413, f"body longer than {limit} bytes")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "the body is not JSON") from None


def _events_of(body: Any) -> list[dict[str, Any]]:
    """``data.events``: LogEvents, each with a ``uuid`` and an ``eventType``."""
    data = body.get("data") if isinstance(body, Mapping) else None
    events = data.get("events") if isinstance(data, Mapping) else None
    if not isinstance(events, list) or not all(
            isinstance(e, dict) and isinstance(e.get("uuid"), str)
            and isinstance(e.get("eventType"), str) for e in events):
        raise Refused(400, "not an event hook delivery: data.events must be a list of "
                           "events, each with a uuid and an eventType")
    return events


class _RefusalLog:
    """One log line per kind of refusal per ``EVERY_S``, with how many were not logged: a
    flood of forged requests must not become a flood of log lines (a full disk)."""

    EVERY_S = 10.0

    def __init__(self) -> None:
        self._last: dict[tuple[str, int], float] = {}
        self._quiet: dict[tuple[str, int], int] = {}

    def say(self, request: web.Request, refusal: Refused) -> None:
        key = (request.path.rpartition("/")[0], refusal.status)  # not the app: bounded
        now = time.monotonic()
        if now - self._last.get(key, -self.EVERY_S) < self.EVERY_S:
            self._quiet[key] = self._quiet.get(key, 0) + 1
            return
        self._last[key] = now
        log.warning("hook request refused", path=request.path, status=refusal.status,
                    reason=refusal.reason, remote=request.remote,
                    not_logged_since=self._quiet.pop(key, 0))


_refusals = _RefusalLog()


def _refused(request: web.Request, refusal: Refused) -> web.Response:
    _refusals.say(request, refusal)
    return web.json_response({"error": refusal.reason}, status=refusal.status)
