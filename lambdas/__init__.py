"""AWS Lambda handlers for buquet: the worker, the scheduler and the lease monitor.

Handler entry points (the ``handler`` setting of each function)::

    lambdas.worker.handler      S3 ObjectCreated events on the ``ready/`` prefix
    lambdas.scheduler.handler   an EventBridge rule, every minute
    lambdas.monitor.handler     an EventBridge rule, every minute
    lambdas.config_resource.handler
                                the deploy-time Custom::BuquetConfig resource (config.json)

The handlers are thin: they read their settings from the environment (see
:mod:`lambdas._common`), open the queue inside a fresh event loop per invocation, call
:func:`buquet.invocation.run_invocation`, :meth:`buquet.scheduler.Scheduler.tick` or
:meth:`buquet.Monitor.sweep` / :meth:`~buquet.Monitor.poke_stalled`, and publish
CloudWatch metrics (EMF) and JSON logs through aws-lambda-powertools. ``infra/``
deploys them with the AWS CDK; ``docs/serverless.md`` explains the whole set-up.

Importing this package imports nothing heavy; :func:`invocation_worker_id` is the one
helper meant for user code (a Worker factory that names its worker after the Lambda
request it runs in).
"""

from __future__ import annotations

import contextvars

#: the AWS request id of the invocation being handled (set by the worker handler)
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "buquet_lambda_request_id", default=None
)


def invocation_worker_id(prefix: str = "lambda") -> str:
    """A worker id naming the current Lambda invocation: ``"<prefix>-<aws request id>"``.

    Meant for the ``BUQUET_WORKER`` factory, which the worker handler calls inside each
    invocation: ``Worker(queue, invocation_worker_id(), queue.shards)``. A task's
    history (``worker_id``) then leads straight to the invocation's log lines. Outside
    an invocation (a local run, a test) it returns ``"<prefix>-local"``.

    Args:
        prefix: the part before the request id; ``[A-Za-z0-9_.-]``, as worker ids allow.

    Returns:
        A valid worker id of at most 128 characters.
    """
    request_id = current_request_id.get()
    return f"{prefix}-{request_id or 'local'}"[:128]


__all__ = ["current_request_id", "invocation_worker_id"]
