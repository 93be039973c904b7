"""The long-lived worker: polls its shards, claims tasks, runs handlers concurrently.

The pieces: :mod:`buquet._poller` finds candidate ready markers, :class:`~buquet.
_tasks.TaskProtocol` claims them, :mod:`buquet._attempt` runs each attempt (handler,
heartbeat, outcome), :mod:`buquet._loops` runs the built-in monitor, scheduler and
index deleter. The same :class:`Worker` serves Lambda invocations through
:meth:`Worker.run_once`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import threading
from dataclasses import KW_ONLY, dataclass, replace
from datetime import timedelta
from typing import Any, Callable, Sequence

from . import _telemetry
from . import _validate as v
from . import config as cfg
from ._attempt import AttemptRunner, Handler, Hooks
from .keys import ReadyKey
from ._loops import DeleteBatcher, ErrorLog
from ._poller import Poller
from ._shard_leases import ShardLeaser
from ._registry import WorkerRegistration
from ._tasks import ClaimMissReason, Lease
from ._transitions import ClaimVerdict
from ._time import to_ms
from .errors import ValidationError
from .invocation import InvocationResult, run_invocation
from .monitor import Monitor
from .polling import PollingStrategy, ShardLeaseConfig
from .queue import Queue

log = logging.getLogger("buquet.worker")
_ONE_SECOND = timedelta(seconds=1)


@dataclass
class WorkerRunOptions:
    """How :meth:`Worker.run` behaves.

    The first fourteen fields are buquet 0.1.0's, in its positional order; the rest are
    keyword-only. Every attribute can be read and assigned.

    Attributes:
        polling: the pause between empty polls (:class:`~buquet.PollingStrategy`).
            ``None``: adaptive from ``poll_interval_ms`` up to ``max_poll_interval_ms``,
            doubling after each further empty poll (buquet 0.1.0 used a fixed 1,000 ms).
            After a poll that claimed work the worker polls again at once.
        poll_interval_ms: with ``polling=None``, the first pause after an empty poll,
            milliseconds.
        max_tasks: stop after finishing this many tasks (``None`` = no limit, ``0`` =
            return at once).
        heartbeat_interval_s: how often the worker refreshes its registration object
            (``workers/<worker_id>.json``, seen by ``buquet workers`` and the dashboard),
            seconds. One PUT per interval.
        with_monitor: also run lease recovery (:class:`~buquet.Monitor`) for this
            worker's shards.
        monitor_check_interval_s: period of the built-in monitor's lease-recovery
            check, seconds (buquet 0.1.0: 30).
        monitor_worker_health_threshold_s: a worker registration older than this many
            seconds counts as gone.
        monitor_sweep_interval_s: period of the monitor's task-object sweep (retention
            with ``retention_days``), seconds; ``0`` turns it off.
        monitor_sweep_page_size: task objects the sweep lists per shard per run.
        shard_lease_config: shard leasing (:class:`~buquet.ShardLeaseConfig`); when
            set it wins over the four ``shard_leasing_*`` fields below.
        shard_leasing_enabled: legacy form of ``shard_lease_config``: leasing on.
        shard_leasing_shards_per_worker: legacy: most shards one worker holds.
        shard_leasing_ttl_s: legacy: shard lease lifetime, seconds.
        shard_leasing_renewal_interval_s: legacy: renewal period, seconds.
        max_concurrency: tasks in flight at once in this worker (≥ 1).
        max_poll_interval_ms: with ``polling=None``, cap of the idle backoff, milliseconds.
        lease_seconds: visibility timeout of a claim. The worker renews it every
            ``lease_seconds / 3`` while the handler runs; if the worker dies, the task
            can be claimed again once it lapses.
        shutdown_grace_seconds: on stop (SIGTERM/SIGINT or :meth:`Worker.stop`), how
            long in-flight handlers may still run before they are cancelled and their
            tasks released back to Pending (not counted as an attempt).
        handle_signals: install SIGTERM/SIGINT handlers (main thread only).
        exit_when_idle: stop once a poll of every shard finds nothing and no task is
            in flight (batch jobs, tests).
        idle_horizon_ms: with ``exit_when_idle``, tasks of a handled type coming due
            within this many milliseconds keep the worker polling. Clients estimate the
            store's clock from 1-second ``Date`` headers, so two processes can disagree
            by up to a second about whether a just-submitted task is due yet.
        delete_flush_ms: index deletions are batched into one DeleteObjects request per
            this many milliseconds (at most 1,000 keys each).
        with_scheduler: also fire due cron schedules (:class:`~buquet.Scheduler`) in this
            process; any number of processes may do so, each slot still fires once.
        scheduler_interval_seconds: longest pause between scheduler ticks (it also
            wakes at the next due slot).
        retention_days: with ``with_monitor``, the built-in monitor deletes final tasks
            not changed for this many days (see :class:`~buquet.Monitor`); ``None``
            keeps them.
    """

    polling: PollingStrategy | None = None
    poll_interval_ms: int = cfg.DEFAULT_POLL_INTERVAL_MS
    max_tasks: int | None = None
    heartbeat_interval_s: float = cfg.DEFAULT_HEARTBEAT_INTERVAL_SECONDS
    with_monitor: bool = True
    monitor_check_interval_s: float = cfg.DEFAULT_MONITOR_INTERVAL_SECONDS
    monitor_worker_health_threshold_s: float = cfg.DEFAULT_WORKER_HEALTH_THRESHOLD_SECONDS
    monitor_sweep_interval_s: float = cfg.DEFAULT_SWEEP_INTERVAL_SECONDS
    monitor_sweep_page_size: int = cfg.DEFAULT_SWEEP_PAGE_SIZE
    shard_lease_config: ShardLeaseConfig | None = None
    shard_leasing_enabled: bool = False
    shard_leasing_shards_per_worker: int = cfg.DEFAULT_SHARDS_PER_WORKER
    shard_leasing_ttl_s: int = cfg.DEFAULT_SHARD_LEASE_TTL_SECONDS
    shard_leasing_renewal_interval_s: int = cfg.DEFAULT_SHARD_LEASE_RENEWAL_SECONDS
    _: KW_ONLY
    max_concurrency: int = cfg.DEFAULT_MAX_CONCURRENCY
    max_poll_interval_ms: int = cfg.DEFAULT_MAX_POLL_INTERVAL_MS
    lease_seconds: float = cfg.DEFAULT_LEASE_SECONDS
    shutdown_grace_seconds: float = cfg.DEFAULT_SHUTDOWN_GRACE_SECONDS
    handle_signals: bool = True
    exit_when_idle: bool = False
    delete_flush_ms: int = 100
    idle_horizon_ms: int = 2000
    with_scheduler: bool = False
    scheduler_interval_seconds: float = cfg.DEFAULT_SCHEDULER_INTERVAL_SECONDS
    retention_days: float | None = None

    def polling_strategy(self) -> PollingStrategy:
        """``polling``, or the adaptive default built from ``poll_interval_ms`` and
        ``max_poll_interval_ms``."""
        if self.polling is not None:
            return self.polling
        return PollingStrategy.adaptive(self.poll_interval_ms, max(self.max_poll_interval_ms, self.poll_interval_ms))

    def shard_leasing(self) -> ShardLeaseConfig:
        """``shard_lease_config``, or the one the legacy ``shard_leasing_*`` fields describe."""
        if self.shard_lease_config is not None:
            return self.shard_lease_config
        if not self.shard_leasing_enabled:
            return ShardLeaseConfig.disabled()
        return ShardLeaseConfig.custom(self.shard_leasing_shards_per_worker, self.shard_leasing_ttl_s,
                                       self.shard_leasing_renewal_interval_s)

    def validate(self) -> None:
        """Raise ValidationError naming the first bad field (NaN and ±inf are
        rejected for every number; shard leasing: zeros, or renewal ≥ TTL)."""
        if self.polling is not None and not isinstance(self.polling, PollingStrategy):
            raise ValidationError("polling", f"must be a PollingStrategy (PollingStrategy.fixed() or .adaptive()), "
                                  f"got {type(self.polling).__name__}")
        v.int_in_range(self.poll_interval_ms, "poll_interval_ms", 1, 3_600_000)
        v.int_in_range(self.max_poll_interval_ms, "max_poll_interval_ms", 1, 3_600_000)
        v.int_in_range(self.max_concurrency, "max_concurrency", 1, 10_000)
        v.int_in_range(self.delete_flush_ms, "delete_flush_ms", 0, 60_000)
        v.int_in_range(self.idle_horizon_ms, "idle_horizon_ms", 0, 3_600_000)
        v.int_in_range(self.monitor_sweep_page_size, "monitor_sweep_page_size", 1, 1000)
        cfg.finite_number(self.lease_seconds, "lease_seconds", 1, 12 * 3600)
        cfg.finite_number(self.shutdown_grace_seconds, "shutdown_grace_seconds", 0, 24 * 3600)
        cfg.finite_number(self.heartbeat_interval_s, "heartbeat_interval_s", 0.1, 24 * 3600)
        cfg.finite_number(self.monitor_check_interval_s, "monitor_check_interval_s", 0.01, 24 * 3600)
        cfg.finite_number(self.monitor_worker_health_threshold_s, "monitor_worker_health_threshold_s", 0.1, 7 * 24 * 3600)
        cfg.finite_number(self.monitor_sweep_interval_s, "monitor_sweep_interval_s", 0, 7 * 24 * 3600)
        cfg.finite_number(self.scheduler_interval_seconds, "scheduler_interval_seconds", 0.01, 24 * 3600)
        if self.max_tasks is not None:
            v.int_in_range(self.max_tasks, "max_tasks", 0, 10**12)
        if self.retention_days is not None:
            cfg.finite_number(self.retention_days, "retention_days", 0.001, 36500)
        if self.shard_lease_config is not None and not isinstance(self.shard_lease_config, ShardLeaseConfig):
            raise ValidationError("shard_lease_config", "must be a ShardLeaseConfig (ShardLeaseConfig.enabled(), "
                                  f".disabled() or .custom(...)), got {type(self.shard_lease_config).__name__}")
        self.shard_leasing().validate()


class _Companions:
    """The background loops of one :meth:`Worker.run`, started at once: the built-in
    monitor, shard leases, the scheduler and the worker's registration (each only when
    its option asks for it); :meth:`close` ends them after the drain."""

    def __init__(self, worker: Worker, opts: WorkerRunOptions, stop: asyncio.Event, *, register: bool) -> None:
        self.tasks: list[asyncio.Task[None]] = []
        self.lease_loop: asyncio.Task[None] | None = None
        self.monitor: Monitor | None = None
        leasing = opts.shard_leasing()
        if opts.with_monitor:
            self.monitor = Monitor(worker.queue, worker.shards, retention_days=opts.retention_days,
                                   sweep_interval_seconds=opts.monitor_sweep_interval_s,
                                   sweep_page_size=opts.monitor_sweep_page_size)
            if leasing.is_enabled:
                self.monitor.shards = []  # the held shards only, as leases are taken
            self._spawn(self.monitor.run(opts.monitor_check_interval_s, stop), "buquet-monitor")
        if leasing.is_enabled:
            leaser = ShardLeaser(worker.protocol.store, worker.protocol.layout, worker.protocol.time,
                                 worker.worker_id, worker.shards, leasing, leasing.lease_ttl_secs,
                                 worker.poll_shards, random.Random())
            self.lease_loop = asyncio.create_task(leaser.run(stop), name="buquet-shard-leases")
        if opts.with_scheduler:
            from .scheduler import Scheduler

            self._spawn(Scheduler(worker.queue).run(opts.scheduler_interval_seconds, stop), "buquet-scheduler")
        # workers/<id>.json for `buquet workers` and the dashboard; not for run_once (serverless)
        self.registration = WorkerRegistration(worker, opts.heartbeat_interval_s) if register else None
        if self.registration is not None:
            self._spawn(self.registration.run(stop), "buquet-registration")

    def _spawn(self, coro: Any, name: str) -> None:
        self.tasks.append(asyncio.create_task(coro, name=name))

    async def close(self) -> None:
        """After the stop: let the lease loop release its leases (≤ 10 s), cancel the
        other loops, delete the registration."""
        if self.lease_loop is not None:
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(self.lease_loop, timeout=10)
        for t in self.tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self.registration is not None:
            await self.registration.remove()


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
    unexpected errors are transient), with ``Type: message`` in ``last_error`` and the
    traceback in the attempt's history entry — ``SystemExit`` and
    ``KeyboardInterrupt`` included: a handler never stops the worker. A handler running
    past the task's ``timeout_seconds`` is cancelled and the attempt counts as a
    retryable failure. A result that is not JSON fails the task.
    """

    def __init__(self, queue: Queue, worker_id: str, shards: Sequence[str]) -> None:
        self.queue = queue
        self.protocol = queue.protocol
        self.worker_id = v.name(worker_id, "worker_id")
        self.shards = queue.check_shards(shards)
        self._handlers: dict[str, Handler] = {}
        self._stop = asyncio.Event()
        self._stop_requested = False
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._finished = 0
        self._rng = random.Random()
        #: counters: claimed, completed, retried, failed, lease_lost, claim_conflicts, too_long
        self.stats: dict[str, int] = {}
        self._poller = Poller(self.protocol, self.shards, self._handlers, self._rng)
        self._monitor: Monitor | None = None
        self._wake = asyncio.Event()  # set when the polled shards grow (shard leasing)
        self._poll_errors = ErrorLog(log, f"worker {self.worker_id}: poll")
        self._hooks = Hooks()
        # run_once (serverless): remaining-time function, margin, markers to try first
        self._remaining: Callable[[], float] | None = None
        self._margin_seconds = 0.0
        self._initial: list[ReadyKey] = []

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

    def registered_task_types(self) -> list[str]:
        """Task types this worker has handlers for, sorted (buquet 0.1.0's name)."""
        return self.task_types

    # ------------------------------------------------------------------- hooks
    # Decorators; each returns the function; one slot each (registering again
    # replaces); sync or async; exceptions are logged and swallowed.
    def on_startup(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """``fn()`` once per :meth:`run`, before the first poll."""
        self._hooks.on_startup = fn
        return fn

    def on_shutdown(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """``fn()`` when :meth:`run` ends, however it ends (stop, signal, error)."""
        self._hooks.on_shutdown = fn
        return fn

    def on_success(self, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``fn(task)`` after a handler succeeded and the completion is stored
        (``task``: the claimed snapshot, status Running)."""
        self._hooks.on_success = fn
        return fn

    def on_error(self, fn: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
        """``fn(task, error)`` after a handler failed (retryable or permanent), before
        the failure is written; not for reschedules. ``error`` is ``"Type: message"``."""
        self._hooks.on_error = fn
        return fn

    def stop(self) -> None:
        """Ask :meth:`run` to stop: no new claims; in-flight tasks get the grace period.
        Safe to call from signal handlers and other threads of the same loop."""
        self._stop_requested = True
        self._stop.set()

    def poll_shards(self, shards: list[str]) -> None:
        """Poll (and, with the built-in monitor, sweep) exactly ``shards`` from now on
        (called by shard leasing as leases are taken and lost; each must be one of the
        worker's ``shards``)."""
        gained = set(shards) - set(self._poller.shards)
        self._poller.shards = shards
        self._poller.others = [s for s in self.shards if s not in shards]
        if self._monitor is not None:
            self._monitor.shards = list(shards)
        if gained:  # a shard just taken may hold a backlog: poll it now, not after the idle backoff
            self._wake.set()

    def _count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    # -------------------------------------------------------------------- run
    async def run(self, options: WorkerRunOptions | None = None) -> int:
        """Poll, claim and run tasks until stopped (see :class:`WorkerRunOptions`).

        Returns:
            The number of tasks this call finished (any outcome).

        Polling, shard-leasing and monitor settings left at their defaults are taken
        from the configuration files and ``BUQUET_*`` variables (:func:`buquet.load_config`).

        Raises:
            ValidationError: bad options (or a bad value in the configuration), or no
                handler registered.
            ConfigurationError: a configuration file is not valid TOML.
        """
        # config files / BUQUET_* variables fill what the code left at its defaults (buquet.config)
        opts = cfg.apply_worker_config(options or WorkerRunOptions(), cfg.load_config())
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
        deleter = DeleteBatcher(self.queue.store, opts.delete_flush_ms, log)
        deleter.start()
        runner = AttemptRunner(self.protocol, self.worker_id, self._handlers, deleter, self._count,
                               self._poller.skip, self._hooks, self.queue.schemas.check_input)
        leasing = opts.shard_leasing()
        self._poller.shards = [] if leasing.is_enabled else list(self.shards)  # leasing: none until a lease is held
        self._poller.others = list(self.shards) if leasing.is_enabled else []
        self._poller.steal_age_ms = leasing.lease_ttl_secs * 1000
        self._poller.steal_every_seconds = float(leasing.renewal_interval_secs)
        companions = _Companions(self, opts, self._stop, register=self._remaining is None)
        self._monitor = companions.monitor
        log.info("worker %s: shards %s, task types %s", self.worker_id, self.shards, self.task_types)
        finished_before = self._finished
        try:
            await self._hooks.startup()
            await self._poll_loop(opts, runner)
        finally:
            self._stop.set()
            await self._drain(opts)
            await companions.close()
            await deleter.close()
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self._hooks.shutdown()
            log.info("worker %s stopped: %s", self.worker_id, self.stats)
        return self._finished - finished_before

    async def run_once(
        self,
        keys: Sequence[str] = (),
        *,
        remaining_seconds: Callable[[], float],
        safety_margin_seconds: float = cfg.DEFAULT_SAFETY_MARGIN_SECONDS,
        options: WorkerRunOptions | None = None,
    ) -> dict[str, int]:
        """Serverless entry point: run what there is while time is left, then return.

        The tasks behind ``keys`` (ready-marker keys from S3 event notifications,
        already URL-decoded) are tried first; then the worker polls its shards like
        :meth:`run` until a poll finds nothing and nothing is in flight. A task is only
        started if its ``timeout_seconds`` fits in ``remaining_seconds() -
        safety_margin_seconds``; longer ones are left for a later invocation (counted
        as ``too_long``). Keys that are not ready markers of this worker's shards,
        duplicates, and markers whose task already moved on are ignored, so duplicate
        and late events are harmless.

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
        markers = [m for m in self.ready_keys(keys) if m.shard in self.shards]
        before = dict(self.stats)
        self._remaining, self._margin_seconds, self._initial = remaining_seconds, safety_margin_seconds, markers
        self._stop_requested = False
        try:
            await self.run(opts)
        finally:
            self._remaining, self._initial = None, []
        return {k: n - before.get(k, 0) for k, n in self.stats.items() if n - before.get(k, 0)}

    async def run_invocation(self, keys: Sequence[str], **settings: Any) -> "InvocationResult":
        """One serverless invocation with the event-driven policy (wait briefly for
        tasks about to come due; poll the shards only when the event names none or is
        late): see :func:`buquet.invocation.run_invocation` for ``settings``."""
        return await run_invocation(self, keys, **settings)

    def ready_keys(self, keys: Sequence[str]) -> list[ReadyKey]:
        """The ready markers among ``keys`` (parsed, duplicates dropped), in order;
        other keys are ignored."""
        out: dict[str, ReadyKey] = {}
        for key in keys:
            m = self.queue.layout.parse_ready(key) if isinstance(key, str) else None
            if m is not None:
                out.setdefault(key, m)
        return list(out.values())

    def _time_left(self) -> float | None:
        """Seconds a new task may take (serverless), or None without a deadline."""
        if self._remaining is None:
            return None
        return self._remaining() - self._margin_seconds

    async def _poll_loop(self, opts: WorkerRunOptions, runner: AttemptRunner) -> None:
        pacer = opts.polling_strategy().pacer(self._rng)
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
            initial_round = bool(self._initial)
            try:
                started = await self._poll_once(free, opts, runner)
            except Exception as exc:  # noqa: BLE001 - polling must go on
                self._poll_errors.failed(exc)
                started = 0
            else:
                self._poll_errors.recovered()
            if started or initial_round:
                pacer.found_work()
                if initial_round or started >= free:
                    continue  # every free slot filled: more may be waiting, poll again at once
                # else this poll saw all the due work there was: the shortest pause, then poll
            elif opts.exit_when_idle and not self._inflight and not self._poller.near_due and self._poller.scan_complete:
                await self._say_what_is_left(opts)
                return
            if not await self._sleep_or_wake(pacer.next_pause_seconds(), wake_on_finish=self._poller.has_leftover):
                pacer.found_work()  # a slot came free for candidates already found: poll at the base rate

    async def _say_what_is_left(self, opts: WorkerRunOptions) -> None:
        """Exiting when idle: log what of its task types is still waiting (one LIST per shard)."""
        try:
            left = await self._poller.left_later(await self.protocol.time())
        except Exception as exc:  # noqa: BLE001 - only a report
            self._poll_errors.failed(exc)
            return
        log.info("worker %s: idle, exiting; %s (idle_horizon_ms=%d)", self.worker_id, left, opts.idle_horizon_ms)

    async def _wait_inflight_or_stop(self) -> None:
        stop_wait = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([stop_wait, *self._inflight.values()], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()

    async def _sleep_or_wake(self, seconds: float, wake_on_finish: bool = True) -> bool:
        """Sleep, but wake early on stop, when the polled shards grow (shard leasing),
        or (with ``wake_on_finish``: candidates are waiting for a slot) when an
        in-flight task finishes. Returns True when the whole pause elapsed (idle)."""
        stop_wait = asyncio.ensure_future(self._stop.wait())
        wake_wait = asyncio.ensure_future(self._wake.wait())
        try:
            waits = [stop_wait, wake_wait, *self._inflight.values()] if wake_on_finish else [stop_wait, wake_wait]
            done, _ = await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            wake_wait.cancel()
            self._wake.clear()
        return not done

    async def _poll_once(self, free: int, opts: WorkerRunOptions, runner: AttemptRunner) -> int:
        now = await self.protocol.time()
        self._poller.prune(now)
        if self._initial:
            due = [m for m in self._initial if m.task_type in self._handlers and m.due_ms <= to_ms(now)]
            candidates = self._poller.order(due)
            self._initial = []
        else:
            horizon = opts.idle_horizon_ms if opts.exit_when_idle else 0
            candidates = await self._poller.poll(now, free, horizon, self._inflight)
        started = 0
        try:
            while candidates and started < free and not self._stop_requested:
                batch, candidates = candidates[: free - started], candidates[free - started :]
                started += await self._claim_batch(batch, now, opts, runner)
        finally:
            self._poller.keep_leftover(candidates)  # for the next free slots, if they come soon
        return started

    async def _claim_batch(self, batch: list[ReadyKey], now: Any, opts: WorkerRunOptions, runner: AttemptRunner) -> int:
        """Try to claim each marker of ``batch`` concurrently; each won task starts as
        soon as its own claim returns (a slow claim never holds the others back past
        their lease)."""
        time_left = self._time_left()

        async def one(marker: ReadyKey) -> bool:
            try:
                result = await self.protocol.claim(marker, self.worker_id, opts.lease_seconds, now, time_left)
            except Exception as exc:  # noqa: BLE001 - one marker's trouble must not stop the batch
                self._poll_errors.failed(exc)
                self._poller.skip[marker.key] = now + _ONE_SECOND
                return False
            _telemetry.count("buquet.claims.success" if isinstance(result, Lease) else "buquet.claims.conflict",
                             int(isinstance(result, Lease) or result.reason == ClaimMissReason.LOST_RACE),
                             task_type=marker.task_type)
            if isinstance(result, Lease):
                self._count("claimed")
                self._start(result, opts, runner)
                return True
            if result.reason == ClaimMissReason.LOST_RACE:
                self._count("claim_conflicts")
            elif result.reason == ClaimVerdict.TOO_LONG:
                self._count("too_long")  # its timeout does not fit this invocation
                log.warning(
                    "task %s (%s, shard %s) not started: its timeout_seconds exceeds %.0f s this "
                    "invocation can give a task (time left minus the safety margin); tasks that long "
                    "never fit a Lambda invocation: run a long-lived worker (buquet worker ...) on this bucket for them",
                    marker.task_id, marker.task_type, marker.shard, time_left or 0.0,
                    extra={"task_id": marker.task_id, "task_type": marker.task_type, "too_long": True},
                )
            elif result.reason == ClaimVerdict.EXPIRE:
                self._count("expired")
            if result.retry_at is not None:
                self._poller.skip[marker.key] = result.retry_at
            return False

        return sum(await asyncio.gather(*(one(m) for m in batch)))

    def _start(self, lease: Lease, opts: WorkerRunOptions, runner: AttemptRunner) -> None:
        task_id = lease.task.id
        t = asyncio.create_task(runner.execute(lease, opts.lease_seconds), name=f"buquet-task-{task_id}")
        self._inflight[task_id] = t

        def done(_: asyncio.Task[None]) -> None:
            self._inflight.pop(task_id, None)
            self._finished += 1

        t.add_done_callback(done)

    async def _drain(self, opts: WorkerRunOptions) -> None:
        if not self._inflight:
            return
        pending = list(self._inflight.values())
        log.info("worker %s: waiting up to %.0fs for %d in-flight tasks", self.worker_id, opts.shutdown_grace_seconds, len(pending))
        _, still = await asyncio.wait(pending, timeout=opts.shutdown_grace_seconds)
        for t in still:
            t.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)
