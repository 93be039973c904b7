#!/usr/bin/env python3
"""A second, minimal CDK app that uses buquet only as an importable construct — what
another team's infrastructure would do after ``pip install 'buquet[cdk]'``.

    CDK_OUTDIR=out python tests/cdk_consumer_app.py [--bundle]

Two stacks:

* ``Platform`` — an existing-style bucket and an SNS topic of its own, and a
  :class:`~buquet_infra.BuquetQueue` that adopts the bucket (key prefix ``jobs/``, 2
  shards), notifies the topic, and exports its outputs as ``Platform-Jobs-*``.
* ``Api`` — another stack whose role submits tasks: it gets the queue's producer
  policy and environment through cross-stack references to the construct's attributes.

Without ``--bundle`` the code asset is a placeholder (``bundle=False``): the templates
are complete, the functions would not run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from buquet_infra import BuquetQueue, BuquetQueueProps


class PlatformStack(cdk.Stack):
    """The stack that owns the bucket, the alarm topic and the queue.

    Attributes:
        queue: the :class:`BuquetQueue`.
    """

    def __init__(self, scope: Construct, construct_id: str, *, bundle: bool) -> None:
        super().__init__(scope, construct_id)
        bucket = s3.Bucket(self, "Data", enforce_ssl=True, block_public_access=s3.BlockPublicAccess.BLOCK_ALL)
        topic = sns.Topic(self, "Alerts")
        self.queue = BuquetQueue(self, "Jobs", props=BuquetQueueProps(
            bucket=bucket,
            prefix="jobs/",
            shard_count=2,
            alarm_topic=topic,
            export_prefix="Platform-Jobs",
            worker_memory=512,
            architecture="x86_64",
            bundle=bundle,
        ))


class ApiStack(cdk.Stack):
    """A producer in another stack: its function may submit tasks to the queue."""

    def __init__(self, scope: Construct, construct_id: str, *, queue: BuquetQueue) -> None:
        super().__init__(scope, construct_id)
        role = iam.Role(self, "ApiRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        queue.grant_producer(role)
        lambda_.Function(
            self,
            "Api",
            runtime=lambda_.Runtime.PYTHON_3_12,
            handler="index.handler",
            code=lambda_.Code.from_inline("def handler(event, context):\n    return None\n"),
            role=role,
            environment=queue.environment(),
        )


def main(argv: list[str]) -> cdk.App:
    """Build and synthesize the app; ``--bundle`` builds the real Lambda bundle."""
    app = cdk.App()
    platform = PlatformStack(app, "Platform", bundle="--bundle" in argv)
    ApiStack(app, "Api", queue=platform.queue)
    app.synth()
    return app


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main(sys.argv[1:])
