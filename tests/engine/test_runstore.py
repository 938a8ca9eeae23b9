"""The run index on its own (real SQLite files): what a resume relies on."""

from __future__ import annotations

from pathlib import Path

from oktasync.models import Operation, OpKind
from oktasync.runstore import RunStore


def removal(group: str) -> Operation:
    return Operation(OpKind.REMOVE_MEMBER, "jira", username="alice", okta_id="00u1",
                     group=group, before=group, after="", reason="no longer a member in Okta")


def test_a_removal_planned_again_under_another_spelling_is_held_once(tmp_path: Path) -> None:
    """A resume re-plans users past its mark; if Okta changed a group's letter case
    meanwhile, the same membership removal must not be held (and counted) twice."""
    store = RunStore(tmp_path / "run.db")
    try:
        store.hold_removals([removal("R&D / Ops")])
        store.hold_removals([removal("r&d / OPS")])
        assert store.count_removals("jira", OpKind.REMOVE_MEMBER) == 1
        [(_, held)] = store.held_removals("jira")
        assert held.group == "R&D / Ops"  # the first spelling, as the target was told
    finally:
        store.close()
