"""``python -m benchmarks.serve_rss --config FILE --runs N --out FILE``: the service in this
process, its app scheduled every 0 s (a file allows a minute at least), its RSS sampled after
each tenth of ``N`` incremental runs; the JSON written to ``--out``.

Part of the serve_latency scenario (c): memory must stay flat across many runs (nothing kept
per run: summaries, metrics series, the run history are bounded)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import anyio

from oktasync.config import load_config
from oktasync.schedules import Schedule
from oktasync.serve import Service


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def measure(config_path: Path, runs: int) -> dict[str, object]:
    config = load_config(config_path)
    app = replace(config.apps[0], schedule=Schedule(every_s=0.0), changes="poll",
                  poll_interval_s=3600.0)
    service = Service(replace(config, apps=(app,)))
    samples: list[tuple[int, float]] = []
    step = max(1, runs // 10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: service.serve(on_ready=lambda _: None))
        while (done := service.health[app.name].runs) < runs:
            if done >= step * (len(samples) + 1) and service.health[app.name].last_finished:
                samples.append((done, rss_mb()))
            await anyio.sleep(0.01)
        samples.append((runs, rss_mb()))
        tg.cancel_scope.cancel()
    kinds = sorted({r.kind for r in service.history})
    codes = sorted({r.exit_code for r in service.history})
    first, last = samples[0][1], samples[-1][1]
    return {"samples": samples, "first_mb": first, "last_mb": last,
            "growth_pct": round(100 * (last - first) / first, 2), "kinds": kinds,
            "exit_codes": codes}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_rss")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = anyio.run(measure, args.config, args.runs)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
