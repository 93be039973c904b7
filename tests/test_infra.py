"""The CDK app in infra/: template assertions, least-privilege IAM checked against what
the library really sends, and the Docker-free Lambda bundle.

Template tests synthesize with ``buquet:bundle=false`` (a placeholder code asset) so
they take seconds; ``test_real_bundle_*`` build the real bundle with pip for both Lambda
architectures (cached by input hash, so only the first run pays).
Needs ``aws-cdk-lib`` and ``constructs`` (and Node.js, which jsii runs on).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Sequence

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

import aws_cdk as cdk  # noqa: E402
from aws_cdk.assertions import Match, Template  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
sys.path.insert(0, str(INFRA))

from buquet_infra import BuquetStack, from_context  # noqa: E402
from buquet_infra import bundle as bundling  # noqa: E402
from buquet_infra.stack import (  # noqa: E402
    client_statements,
    key_paths,
    long_lived_worker_statements,
    monitor_statements,
    scheduler_statements,
    worker_statements,
)

from buquet import MemoryStore, Monitor, RetryableError, RetryPolicy, Worker, WorkerRunOptions, config, connect  # noqa: E402
from buquet.keys import TOP_LEVEL_DIRS, KeyLayout  # noqa: E402
from buquet._tasks import Lease  # noqa: E402
from buquet.scheduler import Scheduler  # noqa: E402
from buquet.schedules import Schedule  # noqa: E402
from buquet.storage.base import ObjectInfo, ObjectStore, StoredObject  # noqa: E402


def synth(**context: Any) -> Template:
    """Synthesize the stack the way ``cdk synth`` does (cdk.json context + overrides)."""
    ctx = json.loads((INFRA / "cdk.json").read_text())["context"]
    ctx.update({"buquet:bundle": "false", **context})
    app = cdk.App(context=ctx)
    settings = from_context(app.node.try_get_context, cwd=INFRA)
    stack = BuquetStack(app, settings.stack_name, settings=settings)
    return Template.from_stack(stack)


@pytest.fixture(scope="module")
def template() -> Template:
    return synth()


@pytest.fixture(scope="module")
def prefixed() -> Template:
    return synth(**{
        "buquet:prefix": "team-a/jobs",
        "buquet:architecture": "x86_64",
        "buquet:workerConcurrency": "none",
        "buquet:workerTimeout": "600",
        "buquet:workerMemory": "2048",
        "buquet:shardCount": "8",
        "buquet:monitorIntervalMinutes": "5",
        "buquet:taskExpirationDays": "90",
    })


def resources(t: Template, kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in t.to_json()["Resources"].items() if v["Type"] == kind}


def function_id(t: Template, handler: str) -> str:
    [fid] = [k for k, v in resources(t, "AWS::Lambda::Function").items() if v["Properties"].get("Handler") == handler]
    return fid


def role_statements(t: Template, function_logical_id: str) -> list[dict[str, Any]]:
    """Every statement of the inline policies attached to a function's role."""
    fn = t.to_json()["Resources"][function_logical_id]
    role = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    out = []
    for policy in resources(t, "AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            out += policy["Properties"]["PolicyDocument"]["Statement"]
    return out


def arn_text(value: Any, bucket_id: str) -> str:
    """``{"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/tasks/*"]]}`` → ``BUCKET/tasks/*``."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        assert value["Fn::GetAtt"] == [bucket_id, "Arn"], value
        return "BUCKET"
    if isinstance(value, dict) and "Fn::Join" in value:
        return "".join(arn_text(p, bucket_id) for p in value["Fn::Join"][1])
    assert isinstance(value, str), value
    return value


def s3_grants(t: Template, handler: str) -> dict[str, set[str]]:
    """action -> resources (``BUCKET/...``) of a function's S3 statements; ListBucket
    entries are the allowed ``s3:prefix`` patterns (``<none>`` for prefix-less)."""
    [bucket_id] = resources(t, "AWS::S3::Bucket")
    grants: dict[str, set[str]] = {}
    for st in role_statements(t, function_id(t, handler)):
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        if not any(a.startswith("s3:") for a in actions):
            continue
        assert st["Effect"] == "Allow"
        assert all(a in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket") for a in actions), actions
        res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        texts = {arn_text(r, bucket_id) for r in res}
        assert "*" not in texts and all(x.startswith("BUCKET") for x in texts), texts
        for action in actions:
            if action == "s3:ListBucket":
                assert texts == {"BUCKET"}
                cond = st["Condition"]
                if "StringLike" in cond:
                    grants.setdefault(action, set()).update(cond["StringLike"]["s3:prefix"])
                else:
                    assert cond == {"Null": {"s3:prefix": "true"}}
                    grants.setdefault(action, set()).add("<none>")
            else:
                grants.setdefault(action, set()).update(texts)
    return grants


# ----------------------------------------------------------------------- functions
def test_three_python_functions_with_their_settings(template: Template) -> None:
    template.resource_count_is("AWS::Lambda::Function", 4)  # + the CDK bucket-notification handler
    env = {
        "S3_BUCKET": {"Ref": Match.any_value()},
        "S3_REGION": {"Ref": "AWS::Region"},
        "BUQUET_PREFIX": "",
        "BUQUET_SHARD_COUNT": "4",
    }
    template.has_resource_properties("AWS::Lambda::Function", {
        "Handler": "lambdas.worker.handler", "Runtime": "python3.12", "Architectures": ["arm64"],
        "MemorySize": 1024, "Timeout": 900, "ReservedConcurrentExecutions": 10,
        "Environment": {"Variables": Match.object_like({
            **env, "BUQUET_WORKER": "lambdas.demo:make_worker", "BUQUET_SAFETY_MARGIN_SECONDS": "10",
            "BUQUET_WAIT_FOR_DUE_SECONDS": "5", "BUQUET_DRAIN_LAG_SECONDS": "30", "BUQUET_LEASE_SECONDS": "30",
            "BUQUET_MAX_CONCURRENCY": "8", "POWERTOOLS_SERVICE_NAME": "buquet-worker",
        })},
    })
    template.has_resource_properties("AWS::Lambda::Function", {
        "Handler": "lambdas.scheduler.handler", "Runtime": "python3.12", "ReservedConcurrentExecutions": 1,
        "Timeout": 60, "Environment": {"Variables": Match.object_like(env)},
    })
    template.has_resource_properties("AWS::Lambda::Function", {
        "Handler": "lambdas.monitor.handler", "Runtime": "python3.12", "ReservedConcurrentExecutions": 1,
        "Environment": {"Variables": Match.object_like({**env, "BUQUET_STALL_SECONDS": "60"})},
    })
    # one code asset shared by the three
    codes = {json.dumps(v["Properties"]["Code"]) for k, v in resources(template, "AWS::Lambda::Function").items()
             if v["Properties"].get("Handler", "").startswith("lambdas.")}
    assert len(codes) == 1


def test_context_settings_reach_the_template(prefixed: Template) -> None:
    props = resources(prefixed, "AWS::Lambda::Function")[function_id(prefixed, "lambdas.worker.handler")]["Properties"]
    assert props["Architectures"] == ["x86_64"] and props["Timeout"] == 600 and props["MemorySize"] == 2048
    assert "ReservedConcurrentExecutions" not in props
    assert props["Environment"]["Variables"]["BUQUET_PREFIX"] == "team-a/jobs/"
    assert props["Environment"]["Variables"]["BUQUET_SHARD_COUNT"] == "8"
    prefixed.has_resource_properties("AWS::Events::Rule", {"ScheduleExpression": "rate(5 minutes)"})
    prefixed.has_resource_properties("AWS::S3::Bucket", {"LifecycleConfiguration": {"Rules": Match.array_with([
        {"Id": "ExpireTasks", "Prefix": "team-a/jobs/tasks/", "ExpirationInDays": 90, "Status": "Enabled"},
    ])}})


def test_reservations_can_be_dropped_for_small_accounts() -> None:
    t = synth(**{"buquet:reserveConcurrency": "false"})
    for props in (v["Properties"] for v in resources(t, "AWS::Lambda::Function").values()):
        assert "ReservedConcurrentExecutions" not in props


# -------------------------------------------------------------- bucket and events
def test_bucket_is_private_encrypted_tls_only_with_lifecycle_rules(template: Template) -> None:
    template.has_resource_properties("AWS::S3::Bucket", {
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
        "PublicAccessBlockConfiguration": {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True,
        },
        "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        "LifecycleConfiguration": {"Rules": [
            {"Id": "AbortIncompleteUploads", "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}, "Status": "Enabled"},
            {"Id": "ExpireScheduleSlotLedger", "Prefix": "schedules/slots/", "ExpirationInDays": 7, "Status": "Enabled"},
        ]},
    })
    template.has_resource("AWS::S3::Bucket", {"DeletionPolicy": "Retain"})
    template.has_resource_properties("AWS::S3::BucketPolicy", {"PolicyDocument": {"Statement": Match.array_with([
        Match.object_like({"Effect": "Deny", "Action": "s3:*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}),
    ])}})
    # nothing expires the ready or lease index
    rules = next(iter(resources(template, "AWS::S3::Bucket").values()))["Properties"]["LifecycleConfiguration"]["Rules"]
    assert not any(r.get("Prefix", "").startswith(("ready/", "leases/")) for r in rules)


@pytest.mark.parametrize("fixture, prefix, ready_prefix", [
    ("template", "", "ready/"), ("prefixed", "team-a/jobs", "team-a/jobs/ready/"),
])
def test_only_the_ready_prefix_notifies_the_worker(
    request: pytest.FixtureRequest, fixture: str, prefix: str, ready_prefix: str
) -> None:
    assert KeyLayout(prefix).ready_root() == ready_prefix  # the filter is the library's layout
    t: Template = request.getfixturevalue(fixture)
    worker = function_id(t, "lambdas.worker.handler")
    [notifications] = resources(t, "Custom::S3BucketNotifications").values()
    config = notifications["Properties"]["NotificationConfiguration"]
    assert set(config) == {"LambdaFunctionConfigurations"}
    assert config["LambdaFunctionConfigurations"] == [{
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": ready_prefix}]}},
        "LambdaFunctionArn": {"Fn::GetAtt": [worker, "Arn"]},
    }]
    t.has_resource_properties("AWS::Lambda::Permission", {
        "Action": "lambda:InvokeFunction", "Principal": "s3.amazonaws.com",
        "FunctionName": {"Fn::GetAtt": [worker, "Arn"]}, "SourceAccount": {"Ref": "AWS::AccountId"},
    })


def test_scheduler_every_minute_and_monitor_rules(template: Template) -> None:
    rules = resources(template, "AWS::Events::Rule")
    by_target = {r["Properties"]["Targets"][0]["Arn"]["Fn::GetAtt"][0]: r["Properties"] for r in rules.values()}
    assert by_target[function_id(template, "lambdas.scheduler.handler")]["ScheduleExpression"] == "cron(* * * * ? *)"
    assert by_target[function_id(template, "lambdas.monitor.handler")]["ScheduleExpression"] == "rate(1 minute)"
    assert len(rules) == 2


def test_failed_async_invocations_of_all_three_go_to_one_queue(template: Template) -> None:
    [queue_id] = resources(template, "AWS::SQS::Queue")
    configs = resources(template, "AWS::Lambda::EventInvokeConfig")
    targets = {c["Properties"]["FunctionName"]["Ref"]: c["Properties"] for c in configs.values()}
    for handler in ("worker", "scheduler", "monitor"):
        cfg = targets[function_id(template, f"lambdas.{handler}.handler")]
        assert cfg["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert targets[function_id(template, "lambdas.worker.handler")]["MaximumRetryAttempts"] == 2
    assert targets[function_id(template, "lambdas.scheduler.handler")]["MaximumEventAgeInSeconds"] == 60
    template.has_resource_properties("AWS::SQS::Queue", {"MessageRetentionPeriod": 14 * 86400, "SqsManagedSseEnabled": True})


def test_log_retention_and_outputs(template: Template) -> None:
    groups = resources(template, "AWS::Logs::LogGroup")
    assert len(groups) == 3 and all(g["Properties"]["RetentionInDays"] == 30 for g in groups.values())
    for fid in (function_id(template, f"lambdas.{h}.handler") for h in ("worker", "scheduler", "monitor")):
        log_group = template.to_json()["Resources"][fid]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert log_group in groups
    outputs = template.to_json()["Outputs"]
    for name in ("BucketName", "WorkerFunctionName", "SchedulerFunctionName", "MonitorFunctionName",
                 "FailedInvocationsQueueUrl", "ClientPolicyArn", "WorkerPolicyArn"):
        assert name in outputs


# ---------------------------------------------------------------------------- IAM
def test_each_function_gets_only_its_prefixes_and_actions(template: Template) -> None:
    assert s3_grants(template, "lambdas.worker.handler") == {
        "s3:GetObject": {"BUCKET/config.json", "BUCKET/tasks/*", "BUCKET/ready/*"},
        "s3:PutObject": {"BUCKET/tasks/*", "BUCKET/ready/*", "BUCKET/leases/*"},
        "s3:DeleteObject": {"BUCKET/ready/*", "BUCKET/leases/*"},
        "s3:ListBucket": {"ready/*", "<none>"},
    }
    assert s3_grants(template, "lambdas.monitor.handler") == {
        "s3:GetObject": {"BUCKET/config.json", "BUCKET/tasks/*", "BUCKET/ready/*"},
        "s3:PutObject": {"BUCKET/config.json", "BUCKET/tasks/*", "BUCKET/ready/*"},
        "s3:DeleteObject": {"BUCKET/leases/*"},
        "s3:ListBucket": {"leases/*", "ready/*", "<none>"},
    }
    assert s3_grants(template, "lambdas.scheduler.handler") == {
        "s3:GetObject": {"BUCKET/config.json", "BUCKET/schedules/*", "BUCKET/tasks/*"},
        "s3:PutObject": {"BUCKET/config.json", "BUCKET/schedules/runs/*", "BUCKET/schedules/slots/*",
                         "BUCKET/tasks/*", "BUCKET/ready/*"},
        "s3:DeleteObject": {"BUCKET/schedules/slots/*"},
        "s3:ListBucket": {"schedules/defs/*", "schedules/slots/*", "<none>"},
    }


def test_iam_resources_follow_the_key_prefix(prefixed: Template) -> None:
    grants = s3_grants(prefixed, "lambdas.worker.handler")
    assert grants["s3:PutObject"] == {"BUCKET/team-a/jobs/tasks/*", "BUCKET/team-a/jobs/ready/*", "BUCKET/team-a/jobs/leases/*"}
    assert grants["s3:ListBucket"] == {"team-a/jobs/ready/*", "<none>"}


@pytest.mark.parametrize("fixture, prefix", [("template", ""), ("prefixed", "team-a/jobs/")])
def test_policy_prefixes_are_the_key_layouts(request: pytest.FixtureRequest, fixture: str, prefix: str) -> None:
    """Policies are built from KeyLayout.iam_prefixes(), not retyped: every resource and
    s3:prefix of every role lies under one of its values, and every value is used."""
    layout_prefixes = KeyLayout(prefix).iam_prefixes()
    assert set(layout_prefixes) == {"config", *(d.rstrip("/") for d in TOP_LEVEL_DIRS)}
    paths = key_paths(prefix)
    for name, value in layout_prefixes.items():
        assert paths[name] == (value if name == "config" else value + "*")
    for name in ("schedule_defs", "schedule_runs", "schedule_slots"):
        assert paths[name].startswith(layout_prefixes["schedules"])

    def owner(path: str) -> str:
        [name] = [n for n, p in layout_prefixes.items() if path == p or (n != "config" and path.startswith(p))]
        return name

    t: Template = request.getfixturevalue(fixture)
    used: set[str] = set()
    for handler in ("worker", "scheduler", "monitor"):
        for resources_ in s3_grants(t, f"lambdas.{handler}.handler").values():
            used.update(owner(r.removeprefix("BUCKET/")) for r in resources_ if r != "<none>")
    statements = [st.to_statement_json() for fn in (client_statements, long_lived_worker_statements)
                  for st in fn("arn:aws:s3:::bkt", prefix)]
    for st in statements:
        res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        used.update(owner(r.removeprefix("arn:aws:s3:::bkt/")) for r in res if r != "arn:aws:s3:::bkt")
        for pattern in st.get("Condition", {}).get("StringLike", {}).get("s3:prefix", []):
            used.add(owner(pattern))
    assert used == set(layout_prefixes)


# IAM evaluation against the requests the library really sends --------------------
class RecordingStore(ObjectStore):
    """A MemoryStore that records each request as (IAM action, resource or prefix),
    with a settable server clock (reading it is a HeadBucket, as on S3)."""

    def __init__(self, inner: MemoryStore, now: datetime) -> None:
        super().__init__()
        self.inner = inner
        self.now = now
        self.log: list[tuple[str, str | None]] = []
        self.recording = True

    def _rec(self, action: str, resource: str | None) -> None:
        if self.recording:
            self.log.append((action, resource))

    @property
    def description(self) -> str:
        return "recording"

    async def get(self, key: str) -> StoredObject:
        self._rec("s3:GetObject", key)
        return await self.inner.get(key)

    async def head(self, key: str) -> ObjectInfo:
        self._rec("s3:GetObject", key)  # HeadObject is authorised by s3:GetObject
        return await self.inner.head(key)

    async def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        self._rec("s3:PutObject", key)
        return await self.inner.put(key, data, if_match=if_match, if_none_match=if_none_match)

    async def delete(self, key: str) -> None:
        self._rec("s3:DeleteObject", key)
        await self.inner.delete(key)

    async def delete_many(self, keys: Sequence[str]) -> None:
        for key in keys:  # DeleteObjects checks s3:DeleteObject per key
            self._rec("s3:DeleteObject", key)
        await self.inner.delete_many(keys)

    async def list(self, prefix: str, *, start_after: str | None = None, limit: int = 1000) -> list[ObjectInfo]:
        self._rec("s3:ListBucket", prefix)
        return await self.inner.list(prefix, start_after=start_after, limit=limit)

    async def server_time(self) -> datetime:
        self._rec("s3:ListBucket", None)  # HeadBucket
        return self.now


def _like(pattern: str, value: str) -> bool:
    return re.fullmatch("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), value, re.S) is not None


def allowed(statements: list[Any], action: str, resource: str | None) -> bool:
    """A minimal IAM evaluator for the statement shapes the stack uses (Allow only)."""
    for st in (s.to_statement_json() for s in statements):
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        if action not in actions:
            continue
        res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if action == "s3:ListBucket":
            cond = st.get("Condition", {})
            if resource is None and cond == {"Null": {"s3:prefix": "true"}}:
                return True
            if resource is not None and "StringLike" in cond:
                if any(_like(p, resource) for p in cond["StringLike"]["s3:prefix"]):
                    return True
            continue
        if any(_like(r, f"arn:aws:s3:::bkt/{resource}") for r in res):
            return True
    return False


@pytest.mark.parametrize("prefix", ["", "team-a/jobs/"])
async def test_the_policies_allow_every_request_the_library_makes_and_no_more(prefix: str) -> None:
    """Run each function's code path on a recording store and check every request
    against the statements the stack grants that function — including a retry, a
    heartbeat, a claim from a submit marker's task copy, lease recovery, a stall poke,
    and a scheduler tick that fires and prunes its ledger."""
    bucket_arn = "arn:aws:s3:::bkt"
    mem = MemoryStore()
    rec = RecordingStore(mem, datetime(2026, 11, 29, 12, 0, 30, tzinfo=timezone.utc))

    async def queue_for(role: str) -> Any:
        rec.log.clear()
        return await connect(store=rec, prefix=prefix, shard_count=4 if role != "worker" else None)

    # the client: connect (creates config.json), submit, schedules, inspection
    client = await queue_for("client")
    policy = RetryPolicy(initial_interval_ms=0, max_interval_ms=0, jitter_percent=0.0)
    flaky = await client.submit("flaky", {"n": 1}, retry_policy=policy)
    await client.submit("slow", {"n": 2})
    orphan = await client.submit("quick", {"n": 3})
    await client.get(flaky.id)
    await client.list("0")
    await client.list_ready("0")
    await client.create_schedule("tick", "quick", {"from": "cron"}, "* * * * *")
    await client.disable_schedule("tick")
    await client.enable_schedule("tick")
    await client.trigger_schedule("tick")
    await client.get_schedule_last_run("tick")
    await client.list_schedules()
    client_log = list(rec.log)
    # the submit of `orphan` died between its marker and its task object
    rec.recording = False
    await mem.delete(client.layout.task(orphan.shard, orphan.id))
    rec.recording = True

    # the worker: claims (one from the marker's task copy), a retry, a heartbeat
    worker_queue = await queue_for("worker")
    worker = Worker(worker_queue, "w", worker_queue.shards)
    attempts: list[int] = []

    @worker.task("flaky")
    async def flaky_handler(payload: Any) -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise RetryableError("once")
        return "ok"

    @worker.task("slow")
    async def slow(payload: Any) -> Any:
        await asyncio.sleep(1.3)  # past lease_seconds / 3: one heartbeat
        return "ok"

    @worker.task("quick")
    async def quick(payload: Any) -> Any:
        return "ok"

    counts = await worker.run_once(
        [], remaining_seconds=lambda: 600.0, options=WorkerRunOptions(lease_seconds=3, delete_flush_ms=0)
    )
    assert counts.get("retried") == 1 and counts.get("completed", 0) >= 3
    worker_log = list(rec.log)

    # an invocation that died after its first heartbeat, then lease recovery + a poke
    rec.recording = False
    lost = await client.submit("quick", {"n": 4})
    now = await client.time()
    marker = next(m for m in await client.protocol.due_markers(lost.shard, now, 100) if m.task_id == lost.id)
    lease = await client.protocol.claim(marker, "dead", 3, now)
    assert isinstance(lease, Lease)
    await mem.delete_many(await client.protocol.extend(lease, 3))
    await client.submit("quick", {"n": 5})  # a ready task nobody was told about
    rec.now += timedelta(minutes=5)
    rec.recording = True
    monitor_queue = await queue_for("monitor")
    assert await Monitor(monitor_queue).sweep() == 1
    assert await Monitor(monitor_queue).poke_stalled(stall_seconds=60) >= 1
    monitor_log = list(rec.log)

    # the scheduler: a tick that fires a slot (and prunes the ledger)
    rec.recording = False
    created = rec.now - timedelta(minutes=3)
    old = Schedule(id="old", task_type="quick", input=None, cron="* * * * *", enabled=True, created_at=created)
    await mem.put(client.schedules.layout.schedule_def("old"), json.dumps(old.to_dict()).encode())
    rec.recording = True
    scheduler_queue = await queue_for("scheduler")
    fired = await Scheduler(scheduler_queue).tick()
    assert fired
    scheduler_log = list(rec.log)

    def did(log: list[tuple[str, str | None]], action: str, start: str | None) -> bool:
        return any(a == action and (r is None if start is None else (r or "").startswith(prefix + start)) for a, r in log)

    # the worker's only write under ready/ was the retry's new marker: its writes
    # announce new ready tasks and nothing else (no invocation storm)
    ready_puts = [r for a, r in worker_log if a == "s3:PutObject" and (r or "").startswith(prefix + "ready/")]
    assert len(ready_puts) == 1 and f".{flaky.id}." in ready_puts[0]

    # the paths worth checking were really taken
    assert did(worker_log, "s3:PutObject", "leases/")  # heartbeat
    assert did(worker_log, "s3:GetObject", "ready/")  # claim from a submit marker's copy
    assert did(worker_log, "s3:PutObject", "ready/")  # retry requeue
    assert did(worker_log, "s3:DeleteObject", "ready/") and did(worker_log, "s3:ListBucket", None)
    assert did(monitor_log, "s3:DeleteObject", "leases/") and did(monitor_log, "s3:PutObject", "ready/")
    assert did(scheduler_log, "s3:PutObject", "schedules/slots/") and did(scheduler_log, "s3:PutObject", "ready/")
    assert did(client_log, "s3:PutObject", "config.json") and did(client_log, "s3:PutObject", "schedules/runs/")

    for name, log, statements in (
        ("client", client_log, client_statements(bucket_arn, prefix)),
        ("worker", worker_log, worker_statements(bucket_arn, prefix)),
        ("monitor", monitor_log, monitor_statements(bucket_arn, prefix)),
        ("scheduler", scheduler_log, scheduler_statements(bucket_arn, prefix)),
    ):
        denied = sorted({(a, r) for a, r in log if not allowed(statements, a, r)}, key=str)
        assert not denied, f"{name} would be denied: {denied}"
        assert log, name

    # a long-lived worker does what the worker and the monitor functions do
    for action, resource in worker_log + monitor_log:
        assert allowed(long_lived_worker_statements(bucket_arn, prefix), action, resource), (action, resource)

    # and the grants are not wider than needed: the worker cannot touch schedules,
    # the scheduler cannot touch leases, nobody but the client writes definitions
    assert not allowed(worker_statements(bucket_arn, prefix), "s3:GetObject", f"{prefix}schedules/defs/x.json")
    assert not allowed(scheduler_statements(bucket_arn, prefix), "s3:PutObject", f"{prefix}leases/0/1.x")
    assert not allowed(scheduler_statements(bucket_arn, prefix), "s3:PutObject", f"{prefix}schedules/defs/x.json")
    assert not allowed(monitor_statements(bucket_arn, prefix), "s3:DeleteObject", f"{prefix}tasks/0/x.json")
    assert not allowed(client_statements(bucket_arn, prefix), "s3:PutObject", f"{prefix}leases/0/1.x")
    assert not allowed(worker_statements(bucket_arn, prefix), "s3:ListBucket", f"{prefix}tasks/0/")


# ------------------------------------------------------------------------ settings
@pytest.mark.parametrize("key, value, message", [
    ("buquet:architecture", "sparc", "arm64 or x86_64"),
    ("buquet:prefix", "a*b/", "without"),
    ("buquet:workerTimeout", "901", "30 to 900"),
    ("buquet:worker", "myapp.tasks:make_worker", "no buquet:appPath"),
    ("buquet:worker", "not a spec", "module:attribute"),
    ("buquet:appPath", "/no/such/dir", "does not exist"),
    ("buquet:bundle", "maybe", "true or false"),
])
def test_bad_context_values_stop_the_synth(key: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        from_context({key: value}.get)


def test_context_defaults_and_cli_strings() -> None:
    cfg = from_context({"buquet:prefix": "jobs", "buquet:workerConcurrency": "none", "buquet:removeBucket": "true"}.get)
    assert cfg.prefix == "jobs/" and cfg.ready_prefix == "jobs/ready/" == KeyLayout("jobs").ready_root()
    assert cfg.worker_concurrency is None and cfg.remove_bucket is True
    assert from_context({}.get).architecture == "arm64"
    assert from_context({"buquet:architecture": "aarch64"}.get).architecture == "arm64"


def test_context_defaults_are_the_library_defaults() -> None:
    """One source for every default: buquet.config (the functions' environment then
    carries the same values the handlers would assume without it)."""
    cfg = from_context({}.get)
    assert cfg.shard_count == config.DEFAULT_SHARD_COUNT
    assert cfg.max_concurrency == config.DEFAULT_MAX_CONCURRENCY
    assert cfg.lease_seconds == config.DEFAULT_LEASE_SECONDS
    assert cfg.safety_margin_seconds == config.DEFAULT_SAFETY_MARGIN_SECONDS
    assert cfg.wait_for_due_seconds == config.DEFAULT_WAIT_FOR_DUE_SECONDS
    assert cfg.drain_lag_seconds == config.DEFAULT_DRAIN_LAG_SECONDS
    assert cfg.stall_seconds == config.DEFAULT_STALL_SECONDS
    assert from_context({"buquet:shardCount": str(config.MAX_SHARD_COUNT)}.get).shard_count == config.MAX_SHARD_COUNT
    with pytest.raises(ValueError, match=f"1 to {config.MAX_SHARD_COUNT}"):
        from_context({"buquet:shardCount": str(config.MAX_SHARD_COUNT + 1)}.get)


# -------------------------------------------------------------------------- bundle
def test_platform_tags_cover_every_manylinux_up_to_amazon_linux_2023() -> None:
    tags = bundling.platform_tags("arm64")
    assert "manylinux_2_24_aarch64" in tags  # obstore's aarch64 wheels
    assert "manylinux_2_34_aarch64" in tags and "manylinux2014_aarch64" in tags
    assert not any(t.endswith("x86_64") for t in tags)
    assert "manylinux_2_17_x86_64" in bundling.platform_tags("x86_64")


def test_bundle_hash_follows_the_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = tmp_path / "myapp"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "tasks.py").write_text("async def make_worker(): ...\n")
    d1 = bundling.input_digest(app, "arm64")
    assert d1 == bundling.input_digest(app, "arm64")
    assert d1 != bundling.input_digest(app, "x86_64")
    (app / "__pycache__").mkdir()
    (app / "__pycache__" / "tasks.cpython-312.pyc").write_bytes(b"junk")
    assert bundling.input_digest(app, "arm64") == d1  # caches do not count
    (app / "tasks.py").write_text("async def make_worker(): return None\n")
    assert bundling.input_digest(app, "arm64") != d1

    # the app is copied under its own name next to the handlers; pip is faked here
    calls: list[list[str]] = []

    def fake_pip(target: Path, architecture: str, args: list[str]) -> None:
        calls.append(args)
        (target / "buquet").mkdir(parents=True)
        (target / "bin").mkdir()

    monkeypatch.setattr(bundling, "_pip_install", fake_pip)
    (app / "requirements.txt").write_text("six\n")
    built = bundling.build(app, "arm64", cache=tmp_path / "cache", log=False)
    assert built.built and (built.path / "myapp" / "tasks.py").is_file()
    assert (built.path / "lambdas" / "worker.py").is_file() and not (built.path / "bin").exists()
    assert not list(built.path.rglob("__pycache__"))
    assert calls[0][-2:] == ["-r", str(app / "requirements.txt")]
    again = bundling.build(app, "arm64", cache=tmp_path / "cache", log=False)
    assert not again.built and again.path == built.path and len(calls) == 1

    # old bundles of an architecture are evicted, the newest kept
    paths = [built.path]
    for n in range(bundling.KEEP_PER_ARCHITECTURE + 1):
        (app / "tasks.py").write_text(f"VERSION = {n}\n")
        paths.append(bundling.build(app, "arm64", cache=tmp_path / "cache", log=False).path)
        time.sleep(0.01)  # distinct mtimes
    kept = sorted((tmp_path / "cache").glob("arm64-*"))
    assert len(kept) == bundling.KEEP_PER_ARCHITECTURE and set(paths[-bundling.KEEP_PER_ARCHITECTURE:]) == set(kept)


ELF_MACHINE = {"arm64": 0xB7, "x86_64": 0x3E}


@pytest.mark.parametrize("architecture", ["x86_64", "arm64"])
def test_real_bundle_is_built_without_docker_for_both_architectures(architecture: str) -> None:
    """pip, for the Lambda platform, from PyPI (cached by input hash after the first run)."""
    started = time.monotonic()
    built = bundling.build(None, architecture)
    for name in ("buquet", "lambdas", "obstore", "aws_lambda_powertools", "boto3", "croniter"):
        assert (built.path / name).is_dir(), name
    assert not (built.path / "bin").exists() and not list(built.path.rglob("__pycache__"))
    [native] = [p for p in (built.path / "obstore").glob("*.so")]
    header = native.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == ELF_MACHINE[architecture]
    size = bundling.directory_size(built.path)
    assert size < 250 * 1024 * 1024  # Lambda's unzipped limit
    print(f"\n{architecture}: {'built' if built.built else 'cached'} in {time.monotonic() - started:.1f}s, {size / 1e6:.1f} MB")
    t0 = time.monotonic()
    assert not bundling.build(None, architecture).built
    assert time.monotonic() - t0 < 5  # a repeated synth reuses it

    if architecture == "x86_64" and platform.machine() == "x86_64":
        # self-contained: the handlers import with nothing but the bundle and the stdlib
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "import lambdas.worker, lambdas.scheduler, lambdas.monitor, obstore, buquet; print('ok')"
        )
        env = {"PATH": os.environ.get("PATH", ""), "AWS_REGION": "us-east-1", "HOME": str(built.path)}
        out = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", code, str(built.path)], capture_output=True, text=True, env=env)
        assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
