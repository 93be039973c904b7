"""Finding work: which due ready markers a worker should try to claim next.

While the whole ready index is small (under 1,000 markers), one LIST of ``ready/``
covers every shard; otherwise the poller LISTs each shard's ready index (keys sort by
due time), keeps what it cannot
take now for the next free slots (a LIST is the dearest request on a busy index), scans
past foreign backlogs with a per-shard cursor, and remembers markers it must not look
at again for a while (a skip map). It hands out candidates in due order, so recovered
and retried tasks are not overtaken by tasks that became ready later; markers due in
the same second are taken in a random order per worker, so racing workers spread over
them instead of all fighting for the head of the line.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta
from typing import Collection, Iterable

from .keys import ReadyKey
from ._tasks import TaskProtocol
from ._time import to_ms

#: at most this many LIST pages per shard per poll
MAX_PAGES = 10
#: unclaimed candidates of a LIST are used for this long before listing again, seconds
LEFTOVER_SECONDS = 1.0
#: candidates due within the same window of this many ms are shuffled among themselves
SAME_DUE_WINDOW_MS = 1000
#: one LIST of the whole ready index (all shards) while it holds fewer keys than this
WHOLE_INDEX_LIMIT = 1000
#: after the whole index did not fit one LIST, poll shard by shard for this long, seconds
WHOLE_INDEX_RETRY_SECONDS = 10.0


class Poller:
    """Candidate ready markers for one worker.

    Args:
        protocol: the task protocol (for LISTs of the ready index).
        shards: the shards to poll (with shard leasing, the worker replaces this list
            whenever the leases it holds change).
        task_types: the task types this worker handles (it never claims others).
        rng: randomness for tie-breaking among markers due at the same time.

    Attributes:
        skip: marker key → time until which it is not tried again.
        near_due: set by :meth:`poll` when a handled marker comes due within the
            horizon (so an exiting-when-idle worker keeps polling).
    """

    def __init__(self, protocol: TaskProtocol, shards: list[str], task_types: Collection[str],
                 rng: random.Random | None = None) -> None:
        self.protocol = protocol
        self.shards = shards
        self.task_types = task_types
        self.skip: dict[str, datetime] = {}
        self.near_due = False
        self._rng = rng or random.Random()
        self._cursor: dict[str, str | None] = {}
        self._leftover: list[ReadyKey] = []
        self._leftover_at = 0.0
        self._pruned_at = 0.0
        self._turn = 0
        self._whole_retry_at = 0.0
        #: shard leasing: the worker's shards held by others, and how work is stolen
        #: from them (markers due longer than ``steal_age_ms``, one shard per
        #: ``steal_every_seconds`` while this worker finds nothing in its own)
        self.others: list[str] = []
        self.steal_age_ms = 0
        self.steal_every_seconds = 10.0
        self._steal_at = 0.0
        self._steal_turn = 0

    @property
    def has_leftover(self) -> bool:
        """Candidates of the last LIST are waiting for a free slot."""
        return bool(self._leftover)

    @property
    def scan_complete(self) -> bool:
        """True when no shard has a scan cursor mid-index (everything due was seen)."""
        return not any(self._cursor.values())

    def prune(self, now: datetime) -> None:
        """Forget skip entries that ended (at most once a second)."""
        loop_now = asyncio.get_running_loop().time()
        if loop_now - self._pruned_at >= 1.0:
            for key in [k for k, until in self.skip.items() if until <= now]:
                del self.skip[key]  # in place: the attempt runner shares this dict
            self._pruned_at = loop_now

    def keep_leftover(self, markers: list[ReadyKey]) -> None:
        """Candidates handed out but not tried (no free slot): used first next time."""
        self._leftover = markers

    def order(self, markers: Iterable[ReadyKey]) -> list[ReadyKey]:
        """Due order, random within each :data:`SAME_DUE_WINDOW_MS` window; one
        marker per task."""
        seen: set[str] = set()
        unique = [m for m in markers if not (m.task_id in seen or seen.add(m.task_id))]
        keyed = [(m.due_ms // SAME_DUE_WINDOW_MS, self._rng.random(), m) for m in unique]
        keyed.sort(key=lambda t: (t[0], t[1]))
        return [m for _, _, m in keyed]

    async def poll(self, now: datetime, free: int, horizon_ms: int, inflight: Collection[str]) -> list[ReadyKey]:
        """Due markers to try, best first: the unclaimed candidates of a LIST made
        less than :data:`LEFTOVER_SECONDS` ago, else a fresh LIST of every shard."""
        loop_now = asyncio.get_running_loop().time()
        if self._leftover and loop_now - self._leftover_at < LEFTOVER_SECONDS:
            fresh = [m for m in self._leftover if m.task_id not in inflight and m.key not in self.skip]
            self._leftover = []
            if fresh:
                return fresh
        self._leftover = []
        self.near_due = False
        if not self.shards:
            return await self._steal(now, inflight)  # shard leasing: no shard held (yet)
        if len(self.shards) > 1 and loop_now >= self._whole_retry_at:
            whole = await self._whole_index(now, horizon_ms, inflight)
            if whole is not None:
                self._leftover_at = loop_now
                return self.order(whole)
            self._whole_retry_at = loop_now + WHOLE_INDEX_RETRY_SECONDS
        self._turn %= len(self.shards)
        shards = self.shards[self._turn:] + self.shards[: self._turn]
        self._turn = (self._turn + 1) % len(self.shards)
        per_shard = await asyncio.gather(*(self._shard(s, now, free, horizon_ms, inflight) for s in shards))
        self._leftover_at = loop_now
        found = self.order(m for found in per_shard for m in found)
        return found or await self._steal(now, inflight)

    async def _steal(self, now: datetime, inflight: Collection[str]) -> list[ReadyKey]:
        """Shard leasing's work stealing: when this worker's own shards gave nothing,
        at most once per ``steal_every_seconds`` LIST one shard held by another worker
        (round robin) and take the markers due longer than ``steal_age_ms`` ago — its
        owner is not keeping up (busy with long tasks, or stuck). Task-level fencing
        makes the claim safe whoever wins it. Cost: ≤ 1 LIST per ``steal_every_seconds``."""
        loop_now = asyncio.get_running_loop().time()
        if not self.others or loop_now < self._steal_at:
            return []
        self._steal_at = loop_now + self.steal_every_seconds
        shard = self.others[self._steal_turn % len(self.others)]
        self._steal_turn += 1
        old = now - timedelta(milliseconds=self.steal_age_ms)
        markers = await self.protocol.due_markers(shard, old, 100)
        return self.order(m for m in markers if m.task_type in self.task_types and m.task_id not in inflight
                          and m.key not in self.skip)

    async def left_later(self, now: datetime) -> str:
        """A one-line account of the pending markers of handled types that come due
        after ``now`` (retries, backoffs, ``schedule_at``) on the configured shards:
        one LIST per shard, up to 1,000 markers each."""
        later = now + timedelta(days=365 * 100)
        left = [m for shard in self.shards for m in await self.protocol.due_markers(shard, later, 1000)
                if m.task_type in self.task_types]
        if not left:
            return "no pending tasks of its types left"
        first_s = max(0.0, (min(m.due_ms for m in left) - to_ms(now)) / 1000)
        return (f"{'at least ' if len(left) >= 1000 else ''}{len(left)} pending task(s) of its types come due "
                f"later, the next in {first_s:.1f} s")

    async def _whole_index(self, now: datetime, horizon_ms: int, inflight: Collection[str]) -> list[ReadyKey] | None:
        """Every shard in one request: a LIST of the whole ``ready/`` prefix, used while
        the index is small (fewer than :data:`WHOLE_INDEX_LIMIT` markers in all, the
        common case of a queue that keeps up). ``None`` when the LIST came back full:
        the caller then lists shard by shard."""
        store, layout = self.protocol.store, self.protocol.layout
        page = await store.list(layout.ready_root(), limit=WHOLE_INDEX_LIMIT)
        if len(page) >= WHOLE_INDEX_LIMIT:
            return None
        polled = set(self.shards)
        now_ms = to_ms(now)
        found: list[ReadyKey] = []
        for info in page:
            m = layout.parse_ready(info.key, info.last_modified)
            if m is None or m.shard not in polled or m.task_type not in self.task_types:
                continue
            if m.due_ms > now_ms:
                if m.due_ms <= now_ms + horizon_ms:
                    self.near_due = True
                continue
            if m.task_id not in inflight and m.key not in self.skip:
                found.append(m)
        for shard in polled:
            self._cursor[shard] = None  # everything was seen
        return found

    async def _shard(self, shard: str, now: datetime, free: int, horizon_ms: int,
                     inflight: Collection[str]) -> list[ReadyKey]:
        """Due markers of one shard this worker could claim (at most :data:`MAX_PAGES`
        LISTs). Markers it must pass over (in flight, other task types, recently seen)
        cannot starve the work behind them: when whole pages hold nothing for it, the
        scan goes on from a per-shard cursor at the next poll, and wraps to the head of
        the index once it reaches the end of the due markers."""
        page_size = max(100, 4 * free)
        now_ms = to_ms(now)
        start_after = self._cursor.get(shard)
        found: list[ReadyKey] = []
        for _ in range(MAX_PAGES):
            page_start = start_after
            page = await self.protocol.due_markers(shard, now + timedelta(milliseconds=horizon_ms), page_size, start_after)
            due = [m for m in page if m.due_ms <= now_ms]
            if any(m.task_type in self.task_types for m in page[len(due):]):
                self.near_due = True
            for m in due:
                if m.task_type in self.task_types and m.task_id not in inflight and m.key not in self.skip:
                    found.append(m)
            if found:
                self._cursor[shard] = page_start
                return found
            if len(page) < page_size or len(due) < len(page):
                self._cursor[shard] = None  # end of the due markers: next scan from the head
                return found
            start_after = page[-1].key
            page_size = 1000
        self._cursor[shard] = start_after  # resume here at the next poll
        return found
