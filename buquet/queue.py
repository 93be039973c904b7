"""The user's facade: :class:`Queue` and :func:`connect`.

``Queue`` submits and inspects tasks and manages cron schedules. It holds no protocol
logic: every stored change goes through :class:`~buquet._tasks.TaskProtocol` (exposed
as :attr:`Queue.protocol` for workers, the monitor and the scheduler) and every schedule
operation through :class:`~buquet.schedules.ScheduleStore` (:attr:`Queue.schedules`).
See ``docs/protocol.md`` for the object layout and the request costs.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import random
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable

from . import _validate as v
from . import config as cfg
from ._codec import decode_task
from ._ids import check_task_id
from .keys import KeyLayout
from ._tasks import Clock, TaskProtocol
from ._time import parse_when, to_rfc3339
from .errors import CorruptObject, TaskNotFound, TaskTimeout, ValidationError
from .models import RetryPolicy, Task, TaskStatus
from .storage.base import ObjectStore

if TYPE_CHECKING:
    from .schedules import CatchUp, Schedule, ScheduleLastRun, ScheduleStore

log = logging.getLogger("buquet.queue")

DEFAULT_SHARD_COUNT = cfg.DEFAULT_SHARD_COUNT


def validate_submit(
    task_type: Any,
    input: Any,
    timeout_seconds: Any = cfg.DEFAULT_TIMEOUT_SECONDS,
    max_retries: Any = cfg.DEFAULT_MAX_RETRIES,
    retry_policy: Any = None,
    schedule_at: Any = None,
) -> datetime | None:
    """Check :meth:`Queue.submit`'s arguments without a queue; returns ``schedule_at``
    as an aware UTC datetime (or ``None``).

    Raises:
        ValidationError: names the field and the rule; nothing is written.
    """
    v.task_type(task_type)
    v.json_value(input, "input")
    v.int_in_range(timeout_seconds, "timeout_seconds", 1, cfg.MAX_TIMEOUT_SECONDS)
    v.int_in_range(max_retries, "max_retries", 0, cfg.MAX_RETRIES_LIMIT)
    if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
        raise ValidationError("retry_policy", "must be a buquet.RetryPolicy or None")
    return parse_when("schedule_at", schedule_at) if schedule_at is not None else None


class Queue:
    """A task queue in one bucket. Create it with :func:`buquet.connect`.

    Args:
        store: the object store (one bucket).
        shard_count: number of shards, as agreed in the bucket's ``config.json``.
        prefix: key prefix inside the bucket (``""`` = bucket root).
        clock: injected clock returning aware UTC datetimes (tests); by default the
            store's clock (:meth:`ObjectStore.server_time`), else the local clock.
        rng: randomness for retry jitter (tests pass a seeded one).

    Attributes:
        store: the :class:`~buquet.ObjectStore`.
        protocol: the :class:`~buquet._tasks.TaskProtocol` workers and the monitor use.
        layout: the key layout (:class:`~buquet.keys.KeyLayout`).
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        shard_count: int = DEFAULT_SHARD_COUNT,
        prefix: str = "",
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.layout = KeyLayout(prefix)
        self.protocol = TaskProtocol(store, self.layout, shard_count, clock=clock, rng=rng)
        self._schedules: ScheduleStore | None = None

    # ------------------------------------------------------------------ basics
    @property
    def shard_count(self) -> int:
        """The bucket's number of shards."""
        return self.protocol.shard_count

    @property
    def shards(self) -> builtins.list[str]:
        """The bucket's shard names: ``["0", "1", …, str(shard_count - 1)]``."""
        return builtins.list(self.protocol.shards)

    @property
    def schedules(self) -> "ScheduleStore":
        """The :class:`~buquet.schedules.ScheduleStore` behind the schedule methods."""
        if self._schedules is None:
            from .schedules import ScheduleStore

            self._schedules = ScheduleStore(self.protocol)
        return self._schedules

    def shard_of(self, task_id: str) -> str:
        """The shard a task id belongs to. Raises ValidationError for a malformed id."""
        return self.protocol.shard_of(task_id)

    def check_shards(self, shards: Iterable[str], field: str = "shards") -> builtins.list[str]:
        """Validate a list of shard names against this bucket.

        Raises:
            ValidationError: a string instead of a list, an empty list, or an unknown
                shard (names ``field``).
        """
        if isinstance(shards, str):
            raise ValidationError(field, "must be a list of shard names, not a string")
        out = builtins.list(shards)
        if not out:
            raise ValidationError(field, "must name at least one shard")
        known = set(self.shards)
        for s in out:
            if s not in known:
                raise ValidationError(field, f"unknown shard {s!r}; this bucket has shards {self.shards}")
        return out

    async def time(self) -> datetime:
        """The store's current time as an aware UTC datetime. Writes nothing."""
        return await self.protocol.time()

    async def now(self) -> str:
        """The store's current time, RFC 3339 (``2026-11-29T16:20:00.123Z``). Sends at
        most one HEAD request every 5 minutes on S3; writes nothing."""
        return to_rfc3339(await self.time())

    async def close(self) -> None:
        """Close the underlying store's connections."""
        await self.store.close()

    async def __aenter__(self) -> "Queue":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ tasks
    async def submit(
        self,
        task_type: str,
        input: Any,
        timeout_seconds: int = cfg.DEFAULT_TIMEOUT_SECONDS,
        max_retries: int = cfg.DEFAULT_MAX_RETRIES,
        retry_policy: RetryPolicy | None = None,
        schedule_at: datetime | str | None = None,
    ) -> Task:
        """Submit a task and return it (status Pending).

        Args:
            task_type: handler name; 1–128 of ``[A-Za-z0-9_.:-]``.
            input: any JSON value (finite numbers, string keys).
            timeout_seconds: handler time limit per attempt, 1 to 604800.
            max_retries: retries after the first attempt, 0 to 1000.
            retry_policy: backoff between retries; ``None`` = ``RetryPolicy()``.
            schedule_at: not claimed before this aware datetime / RFC 3339 time.

        Returns:
            The stored :class:`Task`; its ``id`` is a UUIDv7 string.

        Raises:
            ValidationError: bad input (names the field); nothing was written.
            StorageError: the store kept failing after retries; ``exc.task_id`` names
                the task, which may have been stored (check with :meth:`get`).

        S3: two PUTs — the ready marker (carrying the task document), then
        ``tasks/S/T.json`` with ``If-None-Match: *``; transient errors are retried with
        identical bodies and a lost response is recognised by the stored ``rev``.
        """
        when = validate_submit(task_type, input, timeout_seconds, max_retries, retry_policy, schedule_at)
        now = await self.time()
        task, _ = await self.protocol.create(
            task_type, input, timeout_seconds=timeout_seconds, max_retries=max_retries,
            retry_policy=retry_policy, available_at=max(when, now) if when is not None else now, now=now,
        )
        return task

    async def get(self, task_id: str) -> Task | None:
        """The task with this id, or ``None`` if there is none. One GET; when the task
        object does not exist, also one LIST of the shard's ready index (a submit that
        wrote its marker but not yet its task object is still found).

        Raises:
            ValidationError: ``task_id`` is not a UUID string.
            CorruptObject: the stored task cannot be decoded (names key and field).
        """
        return await self.protocol.find(check_task_id(task_id))

    async def get_history(self, task_id: str) -> builtins.list[Task]:
        """Every state the task went through, oldest first, as Task snapshots (status,
        attempt, worker_id, last_error and updated_at as of that transition; output only
        on the Completed snapshot). Empty if the task does not exist. One GET; needs no
        bucket versioning: the history is kept inside the task object.

        Raises:
            ValidationError: malformed ``task_id``.
        """
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
        """Tasks of one shard, oldest first, optionally only those with ``status``.
        Corrupt task objects are logged and left out.

        Cost: one LIST per 1,000 tasks in the shard plus one GET per task read; this is
        an inspection call, not for hot paths.

        Raises:
            ValidationError: unknown shard, bad status, limit not in 1..10000.
        """
        self.check_shards([shard], "shard")
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
            for obj in await self.store.get_many([i.key for i in page]):
                if obj is None:
                    continue
                try:
                    task = decode_task(obj.data, obj.info.key)[0]
                except CorruptObject as exc:
                    log.error("list: skipping %s", exc)
                    continue
                if want is None or task.status == want:
                    out.append(task)
                    if len(out) >= limit:
                        break
            if len(page) < 1000:
                break
        return out

    async def list_ready(self, shard: str, limit: int = 100) -> builtins.list[str]:
        """Ids of the tasks in ``shard`` that are due now, earliest due first, from the
        ready index alone (LIST only, no GETs). A task stays in the index while its
        attempt is younger than one heartbeat, so an id here may be running already;
        tasks whose ``schedule_at`` or retry backoff lies ahead are never listed.

        Raises:
            ValidationError: unknown shard, limit not in 1..1000.
        """
        self.check_shards([shard], "shard")
        v.int_in_range(limit, "limit", 1, 1000)
        seen: dict[str, None] = {}
        for m in await self.protocol.due_markers(shard, await self.time(), limit):
            seen.setdefault(m.task_id, None)
        return builtins.list(seen)[:limit]

    async def wait(
        self, task_id: str, timeout_seconds: float | None = None, poll_interval_ms: int = 200
    ) -> Task:
        """Poll until the task is final (Completed, Failed, Archived) and return it.
        One GET per ``poll_interval_ms``.

        Raises:
            ValidationError: malformed id, bad timeout or interval.
            TaskNotFound: no such task.
            TaskTimeout: not final within ``timeout_seconds`` (also a ``TimeoutError``).
        """
        check_task_id(task_id)
        if timeout_seconds is not None:
            cfg.finite_number(timeout_seconds, "timeout_seconds", 0, 10**9)
        v.int_in_range(poll_interval_ms, "poll_interval_ms", 1, 3_600_000)
        loop = asyncio.get_running_loop()
        deadline = None if timeout_seconds is None else loop.time() + timeout_seconds
        while True:
            task = await self.get(task_id)
            if task is None:
                raise TaskNotFound(f"no task {task_id}")
            if task.status.is_final:
                return task
            if deadline is not None and loop.time() >= deadline:
                raise TaskTimeout(task_id, f"task {task_id} is still {task.status.value} after {timeout_seconds}s")
            await asyncio.sleep(poll_interval_ms / 1000)

    async def archive(self, task_id: str) -> Task:
        """Move a Completed or Failed task to Archived (one GET, one conditional PUT).

        Raises:
            TaskNotFound: no such task. ValidationError: malformed id, or the task is
            not final. PreconditionFailed: it changed meanwhile; call again.
        """
        task = await self.protocol.archive(check_task_id(task_id))
        if task is None:
            raise TaskNotFound(f"no task {task_id}")
        return task

    # --------------------------------------------------------------- schedules
    async def create_schedule(
        self,
        id: str,
        task_type: str,
        input: Any,
        cron: str,
        *,
        timezone: str = "UTC",
        enabled: bool = True,
        timeout_seconds: int = cfg.DEFAULT_TIMEOUT_SECONDS,
        max_retries: int = cfg.DEFAULT_MAX_RETRIES,
        retry_policy: RetryPolicy | None = None,
        catch_up: "CatchUp | str" = "latest",
        catch_up_limit: int = 10,
    ) -> "Schedule":
        """Create a cron schedule; see :meth:`ScheduleStore.create_schedule`."""
        return await self.schedules.create_schedule(
            id, task_type, input, cron, timezone=timezone, enabled=enabled, timeout_seconds=timeout_seconds,
            max_retries=max_retries, retry_policy=retry_policy, catch_up=catch_up, catch_up_limit=catch_up_limit,
        )

    async def get_schedule(self, id: str) -> "Schedule | None":
        """The schedule, or ``None``; see :meth:`ScheduleStore.get_schedule`."""
        return await self.schedules.get_schedule(id)

    async def list_schedules(self) -> builtins.list["Schedule"]:
        """Every schedule, by id; see :meth:`ScheduleStore.list_schedules`."""
        return await self.schedules.list_schedules()

    async def delete_schedule(self, id: str) -> None:
        """Delete a schedule; see :meth:`ScheduleStore.delete_schedule`."""
        await self.schedules.delete_schedule(id)

    async def enable_schedule(self, id: str) -> "Schedule":
        """Enable a schedule; see :meth:`ScheduleStore.enable_schedule`."""
        return await self.schedules.enable_schedule(id)

    async def disable_schedule(self, id: str) -> "Schedule":
        """Disable a schedule; see :meth:`ScheduleStore.disable_schedule`."""
        return await self.schedules.disable_schedule(id)

    async def trigger_schedule(self, id: str) -> Task:
        """Submit the schedule's task now; see :meth:`ScheduleStore.trigger_schedule`."""
        return await self.schedules.trigger_schedule(id)

    async def get_schedule_last_run(self, id: str) -> "ScheduleLastRun | None":
        """The schedule's last run and next slot; see
        :meth:`ScheduleStore.get_schedule_last_run`."""
        return await self.schedules.get_schedule_last_run(id)


async def connect(
    endpoint: str | None = None,
    bucket: str | None = None,
    region: str | None = None,
    *,
    store: ObjectStore | None = None,
    local_dir: str | None = None,
    prefix: str | None = None,
    shard_count: int | None = None,
    clock: Clock | None = None,
    read_only: bool = False,
) -> Queue:
    """Open a queue.

    Where the tasks live, first match wins:

    1. ``store=`` — any :class:`~buquet.storage.ObjectStore` (e.g. ``MemoryStore()``).
    2. ``local_dir=`` or env ``BUQUET_LOCAL_DIR`` — a :class:`~buquet.LocalStore`
       directory (zero setup, one machine).
    3. ``bucket=`` or env ``S3_BUCKET`` — S3, with ``endpoint``/``S3_ENDPOINT`` for an
       S3-compatible server (LocalStack, MinIO, SeaweedFS) and ``region``/``S3_REGION``.

    Args:
        prefix: key prefix inside the bucket, to share a bucket between queues
            (default: env ``BUQUET_PREFIX``, else none).
        shard_count: shards for a new bucket (default 4: shards "0".."3"); for an
            existing bucket it must match the stored setting or be ``None``.
        clock: injected clock (tests).
        read_only: do not create ``config.json`` in a fresh bucket (inspection tools:
            a mistyped bucket or directory is not turned into a new queue).

    Returns:
        A :class:`Queue`. The bucket's ``config.json`` is read (one GET), and created
        with ``If-None-Match: *`` when missing.

    Raises:
        ConfigurationError: nothing configured, or a shard_count mismatch.
        ValidationError: bad shard_count.
        StorageError: the store cannot be reached.
    """
    if shard_count is not None:
        v.int_in_range(shard_count, "shard_count", 1, cfg.MAX_SHARD_COUNT)
    if store is None:
        store = cfg.store_from_env(endpoint, bucket, region, local_dir)
    prefix = cfg.prefix_from_env(prefix)
    count = await cfg.load_bucket_config(store, KeyLayout(prefix), shard_count, read_only)
    return Queue(store, shard_count=count, prefix=prefix, clock=clock)
