"""The run's on-disk index: what this run read from Okta and the targets, in SQLite.

Anything that must see every user — collision detection, the accounts no Okta user maps to,
the removals held back until every listing is complete — is answered from here rather than
from memory, so a million-user directory costs disk, not RAM. SQLite (stdlib) because its
transactions are crash-safe, which the resumable checkpoint builds on, and because an index
beats a Python dict of a million objects in memory.

The store is per run and per app (``<state dir>/<app>/run.db``); it is thrown away when the
run finishes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from oktasync.models import OktaGroup, OktaUser, Operation, OpKind, TargetAccount, name_key

SCHEMA = """
CREATE TABLE IF NOT EXISTS okta_users (
    id TEXT PRIMARY KEY, username TEXT NOT NULL, login TEXT NOT NULL, email TEXT,
    first_name TEXT, last_name TEXT, display_name TEXT, status TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS okta_users_username ON okta_users(username);
CREATE TABLE IF NOT EXISTS okta_groups (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, target_name TEXT,
    in_scope INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS okta_members (
    group_id TEXT NOT NULL, user_id TEXT NOT NULL, PRIMARY KEY (user_id, group_id))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS target_accounts (
    target TEXT NOT NULL, key TEXT NOT NULL, username TEXT NOT NULL, email TEXT,
    display_name TEXT, active INTEGER NOT NULL, PRIMARY KEY (target, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS target_members (
    target TEXT NOT NULL, user_key TEXT NOT NULL, group_key TEXT NOT NULL,
    PRIMARY KEY (target, user_key, group_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS target_groups (
    target TEXT NOT NULL, key TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (target, key))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS matched (
    target TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (target, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS removals (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, kind TEXT NOT NULL,
    username TEXT NOT NULL, okta_id TEXT, grp TEXT, before TEXT, after TEXT, reason TEXT);
"""

USER_COLUMNS = "id, username, login, email, first_name, last_name, display_name, status"


def _user(row: Sequence[str]) -> tuple[str, OktaUser]:
    return row[1], OktaUser(id=row[0], login=row[2], email=row[3], first_name=row[4],
                            last_name=row[5], display_name=row[6], status=row[7])


class RunStore:
    """One run's index. Writes are batched per page; commits happen at page boundaries."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                               "PRAGMA temp_store=MEMORY; PRAGMA cache_size=-16000;")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def delete(self) -> None:
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)

    # -- Okta ----------------------------------------------------------------------------
    def add_okta_users(self, users: Iterable[tuple[str, OktaUser]]) -> None:
        rows = [(u.id, username, u.login, u.email, u.first_name, u.last_name, u.display_name,
                 u.status) for username, u in users]
        self._db.executemany(
            f"INSERT OR REPLACE INTO okta_users ({USER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", rows)

    def add_okta_groups(self, groups: Iterable[tuple[OktaGroup, str | None]]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO okta_groups VALUES (?,?,?,?,?)",
            [(g.id, g.name, g.type, target, int(target is not None)) for g, target in groups])

    def add_okta_members(self, group_id: str, user_ids: Sequence[str]) -> None:
        self._db.executemany("INSERT OR IGNORE INTO okta_members VALUES (?,?)",
                             [(group_id, u) for u in user_ids])

    def okta_user_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM okta_users").fetchone()[0])

    def users_by_username(self) -> Iterator[list[tuple[str, OktaUser]]]:
        """Okta users grouped by username, in username order: a group of two or more is a
        collision, found without holding the directory in memory."""
        cursor = self._db.execute(
            f"SELECT {USER_COLUMNS} FROM okta_users ORDER BY username, id")
        batch: list[tuple[str, OktaUser]] = []
        for row in cursor:
            item = _user(row)
            if batch and batch[0][0] != item[0]:
                yield batch
                batch = []
            batch.append(item)
        if batch:
            yield batch

    def user_groups(self, user_id: str) -> tuple[str, ...]:
        """Target names of the in-scope Okta groups the user is a member of."""
        rows = self._db.execute(
            "SELECT g.target_name FROM okta_members m JOIN okta_groups g ON g.id = m.group_id "
            "WHERE m.user_id = ? AND g.in_scope = 1 ORDER BY g.target_name", (user_id,))
        return tuple(r[0] for r in rows)

    # -- targets (StateSink) ---------------------------------------------------------------
    def add_accounts(self, target: str, accounts: Sequence[TargetAccount]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO target_accounts VALUES (?,?,?,?,?,?)",
            [(target, a.key, a.username, a.email, a.display_name, int(a.active))
             for a in accounts])

    def add_members(self, target: str, group: str, usernames: Sequence[str]) -> None:
        key = name_key(group)
        self._db.executemany("INSERT OR IGNORE INTO target_members VALUES (?,?,?)",
                             [(target, name_key(u), key) for u in usernames])

    def add_group(self, target: str, name: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO target_groups VALUES (?,?,?)",
                         (target, name_key(name), name))

    def account(self, target: str, key: str) -> TargetAccount | None:
        row = self._db.execute(
            "SELECT username, email, display_name, active FROM target_accounts "
            "WHERE target = ? AND key = ?", (target, key)).fetchone()
        return None if row is None else TargetAccount(row[0], row[1], row[2], bool(row[3]))

    def account_groups(self, target: str, key: str) -> frozenset[str]:
        rows = self._db.execute("SELECT group_key FROM target_members WHERE target = ? AND "
                                "user_key = ?", (target, key))
        return frozenset(r[0] for r in rows)

    def target_groups(self, target: str) -> list[str]:
        return [r[0] for r in self._db.execute(
            "SELECT name FROM target_groups WHERE target = ?", (target,))]

    def mark_matched(self, target: str, keys: Iterable[str]) -> None:
        self._db.executemany("INSERT OR IGNORE INTO matched VALUES (?,?)",
                             [(target, k) for k in keys])

    def unmatched_accounts(self, target: str) -> Iterator[TargetAccount]:
        rows = self._db.execute(
            "SELECT username, email, display_name, active FROM target_accounts a "
            "WHERE target = ? AND NOT EXISTS (SELECT 1 FROM matched m "
            "WHERE m.target = a.target AND m.key = a.key) ORDER BY key", (target,))
        for row in rows:
            yield TargetAccount(row[0], row[1], row[2], bool(row[3]))

    def is_matched(self, target: str, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM matched WHERE target = ? AND key = ?",
                                (target, key)).fetchone() is not None

    # -- removals held for the gate ---------------------------------------------------------
    def hold_removals(self, ops: Sequence[Operation]) -> None:
        self._db.executemany(
            "INSERT INTO removals (target, kind, username, okta_id, grp, before, after, reason)"
            " VALUES (?,?,?,?,?,?,?,?)",
            [(o.target, o.kind.value, o.username, o.okta_id, o.group, o.before, o.after,
              o.reason) for o in ops])

    def held_removals(self, target: str) -> Iterator[Operation]:
        rows = self._db.execute(
            "SELECT kind, username, okta_id, grp, before, after, reason FROM removals "
            "WHERE target = ? ORDER BY kind DESC, seq", (target,))
        for r in rows:
            yield Operation(OpKind(r[0]), target, username=r[1], okta_id=r[2], group=r[3],
                            before=r[4] or "", after=r[5] or "", reason=r[6] or "")

    def count_removals(self, target: str, kind: OpKind) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM removals WHERE target = ? AND "
                                    "kind = ?", (target, kind.value)).fetchone()[0])
