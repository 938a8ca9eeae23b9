"""before_after: the same syncs with this checkout's engine and another's, on one machine, in
one run — what a change costs (or saves) where the engine spends its time.

Four configurations, each on fresh emulators built by this checkout (the same seeded
directory): a first import of 2,000 users with no added latency (bound by the two cores: CPU
per write shows), the same with 20 ms on every request (``latency_bound``'s default
configuration: bound by round trips), a dry run of 100,000 users with the targets holding half
of them (``--lazy --preload-fraction 0.5``, as ``scale``: reading, planning and the run index),
and ``high_bar``'s default configuration (10,000 users, 1,000 groups, 200,000 memberships,
20 ms). ``OKTASYNC_BENCH_CONFIGS`` (comma-separated names) runs some of them only, and
``OKTASYNC_BENCH_REPEATS`` sets the rounds (default 3).
The other engine is ``OKTASYNC_BENCH_BASELINE_SRC`` (a ``src`` folder, put on ``PYTHONPATH``;
``OKTASYNC_BENCH_BASELINE_LABEL`` names it). Each configuration runs ``REPEATS`` times per
engine, the rounds interleaved (engine, baseline, engine, ...), and the fastest run is
reported: another process on the machine only ever adds time. For instance::

    git archive 726d5ec src | tar -x -C /tmp/base
    OKTASYNC_BENCH_BASELINE_SRC=/tmp/base/src OKTASYNC_BENCH_BASELINE_LABEL=726d5ec \\
        .venv/bin/python -m benchmarks.run before_after
"""

from __future__ import annotations

import os
from typing import Any

from benchmarks.framework import Context, Figure, Outcome, Scenario
from benchmarks.runs import Observed, emulate_args, run_engine

NAME = "before_after"
BASELINE_ENV, BASELINE_LABEL_ENV = "OKTASYNC_BENCH_BASELINE_SRC", "OKTASYNC_BENCH_BASELINE_LABEL"
REPEATS = 3
# (label, users, groups, emulator flags, sync flags)
CONFIGS: dict[str, tuple[int, int, tuple[str, ...], tuple[str, ...]]] = {
    "import_0ms": (2_000, 100, (), ()),
    "import_20ms": (2_000, 100, ("--latency-ms", "20"), ()),
    "dry_run_100k": (100_000, 2_000, ("--lazy", "--preload-fraction", "0.5"), ("--dry-run",)),
    "high_bar_10k": (10_000, 1_000, ("--latency-ms", "20"), ()),
}
QUICK = {"import_0ms": (300, 20), "import_20ms": (300, 20), "dry_run_100k": (5_000, 100),
         "high_bar_10k": (1_000, 40)}
CI = {"import_0ms": (40, 5), "import_20ms": (40, 5), "dry_run_100k": (200, 10),
      "high_bar_10k": (40, 5)}
# --memberships per size (full, quick, CI); the other configurations keep the generator's
MEMBERSHIPS = {"high_bar_10k": (200_000, 4_000, 80)}
CONFIGS_ENV, REPEATS_ENV = "OKTASYNC_BENCH_CONFIGS", "OKTASYNC_BENCH_REPEATS"


def _measure(ctx: Context, config: str, engine: str, round_: int,
             env: dict[str, str] | None) -> Observed:
    users, groups = ctx.pick(CONFIGS[config][:2], QUICK[config], CI[config])
    flags, sync_flags = CONFIGS[config][2], CONFIGS[config][3]
    if config in MEMBERSHIPS:
        full, quick, ci = MEMBERSHIPS[config]
        flags = (*flags, "--memberships", str(ctx.pick(full, quick, ci)))
    label = f"{config}_{engine}_{round_}"
    emu = emulate_args(users, groups, "--okta-rate-scale", "0", *flags)
    o = run_engine(ctx, NAME, label, emu, list(sync_flags) or None, env=env)
    if env:
        o.commands[-1] = "PYTHONPATH=$BASELINE/src " + o.commands[-1]
    return o


def _figures(config: str, engine: str, runs: list[Observed]) -> list[Figure]:
    runs.sort(key=lambda o: o.measured.wall_s)
    o = runs[0]
    walls = ", ".join(f"{r.measured.wall_s:.2f}" for r in runs)
    cpus = ", ".join(f"{r.measured.cpu_s:.2f}" for r in runs)
    writes = o.target_writes()
    per_write = f"; {o.measured.cpu_s / writes * 1000:.3f} ms CPU per target write " \
        f"({writes:,} writes)" if writes else ""
    return [
        Figure(f"{config}, {engine}: wall time (process)", o.measured.wall_s, "s", o.commands,
               note=f"fastest of {len(runs)}: {walls} s"),
        Figure(f"{config}, {engine}: engine CPU", o.measured.cpu_s, "s", o.commands,
               note=f"the same run; all runs: {cpus} s{per_write}"),
        Figure(f"{config}, {engine}: engine peak RSS", o.measured.max_rss_bytes / 1e6, "MB",
               o.commands),
    ]


def run(ctx: Context) -> Outcome:
    baseline = os.environ.get(BASELINE_ENV)
    name = f"baseline {os.environ.get(BASELINE_LABEL_ENV, '')}".strip()
    engines: dict[str, dict[str, str] | None] = {"engine": None}
    if baseline:
        engines[name] = {"PYTHONPATH": baseline}
    repeats = ctx.pick(int(os.environ.get(REPEATS_ENV, REPEATS)), 1, 1)
    seen: dict[tuple[str, str], list[Observed]] = {}
    wanted = os.environ.get(CONFIGS_ENV)
    configs = [c for c in CONFIGS if not wanted or c in wanted.split(",")]
    for config in configs:
        for round_ in range(repeats):
            for engine, env in engines.items():
                seen.setdefault((config, engine), []).append(
                    _measure(ctx, config, engine.replace(" ", "_"), round_, env))
    figures: list[Figure] = []
    details: dict[str, Any] = {"baseline_src": baseline, "repeats": repeats, "runs": {}}
    for (config, engine), runs in seen.items():
        figures += _figures(config, engine, runs)
        details["runs"][f"{config}, {engine}"] = [r.to_json() for r in runs]
    return Outcome(figures, details)


SCENARIO = Scenario(NAME, "Before and after: the same syncs with this engine and another", run)
