"""Submitting tasks: validation of every option, payload offload, idempotency, bulk.

:meth:`Queue.submit` and :meth:`Queue.submit_many` are thin calls into
:class:`Submitter`; every check runs before anything is written.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Sequence

from . import _transitions as tr
from . import _validate as v
from . import config as cfg
from ._idempotency import IdempotencyStore, check_key, check_ttl_days, fingerprint, resolve_scope
from ._ids import new_task_id
from ._tasks import TaskProtocol
from ._time import parse_when, to_ms
from .errors import StorageError, ValidationError
from .models import RetryPolicy, Task

#: concurrent writes of :meth:`Submitter.submit_many`
BULK_CONCURRENCY = 32


@dataclass(frozen=True, slots=True)
class SubmitOptions:
    """Validated options of one submit (see :meth:`Queue.submit` for their meaning)."""

    timeout_seconds: int = cfg.DEFAULT_TIMEOUT_SECONDS
    max_retries: int = cfg.DEFAULT_MAX_RETRIES
    retry_policy: RetryPolicy | None = None
    schedule_at: datetime | None = None
    max_reschedules: int | None = None
    ttl_seconds: float | None = None
    expires_at: datetime | None = None
    idempotency_key: str | None = None
    idempotency_ttl_days: int = cfg.DEFAULT_IDEMPOTENCY_TTL_DAYS
    idempotency_scope: str | None = None
    payload_threshold_bytes: int = cfg.PAYLOAD_THRESHOLD_BYTES


def check_options(
    timeout_seconds: Any = cfg.DEFAULT_TIMEOUT_SECONDS,
    max_retries: Any = cfg.DEFAULT_MAX_RETRIES,
    retry_policy: Any = None,
    schedule_at: Any = None,
    max_reschedules: Any = None,
    ttl_seconds: Any = None,
    expires_at: Any = None,
    idempotency_key: Any = None,
    idempotency_ttl_days: Any = None,
    idempotency_scope: Any = None,
    use_payload_refs: Any = False,
    payload_ref_threshold_bytes: Any = None,
) -> SubmitOptions:
    """Check every submit option; returns them normalised.

    Raises:
        ValidationError: names the field and the rule; nothing is written.
    """
    v.int_in_range(timeout_seconds, "timeout_seconds", 1, cfg.MAX_TIMEOUT_SECONDS)
    v.int_in_range(max_retries, "max_retries", 0, cfg.MAX_RETRIES_LIMIT)
    if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
        raise ValidationError("retry_policy", "must be a buquet.RetryPolicy or None")
    when = parse_when("schedule_at", schedule_at) if schedule_at is not None else None
    if max_reschedules is not None:
        v.int_in_range(max_reschedules, "max_reschedules", 0, 10**6)
    if ttl_seconds is not None:
        cfg.finite_number(ttl_seconds, "ttl_seconds", 0, 10 * 365 * 24 * 3600)
    deadline = parse_when("expires_at", expires_at) if expires_at is not None else None
    if idempotency_key is not None:
        check_key(idempotency_key)
    ttl_days = check_ttl_days(idempotency_ttl_days)
    if idempotency_scope is not None:
        resolve_scope(idempotency_scope, "any")
    if not isinstance(use_payload_refs, bool):
        raise ValidationError("use_payload_refs", f"must be True or False, got {use_payload_refs!r}")
    threshold = cfg.PAYLOAD_THRESHOLD_BYTES
    if use_payload_refs and payload_ref_threshold_bytes is not None:
        threshold = v.int_in_range(payload_ref_threshold_bytes, "payload_ref_threshold_bytes", 0, cfg.PAYLOAD_THRESHOLD_BYTES)
    return SubmitOptions(
        timeout_seconds=timeout_seconds, max_retries=max_retries, retry_policy=retry_policy, schedule_at=when,
        max_reschedules=max_reschedules, ttl_seconds=ttl_seconds, expires_at=deadline,
        idempotency_key=idempotency_key, idempotency_ttl_days=ttl_days, idempotency_scope=idempotency_scope,
        payload_threshold_bytes=threshold,
    )


def check_input(task_type: Any, input: Any) -> str:
    """Check a task type and input; returns the input's compact JSON.

    Raises:
        ValidationError: bad type, non-JSON input, or input over
            :data:`~buquet.config.MAX_PAYLOAD_BYTES`.
    """
    v.task_type(task_type)
    encoded = v.json_value(input, "input")
    if len(encoded.encode()) > cfg.MAX_PAYLOAD_BYTES:
        raise ValidationError(
            "input", f"is {len(encoded.encode()):,} bytes of JSON; the limit is {cfg.MAX_PAYLOAD_BYTES:,} "
            "(store large data elsewhere and pass a reference)")
    return encoded


class Submitter:
    """Writes new tasks through the protocol: offloads large inputs, applies
    deadlines and idempotency keys."""

    def __init__(self, protocol: TaskProtocol) -> None:
        self.protocol = protocol
        self._idempotency: IdempotencyStore | None = None

    async def submit(self, task_type: str, input: Any, opts: SubmitOptions, encoded: str) -> Task:
        """Store one task (arguments already checked). See :meth:`Queue.submit`.

        S3: 2 PUTs; +1 PUT payload object for a large input; +1 PUT expiry entry with a
        deadline; +1 PUT idempotency record with a key (a reuse: 2 GETs, no write).
        """
        now = await self.protocol.time()
        task = await self._build(task_type, input, opts, encoded, now)
        if opts.idempotency_key is not None:
            if self._idempotency is None:
                self._idempotency = IdempotencyStore(self.protocol)
            stored = await self._idempotency.submit_once(
                task, key=opts.idempotency_key, scope=opts.idempotency_scope, ttl_days=opts.idempotency_ttl_days,
                fingerprint=fingerprint(input), now=now,  # the full input, also when offloaded
            )
            if stored.id != task.id and task.input_ref is not None:
                await self.protocol.store.delete(task.input_ref)  # our payload went unused
            return stored
        stored, _ = await self.protocol.insert(task)
        return stored

    async def _build(self, task_type: str, input: Any, opts: SubmitOptions, encoded: str, now: datetime) -> Task:
        """The new Pending task; a large input is written to its payload object first
        (a crash after that leaves an orphan payload, never a task without input)."""
        tid = new_task_id(to_ms(now))
        available_at = max(opts.schedule_at, now) if opts.schedule_at is not None else now
        deadline = opts.expires_at
        if opts.ttl_seconds is not None:
            deadline = now + timedelta(seconds=opts.ttl_seconds)
        extra: dict[str, Any] = {"max_reschedules": opts.max_reschedules, "expires_at": deadline}
        if len(encoded.encode()) > opts.payload_threshold_bytes:
            try:
                extra["input_ref"] = await self.protocol.payloads.write_payload(tid, "input", input)
            except StorageError as exc:
                exc.task_id = tid  # type: ignore[attr-defined]
                raise
            input = None
        return tr.new_pending(
            tid, task_type, input, shard=self.protocol.shard_of(tid), timeout_seconds=opts.timeout_seconds,
            max_retries=opts.max_retries, retry_policy=opts.retry_policy, available_at=available_at, now=now, **extra,
        )

    async def submit_many(self, items: Sequence[tuple[str, Any]], opts: SubmitOptions) -> list[Task]:
        """Store one task per ``(task_type, input)`` pair, in input order, with
        ``BULK_CONCURRENCY`` writes in flight. Every pair is checked before anything is
        written. On a failure the first error is raised after every write has ended;
        the tasks that were written stay valid (each is complete on its own)."""
        checked = [(t, i, check_input(t, i)) for t, i in items]
        sem = asyncio.Semaphore(BULK_CONCURRENCY)

        async def one(task_type: str, input: Any, encoded: str) -> Task:
            async with sem:
                return await self.submit(task_type, input, opts, encoded)

        results = await asyncio.gather(*(one(*c) for c in checked), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return list(results)  # type: ignore[arg-type]


def check_items(tasks: Any) -> list[tuple[str, Any]]:
    """``submit_many``'s first argument: any sequence of ``(task_type, input)`` pairs.

    Raises:
        TypeError: an item is not a tuple (``"Each item must be a tuple of (task_type,
            input)"``). ValidationError: a tuple of another length (``"Each tuple must
            have exactly 2 elements"``; also a ``ValueError``).
    """
    if isinstance(tasks, (str, bytes)) or not isinstance(tasks, Sequence):
        raise TypeError("tasks must be a sequence of (task_type, input) tuples")
    out: list[tuple[str, Any]] = []
    for item in tasks:
        if not isinstance(item, tuple):
            raise TypeError("Each item must be a tuple of (task_type, input)")
        if len(item) != 2:
            raise ValidationError("tasks", "Each tuple must have exactly 2 elements")
        out.append((item[0], item[1]))
    return out
