"""Every error the engine can meet, classed by outcome in one place.

Rule 2 of the design card: an error is *retried*, *skipped and reported*, or *aborts* the
run, and that decision is made here, not scattered through the clients. Backoff is built from
small policy pieces (``Backoff``, ``RetryPolicy``) composed by the HTTP layer's loop — never
retries by recursion.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

import aiohttp


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

    def should_retry(self, attempt: int, elapsed_s: float) -> bool:
        return attempt < self.max_attempts and elapsed_s < self.max_elapsed_s


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
