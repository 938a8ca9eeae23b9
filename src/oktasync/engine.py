"""Run a sync: take the state lock, build the clients, run each app, report, pick the exit code.

Everything with a lifetime (HTTP sessions, the run index, the findings file, the lock) is
opened and closed here, so the pipeline itself only deals with data. Cleanup runs shielded
from cancellation: an interrupted run still writes its summary.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import structlog

from oktasync.checkpoint import Interrupted, checkpoint_path, decide, start_meta
from oktasync.config import AppConfig, Config, TargetConfig
from oktasync.errors import (
    CredentialsError,
    HttpFailure,
    ListingError,
    TargetReadError,
    UsageError,
    collapse,
)
from oktasync.http import HttpClient, make_session
from oktasync.okta_source import OktaSource
from oktasync.pipeline import AppSync
from oktasync.ratelimit import AtlassianLimiter, InFlight, OktaLimiter
from oktasync.report import (
    EXIT_GUARD,
    EXIT_LISTING,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_USAGE,
    EXIT_WRITES_FAILED,
    TargetTally,
    format_summary,
    open_findings,
    open_plan,
    worst,
)
from oktasync.runstore import RunStore
from oktasync.state import Ownership, StateLock, ensure_state_dir, write_json_atomically
from oktasync.targets.base import Target
from oktasync.targets.confluence import ConfluenceTarget
from oktasync.targets.dryrun import DryRunTarget
from oktasync.targets.jira import JiraTarget

log = structlog.get_logger("oktasync.engine")


@dataclass
class SyncOptions:
    app: str | None = None
    dry_run: bool = False
    force: bool = False
    max_in_flight: int | None = None  # overrides [pipeline] max_in_flight
    resume: bool = False
    restart: bool = False
    interrupt_code: list[int] = field(default_factory=list)  # set by the CLI's signal watcher


@dataclass
class RunResult:
    exit_code: int
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{time.monotonic_ns() % 10**6:06d}"


async def run_sync(config: Config, options: SyncOptions, *, echo: Any = print) -> RunResult:
    """Sync one app or all; the exit code is the worst app's.

    Everything that can refuse the run (state directory, lock, checkpoints) is checked
    before any server is contacted.
    """
    apps = [config.app(options.app)] if options.app else list(config.apps)
    state_dir = ensure_state_dir(config.state_dir)
    lock = StateLock(state_dir)
    lock.acquire()
    result = RunResult(EXIT_OK)
    try:
        plan = decide(config, apps, resume=options.resume, restart=options.restart,
                      dry_run=options.dry_run)
        if options.resume:
            apps = [a for a in apps if plan[a.name] is not None]
        ownership = Ownership(state_dir / "state.db")
        try:
            for app in apps:
                summary = await run_app(app, config, options, ownership, state_dir,
                                        plan[app.name])
                result.summaries[app.name] = summary
                result.exit_code = worst(result.exit_code, summary["exit_code"])
                echo(format_summary(app.name, summary))
        finally:
            ownership.close()
    finally:
        lock.release()
    return result


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _target_headers(tc: TargetConfig) -> dict[str, str]:
    auth = (f"Bearer {tc.token.reveal()}" if tc.token is not None
            else _basic(tc.username or "", tc.password.reveal() if tc.password else ""))
    return {"Authorization": auth, "Accept": "application/json",
            "X-Atlassian-Token": "no-check"}


@contextlib.asynccontextmanager
async def _clients(
    app: AppConfig, config: Config, options: SyncOptions,
) -> AsyncIterator[tuple[HttpClient, dict[str, Target]]]:
    """One keep-alive session per server, limiters per the config, closed on exit."""
    in_flight = options.max_in_flight if options.max_in_flight is not None \
        else config.pipeline.max_in_flight
    shared = InFlight(in_flight) if in_flight > 0 else None
    sessions: list[aiohttp.ClientSession] = []
    try:
        session = make_session(connections=app.okta_concurrency, timeout_s=120)
        sessions.append(session)
        okta = HttpClient(session, name=f"Okta ({app.name})", base_url=app.okta_url, headers={
            "Authorization": f"SSWS {app.okta_token.reveal()}", "Accept": "application/json",
        }, limiter=OktaLimiter(concurrency=app.okta_concurrency, max_share=app.okta_max_share,
                               global_limit=shared))
        targets: dict[str, Target] = {}
        for name in app.targets:
            tc = config.targets[name]
            session = make_session(connections=tc.concurrency, timeout_s=tc.timeout_s)
            sessions.append(session)
            client = HttpClient(session, name=name, base_url=tc.url,
                                headers=_target_headers(tc),
                                limiter=AtlassianLimiter(concurrency=tc.concurrency,
                                                         max_rps=tc.max_rps, global_limit=shared))
            targets[name] = (JiraTarget(name, client) if tc.kind == "jira-dc"
                             else ConfluenceTarget(name, client))
        yield okta, targets
    finally:
        with anyio.CancelScope(shield=True):
            for session in sessions:
                await session.close()


def _open_store(app: AppConfig, config: Config, app_dir: Path, run_id: str,
                options: SyncOptions, resumed: Interrupted | None) -> RunStore:
    """The run index: a fresh one, the checkpoint being resumed, or a throw-away for a dry run."""
    if options.dry_run:
        return RunStore(app_dir / f"dry-run-{run_id}.db")
    path = checkpoint_path(config.state_dir, app.name)
    if resumed is not None:
        return RunStore.open_existing(path)
    for suffix in ("", "-wal", "-shm"):  # --restart, or a stale file: start clean
        Path(str(path) + suffix).unlink(missing_ok=True)
    store = RunStore(path)
    store.set_meta(**start_meta(app, config, run_id))
    return store


async def run_app(
    app: AppConfig, config: Config, options: SyncOptions, ownership: Ownership, state_dir: Path,
    resumed: Interrupted | None = None,
) -> dict[str, Any]:
    """One app's run, start to summary. Never raises for a run-time failure: it reports it.

    The checkpoint survives a run that could not finish (interrupted, credentials rejected,
    a listing broken) so that ``--resume`` continues it; a finished run removes it.
    """
    run_id = str(resumed.meta["run_id"]) if resumed else new_run_id()
    started = time.monotonic()
    app_dir = state_dir / app.name
    app_dir.mkdir(parents=True, exist_ok=True)
    findings_path = app_dir / f"findings-{run_id}.csv"
    findings_handle, findings_writer = open_findings(findings_path)
    store = _open_store(app, config, app_dir, run_id, options, resumed)
    store.attach_ownership(ownership.path)
    tallies = {name: TargetTally(name, _sink=findings_writer) for name in app.targets}
    if resumed is not None:
        meta = store.meta()
        for name, tally in tallies.items():
            tally.restore(meta.get(f"tally:{name}", {}), meta.get(f"problems:{name}", []))
    summary: dict[str, Any] = {"app": app.name, "run_id": run_id, "dry_run": options.dry_run,
                               "resumed": resumed is not None,
                               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "findings_file": str(findings_path), "notes": []}
    code, outcome, finished = EXIT_OK, "done", False
    plan_handle = None
    okta_client: HttpClient | None = None
    target_map: dict[str, Target] = {}
    try:
        async with _clients(app, config, options) as (okta_client, target_map):
            if options.dry_run:
                plan_path = app_dir / f"plan-{run_id}.csv"
                plan_handle, writer = open_plan(plan_path)
                target_map = {n: DryRunTarget(t, writer) for n, t in target_map.items()}
                summary["plan_file"] = str(plan_path)
            sync = AppSync(app, config, OktaSource(okta_client), target_map, store, ownership,
                           tallies, force=options.force, dry_run=options.dry_run)
            try:
                result = await sync.run()
            except BaseExceptionGroup as group:
                raise collapse(group) from None
            finally:  # no await: the checkpoint is written even when cancelled
                sync.checkpoint(force=True)
            finished = True
            if result.guard:
                code, outcome = EXIT_GUARD, "stopped by a safety guard"
                summary["notes"].append(result.guard)
    except (ListingError, TargetReadError, HttpFailure) as exc:
        code, outcome = EXIT_LISTING, "a listing failed: nothing that removes access was written"
        summary["notes"].append(str(exc))
    except (CredentialsError, UsageError) as exc:
        code, outcome = EXIT_USAGE, "stopped"
        summary["notes"].append(str(exc))
    except anyio.get_cancelled_exc_class():
        code = options.interrupt_code[0] if options.interrupt_code else EXIT_SIGINT
        outcome = "interrupted; the checkpoint is saved: resume with --resume"
        raise
    finally:  # no await here: runs to the end even when cancelled
        if plan_handle is not None:
            plan_handle.close()
        findings_handle.close()
        failed = any(t.failed for t in tallies.values())
        if code == EXIT_OK and failed:
            code, outcome = EXIT_WRITES_FAILED, "done, some writes failed or were refused"
        if not finished and not options.dry_run and code != EXIT_OK:
            summary["notes"].append(f"resumable: oktasync sync --resume (checkpoint {store.path})")
        summary.update(_finish(summary, code, outcome, started, okta_client,
                               target_map, tallies))
        if not options.dry_run:
            write_json_atomically(app_dir / "last-run.json", summary)
        if finished or options.dry_run:
            store.delete()
        else:
            store.close()
    return summary


def _finish(
    summary: dict[str, Any], code: int, outcome: str, started: float,
    okta: HttpClient | None, targets: dict[str, Target], tallies: dict[str, TargetTally],
) -> dict[str, Any]:
    empty = {"reads": 0, "writes": 0, "retries": 0, "rate_limited": 0, "statuses": {}}
    return {
        "exit_code": code,
        "outcome": outcome,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_time_s": round(time.monotonic() - started, 3),
        "okta": okta.counters.to_json() if okta else empty,
        "targets": {name: tally.to_json(targets[name].counters.to_json() if name in targets
                                        else empty) for name, tally in tallies.items()},
    }


__all__ = ["EXIT_USAGE", "RunResult", "SyncOptions", "run_app", "run_sync"]
