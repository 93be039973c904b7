"""The Lambda handlers (lambdas/), invoked the way Lambda invokes them: with event JSON
shaped like the real ones (tests/events/) and a fake context, against SeaweedFS.

The handlers open their own queue from the environment (S3_BUCKET, S3_ENDPOINT,
S3_REGION, BUQUET_PREFIX, BUQUET_WORKER), inside their own event loop, so these tests
are plain functions: they prepare the bucket with ``asyncio.run`` and call the handler
like the Lambda runtime does. The Worker factory they load is ``make_worker`` below.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import re
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import quote_plus

import pytest
from aws_lambda_powertools.utilities.data_classes import S3Event

from buquet import MemoryStore, Queue, RetryableError, RetryPolicy, TaskStatus, ValidationError, Worker, connect
from buquet._tasks import Lease
from buquet.errors import ConfigurationError
from buquet.imports import build_worker, load_object, load_worker_factory, parse_spec
from buquet.invocation import InvocationResult, run_invocation
from buquet.schedules import Schedule

import lambdas
from lambdas import _common
from lambdas import monitor as monitor_lambda
from lambdas import scheduler as scheduler_lambda
from lambdas import worker as worker_lambda

EVENTS = Path(__file__).parent / "events"
T = TypeVar("T")

#: (task type, input, worker id) of every handler run of the test worker
RUNS: list[tuple[str, Any, str]] = []


async def make_worker() -> Worker:
    """The BUQUET_WORKER factory of these tests (``tests.test_lambdas:make_worker``)."""
    queue = await connect(prefix=os.environ.get("BUQUET_PREFIX", ""))
    worker = Worker(queue, lambdas.invocation_worker_id("test"), queue.shards)

    @worker.task("record")
    async def record(payload: Any) -> Any:
        RUNS.append(("record", payload, worker.worker_id))
        return {"echo": payload}

    @worker.task("flaky")
    async def flaky(payload: Any) -> Any:
        RUNS.append(("flaky", payload, worker.worker_id))
        if sum(1 for t, _, _ in RUNS if t == "flaky") == 1:
            raise RetryableError("first attempt fails")
        return "second time lucky"

    @worker.task("mail:send")
    async def send(payload: Any) -> Any:
        RUNS.append(("mail:send", payload, worker.worker_id))
        return {"sent": True}

    return worker


NOT_A_FACTORY = 42


# --------------------------------------------------------------------------- helpers
class FakeContext:
    """The attributes of the Lambda context the handlers and powertools read."""

    function_name = "buquet-test-fn"
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:buquet-test-fn"
    log_group_name = "/aws/lambda/buquet-test-fn"
    log_stream_name = "2026/11/29/[$LATEST]0123456789abcdef"

    def __init__(self, remaining_seconds: float = 900.0) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + remaining_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def s3_event(bucket: str, *keys: str, event_name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """tests/events/s3-put.json with one record per key, keys URL-encoded the way S3
    encodes them in notifications (``quote_plus`` of the UTF-8 key)."""
    template = json.loads((EVENTS / "s3-put.json").read_text())
    record = template["Records"][0]
    records = []
    for i, key in enumerate(keys):
        r = copy.deepcopy(record)
        r["eventName"] = event_name
        r["s3"]["bucket"]["name"] = bucket
        r["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
        r["s3"]["object"]["key"] = quote_plus(key, safe="/")
        r["s3"]["object"]["sequencer"] = f"{i:016X}"
        records.append(r)
    return {"Records": records}


def scheduled_event() -> dict[str, Any]:
    event = json.loads((EVENTS / "eventbridge-scheduled.json").read_text())
    event["time"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:00Z")
    return event


def with_queue(env: dict[str, str], fn: Callable[[Queue], Awaitable[T]]) -> T:
    """Run ``fn(queue)`` in its own event loop on the handlers' bucket and prefix."""

    async def go() -> T:
        queue = await connect(
            endpoint=env["S3_ENDPOINT"], bucket=env["S3_BUCKET"], region="us-east-1", prefix=env["BUQUET_PREFIX"]
        )
        try:
            return await fn(queue)
        finally:
            await queue.close()

    return asyncio.run(go())


async def ready_keys(queue: Queue) -> list[str]:
    keys: list[str] = []
    for shard in queue.shards:
        keys += [i.key for i in await queue.store.list(queue.layout.ready_prefix(shard))]
    return keys


async def ready_key_of(queue: Queue, task_id: str) -> str:
    [key] = [k for k in await ready_keys(queue) if f".{task_id}." in k]
    return key


def emf(out: str) -> dict[str, float]:
    """Metric values of the EMF blobs printed to stdout (cold start blob excluded)."""
    values: dict[str, float] = {}
    for line in out.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if not isinstance(doc, dict) or "_aws" not in doc:
            continue
        names = [m["Name"] for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
        if names == ["ColdStart"]:
            continue
        assert doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "buquet"
        for name in names:
            value = doc[name]
            values[name] = sum(value) if isinstance(value, list) else value
    return values


def library_emf(out: str) -> dict[tuple[tuple[str, str], ...], dict[str, list[float]]]:
    """The library's metrics (the ``buquet.*`` names of buquet.metrics) in the EMF blobs
    printed to stdout: ``{((dimension, value), ...) without service: {name: values}}``."""
    found: dict[tuple[tuple[str, str], ...], dict[str, list[float]]] = {}
    for line in out.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if not isinstance(doc, dict) or "_aws" not in doc:
            continue
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            names = [m["Name"] for m in directive["Metrics"] if m["Name"].startswith("buquet.")]
            if not names:
                continue
            assert directive["Namespace"] == "buquet" and doc["service"] == _common.SERVICE
            dims = tuple((d, doc[d]) for ds in directive["Dimensions"] for d in sorted(ds) if d != "service")
            group = found.setdefault(dims, {})
            for name in names:
                value = doc[name]
                group.setdefault(name, []).extend(value if isinstance(value, list) else [value])
    return found


def log_lines(out: str) -> list[dict[str, Any]]:
    docs = []
    for line in out.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "level" in doc and "message" in doc:
            docs.append(doc)
    return docs


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str, s3_bucket: str) -> dict[str, str]:
    """The environment infra/ gives the functions, pointed at a fresh SeaweedFS bucket."""
    env = {
        "S3_BUCKET": s3_bucket,
        "S3_ENDPOINT": s3_endpoint,
        "S3_REGION": "us-east-1",
        "BUQUET_PREFIX": "",
        "BUQUET_WORKER": "tests.test_lambdas:make_worker",
        "BUQUET_SAFETY_MARGIN_SECONDS": "10",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    RUNS.clear()
    return env


# ------------------------------------------------------------------- worker handler
@pytest.mark.s3
@pytest.mark.parametrize("prefix", ["", "équipe α/queue 1/"], ids=["root", "non-ascii-prefix"])
def test_worker_runs_the_task_its_s3_event_announces(
    lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], prefix: str
) -> None:
    lambda_env["BUQUET_PREFIX"] = prefix
    monkeypatch.setenv("BUQUET_PREFIX", prefix)

    async def submit(q: Queue) -> tuple[str, str]:
        task = await q.submit("mail:send", {"to": "zoë@example.com"}, timeout_seconds=30)
        return task.id, await ready_key_of(q, task.id)

    task_id, key = with_queue(lambda_env, submit)
    event = s3_event(lambda_env["S3_BUCKET"], key)
    encoded = event["Records"][0]["s3"]["object"]["key"]
    assert "%3A" in encoded  # the ':' of the task type
    if prefix:
        assert "+" in encoded and "%C3%A9" in encoded  # space and 'é' as S3 encodes them
    # powertools decodes the first record's key the same way (per-record keys it does not)
    assert S3Event(event).object_key == key
    capsys.readouterr()

    context = FakeContext()
    result = worker_lambda.handler(event, context)

    assert result["ready_keys"] == 1 and result["claimed"] == 1 and result["completed"] == 1
    assert isinstance(result["queue_lag_ms"], int) and result["queue_lag_ms"] >= 0
    assert RUNS == [("mail:send", {"to": "zoë@example.com"}, f"test-{context.aws_request_id}")]
    task = with_queue(lambda_env, lambda q: q.get(task_id))
    assert task is not None and task.status == TaskStatus.Completed and task.output == {"sent": True}
    assert with_queue(lambda_env, ready_keys) == []  # the marker was deleted before the invocation ended

    out = capsys.readouterr().out
    values = emf(out)
    assert values["TasksClaimed"] == 1 and values["TasksCompleted"] == 1
    assert values["TasksRetried"] == 0 and values["TasksFailed"] == 0 and values["ClaimConflicts"] == 0
    assert values["EventReadyKeys"] == 1 and values["QueueLag"] >= 0
    # the library's own metrics: buquet.metrics' names, task_type as a dimension
    lib = library_emf(out)
    mail = lib[(("task_type", "mail:send"),)]
    assert mail["buquet.tasks.completed"] == [1] and mail["buquet.claims.success"] == [1]
    assert len(mail["buquet.task.duration_seconds"]) == 1 and 0 <= mail["buquet.task.duration_seconds"][0] < 30
    assert "buquet.tasks.submitted" not in mail  # submitted by the producer, not this invocation
    lines = log_lines(out)
    completed = [d for d in lines if d.get("task_id") == task_id and "completed" in d["message"]]
    assert completed, "the library's 'task <id>: completed' line carries task_id"
    assert all(d.get("function_request_id") == context.aws_request_id for d in completed)


@pytest.mark.s3
def test_duplicate_late_and_out_of_order_events_run_each_task_once(
    lambda_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    async def submit(q: Queue) -> list[tuple[str, str]]:
        out = []
        for n in range(3):
            task = await q.submit("record", {"n": n}, timeout_seconds=30)
            out.append((task.id, await ready_key_of(q, task.id)))
        return out

    tasks = with_queue(lambda_env, submit)
    bucket = lambda_env["S3_BUCKET"]
    first_key = tasks[0][1]
    # one event carrying the same record twice
    r1 = worker_lambda.handler(s3_event(bucket, first_key, first_key), FakeContext())
    assert r1["ready_keys"] == 1 and r1["completed"] >= 1
    # the same event delivered again (Lambda async retry / S3 at-least-once): task 0
    # does not run again (the invocation may pick up other due work instead)
    r2 = worker_lambda.handler(s3_event(bucket, first_key, first_key), FakeContext())
    assert [p["n"] for _, p, _ in RUNS].count(0) == 1
    # the other two tasks' events arrive late, in reverse order, twice
    late = s3_event(bucket, tasks[2][1], tasks[1][1])
    r3 = worker_lambda.handler(late, FakeContext())
    r4 = worker_lambda.handler(late, FakeContext())
    assert sum(r.get("completed", 0) for r in (r1, r2, r3, r4)) == 3
    assert sorted(p["n"] for _, p, _ in RUNS) == [0, 1, 2]  # each task ran exactly once

    async def check(q: Queue) -> None:
        for task_id, _ in tasks:
            t = await q.get(task_id)
            assert t is not None and t.status == TaskStatus.Completed and t.attempt == 1

    with_queue(lambda_env, check)


@pytest.mark.s3
def test_a_retry_is_announced_by_its_own_new_marker_and_nothing_else(
    lambda_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    policy = RetryPolicy(initial_interval_ms=500, max_interval_ms=500, jitter_percent=0.0)

    async def submit(q: Queue) -> tuple[str, str]:
        task = await q.submit("flaky", None, retry_policy=policy)
        return task.id, await ready_key_of(q, task.id)

    task_id, key = with_queue(lambda_env, submit)
    result = worker_lambda.handler(s3_event(lambda_env["S3_BUCKET"], key), FakeContext())
    assert result["retried"] == 1 and result.get("completed", 0) == 0
    # the invocation's writes left exactly one object under ready/: the requeue marker
    # (due 0.5 s later) — the one new event, for a task that is ready again
    [requeued] = with_queue(lambda_env, ready_keys)
    assert requeued != key and f".{task_id}.flaky" in requeued
    result = worker_lambda.handler(s3_event(lambda_env["S3_BUCKET"], requeued), FakeContext())
    assert result["completed"] == 1  # waited for the backoff to end, then ran it
    task = with_queue(lambda_env, lambda q: q.get(task_id))
    assert task is not None and task.status == TaskStatus.Completed and task.attempt == 2
    assert with_queue(lambda_env, ready_keys) == []


@pytest.mark.s3
def test_little_time_left_leaves_long_tasks_for_a_later_invocation(
    lambda_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    async def submit(q: Queue) -> tuple[str, str, str, str]:
        long = await q.submit("record", {"kind": "long"}, timeout_seconds=300)
        short = await q.submit("record", {"kind": "short"}, timeout_seconds=5)
        return long.id, await ready_key_of(q, long.id), short.id, await ready_key_of(q, short.id)

    long_id, long_key, short_id, short_key = with_queue(lambda_env, submit)
    event = s3_event(lambda_env["S3_BUCKET"], long_key, short_key)

    # 30 s left - 10 s margin: the 5 s task fits, the 300 s one does not
    result = worker_lambda.handler(event, FakeContext(remaining_seconds=30))
    assert result["claimed"] == 1 and result["completed"] == 1
    assert [p["kind"] for _, p, _ in RUNS] == ["short"]
    long_task = with_queue(lambda_env, lambda q: q.get(long_id))
    assert long_task is not None and long_task.status == TaskStatus.Pending and long_task.attempt == 0
    assert long_key in with_queue(lambda_env, ready_keys)  # still announced for later

    # a later invocation with enough time runs it
    result = worker_lambda.handler(s3_event(lambda_env["S3_BUCKET"], long_key), FakeContext(remaining_seconds=900))
    assert result["completed"] == 1
    assert [p["kind"] for _, p, _ in RUNS] == ["short", "long"]
    done = with_queue(lambda_env, lambda q: q.get(long_id))
    assert done is not None and done.status == TaskStatus.Completed and done.attempt == 1


@pytest.mark.s3
def test_a_task_too_long_for_the_invocation_is_a_metric_and_a_warning_naming_it(
    lambda_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    async def submit(q: Queue) -> tuple[str, str, str]:
        long = await q.submit("record", {"kind": "long"}, timeout_seconds=300)
        short = await q.submit("record", {"kind": "short"}, timeout_seconds=5)
        return long.id, await ready_key_of(q, long.id), await ready_key_of(q, short.id)

    long_id, long_key, short_key = with_queue(lambda_env, submit)
    capsys.readouterr()
    result = worker_lambda.handler(s3_event(lambda_env["S3_BUCKET"], long_key, short_key), FakeContext(remaining_seconds=60))
    assert result["too_long"] == 1 and result["completed"] == 1
    out = capsys.readouterr().out
    assert emf(out)["TasksTooLong"] == 1 and emf(out)["TasksCompleted"] == 1
    [line] = [d for d in log_lines(out) if d.get("too_long")]
    assert line["level"] == "WARNING" and line["task_id"] == long_id and line["task_type"] == "record"
    assert "long-lived worker" in line["message"] and "buquet worker" in line["message"]
    assert re.search(r"exceeds (4\d|50) s this invocation", line["message"]), line["message"]  # 60 s - 10 s margin

    # an invocation with time enough runs it: zero too long, no warning
    result = worker_lambda.handler(s3_event(lambda_env["S3_BUCKET"], long_key), FakeContext(remaining_seconds=900))
    out = capsys.readouterr().out
    assert result["completed"] == 1 and "too_long" not in result
    assert emf(out)["TasksTooLong"] == 0 and not [d for d in log_lines(out) if d.get("too_long")]


@pytest.mark.s3
def test_event_for_a_task_due_in_a_moment_waits_for_it(
    lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def submit(q: Queue) -> tuple[str, str]:
        task = await q.submit("record", {"at": "soon"}, schedule_at=await q.time() + timedelta(seconds=2))
        return task.id, await ready_key_of(q, task.id)

    task_id, key = with_queue(lambda_env, submit)
    monkeypatch.setenv("BUQUET_WAIT_FOR_DUE_SECONDS", "0")
    result = worker_lambda.handler(s3_event(lambda_env["S3_BUCKET"], key), FakeContext())
    assert result.get("claimed", 0) == 0 and result["queue_lag_ms"] == 0  # not due, not waited for

    monkeypatch.setenv("BUQUET_WAIT_FOR_DUE_SECONDS", "5")
    result = worker_lambda.handler(s3_event(lambda_env["S3_BUCKET"], key), FakeContext())
    assert result["completed"] == 1
    task = with_queue(lambda_env, lambda q: q.get(task_id))
    assert task is not None and task.status == TaskStatus.Completed
    assert task.completed_at is not None and task.completed_at >= task.available_at


@pytest.mark.s3
def test_s3_test_event_and_foreign_records_just_poll(lambda_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    task = with_queue(lambda_env, lambda q: q.submit("record", {"n": 1}))
    test_event = json.loads((EVENTS / "s3-test-event.json").read_text())
    result = worker_lambda.handler(test_event, FakeContext())
    # no keys, but the worker polls its shards and finds the task
    assert result["ready_keys"] == 0 and result["completed"] == 1
    done = with_queue(lambda_env, lambda q: q.get(task.id))
    assert done is not None and done.status == TaskStatus.Completed


@pytest.mark.s3
def test_a_prompt_event_runs_its_own_task_and_a_late_one_drains_the_backlog(
    lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def submit(q: Queue) -> tuple[str, str, str]:
        announced = await q.submit("record", {"n": "announced"})
        silent = await q.submit("record", {"n": "silent"})  # its event was lost
        return announced.id, await ready_key_of(q, announced.id), silent.id

    announced_id, key, silent_id = with_queue(lambda_env, submit)
    submitted = time.monotonic()
    result = worker_lambda.handler(s3_event(lambda_env["S3_BUCKET"], key), FakeContext())
    assert result["completed"] == 1 and result["drained"] is False
    silent = with_queue(lambda_env, lambda q: q.get(silent_id))
    assert silent is not None and silent.status == TaskStatus.Pending  # not polled for

    # the monitor re-announces the stalled task; its event is old news: drain
    silent_key = with_queue(lambda_env, lambda q: ready_key_of(q, silent_id))
    monkeypatch.setenv("BUQUET_DRAIN_LAG_SECONDS", "0")
    # lag is measured on the store's clock, read from 1-second Date headers (±1 s
    # between two clients): let it be clearly positive
    time.sleep(max(0.0, submitted + 1.5 - time.monotonic()))
    result = worker_lambda.handler(s3_event(lambda_env["S3_BUCKET"], key), FakeContext())  # a late duplicate
    assert result["drained"] is True and result["completed"] == 1
    assert [p["n"] for _, p, _ in RUNS] == ["announced", "silent"]
    assert silent_key not in with_queue(lambda_env, ready_keys)


@pytest.mark.s3
def test_the_demo_worker_cdk_deploys_by_default_echoes(
    lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BUQUET_WORKER", "lambdas.demo:make_worker")

    async def submit(q: Queue) -> tuple[str, str]:
        task = await q.submit("echo", {"hello": "λ"})
        return task.id, await ready_key_of(q, task.id)

    task_id, key = with_queue(lambda_env, submit)
    context = FakeContext()
    assert worker_lambda.handler(s3_event(lambda_env["S3_BUCKET"], key), context)["completed"] == 1
    task = with_queue(lambda_env, lambda q: q.get(task_id))
    assert task is not None and task.output == {"hello": "λ"}
    assert task.worker_id == f"lambda-{context.aws_request_id}"


def test_event_keys_decodes_every_record_and_keeps_only_object_created_of_the_bucket() -> None:
    keys = ["ready/0/0000000000001.a.t", "p q/ready/1/0000000000002.b.x:y", "é/ready/2/0000000000003.c.t"]
    event = s3_event("bkt", *keys)
    event["Records"] += s3_event("other-bucket", "ready/0/0000000000004.d.t")["Records"]
    event["Records"] += s3_event("bkt", "ready/0/0000000000005.e.t", event_name="ObjectRemoved:Delete")["Records"]
    event["Records"] += s3_event("bkt", keys[0])["Records"]  # duplicate
    assert worker_lambda.event_keys(S3Event(event), "bkt") == keys
    assert len(worker_lambda.event_keys(S3Event(event), None)) == 4
    assert worker_lambda.event_keys(S3Event(json.loads((EVENTS / "s3-test-event.json").read_text())), "bkt") == []


def test_event_keys_accepts_the_raw_event_and_never_raises() -> None:
    keys = ["ready/0/0000000000001.a.t"]
    assert worker_lambda.event_keys(s3_event("bkt", *keys), "bkt") == keys  # a plain dict, as Lambda passes it
    decoded = worker_lambda.decode_event(s3_event("bkt", *keys), "bkt")
    assert decoded == worker_lambda.DecodedEvent(keys, None)
    test_event = json.loads((EVENTS / "s3-test-event.json").read_text())
    assert worker_lambda.decode_event(test_event, "bkt") == worker_lambda.DecodedEvent([], None)  # not a problem
    for name, event in MALFORMED_S3_EVENTS.items():
        decoded = worker_lambda.decode_event(event, "bkt")
        assert decoded.keys == [] and decoded.problem, name


def _record(**fields: Any) -> dict[str, Any]:
    return {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", **fields}


#: events the worker cannot read (defect 10): each costs one warning line, never an exception
MALFORMED_S3_EVENTS: dict[str, Any] = {
    "null": None,
    "list": [{"Records": []}],
    "string": "Records",
    "number": 42,
    "no-records": {"detail-type": "Scheduled Event", "source": "aws.events"},
    "empty-object": {},
    "records-null": {"Records": None},
    "records-an-object": {"Records": {"s3": {"object": {"key": "ready/0/x"}}}},
    "records-a-string": {"Records": "ready/0/x"},
    "record-a-string": {"Records": ["ready/0/0000000000001.a.t"]},
    "record-without-s3": {"Records": [_record()]},
    "s3-a-string": {"Records": [_record(s3="ready/0/x")]},
    "record-without-object": {"Records": [_record(s3={"bucket": {"name": "bkt"}})]},
    "object-without-key": {"Records": [_record(s3={"bucket": {"name": "bkt"}, "object": {"size": 1}})]},
    "key-a-number": {"Records": [_record(s3={"bucket": {"name": "bkt"}, "object": {"key": 12}})]},
    "key-null": {"Records": [_record(s3={"bucket": {"name": "bkt"}, "object": {"key": None}})]},
    "event-name-a-list": {"Records": [_record(eventName=["ObjectCreated:Put"], s3={"object": {"key": "k"}})]},
    "bucket-without-name": {"Records": [_record(s3={"bucket": {}, "object": {"key": "ready/0/x"}})]},
}


def warnings_in(out: str) -> list[str]:
    return [d["message"] for d in log_lines(out) if d["level"] == "WARNING"]


@pytest.mark.s3
@pytest.mark.parametrize("name", list(MALFORMED_S3_EVENTS))
def test_a_malformed_worker_event_is_one_warning_and_the_worker_polls(
    lambda_env: dict[str, str], capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """Defect 10: raw KeyError/AttributeError/TypeError failed the invocation, and Lambda
    retried the same unreadable event twice more. Now: one warning line, a normal
    return, and the worker polls its shards as for any event that names no task."""
    event = copy.deepcopy(MALFORMED_S3_EVENTS[name])
    for record in (event.get("Records") if isinstance(event, dict) else None) or []:
        bucket = record.get("s3", {}).get("bucket") if isinstance(record, dict) and isinstance(record.get("s3"), dict) else None
        if isinstance(bucket, dict) and "name" in bucket:
            bucket["name"] = lambda_env["S3_BUCKET"]
    task = with_queue(lambda_env, lambda q: q.submit("record", {"n": name}))
    capsys.readouterr()

    result = worker_lambda.handler(event, FakeContext())

    assert result["ready_keys"] == 0 and result["queue_lag_ms"] is None
    assert result["drained"] is True and result["completed"] == 1  # it polled and found the task
    [warning] = warnings_in(capsys.readouterr().out)
    assert warning.startswith("malformed S3 event: ") and warning.endswith("polling the shards instead")
    done = with_queue(lambda_env, lambda q: q.get(task.id))
    assert done is not None and done.status == TaskStatus.Completed


@pytest.mark.s3
def test_the_readable_records_of_a_partly_malformed_event_still_run(
    lambda_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    async def submit(q: Queue) -> tuple[str, str]:
        task = await q.submit("record", {"n": "good"})
        return task.id, await ready_key_of(q, task.id)

    task_id, key = with_queue(lambda_env, submit)
    event = s3_event(lambda_env["S3_BUCKET"], key)
    event["Records"] += [None, _record(s3={"object": {}})]
    capsys.readouterr()
    result = worker_lambda.handler(event, FakeContext())
    assert result["ready_keys"] == 1 and result["completed"] == 1 and result["drained"] is False
    [warning] = warnings_in(capsys.readouterr().out)
    assert "2 of 3 records unreadable" in warning and warning.endswith("using the readable records")


#: EventBridge-side oddities for the scheduler and the monitor, which do not depend on their event
ODD_SCHEDULED_EVENTS: dict[str, Any] = {
    "null": None,
    "list": [],
    "string": "tick",
    "empty-object": {},
    "time-a-number": {"detail-type": "Scheduled Event", "source": "aws.events", "time": 1764432000},
    "time-null": {"detail-type": "Scheduled Event", "time": None},
    "s3-event": {"Records": []},
}


@pytest.mark.s3
@pytest.mark.parametrize("name", list(ODD_SCHEDULED_EVENTS))
def test_scheduler_and_monitor_run_as_usual_on_any_event_with_one_warning(
    lambda_env: dict[str, str], capsys: pytest.CaptureFixture[str], name: str
) -> None:
    event = ODD_SCHEDULED_EVENTS[name]
    capsys.readouterr()
    result = scheduler_lambda.handler(copy.deepcopy(event), FakeContext(60))
    assert result["submitted"] == [] and result["next_due"] is None
    [warning] = warnings_in(capsys.readouterr().out)
    assert "not an EventBridge scheduled event" in warning and "running as usual" in warning

    assert monitor_lambda.handler(copy.deepcopy(event), FakeContext(60)) == {"recovered": 0, "poked": 0}
    [warning] = warnings_in(capsys.readouterr().out)
    assert "not an EventBridge scheduled event" in warning

    # a real scheduled event: no warning
    monitor_lambda.handler(scheduled_event(), FakeContext(60))
    assert warnings_in(capsys.readouterr().out) == []


# ------------------------------------------------------------- invocation policy
async def _memory_worker() -> tuple[Worker, MemoryStore, list[Any]]:
    store = MemoryStore()
    queue = await connect(store=store)
    worker = Worker(queue, "w", queue.shards)
    ran: list[Any] = []

    @worker.task("t")
    async def t(payload: Any) -> Any:
        ran.append(payload)
        return payload

    return worker, store, ran


async def test_run_invocation_runs_a_prompt_event_without_listing_and_drains_otherwise() -> None:
    worker, store, ran = await _memory_worker()
    queue = worker.queue
    first = await queue.submit("t", 1)
    await queue.submit("t", 2)  # its event was lost
    key = queue.layout.ready_for(first)

    lists = store.request_counts.get("list", 0)
    result = await run_invocation(worker, [key, key, "tasks/0/not-a-marker.json"], remaining_seconds=lambda: 900.0)
    assert isinstance(result, InvocationResult)
    assert result.ready_keys == 1 and result.drained is False and result.counters.get("completed") == 1
    assert result.queue_lag_ms is not None and result.queue_lag_ms >= 0
    assert ran == [1] and store.request_counts.get("list", 0) == lists  # just the task it names: no LIST

    # an event that names no task: poll the shards ("drain")
    result = await run_invocation(worker, [], remaining_seconds=lambda: 900.0)
    assert result.drained is True and result.ready_keys == 0 and result.queue_lag_ms is None
    assert result.counters.get("completed") == 1 and ran == [1, 2]

    # a prompt event whose oldest task has waited longer than drain_lag_seconds drains too
    late = await queue.submit("t", 3)
    await queue.submit("t", 4)
    await asyncio.sleep(0.05)
    result = await run_invocation(worker, [queue.layout.ready_for(late)], remaining_seconds=lambda: 900.0,
                                  drain_lag_seconds=0)
    assert result.drained is True and result.counters.get("completed") == 2 and sorted(ran) == [1, 2, 3, 4]


async def test_run_invocation_waits_only_for_tasks_due_within_wait_for_due_seconds() -> None:
    worker, store, ran = await _memory_worker()
    queue = worker.queue
    soon = await queue.submit("t", "soon", schedule_at=await queue.time() + timedelta(seconds=1))
    later = await queue.submit("t", "later", schedule_at=await queue.time() + timedelta(seconds=60))
    lists = store.request_counts.get("list", 0)

    # due in a minute: not waited for, nothing runs, no LIST (the monitor re-announces it)
    result = await run_invocation(worker, [queue.layout.ready_for(later)], remaining_seconds=lambda: 900.0)
    assert result == InvocationResult({}, 0, 1, False) and ran == []
    # due in a second, but the invocation has no time for the wait: nothing either
    result = await run_invocation(worker, [queue.layout.ready_for(soon)], remaining_seconds=lambda: 10.5,
                                  safety_margin_seconds=10)
    assert result.counters == {} and ran == []
    assert store.request_counts.get("list", 0) == lists

    started = time.monotonic()
    result = await run_invocation(worker, [queue.layout.ready_for(soon)], remaining_seconds=lambda: 900.0)
    assert result.counters.get("completed") == 1 and ran == ["soon"] and not result.drained
    assert time.monotonic() - started >= 0.5


async def test_run_invocation_checks_its_settings() -> None:
    worker, _, _ = await _memory_worker()
    for name in ("safety_margin_seconds", "wait_for_due_seconds", "drain_lag_seconds"):
        with pytest.raises(ValidationError, match=name):
            await run_invocation(worker, [], remaining_seconds=lambda: 900.0, **{name: -1})
    with pytest.raises(ValidationError, match="max_concurrency"):
        await run_invocation(worker, [], remaining_seconds=lambda: 900.0, max_concurrency=0)


# ------------------------------------------------------------------- monitor handler
@pytest.mark.s3
def test_monitor_recovers_the_lease_of_a_killed_invocation(
    lambda_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    policy = RetryPolicy(initial_interval_ms=0, max_interval_ms=0, jitter_percent=0.0)

    async def submit_and_abandon(q: Queue) -> tuple[str, Lease]:
        task = await q.submit("record", {"n": "crashy"}, retry_policy=policy, timeout_seconds=30)
        now = await q.time()
        marker = next(m for m in await q.protocol.due_markers(task.shard, now, 100) if m.task_id == task.id)
        lease = await q.protocol.claim(marker, "killed-invocation", 2, now)
        assert isinstance(lease, Lease)
        # one heartbeat moved the task to the lease index, then the invocation was killed
        await q.store.delete_many(await q.protocol.extend(lease, 2))
        assert await ready_keys(q) == []
        return task.id, lease

    task_id, lease = with_queue(lambda_env, submit_and_abandon)
    assert lease.lease_key is not None

    result = monitor_lambda.handler(scheduled_event(), FakeContext(60))
    assert result == {"recovered": 0, "poked": 0}  # the lease is still live
    deadline = time.monotonic() + 30
    while True:  # bounded poll: the lease lapses ~2 s after the heartbeat
        result = monitor_lambda.handler(scheduled_event(), FakeContext(60))
        if result["recovered"] or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert result["recovered"] == 1
    out = capsys.readouterr().out
    assert emf(out)["LeasesRecovered"] == 1
    assert library_emf(out)[(("task_type", "record"),)] == {"buquet.tasks.timeout_recovered": [1]}

    pending = with_queue(lambda_env, lambda q: q.get(task_id))
    assert pending is not None and pending.status == TaskStatus.Pending and pending.attempt == 1
    assert "lease of attempt 1 expired (worker killed-invocation stopped)" in (pending.last_error or "")
    # the requeue wrote a new ready marker: its S3 event runs the task again
    key = with_queue(lambda_env, lambda q: ready_key_of(q, task_id))
    result = worker_lambda.handler(s3_event(lambda_env["S3_BUCKET"], key), FakeContext())
    assert result["completed"] == 1
    done = with_queue(lambda_env, lambda q: q.get(task_id))
    assert done is not None and done.status == TaskStatus.Completed and done.attempt == 2
    assert with_queue(lambda_env, lambda q: q.store.list(q.layout.lease_prefix(done.shard))) == []


@pytest.mark.s3
def test_monitor_re_announces_a_stalled_ready_task(
    lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def submit(q: Queue) -> tuple[str, str, datetime]:
        task = await q.submit("record", {"n": "stalled"})
        key = await ready_key_of(q, task.id)
        return task.id, key, (await q.store.head(key)).last_modified

    task_id, key, written = with_queue(lambda_env, submit)
    monkeypatch.setenv("BUQUET_STALL_SECONDS", "0")
    time.sleep(1.1)  # S3 Last-Modified has whole seconds: let the re-write be visible
    result = monitor_lambda.handler(scheduled_event(), FakeContext(60))
    assert result == {"recovered": 0, "poked": 1}
    rewritten = with_queue(lambda_env, lambda q: q.store.head(key))
    assert rewritten.last_modified > written  # a new PUT: S3 sends a new ObjectCreated event
    task = with_queue(lambda_env, lambda q: q.get(task_id))
    assert task is not None and task.status == TaskStatus.Pending  # nothing else changed


# ----------------------------------------------------------------- scheduler handler
@pytest.mark.s3
def test_scheduler_fires_a_due_schedule_once_even_when_invoked_twice(
    lambda_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    async def create(q: Queue) -> Schedule:
        # created ten minutes ago, so a slot is due now (create_schedule() would wait
        # for the next minute boundary)
        created = (await q.time()) - timedelta(minutes=10)
        schedule = Schedule(
            id="every-minute", task_type="record", input={"from": "cron"}, cron="* * * * *",
            enabled=True, created_at=created,
        )
        body = json.dumps(schedule.to_dict()).encode()
        await q.store.put(q.schedules.layout.schedule_def(schedule.id), body, if_none_match=True)
        return schedule

    with_queue(lambda_env, create)
    first = scheduler_lambda.handler(scheduled_event(), FakeContext(60))
    # a warm environment keeps the parsed definitions (plain data, no loop objects)
    cached = scheduler_lambda._definition_cache[(lambda_env["S3_BUCKET"], lambda_env["S3_ENDPOINT"], "")]
    assert "every-minute" in cached
    second = scheduler_lambda.handler(scheduled_event(), FakeContext(60))  # duplicate / retried invocation
    assert len(first["submitted"]) == 1 and first["fired"] == 1
    assert second["submitted"] == []
    out = capsys.readouterr().out
    values = emf(out)
    assert values["TasksSubmitted"] == 0  # the last blob printed is the second invocation's
    assert library_emf(out) == {(("task_type", "record"),): {"buquet.tasks.submitted": [1]}}  # both invocations

    async def tasks_in_bucket(q: Queue) -> list[Any]:
        return [t for shard in q.shards for t in await q.list(shard)]

    tasks = with_queue(lambda_env, tasks_in_bucket)
    assert [t.id for t in tasks] == first["submitted"]
    assert tasks[0].task_type == "record" and tasks[0].input == {"from": "cron"}

    # and the worker runs it from the event of the marker the scheduler wrote
    key = with_queue(lambda_env, lambda q: ready_key_of(q, tasks[0].id))
    result = worker_lambda.handler(s3_event(lambda_env["S3_BUCKET"], key), FakeContext())
    assert result["completed"] == 1 and RUNS[0][1] == {"from": "cron"}


# ---------------------------------------------------------------- configuration
def test_settings_are_parsed_once_per_environment_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_BUCKET", "b1")
    monkeypatch.delenv("S3_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    s1 = _common.settings()
    assert s1 is _common.settings() and s1.bucket == "b1" and s1.region == "eu-west-1"
    monkeypatch.setenv("S3_BUCKET", "b2")
    assert _common.settings().bucket == "b2"
    monkeypatch.setenv("BUQUET_MAX_CONCURRENCY", "zero")
    with pytest.raises(ConfigurationError, match="BUQUET_MAX_CONCURRENCY"):
        _common.settings()
    monkeypatch.setenv("BUQUET_MAX_CONCURRENCY", "4")
    monkeypatch.setenv("BUQUET_WORKER", "no-colon")
    with pytest.raises(ConfigurationError, match="module:attribute"):
        _common.settings()
    monkeypatch.setenv("BUQUET_LEASE_SECONDS", "nan")  # buquet.config's parser rejects NaN and inf
    with pytest.raises(ConfigurationError, match="BUQUET_LEASE_SECONDS"):
        _common.parse_settings({"BUQUET_LEASE_SECONDS": "nan"})


def test_settings_defaults_are_the_library_defaults() -> None:
    from buquet import config

    cfg = _common.parse_settings({})
    assert (cfg.safety_margin_seconds, cfg.max_concurrency, cfg.lease_seconds) == (
        config.DEFAULT_SAFETY_MARGIN_SECONDS, config.DEFAULT_MAX_CONCURRENCY, config.DEFAULT_LEASE_SECONDS)
    assert (cfg.wait_for_due_seconds, cfg.drain_lag_seconds, cfg.stall_seconds) == (
        config.DEFAULT_WAIT_FOR_DUE_SECONDS, config.DEFAULT_DRAIN_LAG_SECONDS, config.DEFAULT_STALL_SECONDS)
    assert cfg.shard_count is None and cfg.worker_spec is None and cfg.prefix == ""
    # the worker handler hands exactly these to run_invocation
    assert cfg.invocation_options() == {
        "safety_margin_seconds": 10.0, "wait_for_due_seconds": 5.0, "drain_lag_seconds": 30.0,
        "max_concurrency": 8, "lease_seconds": 30.0,
    }
    with pytest.raises(ConfigurationError, match="BUQUET_SHARD_COUNT"):
        _common.parse_settings({"BUQUET_SHARD_COUNT": str(config.MAX_SHARD_COUNT + 1)})


def test_worker_factory_must_be_a_callable_returning_a_worker() -> None:
    with pytest.raises(ConfigurationError, match="BUQUET_WORKER is not set"):
        _common.load_factory(None)
    with pytest.raises(ConfigurationError, match="cannot import"):
        _common.load_factory("no_such_module_xyz:make")
    with pytest.raises(ConfigurationError, match="no attribute"):
        _common.load_factory("tests.test_lambdas:missing")
    with pytest.raises(ConfigurationError, match="not a Worker factory"):
        _common.load_factory("tests.test_lambdas:NOT_A_FACTORY")
    assert _common.load_factory("tests.test_lambdas:make_worker") is make_worker

    async def not_a_worker() -> str:
        return "nope"

    with pytest.raises(ConfigurationError, match="BUQUET_WORKER factory returned str"):
        _common.run_fresh(build_worker(not_a_worker, name="BUQUET_WORKER"))
    with pytest.raises(ConfigurationError, match="module:attribute"):
        _common.load_factory("no-colon")


def not_a_worker_factory() -> str:
    """A sync "factory" that returns something else (``buquet worker`` must say so)."""
    return "nope"


def test_one_import_path_loader_for_the_cli_and_the_lambdas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_spec("pkg.mod:attr.sub") == ("pkg.mod", ["attr", "sub"])
    assert parse_spec("  pkg:attr \n") == ("pkg", ["attr"])
    for bad in ("no-colon", ":attr", "mod:", "a..b:c", "mod:a.", "mod:a-b", "mod:a:b", "a b:c", "", 5, None):
        with pytest.raises(ValidationError, match="MY_WORKER: must be"):
            parse_spec(bad, name="MY_WORKER")
    with pytest.raises(ValidationError) as info:
        load_object("no-colon")
    assert info.value.field == "spec"

    assert load_object("tests.test_lambdas:make_worker") is make_worker
    assert load_object("tests.test_lambdas:FakeContext.function_name", name="X") == "buquet-test-fn"
    with pytest.raises(ConfigurationError, match=r"^X='no_such_module_xyz:m': cannot import module 'no_such_module_xyz': No module"):
        load_object("no_such_module_xyz:m", name="X")
    with pytest.raises(ConfigurationError, match=r"'tests.test_lambdas' has no attribute 'missing'"):
        load_object("tests.test_lambdas:missing")
    with pytest.raises(ConfigurationError, match=r"'tests.test_lambdas.FakeContext' has no attribute 'nope'"):
        load_object("tests.test_lambdas:FakeContext.nope")

    with pytest.raises(ConfigurationError, match="is int, not a buquet.Worker or a factory of one"):
        load_worker_factory("tests.test_lambdas:NOT_A_FACTORY", allow_worker=True)
    assert load_worker_factory("tests.test_lambdas:not_a_worker_factory") is not_a_worker_factory

    async def build_each() -> None:
        w = Worker(await connect(store=MemoryStore()), "w", ["0"])
        assert await build_worker(w) is w  # a Worker as it is
        assert await build_worker(lambda: w) is w  # a plain factory
        built = await build_worker(make_worker)  # an async one
        assert built.worker_id == "test-local" and "record" in built.task_types
        with pytest.raises(ConfigurationError, match="the Worker factory returned str"):
            await build_worker(not_a_worker_factory)
        with pytest.raises(ConfigurationError, match="is int, not a Worker factory"):
            await build_worker(42)  # type: ignore[arg-type]

    monkeypatch.delenv("S3_BUCKET", raising=False)
    monkeypatch.setenv("BUQUET_LOCAL_DIR", str(tmp_path / "q"))  # make_worker's connect()
    asyncio.run(build_each())


def test_buquet_worker_command_uses_the_same_loader() -> None:
    from click.testing import CliRunner

    from buquet.cli import cli

    runner = CliRunner()
    r = runner.invoke(cli, ["worker", "no-colon"])
    assert r.exit_code == 2 and "must be module:attribute" in r.output
    r = runner.invoke(cli, ["worker", "no_such_module_xyz:make"])
    assert r.exit_code == 2 and "cannot import module 'no_such_module_xyz'" in r.output
    r = runner.invoke(cli, ["worker", "tests.test_lambdas:NOT_A_FACTORY"])
    assert r.exit_code == 2 and "is int, not a buquet.Worker or a factory of one" in r.output
    r = runner.invoke(cli, ["worker", "tests.test_lambdas:not_a_worker_factory"])
    assert r.exit_code == 1 and "the WORKER factory returned str, not a buquet.Worker" in r.output


def test_a_worker_object_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def build() -> Worker:
        return Worker(await connect(store=MemoryStore()), "w", ["0"])

    monkeypatch.setattr(sys.modules[__name__], "A_WORKER", asyncio.run(build()), raising=False)
    with pytest.raises(ConfigurationError, match="is a Worker object"):
        _common.load_factory(f"{__name__}:A_WORKER")


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_worker_handler_without_a_worker_spec_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_BUCKET", "b")
    monkeypatch.delenv("BUQUET_WORKER", raising=False)
    with pytest.raises(ConfigurationError, match="BUQUET_WORKER"):
        worker_lambda.handler(s3_event("b", "ready/0/0000000000001.a.t"), FakeContext())


def test_task_id_filter_and_invocation_worker_id() -> None:
    task_id = "0193a4f2-7c1e-7d2a-9b3c-4d5e6f708192"  # task ids are UUID strings
    record = logging.LogRecord("buquet.worker", logging.INFO, __file__, 1, "task %s: completed", (task_id,), None)
    assert _common.TaskIdFilter().filter(record) and record.task_id == task_id  # type: ignore[attr-defined]
    for message in ("no id here", "request 8f5c2b1e-0000-4000-8000-000000000001-extra", "hex " + "a" * 32):
        plain = logging.LogRecord("buquet.worker", logging.INFO, __file__, 1, message, (), None)
        _common.TaskIdFilter().filter(plain)
        assert not hasattr(plain, "task_id"), message
    assert lambdas.invocation_worker_id() == "lambda-local"
    token = lambdas.current_request_id.set("8f5c2b1e-0000-4000-8000-000000000001")
    try:
        assert lambdas.invocation_worker_id("w") == "w-8f5c2b1e-0000-4000-8000-000000000001"
    finally:
        lambdas.current_request_id.reset(token)


def test_cold_start_in_a_fresh_interpreter_logs_each_library_line_once(tmp_path: Path) -> None:
    """A new process, as a Lambda execution environment: the user module is imported at
    init, the service name comes from POWERTOOLS_SERVICE_NAME (a logger other than
    ``buquet``), and the library's lines still come out once, as JSON, with the
    Lambda context and the task id. The queue lives in a local directory here."""
    import subprocess

    script = f"""
import asyncio, json, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from buquet import connect
from lambdas import worker
from tests.test_lambdas import FakeContext, s3_event, ready_key_of

async def submit():
    q = await connect()
    t = await q.submit("record", {{"n": 1}})
    return t.id, await ready_key_of(q, t.id)

task_id, key = asyncio.run(submit())
print("RESULT", task_id, json.dumps(worker.handler(s3_event("any-bucket", key), FakeContext())))
"""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "BUQUET_LOCAL_DIR": str(tmp_path / "queue"),
        "BUQUET_WORKER": "tests.test_lambdas:make_worker",
        "POWERTOOLS_SERVICE_NAME": "buquet-worker",
    }
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    [result_line] = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    _, task_id, payload = result_line.split(" ", 2)
    assert json.loads(payload)["completed"] == 1
    lines = log_lines(out.stdout)
    completed = [d for d in lines if d["message"] == f"task {task_id}: completed"]
    assert len(completed) == 1, out.stdout
    assert completed[0]["service"] == "buquet-worker" and completed[0]["task_id"] == task_id
    assert completed[0]["function_name"] == FakeContext.function_name
    assert "completed" not in out.stderr  # nothing went to the root logger's handler as well


def test_handlers_leave_the_process_logging_configuration_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Importing lambdas (done at collection) and invoking a handler must not change
    the ``buquet`` logger for the rest of the process — other tests and a CLI sharing
    the process rely on it — while the invocation's library lines do come out as JSON."""
    lib = logging.getLogger("buquet")
    before = (list(lib.handlers), lib.level, lib.propagate)
    monkeypatch.delenv("S3_BUCKET", raising=False)
    monkeypatch.setenv("BUQUET_LOCAL_DIR", str(tmp_path / "q"))
    monkeypatch.setenv("BUQUET_WORKER", "tests.test_lambdas:make_worker")
    RUNS.clear()

    async def submit() -> tuple[str, str]:
        q = await connect()
        t = await q.submit("record", {"n": "local"})
        return t.id, await ready_key_of(q, t.id)

    task_id, key = asyncio.run(submit())
    capsys.readouterr()
    assert worker_lambda.handler(s3_event("any", key), FakeContext())["completed"] == 1
    assert (list(lib.handlers), lib.level, lib.propagate) == before
    assert any(d.get("task_id") == task_id for d in log_lines(capsys.readouterr().out))


def test_run_fresh_does_not_wait_for_a_runaway_thread() -> None:
    import threading

    release = threading.Event()

    async def main() -> str:
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, release.wait, 30)  # a plain handler past its timeout
        await asyncio.sleep(0)
        return "done"

    started = time.monotonic()
    try:
        assert _common.run_fresh(main()) == "done"
        assert time.monotonic() - started < 5
    finally:
        release.set()
