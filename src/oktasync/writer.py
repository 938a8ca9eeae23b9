"""One target's writes in a run: each user's plan, its creates, its grants, what they leave.

A ``TargetWriter`` owns everything a write touches on its way: the planner's rules for the
target (built once, when the scope is known), the tally, the ownership claims of finished
users, the write-through that keeps the run index true so a resume plans no repeat, and the
create-first path. It serves every kind of sync: the users phase feeds it users in username
order; a single-user sync (a sign-in, an event) calls ``sync_user`` for one.

What failed is never decided here: a lookup or a write that finally failed arrives as an
``ItemFailed`` (its context said so where the request was sent) and is counted for its item.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import ObjectReceiveStream

from oktasync import logs
from oktasync.checkpointer import Checkpointer, Progress
from oktasync.concurrency import Stopper, each_concurrently
from oktasync.errors import ItemFailed
from oktasync.http import WRITE_TRACE, WriteTrace
from oktasync.models import (
    Claim,
    FindingKind,
    Operation,
    OpKind,
    TargetAccount,
    UserPlan,
    WriteResult,
    WriteStatus,
    name_key,
)
from oktasync.ownership import Ownership
from oktasync.planner import Current, Desired, TargetRules, plan_user
from oktasync.progress import Task
from oktasync.report import TargetTally
from oktasync.runstore import RunStore
from oktasync.targets.base import ReadSummary, Target

log = structlog.get_logger("oktasync.pipeline")


@dataclass
class UserWork:
    """One Okta user for one target, with what the feed already knows of its account."""

    seq: int  # position in the feed, for the low-water mark
    desired: Desired
    at_name: Current | None
    known: bool  # False: the account at the username must be looked up first
    previous_key: str | None  # the username this app synced the Okta user as, if different


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
class Shared:
    """What every writer of one run uses: the run index, ownership, the stop signal, the
    checkpointer, the create intents."""

    app: str
    store: RunStore
    ownership: Ownership
    stopper: Stopper
    checkpoints: Checkpointer
    intents: CreateIntents
    dry_run: bool


class TargetWriter:
    """Writes one target's share of the run; see the module docstring."""

    def __init__(self, target: Target, rules: TargetRules, tally: TargetTally, *,
                 concurrency: int, rule: int, read: ReadSummary, shared: Shared) -> None:
        self.target, self.rules, self.tally = target, rules, tally
        self.concurrency, self.rule, self.read = concurrency, rule, read
        self._shared, self._store = shared, shared.store
        self.progress: Progress = shared.checkpoints.track(target.name, tally)
        self.users_task = Task("users", target.name)  # the display's count (progress.py)
        self.stop_creating = False

    @property
    def name(self) -> str:
        return self.target.name

    # -- the users phase: workers over a stream -------------------------------------------
    async def work(self, receive: ObjectReceiveStream[UserWork]) -> None:
        """One worker: sync each user it receives. Once the run is stopping it only drains
        the stream: a user not synced is not finished, so the mark never passes it."""
        async with receive:
            async for work in receive:
                if not self._shared.stopper.stopping:
                    await self.sync_user(work)
                    self.finished(work.seq)

    def finished(self, seq: int) -> None:
        self.users_task.done += 1
        self.progress.watermark.finish(seq)
        self._shared.checkpoints.due()

    async def sync_user(self, work: UserWork) -> None:
        """One user, planned and written; a lookup that failed fails this user only."""
        try:
            plan = await self._plan(work)
        except ItemFailed as exc:
            self.tally.lookup_failed(work.desired.username, work.desired.user.id, str(exc))
            return
        key = work.desired.username
        for finding in plan.findings:
            if finding.kind is not FindingKind.DRIFT or self._shared.ownership.first_report(
                    self._shared.app, self.name, key, finding.reason,
                    remember=not self._shared.dry_run):
                self.tally.found(finding, key)
        if plan.removals:
            self._store.defer(self._store.hold_removals, plan.removals)
        ok = await self._apply_grants(plan.grants, key)
        if ok and plan.claim is not None and not self._shared.dry_run:
            self.progress.claims.append((plan.claim, work.desired.user.id))

    async def _plan(self, work: UserWork) -> UserPlan:
        # An active Okta user missing from a complete listing of active accounts is new or
        # deactivated here: try the create first and look the account up only on "exists".
        optimistic = (not work.known and self.read.active_listed and work.desired.wanted
                      and work.previous_key is None)
        at_name = (work.at_name if work.known or optimistic
                   else await self.lookup(work.desired.username))
        previous = (await self.lookup(work.previous_key)
                    if work.previous_key is not None else None)
        plan = plan_user(work.desired, at_name, self.rules, previous)
        if plan.grants and plan.grants[0].kind is OpKind.CREATE_USER and not self.stop_creating:
            plan = await self._create(work, plan)
        return plan

    def current(self, account: TargetAccount) -> Current:
        """An account with its groups and its owner, as the planner sees it."""
        return Current(account, self._store.account_groups(self.name, account.key),
                       self._shared.ownership.claim_of(self.name, account.key))

    async def lookup(self, key: str) -> Current | None:
        """The account at a username: from the run index, else (when the target's read did
        not list every account) from the server."""
        account = self._store.account(self.name, key)
        if account is None and not self.read.all_accounts:
            account = await self.target.lookup(key)
            if account is not None:
                self._store.defer_account(self.name, account)
        return None if account is None else self.current(account)

    async def _create(self, work: UserWork, plan: UserPlan) -> UserPlan:
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
        earlier = (await self._shared.intents.record(self.name, key)
                   if not self._shared.dry_run else False)
        result = await self._send(create)
        if result.status is not WriteStatus.ALREADY:
            self._record(create, result, key)
            return _remaining(plan, rest, result.ok)
        found = await self._lookup_on_server(key)
        if found is None:
            self._record(create, replace(
                result, status=WriteStatus.FAILED, detail="the server says the account exists, "
                                                          "but it cannot be found"), key)
            return _remaining(plan, [], False)
        if (result.maybe_ours or earlier) and _made_by(create, found.account):
            self._record(create, replace(result, maybe_ours=True), key)
            found = replace(found, account=replace(found.account, active=True),
                            claim=Claim(self._shared.app, work.desired.user.id))
        else:  # somebody else's account: counted (and audited) as already there, not ours
            self.tally.wrote(create, result, key)
        return plan_user(work.desired, found, self.rules)

    async def _lookup_on_server(self, key: str) -> Current | None:
        """The account as the server has it now (not as the run index saw it)."""
        account = await self.target.lookup(key)
        if account is None:
            return None
        self._store.defer_account(self.name, account)
        return self.current(account)

    # -- writes ------------------------------------------------------------------------------
    async def _apply_grants(self, grants: list[Operation], key: str) -> bool:
        """Apply one user's grants in order; a failed create or rename stops the rest."""
        for op in grants:
            if op.kind is OpKind.CREATE_USER and self.stop_creating:
                self.tally.wrote(op, WriteResult(WriteStatus.REFUSED,
                                                 "not attempted: the target's licence is full"),
                                 key)
                return False
            result = await self.apply(op, key)
            if not result.ok and op.kind in (OpKind.CREATE_USER, OpKind.RENAME_USER):
                return False
        return True

    async def apply(self, op: Operation, key: str | None = None) -> WriteResult:
        """One write, counted and written through."""
        result = await self._send(op)
        self._record(op, result, key)
        return result

    async def apply_all(self, ops: list[Operation], task: Task | None = None) -> None:
        """Writes that do not depend on each other (group creates), by the target's workers;
        ``task`` counts them for the progress display."""
        async def apply(op: Operation) -> None:
            if not self._shared.stopper.stopping:
                await self.apply(op)
                if task is not None:
                    task.done += 1
                self._shared.checkpoints.due()

        await each_concurrently(ops, apply, self.concurrency)

    async def _send(self, op: Operation) -> WriteResult:
        """One write; still failing after the client's retries, that write failed. The result
        carries the requests it sent and the last status (``http.WRITE_TRACE``)."""
        trace = WriteTrace()
        token = WRITE_TRACE.set(trace)
        try:
            result = await self.target.apply(op)
        except ItemFailed as exc:
            result = WriteResult(WriteStatus.FAILED, str(exc))
        finally:
            WRITE_TRACE.reset(token)
        return WriteResult(result.status, result.detail, result.stop_creating,  # not replace():
                           result.maybe_ours, trace.attempts, trace.status)  # 3 µs a write

    def _record(self, op: Operation, result: WriteResult, key: str | None = None) -> None:
        """Count a write's outcome and queue its write-through for the next checkpoint."""
        if result.stop_creating and not self.stop_creating:
            self.stop_creating = True
            log.warning("licence full: no more accounts will be created", target=self.name,
                        operation=op.kind.value)
        if logs.VERBOSE:  # a debug call costs 4 µs even when filtered out: once per write
            log.debug("write", target=self.name, operation=op.kind.value,
                      username=op.username, outcome=result.status.value,
                      attempts=result.attempts, status=result.http_status)
        self.tally.wrote(op, result, key)
        if result.ok and not self._shared.dry_run:
            self._write_through(op)
            self._shared.checkpoints.landed()

    def _write_through(self, op: Operation) -> None:
        """Keep the run index's view of the target true, so a resume plans no repeat: queued
        for the next checkpoint, in order (the common writes as plain rows)."""
        if op.kind is OpKind.ADD_MEMBER and op.group:
            self._store.defer_member(self.name, op.group, op.username)
        elif op.kind is OpKind.CREATE_USER:
            self._store.defer_account(
                self.name, TargetAccount(op.username, op.email, op.display_name, True))
        else:
            self._store.defer(self._write_through_now, op)

    def _write_through_now(self, op: Operation) -> None:
        """The rarer writes, applied at the checkpoint (an update reads the stored account)."""
        store, key, target = self._store, name_key(op.username), self.name
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


def _remaining(plan: UserPlan, grants: list[Operation], created: bool) -> UserPlan:
    """The rest of a plan once its create was sent: nothing, and no claim, if it failed."""
    return UserPlan(grants=grants if created else [], removals=plan.removals,
                    findings=plan.findings, claim=plan.claim if created else None)


def _made_by(create: Operation, account: TargetAccount) -> bool:
    """Whether an existing account is the one this create makes (a lost answer's retry)."""
    return ((account.email or "").casefold() == (create.email or "").casefold()
            and account.display_name == create.display_name)


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
