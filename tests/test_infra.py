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
from aws_cdk.assertions import Annotations, Match, Template  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
sys.path.insert(0, str(INFRA))

from buquet_infra import BuquetQueue, BuquetQueueProps, BuquetStack, from_context  # noqa: E402
from buquet_infra import bundle as bundling  # noqa: E402
from buquet_infra.stack import (  # noqa: E402
    client_statements,
    conditional_write_statement,
    key_paths,
    long_lived_worker_statements,
    monitor_statements,
    scheduler_statements,
    worker_statements,
)

from buquet import (  # noqa: E402
    MemoryStore, Monitor, RetryableError, RetryPolicy, TaskStatus, Worker, WorkerRunOptions, config, connect,
)
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
    # + the deploy-time config function + the CDK bucket-notification handler
    template.resource_count_is("AWS::Lambda::Function", 5)
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


def test_every_function_logs_to_a_group_with_retention_cdk_notification_handler_included(template: Template) -> None:
    groups = resources(template, "AWS::Logs::LogGroup")
    assert len(groups) == 5 and all(g["Properties"]["RetentionInDays"] == 30 for g in groups.values())
    functions = resources(template, "AWS::Lambda::Function")
    assert len(functions) == 5
    for fid, fn in functions.items():  # ours and CDK's bucket-notification function alike
        assert fn["Properties"]["LoggingConfig"]["LogGroup"]["Ref"] in groups, fid
    [handler] = [fid for fid in functions if fid.startswith("BucketNotificationsHandler")]
    assert "Handler" in functions[handler]["Properties"] and not functions[handler]["Properties"]["Handler"].startswith("lambdas.")
    t = synth(**{"buquet:logRetentionDays": "7"})
    assert {g["Properties"]["RetentionInDays"] for g in resources(t, "AWS::Logs::LogGroup").values()} == {7}


OUTPUTS = ("BucketName", "QueueUri", "ShardCount", "Region", "WorkerFunctionName", "SchedulerFunctionName",
           "MonitorFunctionName", "FailedInvocationsQueueUrl", "ClientPolicyArn", "WorkerPolicyArn", "DashboardName")


def test_outputs_are_exported_for_other_stacks(template: Template, prefixed: Template) -> None:
    outputs = template.to_json()["Outputs"]
    assert set(outputs) == set(OUTPUTS)  # no KeyPrefix output without a prefix: outputs cannot be empty
    for name, out in outputs.items():
        assert out["Export"] == {"Name": f"Buquet-{name}"}, name
    [config_id] = resources(template, "Custom::BuquetConfig")
    assert outputs["ShardCount"]["Value"] == {"Fn::GetAtt": [config_id, "ShardCount"]}  # what the bucket holds
    [bucket_id] = resources(template, "AWS::S3::Bucket")
    assert outputs["QueueUri"]["Value"] == {"Fn::Join": ["", ["s3://", {"Ref": bucket_id}, "/"]]}
    policies_ = resources(template, "AWS::IAM::ManagedPolicy")
    assert {outputs[n]["Value"]["Ref"] for n in ("ClientPolicyArn", "WorkerPolicyArn")} == set(policies_)
    assert "(none)" not in json.dumps(template.to_json())
    p_outputs = prefixed.to_json()["Outputs"]
    assert set(p_outputs) == {*OUTPUTS, "KeyPrefix"}
    assert p_outputs["KeyPrefix"]["Value"] == "team-a/jobs/"
    assert p_outputs["KeyPrefix"]["Export"] == {"Name": "Buquet-KeyPrefix"}
    assert p_outputs["QueueUri"]["Value"]["Fn::Join"][1][-1] == "/team-a/jobs/"
    named = synth(**{"buquet:stackName": "Jobs"}).to_json()["Outputs"]
    assert named["BucketName"]["Export"] == {"Name": "Jobs-BucketName"}


# ------------------------------------------------------------ deploy-time config
@pytest.mark.parametrize("fixture, prefix, shards", [("template", "", "4"), ("prefixed", "team-a/jobs/", "8")])
def test_the_deployment_writes_config_json_through_a_custom_resource(
    request: pytest.FixtureRequest, fixture: str, prefix: str, shards: str
) -> None:
    t: Template = request.getfixturevalue(fixture)
    [bucket_id] = resources(t, "AWS::S3::Bucket")
    [(config_id, config)] = resources(t, "Custom::BuquetConfig").items()
    fn = function_id(t, "lambdas.config_resource.handler")
    assert config["Properties"] == {
        "ServiceToken": {"Fn::GetAtt": [fn, "Arn"]},
        "Bucket": {"Ref": bucket_id}, "Prefix": prefix, "ShardCount": shards,
    }
    # called only once its role's policy exists
    policy = [k for k, v in resources(t, "AWS::IAM::Policy").items()
              if v["Properties"]["Roles"] == [{"Ref": t.to_json()["Resources"][fn]["Properties"]["Role"]["Fn::GetAtt"][0]}]]
    assert set(policy) <= set(config["DependsOn"])
    # the role may read and create config.json and nothing else (ListBucket: 404, not 403)
    assert s3_grants(t, "lambdas.config_resource.handler") == {
        "s3:GetObject": {f"BUCKET/{prefix}config.json"}, "s3:PutObject": {f"BUCKET/{prefix}config.json"},
        "s3:ListBucket": {"<none>"},
    }
    # nothing runs against the bucket before config.json exists
    deps = lambda kind: [v.get("DependsOn", []) for v in resources(t, kind).values()]  # noqa: E731
    assert all(config_id in d for d in deps("Custom::S3BucketNotifications"))
    assert all(config_id in d for d in deps("AWS::Events::Rule"))
    assert t.to_json()["Outputs"]["ShardCount"]["Value"] == {"Fn::GetAtt": [config_id, "ShardCount"]}


# ---------------------------------------------------------- worker timeout check
def test_synth_refuses_a_worker_timeout_shorter_than_the_default_task_timeout() -> None:
    assert config.DEFAULT_TIMEOUT_SECONDS == 300
    with pytest.raises(ValueError) as err:
        from_context({"buquet:workerTimeout": "60"}.get)
    message = str(err.value)
    assert "buquet:workerTimeout=60" in message and "300 s" in message and "50 s" in message
    assert "buquet:allowShortWorkerTimeout=true" in message and "long-lived worker" in message
    # the margin counts: 305 - 10 < 300; 310 - 10 is enough
    with pytest.raises(ValueError, match="buquet:workerTimeout=305"):
        from_context({"buquet:workerTimeout": "305"}.get)
    assert from_context({"buquet:workerTimeout": "310"}.get).longest_task_seconds == 300
    with pytest.raises(ValueError, match="buquet:safetyMarginSeconds=100"):
        from_context({"buquet:workerTimeout": "350", "buquet:safetyMarginSeconds": "100"}.get)
    # the construct checks its props the same way (another app never calls from_context)
    app = cdk.App()
    with pytest.raises(ValueError, match="worker_timeout"):
        BuquetQueue(cdk.Stack(app, "S"), "Q", props=BuquetQueueProps(worker_timeout=120, bundle=False))


def test_a_short_worker_timeout_can_be_allowed_and_then_warns_loudly(capsys: pytest.CaptureFixture[str]) -> None:
    ctx = json.loads((INFRA / "cdk.json").read_text())["context"]
    ctx.update({"buquet:bundle": "false", "buquet:workerTimeout": "60", "buquet:allowShortWorkerTimeout": "true"})
    app = cdk.App(context=ctx)
    stack = BuquetStack(app, "Buquet", settings=from_context(app.node.try_get_context))
    assert "buquet:workerTimeout=60" in capsys.readouterr().err
    warnings = Annotations.from_stack(stack).find_warning("*", Match.string_like_regexp(".*buquet:workerTimeout=60.*"))
    assert warnings
    Template.from_stack(stack).has_resource_properties("AWS::Lambda::Function", {"Handler": "lambdas.worker.handler", "Timeout": 60})


def test_app_py_exits_with_the_message_for_a_too_short_worker_timeout(tmp_path: Path) -> None:
    env = {**os.environ, "CDK_OUTDIR": str(tmp_path)}
    env.pop("CDK_CONTEXT_JSON", None)
    out = subprocess.run(
        [sys.executable, "app.py", "-c", "buquet:bundle=false", "-c", "buquet:workerTimeout=60"],
        cwd=INFRA, capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode != 0
    assert "buquet:workerTimeout=60" in out.stderr and "Traceback" not in out.stderr
    assert not list(tmp_path.glob("*.template.json"))


# ---------------------------------------------------------------- too-long tasks
def single_metric(props: dict[str, Any]) -> dict[str, Any]:
    """An alarm's one metric as ``{Namespace, MetricName, Dimensions, Stat, Period}``,
    whichever form CDK rendered it in (plain properties, or ``Metrics`` with a label)."""
    if "MetricName" in props:
        return {"Namespace": props["Namespace"], "MetricName": props["MetricName"], "Dimensions": props["Dimensions"],
                "Stat": props["Statistic"], "Period": props["Period"]}
    [stat] = [m["MetricStat"] for m in props["Metrics"]]
    return {**stat["Metric"], "Stat": stat["Stat"], "Period": stat["Period"]}


def test_too_long_tasks_have_a_metric_an_alarm_and_a_dashboard_graph(template: Template) -> None:
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    [too_long] = [a["Properties"] for a in alarms.values() if _alarm_metrics(a) == {"TasksTooLong"}]
    assert single_metric(too_long) == {
        "Namespace": "buquet", "MetricName": "TasksTooLong", "Stat": "Sum", "Period": 300,
        "Dimensions": [{"Name": "service", "Value": "buquet-worker"}],
    }
    assert too_long["Threshold"] == 1
    assert too_long["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert too_long["EvaluationPeriods"] == 3  # a task the monitor re-announces every minute
    assert "890 s" in too_long["AlarmDescription"]
    [dashboard] = resources(template, "AWS::CloudWatch::Dashboard").values()
    assert "Tasks too long for Lambda (> 890 s)" in json.dumps(dashboard["Properties"]["DashboardBody"])


# ------------------------------------------------------------ alarms, dashboard
def _alarm_metrics(alarm: dict[str, Any]) -> set[str]:
    props = alarm["Properties"]
    if "MetricName" in props:
        return {props["MetricName"]}
    return {m["MetricStat"]["Metric"]["MetricName"] for m in props["Metrics"] if "MetricStat" in m}


def test_alarms_on_failures_errors_throttles_too_long_tasks_and_queue_lag(template: Template) -> None:
    alarms = {k: v for k, v in resources(template, "AWS::CloudWatch::Alarm").items()}
    by_metrics = {frozenset(_alarm_metrics(a)): a["Properties"] for a in alarms.values()}
    assert set(by_metrics) == {
        frozenset({"ApproximateNumberOfMessagesVisible"}), frozenset({"Errors"}), frozenset({"Throttles"}),
        frozenset({"TasksTooLong"}), frozenset({"QueueLag"}),
    }
    [queue_id] = resources(template, "AWS::SQS::Queue")
    failed = by_metrics[frozenset({"ApproximateNumberOfMessagesVisible"})]
    assert single_metric(failed)["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}]
    assert failed["Threshold"] == 1 and single_metric(failed)["Stat"] == "Maximum"
    for what in ("Errors", "Throttles"):  # the three functions, summed; an idle worker is 0
        props = by_metrics[frozenset({what})]
        [expr] = [m["Expression"] for m in props["Metrics"] if "Expression" in m]
        assert expr.count("FILL(") == 3
        fns = {m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"] for m in props["Metrics"] if "MetricStat" in m}
        assert fns == {function_id(template, f"lambdas.{h}.handler") for h in ("worker", "scheduler", "monitor")}
    lag = by_metrics[frozenset({"QueueLag"})]
    assert single_metric(lag)["Stat"] == "Maximum" and single_metric(lag)["Namespace"] == "buquet"
    assert lag["Threshold"] == 300_000 and lag["ComparisonOperator"] == "GreaterThanThreshold"
    assert all(a["Properties"]["TreatMissingData"] == "notBreaching" for a in alarms.values())
    assert not any("AlarmActions" in a["Properties"] for a in alarms.values())  # no topic, no actions
    t = synth(**{"buquet:queueLagAlarmSeconds": "120"})
    assert any(a["Properties"].get("Threshold") == 120_000 for a in resources(t, "AWS::CloudWatch::Alarm").values())


def test_alarms_notify_the_sns_topic_given() -> None:
    topic = "arn:aws:sns:us-east-1:123456789012:ops-alerts"
    t = synth(**{"buquet:alarmTopicArn": topic})
    alarms = resources(t, "AWS::CloudWatch::Alarm")
    assert len(alarms) == 5
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [topic] and alarm["Properties"]["OKActions"] == [topic]
    with pytest.raises(ValueError, match="SNS topic ARN"):
        from_context({"buquet:alarmTopicArn": "ops-alerts"}.get)


def test_one_dashboard_with_the_queue_metrics(template: Template) -> None:
    [dashboard] = resources(template, "AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for metric in ("TasksClaimed", "TasksCompleted", "TasksRetried", "TasksFailed", "TasksTooLong", "QueueLag",
                   "Invocations", "Errors", "Throttles", "Duration", "ApproximateNumberOfMessagesVisible",
                   "SlotsFired", "LeasesRecovered", "StalledTasksPoked"):
        assert f'\\"{metric}\\"' in body, metric
    for alarm_id in resources(template, "AWS::CloudWatch::Alarm"):  # the alarm-status widget lists them
        assert alarm_id in body


# ----------------------------------------------------- conditional writes only
def test_bucket_policy_denies_unconditional_writes_under_tasks(template: Template, prefixed: Template) -> None:
    for t, prefix in ((template, ""), (prefixed, "team-a/jobs/")):
        [bucket_id] = resources(t, "AWS::S3::Bucket")
        [policy] = resources(t, "AWS::S3::BucketPolicy").values()
        [deny] = [st for st in policy["Properties"]["PolicyDocument"]["Statement"]
                  if st.get("Sid") == "DenyUnconditionalTaskWrites"]
        assert deny["Effect"] == "Deny" and deny["Principal"] == {"AWS": "*"} and deny["Action"] == "s3:PutObject"
        assert arn_text(deny["Resource"], bucket_id) == f"BUCKET/{prefix}tasks/*"
        assert arn_text(deny["Resource"], bucket_id) == f"BUCKET/{key_paths(prefix)['tasks']}"  # the layout's
        # both keys absent (Null: true, ANDed within one operator) -> denied
        assert deny["Condition"] == {"Null": {"s3:if-none-match": "true", "s3:if-match": "true"}}


def denied_by(statement: dict[str, Any], action: str, key: str, headers: dict[str, str]) -> bool:
    """IAM evaluation of one Deny statement with ``Null`` conditions: every key of the
    operator must hold (AND); ``Null: true`` holds when the request has no such key.
    ``headers`` are the request's condition keys (``s3:if-none-match`` ...)."""
    actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
    resources_ = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
    if action not in actions or not any(_like(r, f"arn:aws:s3:::bkt/{key}") for r in resources_):
        return False
    return all((name not in headers) == (want == "true") for name, want in statement["Condition"]["Null"].items())


@pytest.mark.parametrize("prefix", ["", "team-a/jobs/"])
def test_the_conditional_write_deny_lets_every_library_write_through(prefix: str) -> None:
    deny = conditional_write_statement("arn:aws:s3:::bkt", prefix).to_statement_json()
    task = f"{prefix}tasks/0/0193a4f2-7c1e-7d2a-9b3c-4d5e6f708192.json"
    assert denied_by(deny, "s3:PutObject", task, {})  # a plain PUT: denied
    assert not denied_by(deny, "s3:PutObject", task, {"s3:if-none-match": "*"})  # submit
    assert not denied_by(deny, "s3:PutObject", task, {"s3:if-match": '"etag"'})  # transition
    assert not denied_by(deny, "s3:PutObject", f"{prefix}ready/0/x", {})  # other prefixes untouched
    assert not denied_by(deny, "s3:GetObject", task, {})


# ---------------------------------------------------------------- feature flags
#: the aws-cdk-lib release whose recommended flags infra/cdk.json was last aligned with
FLAGS_FROM = "2.275.0"


def test_cdk_json_sets_the_recommended_feature_flags() -> None:
    import tarfile
    from importlib import metadata

    version = metadata.version("aws-cdk-lib")
    [tgz] = (Path(cdk.__file__).parent / "_jsii").glob("aws-cdk-lib@*.jsii.tgz")
    with tarfile.open(tgz) as tf:
        member = tf.extractfile("package/recommended-feature-flags.json")
        assert member is not None
        recommended = json.load(member)
    context = json.loads((INFRA / "cdk.json").read_text())["context"]
    flags = {k: v for k, v in context.items() if not k.startswith("buquet:")}
    different = {k: (flags[k], v) for k, v in recommended.items() if k in flags and flags[k] != v}
    assert not different, different
    missing = sorted(set(recommended) - set(flags))
    newer = tuple(map(int, version.split(".")[:3])) > tuple(map(int, FLAGS_FROM.split(".")))
    if missing and newer:
        import warnings

        warnings.warn(f"aws-cdk-lib {version} recommends flags infra/cdk.json does not set: {missing}", stacklevel=1)
    else:
        assert not missing, missing
    assert len(flags) >= 80


# ---------------------------------------------------------------------------- IAM
def test_each_function_gets_only_its_prefixes_and_actions(template: Template) -> None:
    assert s3_grants(template, "lambdas.worker.handler") == {
        "s3:GetObject": {"BUCKET/config.json", "BUCKET/tasks/*", "BUCKET/ready/*", "BUCKET/schemas/*", "BUCKET/payloads/*"},
        "s3:PutObject": {"BUCKET/tasks/*", "BUCKET/ready/*", "BUCKET/leases/*", "BUCKET/payloads/*"},
        "s3:DeleteObject": {"BUCKET/ready/*", "BUCKET/leases/*", "BUCKET/expiries/*"},
        "s3:ListBucket": {"ready/*", "<none>"},
    }
    assert s3_grants(template, "lambdas.monitor.handler") == {
        "s3:GetObject": {"BUCKET/config.json", "BUCKET/tasks/*", "BUCKET/ready/*"},
        "s3:PutObject": {"BUCKET/config.json", "BUCKET/tasks/*", "BUCKET/ready/*"},
        "s3:DeleteObject": {"BUCKET/leases/*", "BUCKET/expiries/*", "BUCKET/ready/*"},
        "s3:ListBucket": {"leases/*", "ready/*", "expiries/*", "<none>"},
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
    assert grants["s3:PutObject"] == {"BUCKET/team-a/jobs/tasks/*", "BUCKET/team-a/jobs/ready/*",
                                      "BUCKET/team-a/jobs/leases/*", "BUCKET/team-a/jobs/payloads/*"}
    assert grants["s3:ListBucket"] == {"team-a/jobs/ready/*", "<none>"}


@pytest.mark.parametrize("fixture, prefix", [("template", ""), ("prefixed", "team-a/jobs/")])
def test_policy_prefixes_are_the_key_layouts(request: pytest.FixtureRequest, fixture: str, prefix: str) -> None:
    """Policies are built from KeyLayout.iam_prefixes(), not retyped: every resource and
    s3:prefix of every role lies under one of its values, and every value is used."""
    layout = KeyLayout(prefix)
    layout_prefixes = dict(layout.iam_prefixes())
    assert set(layout_prefixes) == {"config", *(d.rstrip("/") for d in TOP_LEVEL_DIRS)}
    layout_prefixes.setdefault("idempotency", layout.idempotency_prefix())  # not (yet) among iam_prefixes
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
        #: every PUT: (key, its condition keys as the bucket policy sees them)
        self.puts: list[tuple[str, dict[str, str]]] = []
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
        if self.recording:
            headers = {"s3:if-match": if_match} if if_match is not None else {}
            self.puts.append((key, {**headers, **({"s3:if-none-match": "*"} if if_none_match else {})}))
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
    await client.publish_schema("quick", {"input": {"type": "object"}, "output": {"type": "string"}})
    await client.get_schema("quick")
    await client.list_schemas()
    big = await client.submit("quick", {"blob": "x" * 300_000})  # input in a payload object
    large_out = await client.submit("large", None)
    await client.submit("quick", {"n": 6}, ttl_seconds=60)  # a deadline: the expiry index
    await client.submit("quick", {"n": 7}, idempotency_key="order-7")
    await client.submit("quick", {"n": 7}, idempotency_key="order-7")  # the same task again
    doomed = await client.submit("quick", {"n": 8}, ttl_seconds=600)
    await client.cancel(doomed.id, reason="not needed")
    await client.delete(doomed.id)
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

    @worker.task("large")
    async def large(payload: Any) -> Any:
        return "y" * 300_000  # an output in a payload object

    counts = await worker.run_once(
        [], remaining_seconds=lambda: 600.0, options=WorkerRunOptions(lease_seconds=3, delete_flush_ms=0)
    )
    assert counts.get("retried") == 1 and counts.get("completed", 0) >= 3
    worker_log = list(rec.log)
    assert (await client.get(big.id)).status == TaskStatus.Completed  # type: ignore[union-attr]
    await client.load_input(await client.get(big.id))  # type: ignore[arg-type]
    assert len(await client.load_output(await client.get(large_out.id))) == 300_000  # type: ignore[arg-type]
    client_log += [e for e in rec.log if e not in worker_log]

    # an invocation that died after its first heartbeat, then lease recovery + a poke
    rec.recording = False
    lost = await client.submit("quick", {"n": 4})
    now = await client.time()
    marker = next(m for m in await client.protocol.due_markers(lost.shard, now, 100) if m.task_id == lost.id)
    lease = await client.protocol.claim(marker, "dead", 3, now)
    assert isinstance(lease, Lease)
    await mem.delete_many(await client.protocol.extend(lease, 3))
    await client.submit("quick", {"n": 5})  # a ready task nobody was told about
    expiring = await client.submit("quick", {"n": 9}, ttl_seconds=60)  # past its deadline below
    rec.now += timedelta(minutes=5)
    rec.recording = True
    monitor_queue = await queue_for("monitor")
    assert await Monitor(monitor_queue).sweep() == 2  # the lapsed lease and the deadline
    assert (await client.get(expiring.id)).status == TaskStatus.Expired  # type: ignore[union-attr]
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

    # every write under tasks/ is conditional: the bucket policy's deny never bites
    deny = conditional_write_statement(bucket_arn, prefix).to_statement_json()
    task_puts = [(k, h) for k, h in rec.puts if k.startswith(prefix + "tasks/")]
    assert len(task_puts) >= 10
    assert not [(k, h) for k, h in rec.puts if denied_by(deny, "s3:PutObject", k, h)]

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

    assert bundling.input_digest(app, "arm64", "3.13") != d1  # another runtime, other bytecode
    assert bundling.input_digest(app, "arm64", precompiled=False) != d1

    # the app is copied under its own name next to the handlers; pip is faked here
    calls: list[list[str]] = []

    def fake_pip(target: Path, architecture: str, args: list[str], python_version: str, find_links: Path) -> Any:
        calls.append(args)
        target.mkdir(parents=True)
        (target / "bin").mkdir()
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(bundling, "_pip_install", fake_pip)
    (app / "requirements.txt").write_text("six\n")
    built = bundling.build(app, "arm64", cache=tmp_path / "cache", log=False, precompile_mode=False)
    assert built.built and (built.path / "myapp" / "tasks.py").is_file()
    assert (built.path / "lambdas" / "worker.py").is_file() and not (built.path / "bin").exists()
    assert (built.path / "buquet" / "queue.py").is_file()  # the imported package, copied
    assert not list(built.path.rglob("__pycache__")) and not built.precompiled
    assert calls[0][-2:] == ["-r", str(app / "requirements.txt")]
    # buquet's own dependencies come from its pyproject.toml (or installed metadata)
    assert set(bundling.buquet_requirements()) <= set(calls[0]) and any(a.startswith("obstore") for a in calls[0])
    again = bundling.build(app, "arm64", cache=tmp_path / "cache", log=False, precompile_mode=False)
    assert not again.built and again.path == built.path and len(calls) == 1

    # old bundles of an architecture are evicted, the newest kept
    paths = [built.path]
    for n in range(bundling.KEEP_PER_ARCHITECTURE + 1):
        (app / "tasks.py").write_text(f"VERSION = {n}\n")
        paths.append(bundling.build(app, "arm64", cache=tmp_path / "cache", log=False, precompile_mode=False).path)
        time.sleep(0.01)  # distinct mtimes
    kept = sorted((tmp_path / "cache").glob("arm64-*"))
    assert len(kept) == bundling.KEEP_PER_ARCHITECTURE and set(paths[-bundling.KEEP_PER_ARCHITECTURE:]) == set(kept)


ELF_MACHINE = {"arm64": 0xB7, "x86_64": 0x3E}


PYTHON_312 = bundling.find_python("3.12")
needs_312 = pytest.mark.skipif(PYTHON_312 is None, reason="no Python 3.12 interpreter here to compile for the runtime")


def pyc_facts(python: str, pyc: Path) -> dict[str, Any]:
    """Magic number, flags and the code object's file name of a .pyc, read by the
    interpreter it was made for (marshal is version-specific)."""
    code = (
        "import importlib.util, marshal, sys, json; d = open(sys.argv[1], 'rb').read(); "
        "print(json.dumps({'magic_ok': d[:4] == importlib.util.MAGIC_NUMBER, "
        "'flags': int.from_bytes(d[4:8], 'little'), 'filename': marshal.loads(d[16:]).co_filename}))"
    )
    out = subprocess.run([python, "-I", "-c", code, str(pyc)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@needs_312
@pytest.mark.parametrize("architecture", ["x86_64", "arm64"])
def test_real_bundle_is_built_without_docker_for_both_architectures(architecture: str) -> None:
    """pip, for the Lambda platform, from PyPI (cached by input hash after the first run),
    precompiled for the runtime's Python."""
    started = time.monotonic()
    built = bundling.build(None, architecture, precompile_mode=True)
    assert built.precompiled and built.python_version == "3.12"
    for name in ("buquet", "lambdas", "obstore", "aws_lambda_powertools", "boto3", "croniter"):
        assert (built.path / name).is_dir(), name
    assert not (built.path / "bin").exists()
    [native] = [p for p in (built.path / "obstore").glob("*.so")]
    header = native.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == ELF_MACHINE[architecture]
    size = bundling.directory_size(built.path)
    assert size < 250 * 1024 * 1024  # Lambda's unzipped limit

    # bytecode for the runtime's Python, and only for it, next to every module
    pycs = list(built.path.rglob("*.pyc"))
    assert pycs and all(p.name.endswith(".cpython-312.pyc") and p.parent.name == "__pycache__" for p in pycs)
    for module in ("buquet/queue.py", "buquet/storage/s3.py", "lambdas/worker.py", "lambdas/config_resource.py",
                   "aws_lambda_powertools/logging/logger.py", "boto3/session.py", "botocore/client.py"):
        src = built.path / module
        assert (src.parent / "__pycache__" / f"{src.stem}.cpython-312.pyc").is_file(), module
    sources = [p for p in built.path.rglob("*.py") if "__pycache__" not in p.parts]
    assert len(pycs) >= 0.95 * len(sources)
    # unchecked-hash (PEP 552 flags 0b01): valid whatever the zip does to mtimes, never
    # compared with the source again; file names as Lambda unpacks them
    facts = pyc_facts(PYTHON_312, built.path / "buquet" / "__pycache__" / "queue.cpython-312.pyc")  # type: ignore[arg-type]
    assert facts == {"magic_ok": True, "flags": 1, "filename": "/var/task/buquet/queue.py"}
    print(f"\n{architecture}: {'built' if built.built else 'cached'} in {time.monotonic() - started:.1f}s, {size / 1e6:.1f} MB")
    t0 = time.monotonic()
    again = bundling.build(None, architecture, precompile_mode=True)
    if again.digest == built.digest:  # (unless the sources changed meanwhile)
        assert not again.built and time.monotonic() - t0 < 5  # a repeated synth reuses it

    if architecture == "x86_64" and platform.machine() == "x86_64":
        # self-contained: the handlers import with nothing but the bundle and the stdlib,
        # on a read-only code directory (-B), using the bundled bytecode
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "import lambdas.worker, lambdas.scheduler, lambdas.monitor, lambdas.config_resource, obstore, buquet; "
            "import buquet.storage.s3 as s3; print(s3.__cached__ if hasattr(s3, '__cached__') else '', 'ok')"
        )
        env = {"PATH": os.environ.get("PATH", ""), "AWS_REGION": "us-east-1", "HOME": str(built.path)}
        out = subprocess.run([PYTHON_312, "-I", "-S", "-B", "-v", "-c", code, str(built.path)],  # type: ignore[list-item]
                             capture_output=True, text=True, env=env)
        assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
        # -v: "# code object from '<...>.pyc'" for bytecode, "# code object from <...>.py"
        # for a module compiled at import; every bundle module came from bytecode
        loaded = [line for line in out.stderr.splitlines() if line.startswith("# code object from") and str(built.path) in line]
        assert any("buquet/__pycache__/queue.cpython-312.pyc" in line for line in loaded)
        compiled_at_import = [line for line in loaded if line.rstrip("'").endswith(".py")]
        assert len(loaded) > 100 and not compiled_at_import, compiled_at_import[:5]


def test_precompile_can_be_required_or_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundling, "find_python", lambda version: None)
    with pytest.raises(bundling.BundleError, match="no Python 3.13 interpreter found") as err:
        bundling.build(None, "arm64", python_version="3.13", precompile_mode=True, cache=tmp_path, log=False)
    assert "BUQUET_LAMBDA_PYTHON" in str(err.value)
    with pytest.raises(ValueError, match="3.11, 3.12, 3.13"):
        bundling.build(None, "arm64", python_version="3.9", cache=tmp_path, log=False)
    with pytest.raises(ValueError, match="buquet:pythonVersion"):
        from_context({"buquet:pythonVersion": "3.9"}.get)
    assert from_context({"buquet:precompile": "auto"}.get).precompile is None
    assert from_context({"buquet:precompile": "false"}.get).precompile is False
    t = synth(**{"buquet:pythonVersion": "3.13"})
    for handler in ("worker", "scheduler", "monitor", "config_resource"):
        t.has_resource_properties("AWS::Lambda::Function", {"Handler": f"lambdas.{handler}.handler", "Runtime": "python3.13"})


@needs_312
def test_find_python_checks_the_version_it_is_pointed_at(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUQUET_LAMBDA_PYTHON", sys.executable)
    if "%d.%d" % sys.version_info[:2] != "3.12":
        with pytest.raises(bundling.BundleError, match="the function runs 3.12"):
            bundling.find_python("3.12")
    monkeypatch.setenv("BUQUET_LAMBDA_PYTHON", PYTHON_312)  # type: ignore[arg-type]
    assert bundling.find_python("3.12") == PYTHON_312


@needs_312
def test_a_pure_python_sdist_dependency_is_built_into_a_wheel_and_bundled(tmp_path: Path) -> None:
    """docopt 0.6.2 is published on PyPI as a source distribution only."""
    app = tmp_path / "docoptapp"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "tasks.py").write_text("import docopt\n\nasync def make_worker(): ...\n")
    (app / "requirements.txt").write_text("docopt==0.6.2\n")
    built = bundling.build(app, "x86_64", cache=tmp_path / "cache", precompile_mode=True)
    assert built.built_from_source == ("docopt-0.6.2-py2.py3-none-any.whl",)
    assert (built.path / "docopt.py").is_file() and (built.path / "__pycache__" / "docopt.cpython-312.pyc").is_file()
    assert (built.path / "docoptapp" / "__pycache__" / "tasks.cpython-312.pyc").is_file()
    assert (built.path / "obstore").is_dir()  # the rest installed as usual
    out = subprocess.run([PYTHON_312, "-I", "-S", "-B", "-c",  # type: ignore[list-item]
                          "import sys; sys.path.insert(0, sys.argv[1]); import docoptapp.tasks, docopt; print(docopt.__version__)",
                          str(built.path)], capture_output=True, text=True)
    assert out.stdout.strip() == "0.6.2", out.stderr[-2000:]


def _sdist(dest: Path, name: str, native: bool) -> Path:
    """A source distribution of a one-module package, with a C extension if ``native``."""
    import tarfile

    root = tmp = dest / f"{name}-1.0"
    (tmp / name).mkdir(parents=True)
    (tmp / name / "__init__.py").write_text("VALUE = 1\n")
    ext = ""
    if native:
        (tmp / name / "fast.c").write_text(
            "#include <Python.h>\nstatic struct PyModuleDef m = {PyModuleDef_HEAD_INIT, \"fast\", NULL, -1, NULL};\n"
            "PyMODINIT_FUNC PyInit_fast(void) { return PyModule_Create(&m); }\n"
        )
        ext = f", ext_modules=[Extension('{name}.fast', ['{name}/fast.c'])]"
    (tmp / "setup.py").write_text(
        f"from setuptools import setup, Extension\nsetup(name='{name}', version='1.0', packages=['{name}']{ext})\n"
    )
    (tmp / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    dists = dest / "dists"
    dists.mkdir(exist_ok=True)
    archive = dists / f"{name}-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(root, arcname=root.name)
    return dists


def test_source_only_requirements_pure_ones_are_built_native_ones_refused(tmp_path: Path) -> None:
    """install() with pip faked to fail like pip does for a source-only requirement;
    the wheels are really built (pip wheel) from local source distributions."""
    dists = _sdist(tmp_path, "tinypure", native=False)
    _sdist(tmp_path, "tinynative", native=True)
    req = tmp_path / "app" / "requirements.txt"
    req.parent.mkdir()
    req.write_text(f"--find-links {os.path.relpath(dists, req.parent)}\ntinypure==1.0\ntinynative==1.0\n")
    runs: list[Path | None] = []
    wanted = ["tinypure", "tinynative"]

    def fake_pip(target: Path, architecture: str, args: list[str], python_version: str, find_links: Path) -> Any:
        runs.append(find_links)
        have = {p.name.split("-")[0] for p in find_links.glob("*.whl")}
        for name in wanted:
            if name not in have:
                return subprocess.CompletedProcess(args, 1, "", f"ERROR: No matching distribution found for {name}==1.0\n")
        return subprocess.CompletedProcess(args, 0, "", "")

    with pytest.raises(bundling.NativeSourceDependency) as err:
        bundling.install(tmp_path / "out", "arm64", ["-r", str(req)], "3.12", tmp_path / "wheels", req, pip=fake_pip)
    message = str(err.value)
    assert "tinynative==1.0" in message and "native code" in message and "manylinux" in message
    assert "--find-links" in message  # what to do
    assert err.value.wheel.startswith("tinynative-1.0-") and not err.value.wheel.endswith("none-any.whl")
    # the pure one was built and kept for pip's next run
    assert [p.name for p in (tmp_path / "wheels").glob("*.whl")] == ["tinypure-1.0-py3-none-any.whl"]
    assert len(runs) == 2

    # a pure-only app installs after one extra round (an absolute find-links path this time)
    req.write_text(f"--find-links {dists}\ntinypure==1.0\n")
    runs.clear()
    wanted[:] = ["tinypure"]
    built = bundling.install(tmp_path / "out2", "arm64", ["-r", str(req)], "3.12", tmp_path / "wheels2", req, pip=fake_pip)
    assert built == ["tinypure-1.0-py3-none-any.whl"] and len(runs) == 2


def test_pip_failures_other_than_a_source_only_requirement_stop_with_pips_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_wheel(target: Path, architecture: str, args: list[str], python_version: str, find_links: Path) -> Any:
        return subprocess.CompletedProcess(args, 1, "", "ERROR: No matching distribution found for nosuch-pkg-xyz==9\n")

    def cannot_build(requirement: str, dest: Path, *args: Any) -> Path:
        raise bundling.BundleError(f"{requirement} has no wheel for Lambda and building it from source failed")

    monkeypatch.setattr(bundling, "build_source_wheel", cannot_build)
    with pytest.raises(bundling.BundleError, match="nosuch-pkg-xyz==9 has no wheel for Lambda"):
        bundling.install(tmp_path / "out", "x86_64", ["nosuch-pkg-xyz==9"], "3.12", tmp_path / "w", None, pip=no_wheel)

    def offline(target: Path, architecture: str, args: list[str], python_version: str, find_links: Path) -> Any:
        return subprocess.CompletedProcess(args, 1, "", "ERROR: network is unreachable\n")

    with pytest.raises(bundling.BundleError, match="network is unreachable"):
        bundling.install(tmp_path / "out", "x86_64", ["six"], "3.12", tmp_path / "w", None, pip=offline)
