"""The emulators over HTTPS and mutual TLS, as enterprise Okta, Jira and Confluence are met:
a certificate from a private CA (``tls_cert``/``tls_key``), and optionally a client
certificate required (``tls_client_ca``). Clients: aiohttp with an SSL context, the official
Okta SDK (its ``sslContext``), atlassian-python-api (``verify_ssl`` as a CA path, ``cert``),
and ``oktasync-emulate --tls-cert/--tls-key/--tls-client-ca``."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from requests.exceptions import ConnectionError as RequestsConnectionError
from tests.engine.netfixtures import TlsFiles, make_tls_files, peers_of

from oktasync_emulators.defaults import (
    DEMO_ADMIN_PASSWORD,
    DEMO_ADMIN_USER,
    DEMO_CONFLUENCE_TOKEN,
    DEMO_JIRA_TOKEN,
    DEMO_OKTA_TOKEN,
)
from oktasync_emulators.runner import EmulatorOptions, RunningEmulators, running_emulators

T = TypeVar("T")
BASIC = "Basic " + base64.b64encode(f"{DEMO_ADMIN_USER}:{DEMO_ADMIN_PASSWORD}".encode()).decode()


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


def options(tls: TlsFiles | None = None, *, mutual: bool = False) -> EmulatorOptions:
    extra = {} if tls is None else tls.emulator_tls(mutual=mutual)
    return EmulatorOptions(users=30, groups=3, ports=(0, 0, 0), **extra)  # type: ignore[arg-type]


def probes(running: RunningEmulators) -> list[tuple[str, dict[str, str]]]:
    """One authenticated GET for each emulator: URL and headers."""
    return [
        (f"{running.okta_url}/api/v1/users?limit=5",
         {"Authorization": f"SSWS {DEMO_OKTA_TOKEN}"}),
        (f"{running.jira_url}/rest/api/2/myself", {"Authorization": BASIC}),
        (f"{running.confluence_url}/rest/api/user/current", {"Authorization": BASIC}),
    ]


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


@pytest.mark.asyncio
async def test_plain_http_stays_the_default() -> None:
    async with running_emulators(options()) as running, aiohttp.ClientSession() as session:
        urls = [running.okta_url, running.jira_url, running.confluence_url]
        assert all(u.startswith("http://127.0.0.1:") for u in urls)
        for url, headers in probes(running):
            async with session.get(url, headers=headers) as resp:
                assert resp.status == 200, url


@pytest.mark.asyncio
async def test_https_answers_a_client_trusting_the_test_ca(tls: TlsFiles) -> None:
    async with running_emulators(options(tls)) as running:
        urls = [running.okta_url, running.jira_url, running.confluence_url]
        assert all(u.startswith("https://127.0.0.1:") for u in urls)
        assert [running.info()[p]["url"] for p in ("okta", "jira", "confluence")] == urls
        context = tls.client_context()
        async with aiohttp.ClientSession() as session:
            for url, headers in probes(running):
                async with session.get(url, headers=headers, ssl=context) as resp:
                    assert resp.status == 200, url
                    if "/api/v1/users" in url:  # Okta's links keep the scheme the client used
                        assert resp.headers["Link"].startswith(f"<{running.okta_url}/")
            # by name too: the certificate is for localhost as well as 127.0.0.1
            by_name = running.jira_url.replace("127.0.0.1", "localhost")
            async with session.get(f"{by_name}/rest/api/2/myself",
                                   headers={"Authorization": BASIC}, ssl=context) as resp:
                assert resp.status == 200
        # each request came on a connection of its own client port, counted in the stats
        for emulator in (running.okta, running.jira, running.confluence):
            assert sum(peers_of(emulator.stats.to_json()).values()) >= 1


@pytest.mark.asyncio
async def test_https_refuses_the_handshake_to_a_client_not_trusting_the_ca(
    tls: TlsFiles,
) -> None:
    async with running_emulators(options(tls)) as running:
        async with aiohttp.ClientSession() as session:
            for url, headers in probes(running):
                # the system's CAs only: the test CA is not among them
                with pytest.raises(aiohttp.ClientConnectorCertificateError) as info:
                    await session.get(url, headers=headers, ssl=tls.client_context(trust=False))
                assert isinstance(info.value.certificate_error, ssl.SSLCertVerificationError)
        # plain HTTP to an HTTPS port gets no answer from the application either
        plain = running.okta_url.replace("https://", "http://")
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                await session.get(f"{plain}/api/v1/users",
                                  headers={"Authorization": f"SSWS {DEMO_OKTA_TOKEN}"})
        for emulator in (running.jira, running.confluence):
            assert emulator.stats.to_json()["requests"] == 0


def exchange(url: str, context: ssl.SSLContext) -> bytes:
    """One request on a fresh TLS connection to ``url`` (``https://host:port``): the answer's
    first bytes. A connection the server drops raises (no ragged EOF taken for an answer)."""
    host, port = url.removeprefix("https://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw, context.wrap_socket(
        raw, server_hostname=host, suppress_ragged_eofs=False
    ) as tls:
        tls.sendall(b"GET /_emulator/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return tls.recv(64)


async def handshake_refused(url: str, context: ssl.SSLContext) -> None:
    """The server ends the TLS connection without an answer. (With TLS 1.3 the client's side
    of the handshake completes before the server checks its certificate; the server, on
    asyncio, then drops the connection, which the client sees as an unexpected EOF.)"""
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await run(exchange, url, context)


@pytest.mark.asyncio
async def test_mutual_tls_refuses_a_client_without_a_certificate(tls: TlsFiles) -> None:
    async with running_emulators(options(tls, mutual=True)) as running:
        # Okta's API does not do mutual TLS (nor does its emulator): it answers without one
        answer = await run(exchange, running.okta_url, tls.client_context())
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        running.okta.stats.reset()
        for base in (running.jira_url, running.confluence_url):
            await handshake_refused(base, tls.client_context())
            # the same connection with the client certificate is answered
            answer = await run(exchange, base, tls.client_context(with_cert=True))
            assert answer.startswith(b"HTTP/1.1 200 "), answer
        for url, headers in probes(running)[1:]:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.ClientError):
                    async with session.get(url, headers=headers,
                                           ssl=tls.client_context()) as resp:
                        await resp.read()
        for emulator in (running.okta, running.jira, running.confluence):
            assert emulator.stats.to_json()["requests"] == 0


@pytest.mark.asyncio
async def test_mutual_tls_refuses_a_certificate_from_another_ca(
    tls: TlsFiles, tmp_path: Path
) -> None:
    other = make_tls_files(tmp_path / "other")
    async with running_emulators(options(tls, mutual=True)) as running:
        context = tls.client_context()
        context.load_cert_chain(str(other.client_cert), str(other.client_key))
        await handshake_refused(running.jira_url, context)
        assert running.jira.stats.to_json()["requests"] == 0


@pytest.mark.asyncio
async def test_mutual_tls_accepts_the_test_client_certificate(tls: TlsFiles) -> None:
    async with running_emulators(options(tls, mutual=True)) as running:
        context = tls.client_context(with_cert=True)
        async with aiohttp.ClientSession() as session:
            for url, headers in probes(running):
                async with session.get(url, headers=headers, ssl=context) as resp:
                    assert resp.status == 200, url
        for emulator in (running.okta, running.jira, running.confluence):
            assert emulator.stats.to_json()["requests"] == 1


def test_tls_options_need_a_certificate(tls: TlsFiles) -> None:
    with pytest.raises(ValueError, match="need tls_cert"):
        EmulatorOptions(tls_key=str(tls.server_key)).server_ssl_context()
    with pytest.raises(ValueError, match="need tls_cert"):
        EmulatorOptions(tls_client_ca=str(tls.ca)).server_ssl_context()
    assert EmulatorOptions().server_ssl_context() is None
    # the key may be in the certificate's file
    both = tls.server_cert.with_name("server-with-key.pem")
    both.write_bytes(tls.server_cert.read_bytes() + tls.server_key.read_bytes())
    assert EmulatorOptions(tls_cert=str(both)).server_ssl_context() is not None


# ---------------------------------------------------------------------------------------------
# The official clients


@pytest.mark.asyncio
async def test_official_okta_sdk_over_https_trusting_the_test_ca(tls: TlsFiles) -> None:
    from okta.client import Client as OktaClient
    from okta.pagination import paginate_pages

    async with running_emulators(options(tls)) as running:
        # no testing switch: the URL is https, as the SDK wants. Its ``sslContext`` setting
        # cannot be used (the SDK deep-copies its configuration, and an SSLContext does not
        # copy): it is given a session of its own whose connector trusts the test CA. (Not
        # trusting it, the SDK 3.4 fails with an AttributeError of its own, not an error
        # result: the refusal is shown with aiohttp above.)
        client = OktaClient({"orgUrl": running.okta_url, "token": DEMO_OKTA_TOKEN})
        connector = aiohttp.TCPConnector(ssl=tls.client_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            client.get_request_executor().set_session(session)
            users, _, error = await client.list_users(limit=10)
            assert error is None, error
            assert len(users) == 10
            # and its own pagination follows the next links, https too
            pages = [p async for p, _, _ in paginate_pages(client.list_users, limit=10)]
            assert [len(p) for p in pages][:2] == [10, 10] and len(pages) == 3
    assert running.okta.stats.to_json()["by_endpoint"]["GET /api/v1/users"]["requests"] == 4


@pytest.mark.asyncio
async def test_atlassian_python_api_with_a_ca_path_and_a_client_certificate(
    tls: TlsFiles,
) -> None:
    from atlassian import Confluence, Jira

    async with running_emulators(options(tls, mutual=True)) as running:
        cert = (str(tls.client_cert), str(tls.client_key))
        jira = Jira(url=running.jira_url, token=DEMO_JIRA_TOKEN, verify_ssl=str(tls.ca),
                    cert=cert)
        confluence = Confluence(url=running.confluence_url, token=DEMO_CONFLUENCE_TOKEN,
                                verify_ssl=str(tls.ca), cert=str(tls.client_pem))
        try:
            assert (await run(jira.myself))["name"] == DEMO_ADMIN_USER
            groups = await run(confluence.get_all_groups)
            assert "confluence-users" in {g["name"] for g in groups}
            without = Jira(url=running.jira_url, token=DEMO_JIRA_TOKEN, verify_ssl=str(tls.ca))
            try:
                with pytest.raises(RequestsConnectionError):  # dropped at the handshake
                    await run(without.myself)
            finally:
                without.close()
        finally:
            jira.close()
            confluence.close()


# ---------------------------------------------------------------------------------------------
# oktasync-emulate


def emulate(*args: str) -> list[str]:
    return [sys.executable, "-m", "oktasync_emulators", *args]


@pytest.mark.asyncio
async def test_emulate_cli_serves_https_and_mutual_tls(tls: TlsFiles, tmp_path: Path) -> None:
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr_file:
        proc = await asyncio.create_subprocess_exec(
            *emulate("--users", "20", "--groups", "2", "--ports", "0,0,0",
                     "--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key),
                     "--tls-client-ca", str(tls.ca)),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=stderr_file)
    assert proc.stdout is not None
    try:
        first = await asyncio.wait_for(proc.stdout.readline(), 10.0)
        assert first, stderr_path.read_text(errors="replace")
        info = json.loads(first)
        urls = [info[p]["url"] for p in ("okta", "jira", "confluence")]
        assert all(u.startswith("https://127.0.0.1:") for u in urls), urls
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {DEMO_JIRA_TOKEN}"}
            myself = f"{info['jira']['url']}/rest/api/2/myself"
            async with session.get(myself, headers=headers,
                                   ssl=tls.client_context(with_cert=True)) as resp:
                assert resp.status == 200
            with pytest.raises(aiohttp.ClientError):
                async with session.get(myself, headers=headers,
                                       ssl=tls.client_context()) as resp:
                    await resp.read()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10.0) == 0
        await proc.stdout.read()


@pytest.mark.parametrize(("args", "message"), [
    (("--tls-key", "k.pem"), "--tls-key and --tls-client-ca need --tls-cert"),
    (("--tls-client-ca", "ca.pem"), "--tls-key and --tls-client-ca need --tls-cert"),
    (("--tls-cert", "missing.pem"), "cannot serve HTTPS with missing.pem"),
])
@pytest.mark.asyncio
async def test_emulate_cli_tls_mistakes_exit_2(
    args: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *emulate("--users", "5", "--groups", "1", "--ports", "0,0,0", *args),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=tmp_path)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 20.0)
    assert proc.returncode == 2
    assert stdout == b""
    assert message in stderr.decode(), stderr
