"""The run's on-disk index: what this run read from Okta and the targets, in SQLite.

Anything that must see every user — collision detection, the accounts no Okta user maps to,
the removals held back until every listing is complete — is answered from here rather than
from memory, so a million-user directory costs disk, not RAM. SQLite (stdlib) because its
transactions are crash-safe, which the resumable checkpoint builds on, and because an index
beats a Python dict of a million objects in memory.

The store is per run and per app (``<state dir>/<app>/run.db``) and is also the checkpoint:
every Okta page is stored in the same transaction as the cursor that follows it, every write
that lands updates the stored view of its target (write-through), and the users phase records
a low-water mark below which every user is done. A run killed at any instant therefore resumes
from its cursors and its mark, redoing at most the work that was in flight. It is thrown away
when the run finishes.

Why SQLite and not a JSON file renamed into place: the checkpoint must move with every page
and every batch of completed users, and must agree with the index it describes; one database
transaction gives both atomically, and WAL mode keeps it cheap. A power loss may lose the last
few transactions (``synchronous=NORMAL``), never consistency: the resume then redoes a little
more, and every write is safe to repeat.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

from oktasync.config import ATTRIBUTE_GROUP_TYPE, ATTRIBUTE_ID_PREFIX, AttributeGroup
from oktasync.db import transaction
from oktasync.models import (
    DELETED_REASON,
    UNMAPPED_REASON,
    OktaGroup,
    OktaUser,
    Operation,
    OpKind,
    TargetAccount,
    name_key,
)
from oktasync.ownership import (
    DRIFT_ACCOUNTS_SQL,
    DRIFT_MEMBERS_SQL,
    FEED_OWNER_COLUMNS,
    FEED_OWNER_JOIN,
    LOOKALIKE_SQL,
    OWNED_MEMBERSHIPS_SQL,
    OWNED_UNLISTED_SQL,
    OWNED_UNMATCHED_SQL,
    attach,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS okta_users (
    id TEXT PRIMARY KEY, login TEXT NOT NULL, email TEXT,
    first_name TEXT, last_name TEXT, display_name TEXT, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS okta_names (
    rule INTEGER NOT NULL, username TEXT NOT NULL, user_id TEXT NOT NULL,
    PRIMARY KEY (rule, username, user_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS okta_groups (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, target_name TEXT,
    in_scope INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS okta_members (
    group_id TEXT NOT NULL, user_id TEXT NOT NULL, PRIMARY KEY (user_id, group_id))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS target_accounts (
    target TEXT NOT NULL, key TEXT NOT NULL, username TEXT NOT NULL, email TEXT,
    display_name TEXT, active INTEGER, PRIMARY KEY (target, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS target_members (
    target TEXT NOT NULL, user_key TEXT NOT NULL, group_key TEXT NOT NULL,
    PRIMARY KEY (target, user_key, group_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS target_groups (
    target TEXT NOT NULL, key TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (target, key))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS matched (
    target TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (target, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (
    name TEXT PRIMARY KEY, next_url TEXT, done INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS intents (
    target TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (target, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS landed (
    target TEXT NOT NULL, kind TEXT NOT NULL, user_key TEXT NOT NULL, group_key TEXT NOT NULL,
    PRIMARY KEY (target, kind, user_key, group_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS problems (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, phase TEXT NOT NULL,
    user_key TEXT NOT NULL, kind TEXT NOT NULL, operation TEXT NOT NULL, username TEXT NOT NULL,
    okta_id TEXT NOT NULL, login TEXT NOT NULL, grp TEXT NOT NULL, reason TEXT NOT NULL,
    UNIQUE (target, kind, operation, username, okta_id, grp, reason));
CREATE TABLE IF NOT EXISTS pending (user_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_scope (
    criterion TEXT NOT NULL, user_id TEXT NOT NULL, PRIMARY KEY (criterion, user_id))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS removals (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, kind TEXT NOT NULL,
    username TEXT NOT NULL, okta_id TEXT, grp TEXT NOT NULL, grp_key TEXT NOT NULL,
    before TEXT, after TEXT, reason TEXT, UNIQUE (target, kind, username, grp_key));
"""

# 2: removals are unique on the group key, not its spelling; 3: an account's status may be
# unknown (NULL), create intents, landed writes and problems are kept; 4: kept after a complete
# run as the state store, with the users an incremental run must try again (``pending``);
# 5: who is in each user scope criterion (``user_scope``)
SCHEMA_VERSION = 5
USER_COLUMNS = "id, login, email, first_name, last_name, display_name, status"


# attribute group ids sort from ATTRIBUTE_ID_PREFIX ("attr:") up to, not including, this
ATTRIBUTE_ID_END = ATTRIBUTE_ID_PREFIX[:-1] + chr(ord(ATTRIBUTE_ID_PREFIX[-1]) + 1)
SEP = "\x1f"  # joins names in one column; never part of a user or group name we accept


# (kind, operation, username, okta_id, login, group, reason), '' for what does not apply
Problem = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FeedRow:
    """Everything the users phase needs about one Okta user on one target, in one row."""

    username: str
    user: OktaUser
    groups: tuple[str, ...]  # target names of the user's in-scope Okta groups
    account: TargetAccount | None  # the target account at ``username``, if read
    account_groups: frozenset[str]  # its group keys
    owner: tuple[str, str | None] | None  # (app, Okta id) that owns ``username`` here
    synced_as: str | None  # the username this app last synced this Okta user as
    # (user_filter, required_groups, okta_app_id): whether the user passes each on this
    # target (True where the target does not restrict by it)
    passes: tuple[bool, bool, bool] = (True, True, True)


FEED_SQL = f"""
SELECT u.id, n.username, u.login, u.email, u.first_name, u.last_name, u.display_name, u.status,
  (SELECT group_concat(g.target_name, '{SEP}') FROM okta_members m JOIN okta_groups g
     ON g.id = m.group_id WHERE m.user_id = u.id AND g.in_scope = 1),
  a.username, a.email, a.display_name, a.active,
  (SELECT group_concat(tm.group_key, '{SEP}') FROM target_members tm
     WHERE tm.target = :target AND tm.user_key = n.username),
  {FEED_OWNER_COLUMNS},
  (:filter IS NULL OR EXISTS (SELECT 1 FROM user_scope s
     WHERE s.criterion = :filter AND s.user_id = u.id)),
  (:groups IS NULL OR EXISTS (SELECT 1 FROM okta_members m WHERE m.user_id = u.id
     AND m.group_id IN (SELECT value FROM json_each(:groups)))),
  (:app_users IS NULL OR EXISTS (SELECT 1 FROM user_scope s
     WHERE s.criterion = :app_users AND s.user_id = u.id))
FROM okta_names n
JOIN okta_users u ON u.id = n.user_id
LEFT JOIN target_accounts a ON a.target = :target AND a.key = n.username
{FEED_OWNER_JOIN}
WHERE n.rule = :rule AND (:after IS NULL OR n.username > :after)
  AND (:only = 0 OR n.username IN (SELECT c.username FROM okta_names c
                                   WHERE c.rule = :rule AND c.user_id IN affected))
ORDER BY n.username, n.user_id
"""


INSERT_ACCOUNT = "INSERT OR REPLACE INTO target_accounts VALUES (?,?,?,?,?,?)"
INSERT_LANDED = "INSERT OR IGNORE INTO landed VALUES (?,?,?,?)"
INSERT_PROBLEM = ("INSERT OR IGNORE INTO problems (target, phase, user_key, kind, operation, "
                  "username, okta_id, login, grp, reason) VALUES (?,?,?,?,?,?,?,?,?,?)")
PROBLEM_COLUMNS = ("kind", "operation", "username", "okta_id", "login", "grp", "reason")
INSERT_MEMBER = "INSERT OR IGNORE INTO target_members VALUES (?,?,?)"
INSERT_MATCHED = "INSERT OR IGNORE INTO matched VALUES (?,?)"


def _account_row(target: str, a: TargetAccount) -> tuple[Any, ...]:
    return (target, a.key, a.username, a.email, a.display_name, _flag(a.active))


def _flag(active: bool | None) -> int | None:
    return None if active is None else int(active)


def _active(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def _feed_row(r: Sequence[Any]) -> FeedRow:
    user = OktaUser(id=r[0], login=r[2], email=r[3], first_name=r[4], last_name=r[5],
                    display_name=r[6], status=r[7])
    account = None if r[9] is None else TargetAccount(r[9], r[10], r[11], _active(r[12]))
    return FeedRow(
        username=r[1], user=user,
        groups=tuple(sorted(r[8].split(SEP))) if r[8] else (),
        account=account,
        account_groups=frozenset(r[13].split(SEP)) if r[13] else frozenset(),
        owner=None if r[14] is None else (r[14], r[15]),
        synced_as=r[16], passes=(bool(r[17]), bool(r[18]), bool(r[19])))


@dataclass(frozen=True, slots=True)
class ScopeKeys:
    """One target's user scope as the feed asks the run index: the ``user_scope`` criterion
    of its filter and of its app's users, the Okta ids of its required groups (None: not
    restricted by it)."""

    filter: str | None = None
    app_users: str | None = None
    groups: tuple[str, ...] | None = None


def filter_criterion(expression: str) -> str:
    """The ``user_scope`` rows of the users a ``user_filter`` selects."""
    return f"filter:{expression}"


def app_criterion(app_id: str) -> str:
    """The ``user_scope`` rows of the users assigned to an Okta app instance."""
    return f"app:{app_id}"


def cursor_name(*parts: str) -> str:
    """The name of a cursor or flag in the run index: ``okta:users``, ``target:jira:read``."""
    return ":".join(parts)


class RunStore:
    """One run's index. Writes are batched per page; commits happen at page boundaries."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                               "PRAGMA temp_store=MEMORY; PRAGMA cache_size=-16000;")
        self._db.executescript(SCHEMA)
        # the Okta users an incremental run syncs again (this connection's own, never saved)
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS affected (user_id TEXT PRIMARY KEY)")
        # a change is a call, or one row for an INSERT statement (the str)
        self._deferred: list[tuple[Callable[..., None] | str, tuple[Any, ...]]] = []
        self._appended: dict[str, list[tuple[Any, ...]]] = {}  # see _defer_append

    def defer(self, change: Callable[..., None], *args: Any) -> None:
        """Queue a small change for the next checkpoint's transaction: one commit for many
        writes, and a change is never durable without the mark that covers it."""
        self._deferred.append((change, args))

    def _defer_row(self, statement: str, row: tuple[Any, ...]) -> None:
        """Queue one row of an INSERT; neighbouring rows of the same statement are flushed by
        one ``executemany`` (most writes of a run are memberships and creates, one row each)."""
        self._deferred.append((statement, row))

    def _defer_append(self, statement: str, row: tuple[Any, ...]) -> None:
        """Queue one row of a table only ever added to (matched keys, landed writes, problems):
        no other change reads or moves it, so its rows are flushed together, out of the order
        of the rest — one ``executemany`` per table and checkpoint."""
        self._appended.setdefault(statement, []).append(row)

    def defer_matched(self, target: str, key: str) -> None:
        self._defer_append(INSERT_MATCHED, (target, key))

    def defer_account(self, target: str, account: TargetAccount) -> None:
        self._defer_row(INSERT_ACCOUNT, _account_row(target, account))

    def defer_member(self, target: str, group: str, username: str) -> None:
        self._defer_row(INSERT_MEMBER, (target, name_key(username), name_key(group)))

    def defer_landed(self, target: str, op: Operation) -> None:
        """A write that landed: one row per change, however often it was sent (a repeat after
        a lost answer or a kill is the same change), so counts are what the servers applied."""
        self._defer_append(INSERT_LANDED, (target, op.kind, name_key(op.username),
                                           name_key(op.group) if op.group else ""))

    def defer_problem(self, target: str, phase: str, user_key: str, problem: Problem) -> None:
        """A finding or a failed write, listed once however many segments of a resumed run
        found it (the row is unique on what it says)."""
        self._defer_append(INSERT_PROBLEM, (target, phase, user_key, *problem))

    def flush_deferred(self) -> None:
        """Apply the queued changes in the order they were queued (a rename must meet the
        rows written before it), merging each run of same-statement rows."""
        changes, self._deferred = self._deferred, []
        for change, group in groupby(changes, key=itemgetter(0)):
            if isinstance(change, str):
                self._db.executemany(change, [row for _, row in group])
            else:
                for _, args in group:
                    change(*args)
        appended, self._appended = self._appended, {}
        for statement, rows in appended.items():
            self._db.executemany(statement, rows)

    @classmethod
    def open_existing(cls, path: Path) -> RunStore:
        """Open a checkpoint left by an interrupted run; ``sqlite3.DatabaseError`` when it is
        not a readable run index (truncated, corrupt, not ours)."""
        with open(path, "rb") as handle:
            if handle.read(16) != b"SQLite format 3\x00":
                raise sqlite3.DatabaseError("not an oktasync checkpoint (bad header)")
        store = cls(path)
        try:
            store._db.execute("PRAGMA quick_check").fetchone()
            if "schema_version" not in store.meta():
                raise sqlite3.DatabaseError("no run metadata in it")
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        self._db.close()

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """One atomic step of the run: a page and its cursor, a mark and its claims."""
        return transaction(self._db)

    # -- checkpoint: meta, cursors, progress --------------------------------------------------
    def set_meta(self, **values: Any) -> None:
        self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?,?)",
                             [(k, json.dumps(v)) for k, v in values.items()])

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    def cursor(self, name: str) -> tuple[str | None, bool]:
        """(next URL, done) of a listing; (None, False) when it has not started."""
        row = self._db.execute("SELECT next_url, done FROM cursors WHERE name = ?",
                               (name,)).fetchone()
        return (None, False) if row is None else (row[0], bool(row[1]))

    def set_cursor(self, name: str, next_url: str | None, done: bool) -> None:
        self._db.execute("INSERT OR REPLACE INTO cursors VALUES (?,?,?)",
                         (name, next_url, int(done)))

    def forget_target(self, target: str) -> None:
        """Drop a target's partly read state so it can be read again from the start."""
        for table in ("target_accounts", "target_members", "target_groups"):
            self._db.execute(f"DELETE FROM {table} WHERE target = ?", (target,))

    def delete(self) -> None:
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)

    # -- Okta ----------------------------------------------------------------------------
    def add_okta_users(self, users: Sequence[OktaUser],
                       namers: Sequence[Callable[[OktaUser], str]], *,
                       attribute_groups: Callable[[OktaUser], Sequence[AttributeGroup]]) -> None:
        """A page of Okta users, with the username each of the app's username rules gives
        them (``namers[i]`` is rule ``i``; targets with the same rule share one), and the
        attribute groups their profiles put them in (``AppConfig.attribute_groups_of``)."""
        self._db.executemany(
            f"INSERT OR REPLACE INTO okta_users ({USER_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
            [(u.id, u.login, u.email, u.first_name, u.last_name, u.display_name, u.status)
             for u in users])
        self._db.executemany("INSERT OR REPLACE INTO okta_names VALUES (?,?,?)",
                             [(rule, name(u), u.id) for rule, name in enumerate(namers)
                              for u in users])
        self._set_attribute_memberships(users, attribute_groups)

    def _set_attribute_memberships(
        self, users: Sequence[OktaUser],
        attribute_groups: Callable[[OktaUser], Sequence[AttributeGroup]],
    ) -> None:
        """Where attribute memberships are derived, whenever a user is stored (a full listing
        or a user read again): the user's old attribute memberships go first, so a changed or
        emptied department moves or ends its membership. A group's spelling is the smallest of
        the values that make it (the same whatever order users are read in)."""
        self._db.executemany(
            "DELETE FROM okta_members WHERE user_id = ? AND group_id >= ? AND group_id < ?",
            [(u.id, ATTRIBUTE_ID_PREFIX, ATTRIBUTE_ID_END) for u in users])
        memberships = [(u.id, g) for u in users for g in attribute_groups(u)]
        if not memberships:
            return
        self._db.executemany(
            "INSERT INTO okta_groups VALUES (?,?,?,?,1) ON CONFLICT (id) DO UPDATE SET "
            "name = excluded.name, target_name = excluded.target_name "
            "WHERE excluded.name < okta_groups.name",
            [(g.id, g.name, ATTRIBUTE_GROUP_TYPE, g.target_name) for _, g in memberships])
        self._db.executemany("INSERT OR IGNORE INTO okta_members VALUES (?,?)",
                             [(g.id, user_id) for user_id, g in memberships])

    def attribute_groups(self) -> list[AttributeGroup]:
        """The attribute groups the stored users are in, by id."""
        return [AttributeGroup(*row) for row in self._db.execute(
            "SELECT id, name, target_name FROM okta_groups WHERE type = ? ORDER BY id",
            (ATTRIBUTE_GROUP_TYPE,))]

    def add_okta_groups(self, groups: Iterable[tuple[OktaGroup, str | None]]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO okta_groups VALUES (?,?,?,?,?)",
            [(g.id, g.name, g.type, target, int(target is not None)) for g, target in groups])

    def add_okta_members(self, group_id: str, user_ids: Sequence[str]) -> None:
        self._db.executemany("INSERT OR IGNORE INTO okta_members VALUES (?,?)",
                             [(group_id, u) for u in user_ids])

    def add_in_scope(self, criterion: str, user_ids: Sequence[str]) -> None:
        """Users a scope criterion selects (a page of its listing)."""
        self._db.executemany("INSERT OR IGNORE INTO user_scope VALUES (?,?)",
                             [(criterion, u) for u in user_ids])

    def set_in_scope(self, criterion: str, user_ids: Iterable[str], selected: set[str]) -> None:
        """A criterion evaluated again for a few users (an incremental run): in when selected."""
        ids = list(user_ids)
        self._db.executemany("DELETE FROM user_scope WHERE criterion = ? AND user_id = ?",
                             [(criterion, u) for u in ids])
        self.add_in_scope(criterion, [u for u in ids if u in selected])

    def forget_in_scope(self, criterion: str) -> None:
        """A criterion's listing read again from its start."""
        self._db.execute("DELETE FROM user_scope WHERE criterion = ?", (criterion,))

    def okta_member_count(self, group_id: str) -> int:
        """Members read of one group (a scan of every membership: only when a listing is
        resumed in its middle)."""
        return int(self._db.execute("SELECT COUNT(*) FROM okta_members WHERE group_id = ?",
                                    (group_id,)).fetchone()[0])

    def forget_okta_members(self, group_id: str) -> None:
        """A member listing read again from its start forgets what it read before (a scan of
        every membership: only after a listing fell short)."""
        self._db.execute("DELETE FROM okta_members WHERE group_id = ?", (group_id,))

    def in_scope_membership_count(self) -> int:
        """Memberships read from Okta in in-scope groups (one listing's size, for the guard
        against listings that shrank since the last complete run). Attribute groups are left
        out: their memberships are derived from the user listing, not read."""
        return int(self._db.execute(
            "SELECT COUNT(*) FROM okta_members m JOIN okta_groups g ON g.id = m.group_id "
            "WHERE g.in_scope = 1 AND g.type != ?", (ATTRIBUTE_GROUP_TYPE,)).fetchone()[0])

    def attach_ownership(self, path: Path) -> None:
        """Read the ownership database in the same queries as the run index (``own``)."""
        attach(self._db, path)

    def feed(self, target: str, app: str, rule: int, after: str | None,
             only_affected: bool = False, scope: ScopeKeys | None = None,
             ) -> Iterator[list[FeedRow]]:
        """The users phase's input for one target (whose usernames come from ``rule``),
        grouped by username, in username order, in one streaming query: no per-user round
        trips, and nothing held in memory. A group of two or more rows is a collision.
        ``only_affected``: the usernames of the affected users (``mark_affected``) only,
        with every other Okta user on the same username (a collision stays one)."""
        keys = scope or ScopeKeys()
        rows = self._db.execute(FEED_SQL, {
            "target": target, "app": app, "rule": rule, "after": after,
            "only": int(only_affected), "filter": keys.filter, "app_users": keys.app_users,
            "groups": None if keys.groups is None else json.dumps(list(keys.groups))})
        batch: list[FeedRow] = []
        for raw in rows:
            row = _feed_row(raw)
            if batch and batch[0].username != row.username:
                yield batch
                batch = []
            batch.append(row)
        if batch:
            yield batch

    def users_up_to(self, rule: int, username: str | None) -> int:
        """How many Okta users sort at or below a users-phase mark (progress reports)."""
        if username is None:
            return 0
        return int(self._db.execute("SELECT COUNT(*) FROM okta_names WHERE rule = ? AND "
                                    "username <= ?", (rule, username)).fetchone()[0])

    def okta_user_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM okta_users").fetchone()[0])

    # -- targets (StateSink) ---------------------------------------------------------------
    def add_accounts(self, target: str, accounts: Sequence[TargetAccount]) -> None:
        self._db.executemany(INSERT_ACCOUNT, [_account_row(target, a) for a in accounts])

    def add_members(self, target: str, group: str, usernames: Sequence[str]) -> None:
        key = name_key(group)
        self._db.executemany(INSERT_MEMBER, [(target, name_key(u), key) for u in usernames])

    def add_group(self, target: str, name: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO target_groups VALUES (?,?,?)",
                         (target, name_key(name), name))

    def set_account(self, target: str, account: TargetAccount) -> None:
        """Write-through: what a landed write made true on the target."""
        self.add_accounts(target, [account])

    def rename_account(self, target: str, old_key: str, account: TargetAccount) -> None:
        self._db.execute("DELETE FROM target_accounts WHERE target = ? AND key = ?",
                         (target, old_key))
        self._db.execute("UPDATE OR REPLACE target_members SET user_key = ? WHERE target = ? "
                         "AND user_key = ?", (account.key, target, old_key))
        self.add_accounts(target, [account])

    def remove_member(self, target: str, group: str, username: str) -> None:
        self._db.execute("DELETE FROM target_members WHERE target = ? AND user_key = ? AND "
                         "group_key = ?", (target, name_key(username), name_key(group)))

    def account(self, target: str, key: str) -> TargetAccount | None:
        row = self._db.execute(
            "SELECT username, email, display_name, active FROM target_accounts "
            "WHERE target = ? AND key = ?", (target, key)).fetchone()
        return None if row is None else TargetAccount(row[0], row[1], row[2], _active(row[3]))

    def account_groups(self, target: str, key: str) -> frozenset[str]:
        rows = self._db.execute("SELECT group_key FROM target_members WHERE target = ? AND "
                                "user_key = ?", (target, key))
        return frozenset(r[0] for r in rows)

    def target_groups(self, target: str) -> list[str]:
        return [r[0] for r in self._db.execute(
            "SELECT name FROM target_groups WHERE target = ?", (target,))]

    def unmatched_accounts(self, target: str) -> Iterator[TargetAccount]:
        rows = self._db.execute(
            "SELECT username, email, display_name, active FROM target_accounts a "
            "WHERE target = ? AND NOT EXISTS (SELECT 1 FROM matched m "
            "WHERE m.target = a.target AND m.key = a.key) ORDER BY key", (target,))
        for row in rows:
            yield TargetAccount(row[0], row[1], row[2], _active(row[3]))

    def owned_unlisted(self, app: str) -> list[str]:
        """Okta users ``app`` synced that the user listing did not return."""
        return [r[0] for r in self._db.execute(OWNED_UNLISTED_SQL, (app,))]

    def owned_unmatched(self, app: str, target: str) -> Iterator[tuple[str, bool]]:
        """Accounts ``app`` synced on ``target`` that no Okta user of this run maps to, each
        with whether its Okta user no longer exists (deleted in Okta: in no listing)."""
        rows = self._db.execute(OWNED_UNMATCHED_SQL, (app, target))
        for key, deleted in rows.fetchall():
            yield key, bool(deleted)

    # -- the report: what landed, what went wrong -------------------------------------------
    def landed_counts(self, target: str) -> dict[str, int]:
        return {kind: int(n) for kind, n in self._db.execute(
            "SELECT kind, COUNT(*) FROM landed WHERE target = ? GROUP BY kind", (target,))}

    def problem_counts(self, target: str) -> dict[str, int]:
        return {kind: int(n) for kind, n in self._db.execute(
            "SELECT kind, COUNT(*) FROM problems WHERE target = ? GROUP BY kind", (target,))}

    def problems(self, target: str | None = None, limit: int = -1) -> Iterator[Problem]:
        """Problems in the order they were found (of one target, or all with the target
        first), streamed: a run with a million findings is not held in memory."""
        columns = ", ".join(PROBLEM_COLUMNS)
        if target is None:
            rows = self._db.execute(f"SELECT target, {columns} FROM problems ORDER BY seq "
                                    "LIMIT ?", (limit,))
        else:
            rows = self._db.execute(f"SELECT {columns} FROM problems WHERE target = ? "
                                    "ORDER BY seq LIMIT ?", (target, limit))
        for row in rows:
            yield tuple(row)

    def forget_redone(self, target: str, mark: str | None, users_done: bool,
                      groups_done: bool) -> None:
        """On resume, forget the failures of work that will be done again (users above the
        mark, the group creates of an unfinished groups phase, removals not yet applied): a
        write that fails in one segment and lands in the next is not a failure of the run."""
        failed = "kind IN ('failed', 'refused')"
        if not users_done:
            self._db.execute(f"DELETE FROM problems WHERE target = ? AND phase = 'users' AND "
                             f"{failed} AND (? IS NULL OR user_key > ?)", (target, mark, mark))
        if not groups_done:
            self._db.execute(f"DELETE FROM problems WHERE target = ? AND phase = 'groups' AND "
                             f"{failed}", (target,))
        self._db.execute("DELETE FROM problems WHERE target = ? AND phase = 'removals' AND "
                         "kind = 'failed'", (target,))

    # -- the state store: an incremental run changes the last complete run's index ----------
    def begin_incremental(self, *, keep_intents: bool) -> None:
        """Forget what the last run did (its reports, its phases' marks, its removals), keep
        what it read and wrote. Intents are kept after a run that did not finish: one of its
        creates may have landed without an answer."""
        with self.transaction():
            for table in ("matched", "landed", "problems", "removals"):
                self._db.execute(f"DELETE FROM {table}")
            if not keep_intents:
                self._db.execute("DELETE FROM intents")
            self._db.execute("DELETE FROM cursors WHERE name LIKE 'target:%:users' OR name "
                             "LIKE 'target:%:groups' OR name LIKE 'target:%:unmapped' OR "
                             "name = 'removals:gate'")

    def mark_affected(self, user_ids: Iterable[str]) -> None:
        self._db.executemany("INSERT OR IGNORE INTO affected VALUES (?)",
                             [(u,) for u in user_ids])

    def known_users(self, user_ids: Iterable[str]) -> set[str]:
        """Which of these Okta users the store holds."""
        ids = list(user_ids)
        return {r[0] for r in self._db.execute(
            "SELECT id FROM okta_users WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),))}

    def as_stored(self, users: Iterable[OktaUser], *,
                  attribute_groups: Callable[[OktaUser], Sequence[AttributeGroup]]) -> set[str]:
        """Which of these users the store already holds exactly so (re-read by an overlap,
        or changed and changed back), attribute groups included: nothing to sync for them."""
        by_id = {u.id: u for u in users}
        rows = self._db.execute(
            f"SELECT {USER_COLUMNS} FROM okta_users WHERE id IN "
            "(SELECT value FROM json_each(?))", (json.dumps(list(by_id)),))
        return {r[0] for r in rows
                if OktaUser(id=r[0], login=r[1], email=r[2], first_name=r[3], last_name=r[4],
                            display_name=r[5], status=r[6],
                            attributes=by_id[r[0]].attributes) == by_id[r[0]]
                and self._attribute_group_ids(r[0]) == {
                    g.id for g in attribute_groups(by_id[r[0]])}}

    def _attribute_group_ids(self, user_id: str) -> set[str]:
        return {r[0] for r in self._db.execute(
            "SELECT group_id FROM okta_members WHERE user_id = ? AND group_id >= ? AND "
            "group_id < ?", (user_id, ATTRIBUTE_ID_PREFIX, ATTRIBUTE_ID_END))}

    def groups_stored(self, user_id: str, group_ids: Iterable[str],
                      tracked: Collection[str]) -> bool:
        """Whether the store holds exactly these memberships among the ``tracked`` groups
        (those a full run reads the members of: in scope, or required by a user scope)."""
        stored = {r[0] for r in self._db.execute(
            "SELECT group_id FROM okta_members WHERE user_id = ?", (user_id,))}
        return stored & set(tracked) == set(group_ids) & set(tracked)

    def replace_okta_users(
        self, users: Sequence[OktaUser], namers: Sequence[Callable[[OktaUser], str]], *,
        attribute_groups: Callable[[OktaUser], Sequence[AttributeGroup]],
    ) -> None:
        """Users read again: their old usernames go first (a changed login moves them), and
        their attribute memberships are derived again (``add_okta_users``)."""
        self._db.executemany("DELETE FROM okta_names WHERE user_id = ?",
                             [(u.id,) for u in users])
        self.add_okta_users(users, namers, attribute_groups=attribute_groups)

    def remove_okta_users(self, user_ids: Iterable[str]) -> None:
        """Users Okta no longer has (deleted)."""
        rows = [(u,) for u in user_ids]
        for table, column in (("okta_users", "id"), ("okta_names", "user_id"),
                              ("okta_members", "user_id")):
            self._db.executemany(f"DELETE FROM {table} WHERE {column} = ?", rows)

    def set_user_groups(self, user_id: str, group_ids: Iterable[str],
                        tracked: Collection[str]) -> None:
        """A user's memberships as read again, among the ``tracked`` groups (as a full run
        stores them); its attribute groups are not Okta's to say
        (``_set_attribute_memberships``)."""
        self._db.execute("DELETE FROM okta_members WHERE user_id = ? AND NOT (group_id >= ? "
                         "AND group_id < ?)", (user_id, ATTRIBUTE_ID_PREFIX, ATTRIBUTE_ID_END))
        self._db.executemany("INSERT OR IGNORE INTO okta_members VALUES (?,?)",
                             [(g, user_id) for g in set(group_ids) & set(tracked)])

    def group_members(self, group_id: str) -> set[str]:
        return {r[0] for r in self._db.execute(
            "SELECT user_id FROM okta_members WHERE group_id = ?", (group_id,))}

    def okta_group_list(self) -> list[OktaGroup]:
        """Every Okta group the store knows, in the order Okta listed them (attribute groups
        are no Okta groups)."""
        return [OktaGroup(r[0], r[1], r[2]) for r in self._db.execute(
            "SELECT id, name, type FROM okta_groups WHERE type != ? ORDER BY rowid",
            (ATTRIBUTE_GROUP_TYPE,))]

    def remove_okta_groups(self, group_ids: Iterable[str]) -> None:
        rows = [(g,) for g in group_ids]
        self._db.executemany("DELETE FROM okta_groups WHERE id = ?", rows)
        self._db.executemany("DELETE FROM okta_members WHERE group_id = ?", rows)

    def pending_users(self) -> list[str]:
        """Users a run could not finish (a failed write or lookup): tried again next run."""
        return [r[0] for r in self._db.execute("SELECT user_id FROM pending")]

    def add_pending(self, user_ids: Iterable[str]) -> None:
        self._db.executemany("INSERT OR IGNORE INTO pending VALUES (?)", [(u,) for u in user_ids])

    def keep_pending(self) -> None:
        """After a run: the users it failed for are the ones to try again, and only those."""
        self._db.execute("DELETE FROM pending")
        self._db.execute("INSERT OR IGNORE INTO pending SELECT DISTINCT okta_id FROM problems "
                         "WHERE kind IN ('failed', 'refused') AND okta_id != ''")

    # -- drift: the state store (``prev``) against what this run read ---------------------
    def attach_previous(self, path: Path) -> None:
        """The state store, read beside this run's read (``--reconcile``)."""
        self._db.execute("ATTACH DATABASE ? AS prev", (str(path),))

    def drifted_accounts(self, app: str, target: str
                         ) -> Iterator[tuple[str, str | None, TargetAccount,
                                             TargetAccount | None]]:
        """Each account ``app`` synced on ``target``: as the store has it, as read now."""
        for r in self._db.execute(DRIFT_ACCOUNTS_SQL, (app, target)).fetchall():
            was = TargetAccount(r[2], r[3], r[4], _active(r[5]))
            now = None if r[6] is None else TargetAccount(r[6], r[7], r[8], _active(r[9]))
            yield r[0], r[1], was, now

    def drifted_members(self, app: str, target: str, groups: Sequence[str]
                        ) -> list[tuple[str, str | None, str, bool]]:
        """(account, Okta id, group, was a member) for memberships in ``groups`` of read
        accounts that the store and this read disagree on."""
        return [(r[0], r[1], r[2], bool(r[3])) for r in self._db.execute(
            DRIFT_MEMBERS_SQL, {"app": app, "target": target,
                                "groups": json.dumps(list(groups))})]

    def lookalikes(self, target: str, email: str) -> list[str]:
        return [r[0] for r in self._db.execute(LOOKALIKE_SQL, (target, email))]

    # -- creates written down before they are sent --------------------------------------------
    def has_intent(self, target: str, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM intents WHERE target = ? AND key = ?",
                                (target, key)).fetchone() is not None

    def add_intents(self, rows: Sequence[tuple[str, str]]) -> None:
        """Commit creates about to be sent (their own small transaction): after a kill, an
        "already exists" for one of them may be our own create, whose answer never came."""
        with self.transaction():
            self._db.executemany("INSERT OR IGNORE INTO intents VALUES (?,?)", rows)

    # -- removals held for the gate ---------------------------------------------------------
    def hold_removals(self, ops: Sequence[Operation]) -> None:
        """Removals wait here for the gate; a user redone after a resume adds no duplicate."""
        self._db.executemany(
            "INSERT OR IGNORE INTO removals (target, kind, username, okta_id, grp, grp_key, "
            "before, after, reason) VALUES (?,?,?,?,?,?,?,?,?)",
            [(o.target, o.kind.value, name_key(o.username), o.okta_id, o.group or "",
              name_key(o.group or ""), o.before, o.after, o.reason) for o in ops])

    def held_removals(self, target: str) -> list[tuple[int, Operation]]:
        """Removals not yet applied, with the row number that ``removal_done`` deletes."""
        rows = self._db.execute(
            "SELECT seq, kind, username, okta_id, grp, before, after, reason FROM removals "
            "WHERE target = ? ORDER BY kind DESC, seq", (target,))
        return [(r[0], Operation(OpKind(r[1]), target, username=r[2], okta_id=r[3],
                                 group=r[4] or None, before=r[5] or "", after=r[6] or "",
                                 reason=r[7] or "")) for r in rows]

    def removal_done(self, seq: int) -> None:
        self._db.execute("DELETE FROM removals WHERE seq = ?", (seq,))

    def clear_unmapped_removals(self, target: str) -> None:
        """Unmapped-account removals are planned in one go; a resume plans them again."""
        self._db.execute("DELETE FROM removals WHERE target = ? AND reason IN (?, ?)",
                         (target, UNMAPPED_REASON, DELETED_REASON))

    def owned_memberships(self, app: str, target: str, groups: Sequence[str]) -> int:
        """Memberships the accounts ``app`` synced on ``target`` hold in ``groups`` (keys):
        the base of ``max_membership_removals``."""
        return int(self._db.execute(OWNED_MEMBERSHIPS_SQL,
                                    (target, app, json.dumps(list(groups)))).fetchone()[0])

    def removals_of(self, target: str, kind: OpKind) -> list[tuple[int, str, str | None]]:
        """(row number, username, Okta id) of the held removals of one kind, in plan order."""
        return [(r[0], r[1], r[2]) for r in self._db.execute(
            "SELECT seq, username, okta_id FROM removals WHERE target = ? AND kind = ? "
            "ORDER BY seq", (target, kind.value))]

    def drop_removals(self, seqs: Iterable[int]) -> None:
        self._db.executemany("DELETE FROM removals WHERE seq = ?", [(s,) for s in seqs])

    def count_removals(self, target: str, kind: OpKind) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM removals WHERE target = ? AND "
                                    "kind = ?", (target, kind.value)).fetchone()[0])


def users_named(path: Path, username: str) -> list[str]:
    """The Okta users a state store maps to ``username`` (a name key) under any rule: read
    only, without the checks of opening a run index (the login hook answers in time)."""
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute(
            "SELECT DISTINCT user_id FROM okta_names WHERE username = ?", (username,))]
    except sqlite3.Error:
        return []
    finally:
        db.close()
