"""Log lines: human on a terminal, JSON lines elsewhere; every line with its context; no secret.

An operations team ships the logs into its log system as JSON (one object per line, chosen by
``--log-format json`` or by stderr not being a terminal); an administrator at a terminal reads
them as text. Either way every line carries what it is about — ``app``, ``run_id``, ``phase``
and, where it applies, ``target`` and ``operation`` — bound once with ``structlog.contextvars``
where a run or phase starts, never passed by hand. Lines from the standard library's logging
(aiohttp, the emulators in-process) go through the same processors, so a piped stderr holds
JSON lines only.

Two processors guard what reaches the line: every configured secret value is replaced by
``***`` wherever it shows up (a server echoing a token in an error, an exception's traceback —
rendered to text first, so it is redacted too), and every value is escaped and shortened
(``text.shown``): a login cannot drive a terminal or put 100 KB in a line. Lines are written
to whatever ``sys.stderr`` is when each is written, so a live progress display that swaps it
for a proxy prints them above its lines.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import deque
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from oktasync.text import shown

FORMATS = ("human", "json")
MASK = "***"
MIN_SECRET = 6  # shorter values would redact ordinary words and numbers; no real token is
ISSUED_KEPT = 16  # access tokens remembered for redaction (one lives an hour)
VERBOSE = False  # debug lines on (-v): hot paths check this before building a debug line


class Redactor:
    """A structlog processor replacing every configured secret value with ``***``, in every
    field's text. ``secrets`` is replaced whole when the configuration is (re)loaded."""

    def __init__(self) -> None:
        self.secrets: tuple[str, ...] = ()
        self._configured: tuple[str, ...] = ()
        self._issued: deque[str] = deque(maxlen=ISSUED_KEPT)

    def set(self, values: Iterable[str]) -> None:
        """The secret values to redact, longest first (a secret containing another is masked
        whole)."""
        self._configured = tuple(values)
        self._update()

    def add(self, value: str) -> None:
        """A secret obtained at run time (an OAuth access token): redacted too, the newest
        ``ISSUED_KEPT`` of them, so a service renewing tokens for months keeps a short list."""
        self._issued.append(value)
        self._update()

    def _update(self) -> None:
        values = {v for v in (*self._configured, *self._issued) if len(v) >= MIN_SECRET}
        self.secrets = tuple(sorted(values, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def __call__(self, _: Any, __: str,
                 event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if self.secrets:
            for key, value in event.items():
                event[key] = self.clean(value)
        return event

    def clean(self, value: Any) -> Any:
        """``value`` with every secret masked: strings, and the strings inside lists and
        dicts (kept lists and dicts); any other object by its ``repr``."""
        if isinstance(value, str):
            return self.redact(value)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, (list, tuple)):
            return [self.clean(v) for v in value]
        if isinstance(value, dict):
            return {self.clean(k): self.clean(v) for k, v in value.items()}
        return self.redact(repr(value))


REDACTOR = Redactor()


def escape_fields(_: Any, __: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    """Every field of a log line passes through ``shown`` (logins, group names and server
    answers reach log fields; a terminal must never get their control characters or 100 KB of
    them). A rendered traceback (``exception``) is escaped but kept whole."""
    return {key: shown(value, limit=100_000) if key == "exception" and isinstance(value, str)
            else safe(value) for key, value in event.items()}


def safe(value: Any) -> Any:
    """A value fit for a line a terminal may show: strings escaped and shortened
    (``text.shown``), inside lists and dicts too; numbers, booleans and None as they are;
    other objects by ``repr``."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, (list, tuple)):
        return [safe(v) for v in value]
    if isinstance(value, dict):
        return {shown(str(k)): safe(v) for k, v in value.items()}
    return shown(repr(value))


class _CurrentStderr:
    """A structlog logger writing each line to ``sys.stderr`` as it is at that moment."""

    def msg(self, message: str) -> None:
        stream = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


class _CurrentStderrHandler(logging.StreamHandler[Any]):
    """The standard library's lines, to ``sys.stderr`` as it is when each is written."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def chosen_format(asked: str | None) -> str:
    """``--log-format``, else ``OKTASYNC_LOG_FORMAT``, else JSON unless stderr is a terminal."""
    fmt = asked or os.environ.get("OKTASYNC_LOG_FORMAT") or ""
    if fmt in FORMATS:
        return fmt
    return "human" if sys.stderr.isatty() else "json"


def _json_line(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    return json.dumps(event, default=str)  # ASCII: nothing in it can drive a terminal


def configure(fmt: str | None = None, verbosity: int = 0) -> str:
    """Logging for this process; ``verbosity`` -1 (``-q``: warnings and errors), 0 (info),
    1 or more (``-v``: debug). Returns the format chosen."""
    global VERBOSE
    fmt = chosen_format(fmt)
    level = (logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0
             else logging.INFO)
    VERBOSE = level <= logging.DEBUG
    stamp = (structlog.processors.TimeStamper(fmt="iso", utc=True) if fmt == "json"
             else structlog.processors.TimeStamper(fmt="%H:%M:%S"))
    renderer: Any = (_json_line if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=False))
    shared: list[Any] = [structlog.contextvars.merge_contextvars,
                         structlog.processors.add_log_level, stamp]
    last: list[Any] = [structlog.processors.format_exc_info, REDACTOR, escape_fields, renderer]
    structlog.configure(
        processors=[*shared, *last],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_: _CurrentStderr(),
        cache_logger_on_first_use=False)
    handler = _CurrentStderrHandler()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *last]))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    return fmt


def say(event: str, *, level: str = "info", **fields: Any) -> None:
    """A line from the command line itself (an error, a warning), through the same chain."""
    getattr(structlog.get_logger("oktasync"), level)(event, **fields)
