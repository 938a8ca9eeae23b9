"""Resumable full syncs: kill -9 at several points, resume, and count what was repeated.

The engine runs as a real subprocess (`python -m oktasync sync`) so it can be killed with
SIGKILL; the emulators run in the test's event loop and count every request. Each resume must
reach the oracle's state, and both runs together must stay within the uninterrupted run's
requests plus the in-flight bound — a "resume" that silently starts over fails this.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from oktasync_emulators.runner import EmulatorOptions, RunningEmulators, running_emulators
from tests.engine import oracle
from tests.engine.harness import get_json, read_requests, states, write_config, write_requests

SETTINGS = oracle.Settings(default_groups={"jira": ("jira-software-users",),
                                           "confluence": ("confluence-users",)})
QUEUE, CONCURRENCY = 16, 4
# A user's work is at most: a lookup, a create, and its memberships (generator: <= ~8 groups).
PER_USER = 12
IN_FLIGHT_BOUND = (QUEUE + CONCURRENCY) * PER_USER  # per target, per interruption


def options() -> EmulatorOptions:
    return EmulatorOptions(users=300, groups=20, seed=11, ports=(0, 0, 0), okta_rate_scale=0,
                           latency_ms=4)


@pytest_asyncio.fixture
async def estate() -> AsyncIterator[RunningEmulators]:
    async with running_emulators(options()) as running:
        yield running


async def sync(config: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "oktasync", "sync", "--config", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def counts(running: RunningEmulators) -> dict[str, dict[str, int]]:
    result = {}
    for name, url in (("okta", running.okta_url), ("jira", running.jira_url),
                      ("confluence", running.confluence_url)):
        stat = await get_json(url + "/_emulator/stats")
        result[name] = {"reads": read_requests(stat), "writes": write_requests(stat),
                        **{k: v["requests"] for k, v in stat["by_endpoint"].items()}}
    return result


async def kill_when(process: asyncio.subprocess.Process, running: RunningEmulators,
                    reached: Callable[[dict[str, Any]], bool], sig: int = signal.SIGKILL) -> None:
    """Poll the Jira emulator's stats and send ``sig`` once ``reached`` says so."""
    for _ in range(3000):
        stat = await get_json(running.jira_url + "/_emulator/stats")
        if reached(stat):
            process.send_signal(sig)
            return
        if process.returncode is not None:
            break
        await asyncio.sleep(0.01)
    raise AssertionError("the run ended before the kill point was reached")


def endpoint(stat: dict[str, Any], key: str) -> int:
    return int(stat["by_endpoint"].get(key, {}).get("requests", 0))


async def assert_oracle_state(running: RunningEmulators, before: dict[str, Any]) -> None:
    now = await states(running)
    for target in ("jira", "confluence"):
        expected = oracle.expected_accounts(now["okta"], oracle.target_accounts(before[target]),
                                            target, SETTINGS)
        problems = oracle.differences(expected, oracle.target_accounts(now[target]))
        assert problems == [], f"{target}: {problems[:5]}"


_BASELINE: dict[str, dict[str, int]] = {}


async def baseline(tmp: Path) -> dict[str, dict[str, int]]:
    """The requests of one uninterrupted run on an identical, fresh estate (measured once)."""
    if not _BASELINE:
        tmp.mkdir(parents=True, exist_ok=True)
        async with running_emulators(options()) as running:
            code, _, err = await finish(await sync(write_config(
                tmp, running, queue_size=QUEUE, concurrency=CONCURRENCY)))
            assert code in (0, 1), err
            _BASELINE.update(await counts(running))
    return _BASELINE


KILL_POINTS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "group phase": lambda s: endpoint(s, "POST /rest/api/2/group") >= 4,
    "middle of the users": lambda s: endpoint(s, "POST /rest/api/2/user") >= 100,
    "memberships": lambda s: endpoint(s, "POST /rest/api/2/group/user") >= 500,
}


async def interrupted(config: Path, running: RunningEmulators, point: str,
                      sig: int = signal.SIGKILL) -> tuple[int, str]:
    """Start a sync, stop it with ``sig`` at ``point``: its exit code and stderr."""
    process = await sync(config)
    await kill_when(process, running, KILL_POINTS[point], sig)
    code, _, err = await finish(process)
    return code, err


@pytest.mark.asyncio
@pytest.mark.parametrize("point", list(KILL_POINTS))
async def test_kill_9_then_resume_reaches_the_desired_state_repeating_little(
    estate: RunningEmulators, tmp_path: Path, point: str,
) -> None:
    expected = await baseline(tmp_path / "baseline")
    before = await states(estate)
    config = write_config(tmp_path, estate, queue_size=QUEUE, concurrency=CONCURRENCY)
    code, _ = await interrupted(config, estate, point)
    assert code == -signal.SIGKILL
    checkpoint = tmp_path / "state" / "test-app" / "run.db"
    assert checkpoint.exists(), "a killed run leaves its checkpoint"

    code, _, err = await finish(await sync(config))
    assert code == 2 and "--resume" in err and "--restart" in err, err

    code, _, err = await finish(await sync(config, "--resume"))
    assert code in (0, 1), err
    assert "Traceback" not in err
    assert not checkpoint.exists(), "a finished run leaves no resumable checkpoint"
    await assert_oracle_state(estate, before)

    total = await counts(estate)
    for target in ("jira", "confluence"):
        repeated = total[target]["writes"] - expected[target]["writes"]
        print(f"{point}: {target} repeated {repeated} writes of {expected[target]['writes']}, "
              f"{total[target]['reads'] - expected[target]['reads']} reads")
        assert repeated <= IN_FLIGHT_BOUND, f"{target}: {repeated} writes repeated ({point})"
        reread = total[target]["reads"] - expected[target]["reads"]
        assert reread <= IN_FLIGHT_BOUND + 50, f"{target}: {reread} reads repeated ({point})"
    okta_users_pages = "GET /api/v1/users"
    assert total["okta"][okta_users_pages] <= expected["okta"][okta_users_pages] + 1, \
        "the resume continued the Okta user listing from its cursor, not from the start"


def checkpointed_report(checkpoint: Path, target: str) -> tuple[dict[str, int], set[Any]]:
    """The landed writes (per kind) and the problems a killed run's checkpoint holds."""
    db = sqlite3.connect(checkpoint)
    try:
        landed = dict(db.execute("SELECT kind, COUNT(*) FROM landed WHERE target = ? "
                                 "GROUP BY kind", (target,)).fetchall())
        problems = set(db.execute("SELECT kind, username, okta_id FROM problems "
                                  "WHERE target = ?", (target,)).fetchall())
    finally:
        db.close()
    return landed, problems


@pytest.mark.asyncio
async def test_a_resumed_run_reports_the_whole_run(
    estate: RunningEmulators, tmp_path: Path,
) -> None:
    """Counts and problems from before the kill reach the resumed run's report."""
    config = write_config(tmp_path, estate, queue_size=QUEUE, concurrency=CONCURRENCY)
    await interrupted(config, estate, "memberships")
    checkpoint = tmp_path / "state" / "test-app" / "run.db"
    landed, saved_problems = checkpointed_report(checkpoint, "jira")
    assert landed["add_member"] > 0
    assert saved_problems, "this directory has collisions; some were found before the kill"

    code, _, err = await finish(await sync(config, "--resume"))
    assert code in (0, 1), err
    report = json.loads((tmp_path / "state" / "test-app" / "last-run.json").read_text())
    jira = report["targets"]["jira"]
    assert jira["counts"]["memberships_added"] >= landed["add_member"]
    assert jira["counts"]["users_created"] >= landed["create_user"]
    listed = {(p["kind"], p["username"], p["okta_id"] or "") for p in jira["problems"]}
    assert saved_problems <= listed


@pytest.mark.asyncio
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_sigint_and_sigterm_stop_cleanly_and_save_the_checkpoint(
    estate: RunningEmulators, tmp_path: Path, sig: int, code: int,
) -> None:
    before = await states(estate)
    config = write_config(tmp_path, estate, queue_size=QUEUE, concurrency=CONCURRENCY)
    exit_code, err = await interrupted(config, estate, "middle of the users", sig)
    assert exit_code == code, err
    assert "Traceback" not in err
    assert (tmp_path / "state" / "test-app" / "run.db").exists()
    last = (tmp_path / "state" / "test-app" / "last-run.json").read_text()
    assert f'"exit_code": {code}' in last and "interrupted" in last

    status = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "oktasync", "status", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    status_code, status_out, _ = await finish(status)
    assert status_code == 0 and "resumable" in status_out and "users done" in status_out

    exit_code, _, err = await finish(await sync(config, "--resume"))
    assert exit_code in (0, 1), err
    await assert_oracle_state(estate, before)


@pytest.mark.asyncio
async def test_resume_with_nothing_to_resume_exits_2_and_writes_nothing(
    estate: RunningEmulators, tmp_path: Path,
) -> None:
    config = write_config(tmp_path, estate)
    code, _, err = await finish(await sync(config, "--resume"))
    assert code == 2 and "nothing to resume" in err
    stats = await counts(estate)
    assert stats["okta"]["reads"] == 0 and stats["jira"]["writes"] == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
async def test_a_damaged_checkpoint_gives_a_clear_error_and_restart_recovers(
    estate: RunningEmulators, tmp_path: Path, damage: str,
) -> None:
    config = write_config(tmp_path, estate, queue_size=QUEUE, concurrency=CONCURRENCY)
    await interrupted(config, estate, "middle of the users")
    checkpoint = tmp_path / "state" / "test-app" / "run.db"
    for suffix in ("-wal", "-shm"):
        Path(str(checkpoint) + suffix).unlink(missing_ok=True)
    data = checkpoint.read_bytes()
    checkpoint.write_bytes({"garbage": b"not a checkpoint at all" * 100,
                            "truncated": data[: len(data) // 3], "empty": b""}[damage])
    code, _, err = await finish(await sync(config, "--resume"))
    assert code == 2, err
    assert str(checkpoint) in err and "--restart" in err and "Traceback" not in err
    code, _, err = await finish(await sync(config, "--restart"))
    assert code in (0, 1), err


@pytest.mark.asyncio
async def test_resuming_under_different_settings_is_refused(
    estate: RunningEmulators, tmp_path: Path,
) -> None:
    config = write_config(tmp_path, estate, queue_size=QUEUE, concurrency=CONCURRENCY)
    await interrupted(config, estate, "middle of the users")
    config.write_text(config.read_text().replace('username_regex = "(.*)@.*"',
                                                 'username_regex = "(.*)@example.com"'))
    code, _, err = await finish(await sync(config, "--resume"))
    assert code == 2 and "different settings" in err and "Traceback" not in err


@pytest.mark.asyncio
async def test_an_unwritable_state_directory_stops_before_any_request(
    estate: RunningEmulators, tmp_path: Path,
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the state directory should be")
    config = write_config(tmp_path, estate)
    config.write_text(config.read_text().replace(f'dir = "{tmp_path / "state"}"',
                                                 f'dir = "{blocker / "state"}"'))
    code, _, err = await finish(await sync(config))
    assert code == 2 and "state directory" in err and "Traceback" not in err
    stats = await counts(estate)
    assert stats["okta"]["reads"] == 0


@contextlib.contextmanager
def holding_lock(lock: Path, content: str) -> Iterator[None]:
    """Hold a lock file as a running sync does (an flock on the file)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, content.encode())
        yield
    finally:
        os.close(fd)


def app_lock(state: Path) -> Path:
    """The test app's lock: one per app, in its directory of the state directory."""
    return state / "test-app" / "lock"


@pytest.mark.asyncio
async def test_a_live_lock_holder_is_named_and_a_dead_one_taken_over(
    estate: RunningEmulators, tmp_path: Path,
) -> None:
    config = write_config(tmp_path, estate)
    state = tmp_path / "state"
    holder = f'{{"pid": {os.getpid()}, "started": "earlier", "by": "sync"}}'
    with holding_lock(app_lock(state), holder):
        code, _, err = await finish(await sync(config))
    assert code == 2 and str(os.getpid()) in err and "earlier" in err, err
    assert "'test-app'" in err and "--app" in err and "Traceback" not in err, err
    assert (await counts(estate))["okta"]["reads"] == 0  # refused before any request
    app_lock(state).write_text('{"pid": 999999999, "started": "long ago"}')  # its process died
    code, _, err = await finish(await sync(config))
    assert code in (0, 1), err


@pytest.mark.asyncio
async def test_a_lock_is_never_taken_from_a_holder_still_writing_its_name(
    estate: RunningEmulators, tmp_path: Path,
) -> None:
    """Between taking the lock and writing its pid, a holder's lock file is empty: that must
    not read as a stale lock (two runs of one app would follow)."""
    config = write_config(tmp_path, estate)
    state = tmp_path / "state"
    with holding_lock(app_lock(state), ""):
        code, _, err = await finish(await sync(config))
    assert code == 2 and "locked by another process" in err and "Traceback" not in err


@pytest.mark.asyncio
async def test_a_lock_file_left_by_a_crash_is_free_even_if_its_pid_was_reused(
    estate: RunningEmulators, tmp_path: Path,
) -> None:
    """After kill -9 the file stays; its pid may belong to another live process by now."""
    config = write_config(tmp_path, estate)
    state = tmp_path / "state"
    app_lock(state).parent.mkdir(parents=True)
    app_lock(state).write_text(f'{{"pid": {os.getppid()}, "started": "a crashed run"}}')
    code, _, err = await finish(await sync(config))
    assert code in (0, 1), err


@pytest.mark.asyncio
async def test_the_old_state_directory_lock_no_longer_stops_a_run(
    estate: RunningEmulators, tmp_path: Path,
) -> None:
    """Versions before one lock per app flocked ``<state dir>/lock``; that file is left alone
    now, held or not: only the app's own lock decides."""
    config = write_config(tmp_path, estate)
    state = tmp_path / "state"
    with holding_lock(state / "lock", f'{{"pid": {os.getpid()}, "started": "old"}}'):
        code, _, err = await finish(await sync(config))
    assert code in (0, 1), err
