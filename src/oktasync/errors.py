"""Every error the engine can meet, classed by outcome in one place.

Rule 2 of the design card: a failure is turned, once, where it is first understood, into one
of three consequences: it is *retried* (the HTTP loop, with its backoff), *this item failed*
(``ItemFailed``: reported, the run goes on) or *this run stops* (``RunStops``: carrying its
exit code). What a request that finally failed means is declared by its caller's ``Context``
and read from one table, ``FAILURE_OF``; exit codes and their order live here too. Backoff is
built from small policy pieces (``Backoff``, ``RetryPolicy``) composed by the HTTP layer's
loop — never retries by recursion.
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


class Consequence(Enum):
    """What a failure does, whoever meets it: the three kinds of rule 2."""

    RETRY = "retry"  # transient: wait and send again (every write is safe to repeat)
    ITEM_FAILED = "item failed"  # this user or write failed: reported, the run goes on
    RUN_STOPS = "run stops"  # the run cannot go on (credentials rejected, a listing broken)


class Context(Enum):
    """What a request is for, declared by its caller: it decides what a request that finally
    failed means (``FAILURE_OF``), so no code that catches the error decides again."""

    LISTING = "listing"  # a page of a listing, or a read the whole plan depends on
    LOOKUP = "lookup"  # one account looked up for one user's plan
    WRITE = "write"  # one write


RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
CREDENTIALS_STATUSES = frozenset({401})


def consequence_of_status(status: int) -> Consequence | None:
    """None for an answer the caller reads (< 400, or a 4xx that its endpoint's table
    interprets: 404 "absent", 400 "already exists"); otherwise what the status does."""
    if status in RETRY_STATUSES:
        return Consequence.RETRY
    if status in CREDENTIALS_STATUSES:
        return Consequence.RUN_STOPS
    return None


TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    TimeoutError,
)


def consequence_of_exception(exc: BaseException) -> Consequence:
    """Connection resets, timeouts, truncated bodies and a proxy's 5xx to a CONNECT are
    transient; anything else is a bug, and is raised as it is (exit 70)."""
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return Consequence.RETRY if exc.status in RETRY_STATUSES else Consequence.RUN_STOPS
    return Consequence.RETRY if isinstance(exc, TRANSIENT_EXCEPTIONS) else Consequence.RUN_STOPS


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
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return Cause(Stage.CONNECT, f"the proxy cannot be reached ({_os_words(exc.os_error)})",
                     "check proxy (okta_proxy for Okta) or HTTPS_PROXY, and that the proxy "
                     "is running")
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return Cause(Stage.CONNECT, f"the proxy answered {exc.status} {exc.message}".strip(),
                     "check the proxy's health, and that it may connect to this server")
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


PROXY_CREDENTIALS = ("check proxy_username and proxy_password (okta_proxy_username and "
                     "okta_proxy_password for Okta), or the credentials in HTTPS_PROXY")


def no_retry_cures(server: str, base_url: str, exc: BaseException) -> RunStops | None:
    """A transport failure that only a setting can cure, as the run's stop (exit 2): a TLS
    certificate refused either way, or the proxy refusing us. None: judge it as usual."""
    if isinstance(exc, aiohttp.ClientHttpProxyError) and exc.status in (401, 403, 407):
        where = f"{server}: the proxy refused to connect to {public_url(base_url)}"
        if exc.status == 403:
            return UsageError(f"{where} (HTTP 403): ask its administrators to allow it, or "
                              "list the host in NO_PROXY if it needs no proxy")
        return CredentialsError(f"{where} (HTTP {exc.status}, proxy authentication): "
                                f"{PROXY_CREDENTIALS}")
    return certificate_refused(server, base_url, exc)


def certificate_refused(server: str, base_url: str, exc: BaseException) -> UsageError | None:
    """A TLS failure that no retry can cure, as the run's stop (exit 2) saying what to set:
    the server's certificate not trusted (a private CA: ``ca_bundle``), not for this host name,
    or the server wanting a client certificate (``client_cert``). None for anything else."""
    tls = _ssl_error_of(exc)
    if tls is None:
        return None
    verify = getattr(tls, "verify_message", None)
    reason = str(getattr(tls, "reason", "") or "").upper()
    where = f"{server}: cannot connect to {public_url(base_url)}"
    setting = "okta_ca_bundle" if server.startswith("Okta") else "ca_bundle"
    if verify and "hostname" in verify.lower():
        return UsageError(f"{where}: its TLS certificate is not for this host ({verify}); use "
                          "in the url a host name the certificate holds")
    if verify:
        return UsageError(f"{where}: its TLS certificate is not trusted ({verify}); if a "
                          f"private CA signed it, set {setting} to that CA's PEM file")
    if "CERTIFICATE_REQUIRED" in reason or "BAD_CERTIFICATE" in reason or \
            "UNKNOWN_CA" in reason:
        return UsageError(f"{where}: the server refused our TLS client certificate or wants "
                          f"one ({reason.replace('_', ' ').lower()}); set client_cert and "
                          "client_key to a certificate it accepts")
    return None


def _ssl_error_of(exc: BaseException) -> ssl.SSLError | None:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        return error if isinstance(error, ssl.SSLError) else None
    inner = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(inner, ssl.SSLError):
        return inner
    cause = exc.__cause__ or exc.__context__
    return cause if isinstance(cause, ssl.SSLError) else None


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


# Exit codes (the semantics page), and the order in which they win when several apply.
EXIT_OK, EXIT_WRITES_FAILED, EXIT_USAGE, EXIT_GUARD, EXIT_LISTING = 0, 1, 2, 3, 4
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
EXIT_INTERNAL = 70  # sysexits' EX_SOFTWARE: a bug, which the semantics page has no code for
SEVERITY = [EXIT_SIGTERM, EXIT_SIGINT, EXIT_INTERNAL, EXIT_LISTING, EXIT_GUARD, EXIT_USAGE,
            EXIT_WRITES_FAILED, EXIT_OK]


def worst(*codes: int) -> int:
    """The most serious exit code: 130/143, then 70 (a bug), 4, 3, 2, 1, 0 (the semantics'
    order, with an internal error placed where it cannot hide behind a milder code)."""
    return min(codes, key=SEVERITY.index) if codes else EXIT_OK


class SyncError(Exception):
    """Base of the engine's own errors; ``str()`` is a message fit for an administrator."""


class FullSyncNeeded(SyncError):
    """An incremental run cannot vouch for what it would read (a System Log position Okta
    refuses or no longer keeps, more changes than ``full_sync_threshold``, other settings):
    found before any write, it becomes a full sync, and the summary says why."""


class ItemFailed(SyncError):
    """One user's or one write's failure: reported with this message, and the run goes on."""


class RunStops(SyncError):
    """The run cannot go on. Carries what the run's end says: its exit code and the outcome
    in words. Removals are never written after one (the gate is behind every listing)."""

    exit_code = EXIT_USAGE
    outcome = "stopped"


class UsageError(RunStops):
    """A mistake in what the user asked for, or a state directory that cannot be written
    (exit 2)."""


class StateDirError(UsageError):
    """The state directory cannot be written (a full disk, permissions): exit 2."""

    outcome = "stopped: the state directory cannot be written"


class CredentialsError(RunStops):
    """A server rejected our credentials (exit 2)."""


class ListingError(RunStops):
    """A listing (Okta's or a target's) failed or ended early after retries (exit 4): never
    taken for the truth, so nothing that removes access is written."""

    exit_code = EXIT_LISTING
    outcome = "a listing failed: nothing that removes access was written"


class TargetReadError(ListingError):
    """A target's state could not be read: planning against it would be blind (exit 4)."""


# When several tasks stop the run at once, the one reported (lower first): a rejected
# credential explains the listings that fail with it.
STOP_PRECEDENCE: tuple[type[RunStops], ...] = (CredentialsError, ListingError, UsageError)


def precedence(error: BaseException) -> int:
    """Which stopping error the run reports when several happen (lower is reported)."""
    return next((i for i, kind in enumerate(STOP_PRECEDENCE) if isinstance(error, kind)),
                len(STOP_PRECEDENCE))


class RequestFailed(SyncError):
    """A request that still failed after its retries (or got an answer its caller cannot
    use): the server's last answer, or why there was none (``cause``). Never raised as
    itself: ``FAILURE_OF`` gives the kind its caller's context makes it."""

    def __init__(self, message: str, *, method: str, url: str, status: int | None,
                 body: str, cause: Cause | None = None, attempts: int = 0,
                 spent_s: float = 0.0) -> None:
        super().__init__(message)
        self.method, self.url, self.status, self.body, self.cause = (
            method, url, status, body, cause)
        self.attempts, self.spent_s = attempts, spent_s  # how long it tried, when it got no answer


class ListingFailed(RequestFailed, ListingError):
    """A page of a listing (or a read the plan depends on) failed: the run stops, exit 4."""


class LookupFailed(RequestFailed, ItemFailed):
    """An account could not be looked up: that user failed, the run goes on."""


class WriteFailed(RequestFailed, ItemFailed):
    """A write failed after its retries: that write failed, the run goes on."""


# What a request that finally failed means, by what it was for: the one table.
FAILURE_OF: dict[Context, type[RequestFailed]] = {
    Context.LISTING: ListingFailed,
    Context.LOOKUP: LookupFailed,
    Context.WRITE: WriteFailed,
}


def answer_failure(context: Context, server: str, method: str, path: str, status: int,
                   body: str, what: str | None = None) -> RequestFailed:
    """A request whose last answer was an error (or unusable), as its context makes it;
    ``what``: what the request was for, in words (``users listing``), when the caller says."""
    about = f"{what}: " if what else ""
    return FAILURE_OF[context](f"{server}: {about}{method} {path}: HTTP {status}: {body[:300]}",
                               method=method, url=path, status=status, body=body)


def no_answer(context: Context, server: str, base_url: str, method: str, url: URL,
              cause: Cause, attempts: int, spent_s: float, timeout_s: float | None,
              deadline: str | None = None) -> RequestFailed:
    """A request that got no HTTP answer at all, after its retries or its deadline.

    The message names the server as the config names it, its base URL (no path, query or
    credentials), the cause in plain words, how long it tried and, when the request's deadline
    is what stopped it, that deadline; e.g. ``jira: cannot connect to https://jira.example.com
    (connection refused); gave up after 8 attempts over 20 s; check that ...``.
    """
    base, path = public_url(base_url), url.path
    tries = (f"gave up after {attempts} attempt{'s' if attempts != 1 else ''} over "
             f"{seconds(spent_s)} s")
    if deadline is not None:
        tries += f", {deadline}"
    hint = cause.hint
    if cause.stage is Stage.DROPPED and base.startswith("https:"):
        # TLS 1.3 servers refuse a missing client certificate after the handshake, by closing
        hint += ("; a server that requires a client certificate (mutual TLS) closes "
                 "connections without one: set client_cert and client_key")
    if cause.stage is Stage.CONNECT:
        text = f"{server}: cannot connect to {base} ({cause.words})"
    elif cause.stage is Stage.ANSWER and timeout_s is not None:
        text = f"{server}: no answer from {base} within {seconds(timeout_s)} s ({method} {path})"
    else:
        text = f"{server}: {base} gave no answer ({cause.words}; {method} {path})"
    return FAILURE_OF[context](f"{text}; {tries}; {hint}", method=method,
                               url=str(url.with_query(None).with_fragment(None)), status=None,
                               body=cause.words, cause=cause, attempts=attempts, spent_s=spent_s)


def exit_code_of(error: BaseException) -> int:
    """The exit code an error that ended a run means: the one place it is derived."""
    if isinstance(error, RunStops):
        return error.exit_code
    if isinstance(error, ItemFailed):
        return EXIT_WRITES_FAILED
    return EXIT_INTERNAL


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
    stops = [e for e in found if isinstance(e, SyncError)]
    if stops:
        return min(stops, key=precedence)
    return next((e for e in found if not isinstance(e, (KeyboardInterrupt, SystemExit))),
                found[0])
