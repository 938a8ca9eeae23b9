"""Syncing with an Okta OAuth 2.0 service app instead of an API token, against the Okta
emulator's token endpoint (private_key_jwt, scopes per endpoint, expiry, DPoP with its nonce).

The emulator's own counts say what happened on the wire: tokens issued and of which type,
resource requests by the kind of credentials they carried, refusals by reason. End states are
judged by the tests' oracle; a refused service app must stop the run with exit 2 and a message
naming the setting to fix, before a single write or Okta API request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from oktasync.engine import SyncOptions, run_sync
from oktasync.oauth import _GRANTS
from oktasync_emulators.oauth import OAuthClient
from oktasync_emulators.runner import EmulatorOptions, RunningEmulators, running_emulators
from tests.engine import oracle
from tests.engine.harness import (
    break_answers,
    get_json,
    load,
    states,
    stats,
    write_config,
    write_requests,
)

SETTINGS = oracle.Settings(default_groups={"jira": ("jira-software-users",),
                                           "confluence": ("confluence-users",)})
SCOPES = ("okta.users.read", "okta.groups.read", "okta.logs.read")
CLIENT_ID = "0oaServiceApp4oktasync"

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def quiet(*_: Any) -> None:
    """Summaries are checked through the result, not printed during tests."""


def key_files(tmp_path: Path, key: Key) -> tuple[Path, str]:
    """The private key as the config names it (a 0600 file) and its public half (PEM)."""
    path = tmp_path / "okta-key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, public.decode()


def oauth_lines(key_file: Path, *, client_id: str = CLIENT_ID, kid: str | None = None) -> str:
    lines = (f'okta_auth = "oauth"\nokta_client_id = "{client_id}"\n'
             f'okta_private_key = "file:{key_file}"\n')
    return lines + (f'okta_key_id = "{kid}"\n' if kid else "")


@pytest_asyncio.fixture
async def estate() -> AsyncIterator[RunningEmulators]:
    options = EmulatorOptions(users=120, groups=10, seed=11, ports=(0, 0, 0), okta_rate_scale=0)
    async with running_emulators(options) as running:
        yield running


async def oauth_counts(running: RunningEmulators) -> dict[str, Any]:
    counts: dict[str, Any] = await get_json(running.okta_url + "/_emulator/oauth")
    return counts


async def assert_oracle_state(running: RunningEmulators, before: dict[str, Any]) -> None:
    now = await states(running)
    for target in ("jira", "confluence"):
        expected = oracle.expected_accounts(now["okta"], oracle.target_accounts(before[target]),
                                            target, SETTINGS)
        problems = oracle.differences(expected, oracle.target_accounts(now[target]))
        assert problems == [], f"{target}: {problems[:5]}"


@pytest.mark.asyncio
@pytest.mark.parametrize("dpop", [False, True], ids=["bearer", "dpop"])
async def test_a_service_app_syncs_to_the_oracle_state(
        estate: RunningEmulators, tmp_path: Path, dpop: bool) -> None:
    key: Key = ec.generate_private_key(ec.SECP256R1()) if dpop else \
        rsa.generate_private_key(65537, 2048)
    key_file, public = key_files(tmp_path, key)
    estate.okta.oauth.register(OAuthClient(CLIENT_ID, public, SCOPES, kid="key-1", dpop=dpop))
    before = await states(estate)
    config = load(write_config(tmp_path, estate, okta_auth=oauth_lines(key_file, kid="key-1")))
    result = await run_sync(config, SyncOptions(), echo=quiet)
    assert result.exit_code in (0, 1), result.summaries["test-app"]["notes"]
    await assert_oracle_state(estate, before)

    counts = await oauth_counts(estate)
    kind = "DPoP" if dpop else "Bearer"
    assert counts["tokens_issued"] == {kind: 1}, counts  # one token served the whole run
    assert set(counts["resource_requests"]) == {kind}, counts  # never an API token
    assert counts["resource_requests"][kind] > 0
    if dpop:  # found out: a request without a proof, one without the nonce, then the token
        assert counts["token_refused"] == {"dpop_missing": 1, "dpop_nonce": 1}, counts
    else:
        assert counts["token_refused"] == {}, counts
    assert counts["resource_refused"] == {}, counts


@pytest.mark.asyncio
async def test_tokens_are_renewed_before_they_expire_and_once_more_when_revoked(
        estate: RunningEmulators, tmp_path: Path) -> None:
    key_file, public = key_files(tmp_path, rsa.generate_private_key(65537, 2048))
    # tokens living 2 s, renewed 0.5 s ahead; two full runs read Okta for a few seconds
    estate.okta.oauth.register(OAuthClient(CLIENT_ID, public, SCOPES, token_ttl_s=2.0))
    estate.okta.faults.latency_ms = 200
    before = await states(estate)
    config = load(write_config(tmp_path, estate, okta_auth=oauth_lines(key_file)))
    for _ in range(2):
        result = await run_sync(config, SyncOptions(full=True), echo=quiet)
        assert result.exit_code in (0, 1), result.summaries["test-app"]["notes"]
    counts = await oauth_counts(estate)
    assert counts["tokens_issued"]["Bearer"] >= 2, counts
    # renewed ahead: at most the requests already in flight when one expired are refused (a
    # machine so busy that 0.5 s was not enough), each cured by the renewal on its 401
    assert set(counts["resource_refused"]) <= {"invalid_token"}, counts
    assert counts["resource_refused"].get("invalid_token", 0) <= 8, counts
    await assert_oracle_state(estate, before)

    # a token for an hour, kept in this process for the next run; then Okta forgets every
    # token (revoked by an admin): the next request's 401 makes a new one, and the run goes on
    estate.okta.faults.latency_ms = 0
    estate.okta.oauth.register(OAuthClient(CLIENT_ID, public, SCOPES, token_ttl_s=3600))
    assert (await run_sync(config, SyncOptions(), echo=quiet)).exit_code in (0, 1)
    issued = (await oauth_counts(estate))["tokens_issued"]["Bearer"]
    estate.okta.oauth.tokens.clear()
    again = await run_sync(config, SyncOptions(full=True), echo=quiet)
    assert again.exit_code in (0, 1), again.summaries["test-app"]["notes"]
    counts = await oauth_counts(estate)
    assert sum(counts["resource_refused"].values()) >= 1, counts
    assert counts["tokens_issued"]["Bearer"] == issued + 1, counts


def refusal_case(case: str, public: str) -> tuple[OAuthClient, str]:
    """What the emulator registers for each mistake, and the client id the config uses."""
    if case == "unknown client id":
        return OAuthClient(CLIENT_ID, public, SCOPES), "0oaNotTheServiceApp9"
    if case == "a key the app does not have":
        other = rsa.generate_private_key(65537, 2048).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return OAuthClient(CLIENT_ID, other.decode(), SCOPES), CLIENT_ID
    return OAuthClient(CLIENT_ID, public, SCOPES[:2]), CLIENT_ID  # no okta.logs.read


@pytest.mark.asyncio
@pytest.mark.parametrize(("case", "words"), [
    ("unknown client id", "check okta_client_id"),
    ("a key the app does not have", "okta_private_key is not a key registered on that app"),
    ("a scope not granted", "it is not granted okta.logs.read; grant it in the Okta admin "
                            "console: Applications → the app → Okta API Scopes"),
])
async def test_a_refused_service_app_stops_before_anything_with_exit_2_saying_which(
        estate: RunningEmulators, tmp_path: Path, case: str, words: str) -> None:
    key_file, public = key_files(tmp_path, rsa.generate_private_key(65537, 2048))
    client, client_id = refusal_case(case, public)
    estate.okta.oauth.register(client)
    config = load(write_config(tmp_path, estate,
                               okta_auth=oauth_lines(key_file, client_id=client_id)))
    printed: list[str] = []
    result = await run_sync(config, SyncOptions(), echo=printed.append)
    assert result.exit_code == 2
    notes = " ".join(result.summaries["test-app"]["notes"])
    assert words in notes and f"service app {client_id}" in notes, notes
    assert "Traceback" not in "\n".join(printed)
    key_body = key_file.read_text().splitlines()[1]
    assert key_body not in notes + "\n".join(printed)
    counted = await stats(estate)
    assert write_requests(counted["jira"]) == write_requests(counted["confluence"]) == 0
    assert (await oauth_counts(estate))["resource_requests"] == {}  # not one API request


@pytest.mark.asyncio
async def test_a_token_without_a_scope_an_endpoint_needs_stops_the_run_naming_the_scope(
        estate: RunningEmulators, tmp_path: Path) -> None:
    """Okta answers 403 insufficient_scope when a token lacks a scope (an admin narrowed the
    app's grants while its token lived): the run stops with exit 2 naming the scope."""
    key_file, public = key_files(tmp_path, rsa.generate_private_key(65537, 2048))
    estate.okta.oauth.register(OAuthClient(CLIENT_ID, public, SCOPES))
    config = load(write_config(tmp_path, estate, okta_auth=oauth_lines(key_file)))
    assert (await run_sync(config, SyncOptions(), echo=quiet)).exit_code in (0, 1)
    for token in estate.okta.oauth.tokens.values():  # the cached token loses the System Log
        token.scopes = token.scopes - {"okta.logs.read"}
    result = await run_sync(config, SyncOptions(), echo=quiet)  # incremental: reads the log
    assert result.exit_code == 2
    notes = " ".join(result.summaries["test-app"]["notes"])
    assert (f"Okta (test-app): the service app {CLIENT_ID} lacks okta.logs.read for "
            "/api/v1/logs: grant it in the Okta admin console") in notes, notes
    assert (await oauth_counts(estate))["resource_refused"] == {"insufficient_scope": 1}


@pytest.mark.asyncio
async def test_a_token_answer_that_is_not_json_is_retried_then_stops_the_run_with_exit_4(
        estate: RunningEmulators, tmp_path: Path) -> None:
    """A proxy's or a maintenance page instead of the token (200, HTML): retried like a
    server error; still there, the run stops as a failed listing (exit 4), naming it."""
    key_file, public = key_files(tmp_path, rsa.generate_private_key(65537, 2048))
    estate.okta.oauth.register(OAuthClient(CLIENT_ID, public, SCOPES))
    config = load(write_config(tmp_path, estate, okta_auth=oauth_lines(key_file)))
    await break_answers(estate.okta_url, "POST /oauth2/v1/token", "html", times=2)
    result = await run_sync(config, SyncOptions(), echo=quiet)
    assert result.exit_code in (0, 1), result.summaries["test-app"]["notes"]
    # three token requests: the two answers replaced by a page, then the one that came back
    assert (await oauth_counts(estate))["token_requests"] == 3

    await break_answers(estate.okta_url, "POST /oauth2/v1/token", "html", times=100)
    _GRANTS.clear()  # a new process: no token kept
    result = await run_sync(config, SyncOptions(full=True), echo=quiet)
    assert result.exit_code == 4
    notes = " ".join(result.summaries["test-app"]["notes"])
    assert ("Okta (test-app): token request: POST /oauth2/v1/token: HTTP 200: Okta (test-app) "
            "answered with an HTML page, not JSON") in notes, notes
    stat = (await stats(estate))["okta"]
    assert stat["faults"]["altered"] >= 2 + 6, stat["faults"]  # the fault was injected
