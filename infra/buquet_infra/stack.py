"""``BuquetStack``: the stack ``infra/app.py`` deploys — a thin shell around one
:class:`~buquet_infra.BuquetQueue` (see :mod:`buquet_infra.construct` for what it
creates).

The construct has the id ``"Default"``, which CDK leaves out of logical ids, so the
resources keep the ids they had when this stack created them itself (an update replaces
nothing), and the outputs are named plainly (``BucketName``, ``ShardCount``, ...) and
exported as ``<stack name>-<Name>``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from .construct import BuquetQueue
from .policies import (
    client_statements,
    conditional_write_statement,
    config_statements,
    key_paths,
    long_lived_worker_statements,
    monitor_statements,
    scheduler_statements,
    worker_statements,
)
from .settings import DeploySettings


class BuquetStack(cdk.Stack):
    """The deployable unit of the bundled app.

    Args:
        scope: the CDK app.
        construct_id: the stack name.
        settings: from :func:`buquet_infra.settings.from_context`; ``bucket_name`` and
            ``alarm_topic_arn`` become the adopted bucket and the alarms' SNS topic.
        **kwargs: passed to :class:`aws_cdk.Stack` (``env``, ``tags`` ...).

    Raises:
        ValueError: settings that do not work together (see
            :meth:`BuquetQueueProps.check`).

    Attributes:
        queue: the :class:`BuquetQueue`.
        settings: the settings it was built from.
        bucket, worker, scheduler, monitor, failed_invocations, client_policy,
        worker_policy, code_bundle: shortcuts to the queue's resources.
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: DeploySettings, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, description="buquet: an S3-backed task queue with Lambda workers", **kwargs)
        self.settings = settings
        cdk_objects: dict[str, Any] = {}
        if settings.bucket_name:
            cdk_objects["bucket"] = s3.Bucket.from_bucket_name(self, "AdoptedBucket", settings.bucket_name)
        if settings.alarm_topic_arn:
            cdk_objects["alarm_topic"] = sns.Topic.from_topic_arn(self, "AlarmTopic", settings.alarm_topic_arn)
        props = settings.props(**cdk_objects)
        if props.export_prefix is None:
            props = replace(props, export_prefix=construct_id)
        self.queue = BuquetQueue(self, "Default", props=props)
        self.bucket = self.queue.bucket
        self.worker = self.queue.worker_function
        self.scheduler = self.queue.scheduler_function
        self.monitor = self.queue.monitor_function
        self.failed_invocations = self.queue.failed_invocations
        self.client_policy = self.queue.client_policy
        self.worker_policy = self.queue.worker_policy
        self.code_bundle = self.queue.code_bundle


__all__ = [
    "BuquetStack",
    "client_statements",
    "conditional_write_statement",
    "config_statements",
    "key_paths",
    "long_lived_worker_statements",
    "monitor_statements",
    "scheduler_statements",
    "worker_statements",
]
