"""The worker application of the chaos test (tests/test_faults.py), loaded by
``buquet worker tests.fault_app:make_worker`` in separate processes.

Configuration from the environment: the store as for the CLI (``S3_BUCKET``,
``S3_ENDPOINT``, ``S3_REGION`` — the test points ``S3_ENDPOINT`` at its fault proxy),
plus ``FAULT_WORKER_ID`` (this worker's id) and ``FAULT_LOG_DIR`` (the side channel).

The side channel lives outside S3: every execution of the handler appends, fsynced, a
start line and (unless the process is killed first) an end line to
``FAULT_LOG_DIR/exec-<worker id>.log``::

    S <key> <worker id> <pid> <execution id> <time.time()>
    E <key> <worker id> <pid> <execution id> <time.time()> <ok|error|fail|cancelled>

``key`` is the task's ``input["k"]`` (the handler does not see the task id). The test
matches these lines with the task documents to find duplicate and overlapping
executions.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import time
from pathlib import Path
from typing import Any

from buquet import RetryableError, Worker, connect

TASK_TYPE = "fault_job"


def expected_output(payload: dict[str, Any]) -> dict[str, Any]:
    """The output a correct run of the handler returns for ``payload`` (deterministic)."""
    digest = hashlib.sha256(f"{payload['k']}:{payload['n']}".encode()).hexdigest()[:16]
    return {"k": payload["k"], "n": payload["n"], "sum": sum(payload["xs"]), "digest": digest}


class _SideChannel:
    def __init__(self, log_dir: Path, worker_id: str) -> None:
        self.worker_id = worker_id
        self.pid = os.getpid()
        self.flags = log_dir / "flags"
        self.flags.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(log_dir / f"exec-{worker_id}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._ids = itertools.count(1)

    def next_id(self) -> str:
        return f"{self.pid}-{next(self._ids)}"

    def line(self, *fields: object) -> None:
        os.write(self._fd, (" ".join(str(f) for f in fields) + "\n").encode())  # one append
        os.fsync(self._fd)

    def first_time(self, key: str) -> bool:
        """True exactly once per key over all processes (an O_EXCL flag file)."""
        try:
            os.close(os.open(self.flags / key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            return True
        except FileExistsError:
            return False


async def make_worker() -> Worker:
    queue = await connect()
    worker_id = os.environ.get("FAULT_WORKER_ID", f"w{os.getpid()}")
    log_dir = Path(os.environ["FAULT_LOG_DIR"])
    side = _SideChannel(log_dir, worker_id)
    worker = Worker(queue, worker_id, queue.shards)

    @worker.task(TASK_TYPE)
    async def job(payload: dict[str, Any]) -> dict[str, Any]:
        """Modes: ``ok`` (sleep, return), ``slow`` (the same, longer than a heartbeat
        period), ``flaky`` (the first execution of the key raises RetryableError),
        ``fail`` (always raises RetryableError)."""
        key = payload["k"]
        eid = side.next_id()
        side.line("S", key, worker_id, side.pid, eid, f"{time.time():.6f}")
        outcome = "cancelled"
        try:
            await asyncio.sleep(payload["sleep"])
            if payload["mode"] == "fail":
                outcome = "fail"
                raise RetryableError("always fails")
            if payload["mode"] == "flaky" and side.first_time(key):
                outcome = "error"
                raise RetryableError("first execution fails")
            result = expected_output(payload)
            outcome = "ok"
            return result
        finally:
            side.line("E", key, worker_id, side.pid, eid, f"{time.time():.6f}", outcome)

    ready_dir = log_dir / "ready"
    ready_dir.mkdir(exist_ok=True)
    (ready_dir / worker_id).write_text(str(os.getpid()))  # tell the test this worker is up
    return worker
