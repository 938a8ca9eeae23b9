"""Drift: what changed on a target behind the engine's back, found by ``sync --reconcile``.

The state store holds each synced account as the engine last wrote or read it. A reconcile is
a full sync that also compares what it read from each target with the store: an account
re-activated or deactivated by hand, its e-mail or display name changed, a membership added or
removed in a group the sync manages, an account renamed (gone from its name while an account
nobody synced, with its e-mail, appeared). The repairs are the full sync's own plan (Okta is
the truth). A renamed account has its ownership moved to where it went, so the planner treats
it as a login rename: renamed back where the target can (Jira), kept and managed under its new
name where it cannot (Confluence, which says so). Each difference is one row of the drift
report (``drift-<run id>.csv``), counted in the summary.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from oktasync.models import TargetAccount
from oktasync.runstore import RunStore


@dataclass(frozen=True)
class Drift:
    """One difference between what the engine knows it left on a target and what is there."""

    target: str
    username: str
    okta_id: str
    what: str  # active, e-mail, display name, membership, renamed
    engine_left: str
    target_has: str


HEADER = [f.name for f in fields(Drift)]


@dataclass
class Found:
    """A target's drift, and the accounts renamed by hand: (their new name, Okta id)."""

    drift: list[Drift]
    moved: list[tuple[str, str | None]]


def find(store: RunStore, app: str, target: str, groups: Sequence[str],
         all_accounts: bool) -> Found:
    """Compare the store (attached as ``prev``) with this run's read of ``target``.
    ``groups``: the group keys the sync manages there; ``all_accounts``: the read listed every
    account, so one not read is gone (else it may only be unlisted: inactive, say)."""
    found = Found([], [])
    for key, okta_id, was, now in store.drifted_accounts(app, target):
        if now is None:
            if all_accounts:
                _gone(store, target, key, okta_id, was, found)
            continue
        found.drift += _differences(target, key, okta_id or "", was, now)
    for key, okta_id, group, was_member in store.drifted_members(app, target, groups):
        found.drift.append(Drift(target, key, okta_id or "", "membership",
                                 f"member of {group}" if was_member else f"not in {group}",
                                 f"not in {group}" if was_member else f"member of {group}"))
    return found


def _differences(target: str, key: str, okta_id: str, was: TargetAccount,
                 now: TargetAccount) -> list[Drift]:
    pairs = (("active", was.active, now.active), ("e-mail", was.email, now.email),
             ("display name", was.display_name, now.display_name))
    return [Drift(target, key, okta_id, what, str(a), str(b)) for what, a, b in pairs
            if a is not None and b is not None and a != b]


def _gone(store: RunStore, target: str, key: str, okta_id: str | None, was: TargetAccount,
          found: Found) -> None:
    """A synced account missing from a complete read: renamed by hand when exactly one
    account nobody synced carries its e-mail, else deleted (the plan creates it again)."""
    where = store.lookalikes(target, was.email) if was.email else []
    if len(where) == 1:
        found.moved.append((where[0], okta_id))
        found.drift.append(Drift(target, key, okta_id or "", "renamed", key, where[0]))
    else:
        found.drift.append(Drift(target, key, okta_id or "", "deleted", key, ""))


def write_report(path: Path, drift: Sequence[Drift]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(astuple(d) for d in drift)


def counts(drift: Sequence[Drift]) -> dict[str, dict[str, int]]:
    """Per target, how many differences of each kind."""
    per: dict[str, Counter[str]] = {}
    for d in drift:
        per.setdefault(d.target, Counter())[d.what] += 1
    return {t: dict(c) for t, c in per.items()}
