"""The tests' oracle: the state Jira and Confluence must reach, written from sync-semantics.md.

Deliberately independent of the engine: it shares no code with the planner or the config
loader (usernames are re-derived here from the semantics page's own words), and it reads the
emulators' ``/_emulator/state`` JSON, not the engine's view.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

ACTIVE = {"ACTIVE", "PASSWORD_EXPIRED", "LOCKED_OUT", "RECOVERY"}


def username_of(login: str, regex: str | None, replacement: str) -> str:
    """Java ``String.replaceFirst`` with ``$1``, then NFC, then ``str.lower()``."""
    if regex is not None:
        python_repl = re.sub(r"\$(\d)", r"\\g<\1>", replacement)
        login = re.sub(regex, python_repl, login, count=1)
    return unicodedata.normalize("NFC", login).lower()


@dataclass
class AttributeGroups:
    """One ``attribute_groups`` entry, as issue 11 and the README describe it."""

    attribute: str
    group: str  # "{value}" is the trimmed value
    values: tuple[str, ...] | None = None  # allow-list, compared case-insensitively
    map: dict[str, str] = field(default_factory=dict)  # value -> group name, used as is


@dataclass
class Settings:
    regex: str | None = "(.*)@.*"
    replacement: str = "$1"
    group_types: tuple[str, ...] = ("OKTA_GROUP", "APP_GROUP")
    include: tuple[str, ...] = (".*",)
    exclude: tuple[str, ...] = ()
    default_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per target
    protected: tuple[str, ...] = ("admin",)
    adopt: str = "email-match"  # adopt_existing: "email-match" | "always" | "never"
    deactivate_missing: bool = False
    # a target's own username rule: (profile field "login" | "email", regex, replacement)
    target_rules: dict[str, tuple[str, str | None, str]] = field(default_factory=dict)
    attribute_groups: tuple[AttributeGroups, ...] = ()
    # keys of attribute groups made in earlier runs (their members are removed like those of
    # in-scope groups while the configuration still makes them)
    attribute_groups_before: frozenset[str] = frozenset()
    # issue 11, "who gets an account": per target, the Okta user ids its user scope lets in
    # (the test works them out from Okta's state: the filter's meaning, the required groups'
    # members, the app's assignments); a target not named here lets every user in. A user
    # outside it is treated like a deactivated Okta user: never created, deactivated if synced.
    user_scope: dict[str, frozenset[str]] = field(default_factory=dict)
    # issue 15, the cloud target: its verified_domains, and group names the organisation has
    # outside the directory (refused, reported: never created there)
    cloud_domains: frozenset[str] = frozenset()
    cloud_taken_groups: frozenset[str] = frozenset()


def target_username(user: dict[str, Any], target: str, s: Settings) -> str:
    """The username a target gives an Okta user: its own rule, else the app's on the login."""
    source, regex, replacement = s.target_rules.get(target, ("login", s.regex, s.replacement))
    return username_of(user["profile"].get(source) or "", regex, replacement)


NAME_MAX = 255  # README: what Jira's and Confluence's user tables hold, in UTF-16 units


def java_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def could_pass_for_another(name: str) -> bool:
    """README: a username with a control, format (bidi controls, zero-width characters),
    surrogate, line or paragraph separator character is refused on every target."""
    return any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in name)


def jira_forbids(name: str) -> bool:
    return (any(c in name for c in "<>&") or could_pass_for_another(name)
            or name != name.strip() or java_length(name) > NAME_MAX)


def confluence_forbids(name: str) -> bool:
    return (any(c in name for c in "+,\\<>'\"/") or any(c.isspace() for c in name)
            or could_pass_for_another(name) or java_length(name) > NAME_MAX)


def cloud_forbids(name: str) -> bool:
    """README: an atlassian-scim directory refuses empty names, hidden characters and names
    over 255 (e-mails off its verified_domains: ``Settings.cloud_domains``)."""
    return not name.strip() or could_pass_for_another(name) or java_length(name) > NAME_MAX


def refused_by_settings(target: str, name: str, s: Settings) -> bool:
    """A username the target's own settings refuse: a cloud target's verified_domains."""
    return (target == "cloud" and bool(s.cloud_domains)
            and name.rpartition("@")[2] not in s.cloud_domains)


FORBIDS = {"jira": jira_forbids, "confluence": confluence_forbids, "cloud": cloud_forbids}
# atlassian-api.md: a group name containing "/" may not be addressable on Confluence: reported,
# not written. Both keep group names in embedded Crowd's group table, which holds 255 (UTF-16
# units) like its user table: a longer name is one the target forbids, reported, not written.
GROUP_FORBIDS = {"jira": lambda name: java_length(name) > NAME_MAX,
                 "confluence": lambda name: "/" in name or java_length(name) > NAME_MAX,
                 "cloud": lambda name: not name.strip() or could_pass_for_another(name)}
CAN_RENAME = {"jira": True, "confluence": False, "cloud": True}
CAN_UPDATE = {"jira": True, "confluence": False, "cloud": True}


def in_scope(group: dict[str, Any], s: Settings) -> bool:
    name = group["profile"]["name"]
    return (group["type"] in s.group_types
            and any(re.fullmatch(p, name) for p in s.include)
            and not any(re.fullmatch(p, name) for p in s.exclude))


def attribute_group_keys(profile: dict[str, Any], s: Settings) -> set[str]:
    """The attribute groups a profile puts its user in (keys): a string value, trimmed, not
    empty, allowed, mapped or put in the template; then group_exclude like Okta names."""
    keys = set()
    for entry in s.attribute_groups:
        value = profile.get(entry.attribute)
        if not isinstance(value, str) or not value.strip():
            continue
        value = value.strip()
        if entry.values is not None and value.lower() not in {v.lower() for v in entry.values}:
            continue
        mapped = {k.lower(): v for k, v in entry.map.items()}.get(value.lower())
        name = mapped if mapped is not None else entry.group.replace("{value}", value)
        if not any(re.fullmatch(p, name) for p in s.exclude):
            keys.add(name.lower())
    return keys


def display_name(profile: dict[str, Any]) -> str:
    if profile.get("displayName"):
        return str(profile["displayName"])
    return " ".join(p for p in (profile.get("firstName"), profile.get("lastName")) if p)


def written_display_name(profile: dict[str, Any]) -> str:
    """README: the display name a target gets: control characters (C0, DEL, C1) as spaces;
    longer than 255 UTF-16 units, the longest run of whole characters that fits in 254, then
    an ellipsis."""
    name = "".join(" " if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F else c
                   for c in display_name(profile))
    if java_length(name) <= NAME_MAX:
        return name
    name = name[:NAME_MAX]  # at most 254 of these characters fit
    while java_length(name) > NAME_MAX - 1:
        name = name[:-1]
    return name + "…"


@dataclass
class Account:
    email: str | None
    display: str | None
    active: bool
    groups: set[str]


def target_accounts(state: dict[str, Any]) -> dict[str, Account]:
    """A target's ``/_emulator/state`` as {username key: Account}."""
    groups_of: dict[str, set[str]] = {}
    for group in state["groups"]:
        for member in group["members"]:
            groups_of.setdefault(member.lower(), set()).add(group["name"].lower())
    return {u["name"].lower(): Account(u.get("email"), u.get("displayName"), bool(u["active"]),
                                       groups_of.get(u["name"].lower(), set()))
            for u in state["users"]}


def adopts(account: Account, profile: dict[str, Any], mode: str) -> bool:
    """Whether an existing account nobody synced before is adopted for this Okta user."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    theirs, ours = account.email, profile.get("email")
    return bool(theirs and ours and theirs.casefold() == ours.casefold())


def expected_accounts(
    okta: dict[str, Any], before: dict[str, Account], target: str, s: Settings,
    synced_as: dict[str, str] | None = None, *, owned: set[str] | None = None,
    foreign: set[str] | frozenset[str] = frozenset(),
    deleted: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Account]:
    """What the target holds after a full sync, given what it held before.

    ``synced_as`` maps Okta user id -> the username it was synced as in an earlier run (for
    login changes); accounts in ``before`` not claimed by any Okta user are left alone.
    ``owned``: the usernames this app synced in earlier runs; an account in ``before`` outside
    it is adopted only as ``s.adopt`` says (a conflict otherwise, left alone). None: every
    account in ``before`` counts as synced by this app. ``foreign``: usernames another app
    owns, never touched. ``deleted``: usernames this app synced for Okta users that no longer
    exist (deleted in Okta): deactivated like any synced user who is not active.
    """
    synced_as = synced_as or {}
    claimed = set(before) if owned is None else set(owned)
    scoped = {g["id"]: g["profile"]["name"] for g in okta["groups"]
              if in_scope(g, s) and not GROUP_FORBIDS[target](g["profile"]["name"])
              and not (target == "cloud"
                       and g["profile"]["name"].lower() in s.cloud_taken_groups)}
    member_of: dict[str, set[str]] = {}
    for gid, members in okta["memberships"].items():
        if gid in scoped:
            for uid in members:
                member_of.setdefault(uid, set()).add(scoped[gid].lower())
    for user in okta["users"]:
        made = {k for k in attribute_group_keys(user["profile"], s) if not GROUP_FORBIDS[target](k)}
        member_of.setdefault(user["id"], set()).update(made)
    scope_keys = {n.lower() for n in scoped.values()} | set(s.attribute_groups_before)
    scope_keys |= {k for u in okta["users"] for k in attribute_group_keys(u["profile"], s)}
    defaults = {g.lower() for g in s.default_groups.get(target, ())}
    names = {u["id"]: target_username(u, target, s) for u in okta["users"]}
    counts = Counter(names.values())
    after = {k: Account(a.email, a.display, a.active, set(a.groups)) for k, a in before.items()}
    for user in okta["users"]:
        name, profile = names[user["id"]], user["profile"]
        if (not name or counts[name] > 1 or FORBIDS[target](name)
                or refused_by_settings(target, name, s) or name in s.protected
                or not profile.get("email") or name in foreign):
            continue
        email_fits = java_length(profile["email"]) <= NAME_MAX  # never shortened
        allowed = s.user_scope.get(target)
        active = user["status"] in ACTIVE and (allowed is None or user["id"] in allowed)
        old = synced_as.get(user["id"])
        if old is not None and old != name and old in after and name not in after:
            if CAN_RENAME[target]:
                after[name] = after.pop(old)
                claimed.add(name)
            else:
                name = old
        account = after.get(name)
        if account is None:
            if not active or not email_fits:
                continue
            account = after[name] = Account(profile["email"], written_display_name(profile),
                                            True, set())
        elif name not in claimed and not adopts(account, profile, s.adopt):
            continue  # a conflict: reported, left alone
        elif CAN_UPDATE[target]:
            account.display = written_display_name(profile)
            if email_fits:
                account.email = profile["email"]
        claimed.add(name)
        account.active = active
        if active:
            wanted = member_of.get(user["id"], set()) | defaults
            account.groups = (account.groups - scope_keys) | wanted
    for name in deleted:  # a synced account whose Okta user no longer exists
        if name in after and name not in s.protected and name not in foreign:
            after[name].active = False
    if s.deactivate_missing:  # accounts no Okta user maps to, unless protected or foreign
        mapped = set(names.values()) | set(synced_as.values())
        for name, account in after.items():
            if name not in mapped and name not in s.protected and name not in foreign:
                account.active = False
    return after


def differences(expected: dict[str, Account], actual: dict[str, Account],
                compare_profile: bool = True, emails_case_exact: bool = True) -> list[str]:
    """Human-readable differences, empty when the target is exactly as expected; e-mails
    compared without case where the target does not keep it (SCIM: RFC 7643 §4.1.2)."""

    def fold(email: str | None) -> str | None:
        return email if emails_case_exact or email is None else email.casefold()

    problems = []
    for name in sorted(expected.keys() | actual.keys()):
        e, a = expected.get(name), actual.get(name)
        if e is None or a is None:
            problems.append(f"{name}: expected {'absent' if e is None else 'present'}, "
                            f"is {'absent' if a is None else 'present'}")
            continue
        if e.active != a.active:
            problems.append(f"{name}: active expected {e.active}, is {a.active}")
        if compare_profile and (fold(e.email), e.display) != (fold(a.email), a.display):
            problems.append(f"{name}: profile expected {(e.email, e.display)}, "
                            f"is {(a.email, a.display)}")
        if e.groups != a.groups:
            problems.append(f"{name}: groups missing {sorted(e.groups - a.groups)}, "
                            f"extra {sorted(a.groups - e.groups)}")
    return problems
