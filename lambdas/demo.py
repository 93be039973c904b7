"""The worker ``cdk deploy`` installs when you name none (``BUQUET_WORKER`` unset at
synth time): one ``echo`` task type that returns its input. Replace it with your own
factory (``-c buquet:worker=myapp.tasks:make_worker -c buquet:appPath=../myapp``).

A factory like this one is the whole contract: a function (plain or async) taking no
arguments and returning a :class:`buquet.Worker`. The handler calls it inside every
invocation's event loop, because the Worker's Queue holds connections that belong to
that loop.
"""

from __future__ import annotations

import os
from typing import Any

from buquet import Worker, connect

from . import invocation_worker_id


async def make_worker() -> Worker:
    """A Worker on the deployed bucket (``S3_BUCKET``/``S3_REGION``/``BUQUET_PREFIX``)
    with an ``echo`` handler. Raises ConfigurationError/StorageError from connect()."""
    queue = await connect(prefix=os.environ.get("BUQUET_PREFIX", ""))
    worker = Worker(queue, invocation_worker_id(), queue.shards)

    @worker.task("echo")
    async def echo(payload: Any) -> Any:
        return payload

    return worker
