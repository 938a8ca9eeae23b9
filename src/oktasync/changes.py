"""What changed in Okta since the last complete sync: the incremental sync's reads.

Three feeds, read at once from the position the last complete run left (``Position``):

* users whose ``lastUpdated`` is after T − ``OVERLAP``: every profile and status change,
  DEPROVISIONED included (``filter``, exact, not eventually consistent like ``search``);
* groups whose ``lastUpdated`` or ``lastMembershipUpdated`` is after T − ``OVERLAP``: new and
  renamed groups, and which groups' members moved;
* the System Log, polled from the ``next`` link the last run kept (the first time, from
  T − ``OVERLAP``): who joined or left which group, who was deleted — the two things no
  ``lastUpdated`` shows (a membership change moves only the group's time; a deleted user
  is in no listing).

Events are signals (``signals.py``): every user they name is read again (``GET
/api/v1/users/{id}``, 404: deleted), and so are its groups when its memberships moved or it
is new; never is an event's own content written. A group whose members moved after T but
that no event names yet (the log is late) has its members read whole, as does a group that
has just come into scope. Why no change falls between two runs: ARCHITECTURE.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio

from oktasync.concurrency import each_concurrently
from oktasync.errors import FullSyncNeeded
from oktasync.models import OktaGroup, OktaUser
from oktasync.okta_source import OktaSource
from oktasync.signals import Look, Signal, signals

# Okta's ``lastUpdated`` is written when a change commits, but a read may see it a moment
# later, and the position is the ``Date`` (whole seconds) of an answer that came back after
# its request went out: each run reads again the five minutes before its position.
OVERLAP = timedelta(minutes=5)
# The System Log keeps 90 days; a position older than that (less a day for the clocks) may
# have lost events: a full sync instead.
RETENTION = timedelta(days=89)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.000Z"


@dataclass(frozen=True)
class Position:
    """Where Okta stood for the last complete sync: every change before ``okta_time`` (Okta's
    clock) is in the targets; the System Log is read on from ``log_next`` (None: from
    ``okta_time``, the first time after a full sync)."""

    okta_time: str
    log_next: str | None = None


@dataclass
class Changes:
    """Okta's current state of everything that changed, and where the next run reads on."""

    users: dict[str, OktaUser] = field(default_factory=dict)  # read again: sync them
    gone: set[str] = field(default_factory=set)  # users Okta no longer has
    groups_of: dict[str, list[str]] = field(default_factory=dict)  # user -> all its groups
    groups: dict[str, OktaGroup] = field(default_factory=dict)  # groups read again
    gone_groups: set[str] = field(default_factory=set)
    members_of: dict[str, list[str]] = field(default_factory=dict)  # group -> all members
    log_next: str = ""  # where the next run's System Log read starts
    events: int = 0
    forced: set[str] = field(default_factory=set)  # synced whatever the store holds (sign-in)


def parse_time(value: str) -> datetime:
    return datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)


def too_old(position: Position, now: datetime) -> bool:
    """Older than the System Log keeps events: a change could have been forgotten."""
    return now - parse_time(position.okta_time) > RETENTION


# (a group read again, whether its members moved with no event naming it) -> read them whole
NeedsMembers = Callable[[OktaGroup, bool], bool]


class ChangeReader:
    """Reads Okta's changes since a position, at most ``limit`` users' worth (more: a full
    sync is cheaper, and ``FullSyncNeeded`` says so before anything is written)."""

    def __init__(self, okta: OktaSource, *, concurrency: int, limit: int,
                 known: Callable[[Iterable[str]], set[str]],
                 needs_members: NeedsMembers) -> None:
        self._okta, self._concurrency, self._limit = okta, concurrency, limit
        self._known, self._needs_members = known, needs_members

    async def read(self, position: Position) -> Changes:
        """The three feeds at once, then what their signals name."""
        since = (parse_time(position.okta_time) - OVERLAP).strftime(TIME_FORMAT)
        changes, events = Changes(), list[dict[str, object]]()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._users, since, changes)
            tg.start_soon(self._groups, since, changes)
            tg.start_soon(self._log, position.log_next or self._okta.first_log_url(since),
                          changes, events)
        said = signals(events)
        await self._follow(said, changes)
        await self._read_members(position.okta_time, self._explained(said), changes)
        return changes

    async def read_events(self, events: list[dict[str, object]]) -> Changes:
        """What some events name (hook deliveries, the poller's pages, a sign-in), read from
        Okta now. A sign-in syncs its user whatever the store holds (``forced``), and reads
        the user's groups: a sign-in is the moment to be right about that one user."""
        changes = Changes(events=len(events))
        said = signals(events)
        signed_in = {s.id for s in said if s.look is Look.SIGN_IN}
        said += [Signal(look, user) for user in sorted(signed_in)
                 for look in (Look.USER, Look.MEMBERSHIPS)]
        await self._follow(said, changes)
        changes.forced = signed_in - changes.gone
        await self._read_members(None, self._explained(said), changes)
        return changes

    async def _follow(self, said: list[Signal], changes: Changes) -> None:
        """Read what the signals name: users (and who is new to us), the groups of users
        whose memberships moved or who are new, groups."""
        named = {s.id for s in said if s.look is Look.USER}
        moved = {s.id for s in said if s.look is Look.MEMBERSHIPS}
        strangers = moved - set(changes.users) - self._known(moved)  # joined, and new to us
        await self._read_users(sorted((named | strangers) - set(changes.users)), changes)
        moved -= changes.gone
        new = set(changes.users) - self._known(changes.users)
        await self._read_groups_of(sorted(moved | new), changes)
        await self._read_groups([s.id for s in said if s.look is Look.GROUP
                                 and s.id not in changes.groups], changes)

    @staticmethod
    def _explained(said: list[Signal]) -> set[str]:
        """Groups whose moved members an event names (their members need no full read)."""
        return {s.id for s in said if s.look is Look.MEMBERS}

    def _check_limit(self, changes: Changes) -> None:
        count = len(changes.users) + len(changes.gone)
        if count > self._limit:
            raise FullSyncNeeded(f"more than {self._limit} users changed in Okta since the "
                                 "last sync (full_sync_threshold)")

    async def _users(self, since: str, changes: Changes) -> None:
        async for page in self._okta.changed_user_pages(since):
            changes.users.update((u.id, u) for u in page.items)
            self._check_limit(changes)

    async def _groups(self, since: str, changes: Changes) -> None:
        async for page in self._okta.changed_group_pages(since):
            changes.groups.update((g.id, g) for g in page.items)

    async def _log(self, start: str, changes: Changes, events: list[dict[str, object]]) -> None:
        async for page in self._okta.log_pages(start):
            events.extend(page.items)
            changes.log_next = page.next_url or changes.log_next
        changes.events = len(events)

    async def _read_users(self, ids: list[str], changes: Changes) -> None:
        async def read(user_id: str) -> None:
            user = await self._okta.user(user_id)
            if user is None:
                changes.gone.add(user_id)
            else:
                changes.users[user_id] = user
            self._check_limit(changes)

        await each_concurrently(ids, read, self._concurrency)

    async def _read_groups_of(self, ids: list[str], changes: Changes) -> None:
        async def read(user_id: str) -> None:
            groups = await self._okta.groups_of_user(user_id)
            if groups is None:  # deleted since its other reads
                changes.gone.add(user_id)
                changes.users.pop(user_id, None)
            else:
                changes.groups_of[user_id] = groups

        await each_concurrently(ids, read, self._concurrency)

    async def _read_groups(self, ids: list[str], changes: Changes) -> None:
        async def read(group_id: str) -> None:
            group = await self._okta.group(group_id)
            if group is None:
                changes.gone_groups.add(group_id)
            else:
                changes.groups[group_id] = group

        await each_concurrently(ids, read, self._concurrency)

    async def _read_members(self, since: str | None, explained: set[str],
                            changes: Changes) -> None:
        """Members read whole where ``needs_members`` says so: a group come into scope, or
        one whose members moved after ``since`` (the position's time) with no event naming
        them (None: events alone were read, so nothing is unexplained)."""
        def unexplained(group: OktaGroup) -> bool:
            moved = group.last_membership_updated or ""
            return since is not None and moved > since and group.id not in explained

        todo = [g for g in changes.groups.values() if self._needs_members(g, unexplained(g))]

        async def read(group: OktaGroup) -> None:
            members: list[str] = []
            async for page in self._okta.member_pages(group.id):
                members.extend(page.items)
            changes.members_of[group.id] = members

        await each_concurrently(todo, read, self._concurrency)
