"""The user's facade: :class:`Queue` and :func:`connect`.

``Queue`` submits and inspects tasks and manages cron schedules. It holds no protocol
logic: every stored change goes through :class:`~buquet._tasks.TaskProtocol` (exposed
as :attr:`Queue.protocol` for workers, the monitor and the scheduler) and every schedule
operation through :class:`~buquet.schedules.ScheduleStore` (:attr:`Queue.schedules`).
See ``docs/protocol.md`` for the object layout and the request costs.
"""

from __future__ import annotations

import builtins
import logging
import random
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from . import _validate as v
from . import config as cfg
from ._ids import check_task_id
from .keys import KeyLayout
from ._control import CancelByTypeResult, TaskControl
from ._reads import RecentPage, TaskReader
from ._submit import Submitter, check_input, check_items, check_options
from ._tasks import Clock, TaskProtocol
from ._time import to_rfc3339
from .errors import TaskNotFound, ValidationError
from .models import RetryPolicy, Task, TaskStatus
from .storage.base import ObjectStore

if TYPE_CHECKING:
    from ._registry import WorkerInfo
    from ._stats import QueueStats
    from .schedules import CatchUp, Schedule, ScheduleLastRun, ScheduleStore
    from .schemas import SchemaCache
    from .storage.client import StorageClient

log = logging.getLogger("buquet.queue")

DEFAULT_SHARD_COUNT = cfg.DEFAULT_SHARD_COUNT


def validate_submit(
    task_type: Any,
    input: Any,
    timeout_seconds: Any = cfg.DEFAULT_TIMEOUT_SECONDS,
    max_retries: Any = cfg.DEFAULT_MAX_RETRIES,
    retry_policy: Any = None,
    schedule_at: Any = None,
    *,
    max_reschedules: Any = None,
    ttl_seconds: Any = None,
    expires_at: Any = None,
    idempotency_key: Any = None,
) -> datetime | None:
    """Check :meth:`Queue.submit`'s arguments without a queue (the CLI checks them
    before it connects); returns ``schedule_at`` as an aware UTC datetime (or ``None``).

    Raises:
        ValidationError: names the field and the rule; nothing is written.
    """
    check_input(task_type, input)
    return check_options(timeout_seconds, max_retries, retry_policy, schedule_at, max_reschedules, ttl_seconds,
                         expires_at, idempotency_key).schedule_at


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
        self.control = TaskControl(self.protocol)
        self._submitter = Submitter(self.protocol)
        self._reader = TaskReader(self.protocol)
        self._schedules: ScheduleStore | None = None
        self._schemas: SchemaCache | None = None

    # ------------------------------------------------------------------ basics
    @property
    def shard_count(self) -> int:
        """The bucket's number of shards."""
        return self.protocol.shard_count

    @property
    def shards(self) -> builtins.list[str]:
        """The bucket's shard names, lowercase hex (``["0", "1", "2", "3"]`` for the
        default 4 shards, ``"0"``…``"f"`` for 16)."""
        return builtins.list(self.protocol.shards)

    @property
    def schedules(self) -> "ScheduleStore":
        """The :class:`~buquet.schedules.ScheduleStore` behind the schedule methods."""
        if self._schedules is None:
            from .schedules import ScheduleStore

            self._schedules = ScheduleStore(self.protocol)
        return self._schedules

    @property
    def schemas(self) -> "SchemaCache":
        """The task schemas (:class:`~buquet.schemas.SchemaCache` over the
        :class:`~buquet.schemas.SchemaStore`), shared by this queue's workers."""
        if self._schemas is None:
            from .schemas import SchemaCache, SchemaStore

            self._schemas = SchemaCache(SchemaStore(self.store, self.layout))
        return self._schemas

    @property
    def shard_prefix_len(self) -> int | None:
        """``N`` for a bucket of ``16 ** N`` shards; ``None`` for other counts, such as
        the default 4 shards ``"0"``…``"3"``."""
        return cfg.prefix_len_of(self.shard_count)

    def all_shards(self) -> builtins.list[str]:
        """Every shard name of the bucket, lowercase hex, zero-padded, sorted (sync)."""
        return sorted(self.protocol.shards)

    @property
    def storage(self) -> "StorageClient":
        """Raw object access on the queue's bucket (:class:`~buquet.storage.client.
        StorageClient`): get/put/delete/list/exists by bucket key."""
        from .storage.client import StorageClient

        return StorageClient(self.store)

    def shard_of(self, task_id: str) -> str:
        """The shard a task id belongs to. Raises ValidationError for a malformed id."""
        return self.protocol.shard_of(task_id)

    def check_shards(self, shards: Iterable[str], field: str = "shards") -> builtins.list[str]:
        """Validate a list of shard names against this bucket; see
        :meth:`TaskProtocol.check_shards` (raises ValidationError naming ``field``)."""
        return self.protocol.check_shards(shards, field)

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
        *,
        max_reschedules: int | None = None,
        ttl_seconds: float | None = None,
        expires_at: datetime | str | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl_days: int | None = None,
        idempotency_scope: str | None = None,
        use_payload_refs: bool = False,
        payload_ref_threshold_bytes: int | None = None,
    ) -> Task:
        """Submit a task and return it (status Pending).

        Args:
            task_type: handler name; 1–128 of ``[A-Za-z0-9_.:-]``.
            input: any JSON value (finite numbers, string keys), at most 32 MiB as JSON.
            timeout_seconds: handler time limit per attempt, 1 to 604800.
            max_retries: retries after the first attempt, 0 to 1000.
            retry_policy: backoff between retries; ``None`` = ``RetryPolicy()``.
            schedule_at: not claimed before this aware datetime / RFC 3339 time.
            max_reschedules: cap on handler reschedules (``RescheduleError``); ``None``
                = unlimited.
            ttl_seconds: not claimed after ``now + ttl_seconds`` (then Expired); wins
                over ``expires_at``. 0 expires it at once.
            expires_at: the same as an aware datetime / RFC 3339 time.
            idempotency_key: submits with the same key (in ``idempotency_scope``) and
                the same input return the first task while the key lives; a different
                input raises :class:`~buquet.errors.IdempotencyConflict`. Race-free:
                concurrent submits create one task.
            idempotency_ttl_days: how long the key lives (default 30 days).
            idempotency_scope: ``None``/``"task_type"`` (per task type), ``"queue"``,
                or any other string as a named namespace.
            use_payload_refs: store an input larger than ``payload_ref_threshold_bytes``
                in a payload object (``input_ref``). Inputs over 256 KiB always are.
            payload_ref_threshold_bytes: with ``use_payload_refs``, 0 to 262144.

        Returns:
            The stored :class:`Task`; its ``id`` is a UUIDv7 string.

        Raises:
            ValidationError: bad input (names the field); nothing was written.
            IdempotencyConflict: the key is live for another input.
            StorageError: the store kept failing after retries; ``exc.task_id`` names
                the task, which may have been stored (check with :meth:`get`).

        S3: two PUTs — the ready marker (carrying the task document), then
        ``tasks/S/T.json`` with ``If-None-Match: *`` — plus one per payload object,
        deadline or idempotency key (``docs/protocol.md``); transient errors are retried
        with identical bodies and a lost response is recognised by the stored ``rev``.
        """
        encoded = check_input(task_type, input)
        opts = check_options(
            timeout_seconds, max_retries, retry_policy, schedule_at, max_reschedules, ttl_seconds, expires_at,
            idempotency_key, idempotency_ttl_days, idempotency_scope, use_payload_refs, payload_ref_threshold_bytes,
        )
        return await self._submitter.submit(task_type, input, opts, encoded)

    async def submit_many(
        self,
        tasks: Sequence[tuple[str, Any]],
        timeout_seconds: int | None = None,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        max_reschedules: int | None = None,
        ttl_seconds: float | None = None,
        expires_at: datetime | str | None = None,
    ) -> builtins.list[Task]:
        """Submit one task per ``(task_type, input)`` pair with shared options (``None``
        = :meth:`submit`'s default); returns them in input order; ``[]`` for ``[]``.
        Everything is checked before anything is written; writes run concurrently, and
        if one fails its error is raised while the tasks already written stay valid.

        Raises:
            TypeError: an item is not a tuple. ValidationError: a tuple of another
                length, or bad input/options. StorageError: as :meth:`submit`.
        """
        items = check_items(tasks)
        opts = check_options(
            cfg.DEFAULT_TIMEOUT_SECONDS if timeout_seconds is None else timeout_seconds,
            cfg.DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
            retry_policy, None, max_reschedules, ttl_seconds, expires_at,
        )
        return await self._submitter.submit_many(items, opts)

    async def get(self, task_id: str) -> Task | None:
        """The task with this id, or ``None`` if there is none. One GET; when the task
        object does not exist, also one LIST of the shard's ready index (a submit that
        wrote its marker but not yet its task object is still found).

        Raises:
            ValidationError: ``task_id`` is not a UUID string.
            CorruptObject: the stored task cannot be decoded (names key and field).
        """
        return await self._reader.get(task_id)

    async def get_history(self, task_id: str) -> builtins.list[Task]:
        """Every state the task went through, oldest first, as Task snapshots (status,
        attempt, worker_id, last_error and updated_at as of that transition; output only
        on the Completed snapshot). Empty if the task does not exist. One GET; needs no
        bucket versioning: the history is kept inside the task object.

        Raises:
            ValidationError: malformed ``task_id``.
        """
        return await self._reader.get_history(task_id)

    async def list(
        self, shard: str, status: TaskStatus | str | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Tasks of one shard, oldest first, optionally only those with ``status``.
        Corrupt task objects are logged and left out; payload objects are not read.

        Cost: one LIST per 1,000 tasks in the shard plus one GET per task read; this is
        an inspection call, not for hot paths.

        Raises:
            ValidationError: unknown shard, bad status, limit not in 1..10000.
        """
        return await self._reader.list(shard, status, limit)

    async def recent(self, shards: Sequence[str] | None = None, status: TaskStatus | str | None = None,
                     task_type: str | None = None, limit: int = 100, *, before: str | None = None,
                     since: datetime | str | None = None, until: datetime | str | None = None,
                     scan_limit: int | None = None) -> RecentPage:
        """A page of the newest tasks of ``shards`` (default: all), newest first: only
        of ``status``/``task_type`` when given, created before the task id ``before``
        (the previous page's ``next_before``), at or after ``since`` and before ``until``.

        Returns a :class:`~buquet._reads.RecentPage`: ``tasks``, ``listed`` (ids
        listed; a lower bound unless ``complete``), ``complete``, ``next_before``.
        Cost: task ids are time-ordered, so the LISTs start at the last minute and widen
        (an hour, a day, 30 days, everything) only while too few ids turn up — per shard 1 LIST
        per 1,000 task keys in the window; then 1 GET per task read, at most
        ``scan_limit`` (default ``limit``, or 10 × ``limit`` with a filter).

        Raises:
            ValidationError: unknown shard or status, bad task type, limit, cursor or time.
        """
        return await self._reader.recent(builtins.list(shards) if shards is not None else self.shards, status,
                                         task_type, limit, since=since, until=until, before=before,
                                         scan_limit=scan_limit)

    async def list_ready(self, shard: str, limit: int = 100) -> builtins.list[str]:
        """Ids of the tasks in ``shard`` that are due now, earliest due first, from the
        ready index alone (LIST only, no GETs). A task stays in the index while its
        attempt is younger than one heartbeat, so an id here may be running already.

        Raises:
            ValidationError: unknown shard, limit not in 1..1000.
        """
        return await self._reader.list_ready(shard, limit)

    async def wait(
        self, task_id: str, timeout_seconds: float | None = None, poll_interval_ms: int = 200
    ) -> Task:
        """Poll until the task is final and return it. One GET per ``poll_interval_ms``.

        Raises:
            ValidationError: malformed id, bad timeout or interval.
            TaskNotFound: no such task.
            TaskTimeout: not final within ``timeout_seconds`` (also a ``TimeoutError``).
        """
        return await self._reader.wait(task_id, timeout_seconds, poll_interval_ms)

    async def archive(self, task_id: str) -> Task:
        """Move a Completed or Failed task to Archived (one GET, one conditional PUT).

        Raises:
            TaskNotFound: no such task. ValidationError: malformed id, or the task is
            not final. PreconditionFailed: it changed meanwhile; call again.
        """
        task = await self.control.archive(check_task_id(task_id))
        if task is None:
            raise TaskNotFound(f"task {task_id} not found")
        return task

    # ------------------------------------------------------------ control
    async def cancel(self, task_id: str, reason: str | None = None, cancelled_by: str | None = None) -> Task:
        """Cancel a Pending task; see :meth:`TaskControl.cancel` (``TaskStateError``
        otherwise, ``TaskNotFound`` for an unknown id)."""
        return await self.control.cancel(task_id, reason, cancelled_by)

    async def cancel_many(self, task_ids: Sequence[str], reason: str | None = None,
                          cancelled_by: str | None = None) -> builtins.list[Task]:
        """Cancel each Pending task; returns those cancelled, in input order."""
        return await self.control.cancel_many(task_ids, reason, cancelled_by)

    async def cancel_by_type(self, task_type: str, reason: str | None = None,
                             cancelled_by: str | None = None) -> CancelByTypeResult:
        """Cancel every Pending task of ``task_type`` in every shard."""
        v.task_type(task_type)
        return await self.control.cancel_by_type(task_type, reason, cancelled_by)

    async def request_cancellation(self, task_id: str) -> Task:
        """Ask the worker running a task to stop; see
        :meth:`TaskControl.request_cancellation`."""
        return await self.control.request_cancellation(task_id)

    async def mark_expired(self, task_id: str) -> Task:
        """Expire a Pending task now; see :meth:`TaskControl.mark_expired`."""
        return await self.control.mark_expired(task_id)

    async def retry(self, task_id: str) -> Task:
        """Put a Failed, Cancelled or Expired task back to Pending with a fresh attempt
        budget (dead-letter replay); see :meth:`TaskControl.replay`."""
        return await self.control.replay(task_id)

    async def delete(self, task_id: str) -> None:
        """Delete a final task and its payload objects; see :meth:`TaskControl.delete`."""
        await self.control.delete(task_id)

    async def purge(self, status: TaskStatus | str | None = None, task_type: str | None = None,
                    older_than_seconds: float | None = None) -> int:
        """Delete final tasks (only of ``status``/``task_type``, only unchanged for
        ``older_than_seconds`` when given); returns how many. Reads every task: an
        operator's tool. Raises ValidationError for a non-final ``status``."""
        want = None if status is None else TaskStatus(status)
        if want is not None and not want.is_final:
            raise ValidationError("status", f"only final tasks can be purged, not {want.value}")
        if task_type is not None:
            v.task_type(task_type)
        cutoff = None
        if older_than_seconds is not None:
            cfg.finite_number(older_than_seconds, "older_than_seconds", 0, 10**10)
            cutoff = await self.time() - timedelta(seconds=older_than_seconds)
        return await self.control.purge(status=want, task_type=task_type, older_than=cutoff)

    async def load_input(self, task: Task) -> Any:
        """The task's full input: from its payload object (``input_ref``, 1 GET), else
        ``task.input``."""
        return await self.protocol.payloads.read_payload(task.input_ref) if task.input_ref else task.input

    async def load_output(self, task: Task) -> Any:
        """The task's full output: from its payload object (``output_ref``, 1 GET),
        else ``task.output``."""
        return await self.protocol.payloads.read_payload(task.output_ref) if task.output_ref else task.output

    # ------------------------------------------------------------- operations
    async def workers(
        self, *, health_threshold_seconds: float = 60.0, include_gone: bool = True
    ) -> builtins.list["WorkerInfo"]:
        """The registered long-lived workers (:class:`~buquet.WorkerInfo`), by id: each
        ``Worker.run`` keeps ``workers/<worker_id>.json`` fresh and deletes it on a
        clean stop. ``alive`` is False once its last write is older than
        ``health_threshold_seconds`` (a killed worker); ``include_gone=False`` leaves
        those out. Corrupt registrations are logged and skipped.

        Cost: one LIST per 1,000 registrations + one GET per registration.
        """
        from ._registry import list_workers

        return await list_workers(self, health_threshold_seconds=health_threshold_seconds, include_gone=include_gone)

    async def stats(
        self,
        *,
        shards: Sequence[str] | None = None,
        task_type: str | None = None,
        final_scan_limit: int = 1000,
        final_sample: int = 100,
    ) -> "QueueStats":
        """Counts of the queue (:class:`~buquet.QueueStats`) from its indexes: pending
        and scheduled by shard and type (LISTs of ``ready/``), running (LISTs of
        ``leases/``), queue lag, task objects (a LIST of ``tasks/`` bounded by
        ``final_scan_limit`` keys per shard; a lower bound when truncated) and final
        tasks by status from GETs of at most ``final_sample`` of them.

        Cost per shard: ``⌊ready/1000⌋+1`` + ``⌊leases/1000⌋+1`` +
        ``min(⌊tasks/1000⌋+1, ⌈final_scan_limit/1000⌉)`` LISTs; + ≤ ``final_sample``
        GETs (+ one GET per running task with ``task_type``). See ``docs/protocol.md``.

        Raises:
            ValidationError: unknown shard, bad task type or limits.
        """
        from ._stats import queue_stats

        return await queue_stats(self, shards=shards, task_type=task_type, final_scan_limit=final_scan_limit,
                                 final_sample=final_sample)

    # ------------------------------------------------------------- schemas
    async def publish_schema(self, task_type: str, schema: Any) -> None:
        """Publish a task type's JSON Schemas (``{"input": ..., "output": ...}``)."""
        await self.schemas.schemas.publish_schema(task_type, schema)
        self.schemas.invalidate(task_type)

    async def get_schema(self, task_type: str) -> dict[str, Any] | None:
        """A task type's published schemas, or ``None``."""
        return await self.schemas.schemas.get_schema(task_type)

    async def list_schemas(self) -> builtins.list[str]:
        """Task types that have a published schema, sorted."""
        return await self.schemas.schemas.list_schemas()

    async def delete_schema(self, task_type: str) -> None:
        """Delete a task type's schemas (absent is fine)."""
        await self.schemas.schemas.delete_schema(task_type)
        self.schemas.invalidate(task_type)

    @staticmethod
    def validate_input(schema: Any, data: Any) -> None:
        """Check ``data`` against ``schema["input"]`` (draft 2020-12); raises
        :class:`~buquet.SchemaValidationError`."""
        from .schemas import validate_input

        validate_input(schema, data)

    @staticmethod
    def validate_output(schema: Any, data: Any) -> None:
        """Check ``data`` against ``schema["output"]``; raises SchemaValidationError."""
        from .schemas import validate_output

        validate_output(schema, data)

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
    shard_prefix_len: int | None = None,
) -> Queue:
    """Open a queue.

    Where the tasks live, first match wins:

    1. ``store=`` — any :class:`~buquet.storage.ObjectStore` (e.g. ``MemoryStore()``).
    2. ``local_dir=`` or env ``BUQUET_LOCAL_DIR`` — a :class:`~buquet.LocalStore`
       directory (zero setup, one machine).
    3. ``bucket=`` or env ``S3_BUCKET`` — S3, with ``endpoint``/``S3_ENDPOINT`` for an
       S3-compatible server (LocalStack, MinIO, SeaweedFS) and ``region``/``S3_REGION``.

    ``bucket``, ``endpoint``, ``region`` and ``shard_prefix_len`` each come from the
    argument, else the environment variable, else ``[default]`` (``[queue]`` for
    ``shard_prefix_len``) of the config files (see :func:`buquet.load_config`; no
    profile here).

    Args:
        prefix: key prefix inside the bucket, to share a bucket between queues
            (default: env ``BUQUET_PREFIX``, else none).
        shard_count: shards for a new bucket (default 4: shards "0".."3"); for an
            existing bucket it must match the stored setting or be ``None``.
        shard_prefix_len: buquet 0.1.0's way to say ``shard_count = 16 ** N`` (1–4:
            16 to 65,536 shards named by N lowercase hex digits); else env
            ``BUQUET_SHARD_PREFIX_LEN``; else ``[queue] shard_prefix_len`` of the config
            files; else the bucket's stored setting.
        clock: injected clock (tests).
        read_only: do not create ``config.json`` in a fresh bucket (inspection tools:
            a mistyped bucket or directory is not turned into a new queue).

    Returns:
        A :class:`Queue`. The bucket's ``config.json`` is read (one GET), and created
        with ``If-None-Match: *`` when missing.

    Raises:
        ConfigurationError: nothing configured, a shard_count mismatch, or a config
            file that is not valid TOML.
        ValidationError: bad shard_count (or a bad value in a config file).
        StorageError: the store cannot be reached.
    """
    endpoint, bucket, region, shard_prefix_len = cfg.with_file_defaults(
        endpoint, bucket, region, shard_prefix_len, want_store=store is None and not local_dir,
        want_shards=shard_count is None)
    shard_count = cfg.shard_count_from(shard_count, shard_prefix_len)
    if store is None:
        store = cfg.store_from_env(endpoint, bucket, region, local_dir)
    prefix = cfg.prefix_from_env(prefix)
    count = await cfg.load_bucket_config(store, KeyLayout(prefix), shard_count, read_only)
    return Queue(store, shard_count=count, prefix=prefix, clock=clock)
