"""An app's inbox: the events ``oktasync serve`` has accepted and not yet synced, on disk.

``<state dir>/<app>/inbox.db`` (SQLite). A hook delivery is committed here **before** it is
answered (``synchronous=FULL``: a kill -9, or a power cut, right after the answer loses
nothing), so an acknowledged event is never lost: the service syncs what it holds after a
restart. Each event is kept once, by Okta's ``uuid`` (deliveries are at least once); an event
synced is kept a while (``REMEMBER_S``) so that a late duplicate is still known. The inbox is
bounded: past ``capacity`` pending events a delivery is refused whole (``InboxFull``, a 503,
which Okta retries once; what it then drops, the System Log poller or the next scheduled run
recovers). Sign-ins (``signals.SIGN_IN_EVENTS``) are taken first: the priority lane.

It also keeps the System Log poller's position (its ``next`` link), which must survive a
restart just as the events do.

One process writes it (the service); its calls are short and run in a worker thread, so the
event loop never waits on a disk flush.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from oktasync.db import transaction
from oktasync.signals import SIGN_IN_EVENTS

INBOX_DB = "inbox.db"
REMEMBER_S = 7 * 86_400.0  # how long a synced event's uuid is remembered against duplicates

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    uuid TEXT PRIMARY KEY,
    received REAL NOT NULL,      -- when the service accepted it (time.time())
    priority INTEGER NOT NULL,   -- 1: a sign-in, synced ahead of the rest
    body TEXT NOT NULL,          -- the LogEvent, JSON
    done REAL                    -- when it was synced; NULL while pending
);
CREATE INDEX IF NOT EXISTS pending ON events (done, priority DESC, received);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class InboxFull(Exception):
    """The inbox holds ``capacity`` pending events: refuse the delivery (503)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One pending event."""

    uuid: str
    received: float
    priority: bool
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Added:
    new: int
    duplicates: int


def is_priority(event: Mapping[str, Any]) -> bool:
    return event.get("eventType") in SIGN_IN_EVENTS


class Inbox:
    """The pending events of one app; every method is synchronous and short (the ``a*``
    twins run them in a worker thread)."""

    def __init__(self, path: Path, capacity: int) -> None:
        self.path, self.capacity = path, capacity
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._pending = self._count()
        self._forget_old()

    def _count(self) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM events WHERE done IS NULL").fetchone()
        return int(row[0])

    @property
    def depth(self) -> int:
        """Events accepted and not yet synced."""
        return self._pending

    def add(self, events: Iterable[Mapping[str, Any]], received: float | None = None) -> Added:
        """Keep the events not seen before, all or none, committed when this returns."""
        rows = [(str(e["uuid"]), received or time.time(), int(is_priority(e)),
                 json.dumps(e, separators=(",", ":"))) for e in events]
        with self._lock:
            if self._pending + len(rows) > self.capacity:
                raise InboxFull(f"{self._pending} events pending (inbox_capacity "
                                f"{self.capacity})")
            with transaction(self._db):
                before = self._db.total_changes
                self._db.executemany("INSERT OR IGNORE INTO events (uuid, received, priority, "
                                     "body) VALUES (?, ?, ?, ?)", rows)
                new = self._db.total_changes - before
            self._pending += new
        return Added(new, len(rows) - new)

    def take(self, limit: int) -> list[Entry]:
        """The oldest pending events, sign-ins first; they stay pending until ``done``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT uuid, received, priority, body FROM events WHERE done IS NULL "
                "ORDER BY priority DESC, received LIMIT ?", (limit,)).fetchall()
        return [Entry(u, r, bool(p), json.loads(b)) for u, r, p, b in rows]

    def done(self, uuids: Iterable[str]) -> None:
        """Synced: no longer pending, remembered against duplicates for ``REMEMBER_S``."""
        now = time.time()
        with self._lock, transaction(self._db):
            before = self._db.total_changes
            self._db.executemany("UPDATE events SET done = ? WHERE uuid = ? AND done IS NULL",
                                 [(now, u) for u in uuids])
            self._pending -= self._db.total_changes - before

    def oldest_pending(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(received) FROM events WHERE done IS NULL") \
                .fetchone()
        return None if row[0] is None else float(row[0])

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        with self._lock, transaction(self._db):
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             (key, value))

    def _forget_old(self) -> None:
        with self._lock, transaction(self._db):
            self._db.execute("DELETE FROM events WHERE done < ?", (time.time() - REMEMBER_S,))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- the same, off the event loop ------------------------------------------------------
    async def aadd(self, events: list[dict[str, Any]]) -> Added:
        return await anyio.to_thread.run_sync(self.add, events)

    async def atake(self, limit: int) -> list[Entry]:
        return await anyio.to_thread.run_sync(self.take, limit)

    async def adone(self, uuids: list[str]) -> None:
        await anyio.to_thread.run_sync(self.done, uuids)

    async def aget(self, key: str) -> str | None:
        return await anyio.to_thread.run_sync(self.get, key)

    async def aput(self, key: str, value: str) -> None:
        await anyio.to_thread.run_sync(self.put, key, value)


def inbox_path(state_dir: Path, app: str) -> Path:
    return state_dir / app / INBOX_DB
