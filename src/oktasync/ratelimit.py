"""Client-side rate governance: keep each server within its limits, and Okta within our share.

Two limiters behind one small interface (``acquire`` a slot, ``observe`` an answer):

* ``OktaLimiter`` follows Okta's per-bucket fixed windows. It reads ``X-Rate-Limit-Limit/
  Remaining/Reset`` and the ``Date`` header (Reset is compared with the server's clock, never
  ours), keeps this app's use of each bucket below ``max_share`` of the announced Limit, never
  exceeds the concurrency cap, and after a 429 waits until the window resets.
* ``AtlassianLimiter`` caps concurrency and (optionally) requests per second with aiolimiter,
  paces itself by ``X-RateLimit-FillRate/Interval-Seconds`` when the bucket runs low, and turns
  a 429's ``Retry-After`` into one shared pause so a burst of 429s is not a retry storm.

Both also take a process-wide ``InFlight`` cap for ``[pipeline] max_in_flight``. The
semaphores are asyncio's own (the engine always runs on anyio's asyncio backend, which
aiolimiter needs anyway): they cost a fraction of a generic capacity limiter per request, and
every request passes through them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Protocol

import anyio
from aiolimiter import AsyncLimiter

InFlight = asyncio.Semaphore


class _NoCap:
    """Stands in for a missing global cap without a branch on every request."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def acquire(self) -> bool:
        return True

    def release(self) -> None:
        return None


NO_CAP = _NoCap()


class Limiter(Protocol):
    def slot(self, bucket: str) -> AbstractAsyncContextManager[None]: ...

    def observe(self, bucket: str, status: int, headers: Mapping[str, str]) -> float | None:
        """Learn from an answer; return how long to wait before retrying a 429, if known."""


def _int(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


def _float(headers: Mapping[str, str], name: str) -> float | None:
    try:
        return float(headers[name])
    except (KeyError, ValueError):
        return None


def _server_now(headers: Mapping[str, str]) -> float | None:
    try:
        return parsedate_to_datetime(headers["Date"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class _Window:
    """One Okta bucket's current window, as the answers describe it (our monotonic clock)."""

    reset_epoch: int  # the server's X-Rate-Limit-Reset: identifies the window
    resets_at: float  # monotonic time the window ends
    allowed: int  # floor(Limit * max_share): our budget in this window
    granted: int  # requests we started in this window
    remaining: int  # lowest Remaining seen: what is left for everyone


PROBE_TIMEOUT_S = 5.0


class OktaLimiter:
    """Share-capped, window-aware limiter for one Okta org (one instance per app).

    A bucket whose window is unknown (first use, or the last window ended) lets one probe
    through and holds the rest until its answer tells the Limit and the Reset.
    """

    def __init__(
        self, *, concurrency: int, max_share: float,
        global_limit: InFlight | None = None,
    ) -> None:
        self._concurrency = asyncio.Semaphore(concurrency)
        self._global: InFlight | _NoCap = global_limit or NO_CAP
        self._share = max_share
        self._windows: dict[str, _Window] = {}  # the current window of each bucket
        self._last: dict[str, _Window] = {}  # the latest window seen, even once thought over
        self._probe_started: dict[str, float] = {}
        self.waits = 0  # times a request waited for a window to reset (for reports)

    @asynccontextmanager
    async def slot(self, bucket: str) -> AsyncIterator[None]:
        # Budget first, then a connection slot: a request waiting for its bucket's window to
        # reset must not hold one of the few slots that another bucket's requests could use.
        await self._wait_for_budget(bucket)
        async with self._global, self._concurrency:
            yield

    async def _wait_for_budget(self, bucket: str) -> None:
        while True:
            now = time.monotonic()
            window = self._windows.get(bucket)
            if window is not None and now >= window.resets_at:
                del self._windows[bucket]
                window = None
            if window is None:
                probe = self._probe_started.get(bucket)
                if probe is None or now - probe > PROBE_TIMEOUT_S:
                    self._probe_started[bucket] = now
                    return
                await anyio.sleep(0.005)
                continue
            if window.granted < window.allowed and window.remaining > 0:
                window.granted += 1
                window.remaining -= 1
                return
            self.waits += 1
            await anyio.sleep(max(0.005, window.resets_at - now))

    def observe(self, bucket: str, status: int, headers: Mapping[str, str]) -> float | None:
        limit = _int(headers, "X-Rate-Limit-Limit")
        remaining = _int(headers, "X-Rate-Limit-Remaining")
        reset = _int(headers, "X-Rate-Limit-Reset")
        self._probe_started.pop(bucket, None)
        if limit is None or remaining is None or reset is None:
            return 1.0 if status == 429 else None
        if limit == 0:
            return 0.25 if status == 429 else None  # the concurrency limit: no window to wait for
        # Reset and Date both have one-second resolution: Date is the floor of the server's
        # clock, so `reset - date` is the latest the window can end. Waiting that long is
        # never early, and Okta's clock, not ours, decides.
        server_now = _server_now(headers)
        seconds_left = max(0.0, reset - (server_now if server_now is not None else time.time()))
        resets_at = time.monotonic() + seconds_left
        self._learn(bucket, limit, remaining, reset, resets_at)
        return seconds_left + 0.05 if status == 429 else None

    def _learn(self, bucket: str, limit: int, remaining: int, reset: int,
               resets_at: float) -> None:
        window = self._windows.get(bucket) or self._last.get(bucket)
        if window is not None and window.reset_epoch == reset:
            if bucket not in self._windows:  # a probe landed in a window we thought over
                window.granted += 1
                window.resets_at = max(resets_at, time.monotonic() + 0.2)
                self._windows[bucket] = window
            window.remaining = min(window.remaining, remaining)
        elif window is None or reset > window.reset_epoch:
            fresh = _Window(reset_epoch=reset, resets_at=resets_at,
                            allowed=int(limit * self._share), granted=1, remaining=remaining)
            self._windows[bucket] = self._last[bucket] = fresh
        # else: a late answer from an earlier window; nothing to learn


class TokenMirror:
    """A local copy of the server's token bucket, learnt from its headers.

    Atlassian's bucket holds ``X-RateLimit-Limit`` tokens and gains one every
    ``Interval-Seconds / FillRate`` seconds. Debiting our copy when a request is *sent* and
    refilling it by the clock keeps it at or below the server's (the server debits on
    arrival, later), so waiting for a token here means never meeting a 429 there, and
    ``Remaining`` in each answer can only lower the estimate.
    """

    def __init__(self) -> None:
        self.capacity = 0.0
        self.per_s = 0.0  # 0: the server has not said it limits us
        self.tokens = 0.0
        self.stamp = time.monotonic()

    def learn(self, capacity: int, fill: float, interval: float, remaining: int,
              others_in_flight: int) -> None:
        """``others_in_flight``: requests sent, not yet answered, that the server may not have
        counted in this ``remaining`` yet (they were sent before we knew to debit them)."""
        first = self.per_s == 0
        self.capacity, self.per_s = float(capacity), fill / interval
        self._refill()
        if first:
            self.tokens = float(remaining - others_in_flight)
        else:
            self.tokens = min(self.tokens, float(remaining))

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.per_s)
        self.stamp = now

    def wait_s(self) -> float:
        """How long until a token is here (0: take one now)."""
        if self.per_s == 0:
            return 0.0
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.per_s

    def empty(self) -> None:
        self._refill()
        self.tokens = min(self.tokens, 0.0)


class AtlassianLimiter:
    """Concurrency + optional fixed rate + the server's own bucket for one Jira or Confluence.

    While the server's headers announce a token bucket, requests wait for a token in a local
    mirror of it (``TokenMirror``) instead of running into 429s; a 429 or 503 that happens
    anyway pauses every request to that server for its ``Retry-After`` at once — one shared
    pause rather than one retry per worker, so a burst of 429s never becomes a storm.
    """

    def __init__(
        self, *, concurrency: int, max_rps: float,
        global_limit: InFlight | None = None,
    ) -> None:
        self._concurrency = asyncio.Semaphore(concurrency)
        self._global: InFlight | _NoCap = global_limit or NO_CAP
        self._rate = AsyncLimiter(max_rps, 1.0) if max_rps > 0 else None
        self._paused_until = 0.0
        self._bucket = TokenMirror()
        self._in_flight = 0

    def slot(self, bucket: str) -> AtlassianLimiter:
        """The limiter is its own slot (one bucket per server): every target request passes
        here, and a plain ``__aenter__``/``__aexit__`` pair costs a fraction of a generator-
        based context manager."""
        return self

    async def __aenter__(self) -> None:
        await self._global.acquire()
        try:
            await self._concurrency.acquire()
            try:
                await self._respect_server()
                if self._rate is not None:
                    await self._rate.acquire()
            except BaseException:  # cancelled while waiting: give the slot back
                self._concurrency.release()
                raise
        except BaseException:
            self._global.release()
            raise
        self._in_flight += 1

    async def __aexit__(self, *exc: object) -> None:
        self._in_flight -= 1
        self._concurrency.release()
        self._global.release()

    async def _respect_server(self) -> None:
        while True:
            pause = self._paused_until - time.monotonic()
            wait = pause if pause > 0 else self._bucket.wait_s()
            if wait <= 0:
                return
            await anyio.sleep(wait)

    def observe(self, bucket: str, status: int, headers: Mapping[str, str]) -> float | None:
        capacity = _int(headers, "X-RateLimit-Limit")
        remaining = _int(headers, "X-RateLimit-Remaining")
        fill = _float(headers, "X-RateLimit-FillRate")
        interval = _float(headers, "X-RateLimit-Interval-Seconds")
        if capacity and remaining is not None and fill and interval:
            self._bucket.learn(capacity, fill, interval, remaining, self._in_flight)
        if status in (429, 503):
            retry_after = _int(headers, "Retry-After")
            wait = float(retry_after) if retry_after is not None and retry_after > 0 else 1.0
            self._paused_until = max(self._paused_until, time.monotonic() + wait)
            if status == 429:
                self._bucket.empty()
            return wait
        return None
