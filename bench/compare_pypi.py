#!/usr/bin/env python
"""Run N no-op tasks through ONE worker of the original PyPI ``buquet==0.1.0``.

The PyPI package has the same import name as ours, so it lives in its own venv
(default ``/tmp/buquet-pypi``, created on first use with ``pip install buquet==0.1.0``)
and runs in subprocesses of that venv's python (``_pypi_child.py``), driven only
through its documented public API.

Method (same as bench.py's "drain" mode for our package):

1. a fresh bucket with versioning on (0.1.0 refuses to start without it);
2. one worker process starts, connects, and waits;
3. a submitter process submits N tasks (``--submit-concurrency`` at a time);
4. the worker is released and runs with ``max_tasks=N``.

Reported: submits/s, tasks/s from the first handler start to the last completion
(``on_success`` hook) and from submit start to the last completion, worker CPU s/task,
worker peak RSS. With ``--count`` the same run goes through a counting HTTP proxy
(s3proxy.py) and requests per task by S3 operation are reported too (the proxy's
CPU slows that run down, so time throughput on a run without it).

    python bench/compare_pypi.py --endpoint http://127.0.0.1:8333 --tasks 1000 --count
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _infra
from s3proxy import CountingProxy

PYPI_VERSION = "0.1.0"
DEFAULT_VENV = os.environ.get("BUQUET_PYPI_VENV", "/tmp/buquet-pypi")
CHILD = str(HERE / "_pypi_child.py")


def venv_python(venv: str) -> str:
    return str(Path(venv) / "bin" / "python")


def ensure_venv(venv: str = DEFAULT_VENV, quiet: bool = False) -> str:
    """Create ``venv`` with ``buquet==0.1.0`` from PyPI unless it is already there."""
    py = venv_python(venv)
    probe = "import importlib.metadata as m; print(m.version('buquet'))"
    if Path(py).exists():
        r = subprocess.run([py, "-c", probe], capture_output=True, text=True, cwd="/", env=_child_env(), check=False)
        if r.returncode == 0 and r.stdout.strip() == PYPI_VERSION:
            return py
    if not quiet:
        print(f"[compare_pypi] creating {venv} with buquet=={PYPI_VERSION} from PyPI", file=sys.stderr)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", venv], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", f"buquet=={PYPI_VERSION}"], check=True)
    return py


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    for k, v in _infra.DUMMY_CREDS.items():
        env.setdefault(k, v)
    env["S3_REGION"] = "us-east-1"
    return env


def _result(line_source: str) -> dict[str, Any]:
    for line in reversed(line_source.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"PyPI child printed no RESULT:\n{line_source[-3000:]}")


def run_pypi(
    endpoint: str,
    n: int,
    *,
    bucket: str | None = None,
    python: str | None = None,
    submit_concurrency: int = 16,
    polling: str = "default",
    monitor: bool = True,
    count: bool = False,
    cleanup: bool = True,
    timeout: float = 900,
) -> dict[str, Any]:
    """One run of PyPI buquet 0.1.0: N no-op tasks, one worker process. See module doc."""
    python = python or ensure_venv()
    bucket = bucket or f"bench-pypi-{uuid.uuid4().hex[:10]}"
    _infra.create_bucket(endpoint, bucket, versioned=True)
    proxy = CountingProxy(endpoint) if count else None
    target = proxy.endpoint if proxy else endpoint
    env = _child_env()
    try:
        worker = subprocess.Popen(
            [python, CHILD, "work", target, bucket, str(n), polling, "1" if monitor else "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/", env=env,
        )
        assert worker.stdout is not None and worker.stdin is not None
        line = worker.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"PyPI worker did not start: {line}{worker.stderr.read() if worker.stderr else ''}")
        spid = _infra.server_pid(endpoint)
        setup_ops = proxy.counter.snapshot()["ops"] if proxy else {}
        if proxy:
            proxy.counter.reset()
        sub = subprocess.run(
            [python, CHILD, "submit", target, bucket, str(n), str(submit_concurrency)],
            capture_output=True, text=True, cwd="/", env=env, timeout=timeout, check=False,
        )
        # 0.1.0 sometimes aborts at interpreter exit (a pyo3 "interpreter is not
        # initialized" panic in a runtime thread) after its work is done: a RESULT
        # line counts, whatever the exit code.
        if "RESULT " not in sub.stdout:
            worker.kill()
            raise RuntimeError(f"PyPI submit failed (exit {sub.returncode}):\n{sub.stderr[-3000:]}\n{sub.stdout[-2000:]}")
        submitted = _result(sub.stdout)
        submit_ops = proxy.counter.snapshot() if proxy else None
        if proxy:
            proxy.counter.reset()
        scpu1 = _infra.proc_cpu_s(spid)
        busy0 = _infra.machine_busy_s()
        worker.stdin.write("GO\n")
        worker.stdin.flush()
        out, err = worker.communicate(timeout=timeout)
        if "RESULT " not in out:
            raise RuntimeError(f"PyPI worker failed (exit {worker.returncode}):\n{err[-3000:]}\n{out[-2000:]}")
        worked = _result(out)
        exit_codes = {"submit": sub.returncode, "worker": worker.returncode}
        scpu2 = _infra.proc_cpu_s(spid)
        busy1 = _infra.machine_busy_s()
        work_ops = proxy.counter.snapshot() if proxy else None
    finally:
        if proxy:
            proxy.stop()
        if cleanup:
            _infra.delete_bucket(endpoint, bucket)

    if "/buquet-pypi" not in worked["module"] and "site-packages" not in worked["module"]:
        raise RuntimeError(f"the child imported the wrong buquet: {worked['module']}")
    starts, done = worked["handler_starts"], worked["completions"]
    first, last = min(starts), max(done) if done else worked["run_end"]
    res: dict[str, Any] = {
        "impl": f"pypi buquet {PYPI_VERSION}",
        "workers": 1,
        "tasks": n,
        "handled": len(starts),
        "completed": len(done),
        "submits_per_s": n / (submitted["submit_end"] - submitted["submit_start"]),
        "tasks_per_s_claim_to_done": n / (last - first),
        "tasks_per_s_submit_to_done": n / (last - submitted["submit_start"]),
        "worker_cpu_ms_per_task": 1000 * worked["cpu_s"] / n,
        "submitter_cpu_ms_per_task": 1000 * submitted["cpu_s"] / n,
        "worker_maxrss_mb": worked["maxrss_kb"] / 1024,
        "server_cpu_ms_per_task_work": 1000 * (scpu2 - scpu1) / n if spid and scpu1 is not None else None,
        "other_cpu_ms_per_task_work": (
            1000 * ((busy1 - busy0) - (scpu2 - scpu1) - worked["cpu_s"]) / n
            if busy0 is not None and busy1 is not None and spid and scpu1 is not None else None),
        "shards": worked["shards"],
        "polling": polling,
        "exit_codes": exit_codes,
        "options": worked.get("options"),
        "monitor": monitor,
    }
    if proxy and submit_ops and work_ops:
        ops: dict[str, int] = {}
        for part in (submit_ops["ops"], work_ops["ops"]):
            for op, k in part.items():
                ops[op] = ops.get(op, 0) + k
        total = sum(ops.values())
        res["wire_ops"] = ops
        res["wire_detail_submit"] = submit_ops["detail"]
        res["wire_detail_work"] = work_ops["detail"]
        res["wire_setup_ops"] = setup_ops
        res["wire_requests_per_task"] = total / n
        res["wire_requests_per_task_no_list"] = (total - ops.get("list", 0) - ops.get("list_v1", 0)) / n
        res["wire_submit_requests_per_task"] = sum(submit_ops["ops"].values()) / n
        res["wire_worker_requests_per_task"] = sum(work_ops["ops"].values()) / n
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description="Benchmark PyPI buquet 0.1.0 (one worker) on an S3 endpoint.")
    ap.add_argument("--endpoint", required=True, help="S3 endpoint, e.g. http://127.0.0.1:8333")
    ap.add_argument("--bucket", help="bucket to use (created with versioning; default: a fresh one)")
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--submit-concurrency", type=int, default=16)
    ap.add_argument("--polling", default="default",
                    help="PyPI worker polling: default | fixed:MS | adaptive:MIN_MS:MAX_MS")
    ap.add_argument("--no-monitor", action="store_true")
    ap.add_argument("--count", action="store_true", help="count S3 requests through a proxy (slower run)")
    ap.add_argument("--keep-bucket", action="store_true")
    ap.add_argument("--venv", default=DEFAULT_VENV)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    _infra.ensure_creds()
    py = ensure_venv(args.venv)
    t = time.time()
    res = run_pypi(
        args.endpoint, args.tasks, bucket=args.bucket, python=py,
        submit_concurrency=args.submit_concurrency, polling=args.polling,
        monitor=not args.no_monitor, count=args.count, cleanup=not args.keep_bucket,
    )
    res["wall_s"] = time.time() - t
    if args.json:
        print(json.dumps(res, indent=2))
        return
    for k, v in res.items():
        if k.startswith("wire_detail") or k == "wire_setup_ops":
            continue
        print(f"{k:32} {v:.2f}" if isinstance(v, float) else f"{k:32} {v}")


if __name__ == "__main__":
    main()
