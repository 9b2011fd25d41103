"""CPU time of a coroutine's own steps (bus overhead metrics).

``time.thread_time()`` around an ``await`` would also count whatever other
coroutines the event loop runs while this one is suspended. :func:`timed`
instead drives the coroutine itself and adds up the thread CPU time of each
step (from one resumption to the next suspension), so only the work done by
that coroutine, and by the code it calls synchronously, is counted.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Generator, TypeVar

T = TypeVar("T")


class _Timed:
    __slots__ = ("_coro", "_add")

    def __init__(self, coro: Awaitable[T], add: Callable[[float], None]) -> None:
        self._coro = coro
        self._add = add

    def __await__(self) -> Generator[Any, Any, T]:
        # The awaitable's iterator (a coroutine's wrapper, or a Future's/Deferred's generator).
        coro, add, clock = self._coro.__await__(), self._add, time.thread_time
        send_value: Any = None
        error: BaseException | None = None
        while True:
            start = clock()
            try:
                if error is not None:
                    yielded = coro.throw(error)
                else:
                    yielded = coro.send(send_value)
            except StopIteration as stop:
                add(clock() - start)
                return stop.value
            except BaseException:
                add(clock() - start)
                raise
            add(clock() - start)
            error = None
            send_value = None
            try:
                send_value = yield yielded
            except BaseException as e:  # delivered into the coroutine at its next step
                error = e

    def close(self) -> None:
        close = getattr(self._coro, "close", None)
        if close is not None:
            close()


def timed(coro: Awaitable[T], add: Callable[[float], None]) -> Awaitable[T]:
    """An awaitable running ``coro`` (a coroutine, or any awaitable) that calls ``add(seconds)``
    with the CPU time of each of its steps."""
    return _Timed(coro, add)


def timed_call(fn: Callable[..., T], add: Callable[[float], None], *args: Any) -> T:
    """``fn(*args)``, adding its CPU time (a synchronous call) with ``add``."""
    start = time.thread_time()
    try:
        return fn(*args)
    finally:
        add(time.thread_time() - start)
