"""Enterprise networks on loopback, for tests: a test CA with server and client certificates
(``make_tls_files``), and a real forward proxy (proxy.py, ``forward_proxy``) that writes down
what it relayed, so a test can prove that every request reached a server through it
(``unproxied_peers``, ``assert_all_through_proxy``).

The proof for HTTPS, where the proxy only sees CONNECTs and a keep-alive tunnel carries many
requests: the emulators count the requests they serve per client port (``peers`` in
``/_emulator/stats``), the proxy records the local port of every connection it opens to a
server, and every port a server saw must be one the proxy opened to that server.

Typical use::

    tls = make_tls_files(tmp_path)
    options = EmulatorOptions(..., ports=(0, 0, 0), **tls.emulator_tls())
    async with running_emulators(options) as running, forward_proxy(tmp_path) as proxy:
        ...  # the engine, configured with proxy.url and ca_bundle = tls.ca
        assert_all_through_proxy(proxy.seen(), running)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trustme

from tests.engine.proxy_recorder import RECORD_ENV

REPO = Path(__file__).resolve().parents[2]
PLUGIN = "tests.engine.proxy_recorder.RecordingPlugin"
CLIENT_IDENTITY = "oktasync-client.example.test"

# ---------------------------------------------------------------------------------------------
# Certificates


@dataclass(frozen=True)
class TlsFiles:
    """PEM files from one test CA: what a client trusts, a server's, a client's."""

    ca: Path  # the CA certificate: a ``ca_bundle``
    server_cert: Path  # for 127.0.0.1 and localhost, with its chain
    server_key: Path
    client_cert: Path  # for mutual TLS, signed by the same CA
    client_key: Path
    client_pem: Path  # the client certificate and its key in one file
    authority: trustme.CA = field(repr=False, compare=False)

    def emulator_tls(self, *, mutual: bool = False) -> dict[str, str]:
        """``EmulatorOptions`` keywords: HTTPS with the server certificate; with ``mutual``,
        only for clients presenting a certificate from this CA."""
        options = {"tls_cert": str(self.server_cert), "tls_key": str(self.server_key)}
        if mutual:
            options["tls_client_ca"] = str(self.ca)
        return options

    def client_context(self, *, with_cert: bool = False,
                       trust: bool = True) -> ssl.SSLContext:
        """A client's TLS context: trusting the test CA (or, ``trust=False``, only the
        system's CAs), presenting the client certificate when ``with_cert``."""
        context = ssl.create_default_context(cafile=str(self.ca) if trust else None)
        if with_cert:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def make_tls_files(directory: Path) -> TlsFiles:
    """A fresh trustme CA, a server certificate for 127.0.0.1 and localhost and a client
    certificate, written as PEM files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA()
    server = authority.issue_cert("127.0.0.1", "localhost")
    client = authority.issue_cert(CLIENT_IDENTITY)
    files = TlsFiles(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem", server_key=directory / "server.key",
        client_cert=directory / "client.pem", client_key=directory / "client.key",
        client_pem=directory / "client-with-key.pem", authority=authority,
    )
    authority.cert_pem.write_to_path(str(files.ca))
    server.private_key_pem.write_to_path(str(files.server_key))
    with open(files.server_cert, "wb") as out:
        for blob in server.cert_chain_pems:
            out.write(blob.bytes())
    client.private_key_pem.write_to_path(str(files.client_key))
    with open(files.client_cert, "wb") as out:
        for blob in client.cert_chain_pems:
            out.write(blob.bytes())
    client.private_key_and_cert_chain_pem.write_to_path(str(files.client_pem))
    return files


# ---------------------------------------------------------------------------------------------
# The forward proxy


@dataclass
class ProxyRecord:
    """What the proxy relayed, in order."""

    requests: list[tuple[str, str]] = field(default_factory=list)  # plain HTTP: method, URL
    connects: list[str] = field(default_factory=list)  # CONNECT targets, "host:port"
    upstream: list[tuple[str, int]] = field(default_factory=list)  # target, local port

    def upstream_ports(self, target: str | None = None) -> set[int]:
        """Local ports of the connections the proxy opened (to ``target`` only, if given)."""
        return {port for t, port in self.upstream if target is None or t == target}


@dataclass
class RunningProxy:
    """A proxy.py process on 127.0.0.1; ``url`` is what a client is configured with."""

    port: int
    record_file: Path
    log_file: Path
    credentials: tuple[str, str] | None = None
    pid: int = 0  # of proxy.py's main process, which leads a process group of its own

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, without credentials."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url_with_credentials(self) -> str:
        """``http://user:password@127.0.0.1:PORT`` (just ``url`` when there are none)."""
        if self.credentials is None:
            return self.url
        user, password = self.credentials
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    def seen(self) -> ProxyRecord:
        """Everything recorded so far (an upstream connection is written before it is used,
        so by the time a client has its answer, its connection is in here)."""
        got = ProxyRecord()
        if not self.record_file.exists():
            return got
        for line in self.record_file.read_text().splitlines():
            entry: dict[str, Any] = json.loads(line)
            if entry["kind"] == "request":
                got.requests.append((entry["method"], entry["url"]))
            elif entry["kind"] == "connect":
                got.connects.append(entry["target"])
            elif entry["kind"] == "upstream":
                got.upstream.append((entry["target"], int(entry["local_port"])))
        return got

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


@asynccontextmanager
async def forward_proxy(
    directory: Path,
    *,
    basic_auth: tuple[str, str] | None = None,
    start_timeout_s: float = 20.0,
    extra_args: tuple[str, ...] = (),
) -> AsyncIterator[RunningProxy]:
    """proxy.py on 127.0.0.1 and an ephemeral port, in a process of its own, recording what
    it relays (``RunningProxy.seen``); with ``basic_auth=(user, password)`` it answers 407 to
    requests without those credentials. Stopped (SIGINT, then SIGKILL) on exit, with all its
    processes: it runs in a session of its own and the whole group is stopped."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = f"{os.getpid()}-{time.monotonic_ns()}"
    port_file = directory / f"proxy-{stamp}.port"
    running = RunningProxy(port=0, record_file=directory / f"proxy-{stamp}.jsonl",
                           log_file=directory / f"proxy-{stamp}.log", credentials=basic_auth)
    args = [
        sys.executable, "-m", "proxy",
        "--hostname", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
        "--num-acceptors", "1", "--num-workers", "1",
        "--plugins", PLUGIN, "--log-level", "INFO",
        *extra_args,
    ]
    if basic_auth is not None:
        args += ["--basic-auth", f"{basic_auth[0]}:{basic_auth[1]}"]
    env = dict(os.environ)
    env[RECORD_ENV] = str(running.record_file)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    with open(running.log_file, "wb") as log:
        process = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=env,
            cwd=str(directory), start_new_session=True)
    running.pid = process.pid
    try:
        running.port = await _listening_port(process, port_file, start_timeout_s, running)
        yield running
    finally:
        await _stop(process)


async def _listening_port(process: asyncio.subprocess.Process, port_file: Path,
                          timeout_s: float, running: RunningProxy) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        if port_file.exists():
            text = port_file.read_text()
            if text.endswith("\n"):
                return int(text.split()[0])
        if process.returncode is not None:
            raise RuntimeError(f"proxy.py exited {process.returncode}:\n{running.log()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"proxy.py not listening after {timeout_s} s:\n{running.log()}")
        await asyncio.sleep(0.05)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGINT to the proxy's process group (proxy.py stops and joins its acceptors), SIGKILL
    to the group if it has not exited within 10 s; then reap it. The group is signalled only
    while its leader is not reaped yet, so its id cannot belong to anything else."""
    for signum in (signal.SIGINT, signal.SIGKILL):
        if process.returncode is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 10.0)
    await process.wait()


# ---------------------------------------------------------------------------------------------
# The proof: every connection a server served came from the proxy


def peers_of(stats: Mapping[str, Any]) -> Counter[int]:
    """Requests per client port, from an emulator's ``/_emulator/stats`` JSON."""
    return Counter({int(port): int(n) for port, n in stats.get("peers", {}).items()})


def target_of(url: str) -> str:
    """``host:port`` of a base URL, as the proxy records its upstream connections."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def unproxied_peers(record: ProxyRecord, server_url: str,
                    peers: Mapping[int, int]) -> dict[int, int]:
    """The client ports (and their request counts) a server at ``server_url`` served that
    are not connections the proxy opened to that server: empty when all went through it."""
    opened = record.upstream_ports(target_of(server_url))
    return {port: n for port, n in sorted(peers.items()) if port not in opened}


def assert_all_through_proxy(record: ProxyRecord, running: Any, *,
                             at_least: int = 1) -> dict[str, int]:
    """Every request the three emulators (a ``RunningEmulators``) served came on a connection
    the proxy opened to them, and at least ``at_least`` requests were served in all.
    Returns the requests each served (``{"okta": n, ...}``)."""
    served: dict[str, int] = {}
    stray: dict[str, dict[int, int]] = {}
    for name in ("okta", "jira", "confluence"):
        emulator, url = getattr(running, name), getattr(running, f"{name}_url")
        peers = peers_of(emulator.stats.to_json())
        served[name] = sum(peers.values())
        if missed := unproxied_peers(record, url, peers):
            stray[name] = missed
    assert not stray, (f"requests not through the proxy (server: {{client port: requests}}): "
                       f"{stray}; proxy opened {record.upstream}")
    assert sum(served.values()) >= at_least, f"too few requests served: {served}"
    return served
