"""Progress (issue 13): a live display on a terminal, a progress log line every 10 s
elsewhere, the same numbers from `oktasync serve`'s /progress, and the model's arithmetic."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from oktasync.progress import RunProgress
from tests.engine.harness import write_config
from tests.engine.service import free_port, service, with_serve
from tests.engine.test_sync_behaviour import APP, estate


def in_a_terminal(argv: list[str], timeout_s: float = 90) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as stdin, stdout and stderr; all it printed."""
    master, slave = pty.openpty()
    process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                               env={**os.environ, "COLUMNS": "160", "TERM": "xterm"})
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(master)
    code = process.wait(timeout=10)
    return code, b"".join(chunks).decode("utf-8", errors="replace")


def sync_in_terminal(path: Path, *extra: str) -> tuple[int, str]:
    return in_a_terminal([sys.executable, "-m", "oktasync", "sync", "--config", str(path),
                          *extra])


@pytest.mark.asyncio
async def test_a_run_in_a_terminal_shows_live_progress_then_the_summary(
    tmp_path: Path,
) -> None:
    async with estate(users=300, groups=8, latency_ms=5) as running:
        path = write_config(tmp_path, running, concurrency=4)
        code, shown = await asyncio.to_thread(sync_in_terminal, path)
    assert code == 0, shown[-3000:]
    summary_at = shown.index(f"app {APP}: exit 0 (done), full sync")
    live = shown[:summary_at]
    assert "\x1b[" in live  # redrawn in place: the cursor moves up over the last frame
    frames = [line for line in live.replace("\r", "\n").split("\n") if "users" in line
              and "jira" in line]
    assert len(frames) >= 3, live[-2000:]  # redrawn while the run went on
    assert any("ETA" in f and "/s" in f and "/300" in f for f in frames), frames[-5:]
    assert any("300/300" in f and "done" in f for f in frames), frames[-5:]
    assert "retries 0" in live and "429s 0" in live
    assert "users created" in shown[summary_at:]  # the summary, whole, after the display


@pytest.mark.asyncio
async def test_no_progress_on_a_terminal_draws_nothing(tmp_path: Path) -> None:
    async with estate(users=60) as running:
        path = write_config(tmp_path, running)
        code, shown = await asyncio.to_thread(sync_in_terminal, path, "--no-progress")
    assert code == 0, shown[-3000:]
    assert "ETA" not in shown and f"app {APP}: exit 0" in shown


@pytest.mark.asyncio
async def test_piped_the_progress_is_a_json_line_every_10_s(tmp_path: Path) -> None:
    """A run of about 12 s: stderr carries ``progress`` lines with the numbers."""
    async with estate(users=500, groups=8, latency_ms=20) as running:
        path = write_config(tmp_path, running, concurrency=1)
        started = time.monotonic()
        done = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "oktasync", "sync", "--config", str(path)],
            capture_output=True, text=True, timeout=110, check=False)
        took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    progress = [line for line in lines if line["event"] == "progress"]
    assert took > 11 and progress, (took, [line["event"] for line in lines])
    assert len(progress) <= took // 10 * 4  # every 10 s, one line per unfinished task
    users = [p for p in progress if p["phase"] == "users" and p["target"] == "jira"]
    assert users, progress
    line = users[0]
    assert line["planned"] == 500 and 0 < line["done"] < 500 and line["rate"] > 0
    assert line["eta_s"] > 0 and line["retries"] == 0 and line["rate_limited"] == 0
    assert line["app"] == APP and line["run_id"]


@pytest.mark.asyncio
async def test_serve_shows_each_apps_latest_run_at_progress(tmp_path: Path) -> None:
    async with estate(users=60) as running:
        port = free_port()
        path = with_serve(write_config(tmp_path, running), port)
        async with service(path, port) as svc:
            await svc.until(lambda h: h["apps"][APP]["last_success"] is not None)
            status, body = await svc.get("/progress")
            await svc.stop()
    assert status == 200
    run: dict[str, Any] = body[APP]
    assert run["ended"] and run["app"] == APP and run["run_id"]
    users = {t["target"]: t for t in run["tasks"] if t["phase"] == "users"}
    assert users["jira"]["done"] == users["jira"]["planned"] == 60
    assert users["jira"]["finished"] and set(run["servers"]) == {"okta", "jira", "confluence"}


def test_rate_and_eta_come_from_the_last_half_minute() -> None:
    now = [100.0]
    progress = RunProgress("corp", "r1", clock=lambda: now[0])
    task = progress.task("users", "jira", planned=1000)
    progress.enter("users")
    snap = progress.snapshot()["tasks"][0]
    assert snap["rate"] == 0 and snap["eta_s"] is None
    for _ in range(10):  # 10 items per second for 10 s, looked at every second
        now[0] += 1
        task.done += 10
        progress.snapshot()
    snap = progress.snapshot()["tasks"][0]
    assert snap["rate"] == pytest.approx(10) and snap["eta_s"] == pytest.approx(90)
    for _ in range(40):  # then 50 per second for 40 s: the rate forgets the slow start
        now[0] += 1
        task.done += 50
        progress.snapshot()
    snap = progress.snapshot()["tasks"][0]
    assert snap["done"] == 2100 and snap["rate"] == pytest.approx(50, rel=0.05)
    assert snap["eta_s"] == 0  # past what was planned: nothing left
    progress.end(task)
    progress.close()
    assert progress.phases == {"users": 50.0} and progress.snapshot()["tasks"][0]["finished"]
