"""The worker Lambda: runs tasks announced by S3 event notifications on ``ready/``.

Wiring (``infra/``): the bucket sends ``s3:ObjectCreated:*`` events for keys under
``<prefix>ready/`` to this function, asynchronously. Each ready marker is written when a
task becomes claimable — submit, retry requeue, lease recovery, the monitor's stall
poke — so an event means "there is work, maybe this task".

One invocation:

1. Decodes the event's keys (S3 URL-encodes them, spaces as ``+``; non-ASCII as UTF-8
   ``%XX``) and keeps the ``ObjectCreated`` records of the queue's bucket.
2. Calls the user's Worker factory (``BUQUET_WORKER=module:attribute``) inside a fresh
   event loop, and hands the keys to :meth:`buquet.Worker.run_once`, which claims and
   runs their tasks, starting a task only if its ``timeout_seconds`` fits in the
   remaining time minus ``BUQUET_SAFETY_MARGIN_SECONDS``. Longer tasks stay Pending for
   a later invocation (the monitor re-announces overdue tasks). A task due within
   ``BUQUET_WAIT_FOR_DUE_SECONDS`` is waited for.
   Since every ready marker has its own event, the invocation runs just the tasks its
   event names (no LIST request); it also polls the shards for other due work
   ("drains", while time is left) only when the event names no task or its oldest task
   has waited longer than ``BUQUET_DRAIN_LAG_SECONDS`` — late, throttled or lost events,
   or the monitor's re-announcement of a stalled shard.
3. Publishes the counters as CloudWatch metrics (EMF) and returns them.

Duplicate, late and out-of-order events are harmless: a claim is a conditional write,
and a marker whose task has moved on is skipped (and deleted). The worker's own writes
go to ``tasks/`` and ``leases/`` and deletions of ``ready/`` — none of which is
subscribed — except a retry requeue, which is a genuinely new ready task and should
invoke a worker.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3Event, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from buquet import Worker, WorkerRunOptions
from buquet._time import to_ms
from buquet.storage.base import ObjectInfo

from . import current_request_id
from ._common import (
    Settings,
    add_counts,
    build_worker,
    library_logs,
    load_factory,
    logger,
    metrics,
    preload_factory,
    run_fresh,
    settings,
)

#: Worker.run_once counter → metric name
COUNTERS = {
    "claimed": "TasksClaimed",
    "completed": "TasksCompleted",
    "retried": "TasksRetried",
    "failed": "TasksFailed",
    "lease_lost": "LeasesLost",
    "claim_conflicts": "ClaimConflicts",
}

preload_factory()


def event_keys(event: S3Event, bucket: str | None) -> list[str]:
    """The decoded object keys of an S3 event's ``ObjectCreated`` records, in event
    order, without duplicates.

    S3 URL-encodes keys in notifications (``quote_plus``: a space becomes ``+``,
    non-ASCII characters their UTF-8 ``%XX`` bytes); powertools decodes only the first
    record's key (``S3Event.object_key``), so each record's key is decoded here with
    :func:`urllib.parse.unquote_plus`. Records of other buckets (when ``bucket`` is
    given) and of other event types are dropped. An event without ``Records`` (the
    ``s3:TestEvent`` S3 sends when a notification is configured, a manual invoke)
    yields no keys: the worker then just polls.
    """
    if "Records" not in event.raw_event:
        return []
    keys: dict[str, None] = {}
    for record in event.records:
        if record.get("eventSource") not in (None, "aws:s3"):
            continue
        if not str(record.get("eventName", "ObjectCreated:")).startswith("ObjectCreated:"):
            continue
        if bucket and record.s3.bucket.name != bucket:
            continue
        keys[unquote_plus(record.s3.get_object.key)] = None
    return list(keys)


async def _invoke(
    factory: Any, keys: list[str], remaining_seconds: Any, cfg: Settings
) -> tuple[dict[str, int], int | None, int, bool]:
    """One invocation inside its own loop: build the worker, wait briefly for event
    tasks about to come due, run_once, close the queue.

    Returns (counters, queue lag in ms or None, number of ready keys, drained?).
    """
    worker: Worker = await build_worker(factory)
    try:
        layout = worker.queue.layout
        now = await worker.queue.time()
        now_ms = to_ms(now)
        markers = [
            m
            for key in keys
            if key.startswith(layout.prefix + "ready/")
            and (m := layout.parse_ready(ObjectInfo(key, "", 0, now))) is not None
        ]
        for m in markers:
            logger.info(
                "event: task %s (%s) ready from %d", m.task_id, m.task_type, m.due_ms,
                extra={"task_id": m.task_id, "task_type": m.task_type},
            )
        # Queue lag: how long the oldest announced task has been due (0 if not yet due).
        lag_ms = max(0, now_ms - min(m.due_ms for m in markers)) if markers else None
        mine = [m for m in markers if m.task_type in worker.task_types and m.shard in worker.shards]
        # A task announced a moment before its due time — schedule_at or a retry
        # backoff just ending, or merely the submitter's clock reading up to ~1 s ahead
        # of ours (both come from 1-second Date headers) — is waited for, briefly,
        # instead of being left to the monitor's stall poke a minute later.
        future = [m.due_ms for m in mine if m.due_ms > now_ms]
        if future:
            wait = (min(future) - now_ms) / 1000 + 0.05
            budget = remaining_seconds() - cfg.safety_margin_seconds - 1
            if wait <= cfg.wait_for_due_seconds and wait < budget:
                logger.info("waiting %.2fs for a task the event names to come due", wait)
                await asyncio.sleep(wait)
                now_ms = to_ms(await worker.queue.time())
        # Every ready marker has an event of its own, so an invocation normally runs
        # just the tasks its event names — no LIST requests. It polls the shards for
        # other due work ("drains") only when the event names no task (a manual invoke)
        # or its oldest task has waited longer than drain_lag_seconds: events are late
        # (throttling), were lost, or this is the monitor re-announcing a stalled shard.
        drain = not markers or (lag_ms or 0) > cfg.drain_lag_seconds * 1000
        due_ids = {m.task_id for m in mine if m.due_ms <= now_ms}
        if not drain and not due_ids:
            return {}, lag_ms, len(markers), False
        options = WorkerRunOptions(
            max_concurrency=cfg.max_concurrency,
            lease_seconds=cfg.lease_seconds,
            max_tasks=None if drain else len(due_ids),
        )
        counters = await worker.run_once(
            [m.key for m in mine],
            remaining_seconds=remaining_seconds,
            safety_margin_seconds=cfg.safety_margin_seconds,
            options=options,
        )
        return counters, lag_ms, len(markers), drain
    finally:
        await worker.queue.close()


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(clear_state=True)
@event_source(data_class=S3Event)
def handler(event: S3Event, context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point (``lambdas.worker.handler``).

    Args:
        event: an S3 event notification (``Records[].s3.object.key`` URL-encoded), or
            any event without ``Records`` (then the worker just polls).
        context: the Lambda context; ``get_remaining_time_in_millis()`` bounds which
            tasks may start.

    Returns:
        ``{"ready_keys": n, "queue_lag_ms": ms or None, "drained": polled the shards?,
        <run_once counters>}``.

    Raises:
        ConfigurationError: bad settings or ``BUQUET_WORKER`` (the invocation fails;
            Lambda retries it and then sends it to the on-failure destination).
        StorageError: the bucket could not be reached at start. Failures of single
            tasks never fail the invocation: they are recorded in the tasks.
    """
    cfg = settings()
    factory = load_factory(cfg.worker_spec)
    keys = event_keys(event, cfg.bucket)

    def remaining_seconds() -> float:
        return context.get_remaining_time_in_millis() / 1000

    token = current_request_id.set(getattr(context, "aws_request_id", None))
    try:
        with library_logs():
            counters, lag_ms, n_ready, drained = run_fresh(_invoke(factory, keys, remaining_seconds, cfg))
    finally:
        current_request_id.reset(token)
    add_counts(counters, COUNTERS)
    metrics.add_metric(name="EventReadyKeys", unit=MetricUnit.Count, value=n_ready)
    if lag_ms is not None:
        metrics.add_metric(name="QueueLag", unit=MetricUnit.Milliseconds, value=lag_ms)
    logger.info("invocation done: %s", counters or "nothing to do", extra={"counters": counters, "drained": drained})
    return {"ready_keys": n_ready, "queue_lag_ms": lag_ms, "drained": drained, **counters}


__all__ = ["COUNTERS", "event_keys", "handler"]
