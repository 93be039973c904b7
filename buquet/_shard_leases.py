"""Shard leases: which long-lived worker polls which shard.

With leasing on (:class:`~buquet.ShardLeaseConfig`), each shard has one small lease
object, ``shard-leases/<shard>.json``::

    {"shard": "2", "owner": "worker-a", "expires_ms": 1764633600000, "rev": "…"}

(``owner`` empty and ``expires_ms`` 0: released). A worker polls only the shards whose
lease it holds. Every change is a conditional write (:func:`~buquet._writes.
put_resolved`, so a lost response is recognised by its ``rev``):

* **take** a shard with no lease object: PUT ``If-None-Match: *``; a released or
  expired one (``expires_ms`` ≤ the store's now): PUT ``If-Match: <etag read>``. Two
  workers racing for a shard: one PUT wins, the other gets 412 and moves on.
* **renew** every ``renewal_interval_secs``: PUT ``If-Match: <our etag>`` with
  ``expires_ms = now + lease_ttl_secs`` (store clock). A renewal that fails for any
  reason drops the shard from the polled set at once; the worker may take it again
  in a later round if it is still free.
* **release** at shutdown or when rebalancing: PUT ``If-Match: <our etag>`` of a released
  record, so a peer can take it at its next round without waiting for the TTL. A
  release that meets 412 (someone took it over) changes nothing.

Balance: each round a worker re-writes its membership object
``shard-leases/members/<worker_id>`` (a plain PUT of its own key) and reads everything
under ``shard-leases/`` with one LIST: the memberships' LastModified tell which leasing
workers are live (written within the lease TTL), and a GET per lease object whose ETag
changed since the last round tells who holds what. The floor is ``shards // live
workers`` (capped at ``shards_per_worker``). While another live worker holds fewer
than the floor, a worker above it releases down to it and takes free shards only up to
it; otherwise it takes every free shard it has room for under ``shards_per_worker``.
So shards spread to within one of each other as workers come and go, and no shard
stays unpolled while a worker with room lives. While shards are moving (someone below
the floor, free shards waiting), rounds come every 0.5 s instead of every renewal
interval, so a fleet that starts together settles within a second or two.

Task-level fencing still protects every task write: a worker that lost a shard lease
but still runs a task of that shard finishes it under the task's own lease.

Request cost per worker per round (every ``renewal_interval_secs``): 1 LIST of
``shard-leases/`` + 1 PUT per held shard + 1 PUT of the membership + 1 GET per lease
changed since the last round (≈ the shards held by others, since each renewal changes
the ETag) + 1 PUT per shard taken or released. With 4 workers, 4 shards and the
defaults (10 s): 1 LIST + 2 PUT + 3 GET per worker per 10 s, i.e. 0.6 requests/s per
worker and 2.4 requests/s for the fleet of four, whatever the task rate.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Awaitable, Callable, Sequence

from ._codec import Encoded, decode_json, encode, new_rev
from ._loops import every
from ._time import to_ms
from ._writes import put_resolved
from .errors import BuquetError, CorruptObject, ObjectNotFound, PreconditionFailed
from .keys import KeyLayout
from .polling import ShardLeaseConfig
from .storage.base import ObjectStore

log = logging.getLogger("buquet.shard_leases")

#: while the fleet is rebalancing (a share is off, free shards wait), rounds come this often, seconds
REBALANCE_ROUND_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class ShardLeaseRecord:
    """One stored shard lease as read: who holds ``shard`` until when.

    Attributes:
        shard: the shard name.
        owner: the holder's worker id (``""`` when released).
        expires_ms: epoch milliseconds (store clock) the lease lasts until (0 when released).
        etag: the lease object's ETag when read.
    """

    shard: str
    owner: str
    expires_ms: int
    etag: str

    def free_at(self, now_ms: int) -> bool:
        """True when anyone may take the shard at ``now_ms`` (released or expired)."""
        return not self.owner or self.expires_ms <= now_ms


def _decode(key: str, data: bytes, etag: str, shard: str) -> ShardLeaseRecord:
    doc = decode_json(data, key)
    owner = doc.get("owner")
    expires_ms = doc.get("expires_ms")
    if not isinstance(owner, str) or isinstance(expires_ms, bool) or not isinstance(expires_ms, int):
        raise CorruptObject(key, "owner" if not isinstance(owner, str) else "expires_ms", "missing or of the wrong type")
    return ShardLeaseRecord(shard, owner, expires_ms, etag)


class ShardLeaser:
    """Holds, renews, balances and releases one worker's shard leases.

    Args:
        store: the object store.
        layout: the key layout.
        clock: the store's current time (``TaskProtocol.time``).
        worker_id: this worker.
        shards: the shards this worker may poll (its candidates).
        config: an enabled :class:`~buquet.ShardLeaseConfig` (validated).
        liveness_seconds: a membership object (``shard-leases/members/<worker_id>``,
            re-written every round) older than this (by LastModified) is not live.
        on_change: called with the sorted held shards whenever the set changes.
        rng: randomness for choosing which free shards to take.
    """

    def __init__(self, store: ObjectStore, layout: KeyLayout, clock: Callable[[], Awaitable[datetime]],
                 worker_id: str, shards: Sequence[str], config: ShardLeaseConfig, liveness_seconds: float,
                 on_change: Callable[[list[str]], None], rng: random.Random | None = None) -> None:
        self.store = store
        self.layout = layout
        self.clock = clock
        self.worker_id = worker_id
        self.shards = list(shards)
        self.config = config
        self.liveness_seconds = liveness_seconds
        self.on_change = on_change
        self.held: dict[str, str] = {}  # shard -> our etag
        self._cache: dict[str, ShardLeaseRecord] = {}  # key -> last record read
        self._rng = rng or random.Random()
        #: False while shards are moving (this worker or a peer off its share, free shards
        #: waiting): :meth:`run` then runs rounds every :data:`REBALANCE_ROUND_SECONDS`
        self.settled = False

    # ------------------------------------------------------------------ round
    async def step(self) -> list[str]:
        """One round: renew, read, rebalance. Returns the held shards (sorted).

        Raises:
            StorageError: reading the leases or registrations failed (held leases that
                failed to renew are dropped before this is raised).
        """
        before = set(self.held)
        now = await self.clock()
        now_ms = to_ms(now)
        try:
            await self._renew(now_ms)
            await self.store.put(self.layout.shard_lease_member(self.worker_id), b"{}")  # "I am leasing"
            records, live = await self._read_all(now)
            await self._rebalance(now_ms, records, live)
        finally:
            if set(self.held) != before:
                self.on_change(sorted(self.held))
        return sorted(self.held)

    async def run(self, stop: asyncio.Event) -> None:
        """Run a round now and every ``renewal_interval_secs`` until ``stop`` is set
        (errors are logged and the next round goes on), then release every lease."""
        try:
            await every(self.config.renewal_interval_secs, self.step, stop, name="shard leases", logger=log,
                        next_wait=lambda _: None if self.settled else min(REBALANCE_ROUND_SECONDS,
                                                                           self.config.renewal_interval_secs))
        finally:
            await self.release_all()

    async def release_all(self) -> None:
        """Release every held lease (clean shutdown). Failures are logged, not raised:
        an unreleased lease simply expires after its TTL."""
        for shard in list(self.held):
            await self._release(shard)
        self.on_change([])
        try:
            await self.store.delete(self.layout.shard_lease_member(self.worker_id))
        except BuquetError as exc:
            log.warning("worker %s: removing its shard-lease membership failed: %s", self.worker_id, exc)

    # --------------------------------------------------------------- pieces
    def _body(self, shard: str, owner: str, expires_ms: int) -> Encoded:
        rev = new_rev()
        return Encoded(encode({"shard": shard, "owner": owner, "expires_ms": expires_ms}, rev), rev)

    async def _renew(self, now_ms: int) -> None:
        expires_ms = now_ms + self.config.lease_ttl_secs * 1000
        for shard, etag in list(self.held.items()):
            try:
                written = await put_resolved(self.store, self.layout.shard_lease(shard),
                                             self._body(shard, self.worker_id, expires_ms), if_match=etag)
            except PreconditionFailed:
                log.warning("worker %s: shard lease %s was taken over; no longer polling it", self.worker_id, shard)
                del self.held[shard]
            except BuquetError as exc:
                log.warning("worker %s: renewing shard lease %s failed (%s); not polling it until it is "
                            "taken again", self.worker_id, shard, exc)
                del self.held[shard]
            else:
                self.held[shard] = written.etag
                self._remember(shard, self.worker_id, expires_ms, written.etag)

    async def _read_all(self, now: datetime) -> tuple[dict[str, ShardLeaseRecord], int]:
        """The current lease of every candidate shard that has one (shard -> record),
        and the number of live leasing workers (this one included): one LIST of
        ``shard-leases/``, plus a GET per lease whose ETag changed since last read."""
        wanted = {self.layout.shard_lease(s): s for s in self.shards}
        out: dict[str, ShardLeaseRecord] = {}
        live = {self.worker_id}
        async for page in self.store.scan(self.layout.shard_leases_prefix()):
            for info in page:
                member = self.layout.parse_shard_lease_member(info.key)
                if member is not None:
                    if (now - info.last_modified).total_seconds() <= self.liveness_seconds:
                        live.add(member)
                    continue
                shard = wanted.get(info.key)
                if shard is None:
                    continue
                cached = self._cache.get(info.key)
                if cached is not None and cached.etag == info.etag:
                    out[shard] = cached
                    continue
                try:
                    obj = await self.store.get(info.key)
                    rec = _decode(info.key, obj.data, obj.etag, shard)
                except ObjectNotFound:
                    continue
                except BuquetError as exc:
                    log.warning("shard lease %s unreadable (%s); treating it as held", info.key, exc)
                    continue
                self._cache[info.key] = rec
                out[shard] = rec
        return out, len(live)


    async def _rebalance(self, now_ms: int, records: dict[str, ShardLeaseRecord], live: int) -> None:
        cap = self.config.shards_per_worker
        floor = min(cap, len(self.shards) // max(1, live))
        holdings: dict[str, int] = {}
        for shard, rec in records.items():
            if not rec.free_at(now_ms) and rec.owner != self.worker_id:
                holdings[rec.owner] = holdings.get(rec.owner, 0) + 1
        # another live worker below the floor (one that holds nothing has no lease at all)
        others_below = floor > 0 and (live - 1 > len(holdings) or any(n < floor for n in holdings.values()))
        free = [s for s in self.shards if s not in self.held and (s not in records or records[s].free_at(now_ms))]
        self.settled = not others_below and not free
        if others_below and len(self.held) > floor:
            for shard in self._rng.sample(sorted(self.held), len(self.held) - floor):
                await self._release(shard)
            return
        self._rng.shuffle(free)
        room = (floor if others_below else cap) - len(self.held)
        for shard in free[: max(0, room)]:
            await self._take(shard, records.get(shard))

    async def _take(self, shard: str, current: ShardLeaseRecord | None) -> None:
        now_ms = to_ms(await self.clock())
        body = self._body(shard, self.worker_id, now_ms + self.config.lease_ttl_secs * 1000)
        key = self.layout.shard_lease(shard)
        try:
            if current is None:
                written = await put_resolved(self.store, key, body, if_none_match=True)
            else:
                written = await put_resolved(self.store, key, body, if_match=current.etag)
        except PreconditionFailed:
            return  # a peer took it first
        except BuquetError as exc:
            log.warning("worker %s: taking shard lease %s failed: %s", self.worker_id, shard, exc)
            return
        self.held[shard] = written.etag
        self._remember(shard, self.worker_id, now_ms + self.config.lease_ttl_secs * 1000, written.etag)
        log.info("worker %s: took shard %s", self.worker_id, shard)

    def _remember(self, shard: str, owner: str, expires_ms: int, etag: str) -> None:
        """Our own write: known without reading it back at the next round."""
        self._cache[self.layout.shard_lease(shard)] = ShardLeaseRecord(shard, owner, expires_ms, etag)

    async def _release(self, shard: str) -> None:
        etag = self.held.pop(shard, None)
        if etag is None:
            return
        try:
            written = await put_resolved(self.store, self.layout.shard_lease(shard), self._body(shard, "", 0),
                                         if_match=etag)
            self._remember(shard, "", 0, written.etag)
        except PreconditionFailed:
            pass  # taken over already: nothing of ours to release
        except BuquetError as exc:
            log.warning("worker %s: releasing shard lease %s failed (%s); it expires after its TTL",
                        self.worker_id, shard, exc)
        else:
            log.info("worker %s: released shard %s", self.worker_id, shard)
