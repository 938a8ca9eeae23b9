"""Confluence Data Center (8.4+) through its REST and admin REST API.

Confluence cannot rename an account or change its full name or e-mail through REST (only the
password), so those differences are reported as drift, never as done. Its membership writes
are idempotent PUT/DELETE; an existing user is 409; a full licence is 402, after which the
engine creates nothing more here but still deactivates (which frees seats).

Reading state: the admin listing of licensed active users (9.x) gives every active account
with its e-mail; the listing that also holds deactivated users has an unverified path, so it
is not used. With the active listing, an Okta user who is not active needs no lookup (an
account missing from the listing is absent or already deactivated: nothing to do either way);
only active Okta users missing from it are looked up (new, or deactivated here). The listing
comes from a search index and may lag: a lagging entry can at worst delay a re-activation to
the next run. Without the listing (older versions answer 404), every account is looked up.

Status: only the active listing says an account is active; a lookup or a member listing says
nothing about it (Confluence's user JSON has no status), so an account found that way has an
unknown status, and the planner sends the enable or disable that makes it right (both are
idempotent 204s).
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import anyio

from oktasync.concurrency import each_concurrently
from oktasync.errors import Context, TargetReadError
from oktasync.http import Answer, HttpClient, RequestCounters
from oktasync.logs import REDACTOR
from oktasync.models import (
    NAME_MAX,
    Capabilities,
    Operation,
    OpKind,
    TargetAccount,
    WriteResult,
    WriteStatus,
    utf16_length,
)
from oktasync.targets.base import (
    ReadSummary,
    StateSink,
    control_chars,
    hidden_chars,
)

MEMBERS_PAGE = 200
ACTIVE_USERS = "/rest/api/admin/users/list/active"
ACTIVE_PAGE = 1000
# Confluence's user form: "Usernames cannot contain the characters '+', ',', '\\', '<', '>',
# ''', or '\"'", nor spaces (Atlassian community answers; not in the REST reference). '/' is
# added because the admin API addresses users in a path segment, where Tomcat rejects %2F.
FORBIDDEN_USER_CHARS = frozenset("+,\\<>'\"/")


def _seg(name: str) -> str:
    """One URL path segment: every reserved character percent-encoded."""
    return quote(name, safe="")


def account_of(raw: dict[str, Any], *, active: bool | None = None) -> TargetAccount:
    """An account from a Confluence user object. Its status is what the caller knows from
    where the object came (the active-user listing: active), never read from the object:
    Confluence's user JSON carries none, and a missing status taken for "active" once left
    returning users deactivated for good."""
    return TargetAccount(username=raw.get("username") or raw.get("name") or "",
                         email=raw.get("email"), display_name=raw.get("displayName"),
                         active=active)


def _message(answer: Answer) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.text()[:300]
    if isinstance(body, dict):
        return REDACTOR.redact(str(body.get("message") or body.get("reason") or body))[:300]
    return answer.text()[:300]


def forbidden_username(username: str) -> str | None:
    """Why this username is not written to Confluence: Confluence would refuse it, or it could pass
    for another (hidden characters; refused on every target). None when it may be written."""
    hidden = hidden_chars(username)  # controls, bidi controls, zero-width characters...
    if hidden is not None:
        return hidden
    bad = sorted(set(username) & FORBIDDEN_USER_CHARS)
    if any(c.isspace() for c in username):
        bad.append("whitespace")
    if bad:
        return f"contains {' '.join(bad)}"
    if utf16_length(username) > NAME_MAX:
        return f"longer than {NAME_MAX} characters"
    return None


@functools.lru_cache(maxsize=4096)
def forbidden_group(group: str) -> str | None:
    """Why Confluence would refuse this group name, or None."""
    if "/" in group:
        return "contains '/', which Confluence cannot address in a URL path"
    return "control characters" if control_chars(group) or not group.strip() else None


class ConfluenceTarget:
    kind = "confluence-dc"
    capabilities = Capabilities(can_rename=False, can_update_profile=False)

    def __init__(self, name: str, client: HttpClient) -> None:
        self.name = name
        self._client = client

    @property
    def counters(self) -> RequestCounters:
        return self._client.counters

    def forbidden_username(self, username: str) -> str | None:
        return forbidden_username(username)

    def forbidden_group(self, group: str) -> str | None:
        return forbidden_group(group)

    async def read_state(self, groups: Sequence[str], sink: StateSink) -> ReadSummary:
        listed: list[bool] = []
        async def read_group(group: str) -> None:
            await self._read_group(group, sink)

        readable = [g for g in dict.fromkeys(groups) if self.forbidden_group(g) is None]
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._list_active, sink, listed)
            tg.start_soon(each_concurrently, readable, read_group)
        if listed and listed[0]:
            return ReadSummary(all_accounts=False, active_listed=True,
                               strategy="active-user listing + group members + lookups")
        return ReadSummary(all_accounts=False, strategy="group members + lookups")

    async def _list_active(self, sink: StateSink, listed: list[bool]) -> None:
        start = 0
        while True:
            answer = await self._client.send(
                "GET", ACTIVE_USERS, expect=dict, context=Context.LISTING,
                accept=(404,) if start == 0 else (), what="the active-user listing",
                params={"start": str(start), "limit": str(ACTIVE_PAGE)})
            if answer.status == 404:
                listed.append(False)  # not on this version: look accounts up one by one
                return
            body = answer.json()
            results = body.get("results") or []
            sink.add_accounts(self.name, [account_of(u, active=True) for u in results])
            start += len(results)
            if not (body.get("_links") or {}).get("next") or not results:
                total = body.get("totalCount")  # the listing's size, to catch an early end
                if isinstance(total, int) and start < total:
                    raise TargetReadError(
                        f"{self.name}: the active-user listing ended early: {start} read, the "
                        f"server counts {total}")
                listed.append(True)
                return

    async def _read_group(self, group: str, sink: StateSink) -> None:
        start = 0
        while True:
            answer = await self._client.send(
                "GET", f"/rest/api/group/{_seg(group)}/member", expect=dict,
                params={"start": str(start), "limit": str(MEMBERS_PAGE)},
                context=Context.LISTING, accept=(404,), what=f"members of {group!r}")
            if answer.status == 404:
                return  # the group does not exist yet
            body = answer.json()
            if start == 0:
                sink.add_group(self.name, group)
            results = body.get("results") or []
            accounts = [account_of(u) for u in results]
            sink.add_members(self.name, group, [a.username for a in accounts])
            if not (body.get("_links") or {}).get("next") or not results:
                return
            start += len(results)

    async def lookup(self, username: str) -> TargetAccount | None:
        # email is admin-only or an expansion (unverified): ask for it; a status is never given
        answer = await self._client.send("GET", "/rest/api/user", expect=dict, params={
            "username": username, "expand": "email"}, context=Context.LOOKUP, accept=(404,),
            what=f"user {username!r}")
        if answer.status == 404:
            return None
        return account_of(answer.json())

    async def apply(self, op: Operation) -> WriteResult:
        answer = await self._send(op)
        return _outcome(op, answer)

    async def _send(self, op: Operation) -> Answer:
        send, user = functools.partial(self._client.send, context=Context.WRITE), _seg(op.username)
        match op.kind:
            case OpKind.CREATE_GROUP:
                return await send("POST", "/rest/api/admin/group", json={"name": op.group})
            case OpKind.CREATE_USER:
                return await send("POST", "/rest/api/admin/user", json={
                    "userName": op.username, "fullName": op.display_name, "email": op.email,
                    "password": secrets.token_urlsafe(32)})
            case OpKind.ACTIVATE_USER:
                return await send("PUT", f"/rest/api/admin/user/{user}/enable")
            case OpKind.DEACTIVATE_USER:
                return await send("PUT", f"/rest/api/admin/user/{user}/disable")
            case OpKind.ADD_MEMBER:
                return await send("PUT", f"/rest/api/user/{user}/group/{_seg(op.group or '')}")
            case OpKind.REMOVE_MEMBER:
                return await send("DELETE",
                                  f"/rest/api/user/{user}/group/{_seg(op.group or '')}")
        raise ValueError(f"Confluence cannot {op.kind.value}")  # planner never asks


def _outcome(op: Operation, answer: Answer) -> WriteResult:
    """What Confluence's answer means for this operation."""
    if answer.status < 300:
        return WriteResult(WriteStatus.APPLIED)
    text = _message(answer)
    if answer.status == 409 and op.kind in (OpKind.CREATE_USER, OpKind.CREATE_GROUP):
        return WriteResult(WriteStatus.ALREADY, text, maybe_ours=answer.after_unclear_attempt)
    if answer.status == 402:
        return WriteResult(WriteStatus.REFUSED, f"HTTP 402: no licence seat left: {text}",
                           stop_creating=True)
    if answer.status == 403:
        return WriteResult(WriteStatus.REFUSED, f"HTTP 403: {text}")
    return WriteResult(WriteStatus.FAILED, f"HTTP {answer.status}: {text}")
