"""The run index on its own (real SQLite files): what a resume relies on."""

from __future__ import annotations

from pathlib import Path

from oktasync.models import Operation, OpKind
from oktasync.okta_source import parse_user
from oktasync.runstore import RunStore
from tests.engine.test_config import app_with, load


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


def test_storing_a_user_again_moves_its_attribute_memberships(tmp_path: Path) -> None:
    """Attribute memberships are derived whenever a user is stored (a full listing, or an
    incremental run storing a changed user again): the old ones go, whatever they were."""
    app = load(tmp_path, app_with(attribute_groups='[{ attribute = "department", '
                                                   'group = "dept-{value}", '
                                                   'map = { Sales = "sales" } }]')).apps[0]
    store = RunStore(tmp_path / "run.db")

    def stored(department: str | None) -> set[tuple[str, str]]:
        user = parse_user({"id": "00u1", "status": "ACTIVE",
                           "profile": {"login": "a@example.com", "department": department}},
                          app.profile_attributes)
        store.add_okta_users([user], [lambda u: "a"], attribute_groups=app.attribute_groups_of)
        return {(g.id, g.target_name) for g in store.attribute_groups()
                if store.okta_member_count(g.id)}

    assert stored(" Engineering ") == {("attr:department:engineering", "dept-Engineering")}
    # derived, not read: not part of the membership listing max_listing_shrink compares
    assert store.in_scope_membership_count() == 0
    assert stored("SALES") == {("attr:department:sales", "sales")}
    assert stored("") == set()
    assert stored(None) == set()
    store.close()

