"""Okta's OAuth 2.0 for service apps: the org authorization server's token endpoint and the
checks a resource request with an access token goes through.

Okta recommends service apps over API tokens for machines, so the engine must be testable
against them: ``POST /oauth2/v1/token`` with ``client_credentials`` and a ``private_key_jwt``
client assertion (the only method the org authorization server accepts), tokens limited to
the scopes the app was granted and to a lifetime, and optionally DPoP (RFC 9449): the token
is bound to the client's key and every resource request must carry a fresh proof of it.

Like the rest of the emulators this is as strict as Okta, never more lenient: every claim is
checked, assertions and proofs are single use, and a scope the token lacks is refused. The
error bodies copy Okta's where they are known (cited in ``okta-api.md``, Okta's support
articles and SDK issues); the rest are marked ``# guess:``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

TOKEN_PATH = "/oauth2/v1/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
RSA_ALGS = frozenset({"RS256", "RS384", "RS512"})
EC_ALGS = frozenset({"ES256", "ES384", "ES512"})
SIGNING_ALGS = RSA_ALGS | EC_ALGS
DEFAULT_TTL_S = 3600.0
MAX_ASSERTION_LIFETIME_S = 3600  # "exp at most 1 h ahead"
DPOP_IAT_WINDOW_S = 300  # guess: how far a proof's iat may be from now (RFC 9449 leaves it open)
NONCE_TTL_S = 300.0  # guess: how long a DPoP-Nonce stays acceptable
DEFAULT_SCOPES = ("okta.users.read", "okta.groups.read")

# Which scope each Management API route needs (METHOD and the route's template).
_READ, _WRITE = ("GET", "HEAD"), ("POST", "PUT", "DELETE")
ROUTE_SCOPES: dict[tuple[str, str], str] = {
    **{(m, p): "okta.users.read" for m in _READ for p in (
        "/api/v1/users", "/api/v1/users/{idOrLogin}", "/api/v1/users/{id}/groups")},
    **{(m, p): "okta.groups.read" for m in _READ for p in (
        "/api/v1/groups", "/api/v1/groups/{id}", "/api/v1/groups/{id}/users")},
    **{(m, "/api/v1/logs"): "okta.logs.read" for m in _READ},
    **{(m, p): "okta.apps.read" for m in _READ for p in (
        "/api/v1/apps/{appId}/users", "/api/v1/apps/{appId}/users/{userId}")},
    **{(m, p): "okta.eventHooks.read" for m in _READ for p in (
        "/api/v1/eventHooks", "/api/v1/eventHooks/{id}")},
    **{(m, p): "okta.eventHooks.manage" for m in _WRITE for p in (
        "/api/v1/eventHooks", "/api/v1/eventHooks/{id}",
        "/api/v1/eventHooks/{id}/lifecycle/{action}")},
}


# ---------------------------------------------------------------------------------------------
# Registration


@dataclass
class OAuthClient:
    """A service app: its client id, public key (PEM text or a JWK), granted scopes.

    ``kid``, when set (or carried by the JWK), is the only key id an assertion may name.
    ``dpop``: the app requires DPoP-bound tokens. ``token_ttl_s``: access token lifetime.
    """

    client_id: str
    public_key: str | Mapping[str, Any]
    scopes: Iterable[str] = DEFAULT_SCOPES
    kid: str | None = None
    dpop: bool = False
    token_ttl_s: float = DEFAULT_TTL_S

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> OAuthClient:
        """From a control request's body; ``ValueError`` says what is wrong."""
        client_id = body.get("client_id") or new_client_id()
        key = body.get("public_key")
        scopes = body.get("scopes", list(DEFAULT_SCOPES))
        if isinstance(scopes, str):
            scopes = scopes.split()
        ttl = body.get("token_ttl_s", DEFAULT_TTL_S)
        if not isinstance(client_id, str) or not isinstance(key, (str, dict)):
            raise ValueError("client_id must be a string; public_key a PEM string or a JWK")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ValueError("scopes must be a list of strings or one space-separated string")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
            raise ValueError("token_ttl_s must be a number > 0")
        kid = body.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise ValueError("kid must be a string")
        return cls(client_id, key, tuple(scopes), kid, bool(body.get("dpop", False)), float(ttl))


def new_client_id() -> str:
    """A client id shaped like Okta's (``0oa`` + 17 characters)."""
    return "0oa" + secrets.token_urlsafe(13)[:17]


PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def load_public_key(material: str | Mapping[str, Any]) -> tuple[PublicKey, str | None]:
    """The key and the kid a JWK carries; a private key is refused (the app's stays its own)."""
    try:
        if isinstance(material, str) and not material.lstrip().startswith("{"):
            if "PRIVATE KEY" in material:
                raise ValueError("give the app's public key, not its private key")
            key: Any = load_pem_public_key(material.encode())
            kid = None
        else:
            jwk = json.loads(material) if isinstance(material, str) else dict(material)
            if "d" in jwk:
                raise ValueError("give the app's public key, not its private key")
            key, kid = jwt.PyJWK(jwk).key, jwk.get("kid")
    except (jwt.PyJWTError, UnsupportedAlgorithm, TypeError) as exc:
        raise ValueError(f"not a usable public key: {exc}") from None
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise ValueError("the key must be an RSA or EC public key")
    return key, kid


@dataclass
class _App:
    """A registered client with its key loaded."""

    client: OAuthClient
    key: PublicKey
    kid: str | None
    scopes: frozenset[str]


@dataclass
class _Token:
    client_id: str
    scopes: frozenset[str]
    expires_at: float
    jkt: str | None  # the DPoP key's thumbprint (cnf.jkt) when bound


# ---------------------------------------------------------------------------------------------
# Refusals


class OAuthRefused(Exception):
    """A token request refused: ``{"error", "error_description"}`` with ``status``."""

    def __init__(self, status: int, error: str, description: str, reason: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description
        self.reason = reason  # the stats' key
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        body = {"error": self.error, "error_description": self.description}
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache", **self.headers}
        return web.Response(body=json.dumps(body), status=self.status, headers=headers,
                            content_type="application/json")


def _client_refused(description: str, reason: str) -> OAuthRefused:
    # Okta answers a bad client assertion 401 invalid_client (okta-sdk-python#289: "The
    # client_assertion JWT kid is invalid."); the other descriptions are guesses in its style.
    return OAuthRefused(401, "invalid_client", description, reason)


def _proof_refused(description: str, reason: str) -> OAuthRefused:
    # 400 invalid_dpop_proof, as Okta's support article on a missing proof shows.
    return OAuthRefused(400, "invalid_dpop_proof", description, reason)


@dataclass
class ResourceRefusal:
    """A resource request refused: Okta's error body plus a ``WWW-Authenticate`` challenge.

    ``okta_code`` set: the body is Okta's error shape (okta.py renders it); otherwise the body
    is ``{"error", "error_description"}``.
    """

    status: int
    reason: str
    challenge: str
    error: str
    description: str
    okta_code: str | None = None
    okta_summary: str = ""


# ---------------------------------------------------------------------------------------------
# JWT helpers


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def access_token_hash(token: str) -> str:
    """``ath``: base64url SHA-256 of the access token (RFC 9449 §4.1)."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint: the required members, sorted, no whitespace."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or any(not isinstance(jwk.get(m), str) for m in members):
        raise ValueError("unsupported or incomplete jwk")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def _algs_for(key: Any) -> frozenset[str]:
    return RSA_ALGS if isinstance(key, rsa.RSAPublicKey) else EC_ALGS


def _verify(token: str, key: Any, alg: str) -> dict[str, Any]:
    """The claims, once the signature holds; the claims themselves are checked by the caller
    (each failure has its own answer)."""
    claims = jwt.decode(token, key, algorithms=[alg], options={
        "verify_signature": True, "verify_exp": False, "verify_nbf": False,
        "verify_iat": False, "verify_aud": False, "verify_iss": False,
        "verify_sub": False, "verify_jti": False})
    return dict(claims)


def _header(token: str) -> dict[str, Any]:
    return dict(jwt.get_unverified_header(token))


class _SeenOnce:
    """Ids (assertion or proof ``jti``) accepted once until their owner expires."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def use(self, key: str, until: float, now: float) -> bool:
        """Record ``key``; False when it was already used."""
        if len(self._until) > 10_000:
            self._until = {k: t for k, t in self._until.items() if t > now}
        if key in self._until and self._until[key] > now:
            return False
        self._until[key] = until
        return True


# ---------------------------------------------------------------------------------------------
# The authorization server


@dataclass
class OAuthCounts:
    """What ``GET /_emulator/oauth`` reports."""

    token_requests: int = 0
    tokens_issued: Counter[str] = field(default_factory=Counter)  # by token_type
    token_refused: Counter[str] = field(default_factory=Counter)  # by reason
    resource_requests: Counter[str] = field(default_factory=Counter)  # by auth kind
    resource_refused: Counter[str] = field(default_factory=Counter)  # by reason

    def to_json(self) -> dict[str, Any]:
        return {
            "token_requests": self.token_requests,
            "tokens_issued": dict(sorted(self.tokens_issued.items())),
            "token_refused": dict(sorted(self.token_refused.items())),
            "resource_requests": dict(sorted(self.resource_requests.items())),
            "resource_refused": dict(sorted(self.resource_refused.items())),
        }


class OAuthServer:
    """The org authorization server's client-credentials side plus resource-token checks."""

    def __init__(self, clients: Iterable[OAuthClient] = ()) -> None:
        self.apps: dict[str, _App] = {}
        self.tokens: dict[str, _Token] = {}
        self.counts = OAuthCounts()
        self._assertions = _SeenOnce()
        self._proofs = _SeenOnce()
        self._nonces: dict[str, float] = {}
        for client in clients:
            self.register(client)

    def register(self, client: OAuthClient) -> _App:
        """Add (or replace: a key rotation) one service app."""
        key, jwk_kid = load_public_key(client.public_key)
        scopes = frozenset(client.scopes)
        if not scopes:
            raise ValueError("an app needs at least one granted scope")
        app = _App(client, key, client.kid or jwk_kid, scopes)
        self.apps[client.client_id] = app
        return app

    def describe(self) -> list[dict[str, Any]]:
        return [{"client_id": a.client.client_id, "kid": a.kid, "scopes": sorted(a.scopes),
                 "dpop": a.client.dpop, "token_ttl_s": a.client.token_ttl_s}
                for a in self.apps.values()]

    # -- the token endpoint ---------------------------------------------------------------

    async def token_endpoint(self, request: web.Request) -> web.StreamResponse:
        """``POST /oauth2/v1/token``; every request counts, refusals by reason."""
        self.counts.token_requests += 1
        try:
            body = await self._issue(request)
        except OAuthRefused as exc:
            self.counts.token_refused[exc.reason] += 1
            return exc.response()
        self.counts.tokens_issued[body["token_type"]] += 1
        return web.Response(body=json.dumps(body), content_type="application/json",
                            headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def _issue(self, request: web.Request) -> dict[str, Any]:
        """Checks in the order Okta appears to make them: client authentication (its ``jti``
        is used up even when a later check refuses, as the SDK's nonce retry relies on), then
        scopes, then the DPoP proof. guess: the order of the last two."""
        if request.content_type != "application/x-www-form-urlencoded":
            # guess: the description
            raise OAuthRefused(400, "invalid_request",
                               "The request must be form-encoded.", "not_form")
        form = await request.post()
        params = {k: v for k, v in form.items() if isinstance(v, str)}
        if params.get("grant_type") != "client_credentials":
            # guess: the description (the org server only offers client_credentials here)
            raise OAuthRefused(400, "unsupported_grant_type",
                               "The authorization grant type is not supported by the "
                               "authorization server.", "grant_type")
        now = time.time()
        url = f"{request.scheme}://{request.host}{TOKEN_PATH}"
        app = self._authenticate_client(params, url, now)
        scopes = self._granted(app, params.get("scope", ""))
        jkt = self._token_proof(request, app, url, now)
        return self._mint(app, scopes, jkt, now)

    def _authenticate_client(self, params: Mapping[str, str], url: str, now: float) -> _App:
        """``private_key_jwt``: the assertion names a registered app, is signed by its key
        and carries ``aud`` = the token URL, ``iss`` = ``sub`` = client id, a near ``exp``
        and an unused ``jti``."""
        if params.get("client_assertion_type") != ASSERTION_TYPE:
            # the description is Okta's (zitadel/oidc#635); status 401 is a guess
            raise _client_refused("The client_assertion_type is invalid.", "assertion_type")
        assertion = params.get("client_assertion", "")
        try:
            header, unverified = _header(assertion), jwt.decode(
                assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            # guess: the description
            raise _client_refused("The client_assertion token is malformed.",
                                  "malformed_assertion") from None
        client_id = unverified.get("sub")
        app = self.apps.get(client_id) if isinstance(client_id, str) else None
        if app is None or params.get("client_id", client_id) != client_id:
            # guess: the description
            raise _client_refused("Invalid value for 'client_id' parameter.", "unknown_client")
        kid = header.get("kid")
        if kid is not None and kid != app.kid:
            raise _client_refused("The client_assertion JWT kid is invalid.", "kid")
        alg = header.get("alg")
        if alg not in _algs_for(app.key):
            # guess: the description
            raise _client_refused("The client_assertion token has an invalid signing "
                                  "algorithm.", "alg")
        try:
            claims = _verify(assertion, app.key, str(alg))
        except jwt.PyJWTError:
            # guess: the description
            raise _client_refused("The client_assertion signature is invalid.",
                                  "signature") from None
        self._check_assertion_claims(claims, app, url, now)
        return app

    def _check_assertion_claims(self, claims: Mapping[str, Any], app: _App, url: str,
                                now: float) -> None:
        client_id = app.client.client_id
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            # guess: the description
            raise _client_refused("The client_assertion token must have 'iss' and 'sub' "
                                  "claims equal to the client_id.", "iss_sub")
        if claims.get("aud") != url:
            # guess: the description
            raise _client_refused("The audience claim for client_assertion must be the "
                                  "endpoint invoked for the request.", "aud")
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, (int, float)) or exp <= now:
            # guess: the description
            raise _client_refused("The client_assertion token is expired.", "expired_assertion")
        if exp > now + MAX_ASSERTION_LIFETIME_S:
            # guess: the description
            raise _client_refused("The client_assertion token has an expiration too far into "
                                  "the future.", "exp_too_far")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            # guess: Okta may take an assertion without jti (a devforum post shows one without
            # it answered); we require one, stricter, and the description is ours
            raise _client_refused("The client_assertion token must have a 'jti' claim.",
                                  "jti_missing")
        if not self._assertions.use(f"{client_id}:{jti}", float(exp), now):
            # the description as the okta SDK quotes it (okta/oauth.py)
            raise _client_refused("The client_assertion token has already been used.",
                                  "replayed_assertion")

    def _granted(self, app: _App, raw_scope: str) -> frozenset[str]:
        """The requested scopes, all of which the app must hold.

        guess: Okta's answer when only some requested scopes are granted is not recorded (it
        may issue a token with the granted ones); we refuse, never more lenient. When none are
        granted the answer is okta-sdk-java#822's.
        """
        requested = frozenset(raw_scope.split())
        if not requested:
            # the description Okta gives a custom server (requests-oauthlib#463); org: guess
            raise OAuthRefused(400, "invalid_scope", "The authorization server resource does "
                               "not have any configured default scopes, 'scope' must be "
                               "provided.", "scope_missing")
        unknown = sorted(s for s in requested if not s.startswith("okta."))
        if unknown:
            # support.okta.com: "One or more scopes are not configured ..."
            raise OAuthRefused(400, "invalid_scope", "One or more scopes are not configured "
                               "for the authorization server resource.", "scope_unknown")
        if not requested & app.scopes:
            raise OAuthRefused(400, "consent_required",
                               "You are not allowed any of the requested scopes.",
                               "scope_not_granted")
        missing = sorted(requested - app.scopes)
        if missing:
            raise OAuthRefused(400, "invalid_scope", "The following scopes are not granted to "
                               f"the client: {' '.join(missing)}.", "scope_not_granted")
        return requested

    def _token_proof(self, request: web.Request, app: _App, url: str,
                     now: float) -> str | None:
        """The DPoP key's thumbprint when the request carries a valid proof with a current
        nonce; None when the app needs no DPoP and the request sends none.

        guess: a proof sent to an app that does not require DPoP still binds the token (RFC
        9449's behaviour); Okta's choice is not recorded.
        """
        proof = request.headers.get("DPoP")
        if proof is None:
            if app.client.dpop:
                raise _proof_refused("The DPoP proof JWT header is missing.", "dpop_missing")
            return None
        try:
            claims, jkt = self._check_proof(proof, "POST", url, now)
        except ValueError as exc:
            raise _proof_refused(str(exc), "dpop_invalid") from None
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or self._nonces.get(nonce, 0.0) <= now:
            fresh = self._new_nonce(now)
            raise OAuthRefused(400, "use_dpop_nonce",
                               "Authorization server requires nonce in DPoP proof.",
                               "dpop_nonce", headers={"DPoP-Nonce": fresh})
        return jkt

    def _new_nonce(self, now: float) -> str:
        self._nonces = {n: t for n, t in self._nonces.items() if t > now}
        nonce = secrets.token_urlsafe(24)
        self._nonces[nonce] = now + NONCE_TTL_S
        return nonce

    def _check_proof(self, proof: str, method: str, url: str,
                     now: float) -> tuple[dict[str, Any], str]:
        """A DPoP proof's claims and key thumbprint; ``ValueError`` names what is wrong.

        guess: the descriptions follow the one Okta gives for ``htu`` (okta-sdk-python#541:
        "'htu' claim in the DPoP proof JWT is invalid.").
        """
        try:
            header = _header(proof)
        except jwt.PyJWTError:
            raise ValueError("The DPoP proof JWT is malformed.") from None
        jwk, alg = header.get("jwk"), header.get("alg")
        if header.get("typ") != "dpop+jwt":
            raise ValueError("The DPoP proof JWT 'typ' header is invalid.")
        if alg not in SIGNING_ALGS:
            raise ValueError("The DPoP proof JWT 'alg' header is invalid.")
        if not isinstance(jwk, dict) or "d" in jwk:
            raise ValueError("The DPoP proof JWT 'jwk' header is invalid.")
        try:
            key = jwt.PyJWK(jwk).key
            jkt = jwk_thumbprint(jwk)
            if alg not in _algs_for(key):
                raise ValueError
            claims = _verify(proof, key, str(alg))
        except (jwt.PyJWTError, ValueError, TypeError):
            raise ValueError("The DPoP proof JWT signature is invalid.") from None
        self._check_proof_claims(claims, method, url, now)
        return claims, jkt

    def _check_proof_claims(self, claims: Mapping[str, Any], method: str, url: str,
                            now: float) -> None:
        if claims.get("htm") != method:
            raise ValueError("'htm' claim in the DPoP proof JWT is invalid.")
        if claims.get("htu") != url:
            raise ValueError("'htu' claim in the DPoP proof JWT is invalid.")
        iat = claims.get("iat")
        if isinstance(iat, bool) or not isinstance(iat, (int, float)) \
                or abs(iat - now) > DPOP_IAT_WINDOW_S:
            raise ValueError("'iat' claim in the DPoP proof JWT is invalid.")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise ValueError("'jti' claim in the DPoP proof JWT is invalid.")
        if not self._proofs.use(jti, float(iat) + 2 * DPOP_IAT_WINDOW_S, now):
            raise ValueError("The DPoP proof JWT has already been used.")

    def _mint(self, app: _App, scopes: frozenset[str], jkt: str | None,
              now: float) -> dict[str, Any]:
        """An opaque access token.

        guess: real ones are JWTs signed by Okta, but clients must not read them; opaque ones
        make sure the engine does not.
        """
        if len(self.tokens) > 10_000:  # clients that never come back leave their tokens here
            self.tokens = {t: held for t, held in self.tokens.items() if held.expires_at > now}
        token = secrets.token_urlsafe(48)
        ttl = app.client.token_ttl_s
        self.tokens[token] = _Token(app.client.client_id, scopes, now + ttl, jkt)
        return {"token_type": "DPoP" if jkt else "Bearer", "expires_in": round(ttl),
                "access_token": token, "scope": " ".join(sorted(scopes))}

    # -- resource requests ----------------------------------------------------------------

    def check_resource(self, request: web.Request, scheme: str,
                       token: str) -> ResourceRefusal | None:
        """A Management API request with ``Authorization: Bearer|DPoP <token>``: None when it
        may go on, else how Okta refuses it."""
        self.counts.resource_requests[scheme] += 1
        refusal = self._resource_refusal(request, scheme, token, time.time())
        if refusal is not None:
            self.counts.resource_refused[refusal.reason] += 1
        return refusal

    def _resource_refusal(self, request: web.Request, scheme: str, token: str,
                          now: float) -> ResourceRefusal | None:
        required = required_scope(request)
        challenge = _Challenge(request, scheme, required)
        held = self.tokens.get(token)
        if held is None or held.expires_at <= now:
            if held is not None:
                del self.tokens[token]
            description = "The token has expired." if held else "The access token is invalid."
            # E0000011 body and the challenge's fields after okta-sdk-golang#145; the
            # descriptions are guesses
            return challenge.refuse(401, "invalid_token", "invalid_token", description,
                                    "E0000011", "Invalid token provided")
        if (held.jkt is None) != (scheme == "Bearer"):
            # guess: RFC 9449 §7.2 — a bound token under Bearer (or the reverse) is invalid
            return challenge.refuse(401, "wrong_token_type", "invalid_token",
                                    f"The access token cannot be used with the {scheme} "
                                    "scheme.", "E0000011", "Invalid token provided")
        if held.jkt is not None:
            refusal = self._resource_proof(request, token, held, challenge, now)
            if refusal is not None:
                return refusal
        if required is not None and not _covers(held.scopes, required):
            # the challenge after okta-sdk-golang#145; guess: the E0000006 body with it
            return challenge.refuse(403, "insufficient_scope", "insufficient_scope",
                                    "The access token provided does not contain the required "
                                    "scopes.", "E0000006",
                                    "You do not have permission to perform the requested "
                                    "action")
        return None

    def _resource_proof(self, request: web.Request, token: str, held: _Token,
                        challenge: _Challenge, now: float) -> ResourceRefusal | None:
        """The proof a DPoP-bound token needs on every request: same key, this method and
        URL, ``ath`` of this token. guess: no nonce is demanded here; 400 with an OAuth body
        (okta-sdk-python#541 shows the 400 and its challenge, not the body)."""
        proof = request.headers.get("DPoP")
        if proof is None:
            return challenge.refuse(400, "dpop_missing", "invalid_dpop_proof",
                                    "The DPoP proof JWT header is missing.")
        url = f"{request.scheme}://{request.host}{request.path}"
        try:
            claims, jkt = self._check_proof(proof, request.method, url, now)
            if claims.get("ath") != access_token_hash(token):
                raise ValueError("'ath' claim in the DPoP proof JWT is invalid.")
            if jkt != held.jkt:
                raise ValueError("The DPoP proof JWT key does not match the access token's.")
        except ValueError as exc:
            return challenge.refuse(400, "dpop_invalid", "invalid_dpop_proof", str(exc))
        return None


def _covers(scopes: frozenset[str], required: str) -> bool:
    """guess: a ``.manage`` scope includes the ``.read`` one of the same resource."""
    if required in scopes:
        return True
    return required.endswith(".read") and required[: -len("read")] + "manage" in scopes


def required_scope(request: web.Request) -> str | None:
    """The scope a Management API route needs; None for paths that are no route."""
    route = getattr(request.match_info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None:
        return None
    return ROUTE_SCOPES.get((request.method, resource.canonical))


class _Challenge:
    """Builds the ``WWW-Authenticate`` value Okta sends with a refused resource request."""

    def __init__(self, request: web.Request, scheme: str, scope: str | None) -> None:
        self.origin = f"{request.scheme}://{request.host}"
        self.scheme = scheme
        self.scope = scope
        self.path = request.path

    def refuse(self, status: int, reason: str, error: str, description: str,
               okta_code: str | None = None, okta_summary: str = "") -> ResourceRefusal:
        parts = [f'authorization_uri="{self.origin}/oauth2/v1/authorize"',
                 f'realm="{self.origin}"']
        if self.scheme == "DPoP":
            parts.insert(0, f'algs="{" ".join(sorted(SIGNING_ALGS))}"')  # guess: RFC 9449 §7.1
        if self.scope is not None:
            parts.append(f'scope="{self.scope}"')
        parts += [f'error="{error}"', f'error_description="{description}"',
                  f'resource="{self.path}"']
        return ResourceRefusal(status, reason, f"{self.scheme} " + ", ".join(parts), error,
                               description, okta_code, okta_summary)
