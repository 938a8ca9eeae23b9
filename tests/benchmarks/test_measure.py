"""The benchmarks' process measurement: a child's peak RSS is the child's own."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.procs import run_measured

MB = 1024 * 1024


def test_a_childs_peak_rss_does_not_include_the_runners(tmp_path: Path) -> None:
    """Linux hands an exec'd child the peak RSS of the memory it was forked from; a runner
    that has grown (here by 300 MB) must not see its own size in a small child's figure."""
    ballast = bytearray(300 * MB)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page: resident
    measured = run_measured([sys.executable, "-c", "x = bytearray(40 * 1024 * 1024)"],
                            timeout_s=60, log_dir=tmp_path, label="small")
    assert measured.exit_code == 0
    assert 40 * MB <= measured.max_rss_bytes < 150 * MB, measured.max_rss_bytes / MB
    assert measured.cpu_s > 0 and measured.wall_s > 0
    del ballast


def test_exit_codes_and_signals_come_through(tmp_path: Path) -> None:
    code = run_measured([sys.executable, "-c", "raise SystemExit(3)"],
                        timeout_s=60, log_dir=tmp_path, label="three")
    killed = run_measured([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"],
                          timeout_s=60, log_dir=tmp_path, label="nine")
    assert (code.exit_code, killed.exit_code) == (3, -9)
    assert "Traceback" not in (tmp_path / "nine.err").read_text()  # the launcher ended cleanly
