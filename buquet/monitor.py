"""Lease recovery: requeue tasks whose worker stopped renewing its lease."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Sequence

from . import config as cfg
from ._control import TaskControl
from ._loops import every
from ._tasks import Recovery
from ._time import to_ms
from .errors import StorageError
from .queue import Queue

log = logging.getLogger("buquet.monitor")

#: lease-index entries read per shard per sweep (one LIST)
SWEEP_LIMIT = 1000


class Monitor:
    """Finds expired leases in the lease index and requeues their tasks.

    A task whose lease lapsed goes back to Pending at its old place in the ready order,
    or to Failed when its attempts (``max_retries + 1``, counted at claim) are used up,
    so a task that kills its worker every time cannot loop forever. The monitor never
    deletes the last index entry of a live task (see ``docs/protocol.md``).

    Cost per sweep: one LIST per shard (the index is sorted by expiry, so the LIST
    returns expired entries first and the sweep stops at the first live one), plus one
    GET and up to two PUTs per expired entry — it grows with expired leases, not with
    the number of tasks in the bucket. Tasks that crash within their first heartbeat
    still have their ready marker and are taken over by any worker polling the shard.

    Args:
        queue: the queue.
        shards: shards to watch (default: all of the bucket's shards).
    """

    def __init__(self, queue: Queue, shards: Sequence[str] | None = None) -> None:
        self.queue = queue
        self.protocol = queue.protocol
        self.control = TaskControl(queue.protocol)
        self.shards = queue.check_shards(shards) if shards is not None else queue.shards

    async def sweep(self, now: datetime | None = None) -> int:
        """One pass over every watched shard; returns how many tasks were recovered
        (requeued or failed after a lapsed lease, or expired past their deadline). A
        corrupt task object is logged and skipped.

        Raises:
            StorageError: every shard failed (the next sweep picks up where this left
                off); a single shard's failure is logged and the others go on.
        """
        now = now or await self.protocol.time()
        total = 0
        failure: StorageError | None = None
        for shard in self.shards:
            try:
                total += await self._sweep_shard(shard, now)
            except StorageError as exc:  # one shard's trouble must not starve the others
                log.warning("monitor: shard %s: %s", shard, exc)
                failure = exc
        if failure is not None and total == 0:
            raise failure
        return total

    async def _sweep_shard(self, shard: str, now: datetime) -> int:
        """Expired leases, then passed deadlines, of one shard. Cost: 2 LISTs (the
        lease and expiry indexes) plus the per-entry costs."""
        layout = self.protocol.layout
        recovered = await self._sweep_index(layout.lease_prefix(shard), layout.parse_lease, self.protocol.recover, now)
        recovered += await self._sweep_index(
            layout.expiry_prefix(shard), layout.parse_expiry, self.control.expire_entry, now
        )
        return recovered

    async def _sweep_index(self, prefix: str, parse: Any, handle: Any, now: datetime) -> int:
        """Handle the entries of a time-sorted index that are due at ``now``."""
        now_ms = to_ms(now)
        done = 0
        stale: list[str] = []
        try:
            for info in await self.protocol.store.list(prefix, limit=SWEEP_LIMIT):
                entry = parse(info.key)
                if entry is None:
                    continue
                if entry.expires_ms > now_ms:
                    break
                try:
                    outcome, keys = await handle(entry, now)
                except StorageError as exc:
                    log.warning("monitor: index entry %s: %s", entry.key, exc)
                    continue
                stale.extend(keys)
                done += outcome in (Recovery.REQUEUED, Recovery.FAILED)
        finally:
            if stale:
                await self.protocol.store.delete_many(stale)
        return done

    async def poke_stalled(self, now: datetime | None = None, stall_seconds: float = cfg.DEFAULT_STALL_SECONDS) -> int:
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
        now = now or await self.protocol.time()
        cutoff_ms = to_ms(now) - int(stall_seconds * 1000)
        poked = 0
        for shard in self.shards:
            markers = await self.protocol.due_markers(shard, now, limit=1)
            if markers and markers[0].due_ms <= cutoff_ms and await self.protocol.reannounce(markers[0]):
                poked += 1
        return poked

    async def run(self, interval_seconds: float = cfg.DEFAULT_MONITOR_INTERVAL_SECONDS,
                  stop: asyncio.Event | None = None) -> None:
        """Sweep every ``interval_seconds`` until ``stop`` is set. Errors are logged
        (storage errors as one rate-limited line) and the next sweep goes on."""

        async def step() -> int:
            recovered = await self.sweep()
            if recovered:
                log.info("monitor: recovered %d tasks", recovered)
            return recovered

        await every(interval_seconds, step, stop or asyncio.Event(), name="monitor sweep", logger=log)
