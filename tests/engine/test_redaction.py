"""Secrets a server echoes back are masked in every output: servers (and proxies, and
gateways) put the request's headers in their error pages, and oktasync prints a server's error
body in its messages, reports, findings and audit rows.

A loopback server stands in front of each emulator and answers some requests with an error
whose body repeats the request's Authorization and Proxy-Authorization headers; everything else
it relays. The secrets of every kind are then looked for, in clear, in everything the runs
wrote: stdout, stderr, the JSON reports, the audit CSVs, the findings CSVs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from oktasync import logs
from oktasync.engine import SyncOptions, run_sync
from oktasync_emulators.oauth import OAuthClient
from oktasync_emulators.runner import EmulatorOptions, running_emulators
from tests.engine.harness import load, write_config
from tests.engine.loopback import serve

Echoes = Callable[[web.Request], bool]
PROXY_PASSWORD = "proxy-pass-Echo5"
HOP_BY_HOP = {"connection", "content-length", "content-encoding", "transfer-encoding", "host",
              "keep-alive"}


@asynccontextmanager
async def echoing(upstream: str, echoes: Echoes, status: int) -> AsyncIterator[str]:
    """A forward proxy (plain http) relaying to ``upstream``, except that requests ``echoes``
    picks get ``status`` with their credentials in the body, as a careless gateway would."""
    async with aiohttp.ClientSession() as session:
        async def handle(request: web.Request) -> web.StreamResponse:
            if echoes(request):
                said = (f"refused Authorization: {request.headers.get('Authorization')}; "
                        f"Proxy-Authorization: {request.headers.get('Proxy-Authorization')}")
                return web.json_response({"errorMessages": [said], "errorSummary": said},
                                         status=status)
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
            async with session.request(request.method, upstream + request.path_qs,
                                       headers=headers, data=await request.read(),
                                       allow_redirects=False) as got:
                body = await got.read()
                relayed = [(k, v) for k, v in got.headers.items()
                           if k.lower() not in HOP_BY_HOP]
                response = web.Response(body=body, status=got.status)
                for k, v in relayed:
                    response.headers.add(k, v)
                return response

        async with serve(handle) as url:
            yield url


def everything_written(tmp_path: Path, printed: list[str]) -> str:
    files = [p for p in (tmp_path / "state").rglob("*")
             if p.is_file() and p.suffix in (".json", ".csv")]
    assert any(p.name.startswith("audit") or "audit" in p.name for p in files), files
    return "\n".join(printed) + "\n".join(p.read_text(errors="replace") for p in files)


@pytest.mark.asyncio
async def test_credentials_a_server_echoes_are_masked_in_outputs_reports_and_audit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = rsa.generate_private_key(65537, 2048)
    key_file = tmp_path / "okta-key.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    options = EmulatorOptions(users=40, groups=4, seed=3, ports=(0, 0, 0), okta_rate_scale=0)
    echo_okta = [True]
    async with running_emulators(options) as running:
        running.okta.oauth.register(OAuthClient("0oaEchoedApp", public.decode(),
                                                ("okta.users.read", "okta.groups.read",
                                                 "okta.logs.read")))

        def okta_echoes(request: web.Request) -> bool:
            return echo_okta[0] and request.path == "/api/v1/groups"

        def creates(request: web.Request) -> bool:
            return request.method == "POST" and request.path.endswith("/user")

        async with echoing(running.okta_url, okta_echoes, 400) as okta, \
                echoing(running.jira_url, creates, 400) as jira, \
                echoing(running.confluence_url, creates, 400) as confluence:
            def via(proxy: str, prefix: str = "") -> str:
                return (f'{prefix}proxy = "{proxy}"\n{prefix}proxy_username = "svc"\n'
                        f'{prefix}proxy_password = "{PROXY_PASSWORD}"\n')

            config = load(write_config(
                tmp_path, running, extra_app=via(okta, "okta_"),
                extra_jira=via(jira), extra_confluence=via(confluence), okta_auth=(
                    'okta_auth = "oauth"\nokta_client_id = "0oaEchoedApp"\n'
                    f'okta_private_key = "file:{key_file}"')))
            logs.REDACTOR.set(config.secret_values())  # as the command line does
            printed: list[str] = []
            first = await run_sync(config, SyncOptions(), echo=printed.append)
            assert first.exit_code == 4, first.summaries["test-app"]["notes"]
            echo_okta[0] = False
            second = await run_sync(config, SyncOptions(resume=True), echo=printed.append)
            assert second.exit_code == 1  # every create refused, with the echo
        tokens = {t for t in running.okta.oauth.tokens}
        assert tokens, "a token was issued and sent"
    captured = capsys.readouterr()
    written = everything_written(tmp_path, printed) + captured.out + captured.err
    assert "refused Authorization: Bearer ***" in written  # Okta's echo, masked
    assert "refused Authorization: Bearer ***" in written.split("jira", 1)[1]
    assert "refused Authorization: Basic ***" in written  # Confluence's basic credentials
    assert "Proxy-Authorization: Basic ***" in written  # the proxies' credentials
    secrets = [*tokens, running.options.jira_token, running.options.admin_password,
               PROXY_PASSWORD, *config.secret_values()]
    leaked = [s for s in secrets if len(s) >= logs.MIN_SECRET and s in written]
    assert leaked == [], "secrets in clear"
    summary = json.dumps(second.summaries)
    assert "***" in summary and running.options.jira_token not in summary
