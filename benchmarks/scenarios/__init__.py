"""The registry: every scenario ``python -m benchmarks.run`` knows, in the README's order."""

from __future__ import annotations

from benchmarks.framework import Scenario
from benchmarks.scenarios import emulator_startup, speedup_1000

SCENARIOS: dict[str, Scenario] = {
    s.name: s for s in (emulator_startup.SCENARIO, speedup_1000.SCENARIO)
}
