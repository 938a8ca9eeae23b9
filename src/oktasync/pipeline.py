"""A full sync of one app: read everything, then stream the difference into each target.

Data flow (one anyio task group owns every task)::

    Okta groups ──► in-scope groups ─┬─► Okta members (okta_concurrency workers) ─┐
    Okta users (pages) ──────────────┼──────────────────────────────────────────► run index
    each target: read state ─────────┴─► group creates (groups phase)  ──────────┘ (SQLite)
                                                                                    │
    per target: planner feed (username order) ──► bounded stream ──► N writers ◄────┘
                 (collisions, renames, lookups)      (queue_size)     (plan_user, grants)
    removal gate (every listing done, guards pass) ──► held removals ──► N writers

Grants (creates, updates, re-activations, membership adds) stream once every listing has
completed — collisions can only be known then; removals wait for the gate. The same worker
code serves one user or all of them.

Resumability: every listing page is stored with its cursor in one transaction; every landed
write is written through to the run index; the users phase keeps a low-water mark (users are
fed in username order, finish out of order, and the mark passes only users that are done), and
``checkpoint()`` stores the mark after flushing the ownership claims below it. A resumed run
continues each listing from its cursor and the users phase from its mark.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from oktasync.config import AppConfig, Config
from oktasync.errors import (
    CredentialsError,
    HttpFailure,
    ListingError,
    SyncError,
    TargetReadError,
    UsageError,
)
from oktasync.models import (
    Finding,
    FindingKind,
    OktaGroup,
    OktaUser,
    Operation,
    OpKind,
    TargetAccount,
    UserPlan,
    name_key,
)
from oktasync.okta_source import OktaSource
from oktasync.planner import (
    Claim,
    Current,
    Desired,
    TargetRules,
    plan_collision,
    plan_groups,
    plan_unmapped,
    plan_user,
)
from oktasync.report import TargetTally
from oktasync.runstore import RunStore
from oktasync.state import Ownership
from oktasync.targets.base import Target, WriteResult, WriteStatus, each_concurrently
from oktasync.usernames import UsernameRule

log = structlog.get_logger("oktasync.pipeline")
# A checkpoint after this many landed writes or this long, whichever comes first: a resume
# repeats at most these writes plus the ones in flight, and one commit covers many writes.
CHECKPOINT_EVERY_WRITES = 64
CHECKPOINT_EVERY_S = 0.25
# The cursor of an Okta member listing that fell short of the group's count: read it again
# from its start (an empty URL: never a real cursor).
START_OVER = ""


@dataclass
class UserWork:
    """One Okta user for one target, with what the feed already knows of its account."""

    seq: int  # position in the feed, for the low-water mark
    desired: Desired
    at_name: Current | None
    known: bool  # False: the account at the username must be looked up first
    previous_key: str | None  # the username this app synced the Okta user as, if different


class Watermark:
    """The low-water mark over work issued in order and finished out of order."""

    def __init__(self) -> None:
        self._issued = 0
        self._done: set[int] = set()
        self._names: dict[int, str] = {}
        self._mark = -1
        self.mark_name: str | None = None
        self.finished = 0

    def issue(self, name: str) -> int:
        seq = self._issued
        self._issued += 1
        self._names[seq] = name
        return seq

    def finish(self, seq: int) -> None:
        self._done.add(seq)
        self.finished += 1
        while self._mark + 1 in self._done:
            self._mark += 1
            self._done.discard(self._mark)
            self.mark_name = self._names.pop(self._mark)


class CreateIntents:
    """Creates are written down, durably, before they are sent.

    A create whose answer never came (the process was killed, the answer lost) is found by its
    retry as "already exists"; only the written-down intent then tells our own account from
    somebody else's that a listing missed, which must never be taken over. Workers that send
    creates at the same moment share one commit: the first one waits a scheduler tick for the
    others to join its batch, so a commit costs tens of microseconds per batch, not per user.
    """

    def __init__(self, store: RunStore, resumed: bool) -> None:
        self._store = store
        self._resumed = resumed  # only a resumed run has intents of an earlier segment
        self._pending: list[tuple[str, str]] = []
        self._batch: anyio.Event | None = None

    async def record(self, target: str, key: str) -> bool:
        """Write the intent down before the create is sent; True when an earlier segment of
        this run had already sent it (so "already exists" may be that create's doing)."""
        earlier = self._resumed and self._store.has_intent(target, key)
        self._pending.append((target, key))
        if self._batch is not None:
            await self._batch.wait()
            return earlier
        self._batch = batch = anyio.Event()
        try:
            await anyio.lowlevel.checkpoint()  # the other workers of this tick join the batch
        finally:
            rows, self._pending, self._batch = self._pending, [], None
            try:
                self._store.add_intents(rows)
            finally:
                batch.set()
        return earlier


@dataclass
class TargetRun:
    """Per-target state of one app's run."""

    target: Target
    rules: TargetRules
    tally: TargetTally
    concurrency: int
    rule: int  # which of the app's username rules names this target's accounts
    all_accounts: bool = True
    active_listed: bool = False
    stop_creating: bool = False
    claims: list[tuple[str, str | None]] = field(default_factory=list)
    guard_tripped: str | None = None
    watermark: Watermark = field(default_factory=Watermark)

    @property
    def name(self) -> str:
        return self.target.name


@dataclass
class AppOutcome:
    guard: str | None = None  # why a safety guard stopped removals
    notes: list[str] = field(default_factory=list)


def cursor_name(*parts: str) -> str:
    return ":".join(parts)


class AppSync:
    """One app's full sync against its targets, through one run index (its checkpoint)."""

    def __init__(
        self, app: AppConfig, config: Config, okta: OktaSource, targets: dict[str, Target],
        store: RunStore, ownership: Ownership, tallies: dict[str, TargetTally], *,
        force: bool = False, dry_run: bool = False, resumed: bool = False,
    ) -> None:
        self.app, self.config, self.okta, self.store = app, config, okta, store
        self.ownership, self.force, self.dry_run = ownership, force, dry_run
        self.resumed = resumed
        self.intents = CreateIntents(store, resumed)
        target_rules = {name: app.rule_for(config.targets[name]) for name in targets}
        self.username_rules = list(dict.fromkeys(target_rules.values()))
        self.runs = {name: TargetRun(t, self._rules(name, t), tallies[name],
                                     config.targets[name].concurrency,
                                     self.username_rules.index(target_rules[name]))
                     for name, t in targets.items()}
        self.outcome = AppOutcome()
        self.okta_groups: list[OktaGroup] = []
        self.scoped_groups: list[OktaGroup] = []
        self.scope: dict[str, str] = {}  # group key -> target name, for in-scope groups
        self._last_checkpoint = time.monotonic()
        self._since_checkpoint = 0
        self.fatal: SyncError | None = None

    def _rules(self, name: str, target: Target) -> TargetRules:
        app, tc = self.app, self.config.targets[name]
        return TargetRules(
            app=app.name, target=name, import_users=app.import_users,
            update_users=app.update_users, sync_user_status=app.sync_user_status,
            deactivate_missing=app.deactivate_missing, remove_memberships=app.remove_memberships,
            adopt_existing=tc.adopt_existing or app.adopt_existing,
            protected=frozenset(name_key(u) for u in tc.protected_users),
            default_groups=tuple(tc.default_groups),
            can_rename=target.capabilities.can_rename,
            can_update_profile=target.capabilities.can_update_profile,
            forbidden_username=target.forbidden_username, forbidden_group=target.forbidden_group)

    # -- the run ----------------------------------------------------------------------------
    async def run(self) -> AppOutcome:
        if self.resumed:
            self._forget_redone()
        self._phase("reading")
        await self._read_okta_groups()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._guarded, self._read_okta_users)
            tg.start_soon(self._guarded, self._read_okta_members)
            for run in self.runs.values():
                tg.start_soon(self._guarded, self._read_target_then_groups, run)
        self._raise_fatal()
        log.info("listings complete", app=self.app.name, okta_users=self.store.okta_user_count())
        self._phase("users")
        async with anyio.create_task_group() as tg:
            for run in self.runs.values():
                tg.start_soon(self._guarded, self._users_phase, run)
        self._raise_fatal()
        for run in self.runs.values():
            await self._plan_unmapped(run)
        await self._removal_gate()
        if self.outcome.guard is None and not self.dry_run:
            self.ownership.record_listing_sizes(self.app.name, self._listing_sizes())
        self._phase("done")
        return self.outcome

    async def _guarded(self, task: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run a task of a phase; an error that stops the run is kept, not raised, so the
        other tasks finish the requests they have in flight (and their writes are counted)
        instead of being cancelled mid-request. Every loop stops taking new work once
        ``self.fatal`` is set; the phase then raises it."""
        try:
            await task(*args)
        except (CredentialsError, ListingError, TargetReadError, HttpFailure, UsageError) as exc:
            if self.fatal is None or _severity(exc) < _severity(self.fatal):
                self.fatal = exc
            log.error("stopping", app=self.app.name, reason=str(exc))

    def _raise_fatal(self) -> None:
        if self.fatal is not None:
            raise self.fatal

    @property
    def stopping(self) -> bool:
        return self.fatal is not None

    def _forget_redone(self) -> None:
        with self.store.transaction():
            for run in self.runs.values():
                mark, users_done = self.store.cursor(cursor_name("target", run.name, "users"))
                self.store.forget_redone(run.name, mark, users_done,
                                         self._done(cursor_name("target", run.name, "groups")))

    def _phase(self, phase: str) -> None:
        self.store.set_meta(phase=phase)
        log.info("phase", app=self.app.name, phase=phase)

    def _done(self, name: str) -> bool:
        return self.store.cursor(name)[1]

    # -- reading ----------------------------------------------------------------------------
    async def _read_okta_groups(self) -> None:
        """Groups are few: listed again on resume rather than checkpointed page by page."""
        groups: list[OktaGroup] = []
        async for page in self.okta.group_pages():
            groups.extend(page.items)
        self.okta_groups = groups
        scoped: dict[str, OktaGroup] = {}
        rows: list[tuple[OktaGroup, str | None]] = []
        for group in groups:
            target_name = None
            if self.app.group_in_scope(group.name, group.type):
                target_name = self.app.target_group_name(group.name)
                other = scoped.setdefault(name_key(target_name), group)
                if other is not group:
                    raise UsageError(
                        f"app {self.app.name}: Okta groups {other.name!r} ({other.id}) and "
                        f"{group.name!r} ({group.id}) both land on target group "
                        f"{target_name!r}; fix group_include/group_exclude/group_rename")
            rows.append((group, target_name))
        with self.store.transaction():
            self.store.add_okta_groups(rows)
        self.scope = {k: self.app.target_group_name(g.name) for k, g in scoped.items()}
        self.scoped_groups = list(scoped.values())
        for run in self.runs.values():
            run.rules = replace(run.rules, scope=frozenset(self.scope), group_names=self.scope)

    async def _read_okta_users(self) -> None:
        name = cursor_name("okta", "users")
        start, done = self.store.cursor(name)
        if done:
            return
        namers = [functools.partial(_username, rule) for rule in self.username_rules]
        async for page in self.okta.user_pages(start):
            if self.stopping:
                return
            with self.store.transaction():
                self.store.add_okta_users(page.items, namers)
                self.store.set_cursor(name, page.next_url, page.next_url is None)

    async def _read_okta_members(self) -> None:
        todo = [g for g in self.scoped_groups
                if not self._done(cursor_name("okta", "members", g.id))]

        async def read(group: OktaGroup) -> None:
            if not self.stopping:
                await self._guarded(self._read_members_of, group)

        await each_concurrently(todo, read, self.app.okta_concurrency)

    async def _read_members_of(self, group: OktaGroup) -> None:
        """One group's members, page by page with the cursor; the listing is done only once
        what it read matches Okta's own count of the group's members."""
        name = cursor_name("okta", "members", group.id)
        start, _ = self.store.cursor(name)
        read = 0
        if start == START_OVER:  # it fell short last time: what it read then is forgotten
            self.store.forget_okta_members(group.id)
            start = None
        elif start is not None:  # resumed in the middle: count the pages read before
            read = self.store.okta_member_count(group.id)
        async for page in self.okta.member_pages(group.id, start):
            read += len(page.items)
            with self.store.transaction():
                self.store.add_okta_members(group.id, page.items)
                self.store.set_cursor(name, page.next_url, False)
        await self._check_member_count(group, read)
        self.store.set_cursor(name, None, True)

    async def _check_member_count(self, group: OktaGroup, read: int) -> None:
        """A member listing that ends early without an error is caught by the group's count
        (``expand=stats``). A shortfall is checked against a fresh count first: the group may
        have lost members while it was read. Still short, the listing starts over next time."""
        if group.member_count is None or read >= group.member_count:
            return
        counted = await self.okta.member_count(group.id)
        if counted is None or read >= counted:
            return
        self.store.set_cursor(cursor_name("okta", "members", group.id), START_OVER, False)
        raise ListingError(
            f"Okta's member listing of group {group.name!r} ({group.id}) ended early: "
            f"{read} members read, Okta counts {counted}")

    async def _read_target_then_groups(self, run: TargetRun) -> None:
        wanted = [*self.scope.values(), *run.rules.default_groups]
        read = cursor_name("target", run.name, "read")
        _, all_accounts = self.store.cursor(cursor_name("target", run.name, "all-accounts"))
        if not self._done(read):
            self.store.forget_target(run.name)
            summary = await run.target.read_state(wanted, self.store)
            all_accounts = summary.all_accounts
            with self.store.transaction():
                self.store.set_cursor(read, summary.strategy, True)
                self.store.set_cursor(cursor_name("target", run.name, "all-accounts"), None,
                                      summary.all_accounts)
                self.store.set_cursor(cursor_name("target", run.name, "active-listed"), None,
                                      summary.active_listed)
            log.info("target read", target=run.name, strategy=summary.strategy)
        run.all_accounts = all_accounts
        run.active_listed = self._done(cursor_name("target", run.name, "active-listed"))
        plan = plan_groups(wanted, self.store.target_groups(run.name), run.rules)
        if not self._done(cursor_name("target", run.name, "groups")):
            for finding in plan.findings:
                run.tally.found(finding)
        await self._apply_all(run, plan.grants)
        self.checkpoint(force=True)
        self.store.set_cursor(cursor_name("target", run.name, "groups"), None, True)
        self._record_group_ownership(run)

    def _record_group_ownership(self, run: TargetRun) -> None:
        before = self.ownership.groups_of(self.app.name, run.name)
        by_id = {g.id: g for g in self.okta_groups}
        for okta_id, (_, synced_name) in before.items():
            group = by_id.get(okta_id)
            if group is None:
                run.tally.found(Finding(FindingKind.NOTICE, run.name,
                                        f"Okta group {synced_name!r} was deleted in Okta; the "
                                        "target group is kept (its permissions would be lost)"))
            elif self.app.target_group_name(group.name) != synced_name:
                run.tally.found(Finding(FindingKind.NOTICE, run.name,
                                        f"Okta group {synced_name!r} was renamed to "
                                        f"{group.name!r}; Data Center cannot rename groups"))
        if not self.dry_run:
            self.ownership.claim_groups(self.app.name, run.name, [
                (name_key(self.app.target_group_name(g.name)), g.id,
                 self.app.target_group_name(g.name)) for g in self.scoped_groups])

    # -- users: feed, workers -----------------------------------------------------------------
    async def _users_phase(self, run: TargetRun) -> None:
        name = cursor_name("target", run.name, "users")
        mark, done = self.store.cursor(name)
        if done:
            return
        send, receive = anyio.create_memory_object_stream[UserWork](
            self.config.pipeline.queue_size)
        async with anyio.create_task_group() as tg:
            for _ in range(run.concurrency):
                tg.start_soon(self._guarded, self._user_worker, run, receive.clone())
            receive.close()
            async with send:
                await self._feed_users(run, send, mark)
        self.checkpoint(force=True)
        self.store.set_cursor(name, run.watermark.mark_name, True)

    async def _feed_users(self, run: TargetRun, send: ObjectSendStream[UserWork],
                          after: str | None) -> None:
        target = run.name
        for batch in self.store.feed(target, self.app.name, run.rule, after):
            if self.stopping:
                return
            username = batch[0].username
            seq = run.watermark.issue(username)
            self.store.defer_matched(target, username)
            if len(batch) > 1:
                users = [row.user for row in batch]
                for finding in plan_collision(users, username, run.rules).findings:
                    run.tally.found(finding, username)
                self._user_finished(run, seq)
                continue
            row = batch[0]
            previous = row.synced_as if row.synced_as != username else None
            if previous is not None:
                self.store.defer_matched(target, previous)
            desired = Desired(row.user, username, row.groups)
            at_name = None if row.account is None else Current(
                row.account, row.account_groups,
                None if row.owner is None else Claim(*row.owner))
            known = (row.account is not None or run.all_accounts
                     or (run.active_listed and not row.user.active))
            await send.send(UserWork(seq, desired, at_name, known, previous))

    def _current(self, target: str, account: TargetAccount) -> Current:
        return Current(account, self.store.account_groups(target, account.key),
                       self.ownership.claim_of(target, account.key))

    async def _lookup(self, run: TargetRun, key: str) -> Current | None:
        account = self.store.account(run.name, key)
        if account is None and not run.all_accounts:
            account = await run.target.lookup(key)
            if account is not None:
                self.store.defer_account(run.name, account)
        return None if account is None else self._current(run.name, account)

    async def _user_worker(self, run: TargetRun, receive: ObjectReceiveStream[UserWork]) -> None:
        async with receive:
            async for work in receive:
                if self.stopping:
                    continue  # drain: in-flight work elsewhere finishes, nothing new starts
                try:
                    await self._sync_user(run, work)
                except (TargetReadError, HttpFailure) as exc:
                    run.tally.wrote(Operation(OpKind.CREATE_USER, run.name,
                                              username=work.desired.username,
                                              okta_id=work.desired.user.id, reason="lookup"),
                                    WriteResult(WriteStatus.FAILED, str(exc)),
                                    work.desired.username)
                self._user_finished(run, work.seq)

    async def _sync_user(self, run: TargetRun, work: UserWork) -> None:
        # An active Okta user missing from a complete listing of active accounts is new or
        # deactivated here: try the create first and look the account up only on "exists".
        optimistic = (not work.known and run.active_listed and work.desired.user.active
                      and work.previous_key is None)
        at_name = (work.at_name if work.known or optimistic
                   else await self._lookup(run, work.desired.username))
        previous = (await self._lookup(run, work.previous_key)
                    if work.previous_key is not None else None)
        plan = plan_user(work.desired, at_name, run.rules, previous)
        key = work.desired.username
        if plan.grants and plan.grants[0].kind is OpKind.CREATE_USER and not run.stop_creating:
            plan = await self._create(run, work, plan)
        for finding in plan.findings:
            run.tally.found(finding, key)
        if plan.removals:
            self.store.defer(self.store.hold_removals, plan.removals)
        ok = await self._apply_grants(run, plan.grants, key)
        if ok and plan.claim is not None and not self.dry_run:
            run.claims.append((plan.claim, work.desired.user.id))

    async def _create(self, run: TargetRun, work: UserWork, plan: UserPlan) -> UserPlan:
        """Send the create that opens a plan; what is left to apply depends on its answer.

        "Already exists" is our own create whose answer was lost (now, or before a kill: its
        intent was written down before it was sent) or an account the engine did not see (a
        listing that missed it, a deactivated account Confluence does not list). The account is
        looked up on the server and goes back through the planner: our own is claimed and
        counted as created; anybody else's meets the adoption rules like any existing account
        and is never taken over.
        """
        create, rest = plan.grants[0], plan.grants[1:]
        key = work.desired.username
        earlier = await self.intents.record(run.name, key) if not self.dry_run else False
        result = await _send(run.target, create)
        if result.status is not WriteStatus.ALREADY:
            self._record(run, create, result, key)
            return _remaining(plan, rest, result.ok)
        found = await self._lookup_on_server(run, key)
        if found is None:
            self._record(run, create, WriteResult(
                WriteStatus.FAILED, "the server says the account exists, but it cannot be "
                                    "found"), key)
            return _remaining(plan, [], False)
        if (result.maybe_ours or earlier) and _made_by(create, found.account):
            self._record(run, create, replace(result, maybe_ours=True), key)
            found = replace(found, account=replace(found.account, active=True),
                            claim=Claim(self.app.name, work.desired.user.id))
        return plan_user(work.desired, found, run.rules)

    async def _lookup_on_server(self, run: TargetRun, key: str) -> Current | None:
        """The account as the server has it now (not as the run index saw it)."""
        account = await run.target.lookup(key)
        if account is None:
            return None
        self.store.defer_account(run.name, account)
        return self._current(run.name, account)

    def _user_finished(self, run: TargetRun, seq: int) -> None:
        run.watermark.finish(seq)
        self.checkpoint()

    async def _apply_grants(self, run: TargetRun, grants: list[Operation], key: str) -> bool:
        """Apply one user's grants in order; a failed create or rename stops the rest."""
        for op in grants:
            if op.kind is OpKind.CREATE_USER and run.stop_creating:
                run.tally.wrote(op, WriteResult(WriteStatus.REFUSED,
                                                "not attempted: the target's licence is full"),
                                key)
                return False
            result = await self._apply(run, op, key)
            if not result.ok and op.kind in (OpKind.CREATE_USER, OpKind.RENAME_USER):
                return False
        return True

    async def _apply(self, run: TargetRun, op: Operation,
                     key: str | None = None) -> WriteResult:
        result = await _send(run.target, op)
        self._record(run, op, result, key)
        return result

    def _record(self, run: TargetRun, op: Operation, result: WriteResult,
                key: str | None = None) -> None:
        """Count a write's outcome and write it through to the run index."""
        if result.stop_creating and not run.stop_creating:
            run.stop_creating = True
            log.warning("licence full: no more accounts will be created", target=run.name)
        run.tally.wrote(op, result, key)
        if result.ok and not self.dry_run:
            self._write_through(run.name, op)
            self._since_checkpoint += 1
            self.checkpoint()

    def _write_through(self, target: str, op: Operation) -> None:
        """Keep the run index's view of the target true, so a resume plans no repeat: queued
        for the next checkpoint, in order (the common writes as plain rows)."""
        if op.kind is OpKind.ADD_MEMBER and op.group:
            self.store.defer_member(target, op.group, op.username)
        elif op.kind is OpKind.CREATE_USER:
            self.store.defer_account(
                target, TargetAccount(op.username, op.email, op.display_name, True))
        else:
            self.store.defer(self._write_through_now, target, op)

    def _write_through_now(self, target: str, op: Operation) -> None:
        """The rarer writes, applied at the checkpoint (an update reads the stored account)."""
        store, key = self.store, name_key(op.username)
        if op.kind is OpKind.CREATE_GROUP and op.group:
            store.add_group(target, op.group)
        elif op.kind is OpKind.REMOVE_MEMBER and op.group:
            store.remove_member(target, op.group, op.username)
        else:
            account = store.account(target, key)
            if account is not None:
                store.rename_account(target, key, _changed(account, op)) \
                    if op.kind is OpKind.RENAME_USER else store.set_account(
                        target, _changed(account, op))

    async def _apply_all(self, run: TargetRun, ops: list[Operation]) -> None:
        async def apply(op: Operation) -> None:
            if not self.stopping:
                await self._apply(run, op)

        await each_concurrently(ops, apply, run.concurrency)

    # -- checkpoint ---------------------------------------------------------------------------
    def checkpoint(self, force: bool = False) -> None:
        """Flush ownership claims, then store each users phase's mark and the tallies.

        Claims go first: a crash between the two redoes a few users (harmless), never leaves
        a user below the mark without its claim.
        """
        now = time.monotonic()
        if not force and self._since_checkpoint < CHECKPOINT_EVERY_WRITES and \
                now - self._last_checkpoint < CHECKPOINT_EVERY_S:
            return
        self._last_checkpoint, self._since_checkpoint = now, 0
        for run in self.runs.values():
            if run.claims and not self.dry_run:
                self.ownership.claim(self.app.name, run.name, run.claims)
                run.claims = []
        with self.store.transaction():
            self.store.flush_deferred()
            for run in self.runs.values():
                name = cursor_name("target", run.name, "users")
                if not self._done(name) and run.watermark.mark_name is not None:
                    self.store.set_cursor(name, run.watermark.mark_name, False)
                self.store.set_meta(**{f"already:{run.name}": run.tally.already})
            self.store.set_meta(checkpointed_at=time.time())

    # -- accounts nobody maps to, and the removal gate ---------------------------------------
    async def _plan_unmapped(self, run: TargetRun) -> None:
        """Deactivations of accounts no Okta user maps to: those this app synced for Okta
        users deleted since, and (``deactivate_missing``) any other. Held for the gate."""
        flag = cursor_name("target", run.name, "unmapped")
        if self._done(flag):
            return
        self.store.clear_unmapped_removals(run.name)
        seen: set[str] = set()
        ops: list[Operation] = []
        if self.app.deactivate_missing:
            for account in list(self.store.unmatched_accounts(run.name)):
                seen.add(account.key)
                ops += plan_unmapped(self._current(run.name, account), run.rules).removals
        for key, deleted in list(self.store.owned_unmatched(self.app.name, run.name)):
            if key in seen or not (deleted or self.app.deactivate_missing):
                continue
            current = await self._account_now(run, key)
            if current is not None:
                ops += plan_unmapped(current, run.rules, okta_user_deleted=deleted).removals
        with self.store.transaction():
            self.store.hold_removals(ops)
            self.store.set_cursor(flag, None, True)

    async def _account_now(self, run: TargetRun, key: str) -> Current | None:
        """An account the users phase did not see: from the target's read when it holds it,
        else looked up — unless the read listed every account (then it is absent) or every
        active one (then it is absent or deactivated: nothing to deactivate either way)."""
        account = self.store.account(run.name, key)
        if account is None and not (run.all_accounts or run.active_listed):
            account = await run.target.lookup(key)
        return None if account is None else self._current(run.name, account)

    async def _removal_gate(self) -> None:
        gate = cursor_name("removals", "gate")
        if not self._done(gate):
            self._check_guards()
            if self.outcome.guard:
                if self.dry_run:  # show what the guard holds back: that is what --force does
                    for run in self.runs.values():
                        await self._preview_blocked_removals(run)
                return
            self.store.set_cursor(gate, None, True)
        self._phase("removals")
        async with anyio.create_task_group() as tg:
            for run in self.runs.values():
                tg.start_soon(self._guarded, self._apply_removals, run)
        self._raise_fatal()

    def _check_guards(self) -> None:
        """Whether removals may be written: per target, the first guard that trips holds
        back every removal (of every target: the gate is one)."""
        shrunk = self._shrunk_listing()
        for run in self.runs.values():
            run.guard_tripped = self._zero_users(run) or shrunk or self._target_guard(run)
        tripped = [r.guard_tripped for r in self.runs.values() if r.guard_tripped]
        if tripped:
            self.outcome.guard = "; ".join(dict.fromkeys(tripped))

    def _zero_users(self, run: TargetRun) -> str | None:
        """Zero users from Okta while accounts are synced: never the truth, even forced."""
        owned = self.ownership.count_owned(self.app.name, run.name)
        if self.store.okta_user_count() == 0 and owned > 0:
            return f"Okta returned zero users while {owned} accounts are synced on {run.name}"
        return None

    def _target_guard(self, run: TargetRun) -> str | None:
        if self.force:
            return None
        owned = self.ownership.count_owned(self.app.name, run.name)
        deactivations = self.store.count_removals(run.name, OpKind.DEACTIVATE_USER)
        allowed = self.app.max_deactivations.allowed(owned)
        if deactivations > allowed:
            return (f"{deactivations} deactivations planned on {run.name}, more than "
                    f"max_deactivations allows ({allowed} of {owned} synced users); no removal "
                    "was written (use --force to go past this guard)")
        removals = self.store.count_removals(run.name, OpKind.REMOVE_MEMBER)
        held = self.store.owned_memberships(self.app.name, run.name, list(self.scope))
        allowed = self.app.max_membership_removals.allowed(held)
        if removals > allowed:
            return (f"{removals} membership removals planned on {run.name}, more than "
                    f"max_membership_removals allows ({allowed} of {held} memberships of synced "
                    "users in synced groups); no removal was written (use --force to go past "
                    "this guard)")
        return None

    def _listing_sizes(self) -> dict[str, int]:
        """The sizes compared from run to run, under the settings that shape them (another
        scope is another listing: changing group_include must not look like a shrink)."""
        settings = self.app.fingerprint(self.config.targets)[:16]
        return {f"{settings} okta users": self.store.okta_user_count(),
                f"{settings} okta memberships": self.store.in_scope_membership_count()}

    def _shrunk_listing(self) -> str | None:
        """An Okta listing that returned much less than in the last complete run probably
        ended early without saying so (Okta's user listing has no count to check against)."""
        if self.force:
            return None
        last = self.ownership.listing_sizes(self.app.name)
        for listing, size in self._listing_sizes().items():
            before = last.get(listing)
            if before is None or before <= size:
                continue
            allowed = self.app.max_listing_shrink.allowed(before)
            if before - size > allowed:
                return (f"Okta returned {size} {listing.split()[-1]}, {before - size} fewer than "
                        f"the {before} of the last complete run, more than max_listing_shrink "
                        f"allows ({allowed}); a listing may have ended early, so no removal "
                        "was written (if Okta is right, run again with --force)")
        return None

    async def _preview_blocked_removals(self, run: TargetRun) -> None:
        """Dry run only: the removals a tripped guard blocks go to the plan, marked so."""
        for _, op in self.store.held_removals(run.name):
            await run.target.apply(replace(op, reason=f"blocked by a safety guard: {op.reason}"))

    async def _apply_removals(self, run: TargetRun) -> None:
        held = dict(self.store.held_removals(run.name))
        seq_of = {id(op): seq for seq, op in held.items()}

        async def apply(op: Operation) -> None:
            if self.stopping:
                return
            result = await self._apply(run, op)
            if result.status is not WriteStatus.FAILED:  # refused ones are not retried either
                self.store.defer(self.store.removal_done, seq_of[id(op)])

        await each_concurrently(held.values(), apply, run.concurrency)


async def _send(target: Target, op: Operation) -> WriteResult:
    """One write; still failing after the client's retries, it fails and the run goes on."""
    try:
        return await target.apply(op)
    except HttpFailure as exc:
        return WriteResult(WriteStatus.FAILED, str(exc))


def _remaining(plan: UserPlan, grants: list[Operation], created: bool) -> UserPlan:
    """The rest of a plan once its create was sent: nothing, and no claim, if it failed."""
    return UserPlan(grants=grants if created else [], removals=plan.removals,
                    findings=plan.findings, claim=plan.claim if created else None)


def _made_by(create: Operation, account: TargetAccount) -> bool:
    """Whether an existing account is the one this create makes (a lost answer's retry)."""
    return ((account.email or "").casefold() == (create.email or "").casefold()
            and account.display_name == create.display_name)


def _severity(error: BaseException) -> int:
    """Which stopping error the run reports when several happen (lower is more serious)."""
    order = (CredentialsError, ListingError, TargetReadError, HttpFailure, UsageError)
    return next((i for i, kind in enumerate(order) if isinstance(error, kind)), len(order))


def _username(rule: UsernameRule, user: OktaUser) -> str:
    return rule.username(user.login, user.email)


def _changed(account: TargetAccount, op: Operation) -> TargetAccount:
    """The account after a landed update, rename, activation or deactivation."""
    if op.kind is OpKind.RENAME_USER and op.new_username:
        return replace(account, username=op.new_username)
    if op.kind is OpKind.UPDATE_USER:
        return replace(account, email=op.email or account.email,
                       display_name=op.display_name or account.display_name)
    if op.kind in (OpKind.ACTIVATE_USER, OpKind.DEACTIVATE_USER):
        return replace(account, active=op.kind is OpKind.ACTIVATE_USER)
    return account
