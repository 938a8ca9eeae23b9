"""The reads of a full sync, into the run index: Okta's groups, users and members, and each
target's state. Each listing stores every page with its cursor in one transaction, so a
resumed run continues it where it stopped; a listing that cannot be completed stops the run
(its requests were sent with ``Context.LISTING``), and a short one is caught by its count.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import anyio
import structlog

from oktasync.concurrency import Stopper, each_concurrently
from oktasync.config import AppConfig, AttributeGroup
from oktasync.errors import ListingError, UsageError
from oktasync.models import OktaGroup, OktaUser, name_key
from oktasync.okta_source import OktaSource, Page
from oktasync.progress import RunProgress
from oktasync.runstore import RunStore, app_criterion, cursor_name, filter_criterion
from oktasync.targets.base import ReadSummary, Target
from oktasync.usernames import UsernameRule

log = structlog.get_logger("oktasync.pipeline")
# The cursor of an Okta member listing that fell short of the group's count: read it again
# from its start (an empty URL: never a real cursor).
START_OVER = ""


@dataclass(frozen=True)
class Scope:
    """Okta's groups, and those the app syncs with the target group each lands on: in-scope
    Okta groups, then (``with_attribute_groups``) the groups made from profile attributes."""

    okta_groups: list[OktaGroup]
    groups: list[OktaGroup]  # in-scope Okta groups, in listing order (their members are read)
    names: dict[str, str]  # group key -> target group name, for every group in scope
    attribute_groups: tuple[AttributeGroup, ...] = ()  # made this run: created and claimed
    # keys in scope only because this app synced them before and the configuration still
    # makes them (a department nobody is in any more): read, members removed, never created
    kept: frozenset[str] = field(default_factory=frozenset)

    def to_create(self) -> list[str]:
        """The target names of the groups a target must have."""
        return [name for key, name in self.names.items() if key not in self.kept]

    def with_attribute_groups(self, app: str, made: Iterable[AttributeGroup],
                              owned: Iterable[str]) -> Scope:
        """This scope plus the attribute groups ``made`` (derived from the users read, or
        allow-listed) and the target names of those the app synced before that the
        configuration still makes (``owned``). One landing on an in-scope Okta group's target
        name, or on another attribute's, is a usage error, as two Okta groups landing on one
        name are."""
        names, groups = dict(self.names), list(self.attribute_groups)
        attribute_of: dict[str, str] = {}
        for group in made:
            key, attribute = name_key(group.target_name), _attribute(group.id)
            if key in self.names:
                okta = dict(zip(self.names, self.groups, strict=True))[key]
                raise UsageError(
                    f"app {app}: attribute group {group.target_name!r} (from {attribute}) and "
                    f"Okta group {okta.name!r} ({okta.id}) both land on target group "
                    f"{names[key]!r}; fix attribute_groups (group, map) or group_rename/"
                    "group_exclude")
            first = attribute_of.setdefault(key, attribute)
            if first != attribute:
                raise UsageError(
                    f"app {app}: attribute groups of {first} and of {attribute} both land on "
                    f"target group {group.target_name!r}; give them different group templates "
                    "or maps")
            names.setdefault(key, group.target_name)
            groups.append(group)
        kept = {name_key(n): n for n in owned if name_key(n) not in names}
        names.update(kept)
        return replace(self, names=names, attribute_groups=tuple(groups),
                       kept=frozenset(kept))


def _attribute(group_id: str) -> str:
    """The attribute in a synthetic id ``attr:<attribute>:<value key>``."""
    return group_id.split(":", 2)[1]


class Listings:
    """One app's listings, each resumable from its cursor in the run index."""

    def __init__(self, app: AppConfig, okta: OktaSource, store: RunStore,
                 stopper: Stopper, progress: RunProgress | None = None) -> None:
        self._app, self._okta, self._store, self._stopper = app, okta, store, stopper
        self._progress = progress or RunProgress()

    def _done(self, name: str) -> bool:
        return self._store.cursor(name)[1]

    async def okta_groups(self) -> Scope:
        """Groups are few: listed again on resume rather than checkpointed page by page."""
        groups: list[OktaGroup] = []
        async for page in self._okta.group_pages():
            groups.extend(page.items)
        scope, rows = scope_of(self._app, groups)
        with self._store.transaction():
            self._store.add_okta_groups(rows)
        return scope

    async def okta_users(self, username_rules: Sequence[UsernameRule],
                         search: str | None = None, started: anyio.Event | None = None,
                         ) -> None:
        """Every Okta user, with the username each rule gives it; with ``search`` (the
        ``user_filter`` of every target) only those it selects, each stored as in its scope,
        then the users the app synced that it left out (``_outsiders``). ``started`` is set
        once Okta answered the first page (it took the filter)."""
        namers = [functools.partial(_username, rule) for rule in username_rules]
        try:
            await self._user_listing(namers, search, started)
        finally:
            if started is not None:
                started.set()
        if search is not None and not self._stopper.stopping:
            await self._outsiders(namers)

    async def _user_listing(self, namers: Sequence[Callable[[OktaUser], str]],
                            search: str | None, started: anyio.Event | None) -> None:
        name = cursor_name("okta", "users")
        start, done = self._store.cursor(name)
        if done:
            return
        task = self._progress.task("read", "okta users", done=self._store.okta_user_count())
        async for page in self._okta.user_pages(start, search):
            task.done += len(page.items)
            if started is not None:
                started.set()
            if self._stopper.stopping:
                return
            with self._store.transaction():
                self._store.add_okta_users(page.items, namers,
                                           attribute_groups=self._app.attribute_groups_of)
                if search is not None:
                    self._store.add_in_scope(filter_criterion(search),
                                             [u.id for u in page.items])
                self._store.set_cursor(name, page.next_url, page.next_url is None)
        self._progress.end(task)

    async def _outsiders(self, namers: Sequence[Callable[[OktaUser], str]]) -> None:
        """The users the app synced that a filtered listing left out, read one by one: one
        Okta still has left the filter's scope (stored, outside it: deactivated as such, not
        as deleted); one it does not have was deleted (left to the removal gate)."""
        for user_id in self._store.owned_unlisted(self._app.name):
            if self._stopper.stopping:
                return
            user = await self._okta.user(user_id)
            if user is not None:
                with self._store.transaction():
                    self._store.add_okta_users([user], namers,
                                               attribute_groups=self._app.attribute_groups_of)

    async def okta_members(self, scope: Scope) -> None:
        """The members of every in-scope group, ``okta_concurrency`` groups at a time."""
        todo = [g for g in scope.groups
                if not self._done(cursor_name("okta", "members", g.id))]

        async def read(group: OktaGroup) -> None:
            if not self._stopper.stopping:
                await self._stopper.guarded(self._members_of, group)

        await each_concurrently(todo, read, self._app.okta_concurrency)

    async def user_scopes(self, filters: Iterable[str], app_ids: Iterable[str],
                          required: Iterable[OktaGroup], scope: Scope) -> None:
        """Who each user scope criterion selects, into ``user_scope`` (filters evaluated by
        Okta's ``search``, app assignments), and the members of required groups outside the
        group scope (``okta_members``, as in-scope groups' are): the feed decides from them."""
        in_scope = {g.id for g in scope.groups}
        extra = [g for g in dict.fromkeys(required) if g.id not in in_scope
                 and not self._done(cursor_name("okta", "members", g.id))]
        await self._criterion(filter_criterion, filters, self._okta.matching_user_pages)
        await self._criterion(app_criterion, app_ids, self._okta.app_user_pages)

        async def read(group: OktaGroup) -> None:
            if not self._stopper.stopping:
                await self._stopper.guarded(self._members_of, group)

        await each_concurrently(extra, read, self._app.okta_concurrency)

    async def _criterion(self, key: Callable[[str], str], values: Iterable[str],
                         pages: Callable[[str, str | None], AsyncIterator[Page]]) -> None:
        """One listing per criterion value, page by page with its cursor."""
        for value in dict.fromkeys(values):
            criterion = key(value)
            name = cursor_name("okta", "scope", criterion)
            start, done = self._store.cursor(name)
            if done:
                continue
            if start is None:
                self._store.forget_in_scope(criterion)
            async for page in pages(value, start):
                if self._stopper.stopping:
                    return
                with self._store.transaction():
                    self._store.add_in_scope(criterion, page.items)
                    self._store.set_cursor(name, page.next_url, page.next_url is None)

    async def _members_of(self, group: OktaGroup) -> None:
        """One group's members, page by page with the cursor; the listing is done only once
        what it read matches Okta's own count of the group's members."""
        store, name = self._store, cursor_name("okta", "members", group.id)
        start, _ = store.cursor(name)
        read = 0
        if start == START_OVER:  # it fell short last time: what it read then is forgotten
            store.forget_okta_members(group.id)
            start = None
        elif start is not None:  # resumed in the middle: count the pages read before
            read = store.okta_member_count(group.id)
        async for page in self._okta.member_pages(group.id, start):
            read += len(page.items)
            with store.transaction():
                store.add_okta_members(group.id, page.items)
                store.set_cursor(name, page.next_url, False)
        await self._check_member_count(group, read)
        store.set_cursor(name, None, True)

    async def _check_member_count(self, group: OktaGroup, read: int) -> None:
        """A member listing that ends early without an error is caught by the group's count
        (``expand=stats``). A shortfall is checked against a fresh count first: the group may
        have lost members while it was read. Still short, the listing starts over next time."""
        if group.member_count is None or read >= group.member_count:
            return
        counted = await self._okta.member_count(group.id)
        if counted is None or read >= counted:
            return
        self._store.set_cursor(cursor_name("okta", "members", group.id), START_OVER, False)
        raise ListingError(
            f"Okta's member listing of group {group.name!r} ({group.id}) ended early: "
            f"{read} members read, Okta counts {counted}")

    async def target_state(self, target: Target, wanted: Sequence[str]) -> ReadSummary:
        """The target's accounts and the members of the groups it will hold, read once per
        run (a resumed run keeps what it read, with the write-through since)."""
        store = self._store
        read = cursor_name("target", target.name, "read")
        every = cursor_name("target", target.name, "all-accounts")
        active = cursor_name("target", target.name, "active-listed")
        strategy, done = store.cursor(read)
        if done:
            return ReadSummary(self._done(every), strategy or "", self._done(active))
        store.forget_target(target.name)
        summary = await target.read_state(wanted, store)
        with store.transaction():
            store.set_cursor(read, summary.strategy, True)
            store.set_cursor(every, None, summary.all_accounts)
            store.set_cursor(active, None, summary.active_listed)
        log.info("target read", target=target.name, strategy=summary.strategy)
        return summary


def scope_of(app: AppConfig, groups: list[OktaGroup]
             ) -> tuple[Scope, list[tuple[OktaGroup, str | None]]]:
    """Which groups the app syncs, onto which target names; and each group's row for the run
    index. Two in-scope groups landing on one target name is the user's mistake to fix."""
    scoped: dict[str, OktaGroup] = {}
    rows: list[tuple[OktaGroup, str | None]] = []
    for group in groups:
        target_name = None
        # group_types, group_include and group_exclude decide; group_rename names it
        if app.group_in_scope(group.name, group.type):
            target_name = app.target_group_name(group.name)
            other = scoped.setdefault(name_key(target_name), group)
            if other is not group:
                raise UsageError(
                    f"app {app.name}: Okta groups {other.name!r} ({other.id}) and "
                    f"{group.name!r} ({group.id}) both land on target group "
                    f"{target_name!r}; fix group_include/group_exclude/group_rename")
        rows.append((group, target_name))
    names = {k: app.target_group_name(g.name) for k, g in scoped.items()}
    return Scope(groups, list(scoped.values()), names), rows


def _username(rule: UsernameRule, user: OktaUser) -> str:
    return rule.username(user.login, user.email)
