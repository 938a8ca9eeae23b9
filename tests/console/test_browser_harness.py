"""The browser harness itself, against a small aiohttp app on 127.0.0.1: a form that posts, a
cookie the server sets and gets back, a page kept current by server-sent events, a CSV
download, a screenshot; and no browser process outlives its context."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.console.browser import (
    WINDOW,
    chromium_missing,
    headless_browser,
    processes_mentioning,
    scratch_dir,
    screenshot,
    serve_in_thread,
    wait_for,
    wait_for_download,
)

SESSION = "console-7f3a9c"
CSV = (
    "login,name,status\n"
    "ada@example.com,Ada Lovelace,ACTIVE\n"
    "rené@example.com,René Thom,SUSPENDED\n"
)

Seen = dict[str, list[str]]
SEEN = web.AppKey("seen", dict)
STOPPING = web.AppKey("stopping", asyncio.Event)


def _page(title: str, body: str) -> web.Response:
    return web.Response(
        text=f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body>{body}</body></html>",
        content_type="text/html",
    )


async def form(request: web.Request) -> web.Response:
    request.app[SEEN]["form"].append(request.method)
    response = _page(
        "form",
        "<form method='post' action='/submit'>"
        "<input id='who' name='who'><button id='send' type='submit'>Send</button></form>",
    )
    response.set_cookie("session", SESSION, httponly=True, samesite="Strict", path="/")
    return response


async def submit(request: web.Request) -> web.Response:
    data = await request.post()
    cookie = request.cookies.get("session", "")
    request.app[SEEN]["submit"].append(cookie)
    return _page(
        "result",
        f"<p id='result'>Hello, {html.escape(str(data.get('who', '')))}</p>"
        f"<p id='cookie'>{html.escape(cookie)}</p>"
        "<a id='export' href='/export.csv'>Export</a>",
    )


async def live(request: web.Request) -> web.Response:
    request.app[SEEN]["live"].append(request.method)
    return _page(
        "live",
        "<p>events: <span id='count'>0</span></p><script>"
        "window.loadMark = Math.random();"
        "const source = new EventSource('/events');"
        "source.onmessage = (e) => { document.getElementById('count').textContent = e.data; };"
        "</script>",
    )


async def events(request: web.Request) -> web.StreamResponse:
    """1, 2, 3 as server-sent events, then comments to keep the stream open until the browser
    or the server goes (a closed stream would make EventSource reconnect and count again)."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        await response.write(b"retry: 60000\n\n")
        for n in (1, 2, 3):
            await asyncio.sleep(0.3)
            await response.write(f"data: {n}\n\n".encode())
        stopping = request.app[STOPPING]
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 0.5)
            await response.write(b": still here\n\n")
    except ConnectionResetError:
        pass
    return response


async def export(request: web.Request) -> web.Response:
    return web.Response(
        body=CSV.encode(),
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="okta-users.csv"',
        },
    )


def make_app() -> web.Application:
    app = web.Application()
    app[SEEN] = {"form": [], "submit": [], "live": []}
    app[STOPPING] = asyncio.Event()

    async def stopping(app: web.Application) -> None:
        app[STOPPING].set()

    app.on_shutdown.append(stopping)
    app.router.add_get("/form", form)
    app.router.add_post("/submit", submit)
    app.router.add_get("/live", live)
    app.router.add_get("/events", events)
    app.router.add_get("/export.csv", export)
    return app


@pytest.fixture
def site() -> Iterator[tuple[str, Seen]]:
    app = make_app()
    with serve_in_thread(app) as url:
        assert url.startswith("http://127.0.0.1:")
        yield url, app[SEEN]


def test_the_form_posts_and_the_servers_cookie_comes_back(
    browser: WebDriver, site: tuple[str, Seen]
) -> None:
    url, seen = site
    browser.get(f"{url}/form")
    wait_for(browser, "#who").send_keys("Ada")
    browser.find_element(By.ID, "send").click()
    assert wait_for(browser, "#result").text == "Hello, Ada"
    assert browser.find_element(By.ID, "cookie").text == SESSION
    assert seen["submit"] == [SESSION]
    assert browser.get_cookie("session") is not None
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly: not for scripts


def test_server_sent_events_update_the_page_without_a_reload(
    browser: WebDriver, site: tuple[str, Seen]
) -> None:
    url, seen = site
    browser.get(f"{url}/live")
    assert wait_for(browser, "#count").text == "0"
    mark = browser.execute_script("return window.loadMark")
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "count").text == "3")
    assert browser.execute_script("return window.loadMark") == mark
    assert seen["live"] == ["GET"]


def test_a_csv_download_lands_in_the_download_dir(
    browser: WebDriver, site: tuple[str, Seen], download_dir: Path
) -> None:
    url, _ = site
    browser.get(f"{url}/form")
    wait_for(browser, "#who").send_keys("Ada")
    browser.find_element(By.ID, "send").click()
    wait_for(browser, "#export").click()
    saved = wait_for_download(download_dir, "okta-users.csv")
    assert saved.read_text(encoding="utf-8") == CSV
    assert [p.name for p in download_dir.iterdir()] == ["okta-users.csv"]


def test_a_screenshot_is_a_png_of_the_window(
    browser: WebDriver, site: tuple[str, Seen], tmp_path: Path
) -> None:
    url, _ = site
    browser.get(f"{url}/form")
    wait_for(browser, "#send")
    shot = screenshot(browser, tmp_path / "shots" / "form.png")
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (
        browser.execute_script("return window.innerWidth"),
        browser.execute_script("return window.innerHeight"),
    )
    assert browser.get_window_size() == {"width": WINDOW[0], "height": WINDOW[1]}


def test_no_browser_process_outlives_the_context(tmp_path: Path) -> None:
    with headless_browser(tmp_path / "downloads") as driver:
        scratch = scratch_dir(driver)
        running = processes_mentioning(str(scratch))
        programs = {line.split()[1] for line in running}
        assert {"/usr/bin/chromedriver", "/usr/lib/chromium/chromium"} <= programs, running
        browser = next(
            line for line in running if "/chromium/chromium " in line and "--type=" not in line
        )
        for flag in ("--headless=new", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--window-size=1280,900"):
            assert flag in browser
    assert processes_mentioning(str(scratch)) == []
    assert not scratch.exists()


def test_the_browser_connects_to_nothing_but_loopback(
    site: tuple[str, Seen], tmp_path: Path
) -> None:
    """chromium still starts a few fetches of its own (updates, accounts, the search engine's
    preconnect); none resolves, so every TCP connection it opens is to 127.0.0.1."""
    url, _ = site
    netlog = tmp_path / "netlog.json"
    with headless_browser(tmp_path / "downloads", extra_args=[f"--log-net-log={netlog}"]) as d:
        d.get(f"{url}/form")
        wait_for(d, "#send")
    log = json.loads(netlog.read_text())
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    attempts = [
        e["params"]["address"]
        for e in log["events"]
        if names.get(e["type"]) == "TCP_CONNECT_ATTEMPT" and "address" in e.get("params", {})
    ]
    assert attempts, "the page itself was fetched over TCP"
    assert all(a.startswith("127.0.0.1:") for a in attempts), attempts


def test_a_missing_browser_fails_the_test_saying_why(tmp_path: Path) -> None:
    absent = tmp_path / "no-chromium"
    why = chromium_missing(chromium=absent)
    assert why is not None and str(absent) in why and "apt-get install chromium" in why
    with (
        pytest.raises(pytest.fail.Exception, match="chromium-driver"),
        headless_browser(tmp_path / "downloads", chromium=absent),
    ):
        pass
    assert chromium_missing() is None, "chromium and chromedriver are installed here"
