"""Slots across daylight-saving changes, month ends and leap days.

Two layers: the slot arithmetic itself (``Schedule.slots_between``), and the scheduler
driven tick by tick with an injected clock across the same days, which must submit
exactly the expected slots, each once.

Transitions used (tz database):
* America/New_York 2026-03-08 02:00 EST → 03:00 EDT (07:00Z); 2026-11-01 02:00 EDT →
  01:00 EST (06:00Z).
* Europe/London 2026-03-29 01:00 GMT → 02:00 BST (01:00Z); 2026-10-25 02:00 BST →
  01:00 GMT (01:00Z).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from buquet import MemoryStore, connect
from buquet.scheduler import Scheduler
from buquet.schedules import Schedule
from tests.conftest import FakeClock

UTC = timezone.utc
NY = "America/New_York"
LONDON = "Europe/London"


def z(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


def sched(cron: str, tz: str = "UTC") -> Schedule:
    return Schedule(id="s", task_type="t", input=None, cron=cron, enabled=True, created_at=z(2020, 1, 1), timezone=tz)


def local(dt: datetime, tz: str) -> str:
    return dt.astimezone(ZoneInfo(tz)).strftime("%m-%d %H:%M %Z")


# ------------------------------------------------------------ what croniter does
def test_croniter_with_aware_datetimes_double_fires_on_fall_back() -> None:
    """Characterises croniter 7's own zone handling, which buquet does NOT use (it
    iterates naive wall-clock times and maps them itself). If this fails after a
    croniter upgrade, croniter changed; buquet's slots (tested below) do not depend on
    it — update docs/schedules.md."""
    tz = ZoneInfo(NY)
    it = croniter("30 1 * * *", z(2026, 10, 31, 12).astimezone(tz))
    runs = [it.get_next(datetime).astimezone(UTC) for _ in range(3)]
    # 01:30 EDT and 01:30 EST on the fall-back day: the same daily run twice
    assert runs == [z(2026, 11, 1, 5, 30), z(2026, 11, 1, 6, 30), z(2026, 11, 2, 6, 30)]
    # spring forward: croniter moves 02:30 to 03:00 EDT, as buquet does
    it = croniter("30 2 * * *", z(2026, 3, 7, 12).astimezone(tz))
    assert it.get_next(datetime).astimezone(UTC) == z(2026, 3, 8, 7, 0)


# ------------------------------------------------------------ fixed-time schedules
def test_new_york_spring_forward_daily_0230_runs_once_at_0300_edt() -> None:
    slots = sched("30 2 * * *", NY).slots_between(z(2026, 3, 6, 12), z(2026, 3, 10, 12))
    assert slots == [z(2026, 3, 7, 7, 30), z(2026, 3, 8, 7, 0), z(2026, 3, 9, 6, 30), z(2026, 3, 10, 6, 30)]
    assert [local(s, NY) for s in slots] == ["03-07 02:30 EST", "03-08 03:00 EDT", "03-09 02:30 EDT", "03-10 02:30 EDT"]


def test_new_york_fall_back_daily_0130_runs_once_on_first_pass() -> None:
    slots = sched("30 1 * * *", NY).slots_between(z(2026, 10, 30, 12), z(2026, 11, 3, 12))
    assert [local(s, NY) for s in slots] == ["10-31 01:30 EDT", "11-01 01:30 EDT", "11-02 01:30 EST", "11-03 01:30 EST"]
    assert slots[1] == z(2026, 11, 1, 5, 30)


def test_london_spring_forward_daily_0130_runs_once_at_0200_bst() -> None:
    slots = sched("30 1 * * *", LONDON).slots_between(z(2026, 3, 27, 12), z(2026, 3, 31, 12))
    assert slots == [z(2026, 3, 28, 1, 30), z(2026, 3, 29, 1, 0), z(2026, 3, 30, 0, 30), z(2026, 3, 31, 0, 30)]
    assert local(slots[1], LONDON) == "03-29 02:00 BST"


def test_london_fall_back_daily_0130_runs_once() -> None:
    slots = sched("30 1 * * *", LONDON).slots_between(z(2026, 10, 23, 12), z(2026, 10, 27, 12))
    assert [local(s, LONDON) for s in slots] == ["10-24 01:30 BST", "10-25 01:30 BST", "10-26 01:30 GMT", "10-27 01:30 GMT"]


def test_two_fixed_times_inside_the_gap_merge_into_one_slot() -> None:
    # 02:00 and 02:30 do not exist on 2026-03-08 in New York: both run at 03:00 EDT,
    # which is one instant, hence one slot
    slots = sched("0,30 2 * * *", NY).slots_between(z(2026, 3, 8), z(2026, 3, 9))
    assert slots == [z(2026, 3, 8, 7, 0)]


# ----------------------------------------------------- elapsed-time (wildcard) ones
@pytest.mark.parametrize(
    "tz, around",
    [(NY, z(2026, 3, 8, 7)), (NY, z(2026, 11, 1, 6)), (LONDON, z(2026, 3, 29, 1)), (LONDON, z(2026, 10, 25, 1))],
)
@pytest.mark.parametrize("cron, step", [("0 * * * *", 60), ("30 * * * *", 60), ("@hourly", 60), ("*/15 * * * *", 15)])
def test_wildcard_schedules_keep_their_cadence_through_dst(tz: str, around: datetime, cron: str, step: int) -> None:
    slots = sched(cron, tz).slots_between(around - timedelta(hours=12), around + timedelta(hours=12))
    gaps = {(b - a) for a, b in zip(slots, slots[1:])}
    assert gaps == {timedelta(minutes=step)}
    assert len(slots) == 24 * 60 // step


def test_hourly_in_new_york_on_fall_back_day_runs_25_times() -> None:
    day = sched("0 * * * *", NY).slots_between(z(2026, 11, 1, 3, 59), z(2026, 11, 2, 4, 59))
    assert len(day) == 25  # the local day has 25 hours
    assert [local(s, NY) for s in day[1:4]] == ["11-01 01:00 EDT", "11-01 01:00 EST", "11-01 02:00 EST"]


def test_hourly_in_new_york_on_spring_forward_day_runs_23_times() -> None:
    day = sched("0 * * * *", NY).slots_between(z(2026, 3, 8, 4, 59), z(2026, 3, 9, 3, 59))
    assert len(day) == 23
    assert [local(s, NY) for s in day[1:3]] == ["03-08 01:00 EST", "03-08 03:00 EDT"]


def test_slots_after_an_instant_inside_the_repeated_hour() -> None:
    s = sched("*/20 * * * *", NY)
    # 05:30Z is 01:30 EDT (first pass): the next ones are 01:40 EDT, then the second pass
    assert s.slots_between(z(2026, 11, 1, 5, 30), z(2026, 11, 1, 6, 30)) == [
        z(2026, 11, 1, 5, 40), z(2026, 11, 1, 6, 0), z(2026, 11, 1, 6, 20)
    ]
    # a fixed 01:40 schedule seen from inside the repeated hour: first pass only
    assert sched("40 1 * * *", NY).next_slot(z(2026, 11, 1, 5, 30)) == z(2026, 11, 1, 5, 40)
    assert sched("40 1 * * *", NY).next_slot(z(2026, 11, 1, 6, 0)) == z(2026, 11, 2, 6, 40)


# ------------------------------------------------------------------ property tests
TRANSITIONS = [
    (NY, date(2026, 3, 8)), (NY, date(2026, 11, 1)), (LONDON, date(2026, 3, 29)), (LONDON, date(2026, 10, 25)),
    (NY, date(2027, 3, 14)), (LONDON, date(2028, 10, 29)), ("Australia/Lord_Howe", date(2026, 4, 5)),
    ("Australia/Lord_Howe", date(2026, 10, 4)), ("Europe/Berlin", date(2026, 3, 29)),
]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(TRANSITIONS), st.integers(0, 23), st.integers(0, 59))
def test_a_fixed_daily_time_runs_exactly_once_every_local_day(tr: tuple[str, date], hour: int, minute: int) -> None:
    tz, day = tr
    zone = ZoneInfo(tz)
    # (after, until] must cover local days day-3 .. day+3 whole, midnight included
    start = datetime.combine(day - timedelta(days=3), datetime.min.time(), zone) - timedelta(seconds=1)
    end = datetime.combine(day + timedelta(days=4), datetime.min.time(), zone) - timedelta(seconds=1)
    slots = sched(f"{minute} {hour} * * *", tz).slots_between(start, end)
    local_days = [s.astimezone(zone).date() for s in slots]
    assert local_days == [day + timedelta(days=i) for i in range(-3, 4)]
    for s in slots:
        wall = s.astimezone(zone)
        if (wall.hour, wall.minute) != (hour, minute):
            # only a time that does not exist that day moves, and only to the gap end
            naive = datetime(wall.year, wall.month, wall.day, hour, minute)
            assert naive.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive
            assert s.astimezone(zone).utcoffset() != (s - timedelta(seconds=1)).astimezone(zone).utcoffset()


ONE_HOUR_SHIFTS = [t for t in TRANSITIONS if t[0] != "Australia/Lord_Howe"]  # Lord Howe shifts by 30 min


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(ONE_HOUR_SHIFTS), st.integers(0, 59))
def test_an_hourly_schedule_is_evenly_spaced_across_every_transition(tr: tuple[str, date], minute: int) -> None:
    tz, day = tr
    zone = ZoneInfo(tz)
    start = datetime.combine(day - timedelta(days=1), datetime.min.time(), zone)
    slots = sched(f"{minute} * * * *", tz).slots_between(start, start + timedelta(days=3))
    assert all(b - a == timedelta(hours=1) for a, b in zip(slots, slots[1:]))
    assert all(s.astimezone(zone).minute == minute for s in slots)


def test_half_hour_dst_shift_wildcard_runs_repeated_wall_times_twice() -> None:
    # Lord Howe falls back from 02:00 (+11) to 01:30 (+10:30) on 2026-04-05: 01:45
    # happens twice and an elapsed-time schedule runs at both; a fixed one once
    tz = "Australia/Lord_Howe"
    wild = sched("45 * * * *", tz).slots_between(z(2026, 4, 4, 13), z(2026, 4, 4, 17))
    assert [local(s, tz) for s in wild] == ["04-05 00:45 +11", "04-05 01:45 +11", "04-05 01:45 +1030", "04-05 02:45 +1030"]
    fixed = sched("45 1 * * *", tz).slots_between(z(2026, 4, 4, 0), z(2026, 4, 5, 12))
    assert [local(s, tz) for s in fixed] == ["04-05 01:45 +11"]


# --------------------------------------------------------- month ends, leap days
def test_leap_day_schedule_fires_only_on_february_29() -> None:
    slots = sched("0 12 29 2 *").slots_between(z(2023, 1, 1), z(2033, 1, 1))
    assert slots == [z(2024, 2, 29, 12), z(2028, 2, 29, 12), z(2032, 2, 29, 12)]


def test_day_31_skips_shorter_months_and_L_means_last_day() -> None:
    assert [s.month for s in sched("0 0 31 * *").slots_between(z(2028, 1, 1), z(2029, 1, 1))] == [1, 3, 5, 7, 8, 10, 12]
    last = sched("0 0 L * *", LONDON).slots_between(z(2028, 1, 1), z(2028, 5, 1))
    assert [local(s, LONDON) for s in last] == ["01-31 00:00 GMT", "02-29 00:00 GMT", "03-31 00:00 BST", "04-30 00:00 BST"]


def test_monthly_at_local_midnight_across_year_end_and_dst() -> None:
    slots = sched("@monthly", NY).slots_between(z(2026, 10, 15), z(2027, 4, 15))
    assert [local(s, NY) for s in slots] == [
        "11-01 00:00 EDT", "12-01 00:00 EST", "01-01 00:00 EST", "02-01 00:00 EST", "03-01 00:00 EST", "04-01 00:00 EDT"
    ]


def test_weekday_fields_as_people_know_them() -> None:
    weekdays = sched("0 9 * * 1-5").slots_between(z(2026, 3, 1), z(2026, 3, 8))  # Sun 1st .. Sun 8th
    assert [s.strftime("%a") for s in weekdays] == ["Mon", "Tue", "Wed", "Thu", "Fri"]
    sunday0 = sched("0 0 * * 0").slots_between(z(2026, 3, 1), z(2026, 4, 1))
    assert sunday0 == sched("0 0 * * 7").slots_between(z(2026, 3, 1), z(2026, 4, 1))
    assert {s.strftime("%a") for s in sunday0} == {"Sun"} and len(sunday0) == 4
    assert sched("@weekly").slots_between(z(2026, 3, 1), z(2026, 4, 1)) == sunday0
    assert sched("0 0 * * mon-fri").slots_between(z(2026, 3, 1), z(2026, 3, 8)) == [
        s.replace(hour=0) for s in weekdays
    ]


# ------------------------------------------------------- the scheduler, tick by tick
async def drive(cron: str, tz: str, start: datetime, end: datetime, step_minutes: int, *,
                schedulers: int = 1) -> list[tuple[datetime, datetime]]:
    """Create the schedule at ``start``, tick every ``step_minutes`` until ``end`` and
    return (slot, tick time) for every task submitted, checking each task exists and
    each slot has exactly one ledger entry."""
    clock = FakeClock(start)
    store = MemoryStore()
    q = await connect(store=store, clock=clock)
    await q.create_schedule("job", "t", {"k": 1}, cron, timezone=tz)
    runners = [Scheduler(q) for _ in range(schedulers)]
    keys = q.schedules.layout
    fired: list[tuple[datetime, datetime]] = []
    ledger: set[datetime | None] = set()  # every ledger entry seen (old ones get pruned)
    while clock.now < end:
        clock.advance(step_minutes * 60)
        for r in runners:
            for task in await r.tick():
                # slot task ids are UUIDv7s whose 48-bit time field is the slot's epoch ms
                fired.append((datetime.fromtimestamp((uuid.UUID(task.id).int >> 80) / 1000, UTC), clock.now))
                assert await q.get(task.id) is not None
        ledger |= {keys.parse_schedule_slot("job", k) for k in store.keys()
                   if k.startswith(keys.schedule_slots_prefix("job"))}
    assert sorted(s for s in ledger if s is not None) == sorted(slot for slot, _ in fired)
    tasks = [k for k in store.keys() if k.startswith("tasks/")]
    assert len(tasks) == len(fired)
    return fired


async def test_scheduler_new_york_spring_forward_daily_0230() -> None:
    fired = await drive("30 2 * * *", NY, z(2026, 3, 6, 12), z(2026, 3, 10, 12), 5, schedulers=2)
    assert [slot for slot, _ in fired] == [z(2026, 3, 7, 7, 30), z(2026, 3, 8, 7, 0), z(2026, 3, 9, 6, 30), z(2026, 3, 10, 6, 30)]
    assert all(timedelta(0) <= tick - slot < timedelta(minutes=5) for slot, tick in fired)
    hourly = await drive("0 * * * *", NY, z(2026, 3, 8, 4, 30), z(2026, 3, 8, 9, 30), 10)
    assert [slot for slot, _ in hourly] == [z(2026, 3, 8, h) for h in range(5, 10)]  # 00:00 EST .. 05:00 EDT


async def test_scheduler_new_york_fall_back_daily_0130_and_hourly() -> None:
    fired = await drive("30 1 * * *", NY, z(2026, 10, 30, 12), z(2026, 11, 3, 12), 5)
    assert [slot for slot, _ in fired] == [z(2026, 10, 31, 5, 30), z(2026, 11, 1, 5, 30), z(2026, 11, 2, 6, 30), z(2026, 11, 3, 6, 30)]
    hourly = await drive("0 * * * *", NY, z(2026, 11, 1, 3, 30), z(2026, 11, 1, 9, 30), 10)
    assert [slot for slot, _ in hourly] == [z(2026, 11, 1, h) for h in range(4, 10)]


async def test_scheduler_london_both_directions() -> None:
    spring = await drive("30 1 * * *", LONDON, z(2026, 3, 27, 12), z(2026, 3, 30, 12), 10)
    assert [slot for slot, _ in spring] == [z(2026, 3, 28, 1, 30), z(2026, 3, 29, 1, 0), z(2026, 3, 30, 0, 30)]
    fall = await drive("30 1 * * *", LONDON, z(2026, 10, 23, 12), z(2026, 10, 26, 12), 10)
    assert [slot for slot, _ in fall] == [z(2026, 10, 24, 0, 30), z(2026, 10, 25, 0, 30), z(2026, 10, 26, 1, 30)]
    hourly = await drive("@hourly", LONDON, z(2026, 10, 24, 22, 30), z(2026, 10, 25, 3, 30), 15)
    assert [slot for slot, _ in hourly] == [z(2026, 10, 24, 23), z(2026, 10, 25, 0), z(2026, 10, 25, 1), z(2026, 10, 25, 2), z(2026, 10, 25, 3)]


async def test_scheduler_month_end_and_leap_day() -> None:
    fired = await drive("0 6 L * *", "UTC", z(2028, 1, 30), z(2028, 4, 1), 60)
    assert [slot for slot, _ in fired] == [z(2028, 1, 31, 6), z(2028, 2, 29, 6), z(2028, 3, 31, 6)]


def test_slots_do_not_depend_on_the_host_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    def compute() -> list[list[datetime]]:
        return [
            sched("30 2 * * *", NY).slots_between(z(2026, 3, 6), z(2026, 3, 10)),
            sched("30 1 * * *", LONDON).slots_between(z(2026, 10, 23), z(2026, 10, 27)),
            sched("0 * * * *").slots_between(z(2026, 3, 8), z(2026, 3, 9)),
        ]

    expected = compute()
    for host_tz in ("America/New_York", "Europe/London", "Asia/Kolkata"):
        monkeypatch.setenv("TZ", host_tz)
        time.tzset()
        try:
            assert compute() == expected, host_tz
        finally:
            monkeypatch.undo()
            time.tzset()
