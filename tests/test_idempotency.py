"""Idempotency keys (spec §7, issue 9): one task per live key, race-free — concurrent
submits in one process and across processes, lost responses, a crash between the key
and the task — on the in-memory store, a local directory and SeaweedFS."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import time
from datetime import datetime, timedelta
from typing import Any, Sequence

import pytest

from buquet import MemoryStore, Queue, StorageError, TaskStatus, ValidationError, connect
from buquet import _transitions as tr
from buquet._codec import decode_json
from buquet._ids import new_task_id
from buquet._idempotency import GRACE_SECONDS, IdempotencyStore, fingerprint, resolve_scope
from buquet._tasks import TaskProtocol
from buquet._time import to_ms
from buquet.errors import IdempotencyConflict
from buquet.models import Task
from buquet.storage.base import ObjectInfo, ObjectStore, StoredObject
from tests.conftest import FakeClock


# ------------------------------------------------------------------ helpers
def build(protocol: TaskProtocol, input: Any, now: datetime, task_type: str = "job", **options: Any) -> Task:
    """The new Pending task a plain submit would store."""
    tid = new_task_id(to_ms(now))
    return tr.new_pending(tid, task_type, input, shard=protocol.shard_of(tid), timeout_seconds=300,
                          max_retries=3, retry_policy=None, available_at=now, now=now, **options)


async def submit(queue: Queue, input: Any, key: str = "k", *, task_type: str = "job", scope: str | None = None,
                 ttl_days: int = 30, idem: IdempotencyStore | None = None) -> Task:
    """What ``Queue.submit(..., idempotency_key=key)`` does."""
    protocol = queue.protocol
    now = await protocol.time()
    task = build(protocol, input, now, task_type)
    return await (idem or IdempotencyStore(protocol)).submit_once(
        task, key=key, scope=scope, ttl_days=ttl_days, fingerprint=fingerprint(input), now=now)


async def task_ids(store: ObjectStore, queue: Queue) -> list[str]:
    """Ids of every stored task object."""
    out = []
    for shard in queue.shards:
        for info in await store.list(queue.layout.tasks_prefix(shard)):
            parsed = queue.layout.parse_task(info.key)
            assert parsed is not None
            out.append(parsed[1])
    return out


async def ready_ids(store: ObjectStore, queue: Queue) -> list[str]:
    out = []
    for shard in queue.shards:
        for info in await store.list(queue.layout.ready_prefix(shard)):
            marker = queue.layout.parse_ready(info.key)
            assert marker is not None
            out.append(marker.task_id)
    return out


async def idem_records(store: ObjectStore, queue: Queue) -> list[dict[str, Any]]:
    out = []
    for info in await store.list(queue.layout.idempotency_prefix()):
        out.append(decode_json((await store.get(info.key)).data, info.key))
    return out


class Crash(BaseException):
    """The process died right here."""


class FaultyStore(ObjectStore):
    """Delegates to ``inner``; PUTs of keys containing ``match`` can fail as real networks
    do: ``lost`` (applied, then a transient error — the response was lost), ``before``
    (a transient error, not applied), ``crash`` (applied, then :class:`Crash`).

    ``plan`` maps the 1-based number of a matching PUT to a fault; ``rate`` (with
    ``fault``) injects it at random instead."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__()
        self.inner = inner
        self.match: str | None = None
        self.plan: dict[int, str] = {}
        self.rate = 0.0
        self.fault = "lost"
        self.rng = random.Random(9)
        self.puts = 0
        self.injected: list[tuple[str, str]] = []

    def arm(self, match: str, plan: dict[int, str] | None = None, rate: float = 0.0, fault: str = "lost") -> None:
        self.match, self.plan, self.rate, self.fault, self.puts = match, plan or {}, rate, fault, 0

    @property
    def description(self) -> str:
        return f"faulty+{self.inner.description}"

    async def get(self, key: str) -> StoredObject:
        self._count("get")
        return await self.inner.get(key)

    async def head(self, key: str) -> ObjectInfo:
        self._count("head")
        return await self.inner.head(key)

    async def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        self._count("put")
        fault = None
        if self.match is not None and self.match in key:
            self.puts += 1
            fault = self.plan.get(self.puts)
            if fault is None and self.rate and self.rng.random() < self.rate:
                fault = self.fault
        if fault == "before":
            self.injected.append((fault, key))
            raise StorageError(f"injected 503 before PUT {key}", key, status=503)
        etag = await self.inner.put(key, data, if_match=if_match, if_none_match=if_none_match)
        if fault == "lost":
            self.injected.append((fault, key))
            raise StorageError(f"injected lost response of PUT {key}", key, transient=True)
        if fault == "crash":
            self.injected.append((fault, key))
            raise Crash(key)
        return etag

    async def delete(self, key: str) -> None:
        self._count("delete")
        await self.inner.delete(key)

    async def delete_many(self, keys: Sequence[str]) -> None:
        self._count("delete_many")
        await self.inner.delete_many(keys)

    async def list(self, prefix: str, *, start_after: str | None = None, limit: int = 1000) -> list[ObjectInfo]:
        self._count("list")
        return await self.inner.list(prefix, start_after=start_after, limit=limit)

    async def server_time(self) -> datetime | None:
        return await self.inner.server_time()

    async def close(self) -> None:
        await self.inner.close()


# ------------------------------------------------------------------ fixtures
@pytest.fixture(params=["memory", pytest.param("s3", marks=pytest.mark.s3)])
async def env(request: pytest.FixtureRequest, clock: FakeClock):  # type: ignore[no-untyped-def]
    """(queue, store, clock) on a fresh in-memory bucket or a fresh SeaweedFS bucket; the
    store is a :class:`FaultyStore` (unarmed) counting requests."""
    if request.param == "memory":
        inner: ObjectStore = MemoryStore()
    else:
        from buquet.storage.s3 import S3Store
        from tests._servers import unique_bucket

        endpoint = request.getfixturevalue("s3_endpoint")
        inner = S3Store(unique_bucket(endpoint), endpoint=endpoint, region="us-east-1")
    store = FaultyStore(inner)
    queue = await connect(store=store, clock=clock)
    yield queue, store, clock
    await store.close()


# --------------------------------------------------------------- fingerprint
def test_fingerprint_is_canonical_json_sha256() -> None:
    a = {"b": {"y": [1, {"q": 1, "p": 2}], "x": "é"}, "a": 1}
    b = {"a": 1, "b": {"x": "é", "y": [1, {"p": 2, "q": 1}]}}
    assert fingerprint(a) == fingerprint(b)
    import hashlib

    canonical = '{"a":1,"b":{"x":"é","y":[1,{"p":2,"q":1}]}}'
    assert fingerprint(a) == hashlib.sha256(canonical.encode()).hexdigest()
    assert fingerprint([1, 2]) != fingerprint([2, 1])  # list order matters
    assert fingerprint({"a": 1}) != fingerprint({"a": 1.5})


def test_scope_resolution() -> None:
    assert resolve_scope(None, "t") == resolve_scope("task_type", "t") == resolve_scope("TaskType", "t")
    assert resolve_scope(None, "t").namespace == "t"
    assert resolve_scope("queue", "t") == resolve_scope("Queue", "u")
    assert resolve_scope("billing", "t").kind == "named"
    with pytest.raises(ValidationError):
        resolve_scope("", "t")


def test_record_keys_are_safe_and_distinct() -> None:
    from buquet.keys import KeyLayout

    layout = KeyLayout("app")
    k1 = layout.idempotency("named", "ab", "c")
    k2 = layout.idempotency("named", "a", "bc")
    assert k1 != k2
    weird = layout.idempotency("type", "job", "../../ \u0000 ü/x" * 50)
    assert weird.startswith("app/idempotency/type/") and weird.endswith(".json")
    assert len(weird) == len("app/idempotency/type/") + 64 + len(".json")


# ------------------------------------------------------- first, reuse, conflict
async def test_first_use_reuse_and_conflict(env: Any) -> None:
    queue, store, clock = env
    store.request_counts.clear()
    first = await submit(queue, {"to": "a@example.com", "n": 1})
    assert first.status == TaskStatus.Pending
    # cost: 1 GET (miss) + the record PUT + the submit's 2 PUTs
    assert store.request_counts == {"get": 1, "put": 3}
    (record,) = await idem_records(store, queue)
    assert record["task_id"] == first.id and record["fingerprint"] == fingerprint({"to": "a@example.com", "n": 1})
    assert record["task"]["id"] == first.id and record["task"]["input"] == {"to": "a@example.com", "n": 1}
    assert record["expires_at"] == "2026-03-31T12:00:00.000Z" and record["scope"] == "task_type 'job'"

    # reuse, input keys in another order: the same task, 1 GET record + 1 GET task, nothing written
    clock.advance(5)
    store.request_counts.clear()
    again = await submit(queue, {"n": 1, "to": "a@example.com"})
    assert store.request_counts == {"get": 2}
    assert again.id == first.id and again == (await queue.protocol.load(first.id))[0]

    # any status: the task as stored now
    got = await queue.protocol.load(first.id)
    assert got is not None
    done = tr.completed(tr.claimed(got[0], "w", clock(), 30), clock(), {"ok": True})
    from buquet._codec import encode_task

    await store.put(queue.layout.task(done.shard, done.id), encode_task(done).body, if_match=got[1])
    again = await submit(queue, {"to": "a@example.com", "n": 1})
    assert again.id == first.id and again.status == TaskStatus.Completed and again.output == {"ok": True}

    # a different input: the documented conflict, nothing written
    store.request_counts.clear()
    with pytest.raises(IdempotencyConflict) as info:
        await submit(queue, {"to": "b@example.com", "n": 1})
    assert isinstance(info.value, RuntimeError)
    assert "Idempotency conflict" in str(info.value) and "'k'" in str(info.value) and first.id in str(info.value)
    assert info.value.key == "k" and info.value.task_id == first.id
    assert store.request_counts.get("put", 0) == 0
    assert await task_ids(store, queue) == [first.id]


async def test_bad_arguments_write_nothing(queue: Queue, store: MemoryStore) -> None:
    now = await queue.protocol.time()
    task = build(queue.protocol, 1, now)
    idem = IdempotencyStore(queue.protocol)
    before = store.keys()
    for kwargs in (dict(key=""), dict(key=3), dict(scope=""), dict(scope=5), dict(ttl_days=0),
                   dict(ttl_days=True), dict(ttl_days=1.5)):
        args: dict[str, Any] = dict(key="k", scope=None, ttl_days=30, fingerprint=fingerprint(1), now=now)
        args.update(kwargs)
        with pytest.raises(ValidationError):
            await idem.submit_once(task, **args)
    assert store.keys() == before


# ---------------------------------------------------------------------- scopes
async def test_scopes(env: Any) -> None:
    queue, store, _ = env
    # per task type (the default): the same key under two types is two keys
    a = await submit(queue, 1, "k", task_type="alpha")
    b = await submit(queue, 1, "k", task_type="beta")
    assert a.id != b.id
    assert (await submit(queue, 1, "k", task_type="alpha", scope="task_type")).id == a.id
    assert (await submit(queue, 1, "k", task_type="alpha", scope="TaskType")).id == a.id
    # queue-wide: the task type is not fingerprinted, another type gets the first task
    q = await submit(queue, 1, "k", task_type="alpha", scope="queue")
    assert q.id not in (a.id, b.id)
    same = await submit(queue, 1, "k", task_type="beta", scope="Queue")
    assert same.id == q.id and same.task_type == "alpha"
    with pytest.raises(IdempotencyConflict):
        await submit(queue, 2, "k", task_type="beta", scope="queue")
    # named namespaces: separate from each other and from the queue-wide one
    n1 = await submit(queue, 1, "k", task_type="alpha", scope="billing")
    n2 = await submit(queue, 1, "k", task_type="alpha", scope="emails")
    assert len({a.id, b.id, q.id, n1.id, n2.id}) == 5
    assert (await submit(queue, 1, "k", task_type="beta", scope="billing")).id == n1.id
    assert sorted(await task_ids(store, queue)) == sorted([a.id, b.id, q.id, n1.id, n2.id])


# ------------------------------------------------------------ expiry and gone
async def test_ttl_expiry_repoints_the_key(env: Any) -> None:
    queue, store, clock = env
    first = await submit(queue, {"x": 1}, ttl_days=1)
    clock.advance(86400)  # now == expires_at: still live
    assert (await submit(queue, {"x": 1}, ttl_days=1)).id == first.id
    with pytest.raises(IdempotencyConflict):
        await submit(queue, {"x": 2}, ttl_days=1)
    clock.advance(0.001)  # expired: counts as absent, any input
    second = await submit(queue, {"x": 2}, ttl_days=1)
    assert second.id != first.id and second.input == {"x": 2}
    assert (await submit(queue, {"x": 2})).id == second.id
    (record,) = await idem_records(store, queue)
    assert record["task_id"] == second.id
    # the old task is left alone (the library never deletes)
    assert sorted(await task_ids(store, queue)) == sorted([first.id, second.id])


async def delete_task(queue: Queue, store: ObjectStore, task: Task) -> None:
    """What a retention sweep does: the task object and its index entries go."""
    await store.delete(queue.layout.task(task.shard, task.id))
    await store.delete(queue.layout.ready_for(task))


async def test_task_gone_repoints_the_key(env: Any) -> None:
    queue, store, clock = env
    first = await submit(queue, {"x": 1})
    clock.advance(GRACE_SECONDS + 1)
    await delete_task(queue, store, first)
    # gone (no task, no marker, record past the grace): absent, so another input is fine
    second = await submit(queue, {"x": 2})
    assert second.id != first.id
    assert await task_ids(store, queue) == [second.id]
    (record,) = await idem_records(store, queue)
    assert record["task_id"] == second.id and record["task"]["input"] == {"x": 2}


async def test_concurrent_submits_over_a_gone_record_make_one_task(env: Any) -> None:
    queue, store, clock = env
    first = await submit(queue, {"x": 1})
    clock.advance(3600)
    await delete_task(queue, store, first)
    results = await asyncio.gather(*(submit(queue, {"x": 1}) for _ in range(20)))
    assert len({t.id for t in results}) == 1 and results[0].id != first.id
    assert await task_ids(store, queue) == [results[0].id]


# ---------------------------------------------------------------- concurrency
async def test_fifty_concurrent_submits_in_one_process_make_one_task(env: Any) -> None:
    queue, store, _ = env
    results = await asyncio.gather(*(submit(queue, {"n": 50}, "burst") for _ in range(50)))
    ids = {t.id for t in results}
    assert len(ids) == 1
    assert await task_ids(store, queue) == list(ids)
    assert await ready_ids(store, queue) == list(ids)
    assert len(await idem_records(store, queue)) == 1


def _child(target: dict[str, str], start_at: float, n: int) -> list[str]:
    """One process: ``n`` concurrent submits with one key, starting at ``start_at``."""

    async def main() -> list[str]:
        if "local_dir" in target:
            queue = await connect(local_dir=target["local_dir"])
        else:
            queue = await connect(endpoint=target["endpoint"], bucket=target["bucket"], region="us-east-1")
        try:
            await asyncio.sleep(max(0.0, start_at - time.time()))
            results = await asyncio.gather(*(submit(queue, {"order": 42, "items": [1, 2]}, "order-42")
                                             for _ in range(n)))
            return [t.id for t in results]
        finally:
            await queue.store.close()

    return asyncio.run(main())


def _run_processes(target: dict[str, str], processes: int = 4, per_process: int = 10) -> list[str]:
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0  # after every child has imported buquet
    with ctx.Pool(processes) as pool:
        parts = pool.starmap(_child, [(target, start_at, per_process)] * processes, chunksize=1)
    return [tid for part in parts for tid in part]


async def test_processes_racing_on_a_local_directory_make_one_task(tmp_path: Any) -> None:
    root = tmp_path / "bucket"
    queue = await connect(local_dir=str(root))
    ids = await asyncio.to_thread(_run_processes, {"local_dir": str(root)})
    assert len(ids) == 40 and len(set(ids)) == 1
    assert await task_ids(queue.store, queue) == [ids[0]]


@pytest.mark.s3
async def test_processes_racing_on_seaweedfs_make_one_task(s3_endpoint: str, s3_bucket: str) -> None:
    queue = await connect(endpoint=s3_endpoint, bucket=s3_bucket, region="us-east-1")
    ids = await asyncio.to_thread(_run_processes, {"endpoint": s3_endpoint, "bucket": s3_bucket})
    assert len(ids) == 40 and len(set(ids)) == 1
    assert await task_ids(queue.store, queue) == [ids[0]]
    await queue.store.close()


# -------------------------------------------------------- lost responses, crashes
async def test_lost_responses_still_make_one_task(env: Any) -> None:
    queue, store, _ = env
    # every PUT of the record, the ready marker and the task may be applied with its
    # response lost, or fail before it is applied
    store.arm("/", plan={1: "lost"}, rate=0.4, fault="lost")
    results = await asyncio.gather(*(submit(queue, {"n": 1}, "lossy") for _ in range(10)))
    assert any(f == "lost" for f, _ in store.injected)  # (the record alone: next test)
    assert len({t.id for t in results}) == 1
    store.arm("/", plan={1: "before"}, rate=0.2, fault="before")
    others = await asyncio.gather(*(submit(queue, {"n": 1}, "lossy-2") for _ in range(10)))
    assert any(f == "before" for f, _ in store.injected)
    assert len({t.id for t in others}) == 1
    store.arm("nothing")
    assert sorted(await task_ids(store, queue)) == sorted([results[0].id, others[0].id])


async def test_lost_response_of_the_first_record_write(env: Any) -> None:
    queue, store, _ = env
    store.arm("idempotency/", plan={1: "lost"})
    first = await submit(queue, {"n": 1})
    assert store.injected == [("lost", (await store.list(queue.layout.idempotency_prefix()))[0].key)]
    assert await task_ids(store, queue) == [first.id]
    assert (await submit(queue, {"n": 1})).id == first.id


async def test_a_crash_after_the_record_write_is_completed_by_the_next_submit(env: Any) -> None:
    queue, store, clock = env
    store.arm("idempotency/", plan={1: "crash"})
    with pytest.raises(Crash):
        await submit(queue, {"n": 7})
    store.arm("nothing")
    (record,) = await idem_records(store, queue)
    assert await task_ids(store, queue) == [] and await ready_ids(store, queue) == []
    clock.advance(5)
    # the key is not blocked: the next submit stores the record's task and returns it
    later = await submit(queue, {"n": 7})
    assert later.id == record["task_id"] and later.status == TaskStatus.Pending
    assert await task_ids(store, queue) == [later.id] and await ready_ids(store, queue) == [later.id]
    assert (await submit(queue, {"n": 7})).id == later.id
    # and a different input is a conflict while it is in flight
    with pytest.raises(IdempotencyConflict):
        await submit(queue, {"n": 8})


async def test_crash_after_record_many_concurrent_completers_make_one_task(env: Any) -> None:
    queue, store, clock = env
    store.arm("idempotency/", plan={1: "crash"})
    with pytest.raises(Crash):
        await submit(queue, {"n": 7})
    store.arm("nothing")
    (record,) = await idem_records(store, queue)
    clock.advance(GRACE_SECONDS * 0.75)  # old enough to refresh the record before completing it
    results = await asyncio.gather(*(submit(queue, {"n": 7}) for _ in range(20)))
    assert {t.id for t in results} == {record["task_id"]}
    assert await task_ids(store, queue) == [record["task_id"]]
    (after,) = await idem_records(store, queue)
    assert after["touched_at"] > record["touched_at"] and after["created_at"] == record["created_at"]
    # refreshed: even past the original grace nobody counts its task as gone
    clock.advance(GRACE_SECONDS * 0.5)
    assert (await submit(queue, {"n": 7})).id == record["task_id"]


async def test_a_crash_after_the_ready_marker_is_completed_even_after_the_grace(env: Any) -> None:
    queue, store, clock = env
    # PUTs of the submit: record, ready marker, task object — die after the marker
    store.arm("", plan={2: "crash"})
    with pytest.raises(Crash):
        await submit(queue, {"n": 3})
    store.arm("nothing")
    (record,) = await idem_records(store, queue)
    assert await task_ids(store, queue) == [] and await ready_ids(store, queue) == [record["task_id"]]
    clock.advance(GRACE_SECONDS * 10)  # the marker says: in flight, not gone
    later = await submit(queue, {"n": 3})
    assert later.id == record["task_id"]
    assert await task_ids(store, queue) == [later.id]


async def test_a_crash_after_the_record_then_silence_repoints_after_the_grace(env: Any) -> None:
    queue, store, clock = env
    store.arm("idempotency/", plan={1: "crash"})
    with pytest.raises(Crash):
        await submit(queue, {"n": 7})
    store.arm("nothing")
    (record,) = await idem_records(store, queue)
    clock.advance(GRACE_SECONDS + 1)
    # no task, no marker, record past the grace: the key is re-pointed, never blocked
    later = await submit(queue, {"n": 7})
    assert later.id != record["task_id"]
    assert await task_ids(store, queue) == [later.id]


async def test_a_task_claimed_from_the_marker_copy_before_its_object_is_found(env: Any) -> None:
    queue, store, clock = env
    # the submitter dies after the marker; a worker claims the task from the marker copy
    store.arm("", plan={2: "crash"})
    with pytest.raises(Crash):
        await submit(queue, {"n": 4})
    store.arm("nothing")
    (record,) = await idem_records(store, queue)
    copy = Task.from_dict(record["task"])
    running = tr.claimed(copy, "w", clock(), 30)
    from buquet._codec import encode_task

    await store.put(queue.layout.task(copy.shard, copy.id), encode_task(running).body, if_none_match=True)
    got = await submit(queue, {"n": 4})
    assert got.id == copy.id and got.status == TaskStatus.Running


async def test_records_are_json_documents_with_the_whole_task(queue: Queue, store: MemoryStore) -> None:
    task = await submit(queue, {"deep": {"b": 2, "a": 1}}, "order-1", scope="billing", ttl_days=7)
    (key,) = [k for k in store.keys() if "/idempotency/" in "/" + k]
    assert key.startswith("idempotency/named/")
    doc = json.loads((await store.get(key)).data)
    assert set(doc) == {"version", "key", "scope", "task_id", "fingerprint", "created_at", "touched_at",
                        "expires_at", "task", "rev"}
    assert doc["key"] == "order-1" and doc["scope"] == "'billing'"
    assert Task.from_dict(doc["task"]) == task
    assert datetime.fromisoformat(doc["expires_at"].replace("Z", "+00:00")) - task.created_at == timedelta(days=7)
