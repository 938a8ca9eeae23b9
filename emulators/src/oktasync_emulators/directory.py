"""A seeded, in-memory Okta directory: the data the Okta emulator serves.

Why it looks the way it does:

* Every user is a pure function of ``(seed, index)`` (``generate_user``), and so are its groups
  (``user_group_indices``, drawn from a stream of their own), so ``LazyDirectory`` builds user *i*
  on demand for a million-user directory, and two runs with one seed are equal.
* The first ``len(SHOWCASE)`` users are fixed cases the engine must get right (every status, a
  pair of logins that collide once the domain is cut off, plus-addressing, an e-mail that differs
  from the login, a non-ASCII login, ``transitioningToStatus``); the rest are drawn from weights
  that look like a real Workforce org (mostly ACTIVE).
* Storage is compact (``__slots__`` dataclasses, timestamps as integer epoch seconds, JSON
  rendered on request by the emulator) so 100,000 users fit easily in memory.
* Users and groups are kept in lists sorted by id, so paging ``after`` an id is a bisect, and a
  cursor keeps working while users are added or changed mid-listing.
* Mutations move ``lastUpdated`` / ``statusChanged`` / ``lastMembershipUpdated`` to "now" as
  Okta does. With ``history_s > 0`` the previous version of each changed user is kept with the
  time of the change, so Okta's eventually consistent ``search`` can be emulated.
"""

from __future__ import annotations

import bisect
import copy
import functools
import hashlib
import itertools
import random
import re
import struct
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from oktasync_emulators.systemlog import Entity, SystemLog

STATUSES = (
    "ACTIVE",
    "STAGED",
    "PROVISIONED",
    "SUSPENDED",
    "DEPROVISIONED",
    "PASSWORD_EXPIRED",
    "LOCKED_OUT",
    "RECOVERY",
)
# The statuses whose user can sign in (Okta's user lifecycle page): the accounts a target
# should hold active. Written here from the reference, not imported from the engine, so that
# a misreading in one is not silently shared by the other.
SIGN_IN_STATUSES = frozenset({"ACTIVE", "PASSWORD_EXPIRED", "LOCKED_OUT", "RECOVERY"})
# guess: a plausible Workforce org; mostly ACTIVE, a tail of everything else.
STATUS_WEIGHTS = (0.80, 0.03, 0.03, 0.03, 0.06, 0.02, 0.02, 0.01)
_STATUS_CUM = list(itertools.accumulate(STATUS_WEIGHTS))
_STATUS_TOTAL = _STATUS_CUM[-1] + 0.0
_LAST = len(STATUSES) - 1
TRANSITIONING = frozenset({"ACTIVE", "DEPROVISIONED", "PROVISIONED"})
GROUP_TYPES = ("OKTA_GROUP", "APP_GROUP", "BUILT_IN")
PROFILE_FIELDS = {
    "login": "login",
    "email": "email",
    "firstName": "first_name",
    "lastName": "last_name",
    "displayName": "display_name",
    "mobilePhone": "mobile_phone",
    "secondEmail": "second_email",
    "department": "department",
    "location": "location",  # a custom attribute (added to the org's profile schema)
    "costCenter": "cost_center",
}
REQUIRED_PROFILE = ("login", "email", "firstName", "lastName")

REFERENCE_TIME = 1735689600  # 2025-01-01T00:00:00Z: generated timestamps end here (determinism)
ORG_START = 1514764800  # 2018-01-01T00:00:00Z
DAY = 86400
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

# (shown name, ASCII slug used in logins)
FIRST_NAMES = (
    ("Maria", "maria"),
    ("James", "james"),
    ("Anna", "anna"),
    ("David", "david"),
    ("Sarah", "sarah"),
    ("Michael", "michael"),
    ("Laura", "laura"),
    ("Daniel", "daniel"),
    ("Emma", "emma"),
    ("Thomas", "thomas"),
    ("Olivia", "olivia"),
    ("Lucas", "lucas"),
    ("José", "jose"),
    ("Zoë", "zoe"),
    ("Søren", "soren"),
    ("Björn", "bjorn"),
    ("Chloé", "chloe"),
    ("François", "francois"),
    ("Jürgen", "jurgen"),
    ("Łukasz", "lukasz"),
    ("Ágnes", "agnes"),
    ("Noémie", "noemie"),
    ("伟", "wei"),
    ("芳", "fang"),
    ("Priya", "priya"),
    ("Aarav", "aarav"),
    ("Yuki", "yuki"),
    ("Fatima", "fatima"),
    ("Kwame", "kwame"),
    ("Ingrid", "ingrid"),
)
LAST_NAMES = (
    ("Smith", "smith"),
    ("Johnson", "johnson"),
    ("Brown", "brown"),
    ("Garcia", "garcia"),
    ("Miller", "miller"),
    ("Davis", "davis"),
    ("Wilson", "wilson"),
    ("Taylor", "taylor"),
    ("Müller", "muller"),
    ("Weiß", "weiss"),
    ("Ødegård", "odegard"),
    ("Núñez", "nunez"),
    ("O'Brien", "obrien"),
    ("Smith-Jones", "smith-jones"),
    ("Dvořák", "dvorak"),
    ("王", "wang"),
    ("李", "li"),
    ("张", "zhang"),
    ("Sato", "sato"),
    ("Kowalski", "kowalski"),
    ("Rossi", "rossi"),
    ("Dubois", "dubois"),
    ("Andersson", "andersson"),
    ("Nakamura", "nakamura"),
    ("Okafor", "okafor"),
    ("Patel", "patel"),
    ("Haddad", "haddad"),
    ("Larsen", "larsen"),
)
DOMAINS = (
    "example.com",
    "corp.example.org",
    "example.co.uk",
    "eu.example.net",
    "acme-labs.example",
)
PLUS_TAGS = ("jira", "work", "okta", "test")

# Fixed cases for the first users: (status, transitioningToStatus, first, last, login, email,
# displayName). Their other attributes still come from the per-user generator.
SHOWCASE: tuple[tuple[str, str | None, str, str, str, str | None, str | None], ...] = (
    ("ACTIVE", None, "John", "Smith", "John.Smith@example.com", None, None),
    ("STAGED", None, "Stella", "Staged", "stella.staged@example.com", None, None),
    ("ACTIVE", None, "John", "Smith", "john.smith@corp.example.org", None, "Johnny Smith"),
    ("PROVISIONED", "ACTIVE", "Paul", "Provisioned", "paul.provisioned@example.com", None, None),
    ("SUSPENDED", None, "Susan", "Suspended", "Susan.Suspended@Example.com", None, None),
    ("DEPROVISIONED", None, "Derek", "Gone", "derek.gone@example.co.uk", None, None),
    ("PASSWORD_EXPIRED", None, "Pat", "Expired", "pat.expired@example.com", None, None),
    ("LOCKED_OUT", None, "Lok", "Locked", "lok.locked@eu.example.net", None, None),
    ("RECOVERY", None, "Rhea", "Recovery", "rhea.recovery@example.com", None, None),
    ("ACTIVE", None, "Erin", "Otheremail", "erin.o@example.com", "erin@acme-labs.example", None),
    ("ACTIVE", None, "Peter", "Plus", "peter.plus+jira@example.com", None, "Peter P."),
    ("ACTIVE", "DEPROVISIONED", "Leah", "Leaving", "leah.leaving@example.com", None, None),
    ("ACTIVE", None, "Zoë", "Müller", "zoë.müller@example.com", None, "Zoë Müller"),
    ("ACTIVE", None, "伟", "王", "wei.wang@example.com", None, "王伟"),
)

# Group names that must exist (when there are enough groups): the engine has to keep spaces, `&`,
# `/` and non-ASCII exactly, and the demo grants Jira access through `jira-software-users`.
GROUP_NAMES = (
    "jira-software-users",
    "Sales & Marketing",
    "Développeurs Büro München",
    "R&D/Platform",
    "開発チーム",
    "Engineering",
    "confluence-users",
    "Finance",
    "Human Resources",
    "AD Domain Users",
    "Customer Success",
    "Legal & Compliance",
    "IT Operations",
    "Product Management",
    "AD VPN Users",
    "Design",
    "Support Tier 1",
    "Support Tier 2",
    "Contractors",
    "Interns 2024",
    "Executives",
    "Data Science",
    "Security",
    "Quality Assurance",
    "DevOps",
    "Marketing EMEA",
    "Sales APAC",
    "AD Print Operators",
    "Partners",
    "Zürich Office",
    "São Paulo Office",
    "Oslo kontor Ø",
    "jira-administrators",
    "confluence-administrators",
    "jira-servicedesk-users",
    "Project Phoenix",
    "Project Atlas",
    "Platform Team",
    "Mobile Team",
    "Web Team",
)
PROJECT_WORDS = ("Apollo", "Borealis", "Cobalt", "Delta", "Ember", "Falcon", "Granite", "Helix")
APP_GROUP_EVERY = 7  # guess: about one group in seven is imported from an app (AD)
# Attributes for "user group attributes" and server-side user filters; a few users lack each.
DEPARTMENTS = (
    "Engineering",
    "Sales",
    "Marketing",
    "Finance",
    "Human Resources",
    "Customer Success",
    "Legal",
    "IT",
    "Product",
    "Research & Development",
)
COST_CENTERS = tuple(f"CC-{n}" for n in range(1000, 1100))  # shared, not one string per user
LOCATIONS = ("Berlin", "London", "New York", "São Paulo", "Tokyo", "Zürich", "Remote")


@dataclass(slots=True)
class User:
    """One Okta user; timestamps are integer UTC epoch seconds (Okta answers ``.000Z``)."""

    id: str
    status: str
    login: str
    email: str
    first_name: str
    last_name: str
    display_name: str | None
    created: int
    activated: int | None
    status_changed: int | None
    last_login: int | None
    last_updated: int
    password_changed: int | None
    transitioning: str | None = None
    mobile_phone: str | None = None
    second_email: str | None = None
    department: str | None = None
    location: str | None = None
    cost_center: str | None = None

    def profile_value(self, name: str) -> str | None:
        """A profile attribute by its Okta name (``firstName``); unknown ones are null."""
        attr = PROFILE_FIELDS.get(name)
        return None if attr is None else getattr(self, attr)


@dataclass(slots=True)
class Group:
    """One Okta group. ``members`` holds sorted user ids (empty for the BUILT_IN Everyone)."""

    id: str
    type: str
    name: str
    description: str | None
    created: int
    last_updated: int
    last_membership_updated: int
    source_id: str | None = None  # APP_GROUP: the app instance it was imported from
    windows: bool = False  # AD-mastered: objectClass okta:windows_security_principal
    members: list[str] = field(default_factory=list)


@dataclass(slots=True)
class App:
    """An app instance and the users assigned to it directly (``scope: USER``)."""

    id: str
    name: str
    label: str
    created: int
    last_updated: int
    members: list[str] = field(default_factory=list)  # sorted user ids
    assigned_at: dict[str, int] = field(default_factory=dict)


def user_entity(user: User, changes: Mapping[str, Any] | None = None) -> Entity:
    """A user as a LogEvent target: ``alternateId`` the login, ``displayName`` the name."""
    return Entity(user.id, "User", user.login, f"{user.first_name} {user.last_name}", changes)


def group_entity(group: Group, changes: Mapping[str, Any] | None = None) -> Entity:
    # guess: Okta's alternateId for a group target; the name is what its UI shows
    return Entity(group.id, "UserGroup", group.name, group.name, changes)


def app_entity(app: App) -> Entity:
    return Entity(app.id, "AppInstance", app.label, app.label)


def sign_in(directory: Directory | LazyDirectory, user_id: str, app_id: str | None) -> int:
    """Log a user's sign-in as Okta does: ``user.session.start`` with the user as the actor and
    no target, then, when ``app_id`` names an app, ``user.authentication.sso`` into it. Nothing
    else changes, so the read-only lazy directory can sign users in too. Returns how many events
    were written.

    guess: only an ACTIVE user (or one whose password expired, who signs in to change it) can
    start a session; Okta refuses the others before any event that matters to a sync.
    """
    if user_id not in directory.users:
        raise KeyError(user_id)
    user = directory.users[user_id]
    if user.status not in ("ACTIVE", "PASSWORD_EXPIRED"):
        raise ValueError(f"a {user.status} user cannot sign in")
    app = None
    if app_id is not None:
        app = directory.apps.get(app_id)
        if app is None:
            raise KeyError(app_id)
    tx = directory.log.new_transaction()
    actor = user_entity(user)
    directory.log.append("user.session.start", [], transaction=tx, actor=actor)
    if app is None:
        return 1
    directory.log.append("user.authentication.sso", [app_entity(app)], transaction=tx,
                         actor=actor)
    return 2


def status_events(old: str, new: str) -> list[str]:
    """The events Okta writes when a user's status goes from ``old`` to ``new``.

    guess: transitions other than (re)activation, deactivation, suspension and locking are
    not described by the reference; they get the account events Okta's catalog lists for them.
    """
    if new == old:
        return ["user.lifecycle.reactivate"] if new == "PROVISIONED" else []
    if new == "DEPROVISIONED":
        return ["user.lifecycle.deactivate"]
    if new == "SUSPENDED":
        return ["user.lifecycle.suspend"]
    if old == "SUSPENDED":
        return ["user.lifecycle.unsuspend"]
    if new == "LOCKED_OUT":
        return ["user.account.lock"]
    if old == "LOCKED_OUT":
        return ["user.account.unlock"]
    if new == "PASSWORD_EXPIRED":
        return ["user.account.expire_password"]
    if new == "RECOVERY":
        return ["user.account.reset_password"]
    if old in ("STAGED", "PROVISIONED", "DEPROVISIONED") and new != "STAGED":
        return ["user.lifecycle.activate"]
    if old in ("PASSWORD_EXPIRED", "RECOVERY"):
        return ["user.account.update_password"]
    return []  # guess: Okta has no way back to STAGED, so nothing to log for it


def iso(ts: int | None) -> str | None:
    """Okta's timestamp format: second resolution, always ``.000Z``."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def okta_id(prefix: str, seed: int, kind: str, index: int) -> str:
    """A 20-character Okta-style id (``00u...``/``00g...``), a pure function of its inputs.

    Okta ids end in a few characters that are the same for one org cell; we derive them from
    the seed so ids of one directory look alike, as real ones do.
    """
    return (prefix.encode() + okta_id_core(seed, kind, index) + _cell(seed).encode()).decode()


_ID_TABLE = bytes(ord(_ALPHABET[b % 62]) for b in range(256))


def okta_id_core(seed: int, kind: str, index: int) -> bytes:
    """The 14 characters in the middle of an id (ASCII bytes): the part that varies."""
    digest = hashlib.blake2b(f"{seed}:{kind}:{index}".encode(), digest_size=14).digest()
    return digest.translate(_ID_TABLE)


@functools.cache
def _cell(seed: int) -> str:
    digest = hashlib.blake2b(f"{seed}:cell".encode(), digest_size=3).digest()
    return "".join(_ALPHABET[b % 62] for b in digest)


def _between(rng: random.Random, low: int, high: int) -> int:
    """``randint`` without its overhead (it dominates generating 100,000 users)."""
    return low + int(rng.random() * (high - low + 1))


def _rng(seed: int, kind: str, index: int) -> random.Random:
    digest = hashlib.blake2b(f"{seed}:{kind}:{index}:rng".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _times(rng: random.Random, status: str) -> dict[str, int | None]:
    """Timestamps consistent with a status (STAGED: never activated; PROVISIONED: no password)."""
    created = _between(rng, ORG_START, REFERENCE_TIME - 30 * DAY)
    staged = status == "STAGED"
    activated = None if staged else created + _between(rng, 0, 3 * DAY)
    changed = None if staged else _between(rng, activated or created, REFERENCE_TIME - DAY)
    logged_in = status not in ("STAGED", "PROVISIONED") and rng.random() < 0.95
    last_login = _between(rng, changed or created, REFERENCE_TIME) if logged_in else None
    password = None if status == "PROVISIONED" else _between(rng, created, REFERENCE_TIME - DAY)
    updated = max(t for t in (created, activated, changed, password) if t is not None)
    updated = max(updated, _between(rng, created, REFERENCE_TIME - DAY))
    return {
        "created": created,
        "activated": activated,
        "status_changed": changed,
        "last_login": last_login,
        "last_updated": updated,
        "password_changed": password,
    }


def _generic_identity(rng: random.Random, index: int) -> tuple[str, str, str, str, str | None]:
    """Names, login, e-mail and displayName of an ordinary user.

    The index is part of every generic login, so logins are unique (Okta demands it) and never
    clash with the showcase ones, which have no digits.
    """
    first, fslug = rng.choice(FIRST_NAMES)
    last, lslug = rng.choice(LAST_NAMES)
    domain = rng.choice(DOMAINS)
    local = f"{fslug}.{lslug}{index}" if rng.random() < 0.85 else f"{fslug[0]}{lslug}{index}"
    if rng.random() < 0.25:
        local = ".".join(p[:1].upper() + p[1:] for p in local.split("."))
    if rng.random() < 0.05:
        domain = domain.upper()
    plain = f"{local}@{domain}"
    login = f"{local}+{rng.choice(PLUS_TAGS)}@{domain}" if rng.random() < 0.05 else plain
    email = plain
    if rng.random() < 0.06:
        email = f"{local.lower()}@{rng.choice(DOMAINS)}"
    display = None
    roll = rng.random()
    if roll < 0.2:
        display = f"{first} {last}"
    elif roll < 0.3:
        display = f"{last}, {first}"
    return first, last, login, email, display


def generate_user(seed: int, index: int) -> User:
    """User number ``index`` of the directory for ``seed``: a pure function of the two."""
    return _build_user(_rng(seed, "u", index), seed, index)


Identity = tuple[str, str, str, str, str, str | None]  # status, first, last, login, email, display


def user_identity(seed: int, index: int) -> Identity:
    """What ``generate_user`` gives for status, names, login, e-mail and displayName, at half
    the cost (the draws that follow them, timestamps and phone, are skipped)."""
    return _identity(_rng(seed, "u", index), index)


def _identity(rng: random.Random, index: int) -> Identity:
    if index < len(SHOWCASE):
        status, _, first, last, login, email_or_none, display = SHOWCASE[index]
        return status, first, last, login, email_or_none or login, display
    # what rng.choices(STATUSES, weights=STATUS_WEIGHTS) draws, without its set-up cost
    status = STATUSES[bisect.bisect(_STATUS_CUM, rng.random() * _STATUS_TOTAL, 0, _LAST)]
    first, last, login, email, display = _generic_identity(rng, index)
    return status, first, last, login, email, display


def _build_user(rng: random.Random, seed: int, index: int) -> User:
    transitioning: str | None = None
    status, first, last, login, email, display = _identity(rng, index)
    if index < len(SHOWCASE):
        transitioning = SHOWCASE[index][1]
    else:
        if rng.random() < 0.004:
            transitioning = "DEPROVISIONED" if status == "ACTIVE" else "ACTIVE"
    times = _times(rng, status)
    phone = f"+1 555 {_between(rng, 1000000, 9999999)}" if rng.random() < 0.3 else None
    # drawn after everything else, so the attributes above stay what they were before these
    department = DEPARTMENTS[int(rng.random() * len(DEPARTMENTS))] if rng.random() < 0.95 else None
    location = LOCATIONS[int(rng.random() * len(LOCATIONS))] if rng.random() < 0.9 else None
    cost_center = COST_CENTERS[_between(rng, 0, 99)] if department is not None else None
    return User(
        id=okta_id("00u", seed, "u", index),
        status=status,
        login=login,
        email=email,
        first_name=first,
        last_name=last,
        display_name=display,
        created=times["created"] or 0,
        activated=times["activated"],
        status_changed=times["status_changed"],
        last_login=times["last_login"],
        last_updated=times["last_updated"] or 0,
        password_changed=times["password_changed"],
        transitioning=transitioning,
        mobile_phone=phone,
        department=department,
        location=location,
        cost_center=cost_center,
    )


def generate_group(seed: int, index: int) -> Group:
    """Non-builtin group number ``index``: a pure function of ``(seed, index)``."""
    rng = _rng(seed, "g", index)
    if index < len(GROUP_NAMES):
        name = GROUP_NAMES[index]
    else:
        name = f"Project {rng.choice(PROJECT_WORDS)} {index}"
    is_app = name.startswith("AD ") or (index >= len(GROUP_NAMES) and index % APP_GROUP_EVERY == 0)
    created = _between(rng, ORG_START, REFERENCE_TIME - 60 * DAY)
    updated = _between(rng, created, REFERENCE_TIME - 30 * DAY)
    description = None if rng.random() < 0.4 else f"{name} ({'imported' if is_app else 'Okta'})"
    return Group(
        id=okta_id("00g", seed, "g", index),
        type="APP_GROUP" if is_app else "OKTA_GROUP",
        name=name,
        description=description,
        created=created,
        last_updated=updated,
        last_membership_updated=_between(rng, updated, REFERENCE_TIME),
        source_id=okta_id("0oa", seed, "app", 0) if is_app else None,
        windows=is_app,
    )


def group_weights(seed: int, groups: int) -> list[float]:
    """Zipf-like popularity per group index, in a seeded order, so sizes are skewed."""
    ranks = list(range(groups))
    random.Random(seed * 7919 + groups).shuffle(ranks)
    return [1.0 / (rank + 1) for rank in ranks]


def cumulative_weights(seed: int, groups: int) -> list[float]:
    """``group_weights`` accumulated: what ``user_group_indices`` draws from."""
    return list(itertools.accumulate(group_weights(seed, groups)))


def membership_share(index: int, users: int, total: int) -> int:
    """How many of ``total`` memberships user ``index`` of ``users`` gets.

    ``floor((i+1)*M/N) - floor(i*M/N)``: the total is exact while each user's share is still a
    pure function of its index.
    """
    return (index + 1) * total // users - index * total // users


def user_group_indices(seed: int, index: int, count: int, cum_weights: list[float]) -> list[int]:
    """The ``count`` distinct groups user ``index`` belongs to: a pure function of its inputs.

    The draws come from a stream of their own (blake2b blocks of seed and index, eight 53-bit
    floats each), not from the user's: the lazy directory must know every user's groups at
    start without generating a million users.
    """
    return list(next(draw_groups(seed, ((index, count),), cum_weights)))


def draw_groups(
    seed: int, wanted: Iterable[tuple[int, int]], cum_weights: list[float]
) -> Iterator[tuple[int, ...]]:
    """``user_group_indices`` for many ``(index, count)`` pairs: the same answers, ~2x faster
    (a million users' groups are drawn at the lazy directory's start)."""
    blake, unpack, find = hashlib.blake2b, _EIGHT_WORDS.unpack, bisect.bisect
    groups = len(cum_weights)
    last = groups - 1
    scale = _TWO_TO_MINUS_53 * cum_weights[-1] if cum_weights else 0.0
    for index, wanted_count in wanted:
        count = min(wanted_count, groups)
        if count <= 0:
            yield ()
            continue
        words = unpack(blake(f"{seed}:m:{index}:0".encode(), digest_size=64).digest())
        picked: dict[int, None] = {}
        at, tries, block = 7, 0, 0
        while len(picked) < count and tries < 20 * count:
            if at < 0:
                block += 1
                key = f"{seed}:m:{index}:{block}".encode()
                words, at = unpack(blake(key, digest_size=64).digest()), 7
            j = find(cum_weights, (words[at] >> 11) * scale)
            at -= 1
            picked[j if j < last else last] = None
            tries += 1
        if len(picked) < count:  # heavily skewed weights: fill up with the first free groups
            fill = iter(range(groups))
            while len(picked) < count:
                picked.setdefault(next(fill), None)
        yield tuple(picked)


_EIGHT_WORDS = struct.Struct("<8Q")
_TWO_TO_MINUS_53 = 2.0**-53


def generate_directory(
    users: int, groups: int, seed: int, memberships: int | None = None
) -> Directory:
    """A directory of ``users`` users and ``groups`` groups plus Everyone, for ``seed``.

    ``memberships`` is the total of non-Everyone memberships (default: three per user); user
    ``i`` gets ``membership_share(i, users, M)`` of them.
    """
    if users < 0 or groups < 0:
        raise ValueError("users and groups must be >= 0")
    total = 3 * users if memberships is None else memberships
    directory = Directory(seed)
    for j in range(groups):
        directory.insert_group(generate_group(seed, j))
    group_list = [generate_group_id(seed, j) for j in range(groups)]
    cum = cumulative_weights(seed, groups)
    draws = draw_groups(seed, ((i, membership_share(i, users, total)) for i in range(users)), cum)
    for i, picked in enumerate(draws):
        user = generate_user(seed, i)
        directory.insert_user(user)
        for j in picked:
            directory.link(group_list[j], user.id)
    directory.finish_loading()
    return directory


def generate_group_id(seed: int, index: int) -> str:
    """Group ``index``'s id without generating the group."""
    return okta_id("00g", seed, "g", index)


class Directory:
    """The in-memory store: users and groups sorted by id, memberships both ways, history."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.user_type_id = okta_id("oty", seed, "type", 0)
        self.schema_id = okta_id("osc", seed, "schema", 0)
        self.users: dict[str, User] = {}
        self.user_ids: list[str] = []
        self.groups: dict[str, Group] = {}
        self.group_ids: list[str] = []
        self._by_login: dict[str, str] = {}
        self._user_groups: dict[str, list[str]] = {}
        self._added = 0
        self._loading = True
        self.log = SystemLog()  # what changes write; the generated state has no history
        self.apps: dict[str, App] = {}
        self.history_s = 0.0  # > 0: keep previous versions this long (search lag)
        self._history: dict[str, list[tuple[float, User | None]]] = {}
        self.everyone = Group(
            id=okta_id("00g", seed, "everyone", 0),
            type="BUILT_IN",
            name="Everyone",
            description="All users in your organization",
            created=ORG_START,
            last_updated=ORG_START,
            last_membership_updated=REFERENCE_TIME,
        )
        self.insert_group(self.everyone)

    # -- loading (no timestamps move) -------------------------------------------------------

    def insert_user(self, user: User) -> None:
        """Add a user as it is (generation, or ``add_user`` after stamping it)."""
        key = user.login.lower()
        if key in self._by_login or user.id in self.users:
            raise ValueError(f"duplicate user {user.id} / {user.login}")
        self.users[user.id] = user
        self._by_login[key] = user.id
        self._user_groups[user.id] = []
        if self._loading:
            self.user_ids.append(user.id)  # sorted once in finish_loading
        elif self.user_ids and user.id < self.user_ids[-1]:
            bisect.insort(self.user_ids, user.id)
        else:
            self.user_ids.append(user.id)

    def insert_group(self, group: Group) -> None:
        if group.id in self.groups:
            raise ValueError(f"duplicate group {group.id}")
        self.groups[group.id] = group
        bisect.insort(self.group_ids, group.id)

    def link(self, group_id: str, user_id: str) -> None:
        """Record a membership during loading; ``finish_loading`` sorts the member lists."""
        self.groups[group_id].members.append(user_id)
        self._user_groups[user_id].append(group_id)

    def finish_loading(self) -> None:
        self._loading = False
        self.user_ids.sort()
        for group in self.groups.values():
            group.members.sort()
        for gids in self._user_groups.values():
            gids.sort()

    # -- reading -----------------------------------------------------------------------------

    def user(self, id_or_login: str) -> User | None:
        """By id, or by login case-insensitively (as ``GET /api/v1/users/{idOrLogin}``)."""
        found = self.users.get(id_or_login)
        if found is not None:
            return found
        uid = self._by_login.get(id_or_login.lower())
        return None if uid is None else self.users[uid]

    def group(self, group_id: str) -> Group | None:
        return self.groups.get(group_id)

    def member_ids(self, group: Group) -> list[str]:
        """Sorted member ids; Everyone has every user."""
        return self.user_ids if group is self.everyone else group.members

    def member_count(self, group: Group) -> int:
        return len(self.member_ids(group))

    def groups_of(self, user_id: str) -> list[Group]:
        """Every group of a user: Everyone first, then the others by id."""
        return [self.everyone, *(self.groups[g] for g in self._user_groups.get(user_id, []))]

    def version_at(self, user_id: str, when: float) -> User | None:
        """The user as it was at ``when`` (None: it did not exist yet), for search lag."""
        for changed_at, before in self._history.get(user_id, ()):
            if changed_at > when:
                return before
        return self.users.get(user_id)

    def iter_users(self) -> Iterator[User]:
        return (self.users[uid] for uid in self.user_ids)

    # -- mutations (move timestamps to now, as Okta does) -------------------------------------

    def _remember(self, user_id: str, now: float) -> None:
        if self.history_s <= 0:
            return
        kept = [(t, u) for t, u in self._history.get(user_id, []) if t >= now - self.history_s]
        current = self.users.get(user_id)
        kept.append((now, copy.copy(current) if current is not None else None))
        self._history[user_id] = kept

    def _require_user(self, user_id: str) -> User:
        user = self.user(user_id)
        if user is None:
            raise KeyError(user_id)
        return user

    def _require_group(self, group_id: str) -> Group:
        group = self.groups.get(group_id)
        if group is None:
            raise KeyError(group_id)
        return group

    def set_status(self, user_id: str, status: str, transitioning: str | None = None) -> User:
        """Change a user's status; ``statusChanged`` and ``lastUpdated`` become now."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        if transitioning is not None and transitioning not in TRANSITIONING:
            raise ValueError(f"unknown transitioningToStatus {transitioning!r}")
        user = self._require_user(user_id)
        now = time.time()
        self._remember(user.id, now)
        old = user.status
        user.status = status
        user.transitioning = transitioning
        user.status_changed = user.last_updated = int(now)
        if status != "STAGED" and user.activated is None:
            user.activated = int(now)
        tx = self.log.new_transaction()
        for event_type in status_events(old, status):
            self.log.append(event_type, [user_entity(user)], transaction=tx)
        if status == "DEPROVISIONED":
            # Okta's deactivation removes every app assignment (user lifecycle docs)
            for app in list(self.apps.values()):
                self._unassign(app, user, tx)
        return user

    def update_profile(self, user_id: str, changes: Mapping[str, Any]) -> User:
        """Change profile fields (Okta names: login, email, firstName, ...); lastUpdated: now."""
        user = self._require_user(user_id)
        unknown = set(changes) - set(PROFILE_FIELDS)
        if unknown:
            raise ValueError(f"unknown profile fields {sorted(unknown)}")
        for name, value in changes.items():
            if name in REQUIRED_PROFILE and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty string")
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string or null")
        new_login = changes.get("login")
        taken = isinstance(new_login, str) and new_login.lower() in self._by_login
        if taken and str(new_login).lower() != user.login.lower():
            raise ValueError(f"login {new_login!r} already exists")
        now = time.time()
        self._remember(user.id, now)
        if isinstance(new_login, str):
            del self._by_login[user.login.lower()]
            self._by_login[new_login.lower()] = user.id
        before = {name: user.profile_value(name) for name in changes}
        for name, value in changes.items():
            setattr(user, PROFILE_FIELDS[name], value)
        user.last_updated = int(now)
        changed = [name for name in changes if before[name] != changes[name]]
        # guess: changeDetails on update_profile lists the attributes that changed
        details = {
            "from": {name: before[name] for name in changed},
            "to": {name: changes[name] for name in changed},
        }
        self.log.append("user.account.update_profile", [user_entity(user, details)])
        return user

    def add_user(self, profile: Mapping[str, Any], status: str = "ACTIVE") -> User:
        """Create a user (as an admin would) and add it to Everyone."""
        missing = [n for n in ("login", "firstName", "lastName") if not profile.get(n)]
        if missing:
            raise ValueError(f"missing profile fields {missing}")
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        self._added += 1
        now = time.time()
        stamp = int(now)
        user = User(
            id=okta_id("00u", self.seed, "added", self._added),
            status=status,
            login=profile["login"],
            email=profile.get("email") or profile["login"],
            first_name=profile["firstName"],
            last_name=profile["lastName"],
            display_name=None,
            created=stamp,
            activated=None if status == "STAGED" else stamp,
            status_changed=None if status == "STAGED" else stamp,
            last_login=None,
            last_updated=stamp,
            password_changed=None if status == "PROVISIONED" else stamp,
        )
        extra = {k: v for k, v in profile.items() if k not in REQUIRED_PROFILE}
        if set(extra) - set(PROFILE_FIELDS):
            raise ValueError(f"unknown profile fields {sorted(set(extra) - set(PROFILE_FIELDS))}")
        for name, value in extra.items():
            setattr(user, PROFILE_FIELDS[name], value)
        self.insert_user(user)
        if self.history_s > 0:
            self._history[user.id] = [(now, None)]  # before now it did not exist
        self.everyone.last_membership_updated = stamp
        tx = self.log.new_transaction()
        self.log.append("user.lifecycle.create", [user_entity(user)], transaction=tx)
        # created with activate=true writes the activation too; other statuses as if moved
        # there from STAGED (guess)
        for event_type in status_events("STAGED", status):
            self.log.append(event_type, [user_entity(user)], transaction=tx)
        return user

    def delete_user(self, user_id: str) -> User | None:
        """``DELETE /api/v1/users/{id}`` as Okta does it: a user who is not DEPROVISIONED is
        deactivated (returned); a DEPROVISIONED one is deleted for good, with its memberships
        (None). Deleted users vanish from every listing, DEPROVISIONED filters included."""
        user = self._require_user(user_id)
        if user.status != "DEPROVISIONED":
            return self.set_status(user.id, "DEPROVISIONED")
        now = time.time()
        self._remember(user.id, now)
        for group_id in self._user_groups.pop(user.id, []):
            group = self.groups[group_id]
            group.members.remove(user.id)
            group.last_membership_updated = int(now)
        del self.users[user.id]
        del self._by_login[user.login.lower()]
        self.user_ids.remove(user.id)
        self.everyone.last_membership_updated = int(now)
        self.log.append("user.lifecycle.delete.initiated", [user_entity(user)])
        return None

    def add_group(self, name: str, description: str | None = None) -> Group:
        """Create an OKTA_GROUP (as an admin would)."""
        self._added += 1
        stamp = int(time.time())
        group = Group(
            id=okta_id("00g", self.seed, "added", self._added),
            type="OKTA_GROUP",
            name=name,
            description=description,
            created=stamp,
            last_updated=stamp,
            last_membership_updated=stamp,
        )
        self.insert_group(group)
        self.log.append("group.lifecycle.create", [group_entity(group)])
        return group

    def delete_group(self, group_id: str) -> Group:
        """``DELETE /api/v1/groups/{id}``: only an OKTA_GROUP can be deleted; its members
        lose it (their own ``lastUpdated`` does not move)."""
        group = self._require_group(group_id)
        if group.type != "OKTA_GROUP":
            raise ValueError(f"a {group.type} group cannot be deleted")
        for user_id in group.members:
            self._user_groups[user_id].remove(group.id)
        del self.groups[group.id]
        self.group_ids.remove(group.id)
        self.log.append("group.lifecycle.delete", [group_entity(group)])
        return group

    def add_membership(self, group_id: str, user_id: str) -> bool:
        """Add a user to a group; False when it already was a member (nothing moves)."""
        group, user = self._require_group(group_id), self._require_user(user_id)
        if group is self.everyone:
            raise ValueError("Everyone's memberships cannot be changed")
        pos = bisect.bisect_left(group.members, user.id)
        if pos < len(group.members) and group.members[pos] == user.id:
            return False
        group.members.insert(pos, user.id)
        bisect.insort(self._user_groups[user.id], group.id)
        group.last_membership_updated = int(time.time())
        targets = [user_entity(user), group_entity(group)]
        self.log.append("group.user_membership.add", targets)
        return True

    def remove_membership(self, group_id: str, user_id: str) -> bool:
        """Remove a user from a group; False when it was not a member (nothing moves)."""
        group, user = self._require_group(group_id), self._require_user(user_id)
        if group is self.everyone:
            raise ValueError("Everyone's memberships cannot be changed")
        pos = bisect.bisect_left(group.members, user.id)
        if pos == len(group.members) or group.members[pos] != user.id:
            return False
        del group.members[pos]
        self._user_groups[user.id].remove(group.id)
        group.last_membership_updated = int(time.time())
        targets = [user_entity(user), group_entity(group)]
        self.log.append("group.user_membership.remove", targets)
        return True

    def update_group_profile(
        self,
        group_id: str,
        name: str | None = None,
        description: str | None = None,
        *,
        clear_description: bool = False,
    ) -> Group:
        """Rename a group and/or change its description; ``lastUpdated`` becomes now."""
        group = self._require_group(group_id)
        if group.type == "BUILT_IN":
            raise ValueError("the built-in group cannot be changed")
        before = {"name": group.name, "description": group.description}
        if name is not None:
            if not name:
                raise ValueError("name must not be empty")
            group.name = name
        if description is not None or clear_description:
            group.description = description
        group.last_updated = int(time.time())
        after = {"name": group.name, "description": group.description}
        changed = [k for k in after if before[k] != after[k]]
        # guess: changeDetails on group.profile.update, as on user profile updates
        details = {"from": {k: before[k] for k in changed}, "to": {k: after[k] for k in changed}}
        self.log.append("group.profile.update", [group_entity(group, details)])
        return group

    def rename_group(self, group_id: str, name: str) -> Group:
        return self.update_group_profile(group_id, name=name)

    # -- app assignments ---------------------------------------------------------------------

    def add_app(self, label: str, name: str | None = None) -> App:
        """Create an app instance (as an admin adding an integration would)."""
        if not label:
            raise ValueError("label is required")
        self._added += 1
        stamp = int(time.time())
        app = App(
            id=okta_id("0oa", self.seed, "added-app", self._added),
            name=name or re.sub(r"[^a-z0-9]+", "", label.lower()) or "app",
            label=label,
            created=stamp,
            last_updated=stamp,
        )
        self.apps[app.id] = app
        return app

    def _require_app(self, app_id: str) -> App:
        app = self.apps.get(app_id)
        if app is None:
            raise KeyError(app_id)
        return app

    def assign_app(self, app_id: str, user_id: str) -> bool:
        """Assign a user to an app directly; False when it already was (nothing logged)."""
        app, user = self._require_app(app_id), self._require_user(user_id)
        if user.status == "DEPROVISIONED":
            # guess: Okta refuses to assign a deactivated user
            raise ValueError("a DEPROVISIONED user cannot be assigned to an app")
        pos = bisect.bisect_left(app.members, user.id)
        if pos < len(app.members) and app.members[pos] == user.id:
            return False
        app.members.insert(pos, user.id)
        app.assigned_at[user.id] = int(time.time())
        targets = [user_entity(user), app_entity(app)]
        self.log.append("application.user_membership.add", targets)
        return True

    def unassign_app(self, app_id: str, user_id: str) -> bool:
        """Remove a user's assignment; False when it was not assigned (nothing logged)."""
        app, user = self._require_app(app_id), self._require_user(user_id)
        return self._unassign(app, user, self.log.new_transaction())

    def _unassign(self, app: App, user: User, tx: str) -> bool:
        pos = bisect.bisect_left(app.members, user.id)
        if pos == len(app.members) or app.members[pos] != user.id:
            return False
        del app.members[pos]
        del app.assigned_at[user.id]
        targets = [user_entity(user), app_entity(app)]
        self.log.append("application.user_membership.remove", targets, transaction=tx)
        return True

    # -- export ------------------------------------------------------------------------------

    def state_json(self) -> dict[str, Any]:
        """The whole store, for ``GET /_emulator/state`` and for tests."""
        return {
            "users": [user_state(u) for u in self.iter_users()],
            "groups": [group_state(self.groups[g], self) for g in self.group_ids],
            "memberships": {g: list(self.member_ids(self.groups[g])) for g in self.group_ids},
        }


# ---------------------------------------------------------------------------------------------
# The lazy directory (``oktasync-emulate --lazy``)

LAZY_READ_ONLY = (
    "the lazy directory (--lazy) generates its users from the seed as they are read and cannot "
    "be changed; start the emulator without --lazy to change users, groups or memberships"
)
_ID_CORE = 14  # the varying middle of an id; prefix and cell are the same for every user
_GENERIC_LOGIN = re.compile(r"^[^@]*?(\d+)(?:\+[^@]*)?@")


class LazyReadOnly(NotImplementedError):
    """A mutation asked of the lazy directory (the Okta emulator answers 501)."""

    def __init__(self) -> None:
        super().__init__(LAZY_READ_ONLY)


class SortedIds(Sequence[str]):
    """Every user id in ascending order, as one bytes object of 14-byte id cores.

    1,000,000 ids take 14 MB instead of ~80 MB of str objects. ``rank`` finds an id by binary
    search; ids decoded by ``[]`` are remembered for a while, because a listing decodes an id
    and then looks the user up by it.
    """

    __slots__ = ("_blob", "_cell", "_count", "_prefix", "_recent")

    def __init__(self, blob: bytes, count: int, prefix: str, cell: str) -> None:
        self._blob = blob
        self._count = count
        self._prefix = prefix
        self._cell = cell
        self._recent: dict[str, int] = {}

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(index)
        at = index * _ID_CORE
        uid = self._prefix + self._blob[at : at + _ID_CORE].decode("ascii") + self._cell
        recent = self._recent
        if len(recent) >= 4096:
            recent.clear()
        recent[uid] = index
        return uid

    def rank(self, uid: str) -> int | None:
        """The position of ``uid``, or None when no user has it."""
        known = self._recent.get(uid)
        if known is not None:
            return known
        if (
            len(uid) != len(self._prefix) + _ID_CORE + len(self._cell)
            or not uid.isascii()
            or not uid.startswith(self._prefix)
            or not uid.endswith(self._cell)
        ):
            return None
        key = uid[len(self._prefix) : len(self._prefix) + _ID_CORE].encode("ascii")
        blob = self._blob
        lo, hi = 0, self._count
        while lo < hi:
            mid = (lo + hi) // 2
            if blob[mid * _ID_CORE : (mid + 1) * _ID_CORE] < key:
                lo = mid + 1
            else:
                hi = mid
        if lo < self._count and blob[lo * _ID_CORE : (lo + 1) * _ID_CORE] == key:
            return lo
        return None


class MemberIds(Sequence[str]):
    """A group's member ids in ascending order: positions in ``SortedIds`` (4 bytes each)."""

    __slots__ = ("_ids", "_ranks")

    def __init__(self, ranks: array[int], ids: SortedIds) -> None:
        self._ranks = ranks
        self._ids = ids

    def __len__(self) -> int:
        return len(self._ranks)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self._ids[r] for r in self._ranks[index]]
        return self._ids[self._ranks[index]]


class LazyUsers(Mapping[str, User]):
    """``users`` of the lazy directory: each lookup generates the user from the seed."""

    __slots__ = ("_ids", "_index_at", "_seed")

    def __init__(self, seed: int, ids: SortedIds, index_at: array[int]) -> None:
        self._seed = seed
        self._ids = ids
        self._index_at = index_at

    def index_of(self, uid: str) -> int | None:
        """The generator index of the user with this id."""
        rank = self._ids.rank(uid)
        return None if rank is None else self._index_at[rank]

    def __getitem__(self, uid: str) -> User:
        index = self.index_of(uid)
        if index is None:
            raise KeyError(uid)
        return generate_user(self._seed, index)

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, str) and self._ids.rank(uid) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


LazyParts = tuple[bytes, bytes, list[bytes]]  # id cores, index per position, members per group


def lazy_parts(users: int, groups: int, seed: int, memberships: int | None = None) -> LazyParts:
    """What ``LazyDirectory`` keeps, as plain bytes (cheap to send from another process).

    Every user id's 14-byte core in ascending order; the generator index (``array('I')``) of the
    user at each position; each group's members as ascending positions (``array('I')``).
    """
    records = sorted(okta_id_core(seed, "u", i) + i.to_bytes(4, "big") for i in range(users))
    index_at = array("I", (int.from_bytes(r[_ID_CORE:], "big") for r in records))
    blob = b"".join(r[:_ID_CORE] for r in records)
    del records
    total = 3 * users if memberships is None else memberships
    per_group = [array("I") for _ in range(groups)]
    if groups:
        cum = cumulative_weights(seed, groups)
        shares = ((i, membership_share(i, users, total)) for i in index_at)
        # users are drawn in id order, so every group's array is filled already sorted
        for rank, picked in enumerate(draw_groups(seed, shares, cum)):
            for j in picked:
                per_group[j].append(rank)
    return blob, index_at.tobytes(), [ranks.tobytes() for ranks in per_group]


class LazyDirectory:
    """The directory ``generate_directory`` would build, without holding its users.

    Users are generated from ``(seed, index)`` whenever they are read. What is kept: the groups
    (a few thousand objects), every user id sorted (14 bytes each) with its generator index
    (4 bytes), and each group's members as sorted positions in that id order (4 bytes per
    membership). 1,000,000 users with 3,000,000 memberships take about 35 MB. Logins are found
    without an index because every generated login carries its user's index.

    It is read-only: every mutation raises ``LazyReadOnly``.
    """

    lazy = True

    def __init__(
        self,
        users: int,
        groups: int,
        seed: int,
        memberships: int | None = None,
        *,
        parts: LazyParts | None = None,
    ) -> None:
        """``parts``: what ``lazy_parts`` computed for the same arguments (maybe in another
        process, while this one does something else); computed here when not given."""
        if users < 0 or groups < 0:
            raise ValueError("users and groups must be >= 0")
        self.seed = seed
        self.user_count = users
        self.user_type_id = okta_id("oty", seed, "type", 0)
        self.schema_id = okta_id("osc", seed, "schema", 0)
        self.history_s = 0.0  # nothing changes, so there is no history to keep
        self.log = SystemLog()  # and nothing is ever logged
        self.apps: dict[str, App] = {}
        self.total_memberships = 3 * users if memberships is None else memberships
        self.everyone = Group(
            id=okta_id("00g", seed, "everyone", 0),
            type="BUILT_IN",
            name="Everyone",
            description="All users in your organization",
            created=ORG_START,
            last_updated=ORG_START,
            last_membership_updated=REFERENCE_TIME,
        )
        generated = [generate_group(seed, j) for j in range(groups)]
        self.groups: dict[str, Group] = {g.id: g for g in (self.everyone, *generated)}
        self.group_ids = sorted(self.groups)
        self._group_list = [g.id for g in generated]
        self._cum = cumulative_weights(seed, groups)

        if parts is None:
            parts = lazy_parts(users, groups, seed, memberships)
        blob, index_at, members = parts
        self._index_at = array("I")
        self._index_at.frombytes(index_at)
        self.user_ids = SortedIds(blob, users, "00u", _cell(seed))
        self.users = LazyUsers(seed, self.user_ids, self._index_at)
        self._members: dict[str, array[int]] = {}
        for j, raw in enumerate(members):
            ranks = self._members[self._group_list[j]] = array("I")
            ranks.frombytes(raw)
        self._by_showcase_login = {
            SHOWCASE[i][4].lower(): i for i in range(min(users, len(SHOWCASE)))
        }

    # -- reading (the interface of ``Directory``) ---------------------------------------------

    def index_of(self, id_or_login: str) -> int | None:
        """The generator index of a user given by id, or by login case-insensitively."""
        index = self.users.index_of(id_or_login)
        if index is not None:
            return index
        wanted = id_or_login.lower()
        index = self._by_showcase_login.get(wanted)
        if index is not None:
            return index
        match = _GENERIC_LOGIN.match(wanted)
        if match is None:
            return None
        index = int(match.group(1))
        if index >= self.user_count or index < len(SHOWCASE):
            return None
        return index if generate_user(self.seed, index).login.lower() == wanted else None

    def user(self, id_or_login: str) -> User | None:
        index = self.index_of(id_or_login)
        return None if index is None else generate_user(self.seed, index)

    def group(self, group_id: str) -> Group | None:
        return self.groups.get(group_id)

    def member_ids(self, group: Group) -> Sequence[str]:
        if group is self.everyone:
            return self.user_ids
        ranks = self._members.get(group.id)
        return MemberIds(ranks if ranks is not None else array("I"), self.user_ids)

    def member_count(self, group: Group) -> int:
        if group is self.everyone:
            return self.user_count
        ranks = self._members.get(group.id)
        return 0 if ranks is None else len(ranks)

    def group_indices_of(self, index: int) -> list[int]:
        """Generator indices of the groups of user ``index`` (Everyone not included)."""
        share = membership_share(index, self.user_count, self.total_memberships)
        return user_group_indices(self.seed, index, share, self._cum) if self._cum else []

    def groups_of(self, user_id: str) -> list[Group]:
        """Every group of a user: Everyone first, then the others by id."""
        index = self.users.index_of(user_id)
        if index is None:
            return [self.everyone]
        gids = sorted(self._group_list[j] for j in self.group_indices_of(index))
        return [self.everyone, *(self.groups[g] for g in gids)]

    def version_at(self, user_id: str, when: float) -> User | None:
        return self.users.get(user_id)  # nothing ever changes

    def iter_users(self) -> Iterator[User]:
        index_at, seed = self._index_at, self.seed
        return (generate_user(seed, index) for index in index_at)

    def state_json(self) -> dict[str, Any]:
        return {
            "users": [user_state(u) for u in self.iter_users()],
            "groups": [group_state(self.groups[g], self) for g in self.group_ids],
            "memberships": {g: list(self.member_ids(self.groups[g])) for g in self.group_ids},
        }

    # -- mutations: not in lazy mode ----------------------------------------------------------

    def set_status(self, user_id: str, status: str, transitioning: str | None = None) -> User:
        raise LazyReadOnly

    def update_profile(self, user_id: str, changes: Mapping[str, Any]) -> User:
        raise LazyReadOnly

    def add_user(self, profile: Mapping[str, Any], status: str = "ACTIVE") -> User:
        raise LazyReadOnly

    def delete_user(self, user_id: str) -> User | None:
        raise LazyReadOnly

    def add_group(self, name: str, description: str | None = None) -> Group:
        raise LazyReadOnly

    def add_membership(self, group_id: str, user_id: str) -> bool:
        raise LazyReadOnly

    def remove_membership(self, group_id: str, user_id: str) -> bool:
        raise LazyReadOnly

    def update_group_profile(
        self,
        group_id: str,
        name: str | None = None,
        description: str | None = None,
        *,
        clear_description: bool = False,
    ) -> Group:
        raise LazyReadOnly

    def rename_group(self, group_id: str, name: str) -> Group:
        raise LazyReadOnly

    def delete_group(self, group_id: str) -> Group:
        raise LazyReadOnly

    def add_app(self, label: str, name: str | None = None) -> App:
        raise LazyReadOnly

    def assign_app(self, app_id: str, user_id: str) -> bool:
        raise LazyReadOnly

    def unassign_app(self, app_id: str, user_id: str) -> bool:
        raise LazyReadOnly


AnyDirectory = Directory | LazyDirectory


def user_state(user: User) -> dict[str, Any]:
    profile: dict[str, Any] = {name: getattr(user, attr) for name, attr in PROFILE_FIELDS.items()}
    return {
        "id": user.id,
        "status": user.status,
        "transitioningToStatus": user.transitioning,
        "created": iso(user.created),
        "activated": iso(user.activated),
        "statusChanged": iso(user.status_changed),
        "lastLogin": iso(user.last_login),
        "lastUpdated": iso(user.last_updated),
        "passwordChanged": iso(user.password_changed),
        "profile": profile,
    }


def group_state(group: Group, directory: AnyDirectory) -> dict[str, Any]:
    return {
        "id": group.id,
        "type": group.type,
        "profile": {"name": group.name, "description": group.description},
        "created": iso(group.created),
        "lastUpdated": iso(group.last_updated),
        "lastMembershipUpdated": iso(group.last_membership_updated),
        "source": {"id": group.source_id} if group.source_id else None,
        "usersCount": directory.member_count(group),
    }
