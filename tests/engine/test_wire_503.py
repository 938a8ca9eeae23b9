"""A 503 holds back the request that met it, never the whole target.

Against real servers on 127.0.0.1 (small aiohttp apps written here, so a test decides exactly
which request meets a 503) through the engine's own ``HttpClient`` and ``AtlassianLimiter``:

* a 503 with ``Retry-After`` makes that request wait at least that long, while the other
  requests to the same server keep going;
* a 503 without it backs that request off with the jittered ``Backoff``, the others keep going;
* a server that answers 503 whenever it has too much in flight gets fewer requests in flight
  (the target's AIMD concurrency), and every request still ends in a success.

End to end, a sync against emulators injecting 503s (with and without ``Retry-After``) ends in
the oracle's state.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import formatdate
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from oktasync.engine import SyncOptions, run_sync
from oktasync.errors import Backoff, Context, RetryPolicy
from oktasync.http import HttpClient, make_session
from oktasync.ratelimit import AtlassianLimiter
from oktasync_emulators.runner import EmulatorOptions, running_emulators
from tests.engine import oracle
from tests.engine.harness import load, states, stats, write_config
from tests.engine.loopback import serve

SETTINGS = oracle.Settings(default_groups={"jira": ("jira-software-users",),
                                           "confluence": ("confluence-users",)})


@asynccontextmanager
async def client(base_url: str, limiter: AtlassianLimiter,
                 policy: RetryPolicy | None = None) -> AsyncIterator[HttpClient]:
    session = make_session(connections=16, timeout_s=10)
    try:
        yield HttpClient(session, name="jira", base_url=base_url, headers={},
                         limiter=limiter, policy=policy or RetryPolicy())
    finally:
        await session.close()


class FirstFails:
    """Answers 503 to the first request for ``/slow`` (with ``retry_after`` if given), 200 to
    everything else, and records when each request arrived."""

    def __init__(self, retry_after: str | None) -> None:
        self.retry_after = retry_after
        self.arrivals: list[tuple[str, float]] = []

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append((request.path, time.monotonic()))
        if request.path == "/slow" and sum(p == "/slow" for p, _ in self.arrivals) == 1:
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return web.Response(status=503, text="Service Unavailable", headers=headers)
        return web.json_response({})

    def at(self, path: str) -> list[float]:
        return [t for p, t in self.arrivals if p == path]


async def one_503_then_others(server: FirstFails, http: HttpClient) -> None:
    """``/slow`` meets its 503; once the client has seen it, ten other requests one by one."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(http.send, "GET", "/slow", context=Context.LISTING))
        with anyio.fail_after(5):  # nothing signals "the client has read that answer"
            while http.counters.statuses[503] == 0:  # noqa: ASYNC110
                await anyio.sleep(0.001)
        for i in range(10):
            answer = await http.send("GET", f"/other/{i}", context=Context.LISTING)
            assert answer.status == 200


@pytest.mark.asyncio
@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_a_503_with_retry_after_holds_back_that_request_only(form: str) -> None:
    retry_after, at_least = (("2", 2.0) if form == "seconds"
                             else (formatdate(time.time() + 3, usegmt=True), 1.0))
    server = FirstFails(retry_after)
    async with serve(server) as url, client(url, AtlassianLimiter(
            concurrency=4, max_rps=0)) as http:
        await one_503_then_others(server, http)
    first, retry = server.at("/slow")
    assert retry - first >= at_least, "the request waited what the server asked"
    others = [t for p, t in server.arrivals if p.startswith("/other/")]
    assert len(others) == 10 and max(others) < retry, "the other requests kept going meanwhile"
    assert http.counters.retries == 1


@pytest.mark.asyncio
async def test_a_503_without_retry_after_backs_off_that_request_only() -> None:
    server = FirstFails(None)
    policy = RetryPolicy(unavailable_backoff=Backoff(base_s=2.0, factor=2.0, max_s=2.0))  # 1-2 s
    limiter = AtlassianLimiter(concurrency=4, max_rps=0)
    async with serve(server) as url, client(url, limiter, policy) as http:
        await one_503_then_others(server, http)
    first, retry = server.at("/slow")
    assert retry - first >= 1.0, "backed off with the policy's Backoff"
    others = [t for p, t in server.arrivals if p.startswith("/other/")]
    assert len(others) == 10 and max(others) < retry, "the other requests kept going meanwhile"
    assert limiter.concurrency is not None
    assert limiter.concurrency.limit == 4, "one 503 among a dozen answers is no overload"


def test_a_503_is_retried_sooner_than_other_failures_with_the_same_patience() -> None:
    policy = RetryPolicy()
    for _ in range(100):
        assert 0.01 <= policy.delay(1, 503) <= 0.02
        assert 0.1 <= policy.delay(1, 500) <= 0.2
        assert 0.1 <= policy.delay(1, None) <= 0.2  # no answer at all
    # about as long in all over the eight attempts: 0.02 x 3^k against 0.2 x 2^k
    unavailable = sum(policy.unavailable_backoff.delay(a) for a in range(1, 8))
    other = sum(policy.backoff.delay(a) for a in range(1, 8))
    assert 10 <= unavailable <= 22 and 12 <= other <= 26, (unavailable, other)


class Overloaded:
    """A server that answers 503 (no Retry-After) whenever more than ``capacity`` requests are
    in flight, and otherwise takes 10 ms per request."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_flight = 0
        self.ok = 0
        self.unavailable = 0

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        try:
            if self.in_flight > self.capacity:
                self.unavailable += 1
                return web.Response(status=503, text="Service Unavailable")
            await anyio.sleep(0.01)
            self.ok += 1
            return web.json_response({})
        finally:
            self.in_flight -= 1


@pytest.mark.asyncio
async def test_an_overloaded_server_gets_fewer_requests_in_flight() -> None:
    server = Overloaded(capacity=3)
    limiter = AtlassianLimiter(concurrency=16, max_rps=0)
    policy = RetryPolicy(max_attempts=100, unavailable_backoff=Backoff(0.01, 2.0, 0.05))
    total = 16 * 25
    async with serve(server) as url, client(url, limiter, policy) as http:
        async def worker(first: int) -> None:
            for i in range(first, total, 16):
                answer = await http.send("GET", f"/item/{i}", context=Context.LISTING)
                assert answer.status == 200

        async with anyio.create_task_group() as tg:
            for w in range(16):
                tg.start_soon(worker, w)
    assert server.ok == total, "every request ended in a success"
    window = limiter.concurrency
    assert window is not None
    assert window.lowest <= server.capacity and window.limit <= 2 * server.capacity, \
        window.to_json()
    # 16 in flight against room for 3 would meet a 503 on most tries; around the server's
    # capacity, about one try in four does (AdaptiveConcurrency.OVERLOAD_SHARE)
    assert server.unavailable < total / 2, server.unavailable


@pytest.mark.asyncio
@pytest.mark.parametrize("retry_after", [None, 1])
async def test_a_sync_under_random_503s_reaches_the_oracle_state(
    tmp_path: Path, retry_after: int | None,
) -> None:
    options = EmulatorOptions(users=70, groups=8, seed=3, ports=(0, 0, 0), okta_rate_scale=0,
                              fail_rate=0.1, fail_retry_after=retry_after)
    async with running_emulators(options) as running:
        before = await states(running)
        result = await run_sync(load(write_config(tmp_path, running)), SyncOptions(),
                                echo=lambda *_: None)
        summary: dict[str, Any] = result.summaries["test-app"]
        assert result.exit_code == 0, summary["notes"]
        now = await states(running)
        for target in ("jira", "confluence"):
            expected = oracle.expected_accounts(now["okta"], oracle.target_accounts(
                before[target]), target, SETTINGS)
            assert oracle.differences(expected, oracle.target_accounts(now[target])) == []
        seen = await stats(running)
        for target in ("jira", "confluence"):
            assert seen[target]["faults"]["unavailable"] > 10, target
            requests = summary["targets"][target]["requests"]
            assert requests["retries"] >= seen[target]["faults"]["unavailable"], target
            window = requests["concurrency"]
            assert window["ceiling"] == 16 and window["lowest"] >= 8, (target, window)
