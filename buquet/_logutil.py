"""Log helpers for long-running loops: one-line error descriptions and rate limiting.

A worker, monitor or scheduler that polls a store which is down fails the same way
every few seconds; logging each failure buries everything else. Use one
:class:`ThrottledLog` per loop (or per component) and :func:`describe` for the text::

    from ._logutil import ThrottledLog, describe

    log = logging.getLogger(__name__)
    throttled = ThrottledLog(log)  # at most one line per key per 30 s

    while running:
        try:
            await poll_once()
        except StorageError as exc:
            throttled.warning("poll", "polling failed: %s", describe(exc))
            log.debug("polling failed", exc_info=exc)  # the backend's full detail
            await asyncio.sleep(backoff)
            continue
        if missed := throttled.clear("poll"):
            log.info("polling works again (%d failures not logged)", missed)

* The key says which lines are "the same": usually the call site (``"poll"``). Add
  :func:`error_key` (``("poll", error_key(exc))``: type, operation, status, S3 code)
  to let a different failure at the same site log at once; one outage hitting many
  object keys still collapses into one line per 30 s.
* The first occurrence is logged at once; later ones within ``interval`` seconds are
  counted, and the next line after the interval says
  ``"... (repeated 12 times in the last 30s)"``.
* :meth:`ThrottledLog.clear` forgets a key once things work again, so the next
  failure is logged at once; it returns how many lines were suppressed and not yet
  reported (to log "store reachable again after N failures", say).
* :func:`describe` gives one line: a :class:`~buquet.errors.StorageError`'s own
  message (already ``S3 GET s3://b/k failed: ...``), else ``Type: message``. Keep
  tracebacks (``exc_info``) for DEBUG: the backend's exception, with all its detail,
  is the ``__cause__`` of every StorageError.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Hashable

from .errors import StorageError

__all__ = ["ThrottledLog", "describe", "error_key"]

_MAX_DESCRIBE = 500


def describe(exc: BaseException) -> str:
    """One line describing ``exc``: a StorageError's message as is, ``Type: message``
    for anything else. Newlines are folded and the text is cut at 500 characters."""
    text = str(exc)
    if not isinstance(exc, StorageError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    text = " ".join(text.split())
    if len(text) > _MAX_DESCRIBE:
        text = text[: _MAX_DESCRIBE - 1] + "…"
    return text


def error_key(exc: BaseException) -> tuple[Any, ...]:
    """A coarse identity of a failure for :class:`ThrottledLog` keys: the exception
    type plus, for a StorageError, its operation, status and S3 code (not the object
    key, so one outage hitting many keys is one stream of lines)."""
    if isinstance(exc, StorageError):
        return (type(exc).__name__, exc.operation, exc.status, exc.code)
    return (type(exc).__name__,)


class _Entry:
    __slots__ = ("last_logged", "suppressed")

    def __init__(self, now: float) -> None:
        self.last_logged = now
        self.suppressed = 0


class ThrottledLog:
    """Rate-limited logging: per key, the first line at once, then at most one line
    per ``interval`` seconds, carrying the count of the lines it stood for.

    Args:
        logger: where the lines go.
        interval: seconds between two lines of the same key (default 30).
        clock: monotonic clock in seconds (injected by tests).
        max_keys: keys remembered at most; the least recently logged are forgotten
            beyond that (their next line is logged at once).

    Thread-safe. Every method returns whether the line was emitted.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1000,
    ) -> None:
        if interval < 0:
            raise ValueError("interval must be >= 0")
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._max_keys = max(1, max_keys)
        self._entries: dict[Hashable, _Entry] = {}
        self._lock = threading.Lock()

    def log(self, level: int, key: Hashable, msg: str, *args: Any, **kwargs: Any) -> bool:
        """Log ``msg % args`` at ``level`` unless a line of ``key`` was logged less than
        ``interval`` seconds ago (then only count it). ``kwargs`` go to
        :meth:`logging.Logger.log` (``exc_info=``, ``extra=``)."""
        if not self.logger.isEnabledFor(level):
            return False
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                if len(self._entries) >= self._max_keys:
                    self._evict()
                self._entries[key] = _Entry(now)
                repeated, elapsed = 0, 0.0
            elif now - entry.last_logged < self.interval:
                entry.suppressed += 1
                return False
            else:
                repeated, elapsed = entry.suppressed, now - entry.last_logged
                entry.last_logged, entry.suppressed = now, 0
                # re-insert: the dict stays ordered by last emission, oldest first
                del self._entries[key]
                self._entries[key] = entry
        if repeated:
            if not args:
                msg = msg.replace("%", "%%")  # args are about to be added
            msg += " (repeated %d times in the last %ds)"
            args = (*args, repeated, round(elapsed))
        self.logger.log(level, msg, *args, **kwargs)
        return True

    def debug(self, key: Hashable, msg: str, *args: Any, **kwargs: Any) -> bool:
        return self.log(logging.DEBUG, key, msg, *args, **kwargs)

    def info(self, key: Hashable, msg: str, *args: Any, **kwargs: Any) -> bool:
        return self.log(logging.INFO, key, msg, *args, **kwargs)

    def warning(self, key: Hashable, msg: str, *args: Any, **kwargs: Any) -> bool:
        return self.log(logging.WARNING, key, msg, *args, **kwargs)

    def error(self, key: Hashable, msg: str, *args: Any, **kwargs: Any) -> bool:
        return self.log(logging.ERROR, key, msg, *args, **kwargs)

    def clear(self, key: Hashable) -> int:
        """Forget ``key`` (the trouble is over): its next line is logged at once.
        Returns how many of its lines were suppressed since the last one logged."""
        with self._lock:
            entry = self._entries.pop(key, None)
        return entry.suppressed if entry is not None else 0

    def reset(self) -> None:
        """Forget every key (the loop works again): each next line is logged at once."""
        with self._lock:
            self._entries.clear()

    def _evict(self) -> None:
        # drop the least recently logged tenth (dict order = order of last emission)
        for key in list(self._entries)[: max(1, self._max_keys // 10)]:
            del self._entries[key]
