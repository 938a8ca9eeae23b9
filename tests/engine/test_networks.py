"""Enterprise networks, end to end: the emulators over HTTPS with certificates from a private
test CA (trustme), mutual TLS, and a real forward proxy on loopback (proxy.py).

What a test proves comes from outside the engine: the emulators count the requests they serve
per client port, and the proxy records the local port of every connection it opened, so "every
request went through the proxy" is checked connection by connection (``netfixtures``); the end
state is judged by the tests' oracle.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from oktasync.engine import SyncOptions, run_sync
from oktasync_emulators.oauth import OAuthClient
from oktasync_emulators.runner import EmulatorOptions, RunningEmulators, running_emulators
from tests.engine import oracle
from tests.engine.harness import (
    TEST_CLIENT_TLS,
    load,
    states,
    stats,
    write_config,
    write_requests,
)
from tests.engine.netfixtures import (
    TlsFiles,
    assert_all_through_proxy,
    forward_proxy,
    make_tls_files,
    peers_of,
)

SETTINGS = oracle.Settings(default_groups={"jira": ("jira-software-users",),
                                           "confluence": ("confluence-users",)})
APP = "test-app"


def quiet(*_: Any) -> None:
    """Summaries are checked through the result, not printed during tests."""


@asynccontextmanager
async def tls_estate(tls: TlsFiles, *, mutual: bool = False,
                     users: int = 80) -> AsyncIterator[RunningEmulators]:
    options = EmulatorOptions(users=users, groups=8, seed=5, ports=(0, 0, 0), okta_rate_scale=0,
                              **tls.emulator_tls(mutual=mutual))  # type: ignore[arg-type]
    reset = TEST_CLIENT_TLS.set(tls.client_context(with_cert=True))
    try:
        async with running_emulators(options) as running:
            yield running
    finally:
        TEST_CLIENT_TLS.reset(reset)


async def assert_oracle_state(running: RunningEmulators, before: dict[str, Any]) -> None:
    now = await states(running)
    for target in ("jira", "confluence"):
        expected = oracle.expected_accounts(now["okta"], oracle.target_accounts(before[target]),
                                            target, SETTINGS)
        problems = oracle.differences(expected, oracle.target_accounts(now[target]))
        assert problems == [], f"{target}: {problems[:5]}"


def tls_lines(tls: TlsFiles, *, client: bool = False) -> str:
    lines = f'ca_bundle = "{tls.ca}"\n'
    if client:
        lines += f'client_cert = "{tls.client_cert}"\nclient_key = "{tls.client_key}"\n'
    return lines


@pytest.mark.asyncio
async def test_targets_on_a_private_ca_with_client_certificates_reach_the_oracle_state(
        tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    async with tls_estate(tls, mutual=True) as running:
        assert running.jira_url.startswith("https://")
        before = await states(running)
        config = load(write_config(tmp_path, running, extra_app=f'okta_ca_bundle = "{tls.ca}"',
                                   extra_jira=tls_lines(tls, client=True),
                                   extra_confluence=tls_lines(tls, client=True)))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code in (0, 1), result.summaries[APP]["notes"]
        await assert_oracle_state(running, before)


@pytest.mark.asyncio
@pytest.mark.parametrize(("mistake", "words"), [
    ("no ca_bundle", ("jira: cannot connect to https://127.0.0.1:{port}: its TLS certificate "
                      "is not trusted (", "); if a private CA signed it, set ca_bundle to that "
                                          "CA's PEM file")),
    ("no client certificate", ("jira: https://127.0.0.1:{port} gave no answer (the server "
                               "closed the connection without answering; ",
                               "a server that requires a client certificate (mutual TLS) "
                               "closes connections without one: set client_cert and "
                               "client_key")),
    ("no okta_ca_bundle", ("Okta (test-app): cannot connect to https://127.0.0.1:{port}: its "
                           "TLS certificate is not trusted (", "); if a private CA signed it, "
                                                               "set okta_ca_bundle to that CA's "
                                                               "PEM file")),
])
async def test_a_certificate_problem_stops_the_run_with_exit_2_naming_server_and_fix(
        tmp_path: Path, mistake: str, words: tuple[str, str]) -> None:
    tls = make_tls_files(tmp_path / "tls")
    async with tls_estate(tls, mutual=True) as running:
        config = load(write_config(
            tmp_path, running,
            extra_app="" if mistake == "no okta_ca_bundle" else f'okta_ca_bundle = "{tls.ca}"',
            extra_jira={"no ca_bundle": "", "no client certificate": tls_lines(tls)}.get(
                mistake, tls_lines(tls, client=True)),
            extra_confluence=tls_lines(tls, client=True)))
        printed: list[str] = []
        result = await run_sync(config, SyncOptions(), echo=printed.append)
        # TLS 1.3: a missing client certificate is seen as a closed connection, which is
        # retried (it could be the server's trouble) and then fails the listing
        assert result.exit_code == (4 if mistake == "no client certificate" else 2)
        server = running.okta_url if mistake == "no okta_ca_bundle" else running.jira_url
        notes = " ".join(result.summaries[APP]["notes"])
        before, after = words[0].format(port=server.rsplit(":", 1)[1]), words[1]
        assert before in notes and after in notes.split(before, 1)[1], notes
        assert "Traceback" not in "\n".join(printed)
        counted = await stats(running)
        assert write_requests(counted["jira"]) == 0
        if mistake == "no okta_ca_bundle":  # found before anything was written anywhere
            assert write_requests(counted["confluence"]) == 0


@pytest.mark.asyncio
async def test_every_request_goes_through_the_configured_proxies_with_credentials(
        tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    async with tls_estate(tls) as running, \
            forward_proxy(tmp_path / "proxy", basic_auth=("svc", "proxy-pass-9Zq")) as proxy:
        before = await states(running)
        via = (f'proxy = "{proxy.url}"\nproxy_username = "svc"\n'
               'proxy_password = "proxy-pass-9Zq"\n')
        config = load(write_config(
            tmp_path, running,
            extra_app=(f'okta_ca_bundle = "{tls.ca}"\nokta_proxy = "{proxy.url}"\n'
                       'okta_proxy_username = "svc"\nokta_proxy_password = "proxy-pass-9Zq"'),
            extra_jira=tls_lines(tls) + via, extra_confluence=tls_lines(tls) + via))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code in (0, 1), result.summaries[APP]["notes"]
        await assert_oracle_state(running, before)
        served = assert_all_through_proxy(proxy.seen(), running, at_least=50)
        assert all(served[name] > 0 for name in ("okta", "jira", "confluence")), served


@pytest.mark.asyncio
async def test_through_a_proxy_on_a_private_ca_with_an_okta_service_app_end_to_end(
        tmp_path: Path) -> None:
    """The issue's whole picture at once: a forward proxy with credentials for every server,
    every server on certificates from a private CA (Jira and Confluence asking for client
    certificates), Okta through a DPoP-bound service app's tokens. The desired state is
    reached, a second run writes nothing, and the proxy carried every request."""
    tls = make_tls_files(tmp_path / "tls")
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "okta-key.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    async with tls_estate(tls, mutual=True) as running, \
            forward_proxy(tmp_path / "proxy", basic_auth=("svc", "proxy-pass-3Wn")) as proxy:
        running.okta.oauth.register(OAuthClient("0oaEnterpriseSync1", public.decode(),
                                                ("okta.users.read", "okta.groups.read",
                                                 "okta.logs.read"), dpop=True))
        before = await states(running)
        via = f'proxy = "{proxy.url}"\nproxy_username = "svc"\nproxy_password = "proxy-pass-3Wn"\n'
        app = (f'okta_ca_bundle = "{tls.ca}"\nokta_proxy = "{proxy.url}"\n'
               'okta_proxy_username = "svc"\nokta_proxy_password = "proxy-pass-3Wn"')
        oauth = ('okta_auth = "oauth"\nokta_client_id = "0oaEnterpriseSync1"\n'
                 f'okta_private_key = "file:{key_file}"')
        config = load(write_config(tmp_path, running, extra_app=app, okta_auth=oauth,
                                   extra_jira=tls_lines(tls, client=True) + via,
                                   extra_confluence=tls_lines(tls, client=True) + via))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code in (0, 1), result.summaries[APP]["notes"]
        await assert_oracle_state(running, before)
        first = await stats(running)
        again = await run_sync(config, SyncOptions(full=True), echo=quiet)
        assert again.exit_code == result.exit_code
        for target in ("jira", "confluence"):
            assert write_requests((await stats(running))[target]) == \
                write_requests(first[target]), target
        served = assert_all_through_proxy(proxy.seen(), running, at_least=100)
        assert all(served[name] > 0 for name in ("okta", "jira", "confluence")), served
        counts = running.okta.oauth.counts.to_json()
        assert set(counts["resource_requests"]) == {"DPoP"}, counts  # never an API token
        assert counts["tokens_issued"] == {"DPoP": 1}, counts


@pytest.mark.asyncio
async def test_wrong_proxy_credentials_stop_the_run_with_exit_2(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    async with tls_estate(tls) as running, \
            forward_proxy(tmp_path / "proxy", basic_auth=("svc", "right-pass-4Kd")) as proxy:
        via = f'proxy = "{proxy.url}"\nproxy_username = "svc"\nproxy_password = "wrong-pass-7Hj"\n'
        config = load(write_config(tmp_path, running, extra_app=f'okta_ca_bundle = "{tls.ca}"',
                                   extra_jira=tls_lines(tls) + via,
                                   extra_confluence=tls_lines(tls)))
        printed: list[str] = []
        result = await run_sync(config, SyncOptions(), echo=printed.append)
        assert result.exit_code == 2
        notes = " ".join(result.summaries[APP]["notes"])
        assert (f"jira: the proxy refused to connect to {running.jira_url} (HTTP 407, proxy "
                "authentication): check proxy_username and proxy_password") in notes, notes
        assert "wrong-pass-7Hj" not in notes + "\n".join(printed)
        assert sum(peers_of(running.jira.stats.to_json()).values()) == 0  # never got through


@pytest.mark.asyncio
async def test_the_environments_proxy_is_honoured_and_no_proxy_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tls = make_tls_files(tmp_path / "tls")
    async with tls_estate(tls) as running, forward_proxy(tmp_path / "proxy") as proxy:
        config = load(write_config(tmp_path, running, extra_app=f'okta_ca_bundle = "{tls.ca}"',
                                   extra_jira=tls_lines(tls), extra_confluence=tls_lines(tls)))
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code in (0, 1), result.summaries[APP]["notes"]
        assert_all_through_proxy(proxy.seen(), running, at_least=50)

        connections = len(proxy.seen().upstream)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        result = await run_sync(config, SyncOptions(full=True), echo=quiet)
        assert result.exit_code in (0, 1), result.summaries[APP]["notes"]
        assert len(proxy.seen().upstream) == connections  # none went through it this time
