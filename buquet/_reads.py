"""Reading tasks for people: history, listings, waiting. Inspection calls, not hot paths."""

from __future__ import annotations

import asyncio
import builtins
import logging
from dataclasses import dataclass, replace
from datetime import datetime

from . import _validate as v
from . import config as cfg
from ._codec import decode_task
from .errors import ObjectNotFound
from ._ids import check_task_id, id_floor
from ._tasks import TaskProtocol
from ._time import parse_when, to_ms
from .errors import CorruptObject, TaskNotFound, TaskTimeout, ValidationError
from .models import Task, TaskStatus

log = logging.getLogger("buquet.queue")

#: newest-first listings look this far back first, then widen (a minute, an hour, a day, 30 days)
_WINDOWS_MS = (60_000, 3_600_000, 86_400_000, 30 * 86_400_000)


@dataclass(frozen=True, slots=True)
class RecentPage:
    """One page of :meth:`Queue.recent`.

    Attributes:
        tasks: the matching tasks, newest first (at most ``limit``).
        listed: task ids listed to build the page (all of the shards' tasks when
            ``complete``; otherwise a lower bound: "of ≥ listed").
        complete: every task of the shards (in the time range) was listed.
        next_before: the cursor for the next (older) page — pass it as ``before`` — or
            ``None`` when nothing older is left.
        read: task objects read (GETs) to fill the page.
    """

    tasks: builtins.list[Task]
    listed: int
    complete: bool
    next_before: str | None
    read: int = 0


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
        self, shards: builtins.list[str], status: TaskStatus | str | None = None, task_type: str | None = None,
        limit: int = 100, *, since: datetime | str | None = None, until: datetime | str | None = None,
        before: str | None = None, scan_limit: int | None = None,
    ) -> RecentPage:
        """The newest ``limit`` tasks of ``shards`` created before ``before`` (a task id
        cursor) and at or after ``since_ms``, only of ``status``/``task_type`` when
        given, newest first.

        Task ids are time-ordered (UUIDv7), so a LIST can start at a creation time: the
        shards are listed over the last minute first, and the window widens (an hour, a
        day, 30 days, everything) only while it holds fewer ids than the page needs (``limit``,
        or ``scan_limit`` with a filter). Then task objects are read newest first until
        ``limit`` match or ``scan_limit`` were read.

        S3: per shard, 1 LIST per 1,000 task keys in the window (plus 1 per widening),
        then 1 GET per task read (16 in flight).

        Raises:
            ValidationError: unknown shard or status, bad task type, limit, cursor or time.
        """
        chosen = self.protocol.check_shards(shards, "shards")
        v.int_in_range(limit, "limit", 1, 100_000)
        if scan_limit is not None:
            v.int_in_range(scan_limit, "scan_limit", 1, 1_000_000)
        if task_type is not None:
            v.task_type(task_type)
        if before is not None:
            before = check_task_id(before, "before")
        since_ms = None if since is None else to_ms(parse_when("since", since))
        if until is not None:
            floor = id_floor(to_ms(parse_when("until", until)))
            before = floor if before is None else min(before, floor)
        try:
            status = None if status is None else TaskStatus(status)
        except ValueError:
            raise ValidationError("status", f"must be one of {[x.value for x in TaskStatus]}, got {status!r}") from None
        filtered = status is not None or task_type is not None
        budget = max(limit, scan_limit if scan_limit is not None else (limit if not filtered else 10 * limit))
        need = budget if filtered else limit  # ids the listing must find before it stops widening
        upper_ms = None if before is None else int(before.replace("-", "")[:12], 16) + 1
        top_ms = upper_ms if upper_ms is not None else to_ms(await self.protocol.time())
        ids: builtins.list[str] = []
        listed_to: int | None = None  # ids created at or after this are listed already
        complete = False
        for window_ms in (*_WINDOWS_MS, None):
            lower = None if window_ms is None else max(0, top_ms - window_ms)
            if since_ms is not None and (lower is None or lower <= since_ms):
                lower, window_ms = since_ms, None
            for shard in chosen:
                ids.extend(await self._ids_between(shard, lower, listed_to, before))
            listed_to = lower
            if window_ms is None:
                complete = True
                break
            if len(ids) >= need:
                break
        ids.sort(reverse=True)
        out: builtins.list[Task] = []
        read = 0
        while read < len(ids) and len(out) < limit and read < budget:
            want = max(16, limit - len(out)) if filtered else limit - len(out)
            chunk = ids[read:read + min(want, 50, budget - read)]
            keys = [self.layout.task(self.protocol.shard_of(t), t) for t in chunk]
            for task in await self.read_tasks(keys):
                if (status is None or task.status == status) and (task_type is None or task.task_type == task_type):
                    out.append(task)
            read += len(chunk)
        if len(out) >= limit:
            out = out[:limit]
            cursor: str | None = out[-1].id
            more = not complete or ids[-1] < out[-1].id
        else:
            cursor = ids[read - 1] if read else None
            more = read < len(ids) or not complete
        return RecentPage(out, len(ids), complete, cursor if more else None, read)

    async def _ids_between(self, shard: str, lower_ms: int | None, upper_ms: int | None, before: str | None,
                           ) -> builtins.list[str]:
        """Task ids of ``shard`` created in [``lower_ms``, ``upper_ms``) and before the
        id ``before`` (LISTs from ``StartAfter`` = the lower time)."""
        prefix = self.layout.tasks_prefix(shard)
        start = prefix + id_floor(lower_ms) if lower_ms is not None else None
        stop = min([x for x in (before, id_floor(upper_ms) if upper_ms is not None else None) if x], default=None)
        out: builtins.list[str] = []
        while True:
            page = await self.store.list(prefix, start_after=start, limit=1000)
            for info in page:
                parsed = self.layout.parse_task(info.key)
                if parsed is None:
                    continue
                if stop is not None and parsed[1] >= stop:
                    return out
                out.append(parsed[1])
            if len(page) < 1000:
                return out
            start = page[-1].key

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

