"""Helpers for end-to-end tests: emulators in-process on port 0, a config pointing at them."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from oktasync.config import Config, load_config
from oktasync_emulators.runner import RunningEmulators


def write_config(
    tmp: Path, emulators: RunningEmulators, *, extra_app: str = "", extra_jira: str = "",
    extra_confluence: str = "", targets: tuple[str, ...] = ("jira", "confluence"),
    queue_size: int = 1000, concurrency: int = 16, okta_auth: str | None = None,
) -> Path:
    """A TOML config for one app syncing into the running emulators; ``okta_auth``: the lines
    that authenticate to Okta instead of the emulator's API token (a service app's)."""
    o = emulators.options
    okta_auth = okta_auth if okta_auth is not None else f'okta_token = "{o.okta_token}"'
    target_list = ", ".join(f'"{t}"' for t in targets)
    text = f"""
[[app]]
name = "test-app"
okta_url = "{emulators.okta_url}"
{okta_auth}
username_regex = "(.*)@.*"
username_replacement = "$1"
okta_concurrency = 8
targets = [{target_list}]
{extra_app}

[target.jira]
kind = "jira-dc"
url = "{emulators.jira_url}"
token = "{o.jira_token}"
default_groups = ["jira-software-users"]
protected_users = ["admin"]
concurrency = {concurrency}
{extra_jira}

[target.confluence]
kind = "confluence-dc"
url = "{emulators.confluence_url}"
username = "{o.admin_user}"
password = "{o.admin_password}"
default_groups = ["confluence-users"]
protected_users = ["admin"]
concurrency = {concurrency}
{extra_confluence}

[state]
dir = "{tmp / 'state'}"

[pipeline]
queue_size = {queue_size}
"""
    path = tmp / "oktasync.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)  # it holds the emulators' tokens, written in it
    return path


def load(path: Path) -> Config:
    return load_config(path)


# The tests' own TLS client identity, for emulators served over HTTPS (test_networks sets it:
# the test CA trusted, the client certificate presented); None: the system's defaults.
TEST_CLIENT_TLS: ContextVar[ssl.SSLContext | None] = ContextVar("test_client_tls", default=None)


async def get_json(url: str) -> Any:
    tls = TEST_CLIENT_TLS.get()
    async with aiohttp.ClientSession() as session, session.get(
            url, ssl=True if tls is None else tls) as response:
        response.raise_for_status()
        return await response.json()


async def break_answers(base_url: str, endpoint: str, mode: str, **extra: Any) -> None:
    """Ask an emulator to break its next answer(s) to ``endpoint`` (``METHOD /route``) the way
    ``mode`` says (``POST /_emulator/answers``: html, truncated, wrong-type, empty,
    end-listing; ``path``, ``skip`` and ``times`` narrow it down)."""
    async with aiohttp.ClientSession() as session, session.post(
        base_url + "/_emulator/answers", json={"endpoint": endpoint, "mode": mode, **extra},
    ) as response:
        response.raise_for_status()


async def states(emulators: RunningEmulators) -> dict[str, Any]:
    return {
        "okta": await get_json(emulators.okta_url + "/_emulator/state"),
        "jira": await get_json(emulators.jira_url + "/_emulator/state"),
        "confluence": await get_json(emulators.confluence_url + "/_emulator/state"),
    }


async def stats(emulators: RunningEmulators) -> dict[str, Any]:
    return {
        "okta": await get_json(emulators.okta_url + "/_emulator/stats"),
        "jira": await get_json(emulators.jira_url + "/_emulator/stats"),
        "confluence": await get_json(emulators.confluence_url + "/_emulator/stats"),
    }


def write_requests(stat: dict[str, Any]) -> int:
    """Requests with a writing method, whatever their answer."""
    return sum(v["requests"] for k, v in stat["by_endpoint"].items()
               if k.split(" ", 1)[0] in ("POST", "PUT", "PATCH", "DELETE"))


def read_requests(stat: dict[str, Any]) -> int:
    return sum(v["requests"] for k, v in stat["by_endpoint"].items()
               if k.startswith("GET "))


def endpoint_requests(stat: dict[str, Any], endpoint: str) -> int:
    """Requests to one ``METHOD /route`` (0 when it was never called)."""
    entry = stat["by_endpoint"].get(endpoint)
    return int(entry["requests"]) if entry else 0


def status_count(stat: dict[str, Any], status: int, endpoint: str | None = None) -> int:
    """Answers with this HTTP status, on one endpoint or in total."""
    entry = stat if endpoint is None else stat["by_endpoint"].get(endpoint, {"status": {}})
    return int(entry["status"].get(str(status), 0))


def write_counts(stat: dict[str, Any]) -> dict[str, int]:
    """Requests per writing endpoint: compare two snapshots to see what a run wrote."""
    return {k: v["requests"] for k, v in stat["by_endpoint"].items()
            if k.split(" ", 1)[0] in ("POST", "PUT", "PATCH", "DELETE")}


def revoke_confluence_after(running: RunningEmulators, monkeypatch: pytest.MonkeyPatch,
                            writes: int) -> Callable[[], None]:
    """Test-only: the Confluence emulator rejects the credentials (the password changed) once
    it has applied ``writes`` writes; returns the call that makes them valid again."""
    authenticate = running.confluence.authenticate

    def revoked(request: Any) -> Any:
        if running.confluence.stats.total.writes_applied >= writes:
            return None, "AUTHENTICATED_FAILED"
        return authenticate(request)

    monkeypatch.setattr(running.confluence, "authenticate", revoked)
    return lambda: monkeypatch.setattr(running.confluence, "authenticate", authenticate)


def okta_time_now() -> str:
    """Okta's clock, as the emulators on this machine keep it (second resolution)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
