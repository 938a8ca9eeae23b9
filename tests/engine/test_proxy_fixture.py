"""The forward proxy of ``netfixtures`` (proxy.py on loopback) relays plain HTTP and HTTPS to
the emulators and its record is right: request lines, CONNECTs, and the local ports of its
upstream connections, which are exactly the client ports the emulators served. A request that
bypasses the proxy is caught; with basic auth, a client without credentials gets 407."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from oktasync_emulators.defaults import DEMO_ADMIN_PASSWORD, DEMO_ADMIN_USER, DEMO_OKTA_TOKEN
from oktasync_emulators.runner import EmulatorOptions, RunningEmulators, running_emulators
from tests.engine.netfixtures import (
    TlsFiles,
    assert_all_through_proxy,
    forward_proxy,
    make_tls_files,
    peers_of,
    target_of,
    unproxied_peers,
)

OKTA = {"Authorization": f"SSWS {DEMO_OKTA_TOKEN}"}
ADMIN = {"Authorization": aiohttp.encode_basic_auth(DEMO_ADMIN_USER, DEMO_ADMIN_PASSWORD)}


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


def options(tls: TlsFiles | None = None, *, mutual: bool = False) -> EmulatorOptions:
    extra = {} if tls is None else tls.emulator_tls(mutual=mutual)
    return EmulatorOptions(users=30, groups=3, ports=(0, 0, 0), **extra)  # type: ignore[arg-type]


def calls(running: RunningEmulators) -> list[tuple[str, str]]:
    """What the tests send: method and URL, three emulators, several requests to each."""
    return [
        ("GET", f"{running.okta_url}/api/v1/users?limit=5"),
        ("GET", f"{running.okta_url}/api/v1/groups"),
        ("GET", f"{running.jira_url}/rest/api/2/myself"),
        ("GET", f"{running.jira_url}/rest/api/2/serverInfo"),
        ("GET", f"{running.confluence_url}/rest/api/user/current"),
        ("GET", f"{running.okta_url}/api/v1/users?limit=5"),
    ]


async def send(session: aiohttp.ClientSession, running: RunningEmulators, method: str,
               url: str, **kwargs: object) -> int:
    okta = url.startswith(running.okta_url)
    async with session.request(method, url, headers=OKTA if okta else ADMIN,
                               **kwargs) as resp:  # type: ignore[arg-type]
        await resp.read()
        return resp.status


@pytest.mark.asyncio
async def test_plain_http_through_the_proxy_records_every_request_line(tmp_path: Path) -> None:
    async with running_emulators(options()) as running, forward_proxy(tmp_path) as proxy:
        async with aiohttp.ClientSession() as session:
            for method, url in calls(running):
                assert await send(session, running, method, url, proxy=proxy.url) == 200, url
        seen = proxy.seen()
        assert seen.requests == calls(running)
        assert seen.connects == []
        served = assert_all_through_proxy(seen, running)
        assert served == {"okta": 3, "jira": 2, "confluence": 1}
        # the proxy opened its connections to the three emulators and to nothing else
        assert {t for t, _ in seen.upstream} == {
            target_of(running.okta_url), target_of(running.jira_url),
            target_of(running.confluence_url)}


@pytest.mark.asyncio
async def test_https_through_connect_tunnels_every_peer_port_is_a_proxy_connection(
    tmp_path: Path, tls: TlsFiles
) -> None:
    async with running_emulators(options(tls)) as running, forward_proxy(tmp_path) as proxy:
        context = tls.client_context()
        async with aiohttp.ClientSession() as session:
            for method, url in calls(running):
                assert await send(session, running, method, url, proxy=proxy.url,
                                  ssl=context) == 200, url
        seen = proxy.seen()
        assert seen.requests == []  # inside the tunnels the proxy sees nothing
        assert seen.connects, "no CONNECT"
        targets = {target_of(u) for u in (running.okta_url, running.jira_url,
                                          running.confluence_url)}
        assert set(seen.connects) == targets
        # one upstream connection per tunnel, to the tunnel's target
        assert Counter(seen.connects) == Counter(t for t, _ in seen.upstream)
        served = assert_all_through_proxy(seen, running)
        assert served == {"okta": 3, "jira": 2, "confluence": 1}
        # exactly the proxy's connections, per emulator: no port unaccounted for either way
        # aiohttp keeps each tunnel alive: one CONNECT per emulator, Okta's three requests on
        # one connection, the proxy's, which the emulator counts three times on that port
        assert len(seen.connects) == 3
        peers = peers_of(running.okta.stats.to_json())
        assert list(peers.values()) == [3]
        assert set(peers) <= seen.upstream_ports(target_of(running.okta_url))


@pytest.mark.asyncio
async def test_mutual_tls_works_through_the_tunnel(tmp_path: Path, tls: TlsFiles) -> None:
    async with running_emulators(options(tls, mutual=True)) as running, \
            forward_proxy(tmp_path) as proxy:
        async with aiohttp.ClientSession() as session:
            for method, url in calls(running):
                assert await send(session, running, method, url, proxy=proxy.url,
                                  ssl=tls.client_context(with_cert=True)) == 200, url
        assert assert_all_through_proxy(proxy.seen(), running) == {
            "okta": 3, "jira": 2, "confluence": 1}


async def direct_request(url: str, context: ssl.SSLContext | None) -> int:
    """GET ``url`` on a connection of its own, not through the proxy; its local port."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port, ssl=context)
    try:
        port: int = writer.get_extra_info("sockname")[1]
        head = [f"GET {parts.path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close",
                *(f"{k}: {v}" for k, v in ADMIN.items())]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()
        assert (await reader.read()).startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()
        await writer.wait_closed()
    return port


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.asyncio
async def test_a_request_bypassing_the_proxy_is_caught(
    scheme: str, tmp_path: Path, tls: TlsFiles
) -> None:
    async with running_emulators(options(tls if scheme == "https" else None)) as running, \
            forward_proxy(tmp_path) as proxy:
        context = tls.client_context() if scheme == "https" else None
        async with aiohttp.ClientSession() as session:
            url = f"{running.jira_url}/rest/api/2/myself"
            assert await send(session, running, "GET", url, proxy=proxy.url,
                              ssl=context) == 200
        direct_port = await direct_request(url, context)
        seen = proxy.seen()
        peers = peers_of(running.jira.stats.to_json())
        assert sum(peers.values()) == 2
        assert unproxied_peers(seen, running.jira_url, peers) == {direct_port: 1}
        with pytest.raises(AssertionError, match="not through the proxy"):
            assert_all_through_proxy(seen, running)


@pytest.mark.asyncio
async def test_environment_proxy_and_no_proxy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tls: TlsFiles
) -> None:
    """HTTPS_PROXY as aiohttp's trust_env reads it (the engine's proxies come from there
    too), and NO_PROXY taking a host out: the comparison tells the two apart."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    async with running_emulators(options(tls)) as running, forward_proxy(tmp_path) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        url = f"{running.okta_url}/api/v1/users?limit=5"
        async with aiohttp.ClientSession(trust_env=True) as session:
            assert await send(session, running, "GET", url, ssl=tls.client_context()) == 200
        assert_all_through_proxy(proxy.seen(), running)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with aiohttp.ClientSession(trust_env=True) as session:
            assert await send(session, running, "GET", url, ssl=tls.client_context()) == 200
        with pytest.raises(AssertionError, match="not through the proxy"):
            assert_all_through_proxy(proxy.seen(), running)


@pytest.mark.asyncio
async def test_basic_auth_refuses_a_client_without_credentials(
    tmp_path: Path, tls: TlsFiles
) -> None:
    async with running_emulators(options()) as plain, running_emulators(options(tls)) as secure, \
            forward_proxy(tmp_path, basic_auth=("proxyuser", "proxy-secret")) as proxy:
        http_url = f"{plain.jira_url}/rest/api/2/myself"
        https_url = f"{secure.jira_url}/rest/api/2/myself"
        context = tls.client_context()
        async with aiohttp.ClientSession() as session:
            # plain HTTP: the proxy answers 407 itself
            async with session.get(http_url, headers=ADMIN, proxy=proxy.url) as resp:
                assert resp.status == 407
                assert "Proxy-Authenticate" in resp.headers
            # HTTPS: the CONNECT is refused with 407
            with pytest.raises(aiohttp.ClientHttpProxyError) as info:
                await session.get(https_url, headers=ADMIN, proxy=proxy.url, ssl=context)
            assert info.value.status == 407
            wrong = {"Proxy-Authorization": aiohttp.encode_basic_auth("proxyuser", "wrong")}
            async with session.get(http_url, headers=ADMIN, proxy=proxy.url,
                                   proxy_headers=wrong) as resp:
                assert resp.status == 407
            # with them: through, whether in the URL or as a Proxy-Authorization header
            async with session.get(http_url, headers=ADMIN,
                                   proxy=proxy.url_with_credentials) as resp:
                assert resp.status == 200
            right = {"Proxy-Authorization": aiohttp.encode_basic_auth("proxyuser",
                                                                      "proxy-secret")}
            async with session.get(https_url, headers=ADMIN, proxy=proxy.url, ssl=context,
                                   proxy_headers=right) as resp:
                assert resp.status == 200
        seen = proxy.seen()
        assert seen.requests == [("GET", http_url)]  # the refused ones reached no server
        assert seen.connects == [target_of(secure.jira_url)]
        assert assert_all_through_proxy(seen, plain) == {"okta": 0, "jira": 1, "confluence": 0}
        assert assert_all_through_proxy(seen, secure) == {"okta": 0, "jira": 1, "confluence": 0}


@pytest.mark.asyncio
async def test_the_proxy_stops_with_all_its_processes(tmp_path: Path) -> None:
    async with forward_proxy(tmp_path) as proxy:
        pid = proxy.pid
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5):
            pass
        os.killpg(pid, 0)  # its process group is there
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # and gone, every process in it
    with pytest.raises(ConnectionRefusedError), \
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5):
        pass
