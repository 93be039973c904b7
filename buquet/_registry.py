"""Who is running: each long-lived worker's registration object, and reading them back.

A :meth:`Worker.run <buquet.Worker.run>` (never a serverless ``run_once``) PUTs
``workers/<worker_id>.json`` when it starts and again every
``WorkerRunOptions.heartbeat_interval_s`` (default 10 s), and DELETEs it on a clean
stop. The object says who the worker is (id, host, pid, shards, task types), when it
started and was last seen (the store's clock, as the worker estimates it), how many
tasks it has in flight and its cumulative counters (``Worker.stats``).

These are plain PUTs, not task state: a worker only ever writes its own registration,
so no precondition is needed, and nothing in the protocol depends on them — they are
for operators (``buquet workers``, the dashboard). A worker killed without clean-up
leaves its object behind; readers call it *gone* once ``last_seen_at`` is older than
the health threshold.

Cost: one PUT per heartbeat interval per worker and one DELETE at stop; reading them
(:func:`list_workers`) is one LIST per 1,000 registrations plus one GET per worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import config as cfg
from ._loops import every
from ._time import parse_when, to_rfc3339

if TYPE_CHECKING:
    from .queue import Queue
    from .worker import Worker

log = logging.getLogger("buquet.registry")

#: format version of a registration object
REGISTRATION_VERSION = 1


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One worker's registration as read by :meth:`Queue.workers <buquet.Queue.workers>`.

    Attributes:
        worker_id: the worker's id.
        host: host name of the machine it runs on.
        pid: its process id.
        shards: the shards it polls (with shard leasing: those it held at ``last_seen_at``).
        task_types: the task types it has handlers for.
        started_at: when its :meth:`~buquet.Worker.run` started (aware UTC).
        last_seen_at: its last registration write (aware UTC, store clock).
        in_flight: tasks it was running at ``last_seen_at``.
        counters: its cumulative counters at ``last_seen_at`` (claimed, completed,
            failed, retried, ...; see ``Worker.stats``).
        alive: ``last_seen_at`` is within the health threshold of the read.
        seen_seconds_ago: seconds between ``last_seen_at`` and the read (store clock).
        heartbeat_interval_seconds: how often the worker said it would write.
    """

    worker_id: str
    host: str
    pid: int
    shards: tuple[str, ...]
    task_types: tuple[str, ...]
    started_at: datetime
    last_seen_at: datetime
    in_flight: int
    counters: dict[str, int] = field(hash=False)
    alive: bool
    seen_seconds_ago: float = 0.0
    heartbeat_interval_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times as RFC 3339 strings)."""
        return {
            "worker_id": self.worker_id,
            "host": self.host,
            "pid": self.pid,
            "shards": list(self.shards),
            "task_types": list(self.task_types),
            "started_at": to_rfc3339(self.started_at),
            "last_seen_at": to_rfc3339(self.last_seen_at),
            "seen_seconds_ago": round(self.seen_seconds_ago, 3),
            "in_flight": self.in_flight,
            "counters": dict(self.counters),
            "alive": self.alive,
            "heartbeat_interval_seconds": self.heartbeat_interval_seconds,
        }


class WorkerRegistration:
    """Keeps one worker's ``workers/<worker_id>.json`` fresh while it runs.

    Reads the worker's id, polled shards, task types, in-flight count and ``stats`` at
    each write, so the object follows the worker (with shard leasing: the shards it
    holds at that moment, possibly none).
    """

    def __init__(self, worker: "Worker", heartbeat_interval_s: float) -> None:
        self.worker = worker
        self.queue = worker.queue
        self.key = self.queue.layout.worker(worker.worker_id)
        self.interval = heartbeat_interval_s
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at: datetime | None = None

    def document(self, now: datetime) -> dict[str, Any]:
        """The registration object's content at ``now``."""
        w = self.worker
        polled = getattr(getattr(w, "_poller", None), "shards", None)  # with shard leasing: the shards held now
        if self.started_at is None:
            self.started_at = now
        return {
            "version": REGISTRATION_VERSION,
            "worker_id": w.worker_id,
            "host": self.host,
            "pid": self.pid,
            "shards": list(w.shards if polled is None else polled),
            "task_types": list(w.task_types),
            "started_at": to_rfc3339(self.started_at),
            "last_seen_at": to_rfc3339(now),
            "heartbeat_interval_seconds": self.interval,
            "in_flight": len(getattr(w, "_inflight", ())),
            "counters": {k: int(n) for k, n in sorted(w.stats.items())},
        }

    async def write(self) -> None:
        """PUT the registration (one request; no precondition: only this worker writes it)."""
        now = await self.queue.protocol.time()
        body = json.dumps(self.document(now), separators=(",", ":")).encode()
        await self.queue.store.put(self.key, body)

    async def run(self, stop: asyncio.Event) -> None:
        """Write now and every interval until ``stop`` is set; failures are logged and
        the loop goes on (:func:`buquet._loops.every`)."""
        await every(self.interval, self.write, stop, name=f"worker {self.worker.worker_id}: registration", logger=log)

    async def remove(self) -> None:
        """DELETE the registration (clean stop). A failure is logged, never raised: the
        object then simply reads as gone once it is older than the health threshold."""
        try:
            await self.queue.store.delete(self.key)
        except Exception as exc:  # noqa: BLE001 - a stop must not fail over this
            log.warning("worker %s: deleting its registration %s failed: %s", self.worker.worker_id, self.key, exc)


def parse_registration(data: bytes, key: str, now: datetime, health_threshold_seconds: float) -> WorkerInfo:
    """A :class:`WorkerInfo` from a registration object's bytes.

    Raises:
        ValueError, KeyError, TypeError: the object is not a valid registration.
    """
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    last_seen = parse_when("last_seen_at", doc["last_seen_at"])
    started = parse_when("started_at", doc["started_at"])
    counters = doc.get("counters") or {}
    if not isinstance(counters, dict):
        raise ValueError("counters is not an object")
    shards, types = doc.get("shards") or [], doc.get("task_types") or []
    if not isinstance(shards, list) or not isinstance(types, list):
        raise ValueError("shards and task_types must be lists")
    age = (now - last_seen).total_seconds()
    interval = doc.get("heartbeat_interval_seconds")
    return WorkerInfo(
        worker_id=str(doc["worker_id"]),
        host=str(doc.get("host", "")),
        pid=int(doc.get("pid", 0)),
        shards=tuple(str(s) for s in shards),
        task_types=tuple(str(t) for t in types),
        started_at=started,
        last_seen_at=last_seen,
        in_flight=int(doc.get("in_flight", 0)),
        counters={str(k): int(n) for k, n in counters.items()},
        alive=age <= health_threshold_seconds,
        seen_seconds_ago=max(0.0, age),
        heartbeat_interval_seconds=None if interval is None else float(interval),
    )


async def list_workers(
    queue: "Queue", *, health_threshold_seconds: float = 60.0, include_gone: bool = True
) -> list[WorkerInfo]:
    """Every registered worker, by worker id (see :meth:`Queue.workers`). Corrupt
    registration objects are logged and left out. Cost: one LIST per 1,000
    registrations, one GET per registration."""
    cfg.finite_number(health_threshold_seconds, "health_threshold_seconds", 0, 10**9)
    layout, store = queue.layout, queue.store
    keys: list[str] = []
    async for page in store.scan(layout.workers_prefix()):
        keys.extend(info.key for info in page if layout.parse_worker(info.key) is not None)
    now = await queue.protocol.time()
    out: list[WorkerInfo] = []
    for key, obj in zip(keys, await store.get_many(keys)):
        if obj is None:
            continue  # deleted between the LIST and the GET: a clean stop
        try:
            info = parse_registration(obj.data, key, now, health_threshold_seconds)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("workers: skipping corrupt registration %s: %s", key, exc)
            continue
        if include_gone or info.alive:
            out.append(info)
    out.sort(key=lambda w: w.worker_id)
    return out


__all__ = ["WorkerInfo", "WorkerRegistration", "list_workers", "parse_registration", "REGISTRATION_VERSION"]
