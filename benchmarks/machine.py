"""The machine a figure was measured on: a figure without its machine cannot be compared."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    """The first ``model name`` in /proc/cpuinfo (the processor name, not the core count)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_bytes() -> int:
    """MemTotal from /proc/meminfo; 0 when it cannot be read (not Linux)."""
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _nproc() -> int:
    """CPUs this process may run on, like nproc(1): affinity, not the host's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """What the results JSON records about the machine."""
    return {
        "nproc": _nproc(),
        "cpu_model": _cpu_model(),
        "ram_bytes": _ram_bytes(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def machine_summary(info: dict[str, Any]) -> str:
    """One short line for the README: "2 × AMD EPYC, 23.4 GiB, CPython 3.11.7"."""
    gib = info.get("ram_bytes", 0) / 2**30
    return (
        f"{info.get('nproc', '?')} × {info.get('cpu_model', '?')}, {gib:.1f} GiB, "
        f"{info.get('implementation', 'Python')} {info.get('python', '?')}"
    )
