"""The command line: `oktasync sync | sync-user | serve | held | status | config check |
config schema | demo | emulate`.

The CLI's job is to turn every user mistake into a clear message and an exit code from the
semantics page (never a traceback, never a secret), to run the async code on anyio's asyncio
backend (aiolimiter needs asyncio), and to turn SIGINT/SIGTERM into a clean stop (130/143).
"""

from __future__ import annotations

import argparse
import getpass
import json
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from oktasync import __version__
from oktasync.config import Config, ConfigError, load_config, read_config
from oktasync.errors import (
    EXIT_INTERNAL,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_USAGE,
    SyncError,
    collapse,
    exit_code_of,
)
from oktasync.logs import REDACTOR, configure, safe, say
from oktasync.text import shown

SIGNAL_EXIT = {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    """A length of time in seconds: a finite number, zero or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oktasync", description=(
        "Keep Jira and Confluence Data Center in line with Okta: users, status, groups."))
    parser.add_argument("--version", action="version", version=f"oktasync {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more detail in the log (debug lines; an internal error's traceback)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="only warnings and errors in the log")
    parser.add_argument("--log-format", choices=("human", "json"),
                        help="log lines as text or as JSON objects (default: human on a "
                             "terminal, JSON otherwise, or $OKTASYNC_LOG_FORMAT); the run's "
                             "summary on stdout follows it (with json: one JSON line)")
    sub = parser.add_subparsers(dest="command", required=True)

    sync = sub.add_parser("sync", help="sync one app, or all: what changed since the last "
                                       "complete sync, or everything the first time")
    sync.add_argument("--config", required=True, type=Path, help="TOML configuration file")
    sync.add_argument("--app", help="sync only this app (default: every [[app]])")
    sync.add_argument("--dry-run", action="store_true",
                      help="read and plan; write the plan to a CSV, nothing to any server")
    sync.add_argument("--force", action="store_true",
                      help="go past the max_deactivations guard")
    sync.add_argument("--max-in-flight", type=_positive_int, metavar="N",
                      help="cap requests in flight across all servers")
    sync.add_argument("--resume", action="store_true",
                      help="continue the interrupted run of each app from its checkpoint")
    sync.add_argument("--restart", action="store_true",
                      help="discard an interrupted run's checkpoint and start a fresh full sync")
    sync.add_argument("--full", action="store_true",
                      help="read everything (a full sync), even where an incremental sync of "
                           "what changed since the last complete one could run (the default)")
    sync.add_argument("--reconcile", action="store_true",
                      help="a full sync that also compares each target with what oktasync "
                           "left there, repairs what changed behind its back and writes a "
                           "drift report")
    sync.add_argument("--no-progress", action="store_true",
                      help="no live display on a terminal: a progress log line every 10 s "
                           "instead (as when stderr is not a terminal)")
    sync.add_argument("--wait", type=_seconds, default=0.0, metavar="SECONDS",
                      help="when another run (the service, another sync) holds an app's lock, "
                           "wait up to SECONDS for it instead of refusing at once")

    serve = sub.add_parser("serve", help="keep syncing: each app on its schedule, with "
                                         "/healthz and /metrics ([serve] listen)")
    serve.add_argument("--config", required=True, type=Path, help="TOML configuration file")

    one = sub.add_parser("sync-user", help="sync one user now (as at sign-in): by Okta login, "
                                           "Okta id, or a target username")
    one.add_argument("--config", required=True, type=Path, help="TOML configuration file")
    one.add_argument("--app", help="only this app (default: every app that knows the user)")
    one.add_argument("who", metavar="LOGIN_OR_ID_OR_USERNAME",
                     help="an Okta login or id, or a username as Jira or Confluence spell it")

    held = sub.add_parser("held", help="deactivations held for an administrator (more from "
                                       "events than max_deactivations allows within "
                                       "deactivation_window); --release applies them")
    held.add_argument("--config", required=True, type=Path, help="TOML configuration file")
    held.add_argument("--app", help="only this app (default: every app)")
    held.add_argument("--release", action="store_true",
                      help="sync the held users now, past the guards (Okta's state now decides)")

    status = sub.add_parser("status", help="the last run of each app, and any interrupted one")
    status.add_argument("--config", required=True, type=Path)

    history = sub.add_parser("history", help="the runs kept ([state] keep_runs), oldest first: "
                                             "start, kind, outcome, exit code, counts, duration")
    history.add_argument("--config", required=True, type=Path, help="TOML configuration file")
    history.add_argument("--app", help="only this app (default: every app)")
    history.add_argument("--limit", type=_positive_int, default=20, metavar="N",
                         help="the newest N runs (default 20)")
    history.add_argument("--json", action="store_true", help="the reports as JSON lines")

    report = sub.add_parser("report", help="one run's summary, and where its audit CSV, "
                                           "findings and drift report are")
    report.add_argument("--config", required=True, type=Path, help="TOML configuration file")
    report.add_argument("run_id", metavar="RUN_ID", help="as `oktasync history` shows it")
    report.add_argument("--json", action="store_true", help="the stored JSON report")

    config = sub.add_parser("config", help="check a configuration file, or print its JSON Schema")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser(
        "check", help="validate; print every setting as it will be used, secrets masked (exit 0), "
                      "or every problem (exit 2)")
    check.add_argument("--config", required=True, type=Path, help="TOML configuration file")
    config_commands.add_parser("schema", help="print the configuration file's JSON Schema "
                                              "(for editors: taplo, Even Better TOML)")

    console = sub.add_parser("console", help="the web console of `oktasync serve`")
    console_commands = console.add_subparsers(dest="console_command", required=True)
    console_commands.add_parser(
        "hash-password", help="read a password (twice, at a terminal; once from a pipe) and "
                              "print its hash for [serve] console_password_hash")

    demo = sub.add_parser("demo", help="start the emulators and sync 5,000 users into them")
    demo.add_argument("--users", type=_positive_int, default=5000)
    demo.add_argument("--groups", type=_positive_int, default=60)
    demo.add_argument("--keep-running", action="store_true",
                      help="leave the emulators up afterwards and print how to use them")

    # Its arguments are the emulators' own (`oktasync emulate --help` shows them): they are
    # handed over unparsed, so this parser does not need the emulators installed.
    sub.add_parser("emulate", add_help=False, help="run the Okta, Jira and Confluence "
                   "emulators until interrupted (needs oktasync-emulators)")
    _add_epilogs(parser)
    return parser


EXIT_CODES = """exit codes:
  0    done (reported skips, conflicts and drift do not change it)
  1    done, but some writes failed after retries or were refused (listed in the summary)
  2    configuration, usage, credentials, lock, state directory or checkpoint problem
  3    stopped by a safety guard (max_deactivations, zero users, a listing that shrank)
  4    an Okta listing failed or ended early: nothing that removes access was written
  70   an internal error (a bug: please report it)
  130  interrupted by SIGINT (Ctrl-C), 143 by SIGTERM: the checkpoint is saved
  several apps: the worst app's code; several causes: 130/143, then 4, 3, 2, 1, 0"""

EXAMPLES: dict[str | None, str] = {
    None: """examples:
  oktasync config check --config oktasync.toml   # validate, print every setting as used
  oktasync sync --config oktasync.toml --dry-run # plan only: a CSV of what would be written
  oktasync sync --config oktasync.toml           # first: everyone; then what changed
  oktasync sync --config oktasync.toml --resume  # continue a sync that was interrupted
  oktasync serve --config oktasync.toml          # keep syncing: schedules, hooks, sign-ins""",
    "sync": """examples:
  oktasync sync --config oktasync.toml --dry-run     # read and plan; writes nothing
  oktasync sync --config oktasync.toml --app corp    # one app; incremental once a full sync exists
  oktasync sync --config oktasync.toml --resume      # continue an interrupted first import
  oktasync sync --config oktasync.toml --reconcile   # also repair changes made by hand""",
    "serve": """examples:
  oktasync serve --config /etc/oktasync/oktasync.toml   # stop with SIGTERM: drains, exit 0
  curl -s http://127.0.0.1:8787/healthz                 # per app: last run, inbox, poller lag""",
    "sync-user": """examples:
  oktasync sync-user --config oktasync.toml jane.doe@example.com   # by Okta login
  oktasync sync-user --config oktasync.toml --app corp jdoe        # by Jira/Confluence username""",
    "held": """examples:
  oktasync held --config oktasync.toml              # what is held, per app
  oktasync held --config oktasync.toml --release    # apply it (Okta's state now decides)""",
    "history": """examples:
  oktasync history --config oktasync.toml --app corp --limit 10   # the newest 10 runs of corp
  oktasync history --config oktasync.toml --json | jq .outcome      # every kept report""",
    "report": """examples:
  oktasync report --config oktasync.toml 20261204T021530.123456Z         # its summary, its files
  oktasync report --config oktasync.toml 20261204T021530.123456Z --json  # the stored report""",
    "status": """examples:
  oktasync status --config oktasync.toml   # last run, a running one, an interrupted one""",
    "config": """examples:
  oktasync config check --config oktasync.toml   # exit 0 valid, 2 with every problem listed
  oktasync config schema > oktasync.schema.json  # for editors (taplo, Even Better TOML)""",
    "console": """examples:
  oktasync console hash-password          # asks twice; paste the line into [serve]
  printf '%s\\n' "$PW" | oktasync console hash-password""",
    "demo": """examples:
  oktasync demo                   # emulators, 5,000 users synced, checked, then an incremental sync
  oktasync demo --keep-running    # and leave the emulators up to try commands against""",
}


def _add_epilogs(parser: argparse.ArgumentParser, name: str | None = None) -> None:
    """Exit codes and an example under every command's --help (``config check`` too), kept
    apart from the arguments so each parser above stays readable."""
    if name == "emulate":
        return  # its --help is the emulators' own
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    examples = EXAMPLES.get(name) or EXAMPLES.get((name or "").split(" ")[0])
    parser.epilog = f"{examples}\n\n{EXIT_CODES}" if examples else EXIT_CODES
    for action in parser._actions:  # argparse has no public way to reach its sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            for command, child in action.choices.items():
                _add_epilogs(child, f"{name} {command}" if name else command)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command != "emulate":  # which logs its own way, and parses what is left
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        OUTPUT["json"] = configure(args.log_format,
                                   -1 if args.quiet else args.verbose) == "json"
    try:
        code = _dispatch(args, rest)
    except ConfigError as exc:
        where = f" in {shown(args.config)}" if getattr(args, "config", None) else ""
        _error(f"configuration problems{where}:", [shown(p) for p in exc.problems])
        code = EXIT_USAGE
    except SyncError as exc:
        _error(shown(exc))
        code = exit_code_of(exc)
    except KeyboardInterrupt:
        code = EXIT_SIGINT
    except Exception as exc:  # a bug: one line, the traceback only when asked for (-v)
        _error(f"internal error: {shown(type(exc).__name__)}: {shown(exc)} (this is a bug: "
               "please report it; -v shows where it happened)",
               trace=traceback.format_exc() if args.verbose else None)
        code = EXIT_INTERNAL
    sys.stdout.flush()
    return code


OUTPUT = {"json": False}  # the log format chosen: JSON lines, or text for a person


def _error(text: str, problems: list[str] | None = None, trace: str | None = None) -> None:
    """An error of the command line: one JSON line (its problems as a list), or the words a
    person reads, each problem on its own line; secrets redacted either way."""
    if OUTPUT["json"]:
        say(text.rstrip(":"), level="error", problems=problems, exception=trace)
        return
    lines = [f"oktasync: {text}", *(f"  - {p}" for p in problems or []), *([trace] if trace
                                                                          else [])]
    print(REDACTOR.redact("\n".join(lines)), file=sys.stderr)


def _print_summary(app: str, summary: dict[str, Any]) -> None:
    """A run's summary on stdout in the log's format: text for a person, or one JSON line
    (so a piped run's output is JSON lines only), its values escaped and shortened as in the
    log (the full values are in the run's report and CSVs)."""
    from oktasync.report import format_summary

    if OUTPUT["json"]:
        print(json.dumps(safe(REDACTOR.clean(summary))), flush=True)
    else:
        print(REDACTOR.redact(format_summary(app, summary)), flush=True)


def _dispatch(args: argparse.Namespace, rest: list[str]) -> int:
    if args.command == "sync":
        interrupt: list[int] = []
        return _run_until_signal(lambda: _sync(args, interrupt), interrupt)
    if args.command == "sync-user":
        return _run_until_signal(lambda: _sync_user(args))
    if args.command == "held":
        return _run_until_signal(lambda: _held(args))
    if args.command == "status":
        return _status(args)
    if args.command == "history":
        return _history(args)
    if args.command == "report":
        return _report(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "config":
        return _config_check(args) if args.config_command == "check" else _config_schema()
    if args.command == "emulate":
        return _emulate(rest, args.verbose)
    if args.command == "console":
        return _hash_password()
    try:
        from oktasync.demo import run_demo
    except ModuleNotFoundError as exc:
        return _emulators_missing("demo", exc)
    return _run_until_signal(lambda: run_demo(args.users, args.groups, args.keep_running))


def _hash_password() -> int:
    """`oktasync console hash-password`: the hash on stdout, the password nowhere."""
    from oktasync.passwords import hash_password

    if sys.stdin.isatty():
        first = getpass.getpass("console password: ")
        if getpass.getpass("again: ") != first:
            print("oktasync: the two passwords differ; nothing printed", file=sys.stderr)
            return EXIT_USAGE
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    if len(first) < 12:
        print("oktasync: a console password has at least 12 characters", file=sys.stderr)
        return EXIT_USAGE
    print(hash_password(first))
    return 0


def _emulate(argv: list[str], verbose: int) -> int:
    """`oktasync emulate ARGS`: the emulators' own command line, with their own logging and
    signal handling (it is their process while they run)."""
    try:
        from oktasync_emulators.cli import main as emulate
    except ModuleNotFoundError as exc:
        return _emulators_missing("emulate", exc)
    return emulate(["-v"] * verbose + argv, prog="oktasync emulate")


def _emulators_missing(command: str, exc: ModuleNotFoundError) -> int:
    """The emulators are a distribution of their own (a production install has none): say
    how to get them. Any other missing module is not this mistake, and is raised again."""
    if exc.name != "oktasync_emulators" and not (exc.name or "").startswith(
            "oktasync_emulators."):
        raise exc
    print(f"oktasync {command} needs the emulators, which are a distribution of their own "
          "(oktasync-emulators, not installed here). From a clone of the oktasync "
          "repository: pip install ./emulators (make demo and make test install both)",
          file=sys.stderr)
    return EXIT_USAGE


def _run_until_signal(work: Callable[[], Awaitable[int]],
                      interrupt: list[int] | None = None) -> int:
    """Run ``work`` on asyncio; SIGINT/SIGTERM cancel it and give 130/143.

    ``interrupt`` receives the exit code before the cancellation, so the work can record in
    its report which signal stopped it.
    """
    outcome: dict[str, int] = {}
    failures: list[BaseException] = []

    async def runner() -> None:
        async with anyio.create_task_group() as tg:
            async def watch() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        outcome["code"] = SIGNAL_EXIT[signal.Signals(signum)]
                        if interrupt is not None:
                            interrupt.append(outcome["code"])
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch)
            try:
                outcome["code"] = await work()
            except Exception as exc:  # re-raised below, outside the task group's wrapping
                failures.append(exc)
            tg.cancel_scope.cancel()

    anyio.run(runner, backend="asyncio")
    if failures:
        error = failures[0]
        raise collapse(error) if isinstance(error, BaseExceptionGroup) else error
    return int(outcome.get("code", EXIT_SIGINT))


def _load(path: Path) -> Config:
    """The configuration, its warnings (valid settings that do nothing yet) said on stderr;
    its secrets are redacted from every line from now on."""
    config = load_config(path)
    REDACTOR.set(config.secret_values())
    _warn(config)
    return config


def _warn(config: Config) -> None:
    for warning in config.warnings:
        if OUTPUT["json"]:
            say(shown(warning), level="warning")
        else:
            print(f"oktasync: warning: {shown(warning)}", file=sys.stderr)


def _config_check(args: argparse.Namespace) -> int:
    """Validate the file and print every setting as the sync will use it: defaults filled in,
    URLs normalised, ``[state] dir`` resolved, secrets masked with where they come from. A file
    with problems never gets here: ``main`` lists them all and exits 2."""
    from oktasync.settings import render_toml

    loaded = read_config(args.config)
    REDACTOR.set(loaded.config.secret_values())
    _warn(loaded.config)
    print(f"# {shown(loaded.config.path)}: valid; every setting as it will be used")
    for line in render_toml(loaded.file, loaded.config.state_dir):
        print(shown(line))
    return 0


def _config_schema() -> int:
    """The configuration file's JSON Schema, as kept in ``config/oktasync.schema.json``."""
    from oktasync.settings import json_schema

    print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
    return 0


def _serve(args: argparse.Namespace) -> int:
    """Until SIGTERM or SIGINT, which it handles itself (exit 0): see ``serve.py``."""
    from oktasync.serve import Service

    config = _load(args.config)
    return anyio.run(lambda: Service(config).serve(
        on_ready=lambda line: print(line, flush=True)))


async def _sync(args: argparse.Namespace, interrupt: list[int]) -> int:
    from oktasync.console import progress_display
    from oktasync.engine import SyncOptions, run_sync

    config = _load(args.config)
    live = sys.stderr.isatty() and not args.no_progress
    async with progress_display(live) as shown_runs:  # stopped before the summaries
        result = await run_sync(config, SyncOptions(
            app=args.app, dry_run=args.dry_run, force=args.force,
            max_in_flight=args.max_in_flight, resume=args.resume, restart=args.restart,
            full=args.full, reconcile=args.reconcile, wait_s=args.wait,
            interrupt_code=interrupt, watch=shown_runs.watch), echo=_printed_later)
    for name, summary in result.summaries.items():
        _print_summary(name, summary)
    return result.exit_code


def _printed_later(_: str) -> None:
    """``run_sync`` prints nothing itself: the command prints the summaries as it must."""


async def _sync_user(args: argparse.Namespace) -> int:
    """One user, in each app that finds it (or the one named): a single-user sync on the
    app's state store, what Okta has now (``engine.sync_user``)."""
    from oktasync.engine import sync_user
    from oktasync.errors import worst

    config = _load(args.config)
    apps = [config.app(args.app)] if args.app else list(config.apps)
    code, found = 0, 0
    for app in apps:
        summary = await sync_user(config, app, args.who)
        if summary is None:
            continue
        found += 1
        _print_summary(app.name, summary)
        code = worst(code, int(summary["exit_code"]))
    if not found:
        where = f"app {args.app!r}" if args.app else "any app"
        _error(f"no Okta user in {shown(where)} is {shown(args.who)!r} (an Okta login or id, "
               "or a target username an earlier sync mapped to one)")
        return EXIT_USAGE
    return code


async def _held(args: argparse.Namespace) -> int:
    """List what is held per app; with ``--release``, sync those users past the guards."""
    from oktasync.engine import held, release_held
    from oktasync.errors import worst

    config = _load(args.config)
    code = 0
    for app in [config.app(args.app)] if args.app else list(config.apps):
        rows = held(config, app)
        name = shown(app.name)
        users = len({(h.okta_id or h.username) for h in rows})
        print(f"{name}: {users} users' deactivations held ({len(rows)} accounts)" if rows
              else f"{name}: nothing held")
        for h in rows:
            since = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(h.held_at))
            print(f"  {shown(h.target)}: {shown(h.username)} (Okta {shown(h.okta_id)}), held "
                  f"since {since}: {shown(h.reason)}")
        if rows and args.release:
            summary = await release_held(config, app)
            if summary is not None:
                _print_summary(app.name, summary)
                code = worst(code, int(summary["exit_code"]))
    return code


def _status(args: argparse.Namespace) -> int:
    """Each app's last run, and the current or interrupted one (read from its checkpoint).

    What it prints comes from files in the state directory: every value passes through
    ``shown``, so a damaged or tampered file cannot drive the terminal.
    """
    from oktasync.checkpoint import checkpoint_path, progress
    from oktasync.state import AppLock, read_json

    config = _load(args.config)
    for app in config.apps:
        last: Any = read_json(config.state_dir / app.name / "last-run.json")
        name = shown(app.name)
        if last is None:
            print(f"{name}: last run: none")
        else:
            as_of = (f", read Okta as of {shown(last['okta_time'])}" if last.get("okta_time")
                     else "")
            kind = f" ({shown(last['kind'])})" if last.get("kind") else ""
            print(f"{name}: last run {shown(last.get('run_id'))}{kind} finished "
                  f"{shown(last.get('finished'))}: exit {shown(last.get('exit_code'))} "
                  f"({shown(last.get('outcome'))}), {shown(last.get('wall_time_s'))}s{as_of}")
        holder = AppLock(config.state_dir, app.name).holder()
        running = holder is not None
        current = progress(checkpoint_path(config.state_dir, app.name))
        if holder is not None:
            by = f", run by {shown(holder['by'])}" if isinstance(holder.get("by"), str) else ""
            print(f"{name}: running (pid {shown(holder.get('pid'))}, since "
                  f"{shown(holder.get('started'))}{by})")
        if current is None:
            if not running:
                print(f"{name}: nothing to resume")
            continue
        what = ("current run" if running else "unfinished run")
        then = "" if running else "; resumable with `oktasync sync --resume`"
        print(f"{name}: {what} {shown(current['run_id'])} started "
              f"{shown(current['started'])}, phase {shown(current['phase'])}, "
              f"{shown(current['okta_users_read'])} Okta users read, "
              f"{shown(current['users_per_s'])} users/s{then}")
        for target, t in current["targets"].items():
            print(f"  {shown(target)}: {shown(t['users_done'])} of {shown(t['users_total'])} "
                  f"users done, {shown(t['writes'])} writes")
    return 0


def _history(args: argparse.Namespace) -> int:
    """The runs kept, oldest first (the newest ``--limit``), from their reports alone."""
    from oktasync.history import reports

    config = _load(args.config)
    apps = [config.app(args.app).name] if args.app else [a.name for a in config.apps]
    rows = sorted((r for app in apps for r in reports(config.state_dir / app)),
                  key=lambda r: str(r.get("run_id", "")))[-args.limit:]
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    if not rows:
        print(f"no runs kept in {shown(config.state_dir)}")
        return 0
    print(f"{'app':<14} {'run id':<24} {'kind':<12} {'exit':>4} {'writes':>7} "
          f"{'problems':>8} {'duration':>9}  outcome")
    for r in rows:
        print(_history_line(r))
    return 0


def _history_line(report: dict[str, Any]) -> str:
    targets = report.get("targets") or {}
    counts = [t.get("counts", {}) for t in targets.values() if isinstance(t, dict)]
    writes = sum(v for c in counts for k, v in c.items() if isinstance(v, int) and k.startswith(
        ("users_", "groups_", "memberships_")))
    problems = sum(v for c in counts for k, v in c.items() if isinstance(v, int) and k in (
        "skipped", "conflict", "collision", "drift", "notice", "refused", "failed"))
    kind = ("dry-run " if report.get("dry_run") else "") + str(report.get("kind", ""))
    duration = report.get("wall_time_s")
    took = f"{duration:.1f}s" if isinstance(duration, int | float) else "?"
    return (f"{shown(report.get('app', '')):<14} {shown(report.get('run_id', '')):<24} "
            f"{shown(kind):<12} {shown(report.get('exit_code', '')):>4} {writes:>7} "
            f"{problems:>8} {took:>9}  {shown(report.get('outcome', ''))}")


def _report(args: argparse.Namespace) -> int:
    """One run's summary as the run printed it, and where its files are."""
    from oktasync.history import find_report
    from oktasync.report import format_summary

    config = _load(args.config)
    report = find_report(config.state_dir, [a.name for a in config.apps], args.run_id)
    if report is None:
        _error(f"no run {shown(args.run_id)!r} is kept in {shown(config.state_dir)}; "
               "`oktasync history --config FILE` lists the run ids")
        return EXIT_USAGE
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    print(format_summary(str(report.get("app", "")), report))
    for key, what in (("audit_file", "audit (every write)"), ("findings_file", "findings"),
                      ("plan_file", "plan (dry run)")):
        if report.get(key):
            print(f"  {what}: {shown(report[key])}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
