"""A Confluence Data Center emulator (8.4+/9.x): the REST user and group endpoints.

Confluence differs from Jira in ways the engine must handle, and this emulator keeps them:
idempotent membership calls (204 either way), 409 for an existing user, 402 when the licence has no
seat left, names in URL paths (so a group name with ``/`` cannot be addressed: Tomcat rejects
``%2F``), an asynchronous user delete, an active-user listing that comes from a search index and
lags behind writes, and no call at all to change a user's full name or e-mail.
Behaviour no primary source confirmed is marked ``# guess:``.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import deque
from collections.abc import Sized
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

from aiohttp import web

from oktasync_emulators.atlassian_base import (
    MSG_TOO_LONG,
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
from oktasync_emulators.common import FaultConfig, json_response, origin_of, read_json

API = "/rest/api"
PAGE_DEFAULT = 200  # guess: default page size of the user and group listings
PAGE_MAX = 1000  # guess
MSG_READ_ONLY = "Cannot modify user '{user}': the user directory is read-only."  # guess
MSG_READ_ONLY_GROUPS = "Cannot modify groups: the user directory is read-only."  # guess
MSG_READ_ONLY_CREATE = "Cannot create users: the user directory is read-only."  # guess
# Confluence's user form refuses these in a username ("Usernames cannot contain the characters
# ..."), and whitespace too.
USERNAME_FORBIDDEN_CHARS = frozenset("+,\\<>'\"")
_WHITESPACE = re.compile(r"\s")
# guess: the REST answer's wording; the status (400) and the error body's shape are Confluence's.
MSG_USERNAME_CHARS = (
    "Usernames cannot contain the characters '+', ',', '\\', '<', '>', ''', '\"' or whitespace."
)


KEY_PREFIX = "8a7f808a"


def confluence_key(uid: int) -> str:
    return f"{KEY_PREFIX}{uid:024x}"  # 32 hex digits, like Confluence's user keys


class ConfluenceUser(User):
    """A Confluence user: keys are 32 hex digits."""

    __slots__ = ()

    @property
    def key(self) -> str:
        return confluence_key(self.id)

    @classmethod
    def id_of_key(cls, key: str) -> int | None:
        return number_after(key.lower(), KEY_PREFIX, base=16) if len(key) == 32 else None


@dataclass(frozen=True, slots=True)
class IndexedUser:
    """A user as the search index last saw it (strings shared with the user, key derived)."""

    id: int
    name: str
    email: str
    display_name: str
    active: bool

    @property
    def key(self) -> str:
        return confluence_key(self.id)

    @classmethod
    def of(cls, user: User) -> IndexedUser:
        return cls(user.id, user.name, user.email, user.display_name, user.active)


class LaggedIndex:
    """The search index behind the admin user listings: it shows each change ``lag_s`` late.

    Each change is queued with a snapshot of the user taken when it happened and applied to the
    visible view once it is old enough, so a listing shows the directory as it was ``lag_s``
    seconds ago. With no lag the queue is skipped.
    """

    def __init__(self, lag_s: float, clock: Clock) -> None:
        self.lag_s = lag_s
        self._clock = clock
        self._view: dict[int, IndexedUser] = {}  # insertion order is id order
        self._pending: deque[tuple[float, int, IndexedUser | None]] = deque()
        self._cache: dict[bool, list[IndexedUser]] = {}  # active_only -> list, until a change

    def record(self, user: User, *, removed: bool = False, immediately: bool = False) -> None:
        snapshot = None if removed else IndexedUser.of(user)
        if immediately or self.lag_s <= 0:
            self._apply(user.id, snapshot)
        else:
            self._pending.append((self._clock(), user.id, snapshot))

    def _apply(self, uid: int, snapshot: IndexedUser | None) -> None:
        self._cache.clear()
        if snapshot is None:
            self._view.pop(uid, None)
        else:
            self._view[uid] = snapshot

    def view(self, *, active_only: bool = False) -> list[IndexedUser]:
        """Everything indexed by now, in indexing order; cached so paging a large listing is
        not quadratic. Callers must not modify the list."""
        due = self._clock() - self.lag_s
        pending = self._pending
        while pending and pending[0][0] <= due:
            _, uid, snapshot = pending.popleft()
            self._apply(uid, snapshot)
        cached = self._cache.get(active_only)
        if cached is None:
            values = self._view.values()
            cached = [u for u in values if u.active] if active_only else list(values)
            self._cache[active_only] = cached
        return cached


class ConfluenceEmulator(AtlassianEmulator):
    """Confluence DC REST users and groups, with its licence, index lag and refusals."""

    product: ClassVar[str] = "confluence"
    admin_group: ClassVar[str] = "confluence-administrators"
    user_group: ClassVar[str] = "confluence-users"
    lowercase_names: ClassVar[bool] = False  # Confluence keeps the case it was given
    user_type: ClassVar[type[User]] = ConfluenceUser

    def __init__(
        self,
        *,
        username: str,
        password: str,
        token: str | None = None,
        faults: FaultConfig | None = None,
        rate: AtlassianRate | None = None,
        seats: int | None = None,
        index_lag_s: float = 0.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.seats = seats
        self.index = LaggedIndex(index_lag_s, clock)
        self.long_tasks: dict[str, dict[str, Any]] = {}
        super().__init__(
            username=username,
            password=password,
            token=token,
            faults=faults,
            rate=rate,
            clock=clock,
        )
        for user in self.store.users.values():
            self.index.record(user, immediately=True)


    @property
    def seats_left(self) -> int | None:
        """Licence seats still free (active users count), ``None`` when unlimited."""
        if self.seats is None:
            return None
        return max(0, self.seats - self.store.active_count)

    def set_seats(self, seats: int | None) -> None:
        self.seats = seats

    def preload(self, *args: Any, **kwargs: Any) -> list[User]:
        """As the base, and the index knows preloaded users at once (they existed long ago)."""
        created = super().preload(*args, **kwargs)
        for user in created:
            self.index.record(user, immediately=True)
        return created

    def state(self) -> dict[str, Any]:
        out = super().state()
        out["seats"] = self.seats
        out["active_users"] = self.store.active_count
        return out

    # error shapes ----------------------------------------------------------------------------

    def error_response(
        self, status: int, message: str, *, field: str | None = None
    ) -> web.Response:
        """Confluence's ``{statusCode, data, message, reason}`` error body."""
        errors = [{"message": {"key": field, "translation": message, "args": []}}] if field else []
        return atlassian_json(
            {
                "statusCode": status,
                "data": {
                    "authorized": status not in (401, 403),
                    "valid": status not in (400, 409),
                    "errors": errors,
                    "successful": False,
                },
                "message": message,
                "reason": HTTPStatus(status).phrase,
            },
            status,
        )

    def unauthorized_response(self, reason: str) -> web.Response:
        # guess: Confluence's body for missing or wrong credentials on a REST resource.
        response = self.error_response(401, "This request requires authentication")
        response.headers["X-Seraph-LoginReason"] = reason
        response.headers["WWW-Authenticate"] = 'Basic realm="Confluence"'
        return response

    def forbidden_response(self) -> web.Response:
        return self.error_response(403, "Only system and site administrators can manage users")

    def _pre_gate(self, request: web.Request) -> web.Response | None:
        """Tomcat rejects an encoded ``/`` in a path before Confluence sees it.

        # guess: Tomcat's default (encodedSolidusHandling=reject) answers 400 with an HTML page.
        """
        if "%2f" in request.raw_path.split("?", 1)[0].lower():
            return web.Response(
                status=400,
                text="<!doctype html><html><body><h1>HTTP Status 400 – Bad Request"
                "</h1></body></html>",
                content_type="text/html",
            )
        return None

    # JSON shapes ------------------------------------------------------------------------------

    def user_json(
        self,
        origin: str,
        user: User | IndexedUser,
        *,
        email: bool,
        status: bool = False,
    ) -> dict[str, Any]:
        """The user object, as Confluence's REST reference documents it: no status field.

        Neither ``GET /rest/api/user`` nor the group member listing says whether an account is
        deactivated (the reference's user JSON has none; CONFCLOUD-69909 shows the same gap in
        Cloud), so they never carry one here, whatever ``expand`` asks: an emulator that told
        more than the server would hide a client that trusts a status it never gets. Only the
        guessed all-users listing (``status=True``) shows one. # guess: ``email`` only for
        administrators.
        """
        body: dict[str, Any] = {
            "type": "known",
            "username": user.name,
            "userKey": user.key,
            "profilePicture": {
                "path": "/images/icons/profilepics/default.svg",
                "width": 48,
                "height": 48,
                "isDefault": True,
            },
            "displayName": user.display_name,
            "_links": {
                "self": f"{origin}{API}/user?key={user.key}",
                "base": origin,
                "context": "",
            },
            "_expandable": {"operations": "", "details": ""},
        }
        if email:
            body["email"] = user.email
        if status:
            body["status"] = "Active" if user.active else "Deactivated"  # guess: wording
        return body

    def group_json(self, origin: str, group: Group) -> dict[str, Any]:
        return {
            "type": "group",
            "name": group.name,
            "_links": {"self": f"{origin}{API}/group/{quote(group.name, safe='')}"},
        }

    def page(
        self,
        request: web.Request,
        items: Sized,
        start: int,
        limit: int,
        results: list[Any],
        *,
        total: int | None = None,
    ) -> web.Response:
        """Confluence's paged envelope; ``_links.next`` only when more may follow."""
        origin = origin_of(request)
        links: dict[str, str] = {"base": origin, "context": "", "self": origin + request.path_qs}
        if start + limit < len(items):
            params = {k: v for k, v in request.query.items() if k not in ("start", "limit")}
            params.update({"start": str(start + limit), "limit": str(limit)})
            links["next"] = f"{quote(request.path)}?{urlencode(params)}"
        return atlassian_json(
            {
                "results": results,
                "start": start,
                "limit": limit,
                "size": len(results),
                **({} if total is None else {"totalCount": total}),
                "_links": links,
            }
        )

    def _paging(self, request: web.Request) -> tuple[int, int]:
        start = query_int(request, "start", 0)
        limit = min(query_int(request, "limit", PAGE_DEFAULT, minimum=1), PAGE_MAX)
        return start, limit

    # lookups ----------------------------------------------------------------------------------

    def _path_user(self, request: web.Request) -> User:
        name = request.match_info["username"]
        user = self.store.user(name)
        if user is None:
            raise self.error(404, f"No user found with username: {name}")
        return user

    def _path_group(self, request: web.Request) -> Group:
        name = request.match_info["groupName"]
        group = self.store.group(name)
        if group is None:
            raise self.error(404, f"No group found with name: {name}")
        return group

    def _refuse_read_only(self, user: User) -> None:
        if self.refusals.read_only(user):
            raise self.error(403, MSG_READ_ONLY.format(user=user.name))

    # routes -----------------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        admin_user = f"{API}/admin/user/{{username}}"
        self.add_routes(
            app,
            [
                ("GET", f"{API}/user", self.get_user),
                ("GET", f"{API}/user/current", self.current_user),
                ("GET", f"{API}/user/memberof", self.member_of),
                ("POST", f"{API}/admin/user", self.create_user),
                ("DELETE", admin_user, self.delete_user),
                ("PUT", f"{admin_user}/disable", self.disable_user),
                ("PUT", f"{admin_user}/enable", self.enable_user),
                ("POST", f"{admin_user}/password", self.change_password),
                ("GET", f"{API}/admin/users/list/active", self.list_active),
                ("GET", f"{API}/admin/users/list", self.list_users),
                ("GET", f"{API}/longtask/{{taskId}}", self.long_task),
                ("POST", f"{API}/admin/group", self.create_group),
                ("GET", f"{API}/group", self.list_groups),
                ("GET", f"{API}/group/{{groupName}}", self.get_group),
                ("GET", f"{API}/group/{{groupName}}/member", self.group_members),
                ("PUT", f"{API}/user/{{username}}/group/{{groupName}}", self.add_member),
                ("DELETE", f"{API}/user/{{username}}/group/{{groupName}}", self.remove_member),
            ],
        )

    def _control_routes(self, app: web.Application) -> None:
        super()._control_routes(app)
        app.router.add_post("/_emulator/seats", self._seats_handler)

    async def _seats_handler(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_json(request)
            seats = body["seats"]
        except (ValueError, KeyError, TypeError) as exc:
            raise web.HTTPBadRequest(text='expected {"seats": n or null}') from exc
        self.set_seats(None if seats is None else int(seats))
        return json_response({"seats": self.seats, "seats_left": self.seats_left})

    # users ------------------------------------------------------------------------------------

    def _is_admin_request(self, request: web.Request) -> bool:
        return self.is_admin(auth_user(request))

    async def get_user(self, request: web.Request) -> web.StreamResponse:
        name, key = request.query.get("username"), request.query.get("key")
        user = self.store.user(name) if name is not None else self.store.user_by_key(key or "")
        if user is None:
            shown = name if name is not None else key
            raise self.error(404, f"No user found with username: {shown}")
        return atlassian_json(
            self.user_json(
                origin_of(request),
                user,
                email=self._is_admin_request(request),
            )
        )

    async def current_user(self, request: web.Request) -> web.StreamResponse:
        return atlassian_json(self.user_json(origin_of(request), auth_user(request), email=True))

    async def member_of(self, request: web.Request) -> web.StreamResponse:
        name = request.query.get("username", "")
        user = self.store.user(name)
        if user is None:
            raise self.error(404, f"No user found with username: {name}")
        groups = self.store.groups_of(user)
        start, limit = self._paging(request)
        origin = origin_of(request)
        shown = [self.group_json(origin, g) for g in groups[start : start + limit]]
        return self.page(request, groups, start, limit, shown)

    def _creation_fields(self, body: dict[str, Any]) -> tuple[str, str, str, str | None]:
        values = []
        for name in ("userName", "fullName", "email"):
            value = body.get(name)
            if not isinstance(value, str) or not value.strip():
                raise self.error(400, f"{name} is required", field=name)  # guess: wording
            values.append(value)
        if _bad_username(values[0]):
            # guess: 400 in Confluence's error shape, the problem under the userName field.
            raise self.error(400, MSG_USERNAME_CHARS, field="userName")
        for name, value in zip(("userName", "fullName", "email"), values, strict=True):
            if too_long(value):  # guess: Crowd's refusal answered as a 400 on the field
                raise self.error(400, MSG_TOO_LONG.format(value=value), field=name)
        password = body.get("password")
        if not isinstance(password, str) and body.get("notifyViaEmail") is not True:
            # guess: Confluence requires one of the two.
            raise self.error(400, "Either password or notifyViaEmail must be set", field="password")
        return values[0], values[1], values[2], password if isinstance(password, str) else None

    async def create_user(self, request: web.Request) -> web.StreamResponse:
        """201 with the new user. # guess: the body is the full user object (with userKey)."""
        body = await self.json_object(request)
        name, full_name, email, password = self._creation_fields(body)
        if self.refusals.read_only_directory:
            raise self.error(403, MSG_READ_ONLY_CREATE)
        if self.store.user(name) is not None:
            raise self.error(409, f"A user with username '{name}' already exists")  # guess: text
        if self.seats_left == 0:
            raise self.error(402, "No licence seat left: cannot create more users")  # guess: text
        user = self.store.add_user(name, email, full_name, password=password)
        self.index.record(user)
        return atlassian_json(self.user_json(origin_of(request), user, email=True), 201)

    async def disable_user(self, request: web.Request) -> web.StreamResponse:
        user = self._path_user(request)
        self._refuse_read_only(user)
        if self.store.set_active(user, False):
            self.index.record(user)
        return web.Response(status=204)

    async def enable_user(self, request: web.Request) -> web.StreamResponse:
        """204; re-enabling needs a seat. # guess: 402 like a create when the licence is full."""
        user = self._path_user(request)
        self._refuse_read_only(user)
        if not user.active and self.seats_left == 0:
            raise self.error(402, "No licence seat left: cannot enable more users")
        if self.store.set_active(user, True):
            self.index.record(user)
        return web.Response(status=204)

    async def delete_user(self, request: web.Request) -> web.StreamResponse:
        """Asynchronous on the server: 202 and a long task.

        # guess: the user is gone at once here, and the task reports itself finished.
        """
        user = self._path_user(request)
        self._refuse_read_only(user)
        self.store.remove_user(user)
        self.index.record(user, removed=True)
        task_id = str(uuid.uuid4())
        self.long_tasks[task_id] = {
            "id": task_id,
            "name": {"key": "com.atlassian.confluence.user.delete", "args": []},
            "elapsedTime": 1,
            "percentageComplete": 100,
            "successful": True,
            "finished": True,
            "messages": [],
        }
        links = {"status": f"{API}/longtask/{task_id}"}
        return atlassian_json({"id": task_id, "links": links}, 202)

    async def long_task(self, request: web.Request) -> web.StreamResponse:
        task = self.long_tasks.get(request.match_info["taskId"])
        if task is None:
            raise self.error(404, "No long running task found")
        return atlassian_json(task)

    async def change_password(self, request: web.Request) -> web.StreamResponse:
        user = self._path_user(request)
        body = await self.json_object(request)
        password = body.get("password")
        if not isinstance(password, str) or not password:
            raise self.error(400, "password is required", field="password")  # guess: wording
        self._refuse_read_only(user)
        user.password = password
        return web.Response(status=204)

    async def list_active(self, request: web.Request) -> web.StreamResponse:
        """Licensed, active users, from the (lagging) search index."""
        return self._user_listing(request, self.index.view(active_only=True), status=False)

    async def list_users(self, request: web.Request) -> web.StreamResponse:
        """The 8.4 listing that can include deactivated users (CONFSERVER-87291).

        # guess: path and parameter name unverified; served from the same lagging index.
        """
        active_only = not query_bool(request, "includeDeactivated")
        return self._user_listing(request, self.index.view(active_only=active_only), status=True)

    def _user_listing(
        self,
        request: web.Request,
        users: list[IndexedUser],
        *,
        status: bool,
    ) -> web.Response:
        start, limit = self._paging(request)
        origin = origin_of(request)
        shown = [
            self.user_json(origin, u, email=True, status=status)
            for u in users[start : start + limit]
        ]
        # the admin listings carry ``totalCount`` (the 9.x/10.x reference's example answer of
        # ``/admin/users/list/active``): how many entries the whole listing holds
        return self.page(request, users, start, limit, shown, total=len(users))

    # groups -----------------------------------------------------------------------------------

    async def create_group(self, request: web.Request) -> web.StreamResponse:
        body = await self.json_object(request)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise self.error(400, "name is required", field="name")  # guess: wording
        if too_long(name):  # embedded Crowd's group table holds 255, as its user table does
            raise self.error(400, MSG_TOO_LONG.format(value=name), field="name")  # guess: shape
        if self.refusals.read_only_directory:
            raise self.error(403, MSG_READ_ONLY_GROUPS)
        if self.store.group(name) is not None:
            # guess: 409 (the reference notes it may be 400)
            raise self.error(409, f"A group with name '{name}' already exists")
        group = self.store.add_group(name)
        return atlassian_json(self.group_json(origin_of(request), group), 201)

    async def list_groups(self, request: web.Request) -> web.StreamResponse:
        """All groups, in creation order. # guess: order and page sizes."""
        groups = list(self.store.groups.values())
        start, limit = self._paging(request)
        origin = origin_of(request)
        shown = [self.group_json(origin, g) for g in groups[start : start + limit]]
        return self.page(request, groups, start, limit, shown)

    async def get_group(self, request: web.Request) -> web.StreamResponse:
        return atlassian_json(self.group_json(origin_of(request), self._path_group(request)))

    async def group_members(self, request: web.Request) -> web.StreamResponse:
        """Members, deactivated ones included. # guess: Confluence does not filter them here."""
        group = self._path_group(request)
        start, limit = self._paging(request)
        page, total = self.store.member_page(group, start, limit)
        origin = origin_of(request)
        admin = self._is_admin_request(request)
        shown = [self.user_json(origin, u, email=admin) for u in page]
        return self.page(request, range(total), start, limit, shown)

    async def add_member(self, request: web.Request) -> web.StreamResponse:
        """204 whether or not the user already was a member (idempotent)."""
        user, group = self._path_user(request), self._path_group(request)
        self._refuse_membership_change()
        self.store.add_member(group, user)
        return web.Response(status=204)

    async def remove_member(self, request: web.Request) -> web.StreamResponse:
        user, group = self._path_user(request), self._path_group(request)
        self._refuse_membership_change()
        self.store.remove_member(group, user)
        return web.Response(status=204)

    def _refuse_membership_change(self) -> None:
        """# guess: users of a read-only directory may still join local groups; only an instance
        whose whole directory is read-only refuses membership changes."""
        if self.refusals.read_only_directory:
            raise self.error(403, MSG_READ_ONLY_GROUPS)


def _bad_username(name: str) -> bool:
    """Confluence refuses usernames with '+', ',', '\\', '<', '>', quotes or whitespace."""
    return not USERNAME_FORBIDDEN_CHARS.isdisjoint(name) or _WHITESPACE.search(name) is not None


def refused_username(name: str) -> bool:
    """A username that cannot be a working Confluence account: refused at creation, or with a
    ``/`` that no user path can address (``--preload-fraction`` skips these)."""
    return _bad_username(name) or "/" in name


def forbidden_group(name: str) -> str | None:
    """Why a group name cannot be managed through the REST paths (``/``: Tomcat refuses %2F)."""
    return "contains '/'" if "/" in name else None


__all__ = [
    "ConfluenceEmulator",
    "ConfluenceUser",
    "IndexedUser",
    "LaggedIndex",
    "forbidden_group",
    "refused_username",
]
