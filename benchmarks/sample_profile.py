"""Where the high bar's time goes: a sampling profile of the engine and the emulator at once.

``python -m benchmarks.sample_profile [--users N --groups G --memberships M --concurrency C]``
runs one full sync (by default the high bar at 64 in flight per target) with ``py-spy``
sampling both processes 100 times a second, and prints each process's CPU split into the
parts that matter for the question "what would one more core give": the HTTP library,
the event loop, the kernel calls behind them, SQLite and the engine's (or emulator's) own
code. cProfile (``benchmarks.run --profile``) slows pure-Python code several times more
than C code, so its shares mislead; a sampler at 100 Hz costs a few per cent and does not.

The result goes to ``profiles/high_bar_sample.json`` and the README's "where the time goes"
section is written from it by hand (the split is a finding, not a target). Needs ``py-spy``
(``pip install -e '.[bench]'``) and permission to trace child processes (root, or
``kernel.yama.ptrace_scope = 0``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.engine import write_config
from benchmarks.machine import machine_info
from benchmarks.procs import EmulatorProcess, oktasync_bin
from benchmarks.scenarios.high_bar import LATENCY_MS

RESULTS = Path(__file__).parent / "profiles" / "high_bar_sample.json"  # not a results/ document
RATE_HZ = 100

# First match wins: a sample is charged to the innermost frame's file.
CATEGORIES = (
    ("the engine's own code", re.compile(r"oktasync/")),
    ("the emulators' own code", re.compile(r"oktasync_emulators/")),
    ("aiohttp (HTTP client or server)", re.compile(r"aiohttp/")),
    ("yarl, multidict (URLs, headers)", re.compile(r"yarl/|multidict/")),
    ("asyncio event loop", re.compile(r"asyncio/|selectors\.py|anyio/")),
    ("json encoding and decoding", re.compile(r"json/|orjson")),
    ("sqlite3", re.compile(r"sqlite3")),
)


OWN_MODULE = re.compile(r"\((?:.*/)?(oktasync(?:_emulators)?/[\w/]+)\.py:\d+\)")


def categorise(raw: Path) -> dict[str, dict[str, float]]:
    """Share of the samples per category, and per module of our own code, from py-spy's
    ``--format raw`` (collapsed stacks). C functions called straight from our code (SQLite,
    orjson) have no frame of their own here: they count as the module that called them."""
    counts: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, number = line.rpartition(" ")
        leaf = stack.rsplit(";", 1)[-1]
        where = next((name for name, pattern in CATEGORIES if pattern.search(leaf)), "other")
        counts[where] += int(number)
        module = OWN_MODULE.search(leaf)
        if module:
            own[module.group(1)] += int(number)
    total = sum(counts.values()) or 1
    return {"split": {name: round(n / total, 4) for name, n in counts.most_common()},
            "own_code_by_module": {name: round(n / total, 4) for name, n in own.most_common()}}


def _spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--rate", str(RATE_HZ), "--format", "raw",
         "--nonblocking", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    spy.wait(timeout=60)


def run(users: int, groups: int, memberships: int, concurrency: int, work: Path) -> dict[str, Any]:
    emu_args = ["--users", str(users), "--groups", str(groups), "--memberships",
                str(memberships), "--seed", "1", "--latency-ms", str(LATENCY_MS),
                "--okta-rate-scale", "0"]
    with EmulatorProcess(emu_args, log_dir=work) as emu:
        emu.start()
        config = write_config(work, emu, extra_target=f"concurrency = {concurrency}")
        emu_cpu = emu.cpu_seconds()
        emu_spy = _spy(emu.pid, work / "emulator.txt")
        started = time.monotonic()
        with (work / "sync.err").open("wb") as err:
            engine = subprocess.Popen([oktasync_bin(), "sync", "--config", str(config)],
                                      stdout=subprocess.DEVNULL, stderr=err)
            engine_spy = _spy(engine.pid, work / "engine.txt")
            _, status, usage = os.wait4(engine.pid, 0)
        wall = time.monotonic() - started
        engine_spy.wait(timeout=60)  # ends with its target
        emu_cpu = emu.cpu_seconds() - emu_cpu
        _stop(emu_spy)
        emu.stop()
    return {
        "wall_s": round(wall, 1),
        "exit_code": status >> 8,
        "engine": {"cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
                   **categorise(work / "engine.txt")},
        "emulator": {"cpu_s": round(emu_cpu, 1), **categorise(work / "emulator.txt")},
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sample_profile")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--memberships", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="oktasync-sample-") as tmp:
        result = run(args.users, args.groups, args.memberships, args.concurrency, Path(tmp))
    result.update(command=f"python -m benchmarks.sample_profile {' '.join(argv)}".strip(),
                  date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  machine=machine_info(), settings=vars(args), rate_hz=RATE_HZ)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))
    return 0 if result["exit_code"] in (0, 1) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
