"""The buquet stack: a bucket-backed queue whose worker, scheduler and monitor run on
AWS Lambda.

Resources:

* **Bucket** — SSE-S3 encryption, all public access blocked, TLS enforced by bucket
  policy, bucket-owner-enforced object ownership, no versioning (the protocol needs
  none). Lifecycle: incomplete multipart uploads aborted after 1 day; slot-ledger
  objects (``schedules/slots/``) expired after 7 days as a backstop to the scheduler's
  own pruning (2 days); optionally ``tasks/`` after ``buquet:taskExpirationDays``.
  Nothing expires ``ready/`` or ``leases/``: losing an index entry could strand a task.
* **Worker function** — invoked by ``s3:ObjectCreated:*`` notifications filtered on
  ``<prefix>ready/``; reserved concurrency ``buquet:workerConcurrency``.
* **Scheduler function** — EventBridge rule ``cron(* * * * ? *)``; reserved concurrency 1.
* **Monitor function** — EventBridge rule ``rate(N minutes)``; reserved concurrency 1.
* **FailedInvocations queue** (SQS) — the on-failure destination of all three
  functions' asynchronous invocations, kept 14 days.
* **Log groups** with ``buquet:logRetentionDays`` retention, one per function.
* **ClientPolicy** — a managed policy for services that submit tasks and manage
  schedules (attach it to their roles); **WorkerPolicy** — one for long-lived workers
  (``buquet worker ...`` on ECS, EC2, a laptop) sharing the bucket with the functions.
* **IAM** — each function's role may touch only the key prefixes and actions it uses
  (see :func:`worker_statements` and friends); ``s3:ListBucket`` is limited with
  ``s3:prefix`` conditions, plus requests without a prefix (HeadBucket, which the
  library uses to read the store's clock, is authorised by ``s3:ListBucket``).
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from . import bundle as bundling
from .settings import DeploySettings

# after .settings, which makes the library importable from this checkout if need be
from buquet.keys import KeyLayout  # noqa: E402,I001

RUNTIME = lambda_.Runtime.PYTHON_3_12
#: scheduler.py prunes ledger entries older than 2 days; the lifecycle rule is a backstop
SLOT_LEDGER_EXPIRATION_DAYS = 7


# ------------------------------------------------------------------------ IAM (pure)
def _parent(key: str, leaf: str) -> str:
    if not key.endswith(leaf):
        raise AssertionError(f"unexpected key layout: {key!r} does not end with {leaf!r}")
    return key[: -len(leaf)]


def key_paths(prefix: str) -> dict[str, str]:
    """The IAM resource paths (object keys or ``<prefix>*`` patterns) of the bucket's
    key layout under ``prefix``, by name, all derived from
    :class:`buquet.keys.KeyLayout` so policies cannot drift from the keys the library
    writes: ``config`` (the one key), ``tasks``, ``ready``, ``leases``, ``schedules``
    (each ``<iam prefix>*``), and the schedule sub-directories ``schedule_defs``,
    ``schedule_runs``, ``schedule_slots``."""
    layout = KeyLayout(prefix)
    top = layout.iam_prefixes()
    paths = {name: (p if name == "config" else f"{p}*") for name, p in top.items()}
    subdirs = {
        "schedule_defs": layout.schedule_defs_prefix(),
        "schedule_runs": _parent(layout.schedule_run("x"), "x.json"),
        "schedule_slots": _parent(layout.schedule_slots_prefix("x"), "x/"),
    }
    for name, p in subdirs.items():
        if not p.startswith(top["schedules"]):
            raise AssertionError(f"unexpected key layout: {name} {p!r} is not under {top['schedules']!r}")
        paths[name] = f"{p}*"
    return paths


def _list(bucket_arn: str, patterns: list[str], sid: str) -> list[iam.PolicyStatement]:
    return [
        iam.PolicyStatement(
            sid=f"{sid}ListPrefixes",
            actions=["s3:ListBucket"],
            resources=[bucket_arn],
            conditions={"StringLike": {"s3:prefix": patterns}},
        ),
        iam.PolicyStatement(
            # HeadBucket (the store's clock, from its Date header) has no prefix and is
            # authorised by s3:ListBucket; a ListObjects without a prefix is allowed too.
            sid=f"{sid}HeadBucket",
            actions=["s3:ListBucket"],
            resources=[bucket_arn],
            conditions={"Null": {"s3:prefix": "true"}},
        ),
    ]


def _statements(
    bucket_arn: str, prefix: str, sid: str, *, get: list[str], put: list[str], delete: list[str], list_: list[str]
) -> list[iam.PolicyStatement]:
    """Allow statements for the named :func:`key_paths` of ``prefix``."""
    paths = key_paths(prefix)

    def objects(names: list[str]) -> list[str]:
        return [f"{bucket_arn}/{paths[n]}" for n in names]

    out = [
        iam.PolicyStatement(sid=f"{sid}Get", actions=["s3:GetObject"], resources=objects(get)),
        iam.PolicyStatement(sid=f"{sid}Put", actions=["s3:PutObject"], resources=objects(put)),
    ]
    if delete:
        out.append(iam.PolicyStatement(sid=f"{sid}Delete", actions=["s3:DeleteObject"], resources=objects(delete)))
    return out + _list(bucket_arn, [paths[n] for n in list_], sid)


def worker_statements(bucket_arn: str, prefix: str) -> list[iam.PolicyStatement]:
    """What ``Worker.run_once`` does, and nothing else.

    GET ``tasks/*`` (claim) and ``ready/*`` (a submit marker's task copy) and
    ``config.json`` (connect); PUT ``tasks/*`` (every transition), ``ready/*`` (retry
    requeue, release) and ``leases/*`` (heartbeat); DELETE ``ready/*`` and ``leases/*``
    (index clean-up, DeleteObjects); LIST ``ready/``; HeadBucket. Handlers that submit
    follow-up tasks are covered (PUT ``tasks/*`` and ``ready/*``).
    """
    return _statements(
        bucket_arn, prefix, "Worker",
        get=["config", "tasks", "ready"],
        put=["tasks", "ready", "leases"],
        delete=["ready", "leases"],
        list_=["ready"],
    )


def monitor_statements(bucket_arn: str, prefix: str) -> list[iam.PolicyStatement]:
    """``Monitor.sweep`` and ``Monitor.poke_stalled``.

    LIST ``leases/`` and ``ready/``; GET/PUT ``tasks/*`` (requeue), ``ready/*`` (new
    marker; the poke re-writes one), ``config.json`` (created if missing); DELETE
    ``leases/*``; HeadBucket.
    """
    return _statements(
        bucket_arn, prefix, "Monitor",
        get=["config", "tasks", "ready"],
        put=["config", "tasks", "ready"],
        delete=["leases"],
        list_=["leases", "ready"],
    )


def scheduler_statements(bucket_arn: str, prefix: str) -> list[iam.PolicyStatement]:
    """``Scheduler.tick``.

    LIST ``schedules/defs/`` and ``schedules/slots/``; GET ``schedules/*``,
    ``config.json`` and ``tasks/*`` (HEAD: does a slot's task exist); PUT
    ``schedules/runs/*`` and ``schedules/slots/*`` (cursor, ledger), ``tasks/*`` and
    ``ready/*`` (it submits), ``config.json`` (created if missing); DELETE
    ``schedules/slots/*`` (ledger pruning); HeadBucket. It never writes definitions.
    """
    return _statements(
        bucket_arn, prefix, "Scheduler",
        get=["config", "schedules", "tasks"],
        put=["config", "schedule_runs", "schedule_slots", "tasks", "ready"],
        delete=["schedule_slots"],
        list_=["schedule_defs", "schedule_slots"],
    )


def client_statements(bucket_arn: str, prefix: str) -> list[iam.PolicyStatement]:
    """A submitting service: ``connect``, ``submit``, ``get``/``wait``/``get_history``,
    ``list``/``list_ready``, ``archive``, and schedule management (create, enable,
    disable, delete, trigger — which records the run in ``schedules/runs/``). It cannot
    touch ``leases/`` nor write slot-ledger entries: running tasks and firing cron slots
    is the functions' job."""
    return _statements(
        bucket_arn, prefix, "Client",
        get=["config", "tasks", "ready", "schedules"],
        put=["config", "tasks", "ready", "schedule_defs", "schedule_runs"],
        delete=["schedules"],
        list_=["tasks", "ready", "schedules"],
    )


def long_lived_worker_statements(bucket_arn: str, prefix: str) -> list[iam.PolicyStatement]:
    """A long-lived ``Worker.run`` (``buquet worker ...``) on the deployed bucket: what
    the worker function does plus its built-in lease monitor (``with_monitor=True``)
    and creating ``config.json``."""
    return _statements(
        bucket_arn, prefix, "LongLivedWorker",
        get=["config", "tasks", "ready"],
        put=["config", "tasks", "ready", "leases"],
        delete=["ready", "leases"],
        list_=["ready", "leases"],
    )


# --------------------------------------------------------------------------- stack
class BuquetStack(cdk.Stack):
    """The deployable unit. ``settings`` come from :func:`buquet_infra.settings.from_context`.

    Attributes:
        bucket, worker, scheduler, monitor, failed_invocations, client_policy: the
        main resources (for extending the stack in your own CDK code).
        code_bundle: the built (or placeholder) code directory.
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: DeploySettings, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, description="buquet: an S3-backed task queue with Lambda workers", **kwargs)
        cfg = settings
        self.settings = cfg

        # ------------------------------------------------------------ bucket
        paths = key_paths(cfg.prefix)
        lifecycle = [
            s3.LifecycleRule(id="AbortIncompleteUploads", abort_incomplete_multipart_upload_after=cdk.Duration.days(1)),
            s3.LifecycleRule(
                id="ExpireScheduleSlotLedger",
                prefix=paths["schedule_slots"].removesuffix("*"),
                expiration=cdk.Duration.days(SLOT_LEDGER_EXPIRATION_DAYS),
            ),
        ]
        if cfg.task_expiration_days:
            lifecycle.append(
                s3.LifecycleRule(
                    id="ExpireTasks",
                    prefix=paths["tasks"].removesuffix("*"),
                    expiration=cdk.Duration.days(cfg.task_expiration_days),
                )
            )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=False,
            lifecycle_rules=lifecycle,
            removal_policy=cdk.RemovalPolicy.DESTROY if cfg.remove_bucket else cdk.RemovalPolicy.RETAIN,
            auto_delete_objects=cfg.remove_bucket,
        )

        # ------------------------------------------------- failed invocations
        self.failed_invocations = sqs.Queue(
            self,
            "FailedInvocations",
            retention_period=cdk.Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        on_failure = destinations.SqsDestination(self.failed_invocations)

        # --------------------------------------------------------------- code
        if cfg.bundle:
            self.code_bundle = bundling.build(cfg.app_path, cfg.architecture)
        else:
            self.code_bundle = bundling.placeholder()
        code = lambda_.Code.from_asset(
            str(self.code_bundle.path),
            asset_hash=self.code_bundle.digest,
            asset_hash_type=cdk.AssetHashType.CUSTOM,
        )
        architecture = lambda_.Architecture.ARM_64 if cfg.architecture == "arm64" else lambda_.Architecture.X86_64

        common_env = {
            "S3_BUCKET": self.bucket.bucket_name,
            "S3_REGION": cdk.Aws.REGION,
            "BUQUET_PREFIX": cfg.prefix,
            "BUQUET_SHARD_COUNT": str(cfg.shard_count),
            "POWERTOOLS_METRICS_NAMESPACE": cfg.metrics_namespace,
        }

        def function(
            name: str,
            handler: str,
            *,
            memory: int,
            timeout: int,
            reserved: int | None,
            env: dict[str, str],
            retry_attempts: int,
            max_event_age: cdk.Duration,
        ) -> lambda_.Function:
            log_group = logs.LogGroup(
                self,
                f"{name}Logs",
                retention=_retention(cfg.log_retention_days),
                removal_policy=cdk.RemovalPolicy.DESTROY,
            )
            fn = lambda_.Function(
                self,
                name,
                description=f"buquet {name.lower()} ({handler})",
                runtime=RUNTIME,
                architecture=architecture,
                handler=handler,
                code=code,
                memory_size=memory,
                timeout=cdk.Duration.seconds(timeout),
                reserved_concurrent_executions=reserved,
                environment={**common_env, "POWERTOOLS_SERVICE_NAME": f"buquet-{name.lower()}", **env},
                log_group=log_group,
                on_failure=on_failure,
                retry_attempts=retry_attempts,
                max_event_age=max_event_age,
            )
            return fn

        # ------------------------------------------------------------- worker
        self.worker = function(
            "Worker",
            "lambdas.worker.handler",
            memory=cfg.worker_memory,
            timeout=cfg.worker_timeout,
            reserved=cfg.worker_concurrency,
            env={
                "BUQUET_WORKER": cfg.worker_spec,
                "BUQUET_SAFETY_MARGIN_SECONDS": str(cfg.safety_margin_seconds),
                "BUQUET_MAX_CONCURRENCY": str(cfg.max_concurrency),
                "BUQUET_LEASE_SECONDS": str(cfg.lease_seconds),
                "BUQUET_WAIT_FOR_DUE_SECONDS": str(cfg.wait_for_due_seconds),
                "BUQUET_DRAIN_LAG_SECONDS": str(cfg.drain_lag_seconds),
            },
            # events are wake-up calls: a retry after a failed start is useful, a wake-up
            # older than an hour is not (the monitor re-announces stalled tasks anyway)
            retry_attempts=2,
            max_event_age=cdk.Duration.hours(1),
        )
        self.bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.LambdaDestination(self.worker),
            s3.NotificationKeyFilter(prefix=cfg.ready_prefix),
        )

        # ---------------------------------------------------------- scheduler
        self.scheduler = function(
            "Scheduler",
            "lambdas.scheduler.handler",
            memory=cfg.scheduler_memory,
            timeout=60,
            reserved=cfg.scheduler_concurrency,
            env={},
            # a failed tick is caught up by the next one a minute later
            retry_attempts=0,
            max_event_age=cdk.Duration.seconds(60),
        )
        events.Rule(
            self,
            "SchedulerTick",
            description="buquet: one scheduler tick per minute, just after the minute boundary",
            schedule=events.Schedule.cron(minute="*"),
            targets=[targets.LambdaFunction(self.scheduler, retry_attempts=2, max_event_age=cdk.Duration.seconds(60))],
        )

        # ------------------------------------------------------------ monitor
        self.monitor = function(
            "Monitor",
            "lambdas.monitor.handler",
            memory=cfg.monitor_memory,
            timeout=60,
            reserved=cfg.monitor_concurrency,
            env={"BUQUET_STALL_SECONDS": str(cfg.stall_seconds)},
            retry_attempts=0,
            max_event_age=cdk.Duration.seconds(60),
        )
        events.Rule(
            self,
            "MonitorSweep",
            description="buquet: lease recovery and stalled-task pokes",
            schedule=events.Schedule.rate(cdk.Duration.minutes(cfg.monitor_interval_minutes)),
            targets=[targets.LambdaFunction(self.monitor, retry_attempts=2, max_event_age=cdk.Duration.seconds(60))],
        )

        # ---------------------------------------------------------------- IAM
        arn = self.bucket.bucket_arn
        for fn, statements in (
            (self.worker, worker_statements(arn, cfg.prefix)),
            (self.scheduler, scheduler_statements(arn, cfg.prefix)),
            (self.monitor, monitor_statements(arn, cfg.prefix)),
        ):
            for statement in statements:
                fn.add_to_role_policy(statement)
        self.client_policy = iam.ManagedPolicy(
            self,
            "ClientPolicy",
            description="buquet: submit tasks, read them, manage schedules (attach to producer roles)",
            statements=client_statements(arn, cfg.prefix),
        )
        self.worker_policy = iam.ManagedPolicy(
            self,
            "WorkerPolicy",
            description="buquet: a long-lived worker with its built-in lease monitor (buquet worker ...)",
            statements=long_lived_worker_statements(arn, cfg.prefix),
        )

        # ------------------------------------------------------------ outputs
        outputs = {
            "BucketName": (self.bucket.bucket_name, "the queue's bucket (S3_BUCKET)"),
            "KeyPrefix": (cfg.prefix or "(none)", "key prefix inside the bucket (connect(prefix=...))"),
            "Region": (cdk.Aws.REGION, "the bucket's region (S3_REGION)"),
            "WorkerFunctionName": (self.worker.function_name, "runs tasks; invoked by S3 events on ready/"),
            "SchedulerFunctionName": (self.scheduler.function_name, "one scheduler tick per minute"),
            "MonitorFunctionName": (self.monitor.function_name, "lease recovery and stall pokes"),
            "FailedInvocationsQueueUrl": (self.failed_invocations.queue_url, "async invocations that failed"),
            "ClientPolicyArn": (self.client_policy.managed_policy_arn, "attach to roles that submit tasks"),
            "WorkerPolicyArn": (self.worker_policy.managed_policy_arn, "attach to roles of long-lived workers"),
        }
        for name, (value, description) in outputs.items():
            cdk.CfnOutput(self, name, value=value, description=description)


def _retention(days: int) -> logs.RetentionDays:
    """The closest CloudWatch retention period at least ``days`` long."""
    allowed = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653]
    chosen = next((d for d in allowed if d >= days), 3653)
    by_days = {
        1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS", 30: "ONE_MONTH",
        60: "TWO_MONTHS", 90: "THREE_MONTHS", 120: "FOUR_MONTHS", 150: "FIVE_MONTHS", 180: "SIX_MONTHS",
        365: "ONE_YEAR", 400: "THIRTEEN_MONTHS", 545: "EIGHTEEN_MONTHS", 731: "TWO_YEARS", 1096: "THREE_YEARS",
        1827: "FIVE_YEARS", 2192: "SIX_YEARS", 2557: "SEVEN_YEARS", 2922: "EIGHT_YEARS", 3288: "NINE_YEARS",
        3653: "TEN_YEARS",
    }
    return getattr(logs.RetentionDays, by_days[chosen])


__all__ = [
    "BuquetStack",
    "client_statements",
    "key_paths",
    "long_lived_worker_statements",
    "monitor_statements",
    "scheduler_statements",
    "worker_statements",
]
