"""The task protocol: every stored state change of a task, as fenced conditional writes.

:class:`TaskProtocol` is what :class:`~buquet.Worker`, :class:`~buquet.Monitor`, the
scheduler and the Lambda handlers drive; :class:`~buquet.Queue` is the user's facade
over it. The rules (``docs/protocol.md``):

* ``tasks/S/T.json`` is the one source of truth; every change is a conditional write
  (``If-None-Match: *`` to create, ``If-Match: <etag>`` to update) of a body encoded
  once with a fresh ``rev``, resolved through :func:`~buquet._writes.put_resolved`
  when a response is lost.
* **Reachability**: at every instant every non-final task is reachable from an index
  entry that workers (``ready/``) or the monitor (``leases/``) scan. Writes are ordered
  so that a crash between any two keeps it so: a new index entry is written *before*
  the task state that relies on it, an old one is deleted only *after* its successor
  exists.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from . import _telemetry
from . import _transitions as tr
from ._codec import Encoded, decode_task, encode_task
from ._ids import check_task_id, new_task_id, shard_index, shard_names
from .keys import KeyLayout, ReadyKey
from ._time import to_ms, utcnow
from ._payloads import PayloadStore
from ._writes import put_resolved
from .errors import CorruptObject, LeaseLost, ObjectNotFound, PreconditionFailed, StorageError, ValidationError
from .models import RetryPolicy, Task, TaskStatus
from .storage.base import ObjectStore

log = logging.getLogger("buquet.protocol")

Clock = Callable[[], datetime]
#: a ready marker whose task object is missing is only removed once it is this old
ORPHAN_MARKER_AGE_SECONDS = 60
#: a marker of a task that became final less than this long ago is skipped (its
#: worker's batched delete is due); later it is deleted by the worker that meets it
FRESH_MARKER_SECONDS = 5


@dataclass(slots=True)
class Lease:
    """A worker's hold on one attempt of a task.

    Attributes:
        task: the state this worker last wrote.
        etag: the ETag of that write; every further write is conditional on it
            (fencing).
        stale_keys: index entries to delete once a successor exists.
        lease_key: this attempt's current lease-index entry, if any.
        unconfirmed_revs: revs of writes sent whose outcome was not seen (a
            cancelled heartbeat): finding one stored means the object is still ours.
        expiry_key: the task's expiry-index entry, deleted once the task is final.
        lock: serialises this attempt's writes (heartbeat, ``TaskContext`` calls and
            the outcome), so each is conditioned on the one before.
    """

    task: Task
    etag: str
    stale_keys: list[str] = field(default_factory=list)
    lease_key: str | None = None
    unconfirmed_revs: set[str] = field(default_factory=set)
    expiry_key: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)


class ClaimMissReason:
    """Why a claim did not give a lease (string constants for logs and counters)."""

    GONE = "gone"  #: the marker and its task are gone
    PENDING_WRITE = "pending_write"  #: marker without task copy, task object not written yet
    ORPHAN = "orphan"  #: an old marker without a task: deleted
    CORRUPT = "corrupt"  #: the task object cannot be decoded
    LOST_RACE = "lost_race"  #: another worker's conditional write won
    EXHAUSTED = "exhausted"  #: expired lease, no attempts left: written Failed


@dataclass(frozen=True, slots=True)
class ClaimMiss:
    """A claim that gave no lease: a :class:`~buquet._transitions.ClaimVerdict` or a
    :class:`ClaimMissReason` string, and when the marker is worth another look
    (``None``: never, by this worker)."""

    reason: tr.ClaimVerdict | str
    retry_at: datetime | None = None


class TaskProtocol:
    """Claim, extend, complete, fail, release and recover tasks in one bucket.

    Args:
        store: the object store (one bucket).
        layout: the key layout (prefix).
        shard_count: the bucket's shard count (``config.json``).
        clock: injected clock (tests); else the store's clock, else the local one.
        rng: randomness for retry jitter (tests pass a seeded one).
    """

    def __init__(
        self,
        store: ObjectStore,
        layout: KeyLayout,
        shard_count: int,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.shard_count = shard_count
        self.shards = shard_names(shard_count)
        self._clock = clock
        self._rng = rng or random.Random()
        self.payloads = PayloadStore(store, layout)

    # ---------------------------------------------------------------- basics
    def shard_of(self, task_id: str) -> str:
        """The shard of a task id. Raises ValidationError for a malformed id."""
        return self.shards[shard_index(check_task_id(task_id), self.shard_count)]

    def check_shards(self, shards: Iterable[str], field: str = "shards") -> list[str]:
        """Validate shard names against this bucket and return them as a list.

        Raises:
            ValidationError: a string instead of a list, an empty list, or an unknown
                shard (names ``field``).
        """
        if isinstance(shards, str):
            raise ValidationError(field, "must be a list of shard names, not a string")
        out = list(shards)
        if not out:
            raise ValidationError(field, "must name at least one shard")
        for s in out:
            if s not in self.shards:
                raise ValidationError(field, f"unknown shard {s!r}; this bucket has shards {self.shards}")
        return out

    async def time(self) -> datetime:
        """The store's current time (aware UTC); sends at most one HEAD Bucket per
        5 minutes on S3."""
        if self._clock is not None:
            return self._clock()
        server = await self.store.server_time()
        return server if server is not None else utcnow()

    # ---------------------------------------------------------------- create
    async def create(
        self,
        task_type: str,
        input: Any,
        *,
        timeout_seconds: int,
        max_retries: int,
        retry_policy: RetryPolicy | None,
        available_at: datetime | None,
        now: datetime,
        task_id: str | None = None,
        **options: Any,
    ) -> tuple[Task, bool]:
        """Write a new Pending task (arguments already validated); returns it and
        whether this call created it (``False``: a task with that id existed).

        ``options`` sets further fields of the new task (``expires_at``,
        ``max_reschedules``, ``input_ref``).

        Order: the ready marker carrying the task document first, then (for a task with
        a deadline) its expiry-index entry, then ``tasks/S/T.json`` with
        ``If-None-Match: *``, so a task object never exists without an index entry.
        Transient errors are retried with identical bodies.

        Raises:
            StorageError: the store kept failing; the exception's ``task_id`` names
                the task, which may exist (its marker alone is enough for a worker).

        S3: 2 PUTs.
        """
        tid = task_id or new_task_id(to_ms(now))
        task = tr.new_pending(
            tid, task_type, input, shard=self.shard_of(tid), timeout_seconds=timeout_seconds,
            max_retries=max_retries, retry_policy=retry_policy, available_at=available_at or now, now=now,
            **options,
        )
        return await self.insert(task)

    async def insert(self, task: Task) -> tuple[Task, bool]:
        """Store a new Pending task built by the caller (see :meth:`create`); returns
        it and whether this call created it. Idempotent per task id and document.

        Raises:
            StorageError: as :meth:`create` (with ``task_id``).
        """
        tid = task.id
        enc = encode_task(task)
        expiry_key = self.layout.expiry_for(task)
        try:
            await put_resolved(self.store, self.layout.ready_for(task), enc)
            _telemetry.count("buquet.tasks.submitted", task_type=task.task_type)
            if expiry_key is not None:
                await put_resolved(self.store, expiry_key, Encoded(b"", ""))
            await put_resolved(self.store, self.layout.task(task.shard, tid), enc, if_none_match=True)
        except PreconditionFailed:
            # The id exists: a worker claimed it from the marker's copy already (a
            # random id), or the same deterministic id was submitted before.
            return task, False
        except StorageError as exc:
            exc.task_id = tid  # type: ignore[attr-defined]
            exc.args = (f"{exc} (task {tid} may have been stored; get({tid!r}) tells)",)
            raise
        return task, True

    # --------------------------------------------------------------- reading
    async def load(self, task_id: str, shard: str | None = None) -> tuple[Task, str] | None:
        """``(task, etag)`` of a stored task object, or ``None``. One GET.

        Raises:
            CorruptObject: the object cannot be decoded (names key and field).
        """
        key = self.layout.task(shard if shard is not None else self.shard_of(task_id), task_id)
        try:
            obj = await self.store.get(key)
        except ObjectNotFound:
            return None
        return decode_task(obj.data, key)[0], obj.etag

    async def exists(self, task_id: str) -> bool:
        """Does the task object exist? One HEAD."""
        try:
            await self.store.head(self.layout.task(self.shard_of(task_id), task_id))
            return True
        except ObjectNotFound:
            return False

    async def due_markers(
        self, shard: str, now: datetime, limit: int, start_after: str | None = None
    ) -> list[ReadyKey]:
        """Ready markers of ``shard`` due at ``now``, after ``start_after``, in key
        (= due) order (one LIST). Pass a later ``now`` to see markers coming due."""
        now_ms = to_ms(now)
        out: list[ReadyKey] = []
        for info in await self.store.list(self.layout.ready_prefix(shard), start_after=start_after, limit=limit):
            m = self.layout.parse_ready(info.key, info.last_modified)
            if m is None:
                continue
            if m.due_ms > now_ms:
                break
            out.append(m)
        return out

    # ------------------------------------------------------------ the attempt
    async def claim(
        self, marker: ReadyKey, worker_id: str, lease_seconds: float, now: datetime,
        max_timeout_seconds: float | None = None,
    ) -> Lease | ClaimMiss:
        """Try to claim the task behind a due ready marker (one GET and one
        conditional PUT on the happy path). A Running task whose lease lapsed is taken
        over (a new attempt), or written Failed when no attempts are left.

        Raises:
            StorageError: the store kept failing (nothing was claimed, or the claim
                was resolved as not ours).
        """
        key = self.layout.task(marker.shard, marker.task_id)
        try:
            obj = await self.store.get(key)
            task, _ = decode_task(obj.data, key)
            etag: str | None = obj.etag
        except ObjectNotFound:
            copy = await self._marker_copy(marker, now)
            if isinstance(copy, ClaimMiss):
                return copy
            task, etag = copy, None
        except CorruptObject as exc:
            log.error("task %s: %s", marker.task_id, exc)
            return ClaimMiss(ClaimMissReason.CORRUPT, now + timedelta(seconds=60))
        decision = tr.decide_claim(task, now, max_timeout_seconds)
        if decision.verdict == tr.ClaimVerdict.FINAL:
            # A leftover (its batched delete is on its way or was lost, or a slow requeue
            # PUT landed late). Deleting it is always safe — a final task becomes Pending
            # again only through replay, which makes it reachable from the lease index
            # first — but a fresh one is usually about to go with its worker's batch:
            # skip it for a while instead of sending a DELETE from every worker.
            if (now - task.updated_at).total_seconds() < FRESH_MARKER_SECONDS:
                return ClaimMiss(decision.verdict, task.updated_at + timedelta(seconds=FRESH_MARKER_SECONDS))
            await self.store.delete(marker.key)
            return ClaimMiss(decision.verdict)
        if decision.verdict == tr.ClaimVerdict.FAIL_EXHAUSTED:
            error = tr.expired_lease_error(task) + "; no retries left"
            try:
                await self._put_new(tr.failed(task, now, error), key, etag)
            except PreconditionFailed:
                return ClaimMiss(ClaimMissReason.LOST_RACE, now + timedelta(seconds=1))
            await self.store.delete(marker.key)
            _telemetry.lease_recovered(task.task_type, exhausted=True)
            return ClaimMiss(ClaimMissReason.EXHAUSTED)
        if decision.verdict == tr.ClaimVerdict.EXPIRE:
            try:
                await self._put_new(tr.expired(task, now), key, etag)
            except PreconditionFailed:
                return ClaimMiss(ClaimMissReason.LOST_RACE, now + timedelta(seconds=1))
            await self.store.delete_many([k for k in (marker.key, self.layout.expiry_for(task)) if k])
            _telemetry.count("buquet.tasks.expired", task_type=task.task_type)
            return ClaimMiss(decision.verdict)
        if decision.verdict != tr.ClaimVerdict.CLAIM:
            return ClaimMiss(decision.verdict, decision.retry_at)
        if task.status == TaskStatus.Running:
            log.warning("task %s: %s; claiming it again", task.id, tr.expired_lease_error(task))
        running = tr.claimed(task, worker_id, now, lease_seconds)
        try:
            new_etag = await self._put_new(running, key, etag)
        except PreconditionFailed:
            if etag is None:
                # raced the submitter's own task write: claim the object it wrote
                return await self.claim(marker, worker_id, lease_seconds, now, max_timeout_seconds)
            return ClaimMiss(ClaimMissReason.LOST_RACE, now + timedelta(seconds=2))
        if task.status == TaskStatus.Running:
            _telemetry.lease_recovered(task.task_type, exhausted=False)  # taken over after its lease lapsed
        stale = [marker.key]
        derived = self.layout.ready_for(task)
        if derived != marker.key:
            stale.append(derived)
        return Lease(running, new_etag, stale, expiry_key=self.layout.expiry_for(task))

    async def _marker_copy(self, marker: ReadyKey, now: datetime) -> Task | ClaimMiss:
        """The task document a submit marker carries (its task object is not written
        yet, or its submitter died)."""
        try:
            mobj = await self.store.get(marker.key)
        except ObjectNotFound:
            return ClaimMiss(ClaimMissReason.GONE)
        if not mobj.data:
            age = (now - mobj.info.last_modified).total_seconds()
            if age > ORPHAN_MARKER_AGE_SECONDS:
                await self.store.delete(marker.key)
                return ClaimMiss(ClaimMissReason.ORPHAN)
            return ClaimMiss(ClaimMissReason.PENDING_WRITE, now + timedelta(seconds=1))
        try:
            return decode_task(mobj.data, marker.key)[0]
        except CorruptObject as exc:
            log.error("task %s: %s", marker.task_id, exc)
            return ClaimMiss(ClaimMissReason.CORRUPT, now + timedelta(seconds=60))

    async def _put_new(self, task: Task, key: str, etag: str | None) -> str:
        enc = encode_task(task)
        written = await put_resolved(self.store, key, enc, if_match=etag, if_none_match=etag is None)
        return written.etag

    async def put_state(self, new: Task, etag: str) -> str:
        """Replace a task's stored state (read with :meth:`load`) by ``new``, on
        condition that it is still the version with ``etag``; returns the new ETag.
        For transitions by a non-holder (cancel, expire, replay).

        Raises:
            PreconditionFailed: it changed meanwhile (re-read and decide again).
            StorageError: the store kept failing.
        """
        return await self._put_new(new, self.layout.task(new.shard, new.id), etag)

    async def write(self, lease: Lease, change: Callable[[Task], Task]) -> None:
        """Write the lease holder's next state ``change(state)``, one write of this
        attempt at a time; see :meth:`_write` (its errors)."""
        async with lease.lock:
            await self._write(lease, change)

    async def _write(self, lease: Lease, change: Callable[[Task], Task]) -> None:
        """Write the lease holder's next state ``change(state)``, fenced by its ETag;
        resolves lost responses (identical body, own ``rev`` recognised). When the
        write is refused because someone else annotated the *same attempt* (a
        cancellation request), ``change`` is redone on the stored state and written
        again.

        Raises:
            LeaseLost: another attempt owns the task now (the lease lapsed and it was
                claimed again, or the monitor recovered it).
            StorageError: the store kept failing (the write may or may not have landed;
                its ``rev`` stays in ``lease.unconfirmed_revs``).
        """
        for _ in range(5):
            new = change(lease.task)
            enc: Encoded = encode_task(new)
            key = self.layout.task(new.shard, new.id)
            lease.unconfirmed_revs.add(enc.rev)
            try:
                written = await put_resolved(
                    self.store, key, enc, if_match=lease.etag, own_revs=frozenset(lease.unconfirmed_revs)
                )
            except PreconditionFailed:
                current = await self.load(new.id, new.shard)
                if current is None or not tr.same_attempt(current[0], lease.task):
                    raise LeaseLost(
                        f"task {new.id}: attempt {lease.task.attempt} lost its lease; its write was rejected"
                    ) from None
                lease.task, lease.etag = current  # annotated by someone else: redo on top
                continue
            lease.unconfirmed_revs.clear()
            lease.etag = written.etag
            lease.task = new
            return
        raise LeaseLost(f"task {lease.task.id}: the task kept changing under attempt {lease.task.attempt}")

    async def extend(self, lease: Lease, lease_seconds: float, *, add_seconds: float | None = None) -> list[str]:
        """Heartbeat: push the lease end to ``now + lease_seconds`` — or, with
        ``add_seconds``, to ``max(lease end, now) + add_seconds`` — never shortening it.
        The new lease-index entry is written *before* the task state that points at it,
        so a crash between the two leaves the task findable by the monitor; returns the
        index keys that are now redundant (ready markers, the previous lease entry) for
        batched delete.

        Raises:
            LeaseLost, StorageError: as :meth:`write`.

        S3: 1 PUT lease entry + 1 PUT task (``If-Match``).
        """
        async with lease.lock:
            now = await self.time()
            current_end = lease.task.lease_expires_at or now
            if add_seconds is not None:
                expires = max(current_end, now) + timedelta(seconds=add_seconds)
            else:
                expires = max(current_end, now + timedelta(seconds=lease_seconds))
            new_key = self.layout.lease(lease.task.shard, to_ms(expires), lease.task.id)
            await put_resolved(self.store, new_key, Encoded(b"", ""))
            await self._write(lease, lambda t: tr.extended(t, now, max(expires, t.lease_expires_at or expires)))
            stale = [k for k in lease.stale_keys if k != new_key]
            if lease.lease_key and lease.lease_key != new_key:
                stale.append(lease.lease_key)
            lease.stale_keys, lease.lease_key = [], new_key
            return stale

    async def refresh(self, lease: Lease) -> Task:
        """Re-read the task (one GET) and adopt it while it is still this attempt's.
        Raises LeaseLost otherwise (gone, final, or claimed again)."""
        async with lease.lock:
            current = await self.load(lease.task.id, lease.task.shard)
            if current is None or not tr.same_attempt(current[0], lease.task):
                raise LeaseLost(f"task {lease.task.id}: attempt {lease.task.attempt} no longer holds the task")
            lease.task, lease.etag = current
            return lease.task

    async def report_progress(self, lease: Lease, progress: dict[str, Any]) -> None:
        """Store a progress report in the task (1 PUT, ``If-Match``). Raises LeaseLost,
        StorageError."""
        now = await self.time()
        await self.write(lease, lambda t: tr.progressed(t, now, progress))

    async def complete(self, lease: Lease, output: Any, output_ref: str | None = None) -> list[str]:
        """The handler returned: Completed with ``output`` — or Cancelled, when a
        cancellation was requested and it returned ``None``. Returns index keys to
        delete. Raises LeaseLost, StorageError. S3: 1 PUT (``If-Match``)."""
        now = await self.time()
        await self.write(lease, lambda t: tr.finished(t, now, output, output_ref))
        return self.drop_index(lease)

    async def fail(self, lease: Lease, error: str, *, retryable: bool, traceback: str | None = None) -> list[str]:
        """End the attempt with ``error``: Pending again after the retry policy's
        backoff while ``retryable`` and attempts are left, else Failed. Returns index
        keys to delete. Raises LeaseLost, StorageError.

        S3: Failed 1 PUT; retry 1 PUT task + 1 PUT ready marker."""
        now = await self.time()
        step = tr.after_failure(lease.task, retryable, now, self._rng)
        if step.step == tr.NextStep.RETRY and step.available_at is not None:
            when = step.available_at
            await self.requeue(lease, lambda t: tr.requeued(t, now, when, error, traceback=traceback))
        else:
            await self.write(lease, lambda t: tr.failed(t, now, error, traceback))
        return self.drop_index(lease)

    async def reschedule(self, lease: Lease, delay_seconds: float) -> list[str]:
        """The handler asked to run later (``RescheduleError``): Pending again in
        ``delay_seconds`` (negative = 0), the attempt given back — or Failed with
        ``"Max reschedules (N) exceeded"`` when ``max_reschedules`` is reached. Returns
        index keys to delete. S3: 1 PUT task + 1 PUT ready marker."""
        now = await self.time()
        task = lease.task
        if task.max_reschedules is not None and task.reschedule_count >= task.max_reschedules:
            error = f"Max reschedules ({task.max_reschedules}) exceeded"
            await self.write(lease, lambda t: tr.failed(t, now, error))
        else:
            when = now + timedelta(seconds=max(0.0, float(delay_seconds)))
            await self.requeue(lease, lambda t: tr.rescheduled(t, now, when))
        return self.drop_index(lease)

    async def release(self, lease: Lease, reason: str) -> list[str]:
        """Give an unfinished attempt back (worker shutdown): Pending at once, the
        attempt not counted. Raises LeaseLost, StorageError."""
        now = await self.time()
        await self.requeue(lease, lambda t: tr.requeued(t, now, now, reason, refund_attempt=True))
        return self.drop_index(lease)

    async def requeue(self, lease: Lease, change: Callable[[Task], Task]) -> None:
        """Write ``change`` (a Pending state), then its ready marker: an old entry
        (ready marker or lease entry, deleted only afterwards) still leads to the task
        if we die between. Raises LeaseLost, StorageError."""
        await self.write(lease, change)
        await self.announce(lease.task)
        new_key = self.layout.ready_for(lease.task)
        lease.stale_keys = [k for k in lease.stale_keys if k != new_key]

    async def announce(self, task: Task) -> None:
        """(Re)write the ready marker of a Pending task (1 PUT, idempotent)."""
        await put_resolved(self.store, self.layout.ready_for(task), Encoded(b"", ""))

    @staticmethod
    def drop_index(lease: Lease) -> list[str]:
        """The index keys an attempt leaves behind (ready markers, its lease entry, and
        the expiry entry once the task is final), for batched delete."""
        keys = list(lease.stale_keys)
        if lease.lease_key:
            keys.append(lease.lease_key)
        if lease.expiry_key and lease.task.status.is_final:
            keys.append(lease.expiry_key)
        lease.stale_keys, lease.lease_key = [], None
        return keys
