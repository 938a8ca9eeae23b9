"""C. latency_bound (issue 5, scenario 1): 2,000 users, 100 groups, 20 ms on every request.

Four configurations, each on fresh emulators (``--okta-rate-scale 0``):

* ``default``: the engine as configured out of the box (16 requests in flight per target);
* ``max_in_flight_1``: the same engine held to one request in flight;
* ``bare_aiohttp``: ``benchmarks.loadgen`` sending the requests the engine sent (its writes,
  read off the targets' end state, and its reads, the same count per endpoint) at the same
  concurrency, 16 per target, both targets at once: what the machine and the emulators allow;
* ``sequential_peer``: ``benchmarks.peers.sequential_sync``, the script an administrator
  would write with the official ``okta`` SDK and ``atlassian-python-api``.

A target's throughput is its requests over the time it was busy (from its first to its last
request, sampled every 0.1 s from ``/_emulator/stats``); the floor a latency-bound client can
reach is ``concurrency / latency`` = 800 requests per second per target.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.framework import Context, Figure, Outcome, Scenario
from benchmarks.procs import EmulatorProcess
from benchmarks.replay import build_plan, plan_counts
from benchmarks.runs import Observed, emulate_args, run_client, run_engine
from benchmarks.stats import TARGETS, endpoint_requests

NAME = "latency_bound"
USERS, GROUPS, QUICK_USERS, QUICK_GROUPS = 2_000, 100, 300, 20
CI_SIZE = (40, 5)
LATENCY_MS, CONCURRENCY = 20, 16
FLOOR_RPS = CONCURRENCY / (LATENCY_MS / 1000)
SPEEDUP_TARGET, FLOOR_SHARE, BARE_FLOOR_SHARE, OF_BARE, CPU_RATIO = 25.0, 0.8, 0.9, 0.7, 1.5
SDK_ENV = {"OKTA_TESTING_TESTINGDISABLEHTTPSCHECK": "true"}  # the SDK refuses http otherwise


def _emu_args(users: int, groups: int) -> list[str]:
    return emulate_args(users, groups, "--latency-ms", str(LATENCY_MS), "--okta-rate-scale", "0")


def _bare(ctx: Context, engine: Observed, emu_args: list[str]) -> tuple[Observed, dict[str, Any]]:
    """The load generator on the engine's requests; its result file and plan-vs-engine counts."""
    engine_endpoints = {s: endpoint_requests(engine.stats[s]) for s in TARGETS}
    files: dict[str, Any] = {}

    def make_argv(emu: EmulatorProcess, scratch: Path) -> list[str]:
        plan = build_plan(emu, engine_endpoints, engine.before, engine.after, CONCURRENCY)
        files["plan"], files["result"] = scratch / "plan.json", scratch / "result.json"
        files["counts"] = plan_counts(plan)
        files["plan"].write_text(json.dumps(plan), encoding="utf-8")
        return [sys.executable, "-m", "benchmarks.loadgen", str(files["plan"]),
                str(files["result"])]

    observed = run_client(ctx, "bare_aiohttp", emu_args, make_argv, sample=True)
    result = json.loads(files["result"].read_text(encoding="utf-8"))
    mismatches = {
        s: {ep: [files["counts"][s].get(ep, 0), n] for ep, n in engine_endpoints[s].items()
            if files["counts"][s].get(ep, 0) != n}
        for s in TARGETS
    }
    return observed, {"loadgen_result": result, "plan_requests_per_endpoint": files["counts"],
                      "plan_vs_engine_mismatches": mismatches}


def _peer(ctx: Context, emu_args: list[str]) -> Observed:
    def make_argv(emu: EmulatorProcess, scratch: Path) -> list[str]:
        info = emu.info
        return [sys.executable, "-m", "benchmarks.peers.sequential_sync",
                "--okta-url", info["okta"]["url"], "--okta-token", info["okta"]["token"],
                "--jira-url", info["jira"]["url"], "--jira-token", info["jira"]["token"],
                "--confluence-url", info["confluence"]["url"],
                "--confluence-token", info["confluence"]["token"]]

    return run_client(ctx, "sequential_peer", emu_args, make_argv, env=SDK_ENV)


def _peer_summary(ctx: Context) -> Any:
    """The JSON line the peer script printed last (its calls and refusals per kind)."""
    lines = (ctx.work_dir / "sequential_peer" / "client.out").read_text().splitlines()
    return json.loads(lines[-1]) if lines else None


def _throughput(observed: Observed, service: str) -> float:
    activity = observed.activity[service]
    return activity.requests / activity.window_s if activity.window_s else 0.0


def _config_figures(o: Observed) -> list[Figure]:
    counts = ", ".join(f"{s} {o.requests(s):,}" for s in ("okta", "jira", "confluence"))
    figures = [Figure(f"{o.label}: wall time (process start to exit)", o.measured.wall_s, "s",
                      o.commands, note=f"requests: {counts}")]
    if o.last_run:
        figures.append(Figure(f"{o.label}: the engine's own wall_time_s", o.engine_wall_s(), "s",
                              o.commands, note="without interpreter start-up"))
    figures.append(Figure(f"{o.label}: CPU of the client process", o.measured.cpu_s, "s",
                          o.commands, note=f"emulator CPU meanwhile {o.emulator_cpu_s:.1f} s"))
    return figures


def _speedups(runs: dict[str, Observed]) -> list[Figure]:
    fast = runs["default"]
    figures = []
    for slow in (runs["max_in_flight_1"], runs["sequential_peer"]):
        ratio = slow.measured.wall_s / fast.measured.wall_s
        figures.append(Figure(
            f"speed-up: {slow.label} wall / default wall", ratio, "×",
            fast.commands + slow.commands, f">= {SPEEDUP_TARGET:.0f}×", ratio >= SPEEDUP_TARGET))
    return figures


def _throughput_figures(engine: Observed, bare: Observed) -> list[Figure]:
    """Per target: (a) and (c) as a share of the floor, (a) over (c), and the verdict."""
    figures = []
    commands = engine.commands + bare.commands
    for s in TARGETS:
        a, c = _throughput(engine, s), _throughput(bare, s)
        a_share, c_share = a / FLOOR_RPS, c / FLOOR_RPS
        busy = (f"{engine.activity[s].requests:,} requests in {engine.activity[s].window_s:.2f} s"
                f" busy; floor {FLOOR_RPS:.0f}/s")
        if c_share >= BARE_FLOOR_SHARE:
            share_target, share_met = f">= {FLOOR_SHARE:.0%} of floor", a_share >= FLOOR_SHARE
            ratio_target, ratio_met = "", None
        else:  # the machine itself cannot reach the floor: judge against the bare client
            share_target, share_met = f"(bare {c_share:.0%} < {BARE_FLOOR_SHARE:.0%})", None
            ratio_target, ratio_met = f">= {OF_BARE:.0%} of bare", a / c >= OF_BARE
        figures += [
            Figure(f"{s}: default throughput", a, "req/s", engine.commands, note=busy),
            Figure(f"{s}: default throughput / floor", a_share * 100, "%", engine.commands,
                   share_target, share_met),
            Figure(f"{s}: bare aiohttp throughput / floor", c_share * 100, "%", bare.commands,
                   note=f"{c:.0f} req/s over {bare.activity[s].window_s:.2f} s busy"),
            Figure(f"{s}: default throughput / bare aiohttp throughput", a / c * 100, "%",
                   commands, ratio_target, ratio_met),
        ]
    return figures


def _cpu_figures(engine: Observed, bare: Observed) -> list[Figure]:
    per_write_a = engine.measured.cpu_s / engine.target_writes()
    per_write_c = bare.measured.cpu_s / bare.target_writes()
    ratio = per_write_a / per_write_c
    return [
        Figure("default: engine CPU per target write", per_write_a * 1000, "ms", engine.commands,
               note=f"{engine.measured.cpu_s:.2f} s / {engine.target_writes():,} writes"),
        Figure("bare aiohttp: CPU per target write", per_write_c * 1000, "ms", bare.commands,
               note=f"{bare.measured.cpu_s:.2f} s / {bare.target_writes():,} writes"),
        Figure("engine CPU per write / bare aiohttp CPU per write", ratio, "×",
               engine.commands + bare.commands, f"<= {CPU_RATIO}×", ratio <= CPU_RATIO),
    ]


def run(ctx: Context) -> Outcome:
    users, groups = ctx.pick((USERS, GROUPS), (QUICK_USERS, QUICK_GROUPS), CI_SIZE)
    emu_args = _emu_args(users, groups)
    runs = {"default": run_engine(ctx, NAME, "default", emu_args, sample=True, snapshot=True)}
    bare, bare_details = _bare(ctx, runs["default"], emu_args)
    runs["bare_aiohttp"] = bare
    runs["max_in_flight_1"] = run_engine(ctx, NAME, "max_in_flight_1", emu_args,
                                         ["--max-in-flight", "1"])
    runs["sequential_peer"] = _peer(ctx, emu_args)
    figures = [f for o in runs.values() for f in _config_figures(o)]
    figures += _speedups(runs)
    figures += _throughput_figures(runs["default"], bare)
    figures += _cpu_figures(runs["default"], bare)
    details = {"users": users, "groups": groups, "latency_ms": LATENCY_MS,
               "concurrency_per_target": CONCURRENCY, "floor_rps_per_target": FLOOR_RPS,
               "bare_aiohttp": bare_details, "sequential_peer_summary": _peer_summary(ctx),
               "runs": {label: o.to_json() for label, o in runs.items()}}
    return Outcome(figures, details)


SCENARIO = Scenario(NAME, "Latency-bound sync: engine vs one in flight, bare aiohttp, an SDK "
                          "script", run)
