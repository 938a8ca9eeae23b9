"""A dry run is a target: it reads the real one, and writes each planned operation to a CSV.

Because it implements the same small interface as Jira and Confluence, a dry run goes
through exactly the same planner and pipeline as a real run — only ``apply`` differs.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from oktasync.http import RequestCounters
from oktasync.models import (
    Capabilities,
    Operation,
    OpKind,
    TargetAccount,
    WriteResult,
    WriteStatus,
)
from oktasync.targets.base import ReadSummary, StateSink, Target

PLAN_HEADER = ["target", "operation", "username", "okta_id", "before", "after", "reason"]


def open_plan(path: Path) -> tuple[TextIO, Any]:
    """The dry-run CSV: one row per planned operation."""
    handle = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed by the run
    writer = csv.writer(handle)
    writer.writerow(PLAN_HEADER)
    return handle, writer


def plan_row(op: Operation) -> list[str]:
    """One line of the dry-run CSV."""
    name = op.username if op.kind is not OpKind.CREATE_GROUP else (op.group or "")
    after = op.after if op.kind is not OpKind.ADD_MEMBER else (op.group or "")
    return [op.target, op.kind.value, name, op.okta_id or "", op.before, after, op.reason]


class DryRunTarget:
    """Wraps a real target: reads pass through, writes become CSV rows."""

    def __init__(self, inner: Target, writer: Any) -> None:
        self._inner = inner
        self._writer: Any = writer  # a csv writer shared by the run's targets
        self.name = inner.name
        self.kind = inner.kind

    @property
    def capabilities(self) -> Capabilities:
        return self._inner.capabilities

    @property
    def counters(self) -> RequestCounters:
        return self._inner.counters

    def forbidden_username(self, username: str) -> str | None:
        return self._inner.forbidden_username(username)

    def forbidden_group(self, group: str) -> str | None:
        return self._inner.forbidden_group(group)

    async def read_state(self, groups: Sequence[str], sink: StateSink) -> ReadSummary:
        return await self._inner.read_state(groups, sink)

    async def lookup(self, username: str) -> TargetAccount | None:
        return await self._inner.lookup(username)

    async def apply(self, op: Operation) -> WriteResult:
        self._writer.writerow(plan_row(op))
        return WriteResult(WriteStatus.APPLIED, "dry run: not written")
