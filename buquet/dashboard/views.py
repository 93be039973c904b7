"""The dashboard's view model: every :class:`~buquet.Queue` call the dashboard makes.

Routes (``app.py``) only parse parameters, call one method here inside
:meth:`Dashboard.measured`, and render a template. Each method returns plain
dataclasses and documents what it costs in S3 requests; :meth:`Dashboard.measured`
counts the requests a page view really sent (the store's ``request_counts``), which
every page shows in its footer.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, AsyncIterator, Sequence

from ..errors import TaskNotFound
from ..models import Task, TaskStatus
from ..queue import Queue
from .chart import Throughput
from .params import TaskQuery

#: most task objects one task-list page view reads (GETs) while filtering
DEFAULT_SCAN_LIMIT = 500
#: GETs in flight at once
READ_CONCURRENCY = 16
#: final tasks the overview's ``Queue.stats`` call reads at most (GETs)
DEFAULT_FINAL_SAMPLE = 100


@dataclass
class Cost:
    """What one page view sent to the store.

    Attributes:
        by_op: requests by operation (``list``, ``get``, ``put``, ...), only non-zero.
        ms: wall time of the queue calls, milliseconds.
    """

    by_op: dict[str, int] = field(default_factory=dict)
    ms: float = 0.0

    @property
    def total(self) -> int:
        """All requests of the page view."""
        return sum(self.by_op.values())

    def summary(self) -> str:
        """``"3 S3 requests (1 LIST, 2 GET) in 12 ms"``."""
        parts = ", ".join(f"{n} {op.upper()}" for op, n in sorted(self.by_op.items()))
        return f"{self.total} S3 request{'s' if self.total != 1 else ''}" + (f" ({parts})" if parts else "") + \
            f" in {self.ms:.0f} ms"


@dataclass
class Overview:
    """The overview page's data.

    Attributes:
        now: the store's time (aware UTC).
        stats: the ``Queue.stats()`` result (:class:`~buquet._stats.QueueStats`).
        workers: the ``Queue.workers()`` result (alive and gone).
        shards: the bucket's shard names.
        throughput: the tasks/s points measured so far (see :mod:`.chart`).
    """

    now: datetime
    stats: Any
    workers: list[Any]
    shards: list[str]
    throughput: list[Any]


@dataclass
class TaskPage:
    """One page of the task list, newest first.

    Attributes:
        tasks: the tasks shown (at most ``query.limit``).
        in_range: task objects listed in the selected shards and time range (a lower
            bound unless ``in_range_complete``: the listing looks back an hour, a day,
            30 days, then everything, only as far as the page needs).
        scanned: task objects read (GETs) to fill the page.
        next_before: cursor of the next (older) page, or ``None`` when this is the last.
        partial: the scan limit stopped the read before the page was full; the next
            page continues where it stopped.
    """

    tasks: list[Task]
    in_range: int
    scanned: int
    next_before: str | None
    partial: bool
    in_range_complete: bool = True


@dataclass
class ScheduleRow:
    """A schedule with its last run, next run and the last run's task (or ``None``)."""

    schedule: Any
    last_run: Any
    last_task: Task | None


class Dashboard:
    """The queue calls of the dashboard, each documented with its S3 cost.

    Args:
        queue: an open :class:`~buquet.Queue`.
        scan_limit: most task objects one task-list page reads while filtering.
        final_sample: passed to ``Queue.stats`` (final tasks read per overview, GETs).

    Page views are serialised (one at a time) so that the request count each page
    shows is exactly its own.
    """

    def __init__(self, queue: Queue, *, scan_limit: int = DEFAULT_SCAN_LIMIT,
                 final_sample: int = DEFAULT_FINAL_SAMPLE) -> None:
        self.queue = queue
        self.scan_limit = scan_limit
        self.final_sample = final_sample
        self.throughput = Throughput()
        self._lock = asyncio.Lock()

    @property
    def shards(self) -> list[str]:
        """The bucket's shard names."""
        return self.queue.shards

    @asynccontextmanager
    async def measured(self) -> AsyncIterator[Cost]:
        """Serialise one page view's queue calls and count their requests into the
        yielded :class:`Cost` (filled in when the block ends)."""
        async with self._lock:
            counts = self.queue.store.request_counts
            before = dict(counts)
            start = time.perf_counter()
            cost = Cost()
            try:
                yield cost
            finally:
                cost.ms = (time.perf_counter() - start) * 1000
                cost.by_op = {op: n - before.get(op, 0) for op, n in counts.items() if n - before.get(op, 0)}

    async def now(self) -> datetime:
        """The store's time (at most one HEAD per 5 minutes on S3)."""
        return await self.queue.time()

    # ------------------------------------------------------------ overview
    async def overview(self) -> Overview:
        """Counts, queue lag, workers and throughput.

        S3: what ``Queue.stats`` costs — per shard one LIST of ``ready/``, one of
        ``leases/`` and one of ``tasks/`` (one more per further 1,000 keys of the
        first two), plus GETs of at most ``final_sample`` final tasks — and
        ``Queue.workers`` (1 LIST + 1 GET per registered worker).
        """
        stats = await self.queue.stats(final_sample=self.final_sample)
        workers = await self.queue.workers()
        self.throughput.add(stats.at, workers)
        return Overview(stats.at, stats, workers, self.shards, self.throughput.points())

    async def sample(self) -> None:
        """Take one throughput sample outside any page view (the background sampler
        of ``create_app(sample_seconds=...)``). S3: 1 LIST + 1 GET per registered
        worker. Serialised with page views, so it never shows in their counts."""
        async with self._lock:
            now = await self.now()
            self.throughput.add(now, await self.queue.workers())

    async def workers(self) -> tuple[datetime, list[Any]]:
        """The store's time and every registered worker (alive and gone).
        S3: 1 LIST + 1 GET per registered worker."""
        now = await self.now()
        found = await self.queue.workers()
        self.throughput.add(now, found)
        return now, found

    # --------------------------------------------------------------- tasks
    async def task_page(self, q: TaskQuery) -> TaskPage:
        """One page of tasks, newest first, filtered by ``q``.

        :meth:`Queue.recent`: task ids are time-ordered (UUIDv7), so the time filters,
        the ``before`` cursor and a look-back window (a minute, widened to an hour, a day,
        30 days, everything only while too few ids turn up) bound the LIST itself. Then task
        objects are read newest first until ``q.limit`` match or ``scan_limit`` were read.

        S3: per shard 1 LIST per 1,000 task keys in the window (+1 per widening), plus
        ``q.limit`` GETs without a status/type filter (with one: the GETs needed to
        find ``q.limit`` matches, at most ``scan_limit``).
        """
        page = await self.queue.recent([q.shard] if q.shard else self.shards, q.status, q.task_type, q.limit,
                                       before=q.before, since=q.since, until=q.until, scan_limit=self.scan_limit)
        partial = page.next_before is not None and len(page.tasks) < q.limit
        return TaskPage(page.tasks, page.listed, page.read, page.next_before, partial, page.complete)

    async def _read(self, ids: Sequence[str]) -> list[Task | None]:
        """``Queue.get`` of each id, ``READ_CONCURRENCY`` in flight (1 GET each)."""
        sem = asyncio.Semaphore(READ_CONCURRENCY)

        async def one(tid: str) -> Task | None:
            async with sem:
                return await self.queue.get(tid)

        return list(await asyncio.gather(*(one(t) for t in ids)))

    async def task(self, task_id: str) -> Task | None:
        """The task with its history and progress, or ``None``. S3: 1 GET (+1 LIST
        when it does not exist)."""
        return await self.queue.get(task_id)

    async def payload(self, task_id: str, which: str) -> Any:
        """The task's full ``input`` or ``output`` (``which``), also from a payload
        object. S3: 1 GET, +1 GET when it lives in a payload object.

        Raises:
            TaskNotFound: no such task.
        """
        task = await self.queue.get(task_id)
        if task is None:
            raise TaskNotFound(f"task {task_id} not found")
        return await (self.queue.load_input(task) if which == "input" else self.queue.load_output(task))

    # ----------------------------------------------------------- schedules
    async def schedules(self) -> tuple[datetime, list[ScheduleRow]]:
        """Every schedule with its last run, next run and last task.

        S3: 1 LIST + per schedule 1 GET (definition) + 1 GET (run state) + 1 GET (the
        last run's task, when there is one).
        """
        now = await self.now()
        found = await self.queue.list_schedules()
        runs = await asyncio.gather(*(self.queue.schedules.last_run_of(s, now) for s in found))
        tasks = await self._read([r.last_task_id for r in runs if r.last_task_id])
        by_id = {t.id: t for t in tasks if t is not None}
        return now, [ScheduleRow(s, r, by_id.get(r.last_task_id or "")) for s, r in zip(found, runs)]

    # ------------------------------------------------------------- actions
    async def act_on_task(self, task_id: str, action: str) -> str:
        """Apply ``action`` (``cancel``, ``request-cancel``, ``retry``, ``archive``,
        ``delete``) to a task and return a message for people.

        S3: cancel 1 GET + 1 PUT + 1 DeleteObjects; request-cancel 1 GET + 1 PUT;
        retry 1 GET + 3 PUT + 1 DELETE;
        archive 1 GET + 1 PUT; delete 1 GET + 1 LIST + 1 DeleteObjects + 1 DELETE.

        Raises:
            TaskNotFound, TaskStateError, ValidationError, PreconditionFailed: as the
            Queue method raises them.
        """
        q = self.queue
        if action == "cancel":
            task = await q.cancel(task_id, reason="cancelled from the dashboard", cancelled_by="dashboard")
        elif action == "request-cancel":
            task = await q.request_cancellation(task_id)
            return f"Cancellation requested for task {task.id}: its handler sees it at the worker's next heartbeat."
        elif action == "retry":
            task = await q.retry(task_id)
        elif action == "archive":
            task = await q.archive(task_id)
        elif action == "delete":
            await q.delete(task_id)
            return f"Deleted task {task_id}."
        else:
            raise ValueError(f"unknown task action {action!r}")
        return f"Task {task.id} is now {task.status.value}."

    async def act_on_schedule(self, schedule_id: str, action: str) -> str:
        """``enable``, ``disable`` or ``trigger`` a schedule; a message for people.

        Raises:
            ScheduleNotFound, ValidationError: as the Queue method raises them.
        """
        q = self.queue
        if action == "enable":
            await q.enable_schedule(schedule_id)
            return f"Schedule {schedule_id} enabled."
        if action == "disable":
            await q.disable_schedule(schedule_id)
            return f"Schedule {schedule_id} disabled."
        if action == "trigger":
            task = await q.trigger_schedule(schedule_id)
            return f"Schedule {schedule_id} triggered: task {task.id}."
        raise ValueError(f"unknown schedule action {action!r}")


#: which task actions each status allows (what the task page offers)
TASK_ACTIONS: dict[TaskStatus, tuple[str, ...]] = {
    TaskStatus.Pending: ("cancel",),
    TaskStatus.Running: ("request-cancel",),
    TaskStatus.Completed: ("archive", "delete"),
    TaskStatus.Failed: ("retry", "archive", "delete"),
    TaskStatus.Cancelled: ("retry", "delete"),
    TaskStatus.Expired: ("retry", "delete"),
    TaskStatus.Archived: ("delete",),
}

__all__ = ["Dashboard", "Cost", "Overview", "TaskPage", "ScheduleRow", "TASK_ACTIONS", "DEFAULT_SCAN_LIMIT"]
