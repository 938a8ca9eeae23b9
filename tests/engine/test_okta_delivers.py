"""The whole production path of issue 12: the service on HTTPS (a certificate from a test CA),
its endpoint registered and verified through Okta's Event Hooks API with the official SDK, and
the Okta emulator delivering the System Log events its changes write. Nothing here posts to the
service by hand: what lands is what Okta's deliveries caused, judged on the emulators' state."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from oktasync_emulators.runner import RunningEmulators
from tests.engine.harness import stats, write_requests
from tests.engine.service import HOOK_SECRET, service
from tests.engine.test_hooks import accounts, new_hire, synced_service_config, wait_for_account
from tests.engine.test_sync_behaviour import APP, TARGETS, estate, states

EVENT_TYPES = ["user.lifecycle.create", "user.lifecycle.activate", "user.lifecycle.deactivate",
               "group.user_membership.add", "group.user_membership.remove",
               "user.session.start"]


def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(the CA, the service's certificate, its key), from a fresh trustme CA."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    paths = tmp_path / "ca.pem", tmp_path / "serve.pem", tmp_path / "serve.key"
    ca.cert_pem.write_to_path(str(paths[0]))
    issued.cert_chain_pems[0].write_to_path(str(paths[1]))
    issued.private_key_pem.write_to_path(str(paths[2]))
    return paths


async def register(running: RunningEmulators, uri: str, secret: str) -> str:
    """The hook as an administrator registers it with the okta SDK: created, then verified."""
    from okta.client import Client as OktaClient
    from okta.models import (
        EventHook,
        EventHookChannel,
        EventHookChannelConfig,
        EventHookChannelConfigAuthScheme,
        EventSubscriptions,
    )

    client = OktaClient({"orgUrl": running.okta_url, "token": running.options.okta_token})
    config = EventHookChannelConfig(uri=uri, auth_scheme=EventHookChannelConfigAuthScheme(
        type="HEADER", key="Authorization", value=secret))
    hook = EventHook(name="oktasync", events=EventSubscriptions(type="EVENT_TYPE",
                                                                items=EVENT_TYPES),
                     channel=EventHookChannel(type="HTTP", version="1.0.0", config=config))
    created, _, error = await client.create_event_hook(hook)
    assert error is None, error
    verified, _, error = await client.verify_event_hook(created.id)
    assert error is None and verified.verification_status == "VERIFIED", error
    return str(created.id)


async def okta(running: RunningEmulators, method: str, path: str, **kwargs: Any) -> Any:
    """A request to the Okta emulator: the API with the org's token, or a control endpoint."""
    kwargs["headers"] = {"Authorization": f"SSWS {running.options.okta_token}"}
    async with aiohttp.ClientSession() as session, \
            session.request(method, running.okta_url + path, **kwargs) as response:
        assert response.status < 300, (path, response.status, await response.text())
        return await response.json() if response.content_length != 0 else None


async def hook_counts(running: RunningEmulators) -> dict[str, Any]:
    return {h["id"]: h for h in (await okta(running, "GET", "/_emulator/hooks"))["hooks"]}


async def wait_until_inactive(running: RunningEmulators, name: str, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while True:
        now = await states(running)
        if not any(accounts(now, t)[name]["active"] for t in TARGETS):
            return
        assert time.monotonic() < deadline, f"{name} is still active"
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_okta_delivers_to_the_registered_service_and_every_change_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OKTA_TESTING_TESTINGDISABLEHTTPSCHECK", "true")  # the emulator: http
    ca, cert, key = tls_files(tmp_path)
    trust = ssl.create_default_context(cafile=str(ca))
    # every delivery sent twice, as Okta may (at least once): the service syncs each event once
    async with estate(users=60, hook_ca_file=str(ca), hook_duplicate=1.0) as running:
        path, port = await synced_service_config(
            tmp_path, running, serve=f'tls_cert = "{cert}"\ntls_key = "{key}"')
        async with service(path, port, trust) as svc:
            uri = f"https://127.0.0.1:{port}/hooks/okta/{APP}"
            hook_id = await register(running, uri, HOOK_SECRET)
            # a new hire: created and activated, put in a group, signs in
            user_id = new_hire(running, "new.hire@example.com")
            await okta(running, "POST", f"/_emulator/users/{user_id}/sessions")
            await wait_for_account(running, "new.hire", within_s=2.0)
            await asyncio.sleep(0.5)  # the rest of the new hire's sync, and its duplicates
            jira_writes = write_requests((await stats(running))["jira"])
            # a leaver: deactivated in Okta, so in both targets
            leaver = next(u for u in running.okta.directory.iter_users()
                          if u.status == "ACTIVE" and u.id != user_id)
            name = leaver.login.split("@")[0]
            await okta(running, "POST", f"/_emulator/users/{leaver.id}/status",
                       json={"status": "DEPROVISIONED"})
            await wait_until_inactive(running, name, within_s=5.0)
            counts = (await hook_counts(running))[hook_id]
            assert counts["failed"] == 0 and counts["statuses"] == {
                "200": counts["attempts"]}, counts
            assert counts["events"] >= 5 and counts["duplicates"] >= 2, counts
            await asyncio.sleep(0.5)  # the duplicates have come and gone
            # the leaver's deactivation, and nothing else (no second creation of the new hire)
            assert write_requests((await stats(running))["jira"]) - jira_writes == 1
            health = await svc.health()
            assert health["apps"][APP]["events_synced"] >= 2, health
            await svc.stop()


@pytest.mark.asyncio
async def test_a_hook_with_the_wrong_secret_is_refused_never_retried_and_syncs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OKTA_TESTING_TESTINGDISABLEHTTPSCHECK", "true")
    ca, cert, key = tls_files(tmp_path)
    trust = ssl.create_default_context(cafile=str(ca))
    async with estate(users=40, hook_ca_file=str(ca)) as running:
        path, port = await synced_service_config(
            tmp_path, running, serve=f'tls_cert = "{cert}"\ntls_key = "{key}"')
        async with service(path, port, trust) as svc:
            uri = f"https://127.0.0.1:{port}/hooks/okta/{APP}"
            hook_id = await register(running, uri, HOOK_SECRET)
            # the secret changed on Okta's side only (same uri: the hook stays verified)
            hook = await okta(running, "GET", f"/api/v1/eventHooks/{hook_id}")
            hook["channel"]["config"]["authScheme"]["value"] = "not-the-secret"
            await okta(running, "PUT", f"/api/v1/eventHooks/{hook_id}", json=hook)
            user_id = new_hire(running, "refused@example.com")
            await okta(running, "POST", f"/_emulator/users/{user_id}/sessions")
            deadline = time.monotonic() + 5
            while (counts := (await hook_counts(running))[hook_id])["deliveries"] < 1:
                assert time.monotonic() < deadline, counts
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            counts = (await hook_counts(running))[hook_id]
            assert counts["statuses"] == {"401": counts["deliveries"]}, counts
            assert counts["retries"] == 0, counts  # a 4xx is never retried
            now = await states(running)
            assert all("refused" not in accounts(now, t) for t in TARGETS)
            health = await svc.health()
            assert health["apps"][APP]["events_synced"] == 0, health
            err = await svc.stop()
            assert "not-the-secret" not in err and HOOK_SECRET not in err
