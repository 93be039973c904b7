"""Background loops that never die: the monitor, the scheduler and the index deleter.

A background loop that raises stops doing its job silently (a worker's built-in monitor
that died on one corrupt object never recovers a lease again). :func:`every` runs a
step until told to stop, logs storage errors as one line (rate-limited while they
repeat) and any other exception with its traceback, and keeps going.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Awaitable, Callable, Sequence

from ._logutil import ThrottledLog, describe, error_key
from .errors import StorageError
from .storage.base import ObjectStore

class ErrorLog:
    """Logs a loop's failures through one :class:`~buquet._logutil.ThrottledLog`: the
    first of a kind at once, repeats at most once per 30 s with a count. Storage errors
    as one line, anything else with its traceback."""

    def __init__(self, logger: logging.Logger, name: str) -> None:
        self._log = logger
        self._name = name
        self._throttled = ThrottledLog(logger)

    def failed(self, exc: BaseException) -> None:
        """Record one failure of the loop's step."""
        key = error_key(exc)
        if isinstance(exc, StorageError):
            self._throttled.warning(key, "%s failed: %s", self._name, describe(exc))
            self._log.debug("%s failed", self._name, exc_info=exc)
        else:
            self._throttled.error(key, "%s failed unexpectedly; it keeps running", self._name, exc_info=exc)

    def recovered(self) -> None:
        """The step succeeded: the next failure is logged at once."""
        self._throttled.reset()


async def every(
    interval_seconds: float,
    step: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    *,
    name: str,
    logger: logging.Logger,
    next_wait: Callable[[object], float | None] | None = None,
) -> None:
    """Run ``step()`` now and then every ``interval_seconds`` until ``stop`` is set.

    ``next_wait(result)`` may shorten the pause after a successful step (e.g. the
    scheduler waking at the next due slot). Exceptions from ``step`` (other than
    cancellation) are logged through :class:`ErrorLog` and the loop goes on.
    """
    errors = ErrorLog(logger, name)
    while not stop.is_set():
        wait = interval_seconds
        try:
            result = await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a background loop must survive anything
            errors.failed(exc)
        else:
            errors.recovered()
            if next_wait is not None:
                hint = next_wait(result)
                if hint is not None:
                    wait = max(0.0, min(wait, hint))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait)


#: tries of one batch of index deletions before it is given up
DELETE_TRIES = 4


class DeleteBatcher:
    """Collects index keys to delete and sends them in DeleteObjects batches (one
    request per ``flush_ms``, at most 1,000 keys each). A failed batch is logged and
    dropped: leftover index entries are harmless and cleaned up later (workers skip
    markers of final tasks; the monitor drops redundant lease entries)."""

    def __init__(self, store: ObjectStore, flush_ms: int, logger: logging.Logger) -> None:
        self._store = store
        self._flush_s = flush_ms / 1000
        self._log = logger
        self._keys: list[str] = []
        self._failures = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background flusher (inside the running loop)."""
        self._task = asyncio.create_task(self._loop(), name="buquet-deleter")

    def add(self, keys: Sequence[str]) -> None:
        """Queue keys for deletion."""
        if keys:
            self._keys.extend(keys)
            self._wake.set()

    async def flush(self) -> None:
        """Delete what is queued now. A failed batch is tried again at the next flush
        (DeleteObjects is idempotent), up to :data:`DELETE_TRIES` times, then dropped
        with a warning: leftovers are cleaned up by whoever meets them."""
        keys, self._keys = self._keys, []
        if not keys:
            return
        try:
            await self._store.delete_many(keys)
            self._failures = 0
        except Exception as exc:  # noqa: BLE001 - never lose the loop over a cleanup
            self._failures += 1
            if self._failures < DELETE_TRIES:
                self._keys = keys + self._keys
                self._wake.set()
                await asyncio.sleep(0.2 * self._failures)
            else:
                self._failures = 0
                self._log.warning("deleting %d index entries failed (they are cleaned up later): %s", len(keys), exc)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._flush_s:
                await asyncio.sleep(self._flush_s)
            await self.flush()

    async def close(self) -> None:
        """Stop the flusher and delete what is still queued (with its retries)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _ in range(DELETE_TRIES):
            await self.flush()
            if not self._keys:
                break
