"""Incremental syncs (issue 11): once a complete sync exists, `oktasync sync` reads only what
changed in Okta since, plans against the state store and writes only the differences.

Judged three ways, none of them the engine's planner: the oracle (the semantics page) on the
emulators' state; the emulators' request counts (what was read and written); and a full sync
run afterwards, which must find nothing left to write.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from oktasync.engine import RunResult, SyncOptions, run_sync
from oktasync.okta_source import OktaSource
from oktasync_emulators.runner import RunningEmulators
from tests.engine.harness import (
    load,
    read_requests,
    states,
    stats,
    write_config,
    write_requests,
)
from tests.engine.test_resume import endpoint, finish, kill_when, sync
from tests.engine.test_sync_behaviour import (
    APP,
    TARGETS,
    assert_oracle,
    counts,
    estate,
    groups_of,
    ordinary_groups,
    problems,
    quiet,
    synced,
    username,
)


async def requests(running: RunningEmulators) -> dict[str, tuple[int, int]]:
    """(reads, writes) each server has answered so far."""
    found = await stats(running)
    return {name: (read_requests(s), write_requests(s)) for name, s in found.items()}


def since(before: dict[str, tuple[int, int]],
          after: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    return {name: (after[name][0] - before[name][0], after[name][1] - before[name][1])
            for name in after}


def landed(result: RunResult) -> int:
    """Writes the run counts as landed, every target."""
    return sum(sum(v for k, v in counts(result, t).items()
                   if k.startswith(("users_", "memberships_", "groups_"))) for t in TARGETS)


async def complete_sync(path: Path) -> RunResult:
    result = await run_sync(load(path), SyncOptions(), echo=quiet)
    assert result.exit_code == 0, result.summaries[APP]["notes"]
    assert result.summaries[APP]["kind"] == "full"
    return result


@pytest.mark.asyncio
async def test_nothing_changed_costs_three_okta_requests_and_no_target_request(
    tmp_path: Path,
) -> None:
    async with estate(users=80) as running:
        path = write_config(tmp_path, running)
        await complete_sync(path)
        before = await requests(running)
        result = await run_sync(load(path), SyncOptions(), echo=quiet)
        spent = since(before, await requests(running))
        summary = result.summaries[APP]
        assert result.exit_code == 0 and summary["kind"] == "incremental", summary["notes"]
        assert spent["okta"][0] <= 3 and spent["okta"][1] == 0, spent
        assert spent["jira"] == spent["confluence"] == (0, 0), spent
        assert summary["users_changed"] == 0


@pytest.mark.asyncio
async def test_one_incremental_sync_makes_exactly_the_writes_the_changes_need(
    tmp_path: Path,
) -> None:
    async with estate(users=150, groups=10) as running:
        okta = running.okta.directory
        path = write_config(tmp_path, running)
        await complete_sync(path)
        now = await states(running)
        people, scope = synced(now["okta"], now), ordinary_groups(now["okta"])
        edited, suspended, deprovisioned, deleted = people[0:4]
        okta.update_profile(edited["id"], {"displayName": "Edited Person"})
        okta.set_status(suspended["id"], "SUSPENDED")
        okta.set_status(deprovisioned["id"], "DEPROVISIONED")
        okta.delete_user(deleted["id"])  # deactivated ...
        okta.delete_user(deleted["id"])  # ... then deleted: in no listing any more
        leaver = next(u for u in people[4:] if groups_of(now["okta"], u["id"]) & scope.keys())
        okta.remove_membership(sorted(groups_of(now["okta"], leaver["id"]) & scope.keys())[0],
                               leaver["id"])
        joiner = next(u for u in people[4:] if u is not leaver
                      and scope.keys() - groups_of(now["okta"], u["id"]))
        okta.add_membership(sorted(scope.keys() - groups_of(now["okta"], joiner["id"]))[0],
                            joiner["id"])
        mover = next(u for u in people[4:] if u not in (leaver, joiner))
        okta.update_profile(mover["id"], {"login": "moved.person@example.com"})
        newcomer = okta.add_user({"login": "new.person@example.com",
                                  "email": "new.person@example.com",
                                  "firstName": "New", "lastName": "Person"})
        okta.add_membership(sorted(scope)[0], newcomer.id)
        worker = next(u for u in people[4:] if u not in (leaver, joiner, mover))
        okta.update_profile(worker["id"], {"department": "Somewhere Else"})

        before = await requests(running)
        result = await run_sync(load(path), SyncOptions(), echo=quiet)
        spent = since(before, await requests(running))
        summary = result.summaries[APP]
        assert result.exit_code == 0 and summary["kind"] == "incremental", summary["notes"]
        moved = {mover["id"]: username(mover)}
        await assert_oracle(running, now, synced_as={"jira": moved, "confluence": moved},
                            deleted={username(deleted)})
        for target in TARGETS:
            c = counts(result, target)
            assert c["users_deactivated"] == 3, (target, c)
            assert c["users_created"] == 1, (target, c)
            assert c["memberships_removed"] == 1, (target, c)
            assert c["failed"] == c["refused"] == 0, (target, c)
        assert counts(result, "jira")["users_renamed"] == 1
        # every write sent was needed (none repeated, none wasted) ...
        assert spent["jira"][1] + spent["confluence"][1] == landed(result), spent
        # ... no target was read to plan them (but for the one lookup a full sync makes too:
        # Confluence, which lists active accounts only, is asked who has the moved login's new
        # name), and Okta was read for the changes only
        assert spent["jira"][0] == 0 and spent["confluence"][0] <= 1, spent
        assert spent["okta"][0] <= 3 + 2 * 10, spent
        # ... and they were all that was needed: a full sync now finds nothing to write
        full = await run_sync(load(path), SyncOptions(full=True), echo=quiet)
        assert full.exit_code == 0 and full.summaries[APP]["kind"] == "full"
        assert landed(full) == 0, [counts(full, t) for t in TARGETS]


@pytest.mark.asyncio
async def test_a_change_made_while_an_incremental_sync_reads_is_synced_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with estate(users=60) as running:
        okta = running.okta.directory
        path = write_config(tmp_path, running)
        await complete_sync(path)
        now = await states(running)
        late, early = synced(now["okta"], now)[0:2]
        okta.set_status(early["id"], "SUSPENDED")
        reads_log = OktaSource.log_pages

        async def log_then_change(self: OktaSource, position: str) -> Any:
            async for page in reads_log(self, position):
                yield page
            if okta.user(late["id"]).status == "ACTIVE":  # type: ignore[union-attr]
                okta.set_status(late["id"], "SUSPENDED")  # after this run read the users

        monkeypatch.setattr(OktaSource, "log_pages", log_then_change)
        first = await run_sync(load(path), SyncOptions(), echo=quiet)
        assert first.exit_code == 0 and counts(first, "jira")["users_deactivated"] == 1
        monkeypatch.undo()
        second = await run_sync(load(path), SyncOptions(), echo=quiet)
        assert second.summaries[APP]["kind"] == "incremental"
        assert counts(second, "jira")["users_deactivated"] == 1
        await assert_oracle(running, now)


@pytest.mark.asyncio
async def test_more_changes_than_the_threshold_run_a_full_sync_and_say_why(
    tmp_path: Path,
) -> None:
    async with estate(users=60) as running:
        okta = running.okta.directory
        path = write_config(tmp_path, running, extra_app="full_sync_threshold = 3")
        await complete_sync(path)
        now = await states(running)
        for user in synced(now["okta"], now)[0:5]:
            okta.update_profile(user["id"], {"displayName": "Someone Else"})
        result = await run_sync(load(path), SyncOptions(), echo=quiet)
        summary = result.summaries[APP]
        assert result.exit_code == 0 and summary["kind"] == "full", summary
        assert any("full_sync_threshold" in n for n in summary["notes"]), summary["notes"]
        assert counts(result, "jira")["users_updated"] == 5
        await assert_oracle(running, now)


def set_meta(state: Path, **values: Any) -> None:
    db = sqlite3.connect(state / APP / "mirror.db")
    try:
        with db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                           [(k, json.dumps(v)) for k, v in values.items()])
    finally:
        db.close()


@pytest.mark.asyncio
async def test_a_system_log_position_okta_refuses_or_forgot_runs_a_full_sync(
    tmp_path: Path,
) -> None:
    async with estate(users=40) as running:
        path = write_config(tmp_path, running)
        await complete_sync(path)
        set_meta(tmp_path / "state",
                 log_next=running.okta_url + "/api/v1/logs?after=not-a-cursor&limit=10")
        refused = await run_sync(load(path), SyncOptions(), echo=quiet)
        summary = refused.summaries[APP]
        assert refused.exit_code == 0 and summary["kind"] == "full", summary
        assert any("System Log" in n for n in summary["notes"]), summary["notes"]
        set_meta(tmp_path / "state", okta_time="2020-01-01T00:00:00.000Z")
        old = await run_sync(load(path), SyncOptions(), echo=quiet)
        assert old.summaries[APP]["kind"] == "full"
        assert any("90 days" in n for n in old.summaries[APP]["notes"])
        again = await run_sync(load(path), SyncOptions(), echo=quiet)
        assert again.summaries[APP]["kind"] == "incremental"


@pytest.mark.asyncio
@pytest.mark.parametrize("damage", ["garbage", "other version"])
async def test_a_damaged_state_store_is_named_with_the_way_out_and_nothing_is_written(
    tmp_path: Path, damage: str,
) -> None:
    async with estate(users=40) as running:
        path = write_config(tmp_path, running)
        await complete_sync(path)
        mirror = tmp_path / "state" / APP / "mirror.db"
        if damage == "garbage":
            mirror.write_bytes(b"this is not a database" * 100)
        else:
            set_meta(tmp_path / "state", schema_version=1)
        okta = running.okta.directory
        now = await states(running)
        okta.set_status(synced(now["okta"], now)[0]["id"], "SUSPENDED")
        before = await requests(running)
        refused = await run_sync(load(path), SyncOptions(), echo=quiet)
        notes = refused.summaries[APP]["notes"]
        assert refused.exit_code == 2, notes
        assert str(mirror) in notes[0] and "--full" in notes[0], notes
        assert since(before, await requests(running)) == {
            "okta": (0, 0), "jira": (0, 0), "confluence": (0, 0)}
        rebuilt = await run_sync(load(path), SyncOptions(full=True), echo=quiet)
        assert rebuilt.exit_code == 0 and counts(rebuilt, "jira")["users_deactivated"] == 1
        after = await run_sync(load(path), SyncOptions(), echo=quiet)
        assert after.summaries[APP]["kind"] == "incremental" and after.exit_code == 0


@pytest.mark.asyncio
async def test_changed_settings_run_a_full_sync_and_a_dry_run_leaves_the_store_alone(
    tmp_path: Path,
) -> None:
    async with estate(users=40) as running:
        path = write_config(tmp_path, running)
        await complete_sync(path)
        okta = running.okta.directory
        now = await states(running)
        okta.set_status(synced(now["okta"], now)[0]["id"], "SUSPENDED")
        dry = await run_sync(load(path), SyncOptions(dry_run=True), echo=quiet)
        assert dry.summaries[APP]["kind"] == "incremental"
        assert counts(dry, "jira")["users_deactivated"] == 1  # planned, not written
        real = await run_sync(load(path), SyncOptions(), echo=quiet)
        assert counts(real, "jira")["users_deactivated"] == 1, "the dry run changed nothing"
        other = write_config(tmp_path, running, extra_app='group_exclude = ["nothing-.*"]')
        changed = await run_sync(load(other), SyncOptions(), echo=quiet)
        summary = changed.summaries[APP]
        assert summary["kind"] == "full" and "settings changed" in summary["full_because"]


@pytest.mark.asyncio
async def test_kill_9_during_an_incremental_sync_then_the_next_run_reaches_the_state(
    tmp_path: Path,
) -> None:
    async with estate(users=200, latency_ms=4) as running:
        okta = running.okta.directory
        path = write_config(tmp_path, running, extra_app='full_sync_threshold = "90%"',
                            concurrency=4)
        await complete_sync(path)
        now = await states(running)
        group = sorted(ordinary_groups(now["okta"]))[0]
        for i in range(120):
            user = okta.add_user({"login": f"hire{i}@example.com", "email": f"hire{i}@example.com",
                                  "firstName": "New", "lastName": f"Hire {i}"})
            okta.add_membership(group, user.id)
        for user in synced(now["okta"], now)[0:10]:
            okta.set_status(user["id"], "SUSPENDED")
        created = endpoint((await stats(running))["jira"], "POST /rest/api/2/user")
        process = await sync(path)
        await kill_when(process, running,
                        lambda s: endpoint(s, "POST /rest/api/2/user") >= created + 40)
        code, _, _ = await finish(process)
        assert code == -signal.SIGKILL
        again = await run_sync(load(path), SyncOptions(), echo=quiet)
        assert again.exit_code == 0, again.summaries[APP]["notes"]
        assert again.summaries[APP]["kind"] == "incremental"
        await assert_oracle(running, now)
        full = await run_sync(load(path), SyncOptions(full=True), echo=quiet)
        assert landed(full) == 0, [counts(full, t) for t in TARGETS]


@pytest.mark.asyncio
async def test_groups_created_renamed_and_deleted_in_okta_reach_the_targets_incrementally(
    tmp_path: Path,
) -> None:
    async with estate(users=120, groups=10) as running:
        okta = running.okta.directory
        # a renamed group's members all join the group's new name: many users at this size
        path = write_config(tmp_path, running, extra_app='full_sync_threshold = "90%"')
        await complete_sync(path)
        now = await states(running)
        people, scope = synced(now["okta"], now), ordinary_groups(now["okta"])
        new = okta.add_group("Brand New Team")
        for user in people[:3]:
            okta.add_membership(new.id, user["id"])
        renamed, deleted = [gid for gid in sorted(scope) if now["okta"]["memberships"][gid]][:2]
        okta.rename_group(renamed, "Renamed Team")
        okta.delete_group(deleted)

        before = await requests(running)
        result = await run_sync(load(path), SyncOptions(), echo=quiet)
        spent = since(before, await requests(running))
        assert result.exit_code == 0 and result.summaries[APP]["kind"] == "incremental"
        after = await assert_oracle(running, now)
        for target in TARGETS:
            names = {g["name"] for g in after[target]["groups"]}
            assert {"Brand New Team", "Renamed Team", scope[renamed], scope[deleted]} <= names
            said = " ".join(p["reason"] for p in problems(result, target, "notice"))
            assert "Renamed Team" in said and "deleted in Okta" in said, said
        assert spent["jira"][0] == 0, spent  # no target read: the store knows
        full = await run_sync(load(path), SyncOptions(full=True), echo=quiet)
        assert landed(full) == 0, [counts(full, t) for t in TARGETS]
