"""Long-lived background tasks that are named and never fail silently.

An asyncio task whose exception nobody retrieves loses the error until
garbage collection, if ever. Informers, workers, resync timers and leader
election all run as tasks started here: each has a name (visible in
`asyncio.all_tasks()` and logs) and a done-callback that logs a crash at once.
`cancel_and_wait` is the other half: stop tasks and wait for them to end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def spawn(coro: Coroutine[Any, Any, T], *, name: str, logger: logging.Logger | None = None) -> asyncio.Task[T]:
    """Start `coro` as a named task whose failure is logged as soon as it happens."""
    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(lambda t: _report(t, logger or log))
    return task


def _report(task: asyncio.Task[Any], logger: logging.Logger) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        logger.error("task %s failed", task.get_name(), exc_info=exc)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, grace: float | None = None) -> None:
    """Cancel `tasks` and wait (up to `grace` seconds) until they have ended; their errors were logged already."""
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending, timeout=grace)


async def call_handler(fn: Callable[..., Any], *args: Any, what: str, logger: logging.Logger | None = None) -> None:
    """Call a sync or async user callback; an exception is logged, never propagated to the caller's loop."""
    try:
        result = fn(*args)
        if isinstance(result, Awaitable):
            await result
    except asyncio.CancelledError:
        raise
    except Exception:
        (logger or log).exception("%s failed", what)


async def wait_or_stop(aw: Awaitable[T], stop: asyncio.Event) -> T | None:
    """Await `aw` unless `stop` is set first (then `aw` is cancelled and None returned)."""
    task: asyncio.Future[Any] = asyncio.ensure_future(aw)
    stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        stopper.cancel()
    if task.done():
        result: T = task.result()
        return result
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        # a cancelled gather() ends with CancelledError set as its exception: retrieve it, or asyncio
        # logs "exception was never retrieved" with a traceback at every shutdown
        task.exception()
    return None
