"""Jira Data Center through REST API v2.

Reading state: the version from ``/serverInfo`` picks the strategy. Jira 10.3+ streams every
account through the ``/user/list`` cursor; older versions have no listing (``/user/search`` is
a search capped at 1,000 or 100 results, not a listing), so accounts are learnt from the member
listings of the groups the sync looks at, and the rest one by one (``lookup``).

Writing: every write is made safe to repeat by reading Jira's refusals: "already exists" and
"already a member" are success, because the answer to an earlier attempt may have been lost.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence
from typing import Any

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

USER = "/rest/api/2/user"
USER_LIST_PAGE = 1000
MEMBERS_PAGE = 50  # Jira's maximum for /group/member (unverified; assume 50)


def _version(info: dict[str, Any]) -> tuple[int, ...]:
    numbers = info.get("versionNumbers")
    if isinstance(numbers, list) and numbers:
        return tuple(int(n) for n in numbers)
    return tuple(int(p) for p in str(info.get("version", "0")).split(".") if p.isdigit())


def account_of(raw: dict[str, Any]) -> TargetAccount:
    return TargetAccount(username=raw.get("name") or "", email=raw.get("emailAddress"),
                         display_name=raw.get("displayName"), active=bool(raw.get("active")))


def _errors_text(answer: Answer) -> str:
    """Jira's error body (``errorMessages`` + ``errors``) as one line."""
    try:
        body = answer.json()
    except ValueError:
        return answer.text()[:300]
    if not isinstance(body, dict):
        return answer.text()[:300]
    messages = list(body.get("errorMessages") or [])
    messages += [f"{k}: {v}" for k, v in (body.get("errors") or {}).items()]
    return REDACTOR.redact("; ".join(messages)) or answer.text()[:300]


def _is_refusal(text: str) -> bool:
    """Refusals Jira makes on purpose; retrying them cannot help (exact texts unverified)."""
    lowered = text.lower()
    return any(s in lowered for s in ("project lead", "component lead", "read-only",
                                      "read only", "licen", "cannot be modified",
                                      "not allowed to", "directory"))


def forbidden_username(username: str) -> str | None:
    """Why this username is not written to Jira: Jira would refuse it, or it could pass
    for another (hidden characters; refused on every target). None when it may be written."""
    # Jira's own check: "The username must not contain '<', '>' or '&'".
    bad = sorted(set(username) & set("<>&"))
    if bad:
        return f"contains {' '.join(bad)}"
    hidden = hidden_chars(username)  # controls, bidi controls, zero-width characters...
    if hidden is not None:
        return hidden
    if username != username.strip():
        return "surrounding spaces"
    if utf16_length(username) > NAME_MAX:
        return f"longer than {NAME_MAX} characters"
    return None


@functools.lru_cache(maxsize=4096)
def forbidden_group(group: str) -> str | None:
    """Why Jira would refuse this group name, or None."""
    return "control characters" if control_chars(group) or not group.strip() else None


class JiraTarget:
    kind = "jira-dc"
    capabilities = Capabilities(can_rename=True, can_update_profile=True)

    def __init__(self, name: str, client: HttpClient) -> None:
        self.name = name
        self._client = client
        self.version: tuple[int, ...] = ()

    @property
    def counters(self) -> RequestCounters:
        return self._client.counters

    def forbidden_username(self, username: str) -> str | None:
        return forbidden_username(username)

    def forbidden_group(self, group: str) -> str | None:
        return forbidden_group(group)

    async def server_version(self) -> tuple[int, ...]:
        answer = await self._client.send("GET", "/rest/api/2/serverInfo", expect=dict,
                                         context=Context.LISTING, what="server info")
        self.version = _version(answer.json())
        return self.version

    async def read_state(self, groups: Sequence[str], sink: StateSink) -> ReadSummary:
        version = await self.server_version()
        listing = version >= (10, 3)
        async def read_group(group: str) -> None:
            await self._read_group(group, sink, not listing)

        async with anyio.create_task_group() as tg:
            if listing:
                tg.start_soon(self._list_all_users, sink)
            tg.start_soon(each_concurrently, dict.fromkeys(groups), read_group)
        strategy = "user/list cursor" if listing else "group members + lookups"
        return ReadSummary(all_accounts=listing, strategy=f"Jira {_dotted(version)}: {strategy}")

    async def _list_all_users(self, sink: StateSink) -> None:
        cursor: str | None = None
        while True:
            params = {"maxResults": str(USER_LIST_PAGE)}
            if cursor is not None:
                params["cursor"] = cursor
            answer = await self._client.send("GET", f"{USER}/list", params=params, expect=dict,
                                             context=Context.LISTING, what="user list")
            body = answer.json()
            sink.add_accounts(self.name, [account_of(u) for u in body.get("values") or []])
            if body.get("isLast", True) or body.get("nextCursor") in (None, ""):
                return
            cursor = str(body["nextCursor"])

    async def _read_group(self, group: str, sink: StateSink, record_accounts: bool) -> None:
        """A group's members, deactivated ones included; the listing's ``total`` says how
        many there are, so a listing that ends early (``isLast`` too soon) is caught."""
        start = 0
        while True:
            answer = await self._client.send("GET", "/rest/api/2/group/member", expect=dict,
                                             params={"groupname": group,
                                                     "includeInactiveUsers": "true",
                                                     "startAt": str(start),
                                                     "maxResults": str(MEMBERS_PAGE)},
                                             context=Context.LISTING, accept=(404,),
                                             what=f"members of {group!r}")
            if answer.status == 404:
                return  # the group does not exist yet
            body = answer.json()
            if start == 0:
                sink.add_group(self.name, group)
            values = body.get("values") or []
            accounts = [account_of(u) for u in values]
            if record_accounts:
                sink.add_accounts(self.name, accounts)
            sink.add_members(self.name, group, [a.username for a in accounts])
            start += len(values)
            if body.get("isLast", True) or not values:
                _check_total(self.name, f"members of {group!r}", start, body.get("total"))
                return

    async def lookup(self, username: str) -> TargetAccount | None:
        answer = await self._client.send("GET", USER, params={"username": username},
                                         expect=dict, context=Context.LOOKUP, accept=(404,),
                                         what=f"user {username!r}")
        if answer.status == 404:
            return None
        return account_of(answer.json())

    async def apply(self, op: Operation) -> WriteResult:
        handler = _HANDLERS[op.kind]
        answer = await handler(self, op)
        # a rename whose answer was lost: the old name is gone, the new one exists
        if (op.kind is OpKind.RENAME_USER and answer.status == 404 and op.new_username
                and await self.lookup(op.new_username) is not None):
            return WriteResult(WriteStatus.ALREADY, "renamed by an earlier attempt",
                               maybe_ours=True)
        return _outcome(op, answer)

    async def _create_group(self, op: Operation) -> Answer:
        return await self._write("POST", "/rest/api/2/group", json={"name": op.group})

    async def _create_user(self, op: Operation) -> Answer:
        return await self._write("POST", USER, json={
            "name": op.username, "emailAddress": op.email, "displayName": op.display_name,
            "password": secrets.token_urlsafe(32), "notification": False})

    async def _update_user(self, op: Operation) -> Answer:
        body: dict[str, Any] = {}
        if op.email is not None:
            body["emailAddress"] = op.email
        if op.display_name is not None:
            body["displayName"] = op.display_name
        return await self._put_user(op.username, body)

    async def _rename_user(self, op: Operation) -> Answer:
        return await self._put_user(op.username, {"name": op.new_username})

    async def _activate(self, op: Operation) -> Answer:
        return await self._put_user(op.username, {"active": True})

    async def _deactivate(self, op: Operation) -> Answer:
        return await self._put_user(op.username, {"active": False})

    async def _put_user(self, username: str, body: dict[str, Any]) -> Answer:
        return await self._write("PUT", USER, params={"username": username}, json=body)

    async def _add_member(self, op: Operation) -> Answer:
        return await self._write("POST", "/rest/api/2/group/user",
                                 params={"groupname": op.group or ""}, json={"name": op.username})

    async def _remove_member(self, op: Operation) -> Answer:
        return await self._write("DELETE", "/rest/api/2/group/user", params={
            "groupname": op.group or "", "username": op.username})

    async def _write(self, method: str, path: str, *, params: dict[str, str] | None = None,
                     json: Any = None) -> Answer:
        return await self._client.send(method, path, params=params, json=json,
                                       context=Context.WRITE)


_HANDLERS = {
    OpKind.CREATE_GROUP: JiraTarget._create_group,
    OpKind.CREATE_USER: JiraTarget._create_user,
    OpKind.UPDATE_USER: JiraTarget._update_user,
    OpKind.RENAME_USER: JiraTarget._rename_user,
    OpKind.ACTIVATE_USER: JiraTarget._activate,
    OpKind.DEACTIVATE_USER: JiraTarget._deactivate,
    OpKind.ADD_MEMBER: JiraTarget._add_member,
    OpKind.REMOVE_MEMBER: JiraTarget._remove_member,
}


def _outcome(op: Operation, answer: Answer) -> WriteResult:
    """What Jira's answer means for this operation: the one place its statuses are read."""
    if answer.status < 300:
        return WriteResult(WriteStatus.APPLIED)
    text = _errors_text(answer)
    lowered = text.lower()
    if answer.status == 400 and "already" in lowered and op.kind in (
            OpKind.CREATE_GROUP, OpKind.CREATE_USER, OpKind.ADD_MEMBER):
        return WriteResult(WriteStatus.ALREADY, text, maybe_ours=answer.after_unclear_attempt)
    if op.kind is OpKind.REMOVE_MEMBER and answer.status in (400, 404) and (
            "not a member" in lowered or "not member" in lowered):
        return WriteResult(WriteStatus.ALREADY, text, maybe_ours=answer.after_unclear_attempt)
    if answer.status in (402, 403) or _is_refusal(text):
        return WriteResult(WriteStatus.REFUSED, f"HTTP {answer.status}: {text}",
                           stop_creating="licen" in lowered)
    return WriteResult(WriteStatus.FAILED, f"HTTP {answer.status}: {text}")


def _check_total(target: str, what: str, read: int, total: object) -> None:
    if isinstance(total, int) and read < total:
        raise TargetReadError(f"{target}: the listing of {what} ended early: {read} read, "
                              f"the server counts {total}")


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(v) for v in version) or "unknown"
