"""What every emulator shares: request accounting, fault injection, latency, JSON answers.

The emulators exist so the engine is tested against servers that behave like the real ones,
including the ways they fail. Everything that is the same for Okta, Jira and Confluence lives
here so the three cannot drift apart in how they count or how they break:

* ``Stats`` is the single source of the counts tests and benchmarks read from
  ``GET /_emulator/stats`` (the engine never calls it), including ``peers``: the requests
  served per client (peer) port, so a test can tell which TCP connections reached the
  emulator (all through a proxy, or not).
* ``build_app`` wraps an emulator's routes in one middleware that adds latency, asks the
  emulator's own gate (auth, rate limit) whether to answer at all, injects the two faults real
  servers show (503 with no effect, no Retry-After unless asked for; a write applied and then
  answered 504) and counts everything.
* ``Alterations`` breaks chosen answers on request (``POST /_emulator/answers``) the ways real
  servers and the proxies in front of them do: an HTML maintenance page with status 200, a
  truncated JSON body, a JSON value of the wrong type, an empty body, a listing that ends
  early (no ``next`` link, ``isLast`` too soon), a page without any ``Link`` header, an answer
  whose headers arrive and then nothing more (a stall), or a connection reset half-way through
  the body. Each one is counted in the stats' ``faults``.
* ``POST /_emulator/clock`` sets the server's clock off the real one: every clock an answer
  shows (``Date``, Okta's ``X-Rate-Limit-Reset``) moves by ``skew_s`` seconds, or only the
  ``Date`` when ``date_only`` (a proxy in front with a wrong clock).

Paths under ``/_emulator/`` are the emulators' own control surface: never delayed, limited,
faulted or counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import orjson
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Gate = Callable[[web.Request], Awaitable[web.StreamResponse | None]]
Finisher = Callable[[web.Request, web.StreamResponse], None]

CONTROL_PREFIX = "/_emulator/"
# Request storage keys: aiohttp 3.14 warns on plain string keys (an error under pytest).
# Reading also accepts the old string keys, so an emulator that set those keeps working.
UNAVAILABLE_KEY = web.RequestKey("oktasync_unavailable", bool)
APPLIED_KEY = web.RequestKey("oktasync_applied", bool)
LOST_ANSWER_KEY = web.RequestKey("oktasync_lost_answer", bool)
# how many entries a listing page returned (counted as ``items`` in the stats)
ITEMS_KEY = web.ResponseKey("oktasync_items", int)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class FaultConfig:
    """Faults and latency for one emulator; all off by default."""

    latency_ms: float = 0.0
    fail_rate: float = 0.0  # share of requests answered 503, with no effect
    # Retry-After on those 503s; None (the default): none, as a load balancer sends
    fail_retry_after: int | None = None
    ambiguous_rate: float = 0.0  # share of writes applied, then answered 504 (answer lost)
    seed: int | None = None
    clock_skew_s: float = 0.0  # the server's clock minus the real one (Date, rate-limit Reset)
    skew_date_only: bool = False  # only the Date header is off (a proxy's clock)


@dataclass
class Counters:
    """One set of counters; the same shape for the total and for each endpoint."""

    requests: int = 0
    reads: int = 0
    writes_applied: int = 0
    status: Counter[int] = field(default_factory=Counter)
    rate_limited: int = 0
    unavailable: int = 0
    lost_answer: int = 0
    altered: int = 0
    items: int = 0  # entries that listing pages returned (users, members, ...)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "reads": self.reads,
            "items": self.items,
            "writes_applied": self.writes_applied,
            "status": {str(code): n for code, n in sorted(self.status.items())},
            "rate_limited": self.rate_limited,
            "faults": {"unavailable": self.unavailable, "lost_answer": self.lost_answer,
                       "altered": self.altered},
        }


class Stats:
    """Counts for ``/_emulator/stats``: a total plus one ``Counters`` per ``METHOD /route``."""

    def __init__(self) -> None:
        self.total = Counters()
        self.by_endpoint: dict[str, Counters] = {}
        # requests per client port: every request outside CONTROL_PREFIX, however answered
        self.peers: Counter[int] = Counter()

    def _both(self, endpoint: str) -> tuple[Counters, Counters]:
        per = self.by_endpoint.get(endpoint)
        if per is None:
            per = self.by_endpoint[endpoint] = Counters()
        return self.total, per

    def record(
        self,
        endpoint: str,
        *,
        status: int,
        is_write: bool,
        applied: bool,
        rate_limited: bool = False,
        unavailable: bool = False,
        lost_answer: bool = False,
        altered: bool = False,
        items: int = 0,
    ) -> None:
        for c in self._both(endpoint):
            c.requests += 1
            c.items += items
            c.status[status] += 1
            if not is_write:
                c.reads += 1
            if applied:
                c.writes_applied += 1
            c.rate_limited += rate_limited
            c.unavailable += unavailable
            c.lost_answer += lost_answer
            c.altered += altered

    def record_peer(self, request: web.Request) -> None:
        """Count a request against the client port of the connection it came on."""
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        if isinstance(peer, tuple) and len(peer) >= 2 and isinstance(peer[1], int):
            self.peers[peer[1]] += 1

    def reset(self) -> None:
        self.total = Counters()
        self.by_endpoint = {}
        self.peers = Counter()

    def to_json(self) -> dict[str, Any]:
        out = self.total.to_json()
        out["by_endpoint"] = {k: v.to_json() for k, v in sorted(self.by_endpoint.items())}
        out["peers"] = {str(port): n for port, n in sorted(self.peers.items())}
        return out


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> web.Response:
    """A JSON answer, encoded with orjson (the emulators must not be the benchmark's bottleneck)."""
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type=content_type
    )


async def read_json(request: web.Request) -> Any:
    """The request's JSON body, or ``ValueError`` when it is missing or malformed."""
    raw = await request.read()
    if not raw:
        raise ValueError("empty body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(str(exc)) from exc


def endpoint_of(request: web.Request) -> str:
    """``METHOD /route/{template}``: the key stats are grouped by."""
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    path = resource.canonical if resource is not None else request.path
    return f"{request.method} {path}"


def origin_of(request: web.Request) -> str:
    """Scheme and host the client used: links in answers are built from the ``Host`` header."""
    return f"{request.scheme}://{request.host}"


class FaultInjector:
    """Decides, per request, whether to add a fault; seeded so runs can be repeated."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._random = random.Random(config.seed)

    def unavailable(self) -> bool:
        return self.config.fail_rate > 0 and self._random.random() < self.config.fail_rate

    def lose_answer(self) -> bool:
        return (
            self.config.ambiguous_rate > 0 and self._random.random() < self.config.ambiguous_rate
        )


def unavailable_response(retry_after: int | None = None) -> web.Response:
    """What a real server or its proxy sends under load: 503, no JSON, nothing done.

    No ``Retry-After`` by default: the 503s a client meets in front of Jira or Confluence
    mostly come from a load balancer or reverse proxy with no healthy node for this request
    (HAProxy's and nginx's default 503 pages carry none), and one of them concerns that
    request, not the server. An application that knows how long it will be unavailable (a
    maintenance window) may say so: ``retry_after`` (``--fail-retry-after``) adds the header.
    """
    headers = None if retry_after is None else {"Retry-After": str(retry_after)}
    return web.Response(status=503, text="Service Unavailable", headers=headers)


def lost_answer_response() -> web.Response:
    """A gateway timeout after the write was applied: the client cannot know it succeeded."""
    return web.Response(status=504, text="Gateway Timeout")


MAINTENANCE_PAGE = (
    "<!DOCTYPE html><html><head><title>Down for maintenance</title></head><body>"
    "<h1>We'll be back soon</h1><p>The service is undergoing scheduled maintenance.</p>"
    "</body></html>"
)
ALTERATION_MODES = ("html", "truncated", "wrong-type", "empty", "end-listing", "no-link",
                    "stall", "reset")
STALL_MAX_S = 30.0  # a stalled answer gives up waiting for the client to leave after this


@dataclass
class Alteration:
    """Break the 200 answers of one endpoint: ``mode`` (see ``ALTERATION_MODES``), for answers
    to ``endpoint`` (``METHOD /route/{template}``, as in the stats) and, when given, only to
    requests for exactly ``path``; the first ``skip`` matching answers pass untouched, then
    ``times`` are altered (None: every one until cleared)."""

    endpoint: str
    mode: str
    path: str | None = None
    skip: int = 0
    times: int | None = 1
    stall_s: float = STALL_MAX_S  # "stall": how long at most the rest of the answer is held

    def take(self, endpoint: str, path: str) -> bool:
        """Whether this answer is one to alter (and count it)."""
        if endpoint != self.endpoint or (self.path is not None and path != self.path):
            return False
        if self.skip > 0:
            self.skip -= 1
            return False
        if self.times is None:
            return True
        if self.times <= 0:
            return False
        self.times -= 1
        return True


class Alterations:
    """The answers to break, set through ``POST /_emulator/answers`` and cleared with
    ``DELETE /_emulator/answers``. A real server (or its proxy) sometimes answers 200 with a
    maintenance page, cuts a body short, or ends a listing early without an error: the engine
    must never take such an answer for data, nor such a listing for complete."""

    def __init__(self) -> None:
        self.pending: list[Alteration] = []

    def apply(self, request: web.Request, endpoint: str,
              response: web.StreamResponse) -> web.StreamResponse | None:
        """The altered answer, or None when this one is left alone."""
        if response.status != 200 or not isinstance(response, web.Response):
            return None
        for alteration in self.pending:
            if alteration.take(endpoint, request.path):
                if alteration.mode in ("stall", "reset"):
                    return CutAnswer(response, alteration.mode, alteration.stall_s)
                return _altered(response, alteration.mode)
        return None

    async def handle_set(self, request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
            alteration = Alteration(
                endpoint=str(body["endpoint"]), mode=str(body["mode"]), path=body.get("path"),
                skip=int(body.get("skip", 0)),
                times=None if body.get("times", 1) is None else int(body.get("times", 1)),
                stall_s=float(body.get("stall_s", STALL_MAX_S)))
        except (ValueError, KeyError, TypeError) as exc:
            raise web.HTTPBadRequest(text=f"expected {{endpoint, mode, path?, skip?, times?, "
                                          f"stall_s?}}: "
                                          f"{exc}") from exc
        if alteration.mode not in ALTERATION_MODES:
            raise web.HTTPBadRequest(text=f"mode must be one of {', '.join(ALTERATION_MODES)}")
        self.pending.append(alteration)
        return json_response({"pending": len(self.pending)})

    async def handle_clear(self, request: web.Request) -> web.StreamResponse:
        self.pending = []
        return json_response({"pending": 0})


def _altered(response: web.Response, mode: str) -> web.Response:
    """A copy of a 200 answer, broken the way ``mode`` says (status and headers kept)."""
    headers = {k: v for k, v in response.headers.items()
               if k.lower() not in ("content-length", "content-type", "link")}
    links = list(response.headers.getall("Link", []))
    raw = bytes(response.body) if isinstance(response.body, (bytes, bytearray)) else b""
    content_type = response.content_type
    if mode == "html":
        raw, content_type = MAINTENANCE_PAGE.encode(), "text/html"
    elif mode == "truncated":
        raw = raw[: len(raw) // 2]
    elif mode == "empty":
        raw = b""
    elif mode == "wrong-type":
        raw = b"{}" if raw.lstrip().startswith(b"[") else b"[]"
    elif mode == "end-listing":
        raw, links = _ended_listing(raw), [v for v in links if not _is_next_link(v)]
    elif mode == "no-link":
        links = []
    altered = web.Response(status=response.status, body=raw, headers=headers,
                           content_type=content_type)
    for link in links:
        altered.headers.add("Link", link)
    return altered


class CutAnswer(web.StreamResponse):
    """A 200 answer that never arrives whole: its headers (with the whole body's
    ``Content-Length``) go out, then ``"stall"`` sends the body's first byte and holds the rest
    until the client gives up (or ``stall_s`` passes), while ``"reset"`` sends half the body
    and resets the connection (TCP RST), as a crashing server or a proxy killing it does."""

    def __init__(self, answer: web.Response, mode: str, stall_s: float) -> None:
        super().__init__(status=answer.status, headers={
            k: v for k, v in answer.headers.items() if k.lower() != "content-length"})
        self.raw = bytes(answer.body) if isinstance(answer.body, (bytes, bytearray)) else b""
        self.content_length = len(self.raw)
        self.mode = mode
        self.stall_s = stall_s

    async def deliver(self, request: web.Request) -> None:
        """Send what this answer sends, then stall or reset (never raises)."""
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            await self.prepare(request)
            if self.mode == "stall":
                await self.write(self.raw[:1])
                deadline = time.monotonic() + self.stall_s
                while time.monotonic() < deadline:
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break
                    await asyncio.sleep(0.02)
            else:
                await self.write(self.raw[: len(self.raw) // 2])
            _reset(request)

    async def write_eof(self, data: bytes = b"") -> None:
        """The rest of the body is never sent."""


def _reset(request: web.Request) -> None:
    """Close the connection with a TCP RST (linger 0), not a clean FIN."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _is_next_link(value: str) -> bool:
    return 'rel="next"' in value.replace(" ", "")


def _ended_listing(raw: bytes) -> bytes:
    """The same page, said to be the last: no cursor, no next link, ``isLast`` true."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    if isinstance(body, dict):
        if "isLast" in body:
            body["isLast"] = True
        for key in ("nextCursor", "nextPage"):
            body.pop(key, None)
        links = body.get("_links")
        if isinstance(links, dict):
            links.pop("next", None)
    return orjson.dumps(body)


def build_app(
    *,
    stats: Stats,
    faults: FaultConfig,
    routes: Callable[[web.Application], None],
    gate: Gate | None = None,
    finish: Finisher | None = None,
    control_routes: Callable[[web.Application], None] | None = None,
    outer_middlewares: list[Any] | None = None,
) -> web.Application:
    """An aiohttp application with the shared middleware around an emulator's routes.

    ``gate`` runs before the handler (auth, rate limits) and may answer instead of it; an
    answer with status 429 counts as rate limited. ``finish`` decorates every answer that
    reaches the client (Okta puts its rate-limit headers on all of them).
    ``outer_middlewares`` run outside the shared one, around latency included (Okta's
    concurrency limit counts requests in flight for their whole life).
    """
    injector = FaultInjector(faults)
    alterations = Alterations()

    @web.middleware
    async def peers(request: web.Request, handler: Handler) -> web.StreamResponse:
        # outermost, so a request any middleware refuses (Okta's concurrency limit) counts too
        if not request.path.startswith(CONTROL_PREFIX):
            stats.record_peer(request)
        return await handler(request)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        if faults.latency_ms > 0:
            await asyncio.sleep(faults.latency_ms / 1000)
        endpoint = endpoint_of(request)
        is_write = request.method in WRITE_METHODS
        response = await _answer(request, handler, gate, injector, is_write)
        altered = alterations.apply(request, endpoint, response)
        response = altered or response
        applied = bool(request.get(APPLIED_KEY) or request.get("applied")) and is_write
        lost = bool(request.get(LOST_ANSWER_KEY) or request.get("lost_answer"))
        if finish is not None:
            finish(request, response)
        if faults.clock_skew_s:
            _skew_clocks(response, faults)
        stats.record(
            endpoint,
            status=response.status,
            is_write=is_write,
            applied=applied,
            rate_limited=response.status == 429,
            unavailable=bool(request.get(UNAVAILABLE_KEY) or request.get("unavailable")),
            lost_answer=lost,
            altered=altered is not None,
            items=int(response.get(ITEMS_KEY, 0)),
        )
        if isinstance(response, CutAnswer):
            await response.deliver(request)
        return response

    app = web.Application(
        middlewares=[peers, *(outer_middlewares or []), middleware], client_max_size=4 * 1024 * 1024
    )
    routes(app)
    app.router.add_get("/_emulator/stats", _stats_handler(stats))
    app.router.add_post("/_emulator/stats/reset", _stats_reset_handler(stats))
    app.router.add_post("/_emulator/answers", alterations.handle_set)
    app.router.add_delete("/_emulator/answers", alterations.handle_clear)
    app.router.add_post("/_emulator/clock", _clock_handler(faults))
    if control_routes is not None:
        control_routes(app)
    return app


async def _answer(
    request: web.Request, handler: Handler, gate: Gate | None,
    injector: FaultInjector, is_write: bool,
) -> web.StreamResponse:
    """Gate, then the 503 fault, then the handler, then the lost-answer fault."""
    try:
        if gate is not None:
            refused = await gate(request)
            if refused is not None:
                return refused
        if injector.unavailable():
            request[UNAVAILABLE_KEY] = True
            return unavailable_response(injector.config.fail_retry_after)
        response = await handler(request)
        if response.status < 300 and is_write:
            request[APPLIED_KEY] = True
            if injector.lose_answer():
                request[LOST_ANSWER_KEY] = True
                return lost_answer_response()
        return response
    except web.HTTPException as exc:
        return exc
    except Exception:  # a bug in an emulator (or a test's injected one) is a counted 500
        logging.getLogger("oktasync_emulators").exception("error handling %s %s",
                                                          request.method, request.path)
        return web.Response(status=500, text="Internal Server Error")


def _skew_clocks(response: web.StreamResponse, faults: FaultConfig) -> None:
    """The answer as a server whose clock is ``clock_skew_s`` off would send it."""
    response.headers["Date"] = formatdate(time.time() + faults.clock_skew_s, usegmt=True)
    reset = response.headers.get("X-Rate-Limit-Reset")
    if reset is not None and reset.isdigit() and not faults.skew_date_only:
        response.headers["X-Rate-Limit-Reset"] = str(int(reset) + round(faults.clock_skew_s))


def _clock_handler(faults: FaultConfig) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
            skew, date_only = float(body["skew_s"]), bool(body.get("date_only", False))
        except (ValueError, KeyError, TypeError) as exc:
            raise web.HTTPBadRequest(text=f"expected {{skew_s, date_only?}}: {exc}") from exc
        faults.clock_skew_s, faults.skew_date_only = skew, date_only
        return json_response({"skew_s": skew, "date_only": date_only})

    return handler


def _stats_handler(stats: Stats) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return json_response(stats.to_json())

    return handler


def _stats_reset_handler(stats: Stats) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        stats.reset()
        return json_response({"reset": True})

    return handler
