"""Start the three emulators together: from tests (in-process, port 0) or from `oktasync-emulate`.

One options object describes a whole emulated estate (directory size, latency, limits, faults),
so the CLI, the demo, the tests and the benchmarks all start exactly the same servers.
"""

from __future__ import annotations

import math
import multiprocessing
import socket
import ssl
import unicodedata
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from oktasync_emulators import confluence as confluence_module
from oktasync_emulators import jira as jira_module
from oktasync_emulators.atlassian_base import AtlassianRate
from oktasync_emulators.common import FaultConfig
from oktasync_emulators.confluence import ConfluenceEmulator
from oktasync_emulators.defaults import (
    DEFAULT_HOST,
    DEFAULT_PORTS,
    DEMO_ADMIN_PASSWORD,
    DEMO_ADMIN_USER,
    DEMO_CONFLUENCE_TOKEN,
    DEMO_JIRA_TOKEN,
    DEMO_OKTA_TOKEN,
)
from oktasync_emulators.directory import (
    SHOWCASE,
    SIGN_IN_STATUSES,
    AnyDirectory,
    LazyDirectory,
    LazyParts,
    cumulative_weights,
    draw_groups,
    generate_directory,
    generate_group,
    generate_user,
    lazy_parts,
    membership_share,
    user_identity,
)
from oktasync_emulators.eventhooks import DeliveryOptions
from oktasync_emulators.jira import JiraEmulator
from oktasync_emulators.oauth import OAuthClient
from oktasync_emulators.okta import OktaEmulator, OktaRateConfig

# From this many users, --lazy with --preload-fraction builds the lazy directory in a second
# process while preloading (below it, the process start costs more than it saves).
PARALLEL_START_USERS = 200_000


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
    fail_retry_after: int | None = None  # Retry-After on the injected 503s (None: none)
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
    okta_log_delay_ms: float = 0.0  # System Log events become readable this long after
    hook_ca_file: str | None = None  # CAs the event hook deliveries trust (HTTPS only)
    hook_duplicate: float = 0.0  # share of event hook deliveries sent twice
    hook_reorder: bool = False  # events and deliveries out of order
    hook_delay_s: float = 0.0  # before each delivery
    confluence_index_lag_s: float = 0.0
    lazy: bool = False  # Okta users generated from the seed as they are read (read-only)
    preload_fraction: float = 0.0  # share of the desired state Jira and Confluence start with
    # HTTPS: the servers' certificate chain and key (PEM files; the key may be in tls_cert)
    tls_cert: str | None = None
    tls_key: str | None = None
    # mutual TLS: a client must present a certificate signed by these CAs (PEM), or the
    # handshake fails; needs tls_cert
    tls_client_ca: str | None = None
    oauth_clients: list[OAuthClient] = field(default_factory=list)  # Okta service apps
    extra: dict[str, Any] = field(default_factory=dict)

    def server_ssl_context(self, *, mutual: bool = True) -> ssl.SSLContext | None:
        """The TLS context a server listens with; None: plain HTTP (the default). ``mutual``
        False: no client certificate asked for whatever ``tls_client_ca`` says (Okta's API:
        the real one does not do mutual TLS)."""
        if self.tls_cert is None:
            if self.tls_key is not None or self.tls_client_ca is not None:
                raise ValueError("tls_key and tls_client_ca need tls_cert")
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_cert, self.tls_key)
        if self.tls_client_ca is not None and mutual:
            context.load_verify_locations(cafile=self.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def faults(self, salt: int) -> FaultConfig:
        return FaultConfig(
            latency_ms=self.latency_ms,
            fail_rate=self.fail_rate,
            fail_retry_after=self.fail_retry_after,
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
        """The JSON line `oktasync-emulate` prints: where each server is and how to sign in."""
        o = self.options
        okta: dict[str, Any] = {"url": self.okta_url, "token": o.okta_token}
        if o.oauth_clients:
            okta["oauth_clients"] = self.okta.oauth.describe()
        return {
            "okta": okta,
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
    directory: AnyDirectory
    pool: ProcessPoolExecutor | None = None
    parts: Future[LazyParts] | None = None
    if options.lazy and options.preload_fraction > 0 and options.users >= PARALLEL_START_USERS:
        # The lazy directory's arrays are computed in a second process while this one preloads
        # the targets: a million users start in about half the time on two cores.
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        parts = pool.submit(lazy_parts, options.users, options.groups, options.seed,
                            options.memberships)
    try:
        jira, confluence = _atlassian(options)
        if parts is not None:
            directory = LazyDirectory(options.users, options.groups, options.seed,
                                      options.memberships, parts=parts.result())
        elif options.lazy:
            directory = LazyDirectory(options.users, options.groups, options.seed,
                                      options.memberships)
        else:
            directory = generate_directory(
                users=options.users, groups=options.groups, seed=options.seed,
                memberships=options.memberships,
            )
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    okta = OktaEmulator(
        directory,
        token=options.okta_token,
        faults=options.faults(1),
        rate=OktaRateConfig(scale=options.okta_rate_scale, window_s=options.okta_window_s),
        search_lag_s=options.okta_search_lag_s,
        log_delay_s=options.okta_log_delay_ms / 1000.0,
        hooks=DeliveryOptions(duplicate=options.hook_duplicate, reorder=options.hook_reorder,
                              delay_s=options.hook_delay_s, ca_file=options.hook_ca_file,
                              seed=options.seed),
        oauth_clients=options.oauth_clients,
    )
    return okta, jira, confluence


def _atlassian(options: EmulatorOptions) -> tuple[JiraEmulator, ConfluenceEmulator]:
    """Jira and Confluence as the options describe, preloaded when asked."""
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
    if options.preload_fraction > 0:
        preload_targets(options, jira, confluence)
    return jira, confluence


# --------------------------------------------------------------------------- --preload-fraction

# Mirrors the demo config (config/demo.toml): username_regex "(.*)@.*" with replacement "$1",
# then NFC and lower-case as the engine does; in-scope groups of the default ``group_types``
# (OKTA_GROUP, APP_GROUP: the BUILT_IN Everyone is out) keep their Okta names, plus each target's
# ``default_groups``. Change these together with the demo config.
PRELOAD_GROUP_TYPES = frozenset({"OKTA_GROUP", "APP_GROUP"})
JIRA_DEFAULT_GROUP = "jira-software-users"
CONFLUENCE_DEFAULT_GROUP = "confluence-users"
PRELOAD_CHUNK = 2000


def demo_username(login: str) -> str:
    """The engine's username for a login under the demo rule ``(.*)@.*`` -> ``$1``.

    Java's ``replaceFirst`` with a greedy ``(.*)``: everything before the last ``@``; a login
    without ``@`` stays whole. Then NFC and ``str.lower()``, as the engine keys names.
    """
    local, at, _ = login.rpartition("@")
    return unicodedata.normalize("NFC", local if at else login).lower()


def full_name(first: str | None, last: str | None, display: str | None, login: str) -> str:
    """The display name the engine writes: ``displayName``, else first and last name."""
    if display:
        return display
    parts = [p for p in (first, last) if p]
    return " ".join(parts) if parts else login


def preload_selected(index: int, fraction: float) -> bool:
    """Whether user ``index`` is in the preloaded share: ``floor(N*F)`` of N, evenly spread."""
    return math.floor((index + 1) * fraction) > math.floor(index * fraction)


@dataclass
class PreloadSummary:
    jira_users: int = 0
    confluence_users: int = 0
    jira_memberships: int = 0
    confluence_memberships: int = 0


def preload_targets(
    options: EmulatorOptions, jira: JiraEmulator, confluence: ConfluenceEmulator
) -> PreloadSummary:
    """Give Jira and Confluence ``options.preload_fraction`` of the desired state.

    For every selected Okta user (``preload_selected``) that is active, has an e-mail and a
    username no other Okta user also maps to, each target that accepts the username gets the
    account (same e-mail and display name, active) and its memberships: the in-scope groups it
    is in plus the target's default group. Users are generated from the seed in chunks, so this
    works the same for a lazy million-user directory; strings are shared by both targets.
    """
    seed, users, fraction = options.seed, options.users, options.preload_fraction
    total = 3 * users if options.memberships is None else options.memberships
    groups = [generate_group(seed, j) for j in range(options.groups)]
    in_scope = [g.name if g.type in PRELOAD_GROUP_TYPES else None for g in groups]
    jira_groups = [JIRA_DEFAULT_GROUP, *(n for n in in_scope if n is not None)]
    confluence_groups = [CONFLUENCE_DEFAULT_GROUP] + [
        n for n in in_scope if n is not None and confluence_module.forbidden_group(n) is None
    ]
    jira.preload(groups=jira_groups)
    confluence.preload(groups=confluence_groups)
    showcase = Counter(
        demo_username(generate_user(seed, i).login) for i in range(min(users, len(SHOWCASE)))
    )
    # Only showcase logins can give the same username (generated ones carry their index).
    colliding = {name for name, n in showcase.items() if n > 1}
    summary = PreloadSummary()
    selected = (i for i in range(users) if preload_selected(i, fraction))
    cum = cumulative_weights(seed, options.groups)
    for chunk in _chunks(selected, PRELOAD_CHUNK):
        wanted = [(i, membership_share(i, users, total)) for i in chunk]
        jira_users: list[dict[str, Any]] = []
        confluence_users: list[dict[str, Any]] = []
        jira_members: list[tuple[str, str]] = []
        confluence_members: list[tuple[str, str]] = []
        for (index, _), picked in zip(wanted, draw_groups(seed, wanted, cum), strict=True):
            status, first, last, login, email, display = user_identity(seed, index)
            if status not in SIGN_IN_STATUSES or not email:
                continue
            name = demo_username(login)
            if not name or name in colliding:
                continue
            shown = full_name(first, last, display, login)
            spec = {"name": name, "email": email, "displayName": shown}
            names = [n for j in picked if (n := in_scope[j]) is not None]
            if not jira_module.refused_username(name):
                jira_users.append(spec)
                jira_members.append((name, JIRA_DEFAULT_GROUP))
                jira_members.extend((name, n) for n in names)
            if not confluence_module.refused_username(name):
                confluence_users.append(spec)
                confluence_members.append((name, CONFLUENCE_DEFAULT_GROUP))
                confluence_members.extend(
                    (name, n) for n in names if confluence_module.forbidden_group(n) is None
                )
        summary.jira_users += len(jira.preload(jira_users, (), jira_members))
        summary.confluence_users += len(
            confluence.preload(confluence_users, (), confluence_members)
        )
        summary.jira_memberships += len(jira_members)
        summary.confluence_memberships += len(confluence_members)
    return summary


def _chunks(items: Iterator[int], size: int) -> Iterator[list[int]]:
    chunk: list[int] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _start(app: web.Application, host: str, port: int,
                 ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True,
                       ssl_context=ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = next((s.getsockname()[1] for s in sockets if s.family == socket.AF_INET), port)
    scheme = "http" if ssl_context is None else "https"
    return runner, f"{scheme}://{host}:{bound}"


@asynccontextmanager
async def running_emulators(options: EmulatorOptions) -> AsyncIterator[RunningEmulators]:
    """Start all three emulators, yield where they listen, stop them on exit.

    With ``options.tls_cert`` they serve HTTPS (the URLs say ``https://``), with
    ``options.tls_client_ca`` Jira and Confluence only to clients presenting a certificate
    that CA signed.
    """
    # a bad PEM fails here, before anything starts; Okta never asks for a client certificate
    contexts = [options.server_ssl_context(mutual=False), options.server_ssl_context(),
                options.server_ssl_context()]
    okta, jira, confluence = build_emulators(options)
    runners: list[web.AppRunner] = []
    try:
        urls = []
        apps = [okta.make_app(), jira.make_app(), confluence.make_app()]
        for app, port, context in zip(apps, options.ports, contexts, strict=True):
            runner, url = await _start(app, options.host, port, context)
            runners.append(runner)
            urls.append(url)
        yield RunningEmulators(okta, jira, confluence, okta_url=urls[0], jira_url=urls[1],
                               confluence_url=urls[2], options=options)
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
