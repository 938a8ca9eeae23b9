"""The state directory: who owns what on each target, the last run's summary, the locks.

Layout (``[state] dir``)::

    state.db                  ownership: accounts and groups each app has synced, per target
                              (shared by the apps; WAL, so runs of two apps write it at once)
    lock                      left by versions before one lock per app; no longer taken
    <app>/lock                the app's lock, held by its running run (pid, start, command)
    <app>/last-run.json       the last run's summary
    <app>/run.db              the running (or interrupted) run's index, see runstore.py
    <app>/plan-<run id>.csv   dry-run plans

Ownership is what lets several apps share a target safely ("never deactivates, removes or
renames what another app owns") and what tells a synced account from a claimed one. It is
SQLite so a later incremental store can grow beside it in the same file without a rewrite.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import anyio

from oktasync.errors import StateDirError, UsageError


def no_space(error: BaseException) -> bool:
    """Whether a failed write ran out of room (a full disk, or the user's quota)."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(error, sqlite3.Error) and (
        getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        or "disk is full" in str(error))


def state_error(error: BaseException, state_dir: Path) -> StateDirError | None:
    """What a failure to read or write the state directory means, said once for every file in
    it (checkpoint, ownership, lock, reports); None for errors of another kind."""
    if no_space(error):
        return StateDirError(f"no space left on the device holding {state_dir}: free some space "
                          "there (or point [state] dir elsewhere) and run again")
    if isinstance(error, (OSError, sqlite3.Error)):
        why = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        return StateDirError(f"the state directory {state_dir} cannot be written: {why}")
    return None


@contextlib.contextmanager
def writing_state(state_dir: Path) -> Iterator[None]:
    """Turn a failure to write the state directory into an administrator's message."""
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        error = state_error(exc, state_dir)
        if error is None:
            raise
        raise error from None


def ensure_state_dir(path: Path) -> Path:
    """Create the directory and prove it is writable, before anything is read or written."""
    with writing_state(path):
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        try:
            probe.write_text("ok")
        finally:
            probe.unlink(missing_ok=True)
    return path


def _flock_held(path: Path) -> bool:
    """Whether some process holds an flock on ``path``, from the kernel's own table
    (``/proc/locks``: ``N: FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> ...``); where
    that table is missing, a shared lock is tried and given back at once."""
    try:
        info = os.stat(path)
        table = Path("/proc/locks").read_text()
    except FileNotFoundError:
        return False if not path.exists() else _try_shared(path)
    except OSError:
        return _try_shared(path)
    where = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    return any(f.split()[1] == "FLOCK" and f.split()[5] == where
               for f in table.splitlines() if len(f.split()) > 5)


def _try_shared(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def write_json_atomically(path: Path, data: Any) -> None:
    """Write, fsync, rename: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} cannot be read ({exc}); delete it to start afresh") from exc


LOCK_POLL_S = 0.2  # how often a run told to ``--wait`` tries a held lock again


class AppLock:
    """One lock per app: an advisory ``flock`` on ``<state dir>/<app>/lock``, taken for each
    run of the app (a CLI ``sync``, each of the service's runs), so two runs of one app never
    overlap while runs of different apps may (they share only ``state.db``, which SQLite
    serialises).

    The kernel drops an flock when its process ends, however it ends, so a crashed run's lock
    is simply free: no guessing from a pid whether the holder lives (a pid can be reused), and
    no window in which two processes both decide a lock is stale and both take it. The file's
    content (pid, start time, which command) only names the holder in the refusal and in
    ``oktasync status``. An flock belongs to an open file, so two runs of one app inside one
    process exclude each other too. POSIX only, like the signal handling.
    """

    def __init__(self, state_dir: Path, app: str, *, by: str = "sync") -> None:
        self.app, self.by = app, by
        self.path = state_dir / app / "lock"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free (True); False, at once, when another run holds it."""
        mine = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "app": self.app, "by": self.by}
        with writing_state(self.path.parent.parent):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(mine).encode())
        except OSError as exc:  # held elsewhere, or a full disk, say: give the fd back, say why
            os.close(fd)
            if isinstance(exc, BlockingIOError):
                return False
            raise state_error(exc, self.path.parent.parent) or exc from None
        self._fd = fd
        return True

    def refusal(self) -> UsageError:
        """What a run that found the lock held says (exit 2)."""
        return UsageError(f"app {self.app!r} is {self._held_by()}; wait for it to finish, or "
                          "run the other apps with --app")

    def _held_by(self) -> str:
        holder = self._named_holder()
        if holder is None:
            return "locked by another process (it has not written its pid yet)"
        by = f"{holder['by']}, " if isinstance(holder.get("by"), str) else ""
        return f"locked by process {holder.get('pid')} ({by}started {holder.get('started')})"

    def _named_holder(self) -> dict[str, Any] | None:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) and "pid" in holder else None

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock now ({"pid", "started", "by"}; the pid may be unknown while the
        holder is writing it), or None when nobody does. Asked without taking the lock, even
        for an instant: a status must never make a run that is starting fail."""
        if not _flock_held(self.path):
            return None
        return self._named_holder() or {"pid": "?", "started": "?"}

    def release(self) -> None:
        """Close, which drops the flock. The file stays: unlinking it could let a process
        that opened it a moment ago lock a file nobody else will ever open again."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


async def _take(lock: AppLock, wait_s: float) -> None:
    """Take one app's lock, trying again every ``LOCK_POLL_S`` for up to ``wait_s`` seconds
    (0: once); the refusal names the holder. The retries sleep on the event loop, so a signal
    or a cancelled service stops the wait at once."""
    deadline = time.monotonic() + wait_s
    while not lock.try_acquire():
        left = deadline - time.monotonic()
        if left <= 0:
            raise lock.refusal()
        await anyio.sleep(min(LOCK_POLL_S, left))


@contextlib.asynccontextmanager
async def app_locks(state_dir: Path, apps: Iterable[str], *, wait_s: float = 0,
                    by: str = "sync") -> AsyncIterator[list[AppLock]]:
    """Hold the locks of ``apps`` for the block: all taken before it starts, in name order
    (two runs that each want several apps then never wait on each other in a circle), all
    given back when it ends. One that stays held past ``wait_s`` refuses the whole run
    (``UsageError``), the ones already taken given back."""
    held: list[AppLock] = []
    try:
        for app in sorted(set(apps)):
            lock = AppLock(state_dir, app, by=by)
            await _take(lock, wait_s)
            held.append(lock)
        yield held
    finally:
        for lock in reversed(held):
            lock.release()


@contextlib.asynccontextmanager
async def app_lock(state_dir: Path, app: str, *, wait_s: float = 0,
                   by: str = "serve") -> AsyncIterator[AppLock]:
    """One app's lock for one run: what the service's runs take (``app_locks`` of one)."""
    async with app_locks(state_dir, [app], wait_s=wait_s, by=by) as held:
        yield held[0]
