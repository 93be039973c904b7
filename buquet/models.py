"""Public data types: :class:`Task`, :class:`TaskStatus`, :class:`RetryPolicy`."""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ._time import from_rfc3339, to_rfc3339
from .errors import ValidationError


class TaskStatus(str, enum.Enum):
    """Where a task is in its life.

    * ``Pending`` — waiting to be claimed (possibly not before ``available_at``).
    * ``Running`` — claimed by a worker that holds a lease until ``lease_expires_at``.
    * ``Completed`` — the handler returned; ``output`` holds its result. Final.
    * ``Failed`` — a permanent error, or retries used up; ``last_error`` says why. Final.
    * ``Archived`` — a final task moved out of the way by :meth:`Queue.archive`. Final.
    """

    Pending = "pending"
    Running = "running"
    Completed = "completed"
    Failed = "failed"
    Archived = "archived"

    @property
    def is_final(self) -> bool:
        """True for Completed, Failed and Archived."""
        return self in (TaskStatus.Completed, TaskStatus.Failed, TaskStatus.Archived)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter between retries.

    The delay before retry ``n`` (1-based) is
    ``min(max_interval_ms, initial_interval_ms * multiplier ** (n - 1))``, then spread
    uniformly by ±``jitter_percent`` (0.25 = ±25 %) and capped at ``max_interval_ms``.

    Args:
        initial_interval_ms: delay before the first retry, milliseconds (≥ 0).
        max_interval_ms: cap on any delay, milliseconds (≥ initial_interval_ms).
        multiplier: growth factor per retry (≥ 1.0).
        jitter_percent: random spread as a fraction, 0.0 to 1.0.

    Raises:
        ValidationError: a value out of range (names the field).
    """

    initial_interval_ms: int = 1000
    max_interval_ms: int = 60000
    multiplier: float = 2.0
    jitter_percent: float = 0.25

    def __post_init__(self) -> None:
        def number(name: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValidationError(f"retry_policy.{name}", f"must be a finite number, got {value!r}")
            return float(value)

        if number("initial_interval_ms", self.initial_interval_ms) < 0:
            raise ValidationError("retry_policy.initial_interval_ms", "must be >= 0")
        if number("max_interval_ms", self.max_interval_ms) < self.initial_interval_ms:
            raise ValidationError("retry_policy.max_interval_ms", "must be >= initial_interval_ms")
        if number("multiplier", self.multiplier) < 1.0:
            raise ValidationError("retry_policy.multiplier", "must be >= 1.0")
        if not 0.0 <= number("jitter_percent", self.jitter_percent) <= 1.0:
            raise ValidationError("retry_policy.jitter_percent", "must be between 0.0 and 1.0")

    def delay_ms(self, retry_number: int, rng: random.Random | None = None) -> int:
        """Delay in milliseconds before retry ``retry_number`` (1 = first retry)."""
        n = max(1, retry_number)
        base = min(float(self.max_interval_ms), self.initial_interval_ms * self.multiplier ** (n - 1))
        if self.jitter_percent:
            spread = base * self.jitter_percent
            base += (rng or random).uniform(-spread, spread)
        return int(max(0.0, min(float(self.max_interval_ms), base)))

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


def _dt(value: str | None) -> datetime | None:
    return from_rfc3339(value) if value else None


@dataclass(frozen=True, slots=True)
class Task:
    """A snapshot of one task, as stored in ``tasks/<shard>/<id>.json``.

    Attributes:
        id: 32 lowercase hex characters.
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
        completed_at: when the task reached a final state.
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
    history: tuple[dict[str, Any], ...] = field(default=(), repr=False, compare=False)

    @property
    def policy(self) -> RetryPolicy:
        """The effective retry policy (the default one when none was given)."""
        return self.retry_policy or DEFAULT_RETRY_POLICY

    @property
    def max_attempts(self) -> int:
        """``max_retries + 1``."""
        return self.max_retries + 1

    def to_dict(self) -> dict[str, Any]:
        """The stored JSON shape (timestamps as RFC 3339 strings)."""
        def ts(v: datetime | None) -> str | None:
            return to_rfc3339(v) if v is not None else None

        return {
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
            "history": list(self.history),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Task":
        """Build a Task from its stored JSON shape. Raises KeyError/ValueError on
        malformed documents."""
        return cls(
            id=data["id"],
            task_type=data["task_type"],
            status=TaskStatus(data["status"]),
            input=data.get("input"),
            output=data.get("output"),
            created_at=from_rfc3339(data["created_at"]),
            updated_at=from_rfc3339(data["updated_at"]),
            available_at=from_rfc3339(data["available_at"]),
            retry_count=int(data.get("retry_count", 0)),
            last_error=data.get("last_error"),
            shard=str(data["shard"]),
            attempt=int(data.get("attempt", 0)),
            timeout_seconds=int(data["timeout_seconds"]),
            max_retries=int(data["max_retries"]),
            retry_policy=RetryPolicy.from_dict(data["retry_policy"]) if data.get("retry_policy") else None,
            worker_id=data.get("worker_id"),
            lease_expires_at=_dt(data.get("lease_expires_at")),
            completed_at=_dt(data.get("completed_at")),
            history=tuple(data.get("history") or ()),
        )
