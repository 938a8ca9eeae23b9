"""The HTTP retry loop, against small servers on 127.0.0.1 that answer exactly as a test says:
429s do not use up attempts, ``Retry-After`` is honoured, retries stop at ``max_attempts``,
and what a request that finally failed raises is what its caller's context declared."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from oktasync.errors import (
    Backoff,
    Context,
    CredentialsError,
    ListingFailed,
    LookupFailed,
    RetryPolicy,
    WriteFailed,
)
from oktasync.http import HttpClient, make_session
from oktasync.ratelimit import AtlassianLimiter
from tests.engine.loopback import serve

QUICK = RetryPolicy(max_attempts=3, backoff=Backoff(0.01, 2.0, 0.05),
                    unavailable_backoff=Backoff(0.01, 2.0, 0.05))


@asynccontextmanager
async def scripted(*answers: tuple[int, dict[str, str]]) -> AsyncIterator[tuple[str, list[int]]]:
    """A server giving ``answers`` in order (the last one from then on); the base URL and the
    statuses it sent, one per request received."""
    sent: list[int] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        status, headers = answers[min(len(sent), len(answers) - 1)]
        sent.append(status)
        return web.json_response({"n": len(sent)} if status < 300 else {"error": "x"},
                                 status=status, headers=headers)

    async with serve(handle) as url:
        yield url, sent


@asynccontextmanager
async def client(base_url: str, policy: RetryPolicy = QUICK) -> AsyncIterator[HttpClient]:
    session = make_session(connections=4, timeout_s=5)
    try:
        yield HttpClient(session, name="jira", base_url=base_url, headers={},
                         limiter=AtlassianLimiter(concurrency=4, max_rps=0), policy=policy)
    finally:
        await session.close()


@pytest.mark.asyncio
async def test_429s_do_not_use_up_attempts() -> None:
    paced = (429, {"Retry-After": "0"})
    async with scripted(*[paced] * 6, (200, {})) as (url, sent), client(url) as http:
        answer = await http.send("GET", "/x", context=Context.LISTING, expect=dict)
    assert answer.status == 200 and sent == [429] * 6 + [200]
    assert http.counters.rate_limited == 6 and http.counters.retries == 6


@pytest.mark.asyncio
async def test_retry_after_is_honoured() -> None:
    async with scripted((429, {"Retry-After": "1"}), (200, {})) as (url, sent), \
            client(url) as http:
        started = time.monotonic()
        await http.send("GET", "/x", context=Context.LISTING)
        took = time.monotonic() - started
    assert sent == [429, 200]
    assert took >= 0.95, f"the retry came after {took:.2f} s, not the 1 s asked for"


@pytest.mark.asyncio
@pytest.mark.parametrize(("context", "kind"), [
    (Context.LISTING, ListingFailed), (Context.LOOKUP, LookupFailed), (Context.WRITE, WriteFailed),
])
async def test_retries_stop_at_max_attempts_and_the_context_names_the_failure(
    context: Context, kind: type[Exception],
) -> None:
    async with scripted((500, {})) as (url, sent), client(url) as http:
        with pytest.raises(kind) as caught:
            await http.send("GET" if context is not Context.WRITE else "PUT", "/x",
                            context=context)
    assert sent == [500, 500, 500], "max_attempts = 3"
    assert "HTTP 500" in str(caught.value) and caught.value.status == 500  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_a_4xx_is_the_callers_to_read_only_where_it_said_so() -> None:
    async with scripted((404, {})) as (url, sent), client(url) as http:
        assert (await http.send("GET", "/x", context=Context.LOOKUP, accept=(404,))).status == 404
        assert (await http.send("PUT", "/x", context=Context.WRITE)).status == 404
        with pytest.raises(ListingFailed, match="members of 'staff'"):
            await http.send("GET", "/x", context=Context.LISTING, what="members of 'staff'")
        with pytest.raises(LookupFailed):
            await http.send("GET", "/x", context=Context.LOOKUP)
    assert sent == [404] * 4, "a 4xx is final: never retried"


@pytest.mark.asyncio
async def test_a_401_stops_the_run_whatever_the_request_was_for() -> None:
    async with scripted((401, {})) as (url, sent), client(url) as http:
        for context in Context:
            with pytest.raises(CredentialsError, match="jira rejected the credentials"):
                await http.send("PUT", "/x", context=context)
    assert sent == [401] * len(Context)


@pytest.mark.asyncio
async def test_an_html_page_answered_with_200_is_retried_then_fails() -> None:
    async def html(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    async with serve(html) as url, client(url) as http:
        with pytest.raises(ListingFailed, match="an HTML page, not JSON"):
            await http.send("GET", "/x", context=Context.LISTING, expect=list)
        assert http.counters.reads == 3


@pytest.mark.asyncio
@pytest.mark.parametrize(("context", "kind"), [
    (Context.LISTING, ListingFailed), (Context.LOOKUP, LookupFailed),
])
async def test_a_read_answered_with_another_2xx_than_200_is_its_failure(
    context: Context, kind: type[Exception],
) -> None:
    # a proxy answering 204 (or 202) to a read: no body to read, never taken for data
    async with scripted((204, {})) as (url, sent), client(url) as http:
        with pytest.raises(kind, match="HTTP 204"):
            await http.send("GET", "/rest/api/2/serverInfo", context=context, expect=dict)
        answer = await http.send("DELETE", "/x", context=Context.WRITE)
    assert answer.status == 204, "a write's 204 is the target's to read (applied)"
    assert sent == [204, 204]
