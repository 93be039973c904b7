"""A worker application for the end-to-end tests, loaded by ``buquet worker
tests.e2e_app:make_worker`` in separate processes. Configuration comes from the same
environment variables as the CLI (S3_BUCKET/S3_ENDPOINT or BUQUET_LOCAL_DIR) plus
``E2E_WORKER_ID``."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from buquet import Worker, connect


async def make_worker() -> Worker:
    queue = await connect()
    worker = Worker(queue, os.environ.get("E2E_WORKER_ID", f"w{os.getpid()}"), queue.shards)
    if os.environ.get("E2E_READY_DIR"):  # tell the test this worker is up
        Path(os.environ["E2E_READY_DIR"], worker.worker_id).write_text(str(os.getpid()))

    @worker.task("record")
    async def record(payload: dict) -> dict:
        await asyncio.sleep(0.01)  # a little work, so racing workers genuinely overlap
        return {"n": payload["n"], "pid": os.getpid(), "worker": worker.worker_id}

    @worker.task("die_once")
    async def die_once(payload: dict) -> dict:
        """First attempt: announce itself, then hang (the test SIGKILLs us). Later
        attempts: finish."""
        flag = Path(payload["flag"])
        if not flag.exists():
            flag.write_text(str(os.getpid()))
            await asyncio.Event().wait()
        return {"recovered_by": worker.worker_id, "pid": os.getpid()}

    return worker


async def make_worker_with_hang() -> Worker:
    """The worker above plus a ``hang`` task type that announces itself and never ends."""
    worker = await make_worker()

    @worker.task("hang")
    async def hang(payload: dict) -> None:
        Path(payload["flag"]).write_text(str(os.getpid()))
        await asyncio.Event().wait()

    @worker.task("hang_sync")
    def hang_sync(payload: dict) -> None:
        """A plain function that outlives any grace period."""
        Path(payload["flag"]).write_text(str(os.getpid()))
        time.sleep(120)

    return worker


async def make_worker_slowly() -> Worker:
    """:func:`make_worker` that first announces ``E2E_BUILDING`` and waits for the file
    ``E2E_GO`` to exist: a worker still starting up when a signal arrives."""
    Path(os.environ["E2E_BUILDING"]).write_text(str(os.getpid()))
    while not Path(os.environ["E2E_GO"]).exists():
        await asyncio.sleep(0.02)
    return await make_worker()


async def make_worker_with_flaky() -> Worker:
    """:func:`make_worker` plus ``flaky_once``: the first attempt of each task fails
    with a RetryableError (a flag file marks it), later attempts succeed."""
    from buquet import RetryableError

    worker = await make_worker()

    @worker.task("flaky_once")
    async def flaky_once(payload: dict) -> dict:
        flag = Path(payload["flag"])
        if not flag.exists():
            flag.write_text("failed once")
            raise RetryableError("first attempt fails")
        return {"ok": True}

    return worker
