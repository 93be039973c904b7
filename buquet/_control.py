"""Task control by anyone but the lease holder: cancel, request cancellation, expire,
replay (retry a final task), delete.

Each operation reads the task, checks the transition is allowed, and writes it with
``If-Match`` on the version it read (:meth:`TaskProtocol.put_state`); when the task
changed meanwhile it reads again and decides again. Index entries follow the protocol's
order (``docs/protocol.md``): a new ready marker is written *before* a task becomes
Pending, old entries are deleted only after the task is final.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Sequence

from . import _telemetry
from . import _transitions as tr
from ._codec import Encoded
from ._ids import check_task_id
from ._recovery import Recovery, load_live
from ._tasks import TaskProtocol
from ._time import to_ms
from ._writes import put_resolved
from .errors import CorruptObject, PreconditionFailed, TaskNotFound, TaskStateError, ValidationError
from .keys import LeaseKey
from .models import Task, TaskStatus

log = logging.getLogger("buquet.control")

#: tries of one control transition when the task keeps changing under it
_TRIES = 5
#: requests in flight for bulk operations
BULK_CONCURRENCY = 16

_REPLAYABLE = (TaskStatus.Failed, TaskStatus.Cancelled, TaskStatus.Expired)
#: a replay's guard entry in the lease index comes due this long after the replay
REPLAY_GUARD_SECONDS = 60


@dataclass(frozen=True, slots=True)
class CancelByTypeResult:
    """What :meth:`Queue.cancel_by_type` did.

    Attributes:
        cancelled: the tasks now Cancelled.
        failed: ``(task_id, error)`` for every task of the type that could not be
            cancelled (it was claimed meanwhile, ...).
    """

    cancelled: list[Task] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


class TaskControl:
    """Transitions requested from outside a worker, over a :class:`TaskProtocol`."""

    def __init__(self, protocol: TaskProtocol) -> None:
        self.protocol = protocol
        self.layout = protocol.layout

    async def _transition(
        self, task_id: str, allowed: Callable[[Task], str | None], change: Callable[[Task, datetime], Task]
    ) -> tuple[Task, Task]:
        """Read, check (``allowed`` returns an error text to refuse), write with
        ``If-Match``; returns ``(before, after)``. Raises TaskNotFound, TaskStateError,
        CorruptObject, StorageError."""
        task_id = check_task_id(task_id)
        for _ in range(_TRIES):
            loaded = await self.protocol.load(task_id)
            if loaded is None:
                raise TaskNotFound(f"task {task_id} not found")
            task, etag = loaded
            refusal = allowed(task)
            if refusal is not None:
                raise TaskStateError(refusal, task_id, task.status)
            new = change(task, await self.protocol.time())
            try:
                await self.protocol.put_state(new, etag)
            except PreconditionFailed:
                continue  # changed meanwhile: decide again on the new state
            return task, new
        raise TaskStateError(f"task {task_id} kept changing; try again", task_id)

    async def _drop(self, task: Task) -> None:
        """Delete the index entries of a task that just became final."""
        keys = [self.layout.ready_for(task), self.layout.expiry_for(task)]
        await self.protocol.store.delete_many([k for k in keys if k])

    # --------------------------------------------------------------- cancel
    async def cancel(self, task_id: str, reason: str | None = None, cancelled_by: str | None = None) -> Task:
        """Pending → Cancelled (also while delayed). S3: 1 GET + 1 PUT + 1 DeleteObjects.

        Raises:
            ValidationError: malformed id. TaskNotFound: ``"... not found"``.
            TaskStateError: ``"Cannot cancel task with status <Status> (only Pending
                tasks can be cancelled)"``.
        """
        def allowed(t: Task) -> str | None:
            if t.status != TaskStatus.Pending:
                return f"Cannot cancel task with status {t.status.name} (only Pending tasks can be cancelled)"
            return None

        before, after = await self._transition(task_id, allowed, lambda t, now: tr.cancelled(t, now, reason, cancelled_by))
        _telemetry.count("buquet.tasks.cancelled", task_type=after.task_type)
        await self._drop(before)
        return after

    async def cancel_many(
        self, task_ids: Sequence[str], reason: str | None = None, cancelled_by: str | None = None
    ) -> list[Task]:
        """Cancel each task; returns the ones cancelled, in input order (others are
        skipped). Every id is checked first: one malformed id raises ValidationError
        and nothing is done."""
        ids = [check_task_id(t) for t in task_ids]
        results = await self._bulk(ids, lambda tid: self.cancel(tid, reason, cancelled_by))
        return [r for r in results if isinstance(r, Task)]

    async def cancel_by_type(
        self, task_type: str, reason: str | None = None, cancelled_by: str | None = None
    ) -> CancelByTypeResult:
        """Cancel every Pending task of ``task_type`` in every shard (no cap). Tasks
        are found through the ready index (which holds the type in its keys): one LIST
        per 1,000 markers per shard, then the cost of :meth:`cancel` per task."""
        ids: dict[str, None] = {}
        for shard in self.protocol.shards:
            async for page in self.protocol.store.scan(self.layout.ready_prefix(shard)):
                for info in page:
                    m = self.layout.parse_ready(info.key)
                    if m is not None and m.task_type == task_type:
                        ids.setdefault(m.task_id, None)
        result = CancelByTypeResult()
        outcomes = await self._bulk(list(ids), lambda tid: self.cancel(tid, reason, cancelled_by))
        for tid, outcome in zip(ids, outcomes):
            if isinstance(outcome, Task):
                result.cancelled.append(outcome)
            elif isinstance(outcome, TaskStateError) and isinstance(outcome.status, TaskStatus) and outcome.status.is_final:
                continue  # a leftover marker of a finished task: nothing to cancel
            else:
                result.failed.append((tid, str(outcome)))
        return result

    async def _bulk(self, ids: list[str], op: Callable[[str], "asyncio.Future[Task] | object"]) -> list[object]:
        sem = asyncio.Semaphore(BULK_CONCURRENCY)

        async def one(tid: str) -> object:
            async with sem:
                try:
                    return await op(tid)  # type: ignore[misc]
                except (TaskStateError, TaskNotFound, CorruptObject) as exc:
                    return exc

        return list(await asyncio.gather(*(one(t) for t in ids)))

    async def request_cancellation(self, task_id: str) -> Task:
        """Flag a Running task ``cancel_requested``; its worker sees it at its next
        heartbeat (or when the handler calls ``ctx.refresh()``), and a handler that then
        returns ``None`` ends the task Cancelled. S3: 1 GET + 1 PUT.

        Raises:
            ValidationError: ``"Invalid UUID: ..."``. TaskNotFound.
            TaskStateError: ``"Cannot request cancellation for task with status
                <Status>"``.
        """
        def allowed(t: Task) -> str | None:
            if t.status != TaskStatus.Running:
                return f"Cannot request cancellation for task with status {t.status.name}"
            return None

        return (await self._transition(task_id, allowed, lambda t, now: tr.cancellation_requested(t, now)))[1]

    # --------------------------------------------------------------- expiry
    async def mark_expired(self, task_id: str) -> Task:
        """Pending → Expired at once, whatever its deadline. S3: 1 GET + 1 PUT + 1
        DeleteObjects.

        Raises:
            TaskNotFound. TaskStateError: ``"Cannot expire task with status <Status>
                (only Pending tasks can expire)"``.
        """
        def allowed(t: Task) -> str | None:
            if t.status != TaskStatus.Pending:
                return f"Cannot expire task with status {t.status.name} (only Pending tasks can expire)"
            return None

        before, after = await self._transition(task_id, allowed, lambda t, now: tr.expired(t, now))
        _telemetry.count("buquet.tasks.expired", task_type=after.task_type)
        await self._drop(before)
        return after

    async def expire_entry(self, entry: LeaseKey, now: datetime) -> tuple[Recovery, list[str]]:
        """Monitor step for one due expiry-index entry: a Pending task past its
        deadline becomes Expired; entries of final tasks are dropped; a Running task
        keeps its entry (a retry would make it Pending again, still with its deadline).
        Returns what happened and the keys to delete. S3: 1 GET (+ 1 PUT)."""
        found = await load_live(self.protocol, entry)
        if isinstance(found[0], Recovery):
            return found  # type: ignore[return-value]
        task, etag = found  # type: ignore[misc]
        if task.status != TaskStatus.Pending or task.expires_at is None or task.expires_at > now:
            return Recovery.SKIPPED, []
        try:
            await self.protocol.put_state(tr.expired(task, now), etag)
        except PreconditionFailed:
            return Recovery.SKIPPED, []  # claimed or changed meanwhile: next sweep decides
        _telemetry.count("buquet.tasks.expired", task_type=task.task_type)
        return Recovery.FAILED, [entry.key, self.layout.ready_for(task)]

    async def archive(self, task_id: str) -> Task | None:
        """Completed/Failed → Archived; ``None`` when there is no such task.

        Raises:
            ValidationError: the task is not Completed or Failed.
            PreconditionFailed: it changed meanwhile; call again.

        S3: 1 GET + 1 PUT (``If-Match``).
        """
        loaded = await self.protocol.load(task_id)
        if loaded is None:
            return None
        task, etag = loaded
        if task.status not in (TaskStatus.Completed, TaskStatus.Failed):
            raise ValidationError(
                "task_id", f"task is {task.status.value}; only completed or failed tasks can be archived"
            )
        new = tr.archived(task, await self.protocol.time())
        await self.protocol.put_state(new, etag)
        return new

    # ----------------------------------------------------------- replay, delete
    async def replay(self, task_id: str) -> Task:
        """A Failed, Cancelled or Expired task back to Pending with a fresh attempt
        budget (history kept): the dead-letter replay.

        Order: a lease-index entry due in :data:`REPLAY_GUARD_SECONDS` first, then the
        task (Pending), then its ready marker, then the entry is deleted. Were the
        caller to die after the task write, the monitor finds the Pending task through
        that entry and announces it. (A ready marker written first would not do:
        workers delete markers of final tasks on sight.) S3: 1 GET + 3 PUT + 1 DELETE.

        Raises:
            TaskNotFound. TaskStateError: ``"Cannot retry task with status <Status>
                (only Failed, Cancelled or Expired tasks can be retried)"``.
        """
        def allowed(t: Task) -> str | None:
            if t.status not in _REPLAYABLE:
                return (f"Cannot retry task with status {t.status.name} "
                        "(only Failed, Cancelled or Expired tasks can be retried)")
            return None

        task_id = check_task_id(task_id)
        now = await self.protocol.time()
        shard = self.protocol.shard_of(task_id)
        guard = self.layout.lease(shard, to_ms(now + timedelta(seconds=REPLAY_GUARD_SECONDS)), task_id)
        await put_resolved(self.protocol.store, guard, Encoded(b"", ""))
        try:
            _, after = await self._transition(task_id, allowed, lambda t, _: tr.replayed(t, now))
        except BaseException:
            await self.protocol.store.delete(guard)
            raise
        await put_resolved(self.protocol.store, self.layout.ready_for(after), Encoded(b"", ""))
        expiry = self.layout.expiry_for(after)
        if expiry is not None:
            await put_resolved(self.protocol.store, expiry, Encoded(b"", ""))
        await self.protocol.store.delete(guard)
        return after

    async def delete(self, task_id: str, *, force: bool = False) -> None:
        """Delete a final task, its payload objects and any index leftovers. With
        ``force`` a Pending task may be deleted too (never a Running one: its worker
        holds it). S3: 1 GET + 1 LIST + 1 DeleteObjects.

        Raises:
            TaskNotFound. TaskStateError: the task is not final.
        """
        task_id = check_task_id(task_id)
        loaded = await self.protocol.load(task_id)
        if loaded is None:
            raise TaskNotFound(f"task {task_id} not found")
        task, _ = loaded
        if not task.status.is_final and not (force and task.status == TaskStatus.Pending):
            raise TaskStateError(
                f"Cannot delete task with status {task.status.name} (only final tasks can be deleted)", task_id, task.status
            )
        keys = [self.layout.task(task.shard, task.id), self.layout.ready_for(task)]
        keys += [k for k in (self.layout.expiry_for(task),) if k]
        keys += [i.key for i in await self.protocol.store.list(self.layout.payload_prefix(task.id))]
        # the task object last: while it exists, the others can still be found from it
        await self.protocol.store.delete_many(keys[1:])
        await self.protocol.store.delete(keys[0])

    async def purge(self, *, status: TaskStatus | None = None, task_type: str | None = None,
                    older_than: datetime | None = None) -> int:
        """Delete every final task (of ``status`` and ``task_type`` when given, last
        changed before ``older_than`` when given), in every shard; returns how many.
        Cost: one LIST per 1,000 tasks, one GET per task, one DeleteObjects per deleted
        task (plus one LIST of its payloads)."""
        deleted = 0
        for shard in self.protocol.shards:
            async for page in self.protocol.store.scan(self.layout.tasks_prefix(shard)):
                for info in page:
                    parsed = self.layout.parse_task(info.key)
                    if parsed is None or (older_than is not None and info.last_modified >= older_than):
                        continue
                    try:
                        loaded = await self.protocol.load(parsed[1], parsed[0])
                    except CorruptObject as exc:
                        log.warning("purge: %s", exc)
                        continue
                    if loaded is None:
                        continue
                    task = loaded[0]
                    if not task.status.is_final or (status is not None and task.status != status):
                        continue
                    if (task_type is not None and task.task_type != task_type) or (
                            older_than is not None and task.updated_at >= older_than):
                        continue
                    try:
                        await self.delete(task.id)
                        deleted += 1
                    except (TaskNotFound, TaskStateError):
                        continue  # changed meanwhile
        return deleted
