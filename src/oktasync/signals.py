"""Rule 4: events are signals, not facts. A System Log event (or an event hook's delivery of
one) names what to look at again — a user, a group, a user's memberships — never what to
write: the current state is read from Okta, so an event that arrives late, twice or out of
order cannot make the engine write a stale value.

``signals_of`` is pure and total: an event of a type a sync does not care about, or one that
failed, gives no signal; a malformed one gives none either (the next full read repairs what
it could have named). Event types after the reference (``okta-api.md``, System Log) and Okta's
event-type catalog; a user's deletion is logged as ``user.lifecycle.delete.initiated``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Look(StrEnum):
    """What to read again from Okta."""

    USER = "user"  # the user: profile, status, or that it is gone
    MEMBERSHIPS = "memberships"  # the user's groups
    MEMBERS = "members"  # a group whose members changed, by an event that names the user
    GROUP = "group"  # the group: its name, or that it is gone
    SIGN_IN = "sign-in"  # the user signed in: sync that one user now (sign-in sync)


@dataclass(frozen=True, slots=True)
class Signal:
    look: Look
    id: str  # the Okta user or group id


USER_EVENTS = frozenset({
    "user.lifecycle.create", "user.lifecycle.activate", "user.lifecycle.deactivate",
    "user.lifecycle.reactivate", "user.lifecycle.suspend", "user.lifecycle.unsuspend",
    "user.lifecycle.delete.initiated", "user.account.update_profile", "user.account.lock",
    "user.account.unlock", "application.user_membership.add",
    "application.user_membership.remove",  # an app assignment: the user's scope (okta_app_id)
})
MEMBERSHIP_EVENTS = frozenset({"group.user_membership.add", "group.user_membership.remove"})
GROUP_EVENTS = frozenset({"group.lifecycle.create", "group.lifecycle.delete",
                          "group.profile.update"})
# ours, not Okta's: a sign-in a Jira or Confluence login hook reported, or `oktasync sync-user`
LOCAL_SIGN_IN = "oktasync.user.sync"
SIGN_IN_EVENTS = frozenset({"user.session.start", "user.authentication.sso", LOCAL_SIGN_IN})
NOT_DONE = frozenset({"FAILURE", "DENIED"})  # nothing changed: nothing to look at


def signals_of(event: Mapping[str, Any]) -> list[Signal]:
    """What one LogEvent asks the engine to read again."""
    kind = event.get("eventType")
    outcome = event.get("outcome")
    if not isinstance(kind, str) or (isinstance(outcome, Mapping)
                                     and outcome.get("result") in NOT_DONE):
        return []
    if kind in SIGN_IN_EVENTS:  # the user is the actor; these events have no user target
        actor = event.get("actor")
        actor_id = actor.get("id") if isinstance(actor, Mapping) else None
        return [Signal(Look.SIGN_IN, actor_id)] if isinstance(actor_id, str) else []
    users, groups = _targets(event, "User"), _targets(event, "UserGroup")
    if kind in USER_EVENTS:
        return [Signal(Look.USER, u) for u in users]
    if kind in MEMBERSHIP_EVENTS:
        return ([Signal(Look.MEMBERSHIPS, u) for u in users]
                + [Signal(Look.MEMBERS, g) for g in groups])
    if kind in GROUP_EVENTS:
        return [Signal(Look.GROUP, g) for g in groups]
    return []


def signals(events: Iterable[Mapping[str, Any]]) -> list[Signal]:
    """The signals of many events, each once, in the order first named (an event delivered
    twice, or ten profile edits of one user, ask for one read)."""
    seen: dict[Signal, None] = {}
    for event in events:
        for signal in signals_of(event):
            seen.setdefault(signal, None)
    return list(seen)


def _targets(event: Mapping[str, Any], kind: str) -> list[str]:
    targets = event.get("target")
    if not isinstance(targets, list):
        return []
    return [t["id"] for t in targets
            if isinstance(t, Mapping) and t.get("type") == kind and isinstance(t.get("id"), str)]


def local_sign_in(uuid: str, user_id: str) -> dict[str, Any]:
    """An event of our own that asks for one user's sync now, like a sign-in."""
    return {"uuid": uuid, "eventType": LOCAL_SIGN_IN, "actor": {"id": user_id, "type": "User"},
            "outcome": {"result": "SUCCESS"}}


def matters(event: Mapping[str, Any]) -> bool:
    """Whether an event names anything a sync reads again (the rest is not kept)."""
    return bool(signals_of(event))
