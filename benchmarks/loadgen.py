"""A bare aiohttp load generator: the same requests as the engine, and no engine logic.

``python -m benchmarks.loadgen PLAN.json RESULT.json`` sends a plan's requests to each target
at that target's concurrency (every target at once): one ``ClientSession``, keep-alive, every
body read, nothing else. Per target the plan is a list of phases run one after another (reads,
then groups, then users, then memberships: a membership needs its user and group); within a
phase ``concurrency`` workers take the next request as soon as they are free. It runs as its own
process so its CPU seconds (``wait4``) compare with the engine's.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

Request = dict[str, Any]  # {"method", "path", "params"?, "json"?}


@dataclass
class TargetResult:
    """What one target's load did: answers by status and when it began and ended."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    first_s: float = 0.0
    last_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "first_s": round(self.first_s, 4),
            "last_s": round(self.last_s, 4),
            "window_s": round(self.last_s - self.first_s, 4),
        }


async def _worker(
    session: aiohttp.ClientSession,
    base: str,
    headers: dict[str, str],
    queue: list[Request],
    result: TargetResult,
) -> None:
    while queue:
        request = queue.pop()
        async with session.request(
            request["method"],
            base + request["path"],
            params=request.get("params"),
            json=request.get("json"),
            headers=headers,
        ) as response:
            await response.read()
        result.requests += 1
        result.statuses[response.status] += 1


async def _run_target(
    session: aiohttp.ClientSession, spec: dict[str, Any], clock: float
) -> TargetResult:
    """Each phase in turn, ``concurrency`` workers per phase."""
    result = TargetResult(first_s=time.monotonic() - clock)
    headers = dict(spec["headers"])
    for phase in spec["phases"]:
        queue = list(reversed(phase))  # pop() from the end keeps the plan's order
        workers = min(int(spec["concurrency"]), len(queue))
        await asyncio.gather(
            *(_worker(session, spec["base_url"], headers, queue, result) for _ in range(workers))
        )
    result.last_s = time.monotonic() - clock
    return result


async def run_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """Every target at once over one keep-alive session; per-target results and total wall."""
    targets: dict[str, dict[str, Any]] = plan["targets"]
    per_host = max(int(t["concurrency"]) for t in targets.values())
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=per_host, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=120)
    clock = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        results = await asyncio.gather(
            *(_run_target(session, spec, clock) for spec in targets.values())
        )
    wall = time.monotonic() - clock
    return {
        "wall_s": round(wall, 4),
        "targets": {name: r.to_json() for name, r in zip(targets, results, strict=True)},
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m benchmarks.loadgen PLAN.json RESULT.json", file=sys.stderr)
        return 2
    plan = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result = asyncio.run(run_plan(plan))
    Path(argv[1]).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
