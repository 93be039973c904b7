"""Plumbing shared by the Lambda handlers: settings, logging, metrics, event loops.

What lives at module scope (created once per Lambda execution environment and reused
by every warm invocation) is loop-free: the powertools ``Logger`` and ``Metrics``, the
parsed settings, and the imported user module. Everything bound to an event loop — the
:class:`~buquet.Queue` and its obstore/boto3 clients, the ``Worker``, the ``Scheduler``
— is created inside :func:`run_fresh`'s loop and dropped with it, so nothing from one
invocation's loop leaks into the next.

Environment variables (``infra/`` sets them):

=================================  ==========================================================
``S3_BUCKET``                      the queue's bucket (required by the scheduler and monitor)
``S3_REGION`` / ``AWS_REGION``     its region (Lambda sets ``AWS_REGION``)
``S3_ENDPOINT``                    an S3-compatible endpoint (tests, LocalStack); unset on AWS
``BUQUET_PREFIX``                  key prefix inside the bucket (default ``""``)
``BUQUET_SHARD_COUNT``             shards of a new bucket; must match an existing bucket
``BUQUET_WORKER``                  ``module:attribute`` of the Worker factory (worker only)
``BUQUET_SAFETY_MARGIN_SECONDS``   time kept free at the end of a worker invocation (10)
``BUQUET_MAX_CONCURRENCY``         tasks in flight per worker invocation (8)
``BUQUET_LEASE_SECONDS``           lease of a claim (30)
``BUQUET_WAIT_FOR_DUE_SECONDS``    a worker event for a task due within this many seconds
                                   waits for it instead of leaving it to the monitor (5)
``BUQUET_DRAIN_LAG_SECONDS``       a worker invocation also polls the shards for other due
                                   tasks only when its event names none, or its oldest task
                                   has waited longer than this (30)
``BUQUET_STALL_SECONDS``           the monitor re-announces ready tasks overdue by this (60)
``POWERTOOLS_SERVICE_NAME``        log ``service`` field and metric dimension (``buquet-lambda``)
``POWERTOOLS_METRICS_NAMESPACE``   CloudWatch namespace of the metrics (``buquet``)
=================================  ==========================================================

The defaults in parentheses are :mod:`buquet.config`'s (``DEFAULT_*``), shared with the
library, the CLI and the CDK app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Coroutine, Iterator, Mapping, TypeVar

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from buquet import Queue, _telemetry, config, connect
from buquet.errors import ConfigurationError, ValidationError
from buquet.imports import WorkerFactory, load_worker_factory, parse_spec

T = TypeVar("T")

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "buquet-lambda"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "buquet"

#: the environment variables the settings are read from (the cache key of :func:`settings`)
ENV_KEYS = (
    config.ENV_BUCKET,
    config.ENV_REGION,
    "AWS_REGION",
    config.ENV_ENDPOINT,
    config.ENV_PREFIX,
    "BUQUET_SHARD_COUNT",
    "BUQUET_WORKER",
    "BUQUET_SAFETY_MARGIN_SECONDS",
    "BUQUET_MAX_CONCURRENCY",
    "BUQUET_LEASE_SECONDS",
    "BUQUET_WAIT_FOR_DUE_SECONDS",
    "BUQUET_DRAIN_LAG_SECONDS",
    "BUQUET_STALL_SECONDS",
)


class _CurrentStdout:
    """A stream that writes to whatever ``sys.stdout`` is at write time (the Lambda
    runtime's stdout in AWS; pytest's capture in tests)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


#: a task id (a canonical UUID string) standing alone in a log message
_TASK_ID = re.compile(r"(?<![0-9a-f-])([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?![0-9a-f-])")


class TaskIdFilter(logging.Filter):
    """Adds a ``task_id`` field to every log record whose message names a task id (the
    library's lines read ``task <uuid>: ...``), so CloudWatch Logs Insights can
    filter on it: ``filter task_id = "..."``. Records that already carry ``task_id``
    (``logger.info(..., extra={"task_id": ...})``) are left alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "task_id"):
            try:
                match = _TASK_ID.search(record.getMessage())
            except Exception:  # noqa: BLE001 - a broken format string must not drop the line
                match = None
            if match:
                record.task_id = match.group(1)
        return True


#: JSON logs on stdout (the stdlib logger is named after the service, by default
#: ``buquet-lambda``: not ``buquet``, so importing this module leaves the library's
#: loggers alone until :func:`library_logs` routes them for an invocation)
logger = Logger(service=SERVICE, stream=_CurrentStdout())
logger.registered_handler.addFilter(TaskIdFilter())
#: CloudWatch metrics in the embedded metric format, flushed by ``@metrics.log_metrics``
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


@contextlib.contextmanager
def library_logs() -> Iterator[None]:
    """While the block runs, the library's ``buquet.*`` records go through the
    powertools handler (JSON, the Lambda context keys, ``task_id``) at the handler's
    log level, and not also to the root logger the Lambda runtime configures. The
    ``buquet`` logger's previous handlers, level and propagation are restored after, so
    importing or calling a handler never reconfigures logging for the rest of a process
    (a test session, a long-lived worker that imports ``lambdas``)."""
    lib = logging.getLogger("buquet")
    if lib.name == logger.name:  # POWERTOOLS_SERVICE_NAME=buquet: already its handler
        yield
        return
    handler = logger.registered_handler
    saved_level, saved_propagate = lib.level, lib.propagate
    added = handler not in lib.handlers
    if added:
        lib.addHandler(handler)
    lib.setLevel(logger.log_level or logging.INFO)
    lib.propagate = False
    try:
        yield
    finally:
        if added:
            lib.removeHandler(handler)
        lib.setLevel(saved_level)
        lib.propagate = saved_propagate


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """The handlers' configuration, parsed from the environment (see the module
    docstring for the variables and defaults).

    Attributes:
        bucket: ``S3_BUCKET`` or ``None``.
        endpoint: ``S3_ENDPOINT`` or ``None`` (AWS).
        region: ``S3_REGION``, else ``AWS_REGION``, else ``None``.
        prefix: ``BUQUET_PREFIX`` (``""`` = bucket root).
        shard_count: ``BUQUET_SHARD_COUNT`` or ``None`` (use the bucket's).
        worker_spec: ``BUQUET_WORKER`` (``module:attribute``) or ``None``.
        safety_margin_seconds: seconds a worker invocation keeps free at its end.
        max_concurrency: tasks in flight per worker invocation.
        lease_seconds: lease of a claim, seconds.
        wait_for_due_seconds: longest wait for a not-yet-due task named in the event.
        drain_lag_seconds: event lag beyond which a worker invocation polls for backlog.
        stall_seconds: how overdue a ready task must be before the monitor re-announces it.
    """

    bucket: str | None
    endpoint: str | None
    region: str | None
    prefix: str
    shard_count: int | None
    worker_spec: str | None
    safety_margin_seconds: float
    max_concurrency: int
    lease_seconds: float
    wait_for_due_seconds: float
    drain_lag_seconds: float
    stall_seconds: float

    def invocation_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`buquet.invocation.run_invocation` these
        settings fix (everything but the worker, the keys and the deadline)."""
        return {
            "safety_margin_seconds": self.safety_margin_seconds,
            "wait_for_due_seconds": self.wait_for_due_seconds,
            "drain_lag_seconds": self.drain_lag_seconds,
            "max_concurrency": self.max_concurrency,
            "lease_seconds": self.lease_seconds,
        }


def parse_settings(env: Mapping[str, str | None]) -> Settings:
    """Parse the handler settings from a mapping of environment variables (defaults and
    parsers from :mod:`buquet.config`).

    Raises:
        ConfigurationError: a variable is malformed or out of range (names it).
    """
    spec = (env.get("BUQUET_WORKER") or "").strip() or None
    if spec is not None:
        try:
            parse_spec(spec, name="BUQUET_WORKER")
        except ValidationError as exc:
            raise ConfigurationError(f"BUQUET_WORKER {exc.rule}") from None
    concurrency = config.env_int(env, "BUQUET_MAX_CONCURRENCY", config.DEFAULT_MAX_CONCURRENCY, 1, 10_000)
    assert concurrency is not None
    return Settings(
        bucket=env.get(config.ENV_BUCKET) or None,
        endpoint=env.get(config.ENV_ENDPOINT) or None,
        region=env.get(config.ENV_REGION) or env.get("AWS_REGION") or None,
        prefix=env.get(config.ENV_PREFIX) or "",
        shard_count=config.env_int(env, "BUQUET_SHARD_COUNT", None, 1, config.MAX_SHARD_COUNT),
        worker_spec=spec,
        safety_margin_seconds=config.env_number(
            env, "BUQUET_SAFETY_MARGIN_SECONDS", config.DEFAULT_SAFETY_MARGIN_SECONDS, 0.0, 600.0
        ),
        max_concurrency=concurrency,
        lease_seconds=config.env_number(env, "BUQUET_LEASE_SECONDS", config.DEFAULT_LEASE_SECONDS, 1.0, 3600.0),
        wait_for_due_seconds=config.env_number(
            env, "BUQUET_WAIT_FOR_DUE_SECONDS", config.DEFAULT_WAIT_FOR_DUE_SECONDS, 0.0, 600.0
        ),
        drain_lag_seconds=config.env_number(
            env, "BUQUET_DRAIN_LAG_SECONDS", config.DEFAULT_DRAIN_LAG_SECONDS, 0.0, 86_400.0
        ),
        stall_seconds=config.env_number(env, "BUQUET_STALL_SECONDS", config.DEFAULT_STALL_SECONDS, 0.0, 86_400.0),
    )


_settings_cache: dict[tuple[str | None, ...], Settings] = {}


def settings() -> Settings:
    """The current settings, parsed once per distinct environment (a warm Lambda parses
    them once; a test that changes the environment gets fresh ones).

    Raises:
        ConfigurationError: a malformed variable.
    """
    key = tuple(os.environ.get(k) for k in ENV_KEYS)
    cached = _settings_cache.get(key)
    if cached is None:
        cached = parse_settings(dict(zip(ENV_KEYS, key)))
        _settings_cache.clear()
        _settings_cache[key] = cached
    return cached


async def connect_queue(cfg: Settings) -> Queue:
    """Open the queue the settings describe. Call it inside the invocation's loop.

    Raises:
        ConfigurationError: no ``S3_BUCKET``, or ``BUQUET_SHARD_COUNT`` disagrees with
            the bucket's ``config.json``.
        StorageError: the bucket cannot be reached.

    S3: one GET of ``config.json`` (one PUT with ``If-None-Match: *`` if it does not
    exist yet, which needs ``s3:PutObject`` on it).
    """
    if not cfg.bucket:
        raise ConfigurationError("S3_BUCKET is not set: the handler does not know the queue's bucket")
    return await connect(
        bucket=cfg.bucket,
        endpoint=cfg.endpoint,
        region=cfg.region,
        prefix=cfg.prefix,
        shard_count=cfg.shard_count,
    )


# ------------------------------------------------------------------------- user worker
def load_factory(spec: str | None) -> WorkerFactory:
    """The Worker factory ``BUQUET_WORKER`` names (``module:attribute``), imported with
    :func:`buquet.imports.load_worker_factory`: a plain or async callable taking no
    arguments and returning a :class:`~buquet.Worker`. The handler calls it inside
    every invocation's event loop, because a Worker holds a Queue whose connections
    belong to that loop; a Worker *object* created at import time is refused for that
    reason. Python caches the imported module, so warm invocations pay nothing.

    Raises:
        ConfigurationError: ``spec`` is unset or malformed, the module cannot be
            imported, the attribute is missing, or it is not a callable factory.
    """
    if not spec:
        raise ConfigurationError(
            "BUQUET_WORKER is not set: name your Worker factory as module:attribute, "
            "e.g. BUQUET_WORKER=myapp.tasks:make_worker"
        )
    try:
        return load_worker_factory(spec, name="BUQUET_WORKER")  # type: ignore[return-value]
    except ValidationError as exc:  # settings() checks the shape first; kept for direct calls
        raise ConfigurationError(f"BUQUET_WORKER {exc.rule}") from None


def preload_factory() -> None:
    """Import the user's module during the Lambda init phase (module scope of the worker
    handler) so the first invocation does not pay for it. Errors are logged, not
    raised: the invocation reports them again with its own request id."""
    try:
        spec = settings().worker_spec
        if spec:
            load_factory(spec)
    except Exception:  # noqa: BLE001 - reported again by the invocation
        logger.exception("loading the BUQUET_WORKER factory failed")


# ---------------------------------------------------------------------------- events
def describe(value: Any) -> str:
    """A short, content-free description of an event for a log line: its type, and for
    an object its first keys (values are never logged: they may be large or private)."""
    if isinstance(value, Mapping):
        keys = [str(k) for k in list(value)[:8]]
        more = ", ..." if len(value) > 8 else ""
        return f"an object with keys [{', '.join(keys)}{more}]" if keys else "an empty object"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    if value is None:
        return "null"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def rule_time(event: Any) -> str | None:
    """The ``time`` of an EventBridge scheduled event (the scheduler and the monitor only
    log it). Their work does not depend on the event, so any other event — a manual
    invoke with ``{}``, ``null``, a list, a string, a ``time`` that is not a string —
    costs one warning line and the invocation runs as usual: raising would only make
    Lambda retry the same event."""
    if isinstance(event, Mapping) and isinstance(event.get("time"), str):
        return event["time"]
    what = describe(event) if not isinstance(event, Mapping) else f"{describe(event)} and no 'time' string"
    logger.warning("the event is not an EventBridge scheduled event (%s): running as usual", what)
    return None


# ----------------------------------------------------------------------------- loops
def run_fresh(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion in a new event loop and close the loop.

    Like :func:`asyncio.run` (pending tasks are cancelled, async generators closed),
    with one difference: the default thread pool is shut down *without waiting*. A
    plain-function handler that ran past its task's timeout keeps its thread (Python
    cannot interrupt it; the worker has already recorded the timeout), and waiting for
    it would hold the invocation until Lambda kills it — then retries it.
    """
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()  # ThreadPoolExecutor.shutdown(wait=False)


class EmfSink:
    """A :mod:`buquet._telemetry` sink that publishes the library's metrics — the same
    dotted names as :mod:`buquet.metrics` (``buquet.tasks.completed``,
    ``buquet.task.duration_seconds``, ...) — as CloudWatch embedded-metric-format blobs
    through Powertools, with the labels as dimensions (``service``, ``task_type``, and
    ``reason`` for ``buquet.tasks.failed``).

    Recordings are aggregated during the invocation and printed by :meth:`flush`: one
    blob per distinct label set (counters summed, histogram values as a value list of
    at most 100 per blob — CloudWatch keeps their distribution). Units: ``Count`` and
    ``Seconds``. Every name/dimension combination that occurs is one CloudWatch custom
    metric (billed monthly), so the number grows with the task types in use.
    """

    #: values per metric in one EMF blob (CloudWatch's limit)
    MAX_VALUES = 100

    def __init__(self) -> None:
        self.counts: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
        self.values: dict[tuple[tuple[str, str], ...], dict[str, list[float]]] = {}

    def count(self, name: str, n: float, labels: dict[str, str]) -> None:
        """Add ``n`` to counter ``name`` for this label set."""
        group = self.counts.setdefault(tuple(sorted(labels.items())), {})
        group[name] = group.get(name, 0) + n

    def observe(self, name: str, value: float, labels: dict[str, str]) -> None:
        """Record ``value`` (seconds) in histogram ``name`` for this label set."""
        self.values.setdefault(tuple(sorted(labels.items())), {}).setdefault(name, []).append(value)

    def flush(self) -> None:
        """Print the blobs of everything recorded since the last flush and forget it."""
        counts, values, self.counts, self.values = self.counts, self.values, {}, {}
        for dims in list(dict.fromkeys([*counts, *values])):
            pending = {name: list(vs) for name, vs in values.get(dims, {}).items()}
            group_counts = counts.get(dims, {})
            while group_counts or any(pending.values()):
                blob = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
                for key, val in dims:
                    blob.add_dimension(name=key, value=val)
                for name, n in group_counts.items():
                    blob.add_metric(name=name, unit=MetricUnit.Count, value=n)
                for name, vs in pending.items():
                    for v in vs[: self.MAX_VALUES - 1]:  # powertools flushes by itself at 100
                        blob.add_metric(name=name, unit=MetricUnit.Seconds, value=v)
                    del vs[: self.MAX_VALUES - 1]
                group_counts = {}
                blob.flush_metrics()


@contextlib.contextmanager
def library_metrics() -> Iterator[EmfSink]:
    """While the block runs, the library's metrics are recorded (:class:`EmfSink`);
    they are published when it ends, also when it raises. A process-wide exporter
    (:mod:`buquet.metrics`) keeps receiving them too."""
    sink = EmfSink()
    _telemetry.add_sink(sink)
    try:
        yield sink
    finally:
        _telemetry.remove_sink(sink)
        try:
            sink.flush()
        except Exception:  # noqa: BLE001 - metrics never fail an invocation
            logger.exception("publishing the library metrics failed")


def add_counts(counts: dict[str, int], names: dict[str, str]) -> None:
    """Add one Count metric per entry of ``names`` (counter key → metric name), zero
    when the counter is absent, so dashboards sum real zeros instead of gaps."""
    for key, metric in names.items():
        metrics.add_metric(name=metric, unit=MetricUnit.Count, value=int(counts.get(key, 0)))


__all__ = [
    "ENV_KEYS",
    "Settings",
    "TaskIdFilter",
    "add_counts",
    "connect_queue",
    "describe",
    "EmfSink",
    "library_logs",
    "library_metrics",
    "load_factory",
    "logger",
    "metrics",
    "parse_settings",
    "preload_factory",
    "rule_time",
    "run_fresh",
    "settings",
]
