"""The Atlassian limiter's slot on its own: the caps hold, and a cancelled waiter gives back
what it took (the slot is a hand-written ``__aenter__``/``__aexit__`` pair, so its cleanup
is not a ``finally`` the language writes for us)."""

from __future__ import annotations

import asyncio

import pytest

from oktasync.ratelimit import AtlassianLimiter, InFlight


@pytest.mark.asyncio
async def test_concurrency_and_global_caps_hold() -> None:
    global_cap = InFlight(3)
    limiters = [AtlassianLimiter(concurrency=2, max_rps=0, global_limit=global_cap)
                for _ in range(2)]
    busy, peak, per_target_peak = 0, 0, [0, 0]
    per_target = [0, 0]

    async def request(i: int) -> None:
        nonlocal busy, peak
        async with limiters[i % 2].slot("default"):
            busy += 1
            per_target[i % 2] += 1
            peak = max(peak, busy)
            per_target_peak[i % 2] = max(per_target_peak[i % 2], per_target[i % 2])
            await asyncio.sleep(0.01)
            busy -= 1
            per_target[i % 2] -= 1

    await asyncio.gather(*(request(i) for i in range(20)))
    assert peak == 3  # the global cap, reached and never passed
    assert per_target_peak == [2, 2]


@pytest.mark.asyncio
async def test_a_cancelled_waiter_gives_its_slots_back() -> None:
    global_cap = InFlight(1)
    limiter = AtlassianLimiter(concurrency=1, max_rps=0, global_limit=global_cap)
    limiter.observe("default", 429, {"Retry-After": "30"})  # everyone now waits 30 s

    waiter = asyncio.create_task(limiter.slot("default").__aenter__())
    await asyncio.sleep(0.05)
    assert not waiter.done()  # holding both semaphores, waiting out the pause
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    assert not global_cap.locked()  # both given back: the next request is not stuck
    limiter._paused_until = 0.0  # the pause is over
    async with asyncio.timeout(1):
        async with limiter.slot("default"):
            assert global_cap.locked()
