"""One serverless invocation: run the tasks an event announces, drain only when it pays.

A function invoked by S3 ``ObjectCreated`` events on ``ready/`` (the Lambda worker, or
your own handler on another platform) gets the keys of the ready markers that were
written and a deadline. :func:`run_invocation` decides what to do with them and runs
:meth:`Worker.run_once <buquet.Worker.run_once>`; the handler only decodes its event and
reports the result::

    result = await run_invocation(worker, keys, remaining_seconds=lambda: ctx.remaining())
    print(result.counters, result.queue_lag_ms)

The policy, in order:

1. **Parse** the keys: ready markers of the worker's layout count (duplicates once);
   anything else is ignored.
2. **Wait for due**: when a marker the worker can run (its type and shard) is not due
   yet but will be within ``wait_for_due_seconds`` — a ``schedule_at`` or retry backoff
   about to end, or just the submitter's clock reading up to a second ahead of ours
   (both come from 1-second ``Date`` headers) — sleep until it is, if that leaves time
   before the deadline. Later ones are left to the monitor's stall poke.
3. **Run or drain**: every ready marker has its own event, so an invocation normally
   runs just the due tasks its event names, with no LIST request (``max_tasks`` = their
   number). It also polls its shards for other due work — "drains", while time is
   left — only when the event names no ready marker at all (a manual invoke, an S3 test
   event, an event the handler could not read) or its oldest marker has been due for
   more than ``drain_lag_seconds``: events are late (throttling), were lost, or this
   is the monitor re-announcing a stalled shard. With neither, nothing runs (no request
   beyond the clock read).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from . import config as cfg
from ._time import to_ms

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("buquet.invocation")

#: extra sleep past a task's due instant, so the store's clock has reached it
_DUE_SLACK_SECONDS = 0.05
#: time kept free past the safety margin when deciding whether a wait for due fits
_WAIT_RESERVE_SECONDS = 1.0


@dataclass(frozen=True)
class InvocationResult:
    """What :func:`run_invocation` did.

    Attributes:
        counters: :meth:`Worker.run_once <buquet.Worker.run_once>`'s counters (claimed,
            completed, retried, failed, lease_lost, claim_conflicts, too_long); only
            non-zero ones, empty when nothing ran.
        queue_lag_ms: how long the oldest ready marker the event names had been due
            when the invocation started, in milliseconds (0 if not due yet); ``None``
            when it names none.
        ready_keys: how many distinct ready markers the event named (any shard, any
            type).
        drained: whether the worker also polled its shards for due tasks the event did
            not name.
    """

    counters: dict[str, int] = field(default_factory=dict)
    queue_lag_ms: int | None = None
    ready_keys: int = 0
    drained: bool = False


async def run_invocation(
    worker: Worker,
    keys: Sequence[str],
    *,
    remaining_seconds: Callable[[], float],
    safety_margin_seconds: float = cfg.DEFAULT_SAFETY_MARGIN_SECONDS,
    wait_for_due_seconds: float = cfg.DEFAULT_WAIT_FOR_DUE_SECONDS,
    drain_lag_seconds: float = cfg.DEFAULT_DRAIN_LAG_SECONDS,
    max_concurrency: int = cfg.DEFAULT_MAX_CONCURRENCY,
    lease_seconds: float = cfg.DEFAULT_LEASE_SECONDS,
) -> InvocationResult:
    """Run one event-driven invocation of ``worker`` (the policy is in the module
    docstring: wait briefly for announced tasks about to come due; drain only when the
    event names no task or its oldest is older than ``drain_lag_seconds``).

    The caller owns the worker and its queue (build it inside the invocation's event
    loop, close ``worker.queue`` after).

    Args:
        worker: a Worker with its handlers registered.
        keys: object keys from the event, URL-decoded; other keys are ignored.
        remaining_seconds: returns the seconds left before the invocation is killed.
        safety_margin_seconds: time kept free at the end: a task starts only if its
            ``timeout_seconds`` fits in what remains minus this.
        wait_for_due_seconds: longest sleep for a not-yet-due task the event names.
        drain_lag_seconds: queue lag beyond which the shards are polled as well.
        max_concurrency: tasks in flight at once.
        lease_seconds: lease of each claim.

    Returns:
        An :class:`InvocationResult`.

    Raises:
        ValidationError: a setting is out of range, or the worker has no handler.
        StorageError: the store's clock could not be read. Failures of single tasks
            never raise: they are recorded in the tasks.

    S3: one HeadBucket (the clock; a second one after a wait), then what
    :meth:`~buquet.Worker.run_once` sends — for a prompt event, per task one GET and
    two PUTs, and no LIST.
    """
    from .worker import WorkerRunOptions  # worker.py delegates here: import at call time

    cfg.finite_number(safety_margin_seconds, "safety_margin_seconds", 0, 86_400)
    cfg.finite_number(wait_for_due_seconds, "wait_for_due_seconds", 0, 86_400)
    cfg.finite_number(drain_lag_seconds, "drain_lag_seconds", 0, 86_400 * 366)
    markers = worker.ready_keys(keys)
    now_ms = to_ms(await worker.protocol.time())
    for m in markers:
        log.info("event: task %s (%s) ready from %d", m.task_id, m.task_type, m.due_ms)
    lag_ms = max(0, now_ms - min(m.due_ms for m in markers)) if markers else None
    types, shards = set(worker.task_types), set(worker.shards)
    mine = [m for m in markers if m.task_type in types and m.shard in shards]

    future = [m.due_ms for m in mine if m.due_ms > now_ms]
    if future:
        wait = (min(future) - now_ms) / 1000 + _DUE_SLACK_SECONDS
        budget = remaining_seconds() - safety_margin_seconds - _WAIT_RESERVE_SECONDS
        if wait <= wait_for_due_seconds and wait < budget:
            log.info("waiting %.2fs for a task the event names to come due", wait)
            await asyncio.sleep(wait)
            now_ms = to_ms(await worker.protocol.time())

    drain = not markers or (lag_ms or 0) > drain_lag_seconds * 1000
    due = {m.task_id for m in mine if m.due_ms <= now_ms}
    if not drain and not due:
        return InvocationResult({}, lag_ms, len(markers), False)
    options = WorkerRunOptions(
        max_concurrency=max_concurrency, lease_seconds=lease_seconds, max_tasks=None if drain else len(due)
    )
    counters = await worker.run_once(
        [m.key for m in mine],
        remaining_seconds=remaining_seconds,
        safety_margin_seconds=safety_margin_seconds,
        options=options,
    )
    return InvocationResult(counters, lag_ms, len(markers), drain)


__all__ = ["InvocationResult", "run_invocation"]
