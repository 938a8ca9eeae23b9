"""The planner against the semantics page (/work/shared/reference/sync-semantics.md), rule by rule.

Every expectation below is read off the page, not off the planner. The cases are data (tables of
``*Case`` records) so that the last tests can check the page's ordering guarantee -- nothing that
removes access is ever a grant, every removal waits in ``removals`` -- over every case at once.

Operations are compared as ``(kind, username key, group key | new username | None)``: targets
match names case-insensitively, so the spelling a removal carries is not part of the contract.
Grants are compared as multisets; the two orders the page fixes (a create before its
memberships, a rename before everything else) have tests of their own.

Ambiguities of the page, decided as a demanding admin would (each also noted at its test):

* An account that has no e-mail in the target's listing (``None``) is *unknown*, not different:
  no update is planned (a blind update every run would break "a second sync makes no writes"),
  and e-mail-match adoption does not adopt it.
* E-mail "follows Okta" exactly: a target e-mail that differs from Okta's only in case is updated
  (Jira) / reported as drift (Confluence). Adoption, by contrast, compares case-insensitively.
* A login change onto a username that already exists is a conflict, but the old account stays
  managed by this app (status, profile, memberships): a leaver's deactivation must not be lost
  because somebody else holds the new name.
* ``protected_users`` covers the old account of a login change: it is not renamed.
* A forbidden group the user has in Okta is neither joined nor removed.
* ``plan_groups`` reports a forbidden group once, however often (and in whichever case) it is
  wanted.
* ``deactivate_missing`` applies on its own, whatever ``sync_user_status`` says.
* A display name a target cannot hold (over 255 UTF-16 units, or with control characters) is
  written shortened / with spaces and noticed when written; accounts are compared with it as
  written. An e-mail over 255 is never shortened: the user is not created, an account keeps its
  e-mail (README "What a sync does").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import cast

import pytest

from oktasync.models import (
    Claim,
    FindingKind,
    OktaUser,
    Operation,
    OpKind,
    TargetAccount,
    UserPlan,
    name_key,
)
from oktasync.planner import (
    Current,
    Desired,
    TargetRules,
    plan_collision,
    plan_groups,
    plan_unmapped,
    plan_user,
)
from oktasync.usernames import UsernameRule

# --------------------------------------------------------------------------------------------
# the world the tables live in

# straight from the page: "Active in Okta: ... Not active: ..."
ACTIVE_IN_OKTA = ("ACTIVE", "PASSWORD_EXPIRED", "LOCKED_OUT", "RECOVERY")
NOT_ACTIVE_IN_OKTA = ("STAGED", "PROVISIONED", "SUSPENDED", "DEPROVISIONED")

APP = "corp-okta"
RULE = UsernameRule("(.*)@.*", "$1")  # the page's example: demouser@gmail.com -> demouser

ENG, SALES, RND, EQUIPE = "Engineering", "Sales", "R&D / Ops", "Équipe Ü"
SCOPE = frozenset(name_key(g) for g in (ENG, SALES, RND, EQUIPE))
OUTSIDE = "Legacy Contractors"  # a target group no in-scope Okta group maps to
JIRA_DEFAULT = "jira-software-users"
CONF_DEFAULT = "confluence-users"
FORBIDDEN_GROUP = "bad\tgroup"


def _forbidden_username(name: str) -> str | None:
    if set(name) & set("<>&") or any(c.isspace() for c in name):
        return "contains a character the target refuses"
    return None


def _forbidden_group(name: str) -> str | None:
    return "control characters" if any(ord(c) < 32 for c in name) else None


JIRA = TargetRules(
    app=APP, target="jira", default_groups=(JIRA_DEFAULT,), scope=SCOPE,
    protected=frozenset({"sysadmin"}), can_rename=True, can_update_profile=True,
    forbidden_username=_forbidden_username, forbidden_group=_forbidden_group,
)
CONFLUENCE = TargetRules(
    app=APP, target="confluence", default_groups=(CONF_DEFAULT,), scope=SCOPE,
    protected=frozenset({"sysadmin"}), can_rename=False, can_update_profile=False,
    forbidden_username=_forbidden_username, forbidden_group=_forbidden_group,
)

ALICE_ID = "00u-alice"
MINE = Claim(APP, ALICE_ID)  # this app synced the account for this Okta user
MINE_NO_ID = Claim(APP, None)  # this app synced it; the Okta id was not recorded
MINE_FOR_BOB = Claim(APP, "00u-bob")  # this app synced it, for another Okta user
OTHER_APP = Claim("hr-okta", "00u-elsewhere")


def okta(
    login: str = "alice@example.com", status: str = "ACTIVE", *, id: str = ALICE_ID,
    email: str | None = "alice@example.com", first: str | None = "Alice",
    last: str | None = "Smith", display: str | None = None,
) -> OktaUser:
    return OktaUser(id=id, status=status, login=login, email=email, first_name=first,
                    last_name=last, display_name=display)


def want(user: OktaUser | None = None, groups: Iterable[str] = (ENG,)) -> Desired:
    """The Okta user as a target should see it: username by the app's rule."""
    user = okta() if user is None else user
    return Desired(user, RULE.apply(user.login), tuple(groups))


def has(
    username: str = "alice", *, email: str | None = "alice@example.com",
    display: str | None = "Alice Smith", active: bool | None = True,
    groups: Iterable[str] = (ENG, JIRA_DEFAULT), claim: Claim | None = MINE,
) -> Current:
    """An account the target has. The default is Alice, synced and in line with ``want()``."""
    return Current(TargetAccount(username, email, display, active),
                   frozenset(name_key(g) for g in groups), claim)


# --------------------------------------------------------------------------------------------
# operations, compared by what they do

Op = tuple[OpKind, str, str | None]


def create(user: str) -> Op:
    return (OpKind.CREATE_USER, user, None)


def update(user: str) -> Op:
    return (OpKind.UPDATE_USER, user, None)


def activate(user: str) -> Op:
    return (OpKind.ACTIVATE_USER, user, None)


def deactivate(user: str) -> Op:
    return (OpKind.DEACTIVATE_USER, user, None)


def add(user: str, group: str) -> Op:
    return (OpKind.ADD_MEMBER, user, name_key(group))


def remove(user: str, group: str) -> Op:
    return (OpKind.REMOVE_MEMBER, user, name_key(group))


def rename(old: str, new: str) -> Op:
    return (OpKind.RENAME_USER, old, new)


def what(op: Operation) -> Op:
    if op.kind is OpKind.RENAME_USER:
        return (op.kind, name_key(op.username), op.new_username)
    return (op.kind, name_key(op.username), None if op.group is None else name_key(op.group))


def ops(operations: Iterable[Operation]) -> Counter[Op]:
    return Counter(what(op) for op in operations)


# --------------------------------------------------------------------------------------------
# case records


@dataclass(frozen=True)
class UserCase:
    """``plan_user`` for one Okta user on one target, and what the page says must come out."""

    desired: Desired
    at_name: Current | None = None
    rules: TargetRules = JIRA
    previous: Current | None = None
    grants: tuple[Op, ...] = ()
    removals: tuple[Op, ...] = ()
    findings: tuple[FindingKind, ...] = ()
    claim: str | None = None

    def plan(self) -> UserPlan:
        return plan_user(self.desired, self.at_name, self.rules, self.previous)


@dataclass(frozen=True)
class UnmappedCase:
    current: Current
    rules: TargetRules
    removals: tuple[Op, ...] = ()
    okta_user_deleted: bool = False

    def plan(self) -> UserPlan:
        return plan_unmapped(self.current, self.rules, okta_user_deleted=self.okta_user_deleted)


@dataclass(frozen=True)
class GroupsCase:
    wanted: tuple[str, ...]
    existing: tuple[str, ...]
    rules: TargetRules
    creates: tuple[str, ...] = ()  # exact names, in the target's spelling to be
    skipped: int = 0  # SKIPPED findings

    def plan(self) -> UserPlan:
        return plan_groups(self.wanted, self.existing, self.rules)


def check_user(case: UserCase) -> UserPlan:
    plan = case.plan()
    assert ops(plan.grants) == Counter(case.grants), "grants"
    assert ops(plan.removals) == Counter(case.removals), "removals"
    assert Counter(f.kind for f in plan.findings) == Counter(case.findings), "findings"
    assert plan.claim == case.claim, "claim"
    for finding in plan.findings:  # every report names the person: Okta id and login
        assert finding.target == case.rules.target
        assert finding.okta_id == case.desired.user.id
        assert finding.login == case.desired.user.login
        assert finding.reason
    return plan


SYNCED = "alice"  # the claim when Alice's account is managed under its current name


# --------------------------------------------------------------------------------------------
# which users are active: all eight statuses, on a missing, an active and an inactive account


def _status_cases() -> Iterator[pytest.ParameterSet]:
    for status in ACTIVE_IN_OKTA + NOT_ACTIVE_IN_OKTA:
        active = status in ACTIVE_IN_OKTA
        user = want(okta(status=status))
        yield pytest.param(UserCase(
            user,
            grants=(create("alice"), add("alice", ENG), add("alice", JIRA_DEFAULT)) if active
            else (),
            claim="alice" if active else None,
        ), id=f"{status}-missing-account")
        yield pytest.param(UserCase(
            user, has(),
            removals=() if active else (deactivate("alice"),),
            claim=SYNCED,
        ), id=f"{status}-active-account")
        yield pytest.param(UserCase(
            user, has(active=False),
            grants=(activate("alice"),) if active else (),
            claim=SYNCED,
        ), id=f"{status}-inactive-account")


STATUS_CASES = list(_status_cases())


@pytest.mark.parametrize("case", STATUS_CASES)
def test_active_statuses(case: UserCase) -> None:
    check_user(case)


def test_the_eight_statuses_are_the_pages() -> None:
    assert {okta(status=s).active for s in ACTIVE_IN_OKTA} == {True}
    assert {okta(status=s).active for s in NOT_ACTIVE_IN_OKTA} == {False}


# A user in transition (``transitioningToStatus``) counts by its current ``status``; the engine's
# OktaUser carries the current status only, so these are users whose status is still the old one.
TRANSITION_CASES = [
    pytest.param(UserCase(  # ACTIVE, transitioning to DEPROVISIONED: still active
        want(okta(status="ACTIVE")),
        grants=(create("alice"), add("alice", ENG), add("alice", JIRA_DEFAULT)), claim="alice",
    ), id="active-transitioning-to-deprovisioned-is-created"),
    pytest.param(UserCase(  # PROVISIONED, transitioning to ACTIVE: not active yet
        want(okta(status="PROVISIONED")),
    ), id="provisioned-transitioning-to-active-is-not-created"),
    pytest.param(UserCase(  # SUSPENDED, transitioning to ACTIVE: still deactivated
        want(okta(status="SUSPENDED")), has(), removals=(deactivate("alice"),), claim=SYNCED,
    ), id="suspended-transitioning-to-active-is-deactivated"),
]


@pytest.mark.parametrize("case", TRANSITION_CASES)
def test_transitioning_users_count_by_status(case: UserCase) -> None:
    check_user(case)


# --------------------------------------------------------------------------------------------
# import_users: creating the missing


CREATE_CASES = [
    pytest.param(UserCase(
        want(groups=(ENG, RND, EQUIPE)),
        grants=(create("alice"), add("alice", ENG), add("alice", RND), add("alice", EQUIPE),
                add("alice", JIRA_DEFAULT)),
        claim="alice",
    ), id="created-with-in-scope-groups-and-defaults"),
    pytest.param(UserCase(
        want(groups=()), grants=(create("alice"), add("alice", JIRA_DEFAULT)), claim="alice",
    ), id="no-okta-groups-still-gets-default-groups"),
    pytest.param(UserCase(
        want(groups=()), rules=replace(JIRA, default_groups=()),
        grants=(create("alice"),), claim="alice",
    ), id="no-groups-at-all"),
    pytest.param(UserCase(
        want(), rules=CONFLUENCE,
        grants=(create("alice"), add("alice", ENG), add("alice", CONF_DEFAULT)), claim="alice",
    ), id="confluence-creates-too"),
    pytest.param(UserCase(
        want(), rules=replace(JIRA, import_users=False),
    ), id="import-users-off-creates-nothing"),
    pytest.param(UserCase(
        want(okta(status="DEPROVISIONED")), rules=replace(JIRA, import_users=True),
    ), id="not-active-never-created"),
    pytest.param(UserCase(
        want(okta(email=None)), findings=(FindingKind.SKIPPED,),
    ), id="no-email-skipped-and-reported"),
    pytest.param(UserCase(
        want(okta(email="")), findings=(FindingKind.SKIPPED,),
    ), id="empty-email-skipped-and-reported"),
    pytest.param(UserCase(
        want(groups=("JIRA-Software-Users",)),
        rules=replace(JIRA, scope=SCOPE | {JIRA_DEFAULT}),
        grants=(create("alice"), add("alice", JIRA_DEFAULT)), claim="alice",
    ), id="default-group-also-an-okta-group-joined-once"),
    pytest.param(UserCase(
        want(), rules=replace(JIRA, default_groups=(JIRA_DEFAULT, "JIRA-SOFTWARE-USERS")),
        grants=(create("alice"), add("alice", ENG), add("alice", JIRA_DEFAULT)), claim="alice",
    ), id="default-groups-deduplicated-case-insensitively"),
    # A group the target forbids is never created (plan_groups), so it is not joined either.
    pytest.param(UserCase(
        want(groups=(ENG, FORBIDDEN_GROUP)),
        grants=(create("alice"), add("alice", ENG), add("alice", JIRA_DEFAULT)), claim="alice",
    ), id="forbidden-group-not-joined"),
]


@pytest.mark.parametrize("case", CREATE_CASES)
def test_import_users(case: UserCase) -> None:
    check_user(case)


def test_a_create_comes_before_its_memberships_and_carries_the_profile() -> None:
    plan = plan_user(want(okta(display="Alice S.")), None, JIRA)
    first, *rest = plan.grants
    assert first.kind is OpKind.CREATE_USER
    assert (first.username, first.okta_id) == ("alice", ALICE_ID)
    assert (first.email, first.display_name) == ("alice@example.com", "Alice S.")
    assert rest and all(op.kind is OpKind.ADD_MEMBER and op.username == "alice" for op in rest)


@pytest.mark.parametrize(("display", "first", "last", "expected"), [
    ("Ally Smith", "Alice", "Smith", "Ally Smith"),  # displayName when set
    (None, "Alice", "Smith", "Alice Smith"),  # else firstName lastName
    ("", "Alice", "Smith", "Alice Smith"),  # an empty displayName is not set
    (None, "Zoë", "Ångström", "Zoë Ångström"),
])
def test_display_name_rule(display: str | None, first: str, last: str, expected: str) -> None:
    user = okta(display=display, first=first, last=last)
    [created, *_] = plan_user(want(user), None, JIRA).grants
    assert created.display_name == expected
    # and a synced account with that name is in line: nothing to update
    assert plan_user(want(user), has(display=expected), JIRA).grants == []


# --------------------------------------------------------------------------------------------
# skipped: empty or forbidden usernames, protected users


SKIP_CASES = [
    pytest.param(UserCase(
        want(okta(login="@example.com")), findings=(FindingKind.SKIPPED,),
    ), id="empty-username"),
    pytest.param(UserCase(
        want(okta(login="a&b@example.com")), findings=(FindingKind.SKIPPED,),
    ), id="forbidden-username"),
    pytest.param(UserCase(
        want(okta(login="al ice@example.com")), rules=CONFLUENCE, findings=(FindingKind.SKIPPED,),
    ), id="forbidden-username-confluence"),
    pytest.param(UserCase(
        want(okta(login="sysadmin@example.com")), findings=(FindingKind.SKIPPED,),
    ), id="protected-missing-not-created"),
    pytest.param(UserCase(
        want(okta(login="SysAdmin@example.com", email="new@example.com", display="New")),
        has("SysAdmin", groups=(SALES,), active=False), findings=(FindingKind.SKIPPED,),
    ), id="protected-not-updated-activated-or-regrouped"),
    pytest.param(UserCase(
        want(okta(login="sysadmin@example.com", status="DEPROVISIONED")),
        has("sysadmin", groups=(SALES, ENG)), findings=(FindingKind.SKIPPED,),
    ), id="protected-not-deactivated-even-when-okta-says-so"),
    pytest.param(UserCase(
        want(okta(login="sysadmin@example.com", status="SUSPENDED")),
        has("sysadmin"), rules=CONFLUENCE, findings=(FindingKind.SKIPPED,),
    ), id="protected-on-confluence"),
]


@pytest.mark.parametrize("case", SKIP_CASES)
def test_skipped_users(case: UserCase) -> None:
    check_user(case)


# --------------------------------------------------------------------------------------------
# adoption and ownership


def _adopt(mode: str) -> TargetRules:
    return replace(JIRA, adopt_existing=mode)


ADOPT = (add("alice", ENG), add("alice", JIRA_DEFAULT))  # what a managed, group-less Alice gets


def bare(email: str | None = "alice@example.com") -> Current:
    """An account nobody synced, in no group."""
    return has(email=email, groups=(), claim=None)


ADOPTION_CASES = [
    # email-match (the default)
    pytest.param(UserCase(
        want(), bare(), grants=ADOPT, claim="alice",
    ), id="email-match-same-email-adopted"),
    pytest.param(UserCase(
        want(), bare("ALICE@Example.COM"), rules=replace(JIRA, update_users=False),
        grants=ADOPT, claim="alice",
    ), id="email-match-compares-case-insensitively"),
    pytest.param(UserCase(
        want(), bare("someone.else@example.com"), findings=(FindingKind.CONFLICT,),
    ), id="email-match-different-email-conflict"),
    # unknown is not equal: adopting on an unknown e-mail could merge two people
    pytest.param(UserCase(
        want(), bare(None), findings=(FindingKind.CONFLICT,),
    ), id="email-match-unknown-email-conflict"),
    pytest.param(UserCase(
        want(okta(email=None)), bare(), findings=(FindingKind.CONFLICT,),
    ), id="email-match-okta-without-email-conflict"),
    pytest.param(UserCase(
        want(okta(status="SUSPENDED")), bare("x@example.com"),
        findings=(FindingKind.CONFLICT,),
    ), id="email-match-different-email-inactive-okta-not-deactivated"),
    # adopted, an existing account is synced like any other: here the Okta user is suspended
    pytest.param(UserCase(
        want(okta(status="SUSPENDED")), bare(), removals=(deactivate("alice"),),
        claim="alice",
    ), id="email-match-adopted-then-status-synced"),
    # always / never
    pytest.param(UserCase(
        want(), bare("someone.else@example.com"), rules=_adopt("always"),
        grants=(*ADOPT, update("alice")), claim="alice",
    ), id="always-adopts-different-email-then-updates-it"),
    pytest.param(UserCase(
        want(), bare(None), rules=_adopt("always"), grants=ADOPT, claim="alice",
    ), id="always-adopts-unknown-email"),
    pytest.param(UserCase(
        want(), bare(), rules=_adopt("never"), findings=(FindingKind.CONFLICT,),
    ), id="never-does-not-adopt-even-same-email"),
    # claimed by this app
    pytest.param(UserCase(
        want(), has(email="old@example.com", groups=(), claim=MINE),
        rules=_adopt("never"), grants=(*ADOPT, update("alice")), claim="alice",
    ), id="own-claim-synced-whatever-the-email-and-mode"),
    pytest.param(UserCase(
        want(), has(email="old@example.com", groups=(), claim=MINE_NO_ID),
        grants=(*ADOPT, update("alice")), claim="alice",
    ), id="own-claim-without-okta-id-synced"),
    # claimed by this app for another Okta user: the adoption rule decides again
    pytest.param(UserCase(
        want(), has(groups=(), claim=MINE_FOR_BOB), grants=ADOPT, claim="alice",
    ), id="own-claim-other-okta-id-email-match-adopted"),
    pytest.param(UserCase(
        want(), has(email="bob@example.com", groups=(), claim=MINE_FOR_BOB),
        findings=(FindingKind.CONFLICT,),
    ), id="own-claim-other-okta-id-different-email-conflict"),
    pytest.param(UserCase(
        want(okta(status="DEPROVISIONED")), has(email="bob@example.com", claim=MINE_FOR_BOB),
        findings=(FindingKind.CONFLICT,),
    ), id="own-claim-other-okta-id-not-deactivated-on-conflict"),
    pytest.param(UserCase(
        want(), has(email="bob@example.com", groups=(), claim=MINE_FOR_BOB),
        rules=_adopt("always"), grants=(*ADOPT, update("alice")), claim="alice",
    ), id="own-claim-other-okta-id-always-adopted"),
    pytest.param(UserCase(
        want(), has(groups=(), claim=MINE_FOR_BOB), rules=_adopt("never"),
        findings=(FindingKind.CONFLICT,),
    ), id="own-claim-other-okta-id-never-conflict"),
    # claimed by another app: never touched, whatever the adoption mode
    pytest.param(UserCase(
        want(), has(groups=(), claim=OTHER_APP), findings=(FindingKind.CONFLICT,),
    ), id="other-app-conflict-no-memberships-added"),
    pytest.param(UserCase(
        want(), has(groups=(), claim=OTHER_APP), rules=_adopt("always"),
        findings=(FindingKind.CONFLICT,),
    ), id="other-app-conflict-even-with-always"),
    pytest.param(UserCase(
        want(okta(status="DEPROVISIONED")), has(claim=OTHER_APP),
        findings=(FindingKind.CONFLICT,),
    ), id="other-app-never-deactivated"),
    pytest.param(UserCase(
        want(), has(groups=(ENG, SALES, JIRA_DEFAULT), claim=OTHER_APP),
        findings=(FindingKind.CONFLICT,),
    ), id="other-app-memberships-never-removed"),
    pytest.param(UserCase(
        want(okta(email="new@example.com", display="New Name")), has(claim=OTHER_APP),
        findings=(FindingKind.CONFLICT,),
    ), id="other-app-profile-never-updated"),
    pytest.param(UserCase(
        want(), has(active=False, claim=OTHER_APP), findings=(FindingKind.CONFLICT,),
    ), id="other-app-never-reactivated"),
    pytest.param(UserCase(
        want(), has(groups=(ENG, SALES), claim=OTHER_APP), rules=CONFLUENCE,
        findings=(FindingKind.CONFLICT,),
    ), id="other-app-on-confluence"),
]


@pytest.mark.parametrize("case", ADOPTION_CASES)
def test_adoption_and_ownership(case: UserCase) -> None:
    check_user(case)


# --------------------------------------------------------------------------------------------
# update_users: profile follows Okta where the target can; drift where it cannot

NEW_MAIL = okta(email="alice.smith@example.com")
NEW_NAME = okta(display="Alice Liddell")

PROFILE_CASES = [
    pytest.param(UserCase(
        want(NEW_MAIL), has(), grants=(update("alice"),), claim=SYNCED,
    ), id="jira-email-follows-okta"),
    pytest.param(UserCase(
        want(NEW_NAME), has(), grants=(update("alice"),), claim=SYNCED,
    ), id="jira-display-name-follows-okta"),
    pytest.param(UserCase(
        want(okta(first="Alicia")), has(), grants=(update("alice"),), claim=SYNCED,
    ), id="jira-first-last-follows-okta"),
    pytest.param(UserCase(
        want(okta(email="alice.smith@example.com", display="Alice Liddell")), has(),
        grants=(update("alice"),), claim=SYNCED,
    ), id="jira-both-in-one-update"),
    # e-mail follows Okta exactly: a case-only difference is a difference (see module doc)
    pytest.param(UserCase(
        want(), has(email="Alice@Example.com"), grants=(update("alice"),), claim=SYNCED,
    ), id="jira-email-case-follows-okta"),
    pytest.param(UserCase(
        want(), has(), claim=SYNCED,
    ), id="jira-in-line-nothing"),
    # unknown (not listed by the target) is not different (see module doc)
    pytest.param(UserCase(
        want(), has(email=None, display=None), claim=SYNCED,
    ), id="jira-unknown-profile-not-rewritten"),
    pytest.param(UserCase(
        want(okta(email="alice.smith@example.com", display="Alice Liddell")), has(),
        rules=replace(JIRA, update_users=False), claim=SYNCED,
    ), id="jira-update-users-off"),
    pytest.param(UserCase(
        want(NEW_MAIL), has(groups=(ENG, CONF_DEFAULT)), rules=CONFLUENCE,
        findings=(FindingKind.DRIFT,), claim=SYNCED,
    ), id="confluence-email-drift"),
    pytest.param(UserCase(
        want(NEW_NAME), has(groups=(ENG, CONF_DEFAULT)), rules=CONFLUENCE,
        findings=(FindingKind.DRIFT,), claim=SYNCED,
    ), id="confluence-display-name-drift"),
    pytest.param(UserCase(
        want(okta(email="alice.smith@example.com", display="Alice Liddell")),
        has(groups=(ENG, CONF_DEFAULT)), rules=CONFLUENCE,
        findings=(FindingKind.DRIFT, FindingKind.DRIFT), claim=SYNCED,
    ), id="confluence-one-drift-per-value"),
    pytest.param(UserCase(
        want(NEW_MAIL), has(groups=(ENG,)), rules=CONFLUENCE,
        grants=(add("alice", CONF_DEFAULT),), findings=(FindingKind.DRIFT,), claim=SYNCED,
    ), id="confluence-drift-does-not-stop-the-rest"),
    pytest.param(UserCase(
        want(okta(email="alice.smith@example.com", display="Alice Liddell")),
        has(groups=(ENG, CONF_DEFAULT)), rules=replace(CONFLUENCE, update_users=False),
        claim=SYNCED,
    ), id="confluence-update-users-off-no-drift"),
]


@pytest.mark.parametrize("case", PROFILE_CASES)
def test_update_users(case: UserCase) -> None:
    check_user(case)


def test_update_carries_oktas_values() -> None:
    user = okta(email="alice.smith@example.com", display="Alice Liddell")
    [op] = plan_user(want(user), has(), JIRA).grants
    assert (op.username, op.okta_id) == ("alice", ALICE_ID)
    assert (op.email, op.display_name) == ("alice.smith@example.com", "Alice Liddell")


def test_drift_names_both_values() -> None:
    [drift] = plan_user(want(NEW_MAIL), has(groups=(ENG, CONF_DEFAULT)), CONFLUENCE).findings
    assert "alice@example.com" in drift.reason and "alice.smith@example.com" in drift.reason


# --------------------------------------------------------------------------------------------
# input a target should never get: names longer than its user table holds, control characters
# in a display name, usernames that can pass for another (README "What a sync does")

NAME_MAX = 255  # Jira's and Confluence's user tables, counted in UTF-16 units like Java
HUGE = "Hugh " + "x" * 100_000
EMOJI = "\U0001f600"  # one character, two UTF-16 units


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def shortened(name: str) -> str:
    """What the README says a target gets for an over-long display name: as many whole
    characters as fit in 254 UTF-16 units, then an ellipsis."""
    kept, units = "", 0
    for char in name:
        units += utf16(char)
        if units > NAME_MAX - 1:
            break
        kept += char
    return kept + "…"


HUGE_SHORT = shortened(HUGE)
LONG_MAIL = "a" * 244 + "@example.com"  # 256 characters

LIMIT_CASES = [
    pytest.param(UserCase(
        want(okta(display=HUGE)), grants=(create("alice"), add("alice", ENG),
                                          add("alice", JIRA_DEFAULT)),
        findings=(FindingKind.NOTICE,), claim="alice",
    ), id="jira-huge-display-name-created-shortened-with-a-notice"),
    pytest.param(UserCase(
        want(okta(display=HUGE)), rules=CONFLUENCE,
        grants=(create("alice"), add("alice", ENG), add("alice", CONF_DEFAULT)),
        findings=(FindingKind.NOTICE,), claim="alice",
    ), id="confluence-huge-display-name-created-shortened-with-a-notice"),
    # compared against what was written: the next run finds the account in line
    pytest.param(UserCase(
        want(okta(display=HUGE)), has(display=HUGE_SHORT), claim=SYNCED,
    ), id="jira-shortened-name-in-line-no-update"),
    pytest.param(UserCase(
        want(okta(display=HUGE)), has(display=HUGE_SHORT, groups=(ENG, CONF_DEFAULT)),
        rules=CONFLUENCE, claim=SYNCED,
    ), id="confluence-shortened-name-in-line-no-endless-drift"),
    pytest.param(UserCase(
        want(okta(display=HUGE)), has(), grants=(update("alice"),),
        findings=(FindingKind.NOTICE,), claim=SYNCED,
    ), id="jira-name-becomes-huge-updated-shortened-with-a-notice"),
    pytest.param(UserCase(
        want(okta(display=HUGE)), has(groups=(ENG, CONF_DEFAULT)), rules=CONFLUENCE,
        findings=(FindingKind.DRIFT,), claim=SYNCED,
    ), id="confluence-name-becomes-huge-one-drift"),
    pytest.param(UserCase(
        want(okta(display="D" * NAME_MAX)), has(display="D" * NAME_MAX), claim=SYNCED,
    ), id="exactly-255-kept-whole"),
    pytest.param(UserCase(
        want(okta(display="Ring\x07 the\x1b[2J\nbell")), has(display="Ring  the [2J bell"),
        claim=SYNCED,
    ), id="control-characters-written-as-spaces-in-line"),
    pytest.param(UserCase(
        want(okta(display="Ring\x07 the\x1b[2J\nbell")), grants=(
            create("alice"), add("alice", ENG), add("alice", JIRA_DEFAULT)),
        findings=(FindingKind.NOTICE,), claim="alice",
    ), id="control-characters-in-a-new-name-noticed"),
    # an e-mail is never shortened: a cut address is somebody else's, or nobody's
    pytest.param(UserCase(
        want(okta(email=LONG_MAIL)), findings=(FindingKind.SKIPPED,),
    ), id="email-over-255-not-created"),
    pytest.param(UserCase(
        want(okta(email=LONG_MAIL, display="Alice Liddell")), has(), grants=(update("alice"),),
        findings=(FindingKind.SKIPPED,), claim=SYNCED,
    ), id="email-over-255-not-updated-the-rest-is"),
    pytest.param(UserCase(
        want(okta(email=LONG_MAIL, status="SUSPENDED")), has(), removals=(deactivate("alice"),),
        findings=(FindingKind.SKIPPED,), claim=SYNCED,
    ), id="email-over-255-still-deactivated"),
]


@pytest.mark.parametrize("case", LIMIT_CASES)
def test_names_a_target_cannot_hold(case: UserCase) -> None:
    check_user(case)


@pytest.mark.parametrize("display", [HUGE, "D" * 256, EMOJI * 128, "é" * 300,
                                     "x" * 253 + EMOJI + "tail"])
@pytest.mark.parametrize("rules", [JIRA, CONFLUENCE], ids=["jira", "confluence"])
def test_a_display_name_over_255_is_written_shortened(display: str, rules: TargetRules) -> None:
    [created, *_] = plan_user(want(okta(display=display)), None, rules).grants
    written = created.display_name
    assert written is not None and utf16(written) <= NAME_MAX
    assert written == shortened(display)
    assert written.endswith("…") and display.startswith(written[:-1])
    assert display not in created.after  # the dry-run CSV shows what would be written
    [notice] = plan_user(want(okta(display=display)), None, rules).findings
    assert notice.kind is FindingKind.NOTICE
    assert f"{len(display):,}" in notice.reason and "255" in notice.reason


def test_an_update_carries_the_shortened_name() -> None:
    [op] = plan_user(want(okta(display=HUGE)), has(), JIRA).grants
    assert op.display_name == HUGE_SHORT


def test_confluence_drift_names_what_would_be_written() -> None:
    [drift] = plan_user(want(okta(display=HUGE)), has(groups=(ENG, CONF_DEFAULT)),
                        CONFLUENCE).findings
    assert len(drift.reason) < 1_000 and "Alice Smith" in drift.reason


def test_control_characters_in_a_display_name_become_spaces() -> None:
    [created, *_] = plan_user(want(okta(display="A\x00B\x1bC\u0085D\x7fE\tF")), None,
                              JIRA).grants
    assert created.display_name == "A B C D E F"


@pytest.mark.parametrize("rules", [JIRA, CONFLUENCE], ids=["jira", "confluence"])
def test_a_long_email_is_reported_with_its_length(rules: TargetRules) -> None:
    [skipped] = plan_user(want(okta(email=LONG_MAIL)), None, rules).findings
    assert "256" in skipped.reason and "255" in skipped.reason


# --------------------------------------------------------------------------------------------
# sync_user_status


STATUS_SYNC_CASES = [
    pytest.param(UserCase(
        want(okta(status="SUSPENDED")), has(), removals=(deactivate("alice"),), claim=SYNCED,
    ), id="inactive-okta-active-account-deactivated-as-removal"),
    pytest.param(UserCase(
        want(okta(status="DEPROVISIONED")), has(groups=(ENG, CONF_DEFAULT)), rules=CONFLUENCE,
        removals=(deactivate("alice"),), claim=SYNCED,
    ), id="confluence-deactivates-too"),
    pytest.param(UserCase(
        want(okta(status="LOCKED_OUT")), has(active=False), grants=(activate("alice"),),
        claim=SYNCED,
    ), id="active-again-reactivated-as-grant"),
    pytest.param(UserCase(
        want(okta(status="SUSPENDED")), has(), rules=replace(JIRA, sync_user_status=False),
        claim=SYNCED,
    ), id="sync-status-off-no-deactivation"),
    pytest.param(UserCase(
        want(), has(active=False), rules=replace(JIRA, sync_user_status=False), claim=SYNCED,
    ), id="sync-status-off-no-reactivation"),
    pytest.param(UserCase(
        want(), has(active=False, groups=(SALES,)),
        grants=(activate("alice"), add("alice", ENG), add("alice", JIRA_DEFAULT)),
        removals=(remove("alice", SALES),), claim=SYNCED,
    ), id="reactivated-user-gets-memberships-in-line"),
    # a status the target did not state (Confluence lookups) is never guessed: the idempotent
    # enable or disable that makes it right is sent
    pytest.param(UserCase(
        want(), has(active=None, groups=(ENG, CONF_DEFAULT)), rules=CONFLUENCE,
        grants=(activate("alice"),), claim=SYNCED,
    ), id="unknown-status-of-an-active-user-enabled"),
    pytest.param(UserCase(
        want(okta(status="SUSPENDED")), has(active=None, groups=(ENG, CONF_DEFAULT)),
        rules=CONFLUENCE, removals=(deactivate("alice"),), claim=SYNCED,
    ), id="unknown-status-of-an-inactive-user-disabled"),
    pytest.param(UserCase(
        want(), has(active=None, groups=(ENG, CONF_DEFAULT)),
        rules=replace(CONFLUENCE, sync_user_status=False), claim=SYNCED,
    ), id="unknown-status-left-when-status-not-synced"),
]


@pytest.mark.parametrize("case", STATUS_SYNC_CASES)
def test_sync_user_status(case: UserCase) -> None:
    check_user(case)


# --------------------------------------------------------------------------------------------
# memberships


MEMBERSHIP_CASES = [
    pytest.param(UserCase(
        want(groups=(ENG, SALES)), has(), grants=(add("alice", SALES),), claim=SYNCED,
    ), id="missing-in-scope-membership-added"),
    pytest.param(UserCase(
        want(), has(groups=(ENG,)), grants=(add("alice", JIRA_DEFAULT),), claim=SYNCED,
    ), id="missing-default-group-added"),
    pytest.param(UserCase(
        want(groups=(ENG, RND, EQUIPE)),
        has(groups=("ENGINEERING", "r&d / OPS", "ÉQUIPE ü", "JIRA-Software-Users")),
        claim=SYNCED,
    ), id="memberships-matched-case-insensitively"),
    pytest.param(UserCase(
        want(groups=(EQUIPE,)),
        has(groups=("E\u0301quipe U\u0308", JIRA_DEFAULT)), claim=SYNCED,
    ), id="memberships-matched-after-nfc"),
    pytest.param(UserCase(
        want(groups=(ENG,)), has(groups=(ENG, SALES, RND, JIRA_DEFAULT)),
        removals=(remove("alice", SALES), remove("alice", RND)), claim=SYNCED,
    ), id="in-scope-memberships-okta-no-longer-has-removed"),
    pytest.param(UserCase(
        want(groups=(ENG,)), has(groups=(ENG, OUTSIDE, JIRA_DEFAULT)), claim=SYNCED,
    ), id="out-of-scope-membership-kept"),
    pytest.param(UserCase(
        want(groups=()), has(groups=(JIRA_DEFAULT,)),
        rules=replace(JIRA, scope=SCOPE | {JIRA_DEFAULT}), claim=SYNCED,
    ), id="default-group-kept-even-when-in-scope-and-not-in-okta"),
    pytest.param(UserCase(
        want(groups=(SALES,)), has(groups=(ENG, OUTSIDE, JIRA_DEFAULT)),
        rules=replace(JIRA, remove_memberships=False),
        grants=(add("alice", SALES),), claim=SYNCED,
    ), id="remove-memberships-off-adds-only"),
    # the user is still a member in Okta: a group the target forbids is left as it is
    pytest.param(UserCase(
        want(groups=(ENG, FORBIDDEN_GROUP)), has(groups=(ENG, FORBIDDEN_GROUP, JIRA_DEFAULT)),
        rules=replace(JIRA, scope=SCOPE | {FORBIDDEN_GROUP}), claim=SYNCED,
    ), id="forbidden-group-okta-still-has-not-removed"),
    pytest.param(UserCase(
        want(okta(status="SUSPENDED"), groups=(SALES,)), has(groups=(ENG, RND)),
        removals=(deactivate("alice"),), claim=SYNCED,
    ), id="deactivated-user-keeps-memberships"),
    pytest.param(UserCase(
        want(okta(status="DEPROVISIONED"), groups=(SALES,)), has(active=False, groups=(ENG,)),
        claim=SYNCED,
    ), id="inactive-user-memberships-untouched"),
    pytest.param(UserCase(
        want(okta(status="SUSPENDED"), groups=(SALES,)), has(groups=(ENG,)),
        rules=replace(JIRA, sync_user_status=False), claim=SYNCED,
    ), id="inactive-user-memberships-untouched-without-status-sync"),
    pytest.param(UserCase(
        want(groups=(ENG, SALES)), has(groups=(ENG, RND, OUTSIDE)), rules=CONFLUENCE,
        grants=(add("alice", SALES), add("alice", CONF_DEFAULT)),
        removals=(remove("alice", RND),), claim=SYNCED,
    ), id="confluence-memberships"),
]


@pytest.mark.parametrize("case", MEMBERSHIP_CASES)
def test_memberships(case: UserCase) -> None:
    check_user(case)


def test_a_removed_membership_names_the_group_as_the_target_spells_it() -> None:
    """Reports (and the request) name the group, not its lower-cased matching key."""
    rules = replace(JIRA, group_names={name_key(g): g for g in (ENG, SALES, RND, EQUIPE)})
    plan = plan_user(want(groups=(ENG,)), has(groups=(ENG, RND, EQUIPE, JIRA_DEFAULT)), rules)
    assert sorted(op.group or "" for op in plan.removals) == sorted([RND, EQUIPE])
    assert {op.before for op in plan.removals} == {RND, EQUIPE}


# --------------------------------------------------------------------------------------------
# login changes: rename where the target can, keep the old account where it cannot

NEW_LOGIN = okta(login="alice.smith@example.com")  # username alice -> alice.smith
OLD = has()  # the account this app synced Alice as
TAKEN = has("alice.smith", email="a.smith@example.com", display="A. Smith", claim=None)

LOGIN_CHANGE_CASES = [
    pytest.param(UserCase(
        want(NEW_LOGIN), None, previous=OLD, grants=(rename("alice", "alice.smith"),),
        claim="alice.smith",
    ), id="jira-renames"),
    pytest.param(UserCase(
        want(NEW_LOGIN, groups=(ENG, SALES)), None, previous=has(groups=(ENG, RND)),
        grants=(rename("alice", "alice.smith"), add("alice.smith", SALES),
                add("alice.smith", JIRA_DEFAULT)),
        removals=(remove("alice.smith", RND),), claim="alice.smith",
    ), id="jira-rename-then-ops-on-new-name"),
    pytest.param(UserCase(
        want(okta(login="alice.smith@example.com", status="SUSPENDED")), None, previous=OLD,
        grants=(rename("alice", "alice.smith"),), removals=(deactivate("alice.smith"),),
        claim="alice.smith",
    ), id="jira-rename-inactive-user-deactivated-under-new-name"),
    pytest.param(UserCase(
        want(NEW_LOGIN), None, previous=has(groups=(ENG, CONF_DEFAULT)), rules=CONFLUENCE,
        findings=(FindingKind.NOTICE,), claim="alice",
    ), id="confluence-cannot-rename-notice-nothing-created"),
    pytest.param(UserCase(
        want(NEW_LOGIN, groups=(ENG, SALES)), None, previous=has(groups=(ENG, RND)),
        rules=CONFLUENCE,
        grants=(add("alice", SALES), add("alice", CONF_DEFAULT)),
        removals=(remove("alice", RND),), findings=(FindingKind.NOTICE,), claim="alice",
    ), id="confluence-keeps-managing-old-account"),
    pytest.param(UserCase(
        want(okta(login="alice.smith@example.com", status="DEPROVISIONED")), None,
        previous=OLD, rules=CONFLUENCE,
        removals=(deactivate("alice"),), findings=(FindingKind.NOTICE,), claim="alice",
    ), id="confluence-old-account-deactivated"),
    # the new name is taken: reported; the old account stays managed (see module doc)
    pytest.param(UserCase(
        want(NEW_LOGIN), TAKEN, previous=OLD, findings=(FindingKind.CONFLICT,), claim="alice",
    ), id="jira-new-name-exists-conflict-nothing-renamed"),
    pytest.param(UserCase(
        want(okta(login="alice.smith@example.com", status="SUSPENDED")), TAKEN, previous=OLD,
        removals=(deactivate("alice"),), findings=(FindingKind.CONFLICT,), claim="alice",
    ), id="jira-new-name-exists-old-account-still-deactivated"),
    pytest.param(UserCase(
        want(okta(login="alice.smith@example.com", status="SUSPENDED")), TAKEN,
        previous=has(groups=(ENG, CONF_DEFAULT)), rules=CONFLUENCE,
        removals=(deactivate("alice"),), findings=(FindingKind.CONFLICT,), claim="alice",
    ), id="confluence-new-name-exists-old-account-still-deactivated"),
    # ownership and protection hold for the old account too
    pytest.param(UserCase(
        want(NEW_LOGIN), None, previous=has(claim=OTHER_APP), findings=(FindingKind.CONFLICT,),
    ), id="other-apps-account-never-renamed"),
    pytest.param(UserCase(
        want(NEW_LOGIN), None, previous=has("sysadmin"), findings=(FindingKind.SKIPPED,),
    ), id="protected-old-account-never-renamed"),
    pytest.param(UserCase(
        want(okta(login="Alice@Example.com")), has(), previous=has(), claim=SYNCED,
    ), id="case-only-login-change-is-no-rename"),
]


@pytest.mark.parametrize("case", LOGIN_CHANGE_CASES)
def test_login_changes(case: UserCase) -> None:
    check_user(case)


def test_rename_comes_first_and_later_ops_use_the_new_name() -> None:
    plan = plan_user(want(okta(login="alice.smith@example.com", display="Alice Liddell"),
                          groups=(ENG, SALES)),
                     None, JIRA, previous=has(active=False, groups=(RND,)))
    first, *rest = plan.grants
    assert (first.kind, first.username, first.new_username) == (
        OpKind.RENAME_USER, "alice", "alice.smith")
    assert {op.kind for op in rest} == {OpKind.UPDATE_USER, OpKind.ACTIVATE_USER,
                                        OpKind.ADD_MEMBER}
    assert {op.username for op in [*rest, *plan.removals]} == {"alice.smith"}


# --------------------------------------------------------------------------------------------
# collisions


@pytest.mark.parametrize("rules", [JIRA, CONFLUENCE], ids=["jira", "confluence"])
@pytest.mark.parametrize("users", [
    pytest.param((okta("alice@example.com"), okta("ALICE@example.org", id="00u-alice2")),
                 id="two"),
    pytest.param((okta("alice@example.com"), okta("Alice@corp.example", id="00u-2"),
                  okta("alice@old.example", id="00u-3", status="SUSPENDED")), id="three"),
])
def test_collisions_report_everyone_and_write_nothing(
    users: tuple[OktaUser, ...], rules: TargetRules,
) -> None:
    assert len({RULE.apply(u.login) for u in users}) == 1  # they do collide
    plan = plan_collision(users, "alice", rules)
    assert plan.grants == plan.removals == []
    assert plan.claim is None
    assert {f.kind for f in plan.findings} == {FindingKind.COLLISION}
    reported = sorted((f.okta_id, f.login) for f in plan.findings)
    assert reported == sorted((u.id, u.login) for u in users)
    assert {(f.username, f.target) for f in plan.findings} == {("alice", rules.target)}


# --------------------------------------------------------------------------------------------
# accounts no Okta user maps to

GONE = replace(JIRA, deactivate_missing=True)

UNMAPPED_CASES = [
    pytest.param(UnmappedCase(has("bob", claim=None), JIRA), id="left-alone-by-default"),
    pytest.param(UnmappedCase(has("bob", claim=MINE_FOR_BOB), JIRA),
                 id="own-left-alone-by-default"),
    pytest.param(UnmappedCase(has("bob", claim=None), GONE, (deactivate("bob"),)),
                 id="unclaimed-deactivated"),
    pytest.param(UnmappedCase(has("bob", claim=MINE_FOR_BOB), GONE, (deactivate("bob"),)),
                 id="own-claim-deactivated"),
    pytest.param(UnmappedCase(has("bob", claim=MINE_FOR_BOB),
                              replace(CONFLUENCE, deactivate_missing=True), (deactivate("bob"),)),
                 id="own-claim-deactivated-confluence"),
    # deactivate_missing is its own setting: sync_user_status does not switch it off
    pytest.param(UnmappedCase(has("bob", claim=None), replace(GONE, sync_user_status=False),
                              (deactivate("bob"),)), id="independent-of-sync-user-status"),
    pytest.param(UnmappedCase(has("SysAdmin", claim=None), GONE), id="protected-left-alone"),
    pytest.param(UnmappedCase(has("bob", claim=OTHER_APP), GONE), id="other-app-left-alone"),
    pytest.param(UnmappedCase(has("bob", active=False, claim=MINE_FOR_BOB), GONE),
                 id="inactive-left-alone"),
    # sync-semantics: "A synced account whose Okta user no longer exists ... is deactivated too"
    pytest.param(UnmappedCase(has("bob", claim=MINE_FOR_BOB), JIRA, (deactivate("bob"),),
                              okta_user_deleted=True), id="deleted-in-okta-deactivated"),
    pytest.param(UnmappedCase(has("bob", claim=MINE_FOR_BOB), CONFLUENCE, (deactivate("bob"),),
                              okta_user_deleted=True), id="deleted-in-okta-confluence"),
    pytest.param(UnmappedCase(has("bob", active=None, claim=MINE_FOR_BOB), JIRA,
                              (deactivate("bob"),), okta_user_deleted=True),
                 id="deleted-in-okta-status-unknown-disabled-to-be-sure"),
    pytest.param(UnmappedCase(has("bob", claim=MINE_FOR_BOB),
                              replace(JIRA, sync_user_status=False), okta_user_deleted=True),
                 id="deleted-in-okta-left-when-status-not-synced"),
    pytest.param(UnmappedCase(has("bob", claim=OTHER_APP), JIRA, okta_user_deleted=True),
                 id="deleted-in-okta-other-apps-account-left-alone"),
    pytest.param(UnmappedCase(has("SysAdmin", claim=MINE_FOR_BOB), JIRA,
                              okta_user_deleted=True), id="deleted-in-okta-protected-left-alone"),
    pytest.param(UnmappedCase(has("bob", active=False, claim=MINE_FOR_BOB), JIRA,
                              okta_user_deleted=True), id="deleted-in-okta-already-inactive"),
]


@pytest.mark.parametrize("case", UNMAPPED_CASES)
def test_unmapped_accounts(case: UnmappedCase) -> None:
    plan = case.plan()
    assert plan.grants == []
    assert ops(plan.removals) == Counter(case.removals)
    assert plan.claim is None


def test_unmapped_never_removes_memberships() -> None:
    plan = plan_unmapped(has("bob", groups=(ENG, SALES, JIRA_DEFAULT), claim=None), GONE)
    assert {op.kind for op in plan.removals} == {OpKind.DEACTIVATE_USER}


# --------------------------------------------------------------------------------------------
# groups

GROUP_CASES = [
    pytest.param(GroupsCase((ENG, RND, EQUIPE, JIRA_DEFAULT), (), JIRA,
                            creates=(ENG, RND, EQUIPE, JIRA_DEFAULT)),
                 id="missing-created-names-kept-exactly"),
    pytest.param(GroupsCase((ENG, SALES, JIRA_DEFAULT), ("ENGINEERING", "Jira-Software-Users"),
                            JIRA, creates=(SALES,)),
                 id="existing-matched-case-insensitively"),
    pytest.param(GroupsCase((EQUIPE,), ("E\u0301quipe U\u0308",), JIRA),
                 id="existing-matched-after-nfc"),
    pytest.param(GroupsCase((ENG, ENG, "engineering"), (), JIRA, creates=(ENG,)),
                 id="no-duplicates"),
    pytest.param(GroupsCase((ENG, FORBIDDEN_GROUP), (), JIRA, creates=(ENG,), skipped=1),
                 id="forbidden-skipped-with-finding"),
    pytest.param(GroupsCase((FORBIDDEN_GROUP, ENG, FORBIDDEN_GROUP.upper()), (), JIRA,
                            creates=(ENG,), skipped=1),
                 id="forbidden-reported-once"),
    pytest.param(GroupsCase((ENG, SALES), (ENG, SALES, OUTSIDE), JIRA), id="all-there"),
]


@pytest.mark.parametrize("case", GROUP_CASES)
def test_plan_groups(case: GroupsCase) -> None:
    plan = case.plan()
    assert [(op.kind, op.group) for op in plan.grants] == [
        (OpKind.CREATE_GROUP, g) for g in case.creates]
    assert plan.removals == []
    assert [f.kind for f in plan.findings] == [FindingKind.SKIPPED] * case.skipped
    assert all(f.target == case.rules.target for f in plan.findings)


# --------------------------------------------------------------------------------------------
# order and safety: over every case above


USER_TABLES = (STATUS_CASES, TRANSITION_CASES, CREATE_CASES, SKIP_CASES, ADOPTION_CASES,
               PROFILE_CASES, LIMIT_CASES, STATUS_SYNC_CASES, MEMBERSHIP_CASES,
               LOGIN_CHANGE_CASES)


def _all_plans() -> Iterator[tuple[str, UserPlan]]:
    tables: tuple[list[pytest.ParameterSet], ...] = (*USER_TABLES, UNMAPPED_CASES, GROUP_CASES)
    for table in tables:
        for param in table:
            case = cast(UserCase | UnmappedCase | GroupsCase, param.values[0])
            yield str(param.id), case.plan()
    for n in (2, 3):
        users = [okta(id=f"00u-{i}") for i in range(n)]
        yield f"collision-{n}", plan_collision(users, "alice", JIRA)


def test_removes_access_is_deactivation_and_membership_removal() -> None:
    assert {k for k in OpKind if k.removes_access} == {OpKind.DEACTIVATE_USER,
                                                       OpKind.REMOVE_MEMBER}


def test_nothing_that_removes_access_is_a_grant_and_every_removal_waits() -> None:
    seen: Counter[OpKind] = Counter()
    for case_id, plan in _all_plans():
        for op in plan.grants:
            assert not op.kind.removes_access, f"{case_id}: {op.kind} streams as a grant"
        for op in plan.removals:
            assert op.kind.removes_access, f"{case_id}: {op.kind} waits as a removal"
        seen.update(op.kind for op in (*plan.grants, *plan.removals))
    assert seen[OpKind.DEACTIVATE_USER] and seen[OpKind.REMOVE_MEMBER]  # the check has teeth
    assert set(seen) == set(OpKind)  # and the tables exercise every kind of write


def test_every_write_names_its_target_account_and_okta_user() -> None:
    """The report lists each write by target and account; a user's writes also by Okta id."""
    user_ids = {str(p.id) for table in USER_TABLES for p in table}
    for case_id, plan in _all_plans():
        for op in (*plan.grants, *plan.removals):
            assert op.target in ("jira", "confluence"), case_id
            assert op.group if op.kind is OpKind.CREATE_GROUP else op.username, case_id
            if case_id in user_ids:
                assert op.okta_id == ALICE_ID, case_id


# --------------------------------------------------------------------------------------------
# user scope (issue 11): a synced user who falls out of scope is deactivated like a
# deactivated Okta user; an account this app never synced is not adopted for one

OUT = "out of the app's user scope: not in required groups jira-access"
SCOPE_CASES = [
    pytest.param(UserCase(
        replace(want(), out_of_scope=OUT), has(claim=MINE), removals=(deactivate("alice"),),
        claim="alice",
    ), id="synced-user-out-of-scope-deactivated"),
    pytest.param(UserCase(
        replace(want(), out_of_scope=OUT), has(claim=None),
    ), id="unsynced-account-of-out-of-scope-user-left-alone"),
    pytest.param(UserCase(
        replace(want(), out_of_scope=OUT), has(claim=None), rules=_adopt("always"),
    ), id="not-adopted-even-with-always"),
    pytest.param(UserCase(replace(want(), out_of_scope=OUT)), id="out-of-scope-never-created"),
]


@pytest.mark.parametrize("case", SCOPE_CASES)
def test_user_scope(case: UserCase) -> None:
    check_user(case)


def test_an_out_of_scope_deactivation_says_why() -> None:
    plan = plan_user(replace(want(), out_of_scope=OUT), has(claim=MINE), JIRA)
    assert [op.reason for op in plan.removals] == [OUT]
