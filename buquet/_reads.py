"""Reading tasks for people: history, listings, waiting. Inspection calls, not hot paths."""

from __future__ import annotations

import asyncio
import builtins
import logging
from dataclasses import replace

from . import _validate as v
from . import config as cfg
from ._codec import decode_task
from .errors import ObjectNotFound
from ._ids import check_task_id
from ._tasks import TaskProtocol
from ._time import parse_when
from .errors import CorruptObject, TaskNotFound, TaskTimeout, ValidationError
from .models import Task, TaskStatus

log = logging.getLogger("buquet.queue")


class TaskReader:
    """History, listings and waiting over a :class:`TaskProtocol`."""

    def __init__(self, protocol: TaskProtocol) -> None:
        self.protocol = protocol
        self.store = protocol.store
        self.layout = protocol.layout

    async def get(self, task_id: str) -> Task | None:
        """The task or ``None`` (see :meth:`Queue.get`)."""
        return await self.find(check_task_id(task_id))

    async def find(self, task_id: str) -> Task | None:
        """The task, also one whose submit wrote its marker but not yet its object
        (then one LIST of the shard's ready index and one GET). Raises CorruptObject."""
        loaded = await self.protocol.load(task_id)
        if loaded is not None:
            return loaded[0]
        shard = self.protocol.shard_of(task_id)
        for info in await self.store.list(self.layout.ready_prefix(shard), limit=1000):
            marker = self.layout.parse_ready(info.key)
            if marker is not None and marker.task_id == task_id:
                try:
                    obj = await self.store.get(info.key)
                except ObjectNotFound:
                    return None
                if obj.data:
                    return decode_task(obj.data, info.key)[0]
        return None


    async def time(self):  # type: ignore[no-untyped-def]
        """The store's time."""
        return await self.protocol.time()

    async def get_history(self, task_id: str) -> builtins.list[Task]:
        """See :meth:`Queue.get_history` (its arguments, errors and cost)."""
        task = await self.get(task_id)
        if task is None:
            return []
        out: builtins.list[Task] = []
        last_error: str | None = None
        for entry in task.history:
            status = TaskStatus(entry["status"])
            last_error = entry.get("error", last_error)
            at = parse_when("history.at", entry["at"])
            out.append(replace(
                task, status=status, attempt=int(entry.get("attempt", 0)), worker_id=entry.get("worker_id"),
                last_error=last_error, updated_at=at,
                output=task.output if status == TaskStatus.Completed else None,
                completed_at=at if status.is_final else None, lease_expires_at=None, history=(),
            ))
        return out

    async def list(
        self, shard: str, status: TaskStatus | str | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """See :meth:`Queue.list` (its arguments, errors and cost)."""
        self.protocol.check_shards([shard], "shard")
        v.int_in_range(limit, "limit", 1, 10000)
        want: TaskStatus | None = None
        if status is not None:
            try:
                want = TaskStatus(status)
            except ValueError:
                raise ValidationError(
                    "status", f"must be one of {[s.value for s in TaskStatus]}, got {status!r}"
                ) from None
        out: builtins.list[Task] = []
        start_after: str | None = None
        while len(out) < limit:
            page = await self.store.list(self.layout.tasks_prefix(shard), start_after=start_after, limit=1000)
            if not page:
                break
            start_after = page[-1].key
            for task in await self.read_tasks([i.key for i in page]):
                if want is None or task.status == want:
                    out.append(task)
                    if len(out) >= limit:
                        break
            if len(page) < 1000:
                break
        return out

    async def read_tasks(self, keys: builtins.list[str]) -> builtins.list[Task]:
        """The task objects at ``keys`` (GETs, 16 in flight), in order; missing ones
        left out, corrupt ones logged and left out."""
        out: builtins.list[Task] = []
        for obj in await self.store.get_many(keys):
            if obj is None:
                continue
            try:
                out.append(decode_task(obj.data, obj.info.key)[0])
            except CorruptObject as exc:
                log.error("list: skipping %s", exc)
        return out

    async def recent(
        self, shards: builtins.list[str], status: TaskStatus | None = None, task_type: str | None = None,
        limit: int = 100,
    ) -> tuple[builtins.list[Task], int]:
        """The newest ``limit`` tasks of ``shards`` (ids are time-ordered UUIDv7s),
        optionally only of ``status``/``task_type``, newest first, and how many task
        objects the shards hold. Cost: one LIST per 1,000 tasks of the shards, then GETs
        from the newest down, 50 at a time, until ``limit`` match (or all were read)."""
        keys: builtins.list[tuple[str, str]] = []
        for shard in self.protocol.check_shards(shards, "shards"):
            async for page in self.store.scan(self.layout.tasks_prefix(shard)):
                for info in page:
                    parsed = self.layout.parse_task(info.key)
                    if parsed is not None:
                        keys.append((parsed[1], info.key))
        keys.sort(reverse=True)
        out: builtins.list[Task] = []
        for start in range(0, len(keys), 50):
            for task in await self.read_tasks([k for _, k in keys[start:start + 50]]):
                if (status is None or task.status == status) and (task_type is None or task.task_type == task_type):
                    out.append(task)
            if len(out) >= limit:
                break
        return out[:limit], len(keys)

    async def list_ready(self, shard: str, limit: int = 100) -> builtins.list[str]:
        """See :meth:`Queue.list_ready` (its arguments, errors and cost)."""
        self.protocol.check_shards([shard], "shard")
        v.int_in_range(limit, "limit", 1, 1000)
        seen: dict[str, None] = {}
        for m in await self.protocol.due_markers(shard, await self.time(), limit):
            seen.setdefault(m.task_id, None)
        return builtins.list(seen)[:limit]

    async def wait(
        self, task_id: str, timeout_seconds: float | None = None, poll_interval_ms: int = 200
    ) -> Task:
        """See :meth:`Queue.wait` (its arguments, errors and cost)."""
        check_task_id(task_id)
        if timeout_seconds is not None:
            cfg.finite_number(timeout_seconds, "timeout_seconds", 0, 10**9)
        v.int_in_range(poll_interval_ms, "poll_interval_ms", 1, 3_600_000)
        loop = asyncio.get_running_loop()
        deadline = None if timeout_seconds is None else loop.time() + timeout_seconds
        while True:
            task = await self.get(task_id)
            if task is None:
                raise TaskNotFound(f"task {task_id} not found")
            if task.status.is_final:
                return task
            if deadline is not None and loop.time() >= deadline:
                raise TaskTimeout(task_id, f"task {task_id} is still {task.status.value} after {timeout_seconds}s")
            await asyncio.sleep(poll_interval_ms / 1000)

