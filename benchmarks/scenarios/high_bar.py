"""high_bar (issue 5, scenario 5): a full initial sync of 10,000 users and 200,000 memberships.

10,000 users, 1,000 groups, ``--memberships 200000``, 20 ms added to every request, both Data
Center targets starting empty, Okta's limits off (``--okta-rate-scale 0``: this measures the
writes, not Okta's budget, which ``okta_bound`` covers). Target: the full sync (not a dry run)
in under 5 minutes. It runs with the default per-target concurrency (16) and with 48 and 64
(``concurrency = N`` in both ``[target.*]`` sections), each on fresh emulators.

Where the time goes, per configuration: the engine's CPU, the emulator's CPU during the sync
(all three servers are one process) and the latency floor ``requests × latency / concurrency``
of the busier target. On this 2-core machine the engine and the emulator share the cores, so the
wall time is at least ``(engine CPU + emulator CPU) / 2``; with one more core (each its own)
it would be about ``max(engine CPU, emulator CPU, latency floor)``.

A second, smaller sweep (1,000 users, 40 groups, same 20 ms) runs the engine at concurrency 1, 4,
8, 16, 32 and 64 and measures each target's throughput over the time it was busy (sampled from
``/_emulator/stats`` every 0.1 s), against the latency floor ``concurrency / latency``; it is
what ``benchmarks/plots.py`` draws.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from benchmarks.engine import SyncRun, run_sync
from benchmarks.framework import Context, Figure, Outcome, Scenario, display_command
from benchmarks.procs import EmulatorProcess
from benchmarks.stats import TARGETS, Activity, ActivitySampler, counts_by_service

NAME = "high_bar"
USERS, GROUPS, MEMBERSHIPS = 10_000, 1_000, 200_000
QUICK_USERS, QUICK_GROUPS, QUICK_MEMBERSHIPS = 500, 50, 5_000
CI_SIZE = (100, 10, 500)
LATENCY_MS = 20
DEFAULT_CONCURRENCY = 16
CONCURRENCIES = (DEFAULT_CONCURRENCY, 48, 64)
WALL_TARGET_S = 300.0
SWEEP_USERS, SWEEP_GROUPS, QUICK_SWEEP_USERS, CI_SWEEP_USERS = 1_000, 40, 200, 40
SWEEP = (1, 4, 8, 16, 32, 64)
QUICK_SWEEP = (4, 16, 64)
CI_SWEEP = (4, 64)
_PHASE = re.compile(r"^(\d\d):(\d\d):(\d\d) .*\bphase\b.*\bphase=(\w+)")


def emulate_args(users: int, groups: int, memberships: int | None) -> list[str]:
    extra = ["--memberships", str(memberships)] if memberships is not None else []
    return ["--users", str(users), "--groups", str(groups), *extra, "--seed", "1",
            "--latency-ms", str(LATENCY_MS), "--okta-rate-scale", "0"]


def _label(concurrency: int) -> str:
    return "default" if concurrency == DEFAULT_CONCURRENCY else f"concurrency_{concurrency}"


def _phases(folder: Path) -> dict[str, int]:
    """Seconds from each ``phase=`` log line to the next (1 s resolution, from sync.err)."""
    path = folder / "sync.err"
    marks: list[tuple[str, int]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        found = _PHASE.match(line)
        if found:
            h, m, s, phase = found.groups()
            marks.append((phase, int(h) * 3600 + int(m) * 60 + int(s)))
    return {phase: (marks[i + 1][1] - t) % 86400
            for i, (phase, t) in enumerate(marks[:-1])}


def _sync(ctx: Context, label: str, emu_args: list[str], concurrency: int,
          ) -> tuple[SyncRun, dict[str, Activity], list[str]]:
    """Fresh emulators, one full sync at ``concurrency`` per target, sampled; emulators stopped."""
    scratch = ctx.scratch(label)
    profile = ctx.profile_dir / f"{NAME}-{label}.prof" if ctx.profile_dir else None
    extra_target = "" if concurrency == DEFAULT_CONCURRENCY else f"concurrency = {concurrency}"
    with EmulatorProcess(emu_args, log_dir=scratch) as emu:
        emu.start(timeout_s=300.0)
        with ActivitySampler(emu) as sampler:
            run = run_sync(emu, scratch, timeout_s=1800.0, profile_to=profile,
                           extra_target=extra_target)
        emu.stop()
    ctx.note_foreign(run.foreign)
    if run.measured.exit_code not in (0, 1):  # 1: some writes refused, still a full run
        raise RuntimeError(f"sync {label} exited {run.measured.exit_code}; see {scratch}")
    setting = f"  # concurrency = {concurrency} per target" if extra_target else \
        "  # default: concurrency = 16 per target"
    commands = [display_command(emu.argv, ctx.work_dir) + " &",
                display_command(run.measured.argv, ctx.work_dir) + setting]
    return run, sampler.activity, commands


def breakdown(run: SyncRun, concurrency: int) -> dict[str, float]:
    """Engine CPU, emulator CPU, the latency floor, and the walls they predict."""
    latency_floor = max(run.requests(t) for t in TARGETS) * LATENCY_MS / 1000 / concurrency
    engine_cpu, emulator_cpu = run.measured.cpu_s, run.emulator_cpu_s
    return {
        "wall_s": round(run.measured.wall_s, 2),
        "engine_cpu_s": round(engine_cpu, 2),
        "emulator_cpu_s": round(emulator_cpu, 2),
        "latency_floor_s": round(latency_floor, 2),
        "two_core_floor_s": round(max((engine_cpu + emulator_cpu) / 2, engine_cpu,
                                      emulator_cpu, latency_floor), 2),
        "one_more_core_estimate_s": round(max(engine_cpu, emulator_cpu, latency_floor), 2),
    }


def _throughput(activity: Activity) -> float:
    return activity.requests / activity.window_s if activity.window_s else 0.0


def _main_figures(label: str, concurrency: int, run: SyncRun, commands: list[str],
                  ) -> list[Figure]:
    b = breakdown(run, concurrency)
    per_target = ", ".join(f"{s} {run.requests(s):,}" for s in ("okta", "jira", "confluence"))
    wall = run.measured.wall_s
    return [
        Figure(f"{label}: wall time of the full sync", wall, "s", commands,
               f"< {WALL_TARGET_S:.0f} s", wall < WALL_TARGET_S,
               f"requests: {per_target}"),
        Figure(f"{label}: engine CPU", b["engine_cpu_s"], "s", commands,
               note=f"emulator CPU during the sync {b['emulator_cpu_s']:.1f} s"),
        Figure(f"{label}: emulator CPU during the sync", b["emulator_cpu_s"], "s", commands),
        Figure(f"{label}: latency floor (busier target's requests × 20 ms / {concurrency})",
               b["latency_floor_s"], "s", commands),
        Figure(f"{label}: estimate with one more core, max(engine CPU, emulator CPU, floor)",
               b["one_more_core_estimate_s"], "s", commands,
               note=f"two-core floor max((engine + emulator CPU) / 2, ...) "
                    f"{b['two_core_floor_s']:.0f} s"),
    ]


def _sweep(ctx: Context) -> tuple[list[Figure], dict[str, Any]]:
    users = ctx.pick(SWEEP_USERS, QUICK_SWEEP_USERS, CI_SWEEP_USERS)
    emu_args = emulate_args(users, SWEEP_GROUPS, None)
    figures: list[Figure] = []
    points: dict[str, Any] = {}
    for concurrency in ctx.pick(SWEEP, QUICK_SWEEP, CI_SWEEP):
        label = f"sweep_concurrency_{concurrency}"
        run, activity, commands = _sync(ctx, label, emu_args, concurrency)
        floor = concurrency / (LATENCY_MS / 1000)
        throughput = {t: _throughput(activity[t]) for t in TARGETS}
        points[str(concurrency)] = {
            "concurrency": concurrency,
            "floor_rps": floor,
            "throughput_rps": {t: round(v, 1) for t, v in throughput.items()},
            "busy_window_s": {t: round(activity[t].window_s, 3) for t in TARGETS},
            "target_requests_in_window": {t: activity[t].requests for t in TARGETS},
            "wall_s": round(run.measured.wall_s, 3),
            "engine_cpu_s": round(run.measured.cpu_s, 3),
            "emulator_cpu_s": round(run.emulator_cpu_s, 3),
            "requests": counts_by_service(run.stats),
            "commands": commands,
            "foreign_processes": run.foreign,
        }
        for t in TARGETS:
            figures.append(Figure(
                f"sweep {users:,} users, concurrency {concurrency}: {t} throughput",
                throughput[t], "req/s", commands,
                note=f"{throughput[t] / floor:.0%} of the floor {floor:.0f}/s; "
                     f"{activity[t].requests:,} requests in {activity[t].window_s:.2f} s busy"))
    return figures, {"users": users, "groups": SWEEP_GROUPS, "latency_ms": LATENCY_MS,
                     "points": points}


def run(ctx: Context) -> Outcome:
    users, groups, memberships = ctx.pick((USERS, GROUPS, MEMBERSHIPS),
                                          (QUICK_USERS, QUICK_GROUPS, QUICK_MEMBERSHIPS), CI_SIZE)
    emu_args = emulate_args(users, groups, memberships)
    figures: list[Figure] = []
    runs: dict[str, Any] = {}
    for concurrency in CONCURRENCIES:
        label = _label(concurrency)
        run_, activity, commands = _sync(ctx, label, emu_args, concurrency)
        figures += _main_figures(label, concurrency, run_, commands)
        runs[label] = {
            "concurrency": concurrency,
            "breakdown": breakdown(run_, concurrency),
            "engine_process": run_.measured.to_json(),
            "engine_wall_time_s": run_.last_run.get("wall_time_s"),
            "phases_s": _phases(ctx.work_dir / label),
            "requests": counts_by_service(run_.stats),
            "throughput_rps": {t: round(_throughput(activity[t]), 1) for t in TARGETS},
            "busy_window_s": {t: round(activity[t].window_s, 3) for t in TARGETS},
            "last_run": run_.last_run,
            "commands": commands,
            "foreign_processes": run_.foreign,
        }
    sweep_figures, sweep = _sweep(ctx)
    details = {"users": users, "groups": groups, "memberships": memberships,
               "latency_ms": LATENCY_MS, "runs": runs, "sweep": sweep}
    return Outcome(figures + sweep_figures, details)


SCENARIO = Scenario(NAME, "High bar: full sync of 10,000 users and 200,000 memberships at 20 ms",
                    run)
