"""Worker and protocol behaviour on the in-memory store."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest

from buquet import (
    PollingStrategy,
    LeaseLost,
    MemoryStore,
    Monitor,
    PermanentError,
    RetryableError,
    RetryPolicy,
    TaskStatus,
    ValidationError,
    Worker,
    WorkerRunOptions,
)
from buquet._tasks import Lease
from buquet.queue import Queue
from tests.conftest import FakeClock

ALL = ["0", "1", "2", "3"]
# idle_horizon_ms=0: the fake clock does not move while a worker waits for near-due tasks
ONCE = WorkerRunOptions(exit_when_idle=True, with_monitor=False, handle_signals=False, delete_flush_ms=0, idle_horizon_ms=0)


def make_worker(queue: Queue, name: str = "w1") -> Worker:
    return Worker(queue, name, ALL)


async def test_quick_start_shape_completes_a_task(queue: Queue, store: MemoryStore) -> None:
    task = await queue.submit("send_email", {"to": "user@example.com"})
    worker = make_worker(queue)

    @worker.task("send_email")
    async def handle_email(input):  # type: ignore[no-untyped-def]
        return {"sent": True, "to": input["to"]}

    await worker.run(ONCE)
    done = await queue.get(task.id)
    assert done is not None and done.status == TaskStatus.Completed
    assert done.output == {"sent": True, "to": "user@example.com"}
    assert done.attempt == 1 and done.worker_id == "w1" and done.completed_at is not None
    # only the task object (and the bucket config) remain: the index entries are gone
    assert sorted(store.keys()) == ["config.json", queue.layout.task(task.shard, task.id)]
    assert [h.status for h in await queue.get_history(task.id)] == [
        TaskStatus.Pending, TaskStatus.Running, TaskStatus.Completed]


async def test_plain_function_handlers_run_in_a_thread(queue: Queue) -> None:
    task = await queue.submit("add", {"a": 2, "b": 3})
    worker = make_worker(queue)
    worker.task("add")(lambda inp: inp["a"] + inp["b"])
    await worker.run(ONCE)
    assert (await queue.get(task.id)).output == 5  # type: ignore[union-attr]


async def test_happy_path_costs_at_most_six_requests(queue: Queue, store: MemoryStore) -> None:
    """The request budget of docs/protocol.md, step by step (polling LISTs excluded)."""
    n = 50
    before = dict(store.request_counts)
    tasks = [await queue.submit("noop", i) for i in range(n)]
    submit = {k: store.request_counts.get(k, 0) - before.get(k, 0) for k in store.request_counts}
    assert submit == {"put": 2 * n, **{k: 0 for k in submit if k != "put"}}

    worker = make_worker(queue)
    worker.task("noop")(lambda x: None)
    before = dict(store.request_counts)
    await worker.run(WorkerRunOptions(exit_when_idle=True, with_monitor=False, handle_signals=False,
                                      max_concurrency=n, delete_flush_ms=50))
    run = {k: store.request_counts.get(k, 0) - before.get(k, 0) for k in store.request_counts}
    statuses = [(await queue.get(t.id)).status for t in tasks]  # type: ignore[union-attr]
    assert statuses == [TaskStatus.Completed] * n
    assert run["get"] == n + 1  # claim: 1 GET per task, + the task type's schema, read once per 30 s
    # claim + complete: 1 conditional PUT each, + the worker's registration (workers/<id>.json:
    # 1 PUT per heartbeat_interval_s, 1 DELETE at stop), not a per-task cost
    assert run["put"] == 2 * n + 1
    assert run.get("delete", 0) == 1 and run.get("head", 0) == 0
    per_task = (submit["put"] + run["get"] - 1 + run["put"] - 1 + run["delete_many"]) / n
    assert per_task <= 6
    assert run["delete_many"] < n  # ready markers are removed in batches


async def test_retryable_error_backs_off_with_the_policy(queue: Queue, clock: FakeClock) -> None:
    policy = RetryPolicy(initial_interval_ms=1000, max_interval_ms=5000, multiplier=3.0, jitter_percent=0.0)
    task = await queue.submit("flaky", None, max_retries=3, retry_policy=policy)
    calls = []
    worker = make_worker(queue)

    @worker.task("flaky")
    async def flaky(_):  # type: ignore[no-untyped-def]
        calls.append(clock.now)
        raise RetryableError("try again")

    expected_delays = [1.0, 3.0, 5.0]  # 1000, 3000, 9000 capped at 5000 ms
    for delay in expected_delays:
        await worker.run(ONCE)
        t = await queue.get(task.id)
        assert t is not None and t.status == TaskStatus.Pending
        assert t.available_at == clock.now + timedelta(seconds=delay)
        assert t.last_error == "RetryableError: try again"
        await worker.run(ONCE)  # not due yet: nothing runs
        assert len(calls) == t.retry_count
        clock.advance(delay)
    await worker.run(ONCE)
    final = await queue.get(task.id)
    assert final is not None and final.status == TaskStatus.Failed
    assert final.attempt == 4 and final.retry_count == 3 and len(calls) == 4


def test_jitter_stays_within_its_band() -> None:
    policy = RetryPolicy(initial_interval_ms=1000, max_interval_ms=60000, multiplier=2.0, jitter_percent=0.25)
    rng = random.Random(7)
    for n, base in [(1, 1000), (2, 2000), (3, 4000)]:
        delays = [policy.delay_ms(n, rng) for _ in range(200)]
        assert min(delays) >= base * 0.75 and max(delays) <= base * 1.25
        assert len(set(delays)) > 50  # actually spread


async def test_permanent_error_fails_at_once(queue: Queue) -> None:
    task = await queue.submit("bad", None, max_retries=5)
    worker = make_worker(queue)

    @worker.task("bad")
    async def bad(_):  # type: ignore[no-untyped-def]
        raise PermanentError("invalid address")

    await worker.run(ONCE)
    t = await queue.get(task.id)
    assert t is not None and t.status == TaskStatus.Failed and t.attempt == 1
    assert t.last_error == "PermanentError: invalid address"


async def test_other_exceptions_are_retried(queue: Queue, clock: FakeClock) -> None:
    task = await queue.submit("boom", None, max_retries=1,
                              retry_policy=RetryPolicy(initial_interval_ms=0, jitter_percent=0.0))
    worker = make_worker(queue)
    attempts = []

    @worker.task("boom")
    async def boom(_):  # type: ignore[no-untyped-def]
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("reset by peer")
        return "ok"

    await worker.run(ONCE)  # zero backoff: the retry runs in the same run
    t = await queue.get(task.id)
    assert t is not None and t.status == TaskStatus.Completed and t.output == "ok" and t.attempt == 2
    history = await queue.get_history(task.id)
    assert [(h.status.value, h.attempt) for h in history] == [
        ("pending", 0), ("running", 1), ("pending", 1), ("running", 2), ("completed", 2)]
    assert history[2].last_error == "ConnectionError: reset by peer"


async def test_timeout_cancels_the_handler_and_counts_as_retryable(queue: Queue) -> None:
    task = await queue.submit("slow", None, timeout_seconds=1, max_retries=0)
    worker = make_worker(queue)
    cancelled = asyncio.Event()

    @worker.task("slow")
    async def slow(_):  # type: ignore[no-untyped-def]
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await worker.run(ONCE)
    assert cancelled.is_set()
    t = await queue.get(task.id)
    assert t is not None and t.status == TaskStatus.Failed and t.last_error == "timed out after 1s"


async def test_result_that_is_not_json_fails_the_task(queue: Queue) -> None:
    task = await queue.submit("weird", None, max_retries=3)
    worker = make_worker(queue)
    worker.task("weird")(lambda _: {"when": object()})
    await worker.run(ONCE)
    t = await queue.get(task.id)
    assert t is not None and t.status == TaskStatus.Failed and t.attempt == 1
    assert t.last_error is not None and "Failed to convert output" in t.last_error and "output.when" in t.last_error


async def test_worker_never_claims_types_without_a_handler(queue: Queue, store: MemoryStore) -> None:
    other = await queue.submit("not_mine", None)
    mine = await queue.submit("mine", None)
    worker = make_worker(queue)
    worker.task("mine")(lambda _: 1)
    gets = store.request_counts.get("get", 0)
    await worker.run(ONCE)
    # the other task was never even read: 1 GET for "mine", 1 for its type's schema
    assert store.request_counts["get"] - gets == 2
    assert (await queue.get(mine.id)).status == TaskStatus.Completed  # type: ignore[union-attr]
    untouched = await queue.get(other.id)
    assert untouched is not None and untouched.status == TaskStatus.Pending and untouched.attempt == 0


async def test_several_tasks_run_concurrently_in_one_worker(live_queue: Queue) -> None:
    n = 4
    for i in range(n):
        await live_queue.submit("meet", i)
    barrier = asyncio.Barrier(n)
    worker = make_worker(live_queue)

    @worker.task("meet")
    async def meet(i):  # type: ignore[no-untyped-def]
        await asyncio.wait_for(barrier.wait(), timeout=10)  # only passes if all n run at once
        return i

    await worker.run(WorkerRunOptions(exit_when_idle=True, with_monitor=False, handle_signals=False, max_concurrency=n))
    assert worker.stats == {"claimed": n, "completed": n}


async def test_lease_is_extended_while_the_handler_runs(live_queue: Queue, store: MemoryStore) -> None:
    task = await live_queue.submit("long", None, max_retries=0)
    worker = make_worker(live_queue)
    release = asyncio.Event()
    seen_lease_keys: list[str] = []

    @worker.task("long")
    async def long(_):  # type: ignore[no-untyped-def]
        await release.wait()
        return "done"

    async def watch() -> None:
        # wait for two heartbeats: the task moves from the ready index to the lease
        # index, and its lease entry moves forward
        while len(seen_lease_keys) < 2:
            keys = [k for k in store.keys() if k.startswith("leases/")]
            for k in keys:
                if k not in seen_lease_keys:
                    seen_lease_keys.append(k)
            await asyncio.sleep(0.05)
        release.set()

    opts = WorkerRunOptions(exit_when_idle=True, with_monitor=False, handle_signals=False, lease_seconds=1, delete_flush_ms=0)
    await asyncio.wait_for(asyncio.gather(worker.run(opts), watch()), timeout=20)
    t = await live_queue.get(task.id)
    assert t is not None and t.status == TaskStatus.Completed and t.attempt == 1
    assert seen_lease_keys[0] < seen_lease_keys[1]  # later expiry sorts later
    assert not any(k.startswith(("leases/", "ready/")) for k in store.keys())


async def _claim_first(queue: Queue, worker_id: str, lease_seconds: float = 30) -> Lease:
    now = await queue.time()
    for shard in queue.shards:
        for marker in await queue.protocol.due_markers(shard, now, 100):
            result = await queue.protocol.claim(marker, worker_id, lease_seconds, now)
            if isinstance(result, Lease):
                return result
    raise AssertionError("nothing to claim")


async def test_zombie_completion_is_rejected(queue: Queue, clock: FakeClock) -> None:
    task = await queue.submit("t", None)
    zombie = await _claim_first(queue, "zombie", lease_seconds=30)
    clock.advance(31)  # the zombie's lease lapses without a heartbeat
    fresh = await _claim_first(queue, "fresh", lease_seconds=30)
    assert fresh.task.attempt == 2
    with pytest.raises(LeaseLost):
        await queue.protocol.complete(zombie, "stale result")
    await queue.protocol.complete(fresh, "fresh result")
    t = await queue.get(task.id)
    assert t is not None and t.status == TaskStatus.Completed and t.output == "fresh result"
    assert t.worker_id == "fresh"


async def test_live_lease_cannot_be_claimed_by_another_worker(queue: Queue, clock: FakeClock) -> None:
    await queue.submit("t", None)
    await _claim_first(queue, "a", lease_seconds=30)
    clock.advance(29)
    with pytest.raises(AssertionError, match="nothing to claim"):
        await _claim_first(queue, "b")


async def test_a_task_that_kills_its_worker_every_time_ends_failed(queue: Queue, clock: FakeClock) -> None:
    task = await queue.submit("crash", None, max_retries=2)
    for expected_attempt in (1, 2, 3):
        lease = await _claim_first(queue, f"w{expected_attempt}", lease_seconds=10)
        assert lease.task.attempt == expected_attempt
        clock.advance(11)  # the worker died: no heartbeat, no result
    with pytest.raises(AssertionError, match="nothing to claim"):
        await _claim_first(queue, "w4")
    t = await queue.get(task.id)
    assert t is not None and t.status == TaskStatus.Failed and t.attempt == 3
    assert "no retries left" in (t.last_error or "")


async def test_monitor_requeues_expired_leases_from_the_lease_index(queue: Queue, store: MemoryStore, clock: FakeClock) -> None:
    task = await queue.submit("t", None, retry_policy=RetryPolicy(initial_interval_ms=0, jitter_percent=0.0))
    lease = await _claim_first(queue, "dead", lease_seconds=10)
    await store.delete_many(await queue.protocol.extend(lease, 10))  # one heartbeat, then the worker dies
    assert [k for k in store.keys() if k.startswith("ready/")] == []
    monitor = Monitor(queue)
    assert await monitor.sweep() == 0  # lease still live
    clock.advance(11)
    gets = store.request_counts["get"]
    assert await monitor.sweep() == 1
    assert store.request_counts["get"] - gets == 1  # one GET per expired lease, nothing else read
    t = await queue.get(task.id)
    assert t is not None and t.status == TaskStatus.Pending and t.retry_count == 1
    assert "lease of attempt 1 expired (worker dead stopped)" in (t.last_error or "")
    assert not any(k.startswith("leases/") for k in store.keys())
    assert await queue.list_ready(task.shard) == [task.id]
    again = await _claim_first(queue, "alive")
    assert again.task.attempt == 2


async def test_monitor_cost_grows_with_expired_leases_not_tasks(queue: Queue, store: MemoryStore, clock: FakeClock) -> None:
    for i in range(30):
        await queue.submit("t", i)
    leases = [await _claim_first(queue, "w", lease_seconds=5 if i < 3 else 100) for i in range(10)]
    for lease in leases[:3]:
        await queue.protocol.extend(lease, 5)  # these three will expire first (heartbeats never shorten a lease)
    for lease in leases[3:]:
        await queue.protocol.extend(lease, 100)
    clock.advance(6)
    gets = store.request_counts["get"]
    assert await Monitor(queue).sweep() == 3
    assert store.request_counts["get"] - gets == 3


async def test_graceful_stop_releases_unfinished_tasks(live_queue: Queue) -> None:
    task = await live_queue.submit("stuck", None, max_retries=0)
    worker = make_worker(live_queue)
    started = asyncio.Event()

    @worker.task("stuck")
    async def stuck(_):  # type: ignore[no-untyped-def]
        started.set()
        await asyncio.Event().wait()

    run = asyncio.create_task(worker.run(WorkerRunOptions(with_monitor=False, handle_signals=False, shutdown_grace_seconds=0.2)))
    await asyncio.wait_for(started.wait(), 10)
    worker.stop()
    await asyncio.wait_for(run, 10)
    t = await live_queue.get(task.id)
    assert t is not None and t.status == TaskStatus.Pending
    assert t.attempt == 0  # a release is not a failed attempt: max_retries=0 still allows a run
    assert "shut down" in (t.last_error or "")
    assert await live_queue.list_ready(t.shard) == [task.id]


async def test_graceful_stop_lets_short_tasks_finish(live_queue: Queue) -> None:
    task = await live_queue.submit("quick", None)
    worker = make_worker(live_queue)
    started, go = asyncio.Event(), asyncio.Event()

    @worker.task("quick")
    async def quick(_):  # type: ignore[no-untyped-def]
        started.set()
        await go.wait()
        return "finished"

    run = asyncio.create_task(worker.run(WorkerRunOptions(with_monitor=False, handle_signals=False, shutdown_grace_seconds=10)))
    await asyncio.wait_for(started.wait(), 10)
    worker.stop()
    go.set()
    await asyncio.wait_for(run, 10)
    assert (await live_queue.get(task.id)).output == "finished"  # type: ignore[union-attr]


async def test_worker_rejects_bad_configuration(queue: Queue) -> None:
    with pytest.raises(ValidationError, match="shards"):
        Worker(queue, "w", ["0", "99"])
    with pytest.raises(ValidationError, match="worker_id"):
        Worker(queue, "bad id!", ["0"])
    worker = Worker(queue, "w", ["0"])
    with pytest.raises(ValidationError, match="handlers"):
        await worker.run(ONCE)
    worker.task("x")(lambda _: None)
    with pytest.raises(ValidationError, match="already registered"):
        worker.task("x")(lambda _: None)
    with pytest.raises(ValidationError, match="max_concurrency"):
        await worker.run(WorkerRunOptions(max_concurrency=0))


async def test_claim_race_has_exactly_one_winner(queue: Queue, clock: FakeClock) -> None:
    await queue.submit("t", None)
    now = await queue.time()
    markers = [m for s in queue.shards for m in await queue.protocol.due_markers(s, now, 10)]
    results = await asyncio.gather(*(queue.protocol.claim(markers[0], f"w{i}", 30, now) for i in range(10)))
    assert sum(isinstance(r, Lease) for r in results) == 1


async def test_due_tasks_of_other_types_cannot_starve_a_worker(clock: FakeClock) -> None:
    from buquet import connect

    queue = await connect(store=MemoryStore(), clock=clock, shard_count=1)
    for i in range(250):  # more than one LIST page ahead of the task this worker can run
        await queue.submit("someone_elses", i)
    clock.advance(1)
    mine = await queue.submit("mine", None)
    worker = Worker(queue, "w1", ["0"])
    worker.task("mine")(lambda _: "ok")
    await worker.run(ONCE)
    assert (await queue.get(mine.id)).status == TaskStatus.Completed  # type: ignore[union-attr]


async def test_run_once_runs_event_keys_then_polls_and_skips_tasks_that_cannot_fit(queue: Queue, store: MemoryStore) -> None:
    quick = await queue.submit("job", "quick", timeout_seconds=5)
    other = await queue.submit("job", "found-by-polling", timeout_seconds=5)
    long = await queue.submit("job", "too-long", timeout_seconds=600)
    worker = make_worker(queue)
    worker.task("job")(lambda x: x)
    key = queue.layout.ready_for(quick)
    stats = await worker.run_once([key, key, "unrelated/key", "ready/0/garbage"], remaining_seconds=lambda: 60.0,
                                  safety_margin_seconds=10, options=WorkerRunOptions(delete_flush_ms=0))
    assert stats == {"claimed": 2, "completed": 2, "too_long": 1}  # read once, then skipped
    assert (await queue.get(quick.id)).status == TaskStatus.Completed  # type: ignore[union-attr]
    assert (await queue.get(other.id)).status == TaskStatus.Completed  # type: ignore[union-attr]
    left = await queue.get(long.id)
    assert left is not None and left.status == TaskStatus.Pending and left.attempt == 0
    # the same event delivered again: nothing runs twice
    assert await worker.run_once([key], remaining_seconds=lambda: 60.0) == {}
    assert (await queue.get(quick.id)).attempt == 1  # type: ignore[union-attr]


async def test_poke_stalled_rewrites_one_overdue_marker_per_shard(queue: Queue, store: MemoryStore, clock: FakeClock) -> None:
    task = await queue.submit("t", None, schedule_at=clock.now + timedelta(minutes=5))
    monitor = Monitor(queue)
    clock.advance(5 * 60 + 30)
    assert await monitor.poke_stalled(stall_seconds=60) == 0  # due only 30 s ago
    clock.advance(60)
    key = queue.layout.ready_for(task)
    before = (await store.head(key)).last_modified
    puts = store.request_counts["put"]
    assert await monitor.poke_stalled(stall_seconds=60) == 1
    assert store.request_counts["put"] - puts == 1
    assert (await store.head(key)).last_modified >= before
    assert (await queue.get(task.id)).status == TaskStatus.Pending  # type: ignore[union-attr]


async def test_idle_polling_backs_off_and_resets_when_work_appears(queue: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = make_worker(queue)
    worker.task("t")(lambda _: None)
    pauses: list[float] = []

    async def fake_pause(seconds: float, **_: object) -> bool:
        pauses.append(seconds)
        if len(pauses) == 5:
            await queue.submit("t", None)  # work turns up
        if len(pauses) == 7:
            worker.stop()
        return True  # the whole pause elapsed: nothing woke the worker

    monkeypatch.setattr(worker, "_sleep_or_wake", fake_pause)
    await worker.run(WorkerRunOptions(PollingStrategy.adaptive(100, 800), with_monitor=False, handle_signals=False))
    expected = [0.1, 0.2, 0.4, 0.8, 0.8, 0.1, 0.2]  # each jittered ±10 %
    assert len(pauses) == len(expected)
    assert all(0.9 * e <= p <= 1.1 * e for p, e in zip(pauses, expected)), pauses


async def test_a_fixed_polling_strategy_pauses_the_same_after_every_empty_poll(queue: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = make_worker(queue)
    worker.task("t")(lambda _: None)
    pauses: list[float] = []

    async def fake_pause(seconds: float, **_: object) -> bool:
        pauses.append(seconds)
        if len(pauses) == 4:
            worker.stop()
        return True

    monkeypatch.setattr(worker, "_sleep_or_wake", fake_pause)
    await worker.run(WorkerRunOptions(PollingStrategy.fixed(250), with_monitor=False, handle_signals=False))
    assert len(pauses) == 4 and all(0.225 <= p <= 0.275 for p in pauses), pauses


async def test_a_deep_backlog_of_other_types_is_scanned_across_polls(clock: FakeClock) -> None:
    from buquet import connect

    queue = await connect(store=MemoryStore(), clock=clock, shard_count=1)
    for i in range(11_500):  # more than one poll's worth of pages (10) of markers to pass over
        await queue.submit("someone_elses", i)
    clock.advance(1)
    mine = await queue.submit("mine", None)
    worker = Worker(queue, "w1", ["0"])
    worker.task("mine")(lambda _: "ok")
    await worker.run(ONCE)
    assert (await queue.get(mine.id)).status == TaskStatus.Completed  # type: ignore[union-attr]


async def test_far_future_schedule_at_does_not_block_its_shard(queue: Queue, clock: FakeClock) -> None:
    far = await queue.submit("t", "far", schedule_at="9999-12-31T23:59:59Z")
    near = [await queue.submit("t", i) for i in range(12)]
    same_shard = [t for t in near if t.shard == far.shard]
    assert same_shard, "some task shares the far task's shard"
    assert sorted(await queue.list_ready(far.shard)) == sorted(t.id for t in same_shard)
    worker = make_worker(queue)
    worker.task("t")(lambda x: x)
    await worker.run(ONCE)
    assert [(await queue.get(t.id)).status for t in near] == [TaskStatus.Completed] * 12  # type: ignore[union-attr]
    assert (await queue.get(far.id)).status == TaskStatus.Pending  # type: ignore[union-attr]


async def test_monitor_skips_an_unreadable_task_and_recovers_the_others(queue: Queue, store: MemoryStore, clock: FakeClock) -> None:
    for i in range(8):
        await queue.submit("t", i, retry_policy=RetryPolicy(initial_interval_ms=0, jitter_percent=0.0))
    leases = [await _claim_first(queue, "dead", lease_seconds=10) for _ in range(8)]
    for lease in leases:
        await store.delete_many(await queue.protocol.extend(lease, 10))
    broken = leases[0].task
    await store.put(queue.layout.task(broken.shard, broken.id), b"not json")
    clock.advance(11)
    assert await Monitor(queue).sweep() == 7
    for lease in leases[1:]:
        assert (await queue.get(lease.task.id)).status == TaskStatus.Pending  # type: ignore[union-attr]
    # the broken task's lease entry is kept for a human to look at
    assert any(broken.id in k for k in store.keys() if k.startswith("leases/"))
    assert len(await queue.list(broken.shard)) == len([l for l in leases[1:] if l.task.shard == broken.shard])


async def test_free_slots_are_filled_from_the_last_listing_not_a_new_one(live_queue: Queue, store: MemoryStore) -> None:
    n = 40
    for i in range(n):
        await live_queue.submit("noop", i)
    worker = make_worker(live_queue)
    worker.task("noop")(lambda x: x)
    lists = store.request_counts.get("list", 0)
    await worker.run(WorkerRunOptions(exit_when_idle=True, with_monitor=False, handle_signals=False,
                                      max_concurrency=4, idle_horizon_ms=0))
    assert worker.stats["completed"] == n
    # one poll lists the 4 shards; later slots are filled from its leftovers
    assert store.request_counts["list"] - lists <= 3 * 4


async def test_a_claim_that_races_the_submitters_task_write_claims_the_written_task(queue: Queue, store: MemoryStore, clock: FakeClock) -> None:
    task = await queue.submit("t", None)
    key = queue.layout.task(task.shard, task.id)
    now = await queue.time()
    [marker] = [m for s in queue.shards for m in await queue.protocol.due_markers(s, now, 10)]
    real_get = store.get
    calls = 0

    async def get_before_the_task_exists(k: str):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if k == key and calls == 1:
            from buquet.errors import ObjectNotFound
            raise ObjectNotFound("not yet", k)  # the worker looked between the two PUTs
        return await real_get(k)

    store.get = get_before_the_task_exists  # type: ignore[method-assign]
    lease = await queue.protocol.claim(marker, "w", 30, now)
    assert isinstance(lease, Lease) and lease.task.attempt == 1
