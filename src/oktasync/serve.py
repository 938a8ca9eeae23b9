"""``oktasync serve``: one long-running process that keeps each app in line as changes happen,
and says how that goes (``/healthz``, ``/metrics``).

Per app, four tasks in one task group:

* the schedule: an incremental sync on ``schedule`` (``schedules.Schedule``: an interval from
  each run's start, the first at once, or a cron expression's times in the app's zone), full
  where it must be, an interrupted full sync resumed by itself; a failed run is tried again
  at a later tick, backing off (``BACKOFF_*``);
* the reconcile, on ``reconcile_schedule`` (its last time kept in the inbox, so a restart
  does not skip or repeat it);
* the event worker: the app's inbox (``inbox.Inbox``: hook deliveries, polled events, sign-ins
  from the login hook), sign-ins first, drained in small batches, each an ``EventSync``
  (what the events name, read from Okta now); events close in time coalesce into one batch;
* the System Log poller (``changes = "poll"`` or ``"both"``): the polling ``next`` link from
  its persisted position, every ``poll_interval``, with its own small share of the logs bucket;
  the events that matter go to the inbox (de-duplicated against the deliveries by uuid).

Runs of one app never overlap (``AppRuns``); SIGHUP reads the configuration again (a bad file is
refused and the running one kept, the reason in ``/healthz``); SIGTERM or SIGINT stop taking
work, let the event batch in flight finish (``DRAIN_S`` at most), stop a scheduled run at its
checkpoint, keep the inbox, and exit 0.
"""

from __future__ import annotations

import functools
import signal
import ssl
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import structlog
from aiohttp import web
from anyio.abc import TaskGroup

from oktasync.checkpoint import checkpoint_path
from oktasync.config import AppConfig, Config, ConfigError, load_config
from oktasync.engine import (
    KEY_WARNING_DAYS,
    NoStateStore,
    SyncOptions,
    find_user,
    held,
    release_held,
    run_sync,
    sync_events,
)
from oktasync.errors import EXIT_GUARD, EXIT_OK, EXIT_WRITES_FAILED, SyncError
from oktasync.hooks import HookSide, routes
from oktasync.inbox import Inbox, inbox_path
from oktasync.logs import REDACTOR
from oktasync.metrics import Metrics
from oktasync.poller import Poller
from oktasync.progress import RunProgress
from oktasync.schedules import Schedule
from oktasync.signals import local_sign_in

log = structlog.get_logger("oktasync.serve")
UNHEALTHY_AFTER = 3  # schedule intervals without a successful run
BATCH = 50  # events per event sync: small, so a sign-in never waits long behind a batch
COALESCE_S = 0.05  # events arriving this close together are synced as one batch
LOGIN_WAIT_S = 10.0  # how long the login hook waits for its user's sync before answering 202
DRAIN_S = 20.0  # SIGTERM: how long an event batch in flight may take to finish
BACKOFF_BASE_S, BACKOFF_MAX_S = 60.0, 3600.0  # after failed runs: 1 min, 2, 4, ... 1 h
# events that could not be synced are tried again after this many seconds, or as soon as a
# scheduled run has finished: no complete sync yet; the app's lock held by a CLI run; a sync
# that failed (Okta or a target unreachable: the scheduled run's backoff is the one to follow)
WAIT_FOR_STORE_S, LOCKED_RETRY_S, FAILED_RETRY_S = 30.0, 1.0, 30.0
HISTORY = 50  # runs /healthz lists


@dataclass
class AppHealth:
    """What ``/healthz`` says of one app."""

    runs: int = 0
    last_started: float | None = None
    last_finished: float | None = None
    last_exit_code: int | None = None
    last_outcome: str | None = None
    last_kind: str | None = None
    last_success: float | None = None
    failures: int = 0  # failed runs in a row
    inbox_depth: int = 0
    events_synced: int = 0
    last_event_sync: float | None = None
    poller_last_success: float | None = None
    poller_error: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """One run of an app, as ``/healthz`` lists the latest (``recent_runs``)."""

    app: str
    kind: str  # full, incremental, reconcile, events
    started: float
    finished: float
    exit_code: int


class Service:
    """The apps' schedules, inboxes, pollers and runs, and what they report."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.started = time.time()
        self.health = {app.name: AppHealth() for app in config.apps}
        self.inboxes: dict[str, Inbox] = {}
        self.wake: dict[str, anyio.Event] = {}  # new events in an app's inbox
        self.ran: dict[str, anyio.Event] = {}  # a scheduled run of an app finished
        self.runs: dict[str, anyio.Lock] = {}  # one run of an app at a time
        self.synced: dict[str, anyio.Event] = {}  # a login hook's event uuid -> its sync done
        self.loaded_at = self.started
        self.reload_error: str | None = None  # why the last SIGHUP kept the old configuration
        self.reloaded = anyio.Event()  # set (and replaced) by each reload: schedules wake
        self.stopping = anyio.Event()
        self.metrics = Metrics()
        self.history: deque[RunRecord] = deque(maxlen=HISTORY)  # the latest runs, any kind
        self.progress: dict[str, RunProgress] = {}  # each app's latest run, as it goes
        self._tg: TaskGroup | None = None  # the one that owns every task (runs the console asks)

    # -- lifetime ----------------------------------------------------------------------------
    async def serve(self, *, on_ready: Any = print) -> int:
        """Listen, run every app's tasks, stop on SIGTERM or SIGINT (exit 0)."""
        runner = web.AppRunner(self._web_app(), access_log=None)
        await runner.setup()
        host, port = self.config.listen
        await web.TCPSite(runner, host, port, ssl_context=self._tls()).start()
        scheme = "https" if self.config.tls else "http"
        on_ready(f"oktasync serve: listening on {scheme}://{host}:{port} (/healthz, /metrics, "
                 f"/hooks/okta/APP, /hooks/login/APP); apps: {', '.join(self.health)}")
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._until_signalled, tg)
                for app in self.config.apps:
                    self._start_app(tg, app.name)
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()
                for inbox in self.inboxes.values():
                    inbox.close()
        return 0

    def _tls(self) -> ssl.SSLContext | None:
        if self.config.tls is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert, key = self.config.tls
        context.load_cert_chain(cert, key)
        return context

    def _start_app(self, tg: TaskGroup, name: str) -> None:
        self.health.setdefault(name, AppHealth())
        self.runs.setdefault(name, anyio.Lock())
        self.wake.setdefault(name, anyio.Event())
        self.ran.setdefault(name, anyio.Event())
        if name not in self.inboxes:
            (self.config.state_dir / name).mkdir(parents=True, exist_ok=True)
            self.inboxes[name] = Inbox(inbox_path(self.config.state_dir, name),
                                       self.config.inbox_capacity)
        tg.start_soon(self._schedule, name)
        tg.start_soon(self._reconciles, name)
        tg.start_soon(self._events, name)
        tg.start_soon(Poller(self, name).run)

    async def _until_signalled(self, tg: TaskGroup) -> None:
        """SIGTERM or SIGINT: drain and stop. SIGHUP: read the configuration again."""
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT,
                                        signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.reload(tg)
                    continue
                log.info("stopping", signal=signal.Signals(signum).name)
                self.stopping.set()
                for event in self.wake.values():
                    event.set()
                with anyio.move_on_after(DRAIN_S):
                    for lock in self.runs.values():  # an event batch in flight finishes
                        async with lock:
                            pass
                tg.cancel_scope.cancel()
                return

    def reload(self, tg: TaskGroup) -> None:
        """The file as it is now, if it is valid and keeps the state directory and the
        address; otherwise the running configuration stays and ``/healthz`` says why."""
        try:
            config = load_config(self.config.path)
            if (config.state_dir, config.listen, config.tls) != (
                    self.config.state_dir, self.config.listen, self.config.tls):
                raise ConfigError(["[state] dir and [serve] listen, tls_cert and tls_key "
                                   "change only with a restart"])
        except (ConfigError, SyncError, OSError) as exc:
            self.reload_error = f"configuration not reloaded, the running one is kept: {exc}"
            log.error("reload refused", reason=self.reload_error)
            return
        new = [a.name for a in config.apps if a.name not in self.health]
        REDACTOR.set([*REDACTOR.secrets, *config.secret_values()])  # old lines may still say them
        self.config, self.loaded_at, self.reload_error = config, time.time(), None
        for name in new:
            self._start_app(tg, name)
        self.reloaded.set()
        self.reloaded = anyio.Event()
        for event in self.wake.values():  # an app removed: its event worker ends
            event.set()
        log.info("configuration reloaded", apps=[a.name for a in config.apps])

    def app(self, name: str) -> AppConfig | None:
        return next((a for a in self.config.apps if a.name == name), None)

    # -- scheduled runs ----------------------------------------------------------------------
    async def _schedule(self, name: str) -> None:
        """At the times ``schedules.Schedule`` gives, not before the backoff after failed
        runs allows. A reload wakes it (the next time is taken from the new schedule); an
        app a reload removed stops."""
        last_start: datetime | None = None
        while (app := self.app(name)) is not None and not self.stopping.is_set():
            due = self._after_backoff(name, app.schedule, last_start)
            if await self._sleep_until(due):
                last_start = datetime.now(UTC)
                await self.run_once(app)

    def _after_backoff(self, name: str, schedule: Schedule,
                       last_start: datetime | None) -> datetime:
        now = datetime.now(UTC)
        due = schedule.next_run(now, last_start)
        health = self.health[name]
        if health.failures and health.last_finished is not None:
            wait = min(BACKOFF_BASE_S * 2 ** (health.failures - 1), BACKOFF_MAX_S)
            not_before = datetime.fromtimestamp(health.last_finished + wait, UTC)
            while due < not_before:
                due = schedule.next_run(due, due) if schedule.cron is None else \
                    schedule.next_run(due, None)
        return due

    async def _sleep_until(self, due: datetime) -> bool:
        """True at ``due``; False when a reload or a stop came first."""
        reloaded = self.reloaded
        with anyio.move_on_after(max(0.0, (due - datetime.now(UTC)).total_seconds())):
            async with anyio.create_task_group() as tg:
                async def stop() -> None:
                    await self.stopping.wait()
                    tg.cancel_scope.cancel()
                tg.start_soon(stop)
                await reloaded.wait()
                tg.cancel_scope.cancel()
            return False
        return not self.stopping.is_set()

    async def _reconciles(self, name: str) -> None:
        """A reconcile on ``reconcile_schedule``, from the last one (kept in the inbox)."""
        while (app := self.app(name)) is not None and not self.stopping.is_set():
            last = await self.inboxes[name].aget("last_reconcile")
            start = datetime.fromtimestamp(float(last) if last else self.started, UTC)
            due = app.reconcile_schedule.next_run(datetime.now(UTC), start)
            if await self._sleep_until(due):
                await self.run_once(app, reconcile=True)
                await self.inboxes[name].aput("last_reconcile", str(time.time()))

    async def run_once(self, app: AppConfig, *, reconcile: bool = False, full: bool = False,
                       dry_run: bool = False) -> None:
        """One sync of one app, however it ends: recorded, never raised."""
        health = self.health[app.name]
        async with self.runs[app.name]:
            health.runs += 1
            health.last_started = time.time()
            resume = checkpoint_path(self.config.state_dir, app.name).exists()
            options = SyncOptions(app=app.name, resume=resume and not (reconcile or dry_run),
                                  reconcile=reconcile, full=full, dry_run=dry_run, by="serve",
                                  watch=self.watch)
            try:
                result = await run_sync(self.config, options,
                                        echo=lambda text: log.info("run", summary=text))
                summary = result.summaries.get(app.name, {})
                code, outcome = result.exit_code, str(summary.get("outcome", ""))
                kind = "reconcile" if reconcile else str(summary.get("kind", "full"))
            except SyncError as exc:  # the run could not start (the lock, the state dir)
                code, outcome, kind, summary = getattr(exc, "exit_code", 2), str(exc), "none", {}
            health.last_finished = time.time()
            health.last_exit_code, health.last_outcome, health.last_kind = code, outcome, kind
            ok = code in (EXIT_OK, EXIT_WRITES_FAILED)
            health.failures = 0 if ok else health.failures + 1
            if ok:
                health.last_success = health.last_finished
            self.metrics.run(app.name, kind, code, health.last_finished - health.last_started,
                             summary, success=ok)
            self.history.append(RunRecord(app.name, kind, health.last_started,
                                          health.last_finished, code))
            log.info("run finished", app=app.name, exit_code=code, kind=kind)
        self.ran[app.name].set()  # events that waited for a complete sync
        self.ran[app.name] = anyio.Event()

    # -- events ------------------------------------------------------------------------------
    def accepted(self, name: str, new: int) -> None:
        """New events in an app's inbox: its worker wakes."""
        self.metrics.events_accepted(name, new)
        self.wake[name].set()

    def polled(self, name: str, error: str | None) -> None:
        """The poller read the log to its end (``error`` None), or could not."""
        health = self.health[name]
        health.poller_error = error
        if error is None:
            health.poller_last_success = time.time()

    async def _events(self, name: str) -> None:
        """The inbox, drained: sign-ins first, ``BATCH`` at a time, each batch one sync."""
        inbox = self.inboxes[name]
        while (app := self.app(name)) is not None and not self.stopping.is_set():
            self.health[name].inbox_depth = inbox.depth
            self.metrics.inbox_depth(name, inbox.depth)
            if inbox.depth == 0:
                await self.wake[name].wait()
                self.wake[name] = anyio.Event()
                continue
            await anyio.sleep(COALESCE_S)
            batch = await inbox.atake(BATCH)
            retry_in = await self._sync_batch(app, inbox, batch) if batch else None
            if retry_in is not None:
                with anyio.move_on_after(retry_in):  # or when a scheduled run has finished
                    await self.ran[name].wait()

    async def _sync_batch(self, app: AppConfig, inbox: Inbox,
                          batch: list[Any]) -> float | None:
        """One event sync. When the events must wait (no complete sync yet, the app's lock
        held by a CLI run, a run that could not finish), they stay in the inbox and this says
        in how many seconds to try again; None when they are done."""
        async with self.runs[app.name]:
            if self.stopping.is_set():
                return None
            started = time.time()
            try:
                summary = await sync_events(self.config, app, [e.event for e in batch],
                                            SyncOptions(app=app.name, by="serve events",
                                                        watch=self.watch))
            except NoStateStore as exc:
                log.info("events wait", app=app.name, reason=str(exc), pending=inbox.depth)
                return WAIT_FOR_STORE_S
            except SyncError as exc:
                log.warning("event sync could not start", app=app.name, reason=str(exc))
                return LOCKED_RETRY_S
            code = int(summary.get("exit_code", 5))
            self.history.append(RunRecord(app.name, "events", started, time.time(), code))
        self.metrics.run(app.name, "events", code, time.time() - started, summary,
                         success=code in (EXIT_OK, EXIT_WRITES_FAILED))
        if code not in (EXIT_OK, EXIT_WRITES_FAILED, EXIT_GUARD):
            log.warning("event sync failed; its events stay in the inbox", app=app.name,
                        exit_code=code, outcome=summary.get("outcome"))
            return FAILED_RETRY_S
        await inbox.adone([e.uuid for e in batch])
        now = time.time()
        for entry in batch:
            self.metrics.event_latency(app.name, entry.priority, now - entry.received)
            if (done := self.synced.pop(entry.uuid, None)) is not None:
                done.set()
        health = self.health[app.name]
        health.events_synced += len(batch)
        health.last_event_sync, health.inbox_depth = now, inbox.depth
        return None

    async def sync_one(self, app: AppConfig, who: str) -> tuple[int, dict[str, Any]]:
        """The login hook: ``who``'s Okta user synced ahead of queued work; answered when it
        is done (200), or after ``LOGIN_WAIT_S`` with it still queued (202)."""
        user_id = await find_user(self.config, app, who)
        if user_id is None:
            return 404, {"error": "no Okta user maps to that username"}
        event_id = f"login-{uuid.uuid4()}"
        done = self.synced[event_id] = anyio.Event()
        await self.inboxes[app.name].aadd([local_sign_in(event_id, user_id)])
        self.accepted(app.name, 1)
        with anyio.move_on_after(LOGIN_WAIT_S):
            await done.wait()
            return 200, {"status": "synced", "okta_id": user_id}
        self.synced.pop(event_id, None)
        return 202, {"status": "queued", "okta_id": user_id}

    # -- HTTP -------------------------------------------------------------------------------
    def _web_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/progress", self._progress)
        app.router.add_routes(routes(HookSide(
            app=self.app, inbox=lambda name: self.inboxes[name], accepted=self.accepted,
            sync_one=self.sync_one)))
        if self.config.console:
            # imported here: jinja2 and tomlkit for the console's pages only
            from oktasync.webconsole import Console

            Console(self, tls=self.config.tls is not None).routes(app)
            host = self.config.listen[0]
            if self.config.tls is None and host not in ("127.0.0.1", "::1", "localhost"):
                log.warning("the console is served over plain http on a non-loopback "
                            "address: passwords and sessions cross the network in clear; set "
                            "[serve] tls_cert and tls_key", listen=host)
        return app

    # -- what the web console asks ----------------------------------------------------------
    def running(self, name: str) -> bool:
        lock = self.runs.get(name)
        return lock is not None and lock.locked()

    def start_run(self, app: AppConfig, kind: str) -> None:
        """A run asked for from the console, in the service's task group."""
        assert self._tg is not None
        self._tg.start_soon(functools.partial(
            self.run_once, app, reconcile=kind == "reconcile", full=kind == "full",
            dry_run=kind == "preview"))

    def last_run(self, name: str) -> dict[str, Any] | None:
        health = self.health.get(name)
        if health is None or health.last_finished is None:
            return None
        app = self.app(name)
        upcoming = None if app is None else app.schedule.next_run(
            datetime.now(UTC), datetime.fromtimestamp(health.last_started or 0, UTC))
        return {"kind": health.last_kind, "code": health.last_exit_code,
                "outcome": health.last_outcome,
                "when": datetime.fromtimestamp(health.last_finished, UTC).strftime(
                    "%Y-%m-%d %H:%M:%S UTC"),
                "next": upcoming.strftime("%Y-%m-%d %H:%M:%S UTC") if upcoming else ""}

    def healthy_now(self, app: AppConfig) -> bool:
        return self.healthy(app, time.time())

    def held_now(self, app: AppConfig) -> list[Any]:
        return held(self.config, app)

    def release_held_now(self, app: AppConfig) -> None:
        """Held deactivations let go, their users synced, in the service's task group."""
        assert self._tg is not None

        async def release() -> None:
            async with self.runs[app.name]:
                try:
                    await release_held(self.config, app)
                except SyncError as exc:
                    log.warning("held deactivations not released", app=app.name,
                                reason=str(exc))
        self._tg.start_soon(release)

    def reload_now(self) -> str | None:
        """The file read again, as SIGHUP does; why not, if it was refused."""
        assert self._tg is not None
        self.reload(self._tg)
        return self.reload_error

    def healthy(self, app: AppConfig, now: float) -> bool:
        """A success within the last three schedule intervals (or the service younger)."""
        since = self.health[app.name].last_success or self.started
        period = app.schedule.period_s(datetime.fromtimestamp(now, UTC))
        return now - since <= UNHEALTHY_AFTER * period

    async def _healthz(self, request: web.Request) -> web.Response:
        now = time.time()
        apps = {a.name: {**asdict(self.health[a.name]), "healthy": self.healthy(a, now),
                         "poller_lag_s": self._poller_lag(a, now)}
                for a in self.config.apps}
        ok = all(entry["healthy"] for entry in apps.values())
        config = {"loaded_at": self.loaded_at, "reload_error": self.reload_error}
        recent = [asdict(r) for r in self.history]
        return web.json_response({"status": "ok" if ok else "unhealthy", "apps": apps,
                                  "config": config, "recent_runs": recent},
                                 status=200 if ok else 503)

    def watch(self, progress: RunProgress) -> None:
        """Each run's progress, kept until the app's next run replaces it."""
        self.progress[progress.app] = progress

    async def _progress(self, request: web.Request) -> web.Response:
        """Each app's latest run as the terminal's display shows it (``progress.py``): per
        phase and target done / planned, rate, ETA; retries and 429s; Okta's budget wait."""
        return web.json_response({a.name: self.progress[a.name].snapshot()
                                  if a.name in self.progress else None
                                  for a in self.config.apps})

    def _poller_lag(self, app: AppConfig, now: float) -> float | None:
        """Seconds since the poller last read the System Log to its end (None: no poller)."""
        if not app.polls:
            return None
        last = self.health[app.name].poller_last_success
        return round(now - (last or self.started), 3)

    async def _metrics(self, request: web.Request) -> web.Response:
        for app in self.config.apps:
            lag = self._poller_lag(app, time.time())
            if lag is not None:
                self.metrics.poller_lag(app.name, lag)
        today = datetime.now(UTC).date()
        for name, target in self.config.targets.items():
            left = None if target.key_expires is None else (target.key_expires - today).days
            self.metrics.key_expiry(name, left if left is not None
                                    and left <= KEY_WARNING_DAYS else None)
        body, content_type = self.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})
