#!/usr/bin/env python
"""Where does one worker's time go? Prefill N no-op tasks, then run ONE worker of our
buquet in this process (exit_when_idle) and report:

* tasks/s, client CPU ms/task, server CPU ms/task (when the server's PID is found);
* requests per task by store operation, and per-operation latency (p50/mean/max ms);
* the poll loop: polls, LISTs per poll, due markers seen per poll, tasks started per poll;
* optionally a cProfile of the whole run (``--profiler cprofile``), top functions by
  own time and by cumulative time.

For a sampling profile including native (Rust/obstore) frames use py-spy on this script::

    py-spy record --native -r 250 -f speedscope -o /tmp/worker.json -- \\
        python bench/profile_worker.py --endpoint http://127.0.0.1:8333 --profiler none

The wrappers used for the timings are instance attributes set by this script only
(nothing in the library is changed).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _infra

from bench import _cpu_s, _prepare_bucket, _submit_all


def thread_cpu() -> dict[str, float]:
    """CPU seconds per thread of this process, keyed "name/tid" (Linux /proc)."""
    out: dict[str, float] = {}
    tck = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        out[f"{name}/{tid}"] = (int(fields[11]) + int(fields[12])) / tck
    return out


def group_threads(before: dict[str, float], after: dict[str, float], main_tid: int) -> dict[str, float]:
    """CPU seconds by thread group: python main thread, obstore/tokio runtime, other."""
    groups: dict[str, float] = {}
    for key, cpu in after.items():
        name, tid = key.rsplit("/", 1)
        delta = cpu - before.get(key, 0.0)
        if int(tid) == main_tid:
            g = "python main thread (event loop)"
        elif name.startswith("asyncio_"):
            g = "python executor threads"
        else:
            g = f"native threads ({name})"
        groups[g] = groups.get(g, 0.0) + delta
    return groups


async def run_worker(endpoint: str, bucket: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    import buquet
    from buquet import Worker, WorkerRunOptions

    q = await buquet.connect(bucket=bucket, endpoint=endpoint)
    store = q.store
    lat: dict[str, list[float]] = {}

    def timed(name: str, fn: Any) -> Any:
        async def wrapper(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return await fn(*a, **kw)
            finally:
                lat.setdefault(name, []).append(1000 * (time.perf_counter() - t))

        return wrapper

    for op in ("get", "put", "list", "delete", "delete_many", "head"):
        setattr(store, op, timed(op, getattr(store, op)))

    polls: list[tuple[int, int]] = []  # (markers seen, tasks started) per poll
    w = Worker(q, "profile-w0", q.shards)
    orig_due = q.protocol.due_markers
    seen_in_poll = [0]

    async def due(*a: Any, **kw: Any) -> Any:
        out = await orig_due(*a, **kw)
        seen_in_poll[0] += len(out)
        return out

    q.protocol.due_markers = due  # type: ignore[method-assign]
    orig_poll = w._poll_once

    async def poll_once(*a: Any, **kw: Any) -> int:
        seen_in_poll[0] = 0
        started = await orig_poll(*a, **kw)
        polls.append((seen_in_poll[0], started))
        return started

    w._poll_once = poll_once  # type: ignore[method-assign]

    @w.task("noop")
    async def noop(inp: Any) -> Any:
        return {"t": time.time()}

    kw: dict[str, Any] = {
        "exit_when_idle": True,
        "handle_signals": False,
        "with_monitor": not args.no_monitor,
        "poll_interval_ms": args.poll_ms,
    }
    if args.concurrency:
        kw["max_concurrency"] = args.concurrency
    c0 = dict(store.request_counts)
    lat.clear()
    th0 = thread_cpu()
    cpu0, t0 = _cpu_s(), time.time()
    await w.run(WorkerRunOptions(**kw))
    cpu1, t1 = _cpu_s(), time.time()
    threads = group_threads(th0, thread_cpu(), threading.get_native_id())
    counts = {k: v - c0.get(k, 0) for k, v in store.request_counts.items() if v - c0.get(k, 0)}
    await q.close()
    return {
        "wall_s": t1 - t0,
        "cpu_s": cpu1 - cpu0,
        "counts": counts,
        "lat": lat,
        "polls": polls,
        "threads": threads,
        "stats": dict(w.stats),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--endpoint", help="S3 endpoint (default: start a throwaway SeaweedFS)")
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=None)
    ap.add_argument("--poll-ms", type=int, default=500)
    ap.add_argument("--no-monitor", action="store_true")
    ap.add_argument("--profiler", choices=["cprofile", "none"], default="cprofile")
    ap.add_argument("--top", type=int, default=35)
    ap.add_argument("--settle", type=float, default=1.5, help="seconds between prefill and the worker start")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    _infra.ensure_creds()
    server = None
    endpoint = args.endpoint
    if not endpoint:
        server = _infra.start_server()
        endpoint = server.endpoint
    bucket = f"bench-prof-{uuid.uuid4().hex[:10]}"
    try:
        _prepare_bucket(endpoint, bucket, False)
        asyncio.run(_submit_all(endpoint, bucket, args.tasks, 16))
        # Processes estimate server time from a 1 s-resolution Date header, so a task
        # submitted in the last ~1 s can look "not due yet" to this process; wait that out.
        time.sleep(args.settle)
        spid = _infra.server_pid(endpoint)
        s0 = _infra.proc_cpu_s(spid)
        prof = cProfile.Profile() if args.profiler == "cprofile" else None
        if prof:
            prof.enable()
        res = asyncio.run(run_worker(endpoint, bucket, args.tasks, args))
        if prof:
            prof.disable()
        s1 = _infra.proc_cpu_s(spid)
    finally:
        _infra.delete_bucket(endpoint, bucket)
        if server is not None:
            server.stop()

    n = args.tasks
    polls = res["polls"]
    summary = {
        "tasks": n,
        "tasks_per_s": n / res["wall_s"],
        "client_cpu_ms_per_task": 1000 * res["cpu_s"] / n,
        "server_cpu_ms_per_task": 1000 * (s1 - s0) / n if s0 is not None and s1 is not None else None,
        "cpu_ms_per_task_by_thread": {k: round(1000 * v / n, 3) for k, v in sorted(res["threads"].items())},
        "requests_per_task": {k: v / n for k, v in sorted(res["counts"].items())},
        "op_latency_ms": {
            op: {"n": len(v), "p50": statistics.median(v), "mean": statistics.fmean(v), "max": max(v)}
            for op, v in sorted(res["lat"].items()) if v
        },
        "polls": len(polls),
        "polls_that_started_nothing": sum(1 for _, s in polls if s == 0),
        "markers_seen_per_poll_mean": statistics.fmean(m for m, _ in polls) if polls else 0,
        "tasks_started_per_poll_mean": statistics.fmean(s for _, s in polls) if polls else 0,
        "worker_stats": res["stats"],
        "profiler": args.profiler,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for k, v in summary.items():
            print(f"{k:30} {json.dumps(v) if isinstance(v, dict) else v}")
    if prof:
        for order in ("tottime", "cumulative"):
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(order).print_stats(args.top)
            print(f"\n===== cProfile by {order} =====")
            print(buf.getvalue()[-12000:])


if __name__ == "__main__":
    main()
