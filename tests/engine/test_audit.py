"""Every run's record (issue 13): the JSON report, the audit CSV of every write attempted,
`[state] keep_runs`, `oktasync history` and `oktasync report`.

Judged against the emulators' own stats: with faults off, the report's counts and the audit's
rows are the writes the servers applied; with 503s and lost answers, the audit's attempts add
up to the write requests the servers received (that the faults were injected is asserted from
the same stats).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oktasync.audit import AUDIT_HEADER, AuditTrail
from oktasync.engine import SyncOptions, run_sync
from oktasync.models import Operation, OpKind, WriteResult, WriteStatus
from oktasync.report import COUNT_NAMES
from oktasync_emulators.runner import running_emulators
from tests.engine.harness import load, states, stats, status_count, write_config, write_requests
from tests.engine.test_resume import (
    CONCURRENCY,
    IN_FLIGHT_BOUND,
    QUEUE,
    finish,
    interrupted,
    sync,
)
from tests.engine.test_resume import options as resume_options
from tests.engine.test_sync_behaviour import APP, TARGETS, assert_oracle, estate, quiet

OPERATION_COUNT = {kind.value: name for kind, name in COUNT_NAMES.items()}


def audit_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == AUDIT_HEADER
    return [dict(zip(AUDIT_HEADER, r, strict=True)) for r in rows[1:]]


def run_report(state: Path, run_id: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((state / APP / "runs" / f"{run_id}.json").read_text())
    return report


def with_state(path: Path, setting: str) -> Path:
    """The harness's config with one more ``[state]`` setting."""
    path.write_text(path.read_text().replace("[state]\n", f"[state]\n{setting}\n", 1))
    return path


def applied_writes(stat: dict[str, Any]) -> int:
    return sum(int(v.get("writes_applied", 0)) for v in stat["by_endpoint"].values())


@pytest.mark.asyncio
async def test_without_faults_report_and_audit_are_the_writes_applied(tmp_path: Path) -> None:
    async with estate(users=120, seed=5) as running:
        before = await states(running)
        config = load(write_config(tmp_path, running))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        await assert_oracle(running, before)
        served = await stats(running)
    summary = result.summaries[APP]
    report = run_report(config.state_dir, summary["run_id"])
    assert report["exit_code"] == summary["exit_code"] == 0
    rows = audit_rows(Path(report["audit_file"]))
    assert {r["run_id"] for r in rows} == {summary["run_id"]}
    for target in TARGETS:
        mine = [r for r in rows if r["target"] == target]
        assert len(mine) == write_requests(served[target]) > 0, target
        landed = Counter(OPERATION_COUNT[r["operation"]] for r in mine
                         if r["outcome"] == "applied")
        counts = report["targets"][target]["counts"]
        assert {k: counts[k] for k in landed} == dict(landed), target
        assert sum(counts[k] for k in OPERATION_COUNT.values()) == sum(landed.values()) \
            == applied_writes(served[target]), target
        assert all(r["attempts"] == "1" and r["status"].startswith("2") for r in mine
                   if r["outcome"] == "applied"), target


@pytest.mark.asyncio
async def test_with_503s_and_lost_answers_the_attempts_are_the_write_requests(
    tmp_path: Path,
) -> None:
    async with estate(users=120, seed=11, fail_rate=0.10, ambiguous_rate=0.05) as running:
        before = await states(running)
        config = load(write_config(tmp_path, running))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        await assert_oracle(running, before)
        served = await stats(running)
    summary = result.summaries[APP]
    assert summary["exit_code"] in (0, 1), summary["notes"]
    rows = audit_rows(Path(run_report(config.state_dir, summary["run_id"])["audit_file"]))
    for target in TARGETS:
        assert served[target]["faults"]["lost_answer"] > 0, f"no answer lost on {target}"
        assert status_count(served[target], 503) > 0, f"no 503 on {target}"
        attempts = sum(int(r["attempts"]) for r in rows if r["target"] == target)
        assert attempts == write_requests(served[target]), target
        assert any(int(r["attempts"]) > 1 for r in rows if r["target"] == target), target


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oktasync", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.asyncio
async def test_history_lists_the_runs_in_order_and_report_shows_one(tmp_path: Path) -> None:
    async with estate(users=60, seed=3) as running:
        path = with_state(write_config(tmp_path, running), "keep_runs = 3")
        config = load(path)
        ids = []
        for options in (SyncOptions(dry_run=True), SyncOptions(), SyncOptions(),
                        SyncOptions(full=True), SyncOptions()):
            result = await run_sync(config, options, echo=quiet)
            assert result.exit_code == 0, result.summaries[APP]["notes"]
            ids.append(result.summaries[APP]["run_id"])
    assert ids == sorted(ids)
    shown = cli(path, "history")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert [line.split()[1] for line in lines[1:]] == ids[-3:]  # keep_runs = 3, oldest first
    assert [line.split()[2] for line in lines[1:]] == ["incremental", "full", "incremental"]
    kept = sorted(p.name for p in (config.state_dir / APP / "runs").iterdir())
    assert not any(i in name for i in ids[:2] for name in kept)
    assert not list((config.state_dir / APP).glob(f"findings-{ids[0]}.csv"))
    full = cli(path, "report", ids[3])
    assert full.returncode == 0, full.stderr
    assert f"app {APP}: exit 0 (done), full sync" in full.stdout
    assert "audit (every write):" not in full.stdout  # the targets were already in line
    as_json = json.loads(cli(path, "report", ids[3], "--json").stdout)
    assert as_json["run_id"] == ids[3] and as_json["kind"] == "full"
    listed = [json.loads(line) for line in cli(path, "history", "--json").stdout.splitlines()]
    assert [r["run_id"] for r in listed] == ids[-3:]
    missing = cli(path, "report", "20200101T000000.000000Z")
    assert missing.returncode == 2 and "oktasync history" in missing.stderr


@pytest.mark.asyncio
async def test_the_first_run_audit_is_in_the_report_and_audit_false_keeps_none(
    tmp_path: Path,
) -> None:
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    async with estate(users=40, seed=2) as running:
        path = write_config(tmp_path / "on", running)
        result = await run_sync(load(path), SyncOptions(), echo=quiet)
        report = run_report(load(path).state_dir, result.summaries[APP]["run_id"])
        assert Path(report["audit_file"]).stat().st_size > 0
    async with estate(users=40, seed=2) as running:
        path = with_state(write_config(tmp_path / "off", running), "audit = false")
        result = await run_sync(load(path), SyncOptions(), echo=quiet)
        summary = result.summaries[APP]
        assert summary["targets"]["jira"]["counts"]["users_created"] > 0
        assert "audit_file" not in run_report(load(path).state_dir, summary["run_id"])
        assert not list((load(path).state_dir / APP / "runs").glob("*.csv"))


def test_a_million_rows_stream_in_flat_memory(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / "audit.csv", "r1")
    op = Operation(OpKind.ADD_MEMBER, "jira", "=jdoe", "00u1", group="staff", before="",
                   after="")
    result = WriteResult(WriteStatus.APPLIED, attempts=1, http_status=201)
    for _ in range(1000):
        trail.row("jira", op, result)
    tracemalloc.start()
    try:
        for _ in range(1_000_000):
            trail.row("jira", op, result)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        trail.close()
    assert peak < 256 * 1024, f"peak {peak} bytes"
    with open(tmp_path / "audit.csv", encoding="utf-8") as handle:
        first = [next(handle), next(handle)]
        assert sum(1 for _ in handle) == 1_001_000 - 1  # rows after the first
    assert first[0].strip() == ",".join(AUDIT_HEADER)
    assert ",'=jdoe,00u1,,staff,applied,1,201," in first[1]  # a formula is never a formula


@settings(max_examples=300, deadline=None)
@given(username=st.text(max_size=30), before=st.text(max_size=30), after=st.text(max_size=30),
       detail=st.text(max_size=40), status=st.one_of(st.none(), st.integers(100, 599)))
def test_any_row_reads_back_as_written(username: str, before: str, after: str, detail: str,
                                       status: int | None) -> None:
    """The fast path (a row needing no quotes is formatted directly) and the csv module's path
    read back the same: every value whole, a would-be formula behind a ``'``."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audit.csv"
        trail = AuditTrail(path, "r1")
        op = Operation(OpKind.UPDATE_USER, "jira", username, "00u1", before=before, after=after)
        trail.row("jira", op, WriteResult(WriteStatus.FAILED, detail, attempts=2,
                                          http_status=status))
        trail.close()
        [row] = audit_rows(path)
    def cell(value: str) -> str:
        return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
    assert (row["username"], row["before"], row["after"], row["detail"]) == (
        cell(username), cell(before), cell(after or ""), cell(detail))
    assert row["status"] == ("" if status is None else str(status)) and row["attempts"] == "2"


@pytest.mark.asyncio
async def test_a_run_killed_and_resumed_keeps_one_audit_that_adds_up(tmp_path: Path) -> None:
    """kill -9 in the middle of the users, then --resume: one file, one header, the run's id
    on every row, and its attempts the write requests the servers received but for the writes
    the kill caught unaudited (in flight, or after the last checkpoint: redone, and audited
    again, by the resumed run)."""
    async with running_emulators(resume_options()) as running:
        before = await states(running)
        config = write_config(tmp_path, running, queue_size=QUEUE, concurrency=CONCURRENCY)
        await interrupted(config, running, "middle of the users")
        code, _, err = await finish(await sync(config, "--resume"))
        assert code in (0, 1), err
        await assert_oracle(running, before)
        served = await stats(running)
    summary = json.loads((tmp_path / "state" / APP / "last-run.json").read_text())
    assert summary["resumed"]
    path = Path(summary["audit_file"])
    assert path.read_text(encoding="utf-8").count("time,run_id,") == 1
    rows = audit_rows(path)
    assert {r["run_id"] for r in rows} == {summary["run_id"]}
    for target in TARGETS:
        attempts = sum(int(r["attempts"]) for r in rows if r["target"] == target)
        received = write_requests(served[target])
        assert received - IN_FLIGHT_BOUND - 64 <= attempts <= received, (target, attempts,
                                                                           received)
