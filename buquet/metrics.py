"""Metrics export: Prometheus, StatsD (DogStatsD tags) or OpenTelemetry (OTLP/gRPC).

Enable one exporter per process, before or while workers run::

    import buquet.metrics
    buquet.metrics.enable_prometheus(9000)        # or enable_statsd(...) / enable_opentelemetry(...)
    # or from the environment (what `buquet worker` does at start):
    buquet.metrics.auto_configure()               # BUQUET_METRICS_EXPORTER=prometheus|statsd|otlp

The exporter libraries are the ``metrics`` extra (``pip install 'buquet[metrics]'``);
each is imported only by its ``enable_*`` function, so ``import buquet`` never needs
them. Without an exporter, recording costs one test of an empty tuple per event.

What the worker, the monitor and the scheduler record (every counter has the label
``task_type``; ``buquet.tasks.failed`` also ``reason``):

==================================  ==========================================================
``buquet.tasks.submitted``          tasks created: ``submit``, ``submit_many``, cron slots,
                                    the first use of an idempotency key (a reuse is not counted)
``buquet.tasks.completed``          handlers that returned a result, stored Completed
``buquet.tasks.failed``             failed attempts, ``reason``: ``timeout`` (ran past
                                    ``timeout_seconds``), ``retryable`` (``RetryableError`` or
                                    any other exception; retried or, when none are left,
                                    Failed), ``permanent`` (``PermanentError``, a non-JSON
                                    result, a schema rejection, the reschedule cap),
                                    ``no_handler`` (never emitted by this worker: it claims
                                    only task types it has handlers for)
``buquet.tasks.cancelled``          ``cancel``/``cancel_many``/``cancel_by_type``, and handlers
                                    that ended a cancellation-requested task
``buquet.tasks.expired``            Pending tasks expired past their deadline (monitor sweep,
                                    a worker's claim) or by ``mark_expired``
``buquet.tasks.rescheduled``        ``RescheduleError`` put the task back to Pending
``buquet.claims.success``           claims won
``buquet.claims.conflict``          claims lost to another worker's conditional write
``buquet.tasks.timeout_recovered``  Running tasks whose lease lapsed (their worker died or
                                    hung), taken back by the monitor or a claiming worker
``buquet.tasks.retries_exhausted``  tasks that ended Failed because their attempts were used
                                    up (a retryable failure, or a lapsed lease, on the last one)
``buquet.task.duration_seconds``    histogram: wall time of each handler run (any outcome),
                                    seconds
``buquet.reschedule.delay_seconds`` histogram: the ``delay_seconds`` of each reschedule
==================================  ==========================================================

Names per backend:

* **Prometheus** — dots become underscores and ``prometheus_client`` adds ``_total`` to
  counters: ``buquet_tasks_submitted_total``, ``buquet_tasks_completed_total``,
  ``buquet_tasks_failed_total{task_type,reason}``, ``buquet_tasks_cancelled_total``,
  ``buquet_tasks_expired_total``, ``buquet_tasks_rescheduled_total``,
  ``buquet_claims_success_total``, ``buquet_claims_conflict_total``,
  ``buquet_tasks_timeout_recovered_total``, ``buquet_tasks_retries_exhausted_total``
  (each also with a ``_created`` sample), and the histograms
  ``buquet_task_duration_seconds_{bucket,sum,count}`` and
  ``buquet_reschedule_delay_seconds_{bucket,sum,count}``. Served from the exporter's own
  registry (not the global default one) at ``http://<host>:<port>/metrics``.
* **StatsD** — the dotted names, labels as DogStatsD tags (Datadog agent, Telegraf's
  ``datadog_extensions``, statsd_exporter): ``buquet.tasks.completed:1|c|#task_type:email``;
  histograms as StatsD timers in **milliseconds** (the StatsD convention):
  ``buquet.task.duration_seconds:12.500000|ms|#task_type:email``. ``tags=False`` sends
  untagged lines for a plain StatsD server (per-type detail is then lost).
* **OpenTelemetry** — the dotted names as instruments of the meter ``buquet``
  (counters with unit ``1``, histograms with unit ``s`` and the bucket bounds below),
  labels as attributes, exported over OTLP/gRPC every
  ``OTEL_METRIC_EXPORT_INTERVAL`` ms (60 s by default) and at exit; resource
  ``service.name`` from ``OTEL_SERVICE_NAME`` (default ``buquet``).
* **AWS Lambda** (``lambdas/``) — the same dotted names in CloudWatch's embedded
  metric format through Powertools, with dimensions ``service``, ``task_type`` (and
  ``reason``); no exporter needs enabling there.

Histogram buckets (seconds): duration 0.005 … 3600 (:data:`buquet._telemetry.
DURATION_BUCKETS`), reschedule delay 1 … 86400 (:data:`~buquet._telemetry.DELAY_BUCKETS`).

Errors: a second ``enable_*``/``auto_configure`` in a process raises ``RuntimeError``
(``"Metrics exporter already configured: ..."``); a missing library raises
:class:`MetricsUnavailable` (an ``ImportError``) naming ``pip install 'buquet[metrics]'``;
bad arguments or environment values raise :class:`~buquet.ValidationError` (a
``ValueError``) naming them.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

from . import _telemetry
from .errors import ConfigurationError, ValidationError

ENV_EXPORTER = "BUQUET_METRICS_EXPORTER"
ENV_PROMETHEUS_PORT = "BUQUET_METRICS_PROMETHEUS_PORT"
ENV_STATSD_HOST = "BUQUET_METRICS_STATSD_HOST"
ENV_STATSD_PORT = "BUQUET_METRICS_STATSD_PORT"
ENV_OTLP_ENDPOINT = "BUQUET_METRICS_OTLP_ENDPOINT"

DEFAULT_PROMETHEUS_PORT = 9000
DEFAULT_STATSD_HOST = "127.0.0.1"
DEFAULT_STATSD_PORT = 8125
DEFAULT_OTLP_ENDPOINT = "http://localhost:4317"

#: accepted ``BUQUET_METRICS_EXPORTER`` values (any case) → exporter
EXPORTER_ALIASES = {
    "prometheus": "prometheus",
    "statsd": "statsd",
    "datadog": "statsd",
    "dogstatsd": "statsd",
    "opentelemetry": "opentelemetry",
    "otlp": "opentelemetry",
    "otel": "opentelemetry",
}

_INSTALL_HINT = "pip install 'buquet[metrics]'"


class MetricsUnavailable(ConfigurationError, ImportError):
    """The exporter's library is not installed (``pip install 'buquet[metrics]'``)."""


class _Exporter:
    """The process's one exporter: its name, the sink it installed, how to stop it."""

    def __init__(self, name: str, sink: Any, close: Callable[[], None], detail: str) -> None:
        self.name = name
        self.sink = sink
        self.close = close
        self.detail = detail


_lock = threading.Lock()
_current: _Exporter | None = None


# ------------------------------------------------------------------------------ public
def current_exporter() -> str | None:
    """``"prometheus"``, ``"statsd"``, ``"opentelemetry"``, or ``None`` when no exporter
    is configured in this process."""
    exporter = _current
    return exporter.name if exporter is not None else None


def enable_prometheus(port: int = DEFAULT_PROMETHEUS_PORT, *, addr: str = "0.0.0.0") -> None:
    """Serve the metrics for Prometheus at ``http://<addr>:<port>/metrics`` (a daemon
    thread; ``prometheus_client`` with its own registry). ``port=0`` picks a free port.

    Raises:
        RuntimeError: ``"Metrics exporter already configured: ..."``.
        ValidationError: ``port`` not an int in 0–65535.
        MetricsUnavailable: ``prometheus_client`` is not installed.
        ConfigurationError: the port cannot be bound (in use, no permission).
    """
    _check_port(port, "port")
    with _lock:
        _refuse_second()
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError as exc:
            raise _unavailable("prometheus", "prometheus_client", exc) from exc
        registry = CollectorRegistry(auto_describe=True)
        sink = _PrometheusSink(registry)
        try:
            server, thread = start_http_server(port, addr=addr, registry=registry)
        except OSError as exc:
            raise ConfigurationError(f"Prometheus exporter cannot listen on {addr}:{port}: {exc}") from exc

        def close() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5)

        sink.server = server
        _install(_Exporter("prometheus", sink, close, f"{addr}:{server.server_port}"))


def enable_statsd(host: str = DEFAULT_STATSD_HOST, port: int = DEFAULT_STATSD_PORT, *,
                  prefix: str | None = None, tags: bool = True) -> None:
    """Send the metrics to a StatsD server over UDP (``statsd.StatsClient``), one
    datagram per event: counters ``name:n|c``, histograms as timers ``name:ms|ms``
    (milliseconds), each with ``|#task_type:...`` DogStatsD tags unless ``tags=False``.

    Args:
        host: the server's host name or address (resolved once, now).
        port: its UDP port.
        prefix: prepended to every name with a dot (``myapp`` → ``myapp.buquet...``).
        tags: add the labels as DogStatsD tags.

    Raises:
        RuntimeError: ``"Metrics exporter already configured: ..."``.
        ValidationError: bad ``port``.
        MetricsUnavailable: ``statsd`` is not installed.
        ConfigurationError: ``host`` cannot be resolved.
    """
    _check_port(port, "port", minimum=1)
    with _lock:
        _refuse_second()
        try:
            import statsd
        except ImportError as exc:
            raise _unavailable("statsd", "statsd", exc) from exc

        class TaggedStatsClient(statsd.StatsClient):  # type: ignore[misc, name-defined]
            """Carries DogStatsD tags in the stat name (``name|#k:v``) through the
            client's public calls and puts them after the type, where they belong."""

            def _prepare(self, stat: str, value: str, rate: float) -> str | None:
                name, sep, tag_text = stat.partition("|#")
                line = super()._prepare(name, value, rate)
                return f"{line}|#{tag_text}" if line and sep else line

        try:
            client = TaggedStatsClient(host, port, prefix=prefix)
        except OSError as exc:
            raise ConfigurationError(f"StatsD exporter cannot resolve {host}:{port}: {exc}") from exc
        _install(_Exporter("statsd", _StatsdSink(client, tags), client.close, f"{host}:{port}"))


def enable_opentelemetry(endpoint: str = DEFAULT_OTLP_ENDPOINT, *, metric_reader: Any = None) -> None:
    """Export the metrics with the OpenTelemetry SDK: a ``MeterProvider`` of its own (the
    global one is left alone) whose ``PeriodicExportingMetricReader`` pushes to an
    OTLP/gRPC collector at ``endpoint`` (``http://`` = plaintext, ``https://`` = TLS).

    Args:
        endpoint: the collector's OTLP/gRPC address.
        metric_reader: an SDK ``MetricReader`` to use *instead of* the OTLP exporter
            (e.g. ``InMemoryMetricReader`` in tests); ``endpoint`` is then unused.

    Raises:
        RuntimeError: ``"Metrics exporter already configured: ..."``.
        ValidationError: ``endpoint`` is not an http(s) URL.
        MetricsUnavailable: the SDK or the gRPC exporter is not installed.
    """
    if metric_reader is None and (not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://"))):
        raise ValidationError("endpoint", f"must be an http:// or https:// URL, got {endpoint!r}")
    with _lock:
        _refuse_second()
        try:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.resources import Resource

            if metric_reader is None:
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
                from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

                metric_reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint))
        except ImportError as exc:
            raise _unavailable("opentelemetry", "opentelemetry-sdk / opentelemetry-exporter-otlp-proto-grpc", exc) from exc
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "buquet"})
        provider = MeterProvider(metric_readers=[metric_reader], resource=resource)
        sink = _OpenTelemetrySink(provider.get_meter("buquet"))
        _install(_Exporter("opentelemetry", sink, provider.shutdown, endpoint))


def auto_configure() -> bool:
    """Enable the exporter ``BUQUET_METRICS_EXPORTER`` names (any case): ``prometheus``
    (port ``BUQUET_METRICS_PROMETHEUS_PORT``, 9000), ``statsd``/``datadog``/
    ``dogstatsd`` (``BUQUET_METRICS_STATSD_HOST``/``_PORT``, 127.0.0.1/8125),
    ``opentelemetry``/``otlp``/``otel`` (``BUQUET_METRICS_OTLP_ENDPOINT``,
    http://localhost:4317).

    Returns:
        ``True`` if an exporter was enabled, ``False`` when the variable is unset or empty.

    Raises:
        ValidationError: an unknown exporter name (the message names the variable and
            the accepted values) or a malformed port (a ``ValueError``).
        RuntimeError, MetricsUnavailable, ConfigurationError: as the ``enable_*``
            function.
    """
    raw = os.environ.get(ENV_EXPORTER, "").strip()
    if not raw:
        return False
    name = EXPORTER_ALIASES.get(raw.lower())
    if name is None:
        raise ValidationError(ENV_EXPORTER, f"unknown exporter {raw!r}; expected one of {', '.join(EXPORTER_ALIASES)}")
    if name == "prometheus":
        enable_prometheus(_env_port(ENV_PROMETHEUS_PORT, DEFAULT_PROMETHEUS_PORT))
    elif name == "statsd":
        host = os.environ.get(ENV_STATSD_HOST, "").strip() or DEFAULT_STATSD_HOST
        enable_statsd(host, _env_port(ENV_STATSD_PORT, DEFAULT_STATSD_PORT))
    else:
        enable_opentelemetry(os.environ.get(ENV_OTLP_ENDPOINT, "").strip() or DEFAULT_OTLP_ENDPOINT)
    return True


# ----------------------------------------------------------------------------- sinks
def _tag_value(value: str) -> str:
    return str(value).replace(",", "_").replace("|", "_").replace("#", "_")


class _PrometheusSink:
    """One ``Counter``/``Histogram`` per catalogue entry, in the exporter's registry."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Histogram

        self.server: Any = None
        self.metrics: dict[str, Any] = {}
        self.children: dict[tuple[Any, ...], Any] = {}  # (name, *label items) → labelled child
        for spec in _telemetry.METRICS.values():
            flat = spec.name.replace(".", "_")
            if spec.kind == _telemetry.COUNTER:
                self.metrics[spec.name] = Counter(flat, spec.description, spec.labels, registry=registry)
            else:
                self.metrics[spec.name] = Histogram(
                    flat, spec.description, spec.labels, registry=registry, buckets=spec.buckets)

    def _child(self, name: str, labels: dict[str, str]) -> Any:
        key = (name, *labels.items())
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = self.metrics[name].labels(**labels)
        return child

    def count(self, name: str, n: float, labels: dict[str, str]) -> None:
        self._child(name, labels).inc(n)

    def observe(self, name: str, value: float, labels: dict[str, str]) -> None:
        self._child(name, labels).observe(value)


class _StatsdSink:
    """Forwards to a ``statsd.StatsClient`` (see :func:`enable_statsd`)."""

    def __init__(self, client: Any, tags: bool) -> None:
        self.client = client
        self.tags = tags

    def _stat(self, name: str, labels: dict[str, str]) -> str:
        if name not in _telemetry.METRICS:
            raise KeyError(f"unknown metric {name!r}")
        if not self.tags or not labels:
            return name
        return name + "|#" + ",".join(f"{k}:{_tag_value(v)}" for k, v in labels.items())

    def count(self, name: str, n: float, labels: dict[str, str]) -> None:
        self.client.incr(self._stat(name, labels), n)

    def observe(self, name: str, value: float, labels: dict[str, str]) -> None:
        self.client.timing(self._stat(name, labels), value * 1000.0)


class _OpenTelemetrySink:
    """One SDK counter/histogram per catalogue entry, on the meter ``buquet``."""

    def __init__(self, meter: Any) -> None:
        self.instruments: dict[str, Any] = {}
        for spec in _telemetry.METRICS.values():
            if spec.kind == _telemetry.COUNTER:
                self.instruments[spec.name] = meter.create_counter(spec.name, unit=spec.unit, description=spec.description)
            else:
                self.instruments[spec.name] = meter.create_histogram(
                    spec.name, unit=spec.unit, description=spec.description,
                    explicit_bucket_boundaries_advisory=list(spec.buckets))

    def count(self, name: str, n: float, labels: dict[str, str]) -> None:
        self.instruments[name].add(n, attributes=labels)

    def observe(self, name: str, value: float, labels: dict[str, str]) -> None:
        self.instruments[name].record(value, attributes=labels)


# ----------------------------------------------------------------------------- helpers
def _refuse_second() -> None:
    if _current is not None:
        raise RuntimeError(
            f"Metrics exporter already configured: {_current.name} ({_current.detail}); "
            "one exporter per process")


def _install(exporter: _Exporter) -> None:
    global _current
    _current = exporter
    _telemetry.add_sink(exporter.sink)


def _unavailable(exporter: str, library: str, exc: ImportError) -> MetricsUnavailable:
    return MetricsUnavailable(
        f"the {exporter} metrics exporter needs {library}, which is not installed ({exc}): {_INSTALL_HINT}")


def _check_port(port: Any, field: str, minimum: int = 0) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not minimum <= port <= 65535:
        raise ValidationError(field, f"must be an integer port number {minimum}-65535, got {port!r}")
    return port


def _env_port(var: str, default: int) -> int:
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise ValidationError(var, f"must be an integer port number 1-65535, got {raw!r}") from None
    return _check_port(port, var, minimum=1)


def _reset() -> None:
    """Tests only: stop and forget the process's exporter (the Prometheus server
    closes its port, the OpenTelemetry provider shuts down after a final export, the
    StatsD socket closes), so the next ``enable_*`` is allowed. Not public API: a
    process is meant to configure its exporter once."""
    global _current
    with _lock:
        exporter, _current = _current, None
        if exporter is None:
            return
        _telemetry.remove_sink(exporter.sink)
        exporter.close()


def _prometheus_port() -> int | None:
    """Tests only: the port the Prometheus exporter listens on (after ``port=0``)."""
    exporter = _current
    if exporter is None or exporter.name != "prometheus":
        return None
    return int(exporter.sink.server.server_port)


__all__ = [
    "DEFAULT_OTLP_ENDPOINT", "DEFAULT_PROMETHEUS_PORT", "DEFAULT_STATSD_HOST", "DEFAULT_STATSD_PORT",
    "ENV_EXPORTER", "ENV_OTLP_ENDPOINT", "ENV_PROMETHEUS_PORT", "ENV_STATSD_HOST", "ENV_STATSD_PORT",
    "EXPORTER_ALIASES", "MetricsUnavailable", "auto_configure", "current_exporter", "enable_opentelemetry",
    "enable_prometheus", "enable_statsd",
]
