"""Lease recovery: what the monitor does with one expired lease-index entry, and the
serverless re-announcement of stalled ready markers."""

from __future__ import annotations

import enum
import logging
from datetime import datetime

from . import _telemetry
from . import _transitions as tr
from ._codec import Encoded
from ._tasks import Lease, TaskProtocol
from ._time import to_ms
from ._writes import put_resolved
from .errors import CorruptObject, LeaseLost, ObjectNotFound
from .keys import LeaseKey, ReadyKey
from .models import Task, TaskStatus

log = logging.getLogger("buquet.monitor")


class Recovery(enum.Enum):
    """What :meth:`TaskProtocol.recover` did with one expired lease-index entry."""

    REQUEUED = "requeued"  #: the lease lapsed; Pending again, at its old place in line
    FAILED = "failed"  #: the lease lapsed with no attempts left; Failed
    STALE = "stale"  #: the entry is redundant (task moved on); delete it
    SKIPPED = "skipped"  #: left alone (unreadable task, or another writer moved it)


async def load_live(protocol: TaskProtocol, entry: LeaseKey) -> tuple[Task, str] | tuple[Recovery, list[str]]:
    """The non-final task an index entry (lease or expiry) names, with its ETag — or
    what to do with the entry instead: drop it (task gone or final) or leave it (the
    task object cannot be decoded; logged)."""
    try:
        loaded = await protocol.load(entry.task_id, entry.shard)
    except CorruptObject as exc:
        log.error("index entry %s skipped: %s", entry.key, exc)
        return Recovery.SKIPPED, []
    if loaded is None or loaded[0].status.is_final:
        return Recovery.STALE, [entry.key]
    return loaded


class LeaseRecovery:
    """Recovers tasks whose worker stopped renewing its lease, over a
    :class:`TaskProtocol`."""

    def __init__(self, protocol: TaskProtocol) -> None:
        self.protocol = protocol
        self.store = protocol.store
        self.layout = protocol.layout

    async def recover(self, entry: LeaseKey, now: datetime) -> tuple[Recovery, list[str]]:
        """Handle one lease-index entry that expired by ``now``; returns what happened
        and the index keys to delete. The last index entry of a live task is never
        given up: a Running task whose lease moved on gets its current entry
        (re)written before this one is dropped, a Pending one its ready marker.

        Raises:
            StorageError: the store kept failing.

        S3: 1 GET; a lapsed lease adds 1 PUT task (+ 1 PUT ready marker to retry).
        """
        found = await load_live(self.protocol, entry)
        if isinstance(found[0], Recovery):
            return found  # type: ignore[return-value]
        task, etag = found  # type: ignore[misc]
        if task.status == TaskStatus.Pending:
            # requeued by a writer that died before it announced the task: announce it
            await self.protocol.announce(task)
            return Recovery.STALE, [entry.key]
        if not tr.is_lease_lapsed(task, now):
            assert task.lease_expires_at is not None
            current = self.layout.lease(task.shard, to_ms(task.lease_expires_at), task.id)
            if current == entry.key:
                return Recovery.SKIPPED, []
            await put_resolved(self.store, current, Encoded(b"", ""))
            return Recovery.STALE, [entry.key]
        lease = Lease(task, etag, [], entry.key)
        step = tr.after_expired_lease(task)
        error = tr.expired_lease_error(task)
        try:
            if step.step == tr.NextStep.RETRY and step.available_at is not None:
                when = step.available_at
                await self.protocol.requeue(lease, lambda t: tr.requeued(t, now, when, error))
            else:
                await self.protocol.write(lease, lambda t: tr.failed(t, now, error + "; no retries left"))
        except LeaseLost:
            return Recovery.SKIPPED, []  # its worker (or another monitor) moved it meanwhile
        log.warning("task %s: %s; recovered (%s)", task.id, error, lease.task.status.value)
        _telemetry.lease_recovered(task.task_type, exhausted=lease.task.status != TaskStatus.Pending)
        outcome = Recovery.REQUEUED if lease.task.status == TaskStatus.Pending else Recovery.FAILED
        return outcome, self.protocol.drop_index(lease)

    async def reannounce(self, marker: ReadyKey) -> bool:
        """Re-write a ready marker with its own content, so its S3 event notification
        fires again (serverless: a stalled shard). ``False`` if it is gone.
        S3: 1 GET + 1 PUT."""
        try:
            obj = await self.store.get(marker.key)
        except ObjectNotFound:
            return False
        await self.store.put(marker.key, obj.data)
        return True
