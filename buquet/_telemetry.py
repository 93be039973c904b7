"""The engine's metric recorder: what the worker, monitor and scheduler call when
something countable happens, and the catalogue of every metric they emit.

The engine calls :func:`count` and :func:`observe` (and :func:`observe_since` with a
start time from :func:`now`) with a metric name from :data:`METRICS` and its labels.
With no sink installed — no exporter configured (:mod:`buquet.metrics`) and no Lambda
invocation recording EMF metrics — each call is one truthiness test of an empty tuple
and returns: recording costs nothing worth measuring unless someone listens.

A *sink* is any object with ``count(name, n, labels)`` and ``observe(name, value,
labels)``; :mod:`buquet.metrics` installs one per process (Prometheus, StatsD or
OpenTelemetry) and ``lambdas/`` one per invocation (CloudWatch EMF). Several may be
installed at once; each gets every event. A sink that raises is logged (once per sink
and metric) and never breaks the caller.

Dependency direction: engine modules import this module; it imports nothing of the
engine (only the standard library), so it can be imported from anywhere.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("buquet.metrics")

COUNTER = "counter"
HISTOGRAM = "histogram"

#: upper bounds (seconds) of the task-duration histogram buckets
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)
#: upper bounds (seconds) of the reschedule-delay histogram buckets
DELAY_BUCKETS: tuple[float, ...] = (1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 21600.0, 86400.0)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric of the catalogue.

    Attributes:
        name: the dotted name (``buquet.tasks.completed``); Prometheus replaces the dots
            with underscores.
        kind: :data:`COUNTER` or :data:`HISTOGRAM`.
        labels: the label names every recording of it carries, in order.
        unit: ``"1"`` for counts, ``"s"`` for seconds (UCUM, as OpenTelemetry wants).
        description: one line for ``# HELP`` and the OpenTelemetry description.
        buckets: histogram bucket upper bounds (seconds); empty for counters.
    """

    name: str
    kind: str
    labels: tuple[str, ...]
    unit: str
    description: str
    buckets: tuple[float, ...] = ()


def _counter(name: str, description: str, labels: tuple[str, ...] = ("task_type",)) -> MetricSpec:
    return MetricSpec(name, COUNTER, labels, "1", description)


#: every metric the engine emits, by name
METRICS: dict[str, MetricSpec] = {
    m.name: m
    for m in (
        _counter("buquet.tasks.submitted", "Tasks created (submit, submit_many, cron slots, idempotent first use)."),
        _counter("buquet.tasks.completed", "Tasks whose handler returned a result, stored as Completed."),
        _counter(
            "buquet.tasks.failed",
            "Failed attempts, by reason: timeout, retryable (retried or not), permanent, no_handler.",
            ("task_type", "reason"),
        ),
        _counter("buquet.tasks.cancelled", "Tasks cancelled (Queue.cancel*, or a handler honouring a cancel request)."),
        _counter("buquet.tasks.expired", "Pending tasks expired past their deadline (monitor, claim, mark_expired)."),
        _counter("buquet.tasks.rescheduled", "Handlers that raised RescheduleError and were put back to Pending."),
        _counter("buquet.claims.success", "Claims won by this process."),
        _counter("buquet.claims.conflict", "Claims lost to another worker's conditional write."),
        _counter("buquet.tasks.timeout_recovered", "Running tasks whose lease lapsed, recovered (requeued or failed)."),
        _counter("buquet.tasks.retries_exhausted", "Tasks that ended Failed because their attempts were used up."),
        MetricSpec(
            "buquet.task.duration_seconds", HISTOGRAM, ("task_type",), "s",
            "Wall time of each handler run (one attempt, any outcome), seconds.", DURATION_BUCKETS,
        ),
        MetricSpec(
            "buquet.reschedule.delay_seconds", HISTOGRAM, ("task_type",), "s",
            "delay_seconds of each RescheduleError that put its task back to Pending, seconds.", DELAY_BUCKETS,
        ),
    )
}


class Sink(Protocol):
    """Receives every recording (see the module docstring)."""

    def count(self, name: str, n: float, labels: dict[str, str]) -> None:
        """Add ``n`` (> 0) to counter ``name`` with ``labels``."""

    def observe(self, name: str, value: float, labels: dict[str, str]) -> None:
        """Record ``value`` in histogram ``name`` with ``labels``."""


#: the installed sinks; replaced (never mutated) so readers need no lock
_sinks: tuple[Sink, ...] = ()
_complained: set[tuple[int, str]] = set()

#: a start time for :func:`observe_since` (``time.monotonic``, seconds)
now = time.monotonic


def count(name: str, n: float = 1, /, **labels: str) -> None:
    """Add ``n`` to counter ``name`` (a key of :data:`METRICS`) with ``labels``. ``n <=
    0`` (e.g. ``int(False)``) records nothing. A no-op without sinks. Never raises."""
    if not _sinks or n <= 0:
        return
    for sink in _sinks:
        try:
            sink.count(name, n, labels)
        except Exception as exc:  # noqa: BLE001 - metrics never break the engine
            _complain(sink, name, exc)


def observe(name: str, value: float, /, **labels: str) -> None:
    """Record ``value`` in histogram ``name`` (a key of :data:`METRICS`, seconds) with
    ``labels``. A no-op without sinks. Never raises."""
    if not _sinks:
        return
    for sink in _sinks:
        try:
            sink.observe(name, value, labels)
        except Exception as exc:  # noqa: BLE001 - metrics never break the engine
            _complain(sink, name, exc)


def observe_since(name: str, started: float, /, **labels: str) -> None:
    """:func:`observe` the seconds elapsed since ``started`` (a :func:`now` value)."""
    if _sinks:
        observe(name, now() - started, **labels)


# ------------------------------------------------------------ events with several metrics
def attempt_failed(task_type: str, reason: str, final: bool) -> None:
    """A failed attempt: ``buquet.tasks.failed{reason}``; when ``final`` (the task is
    now Failed) after a retryable failure or a timeout, also
    ``buquet.tasks.retries_exhausted``. ``reason``: ``timeout``, ``retryable``,
    ``permanent`` or ``no_handler``."""
    if _sinks:
        count("buquet.tasks.failed", task_type=task_type, reason=reason)
        count("buquet.tasks.retries_exhausted", int(final and reason in ("timeout", "retryable")), task_type=task_type)


def rescheduled(task_type: str, delay_seconds: float, accepted: bool) -> None:
    """A handler raised ``RescheduleError(delay_seconds)``: when ``accepted`` (the task
    is Pending again) ``buquet.tasks.rescheduled`` and ``buquet.reschedule.delay_seconds``;
    otherwise (the reschedule cap was reached: Failed) a permanent failure."""
    if not _sinks:
        return
    if accepted:
        count("buquet.tasks.rescheduled", task_type=task_type)
        observe("buquet.reschedule.delay_seconds", float(delay_seconds), task_type=task_type)
    else:
        count("buquet.tasks.failed", task_type=task_type, reason="permanent")


def lease_recovered(task_type: str, exhausted: bool) -> None:
    """A Running task whose lease lapsed was taken back (requeued, claimed again, or
    Failed when ``exhausted``): ``buquet.tasks.timeout_recovered``, and
    ``buquet.tasks.retries_exhausted`` when ``exhausted``."""
    if _sinks:
        count("buquet.tasks.timeout_recovered", task_type=task_type)
        count("buquet.tasks.retries_exhausted", int(exhausted), task_type=task_type)


def add_sink(sink: Sink) -> None:
    """Install ``sink`` (it receives every later recording)."""
    global _sinks
    _sinks = (*_sinks, sink)


def remove_sink(sink: Sink) -> None:
    """Uninstall ``sink``; no error if it is not installed."""
    global _sinks
    _sinks = tuple(s for s in _sinks if s is not sink)


def active() -> bool:
    """Is any sink installed?"""
    return bool(_sinks)


def _complain(sink: Sink, name: str, exc: Exception) -> None:
    key = (id(sink), name)
    if key not in _complained:
        _complained.add(key)
        log.warning("metrics: recording %s in %s failed (logged once): %r", name, type(sink).__name__, exc)


__all__ = [
    "COUNTER", "DELAY_BUCKETS", "DURATION_BUCKETS", "HISTOGRAM", "METRICS", "MetricSpec", "Sink",
    "active", "add_sink", "attempt_failed", "count", "lease_recovered", "now", "observe", "observe_since",
    "remove_sink", "rescheduled",
]
