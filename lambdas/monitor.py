"""The monitor Lambda: lease recovery and stall pokes, from an EventBridge rule.

Each invocation (``infra/``: every minute):

1. :meth:`buquet.Monitor.sweep` — tasks whose lease expired (their invocation crashed,
   timed out or was throttled into oblivion after its first heartbeat) go back to
   Pending after their retry backoff, or to Failed when no attempts are left. The
   requeue writes a new ready marker, whose S3 event invokes a worker.
2. :meth:`buquet.Monitor.poke_stalled` — in each shard, the oldest ready marker that has
   been due for more than ``BUQUET_STALL_SECONDS`` is re-written so its S3 event fires
   again. That covers what no event announces at the right time: ``schedule_at`` and
   retry backoff ending later, events lost after Lambda gave up retrying, tasks too long
   for the invocation that saw them, and tasks whose invocation died within its first
   heartbeat (their marker still exists).

Both steps are idempotent; overlapping or duplicated invocations are harmless.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from buquet import Monitor
from buquet.errors import StorageError

from ._common import (
    Settings, connect_queue, library_logs, library_metrics, logger, metrics, rule_time, run_fresh, settings,
)


async def _sweep(cfg: Settings) -> tuple[int, int]:
    queue = await connect_queue(cfg)
    try:
        monitor = Monitor(queue)
        error: StorageError | None = None
        recovered = 0
        try:
            recovered = await monitor.sweep()
        except StorageError as exc:  # still poke: the two steps are independent
            logger.warning("lease sweep failed: %s", exc)
            error = exc
        poked = await monitor.poke_stalled(stall_seconds=cfg.stall_seconds)
        if error is not None:
            raise error
        return recovered, poked
    finally:
        await queue.close()


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(clear_state=True)
def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point (``lambdas.monitor.handler``).

    Args:
        event: an EventBridge "Scheduled Event" (only its ``time`` is logged). Any
            other value works too: one warning line says so, and the sweep runs.
        context: the Lambda context.

    Returns:
        ``{"recovered": tasks requeued or failed, "poked": markers re-written}``.

    Raises:
        ConfigurationError: bad settings.
        StorageError: a request failed (after both steps ran as far as they could); the
            next invocation picks up where this one stopped.

    S3: one LIST of ``leases/<shard>/`` and one of ``ready/<shard>/`` per shard, plus one
    GET and up to two PUTs per expired lease and one GET and one PUT per poked marker.
    """
    cfg = settings()
    scheduled_time = rule_time(event)
    with library_logs(), library_metrics():
        recovered, poked = run_fresh(_sweep(cfg))
    metrics.add_metric(name="LeasesRecovered", unit=MetricUnit.Count, value=recovered)
    metrics.add_metric(name="StalledTasksPoked", unit=MetricUnit.Count, value=poked)
    logger.info("monitor done (rule time %s): %d recovered, %d poked", scheduled_time, recovered, poked)
    return {"recovered": recovered, "poked": poked}


__all__ = ["handler"]
