"""A run's report tells what the servers applied and what was found — once, resumed or not.

The counts of a run are the changes the servers applied: a create whose answer was lost and
that the retry found is a create; a write repeated after a kill -9 is one change. The findings
CSV and ``last-run.json`` hold every problem exactly once, whichever segment of a resumed run
found it. Judged against the emulators' own stats and states, and against an uninterrupted
run of an identical estate.
"""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from oktasync.engine import SyncOptions, run_sync
from oktasync.report import FINDINGS_HEADER
from oktasync_emulators.runner import EmulatorOptions, running_emulators
from tests.engine.harness import load, states, stats, write_config
from tests.engine.test_resume import (
    CONCURRENCY,
    QUEUE,
    finish,
    interrupted,
    options,
    sync,
)
from tests.engine.test_sync_behaviour import APP, TARGETS, assert_oracle, counts, estate, quiet

WRITE_COUNTS = ("users_created", "users_updated", "users_renamed", "users_activated",
                "users_deactivated", "groups_created", "memberships_added",
                "memberships_removed")
PROBLEM_KINDS = ("skipped", "conflict", "collision", "drift", "notice", "refused", "failed")


def memberships(state: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.lower(), g["name"].lower()) for g in state["groups"] for m in g["members"]}


def applied(stat: dict[str, Any], endpoint: str) -> int:
    return int(stat["by_endpoint"].get(endpoint, {}).get("writes_applied", 0))


@pytest.mark.asyncio
async def test_creates_whose_answer_was_lost_are_counted_once(tmp_path: Path) -> None:
    async with estate(users=120, seed=5, ambiguous_rate=0.08) as running:
        before = await states(running)
        config = load(write_config(tmp_path, running))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        after = await assert_oracle(running, before)
        served = await stats(running)
        for target in TARGETS:
            assert served[target]["by_endpoint"]
            assert served[target]["faults"]["lost_answer"] > 0, f"no answer lost on {target}"
        created = {"jira": applied(served["jira"], "POST /rest/api/2/user"),
                   "confluence": applied(served["confluence"], "POST /rest/api/admin/user")}
        for target in TARGETS:
            c = counts(result, target)
            assert c["users_created"] == created[target], (target, c)
            added = memberships(after[target]) - memberships(before[target])
            assert c["memberships_added"] == len(added), (target, c)


def findings(path: Path) -> tuple[list[str], list[tuple[str, ...]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return rows[0] if rows else [], [tuple(r) for r in rows[1:]]


def report_of(state_dir: Path) -> tuple[dict[str, Any], list[str], list[tuple[str, ...]]]:
    summary = json.loads((state_dir / APP / "last-run.json").read_text())
    header, rows = findings(Path(summary["findings_file"]))
    return summary, header, rows


async def uninterrupted(tmp: Path) -> tuple[dict[str, Any], list[tuple[str, ...]]]:
    """The report of one uninterrupted run of an identical estate."""
    tmp.mkdir(parents=True)
    async with running_emulators(options()) as running:
        config = write_config(tmp, running, queue_size=QUEUE, concurrency=CONCURRENCY)
        code, _, err = await finish(await sync(config))
        assert code in (0, 1), err
    summary, header, rows = report_of(tmp / "state")
    assert header == FINDINGS_HEADER
    return summary, rows


@pytest.mark.asyncio
@pytest.mark.parametrize("point", ["group phase", "middle of the users", "memberships"])
async def test_after_kill_9_and_resume_the_report_tells_the_whole_run_once(
    tmp_path: Path, point: str,
) -> None:
    expected, expected_rows = await uninterrupted(tmp_path / "baseline")
    assert expected_rows, "this directory has collisions and skips to report"
    async with running_emulators(EmulatorOptions(**{**options().__dict__})) as running:
        config = write_config(tmp_path, running, queue_size=QUEUE, concurrency=CONCURRENCY)
        code, _ = await interrupted(config, running, point)
        assert code == -signal.SIGKILL
        code, _, err = await finish(await sync(config, "--resume"))
        assert code == expected["exit_code"], err
    summary, header, rows = report_of(tmp_path / "state")
    assert header == FINDINGS_HEADER
    assert sorted(rows) == sorted(expected_rows), "the findings CSV lost or repeated rows"
    for target in TARGETS:
        got, want = summary["targets"][target]["counts"], expected["targets"][target]["counts"]
        for name in (*WRITE_COUNTS, *PROBLEM_KINDS):
            assert got[name] == want[name], (target, name, got[name], want[name])
        listed = summary["targets"][target]["problems"]
        assert len(listed) == len({json.dumps(p, sort_keys=True) for p in listed})
        total = sum(got[k] for k in PROBLEM_KINDS)
        assert total == sum(1 for r in rows if r[0] == target)


@pytest.mark.asyncio
async def test_resume_while_answers_are_lost_counts_what_the_servers_applied(
    tmp_path: Path,
) -> None:
    opts = EmulatorOptions(**{**options().__dict__, "ambiguous_rate": 0.05, "seed": 3})
    async with running_emulators(opts) as running:
        before = await states(running)
        config = write_config(tmp_path, running, queue_size=QUEUE, concurrency=CONCURRENCY)
        await interrupted(config, running, "middle of the users")
        code, _, err = await finish(await sync(config, "--resume"))
        assert code in (0, 1), err
        after = await states(running)
        served = await stats(running)
    summary, _, _ = report_of(tmp_path / "state")
    created = {"jira": applied(served["jira"], "POST /rest/api/2/user"),
               "confluence": applied(served["confluence"], "POST /rest/api/admin/user")}
    for target in TARGETS:
        c = summary["targets"][target]["counts"]
        assert c["users_created"] == created[target], (target, c["users_created"])
        added = memberships(after[target]) - memberships(before[target])
        assert c["memberships_added"] == len(added), (target, c["memberships_added"])
