"""The scheduler Lambda: one scheduler tick per invocation, from an EventBridge rule.

``infra/`` invokes it every minute (``cron(* * * * ? *)``, so ticks land just after the
minute boundary where cron slots fall). A tick fires every due cron slot that no
scheduler has fired yet (see :mod:`buquet.scheduler`): each slot is claimed by a
conditional create of its ledger object, so duplicate, retried or overlapping
invocations never submit a slot's task twice.

What a warm execution environment keeps between invocations is plain data only — the
parsed schedule definitions and the slot each is known to be handled up to — so a tick
in which nothing is due costs one LIST. The Queue and the Scheduler themselves (loop
bound) are rebuilt in each invocation's event loop.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from buquet.scheduler import Scheduler

from ._common import (
    Settings, add_counts, connect_queue, library_logs, library_metrics, logger, metrics, rule_time, run_fresh, settings,
)

#: Scheduler.stats counter → metric name
COUNTERS = {
    "fired": "SlotsFired",
    "recovered": "SlotsRecovered",
    "lost": "SlotsLostToOtherScheduler",
    "skipped_slots": "SlotsSkipped",
    "errors": "ScheduleErrors",
}

# (bucket, endpoint, prefix) -> the Scheduler's definition cache of the last tick
_definition_cache: dict[tuple[str | None, str | None, str], Any] = {}


def _rfc3339(dt: datetime) -> str:
    """``2026-11-29T16:21:00.000Z``"""
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _tick(cfg: Settings) -> tuple[list[Any], dict[str, int], str | None]:
    queue = await connect_queue(cfg)
    try:
        key = (cfg.bucket, cfg.endpoint, cfg.prefix)
        scheduler = Scheduler(queue, definition_cache=_definition_cache.setdefault(key, {}))
        tasks = await scheduler.tick()
        next_due = _rfc3339(scheduler.next_due) if scheduler.next_due else None
        return tasks, dict(scheduler.stats), next_due
    finally:
        await queue.close()


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(clear_state=True)
def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point (``lambdas.scheduler.handler``): one scheduler tick at the
    store's clock (not the event's ``time``, which is EventBridge's clock).

    Args:
        event: an EventBridge "Scheduled Event" (only its ``time`` is logged). Any
            other value works too: one warning line says so, and the tick runs.
        context: the Lambda context.

    Returns:
        ``{"submitted": [task ids], "next_due": RFC 3339 or None, <Scheduler.stats>}``.

    Raises:
        ConfigurationError: bad settings (no ``S3_BUCKET``, shard count mismatch).
        StorageError: listing the schedule definitions failed (nothing fired; the next
            tick catches up according to each schedule's catch-up policy). Failures of
            single schedules are logged and counted in ``ScheduleErrors``.
    """
    cfg = settings()
    scheduled_time = rule_time(event)
    with library_logs(), library_metrics():
        tasks, stats, next_due = run_fresh(_tick(cfg))
    add_counts(stats, COUNTERS)
    metrics.add_metric(name="TasksSubmitted", unit=MetricUnit.Count, value=len(tasks))
    for task in tasks:
        logger.info("submitted task %s (%s)", task.id, task.task_type, extra={"task_id": task.id})
    logger.info(
        "tick done (rule time %s): %d task(s), next slot %s", scheduled_time, len(tasks), next_due,
        extra={"stats": stats},
    )
    return {"submitted": [t.id for t in tasks], "next_due": next_due, **stats}


__all__ = ["COUNTERS", "handler"]
