"""The audit trail: one CSV row per write attempted, as it happens (issue 13).

An auditor asks who was deactivated last Tuesday, by which run, and why; the findings CSV
holds problems only. Every write's final outcome passes through ``TargetTally.wrote``, which
hands it here: one writer per run, rows streamed to a buffered file that is handed to the
kernel before every checkpoint is saved (``Checkpointer.save``), so a ``kill -9`` loses only
rows of writes the checkpoint does not hold yet — which the resumed run redoes and audits
again. Nothing is held in memory: a million writes cost what one does. A resumed run (same
run id) appends to the same file.
Dry runs keep no audit: their plan CSV is their record.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import IO, Any

from oktasync.models import Operation, WriteResult

AUDIT_HEADER = ["time", "run_id", "target", "operation", "username", "okta_id", "before",
                "after", "outcome", "attempts", "status", "detail"]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_FORMULA = frozenset(FORMULA_STARTS)
COMMAS = len(AUDIT_HEADER) - 1  # in a row none of whose values needs quoting


class AuditTrail:
    """The run's audit CSV, opened on its first row (a run that writes nothing leaves none)."""

    def __init__(self, path: Path, run_id: str) -> None:
        self.path, self.run_id = path, run_id
        self.rows = 0
        self._second, self._stamp = -1, ""  # the time column, formatted once per second
        self._handle: IO[str] | None = None
        self._writer: Any = None  # a csv writer (its type is private to _csv)

    def row(self, target: str, op: Operation, result: WriteResult) -> None:
        """One write attempted: its outcome, the HTTP requests it took, the last status."""
        writer = self._writer or self._open()
        now = int(time.time())
        if now != self._second:
            self._second, self._stamp = now, time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                           time.gmtime(now))
        username, before, after, detail = op.username, op.before, _after(op), result.detail
        # a value a spreadsheet would run as a formula gets a leading ' (OWASP's advice for
        # CSV injection), the value otherwise whole; inline: this runs once per write
        if username[:1] in _FORMULA:
            username = "'" + username
        if before[:1] in _FORMULA:
            before = "'" + before
        if after[:1] in _FORMULA:
            after = "'" + after
        if detail[:1] in _FORMULA:
            detail = "'" + detail
        status = "" if result.http_status is None else result.http_status
        line = (f"{self._stamp},{self.run_id},{target},{op.kind.value},{username},"
                f"{op.okta_id or ''},{before},{after},{result.status.value},{result.attempts},"
                f"{status},{detail}")
        if line.count(",") == COMMAS and not ('"' in line or "\n" in line or "\r" in line):
            assert self._handle is not None
            self._handle.write(line + "\r\n")  # nothing to quote: what csv would write
        else:
            writer.writerow([self._stamp, self.run_id, target, op.kind.value, username,
                             op.okta_id or "", before, after, result.status.value,
                             result.attempts, status, detail])
        self.rows += 1

    def flush(self) -> None:
        """The rows so far to the kernel (before each checkpoint is saved)."""
        if self._handle is not None:
            self._handle.flush()

    def _open(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._handle = open(  # noqa: SIM115 - open for the run, closed by close()
            self.path, "a", newline="", encoding="utf-8", errors="backslashreplace")
        self._writer = csv.writer(self._handle)  # CRLF, as RFC 4180: a lone \r is quoted
        if new:
            self._writer.writerow(AUDIT_HEADER)
        return self._writer

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = self._writer = None


def _after(op: Operation) -> str:
    """What the write makes, said where the plan left it implicit (a membership's group)."""
    if op.after:
        return op.after
    return op.group or op.new_username or ""

