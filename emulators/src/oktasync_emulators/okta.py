"""An Okta Management API emulator: the read side the engine uses, with Okta's limits and quirks.

It serves a ``Directory`` the way Okta does (see ``okta-api.md`` in the reference notes): SSWS
auth or OAuth 2.0 service-app tokens (``oauth.py``: scopes per route, DPoP), cursor paging
with one ``Link`` header per relation, ``search``/``filter`` expressions, DEPROVISIONED users
hidden from plain listings, an eventually consistent ``search``, Okta's error bodies, and
per-bucket rate limits plus a concurrency limit whose headers ride on every answer. Payloads
copy the field set, order and nulls of real recorded answers.

Shared accounting, latency and 503 faults come from ``common.build_app``; this module only adds
what is specific to Okta. Points where real Okta behaviour is not documented are marked
``# guess:``.
"""

from __future__ import annotations

import base64
import bisect
import functools
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import orjson
from aiohttp import web

from oktasync_emulators.common import (
    CONTROL_PREFIX,
    ITEMS_KEY,
    WRITE_METHODS,
    FaultConfig,
    Handler,
    Stats,
    build_app,
    endpoint_of,
    json_response,
    origin_of,
    read_json,
)
from oktasync_emulators.directory import (
    AnyDirectory,
    App,
    Group,
    LazyReadOnly,
    User,
    group_state,
    iso,
    sign_in,
    user_state,
)
from oktasync_emulators.eventhooks import DeliveryOptions, EventHooks, HookRefused
from oktasync_emulators.oauth import (
    TOKEN_PATH,
    OAuthClient,
    OAuthCounts,
    OAuthServer,
    ResourceRefusal,
)
from oktasync_emulators.systemlog import (
    ADMIN_ID,
    DEFAULT_SINCE_MS,
    MAX_SINCE_MS,
    LogEvent,
    LogQueryError,
    check_since,
    compile_filter,
    keyword_match,
    parse_keywords,
    parse_sort_order,
    parse_time,
)
from oktasync_emulators.systemlog import parse_limit as parse_log_limit

T = TypeVar("T")
RateInfo = tuple[int, int, int]  # limit, remaining, reset (epoch s)
RATE_KEY = web.RequestKey[RateInfo]("okta_rate")

USERS_LIMIT = 200
GROUPS_LIMIT = 10000
MEMBERS_LIMIT = 1000
APP_USERS_LIMIT = 500  # guess: Okta's documented maximum for app users (default 50)
APP_USERS_DEFAULT = 50
Q_DEFAULT_LIMIT = 10
UNLIMITED = 1_000_000  # what the headers show when rate limiting is off (scale == 0)

# Workforce per-minute limits (okta-api.md); "other" covers any other /api/v1 path.
DEFAULT_BUCKETS: dict[str, int] = {
    "users": 600,  # GET/POST /api/v1/users
    "user": 2000,  # /api/v1/users/{idOrLogin}, /api/v1/users/{id}/groups
    "groups": 500,  # /api/v1/groups
    "group": 1000,  # /api/v1/groups/{id}, /api/v1/groups/{id}/users
    "logs": 120,  # /api/v1/logs
    "other": 600,  # guess: Okta has many more buckets; none of them is used by the engine
}

LOGO = [
    {
        "name": "medium",
        "href": "https://ok11static.oktacdn.com/assets/img/logos/groups/"
        "okta-medium.d7fb831bc4e7e1a5d8bd35dfaf405d9e.png",
        "type": "image/png",
    },
    {
        "name": "large",
        "href": "https://ok11static.oktacdn.com/assets/img/logos/groups/"
        "okta-large.511fcb0de9da185b52589cb14d581c2c.png",
        "type": "image/png",
    },
]


# ---------------------------------------------------------------------------------------------
# Errors


class OktaError(Exception):
    """An answer in Okta's error shape; handlers raise it, ``_okta_errors`` renders it."""

    def __init__(self, status: int, code: str, summary: str, causes: Iterable[str] = ()) -> None:
        super().__init__(summary)
        self.status = status
        self.code = code
        self.summary = summary
        self.causes = list(causes)

    def response(self) -> web.Response:
        return okta_error(self.status, self.code, self.summary, self.causes)


_ERROR_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_error_ids = random.Random()


def error_id() -> str:
    """A fresh ``errorId`` shaped like real ones (``oae`` + 22 characters)."""
    return "oae" + "".join(_error_ids.choices(_ERROR_ID_CHARS, k=22))


def okta_error(status: int, code: str, summary: str, causes: Iterable[str] = ()) -> web.Response:
    body = {
        "errorCode": code,
        "errorSummary": summary,
        "errorLink": code,
        "errorId": error_id(),
        "errorCauses": [{"errorSummary": c} for c in causes],
    }
    return json_response(body, status=status)


def invalid_search(reason: str) -> OktaError:
    # guess: real Okta's causes for E0000031 are not recorded; ours say what was wrong.
    return OktaError(400, "E0000031", "Invalid search criteria.", [reason])


def invalid_cursor() -> OktaError:
    return OktaError(400, "E0000029", "Invalid paging request.", ["Invalid cursor."])


def not_found(what: str, kind: str) -> OktaError:
    return OktaError(404, "E0000007", f"Not found: Resource not found: {what} ({kind})")


def rate_limited_response() -> web.Response:
    """Exactly the recorded 429 (fresh errorId); Okta sends no Retry-After."""
    return okta_error(429, "E0000047", "API call exceeded rate limit due to too many requests.")


# ---------------------------------------------------------------------------------------------
# search / filter expressions


@dataclass(frozen=True, slots=True)
class Prop:
    """A property an expression may name: how to read it, its kind, the operators allowed."""

    get: Callable[[Any], Any]
    kind: str  # "str" or "date"
    ops: frozenset[str]


Predicate = Callable[[Any], bool]
SEARCH_STR_OPS = frozenset({"eq", "sw", "gt", "ge", "lt", "le", "pr"})
SEARCH_DATE_OPS = frozenset({"eq", "gt", "ge", "lt", "le", "pr"})
EQ_ONLY = frozenset({"eq"})
DATE_FILTER_OPS = frozenset({"eq", "gt", "ge", "lt", "le"})
_TOKEN = re.compile(r'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|([^\s()"]+))')


def _tokenize(text: str) -> list[tuple[str, str]]:
    """``(kind, text)`` tokens: ``(``, ``)``, ``str`` (a quoted literal) or ``word``."""
    tokens: list[tuple[str, str]] = []
    pos, end = 0, len(text.rstrip())
    while pos < end:
        m = _TOKEN.match(text, pos)
        if m is None:
            raise invalid_search(f"cannot parse at position {pos}")
        if m.group(1):
            tokens.append(("(", "("))
        elif m.group(2):
            tokens.append((")", ")"))
        elif m.group(3) is not None:
            tokens.append(("str", re.sub(r"\\(.)", r"\1", m.group(3))))
        else:
            tokens.append(("word", m.group(4)))
        pos = m.end()
    if not tokens:
        raise invalid_search("empty expression")
    return tokens


def _parse_date(literal: str) -> float:
    try:
        parsed = datetime.fromisoformat(literal.replace("Z", "+00:00"))
    except ValueError:
        raise invalid_search(f"not a date: {literal}") from None
    if parsed.tzinfo is None:
        raise invalid_search(f"date without a time zone: {literal}")
    return parsed.timestamp()


def _compare(op: str, value: Any, literal: Any) -> bool:
    if value is None:
        return False
    if op == "eq":
        return bool(value == literal)
    if op == "sw":
        return bool(value.startswith(literal))
    if op == "co":
        return literal in value
    if op == "gt":
        return bool(value > literal)
    if op == "ge":
        return bool(value >= literal)
    if op == "lt":
        return bool(value < literal)
    return bool(value <= literal)  # "le"


class _Parser:
    """Recursive descent over ``or`` < ``and`` < parentheses / ``prop op value``."""

    def __init__(self, text: str, props: Mapping[str, Prop], fold_case: bool) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0
        self.props = props
        self.fold_case = fold_case

    def _peek_word(self) -> str | None:
        if self.pos < len(self.tokens) and self.tokens[self.pos][0] == "word":
            return self.tokens[self.pos][1].lower()
        return None

    def _next(self, what: str) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise invalid_search(f"expected {what} at the end")
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def parse(self) -> Predicate:
        pred = self._or()
        if self.pos != len(self.tokens):
            raise invalid_search(f"unexpected {self.tokens[self.pos][1]!r}")
        return pred

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._peek_word() == "or":
            self.pos += 1
            parts.append(self._and())
        if len(parts) == 1:
            return parts[0]
        return lambda obj: any(p(obj) for p in parts)

    def _and(self) -> Predicate:
        parts = [self._atom()]
        while self._peek_word() == "and":
            self.pos += 1
            parts.append(self._atom())
        if len(parts) == 1:
            return parts[0]
        return lambda obj: all(p(obj) for p in parts)

    def _atom(self) -> Predicate:
        kind, text = self._next("a condition")
        if kind == "(":
            pred = self._or()
            if self._next("')'")[0] != ")":
                raise invalid_search("expected ')'")
            return pred
        if kind != "word":
            raise invalid_search(f"expected a property name, got {text!r}")
        return self._condition(text)

    def _condition(self, name: str) -> Predicate:
        prop = self.props.get(name)  # property names are case-sensitive
        if prop is None:
            raise invalid_search(f"unsupported property {name}")
        op_kind, op_text = self._next("an operator")
        op = op_text.lower()  # operators are case-insensitive
        if op_kind != "word" or op not in prop.ops:
            raise invalid_search(f"operator {op_text} not supported for {name}")
        get = prop.get
        if op == "pr":
            return lambda obj: get(obj) not in (None, "")
        lit_kind, literal = self._next("a value")
        if lit_kind != "str":
            raise invalid_search(f"expected a quoted value after {name} {op_text}")
        if prop.kind == "date":
            when = _parse_date(literal)
            return lambda obj: _compare(op, get(obj), when)
        if self.fold_case:  # search: string values are case-insensitive
            folded = literal.lower()
            return lambda obj: _compare(op, _lower(get(obj)), folded)
        return lambda obj: _compare(op, get(obj), literal)


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def compile_query(text: str, props: Mapping[str, Prop], *, fold_case: bool) -> Predicate:
    """Compile a ``search``/``filter`` expression; bad ones raise OktaError E0000031."""
    return _Parser(text, props, fold_case).parse()


# All attributes of Okta's default user profile schema: searchable, null when we do not store them.
USER_PROFILE_ATTRS = (
    "city",
    "costCenter",
    "countryCode",
    "department",
    "displayName",
    "division",
    "email",
    "employeeNumber",
    "firstName",
    "honorificPrefix",
    "honorificSuffix",
    "lastName",
    "locale",
    "login",
    "manager",
    "managerId",
    "middleName",
    "mobilePhone",
    "nickName",
    "organization",
    "postalAddress",
    "preferredLanguage",
    "primaryPhone",
    "profileUrl",
    "secondEmail",
    "state",
    "streetAddress",
    "timezone",
    "title",
    "userType",
    "zipCode",
)
CO_ATTRS = frozenset({"firstName", "lastName", "email", "login"})  # the only ones `co` may use
# Attributes the emulated org added to its user profile schema (searchable like the base ones).
CUSTOM_PROFILE_ATTRS = ("location",)


def _attr(name: str) -> Callable[[Any], Any]:
    return lambda obj: getattr(obj, name)


def _user_props(directory: AnyDirectory) -> tuple[dict[str, Prop], dict[str, Prop]]:
    """The properties ``search`` and ``filter`` accept on users."""
    dates = {
        "created": "created",
        "activated": "activated",
        "statusChanged": "status_changed",
        "lastUpdated": "last_updated",
        "lastLogin": "last_login",
        "passwordChanged": "password_changed",
    }
    search: dict[str, Prop] = {
        "id": Prop(_attr("id"), "str", SEARCH_STR_OPS),
        "status": Prop(_attr("status"), "str", SEARCH_STR_OPS),
        "type.id": Prop(lambda u: directory.user_type_id, "str", SEARCH_STR_OPS),
    }
    search.update({k: Prop(_attr(v), "date", SEARCH_DATE_OPS) for k, v in dates.items()})
    for name in (*USER_PROFILE_ATTRS, *CUSTOM_PROFILE_ATTRS):
        ops = SEARCH_STR_OPS | {"co"} if name in CO_ATTRS else SEARCH_STR_OPS
        search[f"profile.{name}"] = Prop(_profile_getter(name), "str", ops)
    filt = {
        name: Prop(search[name].get, "str", EQ_ONLY)
        for name in (
            "status",
            "id",
            "profile.login",
            "profile.email",
            "profile.firstName",
            "profile.lastName",
        )
    }
    filt["lastUpdated"] = Prop(_attr("last_updated"), "date", DATE_FILTER_OPS)
    return search, filt


def _profile_getter(name: str) -> Callable[[Any], Any]:
    return lambda user: user.profile_value(name)


def _group_props() -> tuple[dict[str, Prop], dict[str, Prop]]:
    """The properties ``search`` and ``filter`` accept on groups."""
    search = {
        "id": Prop(_attr("id"), "str", SEARCH_STR_OPS),
        "type": Prop(_attr("type"), "str", SEARCH_STR_OPS),
        "profile.name": Prop(_attr("name"), "str", SEARCH_STR_OPS | {"co"}),
        "profile.description": Prop(_attr("description"), "str", SEARCH_STR_OPS),
        "source.id": Prop(_attr("source_id"), "str", SEARCH_STR_OPS),
        "created": Prop(_attr("created"), "date", SEARCH_DATE_OPS),
        "lastUpdated": Prop(_attr("last_updated"), "date", SEARCH_DATE_OPS),
        "lastMembershipUpdated": Prop(_attr("last_membership_updated"), "date", SEARCH_DATE_OPS),
    }
    filt = {
        "id": Prop(_attr("id"), "str", EQ_ONLY),
        "type": Prop(_attr("type"), "str", EQ_ONLY),
        "lastUpdated": Prop(_attr("last_updated"), "date", DATE_FILTER_OPS),
        "lastMembershipUpdated": Prop(_attr("last_membership_updated"), "date", DATE_FILTER_OPS),
    }
    return search, filt


# ---------------------------------------------------------------------------------------------
# Cursors and pages


def encode_cursor(scope: str, last_id: str, key: str | None = None) -> str:
    """An opaque cursor: where the last page ended (an id, plus the sort key when sorted)."""
    raw = orjson.dumps([scope, last_id, key])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(scope: str, cursor: str, *, sorted_: bool) -> tuple[str, str | None]:
    """``(last id, sort key)`` from a cursor of this scope; anything else is E0000029."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        got_scope, last_id, key = orjson.loads(raw)
    except (ValueError, TypeError):
        raise invalid_cursor() from None
    if (
        got_scope != scope
        or not isinstance(last_id, str)
        or (key is not None and not isinstance(key, str))
        or (key is not None) != sorted_
    ):
        raise invalid_cursor()
    return last_id, key


def page_by_id(
    ids: Sequence[str], after: str | None, limit: int, pick: Callable[[str], T | None]
) -> tuple[list[T], str | None]:
    """Up to ``limit`` picked items after id ``after``, and the id to continue after if more.

    O(page) when most ids are picked: a bisect finds the start, one look-ahead past the page
    decides whether there is a next page (so 1000 users make exactly 5 pages of 200).
    """
    start = bisect.bisect_right(ids, after) if after is not None else 0
    items: list[T] = []
    last: str | None = None
    for i in range(start, len(ids)):
        item = pick(ids[i])
        if item is None:
            continue
        if len(items) == limit:
            return items, last
        items.append(item)
        last = ids[i]
    return items, None


def page_sorted(
    ids: Sequence[str],
    cursor: tuple[str, str] | None,
    limit: int,
    pick: Callable[[str], T | None],
    key: Callable[[T], str],
    descending: bool,
) -> tuple[list[T], tuple[str, str] | None]:
    """A page of a ``sortBy`` search: ties ordered by id; the cursor is (key, id). O(N)."""
    rows = [(key(item), uid, item) for uid in ids if (item := pick(uid)) is not None]
    rows.sort(key=lambda r: (r[0], r[1]), reverse=descending)
    start = 0
    if cursor is not None:
        if descending:
            start = next((i for i, r in enumerate(rows) if (r[0], r[1]) < cursor), len(rows))
        else:
            start = next((i for i, r in enumerate(rows) if (r[0], r[1]) > cursor), len(rows))
    page = rows[start : start + limit]
    more = start + limit < len(rows)
    return [r[2] for r in page], ((page[-1][0], page[-1][1]) if more and page else None)


def parse_limit(raw: str | None, default: int, maximum: int) -> int:
    """``limit``: default when absent, clamped to the maximum, 400 when not a positive int."""
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        # guess: Okta's exact answer to a bad limit is not recorded.
        raise OktaError(
            400,
            "E0000001",
            "Api validation failed: limit",
            ["limit: The value must be a positive integer."],
        )
    return min(value, maximum)


def link_headers(
    request: web.Request,
    limit: int | None,
    next_cursor: str | None,
    drop_from_next: frozenset[str] = frozenset(),
) -> list[str]:
    """``Link`` values, ``self`` then ``next``, keeping the request's query parameters
    (but ``after`` and ``drop_from_next`` in ``next``)."""
    base = origin_of(request) + request.rel_url.raw_path
    params = [(k, v) for k, v in request.query.items() if k != "limit"]
    limit_param = [("limit", str(limit))] if limit is not None else []
    out = [f'<{base}?{urlencode(params + limit_param, quote_via=quote)}>; rel="self"']
    if next_cursor is not None:
        rest = [(k, v) for k, v in params if k != "after" and k not in drop_from_next]
        query = urlencode([("after", next_cursor), *rest, *limit_param], quote_via=quote)
        out.append(f'<{base}?{query}>; rel="next"')
    return out


def paged_response(request: web.Request, body: Any, links: list[str]) -> web.Response:
    response = json_response(body)
    response[ITEMS_KEY] = len(body)  # the stats count the entries a listing returned
    for link in links:
        response.headers.add("Link", link)  # one header line per relation, as Okta sends
    return response


# ---------------------------------------------------------------------------------------------
# Rendering


def response_flags(request: web.Request) -> frozenset[str]:
    """``okta-response=...`` values from Content-Type or Accept (e.g. ``omitCredentials``)."""
    flags: set[str] = set()
    for header in ("Content-Type", "Accept"):
        for part in request.headers.get(header, "").split(";"):
            name, _, value = part.strip().partition("=")
            if name.strip().lower() == "okta-response":
                flags.update(v.strip() for v in value.strip().strip('"').split(","))
    return frozenset(flags)


def _post(href: str) -> dict[str, str]:
    return {"href": href, "method": "POST"}


# guess: lifecycle links per status, after Okta's docs; the engine never follows them.
LIFECYCLE_LINKS: dict[str, tuple[str, ...]] = {
    "STAGED": ("activate", "deactivate"),
    "PROVISIONED": ("reactivate", "deactivate"),
    "ACTIVE": (
        "suspend",
        "resetPassword",
        "expirePassword",
        "forgotPassword",
        "changeRecoveryQuestion",
        "deactivate",
        "changePassword",
    ),
    "RECOVERY": ("resetPassword", "expirePassword", "deactivate"),
    "PASSWORD_EXPIRED": ("resetPassword", "expirePassword", "deactivate"),
    "LOCKED_OUT": ("unlock", "resetPassword", "expirePassword", "deactivate"),
    "SUSPENDED": ("unsuspend", "deactivate"),
    "DEPROVISIONED": ("activate",),
}
_LIFECYCLE_PATHS = {
    "activate": "lifecycle/activate",
    "deactivate": "lifecycle/deactivate",
    "reactivate": "lifecycle/reactivate",
    "suspend": "lifecycle/suspend",
    "unsuspend": "lifecycle/unsuspend",
    "unlock": "lifecycle/unlock",
    "resetPassword": "lifecycle/reset_password",
    "expirePassword": "lifecycle/expire_password",
    "forgotPassword": "credentials/forgot_password",
    "changeRecoveryQuestion": "credentials/change_recovery_question",
    "changePassword": "credentials/change_password",
}


def user_links(user: User, directory: AnyDirectory, origin: str, detail: bool) -> dict[str, Any]:
    """Lists carry only ``self`` (recorded); a single user also has schema, type, lifecycle."""
    self_href = f"{origin}/api/v1/users/{user.id}"
    if not detail:
        return {"self": {"href": self_href}}
    links: dict[str, Any] = {
        "schema": {"href": f"{origin}/api/v1/meta/schemas/user/{directory.schema_id}"}
    }
    for rel in LIFECYCLE_LINKS.get(user.status, ()):
        links[rel] = _post(f"{self_href}/{_LIFECYCLE_PATHS[rel]}")
    links["self"] = {"href": self_href}
    links["type"] = {"href": f"{origin}/api/v1/meta/types/user/{directory.user_type_id}"}
    return links


def user_json(
    user: User, directory: AnyDirectory, origin: str, flags: frozenset[str], detail: bool = False
) -> dict[str, Any]:
    """A user with the recorded field order, types and nulls."""
    out: dict[str, Any] = {"id": user.id, "status": user.status}
    if user.transitioning is not None and "omitTransitioningToStatus" not in flags:
        out["transitioningToStatus"] = user.transitioning  # present only while transitioning
    out.update(
        created=iso(user.created),
        activated=iso(user.activated),
        statusChanged=iso(user.status_changed),
        lastLogin=iso(user.last_login),
        lastUpdated=iso(user.last_updated),
        passwordChanged=iso(user.password_changed),
        type={"id": directory.user_type_id},
    )
    profile: dict[str, Any] = {
        "firstName": user.first_name,
        "lastName": user.last_name,
        "mobilePhone": user.mobile_phone,
        "secondEmail": user.second_email,
        "login": user.login,
        "email": user.email,
    }
    if user.display_name is not None:
        profile["displayName"] = user.display_name
    # guess: attributes that were never set are left out, as displayName is in the recordings
    for name, value in (
        ("department", user.department),
        ("location", user.location),
        ("costCenter", user.cost_center),
    ):
        if value is not None:
            profile[name] = value
    out["profile"] = profile
    if "omitCredentials" not in flags:
        out["credentials"] = {
            # guess: recorded users all have a password; we always show the empty object
            "password": {},
            "emails": [{"value": user.email, "status": "VERIFIED", "type": "PRIMARY"}],
            "provider": {"type": "OKTA", "name": "OKTA"},
        }
    out["_links"] = user_links(user, directory, origin, detail)
    return out


def _ad_profile(group: Group) -> dict[str, Any]:
    """An AD-mastered group's profile (objectClass okta:windows_security_principal)."""
    sam = re.sub(r"[^A-Za-z0-9_-]+", "_", group.name)
    return {
        "name": group.name,
        "description": group.description,
        "groupType": "Security",
        "samAccountName": sam,
        "dn": f"CN={group.name},OU=Groups,DC=corp,DC=example,DC=com",
        "windowsDomainQualifiedName": f"CORP\\{sam}",
        "externalId": base64.b64encode(group.id.encode()[:16]).decode(),
        "groupScope": "Global",
    }


def group_json(
    group: Group, directory: AnyDirectory, origin: str, stats: bool = False
) -> dict[str, Any]:
    """A group exactly like the recorded list-groups answer (plus ``source`` for APP_GROUP)."""
    out: dict[str, Any] = {
        "id": group.id,
        "created": iso(group.created),
        "lastUpdated": iso(group.last_updated),
        "lastMembershipUpdated": iso(group.last_membership_updated),
        "objectClass": ["okta:windows_security_principal" if group.windows else "okta:user_group"],
        "type": group.type,
    }
    if group.windows:
        out["profile"] = _ad_profile(group)
    else:
        out["profile"] = {"name": group.name, "description": group.description}
    if group.source_id is not None:
        out["source"] = {"id": group.source_id}
    links: dict[str, Any] = {
        "logo": LOGO,
        "users": {"href": f"{origin}/api/v1/groups/{group.id}/users"},
        "apps": {"href": f"{origin}/api/v1/groups/{group.id}/apps"},
    }
    if group.source_id is not None:
        links["source"] = {"href": f"{origin}/api/v1/apps/{group.source_id}"}
    out["_links"] = links
    if stats:
        out["_embedded"] = {
            "stats": {
                "usersCount": directory.member_count(group),
                "appsCount": 1 if group.source_id else 0,  # guess
                "groupPushMappingsCount": 0,
                "hasAdminPrivilege": False,
            }
        }
    return out


# ---------------------------------------------------------------------------------------------
# Rate limits


@dataclass
class OktaRateConfig:
    """Okta's limits: Workforce per-minute buckets times ``scale``; ``scale == 0`` turns off.

    Limits are per window of ``window_s`` seconds and scale with it (a 10 s window keeps the
    per-second rate). ``buckets`` overrides per-minute limits by bucket name (see
    ``DEFAULT_BUCKETS``).
    """

    scale: float = 1.0
    window_s: float = 60.0
    concurrency: int = 75
    buckets: dict[str, int] | None = None

    @property
    def enabled(self) -> bool:
        return self.scale > 0

    def limit_of(self, bucket: str) -> int:
        if not self.enabled:
            return UNLIMITED
        per_minute = {**DEFAULT_BUCKETS, **(self.buckets or {})}.get(
            bucket, DEFAULT_BUCKETS["other"]
        )
        return max(1, round(per_minute * self.scale * self.window_s / 60.0))


class _Window:
    """One bucket's fixed window; it starts at the first request after the previous ended."""

    __slots__ = ("completed", "count", "limit", "start")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.start: float | None = None
        self.count = 0
        self.completed: list[int] = []


class RateLimiter:
    """Per-bucket fixed windows. A refused (429) request does not count against the bucket:
    it was never let through, and counting it would punish clients that back off properly."""

    def __init__(self, config: OktaRateConfig) -> None:
        self.config = config
        self.windows = {name: _Window(config.limit_of(name)) for name in DEFAULT_BUCKETS}
        for name in config.buckets or {}:
            self.windows.setdefault(name, _Window(config.limit_of(name)))

    def _roll(self, window: _Window, now: float) -> None:
        if window.start is not None and now >= window.start + self.config.window_s:
            window.completed.append(window.count)
            window.start, window.count = None, 0

    def _reset_at(self, window: _Window, now: float) -> int:
        start = window.start if window.start is not None else now
        return math.ceil(start + self.config.window_s)

    def take(self, bucket: str, now: float) -> tuple[bool, tuple[int, int, int]]:
        """Let one request through if the bucket allows: (allowed, (limit, remaining, reset))."""
        window = self.windows[bucket]
        self._roll(window, now)
        if window.start is None:
            window.start = now
        allowed = not self.config.enabled or window.count < window.limit
        if allowed:
            window.count += 1
        remaining = max(0, window.limit - window.count)
        return allowed, (window.limit, remaining, self._reset_at(window, now))

    def peek(self, bucket: str, now: float) -> tuple[int, int, int]:
        window = self.windows[bucket]
        self._roll(window, now)
        return window.limit, max(0, window.limit - window.count), self._reset_at(window, now)

    def forget_history(self) -> None:
        for window in self.windows.values():
            window.completed = []

    def to_json(self, now: float) -> dict[str, Any]:
        """The ``windows`` part of ``/_emulator/stats``: let-through counts per window."""
        for window in self.windows.values():
            self._roll(window, now)
        return {
            "windows": {k: list(w.completed) for k, w in sorted(self.windows.items())},
            "windows_current": {k: w.count for k, w in sorted(self.windows.items())},
            "window_limits": {k: w.limit for k, w in sorted(self.windows.items())},
            "window_s": self.config.window_s,
        }


def bucket_of(path: str) -> str:
    """Which rate-limit bucket a path draws on (by path, so unknown routes count too)."""
    parts = path.rstrip("/").split("/")
    if parts[:3] != ["", "api", "v1"] or len(parts) < 4:
        return "other"
    if parts[3] == "users":
        return "users" if len(parts) == 4 else "user"
    if parts[3] == "groups":
        return "groups" if len(parts) == 4 else "group"
    if parts[3] == "logs" and len(parts) == 4:
        return "logs"
    return "other"


# ---------------------------------------------------------------------------------------------
# The emulator

_SSWS = re.compile(r"^SSWS ?(\S+)\s*$")
_OAUTH = re.compile(r"^(Bearer|DPoP) (\S+)\s*$")


def _okta_errors(handler: Handler) -> Handler:
    """Render ``OktaError`` (bad limit, cursor, search, unknown id) as Okta's error body."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except OktaError as exc:
            return exc.response()
        except HookRefused as exc:
            return okta_error(exc.status, exc.code, exc.summary, exc.causes)

    return wrapped


class OktaEmulator:
    """Serves a ``Directory`` as Okta's Management API; see the module docstring."""

    def __init__(
        self,
        directory: AnyDirectory,
        *,
        token: str,
        faults: FaultConfig | None = None,
        rate: OktaRateConfig | None = None,
        search_lag_s: float = 0.0,
        log_delay_s: float = 0.0,
        hooks: DeliveryOptions | None = None,
        oauth_clients: Iterable[OAuthClient] = (),
    ) -> None:
        self.directory = directory
        self.oauth = OAuthServer(oauth_clients)
        directory.log.delay_s = log_delay_s
        self.event_hooks = EventHooks(hooks)
        directory.log.listeners.append(self.event_hooks.written)
        self.token = token
        self.faults = faults or FaultConfig()
        self.rate = rate or OktaRateConfig()
        self.search_lag_s = search_lag_s
        directory.history_s = max(directory.history_s, search_lag_s)
        self.stats = Stats()
        self.limiter = RateLimiter(self.rate)
        self.in_flight = 0
        self._user_search, self._user_filter = _user_props(directory)
        self._group_search, self._group_filter = _group_props()

    def make_app(self) -> web.Application:
        app = build_app(
            stats=self.stats,
            faults=self.faults,
            routes=self._routes,
            gate=self._gate,
            finish=self._finish,
            control_routes=self._control_routes,
            outer_middlewares=[self._outer],
        )
        app.on_cleanup.append(self.event_hooks.close)
        return app

    # -- middleware hooks --------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> web.Response | None:
        """None when the request may go on: the API token (SSWS), or an OAuth access token
        with its DPoP proof and the route's scope (oauth.py); else Okta's refusal."""
        header = request.headers.get("Authorization", "")
        oauth = _OAUTH.match(header)
        if oauth is not None:
            refusal = self.oauth.check_resource(request, oauth.group(1), oauth.group(2))
            return None if refusal is None else _refusal_response(refusal)
        match = _SSWS.match(header)
        self.oauth.counts.resource_requests["SSWS" if match else "none"] += 1
        if match is not None and match.group(1) == self.token:
            return None
        return okta_error(401, "E0000011", "Invalid token provided")

    async def _gate(self, request: web.Request) -> web.StreamResponse | None:
        """Auth, then the bucket, then routing errors (Okta's JSON, not aiohttp's pages).

        The token endpoint needs no API token: its client assertion is its authentication.
        guess: Okta rate-limits ``/oauth2/v1/token`` in a bucket of its own; it is not
        emulated (its requests are counted in ``/_emulator/oauth``), its answers carry the
        ``other`` bucket's headers.
        """
        now = time.time()
        bucket = bucket_of(request.path)
        if request.path == TOKEN_PATH:
            request[RATE_KEY] = self.limiter.peek(bucket, now)
            return self._routing_error(request)
        refusal = self._authorized(request)
        if refusal is not None:
            # guess: a refused request (no valid token, a bad DPoP proof, a scope the token
            # lacks) does not use the org's bucket
            request[RATE_KEY] = self.limiter.peek(bucket, now)
            return refusal
        allowed, info = self.limiter.take(bucket, now)
        request[RATE_KEY] = info
        if not allowed:
            return rate_limited_response()
        return self._routing_error(request)

    def _routing_error(self, request: web.Request) -> web.Response | None:
        route_error = getattr(request.match_info, "http_exception", None)
        if isinstance(route_error, web.HTTPMethodNotAllowed):
            return okta_error(
                405, "E0000022", "The endpoint does not support the provided HTTP method"
            )
        if route_error is not None:
            # guess: the summary Okta gives for an unknown path
            return okta_error(
                404, "E0000007", f"Not found: Resource not found: {request.path} (Url)"
            )
        return None

    def _finish(self, request: web.Request, response: web.StreamResponse) -> None:
        """Okta's rate-limit headers go on every answer, errors and 429s included."""
        info = request.get(RATE_KEY) or self.limiter.peek(bucket_of(request.path), time.time())
        limit, remaining, reset = info
        response.headers["X-Rate-Limit-Limit"] = str(limit)
        response.headers["X-Rate-Limit-Remaining"] = str(remaining)
        response.headers["X-Rate-Limit-Reset"] = str(reset)

    @web.middleware
    async def _outer(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """The concurrency limit (whole request life, latency included) and stats' windows."""
        if request.path.startswith(CONTROL_PREFIX):
            return await self._control_passthrough(request, handler)
        if self.rate.enabled and self.in_flight >= self.rate.concurrency:
            return self._concurrency_refusal(request)
        self.in_flight += 1
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1

    def _concurrency_refusal(self, request: web.Request) -> web.Response:
        response = rate_limited_response()
        now = time.time()
        _, _, reset = self.limiter.peek(bucket_of(request.path), now)  # guess: the bucket's
        response.headers["X-Rate-Limit-Limit"] = "0"
        response.headers["X-Rate-Limit-Remaining"] = "0"
        response.headers["X-Rate-Limit-Reset"] = str(reset)
        self.stats.record(
            endpoint_of(request),
            status=429,
            is_write=request.method in WRITE_METHODS,
            applied=False,
            rate_limited=True,
        )
        return response

    async def _control_passthrough(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """``/_emulator/stats`` gains the rate-limit windows; a stats reset forgets them."""
        if request.path == "/_emulator/stats" and request.method == "GET":
            body = self.stats.to_json()
            body.update(self.limiter.to_json(time.time()))
            return json_response(body)
        if request.path == "/_emulator/stats/reset" and request.method == "POST":
            self.limiter.forget_history()
            self.oauth.counts = OAuthCounts()
        return await handler(request)

    # -- routes ------------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        add = app.router.add_get
        add("/api/v1/users", _okta_errors(self.list_users))
        add("/api/v1/users/{idOrLogin}", _okta_errors(self.get_user))
        add("/api/v1/users/{id}/groups", _okta_errors(self.user_groups))
        add("/api/v1/groups", _okta_errors(self.list_groups))
        add("/api/v1/groups/{id}", _okta_errors(self.get_group))
        add("/api/v1/groups/{id}/users", _okta_errors(self.group_users))
        add("/api/v1/logs", _okta_errors(self.list_logs))
        add("/api/v1/apps/{appId}/users", _okta_errors(self.app_users))
        add("/api/v1/apps/{appId}/users/{userId}", _okta_errors(self.app_user))
        hooks = "/api/v1/eventHooks"
        add(hooks, _okta_errors(self.list_event_hooks))
        add(hooks + "/{id}", _okta_errors(self.get_event_hook))
        app.router.add_post(hooks, _okta_errors(self.create_event_hook))
        app.router.add_put(hooks + "/{id}", _okta_errors(self.replace_event_hook))
        app.router.add_delete(hooks + "/{id}", _okta_errors(self.delete_event_hook))
        app.router.add_post(hooks + "/{id}/lifecycle/{action}", _okta_errors(self.hook_lifecycle))
        app.router.add_post(TOKEN_PATH, self.oauth.token_endpoint)

    def _user_picker(self, request: web.Request) -> tuple[Callable[[str], User | None], bool]:
        """Which users a listing shows, and whether it is a sortable search."""
        query = request.query
        directory = self.directory
        if "search" in query:
            pred = compile_query(query["search"], self._user_search, fold_case=True)
            seen_at = time.time() - self.search_lag_s  # search is eventually consistent

            def pick_search(uid: str) -> User | None:
                user = directory.version_at(uid, seen_at)
                return user if user is not None and pred(user) else None

            return pick_search, True
        if "filter" in query:
            pred = compile_query(query["filter"], self._user_filter, fold_case=False)
            return lambda uid: u if pred(u := directory.users[uid]) else None, False
        if "q" in query:
            prefix = query["q"].lower()
            return lambda uid: u if _q_match(u := directory.users[uid], prefix) else None, False
        return (
            lambda uid: u if (u := directory.users[uid]).status != "DEPROVISIONED" else None,
            False,
        )

    async def list_users(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/v1/users``: paged by id (or by ``sortBy`` for a search)."""
        query = request.query
        q_mode = "q" in query and "search" not in query and "filter" not in query
        limit = parse_limit(
            query.get("limit"), Q_DEFAULT_LIMIT if q_mode else USERS_LIMIT, USERS_LIMIT
        )
        pick, searching = self._user_picker(request)
        sort_by = query.get("sortBy") if searching else None
        after = query.get("after") or None
        ids = self.directory.user_ids
        next_cursor: str | None
        if sort_by is not None:
            users, next_cursor = self._sorted_page(query, sort_by, after, limit, pick)
        else:
            last = decode_cursor("users", after, sorted_=False)[0] if after else None
            users, more = page_by_id(ids, last, limit, pick)
            next_cursor = encode_cursor("users", more) if more and not q_mode else None
        origin, flags = origin_of(request), response_flags(request)
        body = [user_json(u, self.directory, origin, flags) for u in users]
        return paged_response(request, body, link_headers(request, limit, next_cursor))

    def _sorted_page(
        self,
        query: Mapping[str, str],
        sort_by: str,
        after: str | None,
        limit: int,
        pick: Callable[[str], User | None],
    ) -> tuple[list[User], str | None]:
        prop = self._user_search.get(sort_by)
        if prop is None:
            raise invalid_search(f"cannot sort by {sort_by}")
        order = query.get("sortOrder", "asc").lower()
        if order not in ("asc", "desc"):
            raise invalid_search(f"sortOrder must be asc or desc, not {order}")
        cursor = None
        if after:
            last, key = decode_cursor("users", after, sorted_=True)
            cursor = (key or "", last)
        users, more = page_sorted(
            self.directory.user_ids, cursor, limit, pick, _sort_key(prop), order == "desc"
        )
        return users, (encode_cursor("users", more[1], more[0]) if more else None)

    async def get_user(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/v1/users/{idOrLogin}``: by id, or by login case-insensitively."""
        wanted = request.match_info["idOrLogin"]
        user = self.directory.user(wanted)
        if user is None:
            raise not_found(wanted, "User")
        flags = response_flags(request)
        return json_response(user_json(user, self.directory, origin_of(request), flags, True))

    async def user_groups(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/v1/users/{id}/groups``: every group, no paging, a single ``self`` link."""
        wanted = request.match_info["id"]
        user = self.directory.user(wanted)
        if user is None:
            raise not_found(wanted, "User")
        origin = origin_of(request)
        body = [group_json(g, self.directory, origin) for g in self.directory.groups_of(user.id)]
        return paged_response(request, body, link_headers(request, USERS_LIMIT, None))

    def _group_picker(self, query: Mapping[str, str]) -> Callable[[str], Group | None]:
        groups = self.directory.groups
        if "search" in query:
            pred = compile_query(query["search"], self._group_search, fold_case=True)
        elif "filter" in query:
            pred = compile_query(query["filter"], self._group_filter, fold_case=False)
        elif "q" in query:
            prefix = query["q"].lower()

            def pred(group: Any) -> bool:
                return bool(group.name.lower().startswith(prefix))
        else:
            return groups.get
        return lambda gid: g if pred(g := groups[gid]) else None

    async def list_groups(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/v1/groups``: paged by id; ``expand=stats`` embeds member counts."""
        query = request.query
        limit = parse_limit(query.get("limit"), GROUPS_LIMIT, GROUPS_LIMIT)
        pick = self._group_picker(query)
        after = query.get("after") or None
        last = decode_cursor("groups", after, sorted_=False)[0] if after else None
        groups, more = page_by_id(self.directory.group_ids, last, limit, pick)
        stats = "stats" in query.get("expand", "").split(",")
        origin = origin_of(request)
        body = [group_json(g, self.directory, origin, stats) for g in groups]
        next_cursor = encode_cursor("groups", more) if more else None
        return paged_response(request, body, link_headers(request, limit, next_cursor))

    def _group_or_404(self, request: web.Request) -> Group:
        wanted = request.match_info["id"]
        group = self.directory.group(wanted)
        if group is None:
            raise not_found(wanted, "UserGroup")  # guess: Okta's kind name for groups
        return group

    async def get_group(self, request: web.Request) -> web.StreamResponse:
        group = self._group_or_404(request)
        stats = "stats" in request.query.get("expand", "").split(",")
        return json_response(group_json(group, self.directory, origin_of(request), stats))

    async def group_users(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/v1/groups/{id}/users``: members of every status, paged by id."""
        group = self._group_or_404(request)
        limit = parse_limit(request.query.get("limit"), MEMBERS_LIMIT, MEMBERS_LIMIT)
        scope = f"members:{group.id}"
        after = request.query.get("after") or None
        last = decode_cursor(scope, after, sorted_=False)[0] if after else None
        users = self.directory.users
        members, more = page_by_id(self.directory.member_ids(group), last, limit, users.get)
        origin, flags = origin_of(request), response_flags(request)
        body = [user_json(u, self.directory, origin, flags) for u in members]
        next_cursor = encode_cursor(scope, more) if more else None
        return paged_response(request, body, link_headers(request, limit, next_cursor))

    async def list_logs(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/v1/logs``: a polling request (no ``until``, ascending) pages by
        persistence time and always has ``next``; any other is bounded by ``published``."""
        try:
            events, limit, next_cursor, polling = self._log_page(request.query)
        except LogQueryError as exc:
            raise OktaError(400, exc.code, exc.summary, exc.causes) from None
        drop = frozenset({"since"}) if polling else frozenset()
        links = link_headers(request, limit, next_cursor, drop)
        return paged_response(request, [e.body for e in events], links)

    def _log_page(
        self, query: Mapping[str, str]
    ) -> tuple[list[LogEvent], int, str | None, bool]:
        """(events, limit, next cursor, polling?) for the query; LogQueryError when refused."""
        log = self.directory.log
        now = log.now_ms()
        limit = parse_log_limit(query.get("limit"))
        descending = parse_sort_order(query.get("sortOrder"))
        since = parse_time("since", query["since"]) if "since" in query else None
        until = parse_time("until", query["until"]) if "until" in query else None
        if since is not None:
            check_since(since, now)
        matches_filter = compile_filter(query["filter"]) if "filter" in query else None
        matches_words = keyword_match(parse_keywords(query.get("q")))

        def match(event: LogEvent) -> bool:
            return (matches_filter is None or matches_filter(event)) and matches_words(event)

        after = query.get("after") or None
        if until is None and not descending:
            if after is not None and since is not None:
                # documented: since and after are mutually exclusive; guess: the answer
                raise LogQueryError(
                    "E0000001", "Api validation failed: 'since' and 'after' cannot be combined"
                )
            if after is not None:
                start = _log_position("logs:poll", after, now)
            else:
                start = (since if since is not None else now - DEFAULT_SINCE_MS, -1)
            events, position = log.poll(start, limit, match)
            return events, limit, _log_cursor("logs:poll", position), True
        until_ms = until if until is not None else now
        since_ms = since if since is not None else until_ms - DEFAULT_SINCE_MS
        cursor = _log_position("logs:bounded", after, now) if after is not None else None
        events, more = log.bounded(since_ms, until_ms, descending, cursor, limit, match)
        return events, limit, (_log_cursor("logs:bounded", more) if more else None), False

    async def app_users(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/v1/apps/{appId}/users``: the users assigned directly, paged by id."""
        wanted = request.match_info["appId"]
        app = self.directory.apps.get(wanted)
        if app is None:
            raise not_found(wanted, "AppInstance")  # guess: Okta's kind name for apps
        query = request.query
        limit = parse_limit(query.get("limit"), APP_USERS_DEFAULT, APP_USERS_LIMIT)
        scope = f"appusers:{app.id}"
        after = query.get("after") or None
        last = decode_cursor(scope, after, sorted_=False)[0] if after else None
        users = self.directory.users
        assigned, more = page_by_id(app.members, last, limit, users.get)
        origin, flags = origin_of(request), response_flags(request)
        embed = "user" in query.get("expand", "").split(",")
        body = [app_user_json(app, u, self.directory, origin, flags, embed) for u in assigned]
        next_cursor = encode_cursor(scope, more) if more else None
        return paged_response(request, body, link_headers(request, limit, next_cursor))

    async def app_user(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/v1/apps/{appId}/users/{userId}``: one assignment; 404 when the app is
        unknown or the user is not assigned to it directly."""
        wanted, user_id = request.match_info["appId"], request.match_info["userId"]
        app = self.directory.apps.get(wanted)
        if app is None:
            raise not_found(wanted, "AppInstance")
        user = self.directory.users.get(user_id)
        if user is None or user_id not in app.members:
            raise not_found(user_id, "AppUser")  # guess: Okta's kind name for an assignment
        embed = "user" in request.query.get("expand", "").split(",")
        return json_response(app_user_json(app, user, self.directory, origin_of(request),
                                           response_flags(request), embed))

    # -- event hooks (eventhooks.py keeps and delivers them) ------------------------------------

    def _hook_json(self, request: web.Request, hook: Any) -> web.Response:
        return json_response(hook.to_json(origin_of(request), ADMIN_ID))

    async def list_event_hooks(self, request: web.Request) -> web.StreamResponse:
        origin = origin_of(request)
        return json_response([h.to_json(origin, ADMIN_ID)
                              for h in self.event_hooks.hooks.values()])

    async def get_event_hook(self, request: web.Request) -> web.StreamResponse:
        return self._hook_json(request, self.event_hooks.get(request.match_info["id"]))

    async def create_event_hook(self, request: web.Request) -> web.StreamResponse:
        hook = self.event_hooks.create(await _hook_body(request), origin_of(request))
        return self._hook_json(request, hook)

    async def replace_event_hook(self, request: web.Request) -> web.StreamResponse:
        hook = self.event_hooks.replace(request.match_info["id"], await _hook_body(request))
        return self._hook_json(request, hook)

    async def delete_event_hook(self, request: web.Request) -> web.StreamResponse:
        self.event_hooks.delete(request.match_info["id"])
        return web.Response(status=204)

    async def hook_lifecycle(self, request: web.Request) -> web.StreamResponse:
        """``activate``, ``deactivate`` or ``verify``; any other is an unknown path."""
        hook_id, action = request.match_info["id"], request.match_info["action"]
        if action == "verify":
            hook = await self.event_hooks.verify(hook_id)
        elif action in ("activate", "deactivate"):
            status = "ACTIVE" if action == "activate" else "INACTIVE"
            hook = self.event_hooks.set_status(hook_id, status)
        else:
            raise OktaError(404, "E0000007", f"Not found: Resource not found: {request.path} "
                            "(Url)")
        return self._hook_json(request, hook)

    # -- control endpoints (/_emulator/) -----------------------------------------------------

    def _control_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/_emulator/state", self._state)
        r.add_post("/_emulator/users", _control(self._add_user))
        r.add_post("/_emulator/users/{id}/status", _control(self._set_status))
        r.add_post("/_emulator/users/{id}/profile", _control(self._set_profile))
        r.add_delete("/_emulator/users/{id}", _control(self._delete_user))
        r.add_post("/_emulator/groups", _control(self._add_group))
        r.add_post("/_emulator/groups/{id}/profile", _control(self._set_group_profile))
        r.add_post("/_emulator/groups/{id}/members/{userId}", _control(self._add_member))
        r.add_delete("/_emulator/groups/{id}/members/{userId}", _control(self._remove_member))
        r.add_delete("/_emulator/groups/{id}", _control(self._delete_group))
        r.add_post("/_emulator/apps", _control(self._add_app))
        r.add_post("/_emulator/apps/{id}/users/{userId}", _control(self._assign_app))
        r.add_delete("/_emulator/apps/{id}/users/{userId}", _control(self._unassign_app))
        r.add_get("/_emulator/logs", self._log_counts)
        r.add_get("/_emulator/hooks", self._hook_counts)
        r.add_post("/_emulator/users/{id}/sessions", _control(self._sign_in))
        r.add_post("/_emulator/logs/delay", _control(self._set_log_delay))
        r.add_get("/_emulator/oauth", self._oauth_counts)
        r.add_post("/_emulator/oauth/clients", _control(self._add_oauth_client))

    async def _state(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.directory.state_json())

    async def _add_user(self, request: web.Request, body: dict[str, Any]) -> tuple[int, Any]:
        profile = body.get("profile", {k: v for k, v in body.items() if k != "status"})
        user = self.directory.add_user(profile, status=body.get("status", "ACTIVE"))
        return 201, user_state(user)

    async def _set_status(self, request: web.Request, body: dict[str, Any]) -> tuple[int, Any]:
        user = self.directory.set_status(
            request.match_info["id"], body.get("status", ""), body.get("transitioningToStatus")
        )
        return 200, user_state(user)

    async def _set_profile(self, request: web.Request, body: dict[str, Any]) -> tuple[int, Any]:
        user = self.directory.update_profile(request.match_info["id"], body.get("profile", body))
        return 200, user_state(user)

    async def _delete_user(self, request: web.Request, body: dict[str, Any]) -> tuple[int, Any]:
        """As Okta's DELETE: deactivates a user first; deletes a DEPROVISIONED one."""
        user = self.directory.delete_user(request.match_info["id"])
        return 200, {"deleted": user is None,
                     "user": None if user is None else user_state(user)}

    async def _add_group(self, request: web.Request, body: dict[str, Any]) -> tuple[int, Any]:
        profile = body.get("profile", body)
        name = profile.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("name is required")
        group = self.directory.add_group(name, profile.get("description"))
        return 201, group_state(group, self.directory)

    async def _set_group_profile(
        self, request: web.Request, body: dict[str, Any]
    ) -> tuple[int, Any]:
        profile = body.get("profile", body)
        group = self.directory.update_group_profile(
            request.match_info["id"],
            name=profile.get("name"),
            description=profile.get("description"),
            clear_description="description" in profile and profile["description"] is None,
        )
        return 200, group_state(group, self.directory)

    async def _add_member(self, request: web.Request, body: dict[str, Any]) -> tuple[int, Any]:
        changed = self.directory.add_membership(
            request.match_info["id"], request.match_info["userId"]
        )
        return 200, {"changed": changed}

    async def _remove_member(self, request: web.Request, body: dict[str, Any]) -> tuple[int, Any]:
        changed = self.directory.remove_membership(
            request.match_info["id"], request.match_info["userId"]
        )
        return 200, {"changed": changed}

    async def _delete_group(self, request: web.Request, body: dict[str, Any]) -> tuple[int, Any]:
        group = self.directory.delete_group(request.match_info["id"])
        return 200, {"deleted": group.id}

    async def _add_app(self, request: web.Request, body: dict[str, Any]) -> tuple[int, Any]:
        label, name = body.get("label"), body.get("name")
        if not isinstance(label, str) or (name is not None and not isinstance(name, str)):
            raise ValueError("label (a string) is required; name is an optional string")
        app = self.directory.add_app(label, name)
        return 201, {"id": app.id, "name": app.name, "label": app.label}

    async def _assign_app(self, request: web.Request, body: dict[str, Any]) -> tuple[int, Any]:
        changed = self.directory.assign_app(request.match_info["id"], request.match_info["userId"])
        return 200, {"changed": changed}

    async def _unassign_app(self, request: web.Request, body: dict[str, Any]) -> tuple[int, Any]:
        changed = self.directory.unassign_app(
            request.match_info["id"], request.match_info["userId"]
        )
        return 200, {"changed": changed}

    async def _log_counts(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.directory.log.counts())

    async def _hook_counts(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.event_hooks.counts())

    async def _sign_in(self, request: web.Request, body: dict[str, Any]) -> tuple[int, Any]:
        """A user signs in (``user.session.start``), into an app when ``app`` names one."""
        app_id = body.get("app")
        if app_id is not None and not isinstance(app_id, str):
            raise ValueError("app must be an app id")
        written = sign_in(self.directory, request.match_info["id"], app_id)
        return 200, {"events": written}

    async def _oauth_counts(self, request: web.Request) -> web.StreamResponse:
        """Token requests, tokens issued by type, refusals by reason, resource requests by
        auth kind (SSWS, Bearer, DPoP, none), and the registered service apps."""
        return json_response({**self.oauth.counts.to_json(), "clients": self.oauth.describe()})

    async def _add_oauth_client(
        self, request: web.Request, body: dict[str, Any]
    ) -> tuple[int, Any]:
        """Register a service app (or replace its key and grants): ``client_id`` (default: a
        new one), ``public_key`` (PEM or JWK), ``kid``, ``scopes``, ``dpop``, ``token_ttl_s``."""
        app = self.oauth.register(OAuthClient.from_json(body))
        return 201, next(d for d in self.oauth.describe()
                         if d["client_id"] == app.client.client_id)

    async def _set_log_delay(self, request: web.Request, body: dict[str, Any]) -> tuple[int, Any]:
        """Events written from now on become readable ``seconds`` after their ``published``."""
        seconds = body.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError("seconds must be a number >= 0")
        self.directory.log.delay_s = float(seconds)
        return 200, {"delay_s": float(seconds)}


def _refusal_response(refusal: ResourceRefusal) -> web.Response:
    """A refused OAuth resource request: Okta's error body (or OAuth's), and the challenge."""
    if refusal.okta_code is not None:
        response = okta_error(refusal.status, refusal.okta_code, refusal.okta_summary)
    else:
        response = json_response({"error": refusal.error,
                                  "error_description": refusal.description},
                                 status=refusal.status)
    response.headers["WWW-Authenticate"] = refusal.challenge
    return response


async def _hook_body(request: web.Request) -> Any:
    """The JSON body of a hook request; malformed JSON is refused as Okta refuses it."""
    try:
        return await read_json(request)
    except ValueError:
        raise OktaError(400, "E0000003", "The request body was not well-formed.") from None


ControlAction = Callable[[web.Request, dict[str, Any]], Awaitable[tuple[int, Any]]]


def _control(action: ControlAction) -> Handler:
    """A control endpoint: optional JSON object body; 404 unknown ids, 400 bad input."""

    async def handler(request: web.Request) -> web.StreamResponse:
        body: Any = {}
        if request.can_read_body:
            try:
                body = await read_json(request)
            except ValueError as exc:
                if str(exc) != "empty body":
                    return json_response({"error": f"bad JSON: {exc}"}, status=400)
        if not isinstance(body, dict):
            return json_response({"error": "the body must be a JSON object"}, status=400)
        try:
            status, answer = await action(request, body)
        except LazyReadOnly as exc:
            return json_response({"error": str(exc)}, status=501)
        except KeyError as exc:
            return json_response({"error": f"not found: {exc.args[0]}"}, status=404)
        except (ValueError, TypeError, AttributeError) as exc:
            return json_response({"error": str(exc)}, status=400)
        return json_response(answer, status=status)

    return handler


def _log_cursor(scope: str, position: tuple[int, int]) -> str:
    """An opaque ``after`` for the System Log: (time in ms, sequence number) of a position."""
    return encode_cursor(scope, str(position[1]), str(position[0]))


def _log_position(scope: str, cursor: str, now_ms: int) -> tuple[int, int]:
    """The position an ``after`` names; a foreign or damaged one is refused.

    guess: Okta's answers to a bad ``after`` and to one older than ``since`` may reach (180
    days) are not documented; the first is the paging error of the other listings, the
    second the one for such a ``since``.
    """
    seq, at = decode_cursor(scope, cursor, sorted_=True)
    try:
        position = (int(at or ""), int(seq))
    except ValueError:
        raise invalid_cursor() from None
    if position[0] < now_ms - MAX_SINCE_MS:
        raise OktaError(
            400,
            "E0000053",
            "Invalid parameter: The since parameter is over 180 days prior to the current day.",
        )
    return position


def app_user_json(
    app: App,
    user: User,
    directory: AnyDirectory,
    origin: str,
    flags: frozenset[str],
    embed_user: bool,
) -> dict[str, Any]:
    """An AppUser of a direct assignment to an app without provisioning.

    guess: field set after Okta's AppUser schema; status ACTIVE while assigned (no
    provisioning runs, so nothing else moves it).
    """
    assigned = iso(app.assigned_at.get(user.id, app.created))
    out: dict[str, Any] = {
        "id": user.id,
        "externalId": None,
        "created": assigned,
        "lastUpdated": assigned,
        "scope": "USER",
        "status": "ACTIVE",
        "statusChanged": assigned,
        "passwordChanged": None,
        "syncState": "DISABLED",
        "credentials": {"userName": user.login},
        "profile": {},
        "_links": {
            "app": {"href": f"{origin}/api/v1/apps/{app.id}"},
            "user": {"href": f"{origin}/api/v1/users/{user.id}"},
        },
    }
    if embed_user:
        out["_embedded"] = {"user": user_json(user, directory, origin, flags)}
    return out


def _q_match(user: User, prefix: str) -> bool:
    """``q``: prefix of firstName, lastName or email; never DEPROVISIONED (documented)."""
    if user.status == "DEPROVISIONED":
        return False
    return any(v.lower().startswith(prefix) for v in (user.first_name, user.last_name, user.email))


def _sort_key(prop: Prop) -> Callable[[User], str]:
    """A string sort key (cursors carry it): dates zero-padded, strings case-folded."""
    get = prop.get
    if prop.kind == "date":
        return lambda user: "" if (v := get(user)) is None else f"{int(v):012d}"
    return lambda user: "" if (v := get(user)) is None else str(v).lower()
