"""Cron schedules: definitions, run state and the per-slot ledger, all in the bucket.

A schedule turns a 5-field cron expression, evaluated in an IANA time zone, into
*slots*: the UTC instants at which it should run. The scheduler
(:mod:`buquet.scheduler`) submits one task per slot; this module holds the data types,
the slot arithmetic and the :class:`~buquet.Queue` methods. See ``docs/schedules.md``.

Object layout (under the queue's key prefix)::

    schedules/defs/<id>.json                  the definition (Schedule); created with
                                              If-None-Match: *, changed with If-Match
    schedules/runs/<id>.json                  run state: the slot cursor and the last run
                                              (ScheduleLastRun); changed with If-Match
    schedules/slots/<id>/<YYYYMMDDTHHMMSSZ>.json
                                              the slot ledger: one object per fired slot,
                                              created with If-None-Match: * *before* the
                                              task is submitted; it names the task id

**Exactly one task per slot.** The scheduler that creates a slot's ledger object
(``If-None-Match: *``) is the only one that submits the slot's task; every other
scheduler's create fails with 412 and it moves on. The task id is derived from
(prefix, schedule id, schedule creation time, slot), so even a recovery that
resubmits a slot whose claimer died after the claim writes the *same* task object
(``If-None-Match: *`` again): at most one task exists per slot however many schedulers,
retries or duplicate Lambda invocations race. That argument needs a store whose
conditional writes are atomic (AWS S3, R2, MinIO, the in-memory and local stores).

**Time zones and daylight saving** (cron(8)'s rules, see :meth:`Schedule.slots_between`):
cron fields are matched against local wall-clock time. A schedule whose minute or hour
field starts with ``*`` (``@hourly``, ``*/15 * * * *``, ``0 * * * *``) follows elapsed
time: wall times skipped by a spring-forward change do not run, repeated wall times of a
fall-back change run on both passes. Every other schedule (fixed times such as
``30 2 * * *``) runs each intended local time once: a time skipped by spring-forward
runs at the first instant after the gap (02:30 → 03:00 local), a repeated time runs on
its first pass only. Slots that land on the same UTC instant are one slot.

**S3 requests** (details in ``docs/schedules.md``): a warm scheduler's tick in which no
slot is due costs one LIST of ``schedules/defs/`` (one per 1,000 schedules) and nothing
else; a cold tick adds one GET per definition and one GET of the run state per
schedule. Firing a slot costs one GET (run state) and four PUTs (ledger, ready marker,
task, run state), plus at most one LIST and one DeleteObjects per schedule per hour to
prune ledger entries older than :data:`LEDGER_RETENTION`.
"""

from __future__ import annotations

import builtins
import collections
import enum
import functools
import hashlib
import heapq
import json
import logging
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from . import _validate as v
from ._time import from_rfc3339, to_ms, to_rfc3339
from .errors import (
    ObjectNotFound,
    PreconditionFailed,
    ScheduleExists,
    ScheduleNotFound,
    StorageError,
    ValidationError,
)
from .models import RetryPolicy, Task

if TYPE_CHECKING:
    from .storage.base import ObjectStore

log = logging.getLogger("buquet.schedules")

UTC = timezone.utc

#: ledger objects of slots older than this are pruned (they only guard against a
#: scheduler that stalls longer than this between reading the run state and claiming)
LEDGER_RETENTION = timedelta(days=2)
#: a ledger claim whose task does not exist after this many seconds is recovered: the
#: claimer died between the claim and the submit, so another scheduler submits it
DEFAULT_RECOVERY_SECONDS = 30.0
#: with ``CatchUp.SKIP`` a slot still runs if the scheduler reaches it this late
DEFAULT_MISFIRE_GRACE_SECONDS = 120.0
#: ``catch_up_limit`` bounds
MAX_CATCH_UP_LIMIT = 1000
#: at most this many due slots are enumerated one by one; beyond that (a long outage
#: of a frequent schedule) only the latest ones are computed
_SCAN_LIMIT = 200

_CRON_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
_TOKEN_SPLIT = re.compile(r"[,\-/#]")
_ZONE_KEY_RE = re.compile(r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*$")
_HOST_DEPENDENT_ZONES = {"localtime", "posixrules", "Factory"}
_SLOT_FMT = "%Y%m%dT%H%M%SZ"


# ------------------------------------------------------------------------- policy
class CatchUp(str, enum.Enum):
    """What a schedule does with slots that came due while no scheduler ran (an
    outage, a deploy, a Lambda that was not invoked).

    * ``LATEST`` (default) — run the latest missed slot once; older missed slots are
      skipped. A job that reports "the state as of now" wants this.
    * ``ALL`` — run every missed slot, oldest first, but at most
      ``Schedule.catch_up_limit`` of them (the latest ones); older ones are skipped.
      Per-period jobs (one report per hour) want this. Never an unbounded flood.
    * ``SKIP`` — run no missed slot: a slot runs only if a scheduler reaches it within
      the misfire grace (:data:`DEFAULT_MISFIRE_GRACE_SECONDS`, 120 s) of its time.

    In every policy a slot runs at most once, and slots that passed while the schedule
    was disabled (or before it was created) never run.
    """

    LATEST = "latest"
    ALL = "all"
    SKIP = "skip"

    def __str__(self) -> str:
        return self.value


# ---------------------------------------------------------------------- validation
def normalize_cron(expr: Any, field: str = "cron") -> str:
    """Check a cron expression and return it with whitespace normalised.

    Accepted: standard 5-field cron (minute hour day-of-month month day-of-week) as
    croniter reads it — ranges ``1-5``, lists ``1,15``, steps ``*/10``, month and day
    names (``jan``, ``mon-fri``), ``0`` and ``7`` for Sunday, ``L`` (last day of the
    month), ``1#2`` (second Monday) — and the aliases ``@hourly``, ``@daily``
    (``@midnight``), ``@weekly``, ``@monthly``, ``@yearly`` (``@annually``). When both
    day-of-month and day-of-week are restricted, a day matching *either* runs (cron's
    rule).

    Rejected: a seconds or year column (6 or 7 fields), croniter's random ``R`` and
    hashed ``H`` extensions (different schedulers would compute different slots),
    out-of-range values, impossible dates (``0 0 31 2 *``), ``@reboot``.

    Raises:
        ValidationError: the expression is not valid (names ``field``).
    """
    if not isinstance(expr, str):
        raise ValidationError(field, f"must be a string such as '0 9 * * 1-5', got {type(expr).__name__}")
    text = " ".join(expr.split())
    if not text:
        raise ValidationError(field, "must not be empty (for example '0 9 * * 1-5' or '@daily')")
    if text.startswith("@"):
        if text.lower() not in _CRON_ALIASES:
            raise ValidationError(
                field, f"unknown alias {text!r}; use one of {sorted(_CRON_ALIASES)} or 5 fields"
            )
        return text.lower()
    fields = text.split(" ")
    if len(fields) != 5:
        raise ValidationError(
            field,
            f"{text!r} has {len(fields)} fields; standard cron has exactly 5: minute hour "
            "day-of-month month day-of-week (no seconds or year column)",
        )
    for name, part in zip(_FIELD_NAMES, fields):
        for token in _TOKEN_SPLIT.split(part.upper()):
            if token == "R" or token.startswith(("R(", "H")):
                raise ValidationError(
                    field,
                    f"{text!r}: the {name} field uses croniter's random/hashed extension "
                    f"{part!r}, which is not standard cron",
                )
    try:
        croniter.expand(text, strict=True)
        croniter(text, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterError as exc:
        raise ValidationError(field, f"{text!r} is not a valid cron expression: {exc}") from None
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValidationError(field, f"{text!r} is not a valid cron expression: {exc}") from None
    return text


def _expand_alias(cron: str) -> str:
    return _CRON_ALIASES.get(cron, cron)


def check_timezone(name: Any, field: str = "timezone") -> str:
    """Check an IANA time zone name (``"UTC"``, ``"Europe/London"``,
    ``"America/New_York"``) and return it.

    Zone data comes from the system tz database or the ``tzdata`` package; every
    scheduler host should have the same version. ``localtime``, ``posixrules`` and
    ``Factory`` are refused: they mean different things on different hosts.

    Raises:
        ValidationError: not a string, or no such zone (names ``field``).
    """
    if not isinstance(name, str):
        raise ValidationError(field, f"must be an IANA time zone name such as 'Europe/London', got {type(name).__name__}")
    if not name or not _ZONE_KEY_RE.match(name) or name in _HOST_DEPENDENT_ZONES:
        raise ValidationError(
            field, f"{name!r} is not an IANA time zone name (for example 'UTC', 'Europe/London', 'America/New_York')"
        )
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(
            field, f"unknown time zone {name!r} (use an IANA name such as 'UTC', 'Europe/London', 'America/New_York')"
        ) from None
    return name


def _aware(value: Any, field: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(field, f"must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


# ------------------------------------------------------------------- slot arithmetic
class _CronSpec:
    """A cron expression in a zone, turned into UTC slot instants (internal).

    Iterates naive local wall-clock times with croniter (pure calendar arithmetic, no
    time zone involved) and maps each to UTC with the DST rules in the module docstring.
    croniter's own zone handling is not used: on a fall-back day it fires a fixed-time
    schedule on both passes of the repeated hour (see tests/test_scheduler_dst.py).
    """

    __slots__ = ("expr", "zone", "elapsed")

    def __init__(self, cron: str, tz: str) -> None:
        self.expr = _expand_alias(cron)
        self.zone = ZoneInfo(tz)
        minute, hour = self.expr.split(" ")[:2]
        # cron(8): "jobs specified with wildcards [in the minute or hour field] run
        # based on the new time" — they follow elapsed time across DST changes.
        self.elapsed = minute.startswith("*") or hour.startswith("*")

    def _offset(self, instant: datetime) -> timedelta:
        off = instant.astimezone(self.zone).utcoffset()
        assert off is not None
        return off

    def _gap_end(self, lo: datetime, hi: datetime) -> datetime:
        """The first instant (whole seconds) in (lo, hi] whose UTC offset differs from
        lo's: the end of a spring-forward gap."""
        base = self._offset(lo)
        while hi - lo > timedelta(seconds=1):
            mid = lo + timedelta(seconds=int((hi - lo).total_seconds()) // 2)
            if self._offset(mid) == base:
                lo = mid
            else:
                hi = mid
        return hi

    def _instances(self, local: datetime) -> tuple[builtins.list[datetime], datetime]:
        """UTC instants a naive local wall time runs at, and a sort key that never
        decreases as ``local`` grows (the earliest instant it can map to)."""
        u0 = local.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        u1 = local.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        if u0 == u1:
            return [u0], u0
        if u0 < u1:  # repeated by a fall-back change: fold=0 is the first pass
            return ([u0, u1] if self.elapsed else [u0]), u0
        # skipped by a spring-forward change (PEP 495: fold=1 maps before the gap end)
        end = self._gap_end(u1, u0)
        return ([] if self.elapsed else [end]), end

    def iter_after(self, after: datetime) -> Iterator[datetime]:
        """Slots strictly after ``after``, ascending, deduplicated (aware UTC)."""
        after = after.astimezone(UTC)
        loc = after.astimezone(self.zone)
        start = loc.replace(tzinfo=None, fold=0)
        if loc.fold == 0:
            second_pass = loc.replace(fold=1).astimezone(UTC)
            if second_pass > after:
                # ``after`` is on the first pass of a repeated interval: wall times
                # before it still have second-pass instants after it
                start -= second_pass - after
        it = croniter(self.expr, start)
        heap: builtins.list[datetime] = []
        last = after
        while True:
            try:
                local = it.get_next(datetime)
            except CroniterError:
                break  # no further match within croniter's search horizon
            instants, key = self._instances(local)
            while heap and heap[0] <= key:
                x = heapq.heappop(heap)
                if x > last:
                    last = x
                    yield x
            for x in instants:
                if x > last:
                    heapq.heappush(heap, x)
        while heap:
            x = heapq.heappop(heap)
            if x > last:
                last = x
                yield x

    def next_after(self, after: datetime) -> datetime | None:
        """The first slot strictly after ``after``, or ``None`` if there is none."""
        return next(self.iter_after(after), None)

    def between(self, after: datetime, until: datetime, limit: int) -> builtins.list[datetime]:
        """Slots in (after, until], ascending, at most ``limit`` (the earliest)."""
        out: builtins.list[datetime] = []
        for s in self.iter_after(after):
            if s > until or len(out) >= limit:
                break
            out.append(s)
        return out

    def latest(self, floor: datetime, until: datetime, n: int) -> builtins.list[datetime]:
        """The latest ``n`` slots in (floor, until], ascending. Looks back in growing
        windows, so the cost depends on ``n`` and the schedule's spacing, not on how
        far back ``floor`` lies."""
        span = timedelta(minutes=10)
        while True:
            start = max(floor, until - span)
            tail: collections.deque[datetime] = collections.deque(maxlen=n)
            for s in self.iter_after(start):
                if s > until:
                    break
                tail.append(s)
            if len(tail) >= n or start == floor or span > timedelta(days=366 * 100):
                return builtins.list(tail)
            span *= 8


@functools.lru_cache(maxsize=4096)
def _spec(cron: str, tz: str) -> _CronSpec:
    return _CronSpec(cron, tz)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a tick should do for one schedule (internal)."""

    fire: builtins.list[datetime]  # slots to run now, oldest first
    due: int  # due slots found (a lower bound when ``capped``)
    capped: bool
    last_due: datetime | None  # the latest due slot
    next_slot: datetime | None  # the first slot after ``now``

    @property
    def skipped(self) -> int:
        return self.due - len(self.fire)


def _plan(schedule: "Schedule", floor: datetime, now: datetime, grace_seconds: float) -> _Plan:
    """Apply the schedule's catch-up policy to the slots in (floor, now]."""
    spec = _spec(schedule.cron, schedule.timezone)
    due: builtins.list[datetime] = []
    next_slot: datetime | None = None
    capped = False
    for s in spec.iter_after(floor):
        if s > now:
            next_slot = s
            break
        due.append(s)
        if len(due) > _SCAN_LIMIT:
            capped = True
            break
    if capped:
        need = schedule.catch_up_limit if schedule.catch_up == CatchUp.ALL else 1
        count = len(due)
        due = spec.latest(floor, now, need)
        next_slot = spec.next_after(now)
    else:
        count = len(due)
    if not due:
        return _Plan([], 0, False, None, next_slot)
    if schedule.catch_up == CatchUp.ALL:
        fire = due[-schedule.catch_up_limit :]
    elif schedule.catch_up == CatchUp.SKIP:
        fire = [due[-1]] if (now - due[-1]).total_seconds() <= grace_seconds else []
    else:
        fire = [due[-1]]
    return _Plan(fire, count, capped, due[-1], next_slot)


# --------------------------------------------------------------------------- types
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
            see :func:`normalize_cron`.
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
        created = _aware(self.created_at, "created_at")
        object.__setattr__(self, "created_at", created)
        check_timezone(self.timezone)
        object.__setattr__(self, "updated_at", _aware(self.updated_at, "updated_at") if self.updated_at is not None else created)
        object.__setattr__(self, "enabled_at", _aware(self.enabled_at, "enabled_at") if self.enabled_at is not None else created)
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
        return _spec(self.cron, self.timezone).next_after(_aware(after, "after"))

    def slots_between(self, after: datetime, until: datetime, limit: int = 1000) -> builtins.list[datetime]:
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
        return _spec(self.cron, self.timezone).between(_aware(after, "after"), _aware(until, "until"), limit)

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
        """Build a Schedule from its stored JSON shape, validating every field.

        Raises:
            ValidationError: a missing or invalid field (names it).
        """
        if not isinstance(data, dict):
            raise ValidationError("schedule", "must be a JSON object")

        def req(name: str) -> Any:
            if name not in data:
                raise ValidationError(name, "is missing from the stored schedule")
            return data[name]

        def ts(name: str, required: bool = True) -> datetime | None:
            raw = req(name) if required else data.get(name)
            if raw is None and not required:
                return None
            try:
                return from_rfc3339(raw)
            except (TypeError, ValueError, AttributeError):
                raise ValidationError(name, f"must be an RFC 3339 timestamp, got {raw!r}") from None

        policy = data.get("retry_policy")
        created = ts("created_at")
        assert created is not None
        return cls(
            id=req("id"),
            task_type=req("task_type"),
            input=data.get("input"),
            cron=req("cron"),
            enabled=req("enabled"),
            created_at=created,
            timezone=data.get("timezone", "UTC"),
            updated_at=ts("updated_at", False),
            enabled_at=ts("enabled_at", False),
            timeout_seconds=data.get("timeout_seconds", 300),
            max_retries=data.get("max_retries", 3),
            retry_policy=RetryPolicy.from_dict(policy) if policy is not None else None,
            catch_up=data.get("catch_up", CatchUp.LATEST.value),
            catch_up_limit=data.get("catch_up_limit", 10),
        )


def _catch_up(value: Any) -> CatchUp:
    if isinstance(value, CatchUp):
        return value
    try:
        return CatchUp(value)
    except ValueError:
        raise ValidationError(
            "catch_up", f"must be one of {[c.value for c in CatchUp]}, got {value!r}"
        ) from None


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


# ------------------------------------------------------------------ object layout
class ScheduleKeys:
    """Object keys of the schedule objects under a queue's key prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.defs_prefix = f"{prefix}schedules/defs/"

    def definition(self, schedule_id: str) -> str:
        """``schedules/defs/<id>.json``"""
        return f"{self.defs_prefix}{schedule_id}.json"

    def run(self, schedule_id: str) -> str:
        """``schedules/runs/<id>.json``"""
        return f"{self.prefix}schedules/runs/{schedule_id}.json"

    def slots_prefix(self, schedule_id: str) -> str:
        """``schedules/slots/<id>/``"""
        return f"{self.prefix}schedules/slots/{schedule_id}/"

    def slot(self, schedule_id: str, slot: datetime) -> str:
        """``schedules/slots/<id>/<YYYYMMDDTHHMMSSZ>.json`` (keys sort by slot)."""
        return f"{self.slots_prefix(schedule_id)}{slot.astimezone(UTC).strftime(_SLOT_FMT)}.json"

    def parse_slot(self, schedule_id: str, key: str) -> datetime | None:
        """The slot instant of a ledger key, or ``None`` for keys of another shape."""
        leaf = key[len(self.slots_prefix(schedule_id)) :]
        try:
            return datetime.strptime(leaf.removesuffix(".json"), _SLOT_FMT).replace(tzinfo=UTC)
        except ValueError:
            return None

    def parse_definition(self, key: str) -> str | None:
        """The schedule id of a definition key, or ``None``."""
        if not key.startswith(self.defs_prefix) or not key.endswith(".json"):
            return None
        sid = key[len(self.defs_prefix) : -len(".json")]
        return sid if v.NAME_RE.match(sid) else None


def slot_task_id(prefix: str, schedule: Schedule, slot: datetime) -> str:
    """The id of the task a slot submits: 12 hex digits of the slot's epoch
    milliseconds, then 20 of a SHA-256 over (prefix, schedule id, schedule creation
    time, slot). Deterministic, so every scheduler that submits a slot — the claimer,
    or a later recovery — writes the same task object."""
    material = "\0".join(
        ["buquet-slot", prefix, schedule.id, to_rfc3339(schedule.created_at), to_rfc3339(slot)]
    )
    digest = hashlib.sha256(material.encode()).hexdigest()[:20]
    return f"{to_ms(slot) & 0xFFFFFFFFFFFF:012x}{digest}"


def _encode(doc: dict[str, Any]) -> bytes:
    doc = dict(doc)
    doc["rev"] = secrets.token_hex(8)  # unique ETag per write
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def _decode_schedule(data: bytes, key: str) -> Schedule:
    """Parse a stored definition. Raises ValidationError for anything malformed."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ValidationError("schedule", f"{key} is not JSON: {exc}") from None
    try:
        return Schedule.from_dict(doc)
    except ValidationError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValidationError("schedule", f"{key} is malformed: {exc!r}") from None


@dataclass(slots=True)
class _RunState:
    """Parsed ``schedules/runs/<id>.json`` (internal). ``etag`` is ``None`` when the
    object does not exist; ``doc`` is ``None`` when it belongs to an older schedule of
    the same id or is unreadable (it is overwritten)."""

    etag: str | None
    doc: dict[str, Any] | None = None

    def ts(self, name: str) -> datetime | None:
        raw = (self.doc or {}).get(name)
        if not raw:
            return None
        try:
            return from_rfc3339(raw)
        except (TypeError, ValueError):
            return None

    @property
    def last_slot_at(self) -> datetime | None:
        return self.ts("last_slot_at")


# --------------------------------------------------------------------------- mixin
class SchedulesMixin:
    """Schedule methods of :class:`~buquet.Queue`.

    Every method validates its arguments before sending any request and raises
    :class:`~buquet.ValidationError` naming the bad field; storage failures raise
    :class:`~buquet.StorageError`.
    """

    if TYPE_CHECKING:
        store: ObjectStore
        layout: Any

        async def time(self) -> datetime: ...

        def shard_of(self, task_id: str) -> str: ...

        async def submit(
            self,
            task_type: str,
            input: Any,
            timeout_seconds: int = 300,
            max_retries: int = 3,
            retry_policy: RetryPolicy | None = None,
            schedule_at: datetime | str | None = None,
        ) -> Task: ...

    @property
    def schedule_keys(self) -> ScheduleKeys:
        """The object keys of schedules in this queue's bucket and prefix."""
        return ScheduleKeys(self.layout.prefix)

    # ------------------------------------------------------------------ create
    async def create_schedule(
        self,
        id: str,
        task_type: str,
        input: Any,
        cron: str,
        *,
        timezone: str = "UTC",
        enabled: bool = True,
        timeout_seconds: int = 300,
        max_retries: int = 3,
        retry_policy: RetryPolicy | None = None,
        catch_up: CatchUp | str = CatchUp.LATEST,
        catch_up_limit: int = 10,
    ) -> Schedule:
        """Create a schedule. It first fires at its first slot after now (never at once).

        Args:
            id: 1–128 of ``[A-Za-z0-9_.-]``, starting with a letter or digit.
            task_type: the task type each run submits (as in :meth:`submit`).
            input: JSON input of every run's task.
            cron: 5-field cron or an ``@hourly``-style alias (see :func:`normalize_cron`).
            timezone: IANA zone the cron fields are read in; default ``"UTC"``.
            enabled: ``False`` to create it paused.
            timeout_seconds / max_retries / retry_policy: options of the submitted tasks.
            catch_up: :class:`CatchUp` policy (or its value ``"latest"``, ``"all"``,
                ``"skip"``) for slots missed while no scheduler ran.
            catch_up_limit: with ``catch_up="all"``, the most missed slots run at once.

        Returns:
            The stored :class:`Schedule`.

        Raises:
            ValidationError: bad input (names the field); nothing was written.
            ScheduleExists: a schedule with this id exists.
            StorageError: the store failed.

        S3: one PUT of ``schedules/defs/<id>.json`` with ``If-None-Match: *``.
        """
        v.name(id, "id")
        now = await self.time()
        schedule = Schedule(
            id=id,
            task_type=task_type,
            input=input,
            cron=cron,
            enabled=enabled,
            created_at=now,
            timezone=timezone,
            updated_at=now,
            enabled_at=now,
            timeout_seconds=timeout_seconds,
            max_retries=max_retries,
            retry_policy=retry_policy,
            catch_up=catch_up,
            catch_up_limit=catch_up_limit,
        )
        key = self.schedule_keys.definition(id)
        try:
            await self.store.put(key, _encode(schedule.to_dict()), if_none_match=True)
        except PreconditionFailed:
            raise ScheduleExists(f"schedule {id!r} already exists (delete it first to replace it)") from None
        return schedule

    # ------------------------------------------------------------------ read
    async def _load_schedule(self, schedule_id: str) -> tuple[Schedule, str] | None:
        key = self.schedule_keys.definition(schedule_id)
        try:
            obj = await self.store.get(key)
        except ObjectNotFound:
            return None
        try:
            return _decode_schedule(obj.data, key), obj.etag
        except ValidationError as exc:
            raise StorageError(f"schedule document {key!r} is invalid: {exc}", key) from None

    async def get_schedule(self, id: str) -> Schedule | None:
        """The schedule with this id, or ``None``. One GET.

        Raises:
            ValidationError: malformed id.
            StorageError: the store failed, or the stored definition is invalid.
        """
        v.name(id, "id")
        loaded = await self._load_schedule(id)
        return loaded[0] if loaded else None

    async def _list_definition_infos(self) -> builtins.list[Any]:
        keys = self.schedule_keys
        out: builtins.list[Any] = []
        start_after: str | None = None
        while True:
            page = await self.store.list(keys.defs_prefix, start_after=start_after, limit=1000)
            out.extend(page)
            if len(page) < 1000:
                return out
            start_after = page[-1].key

    async def list_schedules(self) -> builtins.list[Schedule]:
        """Every schedule, sorted by id. A stored definition that cannot be read is
        logged and left out.

        S3: one LIST per 1,000 schedules, one GET per schedule (16 at a time).

        Raises:
            StorageError: the store failed.
        """
        keys = self.schedule_keys
        infos = [i for i in await self._list_definition_infos() if keys.parse_definition(i.key)]
        found: builtins.list[Schedule] = []
        for obj in await self.store.get_many([i.key for i in infos]):
            if obj is None:
                continue
            try:
                found.append(_decode_schedule(obj.data, obj.info.key))
            except ValidationError as exc:
                log.error("schedule document %s is invalid, skipped: %s", obj.info.key, exc)
        return sorted(found, key=lambda s: s.id)

    # ------------------------------------------------------------------ change
    async def _modify_schedule(self, schedule_id: str, change: Callable[[Schedule, datetime], Schedule | None]) -> Schedule:
        """Read-modify-write of a definition with If-Match, retried on conflicts."""
        key = self.schedule_keys.definition(schedule_id)
        for _ in range(10):
            loaded = await self._load_schedule(schedule_id)
            if loaded is None:
                raise ScheduleNotFound(f"no schedule {schedule_id!r}")
            schedule, etag = loaded
            new = change(schedule, await self.time())
            if new is None:
                return schedule
            try:
                await self.store.put(key, _encode(new.to_dict()), if_match=etag)
                return new
            except PreconditionFailed:
                continue  # changed (or deleted) concurrently: read again
        raise PreconditionFailed(f"schedule {schedule_id!r} keeps changing concurrently; try again", key)

    async def enable_schedule(self, id: str) -> Schedule:
        """Let the scheduler fire the schedule again. Slots that passed while it was
        disabled are not replayed: it next fires at its first slot after now. Enabling
        an enabled schedule changes nothing.

        Returns:
            The schedule as stored.

        Raises:
            ValidationError: malformed id. ScheduleNotFound: no such schedule.
            StorageError: the store failed.

        S3: one GET and one PUT with ``If-Match`` on the definition's ETag (repeated if
        a concurrent change wins), so concurrent enable/disable calls lose no update.
        """
        v.name(id, "id")

        def change(s: Schedule, now: datetime) -> Schedule | None:
            return None if s.enabled else replace(s, enabled=True, enabled_at=now, updated_at=now)

        return await self._modify_schedule(id, change)

    async def disable_schedule(self, id: str) -> Schedule:
        """Stop the scheduler from firing the schedule (its definition and run state
        are kept). Disabling a disabled schedule changes nothing.

        Returns:
            The schedule as stored.

        Raises:
            ValidationError: malformed id. ScheduleNotFound: no such schedule.
            StorageError: the store failed.

        S3: one GET and one PUT with ``If-Match`` (see :meth:`enable_schedule`).
        """
        v.name(id, "id")

        def change(s: Schedule, now: datetime) -> Schedule | None:
            return replace(s, enabled=False, updated_at=now) if s.enabled else None

        return await self._modify_schedule(id, change)

    async def delete_schedule(self, id: str) -> None:
        """Delete the schedule, its run state and its slot ledger. Tasks it already
        submitted are not touched. A scheduler tick that read the definition just
        before may still fire a slot that was due.

        Raises:
            ValidationError: malformed id. ScheduleNotFound: no such schedule.
            StorageError: the store failed.

        S3: one HEAD, two DELETEs, one LIST per 1,000 ledger objects and one
        DeleteObjects per 1,000 of them.
        """
        v.name(id, "id")
        keys = self.schedule_keys
        try:
            await self.store.head(keys.definition(id))
        except ObjectNotFound:
            raise ScheduleNotFound(f"no schedule {id!r}") from None
        await self.store.delete(keys.definition(id))
        await self.store.delete(keys.run(id))
        while True:
            page = await self.store.list(keys.slots_prefix(id), limit=1000)
            if not page:
                break
            await self.store.delete_many([i.key for i in page])
            if len(page) < 1000:
                break

    # ------------------------------------------------------------------ trigger
    async def trigger_schedule(self, id: str) -> Task:
        """Submit the schedule's task now, outside its cron slots (also when it is
        disabled). The slot ledger and slot cursor are not touched, so the next slot
        fires as usual; the run state records this run as the last run
        (``last_run_kind="trigger"``).

        Returns:
            The submitted :class:`Task`.

        Raises:
            ValidationError: malformed id. ScheduleNotFound: no such schedule.
            StorageError: the store failed (the task may or may not exist).

        S3: one GET of the definition, the two PUTs of :meth:`submit`, then one GET and
        one conditional PUT of the run state (a failure there is only logged: the task
        was submitted).
        """
        v.name(id, "id")
        loaded = await self._load_schedule(id)
        if loaded is None:
            raise ScheduleNotFound(f"no schedule {id!r}")
        schedule = loaded[0]
        task = await self.submit(
            schedule.task_type,
            schedule.input,
            timeout_seconds=schedule.timeout_seconds,
            max_retries=schedule.max_retries,
            retry_policy=schedule.retry_policy,
        )
        try:
            await self._record_run(schedule, None, task.created_at, task.id, "trigger", task.created_at)
        except StorageError as exc:
            log.warning("schedule %s: triggered task %s, but recording the run failed: %s", id, task.id, exc)
        return task

    # ------------------------------------------------------------------ last run
    async def get_schedule_last_run(self, id: str) -> ScheduleLastRun | None:
        """The schedule's last run and next slot, or ``None`` if there is no such
        schedule. ``next_run_at`` is computed now from the definition, the slot cursor
        and the store's clock (see :class:`ScheduleLastRun`).

        Raises:
            ValidationError: malformed id.
            StorageError: the store failed, or the definition is invalid.

        S3: two GETs (definition and run state).
        """
        v.name(id, "id")
        loaded = await self._load_schedule(id)
        if loaded is None:
            return None
        return await self._last_run_of(loaded[0])

    async def _last_run_of(self, schedule: Schedule, now: datetime | None = None) -> ScheduleLastRun:
        state = await self._read_run_state(schedule)
        now = now or await self.time()
        return ScheduleLastRun(
            schedule_id=schedule.id,
            last_run_at=state.ts("last_run_at"),
            last_task_id=(state.doc or {}).get("last_task_id"),
            next_run_at=self._next_run_at(schedule, state.last_slot_at, now),
            last_slot_at=state.last_slot_at,
            last_run_kind=(state.doc or {}).get("last_run_kind"),
        )

    @staticmethod
    def _next_run_at(schedule: Schedule, cursor: datetime | None, now: datetime) -> datetime | None:
        if not schedule.enabled:
            return None
        floor = max(schedule.floor, cursor) if cursor else schedule.floor
        plan = _plan(schedule, floor, now, DEFAULT_MISFIRE_GRACE_SECONDS)
        return plan.fire[0] if plan.fire else plan.next_slot

    # ------------------------------------------------------------------ run state
    async def _read_run_state(self, schedule: Schedule) -> _RunState:
        """GET ``schedules/runs/<id>.json``. A document of an earlier schedule with the
        same id (deleted and re-created) reads as empty."""
        key = self.schedule_keys.run(schedule.id)
        try:
            obj = await self.store.get(key)
        except ObjectNotFound:
            return _RunState(None)
        try:
            doc = json.loads(obj.data)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            log.error("schedule %s: run state %s is unreadable (%s); it will be rewritten", schedule.id, key, exc)
            return _RunState(obj.etag)
        if doc.get("incarnation") != to_rfc3339(schedule.created_at):
            return _RunState(obj.etag)
        return _RunState(obj.etag, doc)

    async def _record_run(
        self,
        schedule: Schedule,
        slot: datetime | None,
        run_at: datetime | None,
        task_id: str | None,
        kind: str | None,
        now: datetime,
        state: _RunState | None = None,
    ) -> None:
        """Merge a run into the run state: the slot cursor only moves forward, the last
        run is replaced only by a later one. GET (unless ``state`` is given) and a PUT
        with If-Match / If-None-Match, repeated on conflicts."""
        key = self.schedule_keys.run(schedule.id)
        for _ in range(10):
            if state is None:
                state = await self._read_run_state(schedule)
            old = state.doc or {}
            doc = dict(old) if old else {"schedule_id": schedule.id, "incarnation": to_rfc3339(schedule.created_at)}
            doc.pop("rev", None)
            changed = False
            cursor = state.last_slot_at
            if slot is not None and (cursor is None or slot > cursor):
                doc["last_slot_at"] = to_rfc3339(slot)
                cursor = slot
                changed = True
            last = state.ts("last_run_at")
            if run_at is not None and task_id is not None and (last is None or run_at >= last):
                if old.get("last_task_id") != task_id:
                    doc.update(last_run_at=to_rfc3339(run_at), last_task_id=task_id, last_run_kind=kind)
                    changed = True
            if not changed:
                return
            nxt = self._next_run_at(schedule, cursor, now)
            doc["next_run_at"] = to_rfc3339(nxt) if nxt else None
            doc["updated_at"] = to_rfc3339(now)
            try:
                if state.etag is None:
                    await self.store.put(key, _encode(doc), if_none_match=True)
                else:
                    await self.store.put(key, _encode(doc), if_match=state.etag)
                return
            except PreconditionFailed:
                state = None  # someone else wrote it: merge again
        raise PreconditionFailed(f"run state of schedule {schedule.id!r} keeps changing; gave up", key)

    # ------------------------------------------------------------------ slot submit
    async def _submit_slot_task(self, schedule: Schedule, task_id: str, now: datetime) -> tuple[Task, bool]:
        """Submit the schedule's task under a given id (a slot's deterministic id).

        Same protocol as :meth:`Queue.submit` — the ready marker carrying the task
        document first, then ``tasks/S/T.json`` with ``If-None-Match: *`` — so it is
        idempotent: submitting the same id twice leaves one task. Returns the task and
        whether this call created the task object (``False``: it existed already).
        """
        return await self._create_task(  # type: ignore[attr-defined]
            task_id,
            schedule.task_type,
            schedule.input,
            schedule.timeout_seconds,
            schedule.max_retries,
            schedule.retry_policy,
            now,
            now,
        )

    async def _task_exists(self, task_id: str) -> bool:
        try:
            await self.store.head(self.layout.task(self.shard_of(task_id), task_id))
            return True
        except ObjectNotFound:
            return False


__all__ = [
    "CatchUp",
    "Schedule",
    "ScheduleKeys",
    "ScheduleLastRun",
    "SchedulesMixin",
    "check_timezone",
    "normalize_cron",
    "slot_task_id",
]
