"""Schedule storage: definitions, run state and the per-slot ledger, all in the bucket.

Keys come from :class:`~buquet.keys.KeyLayout`: ``schedules/defs/<id>.json`` (the
:class:`Schedule`; If-None-Match to create, If-Match to change),
``schedules/runs/<id>.json`` (the :class:`RunState`: slot cursor and last run; If-Match)
and ``schedules/slots/<id>/<YYYYMMDDTHHMMSSZ>.json`` (the ledger: created with
If-None-Match *before* the slot's task is submitted; it names the task id). Every
document goes through :mod:`buquet._codec`; tasks are written by
:meth:`TaskProtocol.create <buquet._tasks.TaskProtocol.create>`.

**Exactly one task per slot**: only the scheduler whose ledger create wins
(:meth:`ScheduleRuns.claim_slot`) submits the slot's task, under an id derived from
(prefix, schedule id, creation time, slot), so a recovery of an abandoned claim writes
the *same* task object (given atomic conditional writes).

**One reading of a definition** (:meth:`ScheduleStore.decode_definition`): a definition
that is not JSON, has an invalid field, or whose ``id`` differs from its key's is
corrupt. ``list_schedules`` and the scheduler log it and leave it out; the by-id methods
(``get_schedule``, enable/disable/trigger, ``get_schedule_last_run``) raise
:class:`~buquet.errors.CorruptObject` naming the key and the field;
``delete_schedule`` removes it.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable

from .. import _ids
from .. import _validate as v
from .._codec import Encoded, decode_json, decode_with, encode, new_rev, rev_of
from .._time import from_rfc3339, to_ms, to_rfc3339
from .._writes import put_resolved
from ..errors import CorruptObject, ObjectNotFound, PreconditionFailed, ScheduleExists, ScheduleNotFound, StorageError
from ..models import RetryPolicy, Task
from .model import CatchUp, RunState, Schedule, ScheduleLastRun, next_run_at

if TYPE_CHECKING:
    from .._tasks import TaskProtocol

log = logging.getLogger("buquet.schedules")

#: ledger objects of slots older than this are pruned (they only guard against a
#: scheduler that stalls longer than this between reading the run state and claiming)
LEDGER_RETENTION = timedelta(days=2)
#: a ledger claim whose task does not exist after this many seconds is recovered: the
#: claimer died between the claim and the submit, so another scheduler submits it
DEFAULT_RECOVERY_SECONDS = 30.0
#: keys per LIST page / per DeleteObjects
_PAGE = 1000
#: read-modify-write attempts before a conflict is reported
_WRITE_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class DefinitionRef:
    """A definition found by LIST: schedule id, object key and ETag (which changes with
    every write, so a cache keyed on it notices changes)."""

    schedule_id: str
    key: str
    etag: str


@dataclass(frozen=True, slots=True)
class StoredDefinition:
    """A definition as read: its ETag and either the schedule or why it is corrupt."""

    schedule_id: str
    etag: str
    schedule: Schedule | None
    error: CorruptObject | None = None

    def value(self) -> Schedule:
        """The schedule. Raises the CorruptObject if the definition is corrupt."""
        if self.schedule is None:
            assert self.error is not None
            raise self.error
        return self.schedule


class ClaimResult(enum.Enum):
    """Outcome of :meth:`ScheduleRuns.claim_slot`."""

    WON = "won"  #: this call created the ledger object: submit the slot's task
    TAKEN = "taken"  #: another claim exists (see its time, claimer and planned task)
    GONE = "gone"  #: the ledger object was pruned or deleted meanwhile: nothing to do


@dataclass(frozen=True, slots=True)
class SlotClaim:
    """A slot's ledger entry as a claim attempt found it.

    Attributes:
        result: :class:`ClaimResult`.
        task_id: the task the ledger names (ours when WON; the planned id if the
            stored entry names none).
        claimed_at: when the claim was made (store time), for TAKEN.
        claimed_by: the claiming scheduler's id, for TAKEN.
    """

    result: ClaimResult
    task_id: str
    claimed_at: datetime | None = None
    claimed_by: str | None = None


def _ts(raw: Any) -> datetime | None:
    try:
        return from_rfc3339(raw) if isinstance(raw, str) else None
    except (ValueError, OverflowError):
        return None


class ScheduleRuns:
    """Run state, slot ledger and slot tasks of the schedules in one bucket: what the
    scheduler reads and writes per slot.

    Args:
        protocol: the bucket's :class:`~buquet._tasks.TaskProtocol` (store, key
            layout, clock, task creation).
    """

    def __init__(self, protocol: TaskProtocol) -> None:
        self.protocol = protocol
        self.store = protocol.store
        self.layout = protocol.layout

    # ------------------------------------------------------------------ run state
    async def read_state(self, schedule: Schedule) -> RunState:
        """GET ``schedules/runs/<id>.json``. A missing object reads as an empty state;
        one of an earlier schedule with the same id (deleted and re-created), or an
        unreadable one (logged), as an empty state with its ETag: it is overwritten."""
        key = self.layout.schedule_run(schedule.id)
        try:
            obj = await self.store.get(key)
        except ObjectNotFound:
            return RunState()
        try:
            state, _ = decode_with(obj.data, key, lambda doc: RunState.from_dict(doc, obj.etag))
        except CorruptObject as exc:
            log.error("schedule %s: %s; it will be rewritten", schedule.id, exc)
            return RunState(obj.etag)
        if state.incarnation != to_rfc3339(schedule.created_at):
            return RunState(obj.etag)
        return state

    async def record(
        self,
        schedule: Schedule,
        *,
        slot: datetime | None,
        run_at: datetime | None,
        task_id: str | None,
        kind: str | None,
        now: datetime,
        state: RunState | None = None,
    ) -> None:
        """Merge a run into the run state: the slot cursor only moves forward to
        ``slot``, the last run is replaced only by a later one. One GET (unless
        ``state`` is given) and one PUT with If-Match / If-None-Match, repeated on
        conflicts; no PUT when nothing changes.

        Raises:
            PreconditionFailed: conflicts every time. StorageError: the store failed.
        """
        key = self.layout.schedule_run(schedule.id)
        for _ in range(_WRITE_ATTEMPTS):
            if state is None:
                state = await self.read_state(schedule)
            new = state.merged(slot=slot, run_at=run_at, task_id=task_id, kind=kind)
            if new is None:
                return
            body = encode(new.to_dict(schedule, next_run_at(schedule, new.last_slot_at, now), now))
            try:
                if state.etag is None:
                    await self.store.put(key, body, if_none_match=True)
                else:
                    await self.store.put(key, body, if_match=state.etag)
                return
            except PreconditionFailed:
                state = None  # someone else wrote it: merge again
        raise PreconditionFailed(f"run state of schedule {schedule.id!r} keeps changing; gave up", key)

    async def last_run(self, schedule: Schedule, now: datetime | None = None) -> ScheduleLastRun:
        """The schedule's :class:`ScheduleLastRun`, ``next_run_at`` computed at ``now``
        (default: the store's clock). One GET."""
        state = await self.read_state(schedule)
        now = now or await self.protocol.time()
        return ScheduleLastRun(
            schedule_id=schedule.id, last_run_at=state.last_run_at, last_task_id=state.last_task_id,
            next_run_at=next_run_at(schedule, state.last_slot_at, now), last_slot_at=state.last_slot_at,
            last_run_kind=state.last_run_kind,
        )

    # ------------------------------------------------------------------ slot ledger
    def slot_task_id(self, schedule: Schedule, slot: datetime) -> str:
        """The id of the task a slot submits: a UUIDv7 whose time field is the slot's
        epoch milliseconds and whose random bits come from a SHA-256 over (prefix,
        schedule id, schedule creation time, slot). Deterministic, so every scheduler
        that submits a slot — the claimer, or a later recovery — writes the same task
        object."""
        return _ids.derived_task_id(
            to_ms(slot), "buquet-slot", self.layout.prefix, schedule.id, to_rfc3339(schedule.created_at),
            to_rfc3339(slot),
        )

    async def claim_slot(
        self, schedule: Schedule, slot: datetime, task_id: str, *, now: datetime, claimed_by: str
    ) -> SlotClaim:
        """Create the slot's ledger object with ``If-None-Match: *``. At most one claim
        of a slot wins, however many schedulers race. The claim's ``rev`` is its nonce:
        a retried request that had in fact succeeded finds its own claim (WON).

        S3: one PUT; when another claim exists, one GET of it.
        """
        key = self.layout.schedule_slot(schedule.id, slot)
        nonce = new_rev()
        claim = {
            "schedule_id": schedule.id, "incarnation": to_rfc3339(schedule.created_at), "slot": to_rfc3339(slot),
            "task_id": task_id, "claimed_at": to_rfc3339(now), "claimed_by": claimed_by,
        }
        try:
            await self.store.put(key, encode(claim, nonce), if_none_match=True)
            return SlotClaim(ClaimResult.WON, task_id, now, claimed_by)
        except PreconditionFailed:
            pass
        try:
            obj = await self.store.get(key)
        except ObjectNotFound:
            return SlotClaim(ClaimResult.GONE, task_id)
        if rev_of(obj.data) == nonce:
            return SlotClaim(ClaimResult.WON, task_id, now, claimed_by)
        try:
            ledger = decode_json(obj.data, key)
        except CorruptObject:
            ledger = {}  # unreadable: judged by its age, recovered under the planned id
        planned = ledger.get("task_id")
        by = ledger.get("claimed_by")
        return SlotClaim(
            ClaimResult.TAKEN,
            planned if _ids.is_task_id(planned) else task_id,
            _ts(ledger.get("claimed_at")) or obj.info.last_modified,
            by if isinstance(by, str) else None,
        )

    async def prune_ledger(self, schedule_id: str, before: datetime) -> int:
        """Delete ledger objects of slots before ``before``: one LIST (the oldest 1,000
        entries) and at most one DeleteObjects. Returns how many were deleted.

        Raises:
            StorageError: the store failed.
        """
        page = await self.store.list(self.layout.schedule_slots_prefix(schedule_id), limit=_PAGE)
        old = [
            i.key
            for i in page
            if (slot := self.layout.parse_schedule_slot(schedule_id, i.key)) is not None and slot < before
        ]
        if old:
            await self.store.delete_many(old)
        return len(old)

    async def delete_all(self, schedule_id: str) -> None:
        """Delete the run state and every ledger object of a schedule: one DELETE, one
        LIST and one DeleteObjects per 1,000 ledger objects."""
        await self.store.delete(self.layout.schedule_run(schedule_id))
        prefix = self.layout.schedule_slots_prefix(schedule_id)
        while True:
            page = await self.store.list(prefix, limit=_PAGE)
            if not page:
                break
            await self.store.delete_many([i.key for i in page])
            if len(page) < _PAGE:
                break

    # ------------------------------------------------------------------ slot tasks
    async def submit_slot_task(self, schedule: Schedule, task_id: str, now: datetime) -> tuple[Task, bool]:
        """Submit the schedule's task under a slot's deterministic id, through
        :meth:`TaskProtocol.create` (idempotent per id). Returns the task and whether
        this call created it (``False``: it existed already). S3: two PUTs."""
        return await self.protocol.create(
            schedule.task_type, schedule.input, timeout_seconds=schedule.timeout_seconds,
            max_retries=schedule.max_retries, retry_policy=schedule.retry_policy, available_at=now, now=now,
            task_id=task_id,
        )

    async def task_exists(self, task_id: str) -> bool:
        """Does the task object exist? One HEAD."""
        return await self.protocol.exists(task_id)


class ScheduleStore:
    """The schedules of one bucket: what :class:`~buquet.Queue`'s schedule methods
    delegate to, and what the scheduler reads definitions through.

    Every method validates its arguments before sending any request and raises
    :class:`~buquet.ValidationError` naming the bad field; storage failures raise
    :class:`~buquet.StorageError`; a corrupt stored definition read by id raises
    :class:`~buquet.errors.CorruptObject`.

    Args:
        protocol: the bucket's :class:`~buquet._tasks.TaskProtocol`.

    Attributes:
        runs: the :class:`ScheduleRuns` (run state, slot ledger, slot tasks).
        layout: the bucket's :class:`~buquet.keys.KeyLayout`.
    """

    def __init__(self, protocol: TaskProtocol) -> None:
        self.protocol = protocol
        self.store = protocol.store
        self.layout = protocol.layout
        self.runs = ScheduleRuns(protocol)

    # ------------------------------------------------------------------ create
    async def create_schedule(
        self,
        id: str,
        task_type: str,
        input: Any,
        cron: str,
        *,
        timezone: str = "UTC",
        enabled: bool = True,
        timeout_seconds: int = 300,
        max_retries: int = 3,
        retry_policy: RetryPolicy | None = None,
        catch_up: CatchUp | str = CatchUp.LATEST,
        catch_up_limit: int = 10,
    ) -> Schedule:
        """Create a schedule. It first fires at its first slot after now (never at once).

        Args:
            id: 1–128 of ``[A-Za-z0-9_.-]``, starting with a letter or digit.
            task_type: the task type each run submits (as in :meth:`Queue.submit`).
            input: JSON input of every run's task.
            cron: 5-field cron or an ``@hourly``-style alias (see
                :func:`~buquet.schedules.cron.normalize_cron`).
            timezone: IANA zone the cron fields are read in; default ``"UTC"``.
            enabled: ``False`` to create it paused.
            timeout_seconds / max_retries / retry_policy: options of the submitted tasks.
            catch_up: :class:`CatchUp` policy (or its value ``"latest"``, ``"all"``,
                ``"skip"``) for slots missed while no scheduler ran.
            catch_up_limit: with ``catch_up="all"``, the most missed slots run at once.

        Returns:
            The stored :class:`Schedule`.

        Raises:
            ValidationError: bad input (names the field); nothing was written.
            ScheduleExists: a schedule with this id exists.
            StorageError: the store failed.

        S3: one PUT of ``schedules/defs/<id>.json`` with ``If-None-Match: *``.
        """
        v.name(id, "id")
        now = await self.protocol.time()
        schedule = Schedule(
            id=id, task_type=task_type, input=input, cron=cron, enabled=enabled, created_at=now,
            timezone=timezone, updated_at=now, enabled_at=now, timeout_seconds=timeout_seconds,
            max_retries=max_retries, retry_policy=retry_policy, catch_up=catch_up, catch_up_limit=catch_up_limit,
        )
        rev = new_rev()
        try:
            await put_resolved(self.store, self.layout.schedule_def(id), Encoded(encode(schedule.to_dict(), rev), rev),
                               if_none_match=True)
        except PreconditionFailed:
            raise ScheduleExists(f"schedule {id!r} already exists (delete it first to replace it)") from None
        return schedule

    # ------------------------------------------------------------------ read
    def decode_definition(self, schedule_id: str, data: bytes, etag: str) -> StoredDefinition:
        """Decode a stored definition — the one path every reader takes. Corrupt when
        it is not JSON, a field is invalid, or its ``id`` is not the key's."""
        key = self.layout.schedule_def(schedule_id)
        try:
            schedule, _ = decode_with(data, key, Schedule.from_dict)
            if schedule.id != schedule_id:
                raise CorruptObject(key, "id", f"{schedule.id!r} does not match the id in the key, {schedule_id!r}")
        except CorruptObject as exc:
            return StoredDefinition(schedule_id, etag, None, exc)
        return StoredDefinition(schedule_id, etag, schedule)

    async def read_definition(self, schedule_id: str) -> StoredDefinition | None:
        """GET a definition and decode it (corrupt ones too), or ``None`` if there is
        none. Raises StorageError when the store fails."""
        try:
            obj = await self.store.get(self.layout.schedule_def(schedule_id))
        except ObjectNotFound:
            return None
        return self.decode_definition(schedule_id, obj.data, obj.etag)

    async def list_definitions(self) -> list[DefinitionRef]:
        """Every definition object whose key holds a valid schedule id, in key order.
        One LIST per 1,000. Raises StorageError."""
        prefix = self.layout.schedule_defs_prefix()
        out: list[DefinitionRef] = []
        start_after: str | None = None
        while True:
            page = await self.store.list(prefix, start_after=start_after, limit=_PAGE)
            for info in page:
                sid = self.layout.parse_schedule_def(info.key)
                if sid is not None and v.NAME_RE.match(sid):
                    out.append(DefinitionRef(sid, info.key, info.etag))
            if len(page) < _PAGE:
                return out
            start_after = page[-1].key

    async def get_schedule(self, id: str) -> Schedule | None:
        """The schedule with this id, or ``None``. One GET.

        Raises:
            ValidationError: malformed id.
            CorruptObject: the stored definition cannot be decoded (names the key and
                the field); such a definition is also left out of :meth:`list_schedules`.
            StorageError: the store failed.
        """
        v.name(id, "id")
        stored = await self.read_definition(id)
        return stored.value() if stored is not None else None

    async def list_schedules(self) -> list[Schedule]:
        """Every schedule, sorted by id. A stored definition that cannot be read (one
        :meth:`get_schedule` raises CorruptObject for) is logged and left out.

        S3: one LIST per 1,000 schedules, one GET per schedule (16 at a time).

        Raises:
            StorageError: the store failed.
        """
        refs = await self.list_definitions()
        found: list[Schedule] = []
        for ref, obj in zip(refs, await self.store.get_many([r.key for r in refs])):
            if obj is None:
                continue  # deleted since the LIST
            stored = self.decode_definition(ref.schedule_id, obj.data, obj.etag)
            if stored.schedule is None:
                log.error("schedule %s left out: %s", ref.schedule_id, stored.error)
                continue
            found.append(stored.schedule)
        return sorted(found, key=lambda s: s.id)

    async def _require(self, schedule_id: str) -> StoredDefinition:
        stored = await self.read_definition(schedule_id)
        if stored is None:
            raise ScheduleNotFound(f"no schedule {schedule_id!r}")
        stored.value()  # raises CorruptObject
        return stored

    # ------------------------------------------------------------------ change
    async def _modify(self, schedule_id: str, change: Callable[[Schedule, datetime], Schedule | None]) -> Schedule:
        """Read-modify-write of a definition with If-Match, retried on conflicts."""
        key = self.layout.schedule_def(schedule_id)
        for _ in range(_WRITE_ATTEMPTS):
            stored = await self._require(schedule_id)
            schedule = stored.value()
            new = change(schedule, await self.protocol.time())
            if new is None:
                return schedule
            rev = new_rev()
            try:
                await put_resolved(self.store, key, Encoded(encode(new.to_dict(), rev), rev), if_match=stored.etag)
                return new
            except PreconditionFailed:
                continue  # changed (or deleted) concurrently: read again
        raise PreconditionFailed(f"schedule {schedule_id!r} keeps changing concurrently; try again", key)

    async def enable_schedule(self, id: str) -> Schedule:
        """Let the scheduler fire the schedule again. Slots that passed while it was
        disabled are not replayed: it next fires at its first slot after now. Enabling
        an enabled schedule changes nothing.

        Returns:
            The schedule as stored.

        Raises:
            ValidationError: malformed id. ScheduleNotFound: no such schedule.
            CorruptObject: the stored definition cannot be decoded.
            StorageError: the store failed.

        S3: one GET and one PUT with ``If-Match`` on the definition's ETag (repeated if
        a concurrent change wins), so concurrent enable/disable calls lose no update.
        """
        v.name(id, "id")

        def change(s: Schedule, now: datetime) -> Schedule | None:
            return None if s.enabled else replace(s, enabled=True, enabled_at=now, updated_at=now)

        return await self._modify(id, change)

    async def disable_schedule(self, id: str) -> Schedule:
        """Stop the scheduler from firing the schedule (its definition and run state
        are kept). Disabling a disabled schedule changes nothing.

        Returns:
            The schedule as stored.

        Raises:
            ValidationError: malformed id. ScheduleNotFound: no such schedule.
            CorruptObject: the stored definition cannot be decoded.
            StorageError: the store failed.

        S3: one GET and one PUT with ``If-Match`` (see :meth:`enable_schedule`).
        """
        v.name(id, "id")

        def change(s: Schedule, now: datetime) -> Schedule | None:
            return replace(s, enabled=False, updated_at=now) if s.enabled else None

        return await self._modify(id, change)

    async def delete_schedule(self, id: str) -> None:
        """Delete the schedule, its run state and its slot ledger. Tasks it already
        submitted are not touched. A scheduler tick that read the definition just
        before may still fire a slot that was due. A corrupt definition is deleted too.

        Raises:
            ValidationError: malformed id. ScheduleNotFound: no such schedule.
            StorageError: the store failed.

        S3: one HEAD, two DELETEs, one LIST per 1,000 ledger objects and one
        DeleteObjects per 1,000 of them.
        """
        v.name(id, "id")
        key = self.layout.schedule_def(id)
        try:
            await self.store.head(key)
        except ObjectNotFound:
            raise ScheduleNotFound(f"no schedule {id!r}") from None
        await self.store.delete(key)
        await self.runs.delete_all(id)

    # ------------------------------------------------------------------ trigger
    async def trigger_schedule(self, id: str) -> Task:
        """Submit the schedule's task now, outside its cron slots (also when it is
        disabled). The slot ledger and slot cursor are not touched, so the next slot
        fires as usual; the run state records this run as the last run
        (``last_run_kind="trigger"``).

        Returns:
            The submitted :class:`Task`.

        Raises:
            ValidationError: malformed id. ScheduleNotFound: no such schedule.
            CorruptObject: the stored definition cannot be decoded.
            StorageError: the store failed (the task may or may not exist).

        S3: one GET of the definition, the two PUTs of :meth:`Queue.submit`, then one
        GET and one conditional PUT of the run state (a failure there is only logged:
        the task was submitted).
        """
        v.name(id, "id")
        schedule = (await self._require(id)).value()
        now = await self.protocol.time()
        task, _ = await self.protocol.create(
            schedule.task_type, schedule.input, timeout_seconds=schedule.timeout_seconds,
            max_retries=schedule.max_retries, retry_policy=schedule.retry_policy, available_at=now, now=now,
        )
        try:
            await self.runs.record(
                schedule, slot=None, run_at=task.created_at, task_id=task.id, kind="trigger", now=task.created_at
            )
        except StorageError as exc:
            log.warning("schedule %s: triggered task %s, but recording the run failed: %s", id, task.id, exc)
        return task

    # ------------------------------------------------------------------ last run
    async def get_schedule_last_run(self, id: str) -> ScheduleLastRun | None:
        """The schedule's last run and next slot, or ``None`` if there is no such
        schedule. ``next_run_at`` is computed now from the definition, the slot cursor
        and the store's clock (see :class:`ScheduleLastRun`).

        Raises:
            ValidationError: malformed id.
            CorruptObject: the stored definition cannot be decoded.
            StorageError: the store failed.

        S3: two GETs (definition and run state).
        """
        v.name(id, "id")
        stored = await self.read_definition(id)
        if stored is None:
            return None
        return await self.runs.last_run(stored.value())

    async def last_run_of(self, schedule: Schedule, now: datetime | None = None) -> ScheduleLastRun:
        """:class:`ScheduleLastRun` of a schedule already read, ``next_run_at`` at
        ``now`` (default: the store's clock). One GET (the run state)."""
        return await self.runs.last_run(schedule, now)


__all__ = ["DEFAULT_RECOVERY_SECONDS", "LEDGER_RETENTION", "ClaimResult", "DefinitionRef", "ScheduleRuns",
           "ScheduleStore", "SlotClaim", "StoredDefinition"]
