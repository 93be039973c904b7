"""buquet.metrics: every exporter fed by real worker, monitor and control runs.

Prometheus is scraped over HTTP (in-process worker, and a ``buquet worker`` process
configured from BUQUET_METRICS_EXPORTER); StatsD lines are received on a loopback UDP
socket; OpenTelemetry is read back through the SDK's InMemoryMetricReader; the Lambda
EMF blobs are parsed from stdout. Exporters are process-global: every test ends with
``buquet.metrics._reset()``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import buquet.metrics as metrics
from buquet import (
    MemoryStore, Monitor, PermanentError, Queue, RescheduleError, RetryableError, TaskStatus, ValidationError,
    Worker, WorkerRunOptions, connect,
)
from buquet import _telemetry
from buquet.errors import ConfigurationError

ROOT = Path(__file__).resolve().parent.parent

#: task ids whose first run rescheduled itself (per process)
_RESCHEDULED: set[str] = set()


def add_handlers(worker: Worker) -> Worker:
    """ok → returns; boom → PermanentError; later → RescheduleError(1) once, then returns;
    flaky → RetryableError; slow → sleeps past its 1 s timeout."""

    @worker.task("ok")
    async def ok(payload: Any) -> Any:
        return {"echo": payload}

    @worker.task("boom")
    async def boom(payload: Any) -> Any:
        raise PermanentError("refused")

    @worker.task("later")
    async def later(payload: Any, ctx: Any) -> Any:
        if ctx.task_id not in _RESCHEDULED:
            _RESCHEDULED.add(ctx.task_id)
            raise RescheduleError(1)
        return "done later"

    @worker.task("flaky")
    async def flaky(payload: Any) -> Any:
        raise RetryableError("try again")

    @worker.task("slow")
    async def slow(payload: Any) -> Any:
        await asyncio.sleep(30)

    return worker


async def make_worker() -> Worker:
    """The ``buquet worker tests.test_metrics:make_worker`` factory (store from the environment)."""
    queue = await connect()
    return add_handlers(Worker(queue, f"metrics-{os.getpid()}", queue.shards))


async def submit_mix(queue: Queue) -> None:
    """3 ok, 1 boom, 1 later, 1 flaky (no retries), 1 slow (1 s timeout, no retries)."""
    for n in range(3):
        await queue.submit("ok", {"n": n})
    await queue.submit("boom", None)
    await queue.submit("later", None)
    await queue.submit("flaky", None, max_retries=0)
    await queue.submit("slow", None, timeout_seconds=1, max_retries=0)


#: what one worker run over :func:`submit_mix` records (Prometheus names → {labels: value})
EXPECTED_MIX = {
    "buquet_tasks_submitted_total": {("ok",): 3, ("boom",): 1, ("later",): 1, ("flaky",): 1, ("slow",): 1},
    "buquet_tasks_completed_total": {("ok",): 3, ("later",): 1},
    "buquet_tasks_failed_total": {("boom", "permanent"): 1, ("flaky", "retryable"): 1, ("slow", "timeout"): 1},
    "buquet_tasks_retries_exhausted_total": {("flaky",): 1, ("slow",): 1},
    "buquet_tasks_rescheduled_total": {("later",): 1},
    "buquet_claims_success_total": {("ok",): 3, ("boom",): 1, ("later",): 2, ("flaky",): 1, ("slow",): 1},
    "buquet_task_duration_seconds_count": {("ok",): 3, ("boom",): 1, ("later",): 2, ("flaky",): 1, ("slow",): 1},
    "buquet_reschedule_delay_seconds_count": {("later",): 1},
    "buquet_reschedule_delay_seconds_sum": {("later",): 1.0},
}


@pytest.fixture(autouse=True)
def _no_exporter() -> Any:
    metrics._reset()
    _RESCHEDULED.clear()
    yield
    metrics._reset()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, dict[tuple[str, ...], float]]:
    """``{sample name: {label values (task_type[, reason]): value}}`` of the endpoint
    (``le`` bucket samples keyed by ``(task_type, le)``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, dict[tuple[str, ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = tuple(s.labels[k] for k in ("task_type", "reason", "le") if k in s.labels)
            out.setdefault(s.name, {})[key] = s.value
    return out


def assert_contains(found: dict[str, dict[tuple[str, ...], float]], expected: dict[str, dict[Any, float]]) -> None:
    for name, series in expected.items():
        for labels, value in series.items():
            assert found.get(name, {}).get(labels) == pytest.approx(value), (name, labels, found.get(name))


def run_options(**kw: Any) -> WorkerRunOptions:
    # idle_horizon_ms: keep polling for the 1 s reschedule before exiting when idle
    return WorkerRunOptions(exit_when_idle=True, handle_signals=False, with_monitor=False, poll_interval_ms=20,
                            max_poll_interval_ms=100, idle_horizon_ms=5000, **kw)


# ----------------------------------------------------------------------------- Prometheus
async def test_prometheus_endpoint_counts_a_real_worker_run_per_task_type(live_queue: Queue) -> None:
    metrics.enable_prometheus(0, addr="127.0.0.1")
    assert metrics.current_exporter() == "prometheus"
    port = metrics._prometheus_port()
    assert port
    await submit_mix(live_queue)
    cancelled = await live_queue.submit("ok", {"n": "cancel me"}, schedule_at="2100-01-01T00:00:00Z")
    await live_queue.cancel(cancelled.id)
    expired = await live_queue.submit("ok", {"n": "expire me"}, schedule_at="2100-01-01T00:00:00Z")
    await live_queue.mark_expired(expired.id)

    worker = add_handlers(Worker(live_queue, "w1", live_queue.shards))
    assert await worker.run(run_options()) == 8  # 7 tasks, one of them twice

    found = await asyncio.to_thread(scrape, port)
    expected = {**EXPECTED_MIX, "buquet_tasks_submitted_total": {**EXPECTED_MIX["buquet_tasks_submitted_total"], ("ok",): 5}}
    assert_contains(found, expected)
    assert found["buquet_tasks_cancelled_total"] == {("ok",): 1}
    assert found["buquet_tasks_expired_total"] == {("ok",): 1}
    # nothing else was counted: no conflicts, no lease recovery, ok never failed
    assert found.get("buquet_claims_conflict_total", {}) == {}
    assert found.get("buquet_tasks_timeout_recovered_total", {}) == {}
    assert set(found["buquet_tasks_failed_total"]) == {("boom", "permanent"), ("flaky", "retryable"), ("slow", "timeout")}
    # the histogram: the slow task ran its full 1 s timeout, the others far less
    assert 1.0 <= found["buquet_task_duration_seconds_sum"][("slow",)] < 5
    assert found["buquet_task_duration_seconds_bucket"][("slow", "0.5")] == 0
    assert found["buquet_task_duration_seconds_bucket"][("slow", "2.5")] == 1
    assert found["buquet_task_duration_seconds_bucket"][("ok", "0.5")] == 3
    assert found["buquet_reschedule_delay_seconds_bucket"][("later", "1.0")] == 1


def test_buquet_worker_command_exports_prometheus_from_the_environment(tmp_path: Path) -> None:
    """BUQUET_METRICS_EXPORTER=prometheus buquet worker app:w — scraped while it runs."""
    data = tmp_path / "queue"

    async def submit() -> None:
        queue = await connect(local_dir=str(data))
        async with queue:
            await submit_mix(queue)

    asyncio.run(submit())
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BUQUET_LOCAL_DIR": str(data),
           "BUQUET_METRICS_EXPORTER": "Prometheus", "BUQUET_METRICS_PROMETHEUS_PORT": str(port)}
    for var in ("S3_BUCKET", "S3_ENDPOINT"):
        env.pop(var, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "buquet", "worker", "tests.test_metrics:make_worker", "--poll-interval-ms", "50",
         "--no-monitor"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    found: dict[str, dict[tuple[str, ...], float]] = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # poll the endpoint until the last outcome shows up
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                found = scrape(port)
            except (urllib.error.URLError, ConnectionError):
                found = {}  # not listening yet
            done = found.get("buquet_tasks_completed_total", {})
            failed = found.get("buquet_tasks_failed_total", {})
            if done.get(("later",)) == 1 and done.get(("ok",)) == 3 and len(failed) == 3:
                break
            time.sleep(0.2)
        # the submits happened in this process, the rest in the worker's
        assert_contains(found, {k: v for k, v in EXPECTED_MIX.items() if k != "buquet_tasks_submitted_total"})
        assert "buquet_tasks_submitted_total" not in found
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()


# --------------------------------------------------------------------------------- StatsD
async def test_statsd_lines_reach_a_udp_listener(live_queue: Queue) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    try:
        metrics.enable_statsd("127.0.0.1", sock.getsockname()[1])
        assert metrics.current_exporter() == "statsd"
        await live_queue.submit("ok", 1)
        await live_queue.submit("mail:send", 2)
        await live_queue.submit("boom", 3)
        worker = add_handlers(Worker(live_queue, "w1", live_queue.shards))

        @worker.task("mail:send")
        async def send(payload: Any) -> Any:
            return True

        await worker.run(run_options())
        wanted = {
            "buquet.tasks.submitted:1|c|#task_type:ok",
            "buquet.tasks.submitted:1|c|#task_type:mail:send",
            "buquet.claims.success:1|c|#task_type:ok",
            "buquet.tasks.completed:1|c|#task_type:ok",
            "buquet.tasks.completed:1|c|#task_type:mail:send",
            "buquet.tasks.failed:1|c|#task_type:boom,reason:permanent",
        }
        lines: list[str] = []
        deadline = time.monotonic() + 10
        while not wanted <= set(lines) and time.monotonic() < deadline:
            try:
                data, _ = await asyncio.to_thread(sock.recvfrom, 4096)
            except socket.timeout:
                continue
            lines += data.decode().splitlines()
        assert wanted <= set(lines), lines
        timers = [ln for ln in lines if ln.startswith("buquet.task.duration_seconds:")]
        assert len(timers) == 3 and all(ln.split("|")[1] == "ms" for ln in timers)
        assert {ln.split("|#")[1] for ln in timers} == {"task_type:ok", "task_type:mail:send", "task_type:boom"}
        assert all(0 <= float(ln.split(":")[1].split("|")[0]) < 5000 for ln in timers)  # milliseconds

        metrics._reset()  # untagged lines for a plain StatsD server, with a prefix
        metrics.enable_statsd("127.0.0.1", sock.getsockname()[1], prefix="app", tags=False)
        _telemetry.count("buquet.tasks.completed", task_type="ok")
        data, _ = await asyncio.to_thread(sock.recvfrom, 4096)
        assert data.decode() == "app.buquet.tasks.completed:1|c"
    finally:
        sock.close()


# -------------------------------------------------------------------------- OpenTelemetry
def otel_points(reader: Any) -> dict[str, list[Any]]:
    """``{metric name: data points}`` of everything the reader collects now."""
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics:
        assert rm.resource.attributes["service.name"] == "buquet"
        for sm in rm.scope_metrics:
            assert sm.scope.name == "buquet"
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def by_type(points: list[Any]) -> dict[tuple[str, ...], float]:
    return {tuple(p.attributes[k] for k in ("task_type", "reason") if k in p.attributes): p.value for p in points}


async def test_opentelemetry_records_monitor_recovery_expiry_and_worker_runs(queue: Queue, clock: Any) -> None:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.enable_opentelemetry(metric_reader=reader)
    assert metrics.current_exporter() == "opentelemetry"
    protocol = queue.protocol
    # three tasks claimed by a worker that then dies
    last = await queue.submit("rec", 1, max_retries=0)
    again = await queue.submit("rec", 2)
    silent = await queue.submit("rec", 3)
    leases = {}
    for shard in queue.shards:
        for marker in await protocol.due_markers(shard, clock.now, 100):
            leases[marker.task_id] = (marker, await protocol.claim(marker, "dead", 5, clock.now))
    assert set(leases) == {last.id, again.id, silent.id}
    for tid in (last.id, again.id):  # these two heartbeat once (a lease-index entry)
        await protocol.extend(leases[tid][1], 5)
    deadline = await queue.submit("exp", 4, ttl_seconds=10)
    clock.advance(60)
    assert await Monitor(queue).sweep() == 3  # last: Failed, again: requeued, deadline: Expired
    # the silent one (no heartbeat) is taken over by the next claim of its marker
    taken = await protocol.claim(leases[silent.id][0], "alive", 5, clock.now)
    assert getattr(taken, "task", None) is not None and taken.task.attempt == 2
    assert (await queue.get(last.id)).status == TaskStatus.Failed
    assert (await queue.get(deadline.id)).status == TaskStatus.Expired

    live_queue = await connect(store=MemoryStore())  # real clock: the worker waits for the reschedule
    await live_queue.submit("ok", None)
    await live_queue.submit("later", None)
    await add_handlers(Worker(live_queue, "w1", live_queue.shards)).run(run_options())

    points = otel_points(reader)
    assert by_type(points["buquet.tasks.submitted"]) == {("rec",): 3, ("exp",): 1, ("ok",): 1, ("later",): 1}
    assert by_type(points["buquet.tasks.timeout_recovered"]) == {("rec",): 3}
    assert by_type(points["buquet.tasks.retries_exhausted"]) == {("rec",): 1}
    assert by_type(points["buquet.tasks.expired"]) == {("exp",): 1}
    assert by_type(points["buquet.tasks.completed"]) == {("ok",): 1, ("later",): 1}
    assert by_type(points["buquet.tasks.rescheduled"]) == {("later",): 1}
    durations = {p.attributes["task_type"]: p for p in points["buquet.task.duration_seconds"]}
    assert durations["ok"].count == 1 and durations["later"].count == 2
    assert tuple(durations["ok"].explicit_bounds) == _telemetry.DURATION_BUCKETS
    [delay] = points["buquet.reschedule.delay_seconds"]
    assert delay.attributes == {"task_type": "later"} and delay.count == 1 and delay.sum == 1.0
    assert "buquet.tasks.failed" not in points and "buquet.claims.conflict" not in points


# ------------------------------------------------------------------ errors and environment
def test_a_second_exporter_in_a_process_is_refused() -> None:
    metrics.enable_prometheus(0, addr="127.0.0.1")
    with pytest.raises(RuntimeError, match="Metrics exporter already configured"):
        metrics.enable_statsd()
    with pytest.raises(RuntimeError, match="Metrics exporter already configured"):
        metrics.enable_prometheus(0, addr="127.0.0.1")
    assert metrics.current_exporter() == "prometheus"
    metrics._reset()
    assert metrics.current_exporter() is None
    assert not _telemetry.active()


@pytest.mark.parametrize("value, exporter", [
    ("prometheus", "prometheus"), ("PROMETHEUS", "prometheus"), ("statsd", "statsd"), ("Datadog", "statsd"),
    ("dogstatsd", "statsd"), ("opentelemetry", "opentelemetry"), ("OTLP", "opentelemetry"), (" otel ", "opentelemetry"),
])
def test_auto_configure_reads_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, exporter: str) -> None:
    monkeypatch.setenv("BUQUET_METRICS_EXPORTER", value)
    monkeypatch.setenv("BUQUET_METRICS_PROMETHEUS_PORT", str(free_port()))
    monkeypatch.setenv("BUQUET_METRICS_STATSD_PORT", "18125")
    monkeypatch.setenv("BUQUET_METRICS_OTLP_ENDPOINT", "http://127.0.0.1:1")
    assert metrics.auto_configure() is True
    assert metrics.current_exporter() == exporter
    with pytest.raises(RuntimeError, match="Metrics exporter already configured"):
        metrics.auto_configure()


def test_auto_configure_unset_does_nothing_and_unknown_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUQUET_METRICS_EXPORTER", raising=False)
    assert metrics.auto_configure() is False and metrics.current_exporter() is None
    monkeypatch.setenv("BUQUET_METRICS_EXPORTER", "  ")
    assert metrics.auto_configure() is False
    monkeypatch.setenv("BUQUET_METRICS_EXPORTER", "graphite")
    with pytest.raises(ValueError, match="BUQUET_METRICS_EXPORTER.*'graphite'.*prometheus, statsd, datadog"):
        metrics.auto_configure()
    monkeypatch.setenv("BUQUET_METRICS_EXPORTER", "prometheus")
    monkeypatch.setenv("BUQUET_METRICS_PROMETHEUS_PORT", "ninety")
    with pytest.raises(ValidationError, match="BUQUET_METRICS_PROMETHEUS_PORT"):
        metrics.auto_configure()
    monkeypatch.setenv("BUQUET_METRICS_PROMETHEUS_PORT", "70000")
    with pytest.raises(ValueError, match="BUQUET_METRICS_PROMETHEUS_PORT"):
        metrics.auto_configure()
    assert metrics.current_exporter() is None


def test_bad_arguments_and_a_busy_port(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="port"):
        metrics.enable_prometheus(True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="port"):
        metrics.enable_statsd("127.0.0.1", 0)
    with pytest.raises(ValueError, match="endpoint"):
        metrics.enable_opentelemetry("localhost:4317")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConfigurationError, match="cannot listen"):
            metrics.enable_prometheus(busy.getsockname()[1], addr="127.0.0.1")
    assert metrics.current_exporter() is None


def test_a_missing_library_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for module, enable in (("prometheus_client", metrics.enable_prometheus), ("statsd", metrics.enable_statsd),
                           ("opentelemetry.sdk.metrics", metrics.enable_opentelemetry)):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
        with pytest.raises(ImportError, match=r"pip install 'buquet\[metrics\]'"):
            enable()
        assert metrics.current_exporter() is None


def test_import_buquet_needs_no_exporter_library() -> None:
    code = ("import sys, buquet, buquet.metrics, buquet.worker; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('prometheus_client', 'statsd', 'opentelemetry')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_a_failing_sink_never_breaks_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def count(self, name: str, n: float, labels: dict[str, str]) -> None:
            raise RuntimeError("sink down")

        def observe(self, name: str, value: float, labels: dict[str, str]) -> None:
            raise RuntimeError("sink down")

    sink = Broken()
    _telemetry.add_sink(sink)
    try:
        for _ in range(3):
            _telemetry.count("buquet.tasks.completed", task_type="x")
            _telemetry.observe("buquet.task.duration_seconds", 1.0, task_type="x")
    finally:
        _telemetry.remove_sink(sink)
    assert sum("sink down" in r.getMessage() for r in caplog.records) == 2  # once per metric


# ------------------------------------------------------------------------------ Lambda EMF
def emf_blobs(out: str) -> list[dict[str, Any]]:
    docs = []
    for line in out.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "_aws" in doc:
            docs.append(doc)
    return docs


async def test_lambda_emf_blobs_carry_the_same_names_and_task_type_dimensions(
    live_queue: Queue, capsys: pytest.CaptureFixture[str]
) -> None:
    from lambdas import _common

    await live_queue.submit("ok", 1)
    await live_queue.submit("ok", 2)
    await live_queue.submit("boom", 3)
    capsys.readouterr()
    with _common.library_metrics():
        await add_handlers(Worker(live_queue, "w1", live_queue.shards)).run(run_options())
    blobs = emf_blobs(capsys.readouterr().out)
    by_dims: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for doc in blobs:
        [directive] = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == _common.NAMESPACE
        [dims] = directive["Dimensions"]
        key = tuple((d, doc[d]) for d in sorted(dims))
        units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
        # powertools writes every value as a list; a counter's list holds its one sum
        by_dims[key] = {name: (doc[name] if units[name] == "Seconds" else sum(doc[name]), units[name]) for name in units}
    svc = ("service", _common.SERVICE)
    ok = by_dims[(svc, ("task_type", "ok"))]
    assert ok["buquet.tasks.completed"] == (2, "Count") and ok["buquet.claims.success"] == (2, "Count")
    values, unit = ok["buquet.task.duration_seconds"]
    assert unit == "Seconds" and len(values) == 2 and all(0 <= v < 5 for v in values)
    boom = by_dims[(("reason", "permanent"), svc, ("task_type", "boom"))]
    assert boom == {"buquet.tasks.failed": (1, "Count")}
    assert not _telemetry.active()  # the sink is gone after the invocation


def test_emf_splits_more_than_100_values_of_one_metric(capsys: pytest.CaptureFixture[str]) -> None:
    from lambdas import _common

    sink = _common.EmfSink()
    for i in range(250):
        sink.observe("buquet.task.duration_seconds", i / 1000, {"task_type": "ok"})
    sink.count("buquet.tasks.completed", 250, {"task_type": "ok"})
    capsys.readouterr()
    sink.flush()
    docs = emf_blobs(capsys.readouterr().out)
    values = [v for d in docs for v in d["buquet.task.duration_seconds"]]
    assert sorted(values) == [i / 1000 for i in range(250)]
    assert len(docs) == 3 and all(len(d["buquet.task.duration_seconds"]) <= 100 for d in docs)
    assert all(d["task_type"] == "ok" for d in docs)
    assert sum(sum(d.get("buquet.tasks.completed", [])) for d in docs) == 250  # in the first blob only


def test_no_exporter_costs_next_to_nothing() -> None:
    """Without sinks a recording is a function call and one falsy test (measured, with a
    generous bound so a loaded machine does not fail it)."""
    assert not _telemetry.active()
    n = 100_000
    started = time.perf_counter()
    for _ in range(n):
        _telemetry.count("buquet.tasks.completed", task_type="ok")
    per_call = (time.perf_counter() - started) / n
    assert per_call < 20e-6, per_call
