"""The registry: every scenario ``python -m benchmarks.run`` knows, in the README's order."""

from __future__ import annotations

from benchmarks.framework import Scenario
from benchmarks.scenarios import (
    before_after,
    emulator_startup,
    fault_503,
    high_bar,
    incremental_100k,
    latency_bound,
    okta_auth,
    okta_bound,
    progress_audit,
    rate_bound,
    resume_20k,
    scale,
    scim_vs_jira,
    serve_latency,
    speedup_1000,
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        emulator_startup.SCENARIO,
        speedup_1000.SCENARIO,
        latency_bound.SCENARIO,
        rate_bound.SCENARIO,
        fault_503.SCENARIO,
        resume_20k.SCENARIO,
        okta_bound.SCENARIO,
        scale.SCENARIO,
        high_bar.SCENARIO,
        before_after.SCENARIO,
        incremental_100k.SCENARIO,
        serve_latency.SCENARIO,
        progress_audit.SCENARIO,
        okta_auth.SCENARIO,
        scim_vs_jira.SCENARIO,
    )
}
