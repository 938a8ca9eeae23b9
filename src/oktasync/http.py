"""One HTTP loop for every server the engine talks to: limit, send, classify, back off.

Each server gets one ``HttpClient`` over one keep-alive ``aiohttp.ClientSession``. The loop is
iterative (never recursive): take a slot from the server's limiter, send, let the limiter learn
from the answer, and act on ``errors.classify_status``. Answers with a SKIP status come back to
the caller, who knows what a 400 or 404 means for its endpoint; RETRY statuses are retried
until the policy gives up (``HttpFailure``); a 401 raises ``CredentialsError``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import orjson
from multidict import CIMultiDictProxy
from yarl import URL

from oktasync.errors import (
    CredentialsError,
    HttpFailure,
    Outcome,
    RetryPolicy,
    classify_exception,
    classify_status,
)
from oktasync.ratelimit import AdaptiveConcurrency, Limiter


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


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


def make_session(*, connections: int, timeout_s: float) -> aiohttp.ClientSession:
    """A keep-alive session sized to the concurrency it will carry."""
    connector = aiohttp.TCPConnector(limit=max(1, connections), limit_per_host=0,
                                     keepalive_timeout=60, enable_cleanup_closed=True)
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(10.0, timeout_s))
    # No cookie jar: the APIs authenticate every request by header, and a jar costs a lookup
    # and an update on every request.
    return aiohttp.ClientSession(connector=connector, timeout=timeout,
                                 cookie_jar=aiohttp.DummyCookieJar(),
                                 json_serialize=lambda o: orjson.dumps(o).decode())


class HttpClient:
    """Requests to one server, with its auth header, limiter and retry policy."""

    def __init__(
        self, session: aiohttp.ClientSession, *, name: str, base_url: str,
        headers: Mapping[str, str], limiter: Limiter, policy: RetryPolicy | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._headers = dict(headers)
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._limiter = limiter
        self._policy = policy or RetryPolicy()
        self.counters = RequestCounters(concurrency=limiter.concurrency)

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def _target(self, path: str, params: Mapping[str, str] | None) -> URL:
        """The request URL, built once per request (not once per attempt): paths arrive
        percent-encoded segment by segment (and Okta's links as sent), so they are not
        re-quoted; yarl encodes query values (``&``, ``+``, non-ASCII) in C."""
        url = URL(self.url(path), encoded=True)
        return url.update_query(params) if params else url

    async def send(
        self, method: str, path: str, *, bucket: str = "default",
        params: Mapping[str, str] | None = None, json: Any = None,
        ok_statuses: Container[int] = (),
    ) -> Answer:
        """Send until the answer is final; statuses in ``ok_statuses`` are never retried."""
        url = self._target(path, params)
        data = orjson.dumps(json) if json is not None else None
        headers = self._headers if data is None else self._json_headers
        started, attempt, throttled = time.monotonic(), 0, 0
        while True:
            attempt += 1
            answer, wait, outcome, error = await self._attempt(method, url, bucket, data, headers)
            if answer is not None and answer.status in ok_statuses:
                return answer
            if answer is not None:
                outcome = classify_status(answer.status)
                if outcome is None or outcome is Outcome.SKIP:
                    return answer
                if outcome is Outcome.ABORT:
                    raise CredentialsError(
                        f"{self.name} rejected the credentials (HTTP {answer.status}) "
                        f"at {method} {_path_only(str(url))}")
            if outcome is Outcome.ABORT and error is not None:
                raise error
            throttled += answer is not None and answer.status == 429
            counted = attempt - throttled  # a 429 is the server pacing us, not a failure
            if not self._policy.should_retry(counted, time.monotonic() - started):
                raise HttpFailure(method, _path_only(str(url)),
                                  answer.status if answer else None,
                                  answer.text() if answer else repr(error))
            self.counters.retries += 1
            await anyio.sleep(wait if wait is not None else self._policy.backoff.delay(counted))

    async def _attempt(
        self, method: str, url: URL, bucket: str, data: bytes | None,
        headers: Mapping[str, str],
    ) -> tuple[Answer | None, float | None, Outcome | None, BaseException | None]:
        """One try: the answer (or the transport error's outcome) and the limiter's wait hint."""
        if method == "GET":
            self.counters.reads += 1
        else:
            self.counters.writes += 1
        try:
            async with self._limiter.slot(bucket) as epoch, self._session.request(
                method, url, data=data, headers=headers, allow_redirects=False,
            ) as response:
                body = await response.read()
                answer = Answer(response.status, response.headers, body, url)
        except Exception as exc:  # classified below: transient ones are retried
            return None, None, classify_exception(exc), exc
        self.counters.statuses[answer.status] += 1
        if answer.status == 429:
            self.counters.rate_limited += 1
        wait = self._limiter.observe(bucket, answer.status, answer.headers, epoch)
        return answer, wait, None, None


def _path_only(url: str) -> str:
    """A URL without its query string: query strings may carry search terms, never secrets,
    but reports stay shorter and stable without them."""
    return url.split("?", 1)[0]
