"""The task protocol layer: pure transitions and decisions (no store), and the
regression tests of issue 7's engine defects on the in-memory store, with a store
wrapper that injects crashes, lost responses and transient errors."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from buquet import (
    MemoryStore,
    Monitor,
    PermanentError,
    Queue,
    RetryPolicy,
    StorageError,
    TaskStatus,
    ValidationError,
    Worker,
    WorkerRunOptions,
    connect,
)
from buquet import _transitions as tr
from buquet._tasks import Lease
from buquet.errors import CorruptObject
from tests.conftest import FakeClock

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def quiet(**kw: Any) -> WorkerRunOptions:
    base: dict[str, Any] = dict(exit_when_idle=True, with_monitor=False, handle_signals=False, delete_flush_ms=0)
    base.update(kw)
    return WorkerRunOptions(**base)


def pending_task(**changes: Any) -> Any:
    task = tr.new_pending("0193a4f2-7c1e-7d2a-9b3c-4d5e6f708192", "t", 1, shard="0", timeout_seconds=30,
                          max_retries=2, retry_policy=None, available_at=T0, now=T0)
    return tr.claimed(task, "w", T0, 30) if changes.pop("running", False) else task


# ------------------------------------------------------------ pure decisions
def test_decide_claim_covers_every_state() -> None:
    task = pending_task()
    assert tr.decide_claim(task, T0).verdict == tr.ClaimVerdict.CLAIM
    assert tr.decide_claim(task, T0 - timedelta(seconds=1)).verdict == tr.ClaimVerdict.NOT_DUE
    running = pending_task(running=True)
    assert tr.decide_claim(running, T0 + timedelta(seconds=10)) == tr.ClaimDecision(tr.ClaimVerdict.LEASED, running.lease_expires_at)
    assert tr.decide_claim(running, T0 + timedelta(seconds=31)).verdict == tr.ClaimVerdict.CLAIM
    exhausted = tr.claimed(tr.claimed(running, "w", T0, 30), "w", T0, 30)  # attempt 3 of 3
    assert tr.decide_claim(exhausted, T0 + timedelta(seconds=31)).verdict == tr.ClaimVerdict.FAIL_EXHAUSTED
    assert tr.decide_claim(tr.completed(running, T0, 1), T0).verdict == tr.ClaimVerdict.FINAL
    assert tr.decide_claim(task, T0, max_timeout_seconds=10).verdict == tr.ClaimVerdict.TOO_LONG


def test_after_failure_and_after_expired_lease() -> None:
    running = pending_task(running=True)
    retry = tr.after_failure(running, True, T0, random.Random(1))
    assert retry.step == tr.NextStep.RETRY and T0 + timedelta(milliseconds=750) <= retry.available_at <= T0 + timedelta(milliseconds=1250)
    assert tr.after_failure(running, False, T0).step == tr.NextStep.FAIL
    # an expired lease keeps the task's place in line
    assert tr.after_expired_lease(running) == tr.AfterFailure(tr.NextStep.RETRY, running.available_at)
    last = tr.claimed(tr.claimed(running, "w", T0, 30), "w", T0, 30)
    assert tr.after_expired_lease(last).step == tr.NextStep.FAIL


def test_every_transition_appends_exactly_one_history_entry() -> None:
    task = pending_task()
    steps = [
        lambda t: tr.claimed(t, "w", T0, 30),
        lambda t: tr.requeued(t, T0, T0, "boom", traceback="Traceback ..."),
        lambda t: tr.claimed(t, "w", T0, 30),
        lambda t: tr.failed(t, T0, "bad"),
        lambda t: tr.archived(t, T0),
    ]
    for step in steps:
        new = step(task)
        assert len(new.history) == len(task.history) + 1
        assert new.history[-1]["status"] == new.status.value
        task = new
    assert task.history[2]["traceback"] == "Traceback ..." and task.history[2]["error"] == "boom"
    assert tr.extended(task, T0, T0).history == task.history  # heartbeats are not transitions


def test_describe_exception_survives_a_str_that_raises() -> None:
    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert tr.describe_exception(Nasty()).startswith("Nasty: <str() of the exception raised RuntimeError>")
    assert "Nasty" in tr.format_traceback(Nasty())
    assert len(tr.describe_exception(ValueError("x" * 10_000))) <= tr.MAX_ERROR_CHARS


# ------------------------------------------------------------ retry policy bounds
def test_retry_policy_never_overflows_and_rejects_absurd_values() -> None:
    assert RetryPolicy(multiplier=10).delay_ms(400) <= 60_000
    assert RetryPolicy(multiplier=1000, jitter_percent=0).delay_ms(10**6) == 60_000
    for bad in (dict(multiplier=1e200), dict(initial_interval_ms=10**15), dict(multiplier=float("nan")),
                dict(max_interval_ms=float("inf")), dict(jitter_percent=-0.1)):
        with pytest.raises(ValidationError):
            RetryPolicy(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["lease_seconds", "shutdown_grace_seconds", "monitor_check_interval_s",
                                   "scheduler_interval_seconds"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_worker_options_reject_non_finite_numbers(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as info:
        WorkerRunOptions(**{field: value}).validate()
    assert info.value.field == field


async def test_schedule_at_past_year_9999_is_a_validation_error(queue: Queue) -> None:
    late = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))
    with pytest.raises(ValidationError) as info:
        await queue.submit("t", None, schedule_at=late)
    assert info.value.field == "schedule_at"
    with pytest.raises(ValidationError):
        await queue.submit("t", None, schedule_at="9999-12-31T23:30:00-05:00")


# -------------------------------------------------------------------- task ids
async def test_task_ids_are_uuid7_and_malformed_ids_are_validation_errors(queue: Queue) -> None:
    import uuid

    task = await queue.submit("t", None)
    parsed = uuid.UUID(task.id)
    assert str(parsed) == task.id and parsed.version == 7
    assert await queue.get(task.id.upper()) is not None  # canonical form is lower case
    assert await queue.get(str(uuid.uuid4())) is None
    assert await queue.get_history(str(uuid.uuid4())) == []
    for bad in ("", "nope", task.id[:-1], "0" * 32, None, 7):
        with pytest.raises(ValueError):
            await queue.get(bad)  # type: ignore[arg-type]
    later = await queue.submit("t", None)
    assert later.id > task.id or later.id[:13] == task.id[:13]  # time-ordered


# ------------------------------------------------------------ a faulty store
class Crash(BaseException):
    """The process died here (nothing after this write happens)."""


class FaultyStore(MemoryStore):
    """A MemoryStore whose PUTs can be made to fail, in the ways a real network fails.

    ``plan`` maps the number of a PUT (1-based, counted over all keys matching
    ``match``) to a fault: ``"before"`` (transient error, not applied), ``"lost"``
    (applied, then a transient error: the response was lost), ``"crash"`` (applied,
    then the process dies: :class:`Crash`)."""

    def __init__(self) -> None:
        super().__init__()
        self.plan: dict[int, str] = {}
        self.match = ""
        self.puts = 0
        self.injected: list[tuple[int, str, str]] = []

    def arm(self, plan: dict[int, str], match: str = "") -> None:
        """Inject ``plan`` counting PUTs from now on, over keys starting with ``match``."""
        self.plan, self.match, self.puts = plan, match, 0

    async def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        fault = None
        if key.startswith(self.match):
            self.puts += 1
            fault = self.plan.get(self.puts)
        if fault == "before":
            self.injected.append((self.puts, fault, key))
            raise StorageError(f"injected 503 before PUT {key}", key, status=503)
        etag = await super().put(key, data, if_match=if_match, if_none_match=if_none_match)
        if fault == "lost":
            self.injected.append((self.puts, fault, key))
            raise StorageError(f"injected lost response of PUT {key}", key, transient=True)
        if fault == "crash":
            self.injected.append((self.puts, fault, key))
            raise Crash(key)
        return etag


@pytest.fixture
def faulty() -> FaultyStore:
    return FaultyStore()


async def settle(queue: Queue, clock: FakeClock, task_id: str, handler: Any = None, rounds: int = 6) -> Any:
    """Advance the clock past any lease and run the monitor and a worker a few times:
    what a live deployment does after a crash."""
    worker = Worker(queue, "survivor", queue.shards)
    worker.task("job")(handler or (lambda x: x * 2))
    for _ in range(rounds):
        clock.advance(120)
        await Monitor(queue).sweep()
        await worker.run(quiet(idle_horizon_ms=0))
        task = await queue.get(task_id)
        if task is not None and task.status.is_final:
            return task
    return await queue.get(task_id)


# ------------------------------------------ defect 1: reachability under crashes
async def _run_attempt_with_heartbeats(queue: Queue, task_id: str, beats: int) -> None:
    shard = queue.shard_of(task_id)
    now = await queue.time()
    [marker] = [m for m in await queue.protocol.due_markers(shard, now, 10) if m.task_id == task_id]
    lease = await queue.protocol.claim(marker, "doomed", 10, now)
    assert isinstance(lease, Lease)
    for _ in range(beats):
        keys = await queue.protocol.extend(lease, 10)
        await queue.store.delete_many(keys)
    await queue.protocol.store.delete_many(await queue.protocol.complete(lease, 42))


@pytest.mark.parametrize("crash_at", range(1, 8))
async def test_a_crash_between_any_two_writes_never_strands_a_task(faulty: FaultyStore, clock: FakeClock, crash_at: int) -> None:
    """Submit, claim, two heartbeats, complete — the process dies right after write
    number ``crash_at``; afterwards the monitor and a worker bring the task to a final
    state (the invariant of docs/protocol.md)."""
    queue = await connect(store=faulty, clock=clock)
    faulty.arm({crash_at: "crash"})
    task_id = None
    try:
        task = await queue.submit("job", 21)
        task_id = task.id
        await _run_attempt_with_heartbeats(queue, task_id, beats=2)
    except Crash:
        pass
    if task_id is None:  # died inside submit: find the id from the marker it wrote
        [key] = [k for k in faulty.keys() if k.startswith("ready/")]
        task_id = queue.layout.parse_ready(key).task_id  # type: ignore[union-attr]
    faulty.arm({})
    final = await settle(queue, clock, task_id)
    assert final is not None and final.status in (TaskStatus.Completed,), (crash_at, faulty.injected, final)
    assert final.output in (42, 42 * 2 if final.output != 42 else 42)
    await asyncio.sleep(0)
    assert not [k for k in faulty.keys() if k.startswith(("ready/", "leases/"))]


async def test_monitor_keeps_the_entry_of_a_running_task_whose_newer_entry_is_missing(queue: Queue, clock: FakeClock) -> None:
    """The old bug: a heartbeat moved the task's lease end, its new lease entry never
    got written, and the monitor deleted the older entry as a leftover."""
    task = await queue.submit("job", 1)
    now = await queue.time()
    [marker] = await queue.protocol.due_markers(task.shard, now, 10)
    lease = await queue.protocol.claim(marker, "w", 10, now)
    assert isinstance(lease, Lease)
    await queue.store.delete_many(await queue.protocol.extend(lease, 10))  # entry E1, marker gone
    # a later heartbeat's task write lands, its entry does not (the old write order)
    await queue.protocol.write(lease, lambda t: tr.extended(t, now, now + timedelta(seconds=40)))
    clock.advance(15)  # E1 expired, the lease (40 s) has not
    await Monitor(queue).sweep()
    entries = [k for k in queue.store.keys() if k.startswith("leases/")]  # type: ignore[attr-defined]
    assert entries, "the task is no longer reachable from any index"
    clock.advance(60)  # the worker is dead: the lease lapses
    await Monitor(queue).sweep()
    assert (await queue.get(task.id)).status == TaskStatus.Pending  # type: ignore[union-attr]


async def test_handler_finishing_during_a_heartbeat_write_keeps_its_result(store: MemoryStore) -> None:
    """The heartbeat's task write is in flight when the handler returns: the worker
    must not cancel it and then mistake its own write for a lost lease."""
    queue = await connect(store=store)
    task = await queue.submit("job", 1, max_retries=0)
    hb_in_flight = asyncio.Event()
    release = asyncio.Event()
    task_key = queue.layout.task(task.shard, task.id)
    original_put = store.put
    puts = 0

    async def gated_put(key: str, data: bytes, **kw: Any) -> str:
        nonlocal puts
        if key == task_key and kw.get("if_match"):
            puts += 1
            if puts == 2:  # 1 = claim, 2 = first heartbeat
                etag = await original_put(key, data, **kw)
                hb_in_flight.set()
                await release.wait()  # the response arrives after the handler returned
                return etag
        return await original_put(key, data, **kw)

    store.put = gated_put  # type: ignore[method-assign]
    worker = Worker(queue, "w", queue.shards)

    @worker.task("job")
    async def job(x: int) -> int:
        await hb_in_flight.wait()
        asyncio.get_running_loop().call_later(0.05, release.set)
        return x + 1

    await asyncio.wait_for(worker.run(quiet(lease_seconds=1)), timeout=20)
    final = await queue.get(task.id)
    assert final is not None and final.status == TaskStatus.Completed and final.output == 2, final
    assert worker.stats.get("lease_lost", 0) == 0


# ------------------------------------------------- defect 2: ambiguous writes
@pytest.mark.parametrize("fault", ["lost", "before"])
@pytest.mark.parametrize("which", [1, 2, 3])
async def test_lost_responses_on_task_writes_are_recognised(faulty: FaultyStore, clock: FakeClock, fault: str, which: int) -> None:
    """Write ``which`` of the task object (1 = submit, 2 = claim, 3 = complete) fails
    ambiguously; the writer retries with the identical body, recognises its own write,
    and the task completes in one attempt."""
    queue = await connect(store=faulty, clock=clock)
    faulty.arm({which: fault}, "tasks/")
    task = await queue.submit("job", 5)
    worker = Worker(queue, "w", queue.shards)
    worker.task("job")(lambda x: x * 2)
    await worker.run(quiet())
    final = await queue.get(task.id)
    assert faulty.injected, "the fault was not injected"
    assert final is not None and final.status == TaskStatus.Completed and final.output == 10
    assert final.attempt == 1 and worker.stats.get("lease_lost", 0) == 0
    assert [h["status"] for h in final.history] == ["pending", "running", "completed"]


async def test_lost_response_on_a_heartbeat_does_not_cancel_a_healthy_handler(faulty: FaultyStore) -> None:
    queue = await connect(store=faulty)
    task = await queue.submit("job", 1, max_retries=0)
    faulty.arm({2: "lost"}, queue.layout.task(task.shard, task.id))  # 1 = claim, 2 = first heartbeat
    worker = Worker(queue, "w", queue.shards)

    @worker.task("job")
    async def job(x: int) -> int:
        await asyncio.sleep(0.8)  # two heartbeats at lease 1 s
        return x

    await asyncio.wait_for(worker.run(quiet(lease_seconds=1)), timeout=20)
    final = await queue.get(task.id)
    assert faulty.injected and final is not None and final.status == TaskStatus.Completed, (faulty.injected, final)


# ----------------------------------------------------- defect 3: submit under faults
async def test_submit_retries_and_recognises_its_own_lost_write(faulty: FaultyStore, clock: FakeClock) -> None:
    queue = await connect(store=faulty, clock=clock)
    faulty.arm({1: "lost", 2: "before"}, "tasks/")
    task = await queue.submit("job", 1)
    assert (await queue.get(task.id)).status == TaskStatus.Pending  # type: ignore[union-attr]
    assert len([k for k in faulty.keys() if k.startswith("tasks/")]) == 1


async def test_submit_that_still_fails_names_the_task_id(faulty: FaultyStore, clock: FakeClock) -> None:
    queue = await connect(store=faulty, clock=clock)
    faulty.arm({i: "before" for i in range(1, 50)}, "tasks/")
    with pytest.raises(StorageError) as info:
        await queue.submit("job", 1)
    task_id = info.value.task_id  # type: ignore[attr-defined]
    assert task_id in str(info.value)
    faulty.arm({})
    # the marker carries the task: it runs all the same, exactly once
    final = await settle(queue, clock, task_id)
    assert final is not None and final.status == TaskStatus.Completed and final.output == 2


# ------------------------------------------------ defect 4: corrupt task objects
@pytest.mark.parametrize("field,value", [("available_at", 123), ("created_at", None), ("status", "weird"),
                                         ("attempt", "1"), ("history", {"a": 1}), ("retry_policy", [1])])
async def test_a_corrupt_task_never_stops_recovery_get_names_it_and_list_skips_it(
    queue: Queue, clock: FakeClock, field: str, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    good, bad = await queue.submit("job", 1), await queue.submit("job", 2)
    now = await queue.time()
    for task in (good, bad):
        [m] = [m for m in await queue.protocol.due_markers(task.shard, now, 10) if m.task_id == task.id]
        lease = await queue.protocol.claim(m, "dead", 10, now)
        assert isinstance(lease, Lease)
        await queue.store.delete_many(await queue.protocol.extend(lease, 10))
    key = queue.layout.task(bad.shard, bad.id)
    doc = json.loads((await queue.store.get(key)).data)
    doc[field] = value
    await queue.store.put(key, json.dumps(doc).encode())
    clock.advance(60)
    assert await Monitor(queue).sweep() == 1  # the good one is recovered, the bad one skipped
    assert (await queue.get(good.id)).status == TaskStatus.Pending  # type: ignore[union-attr]
    with pytest.raises(CorruptObject) as info:
        await queue.get(bad.id)
    assert info.value.field == field and key in str(info.value)
    listed = [t.id for s in queue.shards for t in await queue.list(s)]
    assert good.id in listed and bad.id not in listed


async def test_background_loops_log_unexpected_errors_and_keep_running(caplog: pytest.LogCaptureFixture) -> None:
    from buquet._loops import every

    calls = 0
    stop = asyncio.Event()

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise AttributeError("'int' object has no attribute 'tzinfo'")
        if calls == 3:
            stop.set()

    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(every(0.01, step, stop, name="monitor sweep", logger=logging.getLogger("t")), 5)
    assert calls == 3
    [record] = [r for r in caplog.records if "monitor sweep" in r.getMessage()]
    assert record.exc_info is not None


# --------------------------------------- defect 5/7/12: what handlers raise
@pytest.mark.parametrize("kind", ["async", "sync"])
@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
async def test_systemexit_and_keyboardinterrupt_in_a_handler_are_failed_attempts(
    live_queue: Queue, kind: str, exc_type: type[BaseException]
) -> None:
    bad = await live_queue.submit("bad", None, max_retries=0)
    good = await live_queue.submit("good", 1)
    worker = Worker(live_queue, "w", live_queue.shards)

    def boom(_: Any) -> None:
        raise exc_type(3)

    async def aboom(_: Any) -> None:
        raise exc_type(3)

    worker.task("bad")(boom if kind == "sync" else aboom)
    worker.task("good")(lambda x: x)
    await asyncio.wait_for(worker.run(quiet()), timeout=20)
    failed = await live_queue.get(bad.id)
    assert failed is not None and failed.status == TaskStatus.Failed and failed.attempt == 1
    assert failed.last_error.startswith(exc_type.__name__)  # type: ignore[union-attr]
    assert (await live_queue.get(good.id)).status == TaskStatus.Completed  # type: ignore[union-attr]


async def test_handler_errors_are_logged_with_traceback_and_kept_in_history(
    live_queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError("str broke")

    task = await live_queue.submit("job", None, max_retries=1, retry_policy=RetryPolicy(initial_interval_ms=0, jitter_percent=0))
    worker = Worker(live_queue, "w", live_queue.shards)
    calls = 0

    @worker.task("job")
    def job(_: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Nasty()
        raise PermanentError("gave up")

    with caplog.at_level(logging.ERROR, logger="buquet"):
        await asyncio.wait_for(worker.run(quiet()), timeout=20)
    final = await live_queue.get(task.id)
    assert final is not None and final.status == TaskStatus.Failed and final.last_error == "PermanentError: gave up"
    retried = [h for h in final.history if h["status"] == "pending" and h.get("error")]
    assert retried[0]["error"].startswith("Nasty: <str() of the exception raised RuntimeError>")
    assert "Traceback (most recent call last)" in retried[0]["traceback"] and "raise Nasty()" in retried[0]["traceback"]
    assert any(r.exc_info and r.exc_info[0] is Nasty for r in caplog.records)


# --------------------------------------------- defect 14: ready order by due time
async def test_recovered_and_retried_tasks_keep_their_place_in_line(queue: Queue, clock: FakeClock) -> None:
    first = await queue.submit("job", "first")
    clock.advance(1)
    now = await queue.time()
    [m] = await queue.protocol.due_markers(first.shard, now, 10)
    lease = await queue.protocol.claim(m, "dead", 5, now)
    assert isinstance(lease, Lease)
    await queue.store.delete_many(await queue.protocol.extend(lease, 5))
    clock.advance(2)
    later = [await queue.submit("job", f"later-{i}") for i in range(5)]
    clock.advance(10)  # the dead worker's lease lapsed
    await Monitor(queue).sweep()
    order: list[str] = []
    worker = Worker(queue, "w", queue.shards)

    @worker.task("job")
    async def job(x: str) -> str:
        order.append(x)
        return x

    await worker.run(quiet(max_concurrency=1))
    assert order[0] == "first", order
    assert sorted(order[1:]) == sorted(t.input for t in later)
