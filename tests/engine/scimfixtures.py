"""SCIM 2.0 on loopback for the Atlassian Cloud target (issue 15): scim2-server, a
standards-conforming SCIM server by others, in a process of its own (``scim_server``), and a
small fault-injecting proxy of ours in front of it (``scim_faults``) for what scim2-server
cannot produce: Atlassian's refusals and its failures.

Typical use::

    async with scim_server(tmp_path) as upstream, scim_faults(
        upstream, token="k", verified_domains=("example.com",), rate_429=0.1, seed=7,
    ) as proxy:
        ...  # the engine's target at proxy.url with "Authorization: Bearer k"
        assert proxy.stats.faults["lost_answer"] > 0
        state = await scim_state(upstream)  # the oracle: what was really applied

What the proxy does that scim2-server does not, in this order, and where each comes from:

1. 401 to a request without ``Authorization: Bearer <token>`` (Atlassian's reference: the
   directory API key as a bearer token). The body is a SCIM error; # guess: its wording.
2. Injected faults, drawn per request from ``random.Random(seed)``: 429 with or without
   ``Retry-After: 1`` (``retry_after``), 503, and lost answers (forwarded, applied upstream,
   then the client's connection is closed without an answer). # guess: the 429 body, a SCIM
   error; Atlassian documents 429 but not its body or numbers.
3. Atlassian's refusals:
   - an e-mail on a domain outside ``verified_domains`` on POST /Users, or in a PUT/PATCH of a
     user's e-mails: 400 with a SCIM error ``detail``. Atlassian's API reference says "A user
     account can only be created if it has an email address on a verified domain"; # guess:
     the status and body, not documented. Note: Atlassian's community announcement
     "Easily provision users from outside your verified domain" says users from other domains
     are synced as external users since November 2020, so the refusal may be history;
     ``verified_domains=None`` (the default) turns it off.
   - POST /Groups whose displayName is in ``taken_groups`` (case-insensitively: a group of
     the organisation the directory does not own): 409, scimType ``uniqueness``, detail
     "Resource [GROUP]: with displayName already exists." — the detail is the one Okta's
     support article "Okta group push to existing groups in Atlassian" quotes for that case;
     # guess: the status and scimType, by analogy with the user's 409 below.
   - POST /Groups whose displayName the directory already has (scim2-server lets two groups
     share a name): the same 409 — the API reference says creating an existing group fails
     with 409.
   - POST /Users that scim2-server refuses with 409 (userName taken): Atlassian's body,
     ``{"schemas": [Error], "status": "409", "scimType": "uniqueness", "detail": "Resource
     [USER]: with email[<e-mail>] already exists."}``, as Atlassian's knowledge-base
     articles on provisioning 409s quote it.
   - ``count`` above ``max_count`` (or none) on a listing becomes ``max_count``: Atlassian's
     KB "How to fetch all users via user provisioning SCIM API" says a listing gives at most
     100 users and pages with startIndex, with ``count=200`` giving users 101 to 200 — so a
     larger count is capped, not refused.
4. Everything else is relayed: statuses, bodies, headers, with scim2-server's URL (in
   Location, Content-Location and ``meta.location``) rewritten to the proxy's.

Counters: ``proxy.stats`` (a ``FaultStats``) and ``GET /_faults/stats`` on the proxy.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from tests.engine.netfixtures import _stop

SCIM_ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SCIM_JSON = "application/scim+json"
UPSTREAM_SCRIPT = Path(__file__).with_name("scim_upstream.py")
PAGE = 100  # what scim_state asks for per page: Atlassian's largest
RetryAfter = bool | Literal["mixed"]

# The request headers not relayed: hop-by-hop ones, what aiohttp sets itself, and the bearer
# token (scim2-server needs none: the proxy is the one that checks it).
DROPPED_REQUEST_HEADERS = frozenset({
    "host", "connection", "keep-alive", "transfer-encoding", "content-length", "authorization",
    "accept-encoding",
})
DROPPED_ANSWER_HEADERS = frozenset({
    "connection", "keep-alive", "transfer-encoding", "content-length", "date", "server",
    "content-encoding",
})
REWRITTEN_ANSWER_HEADERS = ("Location", "Content-Location")


# ---------------------------------------------------------------------------------------------
# scim2-server


@asynccontextmanager
async def scim_server(directory: Path, *, start_timeout_s: float = 20.0) -> AsyncIterator[str]:
    """scim2-server on 127.0.0.1 and an ephemeral port, in a process (and session) of its own,
    yielding its base URL (``http://127.0.0.1:<port>/v2``: ``/Users`` and ``/Groups`` are under
    it). Its output goes to a log file in ``directory``, shown if it fails to start; on exit it
    is stopped (SIGINT, then SIGKILL) and reaped, so no process outlives the test."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.monotonic_ns()}"
    port_file = directory / f"scim-{stamp}.port"
    log_file = directory / f"scim-{stamp}.log"
    with open(log_file, "wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(UPSTREAM_SCRIPT), "--port-file", str(port_file),
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, cwd=str(directory),
            start_new_session=True)
    try:
        port = await _port_of(process, port_file, log_file, start_timeout_s)
        yield f"http://127.0.0.1:{port}/v2"
    finally:
        await _stop(process)


async def _port_of(process: asyncio.subprocess.Process, port_file: Path, log_file: Path,
                   timeout_s: float) -> int:
    """The port scim2-server listens on, once it has written it (atomically, by a rename)."""
    deadline = time.monotonic() + timeout_s
    while not port_file.exists():
        if process.returncode is not None:
            raise RuntimeError(f"scim2-server exited {process.returncode}:\n"
                               f"{log_file.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"scim2-server not listening after {timeout_s} s:\n"
                               f"{log_file.read_text(errors='replace')}")
        await asyncio.sleep(0.05)
    return int(port_file.read_text().split()[0])


# ---------------------------------------------------------------------------------------------
# The oracle


async def scim_state(url: str) -> dict[str, Any]:
    """What scim2-server holds, read from it directly (never through the proxy: no faults),
    every page: ``{"users": {userName: user}, "groups": {displayName: group}}`` where a user
    is ``{id, userName, externalId, active, emails, displayName}`` (emails: their values) and a
    group ``{id, displayName, externalId, members}`` with its members' userNames, sorted (an
    id that is no user shows as ``"?<id>"``). Two groups with one name fail the read: the
    proxy should have refused the second one."""
    async with aiohttp.ClientSession() as session:
        users = await _list_all(session, f"{url}/Users")
        groups = await _list_all(session, f"{url}/Groups")
    names = {u["id"]: u["userName"] for u in users}
    state_users = {u["userName"]: _user_view(u) for u in users}
    state_groups: dict[str, dict[str, Any]] = {}
    for g in groups:
        name = g.get("displayName", "")
        assert name not in state_groups, f"two groups named {name!r} in scim2-server"
        state_groups[name] = {
            "id": g["id"], "displayName": name, "externalId": g.get("externalId"),
            "members": sorted(names.get(m["value"], f"?{m['value']}")
                              for m in g.get("members", [])),
        }
    return {"users": state_users, "groups": state_groups}


def _user_view(user: dict[str, Any]) -> dict[str, Any]:
    """The attributes of a user the engine writes and the tests check."""
    return {
        "id": user["id"], "userName": user["userName"], "externalId": user.get("externalId"),
        "active": user.get("active"), "displayName": user.get("displayName"),
        "emails": [e.get("value") for e in user.get("emails", [])],
    }


async def _list_all(session: aiohttp.ClientSession, endpoint: str) -> list[dict[str, Any]]:
    """Every resource of a listing, by startIndex/count pages until totalResults."""
    found: list[dict[str, Any]] = []
    while True:
        params = {"startIndex": str(len(found) + 1), "count": str(PAGE)}
        async with session.get(endpoint, params=params) as answer:
            answer.raise_for_status()
            page = await answer.json(content_type=None)
        resources = page.get("Resources", [])
        found.extend(resources)
        if not resources or len(found) >= page["totalResults"]:
            return found


# ---------------------------------------------------------------------------------------------
# The fault proxy


@dataclass
class FaultStats:
    """What the proxy did. ``faults`` kinds: ``rate_limited`` (429 with Retry-After),
    ``rate_limited_bare`` (429 without), ``unavailable`` (503), ``lost_answer``. ``refusals``
    kinds: ``unauthorized``, ``unverified_domain``, ``taken_group``, ``group_exists``,
    ``user_exists``. ``lost`` names each lost answer's request (``"POST /v2/Users"``), so a
    test can check its write was applied all the same."""

    requests: int = 0  # every request to the SCIM endpoints, /_faults/stats excluded
    writes_forwarded: int = 0  # non-GET requests relayed to scim2-server
    faults: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    counts_capped: int = 0  # listings whose count was missing or above max_count
    lost: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The counters as ``GET /_faults/stats`` answers them."""
        return {
            "requests": self.requests, "writes_forwarded": self.writes_forwarded,
            "faults": dict(self.faults), "refusals": dict(self.refusals),
            "counts_capped": self.counts_capped, "lost": list(self.lost),
        }


@dataclass(frozen=True)
class FaultPlan:
    """The proxy's settings (see ``scim_faults``)."""

    token: str
    verified_domains: frozenset[str] | None
    taken_groups: frozenset[str]
    rate_429: float
    retry_after: RetryAfter
    rate_lost: float
    rate_5xx: float
    max_count: int


@dataclass
class RunningFaultProxy:
    """A running proxy: ``url`` is its SCIM base URL (the upstream's path on the proxy's
    origin), ``stats`` its live counters."""

    url: str
    upstream: str
    stats: FaultStats

    @property
    def stats_url(self) -> str:
        """``GET`` it for the counters: ``/_faults/stats`` on the proxy's origin, outside the
        SCIM base path, without authentication."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}/_faults/stats"


@asynccontextmanager
async def scim_faults(
    upstream_url: str,
    *,
    token: str,
    verified_domains: Iterable[str] | None = None,
    taken_groups: Iterable[str] = (),
    rate_429: float = 0.0,
    retry_after: RetryAfter = True,
    rate_lost: float = 0.0,
    rate_5xx: float = 0.0,
    max_count: int = 100,
    seed: int = 0,
) -> AsyncIterator[RunningFaultProxy]:
    """An aiohttp server on 127.0.0.1 and an ephemeral port in front of scim2-server at
    ``upstream_url``, behaving as Atlassian does where scim2-server does not (see the module's
    docstring). ``verified_domains=None`` accepts every e-mail domain; rates are shares of
    requests (their sum at most 1), drawn from ``random.Random(seed)`` in arrival order;
    ``retry_after="mixed"`` gives each 429 ``Retry-After: 1`` or nothing, at random."""
    if rate_429 + rate_lost + rate_5xx > 1.0:
        raise ValueError("the fault rates add up to more than 1")
    plan = FaultPlan(
        token=token,
        verified_domains=None if verified_domains is None
        else frozenset(d.lower() for d in verified_domains),
        taken_groups=frozenset(g.casefold() for g in taken_groups),
        rate_429=rate_429, retry_after=retry_after, rate_lost=rate_lost, rate_5xx=rate_5xx,
        max_count=max_count,
    )
    upstream = upstream_url.rstrip("/")
    stats = FaultStats()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        proxy = _FaultProxy(plan, upstream, stats, session, random.Random(seed))
        app = web.Application()
        app.router.add_get("/_faults/stats", proxy.stats_handler)
        app.router.add_route("*", "/{tail:.*}", proxy.handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            proxy.own = f"http://127.0.0.1:{port}{urlsplit(upstream).path}"
            yield RunningFaultProxy(url=proxy.own, upstream=upstream, stats=stats)
        finally:
            await runner.cleanup()


def scim_error(status: int, detail: str, scim_type: str | None = None,
               headers: dict[str, str] | None = None) -> web.Response:
    """A SCIM error answer (RFC 7644 §3.12), ``status`` as a string as Atlassian writes it."""
    body: dict[str, Any] = {"schemas": [SCIM_ERROR], "status": str(status), "detail": detail}
    if scim_type is not None:
        body["scimType"] = scim_type
    return web.Response(status=status, text=json.dumps(body), content_type=SCIM_JSON,
                        headers=headers)


class LostAnswer(web.StreamResponse):
    """No answer at all: the connection is closed (FIN) before a byte of it is written, after
    the request was applied upstream. The client cannot know whether its write happened."""

    async def prepare(self, request: web.BaseRequest) -> None:  # type: ignore[override]
        """Close instead of sending the status line and headers."""
        if request.transport is not None:
            request.transport.close()
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        """Nothing is written."""


class _FaultProxy:
    """The request handling of ``scim_faults``, one instance per proxy."""

    def __init__(self, plan: FaultPlan, upstream: str, stats: FaultStats,
                 session: aiohttp.ClientSession, rng: random.Random) -> None:
        self.plan = plan
        self.upstream = upstream
        self.upstream_origin = "{0.scheme}://{0.netloc}".format(urlsplit(upstream))
        self.stats = stats
        self.session = session
        self.rng = rng
        self.own = ""  # the proxy's base URL, known once it listens

    async def stats_handler(self, request: web.Request) -> web.Response:
        """``GET /_faults/stats``: the counters, without authentication."""
        return web.json_response(self.stats.to_json())

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Authenticate, maybe inject a fault, apply Atlassian's rules, relay."""
        self.stats.requests += 1
        if not self._authorized(request):
            self.stats.refusals["unauthorized"] += 1
            # guess: Atlassian's 401 body; a SCIM error is what a SCIM service answers.
            return scim_error(401, "Unauthorized: missing or invalid bearer token",
                              headers={"WWW-Authenticate": 'Bearer realm="scim"'})
        fault = self._draw_fault()
        if fault in ("rate_limited", "rate_limited_bare", "unavailable"):
            self.stats.faults[fault] += 1
            return self._fault_answer(fault)
        body = await request.read()
        refusal = await self._refusal(request, body)
        if refusal is not None:
            return refusal
        answer = await self._forward(request, body)
        if fault == "lost_answer":
            self.stats.faults["lost_answer"] += 1
            self.stats.lost.append(f"{request.method} {request.path}")
            return LostAnswer()
        return answer

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and value.strip() == self.plan.token

    def _draw_fault(self) -> str | None:
        """One draw per authenticated request, so a seed gives the same faults in the same
        order of requests."""
        plan, draw = self.plan, self.rng.random()
        if draw < plan.rate_429:
            with_header = (plan.retry_after if plan.retry_after != "mixed"
                           else self.rng.random() < 0.5)
            return "rate_limited" if with_header else "rate_limited_bare"
        if draw < plan.rate_429 + plan.rate_5xx:
            return "unavailable"
        if draw < plan.rate_429 + plan.rate_5xx + plan.rate_lost:
            return "lost_answer"
        return None

    @staticmethod
    def _fault_answer(fault: str) -> web.Response:
        if fault == "unavailable":
            return scim_error(503, "Service Unavailable")
        headers = {"Retry-After": "1"} if fault == "rate_limited" else None
        # guess: the 429 body; Atlassian documents the status only.
        return scim_error(429, "Too many requests", headers=headers)

    # -- Atlassian's rules ------------------------------------------------------------------

    async def _refusal(self, request: web.Request, body: bytes) -> web.Response | None:
        """Atlassian's refusal of this request, if any (None: relay it)."""
        kind = _resource_kind(request.path)
        if kind == "Users" and request.method in ("POST", "PUT", "PATCH"):
            return self._domain_refusal(request.method, body)
        if kind == "Groups" and request.method == "POST":
            return await self._group_name_refusal(body)
        return None

    def _domain_refusal(self, method: str, body: bytes) -> web.Response | None:
        verified = self.plan.verified_domains
        if verified is None:
            return None
        for email in _emails_written(method, _json_or_none(body)):
            domain = email.rpartition("@")[2].lower()
            if domain not in verified:
                self.stats.refusals["unverified_domain"] += 1
                # guess: status and detail; Atlassian only says such a user cannot be created.
                return scim_error(400, f"Email address [{email}] is not on a verified domain "
                                       "of the organization", "invalidValue")
        return None

    async def _group_name_refusal(self, body: bytes) -> web.Response | None:
        payload = _json_or_none(body)
        name = payload.get("displayName") if isinstance(payload, dict) else None
        if not isinstance(name, str):
            return None
        if name.casefold() in self.plan.taken_groups:
            kind = "taken_group"
        elif await self._group_exists(name):
            kind = "group_exists"
        else:
            return None
        self.stats.refusals[kind] += 1
        return scim_error(409, "Resource [GROUP]: with displayName already exists.", "uniqueness")

    async def _group_exists(self, name: str) -> bool:
        """Whether scim2-server has a group of this name (``eq`` on displayName ignores case,
        RFC 7643: displayName is not caseExact)."""
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        params = {"filter": f'displayName eq "{quoted}"', "count": "1"}
        async with self.session.get(f"{self.upstream}/Groups", params=params) as answer:
            page = await answer.json(content_type=None)
        return bool(page.get("totalResults"))

    # -- relaying ---------------------------------------------------------------------------

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        """Relay to scim2-server and its answer back, with its URLs made the proxy's."""
        if request.method != "GET":
            self.stats.writes_forwarded += 1
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in DROPPED_REQUEST_HEADERS}
        url = f"{self.upstream_origin}{request.path}"
        async with self.session.request(request.method, url, params=self._query(request),
                                        headers=headers, data=body or None) as answer:
            raw = await answer.read()
            status, answer_headers = answer.status, answer.headers.copy()
        if status == 409 and request.method == "POST" and _resource_kind(request.path) == "Users":
            return self._user_exists(body)
        out = web.Response(status=status, body=raw.replace(self.upstream.encode(),
                                                           self.own.encode()))
        for name, value in answer_headers.items():
            if name.lower() not in DROPPED_ANSWER_HEADERS:
                out.headers.add(name, value)
        for name in REWRITTEN_ANSWER_HEADERS:
            if name in out.headers:
                out.headers[name] = out.headers[name].replace(self.upstream, self.own)
        return out

    def _query(self, request: web.Request) -> dict[str, str]:
        """The query string, with a listing's count capped at ``max_count``."""
        query = dict(request.query)
        listing = request.method == "GET" and request.path.rstrip("/").endswith(
            ("/Users", "/Groups"))
        if listing:
            count = query.get("count")
            if count is None or not count.isdigit() or int(count) > self.plan.max_count:
                self.stats.counts_capped += 1
                query["count"] = str(self.plan.max_count)
        return query

    def _user_exists(self, body: bytes) -> web.Response:
        """scim2-server's 409 on a user, in Atlassian's words."""
        self.stats.refusals["user_exists"] += 1
        payload = _json_or_none(body)
        emails = _emails_written("POST", payload)
        email = emails[0] if emails else (payload or {}).get("userName", "")
        return scim_error(409, f"Resource [USER]: with email[{email}] already exists.",
                          "uniqueness")


def _resource_kind(path: str) -> str | None:
    """``"Users"`` or ``"Groups"`` for a path under either endpoint, else None."""
    parts = [p for p in path.split("/") if p]
    for kind in ("Users", "Groups"):
        if kind in parts:
            return kind
    return None


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _emails_written(method: str, payload: Any) -> list[str]:
    """The e-mail addresses a user write sets: a POST's or PUT's ``emails`` (a POST without
    any: its userName if it is an address, # guess: Atlassian's userName is the e-mail), and
    the values of a PATCH's add/replace operations on ``emails``."""
    if not isinstance(payload, dict):
        return []
    if method in ("POST", "PUT"):
        found = _email_values(payload.get("emails"))
        user_name = payload.get("userName")
        if method == "POST" and not found and isinstance(user_name, str) and "@" in user_name:
            found = [user_name]
        return found
    found = []
    for operation in payload.get("Operations") or []:
        if not isinstance(operation, dict) or str(operation.get("op", "")).lower() == "remove":
            continue
        path, value = operation.get("path"), operation.get("value")
        if not path and isinstance(value, dict):
            found += _email_values(value.get("emails"))
        elif isinstance(path, str) and path.lower().startswith("emails"):
            found += _email_values(value)
    return found


def _email_values(value: Any) -> list[str]:
    """Addresses in an ``emails`` value: a list of {value}, one {value}, or a bare string."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return _email_values(value.get("value"))
    if isinstance(value, list):
        return [email for item in value for email in _email_values(item)]
    return []
