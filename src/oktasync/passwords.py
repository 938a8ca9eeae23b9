"""The web console's password: stored as a scrypt hash (stdlib ``hashlib.scrypt``), checked in
constant time. The format names its parameters, so a hash made with stronger ones later still
checks: ``scrypt$N$r$p$<salt, base64>$<key, base64>``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

N, R, P, KEY_BYTES = 2**15, 8, 1, 32
MAXMEM = 128 * N * R * 2  # what scrypt needs at these parameters, with room


def hash_password(password: str) -> str:
    """A new salted hash of ``password``."""
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=KEY_BYTES,
                         maxmem=MAXMEM)
    return "$".join(["scrypt", str(N), str(R), str(P), _b64(salt), _b64(key)])


def hash_problem(stored: str) -> str | None:
    """Why ``stored`` is not a hash this module made, or None."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not all(p.isdigit() for p in parts[1:4]):
        return "is not a hash from `oktasync console hash-password` (scrypt$N$r$p$salt$hash)"
    try:
        base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except ValueError:
        return "is not a hash from `oktasync console hash-password` (its salt or key is damaged)"
    return None


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from (False for a damaged hash)."""
    if hash_problem(stored) is not None:
        return False
    _, n, r, p, salt, key = stored.split("$")
    expected = base64.b64decode(key)
    got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                         p=int(p), dklen=len(expected), maxmem=128 * int(n) * int(r) * 2)
    return hmac.compare_digest(got, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
