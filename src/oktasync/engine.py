"""Run a sync: take the apps' locks, build the clients, run each app, report, pick the exit code.

Everything with a lifetime (HTTP sessions, the run index, the findings file, the locks) are
opened and closed here, so the pipeline itself only deals with data. Cleanup runs shielded
from cancellation: an interrupted run still writes its summary.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import structlog

from oktasync.audit import AuditTrail
from oktasync.checkpoint import (
    Interrupted,
    checkpoint_path,
    decide,
    read_checkpoint,
    start_meta,
)
from oktasync.config import AppConfig, Config, TargetConfig, basic_credentials
from oktasync.drift import Drift
from oktasync.drift import counts as drift_counts
from oktasync.drift import write_report as write_drift
from oktasync.errors import (
    EXIT_GUARD,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_USAGE,
    EXIT_WRITES_FAILED,
    FullSyncNeeded,
    RetryPolicy,
    RunStops,
    UsageError,
    collapse,
    worst,
)
from oktasync.history import audit_path, prune, save_report
from oktasync.http import HttpClient, make_session
from oktasync.incremental import EventSync, IncrementalSync
from oktasync.models import name_key
from oktasync.network import route_of
from oktasync.okta_source import OktaSource
from oktasync.ownership import Held, Ownership
from oktasync.pipeline import AppSync
from oktasync.progress import RunProgress, Watcher
from oktasync.ratelimit import AtlassianLimiter, InFlight, OktaLimiter
from oktasync.report import TargetTally, format_summary, write_findings
from oktasync.runstore import SCHEMA_VERSION, RunStore, users_named
from oktasync.signals import local_sign_in
from oktasync.state import (
    app_locks,
    ensure_state_dir,
    state_error,
    write_json_atomically,
    writing_state,
)
from oktasync.statestore import (
    Full,
    Incremental,
    choose,
    copy_for_dry_run,
    forget,
    keep,
    mirror_path,
)
from oktasync.targets.base import Target
from oktasync.targets.confluence import ConfluenceTarget
from oktasync.targets.dryrun import DryRunTarget, open_plan
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
    full: bool = False  # a full sync even where an incremental one could run
    reconcile: bool = False  # a full sync that also compares each target with the state store
    interrupt_code: list[int] = field(default_factory=list)  # set by the CLI's signal watcher
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # how every request retries
    wait_s: float = 0  # how long a held app lock is waited for (0: refused at once; --wait)
    by: str = "sync"  # who runs it, named in the app's lock file (status, refusals)
    watch: Watcher | None = None  # given each run's progress as it starts (a display, serve)


@dataclass(frozen=True)
class FromEvents(Incremental):
    """A run on the state store of what some events name (``incremental.EventSync``)."""

    events: tuple[dict[str, Any], ...] = ()


class NoStateStore(UsageError):
    """Events wait for the first complete sync: there is nothing yet to sync them against."""


@dataclass
class RunResult:
    exit_code: int
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)


def new_run_id() -> str:
    """The run's start in UTC to the microsecond: run ids sort as the runs started."""
    now = time.time()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


async def run_sync(config: Config, options: SyncOptions, *, echo: Any = print) -> RunResult:
    """Sync one app or all; the exit code is the worst app's.

    Everything that can refuse the run (state directory, lock, checkpoints) is checked
    before any server is contacted.
    """
    apps = [config.app(options.app)] if options.app else list(config.apps)
    state_dir = ensure_state_dir(config.state_dir)
    result = RunResult(EXIT_OK)
    async with app_locks(state_dir, [a.name for a in apps], wait_s=options.wait_s,
                         by=options.by):
        plan = decide(config, apps, resume=options.resume, restart=options.restart,
                      dry_run=options.dry_run)
        if options.resume:
            apps = [a for a in apps if plan[a.name] is not None]
        with writing_state(state_dir):
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
    return result


async def sync_events(config: Config, app: AppConfig, events: list[dict[str, Any]],
                      options: SyncOptions | None = None) -> dict[str, Any]:
    """Sync what some events name (``incremental.EventSync``) on the app's state store: the
    service's deliveries and polled events, a sign-in, ``oktasync sync-user``. Raises
    ``NoStateStore`` when no complete sync has left one (the scheduled full sync then covers
    what the events name), ``UsageError`` when the app's lock is held or the store unusable."""
    options = options or SyncOptions(app=app.name, by="event sync")
    kind = choose(app, config, full=False)
    if isinstance(kind, Full):
        raise NoStateStore(f"app {app.name!r}: events wait for a complete sync ({kind.reason})")
    state_dir = ensure_state_dir(config.state_dir)
    async with app_locks(state_dir, [app.name], wait_s=options.wait_s, by=options.by):
        with writing_state(state_dir):
            ownership = Ownership(state_dir / "state.db")
        try:
            return await _run_once(app, config, options, ownership, state_dir, None,
                                   FromEvents(kind.path, kind.position, kind.unfinished,
                                              tuple(events)))
        finally:
            ownership.close()


async def sync_user(config: Config, app: AppConfig, who: str) -> dict[str, Any] | None:
    """A single-user sync (sync-semantics.md): the Okta user ``who`` names (``find_user``)
    synced now, as a sign-in would have it; None when the app has no such user."""
    user_id = await find_user(config, app, who)
    if user_id is None:
        return None
    event = local_sign_in(f"sync-user-{uuid.uuid4()}", user_id)
    try:
        return await sync_events(config, app, [event],
                                 SyncOptions(app=app.name, by="sync-user"))
    except NoStateStore:
        raise UsageError(f"app {app.name!r} has no complete sync yet: run `oktasync sync "
                         f"--app {app.name}` first, which syncs every user") from None


def held(config: Config, app: AppConfig) -> list[Held]:
    """The deactivations held for an administrator (``oktasync held``)."""
    ownership = Ownership(ensure_state_dir(config.state_dir) / "state.db")
    try:
        return ownership.held(app.name)
    finally:
        ownership.close()


async def release_held(config: Config, app: AppConfig) -> dict[str, Any] | None:
    """``oktasync held --release``: the held deactivations no longer held, and their users
    synced now, past the guards (what Okta says now decides: a user reactivated meanwhile
    is not deactivated). None when nothing was held. If the sync cannot start, they stay
    held."""
    ownership = Ownership(ensure_state_dir(config.state_dir) / "state.db")
    try:
        released = ownership.release(app.name)
        users = sorted({h.okta_id for h in released if h.okta_id})
        if not released:
            return None
        events = [local_sign_in(f"release-{uuid.uuid4()}", user) for user in users]
        try:
            options = SyncOptions(app=app.name, force=True, by="held --release")
            return await sync_events(config, app, events, options)
        except BaseException:
            ownership.hold(app.name, released)
            raise
    finally:
        ownership.close()


def target_headers(tc: TargetConfig) -> dict[str, str]:
    """The headers that authenticate to a target (a token, or basic), by its kind."""
    auth = (f"Bearer {tc.token.reveal()}" if tc.token is not None else
            "Basic " + basic_credentials(tc.username or "",
                                         tc.password.reveal() if tc.password else ""))
    if tc.kind == "atlassian-scim":
        scim_json = "application/scim+json"
        return {"Authorization": auth, "Accept": scim_json, "Content-Type": scim_json}
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
        session = _okta_session(app, app.okta_concurrency, 120)
        sessions.append(session)
        okta = _okta_client(app, session, OktaLimiter(
            concurrency=app.okta_concurrency, max_share=app.okta_max_share,
            global_limit=shared), options.retry)
        await okta.sign_in()  # a refused service app stops the run here, before any write
        targets: dict[str, Target] = {}
        for name in app.targets:
            tc = config.targets[name]
            session = make_session(connections=tc.concurrency, timeout_s=tc.timeout_s,
                                   route=route_of(name, tc.url, tc.network))
            sessions.append(session)
            client = HttpClient(session, name=name, base_url=tc.url,
                                headers=target_headers(tc),
                                limiter=AtlassianLimiter(concurrency=tc.concurrency,
                                                         max_rps=tc.max_rps, global_limit=shared),
                                policy=options.retry)
            targets[name] = _target(name, tc, client)
        yield okta, targets
    finally:
        with anyio.CancelScope(shield=True):
            for session in sessions:
                await session.close()


def _target(name: str, tc: TargetConfig, client: HttpClient) -> Target:
    if tc.kind == "jira-dc":
        return JiraTarget(name, client)
    if tc.kind == "confluence-dc":
        return ConfluenceTarget(name, client)
    # imported here: scim2-models takes half a second to load, for Cloud targets only
    from oktasync.targets.scim import ScimTarget

    return ScimTarget(name, client, tc.verified_domains)


def _okta_session(app: AppConfig, connections: int, timeout_s: float) -> aiohttp.ClientSession:
    return make_session(connections=connections, timeout_s=timeout_s,
                        route=route_of(f"Okta ({app.name})", app.okta_url, app.okta_network))


def _okta_client(app: AppConfig, session: aiohttp.ClientSession, limiter: OktaLimiter,
                 policy: RetryPolicy) -> HttpClient:
    """Okta's client: an API token in every request's header, or a service app's access
    token (renewed as it goes) through ``OktaOAuth``."""
    name = f"Okta ({app.name})"
    headers = {"Accept": "application/json"}
    auth = None
    if app.okta_oauth is not None:
        # imported here: pyjwt and cryptography cost ~12 MB and ~0.1 s, for service apps only
        from oktasync.oauth import OktaOAuth

        auth = OktaOAuth(app.okta_oauth, app.okta_url, name, session)
    elif app.okta_token is not None:
        headers["Authorization"] = f"SSWS {app.okta_token.reveal()}"
    return HttpClient(session, name=name, base_url=app.okta_url, headers=headers,
                      limiter=limiter, policy=policy, auth=auth)


@contextlib.asynccontextmanager
async def okta_reader(app: AppConfig, *, share: float,
                      concurrency: int = 1) -> AsyncIterator[OktaSource]:
    """Okta alone, for reads outside a run (the service's System Log poller, finding a
    user): its own session and its own ``share`` of each rate-limit bucket."""
    session = _okta_session(app, concurrency, 60)
    try:
        client = _okta_client(app, session, OktaLimiter(concurrency=concurrency,
                                                        max_share=share), RetryPolicy())
        await client.sign_in()
        yield OktaSource(client, app.profile_attributes)
    finally:
        with anyio.CancelScope(shield=True):
            await session.close()


async def find_user(config: Config, app: AppConfig, who: str) -> str | None:
    """The Okta id of the user ``who`` names: a target username (as the state store maps it
    back), or an Okta id or login (read from Okta, and also a target username when the
    app's rules make that login into it). None: no Okta user is named so."""
    mirror = mirror_path(config.state_dir, app.name)
    named = users_named(mirror, name_key(who)) if mirror.exists() else []
    if len(named) == 1:
        return named[0]
    async with okta_reader(app, share=app.okta_max_share) as okta:
        user = await okta.user(who)
    if user is None:
        return None
    rules = [app.rule_for(config.targets[t]) for t in app.targets if t in config.targets]
    names = {name_key(r.username(user.login, user.email)) for r in rules}
    return user.id if who in (user.id, user.login) or name_key(who) in names else None


def _open_store(app: AppConfig, config: Config, app_dir: Path, run_id: str,
                options: SyncOptions, resumed: Interrupted | None,
                kind: Incremental | Full) -> RunStore:
    """The run index: the state store (an incremental run), a fresh one, the checkpoint being
    resumed, or a throw-away for a dry run (a copy of the state store for an incremental one)."""
    dry = app_dir / f"dry-run-{run_id}.db"
    if isinstance(kind, Incremental):
        # ``choose`` checked the store (header, integrity, version) a moment ago
        return copy_for_dry_run(kind.path, dry) if options.dry_run else RunStore(kind.path)
    if options.dry_run:
        return RunStore(dry)
    path = checkpoint_path(config.state_dir, app.name)
    if resumed is not None:
        return RunStore.open_existing(path)
    return _fresh_checkpoint(path, start_meta(app, config, run_id))


def _fresh_checkpoint(path: Path, meta: dict[str, Any]) -> RunStore:
    """A new checkpoint appears whole or not at all: its tables and metadata are written to a
    file beside it, which is then renamed into place. A checkpoint begun on a full disk is
    therefore never left half-written (and later refused as unreadable)."""
    new = path.with_name(path.name + ".new")
    _remove_database(path)  # --restart, or a stale file: start clean
    try:
        store = RunStore(new)
        try:
            store.set_meta(**meta)
        finally:
            store.close()
        os.replace(new, path)
    except BaseException:
        _remove_database(new)
        raise
    return RunStore(path)


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


@dataclass
class Verdict:
    """How an app's run ended: the exit code, in words, and whether it reached its end."""

    code: int = EXIT_OK
    outcome: str = "done"
    finished: bool = False
    unsaved: bool = False  # part of the run's record could not be written (a full disk)
    notes: list[str] = field(default_factory=list)
    full_instead: str | None = None  # an incremental run found it must be a full one: why

    @property
    def complete(self) -> bool:
        """Finished, and everything about it written down: only then may its checkpoint go."""
        return self.finished and not self.unsaved

    def stopped(self, code: int, outcome: str, note: str) -> None:
        self.code, self.outcome = worst(self.code, code), outcome
        if note not in self.notes:
            self.notes.append(note)


KEY_WARNING_DAYS = 30


def key_expiry_notes(app: AppConfig, config: Config, today: date) -> list[str]:
    """A warning for each of the app's targets whose API key expires within 30 days (or has):
    Atlassian's SCIM keys live a year, and a run with an expired one only fails."""
    notes = []
    for name in app.targets:
        expires = config.targets[name].key_expires
        if expires is not None and (expires - today).days <= KEY_WARNING_DAYS:
            left = (expires - today).days
            when = (f"expired on {expires}" if left < 0 else
                    f"expires on {expires}, in {left} day{'s' if left != 1 else ''}")
            notes.append(f"{name}: its API key {when}: create a new one (admin.atlassian.com → "
                         "Security → Identity providers → the directory) and update token and "
                         "key_expires")
    return notes


async def run_app(
    app: AppConfig, config: Config, options: SyncOptions, ownership: Ownership, state_dir: Path,
    resumed: Interrupted | None = None,
) -> dict[str, Any]:
    """One app's run, start to summary: incremental where it can be, else full (an
    incremental run that finds it cannot vouch for its reads becomes a full one, before
    writing anything). Never raises for a run-time failure: it reports it."""
    try:
        kind: Incremental | Full | UsageError = (
            Full("resuming an interrupted full sync") if resumed is not None
            else Full("asked for (--reconcile)") if options.reconcile
            else choose(app, config, full=options.full or options.restart))
    except UsageError as exc:  # a state store that cannot be used: nothing is read
        kind = exc
    summary = await _run_once(app, config, options, ownership, state_dir, resumed, kind)
    if summary.get("full_instead"):
        summary = await _run_once(app, config, options, ownership, state_dir, None,
                                  Full(summary["full_instead"]))
    return summary


async def _run_once(
    app: AppConfig, config: Config, options: SyncOptions, ownership: Ownership, state_dir: Path,
    resumed: Interrupted | None, kind: Incremental | Full | UsageError,
) -> dict[str, Any]:
    """One run of one kind. The checkpoint survives a full run that could not finish
    (interrupted, credentials rejected, a listing broken, a full disk) so that ``--resume``
    continues it; a finished full run's index becomes the state store. Every log line of
    the run carries its app and run id."""
    run_id = str(resumed.meta["run_id"]) if resumed else new_run_id()
    with structlog.contextvars.bound_contextvars(app=app.name, run_id=run_id):
        return await _run_segment(app, config, options, ownership, state_dir, resumed, kind,
                                  run_id)


async def _run_segment(
    app: AppConfig, config: Config, options: SyncOptions, ownership: Ownership, state_dir: Path,
    resumed: Interrupted | None, kind: Incremental | Full | UsageError, run_id: str,
) -> dict[str, Any]:
    started = time.monotonic()
    app_dir = state_dir / app.name
    summary: dict[str, Any] = {"app": app.name, "run_id": run_id, "dry_run": options.dry_run,
                               "resumed": resumed is not None,
                               "kind": "events" if isinstance(kind, FromEvents)
                               else "incremental" if isinstance(kind, Incremental)
                               else "full",
                               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "findings_file": str(app_dir / f"findings-{run_id}.csv"),
                               "notes": []}
    if isinstance(kind, Full):
        summary["full_because"] = kind.reason
    verdict = Verdict(notes=key_expiry_notes(app, config, datetime.now(UTC).date()))
    try:
        if isinstance(kind, UsageError):
            raise kind
        with writing_state(state_dir):
            app_dir.mkdir(parents=True, exist_ok=True)
            store = _open_store(app, config, app_dir, run_id, options, resumed, kind)
            store.attach_ownership(ownership.path)
    except UsageError as exc:  # the checkpoint could not be started: nothing was read
        verdict.stopped(EXIT_USAGE, "stopped before reading anything", str(exc))
        summary.update(_finish(summary, verdict, started, None, {}, {}))
        if not options.dry_run:
            _saving(verdict, state_dir, lambda: write_json_atomically(
                app_dir / "last-run.json", summary))
        _keep_record(summary, verdict, config, app_dir)
        return summary
    meta = store.meta()
    audit = (AuditTrail(audit_path(app_dir, run_id), run_id)
             if config.audit and not options.dry_run else None)
    tallies = {name: TargetTally(name, store, resumed=resumed is not None,
                                 already=int(meta.get(f"already:{name}", 0)), audit=audit)
               for name in app.targets}
    clients: dict[str, Any] = {}
    try:
        await _sync_app(app, config, options, ownership, store, tallies, verdict, summary,
                        app_dir, clients, resumed is not None, kind)
    finally:  # no await here: runs to the end even when cancelled
        if audit is not None:
            audit.close()
            if audit.path.exists():
                summary["audit_file"] = str(audit.path)
        _report(store, tallies, verdict, summary, started, clients, app_dir, options, kind)
        if verdict.full_instead is None:  # else the full run that follows is the record
            _keep_record(summary, verdict, config, app_dir)
    return summary


def _keep_record(summary: dict[str, Any], verdict: Verdict, config: Config,
                 app_dir: Path) -> None:
    """The run's JSON report, then the older runs' files past ``[state] keep_runs`` go
    (never this run's, never the one a checkpoint can resume)."""
    if not _saving(verdict, config.state_dir, lambda: save_report(app_dir, summary)):
        summary.update(exit_code=verdict.code, outcome=verdict.outcome, notes=verdict.notes)
        return
    protected = {str(summary["run_id"])}
    with contextlib.suppress(UsageError):
        interrupted = read_checkpoint(checkpoint_path(config.state_dir, app_dir.name))
        if interrupted is not None:
            protected.add(str(interrupted.meta.get("run_id")))
    _saving(verdict, config.state_dir, lambda: prune(app_dir, config.keep_runs, protected))


async def _sync_app(
    app: AppConfig, config: Config, options: SyncOptions, ownership: Ownership,
    store: RunStore, tallies: dict[str, TargetTally], verdict: Verdict, summary: dict[str, Any],
    app_dir: Path, clients: dict[str, Any], resumed: bool, kind: Incremental | Full,
) -> None:
    """The run itself; every way it can end is turned into the verdict, here and only here."""
    plan_handle = None
    try:
        async with _clients(app, config, options) as (okta_client, target_map):
            clients.update(okta=okta_client, targets=target_map)
            if options.dry_run:
                plan_path = app_dir / f"plan-{summary['run_id']}.csv"
                plan_handle, writer = open_plan(plan_path)
                target_map = {n: DryRunTarget(t, writer) for n, t in target_map.items()}
                summary["plan_file"] = str(plan_path)
            okta = OktaSource(okta_client, app.profile_attributes)
            reconcile_with = _reconcile_with(app, config, options, store)
            if options.reconcile and reconcile_with is None:
                verdict.notes.append("no state store to compare the targets with (no complete "
                                     "sync yet): drift is repaired, not reported")
            sync = (EventSync(app, config, okta, target_map, store, ownership, tallies,
                              position=kind.position, unfinished=kind.unfinished,
                              force=options.force, dry_run=options.dry_run,
                              events=list(kind.events))
                    if isinstance(kind, FromEvents)
                    else IncrementalSync(app, config, okta, target_map, store, ownership, tallies,
                                         position=kind.position, unfinished=kind.unfinished,
                                         force=options.force, dry_run=options.dry_run)
                    if isinstance(kind, Incremental)
                    else AppSync(app, config, okta, target_map, store, ownership, tallies,
                                 force=options.force, dry_run=options.dry_run, resumed=resumed,
                                 reconcile_with=reconcile_with))
            _watch(sync.progress, okta_client, target_map, options)
            try:
                guard = await sync.run()
            except BaseExceptionGroup as group:
                raise collapse(group) from None
            finally:  # no await: the checkpoint is written even when cancelled
                sync.progress.close()
                sync.progress.ended = True
                summary["phases"] = sync.progress.phases
                _saving(verdict, config.state_dir, sync.checkpoint)
                if sync.drift is not None:
                    _report_drift(sync.drift, summary, app_dir, verdict, config.state_dir)
            verdict.finished = True
            if isinstance(sync, IncrementalSync):
                summary["users_changed"] = sync.changed
            if isinstance(sync, EventSync):
                summary["users_synced"] = sync.affected
                summary["users_not_in_okta"] = sync.gone  # unknown, or deleted: said, not synced
                if sync.gate is not None and sync.gate.held_now:
                    summary["held"] = sync.gate.held_now
                    verdict.notes.append(
                        f"{sync.gate.held_now} deactivations held for an administrator: more "
                        "than max_deactivations allows within deactivation_window (see "
                        "`oktasync held`)")
            if not guard and not options.dry_run and sync.okta_time is not None \
                    and not isinstance(kind, FromEvents):
                summary["okta_time"] = sync.okta_time  # as the state store records it
            if guard:
                verdict.stopped(EXIT_GUARD, "stopped by a safety guard", guard)
    except FullSyncNeeded as exc:  # found before any write: a full sync runs instead
        verdict.full_instead = str(exc)
    except RunStops as exc:
        verdict.stopped(exc.exit_code, exc.outcome, str(exc))
    except (OSError, sqlite3.Error) as exc:
        error = state_error(exc, config.state_dir)
        if error is None:
            raise
        verdict.stopped(error.exit_code, error.outcome, str(error))
    except anyio.get_cancelled_exc_class():
        code = options.interrupt_code[0] if options.interrupt_code else EXIT_SIGINT
        verdict.code = worst(verdict.code, code)
        verdict.outcome = "interrupted; the checkpoint is saved: resume with --resume"
        raise
    except Exception as exc:  # a bug: said as such, never as "done"
        log.exception("internal error", app=app.name)
        verdict.stopped(EXIT_INTERNAL, "stopped by an internal error (a bug: please report it)",
                        f"internal error: {type(exc).__name__}: {exc}")
    finally:
        if plan_handle is not None:
            plan_handle.close()


def _watch(progress: RunProgress, okta: HttpClient, targets: dict[str, Target],
           options: SyncOptions) -> None:
    """The run's progress reads each server's retries and 429s and Okta's budget wait; the
    display (or the service) is handed it."""
    progress.servers = {"okta": okta.counters,
                        **{name: t.counters for name, t in targets.items()}}
    if isinstance(okta.limiter, OktaLimiter):
        progress.okta_wait = okta.limiter.budget_wait
    if options.watch is not None:
        options.watch(progress)


def _reconcile_with(app: AppConfig, config: Config, options: SyncOptions,
                    store: RunStore) -> Path | None:
    """A reconcile (asked for, or resumed) compares with the state store, when there is one
    this version reads; it says so in the run's metadata, so a resume reconciles too."""
    if not (options.reconcile or store.meta().get("reconcile")):
        return None
    store.set_meta(reconcile=True)
    path = mirror_path(config.state_dir, app.name)
    if not path.exists():
        return None
    try:
        previous = RunStore.open_existing(path)
    except (sqlite3.Error, OSError):
        return None
    usable = previous.meta().get("schema_version") == SCHEMA_VERSION
    previous.close()
    return path if usable else None


def _report_drift(found: list[Drift], summary: dict[str, Any], app_dir: Path,
                  verdict: Verdict, state_dir: Path) -> None:
    """The drift report beside the findings, and its counts in the summary."""
    path = app_dir / f"drift-{summary['run_id']}.csv"
    if _saving(verdict, state_dir, lambda: write_drift(path, found)):
        summary["drift"] = {"file": str(path), "found": drift_counts(found)}


def _saving(verdict: Verdict, state_dir: Path, save: Any) -> bool:
    """Write part of the run's record; a state directory that cannot take it (a full disk)
    becomes the verdict (exit 2, said once), never a traceback that hides the summary."""
    try:
        save()
    except (OSError, sqlite3.Error) as exc:
        error = state_error(exc, state_dir)
        if error is None:
            raise
        verdict.stopped(error.exit_code, error.outcome, str(error))
        verdict.unsaved = True
        return False
    return True


def _report(store: RunStore, tallies: dict[str, TargetTally], verdict: Verdict,
            summary: dict[str, Any], started: float, clients: dict[str, Any], app_dir: Path,
            options: SyncOptions, kind: Incremental | Full) -> None:
    """The findings CSV and ``last-run.json``, from the run index; then the index becomes the
    state store (a complete full run), stays it (an incremental run), is kept for
    ``--resume`` (an unfinished full run) or removed (a dry run)."""
    state_dir = app_dir.parent
    if verdict.full_instead is not None:  # nothing written: the full run reports
        summary["full_instead"] = verdict.full_instead
        store.delete() if options.dry_run else store.close()
        return
    if isinstance(kind, FromEvents) and next(store.problems(limit=1), None) is None:
        summary.pop("findings_file")  # an event run with nothing to report leaves no file
    else:
        _saving(verdict, state_dir,
                lambda: write_findings(Path(summary["findings_file"]), store))
    if verdict.code == EXIT_OK and any(t.failed for t in tallies.values()):
        verdict.code, verdict.outcome = (EXIT_WRITES_FAILED,
                                         "done, some writes failed or were refused")
    if isinstance(kind, Full) and not kind.reason.startswith("asked for") \
            and summary["kind"] == "full" and not summary["resumed"]:
        verdict.notes.append(f"a full sync: {kind.reason}")
    if not verdict.complete and not options.dry_run and verdict.code != EXIT_OK:
        verdict.notes.append(
            "the next sync reads these changes again" if isinstance(kind, Incremental)
            else f"resumable: oktasync sync --resume (checkpoint {store.path})")
    summary.update(_finish(summary, verdict, started, clients.get("okta"),
                           clients.get("targets", {}), tallies))
    last = "last-event-run.json" if isinstance(kind, FromEvents) else "last-run.json"
    if not options.dry_run and not _saving(
            verdict, state_dir, lambda: write_json_atomically(app_dir / last, summary)):
        summary.update(exit_code=verdict.code, outcome=verdict.outcome, notes=verdict.notes)
    if options.dry_run:
        store.delete()
    elif verdict.complete and isinstance(kind, Full) and verdict.code == EXIT_GUARD:
        store.delete()  # what it read may be short: the next run reads everything again
        _saving(verdict, state_dir, lambda: forget(state_dir, summary["app"]))
    elif verdict.complete and isinstance(kind, Full):
        store.close()
        _saving(verdict, state_dir, lambda: keep(store.path, state_dir, summary["app"]))
    else:  # the state store, or a checkpoint kept for --resume
        store.close()


def _finish(
    summary: dict[str, Any], verdict: Verdict, started: float,
    okta: HttpClient | None, targets: dict[str, Target], tallies: dict[str, TargetTally],
) -> dict[str, Any]:
    empty = {"reads": 0, "writes": 0, "retries": 0, "rate_limited": 0, "statuses": {}}
    return {
        "exit_code": verdict.code,
        "outcome": verdict.outcome,
        "notes": verdict.notes,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_time_s": round(time.monotonic() - started, 3),
        "okta": okta.counters.to_json() if okta else empty,
        "targets": {name: tally.to_json(targets[name].counters.to_json() if name in targets
                                        else empty) for name, tally in tallies.items()},
    }


__all__ = [
    "EXIT_USAGE",
    "NoStateStore",
    "RunResult",
    "SyncOptions",
    "held",
    "release_held",
    "run_app",
    "run_sync",
    "sync_events",
    "sync_user",
]
