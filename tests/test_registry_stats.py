"""Worker registrations (``Queue.workers``), queue counts (``Queue.stats``) and the
``buquet workers`` / ``buquet stats`` commands."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from buquet import MemoryStore, Queue, QueueStats, RetryPolicy, Worker, WorkerInfo, WorkerRunOptions, connect
from buquet._ids import new_task_id
from buquet._registry import WorkerRegistration
from buquet._stats import stats_request_formula
from buquet.cli import cli
from buquet.keys import WORKERS_DIR, KeyLayout
from tests.conftest import FakeClock

ROOT = Path(__file__).resolve().parent.parent


async def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    """Poll an async predicate until it returns something truthy (or fail at the deadline)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


def opts(**kw: Any) -> WorkerRunOptions:
    return WorkerRunOptions(heartbeat_interval_s=0.1, with_monitor=False, handle_signals=False,
                            poll_interval_ms=10, max_poll_interval_ms=20, **kw)


# ------------------------------------------------------------------ registrations
async def test_a_running_worker_registers_refreshes_and_deregisters_on_clean_stop(live_queue: Queue) -> None:
    store = live_queue.store
    assert isinstance(store, MemoryStore)
    worker = Worker(live_queue, "w-reg-1", ["0", "1", "2", "3"])
    done = asyncio.Event()

    @worker.task("echo")
    async def echo(x: Any) -> Any:
        done.set()
        return x

    @worker.task("other")
    async def other(x: Any) -> Any:
        return x

    run = asyncio.create_task(worker.run(opts()))
    try:
        [info] = await wait_for(lambda: live_queue.workers())
        assert isinstance(info, WorkerInfo)
        assert info.worker_id == "w-reg-1" and info.alive and info.pid == os.getpid()
        assert info.shards == ("0", "1", "2", "3") and info.task_types == ("echo", "other")
        assert info.host and info.started_at <= info.last_seen_at and info.in_flight == 0
        assert info.heartbeat_interval_seconds == 0.1
        first_seen = info.last_seen_at
        task = await live_queue.submit("echo", {"n": 1})
        await live_queue.wait(task.id, timeout_seconds=10)

        async def counted() -> WorkerInfo | None:
            ws = await live_queue.workers()
            return ws[0] if ws and ws[0].counters.get("completed") == 1 else None

        info = await wait_for(counted)  # the heartbeat carries the worker's counters
        assert info.counters.get("claimed") == 1 and info.last_seen_at > first_seen
        assert info.started_at <= first_seen
    finally:
        worker.stop()
        await asyncio.wait_for(run, 10)
    assert await live_queue.workers() == []
    assert [i.key async for page in store.scan(WORKERS_DIR) for i in page] == []


async def test_run_once_does_not_register(live_queue: Queue) -> None:
    worker = Worker(live_queue, "w-lambda", ["0", "1", "2", "3"])

    @worker.task("echo")
    async def echo(x: Any) -> Any:
        return x

    await live_queue.submit("echo", 1, timeout_seconds=5)
    puts_before = live_queue.store.request_counts.get("put", 0)
    out = await worker.run_once(remaining_seconds=lambda: 60.0, options=opts())
    assert out.get("completed") == 1
    assert live_queue.store.request_counts.get("put", 0) - puts_before == 2  # claim + complete, no registration
    assert await live_queue.workers() == []


async def test_registration_goes_gone_past_the_threshold(queue: Queue, clock: FakeClock) -> None:
    worker = Worker(queue, "w-fake", ["0", "1"])
    worker.task("t")(lambda x: x)
    reg = WorkerRegistration(worker, 10.0)
    await reg.write()
    [info] = await queue.workers()
    assert info.alive and info.last_seen_at == clock.now and info.seen_seconds_ago == 0
    assert info.shards == ("0", "1") and info.task_types == ("t",)
    clock.advance(59)
    assert [w.alive for w in await queue.workers()] == [True]
    clock.advance(2)
    [gone] = await queue.workers()
    assert not gone.alive and gone.seen_seconds_ago == pytest.approx(61)
    assert await queue.workers(include_gone=False) == []
    assert [w.alive for w in await queue.workers(health_threshold_seconds=120)] == [True]
    await reg.write()  # a heartbeat makes it alive again, started_at unchanged
    [back] = await queue.workers(include_gone=False)
    assert back.alive and back.started_at == info.started_at and back.last_seen_at == clock.now
    await reg.remove()
    assert await queue.workers() == []


async def test_corrupt_registrations_are_skipped_and_cost_one_list_plus_one_get_each(
        queue: Queue, store: MemoryStore, caplog: pytest.LogCaptureFixture) -> None:
    for wid in ("a", "b"):
        w = Worker(queue, wid, ["0"])
        w.task("t")(lambda x: x)
        await WorkerRegistration(w, 10.0).write()
    await store.put(KeyLayout().worker("broken"), b"{not json")
    await store.put(KeyLayout().worker("partial"), b'{"worker_id": "partial"}')
    before = dict(store.request_counts)
    found = await queue.workers()
    assert [w.worker_id for w in found] == ["a", "b"]
    assert {k: n - before.get(k, 0) for k, n in store.request_counts.items() if n != before.get(k, 0)} == \
        {"list": 1, "get": 4}
    assert "broken" in caplog.text and "partial" in caplog.text


def test_a_killed_worker_is_shown_gone(tmp_path: Path) -> None:
    """SIGKILL leaves the registration behind; past the threshold it reads as gone."""
    local = tmp_path / "bucket"
    app = tmp_path / "killme.py"
    app.write_text(textwrap.dedent(f"""
        import asyncio
        from buquet import Worker, WorkerRunOptions, connect

        async def main():
            q = await connect(local_dir={str(local)!r})
            w = Worker(q, "doomed", q.shards)
            w.task("t")(lambda x: x)
            await w.run(WorkerRunOptions(heartbeat_interval_s=0.2, with_monitor=False, handle_signals=False))

        asyncio.run(main())
    """))
    proc = subprocess.Popen([sys.executable, str(app)], cwd=ROOT)

    async def check() -> None:
        q = await connect(local_dir=str(local), read_only=False)
        try:
            [info] = await wait_for(q.workers, timeout=30)
            assert info.worker_id == "doomed" and info.pid == proc.pid and info.alive
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            later = await connect(local_dir=str(local),
                                  clock=lambda: datetime.now(timezone.utc) + timedelta(seconds=61))
            [gone] = await later.workers()
            assert gone.worker_id == "doomed" and not gone.alive and gone.pid == proc.pid
            assert await later.workers(include_gone=False) == []
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    asyncio.run(check())


# ------------------------------------------------------------------------- stats
async def claim(queue: Queue, task_id: str, worker_id: str = "w") -> Any:
    now = await queue.time()
    shard = queue.shard_of(task_id)
    [marker] = [m for m in await queue.protocol.due_markers(shard, now, 1000) if m.task_id == task_id]
    lease = await queue.protocol.claim(marker, worker_id, 30, now)
    assert hasattr(lease, "task"), lease
    return lease


async def populate(queue: Queue, store: MemoryStore, clock: FakeClock) -> dict[str, str]:
    """Tasks in every state; returns their ids by label."""
    ids: dict[str, str] = {}
    for label, ttype in (("p1", "a"), ("p2", "a"), ("p3", "b")):
        ids[label] = (await queue.submit(ttype, {"l": label})).id
    clock.advance(5)
    ids["sched"] = (await queue.submit("a", 1, schedule_at=clock.now + timedelta(hours=1))).id
    ids["run"] = (await queue.submit("a", 2)).id
    ids["done"] = (await queue.submit("b", 3)).id
    ids["fail"] = (await queue.submit("b", 4, max_retries=0)).id
    ids["cancel"] = (await queue.submit("a", 5)).id
    ids["backoff"] = (await queue.submit("a", 6, max_retries=3,
                                         retry_policy=RetryPolicy(initial_interval_ms=600_000, max_interval_ms=600_000))).id
    lease = await claim(queue, ids["run"])
    await store.delete_many(await queue.protocol.extend(lease, 30))  # past its first heartbeat: in leases/
    lease = await claim(queue, ids["done"])
    await store.delete_many(await queue.protocol.complete(lease, {"ok": True}))
    lease = await claim(queue, ids["fail"])
    await store.delete_many(await queue.protocol.fail(lease, "boom", retryable=False))
    await queue.cancel(ids["cancel"])
    lease = await claim(queue, ids["backoff"])
    # retried with a backoff; the old ready marker is left behind (its batched delete
    # not sent yet): it must not count twice
    await queue.protocol.fail(lease, "transient", retryable=True)
    clock.advance(25)
    return ids


def key_counts(store: MemoryStore, prefix: str, shards: list[str]) -> list[int]:
    keys = list(store._keys)  # noqa: SLF001 - counting without sending requests
    return [sum(1 for k in keys if k.startswith(f"{prefix}{s}/")) for s in shards]


async def test_stats_counts_every_state_exactly(queue: Queue, store: MemoryStore, clock: FakeClock) -> None:
    ids = await populate(queue, store, clock)
    for label, status in (("done", "completed"), ("fail", "failed"), ("cancel", "cancelled"), ("run", "running"),
                          ("backoff", "pending"), ("sched", "pending"), ("p1", "pending")):
        assert (await queue.get(ids[label])).status.value == status, label
    before = dict(store.request_counts)
    st = await queue.stats()
    sent = {k: n - before.get(k, 0) for k, n in store.request_counts.items() if n != before.get(k, 0)}
    assert isinstance(st, QueueStats) and st.at == clock.now
    assert st.pending_count == 3 and st.pending_by_type == {"a": 2, "b": 1}
    assert st.scheduled_count == 2 and st.scheduled_by_type == {"a": 2}
    assert st.running_count == 1 and st.expired_leases == 0
    assert st.running_by_shard[queue.shard_of(ids["run"])] == 1 and sum(st.running_by_shard.values()) == 1
    assert sum(st.pending_by_shard.values()) == 3 and sum(st.scheduled_by_shard.values()) == 2
    assert set(st.pending_by_shard) == set(queue.shards)
    assert st.oldest_ready_age_seconds == pytest.approx(30.0)  # p1..p3 were due 30 s ago
    p_shards = {queue.shard_of(ids[x]) for x in ("p1", "p2", "p3")}
    assert set(st.oldest_ready_age_by_shard) == p_shards
    assert st.task_objects == 9 and not st.task_objects_truncated
    assert st.final_by_status == {"cancelled": 1, "completed": 1, "failed": 1} and st.final_by_status_complete
    assert st.final_sampled == 3 and st.final_count == 3
    # the request count it reports is what the store saw, and the documented formula
    assert st.requests == sent == {"list": 12, "get": 3}
    shards = queue.shards
    assert st.requests == stats_request_formula(key_counts(store, "ready/", shards), key_counts(store, "leases/", shards),
                                                key_counts(store, "tasks/", shards), 1000, 3, 100)
    json.dumps(st.to_dict())

    # a type filter: by key for pending/scheduled, one GET per running task
    st_a = await queue.stats(task_type="a")
    assert (st_a.pending_count, st_a.scheduled_count, st_a.running_count) == (2, 2, 1)
    assert st_a.final_by_status == {"cancelled": 1} and st_a.requests == {"list": 12, "get": 4}
    st_b = await queue.stats(task_type="b")
    assert (st_b.pending_count, st_b.scheduled_count, st_b.running_count) == (1, 0, 0)
    assert st_b.final_by_status == {"completed": 1, "failed": 1}

    # the lease lapses: still running, but counted as an expired lease
    clock.advance(60)
    assert (await queue.stats()).expired_leases == 1

    # one shard only
    one = queue.shard_of(ids["run"])
    st1 = await queue.stats(shards=[one])
    assert st1.shards == (one,) and st1.running_count == 1 and st1.requests["list"] == 3


async def test_stats_sample_and_scan_limits_are_honest(queue: Queue, store: MemoryStore, clock: FakeClock) -> None:
    await populate(queue, store, clock)
    st = await queue.stats(final_sample=2)
    assert st.final_sampled == 2 and st.final_count == 2 and not st.final_by_status_complete
    st = await queue.stats(final_sample=0)
    assert st.final_by_status == {} and not st.final_by_status_complete and "get" not in st.requests
    st = await queue.stats(final_scan_limit=1)
    assert st.task_objects_truncated and st.task_objects <= 4 and not st.final_by_status_complete
    # counts from the indexes do not depend on the task-object scan
    assert (st.pending_count, st.scheduled_count, st.running_count) == (3, 2, 1)
    with pytest.raises(ValueError):
        await queue.stats(shards=["zz"])
    with pytest.raises(ValueError):
        await queue.stats(final_scan_limit=0)


async def test_stats_request_count_on_a_big_shard_matches_the_formula(queue: Queue, store: MemoryStore,
                                                                      clock: FakeClock) -> None:
    """Pages: 2,100 ready markers and 2,500 task objects in shard "0" (the objects are
    not valid tasks: the sampled GETs skip them as corrupt)."""
    layout = queue.layout
    ms = int(clock.now.timestamp() * 1000)
    for i in range(2100):
        await store.put(layout.ready("0", ms - i, new_task_id(ms), "bulk"), b"")
    for i in range(2500):
        await store.put(layout.task("0", new_task_id(ms + i)), b"{}")
    for i in range(1000):  # exactly one full page of leases in shard "1"
        await store.put(layout.lease("1", ms + 60_000, new_task_id(ms)), b"")
    before = dict(store.request_counts)
    st = await queue.stats(final_scan_limit=1500, final_sample=7)
    sent = {k: n - before.get(k, 0) for k, n in store.request_counts.items() if n != before.get(k, 0)}
    shards = queue.shards
    expected = stats_request_formula(key_counts(store, "ready/", shards), key_counts(store, "leases/", shards),
                                     key_counts(store, "tasks/", shards), 1500, 1500, 7)
    # ready: 3 + 1+1+1; leases: 1 + 2 + 1+1; tasks: min(3, 2) + 1+1+1
    assert expected == {"list": 6 + 5 + 5, "get": 7}
    assert st.requests == sent == expected
    assert st.pending_count == 2100 and st.pending_by_type == {"bulk": 2100} and st.running_count == 1000
    assert st.task_objects == 1500 and st.task_objects_truncated
    assert st.oldest_ready_age_seconds == pytest.approx(2.099)


# --------------------------------------------------------------------------- CLI
@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = tmp_path / "bucket"

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(cli, ["--local-dir", str(store), *args])

    invoke.store = store  # type: ignore[attr-defined]
    return invoke


def test_cli_stats_and_workers(run) -> None:  # type: ignore[no-untyped-def]
    async def setup() -> str:
        q = await connect(local_dir=str(run.store))
        t = await q.submit("mail", {"to": "x"})
        await q.submit("mail", 2, schedule_at=datetime.now(timezone.utc) + timedelta(hours=1))
        w = Worker(q, "cli-worker", ["0", "1"])
        w.task("mail")(lambda x: x)
        w.stats.update(completed=7, failed=2)
        await WorkerRegistration(w, 10.0).write()
        return t.id

    asyncio.run(setup())
    r = run("stats", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["pending_count"] == 1 and data["scheduled_count"] == 1 and data["pending_by_type"] == {"mail": 1}
    assert data["task_objects"] == 2 and data["task_objects_truncated"] is False
    assert data["requests"] == {"list": 12}
    r = run("stats")
    assert r.exit_code == 0, r.output
    assert "pending" in r.output and "mail" in r.output and "Queue lag" in r.output
    r = run("stats", "--scan-limit", "1", "--shard", "0", "--shard", "1", "--shard", "2", "--shard", "3")
    assert r.exit_code == 0 and "≥ " in r.output, r.output
    r = run("stats", "--shard", "9")
    assert r.exit_code == 2 and "shard" in r.output

    r = run("workers", "--json")
    assert r.exit_code == 0, r.output
    [w] = json.loads(r.output)
    assert w["worker_id"] == "cli-worker" and w["alive"] is True and w["shards"] == ["0", "1"]
    assert w["counters"] == {"completed": 7, "failed": 2} and w["task_types"] == ["mail"]
    r = run("workers")
    assert r.exit_code == 0 and "cli-worker" in r.output and "alive" in r.output and "s ago" in r.output and "cli-worker" in r.output, r.output
    r = run("workers", "--json", "--threshold", "0")  # seen > 0 s ago: gone, hidden without --all
    assert r.exit_code == 0 and json.loads(r.output) == []
    r = run("workers", "--all", "--threshold", "0")
    assert r.exit_code == 0 and "gone" in r.output, r.output


# ----------------------------------------------------------------------- SeaweedFS
@pytest.mark.s3
async def test_registrations_and_stats_on_s3(s3_queue_factory: Any) -> None:
    q = await s3_queue_factory()
    try:
        worker = Worker(q, "s3-worker", q.shards)
        worker.task("echo")(lambda x: x)
        run = asyncio.create_task(worker.run(opts()))
        try:
            [info] = await wait_for(q.workers)
            assert info.worker_id == "s3-worker" and info.alive and info.pid == os.getpid()
            task = await q.submit("echo", 1)
            assert (await q.wait(task.id, timeout_seconds=20)).status.value == "completed"
            await q.submit("other", 2)
            await q.submit("other", 3, schedule_at=datetime.now(timezone.utc) + timedelta(hours=1))
        finally:
            worker.stop()
            await asyncio.wait_for(run, 20)
        assert await q.workers() == []
        st = await q.stats()
        assert (st.pending_count, st.scheduled_count, st.running_count) == (1, 1, 0)
        assert st.pending_by_type == {"other": 1} and st.task_objects == 3
        assert st.final_by_status == {"completed": 1} and st.final_by_status_complete
        assert st.requests == {"list": 3 * len(q.shards), "get": 1}
    finally:
        await q.close()
