"""Many schedulers, one bucket: exactly one task per slot, crash recovery, request cost.

The in-memory store never suspends inside a call, so plain ``asyncio.gather`` would run
each tick to completion one after another. :class:`InterleavingStore` yields to the
event loop a random number of times before every request, so concurrent ticks really
interleave between their requests (as network I/O would make them).
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

import pytest

from buquet import MemoryStore, StorageError, connect
from buquet.queue import Queue
from buquet.scheduler import Scheduler, tick_once
from buquet.schedules import CatchUp
from tests.conftest import FakeClock

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class InterleavingStore(MemoryStore):
    """MemoryStore that yields to the event loop 0–3 times before each request."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self._rng = random.Random(seed)

    async def _yield(self) -> None:
        for _ in range(self._rng.randint(0, 3)):
            await asyncio.sleep(0)

    async def get(self, key: str) -> Any:
        await self._yield()
        return await super().get(key)

    async def head(self, key: str) -> Any:
        await self._yield()
        return await super().head(key)

    async def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        await self._yield()
        return await super().put(key, data, if_match=if_match, if_none_match=if_none_match)

    async def list(self, prefix: str, *, start_after: str | None = None, limit: int = 1000) -> Any:
        await self._yield()
        return await super().list(prefix, start_after=start_after, limit=limit)

    async def delete_many(self, keys: Sequence[str]) -> None:
        await self._yield()
        await super().delete_many(keys)


def task_keys(store: MemoryStore) -> list[str]:
    return [k for k in store.keys() if k.startswith("tasks/")]


def slot_of(task_id: str) -> datetime:
    """Slot tasks have UUIDv7 ids whose 48-bit time field is the slot's epoch ms."""
    parsed = uuid.UUID(task_id)
    assert parsed.version == 7 and str(parsed) == task_id
    return datetime.fromtimestamp((parsed.int >> 80) / 1000, UTC)


async def test_eight_schedulers_ticking_together_submit_one_task_per_slot() -> None:
    clock = FakeClock(T0)
    store = InterleavingStore(seed=7)
    admin = await connect(store=store, clock=clock)
    specs = {"every-minute": "* * * * *", "every-5": "*/5 * * * *", "hourly-ny": "@hourly"}
    schedules = {sid: await admin.create_schedule(sid, "t", {"id": sid}, cron, timezone="America/New_York")
                 for sid, cron in specs.items()}
    queues = [await connect(store=store, clock=clock) for _ in range(8)]
    schedulers = [Scheduler(q, scheduler_id=f"s{i}") for i, q in enumerate(queues)]

    returned: list[str] = []
    end = T0 + timedelta(hours=2, minutes=1)
    while clock.now < end:
        clock.advance(20)
        results = await asyncio.gather(*(s.tick() for s in schedulers))
        returned += [t.id for batch in results for t in batch]

    expected = {sid: s.slots_between(T0, clock.now) for sid, s in schedules.items()}
    assert [len(v) for v in expected.values()] == [121, 24, 2]
    stored = [k.rsplit("/", 1)[1].removesuffix(".json") for k in task_keys(store)]
    assert sorted(returned) == sorted(stored)  # every task returned by exactly one scheduler
    by_schedule: dict[str, list[datetime]] = {sid: [] for sid in specs}
    for tid in stored:
        task = await admin.get(tid)
        assert task is not None
        by_schedule[task.input["id"]].append(slot_of(tid))
    for sid in specs:
        assert sorted(by_schedule[sid]) == expected[sid], sid
    assert sum(s.stats.get("fired", 0) for s in schedulers) == sum(len(v) for v in expected.values())
    assert sum(s.stats.get("lost", 0) for s in schedulers) > 0  # they did contend
    assert all(s.stats.get("errors", 0) == 0 for s in schedulers)


async def test_duplicate_lambda_invocations_fire_a_slot_once() -> None:
    clock = FakeClock(T0)
    store = InterleavingStore(seed=3)
    q = await connect(store=store, clock=clock)
    await q.create_schedule("report", "t", None, "*/10 * * * *")
    at = T0 + timedelta(minutes=10, seconds=2)
    results = await asyncio.gather(*(tick_once(q, at) for _ in range(6)))
    assert sum(len(r) for r in results) == 1
    assert len(task_keys(store)) == 1
    # the same invocation retried later fires nothing either
    assert await tick_once(q, at + timedelta(seconds=30)) == []
    run = await q.get_schedule_last_run("report")
    assert run is not None and run.last_slot_at == T0 + timedelta(minutes=10)
    assert run.next_run_at == T0 + timedelta(minutes=20)


class FailingStore(MemoryStore):
    """Fails PUTs whose key starts with one of ``fail_prefixes`` while ``failing``."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self.fail_prefixes: tuple[str, ...] = ("ready/",)

    async def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        if self.failing and key.startswith(self.fail_prefixes):
            raise StorageError("injected failure", key)
        return await super().put(key, data, if_match=if_match, if_none_match=if_none_match)


async def test_slot_claimed_by_a_scheduler_that_died_before_submitting_is_recovered_once() -> None:
    clock = FakeClock(T0)
    store = FailingStore()
    q = await connect(store=store, clock=clock)
    await q.create_schedule("job", "t", {"x": 1}, "*/5 * * * *")
    slot = T0 + timedelta(minutes=5)

    store.failing = True  # scheduler A claims the slot, then its submit fails (crash)
    a = Scheduler(q, scheduler_id="a")
    assert await a.tick(slot + timedelta(seconds=1)) == []
    assert a.stats["errors"] == 1
    ledger_key = q.schedules.layout.schedule_slot("job", slot)
    assert ledger_key in store.keys() and task_keys(store) == []
    store.failing = False

    b = Scheduler(q, scheduler_id="b", recovery_seconds=30)
    # within the recovery delay the claim may still be in flight: B leaves it alone
    assert await b.tick(slot + timedelta(seconds=20)) == []
    assert b.stats["lost"] == 1 and task_keys(store) == []
    # after it, B submits the slot's task under the id the ledger names
    recovered = await b.tick(slot + timedelta(seconds=40))
    assert len(recovered) == 1 and b.stats["recovered"] == 1
    planned = json.loads((await store.get(ledger_key)).data)["task_id"]
    assert recovered[0].id == planned and slot_of(planned) == slot
    # nobody fires it again, and the cursor moved on
    c = Scheduler(q, scheduler_id="c")
    assert await c.tick(slot + timedelta(seconds=50)) == []
    assert await a.tick(slot + timedelta(seconds=55)) == []
    assert len(task_keys(store)) == 1
    run = await q.get_schedule_last_run("job")
    assert run is not None and run.last_slot_at == slot and run.last_task_id == planned


class GatedStore(MemoryStore):
    """Holds the first PUT of a ready marker until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.blocked = asyncio.Event()
        self._armed = True

    async def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        if self._armed and key.startswith("ready/"):
            self._armed = False
            self.blocked.set()
            await self.gate.wait()
        return await super().put(key, data, if_match=if_match, if_none_match=if_none_match)


async def test_a_stalled_claimer_and_a_recovery_still_make_one_task() -> None:
    clock = FakeClock(T0)
    store = GatedStore()
    q = await connect(store=store, clock=clock)
    await q.create_schedule("job", "t", None, "*/5 * * * *")
    slot = T0 + timedelta(minutes=5)
    a = Scheduler(q, scheduler_id="a")
    stalled = asyncio.create_task(a.tick(slot))
    await store.blocked.wait()  # A claimed the slot and hangs in its submit
    b = Scheduler(q, scheduler_id="b", recovery_seconds=30)
    recovered = await b.tick(slot + timedelta(seconds=31))
    assert len(recovered) == 1
    store.gate.set()  # A wakes up and finishes its submit: same task id, same object
    late = await stalled
    assert [t.id for t in late] == [recovered[0].id]
    assert len(task_keys(store)) == 1
    assert len([k for k in store.keys() if k.startswith("ready/")]) == 2  # a duplicate marker, harmless


async def test_failing_state_write_after_submit_does_not_refire() -> None:
    clock = FakeClock(T0)
    store = FailingStore()
    store.fail_prefixes = ("schedules/runs/",)
    q = await connect(store=store, clock=clock)
    await q.create_schedule("job", "t", None, "*/5 * * * *")
    slot = T0 + timedelta(minutes=5)
    store.failing = True
    a = Scheduler(q)
    fired = await a.tick(slot)
    assert len(fired) == 1 and a.stats["errors"] == 1  # submitted, but the cursor write failed
    store.failing = False
    for s in (10, 40, 70):  # fresh claim, then settled once recovery sees the task exists
        assert await Scheduler(q).tick(slot + timedelta(seconds=s)) == []
    assert len(task_keys(store)) == 1
    run = await q.get_schedule_last_run("job")
    assert run is not None and run.last_slot_at == slot


async def test_requests_per_tick() -> None:
    clock = FakeClock(T0)
    store = MemoryStore()
    q = await connect(store=store, clock=clock)
    await q.create_schedule("five", "t", None, "*/5 * * * *")
    await q.create_schedule("hourly", "t", None, "@hourly")
    await q.create_schedule("daily", "t", None, "0 9 * * *", timezone="Europe/London")
    s = Scheduler(q)

    def cost() -> dict[str, int]:
        counts = dict(store.request_counts)
        store.request_counts.clear()
        return counts

    store.request_counts.clear()
    await s.tick(T0 + timedelta(seconds=30))
    assert cost() == {"list": 1, "get": 3}  # cold: the definitions are read once
    for minute in (1, 2, 3):
        await s.tick(T0 + timedelta(minutes=minute))
        assert cost() == {"list": 1}  # warm, nothing due: one LIST
    await s.tick(T0 + timedelta(minutes=5, seconds=1))
    # one slot: GET run state, PUT ledger + marker + task + run state
    assert cost() == {"list": 1, "get": 1, "put": 4}
    await s.tick(T0 + timedelta(minutes=10, seconds=1))
    assert cost() == {"list": 1, "get": 1, "put": 4}
    await s.tick(T0 + timedelta(minutes=10, seconds=30))
    assert cost() == {"list": 1}
    await s.tick(T0 + timedelta(hours=1, seconds=1))
    # two slots (*/5 and @hourly at 13:00); the first slot of a new hour of "five" also
    # LISTs its ledger to prune it (nothing old enough to delete yet)
    assert cost() == {"list": 2, "get": 2, "put": 8}
    # a definition changed by someone else is re-read (one GET), nothing else
    await q.disable_schedule("daily")
    store.request_counts.clear()
    await s.tick(T0 + timedelta(hours=1, minutes=1))
    assert cost() == {"list": 1, "get": 1}


async def test_ledger_is_pruned_after_the_retention() -> None:
    from buquet.schedules import LEDGER_RETENTION

    clock = FakeClock(T0)
    store = MemoryStore()
    q = await connect(store=store, clock=clock)
    await q.create_schedule("h", "t", None, "*/30 * * * *")
    s = Scheduler(q)
    prefix = q.schedules.layout.schedule_slots_prefix("h")
    for _ in range(5 * 48):  # five days, a tick per slot
        clock.advance(1800)
        assert len(await s.tick()) == 1
        ledger = [q.schedules.layout.parse_schedule_slot("h", k) for k in store.keys() if k.startswith(prefix)]
        assert clock.now in ledger  # the latest slot's entry is always there
        oldest = min(x for x in ledger if x is not None)
        assert clock.now - oldest <= LEDGER_RETENTION + timedelta(hours=1, minutes=30)
    assert len(task_keys(store)) == 5 * 48


async def test_catch_up_all_after_a_month_outage_is_bounded() -> None:
    clock = FakeClock(T0)
    store = MemoryStore()
    q = await connect(store=store, clock=clock)
    await q.create_schedule("m", "t", None, "* * * * *", catch_up=CatchUp.ALL, catch_up_limit=5)
    back = T0 + timedelta(days=30, seconds=10)
    fired = await Scheduler(q).tick(back)
    latest = back.replace(second=0)
    assert [slot_of(t.id) for t in fired] == [latest - timedelta(minutes=i) for i in range(4, -1, -1)]
    assert await Scheduler(q).tick(back + timedelta(seconds=20)) == []


@pytest.mark.s3
async def test_schedulers_on_seaweedfs_submit_one_task_per_slot(request: pytest.FixtureRequest) -> None:
    factory = request.getfixturevalue("s3_queue_factory")
    clock = FakeClock(T0)
    first: Queue = await factory(clock=clock)
    bucket = first.store.bucket  # type: ignore[attr-defined]
    queues = [first] + [await factory(bucket=bucket, clock=clock) for _ in range(4)]
    try:
        schedules = [await first.create_schedule(f"s{i}", "t", {"i": i}, "*/2 * * * *", timezone="Europe/London")
                     for i in range(3)]
        schedulers = [Scheduler(q) for q in queues]
        end = T0 + timedelta(minutes=8, seconds=30)
        returned = []
        while clock.now < end:
            clock.advance(30)
            for batch in await asyncio.gather(*(s.tick() for s in schedulers)):
                returned += batch
        expected = Counter()
        for s in schedules:
            for slot in s.slots_between(T0, clock.now):
                expected[(s.id, slot)] += 1
        assert len(expected) == 12
        stored: Counter[tuple[str, datetime]] = Counter()
        for shard in first.shards:
            for task in await first.list(shard, limit=1000):
                stored[(f"s{task.input['i']}", slot_of(task.id))] += 1
        assert stored == expected  # exactly one task object per (schedule, slot)
        assert Counter((f"s{t.input['i']}", slot_of(t.id)) for t in returned) == expected
    finally:
        for q in queues:
            await q.close()
