"""When and what a full sync writes down so that a kill loses little: the low-water mark of each
target's users phase, the ownership claims below it, and the deferred rows of the run index.

The users phase feeds users in username order and they finish out of order; the ``Watermark``
passes only users that are done. ``Checkpointer.due`` is called explicitly, after each user
and each write the pipeline finishes; it saves at most every ``EVERY_WRITES`` landed writes or
``EVERY_S`` seconds, whichever comes first, so one commit covers many writes and a resume
repeats at most those plus the ones in flight.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from oktasync.ownership import Ownership
from oktasync.report import TargetTally
from oktasync.runstore import RunStore, cursor_name

EVERY_WRITES = 64
EVERY_S = 0.25

log = structlog.get_logger("oktasync.checkpointer")


class Watermark:
    """The low-water mark over work issued in order and finished out of order."""

    def __init__(self) -> None:
        self._issued = 0
        self._done: set[int] = set()
        self._names: dict[int, str] = {}
        self._mark = -1
        self.mark_name: str | None = None
        self.finished = 0

    def issue(self, name: str) -> int:
        seq = self._issued
        self._issued += 1
        self._names[seq] = name
        return seq

    def finish(self, seq: int) -> None:
        self._done.add(seq)
        self.finished += 1
        while self._mark + 1 in self._done:
            self._mark += 1
            self._done.discard(self._mark)
            self.mark_name = self._names.pop(self._mark)


@dataclass
class Progress:
    """What one target's users phase has to write down: its mark, and the claims of users
    that are done (flushed before the mark, so no user below the mark lacks its claim)."""

    target: str
    tally: TargetTally
    watermark: Watermark = field(default_factory=Watermark)
    claims: list[tuple[str, str | None]] = field(default_factory=list)


class Checkpointer:
    """Saves the run's progress: explicitly (``save``), or when due (``due``)."""

    def __init__(self, app: str, store: RunStore, ownership: Ownership, *, dry_run: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._app, self._store, self._ownership = app, store, ownership
        self._dry_run, self._clock = dry_run, clock
        self._progress: list[Progress] = []
        self._last = clock()
        self._landed = 0

    def track(self, target: str, tally: TargetTally) -> Progress:
        progress = Progress(target, tally)
        self._progress.append(progress)
        return progress

    def landed(self) -> None:
        """One more write landed since the last save."""
        self._landed += 1

    def due(self) -> None:
        """Save if enough writes landed or enough time passed since the last save."""
        if self._landed >= EVERY_WRITES or self._clock() - self._last >= EVERY_S:
            self.save()

    def save(self) -> None:
        """Flush ownership claims, then the run index's deferred rows, each users phase's
        mark and the tallies, in one transaction. Claims go first: a crash between the two
        redoes a few users (harmless), never leaves a user below the mark without its claim."""
        self._last, self._landed = self._clock(), 0
        for progress in self._progress:  # every write the checkpoint holds is in the audit
            if progress.tally.audit is not None:
                progress.tally.audit.flush()
        for progress in self._progress:
            if progress.claims and not self._dry_run:
                lost = self._ownership.claim(self._app, progress.target, progress.claims)
                if lost:  # a run of another app, at the same time, claimed them first
                    log.warning("accounts claimed by another app meanwhile stay its own",
                                app=self._app, target=progress.target, usernames=lost[:20])
                progress.claims = []
        store = self._store
        with store.transaction():
            store.flush_deferred()
            for progress in self._progress:
                name = cursor_name("target", progress.target, "users")
                mark = progress.watermark.mark_name
                if not store.cursor(name)[1] and mark is not None:
                    store.set_cursor(name, mark, False)
                store.set_meta(**{f"already:{progress.target}": progress.tally.already})
            store.set_meta(checkpointed_at=time.time())
