"""Okta OAuth 2.0 for a service app: the access token the Okta client sends, and its renewal.

The token comes from ``POST {org}/oauth2/v1/token`` (client credentials, ``private_key_jwt``:
a client assertion signed with the app's key, see okta-api.md). It is kept in memory, renewed
before it expires (a quarter of its life, at most five minutes, ahead) and once more when Okta
answers 401 (a token revoked or expired early). When the app requires DPoP, the token is bound
to a key made for this process: Okta's ``use_dpop_nonce`` exchange is followed, and every
request carries a fresh proof (``DPoP`` header) with the token's hash.

Every way the token request can be refused is decided here, before the run writes anything:
a wrong client id, a key Okta does not know, a scope not granted (which one is found by asking
for each alone), a grant the app may not use. Each is a ``CredentialsError`` (exit 2) that says
which setting to fix. The token, the assertions and the proofs are redacted from every output.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from yarl import URL

from oktasync.config import OAuthConfig
from oktasync.errors import (
    RETRY_STATUSES,
    Backoff,
    Consequence,
    Context,
    CredentialsError,
    answer_failure,
    cause_of,
    consequence_of_exception,
    no_answer,
    no_retry_cures,
)
from oktasync.http import Answer
from oktasync.logs import REDACTOR

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_ATTEMPTS = 6
RENEW_AHEAD_S = 300.0
# a scope not granted: invalid_scope, or consent_required when none asked for is granted
# (okta-sdk-java#822)
SCOPE_REFUSALS = frozenset({"invalid_scope", "consent_required"})
SCOPES_PAGE = "the Okta admin console: Applications → the app → Okta API Scopes"
_SCOPE_IN_CHALLENGE = re.compile(r'scope="([^"]*)"')


class DPoPKey:
    """The key this process proves possession of (EC P-256, made at start, never stored),
    and the nonces Okta gave for the token endpoint and for the API."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        numbers = self._key.public_key().public_numbers()
        self.jwk = {"kty": "EC", "crv": "P-256", "x": _b64(numbers.x.to_bytes(32, "big")),
                    "y": _b64(numbers.y.to_bytes(32, "big"))}
        self.token_nonce: str | None = None
        self.api_nonce: str | None = None

    def proof(self, method: str, url: URL, *, nonce: str | None,
              access_token: str | None = None) -> str:
        """A DPoP proof for one request: its method and URL (no query), now, unique."""
        claims: dict[str, Any] = {"htm": method,
                                  "htu": str(url.with_query(None).with_fragment(None)),
                                  "iat": int(time.time()), "jti": uuid.uuid4().hex}
        if nonce is not None:
            claims["nonce"] = nonce
        if access_token is not None:
            claims["ath"] = _b64(hashlib.sha256(access_token.encode("ascii")).digest())
        return jwt.encode(claims, self._key, algorithm="ES256",
                          headers={"typ": "dpop+jwt", "jwk": self.jwk})


@dataclass
class Grant:
    """A token and what it is bound to, shared by every client of one service app in this
    process (a service syncing events opens a client per batch: they reuse the token)."""

    token: str | None = None
    renew_at: float = 0.0
    dpop: DPoPKey | None = None


_GRANTS: dict[tuple[str, ...], Grant] = {}


def _grant_of(config: OAuthConfig, token_url: URL) -> Grant:
    key_digest = hashlib.sha256(config.private_key.reveal().encode()).hexdigest()
    return _GRANTS.setdefault((str(token_url), config.client_id, key_digest, *config.scopes),
                              Grant())


class OktaOAuth:
    """An Okta service app's access token for one Okta client (see the module docstring).

    ``server`` names Okta as messages do (``Okta (corp)``); ``session`` is that client's,
    so the token request takes the same proxy and TLS trust as the API requests."""

    def __init__(self, config: OAuthConfig, okta_url: str, server: str,
                 session: aiohttp.ClientSession) -> None:
        self._config = config
        self._server = server
        self._session = session
        self._token_url = URL(okta_url.rstrip("/") + "/oauth2/v1/token")
        key = load_pem_private_key(config.private_key.reveal().encode(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)  # settings checked
        self._key = key
        self._algorithm = _algorithm(key)
        self._grant = _grant_of(config, self._token_url)
        self._lock = anyio.Lock()

    # -- the Auth protocol of the HTTP layer -----------------------------------------------

    async def sign_in(self) -> None:
        await self.token()

    async def authorize(self, method: str, url: URL) -> Mapping[str, str]:
        token = await self.token()
        dpop = self._grant.dpop
        if dpop is None:
            return {"Authorization": f"Bearer {token}"}
        proof = dpop.proof(method, url, nonce=dpop.api_nonce, access_token=token)
        return {"Authorization": f"DPoP {token}", "DPoP": proof}

    async def renew(self, answer: Answer, sent: Mapping[str, str]) -> bool:
        challenge = answer.headers.get("WWW-Authenticate", "")
        dpop = self._grant.dpop
        if dpop is not None and "use_dpop_nonce" in challenge:
            dpop.api_nonce = answer.headers.get("DPoP-Nonce", dpop.api_nonce)
            return True
        if answer.status != 401:
            return False
        token = self._grant.token
        if token is not None and sent.get("Authorization", "").endswith(" " + token):
            self._grant.token = None  # the one refused: the next request gets a new one
        return True

    def forbidden(self, answer: Answer) -> str | None:
        challenge = answer.headers.get("WWW-Authenticate", "")
        if answer.status != 403 or "insufficient_scope" not in challenge:
            return None
        found = _SCOPE_IN_CHALLENGE.search(challenge)
        needed = found.group(1) if found else "a scope it needs"
        return (f"the service app {self._config.client_id} lacks {needed} for "
                f"{answer.url.path}: grant it in {SCOPES_PAGE}")

    # -- the token -------------------------------------------------------------------------

    async def token(self) -> str:
        """The current access token, fetched or renewed first when due."""
        grant = self._grant
        if grant.token is not None and time.monotonic() < grant.renew_at:
            return grant.token
        async with self._lock:
            if grant.token is None or time.monotonic() >= grant.renew_at:
                token, lifetime = await self._fetch(self._config.scopes)
                grant.token = token
                grant.renew_at = time.monotonic() + lifetime - min(RENEW_AHEAD_S, lifetime / 4)
            return grant.token

    async def _fetch(self, scopes: tuple[str, ...]) -> tuple[str, float]:
        """A new token for ``scopes`` and its lifetime in seconds; CredentialsError when Okta
        refuses, saying why; the listing's failure when Okta cannot be reached."""
        attempt, backoff = 0, Backoff(base_s=0.5)
        while True:
            attempt += 1
            answer, error = await self._post(scopes)
            refused = None if error is None else no_retry_cures(
                self._server, str(self._token_url.origin()), error)
            if refused is not None:
                raise refused
            broken = answer.malformed(dict) if answer is not None and answer.status == 200 \
                else None
            if answer is not None and answer.status == 200 and broken is None:
                return self._accepted(answer)
            code = _error_code(answer)
            if answer is not None and code == "use_dpop_nonce" and attempt < TOKEN_ATTEMPTS:
                self._grant.dpop = self._grant.dpop or DPoPKey()
                self._grant.dpop.token_nonce = answer.headers.get("DPoP-Nonce")
                continue
            if code == "invalid_dpop_proof" and self._grant.dpop is None:
                self._grant.dpop = DPoPKey()  # the app requires DPoP: prove possession now on
                continue
            if answer is not None:
                retry = answer.status in RETRY_STATUSES or broken is not None
            else:
                retry = error is not None and \
                    consequence_of_exception(error) is Consequence.RETRY
            if retry and attempt < TOKEN_ATTEMPTS:
                await anyio.sleep(_retry_after(answer) or backoff.delay(attempt))
                continue
            if answer is None:
                raise no_answer(Context.LISTING, self._server, str(self._token_url.origin()),
                                "POST", self._token_url, cause_of(error or TimeoutError(), 30),
                                attempt, 0.0, None) from None
            if broken is not None:  # a proxy's or a maintenance page, still after retries
                raise answer_failure(Context.LISTING, self._server, "POST", self._token_url.path,
                                     200, f"{self._server} answered with {broken}",
                                     "token request")
            raise CredentialsError(await self._refusal(answer, code, scopes))

    async def _post(self, scopes: tuple[str, ...]) -> tuple[Answer | None, BaseException | None]:
        headers = {"Accept": "application/json"}
        dpop = self._grant.dpop
        if dpop is not None:
            headers["DPoP"] = dpop.proof("POST", self._token_url, nonce=dpop.token_nonce)
        form = {"grant_type": "client_credentials", "scope": " ".join(scopes),
                "client_assertion_type": ASSERTION_TYPE, "client_assertion": self._assertion()}
        try:
            async with self._session.post(self._token_url, data=form, headers=headers,
                                          allow_redirects=False) as response:
                body = await response.read()
                return Answer(response.status, response.headers, body, self._token_url), None
        except Exception as exc:  # judged by the caller: transient ones are retried
            if consequence_of_exception(exc) is not Consequence.RETRY:
                raise
            return None, exc

    def _assertion(self) -> str:
        """The client assertion: who we are (iss = sub = client id), for this token URL,
        valid five minutes, never reused (jti)."""
        now = int(time.time())
        client = self._config.client_id
        claims = {"iss": client, "sub": client, "aud": str(self._token_url), "iat": now,
                  "exp": now + 300, "jti": uuid.uuid4().hex}
        headers = {"kid": self._config.key_id} if self._config.key_id else None
        assertion = jwt.encode(claims, self._key, algorithm=self._algorithm, headers=headers)
        return assertion

    def _accepted(self, answer: Answer) -> tuple[str, float]:
        """The token and its lifetime from a 200 whose body ``_fetch`` checked is an object."""
        body: dict[str, Any] = answer.parsed
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise CredentialsError(f"{self._server}: the token endpoint answered 200 without "
                                   "an access_token")
        if str(body.get("token_type", "Bearer")).lower() == "dpop" and self._grant.dpop is None:
            raise CredentialsError(f"{self._server}: Okta issued a DPoP token without a proof")
        lifetime = body.get("expires_in", 3600)
        REDACTOR.add(token)
        return token, float(lifetime) if isinstance(lifetime, int | float) else 3600.0

    async def _refusal(self, answer: Answer, code: str | None,
                       scopes: tuple[str, ...]) -> str:
        """Why Okta refused the token, and what to change."""
        said = _description(answer)
        client = self._config.client_id
        where = f"{self._server}: the token request for service app {client} was refused"
        if code in SCOPE_REFUSALS:
            missing = [s for s in scopes if not await self._granted(s)] if len(scopes) > 1 \
                else list(scopes)
            return (f"{where}: it is not granted {', '.join(missing) or ' '.join(scopes)}; "
                    f"grant it in {SCOPES_PAGE}")
        if code == "invalid_client":
            if "signature" in said.lower() or "key" in said.lower() or "kid" in said.lower():
                fix = ("okta_private_key is not a key registered on that app (or okta_key_id "
                       "names another key): add its public key to the app in Okta")
            elif "client" in said.lower():
                fix = "check okta_client_id (the app's Client ID) and okta_url"
            else:
                fix = ("check okta_client_id, and that okta_private_key (okta_key_id) is a key "
                       "registered on the app")
            return f"{where} ({code}: {said}): {fix}"
        if code == "unauthorized_client":
            return (f"{where} ({code}: {said}): the app must be an API Services app allowed "
                    "the Client Credentials grant")
        return f"{where} (HTTP {answer.status}, {code or 'no error code'}: {said})"

    async def _granted(self, scope: str) -> bool:
        answer, _ = await self._post((scope,))
        dpop = self._grant.dpop
        if answer is not None and _error_code(answer) == "use_dpop_nonce" and dpop is not None:
            dpop.token_nonce = answer.headers.get("DPoP-Nonce")
            answer, _ = await self._post((scope,))
        return answer is None or _error_code(answer) not in SCOPE_REFUSALS


def _algorithm(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    return {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[key.curve.name]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _error(answer: Answer | None) -> dict[str, Any]:
    if answer is None or answer.body.strip()[:1] != b"{":
        return {}
    try:
        body = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_code(answer: Answer | None) -> str | None:
    code = _error(answer).get("error")
    return code if isinstance(code, str) else None


def _description(answer: Answer) -> str:
    said = _error(answer).get("error_description")
    return REDACTOR.redact(said) if isinstance(said, str) else answer.text()[:200]


def _retry_after(answer: Answer | None) -> float | None:
    value = answer.headers.get("Retry-After") if answer is not None else None
    try:
        return min(60.0, float(value)) if value is not None else None
    except ValueError:
        return None
