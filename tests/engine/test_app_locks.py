"""One lock per app (issue 12): runs of one app exclude each other across processes, runs of
different apps go at once and share ``state.db``.

The CLI runs as real subprocesses (``python -m oktasync sync``) against the emulators served
by the test's event loop; a lock "held by another run" is a real ``flock`` taken through
``state.AppLock``, in this process, which the subprocess sees as any other holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from oktasync.models import Claim
from oktasync.ownership import Ownership
from oktasync.state import AppLock, app_lock
from oktasync_emulators.runner import EmulatorOptions, RunningEmulators, running_emulators
from tests.engine import oracle
from tests.engine.harness import read_requests, states, stats, write_config, write_requests

APP = "test-app"
SETTINGS = oracle.Settings(default_groups={"jira": ("jira-software-users",),
                                           "confluence": ("confluence-users",)})
A_GROUPS = ("Sales & Marketing", "Engineering", "Finance", "R&D/Platform")
B_GROUPS = ("Human Resources", "Customer Success", "Legal & Compliance", "AD Domain Users")
JIRA_DEFAULTS = {"jira": ("jira-software-users",)}
# app-b's usernames carry a prefix, so the two apps never want the same account: which run
# claims a shared username first would otherwise decide the end state
SETTINGS_A = oracle.Settings(include=A_GROUPS, default_groups=JIRA_DEFAULTS)
SETTINGS_B = oracle.Settings(include=B_GROUPS, default_groups=JIRA_DEFAULTS, replacement="b-$1")


@asynccontextmanager
async def estate(seed: int) -> AsyncIterator[RunningEmulators]:
    """A small estate whose answers take a few ms, so a run lasts long enough to overlap."""
    options = EmulatorOptions(users=80, groups=12, seed=seed, ports=(0, 0, 0),
                              okta_rate_scale=0, latency_ms=4)
    async with running_emulators(options) as running:
        yield running


async def start_sync(config: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "oktasync", "sync", "--config", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def until_held(lock: AppLock, process: asyncio.subprocess.Process) -> None:
    """Wait until ``process`` holds the lock (it is then past its refusals)."""
    for _ in range(3000):
        if lock.holder() is not None:
            return
        assert process.returncode is None, "the run ended before it was seen holding its lock"
        await asyncio.sleep(0.01)
    raise AssertionError("the run never took its lock")


async def assert_oracle_state(running: RunningEmulators, before: dict[str, object]) -> None:
    now = await states(running)
    for target in ("jira", "confluence"):
        expected = oracle.expected_accounts(now["okta"], oracle.target_accounts(before[target]),
                                            target, SETTINGS)
        problems = oracle.differences(expected, oracle.target_accounts(now[target]))
        assert problems == [], f"{target}: {problems[:5]}"


def two_apps_config(tmp: Path, a: RunningEmulators, b: RunningEmulators) -> Path:
    """Two apps (each its own Okta org) syncing into one Jira, one state directory."""
    def app(name: str, okta: RunningEmulators, groups: tuple[str, ...], replacement: str) -> str:
        include = ", ".join(f'"{g}"' for g in groups)  # no regex metacharacters in them
        return f"""
[[app]]
name = "{name}"
okta_url = "{okta.okta_url}"
okta_token = "{okta.options.okta_token}"
username_regex = "(.*)@.*"
username_replacement = "{replacement}"
targets = ["jira"]
group_include = [{include}]
"""
    text = (app("app-a", a, A_GROUPS, "$1") + app("app-b", b, B_GROUPS, "b-$1") + f"""
[target.jira]
kind = "jira-dc"
url = "{a.jira_url}"
token = "{a.options.jira_token}"
default_groups = ["jira-software-users"]
protected_users = ["admin"]

[state]
dir = "{tmp / 'state'}"
""")
    path = tmp / "two-apps.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.asyncio
async def test_two_apps_run_at_once_in_two_processes_and_both_finish(tmp_path: Path) -> None:
    async with estate(seed=7) as a, estate(seed=8) as b:
        config = two_apps_config(tmp_path, a, b)
        before = oracle.target_accounts((await states(a))["jira"])
        first, second = await start_sync(config, "--app", "app-a"), \
            await start_sync(config, "--app", "app-b")
        locks = [AppLock(tmp_path / "state", name) for name in ("app-a", "app-b")]
        overlapped = False
        while first.returncode is None or second.returncode is None:
            overlapped = overlapped or all(lock.holder() is not None for lock in locks)
            await asyncio.sleep(0.005)
        (code_a, _, err_a), (code_b, _, err_b) = await finish(first), await finish(second)
        assert (code_a, code_b) == (0, 0), (err_a, err_b)
        assert overlapped, "the two runs never held their locks at the same time"
        expected_a = oracle.expected_accounts((await states(a))["okta"], before, "jira",
                                              SETTINGS_A, owned=set())
        expected = oracle.expected_accounts((await states(b))["okta"], expected_a, "jira",
                                            SETTINGS_B, owned=set(),
                                            foreign=set(expected_a) - set(before))
        problems = oracle.differences(expected, oracle.target_accounts((await states(a))["jira"]))
        assert problems == [], problems[:5]
        ownership = Ownership(tmp_path / "state" / "state.db")
        try:
            assert ownership.count_owned("app-a", "jira") > 0
            assert ownership.count_owned("app-b", "jira") > 0
        finally:
            ownership.close()


@pytest.mark.asyncio
async def test_the_same_app_twice_at_once_is_refused_then_waits_with_wait(
    tmp_path: Path,
) -> None:
    async with estate(seed=11) as running:
        config = write_config(tmp_path, running, queue_size=16, concurrency=2)
        before = await states(running)
        first = await start_sync(config)
        lock = AppLock(tmp_path / "state", APP)
        await until_held(lock, first)
        refused = await start_sync(config)
        code, out, err = await finish(refused)
        assert first.returncode is None, "the first run was still going"
        assert code == 2, (out, err)
        assert f"app '{APP}' is locked by process {first.pid} (sync, started " in err, err
        assert "wait for it to finish, or run the other apps with --app" in err, err
        assert "Traceback" not in err
        waiting = await start_sync(config, "--wait", "60")
        code_first, _, err_first = await finish(first)
        assert waiting.returncode is None, "--wait ran before the holder finished"
        code_waited, out_waited, err_waited = await finish(waiting)
        assert code_first == 0, err_first
        assert code_waited == 0, err_waited
        assert "Traceback" not in err_waited and APP in out_waited  # its summary
        await assert_oracle_state(running, before)


@pytest.mark.asyncio
async def test_a_refused_run_writes_nothing_and_wait_gives_up_with_the_message(
    tmp_path: Path,
) -> None:
    async with estate(seed=11) as running:
        config = write_config(tmp_path, running)
        async with app_lock(tmp_path / "state", APP, by="serve"):
            code, _, err = await finish(await start_sync(config))
            assert code == 2 and "(serve, started " in err, err
            started = time.monotonic()
            code, _, err = await finish(await start_sync(config, "--wait", "0.6"))
            assert code == 2 and "--app" in err, err
            assert time.monotonic() - started >= 0.6  # it did wait
        after = await stats(running)
        for server in ("okta", "jira", "confluence"):
            assert read_requests(after[server]) + write_requests(after[server]) == 0, server
        app_dir = tmp_path / "state" / APP
        assert sorted(p.name for p in app_dir.iterdir()) == ["lock"]  # no index, no summary


@pytest.mark.asyncio
async def test_status_says_per_app_whether_a_run_holds_its_lock(tmp_path: Path) -> None:
    async with estate(seed=7) as a, estate(seed=8) as b:
        config = two_apps_config(tmp_path, a, b)
        async with app_lock(tmp_path / "state", "app-a", by="serve"):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "oktasync", "status", "--config", str(config),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            code, out, err = await finish(process)
    assert code == 0, err
    assert f"app-a: running (pid {os.getpid()}, since " in out and "run by serve)" in out, out
    assert "app-b: running" not in out and "app-b: nothing to resume" in out, out


# -- state.db, written by two processes at once ----------------------------------------------

def test_a_username_another_app_claimed_first_stays_its_own(tmp_path: Path) -> None:
    """Two connections are two processes to SQLite: the second app's claim of a username the
    first one owns changes nothing and is said back; its other claims land."""
    path = tmp_path / "state.db"
    first, second = Ownership(path), Ownership(path)
    try:
        assert first.claim("app-a", "jira", [("alice", "00u-a")]) == []
        lost = second.claim("app-b", "jira", [("alice", "00u-b"), ("bob", "00u-bob")])
        assert lost == ["alice"]
        assert first.claim_of("jira", "alice") == Claim("app-a", "00u-a")
        assert first.claim_of("jira", "bob") == Claim("app-b", "00u-bob")
        assert first.claim("app-a", "jira", [("alice2", "00u-a")]) == []  # a rename moves it
        assert first.claim_of("jira", "alice") is None
    finally:
        first.close()
        second.close()


def test_a_claim_waits_while_another_process_writes_state_db(tmp_path: Path) -> None:
    """The other app's run holds the write lock a moment (its checkpoint): a claim waits for
    it instead of failing with "database is locked"; the file is in WAL mode, so readers
    never wait at all."""
    path = tmp_path / "state.db"
    ownership = Ownership(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO owned_users VALUES ('jira', 'carol', 'app-a', '00u-c')")
    releaser = threading.Timer(1.5, other.execute, ("COMMIT",))
    try:
        assert ownership.claim_of("jira", "carol") is None  # read while the other writes
        releaser.start()
        started = time.monotonic()
        assert ownership.claim("app-b", "jira", [("dave", "00u-d")]) == []
        assert time.monotonic() - started >= 1.0
        assert ownership.claim_of("jira", "carol") is not None
        with contextlib.closing(sqlite3.connect(path)) as reader:
            assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        releaser.join()
        ownership.close()
        other.close()
