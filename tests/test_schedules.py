"""Schedule API, catch-up policies, enable/disable/trigger/delete, broken schedules, the
run loop and the ``buquet schedule`` / ``buquet scheduler`` commands (in-memory store)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from click.testing import CliRunner

from buquet import MemoryStore, RetryPolicy, StorageError, TaskStatus, ValidationError, connect
from buquet.errors import CorruptObject, ScheduleExists, ScheduleNotFound
from buquet.queue import Queue
from buquet.scheduler import Scheduler
from buquet.schedules import CatchUp, Schedule, ScheduleLastRun
from tests.conftest import FakeClock

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)  # the conftest clock's start


def slot_of(task_id: str) -> datetime:
    """Slot tasks have UUIDv7 ids whose 48-bit time field is the slot's epoch ms."""
    parsed = uuid.UUID(task_id)
    assert parsed.version == 7 and str(parsed) == task_id
    return datetime.fromtimestamp((parsed.int >> 80) / 1000, UTC)


def task_keys(store: MemoryStore) -> list[str]:
    return [k for k in store.keys() if k.startswith("tasks/")]


# ------------------------------------------------------------------ create / get
async def test_create_and_get_round_trip(queue: Queue, clock: FakeClock) -> None:
    policy = RetryPolicy(initial_interval_ms=500)
    s = await queue.create_schedule(
        "daily-report", "send_report", {"to": "ops"}, "0  9 * * 1-5", timezone="Europe/London",
        timeout_seconds=60, max_retries=1, retry_policy=policy, catch_up="all", catch_up_limit=3,
    )
    assert (s.id, s.task_type, s.input, s.cron, s.enabled) == ("daily-report", "send_report", {"to": "ops"}, "0 9 * * 1-5", True)
    assert s.created_at == s.updated_at == s.enabled_at == clock.now
    assert (s.timezone, s.timeout_seconds, s.max_retries, s.retry_policy) == ("Europe/London", 60, 1, policy)
    assert (s.catch_up, s.catch_up_limit) == (CatchUp.ALL, 3)
    assert await queue.get_schedule("daily-report") == s
    assert Schedule.from_dict(s.to_dict()) == s
    assert await queue.get_schedule("nope") is None


async def test_defaults_and_aliases(queue: Queue) -> None:
    s = await queue.create_schedule("h", "t", None, "@HOURLY")
    assert (s.cron, s.timezone, s.catch_up, s.timeout_seconds, s.max_retries, s.retry_policy) == (
        "@hourly", "UTC", CatchUp.LATEST, 300, 3, None)


async def test_duplicate_id_is_rejected_and_the_original_kept(queue: Queue) -> None:
    first = await queue.create_schedule("dup", "t", 1, "@daily")
    with pytest.raises(ScheduleExists, match="'dup' already exists"):
        await queue.create_schedule("dup", "other", 2, "@hourly")
    assert await queue.get_schedule("dup") == first


BAD_CREATE: list[tuple[dict[str, Any], str]] = [
    ({"id": ""}, "id"), ({"id": "a/b"}, "id"), ({"id": "../x"}, "id"), ({"id": ".hidden"}, "id"),
    ({"id": "x" * 129}, "id"), ({"id": 5}, "id"),
    ({"task_type": "has space"}, "task_type"), ({"task_type": ""}, "task_type"),
    ({"input": math.nan}, "input"), ({"input": {1: "x"}}, "input"), ({"input": {"s": {1, 2}}}, "input.s"),
    ({"cron": ""}, "cron"), ({"cron": "* * * *"}, "cron"), ({"cron": "0 0 0 * * *"}, "cron"),
    ({"cron": "60 * * * *"}, "cron"), ({"cron": "* 24 * * *"}, "cron"), ({"cron": "0 0 31 2 *"}, "cron"),
    ({"cron": "0 0 * * 8"}, "cron"), ({"cron": "@reboot"}, "cron"), ({"cron": "R * * * *"}, "cron"), ({"cron": "0 0 R(1-28) * *"}, "cron"),
    ({"cron": "H * * * *"}, "cron"), ({"cron": "every day"}, "cron"), ({"cron": 5}, "cron"),
    ({"timezone": "Mars/Olympus"}, "timezone"), ({"timezone": ""}, "timezone"),
    ({"timezone": "localtime"}, "timezone"), ({"timezone": "America/New_York "}, "timezone"),
    ({"timezone": "../../etc/passwd"}, "timezone"), ({"timezone": None}, "timezone"),
    ({"enabled": "yes"}, "enabled"), ({"timeout_seconds": 0}, "timeout_seconds"),
    ({"max_retries": -1}, "max_retries"), ({"retry_policy": {"initial_interval_ms": 1}}, "retry_policy"),
    ({"catch_up": "sometimes"}, "catch_up"), ({"catch_up_limit": 0}, "catch_up_limit"),
    ({"catch_up_limit": 1001}, "catch_up_limit"),
]


@pytest.mark.parametrize("override, field", BAD_CREATE, ids=[f"{f}={o}" for o, f in BAD_CREATE])
async def test_bad_input_is_rejected_before_anything_is_written(
    queue: Queue, store: MemoryStore, override: dict[str, Any], field: str
) -> None:
    args: dict[str, Any] = {"id": "ok", "task_type": "t", "input": {"a": 1}, "cron": "@daily"} | override
    before = store.keys()
    store.request_counts.clear()
    with pytest.raises(ValidationError) as info:
        await queue.create_schedule(args.pop("id"), args.pop("task_type"), args.pop("input"), args.pop("cron"), **args)
    assert info.value.field == field
    assert store.keys() == before and "put" not in store.request_counts


def test_error_messages_name_the_problem() -> None:
    with pytest.raises(ValidationError, match="has 6 fields; standard cron has exactly 5"):
        Schedule(id="a", task_type="t", input=None, cron="0 0 0 * * *", enabled=True, created_at=T0)
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        Schedule(id="a", task_type="t", input=None, cron="@daily", enabled=True, created_at=T0, timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="random/hashed"):
        Schedule(id="a", task_type="t", input=None, cron="R * * * *", enabled=True, created_at=T0)
    with pytest.raises(ValidationError, match="not a valid cron expression"):
        Schedule(id="a", task_type="t", input=None, cron="0 0 31 2 *", enabled=True, created_at=T0)


@pytest.mark.parametrize("call", ["get_schedule", "enable_schedule", "disable_schedule", "delete_schedule",
                                  "trigger_schedule", "get_schedule_last_run"])
async def test_malformed_and_unknown_ids(queue: Queue, store: MemoryStore, call: str) -> None:
    with pytest.raises(ValidationError) as info:
        await getattr(queue, call)("bad/id")
    assert info.value.field == "id"
    if call in ("get_schedule", "get_schedule_last_run"):
        assert await getattr(queue, call)("missing") is None
    else:
        with pytest.raises(ScheduleNotFound, match="no schedule 'missing'"):
            await getattr(queue, call)("missing")
    assert task_keys(store) == [] and not [k for k in store.keys() if k.startswith("schedules/")]


async def test_list_schedules_sorted_and_skips_a_corrupt_definition(
    queue: Queue, store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    for sid in ("b", "a", "c"):
        await queue.create_schedule(sid, "t", None, "@daily")
    await store.put(queue.schedules.layout.schedule_def("broken"), b"{not json")
    with caplog.at_level(logging.ERROR, "buquet.schedules"):
        assert [s.id for s in await queue.list_schedules()] == ["a", "b", "c"]
    assert "broken" in caplog.text
    with pytest.raises(StorageError, match="broken"):
        await queue.get_schedule("broken")
    with pytest.raises(CorruptObject) as info:
        await queue.get_schedule("broken")
    assert info.value.field == "json" and info.value.key == "schedules/defs/broken.json"


def _definition_variants(good: dict[str, Any]) -> list[tuple[str, bytes, str]]:
    """Stored definitions under key ``x`` that cannot be read as schedule ``x``, with
    the field the error names."""
    return [
        ("id-differs-from-key", json.dumps(good | {"id": "other"}).encode(), "id"),
        ("not-json", b"{not json", "json"),
        ("not-an-object", b"[1, 2]", "json"),
        ("enabled-not-bool", json.dumps(good | {"id": "x", "enabled": "yes"}).encode(), "enabled"),
        ("created-at-number", json.dumps(good | {"id": "x", "created_at": 12}).encode(), "created_at"),
        ("bad-cron", json.dumps(good | {"id": "x", "cron": "61 * * * *"}).encode(), "cron"),
        ("policy-not-object", json.dumps(good | {"id": "x", "retry_policy": 5}).encode(), "retry_policy"),
        ("missing-task-type", json.dumps({k: v for k, v in good.items() if k != "task_type"} | {"id": "x"}).encode(),
         "task_type"),
    ]


@pytest.mark.parametrize("variant", range(8), ids=[v[0] for v in _definition_variants({})])
async def test_list_schedules_and_get_schedule_agree_on_corrupt_definitions(
    queue: Queue, store: MemoryStore, clock: FakeClock, caplog: pytest.LogCaptureFixture, variant: int
) -> None:
    """Issue 7, defect 9: list_schedules() listed a schedule that get_schedule() could
    not read (a definition whose id differs from its key: listed as "other", while
    get_schedule("other") found nothing). The rule now: every stored definition is
    decoded one way; a corrupt one is logged and left out of the list (and out of the
    scheduler), and reading it by id raises CorruptObject naming the key and field."""
    good = await queue.create_schedule("good", "t", None, "*/5 * * * *")
    name, body, field = _definition_variants(good.to_dict())[variant]
    key = queue.schedules.layout.schedule_def("x")
    await store.put(key, body)
    with caplog.at_level(logging.ERROR, "buquet.schedules"):
        listed = await queue.list_schedules()
    assert [s.id for s in listed] == ["good"]
    assert "schedules/defs/x.json" in caplog.text
    for s in listed:  # whatever is listed can be read by its id, and reads the same
        assert await queue.get_schedule(s.id) == s
    assert await queue.get_schedule("other") is None
    with pytest.raises(CorruptObject) as info:
        await queue.get_schedule("x")
    assert (info.value.key, info.value.field) == (key, field), name
    for call in ("enable_schedule", "disable_schedule", "trigger_schedule", "get_schedule_last_run"):
        with pytest.raises(CorruptObject):
            await getattr(queue, call)("x")
    assert task_keys(store) == []
    scheduler = Scheduler(queue)
    clock.advance(300)
    fired = await scheduler.tick()  # the scheduler skips it too; "good" fires
    assert [t.task_type for t in fired] == ["t"] and scheduler.stats["errors"] == 1
    await queue.delete_schedule("x")  # a corrupt definition can be deleted
    assert key not in store.keys()


# ---------------------------------------------------------------- first firing
async def test_new_schedule_fires_at_its_next_slot_not_immediately(queue: Queue, clock: FakeClock) -> None:
    clock.advance(30)  # 12:00:30
    await queue.create_schedule("m", "t", None, "* * * * *")
    s = Scheduler(queue)
    assert await s.tick() == []
    clock.advance(29)
    assert await s.tick() == []
    clock.advance(1)  # 12:01:00
    fired = await s.tick()
    assert [slot_of(t.id) for t in fired] == [T0 + timedelta(minutes=1)]


async def test_schedule_created_exactly_on_a_slot_does_not_fire_that_slot(queue: Queue, clock: FakeClock) -> None:
    await queue.create_schedule("h", "t", None, "0 * * * *")  # created at 12:00:00.000
    s = Scheduler(queue)
    assert await s.tick() == []
    clock.advance(3600)
    assert [slot_of(t.id) for t in await s.tick()] == [T0 + timedelta(hours=1)]


async def test_fired_task_carries_the_schedule_options(queue: Queue, clock: FakeClock) -> None:
    policy = RetryPolicy(initial_interval_ms=10, max_interval_ms=20)
    await queue.create_schedule("o", "send", {"k": [1, 2]}, "*/5 * * * *", timeout_seconds=7, max_retries=0,
                                retry_policy=policy)
    clock.advance(300)
    (task,) = await Scheduler(queue).tick()
    stored = await queue.get(task.id)
    assert stored is not None and stored.status == TaskStatus.Pending
    assert (stored.task_type, stored.input, stored.timeout_seconds, stored.max_retries, stored.retry_policy) == (
        "send", {"k": [1, 2]}, 7, 0, policy)
    assert await queue.list_ready(stored.shard) == [task.id]


# ------------------------------------------------------------------ catch-up
async def outage(queue: Queue, clock: FakeClock, catch_up: str, limit: int = 10, hours: float = 5.5) -> list[datetime]:
    await queue.create_schedule("hourly", "t", None, "0 * * * *", catch_up=catch_up, catch_up_limit=limit)
    s = Scheduler(queue)
    clock.advance(3600)
    assert [slot_of(t.id) for t in await s.tick()] == [T0 + timedelta(hours=1)]  # 13:00, on time
    clock.advance(hours * 3600)  # the scheduler was down from 13:00:00 until 18:30
    return [slot_of(t.id) for t in await Scheduler(queue).tick()]


async def test_catch_up_latest_runs_the_latest_missed_slot_once(queue: Queue, clock: FakeClock) -> None:
    assert await outage(queue, clock, "latest") == [T0 + timedelta(hours=6)]
    assert await Scheduler(queue).tick() == []
    run = await queue.get_schedule_last_run("hourly")
    assert run is not None and run.last_slot_at == T0 + timedelta(hours=6)
    assert run.next_run_at == T0 + timedelta(hours=7)


async def test_catch_up_all_runs_every_missed_slot_oldest_first(queue: Queue, clock: FakeClock) -> None:
    assert await outage(queue, clock, "all") == [T0 + timedelta(hours=h) for h in range(2, 7)]


async def test_catch_up_all_is_bounded_by_the_limit(queue: Queue, clock: FakeClock) -> None:
    assert await outage(queue, clock, "all", limit=2) == [T0 + timedelta(hours=5), T0 + timedelta(hours=6)]
    clock.advance(1800)  # 19:00: back to normal
    assert [slot_of(t.id) for t in await Scheduler(queue).tick()] == [T0 + timedelta(hours=7)]


async def test_catch_up_skip_runs_nothing_missed_then_resumes(queue: Queue, clock: FakeClock) -> None:
    assert await outage(queue, clock, "skip") == []
    run = await queue.get_schedule_last_run("hourly")
    assert run is not None and run.last_slot_at == T0 + timedelta(hours=6)  # the skipped slots are settled
    clock.advance(1800)  # 19:00
    assert [slot_of(t.id) for t in await Scheduler(queue).tick()] == [T0 + timedelta(hours=7)]


async def test_catch_up_skip_still_runs_a_slot_reached_within_the_grace(queue: Queue, clock: FakeClock) -> None:
    assert await outage(queue, clock, "skip", hours=5.01) == [T0 + timedelta(hours=6)]  # 18:00:36


async def test_next_run_at_is_true_while_the_scheduler_is_behind(queue: Queue, clock: FakeClock) -> None:
    await queue.create_schedule("hourly", "t", None, "0 * * * *")
    run = await queue.get_schedule_last_run("hourly")
    assert run == ScheduleLastRun("hourly", None, None, T0 + timedelta(hours=1), None, None)
    clock.advance(3 * 3600 + 60)  # no scheduler ran: 15:00 is the slot the next tick fires
    run = await queue.get_schedule_last_run("hourly")
    assert run is not None and run.next_run_at == T0 + timedelta(hours=3)
    (task,) = await Scheduler(queue).tick()
    run = await queue.get_schedule_last_run("hourly")
    assert run is not None
    assert (run.last_run_at, run.last_task_id, run.last_run_kind) == (clock.now, task.id, "slot")
    assert (run.last_slot_at, run.next_run_at) == (T0 + timedelta(hours=3), T0 + timedelta(hours=4))


# ------------------------------------------------------------- enable / disable
async def test_disable_stops_firing_and_enable_does_not_replay(queue: Queue, clock: FakeClock) -> None:
    await queue.create_schedule("m", "t", None, "*/10 * * * *")
    s = Scheduler(queue)
    clock.advance(600)
    assert len(await s.tick()) == 1  # 12:10
    disabled = await queue.disable_schedule("m")
    assert disabled.enabled is False and disabled.updated_at == clock.now
    assert (await queue.get_schedule_last_run("m")).next_run_at is None  # type: ignore[union-attr]
    for _ in range(6):  # 12:20 .. 13:10 pass while disabled
        clock.advance(600)
        assert await s.tick() == []
    clock.advance(120)  # 13:12
    enabled = await queue.enable_schedule("m")
    assert enabled.enabled and enabled.enabled_at == clock.now
    assert await s.tick() == []  # nothing replayed
    assert (await queue.get_schedule_last_run("m")).next_run_at == T0 + timedelta(hours=1, minutes=20)  # type: ignore[union-attr]
    clock.advance(8 * 60)  # 13:20
    assert [slot_of(t.id) for t in await s.tick()] == [T0 + timedelta(hours=1, minutes=20)]
    assert len(task_keys(queue.store)) == 2  # type: ignore[arg-type]


async def test_enable_and_disable_are_idempotent(queue: Queue, store: MemoryStore, clock: FakeClock) -> None:
    s = await queue.create_schedule("m", "t", None, "@daily")
    clock.advance(5)
    store.request_counts.clear()
    assert await queue.enable_schedule("m") == s  # already enabled: no write, enabled_at kept
    assert "put" not in store.request_counts
    await queue.disable_schedule("m")
    again = await queue.disable_schedule("m")
    assert again.enabled is False and store.request_counts["put"] == 1


class RacingStore(MemoryStore):
    """Runs ``hook`` once, right after the first GET of ``key`` returns: another
    process changing the object between our read and our conditional write."""

    def __init__(self) -> None:
        super().__init__()
        self.key: str | None = None
        self.hook: Any = None

    async def get(self, key: str) -> Any:
        obj = await super().get(key)
        if key == self.key and self.hook is not None:
            hook, self.hook = self.hook, None
            await hook()
        return obj


async def test_concurrent_definition_updates_are_not_lost(clock: FakeClock) -> None:
    store = RacingStore()
    q = await connect(store=store, clock=clock)
    other = await connect(store=store, clock=clock)
    await q.create_schedule("m", "t", None, "@hourly")
    clock.advance(60)

    async def concurrent_toggle() -> None:  # someone disables and re-enables meanwhile
        await other.disable_schedule("m")
        clock.advance(60)
        await other.enable_schedule("m")

    store.key, store.hook = q.schedules.layout.schedule_def("m"), concurrent_toggle
    result = await q.disable_schedule("m")  # its first If-Match PUT fails; it re-reads and retries
    stored = await q.get_schedule("m")
    assert stored == result and stored is not None and stored.enabled is False
    assert stored.enabled_at == T0 + timedelta(seconds=120)  # the other writer's enable survived


# ------------------------------------------------------------------ trigger
async def test_trigger_runs_now_without_touching_the_slot_ledger(queue: Queue, store: MemoryStore, clock: FakeClock) -> None:
    await queue.create_schedule("r", "report", {"x": 1}, "0 * * * *", timeout_seconds=9)
    clock.advance(600)
    task = await queue.trigger_schedule("r")
    assert (task.task_type, task.input, task.timeout_seconds, task.status) == ("report", {"x": 1}, 9, TaskStatus.Pending)
    assert await queue.get(task.id) == task
    assert not [k for k in store.keys() if k.startswith("schedules/slots/")]
    run = await queue.get_schedule_last_run("r")
    assert run is not None
    assert (run.last_run_at, run.last_task_id, run.last_run_kind, run.last_slot_at) == (clock.now, task.id, "trigger", None)
    assert run.next_run_at == T0 + timedelta(hours=1)
    clock.advance(3000)  # 13:00: the slot fires as usual
    (fired,) = await Scheduler(queue).tick()
    assert slot_of(fired.id) == T0 + timedelta(hours=1) and fired.id != task.id
    run = await queue.get_schedule_last_run("r")
    assert run is not None and (run.last_task_id, run.last_run_kind) == (fired.id, "slot")


async def test_trigger_works_on_a_disabled_schedule(queue: Queue) -> None:
    await queue.create_schedule("d", "t", None, "@daily", enabled=False)
    task = await queue.trigger_schedule("d")
    assert await queue.get(task.id) is not None


# ------------------------------------------------------------------ delete
async def test_delete_removes_definition_state_and_ledger_but_not_tasks(
    queue: Queue, store: MemoryStore, clock: FakeClock
) -> None:
    await queue.create_schedule("x", "t", None, "*/5 * * * *")
    s = Scheduler(queue)
    for _ in range(3):
        clock.advance(300)
        await s.tick()
    assert len(task_keys(store)) == 3
    await queue.delete_schedule("x")
    assert not [k for k in store.keys() if k.startswith("schedules/")]
    assert len(task_keys(store)) == 3
    assert await queue.get_schedule("x") is None and await queue.list_schedules() == []
    clock.advance(300)
    assert await s.tick() == []  # the scheduler forgets it
    with pytest.raises(ScheduleNotFound):
        await queue.delete_schedule("x")
    # same id again: a fresh schedule with no inherited run history
    await queue.create_schedule("x", "t", None, "*/5 * * * *")
    run = await queue.get_schedule_last_run("x")
    assert run is not None and run.last_run_at is None and run.last_slot_at is None


# ----------------------------------------------------------- broken schedules
async def test_a_corrupt_definition_is_logged_and_skipped_the_others_fire(
    queue: Queue, store: MemoryStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    await queue.create_schedule("good", "t", None, "*/5 * * * *")
    layout = queue.schedules.layout
    await store.put(layout.schedule_def("bad-json"), b"{")
    doc = json.loads((await store.get(layout.schedule_def("good"))).data)
    doc.update(id="bad-cron", cron="not a cron")
    await store.put(layout.schedule_def("bad-cron"), json.dumps(doc).encode())
    s = Scheduler(queue)
    clock.advance(300)
    with caplog.at_level(logging.ERROR, "buquet.scheduler"):
        fired = await s.tick()
    assert [t.id for t in fired] and len(task_keys(store)) == 1
    assert "bad-json" in caplog.text and "bad-cron" in caplog.text and s.stats["errors"] == 2
    caplog.clear()
    clock.advance(300)
    with caplog.at_level(logging.ERROR, "buquet.scheduler"):
        assert len(await s.tick()) == 1
    assert caplog.text == ""  # logged once per version of the bad object, not every tick


class SubmitFailsStore(MemoryStore):
    """Fails every ready-marker PUT of tasks of type ``flaky`` while ``failing``."""

    failing = True

    async def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        if self.failing and key.startswith("ready/") and key.endswith(".flaky"):
            raise StorageError("injected submit failure", key)
        return await super().put(key, data, if_match=if_match, if_none_match=if_none_match)


async def test_a_failing_submit_is_skipped_the_others_fire_and_it_recovers(clock: FakeClock) -> None:
    store = SubmitFailsStore()
    q = await connect(store=store, clock=clock)
    await q.create_schedule("a-flaky", "flaky", None, "*/5 * * * *")
    await q.create_schedule("b-fine", "fine", None, "*/5 * * * *")
    s = Scheduler(q, recovery_seconds=30)
    clock.advance(300)
    fired = await s.tick()
    assert [t.task_type for t in fired] == ["fine"] and s.stats["errors"] == 1
    store.failing = False
    clock.advance(10)
    assert await s.tick() == []  # the claim is too fresh to call abandoned
    clock.advance(30)
    (recovered,) = await s.tick()
    assert recovered.task_type == "flaky" and slot_of(recovered.id) == T0 + timedelta(minutes=5)
    assert len(task_keys(store)) == 2


async def test_tick_rejects_a_naive_now(queue: Queue) -> None:
    with pytest.raises(ValidationError) as info:
        await Scheduler(queue).tick(datetime(2026, 1, 1))
    assert info.value.field == "now"


def test_scheduler_options_are_validated(queue: Queue) -> None:
    with pytest.raises(ValidationError) as info:
        Scheduler(queue, recovery_seconds=-1)
    assert info.value.field == "recovery_seconds"
    with pytest.raises(ValidationError):
        Scheduler(queue, concurrency=0)


# ------------------------------------------------------------------ run loop
class TaskSignalStore(MemoryStore):
    """Sets ``written`` whenever a task object is created, ``listed`` on every LIST."""

    def __init__(self) -> None:
        super().__init__()
        self.written = asyncio.Event()
        self.listed = asyncio.Event()

    async def list(self, prefix: str, *, start_after: str | None = None, limit: int = 1000) -> Any:
        self.listed.set()
        return await super().list(prefix, start_after=start_after, limit=limit)

    async def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        etag = await super().put(key, data, if_match=if_match, if_none_match=if_none_match)
        if key.startswith("tasks/"):
            self.written.set()
        return etag


async def test_run_fires_due_slots_and_stops_on_the_event(clock: FakeClock) -> None:
    store = TaskSignalStore()
    q = await connect(store=store, clock=clock)
    await q.create_schedule("m", "t", None, "* * * * *")
    scheduler = Scheduler(q)
    stop = asyncio.Event()
    runner = asyncio.create_task(scheduler.run(interval_seconds=0.01, stop=stop))
    await asyncio.wait_for(store.listed.wait(), timeout=10)  # the first tick (at 12:00) is under way
    assert task_keys(store) == []
    clock.advance(60)  # the store's clock passes 12:01; a later tick of the loop must fire it
    await asyncio.wait_for(store.written.wait(), timeout=10)
    stop.set()
    await asyncio.wait_for(runner, timeout=10)
    assert len(task_keys(store)) == 1 and scheduler.stats["fired"] == 1
    assert scheduler.next_due == T0 + timedelta(minutes=2)


class ExplodingListStore(TaskSignalStore):
    """Raises a non-storage exception (a bug) from the first ``explode`` LISTs of the
    schedule definitions."""

    explode = 0

    async def list(self, prefix: str, *, start_after: str | None = None, limit: int = 1000) -> Any:
        if prefix.startswith("schedules/defs/") and self.explode:
            self.explode -= 1
            raise RuntimeError("boom")
        return await super().list(prefix, start_after=start_after, limit=limit)


async def test_run_logs_an_unexpected_exception_and_keeps_ticking(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = ExplodingListStore()
    q = await connect(store=store, clock=clock)
    await q.create_schedule("m", "t", None, "* * * * *")
    store.explode = 2
    clock.advance(60)
    scheduler = Scheduler(q)
    stop = asyncio.Event()
    with caplog.at_level(logging.ERROR, "buquet.scheduler"):
        runner = asyncio.create_task(scheduler.run(interval_seconds=0.01, stop=stop))
        await asyncio.wait_for(store.written.wait(), timeout=10)
        stop.set()
        await asyncio.wait_for(runner, timeout=10)
    assert store.explode == 0 and scheduler.stats["fired"] == 1
    assert "scheduler tick failed unexpectedly" in caplog.text and "RuntimeError: boom" in caplog.text


async def test_run_validates_its_interval(queue: Queue) -> None:
    with pytest.raises(ValidationError):
        await Scheduler(queue).run(interval_seconds=0)


# ---------------------------------------------------------------------- CLI
@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> tuple[CliRunner, Any, MemoryStore, FakeClock]:
    """The CLI wired to one in-memory bucket and a fake clock."""
    import buquet.cli_common as cli_common
    from buquet.cli import cli

    store, clock = MemoryStore(), FakeClock()

    async def open_queue(ctx: Any, read_only: bool = False) -> Queue:
        return await connect(store=store, clock=clock, read_only=read_only)

    monkeypatch.setattr(cli_common, "open_queue", open_queue)
    return CliRunner(), cli, store, clock


def test_cli_schedule_round_trip(cli_env: tuple[CliRunner, Any, MemoryStore, FakeClock]) -> None:
    runner, cli, store, clock = cli_env
    r = runner.invoke(cli, ["schedule", "create", "nightly", "backup", "30 2 * * *", "--input", '{"db": "main"}',
                            "--timezone", "America/New_York", "--catch-up", "all", "--catch-up-limit", "3"])
    assert r.exit_code == 0, r.output
    assert "nightly" in r.output and "all (up to 3)" in r.output
    assert "next run" in r.output and "2026-03-02 02:30:00 EST = 2026-03-02 07:30:00Z in 19h30m" in r.output
    runner.invoke(cli, ["schedule", "create", "hourly", "ping", "@hourly"])

    r = runner.invoke(cli, ["schedule", "list"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split()[:5] == ["ID", "TASK", "TYPE", "CRON", "TIMEZONE"] and "NEXT RUN (UTC)" in lines[0]
    assert lines[1].startswith("hourly") and lines[2].startswith("nightly")
    assert "2026-03-01 13:00:00Z" in lines[1]

    r = runner.invoke(cli, ["schedule", "get", "nightly", "--json"])
    doc = json.loads(r.output)
    assert (doc["cron"], doc["timezone"], doc["input"], doc["last_run"]["next_run_at"]) == (
        "30 2 * * *", "America/New_York", {"db": "main"}, "2026-03-02T07:30:00.000Z")

    r = runner.invoke(cli, ["schedule", "disable", "nightly"])
    assert r.exit_code == 0 and r.output.strip() == "schedule nightly disabled"
    r = runner.invoke(cli, ["schedule", "get", "nightly"])
    assert "enabled       no" in r.output and "- (disabled)" in r.output
    r = runner.invoke(cli, ["schedule", "enable", "nightly"])
    assert r.output.strip() == "schedule nightly enabled; next run 2026-03-02 07:30:00Z"

    r = runner.invoke(cli, ["schedule", "trigger", "nightly"])
    assert r.exit_code == 0
    task_id = r.output.strip()
    assert str(uuid.UUID(task_id)) == task_id and any(task_id in k for k in store.keys())
    r = runner.invoke(cli, ["schedule", "get", "nightly"])
    assert f"(trigger) task {task_id}" in r.output

    clock.advance(3600)
    r = runner.invoke(cli, ["scheduler", "--once"])
    assert r.exit_code == 0, r.output
    assert len(r.output.split()) == 1  # the 13:00 slot of "hourly"

    r = runner.invoke(cli, ["schedule", "delete", "nightly"])
    assert r.exit_code == 0 and r.output.strip() == "schedule nightly deleted"
    r = runner.invoke(cli, ["schedule", "list"])
    assert "nightly" not in r.output and "hourly" in r.output


def test_cli_errors(cli_env: tuple[CliRunner, Any, MemoryStore, FakeClock]) -> None:
    runner, cli, store, _ = cli_env
    r = runner.invoke(cli, ["schedule", "create", "x", "t", "61 * * * *"])
    assert r.exit_code == 2 and "cron" in r.output
    r = runner.invoke(cli, ["schedule", "create", "x", "t", "@daily", "--timezone", "Nowhere/City"])
    assert r.exit_code == 2 and "unknown time zone 'Nowhere/City'" in r.output
    r = runner.invoke(cli, ["schedule", "create", "x", "t", "@daily", "--input", "{bad"])
    assert r.exit_code == 2 and "--input" in r.output
    assert not [k for k in store.keys() if k.startswith("schedules/")]
    assert runner.invoke(cli, ["schedule", "create", "x", "t", "@daily"]).exit_code == 0
    r = runner.invoke(cli, ["schedule", "create", "x", "t", "@daily"])
    assert r.exit_code == 1 and "already exists" in r.output
    for cmd in ("get", "enable", "disable", "delete", "trigger"):
        r = runner.invoke(cli, ["schedule", cmd, "nope"])
        assert r.exit_code == 1 and "no schedule 'nope'" in r.output, cmd
    r = runner.invoke(cli, ["schedule", "list"])
    assert r.exit_code == 0


def test_cli_list_empty(cli_env: tuple[CliRunner, Any, MemoryStore, FakeClock]) -> None:
    runner, cli, _, _ = cli_env
    r = runner.invoke(cli, ["schedule", "list"])
    assert r.exit_code == 0 and r.output.strip() == "no schedules"
