"""scale (issue 5, scenario 4): a dry run of 1,000,000 users and 2,000 groups, and smaller ones.

Each size gets fresh emulators with Okta's limits off (``--okta-rate-scale 0``), the directory
generated lazily (``--lazy``) and both targets already holding half of the users
(``--preload-fraction 0.5``), so the dry run reads everything and plans real work (creates for
the other half). The engine runs as its own process (``oktasync sync --dry-run``); its peak RSS
is ``ru_maxrss`` from ``wait4`` on that exact child and its CPU is the child's user + system
seconds. Targets: peak RSS < 300 MB at 1,000,000 users, and at most 1.5 times the 100,000 figure.

``OKTASYNC_BENCH_SCALE_SIZES=100000`` (comma-separated user counts) runs only those sizes, e.g.
with ``--quick --profile DIR`` to profile one size without storing a result.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from benchmarks.engine import SyncRun, run_sync
from benchmarks.framework import Context, Figure, Outcome, Scenario, display_command
from benchmarks.procs import EmulatorProcess
from benchmarks.stats import counts_by_service

NAME = "scale"
GROUPS = 2_000
SIZES = (100_000, 1_000_000, 10_000)  # the two the issue asks for first
QUICK_SIZES = (10_000, 30_000)
CI_SIZES = (2_000,)
BASE, LARGEST = 100_000, 1_000_000
RSS_LIMIT_MB, RSS_RATIO = 300.0, 1.5
PRELOAD = 0.5
MB = 1_000_000
SIZES_ENV = "OKTASYNC_BENCH_SCALE_SIZES"


def emulate_args(users: int) -> list[str]:
    return ["--users", str(users), "--groups", str(GROUPS), "--seed", "1", "--lazy",
            "--okta-rate-scale", "0", "--preload-fraction", str(PRELOAD)]


def _sizes(ctx: Context) -> tuple[int, ...]:
    chosen = os.environ.get(SIZES_ENV, "").strip()
    if chosen:
        return tuple(int(s) for s in chosen.split(","))
    return ctx.pick(SIZES, QUICK_SIZES, CI_SIZES)


def _one(ctx: Context, users: int) -> tuple[SyncRun, dict[str, Any], list[str]]:
    """Fresh emulators of ``users``, one dry run, the emulators stopped."""
    label = f"users_{users}"
    scratch = ctx.scratch(label)
    profile = ctx.profile_dir / f"{NAME}-{label}.prof" if ctx.profile_dir else None
    with EmulatorProcess(emulate_args(users), log_dir=scratch) as emu:
        emu.start(timeout_s=600.0)  # 1M with preloading: about 25 s on an idle machine
        ready_hwm = emu.peak_rss_bytes()
        run = run_sync(emu, scratch, extra=["--dry-run"], timeout_s=3600.0, profile_to=profile)
        emu_hwm = emu.peak_rss_bytes()
        emu.stop()
    ctx.note_foreign(run.foreign)
    if run.measured.exit_code not in (0, 1):
        raise RuntimeError(f"dry run of {users:,} users exited {run.measured.exit_code}; "
                           f"see {scratch}")
    commands = [display_command(emu.argv, ctx.work_dir) + " &",
                display_command(run.measured.argv, ctx.work_dir)]
    emulator = {"ready_s": round(emu.ready_s, 2), "vmhwm_ready_bytes": ready_hwm,
                "vmhwm_bytes": emu_hwm, "cpu_s_during_sync": round(run.emulator_cpu_s, 3)}
    return run, emulator, commands


def _summary(folder: Path) -> list[str]:
    """The summary a dry run prints (it writes no last-run.json): its lines, problems left out."""
    path = folder / "sync.out"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [line for line in lines if not line.lstrip().startswith(("- ", "... and"))]


def _engine_wall(summary: list[str]) -> float | None:
    """The engine's own wall time from "app bench: exit 0 (done), 19.9s, ..."."""
    found = re.search(r"\), ([0-9.]+)s,", summary[0]) if summary else None
    return float(found.group(1)) if found else None


def _size_figures(users: int, run: SyncRun, emulator: dict[str, Any],
                  commands: list[str]) -> list[Figure]:
    m = run.measured
    per_k = m.cpu_s / (users / 1000)
    requests = ", ".join(f"{s} {run.requests(s):,}" for s in ("okta", "jira", "confluence"))
    prefix = f"{users:,} users"
    figures = [
        Figure(f"{prefix}: engine peak RSS (wait4 ru_maxrss)", m.max_rss_bytes / MB, "MB",
               commands,
               *((f"< {RSS_LIMIT_MB:.0f} MB", m.max_rss_bytes / MB < RSS_LIMIT_MB)
                 if users == LARGEST else ("", None))),
        Figure(f"{prefix}: engine CPU per 1,000 users", per_k, "s", commands,
               note=f"{m.cpu_s:.1f} s in all; emulator CPU meanwhile "
                    f"{emulator['cpu_s_during_sync']:.1f} s"),
        Figure(f"{prefix}: wall time of the dry run", m.wall_s, "s", commands,
               note=f"requests: {requests}"),
    ]
    return figures


def _ratio_figure(runs: dict[int, tuple[SyncRun, dict[str, Any], list[str]]]) -> list[Figure]:
    if BASE not in runs or LARGEST not in runs:
        return []
    base, large = runs[BASE][0].measured, runs[LARGEST][0].measured
    ratio = large.max_rss_bytes / base.max_rss_bytes
    return [Figure(f"peak RSS {LARGEST:,} / {BASE:,} users", ratio, "×",
                   runs[BASE][2] + runs[LARGEST][2], f"<= {RSS_RATIO}×", ratio <= RSS_RATIO)]


def run(ctx: Context) -> Outcome:
    runs = {users: _one(ctx, users) for users in _sizes(ctx)}
    figures: list[Figure] = []
    for users in sorted(runs):
        figures += _size_figures(users, *runs[users])
    figures += _ratio_figure(runs)
    details: dict[str, Any] = {
        "sizes_env": os.environ.get(SIZES_ENV, ""),  # set: only these sizes were run
        "groups": GROUPS,
        "preload_fraction": PRELOAD,
        "sizes": {
            str(users): {
                "users": users,
                "engine_process": run.measured.to_json(),
                "engine_peak_rss_mb": round(run.measured.max_rss_bytes / MB, 1),
                "engine_cpu_s_per_1000_users": round(run.measured.cpu_s / (users / 1000), 4),
                "emulator": emulator,
                "requests": counts_by_service(run.stats),
                "summary": _summary(ctx.work_dir / f"users_{users}"),
                "engine_wall_time_s": _engine_wall(_summary(ctx.work_dir / f"users_{users}")),
                "commands": commands,
                "foreign_processes": run.foreign,
            }
            for users, (run, emulator, commands) in sorted(runs.items())
        },
    }
    return Outcome(figures, details)


SCENARIO = Scenario(
    NAME, "Dry run at scale: engine memory and CPU, 10,000, 100,000 and 1,000,000 users", run
)
