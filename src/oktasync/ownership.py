"""Who owns what on each target, across runs: the ownership database (``state.db``).

Every SQL statement that names its tables is here, including the three the run index runs
against it: the run index attaches ``state.db`` read-only as ``own`` (``attach``) so that the
users phase's feed reads each account's owner in the same streaming query as everything else
(no per-user round trip at a million users), and the removal gate counts owned accounts and
memberships against what the run read.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from oktasync.db import transaction
from oktasync.models import Claim

# How long a write to state.db waits while another process (a run of another app) writes it:
# its transactions are short (a checkpoint's claims), so this is a stuck process, not traffic.
BUSY_TIMEOUT_S = 30.0

OWNERSHIP_SCHEMA = """
CREATE TABLE IF NOT EXISTS owned_users (
    target TEXT NOT NULL, key TEXT NOT NULL, app TEXT NOT NULL, okta_id TEXT,
    PRIMARY KEY (target, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS owned_users_okta ON owned_users(app, target, okta_id);
CREATE TABLE IF NOT EXISTS listing_sizes (
    app TEXT NOT NULL, listing TEXT NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (app, listing)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reported_drift (
    app TEXT NOT NULL, target TEXT NOT NULL, key TEXT NOT NULL, said TEXT NOT NULL,
    PRIMARY KEY (app, target, key, said)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS held_deactivations (
    app TEXT NOT NULL, target TEXT NOT NULL, username TEXT NOT NULL, okta_id TEXT,
    held_at REAL NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (app, target, username))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_deactivations (
    app TEXT NOT NULL, target TEXT NOT NULL, at REAL NOT NULL, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS owned_groups (
    target TEXT NOT NULL, key TEXT NOT NULL, app TEXT NOT NULL, okta_group_id TEXT,
    name TEXT NOT NULL, PRIMARY KEY (target, key, app)) WITHOUT ROWID;
"""

# -- read by the run index, with state.db attached as ``own`` ---------------------------------
ATTACHED = "own"
# the feed's owner of the account at a username, and the username this app synced the Okta
# user as (a rename)
FEED_OWNER_COLUMNS = """o.app, o.okta_id,
  (SELECT p.key FROM own.owned_users p
     WHERE p.app = :app AND p.target = :target AND p.okta_id = u.id)"""
FEED_OWNER_JOIN = "LEFT JOIN own.owned_users o ON o.target = :target AND o.key = n.username"
# accounts an app synced that no Okta user of this run maps to, and whether their Okta user
# is gone (deleted in Okta: in no listing)
OWNED_UNMATCHED_SQL = (
    "SELECT o.key, o.okta_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM okta_users u "
    "WHERE u.id = o.okta_id) FROM own.owned_users o WHERE o.app = ? AND o.target = ? "
    "AND NOT EXISTS (SELECT 1 FROM matched m WHERE m.target = o.target AND "
    "m.key = o.key) ORDER BY o.key")
# memberships the accounts an app synced hold in the given groups
# Okta users an app synced (on any target) that this run's user listing did not return: with
# a user_filter on the listing, those who left the filter's scope, or were deleted in Okta
OWNED_UNLISTED_SQL = (
    "SELECT DISTINCT o.okta_id FROM own.owned_users o WHERE o.app = ? AND o.okta_id IS NOT "
    "NULL AND NOT EXISTS (SELECT 1 FROM okta_users u WHERE u.id = o.okta_id) ORDER BY 1")
OWNED_MEMBERSHIPS_SQL = (
    "SELECT COUNT(*) FROM target_members tm JOIN own.owned_users o ON o.target = "
    "tm.target AND o.key = tm.user_key WHERE tm.target = ? AND o.app = ? AND "
    "tm.group_key IN (SELECT value FROM json_each(?))")


# -- drift (``--reconcile``): the run index with the state store attached as ``prev`` ----------
# the accounts this app synced as the state store has them (what the engine wrote or saw
# last), and as this run read them (NULL: not read; absent where the read lists every account)
DRIFT_ACCOUNTS_SQL = (
    "SELECT o.key, o.okta_id, p.username, p.email, p.display_name, p.active, "
    "a.username, a.email, a.display_name, a.active FROM own.owned_users o "
    "JOIN prev.target_accounts p ON p.target = o.target AND p.key = o.key "
    "LEFT JOIN target_accounts a ON a.target = o.target AND a.key = o.key "
    "WHERE o.app = ? AND o.target = ? ORDER BY o.key")
# memberships of those accounts in the given groups, in the store or in this read, not both
DRIFT_MEMBERS_SQL = (
    "SELECT o.key, o.okta_id, m.group_key, m.was FROM own.owned_users o JOIN ("
    "SELECT * FROM (SELECT user_key, group_key, 1 AS was FROM prev.target_members "
    "WHERE target = :target EXCEPT SELECT user_key, group_key, 1 FROM target_members "
    "WHERE target = :target) UNION ALL "
    "SELECT * FROM (SELECT user_key, group_key, 0 FROM target_members WHERE target = :target "
    "EXCEPT SELECT user_key, group_key, 0 FROM prev.target_members WHERE target = :target)"
    ") m ON m.user_key = o.key WHERE o.app = :app AND o.target = :target "
    "AND m.group_key IN (SELECT value FROM json_each(:groups)) "
    "AND EXISTS (SELECT 1 FROM target_accounts a WHERE a.target = :target AND a.key = o.key) "
    "ORDER BY o.key, m.group_key")
# an account read now with this e-mail that nobody synced and no Okta user maps to: where a
# synced account went when it was renamed by hand
LOOKALIKE_SQL = (
    "SELECT a.key FROM target_accounts a WHERE a.target = ? AND a.email = ? COLLATE NOCASE "
    "AND NOT EXISTS (SELECT 1 FROM own.owned_users o WHERE o.target = a.target AND "
    "o.key = a.key) AND NOT EXISTS (SELECT 1 FROM okta_names n WHERE n.username = a.key)")


def attach(db: sqlite3.Connection, path: Path) -> None:
    """Make the ownership database readable in ``db``'s queries, as ``own``."""
    db.execute(f"ATTACH DATABASE ? AS {ATTACHED}", (str(path),))


@dataclass(frozen=True)
class Held:
    """A deactivation held for an administrator: an event sync found more than its window
    allows (``deactivation_window``)."""

    target: str
    username: str
    okta_id: str | None
    held_at: float
    reason: str


class Ownership:
    """Accounts and groups each app has synced on each target."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                   timeout=BUSY_TIMEOUT_S)
        self._db.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        with transaction(self._db, immediate=True):  # two runs starting at once: one creates
            for statement in OWNERSHIP_SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)

    def close(self) -> None:
        self._db.close()

    def claim_of(self, target: str, key: str) -> Claim | None:
        row = self._db.execute("SELECT app, okta_id FROM owned_users WHERE target = ? AND "
                               "key = ?", (target, key)).fetchone()
        return None if row is None else Claim(row[0], row[1])

    def count_owned(self, app: str, target: str) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM owned_users WHERE app = ? AND "
                                    "target = ?", (app, target)).fetchone()[0])

    def claim(self, app: str, target: str,
              claims: Iterable[tuple[str, str | None]]) -> list[str]:
        """Record (username key, Okta id) pairs as owned by ``app``; a rename moves the row.

        A username another app owns stays that app's: the first claim wins, in one
        ``BEGIN IMMEDIATE`` transaction, so two runs of different apps (two processes) that
        both wrote one account cannot take it from each other. Returns the keys not claimed
        for that reason (the caller says so)."""
        lost = []
        with transaction(self._db, immediate=True):
            for key, okta_id in claims:
                taken = self._db.execute(
                    "INSERT INTO owned_users VALUES (?,?,?,?) ON CONFLICT (target, key) DO "
                    "UPDATE SET okta_id = excluded.okta_id WHERE owned_users.app = excluded.app",
                    (target, key, app, okta_id)).rowcount
                if not taken:
                    lost.append(key)
                elif okta_id is not None:
                    self._db.execute("DELETE FROM owned_users WHERE app = ? AND target = ? AND "
                                     "okta_id = ? AND key != ?", (app, target, okta_id, key))
        return lost

    def claim_groups(self, app: str, target: str, groups: Iterable[tuple[str, str, str]]) -> None:
        """Record (group key, Okta group id, name) as synced by ``app``."""
        with transaction(self._db, immediate=True):
            self._db.executemany("INSERT OR REPLACE INTO owned_groups VALUES (?,?,?,?,?)",
                                 [(target, k, app, gid, n) for k, gid, n in groups])

    def groups_of(self, app: str, target: str) -> dict[str, tuple[str, str]]:
        """Okta group id -> (key, name) this app synced to the target."""
        rows = self._db.execute("SELECT okta_group_id, key, name FROM owned_groups WHERE "
                                "app = ? AND target = ?", (app, target))
        return {r[0]: (r[1], r[2]) for r in rows}

    # -- deactivations from events (``deactivation_window``) and those held -----------------
    def held(self, app: str) -> list[Held]:
        """Deactivations held for an administrator (``oktasync held``), oldest first."""
        return [Held(*r) for r in self._db.execute(
            "SELECT target, username, okta_id, held_at, reason FROM held_deactivations "
            "WHERE app = ? ORDER BY held_at, target, username", (app,))]

    def hold(self, app: str, held: Iterable[Held]) -> None:
        with transaction(self._db, immediate=True):
            self._db.executemany(
                "INSERT OR IGNORE INTO held_deactivations VALUES (?,?,?,?,?,?)",
                [(app, h.target, h.username, h.okta_id, h.held_at, h.reason) for h in held])

    def release(self, app: str) -> list[Held]:
        """Every held deactivation of ``app``, no longer held (the caller syncs them)."""
        with transaction(self._db, immediate=True):
            held = self.held(app)
            self._db.execute("DELETE FROM held_deactivations WHERE app = ?", (app,))
        return held

    def event_deactivations(self, app: str, since: float) -> dict[str, int]:
        """Deactivations event syncs of ``app`` wrote since ``since`` (the window), per
        target."""
        return {r[0]: int(r[1]) for r in self._db.execute(
            "SELECT target, SUM(count) FROM event_deactivations WHERE app = ? AND at >= ? "
            "GROUP BY target", (app, since))}

    def count_event_deactivations(self, app: str, at: float, counts: dict[str, int]) -> None:
        with transaction(self._db, immediate=True):
            self._db.executemany("INSERT INTO event_deactivations VALUES (?,?,?,?)",
                                 [(app, t, at, n) for t, n in counts.items() if n])
            self._db.execute("DELETE FROM event_deactivations WHERE at < ?", (at - 30 * 86_400,))

    def keys_of(self, app: str, target: str, okta_ids: Iterable[str]) -> list[str]:
        """The accounts ``app`` synced on ``target`` for these Okta users."""
        return [r[0] for r in self._db.execute(
            "SELECT key FROM owned_users WHERE app = ? AND target = ? AND okta_id IN "
            "(SELECT value FROM json_each(?))", (app, target, json.dumps(sorted(okta_ids))))]

    def first_report(self, app: str, target: str, key: str, said: str, *,
                     remember: bool) -> bool:
        """Whether this drift (a difference the target cannot repair, in these words, so
        with these values) is said for the first time; ``remember`` writes it down."""
        row = (app, target, key, said)
        if self._db.execute("SELECT 1 FROM reported_drift WHERE app = ? AND target = ? AND "
                            "key = ? AND said = ?", row).fetchone() is not None:
            return False
        if remember:
            with transaction(self._db, immediate=True):
                self._db.execute("INSERT OR IGNORE INTO reported_drift VALUES (?,?,?,?)", row)
        return True

    def listing_sizes(self, app: str) -> dict[str, int]:
        """How many entries each Okta listing returned in the app's last complete run."""
        return {r[0]: int(r[1]) for r in self._db.execute(
            "SELECT listing, size FROM listing_sizes WHERE app = ?", (app,))}

    def record_listing_sizes(self, app: str, sizes: dict[str, int]) -> None:
        with transaction(self._db, immediate=True):
            self._db.executemany("INSERT OR REPLACE INTO listing_sizes VALUES (?,?,?)",
                                 [(app, name, size) for name, size in sizes.items()])
