"""Changing a bucket's shard count (``buquet migrate-shards --execute``).

A task's shard is derived from its id (``shard_index``: last 48 bits modulo the shard
count), so a new count moves some task objects (``tasks/<shard>/<id>.json``) and their
index entries (``ready/``, ``leases/``, ``expiries/``) to other shard prefixes, and
rewrites the ``shard`` field inside task documents (and the task copy a submit marker
carries). Payloads, schedules, schemas, idempotency records and worker registrations are
keyed by id or name, not by shard, and stay where they are.

The migration runs with the fleet stopped (it refuses while a worker registration is
fresh or a shard lease is held, unless forced) and is driven by ``config.json``, which
every client reads at ``connect()`` — so the switch is one conditional write, and a
client that connects mid-migration refuses instead of using a half-moved layout:

1. ``config.json`` gets ``"migration": {"to": M, "phase": "copy"}`` (``If-Match``):
   from now on ``connect()`` raises ``ConfigurationError`` ("a shard migration is in
   progress") until step 4.
2. **copy**: every object whose shard changes is written at its new key (``If-None-Match:
   *``; a 412 on a re-run means it was copied already). The old keys stay: until the
   switch, the old layout is the whole truth.
3. **switch**: ``config.json`` becomes ``{"shard_count": M, "migration": {"from": N,
   "phase": "cleanup"}}`` (``If-Match``) — the commit point.
4. **cleanup**: every key under a shard prefix that does not belong there under M is
   deleted (DeleteObjects, 1,000 keys a request), then ``config.json`` becomes
   ``{"version": 1, "shard_count": M}``.

A crash anywhere leaves ``config.json`` naming the phase; running the same command
again resumes it (each step is idempotent). Cost: per shard prefix and index, 1 LIST per
1,000 keys (twice: copy and cleanup); per moved task object or submit marker 1 GET +
1 PUT; per moved lease/expiry entry 1 PUT; 1 DeleteObjects per 1,000 moved keys; 3 PUTs
of ``config.json``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

from . import config as cfg
from ._ids import shard_index, shard_names
from .errors import ConfigurationError, ObjectNotFound, PreconditionFailed
from .keys import KeyLayout
from .storage.base import ObjectStore

#: index kinds that live under a shard prefix, with their key builders
_KINDS = ("tasks", "ready", "leases", "expiries")


@dataclass
class MigrationReport:
    """What :func:`migrate_shards` did.

    Attributes:
        from_count: the shard count before.
        to_count: the shard count after.
        copied: objects written at their new shard prefix, by kind (``tasks``,
            ``ready``, ``leases``, ``expiries``).
        deleted: objects removed from prefixes they no longer belong to.
        resumed: the run picked up a migration a previous run left unfinished.
        requests: S3 requests by operation (the store's counters, this run only).
    """

    from_count: int
    to_count: int
    copied: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_KINDS, 0))
    deleted: int = 0
    resumed: bool = False
    requests: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"from_shard_count": self.from_count, "to_shard_count": self.to_count, "copied": dict(self.copied),
                "deleted": self.deleted, "resumed": self.resumed, "requests": dict(self.requests)}


async def migrate_shards(
    store: ObjectStore, layout: KeyLayout, from_count: int, to_count: int, *,
    now: datetime, force: bool = False, concurrency: int = 10,
    progress: Callable[[str, int], None] | None = None,
) -> MigrationReport:
    """Move the bucket from ``from_count`` to ``to_count`` shards (see the module
    docstring for the steps, their crash safety and cost), or resume a migration to
    ``to_count`` that a previous run left unfinished.

    Args:
        store: the bucket.
        layout: its key layout.
        from_count: the shard count the caller expects the bucket to have now.
        to_count: the new shard count (1–65,536).
        now: the store's current time (for the liveness checks).
        force: skip the "fleet stopped" checks (fresh worker registrations, held shard
            leases).
        concurrency: requests in flight at once.
        progress: called with ``(phase, objects done)`` now and then.

    Raises:
        ConfigurationError: the bucket has another shard count or another migration
            in progress, or live workers / held shard leases were found (without ``force``).
        ValidationError: ``to_count`` out of range.
        StorageError: a request failed (run again to resume).
    """
    cfg.finite_number(to_count, "to_count", 1, cfg.MAX_SHARD_COUNT)
    before = dict(store.request_counts)
    key = layout.config()
    obj = await store.get(key)
    doc = _read_config(obj.data, key)
    etag = obj.etag
    migration = doc.get("migration")
    report = MigrationReport(from_count, to_count, resumed=migration is not None)
    if migration is None:
        if doc["shard_count"] != from_count:
            raise ConfigurationError(f"--from {from_count}: this bucket has {doc['shard_count']} shards ({key})")
        if to_count == from_count:
            return report
        if not force:
            await _check_fleet_stopped(store, layout, now)
        migration = {"to": to_count, "phase": "copy"}
        etag = await _put_config(store, key, {"shard_count": from_count, "migration": migration}, etag)
    elif migration.get("to", doc["shard_count"]) != to_count or (
            migration.get("phase") == "copy" and doc["shard_count"] != from_count) or (
            migration.get("phase") == "cleanup" and migration.get("from") != from_count):
        raise ConfigurationError(f"another shard migration is in progress in this bucket ({key}: {json.dumps(doc)}); "
                                 "finish it first with the same --from/--to")
    sem = asyncio.Semaphore(concurrency)
    if migration.get("phase") == "copy":
        await _copy(store, layout, from_count, to_count, sem, report, progress)
        etag = await _put_config(store, key, {"shard_count": to_count,
                                              "migration": {"from": from_count, "phase": "cleanup"}}, etag)
    await _cleanup(store, layout, from_count, to_count, sem, report, progress)
    await _put_config(store, key, {"shard_count": to_count}, etag)
    report.requests = {k: v - before.get(k, 0) for k, v in store.request_counts.items() if v - before.get(k, 0)}
    return report


# ------------------------------------------------------------------ steps
def _read_config(data: bytes, key: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
        count = doc["shard_count"]
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError("shard_count is not an integer")
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"{key} in the bucket is malformed: {exc}") from None
    return doc


async def _put_config(store: ObjectStore, key: str, doc: dict[str, Any], etag: str) -> str:
    body = json.dumps({"version": cfg.CONFIG_VERSION, **doc}).encode()
    try:
        return await store.put(key, body, if_match=etag)
    except PreconditionFailed:
        raise ConfigurationError(f"{key} changed while migrating (another migration or client?); "
                                 "run the command again to resume") from None


async def _check_fleet_stopped(store: ObjectStore, layout: KeyLayout, now: datetime) -> None:
    """Refuse while a worker registration was written in the last 60 s or a shard lease
    object was (both say a worker may still be running)."""
    recent = now - timedelta(seconds=cfg.DEFAULT_WORKER_HEALTH_THRESHOLD_SECONDS)
    live: list[str] = []
    for prefix in (layout.workers_prefix(), layout.shard_leases_prefix()):
        async for page in store.scan(prefix):
            live += [info.key for info in page if info.last_modified >= recent]
    if live:
        raise ConfigurationError(
            f"workers look alive ({len(live)} registration or shard-lease objects written in the last "
            f"{cfg.DEFAULT_WORKER_HEALTH_THRESHOLD_SECONDS:g} s, e.g. {live[0]}): stop every worker, scheduler and "
            "monitor first (or pass --force if you are sure they are stopped)")


def _prefix_of(layout: KeyLayout, kind: str, shard: str) -> str:
    return {"tasks": layout.tasks_prefix, "ready": layout.ready_prefix,
            "leases": layout.lease_prefix, "expiries": layout.expiry_prefix}[kind](shard)


def _task_id_of(layout: KeyLayout, kind: str, key: str) -> str | None:
    if kind == "tasks":
        parsed = layout.parse_task(key)
        return parsed[1] if parsed else None
    entry = {"ready": layout.parse_ready, "leases": layout.parse_lease, "expiries": layout.parse_expiry}[kind](key)
    return entry.task_id if entry is not None else None


def _moved_body(data: bytes, shard: str) -> bytes:
    """A task document (or a submit marker's task copy) with its ``shard`` rewritten;
    other bodies (empty index entries) as they are."""
    if not data:
        return data
    try:
        doc = json.loads(data)
    except ValueError:
        return data
    if isinstance(doc, dict) and "shard" in doc:
        doc["shard"] = shard
        return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    return data


async def _each_key(store: ObjectStore, prefix: str) -> list[str]:
    keys: list[str] = []
    async for page in store.scan(prefix):
        keys += [info.key for info in page]
    return keys


async def _copy(store: ObjectStore, layout: KeyLayout, from_count: int, to_count: int, sem: asyncio.Semaphore,
                report: MigrationReport, progress: Callable[[str, int], None] | None) -> None:
    new_names = shard_names(to_count)

    async def one(kind: str, shard: str, key: str, new_shard: str) -> None:
        new_key = _prefix_of(layout, kind, new_shard) + key[len(_prefix_of(layout, kind, shard)):]
        async with sem:
            try:
                data = (await store.get(key)).data if kind in ("tasks", "ready") else b""
            except ObjectNotFound:
                return  # gone meanwhile (a forced run next to a live fleet): nothing to move
            try:
                await store.put(new_key, _moved_body(data, new_shard), if_none_match=True)
            except PreconditionFailed:
                return  # copied by an earlier run
        report.copied[kind] += 1
        if progress is not None:
            progress("copy", sum(report.copied.values()))

    for shard in shard_names(from_count):
        for kind in _KINDS:
            jobs: list[Awaitable[None]] = []
            for key in await _each_key(store, _prefix_of(layout, kind, shard)):
                tid = _task_id_of(layout, kind, key)
                if tid is None:
                    continue
                new_shard = new_names[shard_index(tid, to_count)]
                if new_shard != shard:
                    jobs.append(one(kind, shard, key, new_shard))
            await asyncio.gather(*jobs)


async def _cleanup(store: ObjectStore, layout: KeyLayout, from_count: int, to_count: int, sem: asyncio.Semaphore,
                   report: MigrationReport, progress: Callable[[str, int], None] | None) -> None:
    new_names = shard_names(to_count)
    for shard in sorted(set(shard_names(from_count)) | set(new_names)):
        for kind in _KINDS:
            stale = []
            for key in await _each_key(store, _prefix_of(layout, kind, shard)):
                tid = _task_id_of(layout, kind, key)
                if tid is not None and new_names[shard_index(tid, to_count)] != shard:
                    stale.append(key)
            for start in range(0, len(stale), 1000):
                async with sem:
                    await store.delete_many(stale[start:start + 1000])
                report.deleted += len(stale[start:start + 1000])
                if progress is not None:
                    progress("cleanup", report.deleted)
