"""The one small interface every target implements: read state, look one user up, apply one op.

Jira DC, Confluence DC, the dry run (and later Atlassian Cloud through SCIM) are all a
``Target``. The pipeline never knows which one it is talking to; what a target can and cannot
do (rename, change a profile, which names it forbids) it says through ``Capabilities`` and the
two ``forbidden_*`` checks, which the planner consults.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from oktasync.http import RequestCounters
from oktasync.models import Capabilities, Operation, TargetAccount, WriteResult


class StateSink(Protocol):
    """Where a target streams what it read (the run's on-disk index)."""

    def add_accounts(self, target: str, accounts: Sequence[TargetAccount]) -> None: ...

    def add_members(self, target: str, group: str, usernames: Sequence[str]) -> None: ...

    def add_group(self, target: str, name: str) -> None: ...


@dataclass
class ReadSummary:
    """How complete the target's state read was: when ``all_accounts`` is False, accounts
    not seen must be looked up one by one before the planner may call them missing — except,
    when ``active_listed``, for Okta users who are not active (every active account was
    listed, so an unlisted one is absent or inactive: nothing to write either way)."""

    all_accounts: bool
    strategy: str
    active_listed: bool = False


class Target(Protocol):
    name: str
    kind: str

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def counters(self) -> RequestCounters: ...

    def forbidden_username(self, username: str) -> str | None: ...

    def forbidden_group(self, group: str) -> str | None: ...

    async def read_state(self, groups: Sequence[str], sink: StateSink) -> ReadSummary: ...

    async def lookup(self, username: str) -> TargetAccount | None: ...

    async def apply(self, op: Operation) -> WriteResult: ...


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Characters one cannot see, or that reorder the text around them, so that a name holding one
# passes for another ("admin\u202e", "pay\u200bpal"): Unicode's controls (Cc), format
# characters (Cf: the bidi controls U+202A-U+202E, U+2066-U+2069, U+200E/U+200F, U+061C;
# zero-width space, joiners, word joiner, BOM, soft hyphen, tags), lone surrogates (Cs), and
# line and paragraph separators (Zl, Zp).
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def control_chars(name: str) -> bool:
    """Whether a name holds C0 or C1 control characters or DEL (checked once per user: a
    C-speed search)."""
    return _CONTROL.search(name) is not None


def hidden_chars(name: str) -> str | None:
    """Why ``name`` could pass for another, naming each hidden character by code point and
    Unicode name (the name itself may not show them), or None.

    An ASCII name can only hide controls (the C-speed search); others are read per character.
    """
    if name.isascii():
        found = _CONTROL.findall(name)
    else:
        found = [c for c in name if unicodedata.category(c) in HIDDEN_CATEGORIES]
    if not found:
        return None
    described = ", ".join(_described(c) for c in dict.fromkeys(found))
    return (f"contains {described}: one cannot see it, or it reorders the text around it, "
            "so the name could pass for another")


def _described(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, '')}".rstrip()
