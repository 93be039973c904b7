"""Queue counts from the indexes: cheap on a big bucket (``Queue.stats``, ``buquet stats``).

Everything but the final-status breakdown comes from LISTs, never from reading tasks:

* **pending / scheduled** — the ready index ``ready/<shard>/<due_ms>.<id>.<type>``: the
  task type is in the key, so counts by shard and type need no GET. A marker due at or
  before now is *pending* (claimable now); one due later is *scheduled* (``schedule_at``
  or a retry backoff). Markers are counted once per task id (a retry's new marker and
  the old one it replaces are one task).
* **running** — the lease index ``leases/<shard>/<expires_ms>.<id>``, once per task id;
  entries whose ``expires_ms`` has passed are also counted as ``expired_leases`` (their
  worker stopped renewing: the monitor recovers them).
* **queue lag** — ``now − the smallest due_ms ≤ now``, per shard and overall.
* **task objects** — a LIST of ``tasks/<shard>/`` of at most ``final_scan_limit`` keys
  per shard; ``task_objects_truncated`` says the count is a lower bound.
* **final counts by status** — GETs of at most ``final_sample`` task objects that no
  index names (final tasks have no index entry), newest first; ``final_by_status_complete``
  says every final task was read.

The index is a slightly blurred picture of the task objects, by design of the protocol
(``docs/protocol.md``): a task in its first ``lease_seconds / 3`` of running still has
only its ready marker (counted pending), and a marker or lease entry whose batched
delete has not gone out yet (at most ~100 ms, or until the next worker meets it when
the batch was lost) is counted as well.

Cost (``docs/protocol.md`` *Operator calls*): per shard ``⌊ready/1000⌋ + 1`` LISTs of
``ready/``, ``⌊leases/1000⌋ + 1`` of ``leases/``, ``min(⌊tasks/1000⌋ + 1, ⌈limit/1000⌉)``
of ``tasks/``; plus at most ``final_sample`` GETs; with ``task_type``, one GET per
running task (lease entries carry no type).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Sequence

from . import _validate as v
from ._codec import decode_task
from ._time import to_ms, to_rfc3339
from .errors import CorruptObject
from .models import TaskStatus

if TYPE_CHECKING:
    from .queue import Queue

log = logging.getLogger("buquet.stats")

#: keys per LIST request (S3's maximum)
PAGE = 1000
#: shards listed at once (each with its three listings in parallel)
SHARD_CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What :meth:`Queue.stats <buquet.Queue.stats>` counted (see :mod:`buquet._stats`).

    Attributes:
        at: the store time of the count (aware UTC).
        shards: the shards counted.
        task_type: the task type counted, or ``None`` for all.
        pending_count: tasks claimable now (a ready marker due at or before ``at``).
        scheduled_count: tasks waiting for a future time (``schedule_at`` or backoff).
        pending_by_shard, scheduled_by_shard: the same per shard (every counted shard
            is a key, 0 included).
        pending_by_type, scheduled_by_type: the same per task type (types with tasks).
        running_count: tasks with a lease entry (running past their first heartbeat).
        running_by_shard: the same per shard.
        expired_leases: running tasks whose lease has passed (worker gone; the monitor
            recovers them).
        oldest_ready_age_seconds: queue lag: seconds since the earliest due time among
            pending tasks; ``None`` when nothing is pending.
        oldest_ready_age_by_shard: the same per shard (shards with pending tasks).
        task_objects: task objects listed (all types, all states).
        task_objects_truncated: the listing stopped at ``final_scan_limit`` keys in at
            least one shard: ``task_objects`` is a lower bound ("≥ N").
        final_by_status: final tasks by status value (``"completed"``, ``"failed"``,
            ...) among those read; possibly partial.
        final_by_status_complete: every final task was read (nothing truncated, the
            sample covered them all): ``final_by_status`` is exact.
        final_sampled: task objects read (GETs) for ``final_by_status``.
        requests: the S3 requests this call sent, by operation (``list``, ``get``),
            not counting the store-clock HEAD (at most one per 5 minutes per process).
    """

    at: datetime
    shards: tuple[str, ...]
    task_type: str | None
    pending_count: int
    scheduled_count: int
    pending_by_shard: dict[str, int] = field(hash=False)
    scheduled_by_shard: dict[str, int] = field(hash=False)
    pending_by_type: dict[str, int] = field(hash=False)
    scheduled_by_type: dict[str, int] = field(hash=False)
    running_count: int
    running_by_shard: dict[str, int] = field(hash=False)
    expired_leases: int
    oldest_ready_age_seconds: float | None
    oldest_ready_age_by_shard: dict[str, float] = field(hash=False)
    task_objects: int
    task_objects_truncated: bool
    final_by_status: dict[str, int] = field(hash=False)
    final_by_status_complete: bool
    final_sampled: int
    requests: dict[str, int] = field(hash=False)

    @property
    def final_count(self) -> int:
        """Final tasks read (the sum of ``final_by_status``)."""
        return sum(self.final_by_status.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``at`` as RFC 3339)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = to_rfc3339(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            out[name] = value
        return out


class _Counter:
    """Counts the requests one stats call sends (its own, not the store's total: other
    work sharing the store must not leak into the number)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, op: str, n: int = 1) -> None:
        if n:
            self.counts[op] = self.counts.get(op, 0) + n


async def _scan_all(queue: "Queue", prefix: str, requests: _Counter) -> list[Any]:
    """Every key under ``prefix`` (``⌊n/1000⌋ + 1`` LISTs)."""
    out: list[Any] = []
    start_after: str | None = None
    while True:
        page = await queue.store.list(prefix, start_after=start_after, limit=PAGE)
        requests.add("list")
        out.extend(page)
        if len(page) < PAGE:
            return out
        start_after = page[-1].key


async def _scan_bounded(queue: "Queue", prefix: str, limit: int, requests: _Counter) -> tuple[list[Any], bool]:
    """At most ``limit`` keys under ``prefix`` and whether the listing stopped at the
    limit with more possibly left (``min(⌊n/1000⌋ + 1, ⌈limit/1000⌉)`` LISTs)."""
    out: list[Any] = []
    start_after: str | None = None
    while len(out) < limit:
        want = min(PAGE, limit - len(out))
        page = await queue.store.list(prefix, start_after=start_after, limit=want)
        requests.add("list")
        out.extend(page)
        if len(page) < want:
            return out, False
        start_after = page[-1].key
    return out, True


def stats_request_formula(ready: Sequence[int], leases: Sequence[int], tasks: Sequence[int], final_scan_limit: int,
                          unindexed: int, final_sample: int, running_gets: int = 0) -> dict[str, int]:
    """The requests a stats call sends, by operation, for per-shard key counts
    (documented in ``docs/protocol.md``; the tests check it against the store's own
    count)."""
    lists = sum(r // PAGE + 1 for r in ready) + sum(n // PAGE + 1 for n in leases)
    lists += sum(min(n // PAGE + 1, math.ceil(final_scan_limit / PAGE)) for n in tasks)
    gets = min(unindexed, final_sample) + running_gets
    return {k: n for k, n in (("list", lists), ("get", gets)) if n}


async def queue_stats(
    queue: "Queue",
    *,
    shards: Sequence[str] | None = None,
    task_type: str | None = None,
    final_scan_limit: int = 1000,
    final_sample: int = 100,
) -> QueueStats:
    """Count the queue (see :meth:`Queue.stats` and the module docstring)."""
    shard_list = queue.check_shards(shards, "shards") if shards is not None else queue.all_shards()
    shard_list = sorted(dict.fromkeys(shard_list))
    if task_type is not None:
        v.task_type(task_type)
    v.int_in_range(final_scan_limit, "final_scan_limit", 1, 10_000_000)
    v.int_in_range(final_sample, "final_sample", 0, 100_000)
    layout, store = queue.layout, queue.store
    requests = _Counter()
    now = await queue.protocol.time()
    now_ms = to_ms(now)

    pending_by_shard = {s: 0 for s in shard_list}
    scheduled_by_shard = {s: 0 for s in shard_list}
    running_by_shard = {s: 0 for s in shard_list}
    pending_by_type: dict[str, int] = {}
    scheduled_by_type: dict[str, int] = {}
    oldest_by_shard: dict[str, float] = {}
    expired = 0
    indexed: set[str] = set()  # ids any index names (of any type): not final
    listed: list[tuple[str, str]] = []  # (task id, key) of task objects
    truncated = False
    running_ids: dict[str, str] = {}  # task id -> shard

    sem = asyncio.Semaphore(SHARD_CONCURRENCY)

    async def fetch(shard: str) -> Any:
        async with sem:  # a shard's three listings at once, SHARD_CONCURRENCY shards at once
            return await asyncio.gather(
                _scan_all(queue, layout.ready_prefix(shard), requests),
                _scan_all(queue, layout.lease_prefix(shard), requests),
                _scan_bounded(queue, layout.tasks_prefix(shard), final_scan_limit, requests),
            )

    fetched = await asyncio.gather(*(fetch(s) for s in shard_list))
    for shard, (ready_infos, lease_infos, (infos, cut)) in zip(shard_list, fetched):
        # ready index: per task id, its latest marker (a retry's new due) decides
        due: dict[str, tuple[int, str]] = {}
        for info in ready_infos:
            m = layout.parse_ready(info.key)
            if m is None:
                continue
            indexed.add(m.task_id)
            prev = due.get(m.task_id)
            if prev is None or m.due_ms > prev[0]:
                due[m.task_id] = (m.due_ms, m.task_type)
        # lease index
        leases: dict[str, int] = {}
        for info in lease_infos:
            lk = layout.parse_lease(info.key)
            if lk is None:
                continue
            indexed.add(lk.task_id)
            leases[lk.task_id] = max(leases.get(lk.task_id, 0), lk.expires_ms)
        for task_id, expires_ms in leases.items():
            due.pop(task_id, None)  # running past its first heartbeat; its marker is on its way out
            running_ids[task_id] = shard
            if task_type is None:
                running_by_shard[shard] += 1
                expired += expires_ms < now_ms
        oldest: int | None = None
        for due_ms, ttype in due.values():
            if task_type is not None and ttype != task_type:
                continue
            if due_ms <= now_ms:
                pending_by_shard[shard] += 1
                pending_by_type[ttype] = pending_by_type.get(ttype, 0) + 1
                oldest = due_ms if oldest is None else min(oldest, due_ms)
            else:
                scheduled_by_shard[shard] += 1
                scheduled_by_type[ttype] = scheduled_by_type.get(ttype, 0) + 1
        if oldest is not None:
            oldest_by_shard[shard] = max(0.0, (now_ms - oldest) / 1000)
        # task objects, bounded
        truncated = truncated or cut
        for info in infos:
            parsed = layout.parse_task(info.key)
            if parsed is not None:
                listed.append((parsed[1], info.key))

    if task_type is not None and running_ids:
        # lease entries carry no type: one GET per running task
        ids = sorted(running_ids)
        objs = await store.get_many([layout.task(running_ids[i], i) for i in ids])
        requests.add("get", len(ids))
        leases_exp: dict[str, bool] = {}
        for task_id, obj in zip(ids, objs):
            if obj is None:
                continue
            try:
                task = decode_task(obj.data, obj.info.key)[0]
            except CorruptObject as exc:
                log.warning("stats: skipping %s", exc)
                continue
            if task.task_type == task_type and task.status == TaskStatus.Running:
                running_by_shard[running_ids[task_id]] += 1
                exp = task.lease_expires_at
                leases_exp[task_id] = exp is not None and to_ms(exp) < now_ms
        expired = sum(leases_exp.values())

    # final tasks: the listed objects no index names, newest first (ids sort by time)
    candidates = sorted((p for p in listed if p[0] not in indexed), reverse=True)
    sample = candidates[:final_sample]
    final_by_status: dict[str, int] = {}
    if sample:
        objs = await store.get_many([k for _, k in sample])
        requests.add("get", len(sample))
        for obj in objs:
            if obj is None:
                continue  # deleted since the LIST
            try:
                task = decode_task(obj.data, obj.info.key)[0]
            except CorruptObject as exc:
                log.warning("stats: skipping %s", exc)
                continue
            if task.status.is_final and (task_type is None or task.task_type == task_type):
                final_by_status[task.status.value] = final_by_status.get(task.status.value, 0) + 1
    complete = not truncated and len(sample) == len(candidates)

    return QueueStats(
        at=now,
        shards=tuple(shard_list),
        task_type=task_type,
        pending_count=sum(pending_by_shard.values()),
        scheduled_count=sum(scheduled_by_shard.values()),
        pending_by_shard=pending_by_shard,
        scheduled_by_shard=scheduled_by_shard,
        pending_by_type=dict(sorted(pending_by_type.items())),
        scheduled_by_type=dict(sorted(scheduled_by_type.items())),
        running_count=sum(running_by_shard.values()),
        running_by_shard=running_by_shard,
        expired_leases=expired,
        oldest_ready_age_seconds=max(oldest_by_shard.values()) if oldest_by_shard else None,
        oldest_ready_age_by_shard=oldest_by_shard,
        task_objects=len(listed),
        task_objects_truncated=truncated,
        final_by_status=dict(sorted(final_by_status.items())),
        final_by_status_complete=complete,
        final_sampled=len(sample),
        requests=dict(sorted(requests.counts.items())),
    )


__all__ = ["QueueStats", "queue_stats", "stats_request_formula"]
