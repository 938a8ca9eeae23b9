"""Okta, read-only: users of every status, groups, and each group's members, page by page.

Rule 1 of the design card lives here: an error in the middle of a listing is never the end of
the listing. Every page either arrives or the listing raises ``ListingError``; a listing ends
only on a page with no ``rel="next"`` link. ``next`` links are followed only when they point at
the configured Okta origin, so the API token can never be sent to another host.

Each listing is exposed as pages with their ``next`` URL (the opaque cursor), so a checkpoint
can record where a listing stands and a resume can continue from there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

from oktasync.errors import Context, FullSyncNeeded, ListingError, UsageError
from oktasync.http import Answer, HttpClient
from oktasync.models import ALL_STATUSES, OktaGroup, OktaUser

# Buckets as Okta counts them (see the reference's rate-limit table).
BUCKET_USERS = "GET /api/v1/users"
BUCKET_USER = "GET /api/v1/users/{id}"
BUCKET_GROUPS = "GET /api/v1/groups"
BUCKET_GROUP = "GET /api/v1/groups/{id}"
BUCKET_LOGS = "GET /api/v1/logs"
BUCKET_APPS = "GET /api/v1/apps"

# `filter` on status includes DEPROVISIONED users (a plain listing omits them) and, unlike
# `search`, is not eventually consistent: a sync must see changes it was told about.
ALL_USERS_FILTER = " or ".join(f'status eq "{s}"' for s in ALL_STATUSES)
USERS_PAGE = 200  # Okta's maximum for /api/v1/users
MEMBERS_PAGE = 1000  # Okta's maximum for /api/v1/groups/{id}/users
GROUPS_PAGE = 1000
LOGS_PAGE = 1000  # Okta's maximum for /api/v1/logs
APP_USERS_PAGE = 500  # guess: Okta documents 50 by default; 500 is the emulator's maximum


def scope_search(expression: str) -> str:
    """A ``user_filter`` as the ``search`` Okta evaluates: the administrator's expression,
    with every status named so that DEPROVISIONED users are listed as well."""
    return f"({expression}) and ({ALL_USERS_FILTER})"


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing and the cursor (``next`` URL) after it; None at the end."""

    items: list[Any]
    next_url: str | None


def parse_user(raw: dict[str, Any], attributes: Sequence[str] = ()) -> OktaUser:
    """The user, with the values of ``attributes`` (the profile attributes attribute groups
    are made from): Okta's profile attributes are strings, so an absent, empty or non-string
    value is no value."""
    profile = raw.get("profile") or {}
    return OktaUser(
        id=raw["id"],
        status=raw.get("status") or "",
        login=profile.get("login") or "",
        email=profile.get("email") or None,
        first_name=profile.get("firstName"),
        last_name=profile.get("lastName"),
        display_name=profile.get("displayName"),
        attributes=_attribute_values(profile, attributes),
    )


def _attribute_values(profile: dict[str, Any],
                      attributes: Sequence[str]) -> tuple[tuple[str, str], ...]:
    # guess: a custom attribute typed number, boolean or array comes as that JSON type; it
    # makes no group (the base attributes department, location, costCenter are strings)
    values = ((a, profile.get(a)) for a in attributes)
    return tuple((a, v.strip()) for a, v in values if isinstance(v, str) and v.strip())


def parse_group(raw: dict[str, Any]) -> OktaGroup:
    profile = raw.get("profile") or {}
    stats = (raw.get("_embedded") or {}).get("stats") or {}
    count = stats.get("usersCount")
    return OktaGroup(
        id=raw["id"], name=profile.get("name") or "", type=raw.get("type") or "",
        last_updated=raw.get("lastUpdated"),
        last_membership_updated=raw.get("lastMembershipUpdated"),
        member_count=count if isinstance(count, int) else None,
    )


def next_link(answer: Answer) -> str | None:
    """The ``rel="next"`` target among the ``Link`` headers (one per line, or comma-joined)."""
    for header in answer.headers.getall("Link", []):
        for part in _split_links(header):
            url, _, params = part.partition(";")
            if 'rel="next"' in params.replace(" ", "") or "rel=next" in params.replace(" ", ""):
                return url.strip().strip("<>")
    return None


def _split_links(header: str) -> list[str]:
    """Split a Link header on the commas between entries, not those inside <...>."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in header:
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


class OktaSource:
    """Listings of one Okta org through one ``HttpClient``."""

    def __init__(self, client: HttpClient, attributes: Sequence[str] = ()) -> None:
        self._client = client
        self._attributes = tuple(attributes)  # profile attributes kept on each user
        # Okta's clock at this source's first answer (its ``Date``, ISO 8601): what a sync
        # read from Okta is at least as new as this, so changes are read from it next time
        self.first_answer_at: str | None = None
        origin = urlsplit(client.base_url)
        self._origin = (origin.scheme, origin.netloc.lower())

    def first_users_url(self) -> str:
        return self._client.url(
            f"/api/v1/users?limit={USERS_PAGE}&filter={quote(ALL_USERS_FILTER)}")

    def first_groups_url(self) -> str:
        # expand=stats: each group's member count, against which a member listing is checked
        return self._client.url(f"/api/v1/groups?limit={GROUPS_PAGE}&expand=stats")

    def first_members_url(self, group_id: str) -> str:
        return self._client.url(
            f"/api/v1/groups/{quote(group_id, safe='')}/users?limit={MEMBERS_PAGE}")

    async def user_pages(self, start_url: str | None = None,
                         search: str | None = None) -> AsyncIterator[Page]:
        """Every user, or (``search``: a ``user_filter`` every target shares) only those the
        filter selects, of every status."""
        if search is not None:
            async for page in self._search_pages(search, start_url):
                yield Page([parse_user(u, self._attributes) for u in page.items], page.next_url)
            return
        async for page in self._pages(start_url or self.first_users_url(), BUCKET_USERS,
                                      "users"):
            yield Page([parse_user(u, self._attributes) for u in page.items], page.next_url)

    async def group_pages(self, start_url: str | None = None) -> AsyncIterator[Page]:
        url = start_url or self.first_groups_url()
        async for page in self._pages(url, BUCKET_GROUPS, "groups"):
            yield Page([parse_group(g) for g in page.items], page.next_url)

    async def member_pages(
        self, group_id: str, start_url: str | None = None,
    ) -> AsyncIterator[Page]:
        """Members of one group as Okta user ids (the user records come from the user listing)."""
        url = start_url or self.first_members_url(group_id)
        async for page in self._pages(url, BUCKET_GROUP, f"members of group {group_id}"):
            yield Page([u["id"] for u in page.items], page.next_url)

    def first_search_url(self, expression: str) -> str:
        return self._client.url(
            f"/api/v1/users?limit={USERS_PAGE}&search={quote(scope_search(expression))}")

    async def matching_user_pages(self, expression: str,
                                  start_url: str | None = None) -> AsyncIterator[Page]:
        """The ids of the users a ``user_filter`` selects, evaluated by Okta (``search``:
        eventually consistent, so a profile changed seconds ago may still count as before)."""
        async for page in self._search_pages(expression, start_url):
            yield Page([u["id"] for u in page.items], page.next_url)

    async def _search_pages(self, expression: str,
                            start_url: str | None) -> AsyncIterator[Page]:
        """The users a ``user_filter`` selects, page by page; an expression Okta refuses
        (400) is the administrator's to fix."""
        url: str | None = start_url or self.first_search_url(expression)
        while url is not None:
            self._check_origin(url, "user_filter search")
            answer = await self._get(url, BUCKET_USERS, "user_filter search", accept=(400,))
            if answer.status == 400:
                raise UsageError(f"user_filter {expression!r}: Okta refused it as a search "
                                 f"expression ({_error_summary(answer)}); fix user_filter")
            items = answer.json()
            _ids(items, url)  # every entry has an id
            yield Page(items, url := next_link(answer))

    async def users_matching(self, expression: str, user_ids: Sequence[str]) -> set[str]:
        """Which of a handful of users a ``user_filter`` selects now (one search; for an
        incremental run's changed users)."""
        if not user_ids:
            return set()
        ids = " or ".join(f"id eq {_quoted(u)}" for u in user_ids)
        url: str | None = self._client.url(
            f"/api/v1/users?limit={USERS_PAGE}&search="
            f"{quote(f'({scope_search(expression)}) and ({ids})')}")
        found: set[str] = set()
        while url is not None:
            self._check_origin(url, "user_filter search")
            answer = await self._get(url, BUCKET_USERS, "user_filter search")
            found.update(_ids(answer.json(), url))
            url = next_link(answer)
        return found

    async def assigned_to_app(self, app_id: str, user_ids: Sequence[str]) -> set[str]:
        """Which of a handful of users are assigned to an Okta app instance now (one
        ``GET /api/v1/apps/{id}/users/{userId}`` each; 404: not assigned)."""
        assigned: set[str] = set()
        for user_id in user_ids:
            answer = await self._get(
                f"/api/v1/apps/{quote(app_id, safe='')}/users/{quote(user_id, safe='')}",
                BUCKET_APPS, f"user {user_id} of app {app_id}", dict, accept=(404,))
            if answer.status != 404:
                assigned.add(user_id)
        return assigned

    async def app_user_pages(self, app_id: str,
                             start_url: str | None = None) -> AsyncIterator[Page]:
        """The ids of the users assigned to an Okta app instance; an id Okta does not know
        (404) is the administrator's to fix (``okta_app_id``)."""
        url: str | None = start_url or self._client.url(
            f"/api/v1/apps/{quote(app_id, safe='')}/users?limit={APP_USERS_PAGE}")
        while url is not None:
            self._check_origin(url, f"users of app {app_id}")
            answer = await self._get(url, BUCKET_APPS, f"users of app {app_id}",
                                     accept=(404,))
            if answer.status == 404:
                raise UsageError(f"okta_app_id {app_id!r}: Okta has no app instance with this "
                                 "id; copy the id (0oa...) from the app's page in the Okta "
                                 "admin console")
            yield Page(_ids(answer.json(), url), url := next_link(answer))

    async def changed_user_pages(self, since: str,
                                 start_url: str | None = None) -> AsyncIterator[Page]:
        """Users whose profile or status changed after ``since`` (Okta's time, ISO 8601),
        DEPROVISIONED ones included: ``filter`` on ``lastUpdated`` is exact, not eventually
        consistent like ``search``. A membership change does not move ``lastUpdated``."""
        url = start_url or self._client.url(
            f"/api/v1/users?limit={USERS_PAGE}&filter="
            f"{quote(f'lastUpdated gt {_quoted(since)}')}")
        async for page in self._pages(url, BUCKET_USERS, "changed users"):
            yield Page([parse_user(u, self._attributes) for u in page.items], page.next_url)

    async def changed_group_pages(self, since: str,
                                  start_url: str | None = None) -> AsyncIterator[Page]:
        """Groups renamed, created, or whose members changed after ``since``."""
        changed = (f"lastUpdated gt {_quoted(since)} or "
                   f"lastMembershipUpdated gt {_quoted(since)}")
        url = start_url or self._client.url(
            f"/api/v1/groups?limit={GROUPS_PAGE}&expand=stats&filter={quote(changed)}")
        async for page in self._pages(url, BUCKET_GROUPS, "changed groups"):
            yield Page([parse_group(g) for g in page.items], page.next_url)

    def first_log_url(self, since: str) -> str:
        """A polling request of the System Log from ``since``: no ``until``, ascending, so
        it is ordered by when Okta stored each event and a delayed event is never skipped."""
        return self._client.url(f"/api/v1/logs?since={quote(since)}&sortOrder=ASCENDING"
                                f"&limit={LOGS_PAGE}")

    async def log_pages(self, position: str) -> AsyncIterator[Page]:
        """The System Log's events from ``position`` (a polling ``next`` URL, or
        ``first_log_url``), page by page, until a page comes back empty: Okta's polling
        ``next`` link is always present, so the last page's ``next_url`` is where the next
        read starts (persist it). A page without one is a broken answer, never the end."""
        url = position
        while True:
            self._check_origin(url, "System Log")
            answer = await self._get(url, BUCKET_LOGS, "System Log", accept=(400,))
            if answer.status == 400:  # a position past retention, or one Okta no longer takes
                raise FullSyncNeeded(f"Okta refused the System Log position "
                                     f"({_error_summary(answer)})")
            events = answer.json()
            if not all(isinstance(e, dict) and isinstance(e.get("uuid"), str) for e in events):
                raise ListingError(f"Okta System Log: an event without a uuid on {_path_of(url)}")
            next_url = next_link(answer)
            if next_url is None:
                raise ListingError(f"Okta System Log: a polling page without a next link on "
                                   f"{_path_of(url)} (Okta always sends one)")
            yield Page(events, next_url)
            if not events:
                return
            url = next_url

    async def user(self, user_id: str) -> OktaUser | None:
        """One user as Okta has it now; None when Okta no longer has it (deleted)."""
        answer = await self._get(f"/api/v1/users/{quote(user_id, safe='')}", BUCKET_USER,
                                 f"user {user_id}", dict, accept=(404,))
        return None if answer.status == 404 else parse_user(answer.json(), self._attributes)

    async def groups_of_user(self, user_id: str) -> list[str] | None:
        """The ids of every group the user is in now; None when the user is gone. Okta
        answers this in one page (no ``next``); one is followed if it ever sends one."""
        url: str | None = f"/api/v1/users/{quote(user_id, safe='')}/groups"
        groups: list[str] = []
        while url is not None:
            self._check_origin(url, f"groups of user {user_id}")
            answer = await self._get(url, BUCKET_USER, f"groups of user {user_id}",
                                     accept=(404,))
            if answer.status == 404:
                return None
            items = answer.json()
            if not all(isinstance(g, dict) and isinstance(g.get("id"), str) for g in items):
                raise ListingError(f"Okta groups of user {user_id}: an entry without an id")
            groups.extend(g["id"] for g in items)
            url = next_link(answer)
        return groups

    async def group(self, group_id: str) -> OktaGroup | None:
        """One group now (with its member count); None when it was deleted."""
        answer = await self._get(f"/api/v1/groups/{quote(group_id, safe='')}?expand=stats",
                                 BUCKET_GROUP, f"group {group_id}", dict, accept=(404,))
        return None if answer.status == 404 else parse_group(answer.json())

    async def member_count(self, group_id: str) -> int | None:
        """What Okta counts as the group's members now (``expand=stats``); None when it does
        not say. A member listing that read fewer has ended early."""
        answer = await self._get(
            f"/api/v1/groups/{quote(group_id, safe='')}?expand=stats", BUCKET_GROUP,
            f"group {group_id}", dict)
        return parse_group(answer.json()).member_count

    async def _pages(self, url: str, bucket: str, what: str) -> AsyncIterator[Page]:
        next_url: str | None = url
        while next_url is not None:
            self._check_origin(next_url, what)
            answer = await self._get(next_url, bucket, f"{what} listing")
            items = answer.json()  # an array: send(expect=list) checked it
            if not all(isinstance(i, dict) and isinstance(i.get("id"), str) for i in items):
                raise ListingError(f"Okta {what} listing: an entry without an id on "
                                   f"{_path_of(next_url)}")
            next_url = next_link(answer)
            yield Page(items, next_url)

    async def _get(self, url: str, bucket: str, what: str,
                   expect: type[dict[str, Any]] | type[list[Any]] = list,
                   accept: tuple[int, ...] = ()) -> Answer:
        """Every Okta read is part of a listing: its failure stops the run (exit 4). A status
        in ``accept`` comes back to the caller (its body unchecked)."""
        answer = await self._client.send("GET", url, bucket=bucket, expect=expect,
                                         context=Context.LISTING, what=what, accept=accept)
        if self.first_answer_at is None:
            self.first_answer_at = okta_time(answer.headers.get("Date"))
        return answer

    def _check_origin(self, url: str, what: str) -> None:
        parts = urlsplit(self._client.url(url))
        if (parts.scheme, parts.netloc.lower()) != self._origin:
            raise ListingError(
                f"Okta {what} listing: refusing to follow a link to {parts.scheme}://"
                f"{parts.netloc} (configured Okta is {self._origin[0]}://{self._origin[1]})")


def _ids(items: Any, url: str) -> list[str]:
    """The ``id`` of each entry of a listing page (a user's, an app user's)."""
    if not isinstance(items, list) or not all(
            isinstance(i, dict) and isinstance(i.get("id"), str) for i in items):
        raise ListingError(f"Okta listing: an entry without an id on {_path_of(url)}")
    return [i["id"] for i in items]


def _error_summary(answer: Answer) -> str:
    """Okta's own words for a refusal (``errorCode: errorSummary``), shortened."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return f"{body.get('errorCode', '?')}: {str(body.get('errorSummary', ''))[:200]}"
    return f"HTTP {answer.status}"


def _path_of(url: str) -> str:
    return urlsplit(url).path


def _quoted(value: str) -> str:
    """A filter's string literal: Okta's expressions quote values in double quotes."""
    return '"' + value.replace('"', '') + '"'


def okta_time(date_header: str | None) -> str | None:
    """An HTTP ``Date`` (Okta's clock, one-second resolution) as Okta writes its timestamps
    (``2026-12-02T12:00:00.000Z``), the form its ``lastUpdated`` filters and the System Log's
    ``since`` take; None when the answer had no usable ``Date``."""
    if not date_header:
        return None
    try:
        when = parsedate_to_datetime(date_header).astimezone(UTC)
    except (TypeError, ValueError):
        return None
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")
