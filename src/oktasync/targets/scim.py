"""Atlassian Cloud through its user provisioning API (SCIM 2.0): one directory as a target.

The API addresses users and groups by their SCIM ``id``, the engine by username and group
name: the ids are learnt from the listings (``read_state``) and, for a run that does not list
(incremental, events), looked up once by filter and kept. Messages are built and read with
``scim2-models``, never as hand-written dictionaries. Each user carries its Okta id as
``externalId``. Memberships change through PATCH operations on the group, one member at a time,
never by replacing the member list (another member added meanwhile would be lost).

Atlassian's rules (atlassian-api.md): only e-mails on the organisation's verified domains can
be provisioned (``verified_domains``: others are reported per user and never sent); a group
name the organisation already has, in a group this directory does not own, is refused and
reported with its fix (a ``group_rename`` entry); 409 on a create means "exists", and is ours
only when the directory lists it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from scim2_models import (
    Context as ScimContext,
)
from scim2_models import (
    Email,
    Group,
    GroupMember,
    ListResponse,
    Name,
    PatchOp,
    PatchOperation,
    Path,
    User,
)

from oktasync.errors import Context, TargetReadError
from oktasync.http import Answer, HttpClient, RequestCounters
from oktasync.logs import REDACTOR
from oktasync.models import (
    Capabilities,
    Operation,
    OpKind,
    TargetAccount,
    WriteResult,
    WriteStatus,
    name_key,
)
from oktasync.targets.base import ReadSummary, StateSink, hidden_chars

PAGE = 100  # Atlassian's most per page
SCIM_JSON = "application/scim+json"
NAME_MAX = 255  # guess: the length Atlassian's directory keeps for a name, as Crowd's tables
REPLACE, ADD, REMOVE = (PatchOperation.Op.replace_, PatchOperation.Op.add,
                       PatchOperation.Op.remove)

Handler = Callable[["ScimTarget", Operation], Awaitable[WriteResult]]


def email_domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


class ScimTarget:
    """One Atlassian Cloud directory (see the module docstring)."""

    kind = "atlassian-scim"
    capabilities = Capabilities(can_rename=True, can_update_profile=True,
                                emails_case_exact=False)

    def __init__(self, name: str, client: HttpClient,
                 verified_domains: Sequence[str] = ()) -> None:
        self.name = name
        self._client = client
        self._verified = {d.lower().lstrip("@") for d in verified_domains}
        self._user_ids: dict[str, str] = {}  # username key -> SCIM id
        self._group_ids: dict[str, str] = {}  # group name key -> SCIM id
        self._taken: set[str] = set()  # group name keys the organisation holds elsewhere

    @property
    def counters(self) -> RequestCounters:
        return self._client.counters

    def forbidden_username(self, username: str) -> str | None:
        if not username.strip():
            return "empty"
        hidden = hidden_chars(username)
        if hidden is not None:
            return hidden
        if len(username.encode("utf-16-le")) // 2 > NAME_MAX:
            return f"longer than {NAME_MAX} characters"
        if self._verified and "@" in username and email_domain(username) not in self._verified:
            return (f"its e-mail domain {email_domain(username)} is not one of this "
                    "directory's verified_domains: Atlassian provisions verified domains only")
        return None

    def forbidden_group(self, group: str) -> str | None:
        if not group.strip():
            return "empty"
        return hidden_chars(group)

    # -- reading --------------------------------------------------------------------------

    async def read_state(self, groups: Sequence[str], sink: StateSink) -> ReadSummary:
        """Every user of the directory, then every group and the members of those in scope;
        each listing's ``totalResults`` says how many there are (one that ends early is
        caught)."""
        wanted = {name_key(g) for g in groups}
        async for page in self._pages("/Users", User, "users"):
            accounts = []
            for user in page:
                account = _account(user)
                if user.id:
                    self._user_ids[account.key] = user.id
                accounts.append(account)
            sink.add_accounts(self.name, accounts)
        names = {uid: key for key, uid in self._user_ids.items()}
        async for page in self._pages("/Groups", Group, "groups"):
            for group in page:
                name = group.display_name or ""
                if group.id:
                    self._group_ids[name_key(name)] = group.id
                if name_key(name) in wanted:
                    sink.add_group(self.name, name)
                    members = [names[m.value] for m in group.members or []
                               if m.value in names]
                    sink.add_members(self.name, name, members)
        return ReadSummary(all_accounts=True, strategy="SCIM: users, then groups with members")

    async def _pages(self, path: str, kind: type[User[Any]] | type[Group], what: str) -> Any:
        """The resources of a listing, a page at a time (``startIndex`` from 1)."""
        start, read = 1, 0
        while True:
            answer = await self._client.send(
                "GET", path, params={"startIndex": str(start), "count": str(PAGE)},
                expect=dict, context=Context.LISTING, what=f"{what} listing")
            listing = ListResponse[kind].model_validate(  # type: ignore[valid-type]
                answer.json(), scim_ctx=ScimContext.SEARCH_RESPONSE)
            resources = list(listing.resources or [])
            yield resources
            read += len(resources)
            total = listing.total_results or 0
            if not resources or read >= total:
                if read < total:
                    raise TargetReadError(f"{self.name}: the {what} listing ended early: "
                                          f"{read} read, the directory counts {total}")
                return
            start += len(resources)

    async def lookup(self, username: str) -> TargetAccount | None:
        user = await self._find("/Users", User, f'userName eq "{_quoted(username)}"',
                                f"user {username!r}")
        if user is None:
            return None
        account = _account(user)
        if user.id:
            self._user_ids[account.key] = user.id
        return account

    async def _find(self, path: str, kind: type[User[Any]] | type[Group], filter_: str,
                    what: str) -> Any:
        answer = await self._client.send("GET", path, params={"filter": filter_},
                                         expect=dict, context=Context.LOOKUP, what=what)
        listing = ListResponse[kind].model_validate(  # type: ignore[valid-type]
            answer.json(), scim_ctx=ScimContext.SEARCH_RESPONSE)
        found = list(listing.resources or [])
        return found[0] if found else None

    async def _user_id(self, username: str) -> str | None:
        key = name_key(username)
        if key not in self._user_ids:
            await self.lookup(username)
        return self._user_ids.get(key)

    async def _group_id(self, group: str) -> str | None:
        key = name_key(group)
        if key not in self._group_ids:
            found = await self._find("/Groups", Group, f'displayName eq "{_quoted(group)}"',
                                     f"group {group!r}")
            if found is not None and found.id:
                self._group_ids[key] = found.id
        return self._group_ids.get(key)

    # -- writing --------------------------------------------------------------------------

    async def apply(self, op: Operation) -> WriteResult:
        return await _HANDLERS[op.kind](self, op)

    async def _create_user(self, op: Operation) -> WriteResult:
        user: User[Any] = User(user_name=op.username, external_id=op.okta_id, active=True,
                    display_name=op.display_name, name=Name(formatted=op.display_name),
                    emails=[Email(value=op.email, primary=True, type=Email.Type.work)]
                    if op.email else None)
        answer = await self._write("POST", "/Users", user, ScimContext.RESOURCE_CREATION_REQUEST)
        if answer.status == 201:
            self._remember(answer, self._user_ids, op.username)
        elif answer.status == 409:
            found = await self.lookup(op.username)
            if found is not None:
                return WriteResult(WriteStatus.ALREADY, _detail(answer),
                                   maybe_ours=answer.after_unclear_attempt)
        return _outcome(op, answer)

    async def _create_group(self, op: Operation) -> WriteResult:
        group = Group(display_name=op.group)
        answer = await self._write("POST", "/Groups", group,
                                   ScimContext.RESOURCE_CREATION_REQUEST)
        if answer.status == 201:
            self._remember(answer, self._group_ids, op.group or "")
        elif answer.status == 409:
            self._group_ids.pop(name_key(op.group or ""), None)
            if await self._group_id(op.group or "") is not None:
                return WriteResult(WriteStatus.ALREADY, _detail(answer),
                                   maybe_ours=answer.after_unclear_attempt)
            self._taken.add(name_key(op.group or ""))
            return WriteResult(WriteStatus.CONFLICT, (
                f"the organisation already has a group named {op.group!r} that this directory "
                f"does not own: add group_rename = {{ \"{op.group}\" = \"{op.group} (Okta)\" }} "
                "(or another free name) to the app"))
        return _outcome(op, answer)

    async def _patch_user(self, op: Operation, *operations: PatchOperation[User[Any]]
                          ) -> WriteResult:
        uid = await self._user_id(op.username)
        if uid is None:
            return WriteResult(WriteStatus.FAILED, f"no account {op.username!r} in the directory")
        patch = PatchOp[User[Any]](Operations=list(operations))
        answer = await self._write("PATCH", f"/Users/{uid}", patch,
                                   ScimContext.RESOURCE_PATCH_REQUEST)
        return _outcome(op, answer)

    async def _update_user(self, op: Operation) -> WriteResult:
        changes = []
        if op.display_name is not None:
            changes += [PatchOperation[User[Any]](op=REPLACE, path=Path("displayName"),
                                                  value=op.display_name),
                        PatchOperation[User[Any]](op=REPLACE, path=Path("name.formatted"),
                                                  value=op.display_name)]
        if op.email is not None:
            changes.append(PatchOperation[User[Any]](op=REPLACE, path=Path("emails"), value=[
                Email(value=op.email, primary=True, type=Email.Type.work)]))
        return await self._patch_user(op, *changes)

    async def _rename_user(self, op: Operation) -> WriteResult:
        result = await self._patch_user(op, PatchOperation[User[Any]](
            op=REPLACE, path=Path("userName"), value=op.new_username))
        if result.ok and op.new_username:
            uid = self._user_ids.pop(name_key(op.username), None)
            if uid is not None:
                self._user_ids[name_key(op.new_username)] = uid
        return result

    async def _activate(self, op: Operation) -> WriteResult:
        return await self._patch_user(op, PatchOperation[User[Any]](
            op=REPLACE, path=Path("active"), value=True))

    async def _deactivate(self, op: Operation) -> WriteResult:
        return await self._patch_user(op, PatchOperation[User[Any]](
            op=REPLACE, path=Path("active"), value=False))

    async def _members(self, op: Operation, operation: PatchOperation[Group]) -> WriteResult:
        if name_key(op.group or "") in self._taken:
            return WriteResult(WriteStatus.CONFLICT, f"the group {op.group!r} is not this "
                               "directory's (its create was refused: the name is taken)")
        gid = await self._group_id(op.group or "")
        if gid is None:
            return WriteResult(WriteStatus.FAILED, f"no group {op.group!r} in the directory")
        answer = await self._write("PATCH", f"/Groups/{gid}", PatchOp[Group](
            Operations=[operation]), ScimContext.RESOURCE_PATCH_REQUEST)
        return _outcome(op, answer)

    async def _add_member(self, op: Operation) -> WriteResult:
        uid = await self._user_id(op.username)
        if uid is None:
            return WriteResult(WriteStatus.FAILED, f"no account {op.username!r} in the directory")
        return await self._members(op, PatchOperation[Group](
            op=ADD, path=Path("members"), value=[GroupMember(value=uid, ref=None, type=None)]))

    async def _remove_member(self, op: Operation) -> WriteResult:
        uid = await self._user_id(op.username)
        if uid is None:
            return WriteResult(WriteStatus.ALREADY, "no such account: not a member")
        return await self._members(op, PatchOperation[Group](
            op=REMOVE, path=Path(f'members[value eq "{_quoted(uid)}"]')))

    async def _write(self, method: str, path: str, message: Any,
                     scim_ctx: ScimContext) -> Answer:
        body = message.model_dump(scim_ctx=scim_ctx)
        return await self._client.send(method, path, json=body, context=Context.WRITE)

    @staticmethod
    def _remember(answer: Answer, ids: dict[str, str], name: str) -> None:
        body = answer.json() if answer.body else None
        if isinstance(body, dict) and isinstance(body.get("id"), str):
            ids[name_key(name)] = body["id"]


_HANDLERS: dict[OpKind, Handler] = {
    OpKind.CREATE_GROUP: ScimTarget._create_group,
    OpKind.CREATE_USER: ScimTarget._create_user,
    OpKind.UPDATE_USER: ScimTarget._update_user,
    OpKind.RENAME_USER: ScimTarget._rename_user,
    OpKind.ACTIVATE_USER: ScimTarget._activate,
    OpKind.DEACTIVATE_USER: ScimTarget._deactivate,
    OpKind.ADD_MEMBER: ScimTarget._add_member,
    OpKind.REMOVE_MEMBER: ScimTarget._remove_member,
}


def _account(user: User[Any]) -> TargetAccount:
    emails = user.emails or []
    primary = next((e.value for e in emails if e.primary), None) or (
        emails[0].value if emails else None)
    return TargetAccount(username=user.user_name or "", email=primary,
                         display_name=user.display_name, active=user.active)


def _quoted(value: str) -> str:
    """A value inside a SCIM filter's double quotes (RFC 7644 §3.4.2.2: JSON string rules)."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _detail(answer: Answer) -> str:
    body = answer.json() if answer.body.strip()[:1] == b"{" else None
    if isinstance(body, dict) and body.get("detail"):
        return REDACTOR.redact(str(body["detail"]))[:300]
    return answer.text()[:300]


def _outcome(op: Operation, answer: Answer) -> WriteResult:
    """What the directory's answer means for this operation: the one place its statuses are
    read (after the creates' 409, which their handlers resolve by looking)."""
    if answer.status < 300:
        return WriteResult(WriteStatus.APPLIED)
    text = _detail(answer)
    if op.kind is OpKind.REMOVE_MEMBER and answer.status in (400, 404):
        return WriteResult(WriteStatus.ALREADY, text, maybe_ours=answer.after_unclear_attempt)
    if answer.status in (400, 403, 409):
        return WriteResult(WriteStatus.REFUSED, f"HTTP {answer.status}: {text}")
    return WriteResult(WriteStatus.FAILED, f"HTTP {answer.status}: {text}")
