"""Client-side rate governance: keep each server within its limits, and Okta within our share.

Two limiters behind one small interface (``acquire`` a slot, ``observe`` an answer):

* ``OktaLimiter`` follows Okta's per-bucket fixed windows. It reads ``X-Rate-Limit-Limit/
  Remaining/Reset`` and the ``Date`` header (Reset is compared with the server's clock, never
  ours), keeps this app's use of each bucket below ``max_share`` of the announced Limit, never
  exceeds the concurrency cap, and after a 429 waits until the window resets.
* ``AtlassianLimiter`` caps concurrency and (optionally) requests per second with aiolimiter,
  paces itself by ``X-RateLimit-FillRate/Interval-Seconds`` when the bucket runs low, and turns
  a 429's ``Retry-After`` into one shared pause so a burst of 429s is not a retry storm. A 503
  concerns the request that met it: it waits for its own ``Retry-After`` or backs off, and the
  target's concurrency adapts (``AdaptiveConcurrency``) instead of every request pausing.

Both also take a process-wide ``InFlight`` cap for ``[pipeline] max_in_flight``. The
semaphores are asyncio's own (the engine always runs on anyio's asyncio backend, which
aiolimiter needs anyway), and the Atlassian limiter's adaptive slots are a counter and a queue
of futures: they cost a fraction of a generic capacity limiter per request, and every request
passes through them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
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
    concurrency: AdaptiveConcurrency | None  # the adaptive concurrency, where there is one

    def slot(self, bucket: str) -> AbstractAsyncContextManager[int | None]:
        """Wait for the right to send; the value entered is the request's epoch (see
        ``AdaptiveConcurrency``), handed back to ``observe`` with its answer."""
        ...

    def observe(self, bucket: str, status: int, headers: Mapping[str, str],
                epoch: int | None = None) -> float | None:
        """Learn from an answer; return how long to wait before retrying it, if the server
        said (None: the caller backs off by its own policy)."""


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


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP-date (RFC 9110 10.2.3), the date
    compared with the answer's own ``Date`` when it has one (the server's clock, not ours).
    None when absent, unreadable or not in the future: the server gave no hint."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
        server_now = _server_now(headers)
        seconds = when - (server_now if server_now is not None else time.time())
    return seconds if seconds > 0 else None


# Okta's rate-limit windows are one minute: a Reset further than this from a clock is not
# on that clock (a Date set by a proxy with a wrong clock, or our own clock off)
OKTA_WINDOW_MAX_S = 61.0


def _seconds_to_reset(reset: int, headers: Mapping[str, str]) -> float:
    """How long until Okta's window ends. Reset and Date both have one-second resolution:
    Date is the floor of the server's clock, so ``reset - date`` is the latest the window can
    end; waiting that long is never early, and Okta's clock, not ours, decides. A Date that
    puts the Reset outside one window is not Okta's clock: then our clock, if it agrees, else
    at most one window (a run must never wait hours or a day on a wrong Date)."""
    for now in (_server_now(headers), time.time()):
        if now is not None and -1.0 <= reset - now <= OKTA_WINDOW_MAX_S:
            return max(0.0, reset - now)
    return OKTA_WINDOW_MAX_S


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

    concurrency: AdaptiveConcurrency | None = None  # fixed: Okta's own limits are known

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
            await anyio.sleep(max(0.005, window.resets_at - now))

    def budget_wait(self) -> float:
        """Seconds until a bucket whose budget is spent lets requests through again (the
        longest such wait now; 0 when none waits): the progress display's "Okta wait"."""
        now = time.monotonic()
        spent = [w.resets_at - now for w in self._windows.values()
                 if not (w.granted < w.allowed and w.remaining > 0) and w.resets_at > now]
        return max(spent, default=0.0)

    def observe(self, bucket: str, status: int, headers: Mapping[str, str],
                epoch: int | None = None) -> float | None:
        limit = _int(headers, "X-Rate-Limit-Limit")
        remaining = _int(headers, "X-Rate-Limit-Remaining")
        reset = _int(headers, "X-Rate-Limit-Reset")
        self._probe_started.pop(bucket, None)
        if limit is None or remaining is None or reset is None:
            return 1.0 if status == 429 else None
        if limit == 0:
            return 0.25 if status == 429 else None  # the concurrency limit: no window to wait for
        seconds_left = _seconds_to_reset(reset, headers)
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


class AdaptiveConcurrency:
    """How many requests one target may have in flight: additive increase, multiplicative
    decrease (AIMD) on the server's 503s, between 1 and the configured ``concurrency``.

    TCP's congestion window, with two rules so that random 503s (a load balancer meeting a
    restarting node: one request's misfortune) are not read as overload:

    * **Decrease** (halve, floor 1) only while the share of 503s among recent answers, smoothed
      over about ``1 / SMOOTHING`` = 32 answers, is above ``OVERLOAD_SHARE`` (25 %).
      Independent 503s at a few % stay below it (at 5 % the smoothed share is 0.05 ± 0.03 and
      never reached 0.25 in 200,000 simulated answers; at 10 %, two answers in 10,000), so they
      cost the retries they need and no concurrency; a server that answers only 503s gets
      there within eight answers.
    * **At most once per round trip**: every request carries the ``epoch`` it was sent in, and
      each decrease starts a new one; a 503 to a request sent before the latest decrease
      has been acted on already, so one burst of failures in flight halves once.

    **Increase**: one more slot per ``limit`` successes (about one per round trip when the
    window is in use), up to the ceiling, while the smoothed share is below the threshold.
    Pure bookkeeping, no clock: ``AtlassianLimiter`` calls ``succeeded`` / ``overloaded`` per
    answer and reads ``limit`` before letting a request out.
    """

    OVERLOAD_SHARE = 0.25
    SMOOTHING = 1 / 32
    DECREASE = 0.5

    def __init__(self, ceiling: int) -> None:
        if ceiling < 1:
            raise ValueError(f"concurrency must be at least 1, got {ceiling}")
        self.ceiling = self.limit = self.lowest = ceiling
        self.epoch = 0  # the number of decreases so far: requests sent since carry it
        self.share = 0.0  # smoothed share of 503s among the latest answers
        self.decreases = 0
        self._successes = 0  # since the last increase

    def succeeded(self) -> None:
        """An answer that shows the server coping (anything below 500 but a 429)."""
        self.share -= self.share * self.SMOOTHING
        if self.limit >= self.ceiling or self.share >= self.OVERLOAD_SHARE:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self.limit += 1
            self._successes = 0

    def overloaded(self, epoch: int) -> None:
        """A 503 to a request sent in ``epoch``."""
        self.share += (1.0 - self.share) * self.SMOOTHING
        if self.share < self.OVERLOAD_SHARE or epoch != self.epoch or self.limit == 1:
            return
        self.limit = max(1, int(self.limit * self.DECREASE))
        self.lowest = min(self.lowest, self.limit)
        self.epoch += 1
        self.decreases += 1
        self._successes = 0

    def to_json(self) -> dict[str, int]:
        return {"ceiling": self.ceiling, "limit": self.limit, "lowest": self.lowest,
                "decreases": self.decreases}


class AtlassianLimiter:
    """Adaptive concurrency + optional fixed rate + the server's own bucket for one Jira or
    Confluence.

    While the server's headers announce a token bucket, requests wait for a token in a local
    mirror of it (``TokenMirror``) instead of running into 429s; a 429 that happens anyway
    pauses every request to that server for its ``Retry-After`` at once — the bucket is the
    user's, so it concerns them all, and one shared pause rather than one retry per worker
    keeps a burst of 429s from becoming a storm.

    A 503 is one request's misfortune (most come from a load balancer, without
    ``Retry-After``): only that request waits — the server's ``Retry-After`` if it sent one,
    otherwise the caller's jittered backoff — and the answer feeds the target's
    ``AdaptiveConcurrency``, which lowers the requests in flight only when 503s are frequent
    enough to mean overload. The others keep going.
    """

    def __init__(
        self, *, concurrency: int, max_rps: float,
        global_limit: InFlight | None = None,
    ) -> None:
        self.concurrency: AdaptiveConcurrency | None = AdaptiveConcurrency(concurrency)
        self._window = self.concurrency  # the same object, typed as always there
        self._used = 0  # slots taken, at most ``_window.limit`` (more only right after a cut)
        self._waiters: deque[asyncio.Future[None]] = deque()
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

    async def __aenter__(self) -> int:
        await self._global.acquire()
        try:
            if self._used < self._window.limit and not self._waiters:
                self._used += 1  # the common case, without a coroutine
            else:
                await self._wait_for_slot()
            try:
                await self._respect_server()
                if self._rate is not None:
                    await self._rate.acquire()
            except BaseException:  # cancelled while waiting: give the slot back
                self._give_slot()
                raise
        except BaseException:
            self._global.release()
            raise
        self._in_flight += 1
        return self._window.epoch

    async def __aexit__(self, *exc: object) -> None:
        self._in_flight -= 1
        self._give_slot()
        self._global.release()

    async def _wait_for_slot(self) -> None:
        """Queue for a slot: the slots are a semaphore whose size is the adaptive limit,
        first come first served."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # ``_wake`` counts the slot as ours before waking us
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._give_slot()  # woken and cancelled at once: pass the slot on
            else:
                with suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _give_slot(self) -> None:
        self._used -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._used < self._window.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._used += 1
                waiter.set_result(None)

    async def _respect_server(self) -> None:
        while True:
            pause = self._paused_until - time.monotonic()
            wait = pause if pause > 0 else self._bucket.wait_s()
            if wait <= 0:
                return
            await anyio.sleep(wait)

    def observe(self, bucket: str, status: int, headers: Mapping[str, str],
                epoch: int | None = None) -> float | None:
        capacity = _int(headers, "X-RateLimit-Limit")
        remaining = _int(headers, "X-RateLimit-Remaining")
        fill = _float(headers, "X-RateLimit-FillRate")
        interval = _float(headers, "X-RateLimit-Interval-Seconds")
        if capacity and remaining is not None and fill and interval:
            self._bucket.learn(capacity, fill, interval, remaining, self._in_flight)
        if status == 429:  # the user's token bucket is empty: every request of ours waits
            wait = retry_after_s(headers) or 1.0
            self._paused_until = max(self._paused_until, time.monotonic() + wait)
            self._bucket.empty()
            return wait
        window = self._window
        if status == 503:  # this request waits; the others go on, perhaps fewer at a time
            window.overloaded(window.epoch if epoch is None else epoch)
            return retry_after_s(headers)
        if status < 500:
            limit = window.limit
            window.succeeded()
            if window.limit > limit:
                self._wake()
        return None
