"""What a run did, per target: the counts, every problem, and the exit code they imply.

Every write outcome and every finding passes through ``TargetTally`` into the run index, so
the printed summary, ``last-run.json`` and the findings CSV all tell the same story, once, even
across a kill and a resume. Long lists are kept in full in ``<app>/findings-<run id>.csv``;
the JSON summary keeps the first ``LIST_CAP``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from oktasync.audit import AuditTrail
from oktasync.models import (
    Finding,
    FindingKind,
    Operation,
    OpKind,
    WriteResult,
    WriteStatus,
    name_key,
)
from oktasync.text import shown

LIST_CAP = 200

COUNT_NAMES = {
    OpKind.CREATE_USER: "users_created",
    OpKind.UPDATE_USER: "users_updated",
    OpKind.RENAME_USER: "users_renamed",
    OpKind.ACTIVATE_USER: "users_activated",
    OpKind.DEACTIVATE_USER: "users_deactivated",
    OpKind.CREATE_GROUP: "groups_created",
    OpKind.ADD_MEMBER: "memberships_added",
    OpKind.REMOVE_MEMBER: "memberships_removed",
}

class TallyStore(Protocol):
    """Where a tally keeps what it counts: the run index, which is also the checkpoint, so a
    resumed run reports the whole run, each change and each problem once."""

    def defer_landed(self, target: str, op: Operation) -> None: ...

    def defer_problem(self, target: str, phase: str, user_key: str,
                      problem: tuple[str, ...]) -> None: ...

    def landed_counts(self, target: str) -> dict[str, int]: ...

    def problem_counts(self, target: str) -> dict[str, int]: ...

    def problems(self, target: str | None = None,
                 limit: int = -1) -> Iterator[tuple[str, ...]]: ...


@dataclass
class TargetTally:
    """One target's outcomes in a run: every landed write and every problem goes through here
    into the run index (committed with the checkpoint), and the report is read back from it.

    A write *landed* when the server applied it, or answered that it already had it after an
    attempt of ours that may have been applied (a lost answer; or the work of a segment that
    was killed, redone by the resumed run). Anything else that was already there is not ours
    and is counted apart (``already_applied``). Each change counts once (see
    ``RunStore.defer_landed``), so the counts equal what the servers applied.
    """

    target: str
    store: TallyStore
    resumed: bool = False  # redone work of a killed segment: "already there" was ours
    already: int = 0  # writes the server already had, not counted as landed
    audit: AuditTrail | None = None  # the run's audit CSV (none in a dry run)

    def wrote(self, op: Operation, result: WriteResult, user_key: str | None = None) -> None:
        """``user_key``: the Okta user's username key when the write is part of its work.
        A write that sent a request gets its audit row (a create not attempted because the
        licence is full sent none)."""
        if self.audit is not None and result.attempts:
            self.audit.row(self.target, op, result)
        if result.status is WriteStatus.APPLIED or (
                result.status is WriteStatus.ALREADY and (result.maybe_ours or self.resumed)):
            self.store.defer_landed(self.target, op)
        elif result.status is WriteStatus.ALREADY:
            self.already += 1
        else:
            phase = ("users" if user_key is not None
                     else "removals" if op.kind.removes_access else "groups")
            self.store.defer_problem(self.target, phase, user_key or "", (
                result.status.value, op.kind.value, op.username, op.okta_id or "", "",
                op.group or "", f"{op.kind.value}: {result.detail}"))

    def lookup_failed(self, username: str, okta_id: str | None, reason: str) -> None:
        """An account that could not be looked up: its user (or unmapped account) failed,
        nothing was written for it — its own outcome, not a made-up failed write."""
        self.store.defer_problem(self.target, "users", name_key(username), (
            WriteStatus.FAILED.value, "lookup", username, okta_id or "", "", "",
            f"lookup: {reason}"))

    def found(self, finding: Finding, user_key: str | None = None) -> None:
        phase = "users" if user_key is not None else "groups"
        self.store.defer_problem(self.target, phase, user_key or "", (
            finding.kind.value, "", finding.username, finding.okta_id or "",
            finding.login or "", "", finding.reason))

    @property
    def failed(self) -> int:
        counts = self.store.problem_counts(self.target)
        return counts.get(WriteStatus.FAILED.value, 0) + counts.get(WriteStatus.REFUSED.value, 0)

    def to_json(self, counters: dict[str, Any]) -> dict[str, Any]:
        landed = self.store.landed_counts(self.target)
        problems = self.store.problem_counts(self.target)
        counts = {name: landed.get(kind.value, 0) for kind, name in COUNT_NAMES.items()}
        for kind in (*[k.value for k in FindingKind], "refused", "failed"):
            counts[kind] = problems.get(kind, 0)
        counts["already_applied"] = self.already
        listed = [_problem_entry(row) for row in self.store.problems(self.target, LIST_CAP)]
        return {"counts": counts, "requests": counters, "problems": listed,
                "problems_truncated": sum(problems.values()) > len(listed)}


def _problem_entry(row: tuple[str, ...]) -> dict[str, Any]:
    kind, operation, username, okta_id, login, group, reason = row
    entry: dict[str, Any] = {"kind": kind, "username": username, "okta_id": okta_id or None,
                             "login": login or None, "reason": reason}
    if operation:
        entry["operation"] = operation
    if group:
        entry["group"] = group
    return entry


FINDINGS_HEADER = ["target", "kind", "operation", "username", "okta_id", "login", "group",
                   "reason"]


def write_findings(path: Path, store: TallyStore) -> None:
    """The full findings list of the run so far, from the run index: rewritten whole at the
    end of every segment (then renamed into place), so it always matches ``last-run.json``,
    however often the run was killed and resumed."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(FINDINGS_HEADER)
        writer.writerows(store.problems())
    os.replace(tmp, path)


def format_summary(app: str, summary: dict[str, Any]) -> str:
    """The human summary printed at the end of a run.

    Every value that can come from Okta, a target or a file goes through ``shown``: escaped
    (no ESC sequence, newline or text-direction control reaches the terminal) and shortened
    (the full values are in the findings CSV and ``last-run.json``).
    """
    kind = summary.get("kind", "full")
    changed = (f", {summary['users_changed']} users changed in Okta"
               if "users_changed" in summary else "")
    lines = [f"app {shown(app)}: exit {summary['exit_code']} ({shown(summary['outcome'])}), "
             f"{kind} sync{changed}, {summary['wall_time_s']:.1f}s, "
             f"Okta reads {summary['okta']['reads']}"]
    for name, target in summary["targets"].items():
        c, r = target["counts"], target["requests"]
        lines.append(
            f"  {shown(name)}: users created {c['users_created']}, updated {c['users_updated']}, "
            f"renamed {c['users_renamed']}, activated {c['users_activated']}, "
            f"deactivated {c['users_deactivated']}; groups created {c['groups_created']}; "
            f"memberships added {c['memberships_added']}, removed {c['memberships_removed']}")
        lines.append(
            f"    skipped {c['skipped']}, conflicts {c['conflict']}, collisions "
            f"{c['collision']}, drift {c['drift']}, notices {c['notice']}, refused "
            f"{c['refused']}, failed {c['failed']}; reads {r['reads']}, writes {r['writes']}, "
            f"retries {r['retries']}, 429s {r['rate_limited']}")
        for problem in target["problems"][:10]:
            who = problem.get("login") or problem.get("username") or ""
            lines.append(f"    - {shown(problem['kind'])}: {shown(who)} "
                         f"{shown(problem.get('okta_id') or '')}: {shown(problem['reason'])}")
        more = sum(v for k, v in c.items() if k in ("skipped", "conflict", "collision", "drift",
                                                      "notice", "refused", "failed")) - 10
        if more > 0:
            lines.append(f"    ... and {more} more in {shown(summary.get('findings_file', ''))}")
    if "drift" in summary:
        found = ", ".join(f"{shown(t)} " + ", ".join(f"{n} {shown(w)}" for w, n in c.items())
                          for t, c in summary["drift"]["found"].items()) or "none"
        lines.append(f"  drift found (changed outside oktasync): {found}; "
                     f"{shown(summary['drift']['file'])}")
    for note in summary.get("notes", []):
        lines.append(f"  note: {shown(note)}")
    return "\n".join(lines)
