"""Logs (issue 13): JSON lines when piped, text on a terminal, the run's context on every
line, -v / -q, and no configured secret anywhere in what is printed — exceptions included."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from oktasync import cli, logs
from oktasync.config import load_config
from oktasync_emulators.runner import EmulatorOptions, running_emulators
from tests.engine.harness import write_config

SECRETS = {"okta_token": "okta-SSWS-00aaBBccDDee", "jira token": "jira-PAT-11ffGGhhIIjj",
           "confluence password": "conf-pass-22kkLLmm", "okta_hook_secret": "hook-33nnOOppQQ",
           "login_hook_secret": "login-44rrSSttUU", "okta proxy password": "oproxy-55vvWWxx",
           "jira proxy password": "jproxy-66yyZZaa"}
OKTA_KEY = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption()).decode()


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
    logs.REDACTOR.set(())


def config_with_every_secret(tmp_path: Path) -> Path:
    path = tmp_path / "oktasync.toml"
    (tmp_path / "okta-key.pem").write_text(OKTA_KEY, encoding="utf-8")
    path.write_text(f"""
[[app]]
name = "corp"
okta_url = "https://example.okta.com"
okta_token = "{SECRETS['okta_token']}"
targets = ["jira", "confluence"]
changes = "both"
okta_hook_secret = "{SECRETS['okta_hook_secret']}"
login_hook_secret = "{SECRETS['login_hook_secret']}"

[[app]]
name = "corp-oauth"
okta_url = "https://example.okta.com"
okta_auth = "oauth"
okta_client_id = "0oa-service-app"
okta_private_key = "file:okta-key.pem"
okta_proxy = "http://proxy.corp:3128"
okta_proxy_username = "svc"
okta_proxy_password = "{SECRETS['okta proxy password']}"
targets = ["jira"]

[target.jira]
kind = "jira-dc"
url = "https://jira.example.com"
token = "{SECRETS['jira token']}"
proxy = "http://proxy.corp:3128"
proxy_username = "svc"
proxy_password = "{SECRETS['jira proxy password']}"

[target.confluence]
kind = "confluence-dc"
url = "https://confluence.example.com"
username = "svc"
password = "{SECRETS['confluence password']}"

[state]
dir = "{tmp_path / 'state'}"
""", encoding="utf-8")
    return path


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line]


def test_every_secret_kind_is_redacted_from_lines_and_exceptions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restored_logging: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(cli.OUTPUT, "json", True)  # as `main` sets it for --log-format json
    config = load_config(config_with_every_secret(tmp_path))
    kinds = {**SECRETS,
             "basic credentials": base64.b64encode(
                 f"svc:{SECRETS['confluence password']}".encode()).decode(),
             "OAuth private key": OKTA_KEY.splitlines()[1],
             "OAuth access token": "eyJraWQiOiJhY2Nlc3MtdG9rZW4tb2YtYS1zZXJ2aWNlLWFwcCJ9"}
    assert set(kinds.values()) - set(config.secret_values()) == {kinds["OAuth access token"]}
    logs.configure("json", 0)
    logs.REDACTOR.set(config.secret_values())
    logs.REDACTOR.add(kinds["OAuth access token"])  # as oauth.py does with each token issued
    log = structlog.get_logger("oktasync.test")
    for kind, secret in kinds.items():
        log.warning(f"a server said {secret}", kind=kind, header=f"Bearer {secret}",
                    nested={"token": secret})
        try:
            raise RuntimeError(f"request failed with Authorization: SSWS {secret}")
        except RuntimeError:
            log.exception("failed", kind=kind)
        logging.getLogger("aiohttp.client").error("stdlib line with %s", secret)
    cli._print_summary("corp", {"problems": [{"reason": f"HTTP 400: bad token {secret}"}]})
    captured = capsys.readouterr()
    for secret in kinds.values():
        assert secret not in captured.err + captured.out
    lines = json_lines(captured.err)
    assert len(lines) == 3 * len(kinds)
    assert all("***" in line["event"] for line in lines if line["event"] != "failed")
    assert all("***" in line["exception"] and "RuntimeError" in line["exception"]
               for line in lines if line["event"] == "failed")
    assert "***" in captured.out


def test_lines_go_to_the_stderr_of_the_moment(restored_logging: None) -> None:
    """A live display swaps sys.stderr for a proxy: lines must follow it."""
    logs.configure("json", 0)
    swapped = io.StringIO()
    real, sys.stderr = sys.stderr, swapped
    try:
        structlog.get_logger("oktasync.test").info("after the swap", n=1)
        logging.getLogger("aiohttp.access").warning("stdlib after the swap")
    finally:
        sys.stderr = real
    lines = json_lines(swapped.getvalue())
    assert [line["event"] for line in lines] == ["after the swap", "stdlib after the swap"]
    assert lines[1]["logger"] == "aiohttp.access" and lines[0]["level"] == "info"


def test_quiet_verbose_and_human(capsys: pytest.CaptureFixture[str],
                                 restored_logging: None) -> None:
    log = structlog.get_logger("oktasync.test")
    logs.configure("json", -1)
    log.info("hidden by -q")
    log.warning("shown by -q")
    logs.configure("json", 1)
    log.debug("shown by -v")
    assert [line["event"] for line in json_lines(capsys.readouterr().err)] == [
        "shown by -q", "shown by -v"]
    logs.configure("human", 0)
    log.debug("hidden without -v")
    with structlog.contextvars.bound_contextvars(app="corp", run_id="r1"):
        log.info("a person reads this", target="jira")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not err.startswith("{")
    assert "a person reads this" in err and "app=corp" in err and "run_id=r1" in err


def test_a_piped_run_prints_json_lines_only_with_the_runs_context(tmp_path: Path) -> None:
    """stdout: the summary, one JSON line; stderr: every line JSON, those of the run with its
    app and run id (the Confluence licence fills up, so the run has lines to say)."""
    async def run() -> subprocess.CompletedProcess[str]:
        async with running_emulators(EmulatorOptions(
                users=60, groups=4, ports=(0, 0, 0), okta_rate_scale=0,
                confluence_seats=20)) as running:
            path = write_config(tmp_path, running)
            return await asyncio.to_thread(subprocess.run, [
                sys.executable, "-m", "oktasync", "-v", "sync", "--config", str(path)],
                capture_output=True, text=True, timeout=120, check=False)

    done = asyncio.run(run())
    assert done.returncode == 1, done.stderr[-2000:]  # creates refused: the licence is full
    out, err = json_lines(done.stdout), json_lines(done.stderr)  # raises if a line is not JSON
    assert len(out) == 1 and out[0]["app"] == "test-app"
    assert out[0]["targets"]["confluence"]["counts"]["refused"] > 0
    run_id = out[0]["run_id"]
    licence = [line for line in err if line["event"].startswith("licence full")]
    assert licence and all(line["run_id"] == run_id and line["app"] == "test-app"
                           and line["target"] == "confluence" for line in licence)
    assert all({"timestamp", "level", "event"} <= set(line) for line in err)
    writes = [line for line in err if line["event"] == "write"]  # -v: every write
    assert writes and all(line["target"] in ("jira", "confluence") and line["operation"]
                          and line["phase"] in ("reading", "users", "removals")
                          for line in writes)
