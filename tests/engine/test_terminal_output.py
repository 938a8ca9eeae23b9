"""What reaches a terminal: values from Okta and the targets never carry control characters
or text-direction controls to it, and a huge value is shortened there (kept in full in the
CSV and JSON files).

The sync runs as a real subprocess (``python -m oktasync``), against the emulators running in
the test's event loop; nasty Okta users are added through the Okta emulator's control
endpoint, as an Okta administrator would create them.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from oktasync import cli, logs
from oktasync_emulators.runner import EmulatorOptions, running_emulators
from tests.engine.harness import write_config
from tests.engine.test_sync_cli import cli as run_cli

APP = "test-app"
HUGE = "x" * 100_000
# What must never reach a terminal: C0 controls (ESC, NUL, BEL, newline...), DEL, C1
# controls, and the Unicode text-direction controls.
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                         "\u2066-\u2069]")
LINE_BOUND = 2_000  # no printed line is longer than this

FAKE_LINE = "app test-app: exit 0 (done), full sync, 0.1s, Okta reads 1"
CONTROL_LOGINS = [
    "esc\x1b[2J\x1b[31mred@example.com",  # clears the screen, turns the rest red
    "nul\x00byte@example.com",
    "bell\x07ring@example.com",
    f"fake\n{FAKE_LINE}@example.com",  # a newline starts a fake summary line
]
HUGE_LOGIN = HUGE + "@example.com"  # 100,012 characters
# usernames the targets refuse since they may spoof another (see test_unsafe_input.py); here
# only what reaches the terminal matters
SPOOFING_LOGINS = [
    "c1\x9b31mcsi@example.com",  # a C1 CSI: an escape sequence in one character
    "rtl\u202egnp.exe@example.com",  # a right-to-left override
]
NASTY_LOGINS = [*CONTROL_LOGINS, HUGE_LOGIN, *SPOOFING_LOGINS]
NASTY_DISPLAY = f"Dana \x1b]0;owned\x07\x1b[2J\n{FAKE_LINE} {HUGE}"


async def add_okta_user(okta_url: str, profile: dict[str, str]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.post(
            okta_url + "/_emulator/users", json={"profile": profile}) as response:
        assert response.status == 201, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


def assert_safe_for_a_terminal(where: str, text: str) -> None:
    match = RAW_CONTROL.search(text)
    assert match is None, f"{where}: raw {match.group()!r} at {match.start()}: " \
                          f"{text[max(0, match.start() - 80):match.start() + 80]!r}"
    for line in text.split("\n"):
        assert len(line) <= LINE_BOUND, f"{where}: a line of {len(line):,} characters: " \
                                        f"{line[:200]!r}..."


def summary_lines(stdout: str) -> list[str]:
    """The lines of the printed summary that start an app's summary."""
    return [line for line in stdout.split("\n") if line.startswith("app ")]


@pytest.mark.asyncio
async def test_nasty_okta_values_reach_the_terminal_escaped_and_shortened(
    tmp_path: Path,
) -> None:
    options = EmulatorOptions(users=12, groups=3, seed=3, ports=(0, 0, 0), okta_rate_scale=0)
    async with running_emulators(options) as running:
        for i, login in enumerate(NASTY_LOGINS):
            await add_okta_user(running.okta_url, {
                "login": login, "email": f"nasty{i}@example.com", "firstName": "Nasty",
                "lastName": f"User{i}"})
        # a display name full of escapes, a newline and 100,000 characters, on an account
        # Confluence already has (adopted by e-mail): Confluence cannot change the name, so
        # the difference is reported, with both names (Okta's as a target would hold it)
        dana = await add_okta_user(running.okta_url, {
            "login": "dana.display@example.com", "email": "dana.display@example.com",
            "firstName": "Dana", "lastName": "Display", "displayName": NASTY_DISPLAY})
        running.confluence.preload(users=[{"name": "dana.display",
                                           "email": "dana.display@example.com",
                                           "displayName": "Dana Old"}])
        path = write_config(tmp_path, running)
        code, out, err = await run_cli("sync", "--config", str(path), cwd=tmp_path)

    assert "Traceback" not in out + err, err[-3000:]
    assert code == 0, (out[-3000:], err[-3000:])
    assert_safe_for_a_terminal("stdout", out)
    assert_safe_for_a_terminal("stderr", err)
    assert len(summary_lines(out)) == 1, summary_lines(out)  # no fake summary line
    # the nasty users are in what was printed, escaped: an administrator can see who they are
    assert "esc\\x1b[2J\\x1b[31mred@example.com" in out, out[-3000:]
    assert "nul\\x00byte@example.com" in out and "bell\\x07ring@example.com" in out
    assert "fake\\napp test-app" in out
    assert "100,012 characters" in out  # the huge login is shortened, its length named

    # the files keep every value in full
    app_dir = tmp_path / "state" / APP
    [findings] = app_dir.glob("findings-*.csv")
    with findings.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    logins = {row["login"] for row in rows}
    for login in (*CONTROL_LOGINS, HUGE_LOGIN):
        assert login in logins, login[:40]
    assert any(HUGE in row["reason"] for row in rows if row["login"] == HUGE_LOGIN), \
        "the huge username in full in the reason"
    assert any("Dana Old" in row["reason"] for row in rows if row["okta_id"] == dana["id"])
    last = json.loads((app_dir / "last-run.json").read_text(encoding="utf-8"))
    problems = [p for t in last["targets"].values() for p in t["problems"]]
    assert {p["login"] for p in problems} >= {*CONTROL_LOGINS, HUGE_LOGIN}
    assert any(HUGE in p["reason"] for p in problems if p["login"] == HUGE_LOGIN)


# -- the CLI's own messages ----------------------------------------------------------------------

@pytest.fixture
def restored_logging() -> Iterator[None]:
    """``cli.main`` configures structlog and logging for the process: put them back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configuration_problems_are_printed_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restored_logging: None,
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(f"""
[[app]]
name = "evil\\u001b[2J\\n{FAKE_LINE}\\u202e{HUGE}"
okta_url = "http://127.0.0.1:9"
okta_token = "x"
targets = []

[state]
dir = "{tmp_path / 'state'}"
""", encoding="utf-8")
    code = cli.main(["--log-format", "human", "sync", "--config", str(bad)])
    captured = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in captured.out + captured.err
    assert_safe_for_a_terminal("stderr", captured.err)
    assert_safe_for_a_terminal("stdout", captured.out)
    lines = [line for line in captured.err.split("\n") if line]
    assert lines[0].startswith("oktasync: configuration problems in ")
    assert all(line.startswith("  - ") for line in lines[1:]), lines
    assert "evil\\x1b[2J\\n" in captured.err


def test_status_prints_a_tampered_last_run_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restored_logging: None,
) -> None:
    config = tmp_path / "oktasync.toml"
    config.write_text(f"""
[[app]]
name = "{APP}"
okta_url = "http://127.0.0.1:9"
okta_token = "x"
targets = ["jira"]

[target.jira]
kind = "jira-dc"
url = "http://127.0.0.1:9"
token = "y"

[state]
dir = "{tmp_path / 'state'}"
""", encoding="utf-8")
    app_dir = tmp_path / "state" / APP
    app_dir.mkdir(parents=True)
    (app_dir / "last-run.json").write_text(json.dumps({
        "run_id": f"r1\n{FAKE_LINE}", "finished": "\x1b[2J\x07", "exit_code": 0,
        "outcome": "done\u202e" + HUGE, "wall_time_s": 1.0}), encoding="utf-8")
    code = cli.main(["status", "--config", str(config)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert_safe_for_a_terminal("stdout", captured.out)
    lines = [line for line in captured.out.split("\n") if line]
    assert all(line.startswith(f"{APP}: ") for line in lines), lines
    assert "r1\\napp test-app" in captured.out


def test_every_log_field_is_escaped(
    capsys: pytest.CaptureFixture[str], restored_logging: None,
) -> None:
    logging.getLogger().handlers.clear()  # as in a fresh process: no pytest handlers
    logs.configure("human", 0)
    log = structlog.get_logger("oktasync.test")
    log.warning(f"event\x1b[2J\n{FAKE_LINE}", login="a\x1b[31mb\x07\x00c\u202ed",
                reason=HUGE, count=3, error=ValueError("bad\nline\x1b[0m"))
    logging.getLogger("oktasync_emulators").error("stdlib too: %s", "x\x1b[2J\ny")
    err = capsys.readouterr().err
    assert_safe_for_a_terminal("the log lines", err)
    lines = [line for line in err.split("\n") if line]
    assert len(lines) == 2, lines
    assert "a\\x1b[31mb\\x07\\x00c\\u202ed" in lines[0] and "count=3" in lines[0]
    assert "100,000" in lines[0]
    assert "x\\x1b[2J\\ny" in lines[1]
