"""``oktasync serve``: one long-running process that syncs each app on its ``schedule`` and
says how that goes (``/healthz``, ``/metrics``).

First part of issue 12. Each app is synced on its schedule (``schedules.Schedule``: every
interval from each run's start, the first at once, or a cron expression's times in the app's
zone): incremental where it can be, full where it must, an interrupted full sync resumed by
itself rather than waiting for ``--resume``. One run at a time, because the state directory
takes one run at a time (``state.StateLock``), so a CLI ``sync`` meanwhile is refused with the
lock holder named. A failed run is tried again at the app's next time and shows in
``/healthz``. SIGTERM or SIGINT stops the service after the run in progress has saved its
checkpoint (exit 0); SIGHUP reads the configuration again (a bad file is refused and the
running one kept, the reason in ``/healthz``). Event hooks, the System Log poller, sign-in
syncs and per-app locks are still to come.
"""

from __future__ import annotations

import signal
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import structlog
from aiohttp import web
from anyio.abc import TaskGroup
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from oktasync.checkpoint import checkpoint_path
from oktasync.config import AppConfig, Config, ConfigError, load_config
from oktasync.engine import SyncOptions, run_sync
from oktasync.errors import EXIT_OK, EXIT_WRITES_FAILED, SyncError

log = structlog.get_logger("oktasync.serve")
UNHEALTHY_AFTER = 3  # schedule intervals without a successful run


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


class Service:
    """The schedules, the run in progress, and what they report."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.started = time.time()
        self.health = {app.name: AppHealth() for app in config.apps}
        self.one_run = anyio.Lock()  # the state directory takes one run at a time
        self.loaded_at = self.started
        self.reload_error: str | None = None  # why the last SIGHUP kept the old configuration
        self.reloaded = anyio.Event()  # set (and replaced) by each reload: schedules wake
        self.registry = CollectorRegistry()
        self.runs = Counter("oktasync_runs", "Sync runs by app, kind and outcome",
                            ["app", "kind", "outcome"], registry=self.registry)
        self.last_success = Gauge("oktasync_last_success_timestamp_seconds",
                                  "When each app's last successful run finished",
                                  ["app"], registry=self.registry)
        self.run_seconds = Gauge("oktasync_last_run_seconds", "Wall time of each app's last run",
                                 ["app"], registry=self.registry)

    async def serve(self, *, on_ready: Any = print) -> int:
        """Listen, run every app's schedule, stop on SIGTERM or SIGINT (exit 0)."""
        runner = web.AppRunner(self._web_app(), access_log=None)
        await runner.setup()
        host, port = self.config.listen
        await web.TCPSite(runner, host, port).start()
        on_ready(f"oktasync serve: listening on http://{host}:{port} (/healthz, /metrics); "
                 f"apps: {', '.join(self.health)}")
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._until_signalled, tg)
                for app in self.config.apps:
                    tg.start_soon(self._schedule, app.name)
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()
        return 0

    async def _until_signalled(self, tg: TaskGroup) -> None:
        """SIGTERM or SIGINT: stop. SIGHUP: read the configuration again."""
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT,
                                        signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.reload(tg)
                    continue
                log.info("stopping", signal=signal.Signals(signum).name)
                tg.cancel_scope.cancel()
                return

    def reload(self, tg: TaskGroup) -> None:
        """The file as it is now, if it is valid and keeps the state directory and the
        address; otherwise the running configuration stays and ``/healthz`` says why."""
        try:
            config = load_config(self.config.path)
            if (config.state_dir, config.listen) != (self.config.state_dir, self.config.listen):
                raise ConfigError(["[state] dir and [serve] listen change only with a restart"])
        except (ConfigError, SyncError, OSError) as exc:
            self.reload_error = f"configuration not reloaded, the running one is kept: {exc}"
            log.error("reload refused", reason=self.reload_error)
            return
        new = [a.name for a in config.apps if a.name not in self.health]
        self.config, self.loaded_at, self.reload_error = config, time.time(), None
        for name in new:
            self.health[name] = AppHealth()
            tg.start_soon(self._schedule, name)
        self.reloaded.set()
        self.reloaded = anyio.Event()
        log.info("configuration reloaded", apps=[a.name for a in config.apps])

    def _app(self, name: str) -> AppConfig | None:
        return next((a for a in self.config.apps if a.name == name), None)

    async def _schedule(self, name: str) -> None:
        """At the times ``schedules.Schedule`` gives: an interval from each run's start (the
        first at once), or a cron expression's times in the app's zone. A reload wakes it
        (the next time is taken from the new schedule); an app a reload removed stops."""
        last_start: datetime | None = None
        while (app := self._app(name)) is not None:
            now = datetime.now(UTC)
            due = app.schedule.next_run(now, last_start)
            woken = False
            with anyio.move_on_after(max(0.0, (due - now).total_seconds())):
                await self.reloaded.wait()
                woken = True
            if not woken:
                last_start = datetime.now(UTC)
                await self.run_once(app)

    async def run_once(self, app: AppConfig) -> None:
        """One sync of one app, however it ends: recorded, never raised."""
        health = self.health[app.name]
        async with self.one_run:
            health.runs += 1
            health.last_started = time.time()
            resume = checkpoint_path(self.config.state_dir, app.name).exists()
            try:
                result = await run_sync(self.config, SyncOptions(app=app.name, resume=resume),
                                        echo=lambda text: log.info("run", summary=text))
                summary = result.summaries.get(app.name, {})
                code, outcome = result.exit_code, str(summary.get("outcome", ""))
                kind = str(summary.get("kind", "full"))
            except SyncError as exc:  # the run could not start (the lock, the state dir)
                code, outcome, kind = getattr(exc, "exit_code", 2), str(exc), "none"
            health.last_finished = time.time()
            health.last_exit_code, health.last_outcome, health.last_kind = code, outcome, kind
            ok = code in (EXIT_OK, EXIT_WRITES_FAILED)
            if ok:
                health.last_success = health.last_finished
                self.last_success.labels(app.name).set(health.last_finished)
            self.runs.labels(app.name, kind, "ok" if code == EXIT_OK else f"exit {code}").inc()
            self.run_seconds.labels(app.name).set(health.last_finished - health.last_started)
            log.info("run finished", app=app.name, exit_code=code, kind=kind)

    # -- HTTP -------------------------------------------------------------------------------
    def _web_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    def healthy(self, app: AppConfig, now: float) -> bool:
        """A success within the last three schedule intervals (or the service younger)."""
        since = self.health[app.name].last_success or self.started
        period = app.schedule.period_s(datetime.fromtimestamp(now, UTC))
        return now - since <= UNHEALTHY_AFTER * period

    async def _healthz(self, request: web.Request) -> web.Response:
        now = time.time()
        apps = {a.name: {**asdict(self.health[a.name]), "healthy": self.healthy(a, now)}
                for a in self.config.apps}
        ok = all(entry["healthy"] for entry in apps.values())
        config = {"loaded_at": self.loaded_at, "reload_error": self.reload_error}
        return web.json_response({"status": "ok" if ok else "unhealthy", "apps": apps,
                                  "config": config}, status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})
