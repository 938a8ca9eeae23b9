"""A real headless browser for the web console's end-to-end tests: Debian's chromium, driven by
Selenium through Debian's chromedriver, both installed with apt (``make test`` does it).

Nothing is fetched at run time: the driver and the browser are named by path, so Selenium
Manager (which would look for, and download, drivers and browsers) is never run, and the browser
starts with its own network services (component updates, sync, metrics, safe browsing) off.
Where the browser is missing the tests fail, saying so; they are never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from aiohttp import web
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.selenium_manager import SeleniumManager
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

# The ELF that Debian's chromium ships. /usr/bin/chromium is a shell launcher around it that
# sources /etc/chromium.d/ (Google API keys, extensions loaded from /usr/share): not for tests.
CHROMIUM = Path("/usr/lib/chromium/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1280, 900)

# Only read by Selenium Manager, which is never run here; should it be, it stays offline and
# quiet.
_SELENIUM_ENV = {"SE_AVOID_STATS": "true", "SE_OFFLINE": "true"}

_FLAGS = (
    "--headless=new",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-gpu",
    "--password-store=basic",
    "--use-mock-keychain",
    # no fetches of the browser's own
    "--disable-component-update",
    "--disable-background-networking",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--no-pings",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,"
    "CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions,"
    "NetworkTimeServiceQuerying",
    # and should anything still try, no name but loopback's resolves: nothing leaves the machine
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
)


def chromium_missing(chromium: Path = CHROMIUM, chromedriver: Path = CHROMEDRIVER) -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    missing = [str(p) for p in (chromium, chromedriver) if not os.access(p, os.X_OK)]
    if not missing:
        return None
    return (
        f"the browser tests need Debian's chromium and chromium-driver, and {', '.join(missing)} "
        "is missing: `make test` installs them when `chromium` or `chromedriver` is not on PATH; "
        "by hand: apt-get install chromium chromium-driver"
    )


@contextmanager
def headless_browser(
    download_dir: Path,
    *,
    chromium: Path = CHROMIUM,
    chromedriver: Path = CHROMEDRIVER,
    extra_args: Sequence[str] = (),
) -> Iterator[WebDriver]:
    """Headless chromium with a fresh profile, 1280x900, downloads saved without asking into
    ``download_dir``; quit, driver and profile gone, on exit. Fails the test when the browser
    is not installed."""
    if (why := chromium_missing(chromium, chromedriver)) is not None:
        pytest.fail(why, pytrace=False)
    download_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="oktasync-chromium-") as scratch:
        profile = Path(scratch, "profile")
        options = webdriver.ChromeOptions()
        options.binary_location = str(chromium)
        for flag in _FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        for arg in extra_args:
            options.add_argument(arg)
        if os.geteuid() == 0:  # chromium's sandbox refuses root; CI runs as root
            options.add_argument("--no-sandbox")
        options.add_experimental_option(
            "prefs",
            {
                "download.default_directory": str(download_dir),
                "download.prompt_for_download": False,
                "download.directory_upgrade": True,
                "safebrowsing.enabled": False,
                "net.network_prediction_options": 2,  # no preconnects (the search engine's)
                "signin.allowed": False,
            },
        )
        # HOME too: the crash handler chromium starts keeps its reports under ~/.config, and
        # with HOME here every process of this browser names the scratch dir (tests look).
        env = {**os.environ, "HOME": scratch, "XDG_CONFIG_HOME": f"{scratch}/config",
               "XDG_CACHE_HOME": f"{scratch}/cache"}
        service = Service(
            executable_path=str(chromedriver),
            log_output=str(Path(scratch, "chromedriver.log")),
            env=env,
        )
        refuse = mock.patch.object(
            SeleniumManager, "binary_paths", side_effect=AssertionError("Selenium Manager ran")
        )
        with mock.patch.dict(os.environ, _SELENIUM_ENV), refuse:
            driver = webdriver.Chrome(options=options, service=service)
        try:
            driver.execute_cdp_cmd(
                "Browser.setDownloadBehavior",
                {"behavior": "allow", "downloadPath": str(download_dir)},
            )
            yield driver
        finally:
            driver.quit()
            _reap(scratch)


def _reap(scratch: str, grace: float = 5) -> None:
    """Wait for every process of the browser that used ``scratch`` to exit; kill (by pid) and
    complain of any still there after ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while (left := processes_mentioning(scratch)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not left:
        return
    for line in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split()[0]), signal.SIGKILL)
    raise AssertionError(f"browser processes outlived driver.quit() by {grace}s: {left}")


def wait_for(driver: WebDriver, css: str, timeout: float = 10) -> WebElement:
    """The first element matching ``css`` once it is visible."""
    try:
        element: WebElement = WebDriverWait(driver, timeout).until(
            expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css))
        )
    except TimeoutException:
        raise AssertionError(
            f"no visible {css!r} within {timeout}s at {driver.current_url}"
        ) from None
    return element


def screenshot(driver: WebDriver, path: Path) -> Path:
    """The viewport as a PNG at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(path)):
        raise AssertionError(f"the browser wrote no screenshot to {path}")
    return path


def wait_for_download(download_dir: Path, name: str, timeout: float = 10) -> Path:
    """``download_dir/name`` once the browser has finished writing it."""
    target = download_dir / name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        partial = list(download_dir.glob("*.crdownload"))
        if target.is_file() and not partial:
            return target
        time.sleep(0.05)
    found = sorted(p.name for p in download_dir.iterdir()) if download_dir.is_dir() else []
    raise AssertionError(f"{name} not downloaded into {download_dir} in {timeout}s: {found}")


@contextmanager
def serve_in_thread(app: web.Application) -> Iterator[str]:
    """``app`` on 127.0.0.1 and an ephemeral port, its event loop in a thread of its own (the
    browser is driven synchronously); the base URL."""
    started: Future[str] = Future()
    loop_stop: Future[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = Future()

    async def main() -> None:
        stop = asyncio.Event()
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            loop_stop.set_result((asyncio.get_running_loop(), stop))
            started.set_result(f"http://{host}:{port}")
            await stop.wait()
        finally:
            await runner.cleanup()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    thread = threading.Thread(target=run, name="console-test-server", daemon=True)
    thread.start()
    try:
        yield started.result(timeout=10)
    finally:
        if loop_stop.done():
            loop, stop = loop_stop.result()
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        if thread.is_alive():
            raise AssertionError("the test server's thread did not stop in 10s")


def scratch_dir(driver: WebDriver) -> Path:
    """The browser's scratch dir, parent of its --user-data-dir: every process of this browser
    names it on its command line."""
    return Path(driver.capabilities["chrome"]["userDataDir"]).parent


def processes_mentioning(text: str) -> list[str]:
    """``ps`` lines of the live processes whose command line contains ``text``."""
    ps = shutil.which("ps") or "/bin/ps"
    out = subprocess.run(
        [ps, "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True
    )
    return [line.strip() for line in out.stdout.splitlines() if text in line]
