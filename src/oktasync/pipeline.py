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
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import structlog
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from oktasync.config import AppConfig, Config
from oktasync.errors import TargetReadError, UsageError
from oktasync.models import Finding, FindingKind, OktaGroup, Operation, OpKind, name_key
from oktasync.okta_source import OktaSource
from oktasync.planner import (
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
from oktasync.targets.base import Target, WriteResult, WriteStatus

log = structlog.get_logger("oktasync.pipeline")
CLAIM_FLUSH = 500


@dataclass
class UserWork:
    """One Okta user for one target, with what the feed already knows of its account."""

    desired: Desired
    at_name: Current | None
    known: bool  # False: the account at the username must be looked up first
    previous_key: str | None  # the username this app synced the Okta user as, if different


@dataclass
class TargetRun:
    """Per-target state of one app's run."""

    target: Target
    rules: TargetRules
    tally: TargetTally
    all_accounts: bool = True
    stop_creating: bool = False
    claims: list[tuple[str, str | None]] = field(default_factory=list)
    guard_tripped: str | None = None


@dataclass
class AppOutcome:
    guard: str | None = None  # why a safety guard stopped removals
    notes: list[str] = field(default_factory=list)


class AppSync:
    """One app's full sync against its targets, through one run index."""

    def __init__(
        self, app: AppConfig, config: Config, okta: OktaSource, targets: dict[str, Target],
        store: RunStore, ownership: Ownership, tallies: dict[str, TargetTally], *,
        force: bool = False, dry_run: bool = False,
    ) -> None:
        self.app, self.config, self.okta, self.store = app, config, okta, store
        self.ownership, self.force, self.dry_run = ownership, force, dry_run
        self.runs = {name: TargetRun(t, self._rules(name, t), tallies[name])
                     for name, t in targets.items()}
        self.outcome = AppOutcome()
        self.okta_groups: list[OktaGroup] = []
        self.scoped_groups: list[OktaGroup] = []
        self.scope: dict[str, str] = {}  # group key -> target name, for in-scope groups

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
        await self._read_okta_groups()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._read_okta_users)
            tg.start_soon(self._read_okta_members)
            for run in self.runs.values():
                tg.start_soon(self._read_target_then_groups, run)
        log.info("listings complete", app=self.app.name, okta_users=self.store.okta_user_count())
        async with anyio.create_task_group() as tg:
            for run in self.runs.values():
                tg.start_soon(self._users_phase, run)
        if self.app.deactivate_missing:
            for run in self.runs.values():
                await self._plan_unmapped(run)
        await self._removal_gate()
        return self.outcome

    # -- reading ----------------------------------------------------------------------------
    async def _read_okta_groups(self) -> None:
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
        self.store.add_okta_groups(rows)
        self.scope = {k: self.app.target_group_name(g.name) for k, g in scoped.items()}
        self.scoped_groups = list(scoped.values())
        for run in self.runs.values():
            run.rules = _with_scope(run.rules, frozenset(self.scope))

    async def _read_okta_users(self) -> None:
        rule = self.app.username_rule
        async for page in self.okta.user_pages():
            self.store.add_okta_users((rule.apply(u.login), u) for u in page.items)

    async def _read_okta_members(self) -> None:
        send, receive = anyio.create_memory_object_stream[OktaGroup](
            max(1, len(self.scoped_groups)))
        async with anyio.create_task_group() as tg:
            for _ in range(max(1, self.app.okta_concurrency)):
                tg.start_soon(self._members_worker, receive.clone())
            receive.close()
            async with send:
                for group in self.scoped_groups:
                    await send.send(group)

    async def _members_worker(self, receive: ObjectReceiveStream[OktaGroup]) -> None:
        async with receive:
            async for group in receive:
                async for page in self.okta.member_pages(group.id):
                    self.store.add_okta_members(group.id, page.items)

    async def _read_target_then_groups(self, run: TargetRun) -> None:
        wanted = [*self.scope.values(), *run.rules.default_groups]
        summary = await run.target.read_state(wanted, self.store)
        run.all_accounts = summary.all_accounts
        log.info("target read", target=run.target.name, strategy=summary.strategy)
        plan = plan_groups(wanted, self.store.target_groups(run.target.name), run.rules)
        for finding in plan.findings:
            run.tally.found(finding)
        await self._apply_all(run, plan.grants)
        self._record_group_ownership(run)

    def _record_group_ownership(self, run: TargetRun) -> None:
        name = run.target.name
        before = self.ownership.groups_of(self.app.name, name)
        by_id = {g.id: g for g in self.okta_groups}
        for okta_id, (_, synced_name) in before.items():
            group = by_id.get(okta_id)
            if group is None:
                run.tally.found(Finding(FindingKind.NOTICE, name,
                                        f"Okta group {synced_name!r} was deleted in Okta; the "
                                        "target group is kept (its permissions would be lost)"))
            elif self.app.target_group_name(group.name) != synced_name:
                run.tally.found(Finding(FindingKind.NOTICE, name,
                                        f"Okta group {synced_name!r} was renamed to "
                                        f"{group.name!r}; Data Center cannot rename groups"))
        if not self.dry_run:
            self.ownership.claim_groups(self.app.name, name, [
                (name_key(self.app.target_group_name(g.name)), g.id,
                 self.app.target_group_name(g.name)) for g in self.scoped_groups])

    # -- users: feed, workers -----------------------------------------------------------------
    async def _users_phase(self, run: TargetRun) -> None:
        send, receive = anyio.create_memory_object_stream[UserWork](
            self.config.pipeline.queue_size)
        async with anyio.create_task_group() as tg:
            for _ in range(self.config.targets[run.target.name].concurrency):
                tg.start_soon(self._user_worker, run, receive.clone())
            receive.close()
            async with send:
                await self._feed_users(run, send)
        self._flush_claims(run)

    async def _feed_users(self, run: TargetRun, send: ObjectSendStream[UserWork]) -> None:
        target = run.target.name
        for batch in self.store.users_by_username():
            username = batch[0][0]
            self.store.mark_matched(target, [username])
            if len(batch) > 1:
                for finding in plan_collision([u for _, u in batch], username, run.rules).findings:
                    run.tally.found(finding)
                continue
            _, user = batch[0]
            previous = self.ownership.synced_as(self.app.name, target, user.id)
            if previous == username:
                previous = None
            if previous is not None:
                self.store.mark_matched(target, [previous])
            desired = Desired(user, username, self.store.user_groups(user.id))
            account = self.store.account(target, username)
            at_name = self._current(target, account) if account is not None else None
            known = account is not None or run.all_accounts
            await send.send(UserWork(desired, at_name, known, previous))

    def _current(self, target: str, account: Any) -> Current:
        return Current(account, self.store.account_groups(target, account.key),
                       self.ownership.claim_of(target, account.key))

    async def _lookup(self, run: TargetRun, key: str) -> Current | None:
        account = self.store.account(run.target.name, key)
        if account is None and not run.all_accounts:
            account = await run.target.lookup(key)
        return None if account is None else self._current(run.target.name, account)

    async def _user_worker(self, run: TargetRun, receive: ObjectReceiveStream[UserWork]) -> None:
        async with receive:
            async for work in receive:
                try:
                    await self._sync_user(run, work)
                except TargetReadError as exc:
                    run.tally.wrote(Operation(OpKind.CREATE_USER, run.target.name,
                                              username=work.desired.username,
                                              okta_id=work.desired.user.id, reason="lookup"),
                                    WriteResult(WriteStatus.FAILED, str(exc)))

    async def _sync_user(self, run: TargetRun, work: UserWork) -> None:
        at_name = work.at_name if work.known else await self._lookup(run, work.desired.username)
        previous = (await self._lookup(run, work.previous_key)
                    if work.previous_key is not None else None)
        plan = plan_user(work.desired, at_name, run.rules, previous)
        for finding in plan.findings:
            run.tally.found(finding)
        if plan.removals:
            self.store.hold_removals(plan.removals)
        ok = await self._apply_grants(run, plan.grants)
        if ok and plan.claim is not None and not self.dry_run:
            run.claims.append((plan.claim, work.desired.user.id))
            if len(run.claims) >= CLAIM_FLUSH:
                self._flush_claims(run)

    async def _apply_grants(self, run: TargetRun, grants: list[Operation]) -> bool:
        """Apply one user's grants in order; a failed create or rename stops the rest."""
        for op in grants:
            if op.kind is OpKind.CREATE_USER and run.stop_creating:
                run.tally.wrote(op, WriteResult(WriteStatus.REFUSED,
                                                "not attempted: the target's licence is full"))
                return False
            result = await self._apply(run, op)
            if not result.ok and op.kind in (OpKind.CREATE_USER, OpKind.RENAME_USER):
                return False
        return True

    async def _apply(self, run: TargetRun, op: Operation) -> WriteResult:
        run.tally.planned(op)
        result = await run.target.apply(op)
        if result.stop_creating and not run.stop_creating:
            run.stop_creating = True
            log.warning("licence full: no more accounts will be created", target=run.target.name)
        run.tally.wrote(op, result)
        return result

    async def _apply_all(self, run: TargetRun, ops: list[Operation]) -> None:
        await _pool(self.config.targets[run.target.name].concurrency, ops,
                    lambda op: self._apply(run, op))

    def _flush_claims(self, run: TargetRun) -> None:
        if run.claims:
            self.ownership.claim(self.app.name, run.target.name, run.claims)
            run.claims = []

    # -- accounts nobody maps to, and the removal gate ---------------------------------------
    async def _plan_unmapped(self, run: TargetRun) -> None:
        target = run.target.name
        seen: set[str] = set()
        for account in list(self.store.unmatched_accounts(target)):
            seen.add(account.key)
            self.store.hold_removals(plan_unmapped(self._current(target, account),
                                                   run.rules).removals)
        for key in self.ownership.owned_keys(self.app.name, target):
            if key in seen or self.store.is_matched(target, key):
                continue
            current = await self._lookup(run, key)
            if current is not None:
                self.store.hold_removals(plan_unmapped(current, run.rules).removals)

    async def _removal_gate(self) -> None:
        okta_users = self.store.okta_user_count()
        for run in self.runs.values():
            owned = self.ownership.count_owned(self.app.name, run.target.name)
            if okta_users == 0 and owned > 0:
                run.guard_tripped = (f"Okta returned zero users while {owned} accounts are "
                                     f"synced on {run.target.name}")
                continue
            deactivations = self.store.count_removals(run.target.name, OpKind.DEACTIVATE_USER)
            allowed = self.app.max_deactivations.allowed(owned)
            if deactivations > allowed and not self.force:
                run.guard_tripped = (
                    f"{deactivations} deactivations planned on {run.target.name}, more than "
                    f"max_deactivations allows ({allowed} of {owned} synced users); no removal "
                    "was written (use --force to go past this guard)")
        tripped = [r.guard_tripped for r in self.runs.values() if r.guard_tripped]
        if tripped:
            self.outcome.guard = "; ".join(tripped)
        async with anyio.create_task_group() as tg:
            for run in self.runs.values():
                if run.guard_tripped is None:
                    tg.start_soon(self._apply_removals, run)

    async def _apply_removals(self, run: TargetRun) -> None:
        ops = list(self.store.held_removals(run.target.name))
        await self._apply_all(run, ops)


def _with_scope(rules: TargetRules, scope: frozenset[str]) -> TargetRules:
    return replace(rules, scope=scope)


async def _pool(concurrency: int, ops: list[Operation],
                apply: Callable[[Operation], Awaitable[Any]]) -> None:
    """Apply independent operations with at most ``concurrency`` in flight."""
    if not ops:
        return
    send, receive = anyio.create_memory_object_stream[Operation](len(ops))

    async def worker(stream: ObjectReceiveStream[Operation]) -> None:
        async with stream:
            async for op in stream:
                await apply(op)

    async with anyio.create_task_group() as tg:
        for _ in range(max(1, min(concurrency, len(ops)))):
            tg.start_soon(worker, receive.clone())
        receive.close()
        async with send:
            for op in ops:
                send.send_nowait(op)

