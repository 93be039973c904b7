"""Lease recovery: requeue tasks whose worker stopped renewing its lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Sequence

from ._time import to_ms
from .errors import ObjectNotFound, StorageError
from .queue import Queue

log = logging.getLogger("buquet.monitor")


class Monitor:
    """Finds expired leases in the lease index and requeues their tasks.

    A task whose lease lapsed goes back to Pending after its retry policy's delay, or
    to Failed when its attempts (``max_retries + 1``, counted at claim) are used up, so
    a task that kills its worker every time cannot loop forever.

    Cost per sweep: one LIST per shard (the index is sorted by expiry, so the LIST
    returns expired entries first and the sweep stops at the first live one), plus one
    GET and up to two PUTs per expired lease — it grows with expired leases, not with
    the number of tasks in the bucket. Tasks that crash within their first heartbeat
    still have their ready marker and are taken over by any worker polling the shard.

    Args:
        queue: the queue.
        shards: shards to watch (default: all of the bucket's shards).
    """

    def __init__(self, queue: Queue, shards: Sequence[str] | None = None) -> None:
        self.queue = queue
        self.shards = queue.check_shards(shards) if shards is not None else queue.shards

    async def sweep(self, now: datetime | None = None) -> int:
        """One pass over every watched shard; returns how many tasks were recovered.

        Raises:
            StorageError: a request failed (the next sweep picks up where this left off).
        """
        now = now or await self.queue.time()
        total = 0
        failure: StorageError | None = None
        for shard in self.shards:
            try:
                total += await self.queue._recover_shard(shard, now)
            except StorageError as exc:  # one shard's trouble must not starve the others
                log.warning("monitor: shard %s: %s", shard, exc)
                failure = exc
        if failure is not None and total == 0:
            raise failure
        return total

    async def poke_stalled(self, now: datetime | None = None, stall_seconds: float = 60.0) -> int:
        """Serverless helper: re-write the oldest ready marker of each shard whose due
        time passed more than ``stall_seconds`` ago, so its S3 event notification
        fires again and invokes a worker (which then polls the whole shard).

        Needed where workers only run when events arrive: tasks whose ``schedule_at``
        or retry backoff ends later, and tasks whose invocation died within its first
        heartbeat, have no fresh event. Cost: one LIST per shard, plus one GET and one
        PUT per stalled shard. Returns the number of markers re-written.

        Raises:
            StorageError: a request failed.
        """
        now = now or await self.queue.time()
        cutoff_ms = to_ms(now) - int(stall_seconds * 1000)
        poked = 0
        for shard in self.shards:
            markers = await self.queue._due_markers(shard, now, limit=1)
            if not markers or markers[0].due_ms > cutoff_ms:
                continue
            key = markers[0].key
            try:
                obj = await self.queue.store.get(key)
            except ObjectNotFound:
                continue  # claimed and cleaned up meanwhile
            await self.queue.store.put(key, obj.data)
            poked += 1
        return poked

    async def run(self, interval_seconds: float = 10.0, stop: asyncio.Event | None = None) -> None:
        """Sweep every ``interval_seconds`` until ``stop`` is set. Storage errors are
        logged and the next sweep goes on."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                recovered = await self.sweep()
                if recovered:
                    log.info("monitor: recovered %d tasks", recovered)
            except StorageError as exc:
                log.warning("monitor sweep failed: %s", exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_seconds)
