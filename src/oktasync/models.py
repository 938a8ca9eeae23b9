"""The engine's vocabulary: Okta records, target accounts, planned operations and findings.

These types cross every boundary (source → planner → pipeline → targets → report), so they are
small, immutable and free of I/O. Names are target usernames *as keys* (Unicode NFC, then
``str.lower()``) unless a field says it holds the display form.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum

ACTIVE_STATUSES = frozenset({"ACTIVE", "PASSWORD_EXPIRED", "LOCKED_OUT", "RECOVERY"})
ALL_STATUSES = (
    "ACTIVE", "PASSWORD_EXPIRED", "LOCKED_OUT", "RECOVERY",
    "STAGED", "PROVISIONED", "SUSPENDED", "DEPROVISIONED",
)


UNMAPPED_REASON = "no Okta user maps to this account"
DELETED_REASON = "the Okta user it was synced for was deleted in Okta"
# What Jira's and Confluence's user tables hold per name (username, display name, e-mail),
# counted by ``utf16_length``; they refuse more.
NAME_MAX = 255


def name_key(name: str) -> str:
    """How targets compare user and group names: NFC, then Python's ``str.lower()``."""
    return unicodedata.normalize("NFC", name).lower()


def utf16_length(text: str) -> int:
    """A name's length as Jira and Confluence count it (Java's ``String.length()``: UTF-16
    units, so a character outside the Basic Multilingual Plane, an emoji, counts twice)."""
    if text.isascii():
        return len(text)
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


@dataclass(frozen=True, slots=True)
class OktaUser:
    """The part of an Okta user the sync needs; ``status`` is the current one, never the
    ``transitioningToStatus`` (the semantics count a user by its current status)."""

    id: str
    status: str
    login: str
    email: str | None
    first_name: str | None
    last_name: str | None
    display_name: str | None
    # (attribute, value) of the profile attributes attribute_groups names, values trimmed and
    # non-empty; only those (a million users' full profiles are not kept)
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def full_name(self) -> str:
        """``displayName`` when set, else ``firstName lastName`` (the semantics' rule)."""
        if self.display_name:
            return self.display_name
        parts = [p for p in (self.first_name, self.last_name) if p]
        return " ".join(parts) if parts else self.login


@dataclass(frozen=True, slots=True)
class OktaGroup:
    id: str
    name: str
    type: str
    last_updated: str | None = None
    last_membership_updated: str | None = None
    member_count: int | None = None  # ``expand=stats``: what Okta counts, to check a listing


@dataclass(frozen=True, slots=True)
class TargetAccount:
    """An account as a target reports it; ``email``/``display_name`` may be unknown (None)
    where the target's listing does not return them, and so may ``active``: Confluence's
    lookups never say whether an account is deactivated, and a status the server did not
    state is never guessed."""

    username: str  # the stored form (display case)
    email: str | None
    display_name: str | None
    active: bool | None

    @property
    def key(self) -> str:
        return name_key(self.username)


class OpKind(StrEnum):
    CREATE_GROUP = "create_group"
    CREATE_USER = "create_user"
    RENAME_USER = "rename_user"
    UPDATE_USER = "update_user"
    ACTIVATE_USER = "activate_user"
    ADD_MEMBER = "add_member"
    DEACTIVATE_USER = "deactivate_user"
    REMOVE_MEMBER = "remove_member"

    @property
    def removes_access(self) -> bool:
        """Writes that must wait until every Okta listing completed and the guards passed."""
        return self in (OpKind.DEACTIVATE_USER, OpKind.REMOVE_MEMBER)


@dataclass(frozen=True, slots=True)
class Operation:
    """One write to one target. ``before``/``after`` describe the change for reports and the
    dry-run CSV; ``username`` is the account's name as it should be written."""

    kind: OpKind
    target: str
    username: str = ""
    okta_id: str | None = None
    group: str | None = None
    email: str | None = None
    display_name: str | None = None
    new_username: str | None = None  # RENAME_USER only
    before: str = ""
    after: str = ""
    reason: str = ""


class FindingKind(StrEnum):
    SKIPPED = "skipped"  # empty/forbidden username, no e-mail, protected
    CONFLICT = "conflict"  # existing account not adopted, or owned by another app
    COLLISION = "collision"  # several Okta users map to one username
    DRIFT = "drift"  # a difference the target cannot repair through its API
    NOTICE = "notice"  # reported, not applied (Okta group rename/deletion, login change)


@dataclass(frozen=True, slots=True)
class Finding:
    """Something reported and left alone; findings never change the exit code."""

    kind: FindingKind
    target: str
    reason: str
    username: str = ""
    okta_id: str | None = None
    login: str | None = None


@dataclass(slots=True)
class UserPlan:
    """The planner's answer for one Okta user (or one unmapped account) on one target.

    ``grants`` stream as soon as planned, in order (create before its memberships);
    ``removals`` wait for the removal gate. ``claim`` names the account this app now owns.
    """

    grants: list[Operation] = field(default_factory=list)
    removals: list[Operation] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    claim: str | None = None  # username key the app owns once a grant or check succeeds


@dataclass(frozen=True, slots=True)
class Claim:
    """Who owns a username on a target: the app that synced it and for which Okta user."""

    app: str
    okta_id: str | None


class WriteStatus(StrEnum):
    APPLIED = "applied"
    ALREADY = "already"  # the server already had it (a repeated write, or a lost answer)
    REFUSED = "refused"  # refused on purpose (licence, project lead, read-only): not retried
    FAILED = "failed"  # still failing after retries, or an unexpected answer
    # the server holds another's by that name (a group name an Atlassian organisation has
    # outside the directory): reported with its fix, never a failed run
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class WriteResult:
    status: WriteStatus
    detail: str = ""
    stop_creating: bool = False  # the licence is full: create nothing more on this target
    # ALREADY after an attempt whose answer was lost: the server may hold our own earlier write
    maybe_ours: bool = False
    attempts: int = 0  # HTTP requests this write sent (the audit trail's column)
    http_status: int | None = None  # the last answer's status; None: no answer (or no request)

    @property
    def ok(self) -> bool:
        return self.status in (WriteStatus.APPLIED, WriteStatus.ALREADY)


@dataclass(frozen=True)
class Capabilities:
    can_rename: bool
    can_update_profile: bool
    # whether the target keeps an e-mail's case as written (SCIM's e-mails are not case-exact,
    # RFC 7643 §4.1.2: a server may store them lower-cased, and they compare without case)
    emails_case_exact: bool = True
