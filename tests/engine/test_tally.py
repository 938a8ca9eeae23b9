"""A target's tally as a checkpoint keeps it and a resumed run gets it back."""

from __future__ import annotations

from oktasync.report import TargetTally

PROBLEM = {"kind": "collision", "username": "john.smith", "okta_id": "00u1", "login": "j@x",
           "reason": "2 Okta users map to username 'john.smith'"}


def test_counts_and_problems_come_back() -> None:
    tally = TargetTally("jira")
    tally.restore({"counts": {"users_created": 3}, "problem_counts": {"collision": 1}},
                  [PROBLEM])
    assert (tally.counts["users_created"], tally.problem_counts["collision"]) == (3, 1)
    assert tally.problems == [PROBLEM]
    assert "problems" not in tally.to_state()  # kept apart: they change rarely


def test_a_checkpoint_from_before_problems_were_kept_apart_keeps_its_problems() -> None:
    tally = TargetTally("jira")
    tally.restore({"counts": {}, "problem_counts": {"collision": 1}, "problems": [PROBLEM]}, [])
    assert tally.problems == [PROBLEM]
