"""The difference between Okta and a target, as explicit operations. Pure: no I/O, no clock.

Rule 3 of the design card: the planner is a pure function of (what Okta says, what the target
has, what this app owns, the settings), returning operations and findings. Every rule of the
semantics page that decides *what* to write lives here, so it can be table-tested on its own;
the pipeline only decides *when* and *how fast*.

One call plans one Okta user (``plan_user``), one account no Okta user maps to
(``plan_unmapped``), one username several Okta users collide on (``plan_collision``), or a
target's groups (``plan_groups``). The pipeline runs the same calls for one user or a million.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from oktasync.models import (
    DELETED_REASON,
    NAME_MAX,
    UNMAPPED_REASON,
    Claim,
    Finding,
    FindingKind,
    OktaUser,
    Operation,
    OpKind,
    TargetAccount,
    UserPlan,
    name_key,
    utf16_length,
)

ForbiddenCheck = Callable[[str], str | None]


def _nothing_forbidden(_: str) -> str | None:
    return None


@dataclass(frozen=True)
class TargetRules:
    """The settings of one app as they apply to one target, plus what the target can do."""

    app: str
    target: str
    import_users: bool = True
    update_users: bool = True
    sync_user_status: bool = True
    deactivate_missing: bool = False
    remove_memberships: bool = True
    adopt_existing: str = "email-match"  # "email-match" | "always" | "never"
    protected: frozenset[str] = frozenset()  # username keys
    default_groups: tuple[str, ...] = ()  # target group names
    scope: frozenset[str] = frozenset()  # keys of the target names of in-scope Okta groups
    group_names: Mapping[str, str] = field(default_factory=dict)  # scope key -> target name
    can_rename: bool = True
    can_update_profile: bool = True
    forbidden_username: ForbiddenCheck = _nothing_forbidden
    forbidden_group: ForbiddenCheck = _nothing_forbidden
    name_max: int = NAME_MAX  # display name and e-mail, in UTF-16 units (Jira, Confluence)
    emails_case_exact: bool = True  # False: e-mails compare without case (SCIM)

    @property
    def default_keys(self) -> frozenset[str]:
        return frozenset(name_key(g) for g in self.default_groups)


@dataclass(frozen=True, slots=True)
class Desired:
    """One Okta user as this target should see it."""

    user: OktaUser
    username: str  # after the username rule: NFC + lower-case
    groups: tuple[str, ...]  # target names of the user's in-scope Okta groups
    # why the user is outside this target's user scope (user_filter, required_groups,
    # okta_app_id), None when inside: such a user is planned like a deactivated Okta user
    out_of_scope: str | None = None

    @property
    def wanted(self) -> bool:
        """Whether the user should have an active account here: active in Okta and in scope."""
        return self.user.active and self.out_of_scope is None

    @property
    def why_not_wanted(self) -> str:
        """The reason a deactivation gives: the user's Okta status, or the scope it left."""
        if self.out_of_scope is not None and self.user.active:
            return self.out_of_scope
        return f"Okta status {self.user.status}"


@dataclass(frozen=True, slots=True)
class Current:
    """One target account with its memberships among the groups the sync looks at."""

    account: TargetAccount
    groups: frozenset[str]  # group keys
    claim: Claim | None = None


def plan_groups(wanted: Iterable[str], existing: Iterable[str], rules: TargetRules) -> UserPlan:
    """Create every wanted group (in-scope and default) the target lacks."""
    plan = UserPlan()
    have = {name_key(g) for g in existing}
    reported: set[str] = set()  # a forbidden group is reported once, however often it is wanted
    for name in dict.fromkeys(wanted):
        reason = group_refused(name, rules)
        if reason is not None:
            if name_key(name) not in reported:
                reported.add(name_key(name))
                plan.findings.append(Finding(FindingKind.SKIPPED, rules.target,
                                             f"group {name!r}: {reason}"))
        elif name_key(name) not in have:
            have.add(name_key(name))
            plan.grants.append(Operation(OpKind.CREATE_GROUP, rules.target, group=name,
                                         after=name, reason="in scope, missing"))
    return plan


def plan_collision(users: Iterable[OktaUser], username: str, rules: TargetRules) -> UserPlan:
    """Several Okta users give one username: none of them is written, each is reported."""
    users = list(users)
    logins = ", ".join(u.login for u in users)
    return UserPlan(findings=[
        Finding(FindingKind.COLLISION, rules.target,
                f"{len(users)} Okta users map to username {username!r} ({logins}); none written",
                username=username, okta_id=u.id, login=u.login)
        for u in users
    ])


def plan_unmapped(current: Current, rules: TargetRules, *,
                  okta_user_deleted: bool = False) -> UserPlan:
    """An account no Okta user maps to.

    One this app synced for an Okta user that was deleted since is deactivated like any synced
    user who is no longer active (``sync_user_status``): the ownership record knows whom it was
    for, and an offboarded person must not keep access because Okta forgot them. Any other
    account is left alone unless ``deactivate_missing``; never one another app owns, never a
    protected one.
    """
    account, claim = current.account, current.claim
    ours = claim is not None and claim.app == rules.app
    wanted = (rules.sync_user_status and ours if okta_user_deleted
              else rules.deactivate_missing and (claim is None or ours))
    if not wanted or account.active is False or account.key in rules.protected:
        return UserPlan()
    return UserPlan(removals=[Operation(
        OpKind.DEACTIVATE_USER, rules.target, username=account.username,
        okta_id=claim.okta_id if claim else None,
        before="active" if account.active else "unknown", after="inactive",
        reason=DELETED_REASON if okta_user_deleted else UNMAPPED_REASON)])


def plan_user(
    desired: Desired, at_name: Current | None, rules: TargetRules,
    previous: Current | None = None,
) -> UserPlan:
    """Everything one Okta user needs on one target.

    ``at_name`` is the account at the desired username; ``previous`` the account this Okta
    user was synced as before, when its login (and so its username) has changed since.
    """
    skip = _skip_reason(desired, rules)
    if skip is not None:
        return UserPlan(findings=[_finding(FindingKind.SKIPPED, desired, rules, skip)])
    plan = UserPlan()
    current: Current | None
    if previous is not None and previous.account.key != desired.username:
        current = _follow_login_change(desired, previous, at_name, rules, plan)
    elif at_name is None:
        _plan_create(desired, rules, plan)
        return plan
    elif desired.out_of_scope is not None and not _synced_by_us(desired, at_name, rules):
        return plan  # "who gets an account" decides nothing about accounts this app never made
    else:
        current = at_name if _owned_or_adopted(desired, at_name, rules, plan) else None
    if current is None:
        return plan
    plan.claim = current.account.key
    _plan_profile(desired, current.account, rules, plan)
    _plan_status(desired, current.account, rules, plan)
    if desired.wanted:
        _plan_memberships(desired, current, rules, plan)
    return plan


def _skip_reason(desired: Desired, rules: TargetRules) -> str | None:
    if not desired.username:
        return "username is empty after the username rule"
    forbidden = rules.forbidden_username(desired.username)
    if forbidden is not None:
        return f"username {desired.username!r} is not allowed by the target: {forbidden}"
    if desired.username in rules.protected:
        return f"username {desired.username!r} is a protected user"
    return None


def _finding(kind: FindingKind, desired: Desired, rules: TargetRules, reason: str) -> Finding:
    return Finding(kind, rules.target, reason, username=desired.username,
                   okta_id=desired.user.id, login=desired.user.login)


def _follow_login_change(
    desired: Desired, previous: Current, at_name: Current | None, rules: TargetRules,
    plan: UserPlan,
) -> Current | None:
    """The account to manage after a login change: renamed where the target can, else the old;
    None when the old account may not be touched.

    The old account is checked like any other before it is renamed: "accounts in
    protected_users are never touched" and "never renames what another app owns" hold for it.
    When the new username is taken the change is a conflict, but the old account stays this
    app's to manage: the semantics deactivate "a synced target user whose Okta user is not
    active", and a leaver must not keep access because somebody else holds the new name.
    """
    old = previous.account.username
    if previous.account.key in rules.protected:
        plan.findings.append(_finding(
            FindingKind.SKIPPED, desired, rules,
            f"login changed, but the previous account {old!r} is a protected user; left alone"))
        return None
    if not _owned_or_adopted(desired, previous, rules, plan):
        return None
    if at_name is not None:
        plan.findings.append(_finding(
            FindingKind.CONFLICT, desired, rules,
            f"login changed: account {old!r} should become {desired.username!r}, "
            f"which already exists; not renamed, still managing {old!r}"))
        return previous
    if rules.can_rename:
        plan.grants.append(Operation(
            OpKind.RENAME_USER, rules.target, username=old, okta_id=desired.user.id,
            new_username=desired.username, before=old, after=desired.username,
            reason="Okta login changed"))
        renamed = TargetAccount(desired.username, previous.account.email,
                                previous.account.display_name, previous.account.active)
        return Current(renamed, previous.groups, previous.claim)
    plan.findings.append(_finding(
        FindingKind.NOTICE, desired, rules,
        f"login changed: {rules.target} cannot rename {old!r} to {desired.username!r}; "
        f"keeping {old!r}"))
    return previous


def _plan_create(desired: Desired, rules: TargetRules, plan: UserPlan) -> None:
    user = desired.user
    if not desired.wanted or not rules.import_users:
        return
    if not user.email:
        plan.findings.append(_finding(FindingKind.SKIPPED, desired, rules,
                                      "Okta user has no e-mail"))
        return
    if _email_too_long(desired, rules, plan, "not created"):
        return
    name = written_name(user.full_name, rules.name_max)
    plan.grants.append(Operation(
        OpKind.CREATE_USER, rules.target, username=desired.username, okta_id=user.id,
        email=user.email, display_name=name, after=f"{name} <{user.email}>",
        reason="active in Okta, missing in target"))
    _notice_rewritten_name(desired, rules, plan, name)
    plan.claim = desired.username
    for group in _wanted_groups(desired, rules):
        plan.grants.append(_member_op(OpKind.ADD_MEMBER, desired.username, group, desired, rules,
                                      "new account"))


def _synced_by_us(desired: Desired, current: Current, rules: TargetRules) -> bool:
    claim = current.claim
    return (claim is not None and claim.app == rules.app
            and claim.okta_id in (None, desired.user.id))


def _owned_or_adopted(
    desired: Desired, current: Current, rules: TargetRules, plan: UserPlan,
) -> bool:
    """Whether this app may manage the account: it synced it, or adopts it now."""
    claim = current.claim
    if claim is not None and claim.app != rules.app:
        plan.findings.append(_finding(FindingKind.CONFLICT, desired, rules,
                                      f"account is owned by app {claim.app!r}"))
        return False
    if claim is not None and claim.okta_id in (None, desired.user.id):
        return True
    why = "synced before for another Okta user" if claim is not None else "existing account"
    mode = rules.adopt_existing
    if mode == "always":
        return True
    theirs, ours = current.account.email, desired.user.email
    if mode == "email-match" and theirs and ours and theirs.casefold() == ours.casefold():
        return True
    detail = ("adoption is off" if mode == "never" else
              "its e-mail is unknown" if not theirs else
              "the Okta user has no e-mail" if not ours else
              f"its e-mail {theirs!r} differs from Okta's {ours!r}")
    plan.findings.append(_finding(FindingKind.CONFLICT, desired, rules,
                                  f"{why} not adopted: {detail}"))
    return False


def _same_email(theirs: str, ours: str, rules: TargetRules) -> bool:
    return theirs == ours if rules.emails_case_exact else theirs.casefold() == ours.casefold()


def _plan_profile(
    desired: Desired, account: TargetAccount, rules: TargetRules, plan: UserPlan,
) -> None:
    if not rules.update_users:
        return
    user = desired.user
    name = written_name(user.full_name, rules.name_max)  # compared as it would be written
    changes: dict[str, tuple[str, str]] = {}
    if (user.email and account.email is not None
            and not _same_email(account.email, user.email, rules)
            and not _email_too_long(desired, rules, plan, "not updated")):
        changes["email"] = (account.email, user.email)
    if account.display_name is not None and account.display_name != name:
        changes["display name"] = (account.display_name, name)
    if not changes:
        return
    if not rules.can_update_profile:
        for what, (old, new) in changes.items():
            plan.findings.append(_finding(
                FindingKind.DRIFT, desired, rules,
                f"{what} is {old!r} in the target and {new!r} in Okta; "
                f"{rules.target} cannot change it through its API"))
        return
    plan.grants.append(Operation(
        OpKind.UPDATE_USER, rules.target, username=account.username, okta_id=user.id,
        email=user.email if "email" in changes else None,
        display_name=name if "display name" in changes else None,
        before="; ".join(f"{k}={v[0]}" for k, v in changes.items()),
        after="; ".join(f"{k}={v[1]}" for k, v in changes.items()),
        reason="profile changed in Okta"))
    if "display name" in changes:
        _notice_rewritten_name(desired, rules, plan, name)


# Characters a display name is never written with: C0 and C1 controls and DEL (PostgreSQL behind
# a target refuses a NUL; an ESC sequence would reach every terminal that shows the name).
# Text-direction marks stay: right-to-left names need them.
_NAME_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
ELLIPSIS = "…"


def written_name(name: str, limit: int) -> str:
    """A display name as a target gets it: Okta's (``OktaUser.full_name``) with each control
    character as a space and, past ``limit`` UTF-16 units, as many whole characters as fit
    before an ellipsis. The planner compares accounts with this, not with Okta's value, so a
    shortened name is written once and never seen as a change (or as drift) again."""
    name = _NAME_CONTROLS.sub(" ", name)
    if utf16_length(name) <= limit:
        return name
    units = 0
    for index, char in enumerate(name):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit - 1:  # the ellipsis takes the last unit
            return name[:index] + ELLIPSIS
    return name  # not reached: the name is longer than the limit


def _notice_rewritten_name(desired: Desired, rules: TargetRules, plan: UserPlan,
                           name: str) -> None:
    """A write carrying a display name other than Okta's says so, once: when it is written."""
    okta_name = desired.user.full_name
    if name == okta_name:
        return
    how = []
    if _NAME_CONTROLS.search(okta_name):
        how.append("with spaces for its control characters")
    units = utf16_length(okta_name)
    if units > rules.name_max:
        length = f"{len(okta_name):,} characters" + (
            f" ({units:,} UTF-16 units)" if units != len(okta_name) else "")
        how.append(f"shortened with an ellipsis: Okta's is {length}, more than the "
                   f"{rules.name_max} {rules.target} keeps")
    plan.findings.append(_finding(FindingKind.NOTICE, desired, rules,
                                  f"display name written {', and '.join(how)}"))


def _email_too_long(desired: Desired, rules: TargetRules, plan: UserPlan, what: str) -> bool:
    """An e-mail the target cannot hold is reported, never shortened (a cut address is
    somebody else's, or nobody's). Okta itself allows 100 characters."""
    length = utf16_length(desired.user.email or "")
    if length <= rules.name_max:
        return False
    plan.findings.append(_finding(
        FindingKind.SKIPPED, desired, rules,
        f"Okta e-mail is {length:,} characters, more than the {rules.name_max} "
        f"{rules.target} keeps; {what}"))
    return True


def _plan_status(
    desired: Desired, account: TargetAccount, rules: TargetRules, plan: UserPlan,
) -> None:
    if not rules.sync_user_status:
        return
    user = desired.user
    # An unknown status (None: the target did not say) gets the write that makes it right:
    # enable and disable are safe to repeat, and guessing "active" would leave a returning
    # user locked out (or a leaver with access).
    shown = {True: "active", False: "inactive", None: "unknown"}[account.active]
    if desired.wanted and account.active is not True:
        plan.grants.append(Operation(
            OpKind.ACTIVATE_USER, rules.target, username=account.username, okta_id=user.id,
            before=shown, after="active", reason=f"Okta status {user.status}"))
    elif not desired.wanted and account.active is not False:
        plan.removals.append(Operation(
            OpKind.DEACTIVATE_USER, rules.target, username=account.username, okta_id=user.id,
            before=shown, after="inactive", reason=desired.why_not_wanted))


def _wanted_groups(desired: Desired, rules: TargetRules) -> list[str]:
    """In-scope Okta groups plus the target's default groups, first spelling kept."""
    seen: dict[str, str] = {}
    for group in (*desired.groups, *rules.default_groups):
        seen.setdefault(name_key(group), group)
    return [g for g in seen.values() if group_refused(g, rules) is None]


def group_refused(name: str, rules: TargetRules) -> str | None:
    """Why the target refuses a group name, or None: its own rules, then the length its
    group table holds (embedded Crowd's, 255 UTF-16 units like user names): a longer name
    would be refused on creation and every membership in it would fail."""
    reason = rules.forbidden_group(name)
    if reason is None and utf16_length(name) > rules.name_max:
        return f"longer than {rules.name_max} characters ({utf16_length(name):,})"
    return reason


def _plan_memberships(
    desired: Desired, current: Current, rules: TargetRules, plan: UserPlan,
) -> None:
    name = current.account.username
    wanted = _wanted_groups(desired, rules)
    for group in wanted:
        if name_key(group) not in current.groups:
            plan.grants.append(_member_op(OpKind.ADD_MEMBER, name, group, desired, rules,
                                          "member in Okta" if group in desired.groups
                                          else "default group"))
    if not rules.remove_memberships:
        return
    # Okta's own groups are kept even when the target forbids them (so they were not added):
    # a membership is removed only when Okta no longer has it.
    keep = {name_key(g) for g in desired.groups} | rules.default_keys
    for group in sorted(current.groups & rules.scope - keep):
        plan.removals.append(_member_op(OpKind.REMOVE_MEMBER, name,
                                        rules.group_names.get(group, group), desired, rules,
                                        "no longer a member in Okta"))


def _member_op(
    kind: OpKind, username: str, group: str, desired: Desired, rules: TargetRules, reason: str,
) -> Operation:
    before, after = ("", group) if kind is OpKind.ADD_MEMBER else (group, "")
    return Operation(kind, rules.target, username=username, okta_id=desired.user.id,
                     group=group, before=before, after=after, reason=reason)
