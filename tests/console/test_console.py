"""The web console of `oktasync serve`, end to end in a real headless browser (Debian's
chromium through Selenium) and, for its refusals, with a plain HTTP client.

The service runs as a real subprocess against the emulators (in the test's event loop; the
browser is driven from a worker thread so that they keep answering). The scenario: sign in;
open an app's settings; change the scheduler interval and a switch; Save (the file changed,
its comments kept); Synchronize; watch the progress reach 100 %; open the run's report and
download its audit CSV. Screenshots of the settings page and of the running sync are written
where ``OKTASYNC_SCREENSHOTS`` says (the README's), else into the test's directory.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from oktasync.config import load_config
from oktasync.ownership import Held, Ownership
from oktasync.passwords import check_password, hash_password
from oktasync.serve import Service
from oktasync_emulators.runner import RunningEmulators
from tests.console.browser import screenshot, wait_for, wait_for_download
from tests.engine.harness import states, stats, write_config
from tests.engine.service import free_port
from tests.engine.test_sync_behaviour import APP, estate

PASSWORD = "correct horse battery staple"


@asynccontextmanager
async def console_service(tmp_path: Path, running: RunningEmulators) -> AsyncIterator[str]:
    """`oktasync serve` with the console on, its first sync done; its base URL."""
    port = free_port()
    path = write_config(tmp_path, running, extra_app='schedule = "1h"\n# the team\'s note\n')
    path.write_text(path.read_text() + f'\n[serve]\nlisten = "127.0.0.1:{port}"\n'
                    f'console = true\nconsole_password_hash = "{hash_password(PASSWORD)}"\n')
    service = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "oktasync", "serve", "--config", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert service.stdout is not None
        ready = await asyncio.wait_for(service.stdout.readline(), timeout=30)
        assert f"127.0.0.1:{port}" in ready.decode()
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):  # the sync at start, done
            async with aiohttp.ClientSession() as s, s.get(base + "/healthz") as r:
                health = await r.json()
            if health["apps"][APP]["last_exit_code"] is not None:
                break
            await asyncio.sleep(0.1)
        yield base
    finally:
        service.terminate()
        await service.communicate()


def scenario(driver: WebDriver, base: str, config: Path, downloads: Path, shots: Path) -> None:
    driver.get(base + "/")
    assert driver.current_url.endswith("/login")  # no session: the sign-in page
    wait_for(driver, "#password").send_keys("not the password")
    driver.find_element(By.ID, "sign-in").click()
    assert "wrong password" in wait_for(driver, "#login-error").text
    wait_for(driver, "#password").send_keys(PASSWORD)
    driver.find_element(By.ID, "sign-in").click()
    wait_for(driver, f"#app-{APP}")

    driver.find_element(By.ID, f"test-{APP}").click()  # each server, a verdict per check
    wait_for(driver, ".verdict")
    verdicts = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".verdict")]
    assert len(verdicts) == 3 + 3 + 3 and set(verdicts) == {"passed"}, verdicts
    driver.find_element(By.ID, "test-jira").click()  # one server alone
    wait_for(driver, ".verdict")
    assert [e.text for e in driver.find_elements(By.TAG_NAME, "h2")] == ["jira"]
    driver.get(base + "/")
    wait_for(driver, f"#settings-{APP}").click()
    schedule = wait_for(driver, "#schedule")
    schedule.clear()
    schedule.send_keys("2h")
    update = driver.find_element(By.ID, "update_users")
    if update.is_selected():
        update.click()
    screenshot(driver, shots / "console-settings.png")
    driver.find_element(By.ID, "save").click()
    assert "saved and reloaded" in wait_for(driver, "#flash").text
    text = config.read_text()
    assert 'schedule = "2h"' in text and "update_users = false" in text
    assert "# the team's note" in text  # comments and layout kept

    driver.find_element(By.ID, f"incremental-{APP}").click()
    wait_for(driver, "#tasks")
    state = wait_for(driver, "#state")
    pictured, midway = False, False
    for _ in range(600):  # the servers answer slowly: the run is seen as it goes
        if state.get_attribute("data-finished") == "yes":
            break
        shown = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".pct")]
        between = any(p not in ("0%", "100%") for p in shown)
        if state.text.startswith("running") and shown and not midway and (
                between or not pictured):  # the first frame, bettered by one midway
            screenshot(driver, shots / "console-sync.png")
            pictured, midway = True, between
        time.sleep(0.1)
    assert state.get_attribute("data-finished") == "yes", state.text
    assert pictured, "the live view never showed the run going"
    percents = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".pct")]
    assert percents and all(p == "100%" for p in percents), percents

    driver.get(base + f"/apps/{APP}/history")
    wait_for(driver, ".run-link").click()
    assert "exit" in wait_for(driver, "#outcome").text
    link = wait_for(driver, "#audit-csv")  # the run deactivated the suspended user
    name = driver.current_url.rsplit("/", 1)[1] + ".audit.csv"  # the run's own file name
    link.click()
    with wait_for_download(downloads, name).open(encoding="utf-8") as audit:
        rows = list(csv.reader(audit))
    assert rows[0][:3] == ["time", "run_id", "target"], rows[0]
    assert any(row[3] == "deactivate_user" for row in rows[1:]), rows


@pytest.mark.asyncio
@pytest.mark.timeout(240)
async def test_sign_in_save_settings_synchronize_watch_and_download_in_a_browser(
        tmp_path: Path, browser: WebDriver, download_dir: Path) -> None:
    shots = Path(os.environ.get("OKTASYNC_SCREENSHOTS", tmp_path / "shots"))
    async with estate(users=60) as running, console_service(tmp_path, running) as base:
        config = tmp_path / "oktasync.toml"
        # a change in Okta, so the Synchronize run writes something (and has an audit): a
        # synced user suspended
        synced = {u["name"] for u in (await states(running))["jira"]["users"] if u["active"]}
        okta = (await states(running))["okta"]
        leaver = next(u for u in okta["users"] if u["status"] == "ACTIVE"
                      and u["profile"]["login"].split("@")[0].lower() in synced)
        running.okta.directory.set_status(leaver["id"], "SUSPENDED")
        for server in (running.okta, running.jira, running.confluence):
            server.faults.latency_ms = 150  # the Synchronize run lasts a few seconds
        await asyncio.to_thread(scenario, browser, base, config, download_dir, shots)
    assert (shots / "console-settings.png").stat().st_size > 1000
    assert (shots / "console-sync.png").stat().st_size > 1000


@pytest.mark.asyncio
async def test_no_session_no_token_and_wrong_passwords_are_refused(tmp_path: Path) -> None:
    async with estate(users=20) as running, console_service(tmp_path, running) as base:
        async with aiohttp.ClientSession() as client:  # no session
            async with client.get(base + "/", allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/login"
            async with client.post(base + f"/apps/{APP}/run", data={"kind": "full"},
                                   allow_redirects=False) as r:
                assert r.status == 401
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as user:
            async with user.post(base + "/login", data={"password": PASSWORD}) as r:
                assert r.status == 200 and "Apps" in await r.text()  # signed in
            async with user.post(base + f"/apps/{APP}/run", data={"kind": "full"},
                                 allow_redirects=False) as r:
                assert r.status == 403  # a session, but no anti-forgery token
                assert "anti-forgery token" in await r.text()
            async with user.post(base + f"/apps/{APP}/run", allow_redirects=False,
                                 data={"kind": "full", "csrf": "ünïcode-forgery"}) as r:
                assert r.status == 403  # a wrong one, whatever its characters
            for _ in range(5):
                async with user.post(base + "/login", data={"password": "nope"}) as r:
                    assert r.status == 401
            async with user.post(base + "/login", data={"password": PASSWORD}) as r:
                assert r.status == 429  # rate-limited, even with the right password


@pytest.mark.asyncio
async def test_a_console_password_from_a_file_signs_in(tmp_path: Path) -> None:
    """``console_password`` as a secret (here ``file:``) instead of a hash; and the file's
    problems: the console without any password, a hash that is not one of ours."""
    (tmp_path / "console.pw").write_text(PASSWORD + "\n")
    (tmp_path / "console.pw").chmod(0o600)
    async with estate(users=20) as running:
        port = free_port()
        path = write_config(tmp_path, running)
        base_text = path.read_text() + f'\n[serve]\nlisten = "127.0.0.1:{port}"\nconsole = true\n'
        for extra, problem in (("", "serve.console: needs console_password_hash"),
                               ('console_password_hash = "plain"\n',
                                "serve.console_password_hash: is not a hash")):
            path.write_text(base_text + extra)
            done = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "oktasync", "config", "check", "--config", str(path),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            _, err = await done.communicate()
            assert done.returncode == 2 and problem in err.decode(), err.decode()
        path.write_text(base_text + f'console_password = "file:{tmp_path / "console.pw"}"\n')
        service = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "oktasync", "serve", "--config", str(path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            assert service.stdout is not None
            await asyncio.wait_for(service.stdout.readline(), timeout=30)
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as user, \
                    user.post(f"http://127.0.0.1:{port}/login", data={"password": PASSWORD}) as r:
                assert r.status == 200 and "Apps" in await r.text()
        finally:
            service.terminate()
            await service.communicate()


@pytest.mark.asyncio
async def test_a_preview_writes_nothing_and_its_plan_downloads(tmp_path: Path) -> None:
    async with estate(users=30) as running, console_service(tmp_path, running) as base:
        synced = {u["name"] for u in (await states(running))["jira"]["users"] if u["active"]}
        okta = (await states(running))["okta"]
        leaver = next(u for u in okta["users"] if u["status"] == "ACTIVE"
                      and u["profile"]["login"].split("@")[0].lower() in synced)
        running.okta.directory.set_status(leaver["id"], "SUSPENDED")
        writes_before = (await stats(running))["jira"]["writes_applied"]
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as user:
            async with user.post(base + "/login", data={"password": PASSWORD}) as r:
                page = await r.text()
            csrf = re.search(r'name="csrf" value="([^"]+)"', page)
            assert csrf is not None
            async with user.post(base + f"/apps/{APP}/run",
                                 data={"kind": "preview", "csrf": csrf.group(1)}) as r:
                assert r.status == 200 and "the run as it goes" in await r.text()
            for _ in range(300):  # the preview's end
                async with user.get(base + "/healthz") as r:
                    health = await r.json()
                if health["apps"][APP]["runs"] == 2 and \
                        health["apps"][APP]["last_finished"] is not None and \
                        health["apps"][APP]["last_finished"] > health["apps"][APP][
                            "last_started"]:
                    break
                await asyncio.sleep(0.1)
            async with user.get(base + f"/apps/{APP}/history") as r:
                history = await r.text()
            assert 'id="history-chart"' in history and 'id="no-held"' in history
            newest = re.search(r'href="(/apps/[^"]+/runs/[^"]+)" class="run-link"', history)
            assert newest is not None
            async with user.get(base + newest.group(1)) as r:
                report = await r.text()
            assert 'id="plan-csv"' in report
            async with user.get(base + newest.group(1) + "/plan.csv") as r:
                plan = await r.text()
                assert r.status == 200 and "attachment" in r.headers["Content-Disposition"]
            assert "deactivate_user" in plan
        assert (await stats(running))["jira"]["writes_applied"] == writes_before  # a preview


@pytest.mark.asyncio
async def test_settings_problems_show_beside_their_field_and_leave_the_file_alone(
        tmp_path: Path) -> None:
    async with estate(users=20) as running, console_service(tmp_path, running) as base:
        config = tmp_path / "oktasync.toml"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as user:
            async with user.post(base + "/login", data={"password": PASSWORD}) as r:
                csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())
            assert csrf is not None
            form = {"csrf": csrf.group(1), "okta_url": running.okta_url,
                    "username_regex": "(.*)@.*", "username_replacement": "$1",
                    "import_users": "true", "update_users": "true",
                    "sync_user_status": "true", "targets": '["jira", "confluence"]'}
            before = config.read_text()
            async with user.post(base + f"/apps/{APP}/settings",
                                 data={**form, "schedule": "1 minute"}) as r:
                page = await r.text()
                assert r.status == 400 and 'id="error-schedule"' in page
            async with user.post(base + f"/apps/{APP}/settings",
                                 data={**form, "schedule": "1h",
                                       "max_deactivations": "not toml ["}) as r:
                assert r.status == 400 and 'id="error-max_deactivations"' in await r.text()
            assert config.read_text() == before  # nothing written
            async with user.post(base + f"/apps/{APP}/settings",
                                 data={**form, "schedule": "1h", "max_deactivations": "5",
                                       "okta_token": "00new-okta-token-typed-in"}) as r:
                assert r.status == 200 and "saved and reloaded" in await r.text()
        text = config.read_text()
        assert "max_deactivations = 5" in text and "00new-okta-token-typed-in" not in text
        secret = tmp_path / "state" / "secrets" / f"{APP}.okta_token"
        assert f'okta_token = "file:{secret}"' in text
        assert secret.read_text() == "00new-okta-token-typed-in"
        assert secret.stat().st_mode & 0o777 == 0o600


@pytest.mark.asyncio
async def test_a_second_run_is_refused_politely_while_one_is_going(tmp_path: Path) -> None:
    async with estate(users=40) as running, console_service(tmp_path, running) as base:
        running.okta.faults.latency_ms = 300  # the full sync takes seconds
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as user:
            async with user.post(base + "/login", data={"password": PASSWORD}) as r:
                csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())
            assert csrf is not None
            async with user.post(base + f"/apps/{APP}/run", allow_redirects=False,
                                 data={"kind": "full", "csrf": csrf.group(1)}) as r:
                assert r.status == 303 and "/live" in r.headers["Location"]
            async with user.post(base + f"/apps/{APP}/run",
                                 data={"kind": "incremental", "csrf": csrf.group(1)}) as r:
                page = await r.text()
            assert f"a run of {APP} is going: wait for it to end" in page
            assert 'id="flash"' in page


def test_hash_password_prints_a_hash_that_checks_and_refuses_short_ones() -> None:
    done = subprocess.run([sys.executable, "-m", "oktasync", "console", "hash-password"],
                          input=PASSWORD + "\n", capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0 and PASSWORD not in done.stdout + done.stderr
    assert check_password(PASSWORD, done.stdout.strip())
    short = subprocess.run([sys.executable, "-m", "oktasync", "console", "hash-password"],
                           input="short\n", capture_output=True, text=True, timeout=60,
                           check=False)
    assert short.returncode == 2 and "at least 12 characters" in short.stderr


@pytest.mark.asyncio
async def test_held_deactivations_are_listed_and_released_from_the_history_page(
        tmp_path: Path) -> None:
    async with estate(users=30) as running, console_service(tmp_path, running) as base:
        now = await states(running)
        synced = {u["name"] for u in now["jira"]["users"] if u["active"]}
        leaver = next(u for u in now["okta"]["users"] if u["status"] == "ACTIVE"
                      and u["profile"]["login"].split("@")[0].lower() in synced)
        name = leaver["profile"]["login"].split("@")[0].lower()
        running.okta.directory.set_status(leaver["id"], "SUSPENDED")
        ownership = Ownership(tmp_path / "state" / "state.db")  # as an event run holds one
        ownership.hold(APP, [Held("jira", name, leaver["id"], time.time(),
                                  "past deactivation_window")])
        ownership.close()
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as user:
            async with user.post(base + "/login", data={"password": PASSWORD}) as r:
                csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())
            assert csrf is not None
            async with user.get(base + f"/apps/{APP}/history") as r:
                page = await r.text()
            assert 'id="held"' in page and name in page
            async with user.post(base + f"/apps/{APP}/held/release",
                                 data={"csrf": csrf.group(1)}) as r:
                assert "released" in await r.text()
            for _ in range(100):
                jira = (await states(running))["jira"]["users"]
                if not next(u for u in jira if u["name"] == name)["active"]:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"{name} still active in Jira after the release")
            async with user.get(base + f"/apps/{APP}/history") as r:
                assert 'id="no-held"' in await r.text()


def test_a_console_on_a_non_loopback_address_without_tls_is_warned_about(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Checked on the application the service builds, without listening anywhere."""
    path = tmp_path / "oktasync.toml"
    base = ('[[app]]\nname = "corp"\nokta_url = "https://example.okta.com"\n'
            'okta_token = "00okta-token-value"\ntargets = ["jira"]\n'
            '[target.jira]\nkind = "jira-dc"\nurl = "https://jira.example.com"\n'
            'token = "jira-token-value"\n'
            f'[state]\ndir = "{tmp_path / "state"}"\n[serve]\nconsole = true\n'
            f'console_password_hash = "{hash_password(PASSWORD)}"\n')
    for listen, warned in (("127.0.0.1:8787", False), ("0.0.0.0:8787", True)):
        path.write_text(base + f'listen = "{listen}"\n')
        path.chmod(0o600)
        Service(load_config(path))._web_app()
        out = capsys.readouterr()
        assert ("the console is served over plain http" in out.out + out.err) is warned
