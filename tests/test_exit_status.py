"""Every CLI process exits with its true status, every time (issue 7, defect 11).

obstore runs its requests on a tokio runtime whose threads call back into Python to
resolve asyncio futures. If one of them still needs the GIL when the interpreter starts
finalizing, CPython ends that thread with ``pthread_exit``; the forced unwind cannot
cross the Rust frames and the whole process dies with SIGABRT (exit 134) after it had
finished correctly: before the fix (buquet/_exit.py), 1 run in 5 to 10 of ``buquet
list`` and ``buquet worker … --max-tasks 0`` against SeaweedFS. One run proves nothing,
so each command is run many times (4 at once) and every exit status is checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PARALLEL = 4
MISSING_ID = "0193a4f2-7c1e-7d2a-9b3c-4d5e6f708192"  # well-formed, never submitted
WORKER = "tests.e2e_app:make_worker"

# (id, CLI arguments after the global options, runs, expected status, text expected in stdout+stderr)
CASES = [
    ("list", ["list"], 40, 0, "ID  TYPE  STATUS"),
    # connects, starts the monitor and stops at once (the monitor's first scan may be
    # cancelled mid-request: a runtime thread still enters Python after that)
    ("worker-max-tasks-0", ["worker", WORKER, "--max-tasks", "0"], 40, 0, "stopped"),
    ("worker-exit-when-idle", ["worker", WORKER, "--exit-when-idle", "--poll-interval-ms", "50"], 8, 0, "stopped"),
    # a well-formed id that does not exist: S3 traffic, then ``Error: no task …``, status 1
    ("get-missing", ["get", MISSING_ID], 12, 1, f"no task {MISSING_ID}"),
    # invalid option found after the worker connected: usage error, status 2
    ("worker-max-tasks-negative", ["worker", WORKER, "--max-tasks", "-1"], 8, 2, "max_tasks: must be between"),
    # malformed id: usage error before any S3 request, status 2
    ("get-malformed", ["get", "not-a-task-id"], 4, 2, "task_id: Invalid UUID"),
]


def _env(endpoint: str, bucket: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BUQUET_LOCAL_DIR", "BUQUET_PREFIX")}
    env.update(
        S3_ENDPOINT=endpoint,
        S3_BUCKET=bucket,
        S3_REGION="us-east-1",
        AWS_ACCESS_KEY_ID=os.environ.get("AWS_ACCESS_KEY_ID", "buquet-test"),
        AWS_SECRET_ACCESS_KEY=os.environ.get("AWS_SECRET_ACCESS_KEY", "buquet-test"),
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    return env


@pytest.mark.s3
@pytest.mark.parametrize(("args", "runs", "expected", "text"),
                         [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_cli_exit_status_is_exact_on_every_run(
    s3_endpoint: str, s3_bucket: str, args: list[str], runs: int, expected: int, text: str
) -> None:
    env = _env(s3_endpoint, s3_bucket)
    cmd = [sys.executable, "-m", "buquet", *args]

    def once(_: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(once, range(runs)))

    codes = [r.returncode for r in results]
    wrong = [r for r in results if r.returncode != expected]
    sample = "" if not wrong else f"\nfirst wrong run's stderr:\n{wrong[0].stderr[-2000:]}"
    assert not wrong, (
        f"{len(wrong)} of {runs} runs of `buquet {' '.join(args)}` did not exit {expected} "
        f"(aborts: {codes.count(-6) + codes.count(134)}): {sorted(set(codes))}{sample}"
    )
    for r in results:  # and each run really did its work before exiting
        assert text in r.stdout + r.stderr, r.stdout + r.stderr
