"""A Jira Data Center emulator: the REST v2 user and group endpoints the engine writes to.

It answers like a real Jira (status codes, ``{"errorMessages":[...],"errors":{...}}`` bodies,
version-dependent search limits, the 10.3 cursor listing) so the engine's Jira target and the
real atlassian-python-api client can be tested against it. Behaviour no primary source confirmed
is marked ``# guess:``.
"""

from __future__ import annotations

import heapq
import re
import time
from datetime import UTC, datetime
from html import escape
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

from aiohttp import web

from oktasync_emulators.atlassian_base import (
    MSG_TOO_LONG,
    ApiError,
    AtlassianEmulator,
    AtlassianRate,
    Clock,
    Group,
    User,
    atlassian_json,
    auth_user,
    number_after,
    query_bool,
    query_int,
    too_long,
)
from oktasync_emulators.common import FaultConfig, origin_of

API = "/rest/api/2"
SEARCH_CAP_JIRA10 = 100  # JRASERVER-78660 / -78520
SEARCH_CAP_OLDER = 1000  # JRASERVER-65089
MEMBER_PAGE_MAX = 50  # guess: documented default 50; assume the maximum is the same
LIST_PAGE_DEFAULT = 2000
PICKER_DEFAULT = 20
SOFTWARE_USERS = "jira-software-users"

# guess: Jira's i18n texts for these refusals were not found in a primary source.
MSG_ALREADY_MEMBER = "Cannot add user. '{user}' is already a member of '{group}'"
MSG_NOT_MEMBER = "Cannot remove user. '{user}' is not a member of '{group}'"
MSG_PROJECT_LEAD = (
    "The user '{user}' cannot be deactivated because they are the lead of one or more "
    "projects. Assign a new project lead first."
)
MSG_READ_ONLY_USER = "Cannot update user '{user}': the user's directory is read-only."
MSG_READ_ONLY_CREATE = "Cannot add user, all the user directories are read-only."
MSG_NO_SUCH_USER = "Specified user does not exist or you do not have required permissions"
MSG_READ_ONLY_GROUP = "Cannot change groups: the user directory is read-only."
# Jira's own text (its functional tests assert it on the user forms); REST answers it under
# ``errors.username``.
MSG_USERNAME_CHARS = "The username must not contain '<', '>' or '&'."
MSG_USERNAME_TAKEN = "A user with that username already exists."
USERNAME_FORBIDDEN_CHARS = frozenset("<>&")


def parse_version(version: str) -> tuple[int, int, int]:
    """``"10.3.4"`` -> ``(10, 3, 4)``; missing parts are 0."""
    numbers = [int(n) for n in re.findall(r"\d+", version)[:3]]
    numbers += [0] * (3 - len(numbers))
    return numbers[0], numbers[1], numbers[2]


def _as_bool(value: Any) -> bool | None:
    """Jackson's reading of a boolean: real booleans and the strings "true"/"false"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


class JiraUser(User):
    """A Jira user: keys look like ``JIRAUSER10000`` (Jira 8+ keys for new users)."""

    __slots__ = ()

    @property
    def key(self) -> str:
        return f"JIRAUSER{10000 + self.id}"

    @classmethod
    def id_of_key(cls, key: str) -> int | None:
        uid = number_after(key, "JIRAUSER", offset=10000)
        return uid


class JiraEmulator(AtlassianEmulator):
    """Jira DC REST v2 users and groups, with Jira's errors, limits and refusals."""

    product: ClassVar[str] = "jira"
    admin_group: ClassVar[str] = "jira-administrators"
    user_group: ClassVar[str] = SOFTWARE_USERS
    lowercase_names: ClassVar[bool] = True  # Jira stores usernames lower-case
    user_type: ClassVar[type[User]] = JiraUser

    def __init__(
        self,
        *,
        username: str,
        password: str,
        token: str | None = None,
        faults: FaultConfig | None = None,
        rate: AtlassianRate | None = None,
        version: str = "10.3.4",
        clock: Clock = time.monotonic,
    ) -> None:
        self.version = version
        self.version_numbers = parse_version(version)
        super().__init__(
            username=username,
            password=password,
            token=token,
            faults=faults,
            rate=rate,
            clock=clock,
        )

    @property
    def search_cap(self) -> int:
        """How many matches ``user/search`` returns in total, whatever the paging."""
        return SEARCH_CAP_JIRA10 if self.version_numbers[0] >= 10 else SEARCH_CAP_OLDER

    @property
    def has_user_list(self) -> bool:
        """``/user/list`` arrived in 10.3 LTS."""
        return self.version_numbers[:2] >= (10, 3)


    # error shapes ----------------------------------------------------------------------------

    def error_response(
        self, status: int, message: str, *, field: str | None = None
    ) -> web.Response:
        if field is not None:
            return atlassian_json({"errorMessages": [], "errors": {field: message}}, status)
        return atlassian_json({"errorMessages": [message], "errors": {}}, status)

    def unauthorized_response(self, reason: str) -> web.Response:
        # guess: Seraph sets X-Seraph-LoginReason; the REST layer answers with this JSON.
        return atlassian_json(
            {
                "errorMessages": [
                    "You are not authenticated. Authentication required to perform this operation."
                ],
                "errors": {},
            },
            401,
            headers={
                "X-Seraph-LoginReason": reason,
                "WWW-Authenticate": 'Basic realm="protected-area"',
            },
        )

    def forbidden_response(self) -> web.Response:
        # guess: the message Jira gives a non-admin calling user-management resources.
        return self.error_response(
            403, "You do not have the permission required to perform this operation."
        )

    # JSON shapes ------------------------------------------------------------------------------

    def _user_url(self, origin: str, user: User) -> str:
        return f"{origin}{API}/user?username={quote(user.name, safe='')}"

    def _group_url(self, origin: str, name: str) -> str:
        return f"{origin}{API}/group?groupname={quote(name, safe='')}"

    def user_short(self, origin: str, user: User) -> dict[str, Any]:
        """The user as embedded in lists (group members, search results)."""
        avatar = f"{origin}/secure/useravatar?avatarId=10122"
        return {
            "self": self._user_url(origin, user),
            "key": user.key,
            "name": user.name,
            "emailAddress": user.email,
            "avatarUrls": {
                "48x48": avatar,
                "24x24": f"{avatar}&size=small",
                "16x16": f"{avatar}&size=xsmall",
                "32x32": f"{avatar}&size=medium",
            },
            "displayName": user.display_name,
            "active": user.active,
            "timeZone": "Etc/UTC",
        }

    def user_full(self, origin: str, user: User, expand: str = "") -> dict[str, Any]:
        """``GET /user``: the short form plus groups and application roles (items when expanded)."""
        body = self.user_short(origin, user)
        groups = self.store.groups_of(user)
        roles = (
            [{"key": "jira-software", "name": "Jira Software"}]
            if any(g.name.lower() == SOFTWARE_USERS for g in groups)
            else []
        )
        wanted = {e.strip() for e in expand.split(",")}
        body.update(
            {
                "deleted": False,
                "locale": "en_US",
                "groups": {
                    "size": len(groups),
                    "items": [
                        {"name": g.name, "self": self._group_url(origin, g.name)} for g in groups
                    ]
                    if "groups" in wanted
                    else [],
                },
                "applicationRoles": {
                    "size": len(roles),
                    "items": roles if "applicationRoles" in wanted else [],
                },
                "expand": "groups,applicationRoles",
            }
        )
        return body

    def group_json(self, origin: str, group: Group) -> dict[str, Any]:
        return {
            "name": group.name,
            "self": self._group_url(origin, group.name),
            "users": {
                "size": len(group.members),
                "items": [],
                "max-results": 50,
                "start-index": 0,
                "end-index": 0,
            },
            "expand": "users",
        }

    # lookups that answer 404 the Jira way ------------------------------------------------------

    def _target_user(self, request: web.Request) -> User:
        """The user named by ``username`` (or ``key``) in the query, or Jira's 404."""
        name = request.query.get("username")
        key = request.query.get("key")
        if name is None and key is None:
            # guess: Jira's message when neither parameter is given.
            raise self.error(404, "The user named 'null' does not exist")
        user = self.store.user(name) if name is not None else self.store.user_by_key(key or "")
        if user is None:
            shown = name if name is not None else key
            raise self.error(404, f"The user named '{shown}' does not exist")
        return user

    def _target_group(self, name: str | None) -> Group:
        if not name:
            # guess: message for a missing groupname parameter.
            raise self.error(400, "You must specify a group name.")
        group = self.store.group(name)
        if group is None:
            # guess: Jira's text for an unknown group.
            raise self.error(404, "Specified group does not exist.")
        return group

    # routes -----------------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        routes = [
            ("GET", f"{API}/user", self.get_user),
            ("POST", f"{API}/user", self.create_user),
            ("PUT", f"{API}/user", self.update_user),
            ("DELETE", f"{API}/user", self.delete_user),
            ("GET", f"{API}/user/search", self.search_users),
            ("GET", f"{API}/myself", self.myself),
            ("GET", f"{API}/serverInfo", self.server_info),
            ("GET", f"{API}/groups/picker", self.groups_picker),
            ("GET", f"{API}/group", self.get_group),
            ("POST", f"{API}/group", self.create_group),
            ("DELETE", f"{API}/group", self.delete_group),
            ("GET", f"{API}/group/member", self.group_members),
            ("POST", f"{API}/group/user", self.add_member),
            ("DELETE", f"{API}/group/user", self.remove_member),
        ]
        if self.has_user_list:  # absent before 10.3: the router's 404, as on a real server
            routes.append(("GET", f"{API}/user/list", self.list_users))
        self.add_routes(app, routes)

    # users ------------------------------------------------------------------------------------

    async def get_user(self, request: web.Request) -> web.StreamResponse:
        user = self._target_user(request)
        expand = request.query.get("expand", "")
        return atlassian_json(self.user_full(origin_of(request), user, expand))

    async def myself(self, request: web.Request) -> web.StreamResponse:
        user = auth_user(request)
        return atlassian_json(self.user_full(origin_of(request), user, "groups,applicationRoles"))

    async def create_user(self, request: web.Request) -> web.StreamResponse:
        """201 with the new user; 400 with every field problem at once.

        # guess: Jira's user service gathers field errors in one collection before answering.
        """
        body = await self.json_object(request)
        errors: dict[str, str] = {}
        name = _text(body, "name")
        email = _text(body, "emailAddress")
        display = _text(body, "displayName")
        if name is None:
            errors["username"] = "You must specify a username."
        elif _bad_username(name):
            errors["username"] = MSG_USERNAME_CHARS
        if email is None:
            errors["email"] = "You must specify an email address."
        if display is None:
            errors["displayName"] = "You must specify a full name."
        for field, value in (("username", name), ("email", email), ("displayName", display)):
            if value is not None and field not in errors and too_long(value):
                # guess: Crowd's refusal answered as a field error (status 400 like the others)
                errors[field] = MSG_TOO_LONG.format(value=value)
        if errors or name is None or email is None or display is None:
            raise ApiError(atlassian_json({"errorMessages": [], "errors": errors}, 400))
        if self.refusals.read_only_directory:
            raise self.error(400, MSG_READ_ONLY_CREATE)
        if self.store.user(name) is not None:
            raise self.error(400, MSG_USERNAME_TAKEN, field="username")
        password = body.get("password")
        user = self.store.add_user(
            name, email, display, password=password if isinstance(password, str) else None
        )
        self._grant_applications(user, body.get("applicationKeys"))
        return atlassian_json(self.user_full(origin_of(request), user), 201)

    def _grant_applications(self, user: User, keys: Any) -> None:
        """Add the user to the default group of each application asked for.

        # guess: a real Jira also adds new users to the default groups of applications marked
        # "default for new users"; the emulator does so only when ``applicationKeys`` asks, so
        # tests see exactly the memberships the engine wrote.
        """
        if isinstance(keys, list) and "jira-software" in keys:
            group = self.store.group(SOFTWARE_USERS)
            if group is not None:
                self.store.add_member(group, user)

    async def update_user(self, request: web.Request) -> web.StreamResponse:
        user = self._target_user(request)
        body = await self.json_object(request)
        changes = self._validate_update(user, body)
        self._apply_update(user, changes)
        return atlassian_json(self.user_full(origin_of(request), user))

    def _validate_update(self, user: User, body: dict[str, Any]) -> dict[str, Any]:
        """Check an update against Jira's rules; the accepted changes, nothing applied yet."""
        changes: dict[str, Any] = {}
        for field, attr in (("emailAddress", "email"), ("displayName", "display_name")):
            if field in body and body[field] is not None:
                if not isinstance(body[field], str):
                    raise self.error(400, f"Invalid value for {field}", field=field)
                if too_long(body[field]):  # guess: status and field, as on creation
                    raise self.error(400, MSG_TOO_LONG.format(value=body[field]), field=field)
                changes[attr] = body[field]
        if "active" in body and body["active"] is not None:
            active = _as_bool(body["active"])
            if active is None:
                raise self.error(400, "Can not deserialize value of type boolean", field="active")
            changes["active"] = active
        new_name = body.get("name")
        if isinstance(new_name, str) and new_name.strip() and new_name.lower() != user.name.lower():
            if _bad_username(new_name):
                raise self.error(400, MSG_USERNAME_CHARS, field="username")
            if too_long(new_name):  # guess: status and field, as on creation
                raise self.error(400, MSG_TOO_LONG.format(value=new_name), field="username")
            other = self.store.user(new_name)
            if other is not None:
                raise self.error(400, MSG_USERNAME_TAKEN, field="username")
            changes["name"] = new_name
        if changes and self.refusals.read_only(user):
            raise self.error(400, MSG_READ_ONLY_USER.format(user=user.name))
        deactivating = changes.get("active") is False and user.active
        if deactivating and user.name.lower() in self.refusals.project_leads:
            raise self.error(400, MSG_PROJECT_LEAD.format(user=user.name), field="active")
        return changes

    def _apply_update(self, user: User, changes: dict[str, Any]) -> None:
        if "name" in changes:
            old = user.name
            self.store.rename_user(user, changes["name"])
            self.refusals.follow_rename(old, user.name)
        if "email" in changes:
            user.email = changes["email"]
        if "display_name" in changes:
            user.display_name = changes["display_name"]
        if "active" in changes:
            self.store.set_active(user, changes["active"])

    async def delete_user(self, request: web.Request) -> web.StreamResponse:
        user = self._target_user(request)
        if self.refusals.read_only(user):
            raise self.error(400, MSG_READ_ONLY_USER.format(user=user.name))
        self.store.remove_user(user)
        return web.Response(status=204)

    async def search_users(self, request: web.Request) -> web.StreamResponse:
        """A search, not a listing: only the first ``search_cap`` matches exist for paging."""
        query = request.query.get("username", "").strip().lower()
        if not query:
            # guess: Jira's answer when the required username parameter is missing.
            raise self.error(400, "The username query parameter was not provided")
        start = query_int(request, "startAt", 0)
        limit = min(query_int(request, "maxResults", 50, minimum=1), self.search_cap)
        include_active = query_bool(request, "includeActive", True)
        include_inactive = query_bool(request, "includeInactive", False)
        matches = (
            u
            for u in self.store.users.values()
            if (include_active if u.active else include_inactive) and _matches(u, query)
        )
        # guess: results ordered by display name, then username.
        first = heapq.nsmallest(
            self.search_cap, matches, key=lambda u: (u.display_name.lower(), u.name)
        )
        origin = origin_of(request)
        return atlassian_json([self.user_short(origin, u) for u in first[start : start + limit]])

    async def list_users(self, request: web.Request) -> web.StreamResponse:
        """The 10.3 cursor stream: every user once, in id order, inactive ones included.

        # guess: the array is called ``values`` and ``nextCursor`` is the last id returned.
        """
        cursor = query_int(request, "cursor", -1, minimum=-1)
        limit = query_int(request, "maxResults", LIST_PAGE_DEFAULT, minimum=1)
        page = self.store.users_after(cursor, limit + 1)
        is_last = len(page) <= limit
        page = page[:limit]
        origin = origin_of(request)
        body: dict[str, Any] = {
            "isLast": is_last,
            "maxResults": limit,
            "values": [self.user_short(origin, u) for u in page],
        }
        if not is_last:
            next_cursor = page[-1].id
            body["nextCursor"] = str(next_cursor)
            body["nextPage"] = f"{origin}{API}/user/list?" + urlencode(
                {"cursor": next_cursor, "maxResults": limit}
            )
        return atlassian_json(body)

    async def server_info(self, request: web.Request) -> web.StreamResponse:
        major, minor, patch = self.version_numbers
        return atlassian_json(
            {
                "baseUrl": origin_of(request),
                "version": self.version,
                "versionNumbers": [major, minor, patch],
                "deploymentType": "Server",  # guess: what Jira DC reports here
                "buildNumber": major * 100000 + minor * 1000 + patch,
                "buildDate": "2025-01-15T00:00:00.000+0000",
                "serverTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
                "scmInfo": "5b1a0f6f0e8c2a3d4e5f60718293a4b5c6d7e8f9",
                "serverTitle": "Jira",
            }
        )

    # groups -----------------------------------------------------------------------------------

    async def groups_picker(self, request: web.Request) -> web.StreamResponse:
        """A picker: groups whose name contains ``query``, sorted, at most ``maxResults``."""
        query = request.query.get("query", "").lower()
        limit = query_int(request, "maxResults", PICKER_DEFAULT)
        excluded = {e.lower() for e in request.query.getall("exclude", [])}
        matching = sorted(
            (g.name for k, g in self.store.groups.items() if query in k and k not in excluded),
            key=str.lower,
        )
        shown = matching[:limit]
        return atlassian_json(
            {
                "header": f"Showing {len(shown)} of {len(matching)} matching groups",
                "total": len(matching),
                "groups": [{"name": n, "html": _highlight(n, query), "labels": []} for n in shown],
            }
        )

    async def get_group(self, request: web.Request) -> web.StreamResponse:
        group = self._target_group(request.query.get("groupname"))
        return atlassian_json(self.group_json(origin_of(request), group))

    async def create_group(self, request: web.Request) -> web.StreamResponse:
        body = await self.json_object(request)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise self.error(400, "You must specify a valid group name.", field="name")  # guess
        if too_long(name):  # embedded Crowd's group table holds 255, as its user table does
            raise self.error(400, MSG_TOO_LONG.format(value=name), field="name")  # guess: shape
        if self.refusals.read_only_directory:
            raise self.error(400, MSG_READ_ONLY_GROUP)
        if self.store.group(name) is not None:
            raise self.error(400, "A group with that name already exists.")
        group = self.store.add_group(name)
        return atlassian_json(self.group_json(origin_of(request), group), 201)

    async def delete_group(self, request: web.Request) -> web.StreamResponse:
        group = self._target_group(request.query.get("groupname"))
        if self.refusals.read_only_directory:
            raise self.error(400, MSG_READ_ONLY_GROUP)
        self.store.remove_group(group)
        return web.Response(status=200)

    async def group_members(self, request: web.Request) -> web.StreamResponse:
        """One page of members; inactive users only when ``includeInactiveUsers=true``.

        # guess: members come in the order they were added (Jira sorts by name; the engine must
        # not rely on either).
        """
        name = request.query.get("groupname")
        group = self._target_group(name)
        start = query_int(request, "startAt", 0)
        limit = min(query_int(request, "maxResults", MEMBER_PAGE_MAX, minimum=1), MEMBER_PAGE_MAX)
        if query_bool(request, "includeInactiveUsers"):
            page, total = self.store.member_page(group, start, limit)
        else:
            users = [u for u in self.store.member_users(group) if u.active]
            page, total = users[start : start + limit], len(users)
        is_last = start + len(page) >= total
        origin = origin_of(request)
        base = f"{origin}{API}/group/member?"
        params = {
            "groupname": name or "",
            "includeInactiveUsers": request.query.get("includeInactiveUsers", "false"),
        }
        body: dict[str, Any] = {
            "self": base + urlencode({**params, "startAt": start, "maxResults": limit}),
            "maxResults": limit,
            "startAt": start,
            "total": total,
            "isLast": is_last,
            "values": [self.user_short(origin, u) for u in page],
        }
        if not is_last:
            body["nextPage"] = base + urlencode(
                {**params, "startAt": start + limit, "maxResults": limit}
            )
        return atlassian_json(body)

    async def add_member(self, request: web.Request) -> web.StreamResponse:
        group = self._target_group(request.query.get("groupname"))
        body = await self.json_object(request)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise self.error(400, "You must specify a user name.", field="name")  # guess
        user = self.store.user(name)
        if user is None:
            # guess: the text Jira Cloud is known to give; assumed the same on DC.
            raise self.error(404, MSG_NO_SUCH_USER)
        if self.refusals.read_only_directory:
            raise self.error(400, MSG_READ_ONLY_GROUP)
        if not self.store.add_member(group, user):
            raise self.error(400, MSG_ALREADY_MEMBER.format(user=user.name, group=group.name))
        return atlassian_json(self.group_json(origin_of(request), group), 201)

    async def remove_member(self, request: web.Request) -> web.StreamResponse:
        """200 with no body, as Jira answers. # guess: not a member -> 400."""
        group = self._target_group(request.query.get("groupname"))
        user = self._target_user(request)
        if self.refusals.read_only_directory:
            raise self.error(400, MSG_READ_ONLY_GROUP)
        if not self.store.remove_member(group, user):
            raise self.error(400, MSG_NOT_MEMBER.format(user=user.name, group=group.name))
        return web.Response(status=200)


def _text(body: dict[str, Any], name: str) -> str | None:
    """A required text field of a request body, or ``None`` when missing, blank or not text."""
    value = body.get(name)
    return value if isinstance(value, str) and value.strip() else None


def _bad_username(name: str) -> bool:
    """Jira refuses usernames containing '<', '>' or '&', on creation and on rename."""
    return not USERNAME_FORBIDDEN_CHARS.isdisjoint(name)


def refused_username(name: str) -> bool:
    """A username Jira would not create (``--preload-fraction`` skips these)."""
    return _bad_username(name) or name != name.strip()


def _matches(user: User, query: str) -> bool:
    """Jira's user search: a prefix of the username, e-mail, display name or a name word.

    ``.`` matches everyone, as administrators use it on real servers to "list" users.
    # guess: the real matcher's exact tokenisation is not documented.
    """
    if query == ".":
        return True
    if user.name.lower().startswith(query) or user.email.lower().startswith(query):
        return True
    display = user.display_name.lower()
    return display.startswith(query) or any(w.startswith(query) for w in display.split())


def _highlight(name: str, query: str) -> str:
    """The picker's ``html``: the matched part in ``<b>``."""
    at = name.lower().find(query) if query else -1
    if at < 0:
        return escape(name)
    end = at + len(query)
    return f"{escape(name[:at])}<b>{escape(name[at:end])}</b>{escape(name[end:])}"


__all__ = ["JiraEmulator", "JiraUser", "parse_version", "refused_username"]
