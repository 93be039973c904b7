"""``BuquetQueue``: a bucket-backed task queue whose worker, scheduler and monitor run on
AWS Lambda, as one CDK construct other apps can import (``pip install 'buquet[cdk]'``).

::

    from buquet_infra import BuquetQueue, BuquetQueueProps

    queue = BuquetQueue(self, "Jobs", props=BuquetQueueProps(
        worker_spec="myapp.tasks:make_worker", app_path=Path("myapp"), alarm_topic=topic,
    ))
    queue.grant_producer(api_role)                      # attach the producer policy
    env = {"S3_BUCKET": queue.bucket.bucket_name, "BUQUET_PREFIX": queue.key_prefix}

Resources (all inside the construct):

* **Bucket** — created (SSE-S3, all public access blocked, TLS-only and
  conditional-write bucket policy, bucket-owner-enforced ownership, no versioning;
  lifecycle: incomplete uploads aborted after 1 day, ``schedules/slots/`` expired after
  7 days as a backstop to the scheduler's own pruning, optionally ``tasks/``), or an
  existing one adopted (``props.bucket``): then only its notification configuration and
  (for a bucket defined in the same app) its policy gain the queue's entries; for an
  imported bucket add :attr:`BuquetQueue.conditional_write_statement` to its policy
  yourself (a CDK warning says so).
* **Config** (``Custom::BuquetConfig``) — writes ``config.json`` with the shard count at
  deploy time (create-if-absent; a different existing value fails the deployment with
  a message saying so), so no client can race the deployment into another shard count.
* **Worker function** — invoked by ``s3:ObjectCreated:*`` notifications filtered on
  ``<prefix>ready/``; **scheduler** — EventBridge ``cron(* * * * ? *)``; **monitor** —
  ``rate(N minutes)``. One code bundle (``bundle.py``), precompiled for the runtime.
* **FailedInvocations queue** (SQS) — the on-failure destination of the three
  functions' asynchronous invocations, kept 14 days.
* **Log groups** with ``log_retention_days`` retention for every function, CDK's
  bucket-notification function included.
* **ClientPolicy** (producers) and **WorkerPolicy** (long-lived workers) — managed
  policies; every role is limited to the key prefixes its code uses
  (:mod:`buquet_infra.policies`).
* **Alarms** — failed-invocation queue depth, function errors, throttles, tasks too long
  for Lambda, queue lag; each notifies ``props.alarm_topic`` when given. One
  **dashboard** with the queue's metrics.
* **Outputs** — bucket name, key prefix (when set), queue URI, shard count, region,
  function names, failed-invocation queue URL, the two policy ARNs and the dashboard
  name; exported as ``<export_prefix>-<Name>`` when ``props.export_prefix`` is set.

Give the construct the id ``"Default"`` to keep the logical ids of a stack that held
these resources directly (CDK leaves ``Default`` out of logical ids): the bundled app's
:class:`~buquet_infra.BuquetStack` does, so upgrading it replaces nothing.
"""

from __future__ import annotations

import sys
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
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
from . import policies
from .settings import BuquetQueueProps

# after .settings, which makes the library importable from this checkout if need be
from buquet.keys import KeyLayout  # noqa: E402,I001

#: the Lambda runtime of each supported Python version
RUNTIMES = {
    "3.11": lambda_.Runtime.PYTHON_3_11,
    "3.12": lambda_.Runtime.PYTHON_3_12,
    "3.13": lambda_.Runtime.PYTHON_3_13,
}
#: scheduler.py prunes ledger entries older than 2 days; the lifecycle rule is a backstop
SLOT_LEDGER_EXPIRATION_DAYS = 7
#: the period of every alarm and dashboard metric
PERIOD = cdk.Duration.minutes(5)
#: the id CDK gives its (stack-wide, singleton) bucket-notification function
_NOTIFICATION_HANDLER_ID = "BucketNotificationsHandler050a0587b7544547bf325f094a3db834"


class BuquetQueue(Construct):
    """The queue: bucket, configuration, functions, rules, policies, alarms, dashboard.

    Args:
        scope: the parent construct (a Stack or anything inside one).
        construct_id: the construct id (``"Default"`` keeps a stack's logical ids).
        props: the settings (:class:`~buquet_infra.settings.BuquetQueueProps`);
            default: all defaults (the demo worker).

    Raises:
        ValueError: the props do not work together — e.g. a worker timeout whose
            longest task is shorter than the default task timeout (300 s) without
            ``allow_short_worker_timeout`` — or name an unsupported value.
        buquet_infra.bundle.BundleError: building the Lambda bundle failed (pip's output
            or what to do in the message).

    Attributes:
        props: the props it was built from.
        layout: the bucket's :class:`buquet.keys.KeyLayout`.
        key_prefix: key prefix inside the bucket (``""`` = the root).
        shard_count: the queue's shard count (written to ``config.json`` at deploy).
        bucket: the bucket (created or adopted); ``bucket_created`` says which.
        config: the ``Custom::BuquetConfig`` resource; ``config_shard_count`` its
            ``ShardCount`` attribute (the bucket's value, a deploy-time token).
        worker_function, scheduler_function, monitor_function, config_function: the
            Lambda functions.
        failed_invocations: the SQS queue of failed asynchronous invocations.
        client_policy, worker_policy: managed policies for producers and for
            long-lived workers.
        conditional_write_statement: the bucket-policy statement denying unconditional
            writes under ``tasks/`` (added to the bucket's policy when CDK manages it).
        alarms: the CloudWatch alarms by name (``FailedInvocations``,
            ``FunctionErrors``, ``Throttles``, ``TasksTooLong``, ``QueueLag``).
        dashboard: the CloudWatch dashboard.
        log_groups: the functions' log groups by function name.
        code_bundle: the built (or placeholder) code directory.
        outputs: the ``CfnOutput`` s by name.
        warnings: what :meth:`BuquetQueueProps.check` warned about.
    """

    def __init__(self, scope: Construct, construct_id: str, *, props: BuquetQueueProps | None = None) -> None:
        super().__init__(scope, construct_id)
        cfg = props or BuquetQueueProps()
        self.props = cfg
        self.warnings = cfg.check()
        for warning in self.warnings:
            cdk.Annotations.of(self).add_warning_v2("buquet:settings", warning)
            print(f"[buquet] WARNING: {warning}", file=sys.stderr)
        self.layout = KeyLayout(cfg.prefix)
        self.key_prefix = cfg.prefix
        self.shard_count = cfg.shard_count
        stack = cdk.Stack.of(self)

        # ------------------------------------------------------------ bucket
        self.bucket_created = cfg.bucket is None
        self.bucket = cfg.bucket if cfg.bucket is not None else self._create_bucket(cfg)
        arn = self.bucket.bucket_arn
        self.conditional_write_statement = policies.conditional_write_statement(arn, cfg.prefix)
        added = self.bucket.add_to_resource_policy(self.conditional_write_statement).statement_added
        if not added:  # an imported bucket (Bucket.from_bucket_name ...): CDK cannot change its policy
            cdk.Annotations.of(self).add_warning_v2(
                "buquet:adoptedBucket",
                "the adopted bucket's policy cannot be changed from here: add BuquetQueue.conditional_write_statement "
                "(deny unconditional PutObject under tasks/) to it yourself",
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
            self.code_bundle = bundling.build(
                cfg.app_path, cfg.architecture, python_version=cfg.python_version, precompile_mode=cfg.precompile
            )
        else:
            self.code_bundle = bundling.placeholder()
        code = lambda_.Code.from_asset(
            str(self.code_bundle.path),
            asset_hash=self.code_bundle.digest,
            asset_hash_type=cdk.AssetHashType.CUSTOM,
        )
        architecture = lambda_.Architecture.ARM_64 if cfg.architecture == "arm64" else lambda_.Architecture.X86_64
        runtime = RUNTIMES[cfg.python_version]
        common_env = {
            "S3_BUCKET": self.bucket.bucket_name,
            "S3_REGION": stack.region,
            "BUQUET_PREFIX": cfg.prefix,
            "BUQUET_SHARD_COUNT": str(cfg.shard_count),
            "POWERTOOLS_METRICS_NAMESPACE": cfg.metrics_namespace,
        }
        self.log_groups: dict[str, logs.LogGroup] = {}

        def function(
            name: str,
            handler: str,
            *,
            memory: int,
            timeout: int,
            reserved: int | None,
            env: dict[str, str],
            retry_attempts: int | None = None,
            max_event_age: cdk.Duration | None = None,
            description: str | None = None,
        ) -> lambda_.Function:
            log_group = logs.LogGroup(
                self,
                f"{name}Logs",
                retention=retention(cfg.log_retention_days),
                removal_policy=cdk.RemovalPolicy.DESTROY,
            )
            self.log_groups[name] = log_group
            asynchronous: dict[str, Any] = {}
            if retry_attempts is not None:
                asynchronous = {"on_failure": on_failure, "retry_attempts": retry_attempts, "max_event_age": max_event_age}
            return lambda_.Function(
                self,
                name,
                description=description or f"buquet {name.lower()} ({handler})",
                runtime=runtime,
                architecture=architecture,
                handler=handler,
                code=code,
                memory_size=memory,
                timeout=cdk.Duration.seconds(timeout),
                reserved_concurrent_executions=reserved,
                environment={**common_env, "POWERTOOLS_SERVICE_NAME": f"buquet-{name.lower()}", **env},
                log_group=log_group,
                **asynchronous,
            )

        # ------------------------------------------------- deploy-time config
        self.config_function = function(
            "Config",
            "lambdas.config_resource.handler",
            memory=256,
            timeout=60,
            reserved=None,
            env={},
            description="buquet: writes the queue's config.json at deploy time (custom resource)",
        )
        for statement in policies.config_statements(arn, cfg.prefix):
            self.config_function.add_to_role_policy(statement)
        self.config = cdk.CustomResource(
            self,
            "QueueConfig",
            service_token=self.config_function.function_arn,
            resource_type="Custom::BuquetConfig",
            properties={"Bucket": self.bucket.bucket_name, "Prefix": cfg.prefix, "ShardCount": str(cfg.shard_count)},
        )
        # the role's policy must exist before the function is called
        self.config.node.add_dependency(self.config_function)
        self.config_shard_count = self.config.get_att_string("ShardCount")

        # ------------------------------------------------------------- worker
        self.worker_function = function(
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
            s3n.LambdaDestination(self.worker_function),
            s3.NotificationKeyFilter(prefix=cfg.ready_prefix),
        )
        notifications = self.bucket.node.try_find_child("Notifications")
        if notifications is not None:  # no event before config.json exists
            notifications.node.add_dependency(self.config)
        self._retain_notification_handler_logs(cfg.log_retention_days)

        # ---------------------------------------------------------- scheduler
        self.scheduler_function = function(
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
        tick = events.Rule(
            self,
            "SchedulerTick",
            description="buquet: one scheduler tick per minute, just after the minute boundary",
            schedule=events.Schedule.cron(minute="*"),
            targets=[targets.LambdaFunction(self.scheduler_function, retry_attempts=2, max_event_age=cdk.Duration.seconds(60))],
        )
        tick.node.add_dependency(self.config)

        # ------------------------------------------------------------ monitor
        self.monitor_function = function(
            "Monitor",
            "lambdas.monitor.handler",
            memory=cfg.monitor_memory,
            timeout=60,
            reserved=cfg.monitor_concurrency,
            env={"BUQUET_STALL_SECONDS": str(cfg.stall_seconds)},
            retry_attempts=0,
            max_event_age=cdk.Duration.seconds(60),
        )
        sweep = events.Rule(
            self,
            "MonitorSweep",
            description="buquet: lease recovery and stalled-task pokes",
            schedule=events.Schedule.rate(cdk.Duration.minutes(cfg.monitor_interval_minutes)),
            targets=[targets.LambdaFunction(self.monitor_function, retry_attempts=2, max_event_age=cdk.Duration.seconds(60))],
        )
        sweep.node.add_dependency(self.config)

        # ---------------------------------------------------------------- IAM
        for fn, statements in (
            (self.worker_function, policies.worker_statements(arn, cfg.prefix)),
            (self.scheduler_function, policies.scheduler_statements(arn, cfg.prefix)),
            (self.monitor_function, policies.monitor_statements(arn, cfg.prefix)),
        ):
            for statement in statements:
                fn.add_to_role_policy(statement)
        self.client_policy = iam.ManagedPolicy(
            self,
            "ClientPolicy",
            description="buquet: submit tasks, read them, manage schedules (attach to producer roles)",
            statements=policies.client_statements(arn, cfg.prefix),
        )
        self.worker_policy = iam.ManagedPolicy(
            self,
            "WorkerPolicy",
            description="buquet: a long-lived worker with its built-in lease monitor (buquet worker ...)",
            statements=policies.long_lived_worker_statements(arn, cfg.prefix),
        )

        # ------------------------------------------------- alarms, dashboard
        self.alarms = self._alarms(cfg)
        self.dashboard = self._dashboard(cfg)

        # ------------------------------------------------------------ outputs
        self.outputs = self._outputs(cfg)

    # --------------------------------------------------------------- helpers
    def _create_bucket(self, cfg: BuquetQueueProps) -> s3.Bucket:
        """The queue's own bucket (see the module docstring)."""
        paths = policies.key_paths(cfg.prefix)
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
        return s3.Bucket(
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

    def _retain_notification_handler_logs(self, days: int) -> None:
        """Give CDK's bucket-notification function (one per stack, created without a
        log group, so Lambda would make one that never expires) a log group with the
        queue's retention. Done once per stack, by the first queue."""
        stack = cdk.Stack.of(self)
        handler = stack.node.try_find_child(_NOTIFICATION_HANDLER_ID)
        if handler is None:
            cdk.Annotations.of(self).add_warning_v2(
                "buquet:notificationLogs", "CDK's bucket-notification function was not found: its logs never expire"
            )
            return
        if stack.node.try_find_child("BucketNotificationsHandlerLogs") is not None:
            return
        cfn = handler.node.default_child
        if not isinstance(cfn, cdk.CfnResource):  # pragma: no cover - a CDK change
            return
        group = logs.LogGroup(
            stack,
            "BucketNotificationsHandlerLogs",
            retention=retention(days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        cfn.add_property_override("LoggingConfig", {"LogGroup": group.log_group_name})

    def metric(self, name: str, *, service: str = "worker", statistic: str = "Sum", label: str | None = None) -> cw.Metric:
        """A metric the functions publish (EMF), e.g. ``metric("TasksCompleted")``.

        Args:
            name: the metric name (docs/serverless.md lists them).
            service: ``"worker"``, ``"scheduler"`` or ``"monitor"`` (the ``service``
                dimension is ``buquet-<service>``).
            statistic: ``Sum``, ``Maximum``, ``p99`` ...
            label: legend label (default: the name).
        """
        return cw.Metric(
            namespace=self.props.metrics_namespace,
            metric_name=name,
            dimensions_map={"service": f"buquet-{service}"},
            statistic=statistic,
            period=PERIOD,
            label=label or name,
        )

    def _functions(self) -> dict[str, lambda_.Function]:
        return {"Worker": self.worker_function, "Scheduler": self.scheduler_function, "Monitor": self.monitor_function}

    def _summed(self, what: str) -> cw.MathExpression:
        """``what`` (``Errors``/``Throttles``) of the three functions, summed, with
        missing data as 0 (an idle worker publishes nothing)."""
        using = {name.lower(): fn.metric(what, statistic="Sum", period=PERIOD) for name, fn in self._functions().items()}
        return cw.MathExpression(
            expression=" + ".join(f"FILL({k}, 0)" for k in using),
            using_metrics=using,
            label=f"{what} (worker + scheduler + monitor)",
            period=PERIOD,
        )

    def _alarms(self, cfg: BuquetQueueProps) -> dict[str, cw.Alarm]:
        at_least = cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        specs: dict[str, tuple[cw.IMetric, float, int, cw.ComparisonOperator, str]] = {
            "FailedInvocations": (
                self.failed_invocations.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum"),
                1, 1, at_least,
                "buquet: invocations failed after Lambda's retries (messages in the FailedInvocations queue)",
            ),
            "FunctionErrors": (
                self._summed("Errors"), 1, 1, at_least,
                "buquet: a worker, scheduler or monitor invocation raised (configuration, bucket unreachable)",
            ),
            "Throttles": (
                self._summed("Throttles"), 1, 3, at_least,
                "buquet: invocations throttled for 15 minutes (reserved concurrency too small for the load)",
            ),
            "TasksTooLong": (
                self.metric("TasksTooLong"), 1, 3, at_least,
                f"buquet: tasks whose timeout_seconds exceeds what the worker function can give "
                f"({cfg.longest_task_seconds} s) keep being skipped: run a long-lived worker for them",
            ),
            "QueueLag": (
                self.metric("QueueLag", statistic="Maximum"), cfg.queue_lag_alarm_seconds * 1000, 2,
                cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                f"buquet: ready tasks waited more than {cfg.queue_lag_alarm_seconds} s for a worker for 10 minutes",
            ),
        }
        alarms: dict[str, cw.Alarm] = {}
        for name, (metric, threshold, periods, operator, description) in specs.items():
            alarm = cw.Alarm(
                self,
                f"{name}Alarm",
                metric=metric,
                threshold=threshold,
                evaluation_periods=periods,
                datapoints_to_alarm=periods,
                comparison_operator=operator,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                alarm_description=description,
            )
            if cfg.alarm_topic is not None:
                action = cw_actions.SnsAction(cfg.alarm_topic)
                alarm.add_alarm_action(action)
                alarm.add_ok_action(action)
            alarms[name] = alarm
        return alarms

    def _dashboard(self, cfg: BuquetQueueProps) -> cw.Dashboard:
        m = self.metric
        fns = self._functions()

        def per_function(what: str, statistic: str = "Sum") -> list[cw.IMetric]:
            return [fn.metric(what, statistic=statistic, period=PERIOD, label=name) for name, fn in fns.items()]

        dashboard = cw.Dashboard(self, "Dashboard", default_interval=cdk.Duration.hours(3))
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Tasks (worker function)",
                left=[m("TasksClaimed"), m("TasksCompleted"), m("TasksRetried"), m("TasksFailed")],
                width=8,
            ),
            cw.GraphWidget(
                title="Queue lag (ms): how long announced tasks had been due",
                left=[m("QueueLag", statistic="Maximum", label="max"), m("QueueLag", statistic="p50", label="p50")],
                left_annotations=[cw.HorizontalAnnotation(value=cfg.queue_lag_alarm_seconds * 1000, label="alarm")],
                width=8,
            ),
            cw.GraphWidget(
                title=f"Tasks too long for Lambda (> {cfg.longest_task_seconds} s)",
                left=[m("TasksTooLong")],
                right=[m("LeasesLost"), m("ClaimConflicts")],
                width=8,
            ),
        )
        dashboard.add_widgets(
            cw.GraphWidget(title="Invocations", left=per_function("Invocations"), width=6),
            cw.GraphWidget(title="Errors", left=per_function("Errors"), width=6),
            cw.GraphWidget(title="Throttles", left=per_function("Throttles"), width=6),
            cw.GraphWidget(
                title="Worker duration (ms)",
                left=[
                    self.worker_function.metric_duration(statistic="p50", period=PERIOD, label="p50"),
                    self.worker_function.metric_duration(statistic="p99", period=PERIOD, label="p99"),
                ],
                width=6,
            ),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Failed invocations (queue depth)",
                left=[self.failed_invocations.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum")],
                width=6,
            ),
            cw.GraphWidget(
                title="Scheduler",
                left=[m("SlotsFired", service="scheduler"), m("TasksSubmitted", service="scheduler")],
                right=[m("ScheduleErrors", service="scheduler"), m("SlotsLostToOtherScheduler", service="scheduler")],
                width=6,
            ),
            cw.GraphWidget(
                title="Monitor",
                left=[m("LeasesRecovered", service="monitor"), m("StalledTasksPoked", service="monitor")],
                width=6,
            ),
            cw.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=6),
        )
        return dashboard

    def _outputs(self, cfg: BuquetQueueProps) -> dict[str, cdk.CfnOutput]:
        region = cdk.Stack.of(self).region
        values: dict[str, tuple[str, str]] = {
            "BucketName": (self.bucket.bucket_name, "the queue's bucket (S3_BUCKET)"),
        }
        if cfg.prefix:  # CloudFormation outputs cannot be empty: no prefix, no output
            values["KeyPrefix"] = (cfg.prefix, "key prefix inside the bucket (connect(prefix=...), BUQUET_PREFIX)")
        values.update({
            "QueueUri": (f"s3://{self.bucket.bucket_name}/{cfg.prefix}", "the queue's root: s3://<bucket>/<key prefix>"),
            "ShardCount": (self.config_shard_count, "the queue's shard count (config.json, written at deploy)"),
            "Region": (region, "the bucket's region (S3_REGION)"),
            "WorkerFunctionName": (self.worker_function.function_name, "runs tasks; invoked by S3 events on ready/"),
            "SchedulerFunctionName": (self.scheduler_function.function_name, "one scheduler tick per minute"),
            "MonitorFunctionName": (self.monitor_function.function_name, "lease recovery and stall pokes"),
            "FailedInvocationsQueueUrl": (self.failed_invocations.queue_url, "async invocations that failed"),
            "ClientPolicyArn": (self.client_policy.managed_policy_arn, "attach to roles that submit tasks"),
            "WorkerPolicyArn": (self.worker_policy.managed_policy_arn, "attach to roles of long-lived workers"),
            "DashboardName": (self.dashboard.dashboard_name, "the queue's CloudWatch dashboard"),
        })
        outputs: dict[str, cdk.CfnOutput] = {}
        for name, (value, description) in values.items():
            export = f"{cfg.export_prefix}-{name}" if cfg.export_prefix else None
            outputs[name] = cdk.CfnOutput(self, name, value=value, description=description, export_name=export)
        return outputs

    # ---------------------------------------------------------------- grants
    def grant_producer(self, role: iam.IRole) -> None:
        """Attach the producer policy (submit, read tasks, manage schedules) to ``role``.

        The role references the policy (not the other way round), so a role in another
        stack depends on this one and no reference cycle arises."""
        role.add_managed_policy(self.client_policy)

    def grant_worker(self, role: iam.IRole) -> None:
        """Attach the long-lived worker policy (``buquet worker ...`` with its built-in
        lease monitor) to ``role`` (referenced from the role, as :meth:`grant_producer`)."""
        role.add_managed_policy(self.worker_policy)

    def environment(self) -> dict[str, str]:
        """The environment a producer or long-lived worker needs to ``connect()``:
        ``S3_BUCKET``, ``S3_REGION``, ``BUQUET_PREFIX`` (values may be tokens)."""
        return {"S3_BUCKET": self.bucket.bucket_name, "S3_REGION": cdk.Stack.of(self).region, "BUQUET_PREFIX": self.key_prefix}


def retention(days: int) -> logs.RetentionDays:
    """The closest CloudWatch retention period at least ``days`` long (at most ten
    years)."""
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


__all__ = ["BuquetQueue", "RUNTIMES", "retention"]
