"""What the Jira and Confluence Data Center emulators share.

Both products sit on the same Atlassian platform pieces, and the engine must cope with the same
behaviour from both: a per-user token-bucket rate limiter, Basic and personal-access-token
authentication, a directory whose user and group names are case-insensitive, and refusals an
administrator configured on purpose (project leads, read-only directories). Keeping these in one
place means the two emulators cannot disagree about them; what differs (paths, JSON shapes, error
bodies) lives in ``jira.py`` and ``confluence.py``.

Request accounting, latency and fault injection come from ``common.py`` (``build_app``).
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from aiohttp import web

from oktasync_emulators.common import (
    WRITE_METHODS,
    FaultConfig,
    Stats,
    build_app,
    json_response,
    read_json,
)

Clock = Callable[[], float]
MethodHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSON_CONTENT_TYPE = "application/json;charset=UTF-8"  # what Jira and Confluence send

# Both products keep users in embedded Crowd, whose user table columns (user name, display
# name, e-mail) hold 255 characters; InternalEntityUtils.validateLength refuses more with this
# text (quoted in Atlassian's KB), counting as Java counts a String, in UTF-16 units.
FIELD_MAX = 255
MSG_TOO_LONG = "Value '{value}' exceeds maximum allowed length of 255 characters"


def too_long(value: str) -> bool:
    """Longer than a user table column holds (UTF-16 units, like ``String.length()``)."""
    return len(value) > FIELD_MAX or (
        not value.isascii() and len(value.encode("utf-16-le")) // 2 > FIELD_MAX)


# --------------------------------------------------------------------------- rate limiting


@dataclass(frozen=True)
class AtlassianRate:
    """An Atlassian rate limit: ``capacity`` tokens, ``fill_rate`` more every ``interval_s``."""

    capacity: int
    fill_rate: float
    interval_s: float

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.fill_rate <= 0 or self.interval_s <= 0:
            raise ValueError(
                "rate needs capacity >= 1, fill rate > 0 and interval > 0, "
                f"got {self.capacity}/{self.fill_rate}/{self.interval_s}"
            )

    @classmethod
    def parse(cls, spec: str) -> AtlassianRate:
        """``"CAPACITY/FILL/INTERVAL"`` (the CLI's ``--atlassian-rate 20/100/1``)."""
        parts = spec.strip().split("/")
        if len(parts) != 3:
            raise ValueError(f"expected CAPACITY/FILL/INTERVAL, got {spec!r}")
        try:
            return cls(int(parts[0]), float(parts[1]), float(parts[2]))
        except ValueError as exc:
            raise ValueError(f"bad rate {spec!r}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class RateDecision:
    """One request's outcome at the limiter, and what its headers should say."""

    allowed: bool
    remaining: int
    retry_after: int


@dataclass(slots=True)
class _Bucket:
    tokens: float
    last_fill: float


def _num(value: float) -> str:
    """``10`` rather than ``10.0`` in headers when the value is whole."""
    return str(int(value)) if float(value).is_integer() else str(value)


class TokenBucketLimiter:
    """Atlassian's limiter: one bucket per user, gaining one token every
    ``interval_s / fill_rate`` seconds up to ``capacity``.

    Atlassian's KB "Jira Rate Limiting is not working as configured" shows it: with 5
    requests allowed per minute and 15 max, a client sending one request a second gets 16
    through in 18 s — "the user is receiving a new token in constant intervals", the interval
    being the time interval divided by the requests allowed.
    """

    def __init__(self, rate: AtlassianRate, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._every = rate.interval_s / rate.fill_rate  # seconds per token

    def take(self, key: str) -> RateDecision:
        """Spend one token of ``key``'s bucket, or say how long until one is available."""
        now = self._clock()
        rate = self.rate
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(rate.capacity), now)
        earned = math.floor((now - bucket.last_fill) / self._every)
        if earned > 0:
            bucket.tokens = min(float(rate.capacity), bucket.tokens + earned)
            bucket.last_fill += earned * self._every
        if bucket.tokens >= 1:
            if bucket.tokens >= rate.capacity:
                bucket.last_fill = now  # a full bucket earns nothing while it stays full
            bucket.tokens -= 1
            return RateDecision(True, math.floor(bucket.tokens), 0)
        wait = bucket.last_fill + self._every - now
        return RateDecision(False, 0, max(1, math.ceil(wait)))

    def headers(self, decision: RateDecision) -> dict[str, str]:
        """The headers Atlassian puts on every answer while limiting is on."""
        return {
            "X-RateLimit-Limit": str(self.rate.capacity),
            "X-RateLimit-Remaining": str(decision.remaining),
            "X-RateLimit-FillRate": _num(self.rate.fill_rate),
            "X-RateLimit-Interval-Seconds": _num(self.rate.interval_s),
            "Retry-After": str(decision.retry_after),
        }

    def reset(self) -> None:
        self._buckets.clear()


# --------------------------------------------------------------------------- directory store


@dataclass(slots=True)
class User:
    """A directory user. ``name`` keeps the stored case; ``lower`` (``name.lower()``, one shared
    string) is its key in the store and in group member lists.

    Kept small (``--preload-fraction`` holds hundreds of thousands): the product's user key is
    derived from ``id`` (``key``), and the user's groups are a tuple of lower-cased names.
    """

    id: int
    name: str
    email: str
    display_name: str
    active: bool = True
    password: str | None = None
    lower: str = field(default="", repr=False, compare=False)
    groups: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.lower:
            self.lower = _lowered(self.name)

    @property
    def key(self) -> str:
        """The product's stable user key; each product's subclass says how it looks."""
        return f"user-{self.id}"

    @classmethod
    def id_of_key(cls, key: str) -> int | None:
        """The inverse of ``key``: the id a key belongs to, or None when it is no key."""
        prefix = "user-"
        return number_after(key, prefix)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "email": self.email,
            "displayName": self.display_name,
            "active": self.active,
        }


def _lowered(text: str) -> str:
    """``text.lower()``, but ``text`` itself when already lower-case (no second copy)."""
    lowered = text.lower()
    return text if lowered == text else lowered


def number_after(key: str, prefix: str, base: int = 10, offset: int = 0) -> int | None:
    if not key.startswith(prefix):
        return None
    digits = key[len(prefix) :]
    if not digits or not digits.isascii() or not digits.isalnum():
        return None
    try:
        value = int(digits, base) - offset
    except ValueError:
        return None
    return value if value >= 0 else None


@dataclass(slots=True)
class Group:
    """A group; ``members`` holds lower-cased user names in insertion order (an ordered set)."""

    name: str
    members: dict[str, None] = field(default_factory=dict)
    lower: str = field(default="", repr=False, compare=False)
    # (the store's membership version, the member names as a list) for paging: rebuilt when
    # memberships change, so a 400,000-member group pages in O(page), not O(group) per page
    listing: tuple[int, list[str]] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.lower:
            self.lower = _lowered(self.name)


class DirectoryStore:
    """Users, groups and memberships, all keyed by ``str.lower()`` of the name.

    Every operation is a dict operation so benchmarks with tens of thousands of writes a minute
    measure the engine, not the emulator. Users also carry a stable numeric id, which never changes
    on rename: the cursor listing pages over it so a renamed user is still seen exactly once.
    Users are held once (``users``, by lower-cased name) plus a list indexed by id; keys are
    derived from ids, so no index by key is needed.
    """

    def __init__(self, *, lowercase_names: bool, user_type: type[User] = User) -> None:
        self.lowercase_names = lowercase_names
        self.user_type = user_type
        self.users: dict[str, User] = {}
        self.groups: dict[str, Group] = {}
        self._by_id: list[User | None] = []  # index = id; None once deleted
        self.active_count = 0
        self.membership_version = 0  # moves on every membership change (paging caches)

    # users ------------------------------------------------------------------------------

    def user(self, name: str) -> User | None:
        return self.users.get(name.lower())

    def user_by_id(self, uid: int) -> User | None:
        return self._by_id[uid] if 0 <= uid < len(self._by_id) else None

    def user_by_key(self, key: str) -> User | None:
        uid = self.user_type.id_of_key(key)
        user = None if uid is None else self.user_by_id(uid)
        return user if user is not None and user.key == key else None

    def add_user(
        self,
        name: str,
        email: str,
        display_name: str,
        *,
        active: bool = True,
        password: str | None = None,
    ) -> User:
        """Create a user; the caller has checked the name is free."""
        lower = _lowered(name)
        if lower in self.users:
            raise ValueError(f"user {name!r} exists")
        stored = lower if self.lowercase_names else name
        uid = len(self._by_id)
        user = self.user_type(uid, stored, email, display_name, active, password, lower)
        self.users[lower] = user
        self._by_id.append(user)
        self.active_count += active
        return user

    def set_active(self, user: User, active: bool) -> bool:
        """Change ``active``; ``True`` when it changed (keeps the licence count O(1))."""
        if user.active == active:
            return False
        user.active = active
        self.active_count += 1 if active else -1
        return True

    def rename_user(self, user: User, new_name: str) -> None:
        """Rename in place: same id and key, memberships follow the user."""
        new_lower = _lowered(new_name)
        old_lower = user.lower
        if new_lower != old_lower and new_lower in self.users:
            raise ValueError(f"user {new_name!r} exists")
        user.name = new_lower if self.lowercase_names else new_name
        if new_lower == old_lower:
            return
        del self.users[old_lower]
        self.users[new_lower] = user
        user.lower = new_lower
        for group_lower in user.groups:
            members = self.groups[group_lower].members
            del members[old_lower]
            members[new_lower] = None
            self.membership_version += 1

    def remove_user(self, user: User) -> None:
        for group_lower in user.groups:
            self.groups[group_lower].members.pop(user.lower, None)
            self.membership_version += 1
        user.groups = ()
        del self.users[user.lower]
        self._by_id[user.id] = None
        self.active_count -= user.active

    def users_after(self, cursor: int, limit: int) -> list[User]:
        """Up to ``limit`` users whose id is greater than ``cursor``, in id order."""
        out: list[User] = []
        by_id = self._by_id
        for uid in range(max(cursor + 1, 0), len(by_id)):
            user = by_id[uid]
            if user is not None:
                out.append(user)
                if len(out) == limit:
                    break
        return out

    def all_users(self) -> list[User]:
        """Every user in id order."""
        return [u for u in self._by_id if u is not None]

    # groups -----------------------------------------------------------------------------

    def group(self, name: str) -> Group | None:
        return self.groups.get(name.lower())

    def add_group(self, name: str) -> Group:
        group = Group(name)
        if group.lower in self.groups:
            raise ValueError(f"group {name!r} exists")
        self.groups[group.lower] = group
        return group

    def remove_group(self, group: Group) -> None:
        lower = group.lower
        users = self.users
        for member in group.members:
            user = users[member]
            user.groups = tuple(g for g in user.groups if g != lower)
        del self.groups[lower]

    def add_member(self, group: Group, user: User) -> bool:
        """``False`` when the user already was a member."""
        members = group.members
        lower = user.lower
        if lower in members:
            return False
        members[lower] = None
        user.groups += (group.lower,)
        self.membership_version += 1
        return True

    def remove_member(self, group: Group, user: User) -> bool:
        """``False`` when the user was not a member."""
        lower = user.lower
        if lower not in group.members:
            return False
        del group.members[lower]
        user.groups = tuple(g for g in user.groups if g != group.lower)
        self.membership_version += 1
        return True

    def is_member(self, group_name: str, user: User) -> bool:
        group = self.groups.get(group_name.lower())
        return group is not None and user.lower in group.members

    def member_users(self, group: Group) -> list[User]:
        users = self.users
        return [users[m] for m in group.members]

    def member_page(self, group: Group, start: int, limit: int) -> tuple[list[User], int]:
        """One page of members (insertion order) and the total, without copying the group
        for every page: the name list is cached until the store's memberships change."""
        cached = group.listing
        if cached is None or cached[0] != self.membership_version:
            cached = group.listing = (self.membership_version, list(group.members))
        names = cached[1]
        users = self.users
        return [users[m] for m in names[start : start + limit]], len(names)

    def groups_of(self, user: User) -> list[Group]:
        """The user's groups, sorted by name (as both products list them)."""
        groups = [self.groups[g] for g in user.groups]
        return sorted(groups, key=lambda g: g.lower)

    def members(self, group_name: str) -> list[str]:
        """Stored names of a group's members (for tests); ``KeyError`` for an unknown group."""
        group = self.groups[group_name.lower()]
        return [self.users[m].name for m in group.members]

    # bulk -------------------------------------------------------------------------------

    def preload(
        self,
        users: Iterable[Mapping[str, Any]] = (),
        groups: Iterable[str] = (),
        memberships: Iterable[tuple[str, str]] = (),
    ) -> list[User]:
        """Add many users, groups and memberships at once; existing entries are kept as they are.

        Users are mappings with ``name`` and optionally ``email``/``emailAddress``,
        ``displayName``, ``active`` and ``password``. Groups named only in ``memberships`` are
        created; users named there must exist. The strings given are stored as they are (not
        copied), so two stores preloaded from one source share them.
        """
        created: list[User] = []
        by_name = self.users
        for spec in users:
            name = str(spec["name"])
            if name.lower() in by_name:
                continue
            created.append(
                self.add_user(
                    name,
                    str(spec.get("email", spec.get("emailAddress", ""))),
                    str(spec.get("displayName", name)),
                    active=bool(spec.get("active", True)),
                    password=spec.get("password"),
                )
            )
        for group_name in groups:
            if group_name.lower() not in self.groups:
                self.add_group(group_name)
        seen: dict[str, Group] = {}  # group name as given -> group (most names repeat)
        for user_name, group_name in memberships:
            group = seen.get(group_name)
            if group is None:
                group = seen[group_name] = self.group(group_name) or self.add_group(group_name)
            user = by_name.get(user_name) or by_name[user_name.lower()]
            self.add_member(group, user)
        return created

    def to_json(self) -> dict[str, Any]:
        users = self.users
        return {
            "users": [u.to_json() for u in self.all_users()],
            "groups": [
                {"name": g.name, "members": [users[m].name for m in g.members]}
                for g in self.groups.values()
            ],
        }


# --------------------------------------------------------------------------- refusals


@dataclass
class Refusals:
    """Refusals real servers make on purpose, switched on per user or per instance."""

    project_leads: set[str] = field(default_factory=set)  # lower-cased user names
    read_only_users: set[str] = field(default_factory=set)  # users of a read-only directory
    read_only_directory: bool = False  # the only directory is read-only (LDAP, Crowd)

    def update(self, changes: Mapping[str, Any]) -> None:
        """Replace the settings present in ``changes``; others stay."""
        if "project_leads" in changes:
            self.project_leads = {str(n).lower() for n in changes["project_leads"] or ()}
        if "read_only_users" in changes:
            self.read_only_users = {str(n).lower() for n in changes["read_only_users"] or ()}
        if "read_only_directory" in changes:
            self.read_only_directory = bool(changes["read_only_directory"])

    def read_only(self, user: User | None) -> bool:
        return self.read_only_directory or (
            user is not None and user.name.lower() in self.read_only_users
        )

    def follow_rename(self, old: str, new: str) -> None:
        """A project's lead is the account, so a rename keeps the lead."""
        if old.lower() in self.project_leads:
            self.project_leads.discard(old.lower())
            self.project_leads.add(new.lower())

    def to_json(self) -> dict[str, Any]:
        return {
            "project_leads": sorted(self.project_leads),
            "read_only_users": sorted(self.read_only_users),
            "read_only_directory": self.read_only_directory,
        }


# --------------------------------------------------------------------------- request helpers

AUTH_USER = web.RequestKey("atlassian_auth_user", User)  # who the credentials belong to
RATE_DECISION = web.RequestKey("atlassian_rate_decision", RateDecision)


def auth_user(request: web.Request) -> User:
    """The authenticated user (the gate ran before any handler)."""
    return request[AUTH_USER]


class ApiError(Exception):
    """Raised by handlers to answer with a product-shaped error instead of the normal result."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def atlassian_json(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """JSON with the ``Content-Type`` Atlassian servers send (``;charset=UTF-8``, no space).

    ``common.json_response`` cannot carry a charset (aiohttp refuses one in ``content_type``), and
    atlassian-python-api compares this header literally on 401s.
    """
    all_headers = {"Content-Type": JSON_CONTENT_TYPE}
    if headers:
        all_headers.update(headers)
    return web.Response(body=orjson.dumps(body), status=status, headers=all_headers)


def query_int(request: web.Request, name: str, default: int, *, minimum: int = 0) -> int:
    """An integer query parameter; junk falls back to the default as Jersey does for bad ints.

    # guess: Jersey answers 404 for a non-numeric @QueryParam int; using the default is kinder
    # and no client we drive sends junk.
    """
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return max(minimum, int(raw))
    except ValueError:
        return default


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    return raw.strip().lower() == "true"


def _decode_basic(header: str) -> tuple[str, str] | None:
    try:
        raw = base64.b64decode(header, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = raw.partition(":")
    return (name, password) if sep else None


# --------------------------------------------------------------------------- the emulator base


class AtlassianEmulator:
    """Auth, rate limiting, the directory and control endpoints for one Atlassian product.

    Subclasses add their REST routes (``_routes``) and say how their errors look
    (``error_response``, ``unauthorized_response``, ``forbidden_response``).
    """

    product: ClassVar[str] = "atlassian"
    admin_group: ClassVar[str] = "administrators"
    user_group: ClassVar[str] = "users"
    lowercase_names: ClassVar[bool] = False
    user_type: ClassVar[type[User]] = User  # how the product's user keys look

    def __init__(
        self,
        *,
        username: str,
        password: str,
        token: str | None = None,
        faults: FaultConfig | None = None,
        rate: AtlassianRate | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.stats = Stats()
        self.faults = faults or FaultConfig()
        self.rate = rate
        self.clock = clock
        self.limiter = TokenBucketLimiter(rate, clock) if rate is not None else None
        self.store = DirectoryStore(lowercase_names=self.lowercase_names, user_type=self.user_type)
        self.refusals = Refusals()
        self._tokens: dict[str, int] = {}  # personal access token -> user id
        # Authorization header -> (user, password for Basic / None for a token, name signed in)
        self._auth_cache: dict[str, tuple[User, str | None, str]] = {}
        self._bootstrap(username, password, token)

    # what a fresh instance has ---------------------------------------------------------------

    def _bootstrap(self, username: str, password: str, token: str | None) -> None:
        """A local admin in the product's user and administrator groups, like a new install."""
        admin = self.store.add_user(
            username, f"{username}@example.com", "Administrator", password=password
        )
        for name in (self.user_group, self.admin_group):
            self.store.add_member(self.store.add_group(name), admin)
        if token:
            self._tokens[token] = admin.id


    # product-specific answers ----------------------------------------------------------------

    def error_response(
        self, status: int, message: str, *, field: str | None = None
    ) -> web.Response:
        raise NotImplementedError

    def unauthorized_response(self, reason: str) -> web.Response:
        raise NotImplementedError

    def forbidden_response(self) -> web.Response:
        raise NotImplementedError

    def error(self, status: int, message: str, *, field: str | None = None) -> ApiError:
        return ApiError(self.error_response(status, message, field=field))

    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def _pre_gate(self, request: web.Request) -> web.Response | None:
        """A check made before authentication (e.g. what Tomcat rejects); none by default."""
        return None

    # python API for tests and benchmarks -------------------------------------------------------

    def make_app(self) -> web.Application:
        return build_app(
            stats=self.stats,
            faults=self.faults,
            routes=self._routes,
            gate=self._gate,
            finish=self._finish,
            control_routes=self._control_routes,
            outer_middlewares=[_plain_http_errors],
        )

    def add_token(self, token: str, username: str) -> None:
        """Issue a personal access token for an existing user."""
        user = self.store.user(username)
        if user is None:
            raise KeyError(username)
        self._tokens[token] = user.id

    def preload(
        self,
        users: Iterable[Mapping[str, Any]] = (),
        groups: Iterable[str] = (),
        memberships: Iterable[tuple[str, str]] = (),
    ) -> list[User]:
        """Bulk-load an existing directory (tests, ``--preload-fraction``); see the store."""
        return self.store.preload(users, groups, memberships)

    def set_refusals(self, **changes: Any) -> None:
        """``project_leads=[...]``, ``read_only_users=[...]``, ``read_only_directory=bool``."""
        self.refusals.update(changes)

    def reset_stats(self) -> None:
        self.stats.reset()

    def state(self) -> dict[str, Any]:
        """The whole directory plus the switches: what ``GET /_emulator/state`` answers."""
        out = self.store.to_json()
        out["product"] = self.product
        out["refusals"] = self.refusals.to_json()
        return out

    # gate and finish (used by common.build_app) ------------------------------------------------

    def authenticate(self, request: web.Request) -> tuple[User | None, str]:
        """The user behind the request's credentials, or ``None`` and why not.

        A header seen before is answered from a small cache (a client sends the same one on
        every request), re-checked against the store: the same user object still under its
        name or id, still active, and for Basic the same password.
        """
        header = request.headers.get("Authorization", "")
        cached = self._auth_cache.get(header)
        if cached is not None:
            known, password, name = cached
            if password is not None:  # Basic: the name still this user's, same password
                still = self.store.users.get(name) is known and known.password == password
            else:  # a token: still issued to this user, who still exists
                token_uid = self._tokens.get(header[7:].strip())
                still = token_uid == known.id and self.store.user_by_id(known.id) is known
            if still and known.active:
                return known, "OK"
            del self._auth_cache[header]
        user, reason = self._authenticate(header)
        if user is not None:
            if len(self._auth_cache) >= 256:
                self._auth_cache.clear()
            basic = header[:6].lower() == "basic "
            self._auth_cache[header] = (user, user.password if basic else None, user.lower)
        return user, reason

    def _authenticate(self, header: str) -> tuple[User | None, str]:
        scheme, _, value = header.partition(" ")
        user: User | None = None
        if scheme.lower() == "basic":
            pair = _decode_basic(value.strip())
            if pair is not None:
                candidate = self.store.user(pair[0])
                if candidate is not None and candidate.password == pair[1]:
                    user = candidate
        elif scheme.lower() == "bearer":
            uid = self._tokens.get(value.strip())
            user = self.store.user_by_id(uid) if uid is not None else None
        else:
            return None, "AUTHENTICATION_DENIED" if header else "NO_CREDENTIALS"
        if user is None or not user.active:
            return None, "AUTHENTICATED_FAILED"
        return user, "OK"

    def is_admin(self, user: User) -> bool:
        return self.store.is_member(self.admin_group, user)

    async def _gate(self, request: web.Request) -> web.StreamResponse | None:
        """Tomcat's checks, then credentials, then the user's bucket, then admin rights."""
        early = self._pre_gate(request)
        if early is not None:
            return early
        user, reason = self.authenticate(request)
        if user is None:
            return self.unauthorized_response(reason)
        request[AUTH_USER] = user
        if self.limiter is not None:
            decision = self.limiter.take(user.name.lower())
            request[RATE_DECISION] = decision
            if not decision.allowed:
                # guess: the exact wording of the 429 message is not documented.
                return atlassian_json({"message": "Rate limit exceeded. Try again later."}, 429)
        needs_admin = request.method in WRITE_METHODS or "/admin/" in request.path
        if needs_admin and not self.is_admin(user):
            return self.forbidden_response()
        return None

    def _finish(self, request: web.Request, response: web.StreamResponse) -> None:
        """Rate-limit headers on every answer while limiting is on (a 503's Retry-After stays)."""
        if self.limiter is None:
            return
        decision = request.get(RATE_DECISION)
        if decision is None:
            return
        for name, value in self.limiter.headers(decision).items():
            if name == "Retry-After" and name in response.headers:
                continue
            response.headers[name] = value

    # handlers plumbing -------------------------------------------------------------------------

    def add_routes(
        self, app: web.Application, routes: Iterable[tuple[str, str, MethodHandler]]
    ) -> None:
        """Register handlers so a raised ``ApiError`` becomes the product's error answer."""
        for method, path, handler in routes:
            app.router.add_route(method, path, _guarded(handler))

    async def json_object(self, request: web.Request) -> dict[str, Any]:
        """The request body as a JSON object, or a 400 in the product's shape (never a 500)."""
        try:
            body = await read_json(request)
        except ValueError as exc:
            # guess: Jackson's parser message differs in detail; the status is what matters.
            raise self.error(400, f"Unexpected character in JSON body: {exc}") from exc
        if not isinstance(body, dict):
            raise self.error(400, "Can not deserialize instance out of non-object JSON")
        return body

    # control endpoints ------------------------------------------------------------------------

    def _control_routes(self, app: web.Application) -> None:
        app.router.add_get("/_emulator/state", self._state_handler)
        app.router.add_post("/_emulator/refusals", self._refusals_handler)
        app.router.add_post("/_emulator/preload", self._preload_handler)

    async def _state_handler(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.state())

    async def _refusals_handler(self, request: web.Request) -> web.StreamResponse:
        body = await _control_body(request)
        self.refusals.update(body)
        return json_response(self.refusals.to_json())

    async def _preload_handler(self, request: web.Request) -> web.StreamResponse:
        body = await _control_body(request)
        created = self.preload(
            body.get("users", ()),
            body.get("groups", ()),
            [(str(u), str(g)) for u, g in body.get("memberships", ())],
        )
        return json_response({"users_created": len(created)})


async def _control_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await read_json(request)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body


def _guarded(handler: MethodHandler) -> MethodHandler:
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response

    return wrapper


@web.middleware
async def _plain_http_errors(request: web.Request, handler: MethodHandler) -> web.StreamResponse:
    """Turn an ``HTTPException`` *returned* by the shared middleware into a plain response.

    ``common._answer`` returns aiohttp's exceptions (unknown route 404, 405, 413) instead of
    raising them; aiohttp deprecates returning them, and the warning is an error under pytest.
    """
    response = await handler(request)
    if getattr(response, "__http_exception__", False) and isinstance(response, web.Response):
        plain = web.Response(status=response.status, body=response.body)
        for name, value in response.headers.items():
            plain.headers[name] = value
        return plain
    return response
