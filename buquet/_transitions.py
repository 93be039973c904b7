"""Pure task transitions and decisions: Task → Task, each appending its history entry.

Nothing here touches storage or a clock; the protocol layer (:mod:`buquet._tasks`)
passes ``now`` in and writes what these functions return. Decisions about a task —
may it be claimed? what follows a failed or expired attempt? — are values
(:class:`ClaimDecision`, :class:`AfterFailure`) so they can be tested on their own.
"""

from __future__ import annotations

import enum
import random
import secrets
import traceback as _traceback
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from ._time import from_ms, to_ms, to_rfc3339
from .models import Task, TaskStatus

#: longest traceback text kept in a history entry, characters (the tail is kept)
MAX_TRACEBACK_CHARS = 4000
#: longest error text kept in ``last_error``/history, characters
MAX_ERROR_CHARS = 2000


# ------------------------------------------------------------------ history
def history_entry(
    task: Task, status: TaskStatus, at: datetime, error: str | None = None, traceback: str | None = None,
    *, attempt: int | None = None, worker_id: str | None = None,
) -> dict[str, Any]:
    """The history entry of ``task`` entering ``status`` at ``at`` (``attempt`` and
    ``worker_id`` override the task's own, for a state not built yet)."""
    worker = worker_id if worker_id is not None else task.worker_id
    entry: dict[str, Any] = {"status": status.value, "at": to_rfc3339(at),
                             "attempt": task.attempt if attempt is None else attempt}
    if worker and status != TaskStatus.Pending:
        entry["worker_id"] = worker
    if error:
        entry["error"] = error
    if traceback:
        entry["traceback"] = traceback
    return entry


def _moved(task: Task, status: TaskStatus, now: datetime, *, error: str | None = None,
           traceback: str | None = None, **changes: Any) -> Task:
    entry = history_entry(task, status, now, error, traceback,
                          attempt=changes.get("attempt"), worker_id=changes.get("worker_id"))
    return replace(task, status=status, updated_at=now, history=task.history + (entry,), **changes)


# ------------------------------------------------------------ error texts
def describe_exception(exc: BaseException) -> str:
    """``Type: message`` for ``exc``, bounded; never raises (an exception whose
    ``str()`` raises is described by its type and the failure)."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except BaseException as inner:  # noqa: BLE001 - user __str__ may raise anything
        text = f"<str() of the exception raised {type(inner).__name__}>"
    out = f"{name}: {text}" if text else name
    return out if len(out) <= MAX_ERROR_CHARS else out[: MAX_ERROR_CHARS - 1] + "…"


def format_traceback(exc: BaseException) -> str:
    """The exception's traceback, the last :data:`MAX_TRACEBACK_CHARS` characters;
    never raises."""
    try:
        text = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:  # noqa: BLE001
        text = describe_exception(exc)
    return text if len(text) <= MAX_TRACEBACK_CHARS else "…" + text[-(MAX_TRACEBACK_CHARS - 1) :]


# --------------------------------------------------------------- transitions
def new_pending(
    task_id: str,
    task_type: str,
    input: Any,
    *,
    shard: str,
    timeout_seconds: int,
    max_retries: int,
    retry_policy: Any,
    available_at: datetime,
    now: datetime,
    **options: Any,
) -> Task:
    """A new Pending task (arguments already validated), with its first history entry.
    ``options`` sets further fields (``expires_at``, ``max_reschedules``, ``input_ref``)."""
    task = Task(
        id=task_id,
        task_type=task_type,
        status=TaskStatus.Pending,
        input=input,
        output=None,
        created_at=now,
        retry_count=0,
        last_error=None,
        shard=shard,
        attempt=0,
        available_at=from_ms(to_ms(available_at)),
        timeout_seconds=timeout_seconds,
        max_retries=max_retries,
        retry_policy=retry_policy,
        worker_id=None,
        lease_expires_at=None,
        completed_at=None,
        updated_at=now,
        **options,
    )
    return replace(task, history=(history_entry(task, TaskStatus.Pending, now),))


def claimed(task: Task, worker_id: str, now: datetime, lease_seconds: float) -> Task:
    """Running under ``worker_id`` with a new attempt, a new ``lease_id`` and a lease
    until ``now + lease_seconds``. Taking over a Running task whose lease lapsed records
    why in ``last_error``."""
    attempt = task.attempt + 1
    last_error = task.last_error
    if task.status == TaskStatus.Running:
        last_error = expired_lease_error(task)
    return _moved(
        task, TaskStatus.Running, now,
        attempt=attempt,
        retry_count=attempt - 1,
        worker_id=worker_id,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        lease_id=secrets.token_hex(8),
        last_error=last_error,
    )


def extended(task: Task, now: datetime, expires_at: datetime) -> Task:
    """The same attempt with its lease pushed to ``expires_at`` (no history entry:
    heartbeats are not transitions)."""
    return replace(task, lease_expires_at=expires_at, updated_at=now)


def completed(task: Task, now: datetime, output: Any, output_ref: str | None = None) -> Task:
    """Completed with ``output`` (or a payload object at ``output_ref``). Final; the
    progress report is cleared."""
    return _moved(task, TaskStatus.Completed, now, output=output, output_ref=output_ref,
                  lease_expires_at=None, completed_at=now, progress=None)


def failed(task: Task, now: datetime, error: str, traceback: str | None = None) -> Task:
    """Failed with ``error``. Final."""
    return _moved(
        task, TaskStatus.Failed, now, error=error, traceback=traceback,
        output=None, last_error=error, lease_expires_at=None, completed_at=now,
    )


def requeued(
    task: Task, now: datetime, available_at: datetime, error: str, *, traceback: str | None = None,
    refund_attempt: bool = False,
) -> Task:
    """Back to Pending, claimable from ``available_at``. ``refund_attempt`` gives the
    attempt back (a worker that released the task at shutdown: the task did not fail)."""
    attempt = task.attempt - 1 if refund_attempt else task.attempt
    return _moved(
        task, TaskStatus.Pending, now, error=error, traceback=traceback,
        available_at=from_ms(to_ms(available_at)),
        attempt=max(0, attempt),
        retry_count=task.retry_count if refund_attempt else task.attempt,
        last_error=error,
        lease_expires_at=None,
    )


def archived(task: Task, now: datetime) -> Task:
    """Archived (from Completed or Failed). Final."""
    return _moved(task, TaskStatus.Archived, now)


def cancelled(task: Task, now: datetime, reason: str | None = None, by: str | None = None) -> Task:
    """Cancelled (a Pending task, or a Running one whose handler honoured a cancellation
    request). Final. ``last_error`` becomes ``reason`` when one is given."""
    return _moved(
        task, TaskStatus.Cancelled, now, error=reason,
        last_error=reason if reason is not None else task.last_error,
        cancelled_at=now, cancelled_by=by, lease_expires_at=None, progress=None,
    )


def cancellation_requested(task: Task, now: datetime) -> Task:
    """A Running task flagged ``cancel_requested`` (no history entry: the status stays)."""
    return replace(task, cancel_requested=True, updated_at=now)


def expired(task: Task, now: datetime) -> Task:
    """Expired: still Pending when its deadline passed. Final; the handler never ran."""
    return _moved(task, TaskStatus.Expired, now, expired_at=now, lease_expires_at=None)


def rescheduled(task: Task, now: datetime, available_at: datetime) -> Task:
    """Back to Pending at ``available_at`` because the handler asked (not a failure):
    ``reschedule_count`` + 1, the attempt given back, ``retry_count``, ``last_error`` and
    ``expires_at`` unchanged."""
    return _moved(
        task, TaskStatus.Pending, now, error=None,
        available_at=from_ms(to_ms(available_at)),
        attempt=max(0, task.attempt - 1),
        reschedule_count=task.reschedule_count + 1,
        lease_expires_at=None, lease_id=None, progress=None,
    )


def replayed(task: Task, now: datetime) -> Task:
    """A Failed, Cancelled or Expired task back to Pending with a fresh attempt budget
    (``attempt`` and ``retry_count`` 0), claimable at once; its history is kept."""
    return _moved(
        task, TaskStatus.Pending, now,
        available_at=from_ms(to_ms(now)), attempt=0, retry_count=0, output=None, output_ref=None,
        completed_at=None, cancelled_at=None, cancelled_by=None, expired_at=None, cancel_requested=False,
        lease_expires_at=None, lease_id=None, worker_id=None, progress=None,
    )


def progressed(task: Task, now: datetime, progress: dict[str, Any]) -> Task:
    """The same attempt with a new progress report (no history entry)."""
    return replace(task, progress=progress, updated_at=now)


def same_attempt(current: Task, mine: Task) -> bool:
    """Is ``current`` (as stored now) still the attempt ``mine`` belongs to? True while
    it is Running under the same ``lease_id``: another writer only annotated it (a
    cancellation request), the lease holder may write on top of it."""
    return current.status == TaskStatus.Running and current.lease_id is not None and current.lease_id == mine.lease_id


def finished(task: Task, now: datetime, output: Any, output_ref: str | None = None) -> Task:
    """The state after a handler returned ``output``: Cancelled when a cancellation was
    requested and the handler returned ``None`` (it honoured the request), else
    Completed."""
    if task.cancel_requested and output is None and output_ref is None:
        return cancelled(task, now, "cancelled on request")
    return completed(task, now, output, output_ref)


# ---------------------------------------------------------------- decisions
class ClaimVerdict(enum.Enum):
    """What a worker may do with the task behind a due ready marker."""

    #: claim it (Pending and due, or Running with a lapsed lease and attempts left)
    CLAIM = "claim"
    #: Running with a lapsed lease and no attempts left: write Failed
    FAIL_EXHAUSTED = "fail_exhausted"
    #: Pending but not due yet (the marker is early)
    NOT_DUE = "not_due"
    #: Running under a live lease
    LEASED = "leased"
    #: already final: the marker is a leftover
    FINAL = "final"
    #: its timeout does not fit the time this worker has left (serverless)
    TOO_LONG = "too_long"
    #: Pending past its ``expires_at``: write Expired, never run it
    EXPIRE = "expire"


@dataclass(frozen=True, slots=True)
class ClaimDecision:
    """A :class:`ClaimVerdict` and, when the task is not claimed, when the marker is
    worth looking at again (``None``: not by this worker)."""

    verdict: ClaimVerdict
    retry_at: datetime | None = None


#: the longest a Lambda invocation can run; a too-long task is looked at again after it
_LAMBDA_MAX = timedelta(minutes=15)


def decide_claim(task: Task, now: datetime, max_timeout_seconds: float | None = None) -> ClaimDecision:
    """May the task be claimed at ``now`` by a worker that can give a handler at most
    ``max_timeout_seconds`` (``None`` = no limit)?"""
    if task.status.is_final:
        return ClaimDecision(ClaimVerdict.FINAL)
    if task.status == TaskStatus.Pending and task.expires_at is not None and task.expires_at <= now:
        return ClaimDecision(ClaimVerdict.EXPIRE)
    if task.status == TaskStatus.Pending and task.available_at > now:
        return ClaimDecision(ClaimVerdict.NOT_DUE, task.available_at)
    if task.status == TaskStatus.Running:
        if task.lease_expires_at is not None and task.lease_expires_at > now:
            return ClaimDecision(ClaimVerdict.LEASED, task.lease_expires_at)
        if task.attempt >= task.max_attempts:
            return ClaimDecision(ClaimVerdict.FAIL_EXHAUSTED)
    if max_timeout_seconds is not None and task.timeout_seconds > max_timeout_seconds:
        return ClaimDecision(ClaimVerdict.TOO_LONG, now + _LAMBDA_MAX)
    return ClaimDecision(ClaimVerdict.CLAIM)


class NextStep(enum.Enum):
    """What follows a failed or expired attempt."""

    RETRY = "retry"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class AfterFailure:
    """:class:`NextStep` and, for a retry, when the task is claimable again."""

    step: NextStep
    available_at: datetime | None = None


def after_failure(task: Task, retryable: bool, now: datetime, rng: random.Random | None = None) -> AfterFailure:
    """A handler's attempt failed: retry after the retry policy's backoff while
    ``retryable`` and attempts are left, else fail."""
    if retryable and task.attempt < task.max_attempts:
        delay_ms = task.policy.delay_ms(task.attempt, rng)
        return AfterFailure(NextStep.RETRY, now + timedelta(milliseconds=delay_ms))
    return AfterFailure(NextStep.FAIL)


def after_expired_lease(task: Task) -> AfterFailure:
    """An attempt's lease lapsed (its worker stopped): retry at once, keeping the
    task's place in the ready order (its ``available_at``), while attempts are left;
    else fail."""
    if task.attempt < task.max_attempts:
        return AfterFailure(NextStep.RETRY, task.available_at)
    return AfterFailure(NextStep.FAIL)


def expired_lease_error(task: Task) -> str:
    """The ``last_error`` text of an attempt whose lease lapsed."""
    return f"lease of attempt {task.attempt} expired (worker {task.worker_id} stopped)"


def is_lease_lapsed(task: Task, now: datetime) -> bool:
    """True for a Running task whose lease ended at or before ``now``."""
    return task.status == TaskStatus.Running and (task.lease_expires_at is None or task.lease_expires_at <= now)
