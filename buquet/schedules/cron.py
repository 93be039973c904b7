"""Cron slot arithmetic: validation, daylight-saving rules and the catch-up plan.

Pure computation — no storage, no I/O, no clock. A *slot* is one scheduled run,
identified by its UTC instant. The cron fields are matched against wall-clock time in
an IANA zone, with cron(8)'s daylight-saving rules:

* a schedule whose minute or hour field starts with ``*`` (``@hourly``,
  ``*/15 * * * *``, ``0 * * * *``) follows elapsed time: wall times skipped by a
  spring-forward change do not run, repeated wall times of a fall-back change run on
  both passes;
* every other schedule (fixed times such as ``30 2 * * *``) runs each intended local
  time once: a time skipped by spring-forward runs at the first instant after the gap
  (02:30 → 03:00 local), a repeated time runs on its first pass only.

Slots that land on the same UTC instant are one slot. See ``docs/schedules.md``.
"""

from __future__ import annotations

import collections
import functools
import heapq
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from ..errors import ValidationError

UTC = timezone.utc

#: with ``CatchUp.SKIP`` a slot still runs if the scheduler reaches it this late
DEFAULT_MISFIRE_GRACE_SECONDS = 120.0
#: ``catch_up_limit`` bounds
MAX_CATCH_UP_LIMIT = 1000
#: at most this many due slots are enumerated one by one; beyond that (a long outage
#: of a frequent schedule) only the latest ones are computed
SCAN_LIMIT = 200

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
    except (CroniterError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValidationError(field, f"{text!r} is not a valid cron expression: {exc}") from None
    return text


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


def as_utc(value: Any, field: str) -> datetime:
    """An aware datetime converted to UTC.

    Raises:
        ValidationError: not a datetime, or a naive one (names ``field``).
    """
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(field, f"must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


# ------------------------------------------------------------------- slot arithmetic
class CronSpec:
    """A validated cron expression in a zone, turned into UTC slot instants.

    Iterates naive local wall-clock times with croniter (pure calendar arithmetic, no
    time zone involved) and maps each to UTC with the rules in the module docstring.
    croniter's own zone handling is not used: on a fall-back day it fires a fixed-time
    schedule on both passes of the repeated hour (see tests/test_scheduler_dst.py).
    Build one with :func:`cron_spec` (cached).

    Attributes:
        expr: the 5-field expression (aliases expanded).
        zone: the zone the fields are read in.
        elapsed: ``True`` if the schedule follows elapsed time across DST changes.
    """

    __slots__ = ("expr", "zone", "elapsed")

    def __init__(self, cron: str, tz: str) -> None:
        self.expr = _CRON_ALIASES.get(cron, cron)
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

    def _instances(self, local: datetime) -> tuple[list[datetime], datetime]:
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
        """Slots strictly after the aware datetime ``after``, ascending, deduplicated
        (aware UTC)."""
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
        heap: list[datetime] = []
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

    def between(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """Slots in (after, until], ascending, at most ``limit`` (the earliest)."""
        out: list[datetime] = []
        for s in self.iter_after(after):
            if s > until or len(out) >= limit:
                break
            out.append(s)
        return out

    def latest(self, floor: datetime, until: datetime, n: int) -> list[datetime]:
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
                return list(tail)
            span *= 8


@functools.lru_cache(maxsize=4096)
def cron_spec(cron: str, tz: str) -> CronSpec:
    """The (cached) :class:`CronSpec` of a normalised cron expression and a checked zone."""
    return CronSpec(cron, tz)


# ----------------------------------------------------------------------- catch-up
@dataclass(frozen=True, slots=True)
class CatchUpPlan:
    """What a scheduler tick should do for one schedule.

    Attributes:
        fire: the slots to run now, oldest first.
        due: due slots found (a lower bound when ``capped``).
        capped: more than :data:`SCAN_LIMIT` slots were due; only the latest were
            computed.
        last_due: the latest due slot, or ``None`` if none is due.
        next_slot: the first slot after ``now``, or ``None``.
    """

    fire: list[datetime]
    due: int
    capped: bool
    last_due: datetime | None
    next_slot: datetime | None

    @property
    def skipped(self) -> int:
        """Due slots the policy does not run."""
        return self.due - len(self.fire)


def plan_catch_up(
    spec: CronSpec, floor: datetime, now: datetime, *, policy: str, limit: int, grace_seconds: float
) -> CatchUpPlan:
    """Apply a catch-up policy to the slots in (``floor``, ``now``].

    Args:
        spec: the schedule's slots.
        floor: slots at or before it are handled (or never run).
        now: the tick's time.
        policy: ``"latest"``, ``"all"`` or ``"skip"`` (a ``CatchUp`` value).
        limit: with ``"all"``, the most slots fired.
        grace_seconds: with ``"skip"``, how late a slot may still fire.

    The work is bounded whatever the outage: at most :data:`SCAN_LIMIT` slots are
    enumerated one by one, then only the latest ones are computed.
    """
    due: list[datetime] = []
    next_slot: datetime | None = None
    capped = False
    for s in spec.iter_after(floor):
        if s > now:
            next_slot = s
            break
        due.append(s)
        if len(due) > SCAN_LIMIT:
            capped = True
            break
    count = len(due)
    if capped:
        due = spec.latest(floor, now, limit if policy == "all" else 1)
        next_slot = spec.next_after(now)
    if not due:
        return CatchUpPlan([], 0, False, None, next_slot)
    if policy == "all":
        fire = due[-limit:]
    elif policy == "skip":
        fire = [due[-1]] if (now - due[-1]).total_seconds() <= grace_seconds else []
    else:
        fire = [due[-1]]
    return CatchUpPlan(fire, count, capped, due[-1], next_slot)


__all__ = [
    "DEFAULT_MISFIRE_GRACE_SECONDS",
    "MAX_CATCH_UP_LIMIT",
    "SCAN_LIMIT",
    "CatchUpPlan",
    "CronSpec",
    "as_utc",
    "check_timezone",
    "cron_spec",
    "normalize_cron",
    "plan_catch_up",
]
