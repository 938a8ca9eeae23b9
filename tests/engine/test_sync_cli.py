"""What an administrator sees: secrets never shown, configuration mistakes named all at once.

The CLI runs as a real subprocess (``python -m oktasync sync``); where it needs servers, the
emulators run in the test's event loop, which keeps serving while the subprocess runs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from oktasync.engine import SyncOptions, run_sync
from oktasync_emulators.runner import EmulatorOptions, RunningEmulators, running_emulators
from tests.engine.harness import load, states, write_config

APP = "test-app"
SECRETS = {"okta_token": "00SECRET-okta-token-q8Zr4", "jira_token": "SECRET-jira-pat-Xw7v1",
           "admin_password": "SECRET-confluence-pw-Kp3m9"}
WRONG_PASSWORD = "SECRET-wrong-pw-Ty6n2"


@asynccontextmanager
async def secret_estate(users: int = 60) -> AsyncIterator[RunningEmulators]:
    options = EmulatorOptions(users=users, groups=10, seed=5, ports=(0, 0, 0), okta_rate_scale=0,
                              **SECRETS)
    async with running_emulators(options) as running:
        yield running


def forms(secret: str) -> list[str]:
    """A secret as it could leak: itself, inside a Basic header, URL-encoded."""
    basic = base64.b64encode(f"admin:{secret}".encode()).decode()
    return [secret, basic, secret.replace("-", "%2D")]


def assert_no_secret(where: str, text: str) -> None:
    for secret in (*SECRETS.values(), WRONG_PASSWORD):
        for form in forms(secret):
            assert form not in text, f"a secret ({secret[:10]}...) appears in {where}"


async def cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    """The command as a person at a terminal reads it (``--log-format human``; piped, it would
    print JSON lines, which tests/engine/test_logs.py checks)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "oktasync", "--log-format", "human", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# -- 11. secrets ---------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_secrets_appear_in_no_summary_file_or_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    async with secret_estate() as running:
        path = write_config(tmp_path, running)
        config_text = path.read_text(encoding="utf-8")
        assert all(s in config_text for s in SECRETS.values())  # the run really uses them
        printed: list[str] = []
        result = await run_sync(load(path), SyncOptions(), echo=printed.append)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        assert result.summaries[APP]["targets"]["confluence"]["counts"]["users_created"] > 20

        # a rejected password is as secret as the right one
        path.write_text(config_text.replace(SECRETS["admin_password"], WRONG_PASSWORD),
                        encoding="utf-8")
        rejected = await run_sync(load(path), SyncOptions(full=True), echo=printed.append)
        assert rejected.exit_code == 2
        assert "confluence" in " ".join(rejected.summaries[APP]["notes"])

        # and through the CLI, verbose, with the right password again (the stopped run left a
        # checkpoint: resume it)
        path.write_text(config_text, encoding="utf-8")
        code, out, err = await cli("-vv", "sync", "--config", str(path), "--resume",
                                   cwd=tmp_path)
        assert code == 0, err[-2000:]
        assert f"app {APP}: exit 0" in out + err

    assert_no_secret("the printed summary", "\n".join(printed))
    assert_no_secret("the CLI's stdout", out)
    assert_no_secret("the CLI's stderr", err)
    assert_no_secret("the logs", caplog.text)
    captured = capsys.readouterr()
    assert_no_secret("captured output", captured.out + captured.err)
    app_dir = tmp_path / "state" / APP
    files = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert app_dir / "last-run.json" in files
    assert len(list(app_dir.glob("findings-*.csv"))) == 2  # the resumed run appends to its own
    for file in files:
        if file.suffix in (".json", ".csv"):
            assert_no_secret(str(file), file.read_text(encoding="utf-8"))
        else:  # SQLite and the lock: bytes
            data = file.read_bytes()
            for secret in (*SECRETS.values(), WRONG_PASSWORD):
                assert secret.encode() not in data, f"a secret appears in {file}"
    last = json.loads((app_dir / "last-run.json").read_text(encoding="utf-8"))
    assert last["exit_code"] == 0


# -- 12. the CLI with a bad configuration ---------------------------------------------------------

@pytest.mark.asyncio
async def test_cli_names_every_configuration_problem_and_writes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state-never-created"
    bad = tmp_path / "bad.toml"
    bad.write_text(f"""
[[app]]
name = "test-app"
okta_url = "http://127.0.0.1:9"
okta_token = "{SECRETS['okta_token']}"
okta_concurrency = 0
colour = "blue"
targets = ["jira"]

[target.jira]
kind = "jira-cloud"
url = "http://127.0.0.1:9"
token = "{SECRETS['jira_token']}"

[state]
dir = "{state}"
""", encoding="utf-8")
    code, out, err = await cli("sync", "--config", str(bad), cwd=tmp_path)
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    assert "okta_concurrency" in err and "colour" in err and "kind" in err, err
    assert len([line for line in err.splitlines() if line.strip().startswith("- ")]) == 3, err
    assert not state.exists()
    assert_no_secret("stderr", out + err)


@pytest.mark.asyncio
async def test_cli_unknown_app_is_a_usage_error(tmp_path: Path) -> None:
    async with secret_estate(users=20) as running:
        path = write_config(tmp_path, running)
        before = await states(running)
        code, out, err = await cli("sync", "--config", str(path), "--app", "no-such-app",
                                   cwd=tmp_path)
        assert code == 2, (out, err)
        assert "no-such-app" in err and APP in err, err
        assert "Traceback" not in out + err
        assert await states(running) == before
    assert not (tmp_path / "state").exists()


@pytest.mark.asyncio
async def test_cli_jira_rejecting_the_token_is_exit_2_without_a_traceback(
    tmp_path: Path,
) -> None:
    async with secret_estate(users=20) as running:
        path = write_config(tmp_path, running)
        path.write_text(path.read_text(encoding="utf-8").replace(
            SECRETS["jira_token"], "SECRET-not-the-jira-token"), encoding="utf-8")
        code, out, err = await cli("sync", "--config", str(path), cwd=tmp_path)
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    said = out + err
    assert "jira rejected the credentials (HTTP 401)" in said, said[-2000:]
    assert "SECRET-not-the-jira-token" not in said
    assert_no_secret("the CLI's output", said)
