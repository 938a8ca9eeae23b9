"""One HTTP loop for every server the engine talks to: limit, send, classify, back off.

Each server gets one ``HttpClient`` over one keep-alive ``aiohttp.ClientSession``. The loop is
iterative (never recursive): take a slot from the server's limiter, send, let the limiter learn
from the answer, and act on ``errors.consequence_of_status``. Retriable statuses and transport
errors are retried until the policy gives up; a 401 raises ``CredentialsError``. What a request
that finally failed raises is decided by the context its caller declares (``errors.FAILURE_OF``),
never by the code that catches it.

A request also has a deadline, ``RetryPolicy.deadline_s``: ``max_attempts × timeout_s`` of
trying in total, backoff and ``Retry-After`` waits included (waiting for the server's rate
limits is not counted). An attempt never waits longer than what is left of it, and a request
whose next attempt could not start before it gives up.
"""

from __future__ import annotations

import ssl
import time
from collections import Counter
from collections.abc import Container, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import anyio
import orjson
from multidict import CIMultiDictProxy
from yarl import URL

from oktasync.errors import (
    PROXY_CREDENTIALS,
    Consequence,
    Context,
    CredentialsError,
    RequestFailed,
    RetryPolicy,
    answer_failure,
    cause_of,
    consequence_of_exception,
    consequence_of_status,
    no_answer,
    no_retry_cures,
)
from oktasync.logs import REDACTOR
from oktasync.ratelimit import AdaptiveConcurrency, Limiter


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL
    # an earlier attempt of this request got no clear answer (a 5xx, a timeout, a dropped
    # connection) and may have been applied: "already exists" may then be our own doing
    after_unclear_attempt: bool = False
    parsed: Any = None  # the body as JSON, once ``send(expect=...)`` has checked it

    def json(self) -> Any:
        if self.parsed is not None:
            return self.parsed
        return orjson.loads(self.body) if self.body else None

    def malformed(self, expect: type[dict[str, Any]] | type[list[Any]]) -> str | None:
        """Why this successful answer is not the JSON ``expect`` says (an HTML maintenance
        page, a body cut short, the wrong type), or None when it is (and is kept parsed)."""
        if not self.body.strip():
            return "an empty body, not JSON"
        if self.body.lstrip()[:1] == b"<":
            return "an HTML page, not JSON"
        try:
            parsed = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return "a body that is not JSON (cut short?)"
        if not isinstance(parsed, expect):
            got = ("an object" if isinstance(parsed, dict) else "an array"
                   if isinstance(parsed, list) else type(parsed).__name__)
            want = "an object" if expect is dict else "an array"
            return f"a JSON value of the wrong type: {got} where {want} was expected"
        self.parsed = parsed
        return None

    def text(self) -> str:
        """The body as text for a message, every secret masked (a server or a proxy may echo
        a request's credentials back in an error page)."""
        return REDACTOR.redact(self.body.decode("utf-8", errors="replace"))


@dataclass
class RequestCounters:
    """What one client sent: the run report's reads/writes, retries and throttling."""

    reads: int = 0
    writes: int = 0
    retries: int = 0
    rate_limited: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    concurrency: AdaptiveConcurrency | None = None  # the server's, when it adapts

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "reads": self.reads, "writes": self.writes, "retries": self.retries,
            "rate_limited": self.rate_limited,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }
        if self.concurrency is not None:
            out["concurrency"] = self.concurrency.to_json()
        return out


@dataclass(frozen=True)
class Route:
    """What a session needs to reach one server (``network.route_of`` decides it)."""

    ssl: ssl.SSLContext | bool  # True: aiohttp's default (plain-http servers)
    proxy: str | None = None  # with its credentials, if any


def make_session(*, connections: int, timeout_s: float,
                 route: Route | None = None) -> aiohttp.ClientSession:
    """A keep-alive session sized to the concurrency it will carry, on ``route`` (its TLS
    trust and proxy; None: the system's trust store and no proxy)."""
    connector = aiohttp.TCPConnector(limit=max(1, connections), limit_per_host=0,
                                     keepalive_timeout=60, enable_cleanup_closed=True,
                                     ssl=True if route is None else route.ssl)
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(10.0, timeout_s))
    # No cookie jar: the APIs authenticate every request by header, and a jar costs a lookup
    # and an update on every request.
    return aiohttp.ClientSession(connector=connector, timeout=timeout,
                                 cookie_jar=aiohttp.DummyCookieJar(),
                                 json_serialize=lambda o: orjson.dumps(o).decode(),
                                 proxy=None if route is None else route.proxy,
                                 # the environment's proxy is decided once, in the route:
                                 # trust_env would read it (and ~/.netrc) on every request
                                 trust_env=False)


_Attempt = tuple[Answer | None, float | None, BaseException | None, float]


@dataclass
class WriteTrace:
    """The requests one write sent and the last status it got, for the audit trail: set by
    the writer around one write (``WRITE_TRACE``), counted here as each request goes out, so
    no target's code has to carry it."""

    attempts: int = 0
    status: int | None = None


WRITE_TRACE: ContextVar[WriteTrace | None] = ContextVar("oktasync_write_trace", default=None)


class Auth(Protocol):
    """Credentials that change while a run goes on (an OAuth access token, DPoP proofs):
    asked for each attempt's headers, told of each refusal that a new token may cure."""

    async def authorize(self, method: str, url: URL) -> Mapping[str, str]:
        """The headers that authenticate this attempt."""
        ...

    async def renew(self, answer: Answer, sent: Mapping[str, str]) -> bool:
        """Whether ``answer`` (a 401, a nonce demanded) is cured by new credentials: then the
        request is sent once more, that attempt not counted."""
        ...

    def forbidden(self, answer: Answer) -> str | None:
        """A 403 that says which permission the credentials lack, in words (the run stops
        with it), or None."""
        ...

    async def sign_in(self) -> None:
        """Obtain the credentials now (a refusal raises ``CredentialsError``)."""
        ...


class HttpClient:
    """Requests to one server, with its auth header, limiter and retry policy.

    ``name`` is the server as the config names it (``jira``), the first word of every
    message about it; the session's timeout is ``timeout_s``, one attempt's limit."""

    def __init__(
        self, session: aiohttp.ClientSession, *, name: str, base_url: str,
        headers: Mapping[str, str], limiter: Limiter, policy: RetryPolicy,
        auth: Auth | None = None,
    ) -> None:
        self.name = name
        self._auth = auth
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._headers = dict(headers)
        # a server whose JSON has its own media type (SCIM's) says so in ``headers``
        self._json_headers = {"Content-Type": "application/json", **self._headers}
        self._limiter = limiter
        self._policy = policy
        self.timeout_s = session.timeout.total
        self._deadline_s = self._policy.deadline_s(self.timeout_s)
        self.counters = RequestCounters(concurrency=limiter.concurrency)

    async def sign_in(self) -> None:
        """Obtain changing credentials now, so that their refusal stops a run before it
        writes anything; static ones (a header) have nothing to obtain."""
        if self._auth is not None:
            await self._auth.sign_in()

    @property
    def limiter(self) -> Limiter:
        return self._limiter

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def _target(self, path: str, params: Mapping[str, str] | None) -> URL:
        """The request URL, built once per request (not once per attempt): paths arrive
        percent-encoded segment by segment (and Okta's links as sent), so they are not
        re-quoted; yarl encodes query values (``&``, ``+``, non-ASCII) in C."""
        url = URL(self.url(path), encoded=True)
        return url.update_query(params) if params else url

    async def send(
        self, method: str, path: str, *, context: Context, bucket: str = "default",
        params: Mapping[str, str] | None = None, json: Any = None,
        expect: type[dict[str, Any]] | type[list[Any]] | None = None,
        accept: Container[int] = (), what: str | None = None,
    ) -> Answer:
        """Send until the answer is final, and return it — or raise what its failure means.

        ``context`` (what the request is for) decides that, through ``errors.FAILURE_OF``: a
        listing's failure stops the run, a lookup's or a write's fails its item. A write gets
        every final answer back (its target's answer table reads a 400 or 404); a listing or
        lookup gets a 200 or a status in ``accept`` (a 404 that means "absent"), any other
        answer is its failure, named by ``what`` (``users listing``) when given.
        ``expect``: the JSON a successful answer must hold; a 2xx whose body is not that (an
        HTML maintenance page, a cut body) is retried like a server error, and still wrong,
        fails the request.
        """
        url = self._target(path, params)
        data = orjson.dumps(json) if json is not None else None
        headers = self._headers if data is None else self._json_headers
        started, attempt, throttled, spent, unclear = time.monotonic(), 0, 0, 0.0, False
        renewed = False
        while True:
            attempt += 1
            sent = headers if self._auth is None else {
                **headers, **await self._auth.authorize(method, url)}
            answer, wait, error, took = await self._attempt(
                method, url, bucket, data, sent, self._deadline_s - spent)
            spent += took
            broken = None
            if answer is not None:
                answer.after_unclear_attempt = unclear
                if self._auth is not None and not renewed and await self._renewed(answer, sent):
                    renewed, attempt = True, attempt - 1  # once, and not counted
                    continue
                consequence = consequence_of_status(answer.status)
                if consequence is Consequence.RUN_STOPS or answer.status in (403, 407):
                    self._check_credentials(answer, method, url)
                broken = _broken(answer, expect) if answer.status < 300 else None
                if consequence is None and broken is None:
                    return self._final(context, method, url, answer, accept, what)
            elif error is not None:
                refused = no_retry_cures(self.name, self.base_url, error)
                if refused is not None:
                    raise refused  # a certificate, a proxy's refusal: a setting must change
                if consequence_of_exception(error) is Consequence.RUN_STOPS:
                    raise error  # not a transport failure: a bug, said as one
            paced = answer is not None and answer.status == 429
            throttled += paced
            unclear = unclear or (method != "GET" and _unclear(answer, error))
            counted = attempt - throttled  # a 429 is the server pacing us, not a failure
            delay = wait if wait is not None else self._policy.delay(
                counted, answer.status if answer is not None else None)
            out_of_time = not paced and spent + delay >= self._deadline_s
            if out_of_time or not self._policy.should_retry(counted,
                                                            time.monotonic() - started):
                raise self._failure(context, method, url, answer, error, counted, spent,
                                    out_of_time and counted < self._policy.max_attempts,
                                    broken, what)
            self.counters.retries += 1
            await anyio.sleep(delay)
            if not paced:
                spent += delay

    async def _renewed(self, answer: Answer, sent: Mapping[str, str]) -> bool:
        """Whether changing credentials were renewed for this refusal (a 401, a nonce asked
        for): then the request goes again."""
        return (self._auth is not None and answer.status in (400, 401)
                and await self._auth.renew(answer, sent))

    def _check_credentials(self, answer: Answer, method: str, url: URL) -> None:
        """Raise ``CredentialsError`` for an answer that refuses our credentials: a 401, a
        403 that names a missing permission (a scope), a proxy's 407."""
        forbidden = self._auth.forbidden(answer) if self._auth is not None else None
        if forbidden is not None:
            raise CredentialsError(f"{self.name}: {forbidden}")
        if answer.status == 407:  # a proxy in front of a plain-http server
            raise CredentialsError(f"{self.name}: the proxy refused us (HTTP 407, proxy "
                                   f"authentication): {PROXY_CREDENTIALS}")
        if answer.status == 401:
            raise CredentialsError(f"{self.name} rejected the credentials (HTTP 401) at "
                                   f"{method} {url.path}")

    def _final(self, context: Context, method: str, url: URL, answer: Answer,
               accept: Container[int], what: str | None) -> Answer:
        """A final answer goes back to its caller, unless its context makes it a failure: a
        read (a listing's page, a lookup) takes a 200 or what the caller accepts, nothing else
        (a proxy's 204 has no data to read); a write's every answer is its target's to read."""
        if context is Context.WRITE or answer.status == 200 or answer.status in accept:
            return answer
        raise answer_failure(context, self.name, method, url.path, answer.status,
                             answer.text(), what)

    async def _attempt(
        self, method: str, url: URL, bucket: str, data: bytes | None,
        headers: Mapping[str, str], left_s: float,
    ) -> _Attempt:
        """One try: the answer (or the transport error's outcome), the limiter's wait hint,
        and how long it took once it had its slot (at most ``left_s``)."""
        trace = None
        if method == "GET":
            self.counters.reads += 1
        else:
            self.counters.writes += 1
            trace = WRITE_TRACE.get()
            if trace is not None:
                trace.attempts += 1
                trace.status = None
        sent = 0.0
        try:
            async with self._limiter.slot(bucket) as epoch:
                sent = time.monotonic()
                async with self._session.request(
                    method, url, data=data, headers=headers, allow_redirects=False,
                    timeout=self._timeout(left_s),
                ) as response:
                    body = await response.read()
                    answer = Answer(response.status, response.headers, body, url)
        except Exception as exc:  # judged by the loop: transient ones are retried
            took = time.monotonic() - sent if sent else 0.0
            return None, None, exc, took
        took = time.monotonic() - sent
        if trace is not None:
            trace.status = answer.status
        self.counters.statuses[answer.status] += 1
        if answer.status == 429:
            self.counters.rate_limited += 1
        wait = self._limiter.observe(bucket, answer.status, answer.headers, epoch)
        return answer, wait, None, took

    def _timeout(self, left_s: float) -> aiohttp.ClientTimeout:
        """The session's timeout, or what is left of the request's deadline if that is less."""
        timeout = self._session.timeout
        if timeout.total is None or left_s >= timeout.total:
            return timeout
        left_s = max(0.001, left_s)
        return aiohttp.ClientTimeout(total=left_s, sock_connect=min(10.0, left_s))

    def _failure(self, context: Context, method: str, url: URL, answer: Answer | None,
                 error: BaseException | None, attempts: int, spent_s: float,
                 out_of_time: bool, broken: str | None, what: str | None) -> RequestFailed:
        """What a request that gave up raises, as its context makes it: with the last answer
        (what was wrong with its body, when that was the trouble), or why there was none."""
        if answer is not None:
            return answer_failure(context, self.name, method, url.path, answer.status,
                                  f"{self.name} answered with {broken}" if broken
                                  else answer.text(), what)
        cause = cause_of(error or TimeoutError(), self.timeout_s or self._deadline_s)
        return no_answer(context, self.name, self.base_url, method, url, cause, attempts,
                         spent_s, self.timeout_s,
                         self._policy.deadline_words(self.timeout_s) if out_of_time else None)


def _broken(answer: Answer,
            expect: type[dict[str, Any]] | type[list[Any]] | None) -> str | None:
    if expect is None or answer.status == 204:
        return None
    return answer.malformed(expect)


UNCLEAR_STATUSES = frozenset({500, 502, 504})


def _unclear(answer: Answer | None, error: BaseException | None) -> bool:
    """Whether a failed attempt of a write may still have been applied by the server: a
    gateway's 502/504 or a 500 after the handler ran, or a connection lost after sending.
    A refused connection and a 503, 429 or 408 mean the request was not carried out."""
    if answer is not None:
        return answer.status in UNCLEAR_STATUSES
    return error is not None and not isinstance(error, aiohttp.ClientConnectorError)
