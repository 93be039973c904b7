"""Queue API on the in-memory store: submit, validation, reads, config."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from buquet import (
    ConfigurationError,
    MemoryStore,
    RetryPolicy,
    TaskStatus,
    ValidationError,
    connect,
)
from buquet.queue import Queue
from tests.conftest import FakeClock


async def test_submit_stores_a_pending_task(queue: Queue, clock: FakeClock) -> None:
    task = await queue.submit("send_email", {"to": "user@example.com"})
    assert len(task.id) == 36 and task.status == TaskStatus.Pending
    assert task.shard in queue.shards and task.shard == queue.shard_of(task.id)
    assert task.created_at == clock.now and task.available_at == clock.now
    assert (task.timeout_seconds, task.max_retries, task.retry_count, task.attempt) == (300, 3, 0, 0)
    got = await queue.get(task.id)
    assert got == task
    assert await queue.list_ready(task.shard) == [task.id]


async def test_get_unknown_task_is_none(queue: Queue) -> None:
    assert await queue.get("00000000-0000-7000-8000-000000000000") is None
    assert await queue.get_history("00000000-0000-7000-8000-000000000000") == []


async def test_submit_with_only_the_marker_written_is_still_readable(queue: Queue, store: MemoryStore) -> None:
    # a submitter that died between its two PUTs left only the ready marker
    task = await queue.submit("t", 1)
    await store.delete(queue.layout.task(task.shard, task.id))
    assert (await queue.get(task.id)).id == task.id  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"task_type": ""}, "task_type"),
        ({"task_type": 42}, "task_type"),
        ({"task_type": "has space"}, "task_type"),
        ({"task_type": "a/b"}, "task_type"),
        ({"input": object()}, "input"),
        ({"input": {"x": float("nan")}}, "input.x"),
        ({"input": [1, math.inf]}, "input[1]"),
        ({"input": {1: "int key"}}, "input"),
        ({"timeout_seconds": -1}, "timeout_seconds"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": True}, "timeout_seconds"),
        ({"timeout_seconds": 1.5}, "timeout_seconds"),
        ({"max_retries": -1}, "max_retries"),
        ({"retry_policy": {"initial_interval_ms": 1}}, "retry_policy"),
        ({"schedule_at": datetime(2030, 1, 1)}, "schedule_at"),
        ({"schedule_at": "tomorrow"}, "schedule_at"),
        ({"schedule_at": "2030-01-01T00:00:00"}, "schedule_at"),
        ({"schedule_at": 12345}, "schedule_at"),
    ],
)
async def test_bad_submit_input_is_rejected_before_any_write(queue: Queue, store: MemoryStore, kwargs, field) -> None:  # type: ignore[no-untyped-def]
    args = {"task_type": "ok", "input": {"a": 1}, **kwargs}
    before = store.keys()
    puts = store.request_counts.get("put", 0)
    with pytest.raises(ValidationError) as info:
        await queue.submit(args.pop("task_type"), args.pop("input"), **args)
    assert info.value.field == field
    assert field in str(info.value)
    assert store.keys() == before and store.request_counts.get("put", 0) == puts


@pytest.mark.parametrize(
    "policy_kwargs, field",
    [
        ({"initial_interval_ms": -1}, "retry_policy.initial_interval_ms"),
        ({"max_interval_ms": 10, "initial_interval_ms": 100}, "retry_policy.max_interval_ms"),
        ({"multiplier": 0.5}, "retry_policy.multiplier"),
        ({"jitter_percent": 2}, "retry_policy.jitter_percent"),
        ({"multiplier": float("nan")}, "retry_policy.multiplier"),
    ],
)
def test_bad_retry_policy_names_the_field(policy_kwargs, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as info:
        RetryPolicy(**policy_kwargs)
    assert info.value.field == field


@pytest.mark.parametrize("bad", ["", "xyz", "0" * 31, "G" * 32, "../" + "0" * 29, None, 7])
async def test_malformed_task_ids_are_rejected(queue: Queue, bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as info:
        await queue.get(bad)
    assert info.value.field == "task_id"


async def test_unknown_shard_is_rejected(queue: Queue) -> None:
    with pytest.raises(ValidationError, match="unknown shard '9'"):
        await queue.list_ready("9")
    with pytest.raises(ValidationError):
        await queue.list("9")


async def test_schedule_at_in_the_future_is_neither_listed_nor_due(queue: Queue, clock: FakeClock) -> None:
    later = clock.now + timedelta(hours=1)
    task = await queue.submit("t", None, schedule_at=later)
    assert task.available_at == later
    assert await queue.list_ready(task.shard) == []
    clock.advance(3600)
    assert await queue.list_ready(task.shard) == [task.id]


async def test_schedule_at_accepts_rfc3339_with_offset(queue: Queue) -> None:
    task = await queue.submit("t", None, schedule_at="2030-01-01T10:00:00+02:00")
    assert task.available_at == datetime(2030, 1, 1, 8, 0, tzinfo=timezone.utc)


async def test_list_filters_by_status(queue: Queue) -> None:
    tasks = [await queue.submit("t", i) for i in range(12)]
    per_shard = {s: [t.id for t in tasks if t.shard == s] for s in queue.shards}
    for shard, ids in per_shard.items():
        listed = await queue.list(shard)
        assert [t.id for t in listed] == sorted(ids)
        assert await queue.list(shard, status="running") == []
        assert len(await queue.list(shard, status=TaskStatus.Pending)) == len(ids)
    with pytest.raises(ValidationError, match="status"):
        await queue.list("0", status="bogus")


async def test_now_is_rfc3339_of_the_queue_clock(queue: Queue, clock: FakeClock) -> None:
    assert await queue.now() == "2026-03-01T12:00:00.000Z"


async def test_connect_without_configuration_names_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("S3_BUCKET", "S3_ENDPOINT", "S3_REGION", "BUQUET_LOCAL_DIR"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigurationError) as info:
        await connect()
    for name in ("S3_BUCKET", "S3_ENDPOINT", "S3_REGION", "BUQUET_LOCAL_DIR"):
        assert name in str(info.value)


async def test_shard_count_is_a_bucket_setting_all_clients_share() -> None:
    store = MemoryStore()
    first = await connect(store=store, shard_count=8)
    assert first.shards == [str(i) for i in range(8)]
    second = await connect(store=store)
    assert second.shard_count == 8
    with pytest.raises(ConfigurationError, match="shard_count=8"):
        await connect(store=store, shard_count=4)
    default = await connect(store=MemoryStore())
    assert default.shards == ["0", "1", "2", "3"]  # the seed's Quick Start shards


async def test_local_dir_backend_via_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BUQUET_LOCAL_DIR", str(tmp_path))
    q = await connect()
    task = await q.submit("t", {"x": 1})
    q2 = await connect(local_dir=str(tmp_path))
    assert (await q2.get(task.id)).input == {"x": 1}  # type: ignore[union-attr]


async def test_archive_only_final_tasks(queue: Queue) -> None:
    task = await queue.submit("t", None)
    with pytest.raises(ValidationError, match="only completed or failed"):
        await queue.archive(task.id)


@pytest.mark.parametrize("body", [b'{"shard_count": 1e400}', b'{"shard_count": 2.7}', b'{"shard_count": 0}', b"[]", b"nope"])
async def test_malformed_bucket_config_is_a_configuration_error(body: bytes) -> None:
    store = MemoryStore()
    await store.put("config.json", body)
    with pytest.raises(ConfigurationError, match="config.json"):
        await connect(store=store)


async def test_read_only_connect_writes_nothing_to_a_fresh_store() -> None:
    store = MemoryStore()
    q = await connect(store=store, read_only=True)
    assert q.shards == ["0", "1", "2", "3"]
    assert store.keys() == [] and store.request_counts.get("put", 0) == 0


async def test_recent_looks_back_only_as_far_as_the_page_needs_and_pages_through_everything(clock) -> None:  # type: ignore[no-untyped-def]
    from buquet import MemoryStore, connect

    store = MemoryStore()
    q = await connect(store=store, clock=clock, shard_count=2)
    ages_days = [40, 39, 2, 1.9, 0.0003, 0.0002, 0.0001]  # oldest first (distinct ms: UUIDv7 order)
    start = clock.now
    ids = []
    for age in ages_days:
        clock.now = start - timedelta(days=age)
        ids.append((await q.submit("t", None)).id)
    clock.now = start
    newest_first = ids[::-1]

    lists = store.request_counts.get("list", 0)
    page = await q.recent(limit=2)
    assert [t.id for t in page.tasks] == newest_first[:2]
    assert (page.listed, page.complete) == (3, False)  # the last minute was enough
    assert store.request_counts["list"] - lists == 2  # one LIST per shard

    page = await q.recent(limit=5)
    assert [t.id for t in page.tasks] == newest_first[:5] and (page.listed, page.complete) == (5, False)
    page = await q.recent(limit=50)
    assert [t.id for t in page.tasks] == newest_first and page.complete and page.next_before is None

    seen, before = [], None
    while True:  # paging with the cursor visits every task once, newest first
        page = await q.recent(limit=2, before=before)
        seen += [t.id for t in page.tasks]
        if page.next_before is None:
            break
        before = page.next_before
    assert seen == newest_first

    failed = await q.recent(status="failed")
    assert failed.tasks == [] and failed.complete
