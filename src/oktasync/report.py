"""What a run did, per target: the counts, every problem, and the exit code they imply.

Every write outcome and every finding passes through ``TargetTally``, so the printed summary,
``last-run.json`` and (later) the CSV audit all tell the same story. Long lists are kept in
full in ``<app>/findings-<run id>.csv``; the JSON summary keeps the first ``LIST_CAP``.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from oktasync.models import Finding, FindingKind, Operation, OpKind
from oktasync.targets.base import WriteResult, WriteStatus
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

EXIT_OK, EXIT_WRITES_FAILED, EXIT_USAGE, EXIT_GUARD, EXIT_LISTING = 0, 1, 2, 3, 4
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
SEVERITY = [EXIT_SIGTERM, EXIT_SIGINT, EXIT_LISTING, EXIT_GUARD, EXIT_USAGE,
            EXIT_WRITES_FAILED, EXIT_OK]


def worst(*codes: int) -> int:
    """The most serious exit code: 130/143, then 4, 3, 2, 1, 0 (the semantics' order)."""
    return min(codes, key=SEVERITY.index) if codes else EXIT_OK


@dataclass
class TargetTally:
    target: str
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[dict[str, Any]] = field(default_factory=list)
    problem_counts: Counter[str] = field(default_factory=Counter)
    _sink: Any = None  # csv writer for the full findings list

    def planned(self, op: Operation) -> None:
        self.counts["planned_" + COUNT_NAMES[op.kind]] += 1

    def wrote(self, op: Operation, result: WriteResult) -> None:
        if result.status is WriteStatus.APPLIED:
            self.counts[COUNT_NAMES[op.kind]] += 1
        elif result.status is WriteStatus.ALREADY:
            self.counts[COUNT_NAMES[op.kind]] += 1
            self.counts["already_applied"] += 1
        else:
            self._problem(result.status.value, f"{op.kind.value}: {result.detail}",
                          op.username, op.okta_id, None, op)

    def found(self, finding: Finding) -> None:
        self._problem(finding.kind.value, finding.reason, finding.username, finding.okta_id,
                      finding.login, None)

    def _problem(self, kind: str, reason: str, username: str, okta_id: str | None,
                 login: str | None, op: Operation | None) -> None:
        self.problem_counts[kind] += 1
        entry = {"kind": kind, "username": username, "okta_id": okta_id, "login": login,
                 "reason": reason}
        if op is not None:
            entry["operation"] = op.kind.value
            if op.group:
                entry["group"] = op.group
        if len(self.problems) < LIST_CAP:
            self.problems.append(entry)
        if self._sink is not None:
            self._sink.writerow([self.target, kind, entry.get("operation", ""), username,
                                 okta_id or "", login or "", entry.get("group", ""), reason])

    def to_state(self) -> dict[str, Any]:
        """What a checkpoint keeps, so a resumed run reports the whole run. The listed
        problems are kept apart (``problems``): they change rarely, the counts every write."""
        return {"counts": dict(self.counts), "problem_counts": dict(self.problem_counts)}

    def restore(self, state: dict[str, Any], problems: list[dict[str, Any]]) -> None:
        self.counts.update(state.get("counts", {}))
        self.problem_counts.update(state.get("problem_counts", {}))
        # a checkpoint from before problems were kept apart has them in the tally
        self.problems.extend((problems or state.get("problems", []))[:LIST_CAP])

    @property
    def failed(self) -> int:
        return self.problem_counts[WriteStatus.FAILED.value] + \
            self.problem_counts[WriteStatus.REFUSED.value]

    def to_json(self, counters: dict[str, Any]) -> dict[str, Any]:
        counts = {name: self.counts[name] for name in COUNT_NAMES.values()}
        for kind in (*[k.value for k in FindingKind], "refused", "failed"):
            counts[kind] = self.problem_counts[kind]
        counts["already_applied"] = self.counts["already_applied"]
        return {"counts": counts, "requests": counters, "problems": self.problems,
                "problems_truncated": sum(self.problem_counts.values()) > len(self.problems)}


FINDINGS_HEADER = ["target", "kind", "operation", "username", "okta_id", "login", "group",
                   "reason"]


def open_findings(path: Path) -> tuple[TextIO, Any]:
    """The full findings list; a resumed run appends to its run's file."""
    exists = path.exists()
    handle = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - closed by the run
    writer = csv.writer(handle)
    if not exists:
        writer.writerow(FINDINGS_HEADER)
    return handle, writer


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


def format_summary(app: str, summary: dict[str, Any]) -> str:
    """The human summary printed at the end of a run.

    Every value that can come from Okta, a target or a file goes through ``shown``: escaped
    (no ESC sequence, newline or text-direction control reaches the terminal) and shortened
    (the full values are in the findings CSV and ``last-run.json``).
    """
    lines = [f"app {shown(app)}: exit {summary['exit_code']} ({shown(summary['outcome'])}), "
             f"{summary['wall_time_s']:.1f}s, Okta reads {summary['okta']['reads']}"]
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
    for note in summary.get("notes", []):
        lines.append(f"  note: {shown(note)}")
    return "\n".join(lines)
