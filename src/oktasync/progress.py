"""How far a run is: per phase and per target, items done / planned, rate, ETA, retries, 429s
and the current Okta budget wait (issue 13).

An administrator starting a six-hour first import wants to see that it moves and when it will
end. The run's parts count into ``Task``s (an integer increment per item: nothing is
allocated or timed per item, so counting costs nothing measurable); everything else — rates,
ETAs, the servers' counters — is computed when someone looks (``snapshot``): the terminal's
live display a few times a second, the log line every 10 s, ``oktasync serve``'s
``/progress``. Phases are timed here too (the report's ``phases``), and each binds ``phase``
to the log lines inside it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

RATE_WINDOW_S = 30.0  # a rate over the last half minute: current, yet not jumpy


class Counters(Protocol):
    """What a server's client counts (``http.RequestCounters``)."""

    retries: int
    rate_limited: int
    reads: int
    writes: int


@dataclass(eq=False)
class Task:
    """One line of the display: a phase's work on one target (or on Okta)."""

    phase: str
    target: str
    planned: int | None = None
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    _seen: deque[tuple[float, int]] = field(default_factory=deque, repr=False)

    def rate(self, now: float) -> float:
        """Items per second over the last ``RATE_WINDOW_S`` (since the start, before that)."""
        seen = self._seen
        seen.append((now, self.done))
        while len(seen) > 2 and now - seen[1][0] >= RATE_WINDOW_S:
            seen.popleft()
        then, done_then = seen[0] if now - seen[0][0] > 0.5 else (self.started, 0)
        end = self.finished or now
        return (self.done - done_then) / (end - then) if end > then else 0.0

    def snapshot(self, now: float) -> dict[str, Any]:
        rate = self.rate(now)
        left = None if self.planned is None else max(0, self.planned - self.done)
        eta = (0.0 if left == 0 else round(left / rate, 1) if left is not None and rate > 0
               else None)
        return {"phase": self.phase, "target": self.target, "done": self.done,
                "planned": self.planned, "rate": round(rate, 1),
                "eta_s": None if self.finished else eta, "finished": self.finished is not None,
                "elapsed_s": round((self.finished or now) - self.started, 1)}


class RunProgress:
    """One run's progress: its tasks, its phases' times, and where to read the servers'
    retries and 429s and Okta's budget wait from."""

    def __init__(self, app: str = "", run_id: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app, self.run_id, self.clock = app, run_id, clock
        self.started = clock()
        self.tasks: list[Task] = []
        self.phases: dict[str, float] = {}  # seconds per phase, in order
        self.phase_now: str | None = None
        self._phase_began = self.started
        self.servers: dict[str, Counters] = {}
        self.okta_wait: Callable[[], float] = lambda: 0.0
        self.ended = False

    def task(self, phase: str, target: str, planned: int | None = None,
             done: int = 0) -> Task:
        task = Task(phase, target, planned, done, started=self.clock())
        self.tasks.append(task)
        return task

    def end(self, task: Task) -> None:
        task.finished = self.clock()

    def enter(self, name: str) -> None:
        """The run moves to phase ``name``: the previous one's time is added up (a phase run
        again, as after a resume, adds to its time), and ``phase`` is bound to the log lines
        from here on."""
        self.close()
        self.phase_now, self._phase_began = name, self.clock()
        structlog.contextvars.bind_contextvars(phase=name)

    def close(self) -> None:
        """The current phase ends (the run ends, or another phase begins)."""
        if self.phase_now is not None:
            spent = self.clock() - self._phase_began
            self.phases[self.phase_now] = round(self.phases.get(self.phase_now, 0.0) + spent, 3)
            self.phase_now = None
        structlog.contextvars.unbind_contextvars("phase")

    def snapshot(self) -> dict[str, Any]:
        """Everything a display shows, as plain values (JSON for ``/progress``)."""
        now = self.clock()
        return {
            "app": self.app, "run_id": self.run_id, "phase": self.phase_now,
            "elapsed_s": round(now - self.started, 1), "ended": self.ended,
            "tasks": [t.snapshot(now) for t in self.tasks],
            "servers": {name: {"retries": c.retries, "rate_limited": c.rate_limited,
                               "requests": c.reads + c.writes}
                        for name, c in self.servers.items()},
            "okta_wait_s": round(self.okta_wait(), 1),
        }


Watcher = Callable[[RunProgress], None]
