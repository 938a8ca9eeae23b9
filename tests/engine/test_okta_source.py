"""The Okta source against hostile or broken servers: links elsewhere, errors mid-listing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from oktasync.errors import ListingError, RetryPolicy
from oktasync.http import HttpClient, make_session
from oktasync.okta_source import OktaSource, Page
from oktasync.ratelimit import OktaLimiter

TOKEN = "00secret-token-that-must-stay-home"


@asynccontextmanager
async def server(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def user(n: int) -> dict[str, object]:
    return {"id": f"00u{n:017d}", "status": "ACTIVE",
            "profile": {"login": f"u{n}@example.com", "email": f"u{n}@example.com"}}


@asynccontextmanager
async def source(base: str) -> AsyncIterator[OktaSource]:
    session = make_session(connections=4, timeout_s=10)
    try:
        client = HttpClient(session, name="Okta", base_url=base,
                            headers={"Authorization": f"SSWS {TOKEN}"},
                            limiter=OktaLimiter(concurrency=4, max_share=0.5),
                            policy=RetryPolicy())
        yield OktaSource(client)
    finally:
        await session.close()


async def pages_before(src: OktaSource, error: str) -> list[Page]:
    """The user pages a listing yields before it fails with ``error`` (it must fail)."""
    pages = []
    with pytest.raises(ListingError, match=error):
        async for page in src.user_pages():
            pages.append(page)
    return pages


@pytest.mark.asyncio
async def test_a_next_link_to_another_host_is_refused_and_the_token_stays_home() -> None:
    seen_elsewhere: list[str | None] = []

    async def elsewhere(request: web.Request) -> web.Response:
        seen_elsewhere.append(request.headers.get("Authorization"))
        return web.json_response([user(2)])

    other = web.Application()
    other.router.add_get("/api/v1/users", elsewhere)
    async with server(other, "127.0.0.2") as evil:

        async def users(request: web.Request) -> web.Response:
            response = web.json_response([user(1)])
            response.headers.add("Link", f'<{evil}/api/v1/users?after=x>; rel="next"')
            return response

        okta = web.Application()
        okta.router.add_get("/api/v1/users", users)
        async with server(okta) as base, source(base) as src:
            pages = await pages_before(src, "refusing to follow a link to")
    assert len(pages) == 1 and pages[0].next_url is not None
    assert seen_elsewhere == [], "the token was never sent to the other host"


@pytest.mark.asyncio
async def test_an_error_in_the_middle_of_a_listing_is_never_its_end() -> None:
    async def users(request: web.Request) -> web.Response:
        if "after" in request.query:
            return web.json_response({"errorCode": "E0000029", "errorSummary":
                                      "Invalid paging request.", "errorCauses": []}, status=400)
        response = web.json_response([user(1)])
        response.headers.add("Link", f'<{request.url.with_query(after="c1")}>; rel="next"')
        return response

    app = web.Application()
    app.router.add_get("/api/v1/users", users)
    async with server(app) as base, source(base) as src:
        pages = await pages_before(src, "HTTP 400")
    assert len(pages) == 1, "the first page arrived, then the failure ended the listing loudly"
