"""The state directory under stress: a full disk, and a status asked while a run is going.

A full disk gives exit 2 and "no space left on the device holding <dir>", never a traceback;
the checkpoint is either usable or was never half-written, so freeing space and running again
(with ``--resume`` when the run had started) reaches the desired state. The disk is a small
tmpfs mounted for the test (CI runs as root; elsewhere the test is skipped, saying why).
``oktasync status`` during a live run says it is running, by whom and since when.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from oktasync_emulators.runner import EmulatorOptions, RunningEmulators, running_emulators
from tests.engine.harness import states, stats, write_config
from tests.engine.test_resume import assert_oracle_state, endpoint, finish, kill_when, sync

DISK = 16 * 1024 * 1024


@contextlib.contextmanager
def small_disk(where: Path, size: int = DISK) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted at ``where``."""
    where.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(where)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}); "
                    "CI runs as root and can")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill the disk until ``leave`` bytes are free; the filler file is returned."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return filler


@pytest_asyncio.fixture
async def estate() -> AsyncIterator[RunningEmulators]:
    options = EmulatorOptions(users=300, groups=20, seed=11, ports=(0, 0, 0),
                              okta_rate_scale=0, latency_ms=2)
    async with running_emulators(options) as running:
        yield running


def on_disk(config: Path, disk: Path) -> Path:
    state = disk / "state"
    config.write_text(config.read_text().replace(
        f'dir = "{config.parent / "state"}"', f'dir = "{state}"'))
    return state


def assert_clean_message(err: str, state: Path) -> None:
    assert "Traceback" not in err and "sqlite3" not in err, err
    assert f"no space left on the device holding {state}" in err, err


@pytest.mark.asyncio
@pytest.mark.parametrize(("leave", "stops"), [
    (2_000, "before anything"),  # not even the lock or the ownership records
    (300_000, "starting the checkpoint"),
    (2_000_000, "in the middle of the run"),
])
async def test_a_full_disk_stops_cleanly_and_the_run_completes_once_space_is_freed(
    estate: RunningEmulators, tmp_path: Path, leave: int, stops: str,
) -> None:
    before = await states(estate)
    with small_disk(tmp_path / "disk") as disk:
        config = write_config(tmp_path, estate, queue_size=16, concurrency=4)
        state = on_disk(config, disk)
        filler = fill(disk, leave)
        code, out, err = await finish(await sync(config))
        assert code == 2, (code, err)
        assert_clean_message(err + out, state)
        okta_reads = (await stats(estate))["okta"]["reads"]
        checkpoint = state / "test-app" / "run.db"
        if stops == "in the middle of the run":
            assert okta_reads > 0 and checkpoint.exists()
            assert "resumable: oktasync sync --resume" in out
        else:  # nothing read; no checkpoint left half-written
            assert okta_reads == 0 and not checkpoint.exists()
            assert not (state / "test-app" / "run.db.new").exists()
        filler.unlink()
        code, _, err = await finish(await sync(config))
        if stops == "in the middle of the run":
            assert code == 2 and "--resume" in err and "unreadable" not in err, err
            code, _, err = await finish(await sync(config, "--resume"))
        assert code in (0, 1), err
        await assert_oracle_state(estate, before)


@pytest.mark.asyncio
async def test_status_during_a_live_run_says_it_is_running(
    estate: RunningEmulators, tmp_path: Path,
) -> None:
    config = write_config(tmp_path, estate, queue_size=16, concurrency=2)
    process = await sync(config)
    try:
        await kill_when(process, estate, lambda s: endpoint(s, "POST /rest/api/2/user") >= 20,
                        sig=0)
        status = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "oktasync", "status", "--config", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        code, out, err = await finish(status)
        assert process.returncode is None, "the run was still going"
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
    assert code == 0, err
    assert f"running (pid {process.pid}, since " in out, out
    assert "resumable" not in out and "--resume" not in out, out
