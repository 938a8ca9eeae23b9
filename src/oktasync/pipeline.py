"""A full sync of one app: read everything, then stream the difference into each target.

Data flow (one anyio task group per phase owns every task)::

    Okta groups ──► scope ─┬─► Okta members (okta_concurrency workers) ───┐
    Okta users (pages) ────┼──────────────────────────────────────────────► run index
    each target: read state ┴─► its writer: group creates ─────────────────┘ (SQLite)
                                                                              │
    per target: feed (username order) ──► bounded stream ──► N writer workers ◄┘
                (collisions, renames)       (queue_size)      (plan_user, grants)
    removal gate (every listing done, guards pass) ──► held removals ──► N writer workers

The parts, each with one job: ``listings.Listings`` (the reads), ``writer.TargetWriter`` (one
target's writes), ``checkpointer.Checkpointer`` (what is written down, and when),
``removals.RemovalGate`` (what takes access away, and whether it may). ``AppSync.run`` composes
them as the list of phases. Grants stream once every listing has completed (collisions can
only be known then); removals wait for the gate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import ObjectSendStream

from oktasync import drift
from oktasync.checkpointer import Checkpointer
from oktasync.concurrency import Stopper
from oktasync.config import ATTRIBUTE_ID_PREFIX, AppConfig, Config, TargetConfig, UserScope
from oktasync.drift import Drift
from oktasync.errors import UsageError
from oktasync.listings import Listings, Scope
from oktasync.models import Claim, Finding, FindingKind, OktaGroup, name_key
from oktasync.okta_source import OktaSource
from oktasync.ownership import Ownership
from oktasync.planner import Current, Desired, TargetRules, plan_collision, plan_groups
from oktasync.progress import RunProgress
from oktasync.removals import RemovalGate
from oktasync.report import TargetTally
from oktasync.runstore import (
    RunStore,
    ScopeKeys,
    app_criterion,
    cursor_name,
    filter_criterion,
)
from oktasync.targets.base import Target
from oktasync.writer import CreateIntents, Shared, TargetWriter, UserWork

log = structlog.get_logger("oktasync.pipeline")


def target_rules(app: AppConfig, config: TargetConfig, target: Target,
                 scope: Scope) -> TargetRules:
    """The planner's rules for one target, once the scope is known: built once, never patched."""
    return TargetRules(
        app=app.name, target=target.name, import_users=app.import_users,
        update_users=app.update_users, sync_user_status=app.sync_user_status,
        deactivate_missing=app.deactivate_missing, remove_memberships=app.remove_memberships,
        adopt_existing=config.adopt_existing or app.adopt_existing,
        protected=frozenset(name_key(u) for u in config.protected_users),
        default_groups=tuple(config.default_groups),
        can_rename=target.capabilities.can_rename,
        can_update_profile=target.capabilities.can_update_profile,
        emails_case_exact=target.capabilities.emails_case_exact,
        forbidden_username=target.forbidden_username, forbidden_group=target.forbidden_group,
        scope=frozenset(scope.names), group_names=scope.names)


def scope_keys(app: str, scopes: dict[str, UserScope], okta_groups: list[OktaGroup],
               ) -> tuple[dict[str, ScopeKeys], list[OktaGroup]]:
    """How the feed asks the run index about each target's user scope, and the required
    groups (whose members must be read). A required group Okta does not have is the
    administrator's to fix (a name is matched exactly, as Okta spells it)."""
    by_name = {g.name: g for g in okta_groups}
    keys: dict[str, ScopeKeys] = {}
    required: list[OktaGroup] = []
    for target, scope in scopes.items():
        missing = [n for n in scope.required_groups if n not in by_name]
        if missing:
            raise UsageError(
                f"app {app}, target {target}: required_groups names "
                f"{', '.join(repr(n) for n in missing)}, which Okta has no group called; "
                "write each name exactly as Okta spells it (case included)")
        groups = [by_name[n] for n in scope.required_groups]
        required += groups
        keys[target] = ScopeKeys(
            filter=None if scope.user_filter is None else filter_criterion(scope.user_filter),
            app_users=None if scope.okta_app_id is None else app_criterion(scope.okta_app_id),
            groups=tuple(g.id for g in groups) if groups else None)
    return keys, required


def out_of_scope(scope: UserScope, passes: tuple[bool, bool, bool]) -> str | None:
    """Why a user is outside a target's user scope (each criterion it fails), or None."""
    in_filter, in_groups, in_app = passes
    why = [*([f"does not match user_filter {scope.user_filter!r}"] if not in_filter else []),
           *([f"not in required groups {', '.join(scope.required_groups)}"]
             if not in_groups else []),
           *([f"not assigned to Okta app {scope.okta_app_id}"] if not in_app else [])]
    return f"out of the app's user scope: {'; '.join(why)}" if why else None


class AppSync:
    """One app's full sync against its targets, through one run index (its checkpoint)."""

    def __init__(
        self, app: AppConfig, config: Config, okta: OktaSource, targets: dict[str, Target],
        store: RunStore, ownership: Ownership, tallies: dict[str, TargetTally], *,
        force: bool = False, dry_run: bool = False, resumed: bool = False,
        reconcile_with: Path | None = None,
    ) -> None:
        self.app, self.config, self.targets, self.store = app, config, targets, store
        self.ownership, self.tallies = ownership, tallies
        self.force, self.dry_run, self.resumed = force, dry_run, resumed
        self.stopper = Stopper()
        self.checkpoints = Checkpointer(app.name, store, ownership, dry_run=dry_run)
        self.progress = RunProgress(app.name, str(store.meta().get("run_id", "")))
        self.listings = Listings(app, okta, store, self.stopper, self.progress)
        self.shared = Shared(app.name, store, ownership, self.stopper, self.checkpoints,
                             CreateIntents(store, resumed), dry_run)
        rules = {name: app.rule_for(config.targets[name]) for name in targets}
        self.username_rules = list(dict.fromkeys(rules.values()))
        self.rule_index = {name: self.username_rules.index(rule) for name, rule in rules.items()}
        self.writers: dict[str, TargetWriter] = {}
        # who gets an account on each target (user_filter, required_groups, okta_app_id)
        self.user_scopes = {name: app.scope_for(config.targets[name]) for name in targets}
        self.scope_keys: dict[str, ScopeKeys] = {}  # each target's, once Okta's groups are known
        self.scope = Scope([], [], {})  # the whole scope, once known (_know_scope)
        self.okta = okta
        self.only_affected = False  # an incremental run feeds the users it marked only
        # Okta's time when this run (its first segment, if resumed) began reading Okta
        self.okta_time: str | None = store.meta().get("okta_time")
        # --reconcile: the state store to compare each target's read with (None: no store)
        self.reconcile_with = reconcile_with
        self.drift: list[Drift] | None = [] if reconcile_with is not None else None
        if reconcile_with is not None:
            store.attach_previous(reconcile_with)

    async def run(self) -> str | None:
        """The phases of a full sync; returns why a guard held removals back, if one did."""
        if self.resumed:
            self._forget_redone()
        self._phase("reading")
        okta_scope = await self.listings.okta_groups()
        self._note_okta_time()
        await self._read_everything(okta_scope)
        if self.drift is not None:
            self._find_drift(self.scope)
        self._phase("users")
        await self._each_target(self._users_phase)
        self._phase("removals")
        gate = self._gate(self.scope)
        for writer in self.writers.values():
            await gate.plan_unmapped(writer)
        guard = await gate.write(list(self.writers.values()))
        if guard is None and not self.dry_run:
            self.ownership.record_listing_sizes(self.app.name, gate.listing_sizes())
        self._phase("done")
        return guard

    def _gate(self, scope: Scope) -> RemovalGate:
        return RemovalGate(self.app, self.config, self.store, self.ownership, self.stopper,
                           self.checkpoints, scope=list(scope.names), force=self.force,
                           dry_run=self.dry_run)

    async def _read_everything(self, okta_scope: Scope) -> None:
        """Okta's users and members and each target's state at once; each target's group
        creates as soon as its state is read. A target is read once the whole scope is known:
        at once, unless attribute groups come from values only the user listing shows (then
        right after it, still while Okta's members are read)."""
        guarded, known, scoped = self.stopper.guarded, anyio.Event(), anyio.Event()
        started = anyio.Event()  # Okta answered the user listing's first page
        self.scope_keys, required = scope_keys(self.app.name, self.user_scopes,
                                               okta_scope.okta_groups)
        scopes = self.user_scopes.values()
        after_users = self.app.attribute_groups_need_users
        if not after_users:
            self._know_scope(okta_scope, known)
        async with anyio.create_task_group() as tg:
            tg.start_soon(guarded, self._okta_users, okta_scope if after_users else None, known,
                          started)
            tg.start_soon(guarded, self.listings.okta_members, okta_scope)
            tg.start_soon(guarded, self._user_scopes, scoped, started,
                          [s.user_filter for s in scopes
                           if s.user_filter and s.user_filter != self.shared_filter],
                          [s.okta_app_id for s in scopes if s.okta_app_id], required,
                          okta_scope)
            for name in self.targets:
                tg.start_soon(guarded, self._target_then_groups, name, known, scoped)
        self.stopper.check()
        # in the config's order, not the order the reads finished: the same run, the same words
        self.writers = {name: self.writers[name] for name in self.targets}
        log.info("listings complete", app=self.app.name, okta_users=self.store.okta_user_count())

    @property
    def shared_filter(self) -> str | None:
        """The ``user_filter`` every target has, if one does: then the user listing itself
        is that filter's ``search`` (only the users it selects are read, plus those the app
        synced that it leaves out), not a listing of everyone and one of the filter."""
        filters = {s.user_filter for s in self.user_scopes.values()}
        return filters.pop() if len(filters) == 1 else None

    async def _okta_users(self, okta_scope: Scope | None, known: anyio.Event,
                          started: anyio.Event) -> None:
        """The user listing; then, when ``okta_scope`` is given, the scope it completes.
        ``known`` is set however the listing ends: a stopped run leaves no target waiting."""
        try:
            await self.listings.okta_users(self.username_rules, self.shared_filter, started)
            if okta_scope is not None and not self.stopper.stopping:
                self._know_scope(okta_scope, known)
        finally:
            known.set()

    async def _user_scopes(self, scoped: anyio.Event, started: anyio.Event,
                           *args: Any) -> None:
        """Who each user scope criterion selects (``Listings.user_scopes``). Targets wait for
        it and for the user listing's first answer (``scoped``), so an ``okta_app_id`` or
        ``user_filter`` Okta refuses stops the run before anything is written; set however
        the listings end."""
        try:
            await self.listings.user_scopes(*args)
            await started.wait()
        finally:
            scoped.set()

    def _know_scope(self, okta_scope: Scope, known: anyio.Event) -> None:
        """The one place the whole scope is made: in-scope Okta groups, the attribute groups
        (allow-listed, and those of the users read), and the attribute groups this app synced
        before that the configuration still makes (their memberships may have to go)."""
        made = {g.id: g for g in (*self.app.listed_attribute_groups(),
                                  *self.store.attribute_groups())}
        owned = {okta_id: name for target in self.targets
                 for okta_id, (_, name) in self.ownership.groups_of(self.app.name,
                                                                    target).items()}
        still = [name for okta_id, name in owned.items()
                 if (group := self.app.attribute_group_of_id(okta_id)) is not None
                 and name_key(group.target_name) == name_key(name)]
        self.scope = okta_scope.with_attribute_groups(self.app.name, made.values(), still)
        known.set()

    def _find_drift(self, scope: Scope) -> None:
        """--reconcile: each target's read against the state store; an account renamed by
        hand is claimed where it went, so the users phase plans it as a login rename."""
        assert self.drift is not None
        for writer in self.writers.values():
            config = self.config.targets[writer.name]
            groups = [*scope.names, *(name_key(g) for g in config.default_groups)]
            found = drift.find(self.store, self.app.name, writer.name, groups,
                               writer.read.all_accounts)
            self.drift += found.drift
            if found.moved and not self.dry_run:
                self.ownership.claim(self.app.name, writer.name, found.moved)

    async def _each_target(self, phase: Callable[[TargetWriter], Awaitable[None]]) -> None:
        async with anyio.create_task_group() as tg:
            for writer in self.writers.values():
                tg.start_soon(self.stopper.guarded, phase, writer)
        self.stopper.check()

    def checkpoint(self) -> None:
        """Save the run's progress now (the engine calls it however the run ends)."""
        self.checkpoints.save()

    def _finished(self, phase: str, mark: str | None) -> bool:
        """Save, then mark a target's phase done — unless the run is stopping: then what it
        did not reach (users after the mark, creates not sent) is done again on resume."""
        self.checkpoints.save()
        if self.stopper.stopping:
            return False
        self.store.set_cursor(phase, mark, True)
        return True

    def _note_okta_time(self) -> None:
        """The first segment's time is kept: a resumed run continues listings it began then."""
        if self.okta_time is None and self.okta.first_answer_at is not None:
            self.okta_time = self.okta.first_answer_at
            self.store.set_meta(okta_time=self.okta_time)

    def _phase(self, phase: str) -> None:
        if phase == "done":
            self.progress.close()
        else:
            self.progress.enter(phase)
        self.store.set_meta(phase=phase)
        log.info("phase", app=self.app.name, phase=phase)

    def _forget_redone(self) -> None:
        """A resumed run redoes what came after its marks: what that work counted goes."""
        store = self.store
        with store.transaction():
            for name in self.targets:
                mark, users_done = store.cursor(cursor_name("target", name, "users"))
                groups_done = store.cursor(cursor_name("target", name, "groups"))[1]
                store.forget_redone(name, mark, users_done, groups_done)

    # -- each target: its state, its writer, its groups ---------------------------------------
    async def _target_then_groups(self, name: str, known: anyio.Event,
                                  scoped: anyio.Event | None = None) -> None:
        await known.wait()
        if scoped is not None:
            await scoped.wait()
        if self.stopper.stopping:
            return
        target, config, scope = self.targets[name], self.config.targets[name], self.scope
        read = await self.listings.target_state(
            target, [*scope.names.values(), *config.default_groups])
        writer = TargetWriter(target, target_rules(self.app, config, target, scope),
                              self.tallies[name], concurrency=config.concurrency,
                              rule=self.rule_index[name], read=read, shared=self.shared)
        self.writers[name] = writer
        await self._groups(writer, [*scope.to_create(), *config.default_groups], scope)

    async def _groups(self, writer: TargetWriter, wanted: list[str], scope: Scope) -> None:
        """The target's groups: those missing created, findings reported once per run."""
        store, done = self.store, cursor_name("target", writer.name, "groups")
        plan = plan_groups(wanted, store.target_groups(writer.name), writer.rules)
        if not store.cursor(done)[1]:
            for finding in plan.findings:
                writer.tally.found(finding)
        task = self.progress.task("groups", writer.name, planned=len(plan.grants))
        await writer.apply_all(plan.grants, task)
        self.progress.end(task)
        if self._finished(done, None):
            self._record_group_ownership(writer, scope)

    def _record_group_ownership(self, writer: TargetWriter, scope: Scope) -> None:
        """Groups this app synced: renamed or deleted in Okta since, said once per run."""
        app, target = self.app, writer.name
        by_id = {g.id: g for g in scope.okta_groups}
        for okta_id, (_, synced_name) in self.ownership.groups_of(app.name, target).items():
            group = by_id.get(okta_id)
            if okta_id.startswith(ATTRIBUTE_ID_PREFIX):
                continue  # no Okta group: a value nobody has any more is no news
            if group is None:
                writer.tally.found(Finding(FindingKind.NOTICE, target,
                                           f"Okta group {synced_name!r} was deleted in Okta; "
                                           "the target group is kept (its permissions would "
                                           "be lost)"))
            elif app.target_group_name(group.name) != synced_name:
                writer.tally.found(Finding(FindingKind.NOTICE, target,
                                           f"Okta group {synced_name!r} was renamed to "
                                           f"{group.name!r}; Data Center cannot rename groups"))
        if not self.dry_run:
            self.ownership.claim_groups(app.name, target, [
                *((name_key(app.target_group_name(g.name)), g.id,
                   app.target_group_name(g.name)) for g in scope.groups),
                *((name_key(g.target_name), g.id, g.target_name)
                  for g in scope.attribute_groups)])

    # -- the users phase: a feed in username order, the writer's workers ----------------------
    async def _users_phase(self, writer: TargetWriter) -> None:
        name = cursor_name("target", writer.name, "users")
        mark, done = self.store.cursor(name)
        if done:
            return
        send, receive = anyio.create_memory_object_stream[UserWork](
            self.config.pipeline.queue_size)
        writer.users_task = self.progress.task(
            "users", writer.name, planned=self._users_planned(),
            done=self.store.users_up_to(writer.rule, mark) if mark else 0)
        async with anyio.create_task_group() as tg:
            for _ in range(writer.concurrency):
                tg.start_soon(self.stopper.guarded, writer.work, receive.clone())
            receive.close()
            async with send:
                await self._feed(writer, send, mark)
        if self._finished(name, writer.progress.watermark.mark_name):
            task = writer.users_task  # every user is through (those skipped too)
            task.done = max(task.done, task.planned or 0)
        self.progress.end(writer.users_task)

    def _users_planned(self) -> int | None:
        """Users the users phase goes through: every Okta user read (a full run); an
        incremental run says its own (``IncrementalSync``)."""
        return None if self.only_affected else self.store.okta_user_count()

    async def _feed(self, writer: TargetWriter, send: ObjectSendStream[UserWork],
                    after: str | None) -> None:
        """Each username once, in order, with what the run index knows of its account; a
        username several Okta users map to is a collision, reported and never written."""
        target, watermark = writer.name, writer.progress.watermark
        user_scope = self.user_scopes[target]
        for batch in self.store.feed(target, self.app.name, writer.rule, after,
                                     self.only_affected, self.scope_keys.get(target)):
            if self.stopper.stopping:
                return
            username = batch[0].username
            seq = watermark.issue(username)
            self.store.defer_matched(target, username)
            if len(batch) > 1:
                users = [row.user for row in batch]
                for finding in plan_collision(users, username, writer.rules).findings:
                    writer.tally.found(finding, username)
                writer.users_task.done += len(batch) - 1  # the display counts users
                writer.finished(seq)
                continue
            row = batch[0]
            previous = row.synced_as if row.synced_as != username else None
            if previous is not None:
                self.store.defer_matched(target, previous)
            at_name = None if row.account is None else Current(
                row.account, row.account_groups,
                None if row.owner is None else Claim(*row.owner))
            desired = Desired(row.user, username, row.groups,
                              out_of_scope(user_scope, row.passes))
            known = (row.account is not None or writer.read.all_accounts
                     or (writer.read.active_listed and not desired.wanted))
            await send.send(UserWork(seq, desired, at_name, known, previous))
