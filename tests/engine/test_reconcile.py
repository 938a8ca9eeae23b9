"""`oktasync sync --reconcile` (issue 11): a full read of Okta and of the targets that repairs
what was changed on a target behind the engine's back and reports it (a drift report, counts
in the summary); drift a target's REST API cannot repair is reported once per value.

Judged by the oracle on the emulators' state and by the drift report's rows; the changes
"by hand" are made directly in the emulators' stores, as an administrator's UI would.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from oktasync.engine import SyncOptions, run_sync
from tests.engine.harness import load, states, write_config
from tests.engine.test_incremental import complete_sync, landed
from tests.engine.test_sync_behaviour import (
    APP,
    TARGETS,
    assert_oracle,
    counts,
    estate,
    groups_of,
    ordinary_groups,
    quiet,
    synced,
    username,
)


@pytest.mark.asyncio
async def test_reconcile_repairs_what_changed_behind_the_engines_back_and_says_so(
    tmp_path: Path,
) -> None:
    async with estate(users=120) as running:
        path = write_config(tmp_path, running)
        await complete_sync(path)
        now = await states(running)
        people, scope = synced(now["okta"], now), ordinary_groups(now["okta"])
        sleeper, renamed, edited = people[0], people[1], people[2]
        member = next(u for u in people[3:] if groups_of(now["okta"], u["id"]) & scope.keys())
        group = scope[sorted(groups_of(now["okta"], member["id"]) & scope.keys())[0]]
        running.okta.directory.set_status(sleeper["id"], "SUSPENDED")
        quiet_run = await run_sync(load(path), SyncOptions(), echo=quiet)
        assert counts(quiet_run, "jira")["users_deactivated"] == 1

        for emulator in (running.jira, running.confluence):  # by hand, on both targets
            store = emulator.store
            store.set_active(store.user(username(sleeper)), True)
            assert store.remove_member(store.group(group), store.user(username(member)))
            store.user(username(edited)).display_name = "Changed By Hand"
        running.jira.store.rename_user(running.jira.store.user(username(renamed)),
                                       "renamed.by.hand")
        for name in (username(sleeper), username(edited)):  # Confluence's listing: its index
            running.confluence.index.record(running.confluence.store.user(name))

        before = await states(running)
        unseen = await run_sync(load(path), SyncOptions(), echo=quiet)  # incremental: blind
        assert unseen.summaries[APP]["kind"] == "incremental" and landed(unseen) == 0

        fixed = await run_sync(load(path), SyncOptions(reconcile=True), echo=quiet)
        summary = fixed.summaries[APP]
        assert fixed.exit_code == 0, summary["notes"]
        found = summary["drift"]["found"]
        assert found["jira"] == {"active": 1, "membership": 1, "renamed": 1,
                                 "display name": 1}, found
        assert found["confluence"] == {"active": 1, "membership": 1, "display name": 1}, found
        report = Path(summary["drift"]["file"]).read_text(encoding="utf-8")
        rows = list(csv.DictReader(io.StringIO(report)))
        assert {(r["target"], r["what"], r["okta_id"]) for r in rows} == {
            ("jira", "active", sleeper["id"]), ("confluence", "active", sleeper["id"]),
            ("jira", "membership", member["id"]), ("confluence", "membership", member["id"]),
            ("jira", "renamed", renamed["id"]), ("jira", "display name", edited["id"]),
            ("confluence", "display name", edited["id"])}
        moved = {"jira": {renamed["id"]: "renamed.by.hand"}}
        await assert_oracle(running, before, synced_as=moved)
        for target in TARGETS:
            c = counts(fixed, target)
            assert c["users_deactivated"] == 1 and c["memberships_added"] == 1, (target, c)
        assert counts(fixed, "jira")["users_renamed"] == 1
        assert counts(fixed, "jira")["users_updated"] == 1
        assert counts(fixed, "confluence")["drift"] == 1  # it cannot change a display name

        again = await run_sync(load(path), SyncOptions(reconcile=True), echo=quiet)
        assert again.exit_code == 0 and again.summaries[APP]["drift"]["found"] == {}
        assert landed(again) == 0
        assert counts(again, "confluence")["drift"] == 0, "said once per value, remembered"


@pytest.mark.asyncio
async def test_reconcile_without_a_state_store_repairs_and_says_it_cannot_compare(
    tmp_path: Path,
) -> None:
    async with estate(users=40) as running:
        before = await states(running)
        result = await run_sync(load(write_config(tmp_path, running)),
                                SyncOptions(reconcile=True), echo=quiet)
        summary = result.summaries[APP]
        assert result.exit_code == 0 and summary["kind"] == "full"
        assert any("no state store" in n for n in summary["notes"]), summary["notes"]
        assert "drift" not in summary  # nothing to compare with: no report
        await assert_oracle(running, before)
