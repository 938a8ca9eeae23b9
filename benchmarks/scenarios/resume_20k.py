"""E. resume_20k (issue 4): what ``kill -9`` halfway through a 20,000-user sync costs.

(a) One uninterrupted full sync on fresh emulators, counting every request per server by kind
(Okta reads; target reads, GET; target writes, POST/PUT/DELETE). (b) On fresh emulators with
the same seed: ``oktasync sync`` is started, the Jira emulator's stats are polled, and the sync
gets SIGKILL once Jira has seen half of (a)'s writes; then ``oktasync sync --resume`` runs to
the end. Whatever both runs of (b) sent beyond (a) is the price of the interruption (target:
under 1 % of (a)'s requests), and the targets must end in the same state as after (a): the same
usernames, active flags and group memberships. Default settings throughout (queue_size 1000,
16 requests in flight per target); no added latency (the run is CPU-bound and long enough to
stop halfway) and Okta's limits off, so the figures are about resuming, not waiting.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.engine import APP, sync_argv, write_config
from benchmarks.framework import Context, Figure, Outcome, Scenario, display_command
from benchmarks.procs import (
    EmulatorProcess,
    Measured,
    Spawned,
    foreign_processes,
    get_json,
    run_measured,
)
from benchmarks.runs import SYNC_TIMEOUT_S, Observed, emulate_args, run_engine
from benchmarks.stats import (
    SERVICES,
    TARGETS,
    counts_by_service,
    kind_counts,
    normalize_state,
    state_differences,
    total_requests,
)

NAME = "resume_20k"
USERS, GROUPS, QUICK_USERS, QUICK_GROUPS = 20_000, 200, 2_000, 40
CI_SIZE = (400, 10)
KILL_AT, POLL_S, EXTRA_TARGET = 0.5, 0.05, 0.01
Counts = dict[str, dict[str, int]]


@dataclass
class Interrupted:
    """Run (b): the killed sync, the resumed one, and what the servers saw after each."""

    killed: Measured
    resumed: Measured
    at_kill: Counts
    final: Counts
    states: dict[str, Any]
    commands: list[str]
    last_run: dict[str, Any]


def _emu_args(users: int, groups: int) -> list[str]:
    return emulate_args(users, groups, "--okta-rate-scale", "0")


def _jira_writes(emu: EmulatorProcess) -> int:
    return kind_counts(get_json(emu.url("jira") + "/_emulator/stats"))["writes"]


def _kill_at(emu: EmulatorProcess, sync: Spawned, threshold: int) -> Measured:
    """Poll Jira's write count; SIGKILL the sync when it reaches ``threshold``."""
    while _jira_writes(emu) < threshold:
        if not sync.running:
            raise RuntimeError(f"the sync ended before Jira saw {threshold:,} writes")
        time.sleep(POLL_S)
    sync.kill()
    return sync.wait(timeout_s=30.0)


def _interrupted(ctx: Context, emu_args: list[str], threshold: int) -> Interrupted:
    scratch = ctx.scratch("interrupted")
    profile = ctx.profile_dir / f"{NAME}-resume.prof" if ctx.profile_dir else None
    with EmulatorProcess(emu_args, log_dir=scratch) as emu:
        emu.start(timeout_s=300.0)
        config = write_config(scratch, emu)
        first = sync_argv(config, [], None)
        ctx.note_foreign(foreign_processes())
        killed = _kill_at(emu, Spawned(first, log_dir=scratch, label="killed"), threshold)
        at_kill = counts_by_service(emu.stats())
        resume = sync_argv(config, ["--resume"], profile)
        resumed = run_measured(resume, timeout_s=SYNC_TIMEOUT_S, log_dir=scratch, label="resume")
        ctx.note_foreign(foreign_processes())
        final = counts_by_service(emu.stats())
        states = {s: normalize_state(get_json(emu.url(s) + "/_emulator/state", 120.0))
                  for s in TARGETS}
        emu.stop()
    if resumed.exit_code not in (0, 1):
        raise RuntimeError(f"the resumed sync exited {resumed.exit_code}; see {scratch}")
    last_run = scratch / "state" / APP / "last-run.json"
    commands = [display_command(emu.argv, ctx.work_dir) + " &",
                display_command(first, ctx.work_dir) + "  # SIGKILL at half of Jira's writes",
                display_command(resume, ctx.work_dir)]
    return Interrupted(killed, resumed, at_kill, final, states, commands,
                       json.loads(last_run.read_text()) if last_run.exists() else {})


def _extra(full: Counts, b: Counts) -> dict[str, dict[str, int]]:
    return {s: {k: b[s][k] - full[s][k] for k in ("reads", "writes")} for s in SERVICES}


def _extra_figures(a: Observed, b: Interrupted) -> list[Figure]:
    full = counts_by_service(a.stats)
    extra = _extra(full, b.final)
    base = total_requests(full)
    commands = a.commands + b.commands
    figures = [
        Figure(f"extra {s} {k} beyond (a)", extra[s][k], "requests", commands,
               note=f"{extra[s][k] / base:.3%} of (a)'s {base:,}; (a) {full[s][k]:,}, "
                    f"(b) {b.final[s][k]:,}")
        for s in SERVICES for k in ("reads", "writes")
        if not (s == "okta" and k == "writes")
    ]
    total = sum(sum(kinds.values()) for kinds in extra.values())
    figures += [
        Figure("extra requests of every kind beyond (a)", total, "requests", commands,
               note=f"(a) made {base:,}"),
        Figure("extra requests / (a)'s requests", total / base * 100, "%", commands,
               f"< {EXTRA_TARGET:.0%}", total / base < EXTRA_TARGET),
    ]
    return figures


def _time_figures(a: Observed, b: Interrupted, threshold: int) -> list[Figure]:
    lost = b.killed.wall_s + b.resumed.wall_s - a.measured.wall_s
    cpu_lost = b.killed.cpu_s + b.resumed.cpu_s - a.measured.cpu_s
    jira_full = counts_by_service(a.stats)["jira"]["writes"]
    at_kill = b.at_kill["jira"]["writes"]
    return [
        Figure("(a) uninterrupted: wall time", a.measured.wall_s, "s", a.commands,
               note=f"engine's own {a.engine_wall_s():.1f} s; "
                    f"{total_requests(counts_by_service(a.stats)):,} requests"),
        Figure("(b) killed at: Jira writes / (a)'s", at_kill / jira_full * 100, "%", b.commands,
               note=f"{at_kill:,} of {jira_full:,}; threshold {threshold:,}"),
        Figure("(b) killed run: wall time to SIGKILL", b.killed.wall_s, "s", b.commands),
        Figure("(b) --resume run: wall time", b.resumed.wall_s, "s", b.commands,
               note=f"exit {b.resumed.exit_code}; engine's own "
                    f"{float(b.last_run.get('wall_time_s') or 0):.1f} s"),
        Figure("time lost: killed + resumed - uninterrupted", lost, "s",
               a.commands + b.commands, note=f"{lost / a.measured.wall_s:.1%} of (a)"),
        Figure("engine CPU lost: killed + resumed - uninterrupted", cpu_lost, "s",
               a.commands + b.commands,
               note=f"{cpu_lost / a.measured.cpu_s:.1%} of (a)'s {a.measured.cpu_s:.1f} s; "
                    "less sensitive than wall time to other load on the machine"),
    ]


def _state_figure(a: Observed, b: Interrupted) -> tuple[Figure, list[str]]:
    diffs = [f"{s}: {d}" for s in TARGETS
             for d in state_differences(normalize_state(a.after[s]), b.states[s])]
    sizes = ", ".join(f"{s} {len(b.states[s]['users']):,} users" for s in TARGETS)
    figure = Figure("end state (b) vs (a): differences", len(diffs), "differences",
                    a.commands + b.commands, "0 (same users, flags, memberships)",
                    not diffs, note=sizes)
    return figure, diffs


def run(ctx: Context) -> Outcome:
    users, groups = ctx.pick((USERS, GROUPS), (QUICK_USERS, QUICK_GROUPS), CI_SIZE)
    emu_args = _emu_args(users, groups)
    full = run_engine(ctx, NAME, "uninterrupted", emu_args, snapshot=True)
    threshold = int(counts_by_service(full.stats)["jira"]["writes"] * KILL_AT)
    interrupted = _interrupted(ctx, emu_args, threshold)
    state_figure, diffs = _state_figure(full, interrupted)
    figures = [*_time_figures(full, interrupted, threshold),
               *_extra_figures(full, interrupted), state_figure]
    details = {
        "users": users, "groups": groups, "kill_threshold_jira_writes": threshold,
        "uninterrupted": {**full.to_json(), "counts": counts_by_service(full.stats)},
        "interrupted": {
            "killed_process": interrupted.killed.to_json(),
            "resumed_process": interrupted.resumed.to_json(),
            "counts_at_kill": interrupted.at_kill, "counts_final": interrupted.final,
            "extra": _extra(counts_by_service(full.stats), interrupted.final),
            "resume_last_run": interrupted.last_run,
        },
        "state_differences": diffs[:100], "state_differences_total": len(diffs),
    }
    return Outcome(figures, details)


SCENARIO = Scenario(NAME, "Resume after kill -9 halfway through a 20,000-user sync", run)
