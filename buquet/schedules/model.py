"""Schedule data types: the definition, its run state, what a caller sees of its runs.

``to_dict``/``from_dict`` give the stored JSON shapes; ``from_dict`` checks every
field's type and raises :class:`~buquet.ValidationError` naming the field, which
:func:`buquet._codec.decode_with` turns into :class:`~buquet.errors.CorruptObject`.
No storage here (that is :mod:`buquet.schedules.store`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from .. import _validate as v
from .._time import from_rfc3339, to_rfc3339
from ..errors import ValidationError
from ..models import RetryPolicy
from .cron import (
    DEFAULT_MISFIRE_GRACE_SECONDS,
    MAX_CATCH_UP_LIMIT,
    CatchUpPlan,
    as_utc,
    check_timezone,
    cron_spec,
    normalize_cron,
    plan_catch_up,
)

#: ``ScheduleLastRun.last_run_kind`` values
RUN_KINDS = ("slot", "trigger")


class CatchUp(str, enum.Enum):
    """What a schedule does with slots that came due while no scheduler ran (an
    outage, a deploy, a Lambda that was not invoked).

    * ``LATEST`` (default) — run the latest missed slot once; older missed slots are
      skipped. A job that reports "the state as of now" wants this.
    * ``ALL`` — run every missed slot, oldest first, but at most
      ``Schedule.catch_up_limit`` of them (the latest ones); older ones are skipped.
      Per-period jobs (one report per hour) want this. Never an unbounded flood.
    * ``SKIP`` — run no missed slot: a slot runs only if a scheduler reaches it within
      the misfire grace (``DEFAULT_MISFIRE_GRACE_SECONDS``, 120 s) of its time.

    In every policy a slot runs at most once, and slots that passed while the schedule
    was disabled (or before it was created) never run.
    """

    LATEST = "latest"
    ALL = "all"
    SKIP = "skip"

    def __str__(self) -> str:
        return self.value


def _catch_up(value: Any) -> CatchUp:
    if isinstance(value, CatchUp):
        return value
    try:
        return CatchUp(value)
    except (ValueError, TypeError):
        raise ValidationError("catch_up", f"must be one of {[c.value for c in CatchUp]}, got {value!r}") from None


def _timestamp(data: dict[str, Any], name: str, required: bool) -> datetime | None:
    """A stored RFC 3339 field; ValidationError naming it when missing or malformed."""
    raw = data.get(name)
    if raw is None:
        if required:
            raise ValidationError(name, "is missing")
        return None
    if not isinstance(raw, str):
        raise ValidationError(name, f"must be an RFC 3339 timestamp string, got {type(raw).__name__}")
    try:
        return from_rfc3339(raw)
    except (ValueError, OverflowError):
        raise ValidationError(name, f"must be an RFC 3339 timestamp with a UTC offset, got {raw!r}") from None


def _optional_str(data: dict[str, Any], name: str) -> str | None:
    raw = data.get(name)
    if raw is not None and not isinstance(raw, str):
        raise ValidationError(name, f"must be a string, got {type(raw).__name__}")
    return raw


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron schedule, as stored in ``schedules/defs/<id>.json``.

    Create one with :meth:`Queue.create_schedule`; constructing it directly validates
    every field the same way.

    Attributes:
        id: the schedule's name, 1–128 of ``[A-Za-z0-9_.-]`` starting with a letter or
            digit (it is part of object keys).
        task_type: the task type each run submits.
        input: the JSON input every run's task gets.
        cron: the cron expression as given (whitespace normalised, aliases lowercased);
            see :func:`~buquet.schedules.cron.normalize_cron`.
        enabled: whether the scheduler fires it.
        created_at: when it was created (aware UTC, store time). Slots at or before
            this instant never run: a new schedule first fires at its next slot.
        timezone: IANA zone the cron fields are read in (default ``"UTC"``).
        updated_at: last change of the definition (aware UTC).
        enabled_at: when it was last enabled (its creation time if never re-enabled).
            Slots at or before this instant never run, so re-enabling a schedule does
            not replay the slots it missed while disabled.
        timeout_seconds / max_retries / retry_policy: options of the submitted tasks,
            as in :meth:`Queue.submit`.
        catch_up: the :class:`CatchUp` policy for slots missed while no scheduler ran.
        catch_up_limit: with ``CatchUp.ALL``, the most missed slots run at once (1–1000).

    Raises:
        ValidationError: any field out of range (names the field).
    """

    id: str
    task_type: str
    input: Any
    cron: str
    enabled: bool
    created_at: datetime
    timezone: str = "UTC"
    updated_at: datetime | None = None
    enabled_at: datetime | None = None
    timeout_seconds: int = 300
    max_retries: int = 3
    retry_policy: RetryPolicy | None = None
    catch_up: CatchUp = CatchUp.LATEST
    catch_up_limit: int = 10

    def __post_init__(self) -> None:
        v.name(self.id, "id")
        v.task_type(self.task_type)
        v.json_value(self.input, "input")
        object.__setattr__(self, "cron", normalize_cron(self.cron))
        if not isinstance(self.enabled, bool):
            raise ValidationError("enabled", f"must be True or False, got {self.enabled!r}")
        created = as_utc(self.created_at, "created_at")
        object.__setattr__(self, "created_at", created)
        check_timezone(self.timezone)
        object.__setattr__(self, "updated_at", as_utc(self.updated_at, "updated_at") if self.updated_at is not None else created)
        object.__setattr__(self, "enabled_at", as_utc(self.enabled_at, "enabled_at") if self.enabled_at is not None else created)
        v.int_in_range(self.timeout_seconds, "timeout_seconds", 1, v.MAX_TIMEOUT_SECONDS)
        v.int_in_range(self.max_retries, "max_retries", 0, v.MAX_RETRIES_LIMIT)
        if self.retry_policy is not None and not isinstance(self.retry_policy, RetryPolicy):
            raise ValidationError("retry_policy", "must be a buquet.RetryPolicy or None")
        object.__setattr__(self, "catch_up", _catch_up(self.catch_up))
        v.int_in_range(self.catch_up_limit, "catch_up_limit", 1, MAX_CATCH_UP_LIMIT)

    # ---------------------------------------------------------------- slots
    @property
    def floor(self) -> datetime:
        """Slots at or before this instant never run: ``max(created_at, enabled_at)``."""
        assert self.enabled_at is not None
        return max(self.created_at, self.enabled_at)

    def next_slot(self, after: datetime) -> datetime | None:
        """The first slot strictly after the aware datetime ``after`` (aware UTC), or
        ``None`` if the expression never matches again. Pure computation, no request;
        ignores ``enabled``. Raises ValidationError for a naive ``after``."""
        return cron_spec(self.cron, self.timezone).next_after(as_utc(after, "after"))

    def slots_between(self, after: datetime, until: datetime, limit: int = 1000) -> list[datetime]:
        """The slots in (``after``, ``until``], ascending, as aware UTC datetimes; at
        most ``limit`` (1–100000, the earliest ones). Pure computation, no request.

        A slot is the UTC instant of one scheduled run; the cron fields are matched
        against wall-clock time in :attr:`timezone`. Around daylight-saving changes
        (cron(8)'s rules): if the minute or hour field starts with ``*`` the schedule
        follows elapsed time — wall times skipped by spring-forward do not run, wall
        times repeated by fall-back run on both passes (hourly stays hourly). Any other
        schedule runs each intended local time once: a skipped time (02:30 on
        2026-03-08 in America/New_York) runs at the first instant after the gap
        (03:00 EDT = 07:00Z), a repeated time (01:30 on 2026-11-01) on its first pass
        only (01:30 EDT = 05:30Z). Slots on the same instant are one slot.

        Raises:
            ValidationError: naive datetimes, bad limit.
        """
        v.int_in_range(limit, "limit", 1, 100_000)
        return cron_spec(self.cron, self.timezone).between(as_utc(after, "after"), as_utc(until, "until"), limit)

    # ---------------------------------------------------------------- codec
    def to_dict(self) -> dict[str, Any]:
        """The stored JSON shape (timestamps as RFC 3339 strings)."""
        assert self.updated_at is not None and self.enabled_at is not None
        return {
            "version": 1,
            "id": self.id,
            "task_type": self.task_type,
            "input": self.input,
            "cron": self.cron,
            "timezone": self.timezone,
            "enabled": self.enabled,
            "created_at": to_rfc3339(self.created_at),
            "updated_at": to_rfc3339(self.updated_at),
            "enabled_at": to_rfc3339(self.enabled_at),
            "timeout_seconds": self.timeout_seconds,
            "max_retries": self.max_retries,
            "retry_policy": self.retry_policy.to_dict() if self.retry_policy else None,
            "catch_up": self.catch_up.value,
            "catch_up_limit": self.catch_up_limit,
        }

    @classmethod
    def from_dict(cls, data: Any) -> "Schedule":
        """Build a Schedule from its stored JSON shape, checking every field's type and
        range (absent optional fields take their defaults).

        Raises:
            ValidationError: a missing or invalid field (``field`` names it).
        """
        if not isinstance(data, dict):
            raise ValidationError("schedule", f"must be a JSON object, got {type(data).__name__}")
        for name in ("id", "task_type", "cron", "enabled"):
            if name not in data:
                raise ValidationError(name, "is missing")
        policy = data.get("retry_policy")
        created = _timestamp(data, "created_at", True)
        assert created is not None
        return cls(
            id=data["id"],
            task_type=data["task_type"],
            input=data.get("input"),
            cron=data["cron"],
            enabled=data["enabled"],
            created_at=created,
            timezone=data.get("timezone", "UTC"),
            updated_at=_timestamp(data, "updated_at", False),
            enabled_at=_timestamp(data, "enabled_at", False),
            timeout_seconds=data.get("timeout_seconds", 300),
            max_retries=data.get("max_retries", 3),
            retry_policy=RetryPolicy.from_dict(policy) if policy is not None else None,
            catch_up=data.get("catch_up", CatchUp.LATEST.value),
            catch_up_limit=data.get("catch_up_limit", 10),
        )


@dataclass(frozen=True, slots=True)
class ScheduleLastRun:
    """What a schedule last did and will do next (from ``schedules/runs/<id>.json``).

    Attributes:
        schedule_id: the schedule's id.
        last_run_at: when its latest task was submitted (aware UTC, store time), by the
            scheduler or by :meth:`Queue.trigger_schedule`; ``None`` if it never ran.
        last_task_id: the id of that task, or ``None``.
        next_run_at: the slot the scheduler fires next (aware UTC), computed when read
            from the definition, the slot cursor and the store's clock; in the past if
            the scheduler is behind (it fires that slot at its next tick); ``None``
            while the schedule is disabled or if its cron never matches again.
        last_slot_at: the slot cursor: the latest slot the scheduler has handled
            (fired, or skipped by the catch-up policy); ``trigger_schedule`` never
            moves it. ``None`` before the first slot.
        last_run_kind: ``"slot"`` if the latest task came from a cron slot,
            ``"trigger"`` if from :meth:`Queue.trigger_schedule`, ``None`` if it never
            ran.
    """

    schedule_id: str
    last_run_at: datetime | None
    last_task_id: str | None
    next_run_at: datetime | None
    last_slot_at: datetime | None = None
    last_run_kind: str | None = None


@dataclass(frozen=True, slots=True)
class RunState:
    """A schedule's run state, ``schedules/runs/<id>.json``: the slot cursor and the
    last run. ``etag`` is the stored object's (``None``: there is none yet), so a
    change is written with ``If-Match`` / ``If-None-Match``.

    Attributes:
        etag: ETag of the stored object, or ``None`` when it does not exist.
        incarnation: ``created_at`` (RFC 3339) of the schedule it belongs to; a run
            state of an earlier schedule with the same id (deleted and re-created) is
            read as empty.
        last_slot_at: the slot cursor: every slot up to it is handled.
        last_run_at / last_task_id / last_run_kind: the latest submitted task.
    """

    etag: str | None = None
    incarnation: str | None = None
    last_slot_at: datetime | None = None
    last_run_at: datetime | None = None
    last_task_id: str | None = None
    last_run_kind: str | None = None

    @classmethod
    def from_dict(cls, data: Any, etag: str | None = None) -> "RunState":
        """Parse the stored shape. Raises ValidationError naming a malformed field."""
        if not isinstance(data, dict):
            raise ValidationError("run_state", f"must be a JSON object, got {type(data).__name__}")
        kind = _optional_str(data, "last_run_kind")
        if kind is not None and kind not in RUN_KINDS:
            raise ValidationError("last_run_kind", f"must be one of {list(RUN_KINDS)}, got {kind!r}")
        return cls(
            etag=etag,
            incarnation=_optional_str(data, "incarnation"),
            last_slot_at=_timestamp(data, "last_slot_at", False),
            last_run_at=_timestamp(data, "last_run_at", False),
            last_task_id=_optional_str(data, "last_task_id"),
            last_run_kind=kind,
        )

    def merged(
        self, *, slot: datetime | None, run_at: datetime | None, task_id: str | None, kind: str | None
    ) -> "RunState | None":
        """This state with a run merged in, or ``None`` if nothing changes: the cursor
        only moves forward to ``slot``, the last run is replaced only by a later one."""
        new = self
        if slot is not None and (self.last_slot_at is None or slot > self.last_slot_at):
            new = replace(new, last_slot_at=slot)
        if (
            run_at is not None
            and task_id is not None
            and (self.last_run_at is None or run_at >= self.last_run_at)
            and self.last_task_id != task_id
        ):
            new = replace(new, last_run_at=run_at, last_task_id=task_id, last_run_kind=kind)
        return None if new == self else new

    def to_dict(self, schedule: Schedule, next_run_at: datetime | None, now: datetime) -> dict[str, Any]:
        """The stored shape (``next_run_at`` and ``updated_at`` are informational)."""

        def ts(dt: datetime | None) -> str | None:
            return to_rfc3339(dt) if dt is not None else None

        return {
            "schedule_id": schedule.id,
            "incarnation": to_rfc3339(schedule.created_at),
            "last_slot_at": ts(self.last_slot_at),
            "last_run_at": ts(self.last_run_at),
            "last_task_id": self.last_task_id,
            "last_run_kind": self.last_run_kind,
            "next_run_at": ts(next_run_at),
            "updated_at": to_rfc3339(now),
        }


# ------------------------------------------------------------- pure run planning
def handled_up_to(schedule: Schedule, cursor: datetime | None) -> datetime:
    """The instant up to which the schedule's slots are handled or never run: the
    later of its floor (creation/enable time) and the slot cursor."""
    return max(schedule.floor, cursor) if cursor is not None else schedule.floor


def catch_up_plan(
    schedule: Schedule, cursor: datetime | None, now: datetime, grace_seconds: float = DEFAULT_MISFIRE_GRACE_SECONDS
) -> CatchUpPlan:
    """The schedule's catch-up policy applied to its slots after the cursor up to
    ``now`` (see :func:`~buquet.schedules.cron.plan_catch_up`)."""
    return plan_catch_up(
        cron_spec(schedule.cron, schedule.timezone),
        handled_up_to(schedule, cursor),
        now,
        policy=schedule.catch_up.value,
        limit=schedule.catch_up_limit,
        grace_seconds=grace_seconds,
    )


def next_run_at(schedule: Schedule, cursor: datetime | None, now: datetime) -> datetime | None:
    """The slot a scheduler fires next (``None`` while disabled or if the cron never
    matches again); in the past when the scheduler is behind."""
    if not schedule.enabled:
        return None
    plan = catch_up_plan(schedule, cursor, now)
    return plan.fire[0] if plan.fire else plan.next_slot


__all__ = [
    "CatchUp",
    "RunState",
    "Schedule",
    "ScheduleLastRun",
    "catch_up_plan",
    "handled_up_to",
    "next_run_at",
]
