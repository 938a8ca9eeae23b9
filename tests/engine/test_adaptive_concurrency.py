"""The AIMD controller of a target's concurrency on its own: deterministic, no server, no clock.

``Pipe`` plays the requests in flight: the limiter lets ``limit`` requests out, each carries
the controller's epoch from when it was sent, and answers come back oldest first. A seeded
``random.Random`` decides which answers are 503s, so every run of these tests is the same.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

import pytest

from oktasync.ratelimit import AdaptiveConcurrency


class Pipe:
    """Requests in flight against a controller: always ``limit`` of them, answered in order."""

    def __init__(self, controller: AdaptiveConcurrency) -> None:
        self.controller = controller
        self.in_flight: deque[int] = deque()
        self.limits: list[int] = []

    def answer(self, overloaded: bool) -> None:
        while len(self.in_flight) < self.controller.limit:
            self.in_flight.append(self.controller.epoch)
        epoch = self.in_flight.popleft()
        if overloaded:
            self.controller.overloaded(epoch)
        else:
            self.controller.succeeded()
        self.limits.append(self.controller.limit)

    def run(self, answers: int, fails: Callable[[int], bool]) -> None:
        for i in range(answers):
            self.answer(fails(i))


def seeded(share: float, seed: int = 1) -> Callable[[int], bool]:
    rng = random.Random(seed)
    return lambda _: rng.random() < share


def test_starts_at_the_ceiling_and_successes_never_pass_it() -> None:
    pipe = Pipe(AdaptiveConcurrency(16))
    pipe.run(5_000, lambda _: False)
    assert set(pipe.limits) == {16}
    assert pipe.controller.decreases == 0


@pytest.mark.parametrize("share", [0.01, 0.05])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_503s_at_a_few_percent_leave_concurrency_alone(share: float, seed: int) -> None:
    pipe = Pipe(AdaptiveConcurrency(16))
    pipe.run(20_000, seeded(share, seed))
    assert pipe.controller.decreases == 0
    assert pipe.controller.lowest == 16


def test_one_in_ten_failing_costs_little_concurrency() -> None:
    pipe = Pipe(AdaptiveConcurrency(16))
    pipe.run(20_000, seeded(0.10))
    assert sum(pipe.limits) / len(pipe.limits) >= 14, pipe.controller.decreases


@pytest.mark.parametrize("share", [0.6, 0.9, 1.0])
def test_a_server_answering_mostly_503_gets_much_less_concurrency(share: float) -> None:
    pipe = Pipe(AdaptiveConcurrency(16))
    pipe.run(200, seeded(share))
    assert pipe.controller.lowest == 1
    assert max(pipe.limits[-100:]) <= 2, pipe.limits[-100:]


def test_one_burst_of_failures_halves_once_per_round_trip() -> None:
    controller = AdaptiveConcurrency(16)
    sent = [controller.epoch] * 16  # one round: sixteen requests sent before any answer
    for epoch in sent:
        controller.overloaded(epoch)
    assert controller.limit == 8
    assert controller.decreases == 1
    # the next round, sent after the decrease, decreases once more
    for epoch in [controller.epoch] * 8:
        controller.overloaded(epoch)
    assert controller.limit == 4
    assert controller.decreases == 2


def test_recovers_to_the_ceiling_once_the_server_answers_again() -> None:
    pipe = Pipe(AdaptiveConcurrency(16))
    pipe.run(300, lambda _: True)
    assert pipe.controller.limit == 1
    pipe.run(400, lambda _: False)
    assert pipe.controller.limit == 16
    # additive: one step at a time, never a jump
    steps = [b - a for a, b in zip(pipe.limits[300:], pipe.limits[301:], strict=False)]
    assert set(steps) <= {0, 1}


def test_floor_and_ceiling_of_one() -> None:
    pipe = Pipe(AdaptiveConcurrency(1))
    pipe.run(500, seeded(0.5))
    assert set(pipe.limits) == {1}


def test_ceiling_must_be_positive() -> None:
    with pytest.raises(ValueError):
        AdaptiveConcurrency(0)
