"""okta_bound (issue 5, scenario 3): how much of Okta's budget a dry run of 100,000 users uses.

Okta's Workforce limits are on (``--okta-rate-scale 1``) with the window shortened to 10 s and
every bucket scaled to match (``--okta-window-s 10``: the users bucket allows 100 requests per
window, the group bucket 167), and the app may use half of them (``okta_max_share = 0.5``).
A dry run (``oktasync sync --dry-run``) reads everything. The emulator counts the requests it
let through in every completed window of every bucket (``/_emulator/stats`` → ``windows``);
the first and the last window are dropped (the run starts and ends inside them) and each of the
others is compared with the app's budget, ``floor(limit × 0.5)``. Targets: ≥ 90 % of the budget
used on average, never above 100 % in any window, and no 429 at all.
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks.engine import SyncRun, run_sync
from benchmarks.framework import Context, Figure, Outcome, Scenario, display_command
from benchmarks.procs import EmulatorProcess

NAME = "okta_bound"
USERS, GROUPS, QUICK_USERS, QUICK_GROUPS = 100_000, 1_000, 20_000, 200
CI_SIZE = (3_000, 30)
WINDOW_S, SHARE = 10, 0.5
MEAN_TARGET, MIN_WINDOWS = 0.9, 5
BUCKETS = ("users", "group")  # the two the listing draws on: user pages, group member pages


def emulate_args(users: int, groups: int) -> list[str]:
    return ["--users", str(users), "--groups", str(groups), "--seed", "1",
            "--okta-rate-scale", "1", "--okta-window-s", str(WINDOW_S)]


def bucket_use(okta_stats: dict[str, Any], bucket: str) -> dict[str, Any]:
    """One bucket's completed windows against the app's budget, first and last dropped."""
    limit = int(okta_stats["window_limits"][bucket])
    budget = math.floor(limit * SHARE)
    windows = [int(n) for n in okta_stats["windows"].get(bucket, [])]
    middle = windows[1:-1]
    shares = [n / budget for n in middle]
    return {
        "limit_per_window": limit,
        "budget_per_window": budget,
        "windows_all": windows,
        "current_window": okta_stats.get("windows_current", {}).get(bucket),
        "windows_counted": len(middle),
        "shares": [round(s, 4) for s in shares],
        "mean_share": sum(shares) / len(shares) if shares else 0.0,
        "min_share": min(shares, default=0.0),
        "max_share": max(shares, default=0.0),
        "max_share_all_windows": max((n / budget for n in windows), default=0.0),
    }


def _bucket_figures(bucket: str, use: dict[str, Any], commands: list[str]) -> list[Figure]:
    n = use["windows_counted"]
    note = (f"{n} complete windows of {WINDOW_S} s, first and last dropped; budget "
            f"{use['budget_per_window']} = floor({use['limit_per_window']} × {SHARE})")
    return [
        Figure(f"{bucket} bucket: mean share of the budget used", use["mean_share"] * 100, "%",
               commands, f">= {MEAN_TARGET:.0%}", use["mean_share"] >= MEAN_TARGET, note),
        Figure(f"{bucket} bucket: highest share in any window", use["max_share"] * 100, "%",
               commands, "<= 100%", use["max_share"] <= 1.0,
               f"first and last included: {use['max_share_all_windows']:.0%}"),
        Figure(f"{bucket} bucket: lowest share in a counted window", use["min_share"] * 100,
               "%", commands),
    ]


def _figures(run: SyncRun, uses: dict[str, dict[str, Any]], commands: list[str]) -> list[Figure]:
    figures: list[Figure] = []
    for bucket in BUCKETS:
        use = uses[bucket]
        if bucket == "users" or use["windows_counted"] >= MIN_WINDOWS:
            figures += _bucket_figures(bucket, use, commands)
    limited = int(run.stats["okta"]["rate_limited"])
    figures += [
        Figure("429s from Okta", limited, "", commands, "0", limited == 0,
               f"Okta requests {run.requests('okta'):,}"),
        Figure("wall time of the dry run", run.measured.wall_s, "s", commands,
               note=f"engine CPU {run.measured.cpu_s:.1f} s"),
    ]
    return figures


def run(ctx: Context) -> Outcome:
    users, groups = ctx.pick((USERS, GROUPS), (QUICK_USERS, QUICK_GROUPS), CI_SIZE)
    scratch = ctx.scratch("dry_run")
    profile = ctx.profile_dir / f"{NAME}.prof" if ctx.profile_dir else None
    with EmulatorProcess(emulate_args(users, groups), log_dir=scratch) as emu:
        emu.start(timeout_s=300.0)
        run_ = run_sync(emu, scratch, extra=["--dry-run"], timeout_s=3600.0, profile_to=profile,
                        extra_app=f"okta_max_share = {SHARE}")
        emu.stop()
    ctx.note_foreign(run_.foreign)
    if run_.measured.exit_code not in (0, 1):
        raise RuntimeError(f"dry run exited {run_.measured.exit_code}; see {scratch}")
    commands = [display_command(emu.argv, ctx.work_dir) + " &",
                display_command(run_.measured.argv, ctx.work_dir) + f"  # okta_max_share = {SHARE}"]
    okta = run_.stats["okta"]
    uses = {b: bucket_use(okta, b) for b in sorted(okta["windows"]) if okta["windows"][b]}
    for bucket in BUCKETS:
        uses.setdefault(bucket, bucket_use(okta, bucket))
    details = {
        "users": users,
        "groups": groups,
        "window_s": WINDOW_S,
        "okta_max_share": SHARE,
        "buckets": uses,
        "engine_process": run_.measured.to_json(),
        "emulator_cpu_s_during_sync": round(run_.emulator_cpu_s, 3),
        "okta_rate_limited": okta["rate_limited"],
        "okta_by_endpoint": okta["by_endpoint"],
        "requests": {s: run_.requests(s) for s in ("okta", "jira", "confluence")},
        "foreign_processes": run_.foreign,
    }
    return Outcome(_figures(run_, uses, commands), details)


SCENARIO = Scenario(NAME, "Okta-bound dry run: share of Okta's rate budget used, 100,000 users",
                    run)
