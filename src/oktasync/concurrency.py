"""How the run's tasks share work and stop together.

``each_concurrently``: a fixed pool of workers over a list of items, after anyio's memory
object streams. ``Stopper``: the one error that stops a run, while the rest finish.

Thousands of groups must not become thousands of live tasks (each with its own buffers) at
once: a finite stream, one ``clone()`` per worker, the stream ends when its sender closes, and
one task group owns every worker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import anyio
import structlog
from anyio.abc import ObjectReceiveStream

from oktasync.errors import RunStops, precedence

log = structlog.get_logger("oktasync.pipeline")
T = TypeVar("T")

READ_WORKERS = 16  # tasks reading groups at once; the server's limiter still caps requests


async def each_concurrently(
    items: Iterable[T], work: Callable[[T], Awaitable[None]], workers: int = READ_WORKERS,
) -> None:
    """``work`` on every item by a fixed pool of workers: thousands of groups do not become
    thousands of live tasks (each with its own buffers) at once."""
    todo = list(items)
    send, receive = anyio.create_memory_object_stream[T](max(1, len(todo)))

    async def worker(stream: ObjectReceiveStream[T]) -> None:
        async with stream:
            async for item in stream:
                await work(item)

    async with anyio.create_task_group() as tg:
        for _ in range(max(1, min(workers, len(todo)))):
            tg.start_soon(worker, receive.clone())
        receive.close()
        async with send:
            for item in todo:
                send.send_nowait(item)


class Stopper:
    """The error that stops the run, kept while the other tasks finish what is in flight.

    A task that meets a ``RunStops`` hands it here instead of raising it: raising would cancel
    every sibling mid-request, and the writes that landed would go uncounted. Every loop stops
    taking new work once ``stopping`` is true; the phase then raises the error (``check``).
    When several tasks stop the run, the one reported follows ``errors.precedence``.
    """

    def __init__(self) -> None:
        self.error: RunStops | None = None

    @property
    def stopping(self) -> bool:
        return self.error is not None

    async def guarded(self, task: Callable[..., Awaitable[None]], *args: Any) -> None:
        try:
            await task(*args)
        except RunStops as exc:
            if self.error is None or precedence(exc) < precedence(self.error):
                self.error = exc
            log.error("stopping", reason=str(exc))

    def check(self) -> None:
        """End a phase: raise the error that stopped it, if any."""
        if self.error is not None:
            raise self.error
