"""Public data types: :class:`Task`, :class:`TaskStatus`, :class:`RetryPolicy`."""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ._time import from_rfc3339, parse_when, to_rfc3339
from .errors import ValidationError

#: upper bound of ``RetryPolicy.initial_interval_ms`` / ``max_interval_ms`` (30 days)
MAX_RETRY_INTERVAL_MS = 30 * 24 * 3600 * 1000
#: upper bound of ``RetryPolicy.multiplier``
MAX_RETRY_MULTIPLIER = 1000.0


class TaskStatus(str, enum.Enum):
    """Where a task is in its life.

    * ``Pending`` — waiting to be claimed (possibly not before ``available_at``).
    * ``Running`` — claimed by a worker that holds a lease until ``lease_expires_at``.
    * ``Completed`` — the handler returned; ``output`` holds its result. Final.
    * ``Failed`` — a permanent error, or retries used up; ``last_error`` says why. Final.
    * ``Cancelled`` — cancelled while Pending (:meth:`Queue.cancel`), or a Running task
      whose handler honoured :meth:`Queue.request_cancellation`. Final.
    * ``Archived`` — a final task moved out of the way by :meth:`Queue.archive`. Final.
    * ``Expired`` — still Pending when its ``expires_at`` passed (or
      :meth:`Queue.mark_expired`); its handler never ran. Final.

    Values are the lower-case names (``"pending"``), which is also ``str()``; the
    upper-case names (``TaskStatus.PENDING``) are aliases, as in buquet 0.1.0.
    """

    Pending = "pending"
    Running = "running"
    Completed = "completed"
    Failed = "failed"
    Cancelled = "cancelled"
    Archived = "archived"
    Expired = "expired"
    # buquet 0.1.0's spelling (aliases of the members above)
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ARCHIVED = "archived"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        """True for every state but Pending and Running."""
        return self not in (TaskStatus.Pending, TaskStatus.Running)

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"TaskStatus.{self.name.upper()}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter between retries.

    The delay before retry ``n`` (1-based) is
    ``min(max_interval_ms, initial_interval_ms * multiplier ** (n - 1))``, then spread
    uniformly by ±``jitter_percent`` (0.25 = ±25 %) and capped at ``max_interval_ms``.

    Args:
        initial_interval_ms: delay before the first retry, milliseconds (0 to 30 days).
        max_interval_ms: cap on any delay, milliseconds (initial_interval_ms to 30 days).
        multiplier: growth factor per retry (1.0 to 1000).
        jitter_percent: random spread as a fraction, 0.0 to 1.0.

    Raises:
        ValidationError: a value out of range (names the field).
    """

    initial_interval_ms: int = 1000
    max_interval_ms: int = 60000
    multiplier: float = 2.0
    jitter_percent: float = 0.25

    def __post_init__(self) -> None:
        def number(name: str, value: Any, lo: float, hi: float) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValidationError(f"retry_policy.{name}", f"must be a finite number, got {value!r}")
            if not lo <= value <= hi:
                raise ValidationError(f"retry_policy.{name}", f"must be between {lo:g} and {hi:g}, got {value!r}")
            return float(value)

        number("initial_interval_ms", self.initial_interval_ms, 0, MAX_RETRY_INTERVAL_MS)
        number("max_interval_ms", self.max_interval_ms, 0, MAX_RETRY_INTERVAL_MS)
        if self.max_interval_ms < self.initial_interval_ms:
            raise ValidationError("retry_policy.max_interval_ms", "must be >= initial_interval_ms")
        number("multiplier", self.multiplier, 1.0, MAX_RETRY_MULTIPLIER)
        number("jitter_percent", self.jitter_percent, 0.0, 1.0)

    def delay_ms(self, retry_number: int, rng: random.Random | None = None) -> int:
        """Delay in milliseconds before retry ``retry_number`` (1 = first retry), at
        most ``max_interval_ms``. Never overflows: the exponent is capped before it is
        applied, so any retry number is fine."""
        n = max(1, retry_number)
        cap = float(self.max_interval_ms)
        base = float(self.initial_interval_ms)
        if base > 0 and self.multiplier > 1.0:
            # growth needed to reach the cap; past it the delay is the cap anyway
            steps_to_cap = math.log(max(cap / base, 1.0)) / math.log(self.multiplier)
            if n - 1 >= steps_to_cap:
                base = cap
            else:
                base = min(cap, base * self.multiplier ** (n - 1))
        base = min(base, cap)
        if self.jitter_percent:
            spread = base * self.jitter_percent
            base += (rng or random).uniform(-spread, spread)
        return int(max(0.0, min(cap, base)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the four fields."""
        return {
            "initial_interval_ms": self.initial_interval_ms,
            "max_interval_ms": self.max_interval_ms,
            "multiplier": self.multiplier,
            "jitter_percent": self.jitter_percent,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RetryPolicy":
        """Inverse of :meth:`to_dict`. Raises ValidationError."""
        if not isinstance(data, dict):
            raise ValidationError("retry_policy", "must be an object")
        unknown = set(data) - {"initial_interval_ms", "max_interval_ms", "multiplier", "jitter_percent"}
        if unknown:
            raise ValidationError("retry_policy", f"unknown fields {sorted(unknown)}")
        return cls(**data)


DEFAULT_RETRY_POLICY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class Task:
    """A snapshot of one task, as stored in ``tasks/<shard>/<id>.json``.

    Attributes:
        id: the task id, a canonical UUID string (version 7: time-ordered).
        task_type: the handler name (``"send_email"``).
        status: a :class:`TaskStatus`.
        input: the JSON value given to :meth:`Queue.submit`.
        output: the handler's JSON result once Completed, else ``None``.
        created_at / updated_at: aware UTC datetimes (store time).
        retry_count: failed attempts that were retried so far.
        last_error: the error of the latest failed attempt, or ``None``.
        shard: the shard name the task lives in (``"0"``…).
        attempt: attempts started (claims) so far; at most ``max_retries + 1``.
        available_at: not claimed before this time (aware UTC).
        timeout_seconds: handler time limit per attempt.
        max_retries: retries allowed after the first attempt.
        retry_policy: backoff between retries (``None`` = the default policy).
        worker_id: the worker of the latest attempt, or ``None``.
        lease_expires_at: while Running, the lease end (aware UTC).
        completed_at: when the task became Completed or Failed.
        lease_id: the id of the current attempt's lease (new at every claim).
        reschedule_count: times a handler asked to run later (:class:`RescheduleError`).
        max_reschedules: cap on ``reschedule_count`` (``None`` = unlimited).
        cancel_requested: :meth:`Queue.request_cancellation` was called while Running.
        cancelled_at / cancelled_by: when and by whom it was cancelled.
        expires_at: a Pending task not claimed by then is Expired (``None`` = never).
        expired_at: when it was marked Expired.
        input_ref / output_ref: keys of payload objects holding a large input or output
            (then ``input``/``output`` is ``None``; :meth:`Queue.load_input` reads them).
        progress: the handler's last :meth:`TaskContext.report_progress`, while Running
            (``{"percent", "current", "total", "message", "at"}``, keys optional).
        history: every transition, oldest first (see :meth:`Queue.get_history`).

    Timestamps are aware UTC datetimes (``to_dict()`` gives RFC 3339 strings).
    """

    id: str
    task_type: str
    status: TaskStatus
    input: Any
    output: Any
    created_at: datetime
    retry_count: int
    last_error: str | None
    shard: str
    attempt: int
    available_at: datetime
    timeout_seconds: int
    max_retries: int
    retry_policy: RetryPolicy | None
    worker_id: str | None
    lease_expires_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    lease_id: str | None = None
    reschedule_count: int = 0
    max_reschedules: int | None = None
    cancel_requested: bool = False
    cancelled_at: datetime | None = None
    cancelled_by: str | None = None
    expires_at: datetime | None = None
    expired_at: datetime | None = None
    input_ref: str | None = None
    output_ref: str | None = None
    progress: dict[str, Any] | None = field(default=None, compare=False)
    history: tuple[dict[str, Any], ...] = field(default=(), repr=False, compare=False)

    def __repr__(self) -> str:
        return f"Task(id={self.id!r}, type={self.task_type!r}, status={self.status.value})"

    @property
    def policy(self) -> RetryPolicy:
        """The effective retry policy (the default one when none was given)."""
        return self.retry_policy or DEFAULT_RETRY_POLICY

    @property
    def max_attempts(self) -> int:
        """``max_retries + 1``."""
        return self.max_retries + 1

    # ------------------------------------------------------------- helpers
    def can_retry(self) -> bool:
        """``retry_count < max_retries``."""
        return self.retry_count < self.max_retries

    def is_available_at(self, now: datetime | str) -> bool:
        """``now >= available_at`` (``now``: aware datetime or RFC 3339 string)."""
        return _when(now) >= self.available_at

    def is_lease_expired_at(self, now: datetime | str) -> bool:
        """A lease is set and ``now > lease_expires_at``."""
        return self.lease_expires_at is not None and _when(now) > self.lease_expires_at

    def is_timed_out_at(self, now: datetime | str) -> bool:
        """Same as :meth:`is_lease_expired_at` (buquet 0.1.0's name)."""
        return self.is_lease_expired_at(now)

    def is_expired_at(self, now: datetime | str) -> bool:
        """``expires_at`` is set and ``now >= expires_at``."""
        return self.expires_at is not None and _when(now) >= self.expires_at

    # ---------------------------------------------------------- dict shapes
    def to_dict(self) -> dict[str, Any]:
        """buquet 0.1.0's 27 keys, in its order: ``status`` as the lower-case value,
        timestamps as RFC 3339 UTC strings with a ``+00:00`` suffix (``None`` when
        unset). The stored document is :meth:`to_document`."""
        def ts(v: datetime | None) -> str | None:
            return v.astimezone(timezone.utc).isoformat(timespec="milliseconds") if v is not None else None

        return {
            "id": self.id, "shard": self.shard, "task_type": self.task_type, "input": self.input,
            "output": self.output, "status": self.status.value, "timeout_seconds": self.timeout_seconds,
            "max_retries": self.max_retries, "retry_count": self.retry_count,
            "created_at": ts(self.created_at), "available_at": ts(self.available_at),
            "lease_expires_at": ts(self.lease_expires_at), "lease_id": self.lease_id, "attempt": self.attempt,
            "updated_at": ts(self.updated_at), "completed_at": ts(self.completed_at), "worker_id": self.worker_id,
            "last_error": self.last_error, "input_ref": self.input_ref, "output_ref": self.output_ref,
            "reschedule_count": self.reschedule_count, "max_reschedules": self.max_reschedules,
            "cancel_requested": self.cancel_requested, "cancelled_at": ts(self.cancelled_at),
            "cancelled_by": self.cancelled_by, "expires_at": ts(self.expires_at), "expired_at": ts(self.expired_at),
        }

    def to_document(self) -> dict[str, Any]:
        """The stored JSON shape: every field, timestamps as RFC 3339 strings."""
        def ts(v: datetime | None) -> str | None:
            return to_rfc3339(v) if v is not None else None

        doc: dict[str, Any] = {
            "id": self.id,
            "task_type": self.task_type,
            "status": self.status.value,
            "input": self.input,
            "output": self.output,
            "created_at": ts(self.created_at),
            "updated_at": ts(self.updated_at),
            "available_at": ts(self.available_at),
            "retry_count": self.retry_count,
            "last_error": self.last_error,
            "shard": self.shard,
            "attempt": self.attempt,
            "timeout_seconds": self.timeout_seconds,
            "max_retries": self.max_retries,
            "retry_policy": self.retry_policy.to_dict() if self.retry_policy else None,
            "worker_id": self.worker_id,
            "lease_expires_at": ts(self.lease_expires_at),
            "completed_at": ts(self.completed_at),
        }
        optional = {
            "lease_id": self.lease_id, "reschedule_count": self.reschedule_count or None,
            "max_reschedules": self.max_reschedules, "cancel_requested": self.cancel_requested or None,
            "cancelled_at": ts(self.cancelled_at), "cancelled_by": self.cancelled_by,
            "expires_at": ts(self.expires_at), "expired_at": ts(self.expired_at),
            "input_ref": self.input_ref, "output_ref": self.output_ref, "progress": self.progress,
        }
        doc.update({k: val for k, val in optional.items() if val is not None})
        doc["history"] = list(self.history)
        return doc

    @classmethod
    def from_dict(cls, data: Any) -> "Task":
        """Build a Task from its stored JSON shape, checking every field's type.

        Raises:
            ValidationError: a missing or wrongly typed field; ``field`` names it
                (``"available_at"``, ``"history[2]"``, ...).
        """
        if not isinstance(data, dict):
            raise ValidationError("task", f"must be a JSON object, got {type(data).__name__}")
        d = _Fields(data)
        policy = data.get("retry_policy")
        try:
            status = TaskStatus(d.str("status"))
        except ValueError:
            raise ValidationError("status", f"must be one of {[s.value for s in TaskStatus]}, got {data['status']!r}") from None
        history = data.get("history") or []
        if not isinstance(history, list):
            raise ValidationError("history", f"must be a list, got {type(history).__name__}")
        for i, entry in enumerate(history):
            if not isinstance(entry, dict) or not isinstance(entry.get("status"), str) or not isinstance(entry.get("at"), str):
                raise ValidationError(f"history[{i}]", "must be an object with 'status' and 'at' strings")
        return cls(
            id=d.str("id"),
            task_type=d.str("task_type"),
            status=status,
            input=data.get("input"),
            output=data.get("output"),
            created_at=d.time("created_at"),
            updated_at=d.time("updated_at"),
            available_at=d.time("available_at"),
            retry_count=d.int("retry_count", 0),
            last_error=d.str("last_error", optional=True),
            shard=d.str("shard"),
            attempt=d.int("attempt", 0),
            timeout_seconds=d.int("timeout_seconds"),
            max_retries=d.int("max_retries"),
            retry_policy=RetryPolicy.from_dict(policy) if policy is not None else None,
            worker_id=d.str("worker_id", optional=True),
            lease_expires_at=d.time("lease_expires_at", optional=True),
            completed_at=d.time("completed_at", optional=True),
            lease_id=d.str("lease_id", optional=True),
            reschedule_count=d.int("reschedule_count", 0),
            max_reschedules=d.int("max_reschedules", None),
            cancel_requested=d.bool("cancel_requested"),
            cancelled_at=d.time("cancelled_at", optional=True),
            cancelled_by=d.str("cancelled_by", optional=True),
            expires_at=d.time("expires_at", optional=True),
            expired_at=d.time("expired_at", optional=True),
            input_ref=d.str("input_ref", optional=True),
            output_ref=d.str("output_ref", optional=True),
            progress=d.object("progress"),
            history=tuple(history),
        )


def _when(now: datetime | str) -> datetime:
    """An aware datetime from a datetime or RFC 3339 string. Raises ValueError."""
    return parse_when("now", now)


class _Fields:
    """Typed access to a stored JSON object's fields; every getter raises
    ValidationError naming the field."""

    _MISSING = object()

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def _get(self, name: str, optional: bool, default: Any = _MISSING) -> Any:
        value = self.data.get(name, self._MISSING)
        if value is self._MISSING or value is None:
            if default is not self._MISSING:
                return default
            if optional:
                return None
            raise ValidationError(name, "is missing")
        return value

    def str(self, name: str, optional: bool = False) -> Any:
        value = self._get(name, optional)
        if value is not None and not isinstance(value, str):
            raise ValidationError(name, f"must be a string, got {type(value).__name__}")
        return value

    def int(self, name: str, default: Any = _MISSING) -> Any:
        value = self._get(name, False, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValidationError(name, f"must be a non-negative integer, got {value!r}")
        return value

    def bool(self, name: str) -> Any:
        value = self._get(name, False, False)
        if not isinstance(value, bool):
            raise ValidationError(name, f"must be true or false, got {value!r}")
        return value

    def object(self, name: str) -> Any:
        value = self._get(name, True)
        if value is not None and not isinstance(value, dict):
            raise ValidationError(name, f"must be an object, got {type(value).__name__}")
        return value

    def time(self, name: str, optional: bool = False) -> Any:
        value = self._get(name, optional)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValidationError(name, f"must be an RFC 3339 timestamp string, got {type(value).__name__}")
        try:
            return from_rfc3339(value)
        except (ValueError, OverflowError):
            raise ValidationError(name, f"must be an RFC 3339 timestamp with a UTC offset, got {value!r}") from None
