"""Shard leases (spec §12, issue 11): one live owner per shard, takeover after expiry,
release at shutdown, renewal failure stops polling at once, no shard left unpolled,
request counts per round — on the in-memory store with a settable clock."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timezone

import pytest

from buquet import MemoryStore, ShardLeaseConfig, StorageError, Worker, WorkerRunOptions, connect
from buquet._shard_leases import ShardLeaser
from buquet.keys import KeyLayout

from .conftest import FakeClock

SHARDS = ["0", "1", "2", "3"]
CONFIG = ShardLeaseConfig.custom(shards_per_worker=16, lease_ttl_secs=30, renewal_interval_secs=10)


class Fleet:
    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store or MemoryStore()
        self.layout = KeyLayout("")
        self.clock = FakeClock(datetime.now(timezone.utc))
        self.polled: dict[str, list[str]] = {}

    async def now(self) -> datetime:
        return self.clock()

    async def leaser(self, worker_id: str, config: ShardLeaseConfig = CONFIG, shards: list[str] = SHARDS) -> ShardLeaser:
        self.polled[worker_id] = []
        return ShardLeaser(self.store, self.layout, self.now, worker_id, shards, config, 30.0,
                           lambda held: self.polled.__setitem__(worker_id, held), random.Random(worker_id))

    def owners(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for wid, held in self.polled.items():
            for s in held:
                out.setdefault(s, []).append(wid)
        return out


async def rounds(*leasers: ShardLeaser, n: int = 3) -> None:
    for _ in range(n):
        for lz in leasers:
            await lz.step()


async def test_a_lone_worker_takes_every_shard_and_polls_them() -> None:
    f = Fleet()
    a = await f.leaser("a")
    assert await a.step() == SHARDS
    assert f.polled["a"] == SHARDS


async def test_two_workers_split_the_shards_evenly_with_one_live_owner_each() -> None:
    f = Fleet()
    a, b = await f.leaser("a"), await f.leaser("b")
    await rounds(a, b)
    owners = f.owners()
    assert sorted(owners) == SHARDS and all(len(w) == 1 for w in owners.values())
    assert len(f.polled["a"]) == len(f.polled["b"]) == 2


async def test_a_newcomer_gets_its_share_from_a_worker_that_held_everything() -> None:
    f = Fleet()
    a = await f.leaser("a")
    await a.step()
    b = await f.leaser("b")
    await rounds(b, a, b)
    assert len(f.polled["a"]) == 2 and len(f.polled["b"]) == 2
    assert set(f.polled["a"]).isdisjoint(f.polled["b"])


async def test_an_expired_lease_is_taken_over_and_a_live_one_is_not() -> None:
    f = Fleet()
    a, b = await f.leaser("a"), await f.leaser("b")
    await rounds(a, b)
    a_shards = list(f.polled["a"])
    f.clock.advance(20)  # a stops renewing (it died); its leases last 30 s
    await b.step()
    assert set(f.polled["b"]).isdisjoint(a_shards)
    f.clock.advance(11)  # past the TTL (and a's membership is no longer live)
    await b.step()
    assert f.polled["b"] == SHARDS


async def test_release_at_shutdown_lets_a_peer_take_the_shards_without_waiting_for_the_ttl() -> None:
    f = Fleet()
    a, b = await f.leaser("a"), await f.leaser("b")
    await rounds(a, b)
    await a.release_all()
    assert f.polled["a"] == []
    await b.step()
    assert f.polled["b"] == SHARDS


async def test_release_does_not_undo_a_takeover() -> None:
    f = Fleet()
    a = await f.leaser("a", shards=["0"])
    await a.step()
    f.clock.advance(31)
    b = await f.leaser("b", shards=["0"])
    await b.step()
    assert f.polled["b"] == ["0"]
    await a.release_all()  # a is late: its release meets b's lease and changes nothing
    stored = (await f.store.get(f.layout.shard_lease("0"))).data
    assert b'"owner":"b"' in stored


class FailingPuts(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail_keys: set[str] = set()

    async def put(self, key, data, *, if_match=None, if_none_match=False):  # type: ignore[no-untyped-def]
        if key in self.fail_keys:
            raise StorageError("injected failure", key, operation="put", transient=False)
        return await super().put(key, data, if_match=if_match, if_none_match=if_none_match)


async def test_a_failed_renewal_stops_polling_that_shard_at_once() -> None:
    store = FailingPuts()
    f = Fleet(store)
    a = await f.leaser("a")
    await a.step()
    store.fail_keys.add(f.layout.shard_lease("2"))
    f.clock.advance(10)
    await a.step()
    assert "2" not in f.polled["a"] and f.polled["a"] == ["0", "1", "3"]


async def test_no_shard_is_left_unpolled_while_workers_with_room_live() -> None:
    f = Fleet()
    ls = [await f.leaser(w) for w in ("a", "b", "c")]
    await rounds(*ls)
    owners = f.owners()
    assert sorted(owners) == SHARDS and all(len(w) == 1 for w in owners.values())
    assert sorted(len(f.polled[w]) for w in ("a", "b", "c")) == [1, 1, 2]


async def test_shards_per_worker_caps_what_one_worker_holds() -> None:
    f = Fleet()
    a = await f.leaser("a", ShardLeaseConfig.custom(2, 30, 10))
    assert len(await a.step()) == 2


async def test_request_count_of_a_steady_round() -> None:
    f = Fleet()
    a, b = await f.leaser("a"), await f.leaser("b")
    await rounds(a, b)
    before = dict(f.store.request_counts)
    f.clock.advance(10)
    await a.step()
    used = {k: f.store.request_counts.get(k, 0) - before.get(k, 0) for k in f.store.request_counts}
    # 1 PUT per held shard + 1 PUT of the membership, 1 LIST of shard-leases/, and one
    # GET per lease changed since a's last read: b's two renewals; a's own are known
    assert used == {"put": 3, "list": 1, "get": 2, **{k: 0 for k in used if k not in ("put", "list", "get")}}
    before = dict(f.store.request_counts)
    await a.step()
    assert f.store.request_counts["get"] - before.get("get", 0) == 0  # nothing changed since


async def test_run_options_reject_a_bad_lease_config_before_anything_is_written() -> None:
    from buquet import ValidationError

    store = MemoryStore()
    q = await connect(store=store)
    w = Worker(q, "w", q.shards)
    w.task("t")(lambda _: None)
    n = len(store.keys())
    with pytest.raises(ValidationError, match="renewal_interval_secs"):
        await w.run(WorkerRunOptions(shard_lease_config=ShardLeaseConfig.custom(4, 10, 10)))
    assert len(store.keys()) == n


async def test_two_leasing_workers_each_claim_only_from_the_shards_they_hold() -> None:
    store = MemoryStore()
    q = await connect(store=store)
    workers = []
    for wid in ("a", "b"):
        w = Worker(q, wid, q.shards)

        w.task("t")(lambda _: None)

        workers.append(w)
    opts = WorkerRunOptions(shard_lease_config=ShardLeaseConfig.custom(16, 3, 1), with_monitor=False,
                            handle_signals=False, idle_horizon_ms=0, delete_flush_ms=0)
    runs = [asyncio.create_task(w.run(opts)) for w in workers]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not all(len(w._poller.shards) == 2 for w in workers):  # noqa: SLF001 - test looks inside
        assert loop.time() < deadline, [w._poller.shards for w in workers]  # noqa: SLF001
        await asyncio.sleep(0.02)
    held = {w.worker_id: set(w._poller.shards) for w in workers}  # noqa: SLF001
    tasks = [await q.submit("t", {"i": i}) for i in range(40)]
    finals = await asyncio.gather(*(q.wait(t.id, timeout_seconds=20) for t in tasks))
    for w in workers:
        w.stop()
    await asyncio.gather(*runs)
    for t in finals:  # the worker that ran each task held the task's shard
        assert t.shard in held[t.worker_id], (t.shard, t.worker_id, held)
    assert {t.worker_id for t in finals} == {"a", "b"}
    for s in q.shards:  # every lease released at shutdown
        assert b'"owner":""' in (await store.get(q.layout.shard_lease(s))).data


async def test_an_idle_worker_steals_a_backlog_its_busy_owner_cannot_take() -> None:
    store = MemoryStore()
    q = await connect(store=store, shard_count=1)
    gate, running = asyncio.Event(), asyncio.Event()
    workers = {}
    for wid in ("a", "b"):
        w = Worker(q, wid, q.shards)

        @w.task("block")
        async def block(_: object) -> None:
            running.set()
            await gate.wait()

        w.task("quick")(lambda _: None)
        workers[wid] = w
    opts = WorkerRunOptions(shard_lease_config=ShardLeaseConfig.custom(16, 3, 1), with_monitor=False,
                            handle_signals=False, delete_flush_ms=0, max_concurrency=1)
    loop = asyncio.get_running_loop()
    runs = [asyncio.create_task(workers["a"].run(opts))]
    deadline = loop.time() + 20
    while workers["a"]._poller.shards != ["0"]:  # noqa: SLF001 - a owns the only shard
        assert loop.time() < deadline
        await asyncio.sleep(0.02)
    runs.append(asyncio.create_task(workers["b"].run(opts)))
    await q.submit("block", None)
    await asyncio.wait_for(running.wait(), 20)  # a is busy (concurrency 1) ...
    quick = [await q.submit("quick", i) for i in range(3)]  # ... while a backlog builds on its shard
    done = await asyncio.gather(*(q.wait(t.id, timeout_seconds=30) for t in quick))
    assert {t.worker_id for t in done} == {"b"}  # b, holding no shard, stole them
    assert workers["a"]._poller.shards == ["0"] and workers["b"]._poller.shards == []  # noqa: SLF001
    gate.set()
    for w in workers.values():
        w.stop()
    await asyncio.gather(*runs)
