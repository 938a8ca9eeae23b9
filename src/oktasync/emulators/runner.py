"""Start the three emulators together: from tests (in-process, port 0) or from `oktasync emulate`.

One options object describes a whole emulated estate (directory size, latency, limits, faults),
so the CLI, the demo, the tests and the benchmarks all start exactly the same servers.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from oktasync.emulators.atlassian_base import AtlassianRate
from oktasync.emulators.common import FaultConfig
from oktasync.emulators.confluence import ConfluenceEmulator
from oktasync.emulators.directory import generate_directory
from oktasync.emulators.jira import JiraEmulator
from oktasync.emulators.okta import OktaEmulator, OktaRateConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORTS = (8471, 8472, 8473)  # okta, jira, confluence
DEMO_OKTA_TOKEN = "00demo-oktasync-okta-api-token"
DEMO_ADMIN_USER = "admin"
DEMO_ADMIN_PASSWORD = "admin"
DEMO_JIRA_TOKEN = "demo-jira-personal-access-token"
DEMO_CONFLUENCE_TOKEN = "demo-confluence-personal-access-token"


@dataclass
class EmulatorOptions:
    """Everything that shapes an emulated Okta + Jira + Confluence estate."""

    users: int = 1000
    groups: int = 40
    seed: int = 1
    memberships: int | None = None  # total memberships; None: the generator's default density
    latency_ms: float = 0.0
    okta_rate_scale: float = 1.0  # 0 turns Okta's limits off
    okta_window_s: float = 60.0
    atlassian_rate: AtlassianRate | None = None  # None: rate limiting off, as on a fresh install
    fail_rate: float = 0.0
    ambiguous_rate: float = 0.0
    host: str = DEFAULT_HOST
    ports: tuple[int, int, int] = DEFAULT_PORTS
    okta_token: str = DEMO_OKTA_TOKEN
    admin_user: str = DEMO_ADMIN_USER
    admin_password: str = DEMO_ADMIN_PASSWORD
    jira_token: str = DEMO_JIRA_TOKEN
    confluence_token: str = DEMO_CONFLUENCE_TOKEN
    jira_version: str = "10.3.4"
    confluence_seats: int | None = None  # None: unlimited licence
    okta_search_lag_s: float = 0.0
    confluence_index_lag_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def faults(self, salt: int) -> FaultConfig:
        return FaultConfig(
            latency_ms=self.latency_ms,
            fail_rate=self.fail_rate,
            ambiguous_rate=self.ambiguous_rate,
            seed=self.seed * 1000 + salt,
        )


@dataclass
class RunningEmulators:
    """The three live emulators and where they listen."""

    okta: OktaEmulator
    jira: JiraEmulator
    confluence: ConfluenceEmulator
    okta_url: str
    jira_url: str
    confluence_url: str
    options: EmulatorOptions

    def info(self) -> dict[str, Any]:
        """The JSON line `oktasync emulate` prints: where each server is and how to sign in."""
        o = self.options
        return {
            "okta": {"url": self.okta_url, "token": o.okta_token},
            "jira": {
                "url": self.jira_url,
                "username": o.admin_user,
                "password": o.admin_password,
                "token": o.jira_token,
            },
            "confluence": {
                "url": self.confluence_url,
                "username": o.admin_user,
                "password": o.admin_password,
                "token": o.confluence_token,
            },
        }


def build_emulators(
    options: EmulatorOptions,
) -> tuple[OktaEmulator, JiraEmulator, ConfluenceEmulator]:
    """Create (not start) the three emulators an options object describes."""
    directory = generate_directory(
        users=options.users, groups=options.groups, seed=options.seed,
        memberships=options.memberships,
    )
    okta = OktaEmulator(
        directory,
        token=options.okta_token,
        faults=options.faults(1),
        rate=OktaRateConfig(scale=options.okta_rate_scale, window_s=options.okta_window_s),
        search_lag_s=options.okta_search_lag_s,
    )
    jira = JiraEmulator(
        username=options.admin_user,
        password=options.admin_password,
        token=options.jira_token,
        faults=options.faults(2),
        rate=options.atlassian_rate,
        version=options.jira_version,
    )
    confluence = ConfluenceEmulator(
        username=options.admin_user,
        password=options.admin_password,
        token=options.confluence_token,
        faults=options.faults(3),
        rate=options.atlassian_rate,
        seats=options.confluence_seats,
        index_lag_s=options.confluence_index_lag_s,
    )
    return okta, jira, confluence


async def _start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = next((s.getsockname()[1] for s in sockets if s.family == socket.AF_INET), port)
    return runner, f"http://{host}:{bound}"


@asynccontextmanager
async def running_emulators(options: EmulatorOptions) -> AsyncIterator[RunningEmulators]:
    """Start all three emulators, yield where they listen, stop them on exit."""
    okta, jira, confluence = build_emulators(options)
    runners: list[web.AppRunner] = []
    try:
        urls = []
        apps = [okta.make_app(), jira.make_app(), confluence.make_app()]
        for app, port in zip(apps, options.ports, strict=True):
            runner, url = await _start(app, options.host, port)
            runners.append(runner)
            urls.append(url)
        yield RunningEmulators(okta, jira, confluence, okta_url=urls[0], jira_url=urls[1],
                               confluence_url=urls[2], options=options)
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
