"""Lease recovery: requeue tasks whose worker stopped renewing its lease."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any, Sequence

from . import config as cfg
from ._control import TaskControl
from ._loops import every
from ._recovery import LeaseRecovery, Recovery
from ._time import to_ms
from .errors import BuquetError, StorageError
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

    Cost per sweep: one LIST of ``leases/`` and one of ``expiries/`` while each holds
    fewer than 1,000 entries in all (else one LIST per shard and index; the indexes are
    sorted by expiry, so expired entries come first), plus one GET and up to two PUTs
    per expired entry — it grows with expired leases, not with the number of tasks in
    the bucket. Tasks that crash within their first heartbeat still have their ready
    marker and are taken over by any worker polling the shard.

    **Retention** (``retention_days``): every ``sweep_interval_seconds`` (0: never) a
    sweep also reads one page (``sweep_page_size`` keys) of each shard's task objects,
    resuming where the last one stopped, and deletes final tasks (Completed, Failed,
    Cancelled, Archived, Expired) not changed for ``retention_days``, with their payload
    objects. Cost: one LIST per shard per retention step plus one GET per object older
    than the cutoff (the LIST's LastModified filters the rest), one DeleteObjects per
    deleted task.

    Args:
        queue: the queue.
        shards: shards to watch (default: all of the bucket's shards).
        retention_days: delete final tasks this old (``None``: keep them forever).
        sweep_interval_seconds: period of the retention step, seconds (0: off).
        sweep_page_size: task objects listed per shard per retention step (1–1,000).

    Raises:
        ValidationError: ``retention_days`` not a positive number, or a sweep setting
            out of range.
    """

    def __init__(self, queue: Queue, shards: Sequence[str] | None = None, *,
                 retention_days: float | None = None,
                 sweep_interval_seconds: float = cfg.DEFAULT_SWEEP_INTERVAL_SECONDS,
                 sweep_page_size: int = cfg.DEFAULT_SWEEP_PAGE_SIZE) -> None:
        self.queue = queue
        self.protocol = queue.protocol
        self.control = TaskControl(queue.protocol)
        self.recovery = LeaseRecovery(queue.protocol)
        self.shards = queue.check_shards(shards) if shards is not None else queue.shards
        self.retention_days = None if retention_days is None else cfg.finite_number(
            retention_days, "retention_days", 0.001, 36500)
        self._retention_cursor: dict[str, str | None] = {}
        self.sweep_interval_seconds = cfg.finite_number(sweep_interval_seconds, "sweep_interval_seconds", 0, 7 * 24 * 3600)
        self.sweep_page_size = int(cfg.finite_number(sweep_page_size, "sweep_page_size", 1, 1000))
        self._retention_next = 0.0
        #: final tasks deleted by retention so far (cumulative, this Monitor)
        self.retained = 0

    async def sweep(self, now: datetime | None = None) -> int:
        """One pass over every watched shard; returns how many tasks were recovered
        (requeued or failed after a lapsed lease, or expired past their deadline). A
        corrupt task object is logged and skipped.

        Cost: while an index (``leases/``, ``expiries/``) holds fewer than 1,000
        entries in all, one LIST covers every shard; otherwise one LIST per shard.
        Plus the per-entry costs, and the retention step every ``sweep_interval_seconds``.

        Raises:
            StorageError: every shard failed (the next sweep picks up where this left
                off); a single shard's failure is logged and the others go on.
        """
        now = now or await self.protocol.time()
        layout = self.protocol.layout
        total = 0
        failures: list[StorageError] = []
        for root, per_shard, parse, handle in (
            (layout.lease_root(), layout.lease_prefix, layout.parse_lease, self.recovery.recover),
            (layout.expiry_root(), layout.expiry_prefix, layout.parse_expiry, self.control.expire_entry),
        ):
            total += await self._sweep_index(root, per_shard, parse, handle, now, failures)
        if self.retention_days is not None and self._retention_due():
            for shard in self.shards:
                try:
                    await self.retain(shard, now)
                except StorageError as exc:
                    log.warning("retention: shard %s: %s", shard, exc)
        if failures and total == 0 and len(failures) >= len(self.shards):
            raise failures[-1]
        return total

    def _retention_due(self) -> bool:
        loop_now = asyncio.get_running_loop().time()
        if self.sweep_interval_seconds <= 0 or loop_now < self._retention_next:
            return False
        self._retention_next = loop_now + self.sweep_interval_seconds
        return True

    async def retain(self, shard: str, now: datetime) -> int:
        """One retention step for one shard (see the class docstring); returns the
        number of tasks deleted."""
        assert self.retention_days is not None
        cutoff = now - timedelta(days=self.retention_days)
        page = await self.protocol.store.list(
            self.protocol.layout.tasks_prefix(shard), start_after=self._retention_cursor.get(shard),
            limit=self.sweep_page_size)
        self._retention_cursor[shard] = page[-1].key if len(page) == self.sweep_page_size else None
        deleted = 0
        for info in page:
            if info.last_modified > cutoff:
                continue
            parsed = self.protocol.layout.parse_task(info.key)
            if parsed is None:
                continue
            try:
                loaded = await self.protocol.load(parsed[1], parsed[0])
            except StorageError as exc:  # CorruptObject included: left for a person
                log.warning("retention: %s", exc)
                continue
            if loaded is None or not loaded[0].status.is_final or loaded[0].updated_at > cutoff:
                continue
            try:
                await self.control.delete(loaded[0].id)
                deleted += 1
                self.retained += 1
            except BuquetError as exc:
                log.warning("retention: task %s: %s", loaded[0].id, exc)
        if deleted:
            log.info("retention: deleted %d tasks of shard %s older than %s days", deleted, shard, self.retention_days)
        return deleted

    async def _sweep_index(self, root: str, per_shard: Any, parse: Any, handle: Any, now: datetime,
                           failures: list[StorageError]) -> int:
        """Handle the entries of a time-sorted index (``leases/`` or ``expiries/``)
        that are due at ``now``: one LIST of the whole index while it is small,
        else one LIST per shard (a shard's failure is logged and noted in ``failures``)."""
        watched = set(self.shards)
        if len(watched) > 1:
            try:
                page = await self.protocol.store.list(root, limit=SWEEP_LIMIT)
            except StorageError as exc:
                log.warning("monitor: %s: %s", root, exc)
                failures.extend([exc] * len(watched))
                return 0
            if len(page) < SWEEP_LIMIT:
                return await self._handle_due(page, parse, handle, now, watched)
        done = 0
        for shard in self.shards:
            try:
                page = await self.protocol.store.list(per_shard(shard), limit=SWEEP_LIMIT)
                done += await self._handle_due(page, parse, handle, now, watched)
            except StorageError as exc:  # one shard's trouble must not starve the others
                log.warning("monitor: shard %s: %s", shard, exc)
                failures.append(exc)
        return done

    async def _handle_due(self, page: Sequence[Any], parse: Any, handle: Any, now: datetime, watched: set[str]) -> int:
        now_ms = to_ms(now)
        done = 0
        stale: list[str] = []
        try:
            for info in page:
                entry = parse(info.key)
                if entry is None or entry.shard not in watched or entry.expires_ms > now_ms:
                    continue
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
            if markers and markers[0].due_ms <= cutoff_ms and await self.recovery.reannounce(markers[0]):
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
