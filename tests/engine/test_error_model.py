"""The error model: what a final failure means by its context, the exit code each error gives,
the order exit codes win in, and the low-water mark a resume starts from."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from oktasync.checkpointer import Watermark
from oktasync.errors import (
    EXIT_GUARD,
    EXIT_INTERNAL,
    EXIT_LISTING,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_USAGE,
    EXIT_WRITES_FAILED,
    Backoff,
    Cause,
    Consequence,
    Context,
    CredentialsError,
    ItemFailed,
    ListingError,
    RunStops,
    Stage,
    StateDirError,
    TargetReadError,
    UsageError,
    answer_failure,
    collapse,
    consequence_of_status,
    exit_code_of,
    no_answer,
    worst,
)

# -- what a request that finally failed means, by what it was for ----------------------------
CONTEXT_TABLE = [
    (Context.LISTING, RunStops, EXIT_LISTING),
    (Context.LOOKUP, ItemFailed, EXIT_WRITES_FAILED),
    (Context.WRITE, ItemFailed, EXIT_WRITES_FAILED),
]


@pytest.mark.parametrize(("context", "kind", "code"), CONTEXT_TABLE)
def test_a_final_failure_means_what_its_context_says(
    context: Context, kind: type[Exception], code: int,
) -> None:
    answered = answer_failure(context, "jira", "GET", "/rest/api/2/user", 500, "boom",
                              "user list")
    cause = Cause(Stage.CONNECT, "connection refused", "check the server")
    silent = no_answer(context, "jira", "http://127.0.0.1:1", "GET", URL("http://127.0.0.1:1/x"),
                       cause, 3, 0.5, 1.0)
    for error in (answered, silent):
        assert isinstance(error, kind)
        assert exit_code_of(error) == code
    assert str(answered) == "jira: user list: GET /rest/api/2/user: HTTP 500: boom"
    assert silent.status is None and silent.cause is cause and silent.attempts == 3


STATUS_TABLE = [
    *[(s, None) for s in (200, 201, 204, 302, 400, 402, 403, 404, 409, 410, 422)],
    *[(s, Consequence.RETRY) for s in (408, 429, 500, 502, 503, 504)],
    (401, Consequence.RUN_STOPS),
]


@pytest.mark.parametrize(("status", "consequence"), STATUS_TABLE)
def test_what_a_status_does_before_any_caller_reads_it(
    status: int, consequence: Consequence | None,
) -> None:
    assert consequence_of_status(status) is consequence


# -- the error → exit code table --------------------------------------------------------------
EXIT_TABLE = [
    (UsageError("x"), EXIT_USAGE),
    (CredentialsError("x"), EXIT_USAGE),
    (StateDirError("x"), EXIT_USAGE),
    (ListingError("x"), EXIT_LISTING),
    (TargetReadError("x"), EXIT_LISTING),
    (ItemFailed("x"), EXIT_WRITES_FAILED),
    (RuntimeError("a bug"), EXIT_INTERNAL),
    (KeyError("a bug"), EXIT_INTERNAL),
]


@pytest.mark.parametrize(("error", "code"), EXIT_TABLE)
def test_each_error_has_one_exit_code(error: BaseException, code: int) -> None:
    assert exit_code_of(error) == code


def test_each_stop_says_its_outcome_in_words() -> None:
    assert "nothing that removes access" in ListingError.outcome
    assert StateDirError.outcome == "stopped: the state directory cannot be written"
    assert CredentialsError.outcome == "stopped"


@given(st.lists(st.sampled_from([EXIT_OK, EXIT_WRITES_FAILED, EXIT_USAGE, EXIT_GUARD,
                                 EXIT_LISTING, EXIT_INTERNAL, EXIT_SIGINT, EXIT_SIGTERM]),
                min_size=1))
def test_the_worst_exit_code_wins_in_the_semantics_order(codes: list[int]) -> None:
    order = [EXIT_SIGTERM, EXIT_SIGINT, EXIT_INTERNAL, EXIT_LISTING, EXIT_GUARD, EXIT_USAGE,
             EXIT_WRITES_FAILED, EXIT_OK]
    assert worst(*codes) == next(c for c in order if c in codes)


def test_of_several_stops_at_once_rejected_credentials_are_reported() -> None:
    listing, creds = ListingError("listing broke"), CredentialsError("jira rejected")
    group = BaseExceptionGroup("tasks", [listing, ExceptionGroup("inner", [creds])])
    assert collapse(group) is creds
    assert collapse(BaseExceptionGroup("tasks", [RuntimeError("bug"), listing])) is listing


# -- backoff bounds ---------------------------------------------------------------------------
@given(st.integers(min_value=1, max_value=40), st.integers(min_value=0, max_value=2**32))
def test_backoff_stays_within_half_to_all_of_its_ceiling(attempt: int, seed: int) -> None:
    backoff = Backoff(base_s=0.2, factor=2.0, max_s=30.0)
    ceiling = min(30.0, 0.2 * 2.0 ** (attempt - 1))
    delay = backoff.delay(attempt, random.Random(seed))
    assert ceiling / 2 <= delay <= ceiling


# -- the low-water mark -----------------------------------------------------------------------
@given(st.integers(min_value=0, max_value=60).flatmap(
    lambda n: st.tuples(st.just(n), st.permutations(range(n)), st.integers(0, n))))
def test_the_mark_passes_exactly_the_users_done_without_a_gap(
    case: tuple[int, list[int], int],
) -> None:
    issued, order, finished = case
    mark = Watermark()
    names = [f"user{i:03d}" for i in range(issued)]
    assert [mark.issue(n) for n in names] == list(range(issued))
    done = set(order[:finished])
    for seq in order[:finished]:
        mark.finish(seq)
    prefix = next((i for i in range(issued) if i not in done), issued)
    assert mark.mark_name == (names[prefix - 1] if prefix else None)
    assert mark.finished == finished
