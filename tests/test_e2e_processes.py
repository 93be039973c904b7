"""End to end: several worker processes (``buquet worker``) racing on the same shards
of a real S3 server (SeaweedFS) and of a local directory; a worker SIGKILLed mid-task."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from buquet import TaskStatus, connect
from buquet.queue import Queue

ROOT = Path(__file__).resolve().parent.parent


def spawn_worker(env: dict[str, str], worker_id: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "buquet", "worker", "tests.e2e_app:make_worker_with_hang", *extra],
        cwd=ROOT,
        env={**os.environ, **env, "E2E_WORKER_ID": worker_id, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def wait_all_final(queue: Queue, ids: list[str], timeout_seconds: float) -> None:
    await asyncio.gather(*(queue.wait(i, timeout_seconds=timeout_seconds) for i in ids))


async def race(queue: Queue, env: dict[str, str], n_tasks: int, n_workers: int, ready_dir: Path) -> None:
    ready_dir.mkdir()
    env = {**env, "E2E_READY_DIR": str(ready_dir)}
    procs = [spawn_worker(env, f"racer{k}", "--concurrency", "4", "--poll-interval-ms", "50",
                          "--max-poll-interval-ms", "100") for k in range(n_workers)]
    try:
        # all workers up and polling before the tasks arrive, so they really race
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while len(list(ready_dir.iterdir())) < n_workers:
            assert all(p.poll() is None for p in procs), "a worker died at start"
            assert loop.time() < deadline, "workers did not start"
            await asyncio.sleep(0.05)
        ids = list(await asyncio.gather(*(queue.submit("record", {"n": i}) for i in range(n_tasks))))
        ids = [t.id for t in ids]
        await wait_all_final(queue, ids, 180)
    finally:
        stop(procs)
    for p in procs:
        assert p.returncode == 0, p.stderr.read().decode() if p.stderr else ""
    seen = set()
    workers_used = set()
    for i, task_id in enumerate(ids):
        t = await queue.get(task_id)
        assert t is not None and t.status == TaskStatus.Completed
        assert t.output["n"] == i and t.attempt == 1 and t.output["worker"] == t.worker_id
        history = [h.status for h in await queue.get_history(task_id)]
        assert history == [TaskStatus.Pending, TaskStatus.Running, TaskStatus.Completed]
        seen.add(task_id)
        workers_used.add(t.worker_id)
    assert len(seen) == n_tasks
    assert len(workers_used) > 1  # the work really was shared


@pytest.mark.e2e
async def test_workers_racing_on_a_local_directory(tmp_path: Path) -> None:
    queue = await connect(local_dir=str(tmp_path / "bucket"))
    await race(queue, {"BUQUET_LOCAL_DIR": str(tmp_path / "bucket")}, n_tasks=60, n_workers=3, ready_dir=tmp_path / "ready")


@pytest.mark.e2e
@pytest.mark.s3
async def test_workers_racing_on_seaweedfs(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    queue = await connect(endpoint=s3_endpoint, bucket=s3_bucket)
    env = {"S3_ENDPOINT": s3_endpoint, "S3_BUCKET": s3_bucket, "S3_REGION": "us-east-1"}
    await race(queue, env, n_tasks=80, n_workers=3, ready_dir=tmp_path / "ready")


@pytest.mark.e2e
@pytest.mark.s3
async def test_sigkilled_worker_task_is_recovered_after_its_lease(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    queue = await connect(endpoint=s3_endpoint, bucket=s3_bucket)
    env = {"S3_ENDPOINT": s3_endpoint, "S3_BUCKET": s3_bucket, "S3_REGION": "us-east-1"}
    flag = tmp_path / "started"
    task = await queue.submit("die_once", {"flag": str(flag)})
    victim = spawn_worker(env, "victim", "--lease-seconds", "2", "--poll-interval-ms", "50", "--no-monitor")
    try:
        # wait (bounded) until the handler runs and its task moved from the ready index
        # to the lease index, so recovery must go through the monitor
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while True:
            leases = await queue.store.list(queue.layout.lease_prefix(task.shard))
            ready = await queue.store.list(queue.layout.ready_prefix(task.shard))
            if flag.exists() and any(task.id in i.key for i in leases) and not ready:
                break
            assert loop.time() < deadline, "the victim never started the task"
            await asyncio.sleep(0.1)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        running = await queue.get(task.id)
        assert running is not None and running.status == TaskStatus.Running and running.worker_id == "victim"
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
    rescuer = spawn_worker(env, "rescuer", "--lease-seconds", "2", "--poll-interval-ms", "50",
                           "--monitor-interval-seconds", "0.5")
    try:
        done = await queue.wait(task.id, timeout_seconds=120)
    finally:
        stop([rescuer])
    assert done.status == TaskStatus.Completed and done.attempt == 2
    assert done.output["recovered_by"] == "rescuer"
    assert "lease of attempt 1 expired (worker victim stopped)" in (done.last_error or "")
    statuses = [h.status for h in await queue.get_history(task.id)]
    assert statuses == [TaskStatus.Pending, TaskStatus.Running, TaskStatus.Pending, TaskStatus.Running, TaskStatus.Completed]


@pytest.mark.e2e
@pytest.mark.parametrize("task_type", ["hang", "hang_sync"])
async def test_sigterm_finishes_nothing_half_way_and_releases_the_task(tmp_path: Path, task_type: str) -> None:
    # hang_sync is a plain function sleeping 120 s: the worker must still exit promptly
    # (its thread is a daemon) instead of waiting for it after the grace period
    queue = await connect(local_dir=str(tmp_path / "bucket"))
    flag = tmp_path / "started"
    task = await queue.submit(task_type, {"flag": str(flag)}, max_retries=0)
    proc = spawn_worker({"BUQUET_LOCAL_DIR": str(tmp_path / "bucket")}, "graceful",
                        "--poll-interval-ms", "50", "--shutdown-grace-seconds", "0.5")
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not flag.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert loop.time() < deadline, "the worker never started the task"
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0  # grace is 0.5 s; the handler would run 120 s
    finally:
        if proc.poll() is None:
            proc.kill()
    t = await queue.get(task.id)
    assert t is not None and t.status == TaskStatus.Pending and t.attempt == 0
    assert "released" in (t.last_error or "")
    assert await queue.list_ready(t.shard) == [task.id]


@pytest.mark.e2e
async def test_sigterm_while_the_worker_is_starting_is_a_clean_exit_that_claims_nothing(tmp_path: Path) -> None:
    # a SIGTERM that lands while the app is still being built must not kill the process
    # with the interpreter's default action (status -15): the worker stops before its
    # first claim and exits 0
    queue = await connect(local_dir=str(tmp_path / "bucket"))
    task = await queue.submit("record", {"n": 1})
    building, go = tmp_path / "building", tmp_path / "go"
    proc = subprocess.Popen(
        [sys.executable, "-m", "buquet", "worker", "tests.e2e_app:make_worker_slowly", "--poll-interval-ms", "50"],
        cwd=ROOT, env={**os.environ, "BUQUET_LOCAL_DIR": str(tmp_path / "bucket"), "PYTHONPATH": str(ROOT),
                       "E2E_BUILDING": str(building), "E2E_GO": str(go)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not building.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert loop.time() < deadline, "the worker never started building"
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        go.write_text("")
        assert proc.wait(timeout=30) == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    t = await queue.get(task.id)
    assert t is not None and t.status == TaskStatus.Pending and t.attempt == 0
