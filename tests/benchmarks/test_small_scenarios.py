"""Every benchmark scenario at CI size: the machinery works and the engine's results are right.

This is the issue's "small version of each scenario as a test of correctness only": each
scenario runs as ``make bench`` runs it (engine and emulators as separate processes on
loopback), with its smallest sizes. Nothing here looks at a time or a speed. What is checked:
every sync's end state against the oracle (written from the semantics page, not the engine's
planner), dry runs writing nothing, and the figures that state a count rather than a speed
(429s, the Okta budget never exceeded, a resumed run's end state) holding at any size.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from benchmarks.engine import WatchedSync, watching_syncs
from benchmarks.framework import Context, Figure, Outcome
from benchmarks.scenarios import SCENARIOS
from benchmarks.stats import TARGETS, counts_by_service

from tests.engine import oracle

SETTINGS = oracle.Settings(default_groups={"jira": ("jira-software-users",),
                                           "confluence": ("confluence-users",)})

# Figures that state a correctness property (a count, never a time): met at every size.
MUST_HOLD = {
    "okta_bound": ("highest share in any window", "429s from Okta"),
    "rate_bound": ("429s / requests to the targets",),
    "resume_20k": ("end state (b) vs (a): differences",),
    "incremental_100k": ("writes sent beyond those that landed", "full sync afterwards",
                         "nothing changed: Okta requests"),
    "serve_latency": ("new hires missing from a target afterwards",),
}
DRY_RUN_SCENARIOS = {"okta_bound", "scale", "okta_auth"}


def run_small(name: str, tmp_path: Path) -> tuple[Outcome, list[WatchedSync]]:
    ctx = Context(work_dir=tmp_path / name, ci=True)
    ctx.work_dir.mkdir(parents=True)
    with watching_syncs() as syncs:
        outcome = SCENARIOS[name].run(ctx)
    return outcome, syncs


def assert_matches_oracle(sync: WatchedSync, synced_as: dict[str, str] | None = None,
                          targets: tuple[str, ...] = TARGETS) -> None:
    """``synced_as``: Okta id -> the username it was synced as before its login changed."""
    okta = sync.after["okta"]
    for target in targets:
        before = oracle.target_accounts(sync.before[target])
        expected = oracle.expected_accounts(okta, before, target, SETTINGS, synced_as)
        problems = oracle.differences(expected, oracle.target_accounts(sync.after[target]))
        assert problems == [], f"{sync.folder.name}, {target}: {problems[:5]}"


def figure(outcome: Outcome, name: str) -> Figure:
    found = [f for f in outcome.figures if name in f.name]
    assert found, f"no figure named like {name!r}"
    return found[0]


@pytest.mark.timeout(400)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_at_ci_size(name: str, tmp_path: Path) -> None:
    outcome, syncs = run_small(name, tmp_path)

    assert outcome.figures, "a scenario reports figures"
    assert all(math.isfinite(f.value) for f in outcome.figures), \
        [f.name for f in outcome.figures if not math.isfinite(f.value)]
    for wanted in MUST_HOLD.get(name, ()):
        found = figure(outcome, wanted)
        assert found.met, f"{found.name}: {found.value} {found.unit} (target {found.target})"

    if name == "emulator_startup":
        return  # starts emulators only; its figures' own targets are timings
    assert syncs, "the scenario ran the engine"
    for sync in syncs:
        assert sync.exit_code in (0, 1), f"{sync.folder}: exit {sync.exit_code}"
        if name == "scim_vs_jira" and sync.folder.name == "jira":
            assert_matches_oracle(sync, targets=("jira",))  # its only target
            continue
        if name == "scim_vs_jira" and sync.folder.name == "scim":
            # into the SCIM server only: an account for every active Okta user, by e-mail
            cloud = oracle.Settings(target_rules={"cloud": ("email", None, "$1")})
            expected = oracle.expected_accounts(sync.after["okta"], {}, "cloud", cloud)
            created = outcome.details["scim"]["users_created"]
            assert created and created == len(expected), (created, len(expected))
            continue
        if sync.dry_run:
            writes = {s: counts_by_service(sync.stats)[s]["writes"] for s in TARGETS}
            assert writes == {"jira": 0, "confluence": 0}, writes
        else:
            assert_matches_oracle(sync, outcome.details.get("mix", {}).get("renamed"))
    assert all(s.dry_run for s in syncs) == (name in DRY_RUN_SCENARIOS)
    if name == "latency_bound":
        check_bare_replay(outcome.details["bare_aiohttp"])
    if name == "fault_503":
        check_faults_injected(outcome.details["runs"])


def check_faults_injected(runs: dict[str, Any]) -> None:
    """The runs with a fail rate met 503s (and still ended as the oracle says, above)."""
    seen = {label: sum(int(run["emulator_stats"][s]["faults"]["unavailable"])
                       for s in ("okta", *TARGETS)) for label, run in runs.items()}
    for latency in ("0ms", "20ms"):
        assert seen[f"engine_{latency}_fail_0pct"] == 0, seen
        assert seen[f"engine_{latency}_fail_5pct"] > 0, seen


def check_bare_replay(bare: dict[str, Any]) -> None:
    """The bare client sent exactly the engine's requests, and the servers accepted them."""
    assert bare["plan_vs_engine_mismatches"] == {"jira": {}, "confluence": {}}
    for target in TARGETS:
        statuses = bare["loadgen_result"]["targets"][target]["statuses"]
        assert statuses and all(200 <= int(code) < 300 or int(code) == 404
                                for code in statuses), (target, statuses)
