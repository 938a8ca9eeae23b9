"""One configuration of a scenario on fresh emulators: the engine, or any other client.

Each configuration gets its own ``oktasync-emulate`` (same arguments, so the same seeded
directory and empty targets), is measured from outside, and hands back what the servers saw:
their stats, optionally each target's busy window (``ActivitySampler``) and the targets' state
before and after (for replaying the engine's writes or comparing end states).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.engine import run_sync
from benchmarks.framework import REPO_ROOT, Context, display_command
from benchmarks.procs import EmulatorProcess, Measured, foreign_processes, run_measured
from benchmarks.replay import State, raw_state
from benchmarks.stats import TARGETS, Activity, ActivitySampler, counts_by_service

SYNC_TIMEOUT_S = 3600.0


def emulate_args(users: int, groups: int, *extra: str) -> list[str]:
    return ["--users", str(users), "--groups", str(groups), "--seed", "1", *extra]


@dataclass
class Observed:
    """A configuration's process, what the servers saw, and the commands that ran it."""

    label: str
    measured: Measured
    stats: dict[str, Any]
    commands: list[str]
    emulator_cpu_s: float = 0.0
    last_run: dict[str, Any] = field(default_factory=dict)
    activity: dict[str, Activity] = field(default_factory=dict)
    before: dict[str, State] = field(default_factory=dict)
    after: dict[str, State] = field(default_factory=dict)

    def requests(self, service: str) -> int:
        return int(self.stats[service]["requests"])

    def target_writes(self) -> int:
        counts = counts_by_service(self.stats)
        return sum(counts[s]["writes"] for s in TARGETS)

    def engine_wall_s(self) -> float:
        """The engine's own wall_time_s (no interpreter start-up); process wall otherwise."""
        return float(self.last_run.get("wall_time_s") or self.measured.wall_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "process": self.measured.to_json(),
            "emulator_cpu_s_during_run": round(self.emulator_cpu_s, 3),
            "requests": counts_by_service(self.stats),
            "busy_window_s": {s: round(a.window_s, 3) for s, a in self.activity.items()},
            "last_run": self.last_run,
            "emulator_stats": self.stats,
        }


def _check_exit(label: str, measured: Measured, scratch: Path, ok: tuple[int, ...]) -> None:
    if measured.exit_code not in ok:
        raise RuntimeError(f"{label} exited {measured.exit_code}; see {scratch}")


def run_engine(
    ctx: Context,
    scenario: str,
    label: str,
    emu_args: list[str],
    extra: list[str] | None = None,
    *,
    sample: bool = False,
    snapshot: bool = False,
    env: dict[str, str] | None = None,
) -> Observed:
    """Fresh emulators, one full ``oktasync sync`` (exit 0 or 1), the emulators stopped;
    ``env`` is added to the sync's environment (not the emulators')."""
    scratch = ctx.scratch(label)
    profile = ctx.profile_dir / f"{scenario}-{label}.prof" if ctx.profile_dir else None
    with EmulatorProcess(emu_args, log_dir=scratch) as emu:
        emu.start(timeout_s=300.0)
        before = _states(emu) if snapshot else {}
        sampler = ActivitySampler(emu) if sample else None
        if sampler is not None:
            with sampler:
                run = run_sync(emu, scratch, extra=extra, timeout_s=SYNC_TIMEOUT_S,
                               profile_to=profile, env=env)
        else:
            run = run_sync(emu, scratch, extra=extra, timeout_s=SYNC_TIMEOUT_S,
                           profile_to=profile, env=env)
        after = _states(emu) if snapshot else {}
        emu.stop()
    ctx.note_foreign(run.foreign)
    _check_exit(f"sync {label}", run.measured, scratch, (0, 1))
    commands = [display_command(emu.argv, ctx.work_dir) + " &",
                display_command(run.measured.argv, ctx.work_dir)]
    return Observed(label, run.measured, run.stats, commands, run.emulator_cpu_s, run.last_run,
                    sampler.activity if sampler else {}, before, after)


ArgvMaker = Callable[[EmulatorProcess, Path], list[str]]


def run_client(
    ctx: Context,
    label: str,
    emu_args: list[str],
    make_argv: ArgvMaker,
    *,
    env: dict[str, str] | None = None,
    sample: bool = False,
    timeout_s: float = SYNC_TIMEOUT_S,
) -> Observed:
    """Fresh emulators and another client (load generator, peer script) run to its end."""
    scratch = ctx.scratch(label)
    with EmulatorProcess(emu_args, log_dir=scratch) as emu:
        emu.start(timeout_s=300.0)
        argv = make_argv(emu, scratch)
        foreign = foreign_processes()
        cpu_before = emu.cpu_seconds()
        sampler = ActivitySampler(emu) if sample else None
        if sampler is not None:
            with sampler:
                measured = _run_client(argv, scratch, env, timeout_s)
        else:
            measured = _run_client(argv, scratch, env, timeout_s)
        emulator_cpu = emu.cpu_seconds() - cpu_before
        foreign += foreign_processes()
        stats = emu.stats()
        emu.stop()
    ctx.note_foreign(foreign)
    _check_exit(label, measured, scratch, (0,))
    commands = [display_command(emu.argv, ctx.work_dir) + " &",
                display_command(measured.argv, ctx.work_dir)]
    return Observed(label, measured, stats, commands, emulator_cpu,
                    activity=sampler.activity if sampler else {})


def _run_client(argv: list[str], scratch: Path, env: dict[str, str] | None,
                timeout_s: float) -> Measured:
    return run_measured(argv, timeout_s=timeout_s, log_dir=scratch, label="client",
                        cwd=REPO_ROOT, env=env)


def _states(emu: EmulatorProcess) -> dict[str, State]:
    return {s: raw_state(emu, s) for s in TARGETS}
