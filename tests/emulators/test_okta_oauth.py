"""The Okta emulator's OAuth 2.0 for service apps: the official SDK gets tokens (Bearer and
DPoP) and lists with them; every way a token request or a token use can be wrong is refused
the way Okta refuses it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from oktasync_emulators.cli import build_parser, options_from
from oktasync_emulators.directory import generate_directory
from oktasync_emulators.oauth import ASSERTION_TYPE, TOKEN_PATH, OAuthClient, b64url
from oktasync_emulators.okta import OktaEmulator, OktaRateConfig
from oktasync_emulators.runner import EmulatorOptions, running_emulators

TOKEN = "00test-okta-token"
CLIENT = "0oaservice000000001"
DPOP_CLIENT = "0oaservice000000002"
READ = ("okta.users.read", "okta.groups.read")
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
DPOP_KEY = ec.generate_private_key(ec.SECP256R1())  # the client's proof key (not the app's)


def private_pem(key: PrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def public_pem(key: PrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def public_jwk(key: PrivateKey) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        return dict(RSAAlgorithm.to_jwk(key.public_key(), as_dict=True))
    return dict(ECAlgorithm.to_jwk(key.public_key(), as_dict=True))


def alg_of(key: PrivateKey) -> str:
    return "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"


def assertion(key: PrivateKey, client_id: str, aud: str, *, exp_in: float = 300,
              jti: str | None = None, kid: str | None = None, **claims: Any) -> str:
    """A client assertion as the SDK builds one; keyword claims override."""
    now = int(time.time())
    body = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now,
            "exp": int(now + exp_in), "jti": jti or str(uuid.uuid4()), **claims}
    headers = {"kid": kid} if kid else None
    return jwt.encode(body, key, algorithm=alg_of(key), headers=headers)


def proof(key: PrivateKey, htm: str, htu: str, *, nonce: str | None = None,
          access_token: str | None = None, ath: str | None = None,
          jti: str | None = None) -> str:
    """A DPoP proof: ``ath`` from ``access_token`` unless given."""
    claims: dict[str, Any] = {"htm": htm, "htu": htu, "iat": int(time.time()),
                              "jti": jti or str(uuid.uuid4())}
    if nonce is not None:
        claims["nonce"] = nonce
    if access_token is not None:
        claims["ath"] = b64url(hashlib.sha256(access_token.encode()).digest())
    if ath is not None:
        claims["ath"] = ath
    return jwt.encode(claims, key, algorithm=alg_of(key),
                      headers={"typ": "dpop+jwt", "jwk": public_jwk(key)})


def make_okta(*clients: OAuthClient) -> OktaEmulator:
    return OktaEmulator(generate_directory(users=30, groups=4, seed=3), token=TOKEN,
                        rate=OktaRateConfig(scale=0), oauth_clients=clients)


def default_clients() -> list[OAuthClient]:
    return [OAuthClient(CLIENT, public_pem(RSA_KEY), READ, kid="key-1"),
            OAuthClient(DPOP_CLIENT, public_jwk(EC_KEY), READ, dpop=True)]


@asynccontextmanager
async def serve(emulator: OktaEmulator) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """The emulator on 127.0.0.1 (ephemeral port) and a session without credentials."""
    runner = web.AppRunner(emulator.make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    try:
        async with aiohttp.ClientSession(base_url=base) as session:
            yield session, base
    finally:
        await runner.cleanup()


async def call(session: aiohttp.ClientSession, method: str, path: str,
               **kwargs: Any) -> tuple[int, Any, Any]:
    async with session.request(method, path, **kwargs) as resp:
        raw = await resp.read()
        body: Any = json.loads(raw) if raw and resp.content_type == "application/json" else raw
        return resp.status, body, resp.headers


async def ask_token(session: aiohttp.ClientSession, client_assertion: str,
                    scope: str = " ".join(READ), dpop: str | None = None,
                    **form: str) -> tuple[int, Any, Any]:
    data = {"grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": client_assertion,
            **form}
    headers = {"DPoP": dpop} if dpop else {}
    return await call(session, "POST", TOKEN_PATH, data=data, headers=headers)


async def bearer_token(session: aiohttp.ClientSession, base: str, scope: str = " ".join(READ),
                       key: PrivateKey = RSA_KEY, client_id: str = CLIENT) -> str:
    status, body, _ = await ask_token(session, assertion(key, client_id, base + TOKEN_PATH),
                                      scope)
    assert status == 200, body
    assert body["token_type"] == "Bearer"
    return str(body["access_token"])


async def dpop_token(session: aiohttp.ClientSession, base: str) -> str:
    """A DPoP-bound token for the DPoP app, after the nonce exchange."""
    url = base + TOKEN_PATH
    status, body, headers = await ask_token(session, assertion(EC_KEY, DPOP_CLIENT, url),
                                            dpop=proof(DPOP_KEY, "POST", url))
    assert (status, body["error"]) == (400, "use_dpop_nonce")
    nonce = headers["DPoP-Nonce"]
    status, body, _ = await ask_token(session, assertion(EC_KEY, DPOP_CLIENT, url),
                                      dpop=proof(DPOP_KEY, "POST", url, nonce=nonce))
    assert status == 200, body
    assert body["token_type"] == "DPoP"
    return str(body["access_token"])


# ---------------------------------------------------------------------------------------------
# The official SDK, PrivateKey mode


def listed_ids(emulator: OktaEmulator) -> list[str]:
    """What a plain user listing returns: everyone but the DEPROVISIONED."""
    return sorted(u.id for u in emulator.directory.iter_users() if u.status != "DEPROVISIONED")


def sdk_config(base: str, client_id: str, key: PrivateKey, **extra: Any) -> dict[str, Any]:
    return {"orgUrl": base, "authorizationMode": "PrivateKey", "clientId": client_id,
            "scopes": list(READ), "privateKey": private_pem(key), **extra}


@pytest.mark.asyncio
async def test_official_sdk_private_key_lists_users_and_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from okta.client import Client as OktaClient

    monkeypatch.setenv("OKTA_TESTING_TESTINGDISABLEHTTPSCHECK", "true")
    emulator = make_okta(*default_clients())
    async with serve(emulator) as (_, base):
        client = OktaClient(sdk_config(base, CLIENT, RSA_KEY, kid="key-1"))
        users, _, error = await client.list_users()
        assert error is None
        groups, _, error = await client.list_groups()
        assert error is None
    assert sorted(u.id for u in users) == listed_ids(emulator)
    assert len(groups) == 5  # four generated plus Everyone
    counts = emulator.oauth.counts.to_json()
    assert counts["tokens_issued"] == {"Bearer": 1}  # the SDK keeps its token
    assert counts["resource_requests"] == {"Bearer": 2}
    assert counts["token_refused"] == {}


@pytest.mark.asyncio
async def test_official_sdk_with_dpop_gets_a_bound_token_after_the_nonce(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from okta.client import Client as OktaClient

    monkeypatch.setenv("OKTA_TESTING_TESTINGDISABLEHTTPSCHECK", "true")
    dpop_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    emulator = make_okta(OAuthClient(DPOP_CLIENT, public_pem(dpop_rsa), READ, dpop=True))
    async with serve(emulator) as (_, base):
        client = OktaClient(sdk_config(base, DPOP_CLIENT, dpop_rsa, dpopEnabled=True))
        users, _, error = await client.list_users()
        assert error is None
        groups, _, error = await client.list_groups()
        assert error is None
    assert sorted(u.id for u in users) == listed_ids(emulator)
    assert len(groups) == 5
    counts = emulator.oauth.counts.to_json()
    assert counts["token_refused"] == {"dpop_nonce": 1}
    assert counts["tokens_issued"] == {"DPoP": 1}
    assert counts["resource_requests"] == {"DPoP": 2}
    assert counts["resource_refused"] == {}


# ---------------------------------------------------------------------------------------------
# The token endpoint's refusals


@pytest.mark.asyncio
async def test_token_endpoint_refuses_bad_client_assertions() -> None:
    async with serve(make_okta(*default_clients())) as (session, base):
        url = base + TOKEN_PATH
        cases = {
            "unknown_client": assertion(RSA_KEY, "0oanobody0000000000", url),
            "signature": assertion(OTHER_KEY, CLIENT, url),
            "aud": assertion(RSA_KEY, CLIENT, base + "/oauth2/default/v1/token"),
            "exp_too_far": assertion(RSA_KEY, CLIENT, url, exp_in=3700),
            "expired_assertion": assertion(RSA_KEY, CLIENT, url, exp_in=-5),
            "kid": assertion(RSA_KEY, CLIENT, url, kid="key-2"),
            "iss_sub": assertion(RSA_KEY, CLIENT, url, iss="someone-else"),
        }
        answers = {reason: await ask_token(session, a) for reason, a in cases.items()}
        wrong_type = await ask_token(session, assertion(RSA_KEY, CLIENT, url),
                                     client_assertion_type="urn:other")
        _, counts, _ = await call(session, "GET", "/_emulator/oauth")
    for reason, (status, body, headers) in answers.items():
        assert (status, body["error"]) == (401, "invalid_client"), reason
        assert headers["Cache-Control"] == "no-store"
    assert answers["kid"][1]["error_description"] == "The client_assertion JWT kid is invalid."
    assert wrong_type[0] == 401
    assert wrong_type[1]["error_description"] == "The client_assertion_type is invalid."
    assert counts["token_refused"] == {**dict.fromkeys(cases, 1), "assertion_type": 1}
    assert counts["token_requests"] == len(cases) + 1
    assert counts["tokens_issued"] == {}


@pytest.mark.asyncio
async def test_a_client_assertion_is_used_once() -> None:
    async with serve(make_okta(*default_clients())) as (session, base):
        once = assertion(RSA_KEY, CLIENT, base + TOKEN_PATH, kid="key-1")
        first = await ask_token(session, once)
        again = await ask_token(session, once)
    assert first[0] == 200
    assert set(first[1]) == {"token_type", "expires_in", "access_token", "scope"}
    assert first[1]["expires_in"] == 3600
    assert first[1]["scope"] == " ".join(sorted(READ))
    assert again[0] == 401
    assert again[1] == {"error": "invalid_client",
                        "error_description": "The client_assertion token has already been used."}


@pytest.mark.asyncio
async def test_token_endpoint_refuses_scopes_the_app_was_not_granted() -> None:
    async with serve(make_okta(*default_clients())) as (session, base):
        url = base + TOKEN_PATH

        async def ask(scope: str) -> tuple[int, Any, Any]:
            return await ask_token(session, assertion(RSA_KEY, CLIENT, url), scope)

        none_granted = await ask("okta.logs.read")
        some_granted = await ask("okta.users.read okta.logs.read")
        unknown = await ask("okta.users.read profile")
        missing = await ask("")
        fewer = await ask("okta.users.read")
    assert (none_granted[0], none_granted[1]["error"]) == (400, "consent_required")
    assert (some_granted[0], some_granted[1]["error"]) == (400, "invalid_scope")
    assert "okta.logs.read" in some_granted[1]["error_description"]
    assert (unknown[0], unknown[1]["error"]) == (400, "invalid_scope")
    assert (missing[0], missing[1]["error"]) == (400, "invalid_scope")
    assert fewer[0] == 200
    assert fewer[1]["scope"] == "okta.users.read"


@pytest.mark.asyncio
async def test_dpop_app_needs_a_proof_and_a_nonce_it_issued() -> None:
    async with serve(make_okta(*default_clients())) as (session, base):
        url = base + TOKEN_PATH

        async def ask(dpop: str | None) -> tuple[int, Any, Any]:
            return await ask_token(session, assertion(EC_KEY, DPOP_CLIENT, url), dpop=dpop)

        no_proof = await ask(None)
        no_nonce = await ask(proof(DPOP_KEY, "POST", url))
        nonce = no_nonce[2]["DPoP-Nonce"]
        made_up = await ask(proof(DPOP_KEY, "POST", url, nonce="not-one-we-gave"))
        wrong_htu = await ask(proof(DPOP_KEY, "POST", base + "/oauth2/v1/other", nonce=nonce))
        wrong_htm = await ask(proof(DPOP_KEY, "GET", url, nonce=nonce))
        reused = proof(DPOP_KEY, "POST", url, nonce=nonce)
        good = await ask(reused)
        replayed = await ask(reused)
    assert no_proof[:2] == (400, {"error": "invalid_dpop_proof",
                                  "error_description": "The DPoP proof JWT header is missing."})
    assert no_nonce[:2] == (400, {"error": "use_dpop_nonce", "error_description":
                                  "Authorization server requires nonce in DPoP proof."})
    assert (made_up[0], made_up[1]["error"]) == (400, "use_dpop_nonce")
    assert made_up[2]["DPoP-Nonce"]
    assert wrong_htu[1]["error_description"] == "'htu' claim in the DPoP proof JWT is invalid."
    assert wrong_htm[1]["error_description"] == "'htm' claim in the DPoP proof JWT is invalid."
    assert (good[0], good[1]["token_type"]) == (200, "DPoP")
    assert (replayed[0], replayed[1]["error"]) == (400, "invalid_dpop_proof")


# ---------------------------------------------------------------------------------------------
# Resource requests with tokens


@pytest.mark.asyncio
async def test_a_token_reaches_only_what_its_scopes_allow() -> None:
    async with serve(make_okta(*default_clients())) as (session, base):
        token = await bearer_token(session, base, "okta.users.read")
        auth = {"Authorization": f"Bearer {token}"}
        users = await call(session, "GET", "/api/v1/users", headers=auth)
        groups = await call(session, "GET", "/api/v1/groups", headers=auth)
        hooks = await call(session, "GET", "/api/v1/eventHooks", headers=auth)
        ssws = await call(session, "GET", "/api/v1/groups",
                          headers={"Authorization": f"SSWS {TOKEN}"})
        _, counts, _ = await call(session, "GET", "/_emulator/oauth")
    assert users[0] == 200
    assert groups[0] == 403
    assert groups[1]["errorCode"] == "E0000006"
    challenge = groups[2]["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="okta.groups.read"' in challenge
    assert 'resource="/api/v1/groups"' in challenge
    assert hooks[0] == 403 and 'scope="okta.eventHooks.read"' in hooks[2]["WWW-Authenticate"]
    assert ssws[0] == 200  # the API token is accepted as before
    assert counts["resource_requests"] == {"Bearer": 3, "SSWS": 1}
    assert counts["resource_refused"] == {"insufficient_scope": 2}


@pytest.mark.asyncio
async def test_an_expired_token_is_refused() -> None:
    short = OAuthClient(CLIENT, public_pem(RSA_KEY), READ, token_ttl_s=1)
    async with serve(make_okta(short)) as (session, base):
        url = base + TOKEN_PATH
        status, body, _ = await ask_token(session, assertion(RSA_KEY, CLIENT, url))
        assert (status, body["expires_in"]) == (200, 1)
        auth = {"Authorization": f"Bearer {body['access_token']}"}
        fresh = await call(session, "GET", "/api/v1/users", headers=auth)
        await asyncio.sleep(1.1)
        stale = await call(session, "GET", "/api/v1/users", headers=auth)
        unknown = await call(session, "GET", "/api/v1/users",
                             headers={"Authorization": "Bearer not-a-token"})
    assert fresh[0] == 200
    assert stale[0] == 401
    assert stale[1]["errorCode"] == "E0000011"
    assert 'error="invalid_token"' in stale[2]["WWW-Authenticate"]
    assert 'error_description="The token has expired."' in stale[2]["WWW-Authenticate"]
    assert unknown[0] == 401


@pytest.mark.asyncio
async def test_a_dpop_token_needs_its_scheme_and_a_proof_of_its_key() -> None:
    async with serve(make_okta(*default_clients())) as (session, base):
        token = await dpop_token(session, base)
        url = base + "/api/v1/users"

        async def get(scheme: str, dpop: str | None) -> tuple[int, Any, Any]:
            headers = {"Authorization": f"{scheme} {token}"}
            if dpop is not None:
                headers["DPoP"] = dpop
            return await call(session, "GET", "/api/v1/users?limit=5", headers=headers)

        as_bearer = await get("Bearer", None)
        no_proof = await get("DPoP", None)
        no_ath = await get("DPoP", proof(DPOP_KEY, "GET", url))
        wrong_ath = await get("DPoP", proof(DPOP_KEY, "GET", url, ath=b64url(b"x" * 32)))
        other_key = await get("DPoP", proof(EC_KEY, "GET", url, access_token=token))
        wrong_url = await get("DPoP", proof(DPOP_KEY, "GET", base + "/api/v1/groups",
                                            access_token=token))
        good = await get("DPoP", proof(DPOP_KEY, "GET", url, access_token=token))
        _, counts, _ = await call(session, "GET", "/_emulator/oauth")
    assert as_bearer[0] == 401
    assert 'error="invalid_token"' in as_bearer[2]["WWW-Authenticate"]
    for answer in (no_proof, no_ath, wrong_ath, other_key, wrong_url):
        assert (answer[0], answer[1]["error"]) == (400, "invalid_dpop_proof")
        assert answer[2]["WWW-Authenticate"].startswith("DPoP ")
    assert no_ath[1]["error_description"] == "'ath' claim in the DPoP proof JWT is invalid."
    assert wrong_ath[1]["error_description"] == no_ath[1]["error_description"]
    assert good[0] == 200 and len(good[1]) == 5
    assert counts["resource_requests"] == {"Bearer": 1, "DPoP": 6}
    assert counts["resource_refused"] == {"dpop_invalid": 4, "dpop_missing": 1,
                                          "wrong_token_type": 1}


# ---------------------------------------------------------------------------------------------
# Registration: control route, EmulatorOptions, CLI


@pytest.mark.asyncio
async def test_a_service_app_registered_at_run_time() -> None:
    async with serve(make_okta()) as (session, base):
        before = await bearer_token_status(session, base)
        registered = await call(session, "POST", "/_emulator/oauth/clients", json={
            "client_id": CLIENT, "public_key": public_jwk(EC_KEY) | {"kid": "ec-1"},
            "scopes": "okta.users.read okta.logs.read", "token_ttl_s": 600})
        token_answer = await ask_token(
            session, assertion(EC_KEY, CLIENT, base + TOKEN_PATH, kid="ec-1"),
            "okta.logs.read")
        refused = await call(session, "POST", "/_emulator/oauth/clients",
                             json={"public_key": private_pem(RSA_KEY)})
        logs = await call(session, "GET", "/api/v1/logs", headers={
            "Authorization": f"Bearer {token_answer[1]['access_token']}"})
        _, counts, _ = await call(session, "GET", "/_emulator/oauth")
    assert before == 401
    assert registered[0] == 201
    assert registered[1] == {"client_id": CLIENT, "kid": "ec-1",
                             "scopes": ["okta.logs.read", "okta.users.read"], "dpop": False,
                             "token_ttl_s": 600.0}
    assert token_answer[1]["expires_in"] == 600
    assert refused[0] == 400 and "public key" in refused[1]["error"]
    assert logs[0] == 200
    assert counts["clients"] == [registered[1]]
    assert counts["tokens_issued"] == {"Bearer": 1}


async def bearer_token_status(session: aiohttp.ClientSession, base: str) -> int:
    status, _, _ = await ask_token(session, assertion(EC_KEY, CLIENT, base + TOKEN_PATH))
    return status


@pytest.mark.asyncio
async def test_emulator_options_register_service_apps() -> None:
    options = EmulatorOptions(users=10, groups=2, seed=2, ports=(0, 0, 0), okta_rate_scale=0,
                              oauth_clients=default_clients())
    async with running_emulators(options) as running, aiohttp.ClientSession() as session:
        base = running.okta_url
        url = base + TOKEN_PATH
        async with session.post(url, data={
            "grant_type": "client_credentials", "scope": "okta.groups.read",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(RSA_KEY, CLIENT, url)}) as resp:
            token = (await resp.json())["access_token"]
        async with session.get(base + "/api/v1/groups",
                               headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200
        info = running.info()
    assert [c["client_id"] for c in info["okta"]["oauth_clients"]] == [CLIENT, DPOP_CLIENT]


def test_cli_registers_one_service_app(tmp_path: Path) -> None:
    key_file = tmp_path / "app.pem"
    key_file.write_text(public_pem(RSA_KEY))
    parser = build_parser()
    options = options_from(parser.parse_args([
        "--oauth-client-id", CLIENT, "--oauth-public-key", str(key_file),
        "--oauth-scopes", "okta.users.read okta.logs.read", "--oauth-dpop",
        "--oauth-token-ttl-s", "120", "--oauth-kid", "k9"]), parser)
    (client,) = options.oauth_clients
    assert (client.client_id, tuple(client.scopes), client.dpop, client.token_ttl_s,
            client.kid) == (CLIENT, ("okta.users.read", "okta.logs.read"), True, 120.0, "k9")
    assert options_from(parser.parse_args([]), parser).oauth_clients == []
    private_file = tmp_path / "private.pem"
    private_file.write_text(private_pem(RSA_KEY))
    for argv in (["--oauth-client-id", CLIENT],
                 ["--oauth-client-id", CLIENT, "--oauth-public-key", str(private_file)]):
        with pytest.raises(SystemExit) as exited:
            options_from(parser.parse_args(argv), parser)
        assert exited.value.code == 2
