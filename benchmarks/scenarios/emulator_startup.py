"""A. emulator_startup: how fast ``oktasync-emulate`` is ready, and what memory it holds.

Every other benchmark starts the emulators first, and the scale scenarios run them with up to
a million users, so their start-up time and memory must be known and bounded: a large
directory is ready in < 20 s and holds < 1 GB even after every user has been served once (a
full listing materialises the JSON of each user), and the default small estate is up in < 5 s.
"""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks.framework import Context, Figure, Outcome, Scenario, display_command
from benchmarks.okta_client import ALL_USERS_FILTER, list_all_users
from benchmarks.procs import EmulatorProcess, foreign_processes

MB = 1_000_000
LARGE = (100_000, 2_000)
SMALL = (1_000, 40)
QUICK_LARGE = (10_000, 200)
CI_LARGE = (2_000, 50)
START_LIMIT_S, SMALL_START_LIMIT_S, HOLD_LIMIT_BYTES = 20.0, 5.0, 1_000 * MB


def _emulate_args(users: int, groups: int) -> list[str]:
    # Okta's rate limits off: 500 pages in a burst would otherwise wait for the window,
    # which measures the limiter, not start-up or memory.
    return ["--users", str(users), "--groups", str(groups), "--okta-rate-scale", "0"]


def _large(ctx: Context, users: int, groups: int) -> tuple[list[Figure], dict[str, Any]]:
    """Start the large estate, read VmHWM, list every user, read VmHWM again."""
    scratch = ctx.scratch("large")
    with EmulatorProcess(_emulate_args(users, groups), log_dir=scratch) as emu:
        emu.start(timeout_s=120.0)
        hwm_ready = emu.peak_rss_bytes()
        listing = asyncio.run(list_all_users(emu.url("okta"), emu.info["okta"]["token"]))
        hwm_listed = emu.peak_rss_bytes()
        ctx.note_foreign(foreign_processes())
        stats = emu.stats()["okta"]
        final = emu.stop()
    cmd = display_command(emu.argv, scratch)
    list_cmd = (
        f"aiohttp GET /api/v1/users?limit=200&filter={ALL_USERS_FILTER} "
        f'following rel="next" ({listing.pages} pages)'
    )
    if listing.items != users:
        raise RuntimeError(f"listed {listing.items} users, expected {users}")
    figures = [
        Figure(
            f"start to JSON line, {users:,} users / {groups:,} groups",
            emu.ready_s,
            "s",
            [cmd],
            f"< {START_LIMIT_S:.0f} s",
            emu.ready_s < START_LIMIT_S,
        ),
        Figure("peak RSS (VmHWM) when ready", hwm_ready / MB, "MB", [cmd]),
        Figure(
            f"peak RSS (VmHWM) after listing all {users:,} users",
            hwm_listed / MB,
            "MB",
            [cmd, list_cmd],
            f"< {HOLD_LIMIT_BYTES // MB} MB",
            hwm_listed < HOLD_LIMIT_BYTES,
        ),
        Figure(
            f"full user listing through the Okta API ({listing.pages} pages)",
            listing.seconds,
            "s",
            [cmd, list_cmd],
        ),
    ]
    details = {
        "ready_s": emu.ready_s,
        "vmhwm_ready_bytes": hwm_ready,
        "vmhwm_after_listing_bytes": hwm_listed,
        "listing_s": listing.seconds,
        "listing_pages": listing.pages,
        "listing_users": listing.items,
        "users_by_status": dict(listing.by_status),
        "okta_stats": stats,
        "emulator_process": final.to_json(),
    }
    return figures, details


def _small(ctx: Context, users: int, groups: int) -> tuple[list[Figure], dict[str, Any]]:
    """Start the default-size estate and stop it: only the time to the JSON line matters."""
    scratch = ctx.scratch("small")
    with EmulatorProcess(_emulate_args(users, groups), log_dir=scratch) as emu:
        emu.start(timeout_s=60.0)
        hwm = emu.peak_rss_bytes()
        ctx.note_foreign(foreign_processes())
        final = emu.stop()
    cmd = display_command(emu.argv, scratch)
    figure = Figure(
        f"start to JSON line, {users:,} users / {groups} groups",
        emu.ready_s,
        "s",
        [cmd],
        f"< {SMALL_START_LIMIT_S:.0f} s",
        emu.ready_s < SMALL_START_LIMIT_S,
    )
    return [figure], {
        "ready_s": emu.ready_s,
        "vmhwm_ready_bytes": hwm,
        "emulator_process": final.to_json(),
    }


def run(ctx: Context) -> Outcome:
    users, groups = ctx.pick(LARGE, QUICK_LARGE, CI_LARGE)
    large_figures, large = _large(ctx, users, groups)
    small_figures, small = _small(ctx, *SMALL)
    return Outcome(large_figures + small_figures, {"large": large, "small": small})


SCENARIO = Scenario("emulator_startup", "Emulator start-up time and memory", run)
