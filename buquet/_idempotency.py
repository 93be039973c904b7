"""Idempotency keys: ``submit(..., idempotency_key=...)`` creates at most one task per
live key, also under concurrent submits from many processes and with lost responses.

A key is one object, ``idempotency/<kind>/<sha256>.json`` (:meth:`~buquet.keys.
KeyLayout.idempotency`), the *record*. It names the task and **carries the whole new
task document**, and it is written with ``If-None-Match: *`` *before* the task. Of any
number of racing first submits exactly one record write wins; every submit then stores
(or finds) the task of the record that won, by :meth:`~buquet._tasks.TaskProtocol.insert`
of the record's copy — same id, same document, so writing it twice is harmless. A
submitter that dies between the record and the task therefore never blocks the key: the
next submit with that key completes the submission from the copy.

A record stops counting (the key is re-pointed at a new task with ``If-Match`` on the
record's ETag) when it is expired (``now > expires_at``) or its task is *gone*: no task
object, no ready marker, and the record untouched for :data:`GRACE_SECONDS`. A record
whose task is missing but which is younger than that belongs to a submit still in
flight (or dead mid-way) and is completed from its copy, never replaced. Writers that
might be slow refresh ``touched_at`` first (see :meth:`IdempotencyStore._create`), so a
replacer and a completer can never act on the same record version. Assumption, as for
orphan ready markers (``ORPHAN_MARKER_AGE_SECONDS``): no writer stalls more than
``GRACE_SECONDS / 2`` between its last look at the record and its ready-marker write.

S3 cost: first submit 1 GET (miss) + 1 PUT (record) on top of a plain submit's 2 PUTs;
a reuse 1 GET record + 1 GET task, nothing written; a conflict the same two GETs.
See ``docs/protocol.md`` ("Idempotency keys").
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time as _time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from ._codec import Encoded, decode_json, encode, new_rev
from ._tasks import TaskProtocol
from ._time import from_rfc3339, to_rfc3339
from ._writes import put_resolved
from .errors import CorruptObject, IdempotencyConflict, ObjectNotFound, PreconditionFailed, StorageError, ValidationError
from .models import Task

#: default lifetime of a key, days (buquet 0.1.0's default)
DEFAULT_TTL_DAYS = 30
#: a record whose task object and ready marker are both missing counts as "task gone"
#: only once it is this old (younger: a submit is still writing, or died mid-way)
GRACE_SECONDS = 60.0
#: version of the record document
RECORD_VERSION = 1
#: rounds of read → decide → conditional write before giving up (each lost round means
#: another writer changed the record, after which the next round normally returns)
MAX_ROUNDS = 10

#: a record this young whose task object is missing most likely belongs to a submit
#: still writing it: poll for the task (:data:`IN_FLIGHT_POLLS`, seconds between GETs)
#: before writing the task from the record's copy
IN_FLIGHT_SECONDS = 5.0
IN_FLIGHT_POLLS = (0.05, 0.1, 0.2)

KIND_TYPE = "type"
KIND_QUEUE = "queue"
KIND_NAMED = "named"


def fingerprint(input: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``input``: keys sorted at every level,
    no whitespace, UTF-8 — so two inputs that differ only in key order match.
    Fingerprint the *full* input (before any offloading to a payload object)."""
    text = json.dumps(input, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Scope:
    """A resolved ``idempotency_scope``: where a key lives.

    Attributes:
        kind: ``"type"`` (per task type), ``"queue"`` (queue-wide) or ``"named"``.
        namespace: the task type, ``""`` for the queue, or the scope's name.
        label: how error messages name it.
    """

    kind: str
    namespace: str
    label: str


def resolve_scope(scope: str | None, task_type: str) -> Scope:
    """``None``/``"task_type"``/``"TaskType"`` → per task type; ``"queue"``/``"Queue"``
    → queue-wide; any other non-empty string → that named namespace.

    Raises:
        ValidationError: ``scope`` is not a string or is empty.
    """
    if scope is None or scope in ("task_type", "TaskType"):
        return Scope(KIND_TYPE, task_type, f"task_type {task_type!r}")
    if not isinstance(scope, str):
        raise ValidationError("idempotency_scope", f"must be a string or None, got {type(scope).__name__}")
    if scope in ("queue", "Queue"):
        return Scope(KIND_QUEUE, "", "queue")
    if not scope:
        raise ValidationError("idempotency_scope", "must not be empty")
    return Scope(KIND_NAMED, scope, repr(scope))


def check_key(key: Any) -> str:
    """Validate an idempotency key: a non-empty string. Raises ValidationError."""
    if not isinstance(key, str):
        raise ValidationError("idempotency_key", f"must be a string, got {type(key).__name__}")
    if not key:
        raise ValidationError("idempotency_key", "must not be empty")
    return key


def check_ttl_days(ttl_days: Any) -> int:
    """Validate ``idempotency_ttl_days`` (``None`` → :data:`DEFAULT_TTL_DAYS`): an int
    from 1 to 36500. Raises ValidationError."""
    if ttl_days is None:
        return DEFAULT_TTL_DAYS
    if isinstance(ttl_days, bool) or not isinstance(ttl_days, int):
        raise ValidationError("idempotency_ttl_days", f"must be an integer, got {type(ttl_days).__name__}")
    if not 1 <= ttl_days <= 36500:
        raise ValidationError("idempotency_ttl_days", f"must be between 1 and 36500, got {ttl_days}")
    return ttl_days


@dataclass(frozen=True, slots=True)
class Record:
    """A decoded idempotency record.

    Attributes:
        key: the idempotency key as given.
        scope: the scope's label.
        task_id: the task the key points at.
        fingerprint: :func:`fingerprint` of that task's input.
        created_at: when the key was (re-)pointed at the task.
        touched_at: the last time a writer announced it is storing the task
            (``created_at`` unless refreshed).
        expires_at: the key counts until this instant (inclusive).
        task: the new Pending task as first submitted (its document, whole).
    """

    key: str
    scope: str
    task_id: str
    fingerprint: str
    created_at: datetime
    touched_at: datetime
    expires_at: datetime
    task: Task

    def to_document(self) -> dict[str, Any]:
        """The stored JSON shape."""
        return {
            "version": RECORD_VERSION,
            "key": self.key,
            "scope": self.scope,
            "task_id": self.task_id,
            "fingerprint": self.fingerprint,
            "created_at": to_rfc3339(self.created_at),
            "touched_at": to_rfc3339(self.touched_at),
            "expires_at": to_rfc3339(self.expires_at),
            "task": self.task.to_document(),
        }

    @classmethod
    def decode(cls, data: bytes, object_key: str) -> "Record":
        """Decode a stored record. Raises CorruptObject naming the key and field."""
        doc = decode_json(data, object_key)
        field = "document"
        try:
            out: dict[str, Any] = {}
            for field in ("key", "scope", "task_id", "fingerprint"):
                if not isinstance(doc.get(field), str):
                    raise ValueError("must be a string")
                out[field] = doc[field]
            for field in ("created_at", "touched_at", "expires_at"):
                value = doc.get(field, doc.get("created_at")) if field == "touched_at" else doc.get(field)
                if not isinstance(value, str):
                    raise ValueError("must be an RFC 3339 string")
                out[field] = from_rfc3339(value)
            field = "task"
            task = Task.from_dict(doc.get("task"))
            if task.id != out["task_id"]:
                raise ValueError(f"task id {task.id} differs from task_id {out['task_id']}")
        except ValidationError as exc:
            raise CorruptObject(object_key, f"task.{exc.field}", exc.rule) from None
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise CorruptObject(object_key, field, str(exc)) from None
        return cls(task=task, **out)


def _encode(record: Record) -> Encoded:
    rev = new_rev()
    return Encoded(encode(record.to_document(), rev), rev)


class IdempotencyStore:
    """Submit-once over idempotency records, on one bucket's :class:`TaskProtocol`.

    Args:
        protocol: the queue's task protocol (store, layout, clock, ``insert``, ``load``).
        grace_seconds: how long a record whose task is missing is treated as a submit
            in flight (tests shorten it).
    """

    def __init__(self, protocol: TaskProtocol, *, grace_seconds: float = GRACE_SECONDS) -> None:
        self.protocol = protocol
        self.store = protocol.store
        self.layout = protocol.layout
        self.grace = timedelta(seconds=grace_seconds)

    def record_key(self, key: str, scope: str | None, task_type: str) -> str:
        """The object key of the record of ``key`` in ``scope`` for ``task_type``."""
        s = resolve_scope(scope, task_type)
        return self.layout.idempotency(s.kind, s.namespace, check_key(key))

    async def read(self, key: str, scope: str | None, task_type: str) -> Record | None:
        """The stored record of a key (live or not), or ``None``. One GET.
        Raises CorruptObject."""
        rk = self.record_key(key, scope, task_type)
        try:
            obj = await self.store.get(rk)
        except ObjectNotFound:
            return None
        return Record.decode(obj.data, rk)

    async def submit_once(
        self,
        task: Task,
        *,
        key: str,
        scope: str | None,
        ttl_days: int,
        fingerprint: str,
        now: datetime,
    ) -> Task:
        """Submit ``task`` unless ``key`` is live in ``scope``; return the key's task.

        Args:
            task: the fully built new Pending task the caller would submit (its input
                possibly offloaded: any payload object it references must be stored
                before this call, since the record's copy may be submitted by another
                process).
            key: the idempotency key (non-empty string).
            scope: ``None``/``"task_type"``/``"TaskType"`` (per task type),
                ``"queue"``/``"Queue"`` (queue-wide) or a namespace name.
            ttl_days: the key's lifetime from now, days.
            fingerprint: :func:`fingerprint` of the task's full input.
            now: the store's time (``protocol.time()``).

        Returns:
            ``task`` as stored when this call created the key (or re-pointed it);
            otherwise the key's existing task as stored now, any status — its ``id``
            differs from ``task.id`` and nothing of ``task`` was written.

        Raises:
            ValidationError: bad key, scope or ttl_days; nothing written.
            IdempotencyConflict: the key is live for a different input (message names
                the key and the existing task id); nothing written.
            CorruptObject: the record or its task cannot be decoded.
            StorageError: the store kept failing; ``exc.task_id`` names the task that
                may be stored (a retry with the same key completes or returns it).

        S3: first use 1 GET (miss) + 1 PUT record + the submit's 2 PUTs; reuse and
        conflict 1 GET record + 1 GET task. Only when the record's task is missing:
        + 1 HEAD of its ready marker (record older than half the grace), + 1 PUT
        refreshing the record (a slow completion), + the 2 PUTs of completing it.
        """
        check_key(key)
        ttl = check_ttl_days(ttl_days)
        s = resolve_scope(scope, task.task_type)
        rk = self.layout.idempotency(s.kind, s.namespace, key)
        half = self.grace / 2
        for _ in range(MAX_ROUNDS):
            read_at = _time.monotonic()
            try:
                obj = await self.store.get(rk)
            except ObjectNotFound:
                obj = None
            if obj is None:
                out = await self._point(rk, task, key, s, ttl, fingerprint, now, if_etag=None)
                if out is not None:
                    return out
                continue  # another submit created the record first: look at it
            rec = Record.decode(obj.data, rk)
            if now > rec.expires_at:
                out = await self._point(rk, task, key, s, ttl, fingerprint, now, if_etag=obj.etag)
                if out is not None:
                    return out
                continue
            loaded = await self.protocol.load(rec.task.id, rec.task.shard)
            if loaded is not None:
                if rec.fingerprint != fingerprint:
                    raise self._conflict(key, s, rec.task_id)
                return loaded[0]
            # The record's task object does not exist: a submit in flight, a submitter
            # that died between record and task, or a task deleted since.
            age = now - rec.touched_at
            marker = None
            if age >= half:
                marker = await self._marker_exists(rec.task)
                if not marker and age >= self.grace:  # gone: the key counts as absent
                    out = await self._point(rk, task, key, s, ttl, fingerprint, now, if_etag=obj.etag)
                    if out is not None:
                        return out
                    continue
            if rec.fingerprint != fingerprint:
                raise self._conflict(key, s, rec.task_id)
            if age < timedelta(seconds=IN_FLIGHT_SECONDS):
                # Most likely its submitter is writing it right now: give it a moment
                # rather than have every racing submit write the task again.
                found = await self._await_task(rec.task)
                if found is not None:
                    return found
            out = await self._create(rec.task, rk, obj.etag, rec, age, read_at, safe=bool(marker))
            if out is not None:
                return out
        raise StorageError(f"idempotency record {rk!r} kept changing under concurrent writers; try again", rk)

    # ------------------------------------------------------------- internals
    def _conflict(self, key: str, s: Scope, task_id: str) -> IdempotencyConflict:
        return IdempotencyConflict(
            f"Idempotency conflict: key {key!r} (scope {s.label}) belongs to task {task_id} with another input",
            key, task_id,
        )

    async def _await_task(self, task: Task) -> Task | None:
        """Poll briefly for the task object a submit in flight is writing."""
        for delay in IN_FLIGHT_POLLS:
            await asyncio.sleep(delay)
            loaded = await self.protocol.load(task.id, task.shard)
            if loaded is not None:
                return loaded[0]
        return None

    async def _marker_exists(self, task: Task) -> bool:
        """Does the submit marker of a never-stored task exist? One HEAD. (Its key is
        fixed by the document: a task without a task object was never claimed.)"""
        try:
            await self.store.head(self.layout.ready_for(task))
            return True
        except ObjectNotFound:
            return False

    async def _point(
        self, rk: str, task: Task, key: str, s: Scope, ttl: int, fp: str, now: datetime, *, if_etag: str | None
    ) -> Task | None:
        """Point the key at ``task`` (create the record, or replace the version
        ``if_etag``), then store the task. ``None``: another writer changed the record
        first (nothing of ``task`` was written)."""
        record = Record(key=key, scope=s.label, task_id=task.id, fingerprint=fp, created_at=now, touched_at=now,
                        expires_at=now + timedelta(days=ttl), task=task)
        started = _time.monotonic()
        try:
            if if_etag is None:
                written = await put_resolved(self.store, rk, _encode(record), if_none_match=True)
            else:
                written = await put_resolved(self.store, rk, _encode(record), if_match=if_etag)
        except PreconditionFailed:
            return None
        except StorageError as exc:
            exc.task_id = task.id  # type: ignore[attr-defined]
            exc.args = (f"{exc} (idempotency key {key!r} may point at task {task.id}; "
                        "submitting again with the same key completes or returns it)",)
            raise
        return await self._create(task, rk, written.etag, record, timedelta(0), started, safe=False)

    async def _create(
        self, task: Task, rk: str, etag: str, record: Record, age: timedelta, read_at: float, *, safe: bool
    ) -> Task | None:
        """Store the record's task (idempotent: same id, same document) and return it
        as stored. ``None``: the record changed meanwhile; look again.

        Unless the task's ready marker is known to exist (``safe``), a writer that
        reaches this point late — record ``age`` plus the time since it was read at
        least half the grace — first refreshes the record's ``touched_at`` with
        ``If-Match`` on the version it decided on, so no other submit can count the
        record's task as gone while this one writes it.
        """
        elapsed = timedelta(seconds=_time.monotonic() - read_at)
        if not safe and age + elapsed >= self.grace / 2:
            touched = replace(record, touched_at=await self.protocol.time())
            try:
                await put_resolved(self.store, rk, _encode(touched), if_match=etag)
            except PreconditionFailed:
                return None
        _, created = await self.protocol.insert(task)
        if created:
            return task
        loaded = await self.protocol.load(task.id, task.shard)
        return loaded[0] if loaded is not None else task
