""":class:`TaskContext`: what a handler that takes a second argument receives.

```python
@worker.task("resize")
async def resize(input, ctx: TaskContext):
    for i, image in enumerate(input["images"]):
        if ctx.is_cancellation_requested():
            return None                      # honoured: the task ends Cancelled
        await process(image)
        await ctx.report_progress(current=i + 1, total=len(input["images"]))
    return {"done": True}
```

The worker renews the lease on its own (every ``lease_seconds / 3``); a handler calls
:meth:`TaskContext.extend_lease` only to reserve a longer stretch at once. Every write
is conditioned on the attempt's last write (fencing); a write that finds the task
claimed by another attempt raises :class:`~buquet.LeaseLost` (a ``RuntimeError``): the
handler should stop.
"""

from __future__ import annotations

import time
from datetime import timezone
from typing import Any

from ._tasks import Lease, TaskProtocol
from ._time import to_rfc3339
from .errors import LeaseLost, ValidationError
from .models import Task


class TaskContext:
    """The running attempt, as its handler sees it.

    Attributes:
        task_id: the task's id.
    """

    def __init__(self, protocol: TaskProtocol, lease: Lease) -> None:
        self._protocol = protocol
        self._lease = lease
        self.task_id = lease.task.id
        self._progress_at = float("-inf")

    @property
    def task(self) -> Task:
        """The task as this attempt last wrote or read it (cached, no request)."""
        return self._lease.task

    def lease_expires_at(self) -> str | None:
        """The current lease end, RFC 3339 UTC with a ``+00:00`` suffix as in
        ``Task.to_dict()`` (cached, no request)."""
        end = self._lease.task.lease_expires_at
        return end.astimezone(timezone.utc).isoformat(timespec="milliseconds") if end is not None else None

    def is_cancellation_requested(self) -> bool:
        """Was :meth:`Queue.request_cancellation` called? Cached: the worker's heartbeat
        brings news every ``lease_seconds / 3``; call :meth:`refresh` to look now. A
        handler that honours it returns ``None``: the task then ends Cancelled."""
        return self._lease.task.cancel_requested

    async def refresh(self) -> None:
        """Re-read the task (1 GET).

        Raises:
            LeaseLost: the task is gone, final, or claimed by another attempt.
        """
        await self._protocol.refresh(self._lease)

    async def extend_lease(self, additional_secs: float) -> None:
        """Push the lease end to ``max(lease end, now) + additional_secs`` (never
        shorter). S3: 1 PUT lease entry + 1 PUT task.

        Raises:
            ValidationError: ``additional_secs`` not a positive number.
            LeaseLost: ``"Failed to extend lease for task <id>"`` — the task is no
                longer this attempt's (it was claimed again): stop.
        """
        if isinstance(additional_secs, bool) or not isinstance(additional_secs, (int, float)) or not 0 < additional_secs <= 7 * 24 * 3600:
            raise ValidationError("additional_secs", f"must be a number of seconds in (0, 604800], got {additional_secs!r}")
        try:
            await self._protocol.extend(self._lease, 0, add_seconds=float(additional_secs))
        except LeaseLost as exc:
            raise LeaseLost(f"Failed to extend lease for task {self.task_id}: {exc}") from None

    async def report_progress(
        self,
        percent: float | None = None,
        current: int | None = None,
        total: int | None = None,
        message: str | None = None,
        throttle_seconds: float | None = None,
    ) -> bool:
        """Store a progress report in the task, readable as ``Task.progress`` through
        :meth:`Queue.get` (cleared when the task finishes). With ``throttle_seconds``,
        reports closer together than that are dropped (returns ``False``). S3: 1 PUT.

        Raises:
            ValidationError: ``percent`` outside 0–100, negative counts, a message over
                1,000 characters.
            LeaseLost: the task is no longer this attempt's.
        """
        progress: dict[str, Any] = {}
        if percent is not None:
            if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
                raise ValidationError("percent", f"must be a number from 0 to 100, got {percent!r}")
            progress["percent"] = float(percent)
        for name, value in (("current", current), ("total", total)):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValidationError(name, f"must be a non-negative integer, got {value!r}")
                progress[name] = value
        if message is not None:
            if not isinstance(message, str) or len(message) > 1000:
                raise ValidationError("message", "must be a string of at most 1,000 characters")
            progress["message"] = message
        now = time.monotonic()
        if throttle_seconds is not None and now - self._progress_at < throttle_seconds:
            return False
        self._progress_at = now
        progress["at"] = to_rfc3339(await self._protocol.time())
        await self._protocol.report_progress(self._lease, progress)
        return True


def wants_context(handler: Any) -> bool:
    """Does ``handler`` take a second positional argument (the :class:`TaskContext`)?
    Decided from its signature once, at registration."""
    import inspect

    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


__all__ = ["TaskContext", "wants_context"]
