"""The worker Lambda: runs tasks announced by S3 event notifications on ``ready/``.

Wiring (``infra/``): the bucket sends ``s3:ObjectCreated:*`` events for keys under
``<prefix>ready/`` to this function, asynchronously. Each ready marker is written when a
task becomes claimable — submit, retry requeue, lease recovery, the monitor's stall
poke — so an event means "there is work, maybe this task".

One invocation decodes the event's keys (:func:`decode_event`), builds the user's
Worker (``BUQUET_WORKER=module:attribute``, a factory called inside a fresh event loop)
and hands both to :func:`buquet.invocation.run_invocation`, which holds the policy:
wait briefly for announced tasks about to come due, run the due ones, and poll the
shards for other due work only when the event names no task or is older than
``BUQUET_DRAIN_LAG_SECONDS``. The handler then publishes the counters as CloudWatch
metrics (EMF) and returns them.

Events it cannot read — not an object, no ``Records``, ``Records`` not a list, records
without a string ``s3.object.key`` — cost one warning line, never a failed invocation
(which Lambda would only retry with the same event): the readable records are used,
and an event that names no task makes the worker poll its shards, as a manual invoke
or S3's ``s3:TestEvent`` does.

Duplicate, late and out-of-order events are harmless: a claim is a conditional write,
and a marker whose task has moved on is skipped (and deleted). The worker's own writes
go to ``tasks/`` and ``leases/`` and deletions of ``ready/`` — none of which is
subscribed — except a retry requeue, which is a genuinely new ready task and should
invoke a worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from buquet.imports import WorkerFactory, build_worker
from buquet.invocation import InvocationResult, run_invocation

from . import current_request_id

from ._common import (
    Settings,
    add_counts,
    describe,
    library_logs,
    library_metrics,
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
    "too_long": "TasksTooLong",
}

preload_factory()


@dataclass(frozen=True)
class DecodedEvent:
    """The keys an event names, and what in it could not be read.

    Attributes:
        keys: decoded object keys of its ``ObjectCreated`` records, in event order,
            without duplicates.
        problem: ``None`` for a well-formed event; else what was wrong, in words (the
            handler logs it as one warning line).
    """

    keys: list[str]
    problem: str | None = None


def _record_key(record: Any, bucket: str | None) -> tuple[str | None, str | None]:
    """``(decoded key, None)`` of a record to use, ``(None, None)`` of a well-formed
    record to skip (another source, event type or bucket), ``(None, problem)``."""
    if not isinstance(record, Mapping):
        return None, f"a record is {describe(record)}"
    if record.get("eventSource") not in (None, "aws:s3"):
        return None, None
    event_name = record.get("eventName", "ObjectCreated:")
    if not isinstance(event_name, str):
        return None, "a record's eventName is not a string"
    if not event_name.startswith("ObjectCreated:"):
        return None, None
    s3 = record.get("s3")
    obj = s3.get("object") if isinstance(s3, Mapping) else None
    key = obj.get("key") if isinstance(obj, Mapping) else None
    if not isinstance(key, str) or not key:
        return None, "a record has no s3.object.key string"
    if bucket:
        b = s3.get("bucket") if isinstance(s3, Mapping) else None
        name = b.get("name") if isinstance(b, Mapping) else None
        if not isinstance(name, str):
            return None, "a record has no s3.bucket.name string"
        if name != bucket:
            return None, None
    return unquote_plus(key), None


def decode_event(event: Any, bucket: str | None) -> DecodedEvent:
    """The keys of an S3 event notification, whatever its shape.

    S3 URL-encodes keys in notifications (``quote_plus``: a space becomes ``+``,
    non-ASCII characters their UTF-8 ``%XX`` bytes); powertools decodes only the first
    record's key, so each record's key is decoded here with
    :func:`urllib.parse.unquote_plus`. Records of other buckets (when ``bucket`` is
    given), other sources and other event types are dropped. An object without
    ``Records`` yields no keys — silently for S3's ``s3:TestEvent`` (sent when a
    notification is configured), with a ``problem`` otherwise — and so does anything
    that is not an object. Never raises.

    Args:
        event: the event as Lambda passes it (or a powertools data class wrapping it).
        bucket: the queue's bucket, or ``None`` to accept records of any bucket.
    """
    event = getattr(event, "raw_event", event)
    if not isinstance(event, Mapping):
        return DecodedEvent([], f"the event is {describe(event)}, not an S3 notification")
    if "Records" not in event:
        if event.get("Event") == "s3:TestEvent":
            return DecodedEvent([])
        return DecodedEvent([], f"the event has no Records ({describe(event)})")
    records = event["Records"]
    if not isinstance(records, list):
        return DecodedEvent([], f"Records is {describe(records)}, not a list")
    keys: dict[str, None] = {}
    problems: list[str] = []
    for record in records:
        key, problem = _record_key(record, bucket)
        if key is not None:
            keys[key] = None
        elif problem is not None:
            problems.append(problem)
    if not problems:
        return DecodedEvent(list(keys))
    return DecodedEvent(list(keys), f"{len(problems)} of {len(records)} records unreadable ({problems[0]})")


def event_keys(event: Any, bucket: str | None) -> list[str]:
    """The decoded object keys of an S3 event's ``ObjectCreated`` records
    (:func:`decode_event` without the problem report)."""
    return decode_event(event, bucket).keys


async def _invoke(
    factory: WorkerFactory, keys: list[str], remaining_seconds: Callable[[], float], cfg: Settings
) -> InvocationResult:
    """One invocation inside its own loop: build the worker, run, close its queue."""
    worker = await build_worker(factory, name="BUQUET_WORKER")
    try:
        return await run_invocation(worker, keys, remaining_seconds=remaining_seconds, **cfg.invocation_options())
    finally:
        await worker.queue.close()


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(clear_state=True)
def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point (``lambdas.worker.handler``).

    Args:
        event: an S3 event notification (``Records[].s3.object.key`` URL-encoded). Any
            other value is accepted: what cannot be read is logged as one warning line,
            and an event naming no task makes the worker poll its shards.
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
    decoded = decode_event(event, cfg.bucket)
    if decoded.problem:
        then = "using the readable records" if decoded.keys else "polling the shards instead"
        logger.warning("malformed S3 event: %s; %s", decoded.problem, then)

    def remaining_seconds() -> float:
        return context.get_remaining_time_in_millis() / 1000

    token = current_request_id.set(getattr(context, "aws_request_id", None))
    try:
        with library_logs(), library_metrics():
            result = run_fresh(_invoke(factory, decoded.keys, remaining_seconds, cfg))
    finally:
        current_request_id.reset(token)
    counters = result.counters
    add_counts(counters, COUNTERS)
    metrics.add_metric(name="EventReadyKeys", unit=MetricUnit.Count, value=result.ready_keys)
    if result.queue_lag_ms is not None:
        metrics.add_metric(name="QueueLag", unit=MetricUnit.Milliseconds, value=result.queue_lag_ms)
    logger.info(
        "invocation done: %s", counters or "nothing to do", extra={"counters": counters, "drained": result.drained}
    )
    return {"ready_keys": result.ready_keys, "queue_lag_ms": result.queue_lag_ms, "drained": result.drained, **counters}


__all__ = ["COUNTERS", "DecodedEvent", "decode_event", "event_keys", "handler"]
