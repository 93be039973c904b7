"""The scheduler: turns due cron slots into tasks, at most one task per slot.

Run it as a long-lived process (``buquet scheduler``), inside a worker process, or one
tick per invocation from a Lambda (:func:`tick_once`). Any number of schedulers may run
against the same bucket at once: each slot is claimed by a conditional create of its
ledger object (``schedules/slots/<id>/<slot>.json``, ``If-None-Match: *``) and only the
claimer submits the slot's task. See :mod:`buquet.schedules` and ``docs/schedules.md``.

One tick:

1. LIST ``schedules/defs/`` (one request per 1,000 schedules). Definitions whose ETag
   the scheduler has not seen are read (one GET each); the rest come from its cache.
2. For each enabled schedule, the first slot after what the scheduler already knows is
   handled is computed locally. If it lies in the future, nothing is sent.
3. Otherwise the run state is read (one GET), the catch-up policy picks the slots to
   fire, each is claimed (one PUT) and, if this scheduler won, its task submitted (two
   PUTs), and the slot cursor advanced (one conditional PUT).

A broken schedule (unreadable definition, failing submit) is logged and skipped; the
others fire. All times come from the store's clock (``await queue.time()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import _validate as v
from ._time import from_rfc3339, parse_when, to_rfc3339
from .errors import BuquetError, ObjectNotFound, PreconditionFailed, StorageError, ValidationError
from .models import Task
from .schedules import (
    DEFAULT_MISFIRE_GRACE_SECONDS,
    DEFAULT_RECOVERY_SECONDS,
    LEDGER_RETENTION,
    Schedule,
    _decode_schedule,
    _plan,
    _spec,
    slot_task_id,
)

if TYPE_CHECKING:
    from .queue import Queue
    from .storage.base import ObjectInfo

log = logging.getLogger("buquet.scheduler")


@dataclass(slots=True)
class _Entry:
    """A cached definition: its ETag, the parsed schedule (``None`` if broken), the
    instant up to which its slots are known to be handled, and the next slot after it."""

    etag: str
    schedule: Schedule | None
    floor: datetime | None = None
    next_slot: datetime | None = None
    computed: bool = False


class Scheduler:
    """Fires due cron slots of every schedule in a queue's bucket.

    Args:
        queue: the :class:`~buquet.Queue`.
        recovery_seconds: a slot claimed by a scheduler that has not submitted its task
            after this many seconds (it died between claim and submit) is submitted by
            whichever scheduler sees it next, under the same deterministic task id.
        misfire_grace_seconds: with ``CatchUp.SKIP``, how late a slot may still run.
        concurrency: schedules handled in parallel within one tick (requests in flight).
        scheduler_id: a name recorded in the ledger objects this scheduler claims
            (default: host name, process id and a random suffix).
        definition_cache: a dict the scheduler keeps its parsed-definition cache in
            (plain data, no event-loop objects). Pass the same dict to the Scheduler of
            each invocation of a warm Lambda to skip re-reading unchanged definitions.

    Raises:
        ValidationError: a bad option (names it).

    Attributes:
        stats: counters — ``fired`` (tasks submitted for slots this scheduler claimed),
            ``recovered`` (abandoned claims it completed), ``lost`` (slots another
            scheduler claimed first), ``skipped_slots`` (missed slots the catch-up
            policy dropped), ``errors`` (schedules skipped because of an error).
        next_due: after a tick, the earliest future slot of any enabled schedule, or
            ``None``; :meth:`run` sleeps until then (at most its interval).
    """

    def __init__(
        self,
        queue: Queue,
        *,
        recovery_seconds: float = DEFAULT_RECOVERY_SECONDS,
        misfire_grace_seconds: float = DEFAULT_MISFIRE_GRACE_SECONDS,
        concurrency: int = 16,
        scheduler_id: str | None = None,
        definition_cache: dict[str, Any] | None = None,
    ) -> None:
        for name, value in (("recovery_seconds", recovery_seconds), ("misfire_grace_seconds", misfire_grace_seconds)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 86400:
                raise ValidationError(name, f"must be a number of seconds between 0 and 86400, got {value!r}")
        v.int_in_range(concurrency, "concurrency", 1, 1000)
        if scheduler_id is None:
            scheduler_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.queue = queue
        self.recovery_seconds = float(recovery_seconds)
        self.misfire_grace_seconds = float(misfire_grace_seconds)
        self.scheduler_id = scheduler_id
        self._sem = asyncio.Semaphore(concurrency)
        self._entries: dict[str, _Entry] = definition_cache if definition_cache is not None else {}
        self.stats: dict[str, int] = {}
        self.next_due: datetime | None = None

    def _count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    # ------------------------------------------------------------------ tick
    async def tick(self, now: datetime | None = None) -> list[Task]:
        """Fire every slot that is due at ``now`` and not fired yet.

        Args:
            now: the tick's time, an aware datetime; ``None`` = the store's clock
                (``await queue.time()``), never the local clock.

        Returns:
            The tasks this tick submitted (slots other schedulers claimed are not in it).

        Raises:
            ValidationError: ``now`` is naive.
            StorageError: listing the definitions failed (nothing was fired). Errors of
                single schedules are logged and counted in ``stats["errors"]``; the
                other schedules still fire.

        S3: see the module docstring — one LIST when nothing is due and every
        definition is cached.
        """
        now = await self.queue.time() if now is None else parse_when("now", now)
        keys = self.queue.schedule_keys
        infos = await self.queue._list_definition_infos()
        current: dict[str, _Entry] = {}
        to_load: list[tuple[str, ObjectInfo]] = []
        for info in infos:
            sid = keys.parse_definition(info.key)
            if sid is None:
                continue
            entry = self._entries.get(sid)
            if entry is not None and entry.etag == info.etag:
                current[sid] = entry
            else:
                to_load.append((sid, info))
        for (sid, _), loaded in zip(to_load, await asyncio.gather(*(self._load(sid, i) for sid, i in to_load))):
            if loaded is not None:
                current[sid] = loaded
        self._entries.clear()
        self._entries.update(current)

        due = [e for e in current.values() if self._is_due(e, now)]
        results = await asyncio.gather(*(self._guarded(e, now) for e in due))
        tasks = [t for batch in results for t in batch]
        upcoming = [
            e.next_slot
            for e in current.values()
            if e.schedule is not None and e.schedule.enabled and e.next_slot is not None and e.next_slot > now
        ]
        self.next_due = min(upcoming) if upcoming else None
        return tasks

    async def _load(self, sid: str, info: ObjectInfo) -> _Entry | None:
        async with self._sem:
            try:
                obj = await self.queue.store.get(info.key)
            except ObjectNotFound:
                return None  # deleted since the LIST
            except StorageError as exc:
                log.warning("schedule %s: reading its definition failed, skipped this tick: %s", sid, exc)
                self._count("errors")
                return None
        try:
            schedule = _decode_schedule(obj.data, info.key)
            if schedule.id != sid:
                raise ValidationError("id", f"{schedule.id!r} does not match its key {info.key!r}")
        except ValidationError as exc:
            log.error("schedule %s: stored definition %s is invalid, skipped until it changes: %s", sid, info.key, exc)
            self._count("errors")
            return _Entry(obj.etag, None)
        return _Entry(obj.etag, schedule, floor=schedule.floor)

    def _is_due(self, entry: _Entry, now: datetime) -> bool:
        schedule = entry.schedule
        if schedule is None or not schedule.enabled:
            return False
        if not entry.computed:
            try:
                entry.next_slot = _spec(schedule.cron, schedule.timezone).next_after(entry.floor or schedule.floor)
            except Exception as exc:  # noqa: BLE001 - one broken schedule must not stop the others
                log.error("schedule %s: computing its next slot failed: %s", schedule.id, exc)
                self._count("errors")
                return False
            entry.computed = True
        return entry.next_slot is not None and entry.next_slot <= now

    async def _guarded(self, entry: _Entry, now: datetime) -> list[Task]:
        assert entry.schedule is not None
        async with self._sem:
            try:
                return await self._process(entry, entry.schedule, now)
            except Exception as exc:  # noqa: BLE001 - one broken schedule must not stop the others
                self._failed(entry, exc)
                return []

    def _failed(self, entry: _Entry, exc: BaseException) -> None:
        assert entry.schedule is not None
        self._count("errors")
        log.error(
            "schedule %s: tick failed, skipped (retried next tick): %s",
            entry.schedule.id,
            exc,
            exc_info=not isinstance(exc, BuquetError),
        )
        entry.computed = False  # look again next tick

    async def _process(self, entry: _Entry, schedule: Schedule, now: datetime) -> list[Task]:
        queue = self.queue
        state = await queue._read_run_state(schedule)
        cursor = state.last_slot_at
        floor = max(schedule.floor, cursor) if cursor else schedule.floor
        plan = _plan(schedule, floor, now, self.misfire_grace_seconds)
        if plan.skipped:
            self._count("skipped_slots", plan.skipped)
            log.warning(
                "schedule %s: %s%d missed slot(s) up to %s skipped (catch_up=%s%s)",
                schedule.id,
                "at least " if plan.capped else "",
                plan.skipped,
                to_rfc3339(plan.last_due) if plan.last_due else "-",
                schedule.catch_up.value,
                f", limit {schedule.catch_up_limit}" if schedule.catch_up.value == "all" else "",
            )
        tasks: list[Task] = []
        settled: datetime | None = None
        blocked = False
        error: Exception | None = None
        for slot in plan.fire:
            try:
                outcome, task = await self._fire(schedule, slot, now)
            except Exception as exc:  # noqa: BLE001 - recorded below; later slots wait
                error = exc
                break
            if task is not None:
                tasks.append(task)
            if outcome == "in-flight":
                blocked = True  # its claimer advances the cursor (or a later tick recovers it)
            elif not blocked:
                settled = slot
        target = settled if plan.fire else plan.last_due
        if target is not None or tasks:
            last = tasks[-1] if tasks else None
            try:
                await queue._record_run(
                    schedule, target, now if last else None, last.id if last else None, "slot", now, state=state
                )
            except Exception as exc:  # noqa: BLE001 - the tasks exist; a later tick settles the cursor
                error = error or exc
            else:
                if target is not None:
                    floor = max(floor, target)
                # prune the ledger at most once per schedule per hour of slots
                if tasks and cursor is not None and _hour(cursor) != _hour(target or now):
                    await self._prune(schedule, min(now - LEDGER_RETENTION, cursor))
        entry.floor = floor
        entry.next_slot = _spec(schedule.cron, schedule.timezone).next_after(floor)
        entry.computed = True
        if error is not None:
            self._failed(entry, error)
        return tasks

    async def _fire(self, schedule: Schedule, slot: datetime, now: datetime) -> tuple[str, Task | None]:
        """Claim one slot and submit its task if this scheduler won. Returns the outcome
        (``submitted``, ``recovered``, ``done``, ``in-flight``, ``gone``) and the task
        this call submitted, if any."""
        queue = self.queue
        store = queue.store
        key = queue.schedule_keys.slot(schedule.id, slot)
        task_id = slot_task_id(queue.layout.prefix, schedule, slot)
        nonce = secrets.token_hex(8)
        claim = {
            "schedule_id": schedule.id,
            "incarnation": to_rfc3339(schedule.created_at),
            "slot": to_rfc3339(slot),
            "task_id": task_id,
            "claimed_at": to_rfc3339(now),
            "claimed_by": self.scheduler_id,
            "claim": nonce,
        }
        try:
            await store.put(key, json.dumps(claim, separators=(",", ":")).encode(), if_none_match=True)
        except PreconditionFailed:
            try:
                obj = await store.get(key)
            except ObjectNotFound:
                return "gone", None  # pruned or deleted meanwhile: not ours to fire
            ledger = _parse_ledger(obj.data)
            if ledger.get("claim") != nonce:  # not a retry of our own request
                self._count("lost")
                claimed_at = _ts(ledger.get("claimed_at")) or obj.info.last_modified
                ledger_task = ledger.get("task_id")
                if isinstance(ledger_task, str) and v.TASK_ID_RE.match(ledger_task):
                    task_id = ledger_task
                if (now - claimed_at).total_seconds() < self.recovery_seconds:
                    return "in-flight", None
                if await queue._task_exists(task_id):
                    return "done", None
                log.warning(
                    "schedule %s: slot %s was claimed at %s by %s but task %s was never written; submitting it",
                    schedule.id, to_rfc3339(slot), to_rfc3339(claimed_at), ledger.get("claimed_by"), task_id,
                )
                task, created = await queue._submit_slot_task(schedule, task_id, now)
                if not created:
                    return "done", None
                self._count("recovered")
                return "recovered", task
        task, _ = await queue._submit_slot_task(schedule, task_id, now)
        self._count("fired")
        log.info("schedule %s: slot %s -> task %s", schedule.id, to_rfc3339(slot), task.id)
        return "submitted", task

    async def _prune(self, schedule: Schedule, cutoff: datetime) -> None:
        """Delete ledger objects of slots before ``cutoff`` — older than
        LEDGER_RETENTION and before the slot cursor as this tick found it, so entries
        this tick created are never among them: one LIST (the oldest 1,000 entries)
        and at most one DeleteObjects. Failures are logged only."""
        keys = self.queue.schedule_keys
        try:
            page = await self.queue.store.list(keys.slots_prefix(schedule.id), limit=1000)
            old = [
                i.key
                for i in page
                if (slot := keys.parse_slot(schedule.id, i.key)) is not None and slot < cutoff
            ]
            if old:
                await self.queue.store.delete_many(old)
        except StorageError as exc:
            log.warning("schedule %s: pruning old ledger entries failed (retried later): %s", schedule.id, exc)

    # ------------------------------------------------------------------ run
    async def run(self, interval_seconds: float = 10.0, stop: asyncio.Event | None = None) -> None:
        """Tick until ``stop`` is set: at least every ``interval_seconds``, and right
        when the next slot of any schedule comes due (by the store's clock), so slots
        fire on time. A failing tick is logged and the next one goes on.

        Args:
            interval_seconds: the longest pause between ticks (it bounds how long a new
                or changed schedule takes to be noticed), 0.01 to 3600.
            stop: an event that ends the loop; ``None`` = run until cancelled.

        Raises:
            ValidationError: bad ``interval_seconds``.
        """
        if isinstance(interval_seconds, bool) or not isinstance(interval_seconds, (int, float)) or not 0.01 <= interval_seconds <= 3600:
            raise ValidationError("interval_seconds", f"must be between 0.01 and 3600, got {interval_seconds!r}")
        stop = stop or asyncio.Event()
        log.info("scheduler %s started on %s", self.scheduler_id, self.queue.store.description)
        while not stop.is_set():
            try:
                tasks = await self.tick()
                if tasks:
                    log.info("scheduler: %d task(s) submitted", len(tasks))
            except StorageError as exc:
                log.warning("scheduler tick failed: %s", exc)
            except Exception:  # noqa: BLE001 - a long-lived loop logs and goes on
                log.exception("scheduler tick failed")
            delay = float(interval_seconds)
            if self.next_due is not None:
                with contextlib.suppress(StorageError):
                    until = (self.next_due - await self.queue.time()).total_seconds()
                    delay = min(delay, max(until, 0.0) + 0.005)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(delay, 0.01))
        log.info("scheduler %s stopped: %s", self.scheduler_id, self.stats)


async def tick_once(queue: Queue, now: datetime | None = None) -> list[Task]:
    """One scheduler tick at ``now`` (default: the store's clock) with a fresh
    :class:`Scheduler` — what a scheduler Lambda calls on each invocation. Returns the
    tasks it submitted. Safe to call concurrently and repeatedly (duplicate invocations
    fire nothing twice). A warm Lambda that wants to skip re-reading unchanged
    definitions keeps a module-level dict and passes it as ``definition_cache`` to a
    new ``Scheduler`` per invocation (a Scheduler itself holds loop-bound objects).

    Raises:
        ValidationError: naive ``now``. StorageError: listing the definitions failed.
    """
    return await Scheduler(queue).tick(now)


def _hour(dt: datetime) -> datetime:
    return dt.replace(minute=0, second=0, microsecond=0)


def _ts(raw: Any) -> datetime | None:
    try:
        return from_rfc3339(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


def _parse_ledger(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
        return doc if isinstance(doc, dict) else {}
    except ValueError:
        return {}


__all__ = ["Scheduler", "tick_once"]
