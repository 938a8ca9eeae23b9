"""The service's System Log poller: Okta's changes between scheduled runs, where event hooks
cannot reach the service (a firewall) or as the net under them (``changes = "both"``).

Every ``poll_interval`` it follows the polling ``next`` link (okta-api.md: a polling request is
ordered by when Okta stored each event, so a late event is never skipped; the link is always
there; persist it to resume) from the position it keeps in the app's inbox, to the end of the
log. The events a sync cares about go into the inbox (a uuid a hook delivered already is not
kept twice), then the new position: a poller killed in between reads those events again,
never loses one. After downtime it catches up from where it stopped. The first time (no
position) it starts five minutes back: the scheduled run the service starts with covers what
came before.

Its requests use their own, small share of the logs bucket (``POLLER_SHARE``), so a run
reading the log at the same time is not starved by it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

import anyio
import structlog

from oktasync.changes import OVERLAP, TIME_FORMAT
from oktasync.config import AppConfig
from oktasync.engine import okta_reader
from oktasync.errors import FullSyncNeeded, SyncError
from oktasync.inbox import Inbox, InboxFull
from oktasync.signals import matters

log = structlog.get_logger("oktasync.poller")
POLLER_SHARE = 0.1  # of each Okta bucket; one request per poll_interval needs far less
POSITION = "log_next"


class PollerSide(Protocol):
    """What the poller needs from the service."""

    stopping: anyio.Event
    inboxes: dict[str, Inbox]

    def app(self, name: str) -> AppConfig | None: ...

    def accepted(self, name: str, new: int) -> None: ...

    def polled(self, name: str, error: str | None) -> None: ...


class Poller:
    def __init__(self, side: PollerSide, name: str) -> None:
        self._side, self._name = side, name

    async def run(self) -> None:
        """Poll every ``poll_interval`` while the app polls; a failed poll is said in
        ``/healthz`` and tried again at the next interval."""
        side = self._side
        while (app := side.app(self._name)) is not None and not side.stopping.is_set():
            if app.polls:
                try:
                    await self.poll(app)
                    side.polled(self._name, None)
                except (SyncError, InboxFull) as exc:
                    log.warning("System Log poll failed", app=self._name, reason=str(exc))
                    side.polled(self._name, str(exc))
            with anyio.move_on_after(app.poll_interval_s):
                await side.stopping.wait()

    async def poll(self, app: AppConfig) -> None:
        """From the kept position to the end of the log: events in, then the position."""
        inbox = self._side.inboxes[self._name]
        async with okta_reader(app, share=POLLER_SHARE) as okta:
            position = await inbox.aget(POSITION) or okta.first_log_url(_five_minutes_ago())
            try:
                async for page in okta.log_pages(position):
                    wanted = [e for e in page.items if matters(e)]
                    added = await inbox.aadd(wanted) if wanted else None
                    if added is not None and added.new:
                        self._side.accepted(self._name, added.new)
                    if page.next_url:
                        await inbox.aput(POSITION, page.next_url)
            except FullSyncNeeded as exc:  # Okta no longer takes the position: start anew
                log.warning("System Log position refused; polling from now (the next "
                            "scheduled run reads what was missed)", app=self._name,
                            reason=str(exc))
                await inbox.aput(POSITION, okta.first_log_url(_five_minutes_ago()))


def _five_minutes_ago() -> str:
    return datetime.fromtimestamp(time.time() - OVERLAP.total_seconds(), UTC).strftime(
        TIME_FORMAT)
