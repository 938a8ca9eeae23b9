"""Every error the engine can meet, classed by outcome in one place.

Rule 2 of the design card: an error is *retried*, *skipped and reported*, or *aborts* the
run, and that decision is made here, not scattered through the clients. Backoff is built from
small policy pieces (``Backoff``, ``RetryPolicy``) composed by the HTTP layer's loop — never
retries by recursion.
"""

from __future__ import annotations

import errno
import random
import socket
import ssl
from dataclasses import dataclass
from enum import Enum

import aiohttp
from yarl import URL


class Outcome(Enum):
    RETRY = "retry"  # transient: wait and send again (every write is safe to repeat)
    SKIP = "skip"  # this item fails; report it and go on
    ABORT = "abort"  # the run cannot go on (credentials rejected, listing broken)


RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
ABORT_STATUSES = frozenset({401})


def classify_status(status: int) -> Outcome | None:
    """None for success (< 400); otherwise what to do with an HTTP answer of this status."""
    if status < 400:
        return None
    if status in RETRY_STATUSES:
        return Outcome.RETRY
    if status in ABORT_STATUSES:
        return Outcome.ABORT
    return Outcome.SKIP


TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    TimeoutError,
)


def classify_exception(exc: BaseException) -> Outcome:
    """Connection resets, timeouts and truncated bodies are transient; anything else aborts."""
    return Outcome.RETRY if isinstance(exc, TRANSIENT_EXCEPTIONS) else Outcome.ABORT


class Stage(Enum):
    """How far a request got before it failed: what the administrator should look at."""

    CONNECT = "connect"  # no connection: the URL, DNS, TLS, a firewall, the server is down
    ANSWER = "answer"  # connected and sent, no answer in time: the server is stuck or slow
    DROPPED = "dropped"  # the connection ended before a whole answer: the server or a proxy


@dataclass(frozen=True)
class Cause:
    """Why a request got no answer, in an administrator's words, and what to check."""

    stage: Stage
    words: str
    hint: str


def cause_of(exc: BaseException, timeout_s: float) -> Cause:
    """The transport error of one attempt in plain words: never a repr (aiohttp's carry a
    ``ConnectionKey`` with every connection setting), never a URL (the caller names the
    server's base URL, which holds no query string and no credentials)."""
    tls = _tls_error(exc)
    if tls is not None:
        return Cause(Stage.CONNECT, f"TLS problem: {tls}",
                     "check the certificate, and that the url's scheme matches the server")
    os_error = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else None
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or isinstance(os_error, socket.gaierror):
        return Cause(Stage.CONNECT, "name not resolved", "check the host name in the url")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return Cause(Stage.CONNECT, f"timed out connecting after {seconds(timeout_s)} s",
                     "check the url, and that no firewall drops the connection")
    if isinstance(os_error, ConnectionRefusedError):
        return Cause(Stage.CONNECT, "connection refused",
                     "check that the server is running and the url's port is right")
    if os_error is not None:
        return Cause(Stage.CONNECT, _os_words(os_error), "check the url and the network")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return Cause(Stage.DROPPED, "the server closed the connection without answering",
                     "check the server's health and any proxy in between")
    if isinstance(exc, ConnectionResetError) or getattr(exc, "errno", None) == errno.ECONNRESET:
        return Cause(Stage.DROPPED, "connection reset",
                     "check the server's health and any proxy in between")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return Cause(Stage.DROPPED, "the answer was cut short",
                     "check the server's health and any proxy in between")
    if isinstance(exc, TimeoutError):
        return Cause(Stage.ANSWER, f"timed out after {seconds(timeout_s)} s",
                     "the server accepts connections but does not answer; check its health, "
                     "or raise timeout_s")
    if isinstance(exc, OSError):
        return Cause(Stage.DROPPED, _os_words(exc), "check the server and the network")
    return Cause(Stage.DROPPED, type(exc).__name__, "check the server and the network")


def _tls_error(exc: BaseException) -> str | None:
    """The TLS failure inside ``exc`` (aiohttp wraps ``ssl`` errors), in words, or None."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error: BaseException = exc.certificate_error
    elif isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, ssl.SSLError):
        error = exc.os_error
    elif isinstance(exc, ssl.SSLError):
        error = exc
    else:
        return None
    verify = getattr(error, "verify_message", None)
    if verify:
        return f"certificate not accepted ({verify})"
    reason = getattr(error, "reason", None)
    return str(reason).replace("_", " ").lower() if reason else "handshake failed"


def _os_words(error: OSError) -> str:
    return (error.strerror or type(error).__name__).lower()


def seconds(value: float) -> str:
    """A duration as people write it: ``0.5``, ``4``, ``12``, ``40``."""
    return f"{value:.1f}".removesuffix(".0") if value < 10 else f"{value:.0f}"


def public_url(url: str) -> str:
    """A base URL fit to print: no credentials, no query string, no fragment."""
    try:
        shown = URL(url).with_user(None).with_query(None).with_fragment(None)
    except (TypeError, ValueError):
        return "the configured url"
    return str(shown).rstrip("/")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: spreads retries so a burst of failures does not
    come back as a synchronized storm."""

    base_s: float = 0.2
    factor: float = 2.0
    max_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.max_s, self.base_s * self.factor ** max(0, attempt - 1))
        return (rng or random).uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class RetryPolicy:
    """How long one request keeps trying before its error is classed SKIP (or, for a
    listing, breaks the listing)."""

    max_attempts: int = 8
    max_elapsed_s: float = 600.0
    backoff: Backoff = Backoff()
    # A 503 without Retry-After is mostly one request's misfortune (a load balancer met a
    # restarting or busy node): its first retry comes after 10-20 ms, not 100-200 ms, since
    # with sixteen requests in flight 5 % of 503s would otherwise keep a third of the workers
    # idle. An overloaded server is protected by the target's adaptive concurrency, which
    # bounds what retries can add, and the steeper ramp (x3) reaches the same patience as
    # ``backoff`` by the eighth attempt (about 20 s in all).
    unavailable_backoff: Backoff = Backoff(base_s=0.02, factor=3.0)

    def should_retry(self, attempt: int, elapsed_s: float) -> bool:
        return attempt < self.max_attempts and elapsed_s < self.max_elapsed_s

    def delay(self, attempt: int, status: int | None) -> float:
        """The backoff before the next attempt, when the server did not say how long."""
        return (self.unavailable_backoff if status == 503 else self.backoff).delay(attempt)

    def deadline_s(self, timeout_s: float | None) -> float:
        """The most time one request may spend trying: ``max_attempts × timeout_s``, backoff
        and ``Retry-After`` waits included (never more than ``max_elapsed_s``).

        Without it, a server that accepts connections and never answers cost every attempt's
        full timeout *plus* the backoff between them: 8 × 5 s + about 20 s of backoff, 65 s
        for a ``timeout_s`` of 5. Time waiting for the server's rate limits (a slot, a token,
        a 429's pause) is pacing, not failing, and is not counted."""
        if timeout_s is None:
            return self.max_elapsed_s
        return min(self.max_elapsed_s, self.max_attempts * timeout_s)

    def deadline_words(self, timeout_s: float | None) -> str:
        """The deadline as a message says it: ``at most 8 × timeout_s = 40 s per request``."""
        deadline = self.deadline_s(timeout_s)
        if timeout_s is not None and deadline == self.max_attempts * timeout_s:
            return f"at most {self.max_attempts} × timeout_s = {seconds(deadline)} s per request"
        return f"at most {seconds(deadline)} s per request"


class SyncError(Exception):
    """Base of the engine's own errors; ``str()`` is a message fit for an administrator."""


class UsageError(SyncError):
    """A mistake in what the user asked for (exit 2, nothing written)."""


class CredentialsError(SyncError):
    """A server rejected our credentials (exit 2)."""


class ListingError(SyncError):
    """An Okta listing failed or ended early after retries (exit 4): never taken for the truth."""


class TargetReadError(SyncError):
    """A target's state could not be read after retries: planning against it would be blind."""


class HttpFailure(SyncError):
    """A request that still failed after its retries, with the server's answer."""

    def __init__(self, method: str, url: str, status: int | None, body: str) -> None:
        self.method, self.url, self.status, self.body = method, url, status, body
        shown = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"{method} {url}: {shown}: {body[:300]}")


class NoAnswer(HttpFailure):
    """A request that got no HTTP answer at all, after its retries or its deadline.

    The message names the server as the config names it, its base URL (no path, query or
    credentials), the cause in plain words, how long it tried and, when the request's deadline
    is what stopped it, that deadline; e.g. ``jira: cannot connect to https://jira.example.com
    (connection refused); gave up after 8 attempts over 20 s; check that ...``.
    ``deadline``: the deadline in words, if reaching it is why the request gave up.
    """

    def __init__(self, server: str, base_url: str, method: str, url: URL, cause: Cause,
                 attempts: int, spent_s: float, timeout_s: float | None,
                 deadline: str | None = None) -> None:
        self.server, self.cause, self.attempts, self.spent_s = server, cause, attempts, spent_s
        base, path = public_url(base_url), url.path
        tries = (f"gave up after {attempts} attempt{'s' if attempts != 1 else ''} over "
                 f"{seconds(spent_s)} s")
        if deadline is not None:
            tries += f", {deadline}"
        if cause.stage is Stage.CONNECT:
            text = f"{server}: cannot connect to {base} ({cause.words})"
        elif cause.stage is Stage.ANSWER and timeout_s is not None:
            text = (f"{server}: no answer from {base} within {seconds(timeout_s)} s "
                    f"({method} {path})")
        else:
            text = f"{server}: {base} gave no answer ({cause.words}; {method} {path})"
        SyncError.__init__(self, f"{text}; {tries}; {cause.hint}")
        self.method, self.status, self.body = method, None, cause.words
        self.url = str(url.with_query(None).with_fragment(None))


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, in order."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def collapse(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error a task group's failure means for the run.

    anyio task groups wrap whatever their tasks raise in exception groups; the run's outcome
    (exit code, message) depends on the most serious error inside, not on the wrapping.
    """
    found = leaves(group)
    for kind in (CredentialsError, ListingError, TargetReadError, HttpFailure, UsageError,
                 SyncError):
        for error in found:
            if isinstance(error, kind):
                return error
    return next((e for e in found if not isinstance(e, (KeyboardInterrupt, SystemExit))),
                found[0])
