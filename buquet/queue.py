"""The queue: task submission, inspection, and the task protocol over an object store.

See ``docs/protocol.md`` for the object layout, the state machine and the request
table. In short, for a task ``T`` in shard ``S``:

* ``tasks/S/T.json`` — the task's state, the one source of truth. Every change is a
  conditional write (``If-None-Match: *`` to create, ``If-Match: <etag>`` to update),
  so exactly one writer wins each transition and stale writers are fenced off.
* ``ready/S/<due_ms>.T.<task_type>`` — "T can be claimed from ``due_ms`` on". Only
  submit and requeue write here (S3 event notifications filter on this prefix).
  Keys sort by due time, so a LIST finds due work first and stops at future work.
* ``leases/S/<expires_ms>.T`` — the lease index of tasks running longer than one
  heartbeat, sorted by expiry, so lease recovery reads only expired entries.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import os
import random
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from . import _validate as v
from ._time import from_ms, parse_when, to_ms, to_rfc3339, utcnow
from .errors import (
    ConfigurationError,
    ObjectNotFound,
    PreconditionFailed,
    LeaseLost,
    StorageError,
    ValidationError,
)
from .models import RetryPolicy, Task, TaskStatus
from .schedules import SchedulesMixin
from .storage.base import ObjectInfo, ObjectStore

log = logging.getLogger("buquet.queue")

DEFAULT_SHARD_COUNT = 4
MAX_SHARD_COUNT = 256
CONFIG_KEY = "config.json"
#: a ready marker whose task object is missing is only removed once it is this old
ORPHAN_MARKER_AGE_SECONDS = 60

Clock = Callable[[], datetime]


# --------------------------------------------------------------------------- keys
@dataclass(frozen=True, slots=True)
class ReadyMarker:
    """A parsed ``ready/`` key: which task is claimable from when."""

    key: str
    shard: str
    due_ms: int
    task_id: str
    task_type: str
    last_modified: datetime


@dataclass(frozen=True, slots=True)
class LeaseMarker:
    """A parsed ``leases/`` key."""

    key: str
    shard: str
    expires_ms: int
    task_id: str


@dataclass(slots=True)
class Lease:
    """A worker's hold on one attempt of a task (internal to worker and monitor).

    ``etag`` is the ETag of this worker's latest write to the task object: every
    further write is conditional on it (fencing). ``stale_keys`` are index entries to
    delete once the attempt ends.
    """

    task: Task
    etag: str
    stale_keys: builtins.list[str]
    lease_key: str | None = None


class Layout:
    """Object keys under an optional bucket prefix (``""`` or ``"myapp/"``)."""

    def __init__(self, prefix: str = "") -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.prefix = prefix

    def config(self) -> str:
        return f"{self.prefix}{CONFIG_KEY}"

    def task(self, shard: str, task_id: str) -> str:
        return f"{self.prefix}tasks/{shard}/{task_id}.json"

    def tasks_prefix(self, shard: str) -> str:
        return f"{self.prefix}tasks/{shard}/"

    def ready_prefix(self, shard: str) -> str:
        return f"{self.prefix}ready/{shard}/"

    def ready(self, shard: str, due_ms: int, task_id: str, task_type: str) -> str:
        return f"{self.prefix}ready/{shard}/{due_ms:015d}.{task_id}.{task_type}"

    def ready_for(self, task: Task) -> str:
        return self.ready(task.shard, to_ms(task.available_at), task.id, task.task_type)

    def lease_prefix(self, shard: str) -> str:
        return f"{self.prefix}leases/{shard}/"

    def lease(self, shard: str, expires_ms: int, task_id: str) -> str:
        return f"{self.prefix}leases/{shard}/{expires_ms:015d}.{task_id}"

    def parse_ready(self, info: ObjectInfo) -> ReadyMarker | None:
        """Parse a ready key; ``None`` for keys of another shape (ignored)."""
        rest = info.key[len(self.prefix) :]
        try:
            _, shard, leaf = rest.split("/", 2)
            due, task_id, task_type = leaf.split(".", 2)
            return ReadyMarker(info.key, shard, int(due), task_id, task_type, info.last_modified)
        except ValueError:
            return None

    def parse_lease(self, info: ObjectInfo) -> LeaseMarker | None:
        rest = info.key[len(self.prefix) :]
        try:
            _, shard, leaf = rest.split("/", 2)
            expires, task_id = leaf.split(".", 1)
            return LeaseMarker(info.key, shard, int(expires), task_id)
        except ValueError:
            return None


def new_task_id(now: datetime) -> str:
    """32 hex characters: 12 of creation time in ms (ids sort by creation), 20 random."""
    return f"{to_ms(now) & 0xFFFFFFFFFFFF:012x}{secrets.token_hex(10)}"


def _encode(task: Task) -> bytes:
    doc = task.to_dict()
    # A fresh nonce in every write keeps ETags unique per write, so If-Match can never
    # confuse two writes that happen to carry the same state.
    doc["rev"] = secrets.token_hex(8)
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def _decode(data: bytes, key: str) -> tuple[Task, str | None]:
    try:
        doc = json.loads(data)
        return Task.from_dict(doc), doc.get("rev")
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"object {key!r} is not a valid task document: {exc}", key) from exc


def _history(task: Task, status: TaskStatus, at: datetime, error: str | None = None) -> tuple[dict[str, Any], ...]:
    entry: dict[str, Any] = {"status": status.value, "at": to_rfc3339(at), "attempt": task.attempt}
    if task.worker_id and status != TaskStatus.Pending:
        entry["worker_id"] = task.worker_id
    if error:
        entry["error"] = error
    return task.history + (entry,)


def validate_submit(
    task_type: Any,
    input: Any,
    timeout_seconds: Any = 300,
    max_retries: Any = 3,
    retry_policy: Any = None,
    schedule_at: Any = None,
) -> datetime | None:
    """Check :meth:`Queue.submit`'s arguments without a queue; returns ``schedule_at``
    as an aware UTC datetime (or ``None``). Raises ValidationError naming the field."""
    v.task_type(task_type)
    v.json_value(input, "input")
    v.int_in_range(timeout_seconds, "timeout_seconds", 1, v.MAX_TIMEOUT_SECONDS)
    v.int_in_range(max_retries, "max_retries", 0, v.MAX_RETRIES_LIMIT)
    if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
        raise ValidationError("retry_policy", "must be a buquet.RetryPolicy or None")
    return parse_when("schedule_at", schedule_at) if schedule_at is not None else None


# -------------------------------------------------------------------------- queue
class Queue(SchedulesMixin):
    """A task queue in one bucket. Create it with :func:`buquet.connect`.

    Args:
        store: the object store (one bucket).
        shard_count: number of shards, as agreed in the bucket's ``config.json``.
        prefix: key prefix inside the bucket (``""`` = bucket root).
        clock: injected clock returning aware UTC datetimes (tests); by default the
            store's clock (:meth:`ObjectStore.server_time`), else the local clock.
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
        self.shard_count = shard_count
        self.layout = Layout(prefix)
        self._clock = clock
        self._rng = rng or random.Random()

    # ------------------------------------------------------------------ basics
    @property
    def shards(self) -> builtins.list[str]:
        """The bucket's shard names: ``["0", "1", …, str(shard_count - 1)]``."""
        return [str(i) for i in range(self.shard_count)]

    def shard_of(self, task_id: str) -> str:
        """The shard a task id belongs to (from the id's random part). Raises
        ValidationError for a malformed id."""
        v.task_id(task_id)
        return str(int(task_id[12:], 16) % self.shard_count)

    def check_shards(self, shards: Iterable[str], field: str = "shards") -> builtins.list[str]:
        """Validate a list of shard names against this bucket. Raises ValidationError."""
        if isinstance(shards, str):
            raise ValidationError(field, "must be a list of shard names, not a string")
        out = builtins.list(shards)
        if not out:
            raise ValidationError(field, "must name at least one shard")
        known = set(self.shards)
        for s in out:
            if s not in known:
                raise ValidationError(
                    field, f"unknown shard {s!r}; this bucket has shards {self.shards}"
                )
        return out

    async def time(self) -> datetime:
        """The store's current time as an aware UTC datetime (injected clock, else the
        server's ``Date``-derived clock, else the local clock). Writes nothing."""
        if self._clock is not None:
            return self._clock()
        server = await self.store.server_time()
        return server if server is not None else utcnow()

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

    # ------------------------------------------------------------------ submit
    async def submit(
        self,
        task_type: str,
        input: Any,
        timeout_seconds: int = 300,
        max_retries: int = 3,
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
            The stored :class:`Task`.

        Raises:
            ValidationError: bad input (names the field); nothing was written.
            StorageError: the store failed; the task may or may not exist.

        S3: two PUTs — the ready marker (carrying the task document), then
        ``tasks/S/T.json`` with ``If-None-Match: *``.
        """
        when = validate_submit(task_type, input, timeout_seconds, max_retries, retry_policy, schedule_at)
        now = await self.time()
        available_at = max(when, now) if when is not None else now
        task, _ = await self._create_task(
            new_task_id(now), task_type, input, timeout_seconds, max_retries, retry_policy, available_at, now
        )
        return task

    async def _create_task(
        self,
        task_id: str,
        task_type: str,
        input: Any,
        timeout_seconds: int,
        max_retries: int,
        retry_policy: RetryPolicy | None,
        available_at: datetime,
        now: datetime,
    ) -> tuple[Task, bool]:
        """Write a new Pending task (arguments already validated): the ready marker
        carrying the task document first, then ``tasks/S/T.json`` with
        ``If-None-Match: *``. Idempotent per ``task_id``: returns the task and whether
        this call created the task object (``False``: it existed already)."""
        task = Task(
            id=task_id,
            task_type=task_type,
            status=TaskStatus.Pending,
            input=input,
            output=None,
            created_at=now,
            retry_count=0,
            last_error=None,
            shard=self.shard_of(task_id),
            attempt=0,
            available_at=from_ms(to_ms(available_at)),
            timeout_seconds=timeout_seconds,
            max_retries=max_retries,
            retry_policy=retry_policy,
            worker_id=None,
            lease_expires_at=None,
            completed_at=None,
            updated_at=now,
        )
        task = replace(task, history=_history(task, TaskStatus.Pending, now))
        body = _encode(task)
        # Marker first: a task object never exists without a way to reach it. A worker
        # that finds the marker before the task object claims from the marker's copy.
        await self.store.put(self.layout.ready_for(task), body)
        try:
            await self.store.put(self.layout.task(task.shard, task.id), body, if_none_match=True)
        except PreconditionFailed:
            # the id exists: a worker already claimed it from the marker's copy, or this
            # is a repeated submit of a deterministic id
            return task, False
        return task, True

    # ------------------------------------------------------------------ reading
    async def _load(self, task_id: str, shard: str | None = None) -> tuple[Task, str] | None:
        shard = shard if shard is not None else self.shard_of(task_id)
        key = self.layout.task(shard, task_id)
        try:
            obj = await self.store.get(key)
        except ObjectNotFound:
            return None
        task, _ = _decode(obj.data, key)
        return task, obj.etag

    async def get(self, task_id: str) -> Task | None:
        """The task with this id, or ``None`` if there is none. One GET; when the task
        object does not exist, also one LIST of the shard's ready index (a submit that
        wrote its marker but not yet its task object is still found).

        Raises:
            ValidationError: ``task_id`` is not 32 lowercase hex characters.
        """
        v.task_id(task_id)
        loaded = await self._load(task_id)
        if loaded is not None:
            return loaded[0]
        return await self._from_marker(task_id)

    async def _from_marker(self, task_id: str) -> Task | None:
        """A task whose submit wrote its marker but not (yet) its object."""
        shard = self.shard_of(task_id)
        for info in await self.store.list(self.layout.ready_prefix(shard), limit=1000):
            marker = self.layout.parse_ready(info)
            if marker and marker.task_id == task_id:
                try:
                    obj = await self.store.get(info.key)
                except ObjectNotFound:
                    return None
                if obj.data:
                    return _decode(obj.data, info.key)[0]
        return None

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
            out.append(
                replace(
                    task,
                    status=status,
                    attempt=int(entry.get("attempt", 0)),
                    worker_id=entry.get("worker_id"),
                    last_error=last_error,
                    updated_at=at,
                    output=task.output if status == TaskStatus.Completed else None,
                    completed_at=at if status.is_final else None,
                    lease_expires_at=None,
                    history=(),
                )
            )
        return out

    async def list(
        self, shard: str, status: TaskStatus | str | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Tasks of one shard, oldest first, optionally only those with ``status``.
        Unreadable task objects are logged and left out.

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

        def decode(obj: Any) -> Task | None:
            if obj is None:
                return None
            try:
                return _decode(obj.data, obj.info.key)[0]
            except StorageError as exc:
                log.error("list: skipping unreadable task object: %s", exc)
                return None

        while len(out) < limit:
            page = await self.store.list(self.layout.tasks_prefix(shard), start_after=start_after, limit=1000)
            if not page:
                break
            start_after = page[-1].key
            for obj in await self.store.get_many([i.key for i in page]):
                t = decode(obj)
                if t is not None and (want is None or t.status == want):
                    out.append(t)
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
        now = await self.time()
        seen: builtins.list[str] = []
        for m in await self._due_markers(shard, now, limit):
            if m.task_id not in seen:
                seen.append(m.task_id)
        return seen[:limit]

    async def wait(
        self, task_id: str, timeout_seconds: float | None = None, poll_interval_ms: int = 200
    ) -> Task:
        """Poll until the task is final (Completed, Failed, Archived) and return it.

        Raises:
            ValidationError: malformed id.
            TaskNotFound: no such task.
            TimeoutError: not final within ``timeout_seconds``.
        """
        from .errors import TaskNotFound

        loop = asyncio.get_running_loop()
        deadline = None if timeout_seconds is None else loop.time() + timeout_seconds
        while True:
            task = await self.get(task_id)
            if task is None:
                raise TaskNotFound(f"no task {task_id}")
            if task.status.is_final:
                return task
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"task {task_id} is still {task.status.value}")
            await asyncio.sleep(poll_interval_ms / 1000)

    async def archive(self, task_id: str) -> Task:
        """Move a Completed or Failed task to Archived (one GET, one conditional PUT).

        Raises:
            TaskNotFound: no such task. ValidationError: the task is not final.
            PreconditionFailed: it changed meanwhile; call again.
        """
        from .errors import TaskNotFound

        v.task_id(task_id)
        loaded = await self._load(task_id)
        if loaded is None:
            raise TaskNotFound(f"no task {task_id}")
        task, etag = loaded
        if task.status not in (TaskStatus.Completed, TaskStatus.Failed):
            raise ValidationError("task_id", f"task is {task.status.value}; only completed or failed tasks can be archived")
        now = await self.time()
        new = replace(task, status=TaskStatus.Archived, updated_at=now)
        new = replace(new, history=_history(task, TaskStatus.Archived, now))
        await self.store.put(self.layout.task(task.shard, task.id), _encode(new), if_match=etag)
        return new

    # ------------------------------------------------------------ protocol (internal)
    async def _due_markers(
        self, shard: str, now: datetime, limit: int, start_after: str | None = None
    ) -> builtins.list[ReadyMarker]:
        """Ready markers of ``shard`` due at ``now``, after ``start_after`` (one LIST).
        Pass a later ``now`` to also see markers coming due soon."""
        now_ms = to_ms(now)
        out: builtins.list[ReadyMarker] = []
        for info in await self.store.list(self.layout.ready_prefix(shard), start_after=start_after, limit=limit):
            m = self.layout.parse_ready(info)
            if m is None:
                continue
            if m.due_ms > now_ms:
                break
            out.append(m)
        return out

    async def _put_task(self, new: Task, etag: str | None, key: str, body: bytes | None = None) -> str:
        """Conditional write of a task state; on PreconditionFailed check whether this
        very write landed (a retried request can see its own earlier success as 412)."""
        body = body if body is not None else _encode(new)
        try:
            if etag is None:
                return await self.store.put(key, body, if_none_match=True)
            return await self.store.put(key, body, if_match=etag)
        except PreconditionFailed:
            try:
                obj = await self.store.get(key)
            except ObjectNotFound:
                raise PreconditionFailed(f"{key!r} is missing", key) from None
            if json.loads(obj.data).get("rev") == json.loads(body).get("rev"):
                return obj.etag
            raise

    async def _claim(
        self,
        marker: ReadyMarker,
        worker_id: str,
        lease_seconds: float,
        now: datetime,
        max_timeout_seconds: float | None = None,
        _retried: bool = False,
    ) -> Lease | tuple[str, datetime | None]:
        """Try to claim the task behind a due ready marker. With
        ``max_timeout_seconds``, a task whose ``timeout_seconds`` is longer is left
        alone (a Lambda invocation with too little time left).

        Returns a :class:`Lease` on success, else ``(reason, skip_until)``: the reason
        in a word, and when the marker is worth looking at again (``None`` = it was
        deleted or never). One GET and one conditional PUT on the happy path.
        """
        key = self.layout.task(marker.shard, marker.task_id)
        try:
            obj = await self.store.get(key)
            task, _ = _decode(obj.data, key)
            etag: str | None = obj.etag
        except ObjectNotFound:
            # The submit that wrote this marker has not written the task yet (or died).
            try:
                mobj = await self.store.get(marker.key)
            except ObjectNotFound:
                return ("gone", None)
            if not mobj.data:
                if (now - marker.last_modified).total_seconds() > ORPHAN_MARKER_AGE_SECONDS:
                    await self.store.delete(marker.key)
                    return ("orphan", None)
                return ("missing", now + timedelta(seconds=1))
            task, _ = _decode(mobj.data, marker.key)
            etag = None
        except StorageError as exc:
            if isinstance(exc, ObjectNotFound):
                raise
            log.error("task %s: unreadable task document: %s", marker.task_id, exc)
            return ("corrupt", now + timedelta(seconds=60))

        if task.status.is_final:
            # usually a marker whose batched delete is on its way: only clean up old ones
            if (now - marker.last_modified).total_seconds() > ORPHAN_MARKER_AGE_SECONDS:
                await self.store.delete(marker.key)
                return ("final", None)
            return ("final", now + timedelta(seconds=30))
        if task.status == TaskStatus.Pending and task.available_at > now:
            return ("not-due", task.available_at)
        if max_timeout_seconds is not None and task.timeout_seconds > max_timeout_seconds:
            return ("too-long", now + timedelta(minutes=15))  # the longest Lambda invocation
        if task.status == TaskStatus.Running:
            if task.lease_expires_at is not None and task.lease_expires_at > now:
                return ("leased", task.lease_expires_at)
            if task.attempt >= task.max_attempts:
                error = (
                    f"lease of attempt {task.attempt} expired (worker {task.worker_id} stopped); "
                    f"no retries left"
                )
                failed = self._finish(task, TaskStatus.Failed, now, error=error)
                try:
                    await self._put_task(failed, etag, key)
                except PreconditionFailed:
                    return ("lost-race", now + timedelta(seconds=1))
                await self.store.delete(marker.key)
                return ("exhausted", None)
            log.warning(
                "task %s: lease of attempt %d (worker %s) expired; claiming it again",
                task.id, task.attempt, task.worker_id,
            )

        attempt = task.attempt + 1
        running = replace(
            task,
            status=TaskStatus.Running,
            attempt=attempt,
            retry_count=attempt - 1,
            worker_id=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            updated_at=now,
            last_error=task.last_error
            if task.status == TaskStatus.Pending
            else f"lease of attempt {task.attempt} expired (worker {task.worker_id} stopped)",
        )
        running = replace(running, history=_history(running, TaskStatus.Running, now))
        try:
            new_etag = await self._put_task(running, etag, key)
        except PreconditionFailed:
            if etag is None and not _retried:
                # raced the submitter's own task write: claim the task object it wrote
                return await self._claim(marker, worker_id, lease_seconds, now, max_timeout_seconds, _retried=True)
            return ("lost-race", now + timedelta(seconds=2))
        stale = [marker.key]
        derived = self.layout.ready_for(task)
        if derived != marker.key:
            stale.append(derived)
        return Lease(running, new_etag, stale)

    def _finish(self, task: Task, status: TaskStatus, now: datetime, *, output: Any = None, error: str | None = None) -> Task:
        new = replace(
            task,
            status=status,
            output=output,
            last_error=error if error is not None else task.last_error,
            lease_expires_at=None,
            completed_at=now,
            updated_at=now,
        )
        return replace(new, history=_history(new, status, now, error))

    async def _write(self, lease: Lease, new: Task) -> None:
        """Write the lease holder's next state, fenced by its ETag. Raises LeaseLost."""
        key = self.layout.task(new.shard, new.id)
        try:
            lease.etag = await self._put_task(new, lease.etag, key)
        except PreconditionFailed:
            raise LeaseLost(
                f"task {new.id}: attempt {lease.task.attempt} lost its lease; its write was rejected"
            ) from None
        lease.task = new

    async def _complete(self, lease: Lease, output: Any) -> builtins.list[str]:
        """Completed with ``output``. Returns index keys to delete. Raises LeaseLost."""
        now = await self.time()
        await self._write(lease, self._finish(lease.task, TaskStatus.Completed, now, output=output))
        return self._stale(lease)

    async def _fail(self, lease: Lease, error: str, *, retryable: bool) -> builtins.list[str]:
        """End the attempt with an error: back to Pending after the retry policy's delay
        while retries are left and ``retryable``, else Failed. Returns index keys to
        delete. Raises LeaseLost."""
        now = await self.time()
        task = lease.task
        if retryable and task.attempt < task.max_attempts:
            delay_ms = task.policy.delay_ms(task.attempt, self._rng)
            await self._requeue(lease, now, now + timedelta(milliseconds=delay_ms), error, retry_count=task.attempt)
        else:
            await self._write(lease, self._finish(task, TaskStatus.Failed, now, error=error))
        return self._stale(lease)

    async def _release(self, lease: Lease, reason: str) -> builtins.list[str]:
        """Give an attempt back unfinished (worker shutdown): Pending at once, and the
        attempt is not counted. Raises LeaseLost."""
        now = await self.time()
        task = lease.task
        await self._requeue(lease, now, now, reason, retry_count=task.retry_count, attempt=task.attempt - 1)
        return self._stale(lease)

    async def _requeue(
        self, lease: Lease, now: datetime, when: datetime, error: str, *, retry_count: int, attempt: int | None = None
    ) -> None:
        task = lease.task
        pending = replace(
            task,
            status=TaskStatus.Pending,
            available_at=from_ms(to_ms(when)),
            retry_count=retry_count,
            attempt=task.attempt if attempt is None else attempt,
            last_error=error,
            lease_expires_at=None,
            updated_at=now,
        )
        pending = replace(pending, history=_history(pending, TaskStatus.Pending, now, error))
        await self._write(lease, pending)
        # The new marker only after the state write: a marker always leads to a task
        # that is claimable from its due time (or to a state that says why not).
        new_key = self.layout.ready_for(pending)
        await self.store.put(new_key, b"")
        lease.stale_keys = [k for k in lease.stale_keys if k != new_key]

    def _stale(self, lease: Lease) -> builtins.list[str]:
        keys = builtins.list(lease.stale_keys)
        if lease.lease_key:
            keys.append(lease.lease_key)
        lease.stale_keys, lease.lease_key = [], None
        return keys

    async def _extend(self, lease: Lease, lease_seconds: float) -> builtins.list[str]:
        """Heartbeat: push the lease end to now + ``lease_seconds`` and move the task
        from the ready index to the lease index. Returns index keys to delete (the
        ready markers and the previous lease entry). Raises LeaseLost."""
        now = await self.time()
        expires = now + timedelta(seconds=lease_seconds)
        await self._write(lease, replace(lease.task, lease_expires_at=expires, updated_at=now))
        new_key = self.layout.lease(lease.task.shard, to_ms(expires), lease.task.id)
        await self.store.put(new_key, b"")
        stale = builtins.list(lease.stale_keys)
        if lease.lease_key:
            stale.append(lease.lease_key)
        lease.stale_keys, lease.lease_key = [], new_key
        return stale

    async def _recover_shard(self, shard: str, now: datetime, limit: int = 1000) -> int:
        """Monitor step for one shard: handle lease-index entries that expired by
        ``now``. Running tasks whose lease ended go back to Pending (or to Failed when
        no attempts are left); entries of tasks that moved on are dropped. Cost: one
        LIST, plus one GET and up to two PUTs per expired entry. Returns how many tasks
        were requeued or failed."""
        now_ms = to_ms(now)
        recovered = 0
        stale: builtins.list[str] = []
        for info in await self.store.list(self.layout.lease_prefix(shard), limit=limit):
            m = self.layout.parse_lease(info)
            if m is None:
                continue
            if m.expires_ms > now_ms:
                break
            try:
                loaded = await self._load(m.task_id, shard)
            except StorageError as exc:
                # one unreadable task must not stop recovery of the others
                log.error("task %s: lease entry skipped: %s", m.task_id, exc)
                continue
            if loaded is None:
                stale.append(m.key)
                continue
            task, etag = loaded
            if task.status == TaskStatus.Running and (task.lease_expires_at is None or task.lease_expires_at <= now):
                lease = Lease(task, etag, [], m.key)
                error = f"lease of attempt {task.attempt} expired (worker {task.worker_id} stopped)"
                try:
                    if task.attempt >= task.max_attempts:
                        await self._write(lease, self._finish(task, TaskStatus.Failed, now, error=error + "; no retries left"))
                    else:
                        delay_ms = task.policy.delay_ms(task.attempt, self._rng)
                        await self._requeue(lease, now, now + timedelta(milliseconds=delay_ms), error, retry_count=task.attempt)
                except LeaseLost:
                    continue  # its worker (or another monitor) moved it meanwhile
                log.warning("task %s: %s; recovered", task.id, error)
                recovered += 1
                stale.append(m.key)
            elif task.status == TaskStatus.Running:
                # lease extended since: the entry is a leftover of an earlier heartbeat
                if m.key != self.layout.lease(shard, to_ms(task.lease_expires_at), task.id):
                    stale.append(m.key)
            elif task.status == TaskStatus.Pending:
                # requeued by a writer that died before it removed this entry: make sure
                # the ready marker exists, then drop the entry
                await self.store.put(self.layout.ready_for(task), b"")
                stale.append(m.key)
            else:
                stale.append(m.key)
        if stale:
            await self.store.delete_many(stale)
        return recovered


# ------------------------------------------------------------------------ connect
async def _load_config(store: ObjectStore, layout: Layout, shard_count: int | None, read_only: bool = False) -> int:
    key = layout.config()
    try:
        obj = await store.get(key)
    except ObjectNotFound:
        wanted = shard_count or DEFAULT_SHARD_COUNT
        if read_only:
            return wanted
        body = json.dumps({"version": 1, "shard_count": wanted}).encode()
        try:
            await store.put(key, body, if_none_match=True)
            return wanted
        except PreconditionFailed:
            obj = await store.get(key)  # another client created it first
    try:
        cfg = json.loads(obj.data)
        stored = cfg["shard_count"]
        if isinstance(stored, bool) or not isinstance(stored, int) or not 1 <= stored <= MAX_SHARD_COUNT:
            raise ValueError(f"shard_count must be an integer from 1 to {MAX_SHARD_COUNT}, got {stored!r}")
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        raise ConfigurationError(f"{key} in the bucket is malformed: {exc}") from exc
    if shard_count is not None and shard_count != stored:
        raise ConfigurationError(
            f"shard_count={shard_count} was asked for, but this bucket was set up with "
            f"shard_count={stored} ({key}); every client must agree"
        )
    return stored


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
        v.int_in_range(shard_count, "shard_count", 1, MAX_SHARD_COUNT)
    if store is None:
        local = local_dir or os.environ.get("BUQUET_LOCAL_DIR")
        bucket = bucket or os.environ.get("S3_BUCKET")
        if local:
            from .storage.local import LocalStore

            store = LocalStore(local)
        elif bucket:
            from .storage.s3 import S3Store

            store = S3Store(
                bucket,
                endpoint=endpoint or os.environ.get("S3_ENDPOINT") or None,
                region=region or os.environ.get("S3_REGION") or None,
            )
        else:
            raise ConfigurationError(
                "no queue store configured: pass bucket= (or set S3_BUCKET, with S3_ENDPOINT "
                "and S3_REGION as needed) for S3, local_dir= (or set BUQUET_LOCAL_DIR) for a "
                "local directory, or store= for any ObjectStore such as MemoryStore()"
            )
    if prefix is None:
        prefix = os.environ.get("BUQUET_PREFIX", "")
    layout = Layout(prefix)
    count = await _load_config(store, layout, shard_count, read_only)
    return Queue(store, shard_count=count, prefix=prefix, clock=clock)
