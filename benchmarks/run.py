"""``python -m benchmarks.run [scenario ...] [--quick]``: run scenarios, store, regenerate.

Full runs store ``results/<scenario>.json`` and regenerate the README table. ``--quick`` runs
smaller sizes to check the machinery and only prints: a quick figure must never stand in the
README for a real one.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.framework import (
    RESULTS_DIR,
    Context,
    Scenario,
    engine_revision,
    environment_sample,
    load_results,
    result_document,
    write_result,
)
from benchmarks.procs import BenchError, foreign_processes
from benchmarks.report import update_readme
from benchmarks.scenarios import SCENARIOS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="scenario",
        help=f"scenarios to run (default: all): {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes; print only, store nothing"
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and stop")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="regenerate the README table from stored results, run nothing",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run the engine under cProfile, .prof files in DIR "
        "(figures are then marked as profiled)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each scenario, wait up to this long for other busy "
        "processes to end (they compete for the CPUs); default 0",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch directory (configs, state, logs)"
    )
    return parser


def _print_figures(document: dict[str, Any]) -> None:
    for f in document["figures"]:
        verdict = {True: "met", False: "MISSED", None: ""}[f["met"]]
        target = f"  target {f['target']} {verdict}" if f["target"] else ""
        print(f"  {f['name']}: {f['value']:.3f} {f['unit']}{target}")


def wait_idle(limit_s: float) -> bool:
    """Wait (bounded) until no other oktasync process runs; True when the machine is quiet."""
    deadline = time.monotonic() + limit_s
    while foreign_processes():
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    return True


def run_one(scenario: Scenario, work: Path, quick: bool, profile: Path | None) -> dict[str, Any]:
    """Run a scenario in its own scratch directory and return its result document."""
    ctx = Context(work_dir=work / scenario.name, quick=quick, profile_dir=profile)
    ctx.work_dir.mkdir(parents=True)
    print(f"{scenario.name}: {scenario.title}{' (quick)' if quick else ''}", flush=True)
    before = environment_sample()
    revision = engine_revision()
    started, clock = time.time(), time.monotonic()
    outcome = scenario.run(ctx)
    wall = time.monotonic() - clock
    during: dict[str, Any] = {"foreign_processes": sorted(ctx.foreign_seen)}
    environment = {"before": before, "during": during, "after": environment_sample()}
    document = result_document(scenario, outcome, ctx, started, wall, environment, revision)
    if any(sample["foreign_processes"] for sample in environment.values()):
        print(
            "  WARNING: other busy processes ran meanwhile; figures may be skewed", file=sys.stderr
        )
    _print_figures(document)
    return document


def _selected(names: Sequence[str]) -> list[Scenario]:
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(
            f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}"
        )
    return [SCENARIOS[n] for n in (names or list(SCENARIOS))]


def _ordered_results() -> list[dict[str, Any]]:
    """Stored results in the registry's order; results of retired scenarios go last."""
    results = load_results(RESULTS_DIR)
    order = {name: i for i, name in enumerate(SCENARIOS)}
    return sorted(results, key=lambda r: order.get(r["scenario"], len(order)))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for s in SCENARIOS.values():
            print(f"{s.name}: {s.title}")
        return 0
    scenarios = [] if args.report_only else _selected(args.scenarios)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="oktasync-bench-"))
    failed = 0
    for scenario in scenarios:
        if args.wait_idle > 0 and not wait_idle(args.wait_idle):
            print(
                f"{scenario.name}: other processes are still busy after "
                f"{args.wait_idle:.0f}s; measuring anyway",
                file=sys.stderr,
            )
        try:
            document = run_one(scenario, work, args.quick, args.profile)
        except (BenchError, RuntimeError, OSError) as exc:
            print(f"{scenario.name}: FAILED: {exc}", file=sys.stderr)
            failed += 1
            continue
        if not args.quick:
            print(f"  stored {write_result(document)}")
    if not args.quick:
        update_readme(_ordered_results())
    if args.keep or failed:
        print(f"scratch kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
