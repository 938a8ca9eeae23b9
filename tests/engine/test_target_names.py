"""Usernames a target must never get: characters one cannot see, or that reorder the text
around them, make one username pass for another (``admin\\u202e`` looks like ``admin``,
``pay\\u200bpal`` like ``paypal``). Every target refuses them, and the planner reports the
user, naming the character visibly.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from oktasync.models import FindingKind, OktaUser
from oktasync.planner import Desired, TargetRules, plan_user
from oktasync.targets import confluence, jira

Check = Callable[[str], str | None]
TARGETS: dict[str, Check] = {"jira": jira.forbidden_username,
                             "confluence": confluence.forbidden_username}

HIDDEN = {
    "\u202a": "left-to-right embedding", "\u202b": "right-to-left embedding",
    "\u202c": "pop directional formatting", "\u202d": "left-to-right override",
    "\u202e": "right-to-left override", "\u2066": "left-to-right isolate",
    "\u2067": "right-to-left isolate", "\u2068": "first strong isolate",
    "\u2069": "pop directional isolate", "\u200e": "left-to-right mark",
    "\u200f": "right-to-left mark", "\u061c": "Arabic letter mark",
    "\u200b": "zero-width space", "\u200c": "zero-width non-joiner",
    "\u200d": "zero-width joiner", "\u2060": "word joiner", "\ufeff": "zero-width no-break space",
    "\u00ad": "soft hyphen", "\u2028": "line separator", "\u2029": "paragraph separator",
    "\u0085": "next line (C1)", "\u009b": "control sequence introducer (C1)",
    "\U000e0041": "tag latin capital letter a",
}


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("char", sorted(HIDDEN), ids=[HIDDEN[c] for c in sorted(HIDDEN)])
def test_every_target_refuses_a_username_with_a_hidden_character(target: str, char: str) -> None:
    for name in (f"adm{char}in", f"admin{char}", f"{char}admin"):
        reason = TARGETS[target](name)
        assert reason is not None, (target, name)
        assert char not in reason and f"U+{ord(char):04X}" in reason, reason  # named visibly


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("name", ["alice", "zoë.ångström", "山田", "عبدالله", "שלום",
                                  "obrien", "a" * 255])
def test_ordinary_usernames_are_allowed(target: str, name: str) -> None:
    assert TARGETS[target](name) is None


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_username_over_255_utf16_units_is_refused(target: str) -> None:
    assert TARGETS[target]("a" * 256) is not None
    assert TARGETS[target]("\U0001d400" * 128) is not None  # 128 characters, 256 units


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_planner_reports_the_user_and_writes_nothing(target: str) -> None:
    user = OktaUser(id="00u-spoof", status="ACTIVE", login="admin\u202e@example.com",
                    email="spoof@example.com", first_name="Not", last_name="Admin",
                    display_name=None)
    rules = TargetRules(app="app", target=target, forbidden_username=TARGETS[target])
    plan = plan_user(Desired(user, "admin\u202e", ()), None, rules)
    assert plan.grants == [] and plan.removals == [] and plan.claim is None
    [finding] = plan.findings
    assert finding.kind is FindingKind.SKIPPED
    assert (finding.okta_id, finding.login, finding.target) == ("00u-spoof",
                                                                 "admin\u202e@example.com",
                                                                 target)
    assert "\\u202e" in finding.reason and "U+202E RIGHT-TO-LEFT OVERRIDE" in finding.reason
