"""The terminal's view of a run: a live display on a terminal, a progress line otherwise.

On a terminal (stderr is one, and no ``--no-progress``) rich draws one line per phase and
target — done / planned, rate, ETA, retries, 429s, Okta's budget wait — redrawn twice a
second at the bottom of stderr; log lines print above it (rich swaps ``sys.stderr`` for a proxy
while it draws, and the logger writes to the ``sys.stderr`` of the moment), and it is stopped
before the summary is printed, so nothing scrolls the summary away. Elsewhere the same numbers
go to the log every 10 s as a structured ``progress`` line (JSON when piped).
The engine knows nothing of this: it hands each run's ``RunProgress`` to ``watch``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import structlog

if TYPE_CHECKING:  # rich is imported where it draws: a run without a display never loads it
    from rich.live import Live
    from rich.text import Text

from oktasync.progress import RunProgress
from oktasync.text import shown

LOG_EVERY_S = 10.0
REDRAW_EVERY_S = 0.5  # twice a second: alive to the eye, half the CPU of four
log = structlog.get_logger("oktasync.progress")


class Watched:
    """The runs shown: the current one of each app, as the engine starts them."""

    def __init__(self) -> None:
        self.runs: dict[str, RunProgress] = {}

    def watch(self, progress: RunProgress) -> None:
        self.runs[progress.app] = progress


def _amount(done: int, planned: int | None) -> str:
    return f"{done:,}/{planned:,}" if planned is not None else f"{done:,}"


def _eta(seconds: float | None, finished: bool) -> str:
    if finished:
        return "done"
    if seconds is None:
        return "ETA ?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"ETA {hours}:{minutes:02}:{secs:02}" if hours else f"ETA {minutes}:{secs:02}"


def lines(snapshots: list[dict[str, Any]]) -> list[str]:
    """One line per phase and target of each run, in aligned columns."""
    rows: list[list[str]] = []
    for snap in snapshots:
        servers = snap["servers"]
        for task in snap["tasks"]:
            server = servers.get(task["target"].split(" ")[0], {})
            wait = (f"Okta wait {snap['okta_wait_s']:.0f}s"
                    if task["target"].startswith("okta") and snap["okta_wait_s"] else "")
            rows.append([shown(snap["app"]), task["phase"], shown(task["target"]),
                         _amount(task["done"], task["planned"]), f"{task['rate']:,.0f}/s",
                         _eta(task["eta_s"], task["finished"]),
                         f"retries {server.get('retries', 0)}  429s "
                         f"{server.get('rate_limited', 0)}" if server else "", wait])
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(8)]
    right = {3, 4}  # the numbers
    return ["  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                      for i, cell in enumerate(row)).rstrip() for row in rows]


def table(snapshots: list[dict[str, Any]]) -> Text:
    """The live display's frame: plain aligned text (a rich ``Table`` measures every cell on
    every redraw, several times the CPU for the same look)."""
    from rich.text import Text

    return Text("\n".join(lines(snapshots)), no_wrap=True, overflow="ellipsis")


def log_progress(snapshots: list[dict[str, Any]]) -> None:
    """The numbers as structured log lines: one per unfinished task."""
    for snap in snapshots:
        for task in snap["tasks"]:
            if task["finished"]:
                continue
            server = snap["servers"].get(task["target"].split(" ")[0], {})
            log.info("progress", app=snap["app"], run_id=snap["run_id"],
                     phase=task["phase"], target=task["target"], done=task["done"],
                     planned=task["planned"], rate=task["rate"], eta_s=task["eta_s"],
                     retries=server.get("retries"), rate_limited=server.get("rate_limited"),
                     okta_wait_s=snap["okta_wait_s"])


@asynccontextmanager
async def progress_display(live: bool) -> AsyncIterator[Watched]:
    """The runs started inside are shown: drawn live (``live``), or logged every 10 s."""
    watched = Watched()
    async with anyio.create_task_group() as tg:
        if live:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=sys.stderr, highlight=False)
            with Live(console=console, auto_refresh=False, transient=False,
                      redirect_stdout=False, redirect_stderr=True) as display:
                tg.start_soon(_redraw, display, watched)
                try:
                    yield watched
                finally:
                    tg.cancel_scope.cancel()
                    display.update(table(_snapshots(watched)), refresh=True)
        else:
            tg.start_soon(_log_every, watched)
            try:
                yield watched
            finally:
                tg.cancel_scope.cancel()


def _snapshots(watched: Watched) -> list[dict[str, Any]]:
    return [run.snapshot() for run in watched.runs.values()]


async def _redraw(display: Live, watched: Watched) -> None:
    while True:
        display.update(table(_snapshots(watched)), refresh=True)
        await anyio.sleep(REDRAW_EVERY_S)


async def _log_every(watched: Watched) -> None:
    while True:
        await anyio.sleep(LOG_EVERY_S)
        log_progress(_snapshots(watched))
