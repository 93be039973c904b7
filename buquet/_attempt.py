"""Running one attempt of a task: the handler, its heartbeat, and recording the outcome.

Used by :class:`~buquet.Worker`; every stored change goes through
:class:`~buquet._tasks.TaskProtocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Awaitable, Callable

from . import _telemetry
from . import _transitions as tr
from . import _validate as v
from .config import PAYLOAD_THRESHOLD_BYTES
from .context import TaskContext, wants_context
from ._loops import DeleteBatcher
from ._tasks import Lease, TaskProtocol
from .errors import LeaseLost, PermanentError, RescheduleError, RetryableError, StorageError, ValidationError

log = logging.getLogger("buquet.worker")

Handler = Callable[[Any], Any]
#: tries of recording an outcome (each write already retries transient errors itself)
RECORD_ATTEMPTS = 3


class HandlerExit(Exception):
    """A handler raised ``SystemExit``/``KeyboardInterrupt``/``GeneratorExit``, or
    cancelled itself: a failed attempt like any other exception, never a crash of the
    worker. ``original`` is what it raised."""

    def __init__(self, original: BaseException) -> None:
        self.original = original
        super().__init__(tr.describe_exception(original))


class OutcomeKind(enum.Enum):
    """How an attempt ended."""

    RETURNED = "returned"  #: the handler returned a value
    RAISED = "raised"  #: the handler raised
    TIMED_OUT = "timed_out"  #: the handler ran past ``timeout_seconds``
    LEASE_LOST = "lease_lost"  #: the heartbeat found the lease taken over


@dataclass(frozen=True, slots=True)
class Outcome:
    """An attempt's end: its kind and the returned value or raised exception."""

    kind: OutcomeKind
    value: Any = None


def failure_of(outcome: Outcome, timeout_seconds: int) -> tuple[str, bool, str | None]:
    """``(last_error text, retryable?, traceback or None)`` of a failed attempt."""
    if outcome.kind == OutcomeKind.TIMED_OUT:
        return f"timed out after {timeout_seconds}s", True, None
    exc = outcome.value
    original = exc.original if isinstance(exc, HandlerExit) else exc
    text = tr.describe_exception(original)
    return text, not isinstance(original, PermanentError), tr.format_traceback(original)


async def call_handler(handler: Handler, payload: Any, ctx: TaskContext | None = None) -> Any:
    """Run ``handler(payload)`` — ``handler(payload, ctx)`` when ``ctx`` is given:
    coroutine functions in the loop, plain functions in a daemon thread. Exceptions
    that would otherwise tear down the event loop (``SystemExit``,
    ``KeyboardInterrupt``) and a handler's own cancellation come back as
    :class:`HandlerExit`; only a cancellation of this call itself propagates."""
    args = (payload,) if ctx is None else (payload, ctx)
    try:
        if inspect.iscoroutinefunction(handler):
            return await handler(*args)
        result = await _in_daemon_thread(handler, *args)
        if inspect.isawaitable(result):
            result = await result
        return result
    except asyncio.CancelledError as exc:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the worker cancelled this call (timeout, shutdown)
        raise HandlerExit(exc) from exc
    except (SystemExit, KeyboardInterrupt, GeneratorExit) as exc:
        raise HandlerExit(exc) from exc


class Hooks:
    """The worker's lifecycle hooks (one each; sync or async). Their exceptions are
    logged and swallowed."""

    def __init__(self) -> None:
        self.on_startup: Callable[[], Any] | None = None
        self.on_shutdown: Callable[[], Any] | None = None
        self.on_success: Callable[[Any], Any] | None = None
        self.on_error: Callable[[Any, str], Any] | None = None

    async def _call(self, name: str, fn: Callable[..., Any] | None, *args: Any) -> None:
        if fn is None:
            return
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:  # noqa: BLE001 - a hook never breaks the worker
            log.exception("%s hook raised; ignored", name)

    async def startup(self) -> None:
        """Call ``on_startup()``."""
        await self._call("on_startup", self.on_startup)

    async def shutdown(self) -> None:
        """Call ``on_shutdown()``."""
        await self._call("on_shutdown", self.on_shutdown)

    async def success(self, task: Any) -> None:
        """Call ``on_success(task)`` (the claimed snapshot) once the completion is stored."""
        await self._call("on_success", self.on_success, task)

    async def error(self, task: Any, error: str) -> None:
        """Call ``on_error(task, error)`` before a failed attempt is written."""
        await self._call("on_error", self.on_error, task, error)


class AttemptRunner:
    """Runs attempts for one worker: handler + heartbeat, then records the outcome.

    Args:
        protocol: the task protocol.
        worker_id: the worker's name (logs).
        handlers: task type → handler.
        deleter: batches index deletions.
        count: ``count(name)`` increments the worker's counters.
        skip: the worker's skip map (key → until), so keys whose deletion is batched
            are not mistaken for work meanwhile.
    """

    def __init__(
        self, protocol: TaskProtocol, worker_id: str, handlers: dict[str, Handler], deleter: DeleteBatcher,
        count: Callable[[str], None], skip: dict[str, Any], hooks: "Hooks | None" = None,
        check_input: Callable[[str, Any], Awaitable[None]] | None = None,
    ) -> None:
        self.protocol = protocol
        self.worker_id = worker_id
        self.handlers = handlers
        self.deleter = deleter
        self.count = count
        self.skip = skip
        self.hooks = hooks or Hooks()
        self.check_input = check_input

    async def _prepare(self, lease: Lease) -> tuple[Any, Outcome | None]:
        """The handler's input (loaded from its payload object when offloaded) and,
        when the attempt must not run, its outcome (a schema rejection or a lost
        payload: a permanent failure)."""
        task = lease.task
        payload = task.input
        try:
            if task.input_ref is not None:
                payload = await self.protocol.payloads.read_payload(task.input_ref)
            if self.check_input is not None:
                await self.check_input(task.task_type, payload)
        except ValidationError as exc:  # SchemaValidationError included
            return payload, Outcome(OutcomeKind.RAISED, PermanentError(str(exc)))
        except StorageError as exc:
            return payload, Outcome(OutcomeKind.RAISED, exc)  # retryable: the store may come back
        return payload, None

    async def execute(self, lease: Lease, lease_seconds: float) -> None:
        """Run the task's handler under ``lease``, renewing it every third of
        ``lease_seconds``, and record the outcome. When cancelled (worker shutdown
        past the grace period) it releases the task and re-raises."""
        task = lease.task
        handler = self.handlers[task.task_type]
        log.info("task %s (%s): attempt %d started", task.id, task.task_type, task.attempt)
        stop_beats = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(lease, lease_seconds, stop_beats))
        payload, refused = await self._prepare(lease)
        if refused is not None:
            await self._end_heartbeat(heartbeat, stop_beats)
            await self.record(lease, refused)
            return
        ctx = TaskContext(self.protocol, lease) if wants_context(handler) else None
        started = _telemetry.now()
        call = asyncio.ensure_future(call_handler(handler, payload, ctx))
        try:
            done, _ = await asyncio.wait({call, heartbeat}, timeout=task.timeout_seconds,
                                         return_when=asyncio.FIRST_COMPLETED)
            if call in done:
                exc = call.exception()
                outcome = Outcome(OutcomeKind.RAISED, exc) if exc is not None else Outcome(OutcomeKind.RETURNED, call.result())
            elif heartbeat in done:
                outcome = Outcome(OutcomeKind.LEASE_LOST, heartbeat.exception() or LeaseLost("lease lost"))
            else:
                outcome = Outcome(OutcomeKind.TIMED_OUT)
        except asyncio.CancelledError:
            call.cancel()
            await self._end_heartbeat(heartbeat, stop_beats)
            with contextlib.suppress(LeaseLost, StorageError):
                self.deleter.add(await self.protocol.release(lease, f"released: worker {self.worker_id} shut down"))
                log.info("task %s: released at shutdown", task.id)
            raise
        finally:
            if not call.done():
                call.cancel()
        # Let a heartbeat write in flight finish (never cancel it mid-write: its ETag is
        # what the outcome's write must be conditioned on).
        await self._end_heartbeat(heartbeat, stop_beats)
        _telemetry.observe_since("buquet.task.duration_seconds", started, task_type=task.task_type)
        await self.record(lease, outcome)

    @staticmethod
    async def _end_heartbeat(heartbeat: "asyncio.Task[None]", stop: asyncio.Event) -> None:
        stop.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.shield(heartbeat)

    async def _heartbeat(self, lease: Lease, lease_seconds: float, stop: asyncio.Event) -> None:
        period = lease_seconds / 3
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=period)
            if stop.is_set():
                return
            for attempt in range(3):
                try:
                    self.deleter.add(await self.protocol.extend(lease, lease_seconds))
                    break
                except LeaseLost:
                    raise  # ends the attempt: another worker holds the task now
                except Exception as exc:  # noqa: BLE001 - the beat must go on
                    if attempt == 2:
                        log.warning("task %s: heartbeat failed: %s", lease.task.id, exc,
                                    exc_info=None if isinstance(exc, StorageError) else exc)
                    else:
                        await asyncio.sleep(0.2 * (attempt + 1))

    async def record(self, lease: Lease, outcome: Outcome) -> None:
        """Write the attempt's outcome: Completed, Pending for a retry, or Failed."""
        task = lease.task
        if outcome.kind == OutcomeKind.LEASE_LOST:
            self.count("lease_lost")
            log.error("task %s: %s; result discarded", task.id, outcome.value)
            return
        if outcome.kind == OutcomeKind.RAISED:
            exc = outcome.value
            shown = exc.original if isinstance(exc, HandlerExit) else exc
            if not isinstance(shown, (RetryableError, PermanentError, RescheduleError, StorageError)):
                log.error("task %s (%s): attempt %d raised", task.id, task.task_type, task.attempt, exc_info=shown)
        for attempt in range(RECORD_ATTEMPTS):
            try:
                keys = await self._write_outcome(lease, outcome)
            except LeaseLost as exc:
                self.count("lease_lost")
                log.error("task %s: %s", task.id, exc)
                return
            except StorageError as exc:
                if attempt == RECORD_ATTEMPTS - 1:
                    log.error("task %s: recording the outcome failed, the lease will lapse: %s", task.id, exc)
                    return
                await asyncio.sleep(0.5 * 2**attempt)
                continue
            self.deleter.add(keys)
            forget_at = lease.task.updated_at + timedelta(seconds=30)
            for key in keys:
                self.skip[key] = forget_at
            return

    async def _write_outcome(self, lease: Lease, outcome: Outcome) -> list[str]:
        task = lease.task
        if outcome.kind == OutcomeKind.RETURNED:
            try:
                encoded = v.json_value(outcome.value, "output")
            except ValidationError as exc:
                error = f"Failed to convert output: {exc}"
                await self.hooks.error(task, error)
                keys = await self.protocol.fail(lease, error, retryable=False)
                self.count("failed")
                _telemetry.attempt_failed(task.task_type, "permanent", final=True)
                log.error("task %s: handler result is not JSON: %s", task.id, exc)
                return keys
            output, output_ref = outcome.value, None
            if len(encoded) > PAYLOAD_THRESHOLD_BYTES:
                output, output_ref = None, await self.protocol.payloads.write_payload(task.id, "output", outcome.value)
            keys = await self.protocol.complete(lease, output, output_ref)
            status = lease.task.status.value
            self.count("completed" if status == "completed" else "cancelled")
            _telemetry.count("buquet.tasks.completed" if status == "completed" else "buquet.tasks.cancelled", task_type=task.task_type)
            log.info("task %s: %s", task.id, status)
            if status == "completed":
                await self.hooks.success(task)
            return keys
        if outcome.kind == OutcomeKind.RAISED and isinstance(outcome.value, RescheduleError):
            keys = await self.protocol.reschedule(lease, outcome.value.delay_seconds)
            status = lease.task.status.value
            self.count("rescheduled" if status == "pending" else "failed")
            _telemetry.rescheduled(task.task_type, outcome.value.delay_seconds, accepted=status == "pending")
            log.info("task %s: rescheduled in %ss; now %s", task.id, outcome.value.delay_seconds, status)
            return keys
        error, retryable, traceback = failure_of(outcome, task.timeout_seconds)
        await self.hooks.error(task, error)
        keys = await self.protocol.fail(lease, error, retryable=retryable, traceback=traceback)
        status = lease.task.status.value
        self.count("retried" if status == "pending" else "failed")
        _telemetry.attempt_failed(task.task_type, "timeout" if outcome.kind == OutcomeKind.TIMED_OUT else
                                  "retryable" if retryable else "permanent", final=status != "pending")
        log.warning("task %s: attempt %d failed (%s); now %s", task.id, task.attempt, error, status)
        return keys


def _in_daemon_thread(fn: Callable[..., Any], *args: Any) -> "asyncio.Future[Any]":
    """Run a plain handler in a daemon thread. Unlike the default executor, a daemon
    thread does not hold the process open at exit: a handler still running after a
    timeout or after the shutdown grace period cannot delay the worker's exit (its
    task was already given back)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def deliver(ok: bool, value: Any) -> None:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)

    def target() -> None:
        try:
            outcome = (True, fn(*args))
        except BaseException as exc:  # delivered to the awaiting task
            outcome = (False, exc)
        try:
            loop.call_soon_threadsafe(deliver, *outcome)
        except RuntimeError:
            pass  # the loop is gone: nobody is waiting any more

    threading.Thread(target=target, name="buquet-handler", daemon=True).start()
    return future
