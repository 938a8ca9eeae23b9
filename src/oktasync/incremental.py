"""An incremental sync of one app: what changed in Okta since the last complete sync, planned
against the state store (``statestore.py``) and written exactly as a full sync writes.

Its phases: read the changes (``changes.ChangeReader``); store Okta's new state of what changed
in the store, marking the users to sync again (and keeping them as pending, so a run killed
after this point redoes them); each target's writer, made from the store (no target is read),
creates the groups that came into scope; the users phase over the marked users only (the
full sync's feed, writer and planner, unchanged); the accounts of users deleted in Okta
through the removal gate; then the new position. The position moves only when the gate let
every removal through: a run a guard stopped reads the same changes again next time.
"""

from __future__ import annotations

import functools
import sys
import time
from typing import Any

import anyio

from oktasync.changes import ChangeReader, Changes, Position
from oktasync.config import AppConfig, Config
from oktasync.errors import FullSyncNeeded, collapse
from oktasync.listings import Scope, scope_of
from oktasync.models import OktaGroup, OktaUser
from oktasync.okta_source import OktaSource
from oktasync.ownership import Ownership
from oktasync.pipeline import AppSync, scope_keys
from oktasync.removals import RemovalGate
from oktasync.report import TargetTally
from oktasync.runstore import RunStore, app_criterion, filter_criterion
from oktasync.targets.base import Target
from oktasync.usernames import UsernameRule

# users judged by one user_filter search: ``id eq "00u..."`` is ~30 characters in the URL
SEARCH_BATCH = 50


class IncrementalSync(AppSync):
    """One app's incremental sync on its state store (or a dry run's copy of it)."""

    def __init__(
        self, app: AppConfig, config: Config, okta: OktaSource, targets: dict[str, Target],
        store: RunStore, ownership: Ownership, tallies: dict[str, TargetTally], *,
        position: Position, unfinished: bool, force: bool = False, dry_run: bool = False,
    ) -> None:
        super().__init__(app, config, okta, targets, store, ownership, tallies, force=force,
                         dry_run=dry_run, resumed=unfinished)
        self.position = position
        self.only_affected = True
        self.changed = 0  # users synced again, for the summary
        self.affected: list[str] = []  # their Okta ids
        self.gone: list[str] = []  # ids read again that Okta no longer has (or never had)

    async def run(self) -> str | None:
        """The phases (see the module docstring); returns why a guard held removals back."""
        self.store.begin_incremental(keep_intents=self.resumed)
        self.store.set_meta(unfinished=True)
        self._phase("reading changes")
        changes = await self._read_changes()
        known = anyio.Event()
        self._know_scope(self._store_changes(changes), known)
        await self._judge_user_scopes()
        for name in self.targets:  # from the store: no target is read
            await self._target_then_groups(name, known)
        self._phase("users")
        await self._each_target(self._users_phase)
        gate = self._gate(self.scope)
        for writer in self.writers.values():
            gate.plan_gone(writer, changes.gone)
        guard = await gate.write(list(self.writers.values()))
        if guard is None and not self.dry_run:
            self.ownership.record_listing_sizes(self.app.name, gate.listing_sizes())
            self._advance(changes)
        self._phase("done")
        return guard

    async def _read_changes(self) -> Changes:
        try:
            return await self._read_with(self._reader())
        except BaseExceptionGroup as group:
            raise collapse(group) from None

    async def _read_with(self, reader: ChangeReader) -> Changes:
        """Everything changed since the position."""
        return await reader.read(self.position)

    def _reader(self) -> ChangeReader:
        store, app = self.store, self.app
        before = scope_of(app, store.okta_group_list())[0]
        was_in_scope = {g.id for g in before.groups}

        def needs_members(group: OktaGroup, unexplained: bool) -> bool:
            """Members read whole: a group just come into scope, or one whose members moved
            with no event naming them yet."""
            return (app.group_in_scope(group.name, group.type)
                    and (unexplained or group.id not in was_in_scope))

        return ChangeReader(self.okta, concurrency=app.okta_concurrency, limit=self._limit(),
                            known=store.known_users, needs_members=needs_members)

    def _limit(self) -> int:
        return self.app.full_sync_threshold.allowed(self.store.okta_user_count())

    def _store_changes(self, changes: Changes) -> Scope:
        """Okta's new state into the store, in one transaction with the users it marks to
        sync again (kept as pending until a run finishes them)."""
        store, app = self.store, self.app
        stored = store.okta_group_list()
        before = scope_of(app, stored)[0]
        groups = {g.id: g for g in stored if g.id not in changes.gone_groups}
        groups.update(changes.groups)
        scope, rows = scope_of(app, list(groups.values()))
        self.scope_keys = scope_keys(app.name, self.user_scopes, list(groups.values()))[0]
        tracked = self._tracked(scope)
        affected = self._affected(changes, before, scope, tracked)
        if len(affected) + len(changes.gone) > self._limit():
            raise FullSyncNeeded(f"{len(affected) + len(changes.gone)} users to sync again, "
                                 f"more than full_sync_threshold allows ({self._limit()})")
        namers = [functools.partial(_username, rule) for rule in self.username_rules]
        with store.transaction():
            store.remove_okta_groups(changes.gone_groups)
            store.add_okta_groups(rows)
            store.remove_okta_users(changes.gone)
            store.replace_okta_users(list(changes.users.values()), namers,
                                     attribute_groups=app.attribute_groups_of)
            for user_id, group_ids in changes.groups_of.items():
                store.set_user_groups(user_id, group_ids, tracked)
            for group_id, members in changes.members_of.items():
                store.forget_okta_members(group_id)
                store.add_okta_members(group_id, members)
            store.mark_affected(affected)
            store.add_pending(affected)
        self.changed = len(affected) + len(changes.gone)
        self.affected = sorted(affected)
        self.gone = sorted(changes.gone)
        return scope

    async def _judge_user_scopes(self) -> None:
        """The user scopes of the users synced again, as Okta judges them now: each
        ``user_filter`` by a search for them (a batch per request), each ``okta_app_id`` by
        their assignments; ``required_groups`` need nothing more (their memberships are
        stored). Written in one transaction; a run killed before it has them pending."""
        scopes = self.user_scopes.values()
        filters = sorted({s.user_filter for s in scopes if s.user_filter})
        app_ids = sorted({s.okta_app_id for s in scopes if s.okta_app_id})
        ids, judged = self.affected, list[tuple[str, set[str]]]()
        for expression in filters:
            selected: set[str] = set()
            for start in range(0, len(ids), SEARCH_BATCH):
                selected |= await self.okta.users_matching(expression,
                                                           ids[start:start + SEARCH_BATCH])
            judged.append((filter_criterion(expression), selected))
        for app_id in app_ids:
            judged.append((app_criterion(app_id),
                           await self.okta.assigned_to_app(app_id, ids)))
        with self.store.transaction():
            for criterion, selected in judged:
                self.store.set_in_scope(criterion, ids, selected)

    @property
    def _scopes_ask_okta(self) -> bool:
        return any(s.user_filter or s.okta_app_id for s in self.user_scopes.values())

    def _tracked(self, scope: Scope) -> set[str]:
        """The groups whose members a full run reads (and the store holds): those in scope
        and those a user scope requires."""
        required = {g for keys in self.scope_keys.values() for g in keys.groups or ()}
        return {g.id for g in scope.groups} | required

    def _affected(self, changes: Changes, before: Scope, scope: Scope,
                  tracked: set[str]) -> set[str]:
        """The users to sync again: read again and not as the store has them, whose groups
        moved, pending from an earlier run, and every member of a group that came into scope
        or lands on another name."""
        store, app = self.store, self.app
        # re-read by the overlap: no change (an attribute group moved is a change) — unless
        # a user scope asks Okta (a filter on any attribute, an app assignment): then Okta
        # judges every user read again
        same = set() if self._scopes_ask_okta else store.as_stored(
            changes.users.values(), attribute_groups=app.attribute_groups_of)
        moved = {u for u, groups in changes.groups_of.items()
                 if not store.groups_stored(u, groups, tracked)}
        affected = {*(set(changes.users) - same), *moved, *store.pending_users(),
                    *changes.forced}
        for group_id, members in changes.members_of.items():
            affected |= store.group_members(group_id) ^ set(members)
        old = {g.id: app.target_group_name(g.name) for g in before.groups}
        for group in scope.groups:
            if old.get(group.id) != app.target_group_name(group.name):
                affected |= set(changes.members_of.get(group.id)
                                or store.group_members(group.id))
        return affected - changes.gone

    def _advance(self, changes: Changes) -> None:
        """Every change read is written: the next run reads on from here. The users this
        run failed for stay pending (tried again next run, whatever changes then)."""
        okta_time = self.okta.first_answer_at or self.position.okta_time
        with self.store.transaction():
            self.store.keep_pending()
            self.store.set_meta(okta_time=okta_time, log_next=changes.log_next,
                                unfinished=False)
        self.okta_time = okta_time


def _username(rule: UsernameRule, user: OktaUser) -> str:
    return rule.username(user.login, user.email)


class EventSync(IncrementalSync):
    """The users and groups some events name, synced now, on the state store: the service's
    hook deliveries and polled events, a sign-in, ``oktasync sync-user``.

    An incremental sync whose changes are what the events name, read from Okta now (rule 4),
    instead of everything since the position. It leaves the position alone: the scheduled
    runs still read every change since it (an event missed is found there), and what an event
    sync wrote is then as the store has it, so nothing is written twice. Nor does it turn into
    a full sync: a batch of events is bounded by the service, never by the directory's size.
    """

    def __init__(self, *args: Any, events: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events = events
        self.gate: RemovalGate | None = None

    async def _read_with(self, reader: ChangeReader) -> Changes:
        """What the events name, read from Okta now."""
        return await reader.read_events(self.events)

    def _limit(self) -> int:
        return sys.maxsize

    def _gate(self, scope: Scope) -> RemovalGate:
        """Deactivations count over ``deactivation_window``; the excess is held."""
        gate = super()._gate(scope)
        gate.window_used = self.ownership.event_deactivations(
            self.app.name, time.time() - self.app.deactivation_window_s)
        self.gate = gate
        return gate

    def _advance(self, changes: Changes) -> None:
        """Done: the users it failed for stay pending; the position does not move."""
        with self.store.transaction():
            self.store.keep_pending()
            self.store.set_meta(unfinished=False)
