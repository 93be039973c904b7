"""The long-lived worker: polls its shards, claims tasks, runs handlers concurrently."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import signal
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Callable, Sequence

from . import _validate as v
from .errors import LeaseLost, PermanentError, RetryableError, StorageError, ValidationError
from .monitor import Monitor
from ._time import to_ms
from .queue import Lease, Queue, ReadyMarker
from .storage.base import ObjectInfo

log = logging.getLogger("buquet.worker")

Handler = Callable[[Any], Any]
_MAX_PAGES = 10
#: unclaimed candidates of a LIST are claimed from for this long before listing again
_LEFTOVER_SECONDS = 1.0


@dataclass
class WorkerRunOptions:
    """How :meth:`Worker.run` behaves.

    Attributes:
        poll_interval_ms: pause after a poll that found nothing, milliseconds; it
            doubles after each further empty poll, up to ``max_poll_interval_ms``
            (adaptive idle backoff), and drops back when work turns up.
        with_scheduler: also fire due cron schedules (:class:`~buquet.Scheduler`) in this
            process; any number of processes may do so, each slot still fires once.
        scheduler_interval_seconds: longest pause between scheduler ticks (it also
            wakes at the next due slot).
        with_monitor: also run lease recovery (:class:`~buquet.Monitor`) for this
            worker's shards, every ``monitor_interval_seconds``.
        max_concurrency: tasks in flight at once in this worker (≥ 1).
        max_poll_interval_ms: cap of the idle backoff, milliseconds.
        lease_seconds: visibility timeout of a claim. The worker renews it every
            ``lease_seconds / 3`` while the handler runs; if the worker dies, the task
            can be claimed again once it lapses.
        shutdown_grace_seconds: on stop (SIGTERM/SIGINT or :meth:`Worker.stop`), how
            long in-flight handlers may still run before they are cancelled and their
            tasks released back to Pending (not counted as an attempt).
        monitor_interval_seconds: period of the built-in monitor.
        handle_signals: install SIGTERM/SIGINT handlers (main thread only).
        max_tasks: stop after finishing this many tasks (``None`` = no limit).
        exit_when_idle: stop once a poll of every shard finds nothing and no task is
            in flight (batch jobs, tests).
        idle_horizon_ms: with ``exit_when_idle``, tasks of a handled type coming due
            within this many milliseconds keep the worker polling. Clients estimate the
            store's clock from 1-second ``Date`` headers, so two processes can disagree
            by up to a second about whether a just-submitted task is due yet.
        delete_flush_ms: index deletions are batched into one DeleteObjects request per
            this many milliseconds (at most 1,000 keys each).
    """

    poll_interval_ms: int = 500
    with_monitor: bool = True
    max_concurrency: int = 8
    max_poll_interval_ms: int = 5000
    lease_seconds: float = 30.0
    shutdown_grace_seconds: float = 30.0
    monitor_interval_seconds: float = 10.0
    handle_signals: bool = True
    max_tasks: int | None = None
    exit_when_idle: bool = False
    delete_flush_ms: int = 100
    idle_horizon_ms: int = 2000
    with_scheduler: bool = False
    scheduler_interval_seconds: float = 10.0

    def validate(self) -> None:
        """Raise ValidationError naming the first bad field."""
        v.int_in_range(self.poll_interval_ms, "poll_interval_ms", 1, 3_600_000)
        v.int_in_range(self.max_poll_interval_ms, "max_poll_interval_ms", self.poll_interval_ms, 3_600_000)
        v.int_in_range(self.max_concurrency, "max_concurrency", 1, 10_000)
        v.int_in_range(self.delete_flush_ms, "delete_flush_ms", 0, 60_000)
        v.int_in_range(self.idle_horizon_ms, "idle_horizon_ms", 0, 3_600_000)
        for name in ("lease_seconds", "shutdown_grace_seconds", "monitor_interval_seconds", "scheduler_interval_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValidationError(name, f"must be a non-negative number, got {value!r}")
        if self.lease_seconds < 1:
            raise ValidationError("lease_seconds", "must be at least 1 second")
        if self.max_tasks is not None:
            v.int_in_range(self.max_tasks, "max_tasks", 1, 10**12)


class _DeleteBatcher:
    """Collects index keys to delete and sends them in DeleteObjects batches."""

    def __init__(self, queue: Queue, flush_ms: int) -> None:
        self._queue = queue
        self._flush_s = flush_ms / 1000
        self._keys: list[str] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="buquet-deleter")

    def add(self, keys: Sequence[str]) -> None:
        if keys:
            self._keys.extend(keys)
            self._wake.set()

    async def flush(self) -> None:
        keys, self._keys = self._keys, []
        if keys:
            try:
                await self._queue.store.delete_many(keys)
            except StorageError as exc:
                log.warning("deleting %d index entries failed (they are cleaned up later): %s", len(keys), exc)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._flush_s:
                await asyncio.sleep(self._flush_s)
            await self.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


class Worker:
    """Runs task handlers for some shards of a queue.

    Args:
        queue: the :class:`~buquet.Queue`.
        worker_id: a name for this worker in task records and logs (1–128 of
            ``[A-Za-z0-9_.-]``).
        shards: the shard names to poll, e.g. ``["0", "1", "2", "3"]`` (see
            :attr:`Queue.shards`).

    Raises:
        ValidationError: bad worker_id or shards unknown to the bucket.

    Handler semantics: the handler gets the task's ``input`` and returns a JSON value
    (the task's ``output``). Raising :class:`RetryableError` retries with the task's
    retry policy; :class:`PermanentError` fails the task at once; **any other
    exception is retried like RetryableError** (as SQS, Temporal and SAQ do: most
    unexpected errors are transient), with ``Type: message`` in ``last_error``. A
    handler running past the task's ``timeout_seconds`` is cancelled and the attempt
    counts as a retryable failure. A result that is not JSON fails the task.
    """

    def __init__(self, queue: Queue, worker_id: str, shards: Sequence[str]) -> None:
        self.queue = queue
        self.worker_id = v.name(worker_id, "worker_id")
        self.shards = queue.check_shards(shards)
        self._handlers: dict[str, Handler] = {}
        self._stop = asyncio.Event()
        self._stop_requested = False
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._skip: dict[str, datetime] = {}
        self._finished = 0
        self._rng = random.Random()
        #: counters: claimed, completed, retried, failed, lease_lost, claim_conflicts, too_long
        self.stats: dict[str, int] = {}
        # run_once (serverless) state: remaining-time function, margin, keys to try first
        self._remaining: Callable[[], float] | None = None
        self._margin_seconds = 0.0
        self._initial: list[ReadyMarker] = []
        self._scan_cursor: dict[str, str | None] = {}
        self._near_due = False
        self._leftover: list[ReadyMarker] = []  # unclaimed candidates of the last LIST
        self._leftover_at = 0.0
        self._skip_pruned_at = 0.0

    # ---------------------------------------------------------------- handlers
    def task(self, task_type: str) -> Callable[[Handler], Handler]:
        """Decorator registering a handler (async or plain function) for a task type.

        Plain functions run in a thread so they do not block the event loop.

        Raises:
            ValidationError: bad task type, or a handler already registered for it.
        """
        v.task_type(task_type)

        def register(fn: Handler) -> Handler:
            if not callable(fn):
                raise ValidationError("handler", "must be callable")
            if task_type in self._handlers:
                raise ValidationError("task_type", f"a handler for {task_type!r} is already registered")
            self._handlers[task_type] = fn
            return fn

        return register

    @property
    def task_types(self) -> list[str]:
        """Task types this worker has handlers for (it never claims others)."""
        return sorted(self._handlers)

    def stop(self) -> None:
        """Ask :meth:`run` to stop: no new claims; in-flight tasks get the grace period.
        Safe to call from signal handlers and other threads of the same loop."""
        self._stop_requested = True
        self._stop.set()

    def _count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    # -------------------------------------------------------------------- run
    async def run(self, options: WorkerRunOptions | None = None) -> None:
        """Poll, claim and run tasks until stopped (see :class:`WorkerRunOptions`).

        Raises:
            ValidationError: bad options, or no handler registered.
        """
        opts = options or WorkerRunOptions()
        opts.validate()
        if not self._handlers:
            raise ValidationError("handlers", "register at least one handler with @worker.task(...)")
        if not self._stop_requested:
            self._stop.clear()
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        if opts.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.stop)
                    installed.append(sig)
        deleter = _DeleteBatcher(self.queue, opts.delete_flush_ms)
        deleter.start()
        monitor_task = None
        if opts.with_monitor:
            monitor = Monitor(self.queue, self.shards)
            monitor_task = asyncio.create_task(
                monitor.run(opts.monitor_interval_seconds, self._stop), name="buquet-monitor"
            )
        if opts.with_scheduler:
            from .scheduler import Scheduler

            scheduler_task = asyncio.create_task(
                Scheduler(self.queue).run(opts.scheduler_interval_seconds, self._stop), name="buquet-scheduler"
            )
        else:
            scheduler_task = None
        log.info("worker %s: shards %s, task types %s", self.worker_id, self.shards, self.task_types)
        try:
            await self._poll_loop(opts, deleter)
        finally:
            self._stop.set()
            await self._drain(opts, deleter)
            for background in (monitor_task, scheduler_task):
                if background is not None:
                    background.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await background
            await deleter.close()
            for sig in installed:
                loop.remove_signal_handler(sig)
            log.info("worker %s stopped: %s", self.worker_id, self.stats)

    async def run_once(
        self,
        keys: Sequence[str] = (),
        *,
        remaining_seconds: Callable[[], float],
        safety_margin_seconds: float = 10.0,
        options: WorkerRunOptions | None = None,
    ) -> dict[str, int]:
        """Serverless entry point: run what there is while time is left, then return.

        The tasks behind ``keys`` (ready-marker keys from S3 event notifications,
        already URL-decoded) are tried first; then the worker polls its shards like
        :meth:`run` until a poll finds nothing and nothing is in flight. A task is only
        started if its ``timeout_seconds`` fits in ``remaining_seconds() -
        safety_margin_seconds``; longer ones are left for a later invocation. Keys that
        are not ready markers of this worker's shards, duplicates, and markers whose
        task already moved on are ignored, so duplicate and late events are harmless.

        Args:
            keys: object keys from the event.
            remaining_seconds: returns the seconds left in the invocation (e.g.
                ``lambda: context.get_remaining_time_in_millis() / 1000``).
            safety_margin_seconds: time kept free for recording outcomes.
            options: as for :meth:`run`; ``exit_when_idle`` is forced on, signals and
                the built-in monitor off.

        Returns:
            The counters of this call (claimed, completed, retried, failed, ...).
        """
        opts = replace(options or WorkerRunOptions(), exit_when_idle=True, handle_signals=False, with_monitor=False)
        layout = self.queue.layout
        now = await self.queue.time()
        markers: list[ReadyMarker] = []
        for key in dict.fromkeys(keys):
            m = layout.parse_ready(ObjectInfo(key, "", 0, now)) if key.startswith(layout.prefix + "ready/") else None
            if m is not None and m.shard in self.shards:
                markers.append(m)
        before = dict(self.stats)
        self._remaining, self._margin_seconds, self._initial = remaining_seconds, safety_margin_seconds, markers
        self._stop_requested = False
        try:
            await self.run(opts)
        finally:
            self._remaining, self._initial = None, []
        return {k: n - before.get(k, 0) for k, n in self.stats.items() if n - before.get(k, 0)}

    def _time_left(self) -> float | None:
        """Seconds a new task may take (serverless), or None without a deadline."""
        if self._remaining is None:
            return None
        return self._remaining() - self._margin_seconds

    async def _poll_loop(self, opts: WorkerRunOptions, deleter: _DeleteBatcher) -> None:
        interval_ms = opts.poll_interval_ms
        shard_turn = 0
        while not self._stop.is_set():
            time_left = self._time_left()
            if time_left is not None and time_left < 1:
                return
            if opts.max_tasks is not None and self._finished + len(self._inflight) >= opts.max_tasks:
                if not self._inflight:
                    return
                await self._wait_inflight_or_stop()
                continue
            free = opts.max_concurrency - len(self._inflight)
            if free <= 0:
                await self._wait_inflight_or_stop()
                continue
            if opts.max_tasks is not None:
                free = min(free, opts.max_tasks - self._finished - len(self._inflight))
            shards = self.shards[shard_turn:] + self.shards[:shard_turn]
            shard_turn = (shard_turn + 1) % len(self.shards)
            initial_round = bool(self._initial)
            self._near_due = False
            try:
                started = await self._poll_once(shards, free, opts, deleter)
            except StorageError as exc:
                log.warning("worker %s: poll failed: %s", self.worker_id, exc)
                started = 0
            if started or initial_round:
                interval_ms = opts.poll_interval_ms
                continue
            scan_complete = not any(self._scan_cursor.values())
            if opts.exit_when_idle and not self._inflight and not self._near_due and scan_complete:
                return
            if await self._sleep_or_wake(interval_ms / 1000):
                interval_ms = min(opts.max_poll_interval_ms, interval_ms * 2)
            else:
                interval_ms = opts.poll_interval_ms  # a slot came free: poll at the base rate

    async def _wait_inflight_or_stop(self) -> None:
        stop_wait = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([stop_wait, *self._inflight.values()], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()

    async def _sleep_or_wake(self, seconds: float) -> bool:
        """Sleep, but wake early on stop or when an in-flight task finishes. Returns
        True when the whole pause elapsed (the worker is idle)."""
        waiters = [asyncio.ensure_future(self._stop.wait())]
        try:
            done, _ = await asyncio.wait(
                [*waiters, *self._inflight.values()], timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for w in waiters:
                w.cancel()
        return not done

    async def _poll_once(
        self, shards: list[str], free: int, opts: WorkerRunOptions, deleter: _DeleteBatcher
    ) -> int:
        now = await self.queue.time()
        loop_now = asyncio.get_running_loop().time()
        if loop_now - self._skip_pruned_at >= 1.0:
            self._skip = {k: until for k, until in self._skip.items() if until > now}
            self._skip_pruned_at = loop_now
        if self._initial:
            candidates = [m for m in self._initial if m.task_type in self._handlers and m.due_ms <= to_ms(now)]
            self._initial = []
        elif self._leftover and loop_now - self._leftover_at < _LEFTOVER_SECONDS:
            # claim from what a LIST returned moments ago instead of listing again
            candidates = [m for m in self._leftover if m.task_id not in self._inflight and m.key not in self._skip]
            self._leftover = []
            if not candidates:
                return await self._poll_once(shards, free, opts, deleter)
        else:
            self._leftover = []
            per_shard = await asyncio.gather(*(self._candidates(shard, now, free, opts.idle_horizon_ms if opts.exit_when_idle else 0) for shard in shards))
            candidates = [m for found in per_shard for m in found]
            self._leftover_at = loop_now
        if not candidates:
            return 0
        # Spread racing workers over the due tasks: workers listing the same shard see
        # the same keys in the same order, so each takes them in its own random order.
        self._rng.shuffle(candidates)
        started = 0
        try:
            while candidates and started < free and not self._stop_requested:
                batch, candidates = candidates[: free - started], candidates[free - started :]
                started += await self._claim_batch(batch, now, opts, deleter)
        finally:
            self._leftover = candidates  # for the next free slots, if they come soon
        return started

    async def _claim_batch(
        self, batch: list[ReadyMarker], now: datetime, opts: WorkerRunOptions, deleter: _DeleteBatcher
    ) -> int:
        """Try to claim each marker of ``batch`` concurrently; start the won tasks."""
        started = 0
        seen: set[str] = set()
        batch = [m for m in batch if not (m.task_id in seen or seen.add(m.task_id))]
        time_left = self._time_left()
        results = await asyncio.gather(
            *(self.queue._claim(m, self.worker_id, opts.lease_seconds, now, time_left) for m in batch),
            return_exceptions=True,
        )
        for marker, result in zip(batch, results):
            if isinstance(result, Lease):
                self._count("claimed")
                self._start(result, opts, deleter)
                started += 1
            elif isinstance(result, BaseException):
                log.warning("task %s: claim failed: %s", marker.task_id, result)
                self._skip[marker.key] = now + timedelta(seconds=1)
            else:
                reason, until = result
                if reason == "lost-race":
                    self._count("claim_conflicts")
                elif reason == "too-long":
                    self._count("too_long")  # its timeout does not fit this invocation
                if until is not None:
                    self._skip[marker.key] = until
        return started

    async def _candidates(self, shard: str, now: datetime, free: int, horizon_ms: int) -> list[ReadyMarker]:
        """Due markers of one shard this worker could claim (at most ``_MAX_PAGES``
        LISTs). Markers it must pass over (in flight, other task types, recently seen)
        cannot starve the work behind them: when whole pages hold nothing for it, the
        scan goes on from a per-shard cursor at the next poll, and wraps to the head of
        the index once it reaches the end of the due markers. Sets ``_near_due`` when a
        marker of a handled type comes due within ``horizon_ms``."""
        page_size = max(100, 4 * free)
        now_ms = to_ms(now)
        start_after = self._scan_cursor.get(shard)
        found: list[ReadyMarker] = []
        for _ in range(_MAX_PAGES):
            page_start = start_after
            page = await self.queue._due_markers(
                shard, now + timedelta(milliseconds=horizon_ms), page_size, start_after
            )
            due = [m for m in page if m.due_ms <= now_ms]
            if any(m.task_type in self._handlers for m in page[len(due):]):
                self._near_due = True
            for m in due:
                if m.task_type in self._handlers and m.task_id not in self._inflight and m.key not in self._skip:
                    found.append(m)
            if found:
                self._scan_cursor[shard] = page_start
                return found
            if len(page) < page_size or len(due) < len(page):
                self._scan_cursor[shard] = None  # end of the due markers: next scan from the head
                return found
            start_after = page[-1].key
            page_size = 1000
        self._scan_cursor[shard] = start_after  # resume here at the next poll
        return found

    def _start(self, lease: Lease, opts: WorkerRunOptions, deleter: _DeleteBatcher) -> None:
        task_id = lease.task.id
        t = asyncio.create_task(self._execute(lease, opts, deleter), name=f"buquet-task-{task_id}")
        self._inflight[task_id] = t

        def done(_: asyncio.Task[None]) -> None:
            self._inflight.pop(task_id, None)
            self._finished += 1

        t.add_done_callback(done)

    # ------------------------------------------------------------- one attempt
    async def _execute(self, lease: Lease, opts: WorkerRunOptions, deleter: _DeleteBatcher) -> None:
        task = lease.task
        handler = self._handlers[task.task_type]
        log.info("task %s (%s): attempt %d started", task.id, task.task_type, task.attempt)
        heartbeat = asyncio.create_task(self._heartbeat(lease, opts, deleter))
        call = asyncio.ensure_future(self._call(handler, task.input))
        outcome: tuple[str, Any] | None = None
        try:
            done, _ = await asyncio.wait({call, heartbeat}, timeout=task.timeout_seconds, return_when=asyncio.FIRST_COMPLETED)
            if call in done:
                if call.cancelled():  # the handler cancelled itself
                    outcome = ("error", asyncio.CancelledError())
                else:
                    exc = call.exception()
                    outcome = ("error", exc) if exc is not None else ("ok", call.result())
            elif heartbeat in done:
                outcome = ("lost", heartbeat.exception() or LeaseLost("lease lost"))
            else:
                outcome = ("timeout", None)
        except asyncio.CancelledError:
            # worker shutdown past the grace period: give the task back
            call.cancel()
            heartbeat.cancel()
            with contextlib.suppress(LeaseLost, StorageError):
                deleter.add(await self.queue._release(lease, f"released: worker {self.worker_id} shut down"))
                log.info("task %s: released at shutdown", task.id)
            raise
        finally:
            heartbeat.cancel()
            if not call.done():
                call.cancel()
        await self._record(lease, outcome, deleter)

    async def _call(self, handler: Handler, payload: Any) -> Any:
        if inspect.iscoroutinefunction(handler):
            return await handler(payload)
        result = await _in_daemon_thread(handler, payload)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _heartbeat(self, lease: Lease, opts: WorkerRunOptions, deleter: _DeleteBatcher) -> None:
        period = opts.lease_seconds / 3
        while True:
            await asyncio.sleep(period)
            for attempt in range(3):
                try:
                    deleter.add(await self.queue._extend(lease, opts.lease_seconds))
                    break
                except StorageError as exc:
                    if attempt == 2:
                        log.warning("task %s: heartbeat failed: %s", lease.task.id, exc)
                    await asyncio.sleep(0.2 * (attempt + 1))

    async def _record(self, lease: Lease, outcome: tuple[str, Any] | None, deleter: _DeleteBatcher) -> None:
        task = lease.task
        kind, value = outcome if outcome is not None else ("timeout", None)
        if kind == "lost":
            self._count("lease_lost")
            log.error("task %s: %s; result discarded", task.id, value)
            return
        for attempt in range(4):
            try:
                if kind == "ok":
                    try:
                        v.json_value(value, "output")
                    except ValidationError as exc:
                        keys = await self.queue._fail(lease, f"result is not JSON: {exc}", retryable=False)
                        self._count("failed")
                        log.error("task %s: handler result is not JSON: %s", task.id, exc)
                    else:
                        keys = await self.queue._complete(lease, value)
                        self._count("completed")
                        log.info("task %s: completed", task.id)
                else:
                    error, retryable = _describe(kind, value, task.timeout_seconds)
                    keys = await self.queue._fail(lease, error, retryable=retryable)
                    status = lease.task.status.value
                    self._count("retried" if status == "pending" else "failed")
                    log.warning("task %s: attempt %d failed (%s); now %s", task.id, task.attempt, error, status)
                deleter.add(keys)
                # their deletion is batched: don't mistake them for work meanwhile
                forget_at = lease.task.updated_at + timedelta(seconds=30)
                for key in keys:
                    self._skip[key] = forget_at
                return
            except LeaseLost as exc:
                self._count("lease_lost")
                if attempt:
                    log.warning("task %s: %s (an earlier try of this write may have landed)", task.id, exc)
                else:
                    log.error("task %s: %s", task.id, exc)
                return
            except StorageError as exc:
                if attempt == 3:
                    log.error("task %s: recording the outcome failed, the lease will lapse: %s", task.id, exc)
                    return
                await asyncio.sleep(0.2 * 2**attempt)

    async def _drain(self, opts: WorkerRunOptions, deleter: _DeleteBatcher) -> None:
        if not self._inflight:
            return
        pending = list(self._inflight.values())
        log.info("worker %s: waiting up to %.0fs for %d in-flight tasks", self.worker_id, opts.shutdown_grace_seconds, len(pending))
        _, still = await asyncio.wait(pending, timeout=opts.shutdown_grace_seconds)
        for t in still:
            t.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)


def _describe(kind: str, value: Any, timeout_seconds: int) -> tuple[str, bool]:
    """(last_error text, retryable?) for a failed attempt."""
    if kind == "timeout":
        return f"timed out after {timeout_seconds}s", True
    if isinstance(value, PermanentError):
        return f"PermanentError: {value}", False
    if isinstance(value, RetryableError):
        return f"RetryableError: {value}", True
    if isinstance(value, asyncio.CancelledError):
        return "cancelled", True
    return f"{type(value).__name__}: {value}", True


def _in_daemon_thread(fn: Callable[[Any], Any], arg: Any) -> "asyncio.Future[Any]":
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
            outcome = (True, fn(arg))
        except BaseException as exc:  # delivered to the awaiting task
            outcome = (False, exc)
        try:
            loop.call_soon_threadsafe(deliver, *outcome)
        except RuntimeError:
            pass  # the loop is gone: nobody is waiting any more

    threading.Thread(target=target, name="buquet-handler", daemon=True).start()
    return future
