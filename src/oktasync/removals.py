"""The removal gate: what takes access away is written last, and only when it is safe.

Removals planned per user are held in the run index during the users phase; the accounts no
Okta user maps to are planned here. They are written only once every listing is complete and
every guard passes: never zero users from Okta while accounts are synced (even forced), and,
unless ``--force``, no listing much shorter than the last complete run's
(``max_listing_shrink``), no more deactivations than ``max_deactivations``, no more
membership removals than ``max_membership_removals``. One tripped guard holds back every
removal of every target.
"""

from __future__ import annotations

import time
from dataclasses import replace

import anyio

from oktasync.checkpointer import Checkpointer
from oktasync.concurrency import Stopper, each_concurrently
from oktasync.config import AppConfig, Config
from oktasync.errors import ItemFailed
from oktasync.models import Operation, OpKind, WriteStatus
from oktasync.ownership import Held, Ownership
from oktasync.planner import Current, plan_unmapped
from oktasync.runstore import RunStore, cursor_name
from oktasync.writer import TargetWriter


class RemovalGate:
    """Plans the unmapped accounts' removals, checks the guards, writes what is held."""

    def __init__(self, app: AppConfig, config: Config, store: RunStore, ownership: Ownership,
                 stopper: Stopper, checkpoints: Checkpointer, *, scope: list[str],
                 force: bool, dry_run: bool) -> None:
        self._app, self._config, self._store, self._ownership = app, config, store, ownership
        self._stopper, self._checkpoints = stopper, checkpoints
        self._scope, self._force, self._dry_run = scope, force, dry_run
        # an event sync's deactivations count over a sliding window: those written in it so
        # far (None: any other run, judged alone)
        self.window_used: dict[str, int] | None = None  # target -> deactivations
        self.held_now = 0  # deactivations this run held for an administrator

    # -- accounts nobody maps to --------------------------------------------------------------
    async def plan_unmapped(self, writer: TargetWriter) -> None:
        """Deactivations of accounts no Okta user maps to: those this app synced for Okta
        users deleted since, and (``deactivate_missing``) any other. Held for the gate."""
        store, target = self._store, writer.name
        flag = cursor_name("target", target, "unmapped")
        if store.cursor(flag)[1]:
            return
        store.clear_unmapped_removals(target)
        seen: set[str] = set()
        ops: list[Operation] = []
        if self._app.deactivate_missing:
            for account in list(store.unmatched_accounts(target)):
                seen.add(account.key)
                ops += plan_unmapped(writer.current(account), writer.rules).removals
        for key, deleted in list(store.owned_unmatched(self._app.name, target)):
            if key in seen or not (deleted or self._app.deactivate_missing):
                continue
            current = await self._account_now(writer, key)
            if current is not None:
                ops += plan_unmapped(current, writer.rules, okta_user_deleted=deleted).removals
        self._checkpoints.save()  # a lookup that failed is written down before the flag
        with store.transaction():
            store.hold_removals(ops)
            store.set_cursor(flag, None, True)

    def plan_gone(self, writer: TargetWriter, okta_ids: set[str]) -> None:
        """An incremental run's deleted Okta users: the accounts this app synced for them
        are deactivated, held for the gate like every removal."""
        ops: list[Operation] = []
        for key in self._ownership.keys_of(self._app.name, writer.name, okta_ids):
            account = self._store.account(writer.name, key)
            if account is not None:
                ops += plan_unmapped(writer.current(account), writer.rules,
                                     okta_user_deleted=True).removals
        self._store.hold_removals(ops)

    async def _account_now(self, writer: TargetWriter, key: str) -> Current | None:
        """An account the users phase did not see: from the target's read when it holds it,
        else looked up — unless the read listed every account (then it is absent) or every
        active one (then it is absent or deactivated: nothing to deactivate either way). A
        lookup that fails leaves that account alone, reported."""
        account = self._store.account(writer.name, key)
        if account is None and not (writer.read.all_accounts or writer.read.active_listed):
            try:
                account = await writer.target.lookup(key)
            except ItemFailed as exc:
                writer.tally.lookup_failed(key, None, str(exc))
                return None
        return None if account is None else writer.current(account)

    # -- the gate -----------------------------------------------------------------------------
    async def write(self, writers: list[TargetWriter]) -> str | None:
        """Write every held removal, unless a guard trips: then its reason (nothing removed;
        a dry run shows what it holds back)."""
        gate = cursor_name("removals", "gate")
        if not self._store.cursor(gate)[1]:
            if not (self._force or self._dry_run):
                self._hold_back(writers)
            guard = self._tripped(writers)
            if guard:
                if self._dry_run:  # show what the guard holds back: that is what --force does
                    for writer in writers:
                        await self._preview_blocked(writer)
                return guard
            if self.window_used is not None and not self._dry_run:
                self._ownership.count_event_deactivations(self._app.name, time.time(), {
                    w.name: self._store.count_removals(w.name, OpKind.DEACTIVATE_USER)
                    for w in writers})
            self._store.set_cursor(gate, None, True)
        self._store.set_meta(phase="removals")
        async with anyio.create_task_group() as tg:
            for writer in writers:
                tg.start_soon(self._stopper.guarded, self._apply_held, writer)
        self._stopper.check()
        return None

    def _hold_back(self, writers: list[TargetWriter]) -> None:
        """Deactivations held for an administrator stay held (only ``oktasync held
        --release``, or ``--force``, lets them through); an event sync holds those past
        what ``max_deactivations`` allows over the window, so a flood of events cannot do
        what one run may not."""
        app, now = self._app.name, time.time()
        held = {(h.target, h.username) for h in self._ownership.held(app)}
        new: list[Held] = []
        for writer in writers:
            planned = self._store.removals_of(writer.name, OpKind.DEACTIVATE_USER)
            kept = [row for row in planned if (writer.name, row[1]) not in held]
            self._store.drop_removals(row[0] for row in planned if (writer.name, row[1]) in held)
            if self.window_used is None:
                continue
            owned = self._ownership.count_owned(app, writer.name)
            used = self.window_used.get(writer.name, 0)
            allowed = max(0, self._app.max_deactivations.allowed(owned) - used)
            reason = (f"more deactivations from events than max_deactivations allows within "
                      f"deactivation_window ({self._app.max_deactivations.allowed(owned)})")
            new += [Held(writer.name, user, okta_id, now, reason)
                    for _, user, okta_id in kept[allowed:]]
            self._store.drop_removals(seq for seq, _, _ in kept[allowed:])
        if new:
            self._ownership.hold(app, new)
            self.held_now = len(new)

    def listing_sizes(self) -> dict[str, int]:
        """The sizes compared from run to run, under the settings that shape them (another
        scope is another listing: changing group_include must not look like a shrink)."""
        settings = self._app.fingerprint(self._config.targets)[:16]
        return {f"{settings} okta users": self._store.okta_user_count(),
                f"{settings} okta memberships": self._store.in_scope_membership_count()}

    def _tripped(self, writers: list[TargetWriter]) -> str | None:
        """Per target, the first guard that trips; together, why removals are held back."""
        shrunk = self._shrunk_listing()
        tripped = [self._zero_users(w.name) or shrunk or self._target_guard(w.name)
                   for w in writers]
        return "; ".join(dict.fromkeys(t for t in tripped if t)) or None

    def _zero_users(self, target: str) -> str | None:
        """Zero users from Okta while accounts are synced: never the truth, even forced."""
        owned = self._ownership.count_owned(self._app.name, target)
        if self._store.okta_user_count() == 0 and owned > 0:
            return f"Okta returned zero users while {owned} accounts are synced on {target}"
        return None

    def _target_guard(self, target: str) -> str | None:
        if self._force:
            return None
        app, store = self._app, self._store
        owned = self._ownership.count_owned(app.name, target)
        deactivations = store.count_removals(target, OpKind.DEACTIVATE_USER)
        allowed = app.max_deactivations.allowed(owned)
        if deactivations > allowed:
            return (f"{deactivations} deactivations planned on {target}, more than "
                    f"max_deactivations allows ({allowed} of {owned} synced users); no removal "
                    "was written (use --force to go past this guard)")
        removals = store.count_removals(target, OpKind.REMOVE_MEMBER)
        held = store.owned_memberships(app.name, target, self._scope)
        allowed = app.max_membership_removals.allowed(held)
        if removals > allowed:
            return (f"{removals} membership removals planned on {target}, more than "
                    f"max_membership_removals allows ({allowed} of {held} memberships of synced "
                    "users in synced groups); no removal was written (use --force to go past "
                    "this guard)")
        return None

    def _shrunk_listing(self) -> str | None:
        """An Okta listing that returned much less than in the last complete run probably
        ended early without saying so (Okta's user listing has no count to check against)."""
        if self._force:
            return None
        last = self._ownership.listing_sizes(self._app.name)
        for listing, size in self.listing_sizes().items():
            before = last.get(listing)
            if before is None or before <= size:
                continue
            allowed = self._app.max_listing_shrink.allowed(before)
            if before - size > allowed:
                return (f"Okta returned {size} {listing.split()[-1]}, {before - size} fewer than "
                        f"the {before} of the last complete run, more than max_listing_shrink "
                        f"allows ({allowed}); a listing may have ended early, so no removal "
                        "was written (if Okta is right, run again with --force)")
        return None

    async def _preview_blocked(self, writer: TargetWriter) -> None:
        """Dry run only: the removals a tripped guard blocks go to the plan, marked so."""
        for _, op in self._store.held_removals(writer.name):
            await writer.target.apply(replace(op, reason=f"blocked by a safety guard: {op.reason}"))

    async def _apply_held(self, writer: TargetWriter) -> None:
        held = dict(self._store.held_removals(writer.name))
        seq_of = {id(op): seq for seq, op in held.items()}

        async def apply(op: Operation) -> None:
            if self._stopper.stopping:
                return
            result = await writer.apply(op)
            if result.status is not WriteStatus.FAILED:  # refused ones are not retried either
                self._store.defer(self._store.removal_done, seq_of[id(op)])
            self._checkpoints.due()

        await each_concurrently(held.values(), apply, writer.concurrency)
