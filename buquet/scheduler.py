"""The scheduler: turns due cron slots into tasks, at most one task per slot.

Run it as a long-lived process (``buquet scheduler``), inside a worker process, or one
tick per invocation from a Lambda (:func:`tick_once`). Any number of schedulers may run
against the same bucket at once: each slot is claimed by a conditional create of its
ledger object (``schedules/slots/<id>/<slot>.json``, ``If-None-Match: *``) and only the
claimer submits the slot's task. See :mod:`buquet.schedules` and ``docs/schedules.md``.

It works through two named objects of the queue, only by their public methods:
``queue.schedules`` (:class:`~buquet.schedules.ScheduleStore`: definitions, run state,
ledger, slot tasks) and ``queue.protocol`` (:class:`~buquet._tasks.TaskProtocol`: the
store's clock).

One tick:

1. LIST ``schedules/defs/`` (one request per 1,000 schedules). Definitions whose ETag
   the scheduler has not seen are read (one GET each); the rest come from its cache.
2. For each enabled schedule, the first slot after what the scheduler already knows is
   handled is computed locally. If it lies in the future, nothing is sent.
3. Otherwise the run state is read (one GET), the catch-up policy picks the slots to
   fire, each is claimed (one PUT) and, if this scheduler won, its task submitted (two
   PUTs), and the slot cursor advanced (one conditional PUT).

A broken schedule (unreadable definition, failing submit) is logged and skipped; the
others fire. All times come from the store's clock (``protocol.time()``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import _validate as v
from ._loops import every
from ._time import parse_when, to_rfc3339
from .config import DEFAULT_SCHEDULER_INTERVAL_SECONDS, finite_number
from .errors import BuquetError, StorageError
from .models import Task
from .schedules.cron import DEFAULT_MISFIRE_GRACE_SECONDS
from .schedules.model import Schedule, catch_up_plan, handled_up_to
from .schedules.store import DEFAULT_RECOVERY_SECONDS, LEDGER_RETENTION, ClaimResult, DefinitionRef

if TYPE_CHECKING:
    from ._tasks import TaskProtocol
    from .queue import Queue
    from .schedules.store import ScheduleStore

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


class SlotOutcome(enum.Enum):
    """What :meth:`Scheduler.tick` did with one slot the catch-up policy selected."""

    SUBMITTED = "submitted"  #: this scheduler claimed the slot and submitted its task
    RECOVERED = "recovered"  #: an abandoned claim: this scheduler submitted its task
    DONE = "done"  #: another scheduler's claim, and its task exists
    IN_FLIGHT = "in-flight"  #: another scheduler's fresh claim: left to it
    GONE = "gone"  #: the ledger entry vanished (pruned or deleted): not ours to fire


class Scheduler:
    """Fires due cron slots of every schedule in a queue's bucket.

    Args:
        queue: the :class:`~buquet.Queue` (its ``schedules`` and ``protocol``).
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
        self.recovery_seconds = finite_number(recovery_seconds, "recovery_seconds", 0, 86400)
        self.misfire_grace_seconds = finite_number(misfire_grace_seconds, "misfire_grace_seconds", 0, 86400)
        v.int_in_range(concurrency, "concurrency", 1, 1000)
        if scheduler_id is None:
            scheduler_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.queue = queue
        self.schedules: ScheduleStore = queue.schedules
        self.protocol: TaskProtocol = queue.protocol
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
                (``await protocol.time()``), never the local clock.

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
        now = await self.protocol.time() if now is None else parse_when("now", now)
        current: dict[str, _Entry] = {}
        to_load: list[DefinitionRef] = []
        for ref in await self.schedules.list_definitions():
            entry = self._entries.get(ref.schedule_id)
            if entry is not None and entry.etag == ref.etag:
                current[ref.schedule_id] = entry
            else:
                to_load.append(ref)
        for ref, loaded in zip(to_load, await asyncio.gather(*(self._load(ref) for ref in to_load))):
            if loaded is not None:
                current[ref.schedule_id] = loaded
        self._entries.clear()
        self._entries.update(current)

        due = [e for e in current.values() if self._is_due(e, now)]
        results = await asyncio.gather(*(self._process_logged(e, now) for e in due))
        tasks = [t for batch in results for t in batch]
        upcoming = [
            e.next_slot
            for e in current.values()
            if e.schedule is not None and e.schedule.enabled and e.next_slot is not None and e.next_slot > now
        ]
        self.next_due = min(upcoming) if upcoming else None
        return tasks

    async def _load(self, ref: DefinitionRef) -> _Entry | None:
        sid = ref.schedule_id
        async with self._sem:
            try:
                stored = await self.schedules.read_definition(sid)
            except StorageError as exc:
                log.warning("schedule %s: reading its definition failed, skipped this tick: %s", sid, exc)
                self._count("errors")
                return None
        if stored is None:
            return None  # deleted since the LIST
        if stored.schedule is None:
            log.error("schedule %s: stored definition is invalid, skipped until it changes: %s", sid, stored.error)
            self._count("errors")
            return _Entry(stored.etag, None)
        return _Entry(stored.etag, stored.schedule, floor=stored.schedule.floor)

    def _is_due(self, entry: _Entry, now: datetime) -> bool:
        schedule = entry.schedule
        if schedule is None or not schedule.enabled:
            return False
        if not entry.computed:
            try:
                entry.next_slot = schedule.next_slot(entry.floor or schedule.floor)
            except Exception as exc:  # noqa: BLE001 - one broken schedule must not stop the others
                log.error("schedule %s: computing its next slot failed: %s", schedule.id, exc)
                self._count("errors")
                return False
            entry.computed = True
        return entry.next_slot is not None and entry.next_slot <= now

    async def _process_logged(self, entry: _Entry, now: datetime) -> list[Task]:
        """:meth:`_process` one due schedule; an exception is logged and counted, and
        the schedule looked at again next tick."""
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

    def _log_skipped(self, schedule: Schedule, skipped: int, capped: bool, last_due: datetime | None) -> None:
        self._count("skipped_slots", skipped)
        log.warning(
            "schedule %s: %s%d missed slot(s) up to %s skipped (catch_up=%s%s)",
            schedule.id,
            "at least " if capped else "",
            skipped,
            to_rfc3339(last_due) if last_due else "-",
            schedule.catch_up.value,
            f", limit {schedule.catch_up_limit}" if schedule.catch_up.value == "all" else "",
        )

    async def _process(self, entry: _Entry, schedule: Schedule, now: datetime) -> list[Task]:
        runs = self.schedules.runs
        state = await runs.read_state(schedule)
        cursor = state.last_slot_at
        floor = handled_up_to(schedule, cursor)
        plan = catch_up_plan(schedule, cursor, now, self.misfire_grace_seconds)
        if plan.skipped:
            self._log_skipped(schedule, plan.skipped, plan.capped, plan.last_due)
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
            if outcome is SlotOutcome.IN_FLIGHT:
                blocked = True  # its claimer advances the cursor (or a later tick recovers it)
            elif not blocked:
                settled = slot
        target = settled if plan.fire else plan.last_due
        if target is not None or tasks:
            last = tasks[-1] if tasks else None
            try:
                await runs.record(
                    schedule, slot=target, run_at=now if last else None, task_id=last.id if last else None,
                    kind="slot", now=now, state=state,
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
        entry.next_slot = schedule.next_slot(floor)
        entry.computed = True
        if error is not None:
            self._failed(entry, error)
        return tasks

    async def _fire(self, schedule: Schedule, slot: datetime, now: datetime) -> tuple[SlotOutcome, Task | None]:
        """Claim one slot and submit its task if this scheduler won (or the claim was
        abandoned). Returns the outcome and the task this call submitted, if any."""
        runs = self.schedules.runs
        claim = await runs.claim_slot(
            schedule, slot, runs.slot_task_id(schedule, slot), now=now, claimed_by=self.scheduler_id
        )
        if claim.result is ClaimResult.GONE:
            return SlotOutcome.GONE, None
        if claim.result is ClaimResult.TAKEN:
            self._count("lost")
            claimed_at = claim.claimed_at or now
            if (now - claimed_at).total_seconds() < self.recovery_seconds:
                return SlotOutcome.IN_FLIGHT, None
            if await runs.task_exists(claim.task_id):
                return SlotOutcome.DONE, None
            log.warning(
                "schedule %s: slot %s was claimed at %s by %s but task %s was never written; submitting it",
                schedule.id, to_rfc3339(slot), to_rfc3339(claimed_at), claim.claimed_by, claim.task_id,
            )
            task, created = await runs.submit_slot_task(schedule, claim.task_id, now)
            if not created:
                return SlotOutcome.DONE, None
            self._count("recovered")
            return SlotOutcome.RECOVERED, task
        task, _ = await runs.submit_slot_task(schedule, claim.task_id, now)
        self._count("fired")
        log.info("schedule %s: slot %s -> task %s", schedule.id, to_rfc3339(slot), task.id)
        return SlotOutcome.SUBMITTED, task

    async def _prune(self, schedule: Schedule, cutoff: datetime) -> None:
        """Delete ledger objects of slots before ``cutoff`` — older than
        LEDGER_RETENTION and before the slot cursor as this tick found it, so entries
        this tick created are never among them. Failures are logged only."""
        try:
            await self.schedules.runs.prune_ledger(schedule.id, cutoff)
        except StorageError as exc:
            log.warning("schedule %s: pruning old ledger entries failed (retried later): %s", schedule.id, exc)

    # ------------------------------------------------------------------ run
    async def run(
        self, interval_seconds: float = DEFAULT_SCHEDULER_INTERVAL_SECONDS, stop: asyncio.Event | None = None
    ) -> None:
        """Tick until ``stop`` is set: at least every ``interval_seconds``, and right
        when the next slot of any schedule comes due (by the store's clock), so slots
        fire on time. A failing tick is logged (a storage error as one line, anything
        else with its traceback) and the loop goes on.

        Args:
            interval_seconds: the longest pause between ticks (it bounds how long a new
                or changed schedule takes to be noticed), 0.01 to 3600.
            stop: an event that ends the loop; ``None`` = run until cancelled.

        Raises:
            ValidationError: bad ``interval_seconds``.
        """
        interval = finite_number(interval_seconds, "interval_seconds", 0.01, 3600)
        stop = stop or asyncio.Event()
        log.info("scheduler %s started on %s", self.scheduler_id, self.protocol.store.description)
        await every(interval, self._tick_step, stop, name="scheduler tick", logger=log, next_wait=_as_wait)
        log.info("scheduler %s stopped: %s", self.scheduler_id, self.stats)

    async def _tick_step(self) -> float | None:
        """One tick of :meth:`run`; returns how long to wait for the next due slot."""
        tasks = await self.tick()
        if tasks:
            log.info("scheduler: %d task(s) submitted", len(tasks))
        if self.next_due is None:
            return None
        try:
            until = (self.next_due - await self.protocol.time()).total_seconds()
        except StorageError:
            return None  # the clock is unavailable: wait the full interval
        return max(until, 0.0) + 0.005


def _as_wait(result: object) -> float | None:
    return result if isinstance(result, float) else None


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


__all__ = ["Scheduler", "tick_once"]
