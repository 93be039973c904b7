"""Issue 9: buquet 0.1.0's task control on this engine — cancellation, TaskContext,
reschedules, expiry, payload references, submit_many, hooks, replay and delete, and the
error types and messages 0.1.0 callers match on."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest

from buquet import (
    LeaseLost,
    MemoryStore,
    Monitor,
    Queue,
    RetryPolicy,
    TaskStatus,
    ValidationError,
    Worker,
    WorkerRunOptions,
)
from buquet._tasks import Lease
from buquet.context import TaskContext
from buquet.errors import RescheduleError, TaskNotFound, TaskStateError
from tests.conftest import FakeClock


@pytest.fixture(params=["memory", pytest.param("s3", marks=pytest.mark.s3)])
async def anyq(request: pytest.FixtureRequest, clock: FakeClock) -> Queue:
    """A queue on the in-memory store and on SeaweedFS, with the fake clock. Tests that
    inspect the store's keys use ``queue`` + ``store`` (memory only) instead."""
    from buquet import connect

    if request.param == "memory":
        return await connect(store=request.getfixturevalue("store"), clock=clock)
    factory = request.getfixturevalue("s3_queue_factory")
    return await factory(clock=clock)


@pytest.fixture(params=["memory", pytest.param("s3", marks=pytest.mark.s3)])
async def live_anyq(request: pytest.FixtureRequest) -> Queue:
    """A queue with the real clock (worker runs) on the in-memory store and SeaweedFS."""
    from buquet import connect

    if request.param == "memory":
        return await connect(store=MemoryStore())
    return await request.getfixturevalue("s3_queue_factory")()


def quiet(**kw: Any) -> WorkerRunOptions:
    base: dict[str, Any] = dict(exit_when_idle=True, with_monitor=False, handle_signals=False, delete_flush_ms=0)
    base.update(kw)
    return WorkerRunOptions(**base)


async def claim(queue: Queue, task_id: str, lease_seconds: float = 30) -> Lease:
    now = await queue.time()
    shard = queue.shard_of(task_id)
    [m] = [m for m in await queue.protocol.due_markers(shard, now, 100) if m.task_id == task_id]
    lease = await queue.protocol.claim(m, "w", lease_seconds, now)
    assert isinstance(lease, Lease), lease
    return lease


# ------------------------------------------------------------------ statuses, Task
def test_task_status_has_cancelled_and_expired_and_0_1_0_spellings() -> None:
    assert [s.value for s in TaskStatus] == ["pending", "running", "completed", "failed", "cancelled", "archived", "expired"]
    assert TaskStatus.PENDING is TaskStatus.Pending and repr(TaskStatus.Cancelled) == "TaskStatus.CANCELLED"
    assert str(TaskStatus.Expired) == "expired"
    assert TaskStatus.Cancelled.is_final and TaskStatus.Expired.is_final and not TaskStatus.Running.is_final


async def test_task_to_dict_has_0_1_0_keys_and_helpers(anyq: Queue, clock: FakeClock) -> None:
    task = await anyq.submit("t", {"a": 1}, ttl_seconds=60, max_reschedules=2)
    d = task.to_dict()
    assert list(d) == ["id", "shard", "task_type", "input", "output", "status", "timeout_seconds", "max_retries",
                       "retry_count", "created_at", "available_at", "lease_expires_at", "lease_id", "attempt",
                       "updated_at", "completed_at", "worker_id", "last_error", "input_ref", "output_ref",
                       "reschedule_count", "max_reschedules", "cancel_requested", "cancelled_at", "cancelled_by",
                       "expires_at", "expired_at"]
    assert d["status"] == "pending" and d["created_at"].endswith("+00:00") and d["max_reschedules"] == 2
    assert repr(task) == f"Task(id='{task.id}', type='t', status=pending)"
    assert task.can_retry() and task.is_available_at(clock.now) and not task.is_lease_expired_at(clock.now)
    assert not task.is_expired_at(clock.now) and task.is_expired_at((clock.now + timedelta(seconds=60)).isoformat())
    with pytest.raises(ValueError):
        task.is_expired_at("yesterday")


# ------------------------------------------------------------------ cancellation
async def test_cancel_pending_and_the_0_1_0_messages(queue: Queue, store: MemoryStore) -> None:
    task = await queue.submit("t", 1, schedule_at="2030-01-01T00:00:00Z")  # delayed: still cancellable
    done = await queue.cancel(task.id, reason="not needed", cancelled_by="ops")
    assert done.status == TaskStatus.Cancelled and done.last_error == "not needed" and done.cancelled_by == "ops"
    assert done.cancelled_at is not None
    assert not [k for k in store.keys() if k.startswith(("ready/", "expiries/"))]
    with pytest.raises(RuntimeError, match=r"Cannot cancel task with status Cancelled \(only Pending tasks can be cancelled\)"):
        await queue.cancel(task.id)  # re-cancel raises (Required here)
    with pytest.raises(RuntimeError, match="not found"):
        await queue.cancel(str(uuid.uuid4()))
    with pytest.raises(ValueError, match="Invalid UUID"):
        await queue.request_cancellation("nope")


async def test_cancel_many_checks_ids_first_and_keeps_input_order(anyq: Queue) -> None:
    a, b, c = [await anyq.submit("t", i) for i in range(3)]
    await claim(anyq, b.id)
    with pytest.raises(ValueError):
        await anyq.cancel_many([a.id, "bad"])
    assert (await anyq.get(a.id)).status == TaskStatus.Pending  # type: ignore[union-attr]
    out = await anyq.cancel_many([c.id, b.id, a.id], reason="r")
    assert [t.id for t in out] == [c.id, a.id]


async def test_cancel_by_type_cancels_every_pending_task_of_the_type(anyq: Queue) -> None:
    mine = [await anyq.submit("mine", i) for i in range(25)]
    other = await anyq.submit("other", 0)
    running = mine[0]
    await claim(anyq, running.id)
    result = await anyq.cancel_by_type("mine", reason="cleanup")
    assert sorted(t.id for t in result.cancelled) == sorted(t.id for t in mine[1:])
    assert [tid for tid, _ in result.failed] == [running.id] and "Running" in result.failed[0][1]
    assert (await anyq.get(other.id)).status == TaskStatus.Pending  # type: ignore[union-attr]


async def test_request_cancellation_reaches_the_handler_and_none_ends_cancelled(live_anyq: Queue) -> None:
    task = await live_anyq.submit("long", None, max_retries=0)
    other = await live_anyq.submit("long", "finish")
    worker = Worker(live_anyq, "w", live_anyq.shards)
    started = asyncio.Event()
    seen: list[bool] = []

    @worker.task("long")
    async def long(payload: Any, ctx: TaskContext) -> Any:
        if payload == "finish":
            return "done"
        started.set()
        while not ctx.is_cancellation_requested():
            await asyncio.sleep(0.05)
        seen.append(True)
        return None

    async def requester() -> None:
        await started.wait()
        later = await live_anyq.submit("long", None, schedule_at="2099-01-01T00:00:00Z")
        with pytest.raises(RuntimeError, match="Cannot request cancellation for task with status Pending"):
            await live_anyq.request_cancellation(later.id)
        flagged = await live_anyq.request_cancellation(task.id)
        assert flagged.status == TaskStatus.Running and flagged.cancel_requested

    await asyncio.wait_for(asyncio.gather(worker.run(quiet(lease_seconds=1, max_concurrency=1)), requester()), 30)
    final = await live_anyq.get(task.id)
    assert seen and final is not None and final.status == TaskStatus.Cancelled, final
    assert worker.stats.get("lease_lost", 0) == 0
    assert (await live_anyq.get(other.id)).status == TaskStatus.Completed  # type: ignore[union-attr]


async def test_a_cancellation_request_racing_completion_never_loses_the_result(anyq: Queue) -> None:
    task = await anyq.submit("t", 1)
    lease = await claim(anyq, task.id)
    await anyq.request_cancellation(task.id)  # changes the ETag under the worker
    await anyq.protocol.complete(lease, {"ok": True})  # not None: completes normally
    final = await anyq.get(task.id)
    assert final is not None and final.status == TaskStatus.Completed and final.output == {"ok": True}


async def test_cancel_racing_claim_has_one_winner(anyq: Queue) -> None:
    for _ in range(10):
        task = await anyq.submit("t", 1)
        now = await anyq.time()
        [m] = [m for m in await anyq.protocol.due_markers(task.shard, now, 100) if m.task_id == task.id]
        results = await asyncio.gather(anyq.cancel(task.id), anyq.protocol.claim(m, "w", 30, now), return_exceptions=True)
        final = await anyq.get(task.id)
        won = [r for r in results if isinstance(r, Lease) or getattr(r, "status", None) == TaskStatus.Cancelled]
        assert len(won) == 1 and final.status in (TaskStatus.Cancelled, TaskStatus.Running)  # type: ignore[union-attr]


# ------------------------------------------------------------- TaskContext
async def test_task_context_extend_lease_refresh_and_progress(live_anyq: Queue) -> None:
    task = await live_anyq.submit("job", None)
    worker = Worker(live_anyq, "w", live_anyq.shards)
    seen: dict[str, Any] = {}
    mid = asyncio.Event()
    go_on = asyncio.Event()

    @worker.task("job")
    async def job(_: Any, ctx: TaskContext) -> str:
        seen["id"] = ctx.task_id
        before = ctx.lease_expires_at()
        await ctx.extend_lease(120)
        seen["extended"] = (before, ctx.lease_expires_at())
        await ctx.report_progress(percent=50, message="half")
        assert not await ctx.report_progress(current=2, throttle_seconds=60)  # throttled
        await ctx.refresh()
        mid.set()
        await go_on.wait()
        return "ok"

    async def observe() -> None:
        await mid.wait()
        running = await live_anyq.get(task.id)
        seen["progress"] = running.progress  # type: ignore[union-attr]
        go_on.set()

    await asyncio.wait_for(asyncio.gather(worker.run(quiet()), observe()), 20)
    before, after = seen["extended"]
    assert seen["id"] == task.id and after > before
    assert seen["progress"]["percent"] == 50.0 and seen["progress"]["message"] == "half"
    final = await live_anyq.get(task.id)
    assert final.status == TaskStatus.Completed and final.progress is None  # type: ignore[union-attr]


async def test_extend_lease_fails_once_the_task_was_claimed_again(anyq: Queue, clock: FakeClock) -> None:
    task = await anyq.submit("t", 1)
    lease = await claim(anyq, task.id, lease_seconds=5)
    clock.advance(10)
    await claim(anyq, task.id)  # another worker takes the lapsed lease
    with pytest.raises(LeaseLost, match=f"Failed to extend lease for task {task.id}") as info:
        await TaskContext(anyq.protocol, lease).extend_lease(30)
    assert isinstance(info.value, RuntimeError)


async def test_one_and_two_argument_handlers_and_sync_ones(live_anyq: Queue) -> None:
    worker = Worker(live_anyq, "w", live_anyq.shards)
    worker.task("one")(lambda x: x + 1)
    worker.task("two")(lambda x, ctx: [x, ctx.task_id])
    a = await live_anyq.submit("one", 1)
    b = await live_anyq.submit("two", 2)
    await asyncio.wait_for(worker.run(quiet()), 20)
    assert (await live_anyq.get(a.id)).output == 2  # type: ignore[union-attr]
    assert (await live_anyq.get(b.id)).output == [2, b.id]  # type: ignore[union-attr]


# ------------------------------------------------------------- reschedule
async def test_reschedule_is_not_a_failure_and_max_reschedules_caps_it(live_anyq: Queue) -> None:
    task = await live_anyq.submit("job", None, max_reschedules=2, max_retries=0)
    worker = Worker(live_anyq, "w", live_anyq.shards)
    calls = 0

    @worker.task("job")
    async def job(_: Any) -> None:
        nonlocal calls
        calls += 1
        raise RescheduleError(0)

    await asyncio.wait_for(worker.run(quiet()), 20)
    final = await live_anyq.get(task.id)
    assert calls == 3 and final is not None and final.status == TaskStatus.Failed
    assert final.last_error == "Max reschedules (2) exceeded" and final.reschedule_count == 2
    assert str(RescheduleError(5)) == "Reschedule after 5 seconds" and RescheduleError(5).delay_seconds == 5


async def test_reschedule_delays_and_keeps_retry_count(anyq: Queue, clock: FakeClock) -> None:
    task = await anyq.submit("t", 1)
    lease = await claim(anyq, task.id)
    await anyq.protocol.reschedule(lease, 30)
    again = await anyq.get(task.id)
    assert again.status == TaskStatus.Pending and again.attempt == 0 and again.retry_count == 0  # type: ignore[union-attr]
    assert again.available_at == clock.now + timedelta(seconds=30) and again.reschedule_count == 1  # type: ignore[union-attr]


# ------------------------------------------------------------------ expiry
async def test_expired_before_claim_never_runs_and_the_monitor_expires_the_rest(queue: Queue, clock: FakeClock, store: MemoryStore) -> None:
    a = await queue.submit("t", 1, ttl_seconds=10)
    b = await queue.submit("unhandled", 2, expires_at=clock.now + timedelta(seconds=10))
    zero = await queue.submit("t", 3, ttl_seconds=0)
    clock.advance(11)
    ran: list[Any] = []
    worker = Worker(queue, "w", queue.shards)
    worker.task("t")(lambda x: ran.append(x))
    await worker.run(quiet())
    assert ran == [] and worker.stats.get("claimed", 0) == 0
    for t in (a, zero):
        final = await queue.get(t.id)
        assert final.status == TaskStatus.Expired and final.expired_at is not None  # type: ignore[union-attr]
    assert (await queue.get(b.id)).status == TaskStatus.Pending  # type: ignore[union-attr]
    assert await Monitor(queue).sweep() == 1
    assert (await queue.get(b.id)).status == TaskStatus.Expired  # type: ignore[union-attr]
    assert not [k for k in store.keys() if k.startswith(("ready/", "expiries/"))]


async def test_mark_expired_and_its_message(anyq: Queue) -> None:
    task = await anyq.submit("t", 1)
    assert (await anyq.mark_expired(task.id)).status == TaskStatus.Expired
    with pytest.raises(RuntimeError, match=r"Cannot expire task with status Expired \(only Pending tasks can expire\)"):
        await anyq.mark_expired(task.id)


async def test_retries_keep_the_deadline(anyq: Queue, clock: FakeClock) -> None:
    task = await anyq.submit("t", 1, ttl_seconds=20, retry_policy=RetryPolicy(initial_interval_ms=30_000, max_interval_ms=30_000, jitter_percent=0))
    lease = await claim(anyq, task.id)
    await anyq.protocol.fail(lease, "boom", retryable=True)
    clock.advance(31)  # the retry is due, the deadline passed
    worker = Worker(anyq, "w", anyq.shards)
    worker.task("t")(lambda x: x)
    await worker.run(quiet())
    assert (await anyq.get(task.id)).status == TaskStatus.Expired  # type: ignore[union-attr]


# ------------------------------------------------------------- payload refs
@pytest.mark.parametrize("size,offloaded", [(100, False), (101, True)])
async def test_payload_refs_at_the_threshold_and_the_handler_gets_the_real_input(
    live_queue: Queue, store: MemoryStore, size: int, offloaded: bool
) -> None:
    data = "x" * (size - 2)  # compact JSON of a string = its length + 2 quotes
    task = await live_queue.submit("echo", data, use_payload_refs=True, payload_ref_threshold_bytes=100)
    assert (task.input_ref is not None) == offloaded and (task.input is None) == offloaded
    if offloaded:
        assert task.input_ref == f"payloads/{task.id}/input.json"
    assert await live_queue.load_input(task) == data
    worker = Worker(live_queue, "w", live_queue.shards)
    worker.task("echo")(lambda x: len(x))
    await asyncio.wait_for(worker.run(quiet()), 20)
    assert (await live_queue.get(task.id)).output == len(data)  # type: ignore[union-attr]


async def test_large_inputs_and_outputs_go_to_payload_objects_and_list_does_not_read_them(live_queue: Queue, store: MemoryStore) -> None:
    big = {"blob": "y" * 300_000}
    task = await live_queue.submit("copy", big)
    assert task.input is None and task.input_ref is not None
    worker = Worker(live_queue, "w", live_queue.shards)
    worker.task("copy")(lambda x: x)
    await asyncio.wait_for(worker.run(quiet()), 20)
    final = await live_queue.get(task.id)
    assert final.output is None and final.output_ref == f"payloads/{task.id}/output.json"  # type: ignore[union-attr]
    assert await live_queue.load_output(final) == big  # type: ignore[arg-type]
    gets = store.request_counts["get"]
    listed = [t for s in live_queue.shards for t in await live_queue.list(s)]
    assert len(listed) == 1 and store.request_counts["get"] - gets == 1  # the task object only


async def test_inputs_over_the_hard_limit_are_rejected_before_anything_is_written(queue: Queue, store: MemoryStore) -> None:
    before = sorted(store.keys())
    with pytest.raises(ValidationError) as info:
        await queue.submit("t", "z" * (33 * 1024 * 1024))
    assert info.value.field == "input" and "limit" in str(info.value)
    assert sorted(store.keys()) == before


# ------------------------------------------------------------- submit_many
async def test_submit_many_shapes_order_and_errors(anyq: Queue) -> None:
    assert await anyq.submit_many([]) == []
    tasks = await anyq.submit_many([("a", 1), ("b", 2), ("a", 3)], max_retries=0, ttl_seconds=60)
    assert [(t.task_type, t.input, t.max_retries) for t in tasks] == [("a", 1, 0), ("b", 2, 0), ("a", 3, 0)]
    assert all(t.expires_at is not None for t in tasks)
    with pytest.raises(TypeError, match=r"Each item must be a tuple of \(task_type, input\)"):
        await anyq.submit_many([["a", 1]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="Each tuple must have exactly 2 elements"):
        await anyq.submit_many([("a", 1, 2)])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        await anyq.submit_many([("a", 1), ("bad type!", 2)])
    assert len([t for s in anyq.shards for t in await anyq.list(s)]) == 3  # nothing of the bad batch


# ------------------------------------------------------------------ hooks
async def test_hooks_run_in_order_and_their_errors_are_swallowed(live_anyq: Queue) -> None:
    ok = await live_anyq.submit("ok", 1)
    bad = await live_anyq.submit("bad", 2, max_retries=0)
    worker = Worker(live_anyq, "w", live_anyq.shards)
    events: list[Any] = []
    worker.task("ok")(lambda x: x)

    @worker.task("bad")
    def bad_handler(_: Any) -> None:
        raise ValueError("nope")

    worker.on_startup(lambda: events.append("startup"))
    worker.on_shutdown(lambda: events.append("shutdown"))

    @worker.on_success
    async def success(task: Any) -> None:
        stored = await live_anyq.get(task.id)
        events.append(("success", task.id, stored.status.value))  # type: ignore[union-attr]
        raise RuntimeError("hook bug")

    @worker.on_error
    def error(task: Any, message: str) -> None:
        events.append(("error", task.id, message))

    assert worker.registered_task_types() == ["bad", "ok"]
    processed = await asyncio.wait_for(worker.run(quiet(max_concurrency=1)), 20)
    assert processed == 2
    assert events[0] == "startup" and events[-1] == "shutdown"
    assert ("success", ok.id, "completed") in events
    assert ("error", bad.id, "ValueError: nope") in events
    assert (await live_anyq.get(ok.id)).status == TaskStatus.Completed  # type: ignore[union-attr]


# ------------------------------------------------------------- replay, delete
async def test_retry_replays_a_dead_letter_with_a_fresh_budget(live_queue: Queue, store: MemoryStore) -> None:
    task = await live_queue.submit("flaky", 1, max_retries=0)
    worker = Worker(live_queue, "w", live_queue.shards)
    calls = 0

    @worker.task("flaky")
    def flaky(x: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("first time")
        return x

    await asyncio.wait_for(worker.run(quiet()), 20)
    assert (await live_queue.get(task.id)).status == TaskStatus.Failed  # type: ignore[union-attr]
    dead = [t.id for s in live_queue.shards for t in await live_queue.list(s, status="failed")]
    assert dead == [task.id]
    again = await live_queue.retry(task.id)
    assert again.status == TaskStatus.Pending and again.attempt == 0
    await asyncio.wait_for(worker.run(quiet()), 20)
    final = await live_queue.get(task.id)
    assert final.status == TaskStatus.Completed and [h["status"] for h in final.history].count("failed") == 1  # type: ignore[union-attr]
    with pytest.raises(TaskStateError, match="Cannot retry task with status Completed"):
        await live_queue.retry(task.id)
    await live_queue.delete(task.id)
    assert await live_queue.get(task.id) is None
    assert not [k for k in store.keys() if task.id in k]
    with pytest.raises(TaskNotFound):
        await live_queue.delete(task.id)


async def test_delete_refuses_a_live_task(anyq: Queue) -> None:
    task = await anyq.submit("t", 1)
    with pytest.raises(RuntimeError, match="only final tasks can be deleted"):
        await anyq.delete(task.id)


async def test_wait_timeout_is_a_timeout_error(anyq: Queue) -> None:
    from buquet import TaskTimeout

    task = await anyq.submit("t", 1)
    with pytest.raises(TimeoutError) as info:
        await anyq.wait(task.id, timeout_seconds=0)
    assert isinstance(info.value, TaskTimeout)


# ------------------------------------------------------- §13 storage and shards
@pytest.mark.parametrize("prefix_len,first,last", [(1, "0", "f"), (2, "00", "ff")])
async def test_shard_prefix_len_selects_hex_shards_and_tasks_land_in_them(prefix_len: int, first: str, last: str) -> None:
    from buquet import connect

    queue = await connect(store=MemoryStore(), shard_prefix_len=prefix_len)
    shards = queue.all_shards()
    assert len(shards) == 16**prefix_len and shards[0] == first and shards[-1] == last
    assert queue.shard_prefix_len == prefix_len
    task = await queue.submit("t", 1)
    assert task.shard == task.id.replace("-", "")[-prefix_len:]
    again = await connect(store=queue.store)
    assert again.shard_count == 16**prefix_len  # the bucket remembers


async def test_default_bucket_has_four_shards_and_no_prefix_len(anyq: Queue) -> None:
    assert anyq.all_shards() == ["0", "1", "2", "3"] and anyq.shard_prefix_len is None


@pytest.mark.parametrize("bad", [0, 5, "2", True])
async def test_shard_prefix_len_out_of_range_is_a_value_error(bad: Any) -> None:
    from buquet import connect

    with pytest.raises(ValueError):
        await connect(store=MemoryStore(), shard_prefix_len=bad)


async def test_storage_client_round_trip_and_its_messages(anyq: Queue) -> None:
    storage = anyq.storage
    etag = await storage.put("side/a.bin", b"\x00\x01")
    assert await storage.get("side/a.bin") == (b"\x00\x01", etag)
    assert await storage.exists("side/a.bin") and not await storage.exists("side/none")
    with pytest.raises(RuntimeError, match="Object not found: side/none"):
        await storage.get("side/none")
    with pytest.raises(RuntimeError, match="Precondition failed for object: side/a.bin"):
        await storage.put("side/a.bin", b"x", if_match='"stale"')
    for i in range(1203):
        await storage.put(f"many/{i:05d}", b"")
    keys = await storage.list("many/", limit=1500)
    assert len(keys) == 1203 and keys == sorted(keys)
    assert await storage.list("many/", start_after="many/01200") == ["many/01201", "many/01202"]
    await storage.delete("side/a.bin")
    await storage.delete("side/a.bin")  # absent is fine
    assert not await storage.exists("side/a.bin")


# ------------------------------------------------------------------ retention
async def test_retention_deletes_only_old_final_tasks_with_their_payloads(queue: Queue, clock: FakeClock, store: MemoryStore) -> None:
    import datetime as _dt

    real_now = _dt.datetime.now(_dt.timezone.utc)
    clock.now = real_now  # the memory store stamps LastModified with the real clock
    old_done = await queue.submit("t", {"big": "x" * 300_000})
    old_pending = await queue.submit("t", 2)
    lease = await claim(queue, old_done.id)
    await queue.protocol.complete(lease, 1)
    clock.advance(3 * 86400)  # three days later
    fresh = await queue.submit("t", 3)
    lease = await claim(queue, fresh.id)
    await queue.protocol.complete(lease, 3)
    monitor = Monitor(queue, retention_days=2)
    # LastModified comes from the store's own clock: pretend the first objects are old
    for key in list(store.keys()):
        if old_done.id in key or old_pending.id in key:
            obj = store._objects[key]  # noqa: SLF001 - test back door to age an object
            store._objects[key] = type(obj)(type(obj.info)(obj.info.key, obj.info.etag, obj.info.size,
                                                            real_now - _dt.timedelta(days=3)), obj.data)
    clock.now = real_now + _dt.timedelta(days=3)
    await monitor.sweep()
    assert await queue.get(old_done.id) is None and not [k for k in store.keys() if old_done.id in k]
    assert (await queue.get(old_pending.id)).status == TaskStatus.Pending  # type: ignore[union-attr]
    assert (await queue.get(fresh.id)).status == TaskStatus.Completed  # type: ignore[union-attr]


async def test_purge_by_status_and_type(anyq: Queue) -> None:
    a = await anyq.submit("a", 1)
    b = await anyq.submit("b", 2)
    c = await anyq.submit("a", 3)
    await anyq.cancel(a.id)
    await anyq.cancel(b.id)
    with pytest.raises(ValidationError):
        await anyq.purge(status="pending")
    assert await anyq.purge(status="cancelled", task_type="a") == 1
    assert await anyq.get(a.id) is None and await anyq.get(b.id) is not None
    assert await anyq.purge() == 1 and (await anyq.get(c.id)).status == TaskStatus.Pending  # type: ignore[union-attr]


# ------------------------------------------------------------ idempotency via submit
async def test_submit_with_an_idempotency_key_returns_the_first_task(anyq: Queue) -> None:
    from buquet import IdempotencyConflict

    first = await anyq.submit("pay", {"amount": 5, "to": "x"}, idempotency_key="order-1")
    again = await anyq.submit("pay", {"to": "x", "amount": 5}, idempotency_key="order-1")
    assert again.id == first.id
    racers = await asyncio.gather(*(anyq.submit("pay", {"n": 1}, idempotency_key="order-2") for _ in range(20)))
    assert len({t.id for t in racers}) == 1
    with pytest.raises(IdempotencyConflict, match="Idempotency conflict") as info:
        await anyq.submit("pay", {"amount": 6, "to": "x"}, idempotency_key="order-1")
    assert isinstance(info.value, RuntimeError) and first.id in str(info.value)
    other_type = await anyq.submit("refund", {"amount": 5, "to": "x"}, idempotency_key="order-1")
    assert other_type.id != first.id  # per task type by default
    shared = await anyq.submit("refund", {"amount": 5, "to": "x"}, idempotency_key="k", idempotency_scope="queue")
    assert (await anyq.submit("pay", {"amount": 5, "to": "x"}, idempotency_key="k", idempotency_scope="queue")).id == shared.id
    with pytest.raises(ValidationError):
        await anyq.submit("pay", 1, idempotency_key="")


# ----------------------------------------------------------- schemas in the worker
async def test_a_worker_rejects_input_that_breaks_its_schema_before_the_handler_runs(live_anyq: Queue) -> None:
    await live_anyq.publish_schema("mail", {"input": {"type": "object", "required": ["to"],
                                                      "properties": {"to": {"type": "string"}}}})
    assert await live_anyq.list_schemas() == ["mail"]
    good = await live_anyq.submit("mail", {"to": "a@b.c"})
    bad = await live_anyq.submit("mail", {"to": 5}, max_retries=3)
    ran: list[Any] = []
    worker = Worker(live_anyq, "w", live_anyq.shards)
    worker.task("mail")(lambda x: ran.append(x) or "sent")
    await asyncio.wait_for(worker.run(quiet()), 20)
    assert ran == [{"to": "a@b.c"}]
    assert (await live_anyq.get(good.id)).status == TaskStatus.Completed  # type: ignore[union-attr]
    rejected = await live_anyq.get(bad.id)
    assert rejected is not None and rejected.status == TaskStatus.Failed and rejected.attempt == 1
    assert "Schema validation failed" in (rejected.last_error or "")


async def test_expiry_racing_a_claim_has_one_winner(anyq: Queue, clock: FakeClock) -> None:
    """The monitor expires a task at its deadline while a worker claims it: exactly one
    of the two conditional writes wins, and the task ends in that one's state."""
    for _ in range(6):
        task = await anyq.submit("t", 1, ttl_seconds=10)
        now = await anyq.time()
        [m] = [m for m in await anyq.protocol.due_markers(task.shard, now, 100) if m.task_id == task.id]
        clock.advance(10)  # the deadline is now: claim sees it expired too, unless it wins first
        later = await anyq.time()
        monitor = Monitor(anyq)
        claim_result, _ = await asyncio.gather(anyq.protocol.claim(m, "w", 30, later - timedelta(seconds=1)),
                                               monitor.sweep(later))
        final = await anyq.get(task.id)
        assert final is not None
        if isinstance(claim_result, Lease):
            assert final.status == TaskStatus.Running and final.attempt == 1
        else:
            assert final.status == TaskStatus.Expired and final.attempt == 0
