"""The AIMD controller of a target's concurrency on its own: deterministic, no server, no clock.

``Pipe`` plays the requests in flight: the limiter lets ``limit`` requests out, each carries
the controller's epoch from when it was sent, and answers come back oldest first. A seeded
``random.Random`` decides which answers are 503s, so every run of these tests is the same.
Then ``AtlassianLimiter``'s slots: they follow the window, and a cancelled request queued for
one never keeps it.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable

import pytest

from oktasync.ratelimit import AdaptiveConcurrency, AtlassianLimiter


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


# -- the limiter's slots follow the window ----------------------------------------------------

async def peak_in_flight(limiter: AtlassianLimiter, requests: int) -> int:
    busy = peak = 0

    async def request() -> None:
        nonlocal busy, peak
        async with limiter.slot("default"):
            busy += 1
            peak = max(peak, busy)
            await asyncio.sleep(0.002)
            busy -= 1

    await asyncio.gather(*(request() for _ in range(requests)))
    return peak


@pytest.mark.asyncio
async def test_the_limiters_slots_follow_the_window() -> None:
    limiter = AtlassianLimiter(concurrency=8, max_rps=0)
    window = limiter.concurrency
    assert window is not None
    assert await peak_in_flight(limiter, 40) == 8
    while window.limit > 1:  # a server answering only 503s, one round trip after another
        limiter.observe("default", 503, {}, window.epoch)
    assert await peak_in_flight(limiter, 40) == 1
    while window.share >= window.OVERLOAD_SHARE or window.limit < 3:  # it copes again
        limiter.observe("default", 200, {})
    assert await peak_in_flight(limiter, 40) == window.limit >= 3


@pytest.mark.asyncio
async def test_a_cancelled_queued_request_passes_its_slot_on() -> None:
    limiter = AtlassianLimiter(concurrency=1, max_rps=0)
    holder = limiter.slot("default")
    await holder.__aenter__()
    queued = asyncio.create_task(limiter.slot("default").__aenter__())
    third = asyncio.create_task(limiter.slot("default").__aenter__())
    await asyncio.sleep(0.01)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    await holder.__aexit__(None, None, None)
    async with asyncio.timeout(1):
        await third  # the slot went past the cancelled request
    # woken and cancelled in the same step: the slot it was handed is passed on, not lost
    fourth = asyncio.create_task(limiter.slot("default").__aenter__())
    fifth = asyncio.create_task(limiter.slot("default").__aenter__())
    await asyncio.sleep(0.01)
    await limiter.__aexit__(None, None, None)  # the third's slot: handed to the fourth
    fourth.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fourth
    async with asyncio.timeout(1):
        await fifth
