"""B. speedup_1000: what concurrency buys on a latency-bound initial sync.

With 20 ms added to every request and Okta's limits off, a sync is bound by round trips, so
running requests concurrently should make it at least 20 times faster than the same engine
held to one request in flight (``--max-in-flight 1``). Each configuration gets fresh emulators,
so both start from empty targets and do the same writes.
"""

from __future__ import annotations

from typing import Any

from benchmarks.engine import SyncRun, run_sync
from benchmarks.framework import Context, Figure, Outcome, Scenario, display_command
from benchmarks.procs import EmulatorProcess

USERS, GROUPS, QUICK_USERS, QUICK_GROUPS = 1_000, 40, 200, 10
CI_SIZE = (40, 5)
LATENCY_MS = 20
SPEEDUP_TARGET = 20.0
CONFIGURATIONS: dict[str, list[str]] = {"default": [], "max_in_flight_1": ["--max-in-flight", "1"]}


def _emulate_args(users: int, groups: int) -> list[str]:
    return [
        "--users",
        str(users),
        "--groups",
        str(groups),
        "--latency-ms",
        str(LATENCY_MS),
        "--okta-rate-scale",
        "0",
    ]


def _one(
    ctx: Context, label: str, extra: list[str], users: int, groups: int
) -> tuple[SyncRun, list[str]]:
    """Fresh emulators, one full sync, the emulators stopped; the run and its commands."""
    scratch = ctx.scratch(label)
    profile = ctx.profile_dir / f"speedup_1000-{label}.prof" if ctx.profile_dir else None
    with EmulatorProcess(_emulate_args(users, groups), log_dir=scratch) as emu:
        emu.start(timeout_s=60.0)
        run = run_sync(emu, scratch, extra=extra, timeout_s=1800.0, profile_to=profile)
        emu.stop()
    ctx.note_foreign(run.foreign)
    if run.measured.exit_code not in (0, 1):  # 1: some writes refused, still a full run
        raise RuntimeError(f"sync {label} exited {run.measured.exit_code}; see {scratch}")
    commands = [
        display_command(emu.argv, ctx.work_dir) + " &",
        display_command(run.measured.argv, ctx.work_dir),
    ]
    return run, commands


def _run_details(run: SyncRun) -> dict[str, Any]:
    """What to keep per configuration: the process, the run summary and the servers' counts."""
    return {
        "engine_process": run.measured.to_json(),
        "emulator_cpu_s_during_sync": round(run.emulator_cpu_s, 3),
        "requests": {s: run.requests(s) for s in ("okta", "jira", "confluence")},
        "last_run": run.last_run,
        "emulator_stats": run.stats,
        "foreign_processes": run.foreign,
    }


def _figures(runs: dict[str, tuple[SyncRun, list[str]]]) -> list[Figure]:
    """Wall time, CPU and peak RSS per configuration, requests per target, then the speed-up."""
    figures: list[Figure] = []
    for label, (run, cmds) in runs.items():
        m = run.measured
        per_target = ", ".join(f"{s} {run.requests(s):,}" for s in ("okta", "jira", "confluence"))
        figures += [
            Figure(
                f"{label}: wall time of the full sync",
                m.wall_s,
                "s",
                cmds,
                note=f"process start to exit; requests: {per_target}",
            ),
            Figure(
                f"{label}: the engine's own wall_time_s (last-run.json)",
                _engine_wall(run),
                "s",
                cmds,
                note="without interpreter start-up",
            ),
            Figure(
                f"{label}: engine CPU",
                m.cpu_s,
                "s",
                cmds,
                note=f"emulator CPU during the sync {run.emulator_cpu_s:.1f} s",
            ),
            Figure(f"{label}: engine peak RSS", m.max_rss_bytes / 1e6, "MB", cmds),
        ]
    fast, slow = runs["default"][0], runs["max_in_flight_1"][0]
    speedup = slow.measured.wall_s / fast.measured.wall_s
    engine_speedup = _engine_wall(slow) / _engine_wall(fast)
    all_cmds = [c for _, cmds in runs.values() for c in cmds]
    target = f">= {SPEEDUP_TARGET:.0f}×"
    figures += [
        Figure(
            "speed-up: max_in_flight_1 wall / default wall (process)",
            speedup,
            "×",
            all_cmds,
            target,
            speedup >= SPEEDUP_TARGET,
        ),
        Figure(
            "speed-up by the engine's own wall_time_s",
            engine_speedup,
            "×",
            all_cmds,
            target,
            engine_speedup >= SPEEDUP_TARGET,
        ),
    ]
    return figures


def _engine_wall(run: SyncRun) -> float:
    """The run's wall time as the engine recorded it (process wall when it wrote none)."""
    return float(run.last_run.get("wall_time_s") or run.measured.wall_s)


def run(ctx: Context) -> Outcome:
    users, groups = ctx.pick((USERS, GROUPS), (QUICK_USERS, QUICK_GROUPS), CI_SIZE)
    runs = {
        label: _one(ctx, label, extra, users, groups) for label, extra in CONFIGURATIONS.items()
    }
    details = {
        "users": users,
        "groups": groups,
        "latency_ms": LATENCY_MS,
        "runs": {label: _run_details(r) for label, (r, _) in runs.items()},
    }
    return Outcome(_figures(runs), details)


SCENARIO = Scenario("speedup_1000", "Concurrency speed-up on a latency-bound initial sync", run)
