#!/usr/bin/env python
"""buquet benchmark on a real S3 server (SeaweedFS): N no-op tasks through one and
through several worker processes, plus a submit→start latency phase.

See bench/README.md for how to run it and how to read the output. In short::

    python bench/bench.py                      # own SeaweedFS, 1000 tasks, 1 and 4 workers
    python bench/bench.py --endpoint http://127.0.0.1:8333 --workers 1 --compare-pypi --repeat 3

Each scenario (K worker processes) runs in a fresh bucket:

1. K worker processes (multiprocessing, spawn) start, ``connect()``, register a no-op
   handler and report "ready"; none has started polling yet.
2. Throughput phase. ``--mode drain`` (default): the bench process submits N tasks
   (``--submit-concurrency`` at a time), then releases the workers. ``--mode pipeline``:
   the workers are released first and poll while the tasks are submitted.
   The bench stops the workers once N completions are counted; each worker then drains
   and flushes its batched deletes and reports its request counts, CPU time and
   peak RSS (VmHWM).
3. Latency phase (fresh worker processes, same bucket): the workers idle-poll; tasks
   are submitted one at a time at ``--latency-rate`` per second; latency = the time the
   handler started (recorded by the handler) minus the time just before ``submit()``.

Timestamps: "claimed" and "completed" are taken in the worker processes by counting
the worker's own stats events (``Worker._count("claimed" / "completed")``) in a
subclass; if a future Worker stops emitting them, handler start times are used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))

import _infra
from s3proxy import CountingProxy

TASK_TYPE = "noop"


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _maxrss_kb() -> int:
    """Peak RSS of this process in KiB: VmHWM from /proc/self/status. (ru_maxrss is not
    used: on Linux it is inherited through fork and kept across exec, so a spawned
    worker would report its parent's peak when that is higher.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _add(total: dict[str, int], part: dict[str, int]) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0) + v


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# ============================================================== worker process
def _worker_proc(cfg: dict[str, Any], idx: int, go: Any, stop: Any, completed: Any, handled: Any, out: Any) -> None:
    """Entry point of one worker process (spawned)."""
    for k, v in _infra.DUMMY_CREDS.items():
        os.environ.setdefault(k, v)
    try:
        res = asyncio.run(_worker_async(cfg, idx, go, stop, completed, handled, out))
        out.put(("result", idx, res))
    except BaseException:  # noqa: BLE001 (reported to the parent)
        out.put(("error", idx, traceback.format_exc()))


async def _worker_async(cfg: dict[str, Any], idx: int, go: Any, stop: Any, completed: Any, handled: Any, out: Any) -> dict[str, Any]:
    import buquet
    from buquet import Worker, WorkerRunOptions

    claim_times: list[float] = []
    done_times: list[float] = []

    class TimedWorker(Worker):  # records when the worker counts a claim / a completion
        def _count(self, name: str, n: int = 1) -> None:  # type: ignore[override]
            super()._count(name, n)
            if name == "claimed":
                claim_times.append(time.time())
            elif name == "completed":
                done_times.append(time.time())
                with completed.get_lock():
                    completed.value += n

    t_import = time.time()
    q = await buquet.connect(bucket=cfg["bucket"], endpoint=cfg["endpoint"])
    w = TimedWorker(q, f"bench-w{idx}", q.shards)
    starts: list[tuple[int, float]] = []

    @w.task(TASK_TYPE)
    async def noop(inp: Any) -> Any:
        t = time.time()
        starts.append((inp["i"], t))
        with handled.get_lock():
            handled.value += 1
        return {"t": t}

    kwargs: dict[str, Any] = {
        "exit_when_idle": False,
        "handle_signals": False,
        "with_monitor": cfg["monitor"],
    }
    if cfg.get("concurrency"):
        kwargs["max_concurrency"] = cfg["concurrency"]
    if cfg.get("poll_ms"):
        kwargs["poll_interval_ms"] = cfg["poll_ms"]
    if cfg.get("max_poll_ms"):
        kwargs["max_poll_interval_ms"] = cfg["max_poll_ms"]
    if cfg.get("leasing"):
        kwargs["shard_lease_config"] = buquet.ShardLeaseConfig.enabled()
    opts = WorkerRunOptions(**kwargs)
    await q.time()  # the server-clock estimate every timestamp of this process uses
    counts0 = dict(q.store.request_counts)
    setup_counts = dict(counts0)
    cpu0 = _cpu_s()
    out.put(("ready", idx, None))
    await asyncio.to_thread(go.wait)
    t_run = time.time()
    run = asyncio.create_task(w.run(opts))
    while not run.done():
        if stop.is_set():
            w.stop()
            break
        await asyncio.wait({run}, timeout=0.02)
    await run
    t_end = time.time()
    cpu1 = _cpu_s()
    counts1 = dict(q.store.request_counts)
    await q.close()
    return {
        "idx": idx,
        "connect_s": t_run - t_import,
        "run_start": t_run,
        "run_end": t_end,
        "claim_times": claim_times,
        "done_times": done_times,
        "starts": starts,
        "cpu_s": cpu1 - cpu0,
        "maxrss_kb": _maxrss_kb(),
        "requests": _diff(counts1, counts0),
        "setup_requests": setup_counts,
        "stats": dict(w.stats),
        "clock_offset_ms": _clock_offset_ms(q),
        "options": {k: getattr(opts, k) for k in ("poll_interval_ms", "max_poll_interval_ms", "max_concurrency", "with_monitor", "lease_seconds", "delete_flush_ms")},
    }


def _clock_offset_ms(q: Any) -> float | None:
    """This process's estimate of (server clock - local clock), ms. S3Store derives it
    from a response Date header (1 s resolution), so two processes on one machine can
    disagree by up to ~1 s about "now" — which delays claims of just-submitted tasks."""
    off = getattr(q.store, "_clock_offset", None)
    if off is None:  # newer S3Store: a module-level cache keyed by (endpoint, bucket)
        mod = sys.modules.get(type(q.store).__module__)
        cache = getattr(mod, "_clock_offsets", None)
        key = getattr(q.store, "_clock_key", None)
        if isinstance(cache, dict) and key in cache:
            off = cache[key][0]
    return off.total_seconds() * 1000 if off is not None else None


class WorkerPool:
    """K spawned worker processes with go/stop events and shared counters."""

    def __init__(self, cfg: dict[str, Any], k: int) -> None:
        ctx = mp.get_context("spawn")
        self.go, self.stop = ctx.Event(), ctx.Event()
        self.completed, self.handled = ctx.Value("i", 0), ctx.Value("i", 0)
        self.out = ctx.Queue()
        self.procs = [
            ctx.Process(target=_worker_proc, args=(cfg, i, self.go, self.stop, self.completed, self.handled, self.out), daemon=True)
            for i in range(k)
        ]
        for p in self.procs:
            p.start()
        self.results: dict[int, dict[str, Any]] = {}
        ready = 0
        while ready < k:
            kind, idx, payload = self.out.get(timeout=180)
            if kind == "error":
                self.kill()
                raise RuntimeError(f"worker {idx} failed to start:\n{payload}")
            ready += kind == "ready"

    def wait_completed(self, n: int, timeout: float) -> None:
        """Block until n completions were counted (or n handler calls, if the worker's
        stats hook gives none), then tell the workers to stop."""
        deadline = time.time() + timeout
        handled_full_since: float | None = None
        while time.time() < deadline:
            if self.completed.value >= n:
                break
            if self.handled.value >= n and self.completed.value == 0:
                handled_full_since = handled_full_since or time.time()
                if time.time() - handled_full_since > 1.0:
                    break  # no completion hook: handler calls are all we can count
            time.sleep(0.005)
        else:
            print(f"[bench] timeout: {self.completed.value}/{n} completed", file=sys.stderr)
        self.stop.set()

    def collect(self, timeout: float = 120) -> list[dict[str, Any]]:
        while len(self.results) < len(self.procs):
            kind, idx, payload = self.out.get(timeout=timeout)
            if kind == "error":
                self.kill()
                raise RuntimeError(f"worker {idx} failed:\n{payload}")
            if kind == "result":
                self.results[idx] = payload
        for p in self.procs:
            p.join(30)
        return [self.results[i] for i in sorted(self.results)]

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()


# ============================================================== bench process
async def _submit_all(endpoint: str, bucket: str, n: int, concurrency: int, offset: int = 0) -> dict[str, Any]:
    import buquet

    q = await buquet.connect(bucket=bucket, endpoint=endpoint)
    await q.time()  # warm the server-clock cache (one HEAD bucket) before timing
    c0 = dict(q.store.request_counts)
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await q.submit(TASK_TYPE, {"i": offset + i})

    cpu0 = _cpu_s()
    t0 = time.time()
    await asyncio.gather(*(one(i) for i in range(n)))
    t1 = time.time()
    cpu1 = _cpu_s()
    counts = _diff(dict(q.store.request_counts), c0)
    off = _clock_offset_ms(q)
    await q.close()
    return {"start": t0, "end": t1, "cpu_s": cpu1 - cpu0, "requests": counts, "clock_offset_ms": off}


async def _submit_paced(endpoint: str, bucket: str, n: int, rate: float) -> dict[str, Any]:
    import buquet

    q = await buquet.connect(bucket=bucket, endpoint=endpoint)
    await q.time()
    c0 = dict(q.store.request_counts)
    times: dict[int, tuple[float, float]] = {}
    t0 = time.time()
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        ts = time.time()
        await q.submit(TASK_TYPE, {"i": i})
        times[i] = (ts, time.time())
    counts = _diff(dict(q.store.request_counts), c0)
    off = _clock_offset_ms(q)
    await q.close()
    return {"times": times, "requests": counts, "start": t0, "clock_offset_ms": off}


def _worker_cfg(args: argparse.Namespace, endpoint: str, bucket: str) -> dict[str, Any]:
    return {
        "endpoint": endpoint,
        "bucket": bucket,
        "poll_ms": args.poll_ms,
        "max_poll_ms": args.max_poll_ms,
        "concurrency": args.concurrency,
        "monitor": not args.no_monitor,
        "leasing": getattr(args, "leasing_now", False),
    }


def _prepare_bucket(endpoint: str, bucket: str, versioned: bool) -> None:
    _infra.create_bucket(endpoint, bucket, versioned=versioned)
    # Pre-create the queue config so every process's connect() reads it with one GET
    # (what connect() itself writes on first use: 4 shards).
    _infra.put_object(endpoint, bucket, "config.json", json.dumps({"version": 1, "shard_count": 4}).encode())


def run_throughput(args: argparse.Namespace, endpoint: str, k: int, *, count_endpoint: str | None = None,
                   proxy: CountingProxy | None = None) -> dict[str, Any]:
    """One throughput run of our buquet with k worker processes in a fresh bucket.

    With ``proxy`` (a CountingProxy in front of ``endpoint``), all clients talk to the
    proxy and the wire counts per op are added under ``wire_*``."""
    n = args.tasks
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    _prepare_bucket(endpoint, bucket, args.versioned)
    target = proxy.endpoint if proxy else endpoint
    cfg = _worker_cfg(args, target, bucket)
    pool = WorkerPool(cfg, k)
    spid = _infra.server_pid(endpoint)
    try:
        if proxy:
            proxy.counter.reset()
        if args.mode == "pipeline":
            pool.go.set()
        scpu0 = _infra.proc_cpu_s(spid)
        sub = asyncio.run(_submit_all(target, bucket, n, args.submit_concurrency))
        scpu1 = _infra.proc_cpu_s(spid)
        wire_submit = proxy.counter.snapshot() if proxy else None
        if proxy:
            proxy.counter.reset()
        t_go = time.time()
        busy0 = _infra.machine_busy_s()
        pool.go.set()
        pool.wait_completed(n, timeout=args.timeout)
        results = pool.collect()
        scpu2 = _infra.proc_cpu_s(spid)
        busy1 = _infra.machine_busy_s()
        wire_work = proxy.counter.snapshot() if proxy else None
    finally:
        pool.kill()
        if not args.keep_buckets:
            _infra.delete_bucket(endpoint, bucket)

    claim = [t for r in results for t in r["claim_times"]] or [t for r in results for _, t in r["starts"]]
    done = [t for r in results for t in r["done_times"]] or [r["run_end"] for r in results]
    handled_ids = [i for r in results for i, _ in r["starts"]]
    worker_req: dict[str, int] = {}
    for r in results:
        _add(worker_req, r["requests"])
    all_req = dict(worker_req)
    _add(all_req, sub["requests"])
    total = sum(all_req.values())
    lists = all_req.get("list", 0)
    stats: dict[str, int] = {}
    for r in results:
        _add(stats, r["stats"])
    first_claim, last_done = min(claim), max(done)
    res: dict[str, Any] = {
        "impl": "ours",
        "workers": k,
        "tasks": n,
        "mode": args.mode,
        "completed": len([t for r in results for t in r["done_times"]]),
        "handled": len(handled_ids),
        "duplicates": len(handled_ids) - len(set(handled_ids)),
        "submits_per_s": n / (sub["end"] - sub["start"]),
        "tasks_per_s_claim_to_done": n / (last_done - first_claim),
        "tasks_per_s_submit_to_done": n / (last_done - sub["start"]),
        "go_to_first_claim_ms": 1000 * (first_claim - t_go) if args.mode == "drain" else None,
        "requests_per_task": total / n,
        "requests_per_task_no_list": (total - lists) / n,
        "submit_requests_per_task": sum(sub["requests"].values()) / n,
        "worker_requests_per_task": sum(worker_req.values()) / n,
        "requests_by_op_per_task": {op: c / n for op, c in sorted(all_req.items())},
        "worker_cpu_ms_per_task": 1000 * sum(r["cpu_s"] for r in results) / n,
        "submitter_cpu_ms_per_task": 1000 * sub["cpu_s"] / n,
        "worker_maxrss_mb": max(r["maxrss_kb"] for r in results) / 1024,
        "server_cpu_ms_per_task_submit": 1000 * (scpu1 - scpu0) / n if spid and scpu0 is not None else None,
        "server_cpu_ms_per_task_work": 1000 * (scpu2 - scpu1) / n if spid and scpu1 is not None else None,
        # machine CPU busy during the work phase not spent by the server or the workers
        # (other processes; includes this bench process's waiting loop, ~0)
        "other_cpu_ms_per_task_work": (
            1000 * ((busy1 - busy0) - (scpu2 - scpu1) - sum(r["cpu_s"] for r in results)) / n
            if busy0 is not None and busy1 is not None and spid and scpu1 is not None else None),
        "worker_maxrss_mb_each": [round(r["maxrss_kb"] / 1024, 1) for r in results],
        "worker_stats": stats,
        "clock_offset_ms_submitter": sub["clock_offset_ms"],
        "clock_offset_ms_workers": [r["clock_offset_ms"] for r in results],
        "worker_options": results[0]["options"],
        "per_worker_tasks": [len(r["starts"]) for r in results],
        "lost_claims_per_task": stats.get("claim_conflicts", 0) / n,
    }
    if wire_submit and wire_work:
        ops: dict[str, int] = {}
        _add(ops, wire_submit["ops"])
        _add(ops, wire_work["ops"])
        wt = sum(ops.values())
        res["wire_ops"] = ops
        res["wire_detail_submit"] = wire_submit["detail"]
        res["wire_detail_work"] = wire_work["detail"]
        res["wire_requests_per_task"] = wt / n
        res["wire_requests_per_task_no_list"] = (wt - ops.get("list", 0)) / n
    return res


def run_latency(args: argparse.Namespace, endpoint: str, k: int) -> dict[str, Any]:
    """Submit→handler-start latency with k idle-polling workers."""
    m = args.latency_tasks
    bucket = f"bench-lat-{uuid.uuid4().hex[:10]}"
    _prepare_bucket(endpoint, bucket, args.versioned)
    cfg = _worker_cfg(args, endpoint, bucket)
    pool = WorkerPool(cfg, k)
    try:
        pool.go.set()
        time.sleep(args.latency_warmup)  # let the workers settle into idle polling
        sub = asyncio.run(_submit_paced(endpoint, bucket, m, args.latency_rate))
        pool.wait_completed(m, timeout=args.timeout)
        results = pool.collect()
    finally:
        pool.kill()
        if not args.keep_buckets:
            _infra.delete_bucket(endpoint, bucket)
    starts: dict[int, float] = {}
    for r in results:
        for i, t in r["starts"]:
            starts.setdefault(i, t)
    lat_ms = [1000 * (starts[i] - sub["times"][i][0]) for i in sub["times"] if i in starts]
    submit_ms = [1000 * (b - a) for a, b in sub["times"].values()]
    run_s = max(r["run_end"] for r in results) - min(r["run_start"] for r in results)
    worker_req: dict[str, int] = {}
    for r in results:
        _add(worker_req, r["requests"])
    return {
        "workers": k,
        "tasks": m,
        "rate_per_s": args.latency_rate,
        "poll_ms": args.poll_ms,
        "max_poll_ms": args.max_poll_ms,
        "started": len(lat_ms),
        "latency_ms_p50": _pct(lat_ms, 50),
        "latency_ms_p90": _pct(lat_ms, 90),
        "latency_ms_p99": _pct(lat_ms, 99),
        "latency_ms_max": max(lat_ms) if lat_ms else float("nan"),
        "submit_call_ms_p50": _pct(submit_ms, 50),
        "worker_lists_per_s": worker_req.get("list", 0) / run_s,
        "worker_requests_by_op": worker_req,
        "phase_s": run_s,
        "clock_offset_ms_submitter": sub["clock_offset_ms"],
        "clock_offset_ms_workers": [r["clock_offset_ms"] for r in results],
        "worker_clock_behind_submitter_ms_max": max(
            (sub["clock_offset_ms"] - r["clock_offset_ms"] for r in results
             if r["clock_offset_ms"] is not None and sub["clock_offset_ms"] is not None), default=None),
    }


def run_idle(args: argparse.Namespace, endpoint: str, k: int) -> dict[str, Any]:
    """Requests of k workers with nothing to do, over ``--idle-seconds`` (after a
    warm-up of 10 s, so the adaptive backoff has reached its cap)."""
    bucket = f"bench-idle-{uuid.uuid4().hex[:10]}"
    _prepare_bucket(endpoint, bucket, args.versioned)
    cfg = _worker_cfg(args, endpoint, bucket)
    pool = WorkerPool(cfg, k)
    try:
        pool.go.set()
        time.sleep(10 + args.idle_seconds)
        pool.stop.set()
        results = pool.collect()
    finally:
        pool.kill()
        if not args.keep_buckets:
            _infra.delete_bucket(endpoint, bucket)
    req: dict[str, int] = {}
    for r in results:
        _add(req, r["requests"])
    run_s = max(r["run_end"] for r in results) - min(r["run_start"] for r in results)
    return {"workers": k, "seconds": run_s, "lists_per_s": req.get("list", 0) / run_s,
            "requests_per_s": sum(req.values()) / run_s, "requests_by_op": req}


def scenario_name(k: int, leasing: bool) -> str:
    """The table's name for k workers with or without shard leases."""
    return f"ours {k} worker{'s' if k > 1 else ''}{' + leases' if leasing else ''}"


def ratios(report: dict[str, Any]) -> dict[str, float]:
    """Issue 11's targets as ratios of this run's medians (several workers vs one)."""
    out: dict[str, float] = {}
    one = report["summary"].get("ours 1 worker")
    if not one:
        return out
    for name, s in report["summary"].items():
        if not name.startswith("ours ") or name == "ours 1 worker":
            continue
        if s.get("tasks_per_s_claim_to_done") and one.get("tasks_per_s_claim_to_done"):
            out[f"{name}: tasks/s vs 1 worker"] = s["tasks_per_s_claim_to_done"] / one["tasks_per_s_claim_to_done"]
        if s.get("requests_per_task") and one.get("requests_per_task"):
            out[f"{name}: req/task vs 1 worker"] = s["requests_per_task"] / one["requests_per_task"]
    return out


# ============================================================== output
def _median(rows: list[dict[str, Any]], key: str) -> Any:
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return statistics.median(vals) if vals else None


MEDIAN_KEYS = [
    "submits_per_s", "tasks_per_s_claim_to_done", "tasks_per_s_submit_to_done",
    "requests_per_task", "requests_per_task_no_list", "worker_cpu_ms_per_task",
    "submitter_cpu_ms_per_task", "worker_maxrss_mb", "server_cpu_ms_per_task_work",
    "other_cpu_ms_per_task_work", "lost_claims_per_task",
]
LAT_KEYS = ["latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_ms_max", "submit_call_ms_p50", "worker_lists_per_s"]


def summarize(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    out = {k: _median(rows, k) for k in keys}
    out["runs"] = len(rows)
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.2f}"
    return str(v)


def print_report(report: dict[str, Any]) -> None:
    cfg = report["config"]
    print(f"\nbuquet bench, {report.get('date', '')} — endpoint {cfg['endpoint']}, {cfg['tasks']} no-op tasks, mode {cfg['mode']}, "
          f"{cfg['repeat']} run(s) each (medians), submit concurrency {cfg['submit_concurrency']}, "
          f"poll {cfg['poll_ms'] or 'default'} ms (adaptive up to {cfg['max_poll_ms'] or 'default'} ms), "
          f"max_concurrency {cfg['concurrency'] or 'default'}, monitor {'on' if cfg['monitor'] else 'off'}"
          f"{', versioned bucket' if cfg['versioned'] else ''}")
    cols = [("scenario", None)] + [(k, k) for k in MEDIAN_KEYS]
    heads = {
        "submits_per_s": "submits/s", "tasks_per_s_claim_to_done": "tasks/s claim→done",
        "tasks_per_s_submit_to_done": "tasks/s submit→done", "requests_per_task": "req/task",
        "requests_per_task_no_list": "req/task w/o LIST", "worker_cpu_ms_per_task": "worker CPU ms/task",
        "submitter_cpu_ms_per_task": "submit CPU ms/task", "worker_maxrss_mb": "worker peak RSS MB",
        "server_cpu_ms_per_task_work": "server CPU ms/task (work)",
        "other_cpu_ms_per_task_work": "other procs CPU ms/task",
        "lost_claims_per_task": "lost claims/task",
    }
    rows = []
    for name, s in report["summary"].items():
        rows.append([name] + [_fmt(s.get(k)) for _, k in cols[1:]])
    header = ["scenario"] + [heads[k] for _, k in cols[1:]]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    if "ratio_ours1_vs_pypi" in report:
        print(f"\nratio tasks/s (claim→done), ours 1 worker / PyPI 0.1.0 1 worker: {report['ratio_ours1_vs_pypi']:.2f}x "
              f"(submit→done: {report.get('ratio_ours1_vs_pypi_submit_to_done', float('nan')):.2f}x; target ≥ 3x)")
    for name, runs in report["runs"].items():
        r0 = runs[0]
        if "requests_by_op_per_task" in r0:
            ops = {op: statistics.median(r["requests_by_op_per_task"].get(op, 0) for r in runs) for op in r0["requests_by_op_per_task"]}
            print(f"\n{name}: requests per task by op (store.request_counts, submitter + workers, medians): "
                  + ", ".join(f"{op} {v:.3f}" for op, v in ops.items()))
            print(f"  worker stats (run 1): {r0['worker_stats']}, tasks per worker {r0['per_worker_tasks']}, "
                  f"duplicates {r0['duplicates']}, peak RSS each {r0['worker_maxrss_mb_each']} MB")
    for name, wire in report.get("wire", {}).items():
        n = wire["tasks"]
        ops = wire["wire_ops"]
        print(f"\n{name}: requests per task on the wire (counting proxy, one run): {wire['wire_requests_per_task']:.2f} "
              f"({wire['wire_requests_per_task_no_list']:.2f} without LIST): "
              + ", ".join(f"{op} {c / n:.3f}" for op, c in sorted(ops.items())))
        codes = {}
        for part in ("wire_detail_submit", "wire_detail_work"):
            _add(codes, wire.get(part, {}))
        odd = {k: v for k, v in codes.items() if not k.endswith((" 200", " 204"))}
        if odd:
            print(f"  non-2xx answers: {odd}")
    if report.get("ratios"):
        print("\nratios (medians of this run; targets: tasks/s ≥ 1.00, req/task ≤ 1.05):")
        for k, v in report["ratios"].items():
            print(f"  {k}: {v:.2f}")
    if report.get("idle"):
        print("\nidle (no tasks; after 10 s of warm-up):")
        for name, r in report["idle"].items():
            print(f"  {name}: {r['lists_per_s']:.2f} LIST/s, {r['requests_per_s']:.2f} requests/s in all "
                  f"({', '.join(f'{op} {c}' for op, c in sorted(r['requests_by_op'].items()))} in {r['seconds']:.0f} s)")
    for name, runs in report.get("peer_latency", {}).items():
        p50 = statistics.median(r["latency_ms_p50"] for r in runs)
        p99 = statistics.median(r["latency_ms_p99"] for r in runs)
        cmds = statistics.median(r["commands_per_task"] for r in runs)
        print(f"\n{name}: latency p50 {p50:.0f} ms, p99 {p99:.0f} ms (medians of {len(runs)}); "
              f"{cmds:.1f} Redis commands per task (not S3 requests); settings: {runs[0].get('settings')}")
    if report.get("latency"):
        print("\nsubmit→start latency (handler start − time before submit(); tasks submitted one at a time):")
        for name, s in report["latency_summary"].items():
            r0 = report["latency"][name][0]
            print(f"  {name}: {r0['tasks']} tasks at {r0['rate_per_s']}/s, poll {r0['poll_ms'] or 'default'} ms → max {r0['max_poll_ms'] or 'default'} ms: "
                  f"p50 {s['latency_ms_p50']:.0f} ms, p90 {s['latency_ms_p90']:.0f} ms, p99 {s['latency_ms_p99']:.0f} ms, "
                  f"max {s['latency_ms_max']:.0f} ms; submit() call p50 {s['submit_call_ms_p50']:.1f} ms; "
                  f"LISTs {s['worker_lists_per_s']:.1f}/s while tasks arrive (all workers)")
            for i, r in enumerate(report["latency"][name]):
                print(f"    run {i + 1}: p50 {r['latency_ms_p50']:.0f} ms, p99 {r['latency_ms_p99']:.0f} ms; server-clock estimate "
                      f"(server−local, ms) submitter {_fmt(r['clock_offset_ms_submitter'])}, workers "
                      f"{[_fmt(x) for x in r['clock_offset_ms_workers']]}")


# ============================================================== main
def main() -> None:
    ap = argparse.ArgumentParser(description="buquet throughput / latency benchmark on SeaweedFS",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1000, help="tasks per throughput run")
    ap.add_argument("--workers", type=int, default=4, help="the 'several workers' scenario (1 is always run too)")
    ap.add_argument("--concurrency", type=int, default=None, help="WorkerRunOptions.max_concurrency (default: library default)")
    ap.add_argument("--poll-ms", type=int, default=None, help="WorkerRunOptions.poll_interval_ms (default: the library's)")
    ap.add_argument("--max-poll-ms", type=int, default=None, help="WorkerRunOptions.max_poll_interval_ms (default: the library's)")
    ap.add_argument("--leasing", choices=["off", "on", "both"], default="both",
                    help="shard leases (ShardLeaseConfig.enabled()) in the several-workers scenarios")
    ap.add_argument("--leasing-one", action="store_true", help="also run 1 worker with leases")
    ap.add_argument("--idle-seconds", type=float, default=20.0, help="idle phase length (0 skips it)")
    ap.add_argument("--no-monitor", action="store_true", help="WorkerRunOptions.with_monitor=False (both sides)")
    ap.add_argument("--mode", choices=["drain", "pipeline"], default="drain")
    ap.add_argument("--submit-concurrency", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=1, help="runs per scenario; medians are printed")
    ap.add_argument("--endpoint", help="S3 endpoint; default: start a throwaway SeaweedFS")
    ap.add_argument("--server", choices=["auto", "script", "own"], default="auto",
                    help="without --endpoint: scripts/seaweedfs.py (script), bench's own `weed server` "
                         "with SeaweedFS's default volume growth (own), or script if present (auto)")
    ap.add_argument("--versioned", action="store_true", help="run ours on versioned buckets (as PyPI 0.1.0 needs)")
    ap.add_argument("--latency-tasks", type=int, default=100, help="0 skips the latency phase")
    ap.add_argument("--latency-rate", type=float, default=10.0, help="latency-phase submits per second")
    ap.add_argument("--latency-warmup", type=float, default=3.0, help="idle seconds before the latency phase")
    ap.add_argument("--count-wire", action="store_true", help="one extra run per scenario through a counting proxy")
    ap.add_argument("--compare-pypi", action="store_true", help="also run PyPI buquet 0.1.0 (one worker)")
    ap.add_argument("--compare-redis", action="store_true",
                    help="also run SAQ and arq on a local Redis (bench/compare_redis.py installs redis-server, saq, arq)")
    ap.add_argument("--all", action="store_true",
                    help="the issue-11 table in one go: 1 and 4 workers with and without leases, PyPI 0.1.0, SAQ, arq")
    ap.add_argument("--pypi-polling", default="default", help="PyPI worker polling: default | fixed:MS | adaptive:MIN:MAX")
    ap.add_argument("--pypi-venv", default=None, help="venv for PyPI buquet 0.1.0 (default /tmp/buquet-pypi)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--keep-buckets", action="store_true")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    ap.add_argument("--report", metavar="FILE", help="only print the table of a saved --json result")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            print_report(json.load(f))
        return
    _infra.ensure_creds()

    server = None
    endpoint = args.endpoint
    if not endpoint:
        print("[bench] starting SeaweedFS ...", file=sys.stderr)
        server = _infra.start_server(args.server)
        endpoint = server.endpoint
        print(f"[bench] SeaweedFS at {endpoint} ({type(server).__name__})", file=sys.stderr)
    pypi_python = None
    if args.all:
        args.compare_pypi = args.compare_redis = args.leasing_one = True
        args.leasing = "both"
    if args.compare_pypi:
        import compare_pypi

        pypi_python = compare_pypi.ensure_venv(args.pypi_venv or compare_pypi.DEFAULT_VENV)
    redis_python = None
    if args.compare_redis:
        import compare_redis

        redis_python = compare_redis.ensure_venv()

    scenarios: list[tuple[int, bool]] = [(1, False)]
    if args.leasing_one:
        scenarios.append((1, True))
    if args.workers > 1:
        if args.leasing in ("off", "both"):
            scenarios.append((args.workers, False))
        if args.leasing in ("on", "both"):
            scenarios.append((args.workers, True))
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "config": {
            "endpoint": endpoint, "tasks": args.tasks, "mode": args.mode, "repeat": args.repeat,
            "submit_concurrency": args.submit_concurrency, "poll_ms": args.poll_ms,
            "max_poll_ms": args.max_poll_ms, "concurrency": args.concurrency,
            "monitor": not args.no_monitor, "versioned": args.versioned, "cpus": os.cpu_count(),
            "pypi_polling": args.pypi_polling if args.compare_pypi else None,
            "server": None if args.endpoint else args.server,
        },
        "runs": {},
        "summary": {},
        "wire": {},
    }
    try:
        for rep in range(args.repeat):
            # interleave implementations so drift on the shared machine hits both alike
            for k, leasing in scenarios:
                name = scenario_name(k, leasing)
                args.leasing_now = leasing
                print(f"[bench] run {rep + 1}/{args.repeat}: {name}", file=sys.stderr)
                report["runs"].setdefault(name, []).append(run_throughput(args, endpoint, k))
            if args.compare_pypi:
                import compare_pypi

                print(f"[bench] run {rep + 1}/{args.repeat}: PyPI buquet 0.1.0, 1 worker", file=sys.stderr)
                report["runs"].setdefault("pypi 0.1.0 1 worker", []).append(
                    compare_pypi.run_pypi(endpoint, args.tasks, python=pypi_python,
                                          submit_concurrency=args.submit_concurrency,
                                          polling=args.pypi_polling, monitor=not args.no_monitor,
                                          cleanup=not args.keep_buckets, timeout=args.timeout))
        if args.count_wire or args.compare_pypi:
            for k, leasing in scenarios:
                name = scenario_name(k, leasing)
                args.leasing_now = leasing
                print(f"[bench] wire-count run: {name}", file=sys.stderr)
                proxy = CountingProxy(endpoint)
                try:
                    report["wire"][name] = run_throughput(args, endpoint, k, proxy=proxy)
                except Exception as exc:  # noqa: BLE001 (keep the timed results if a counting run fails)
                    print(f"[bench] wire-count run {name} failed: {exc}", file=sys.stderr)
                finally:
                    proxy.stop()
            if args.compare_pypi:
                import compare_pypi

                print("[bench] wire-count run: PyPI buquet 0.1.0", file=sys.stderr)
                try:
                    report["wire"]["pypi 0.1.0 1 worker"] = compare_pypi.run_pypi(
                        endpoint, args.tasks, python=pypi_python, submit_concurrency=args.submit_concurrency,
                        polling=args.pypi_polling, monitor=not args.no_monitor, count=True,
                        cleanup=not args.keep_buckets, timeout=args.timeout)
                except Exception as exc:  # noqa: BLE001
                    print(f"[bench] wire-count run of PyPI 0.1.0 failed: {exc}", file=sys.stderr)
        if redis_python is not None:
            import compare_redis

            with compare_redis.start_redis(quiet=True) as rs:
                for rep in range(args.repeat):
                    for lib, fn in (("saq", compare_redis.run_saq), ("arq", compare_redis.run_arq)):
                        name = f"{lib} on Redis, 1 worker"
                        print(f"[bench] run {rep + 1}/{args.repeat}: {name}", file=sys.stderr)
                        r = fn(args.tasks, redis_url=rs.url, python=redis_python,
                               submit_concurrency=args.submit_concurrency,
                               latency_tasks=args.latency_tasks, latency_rate=args.latency_rate,
                               server_pid=rs.pid, timeout=args.timeout)
                        report["runs"].setdefault(name, []).append(r)
                        report.setdefault("peer_latency", {}).setdefault(name, []).append(r)
        for name, runs in report["runs"].items():
            report["summary"][name] = summarize(runs, MEDIAN_KEYS)
        # PyPI request counts come from the proxy run
        if "pypi 0.1.0 1 worker" in report["wire"]:
            w = report["wire"]["pypi 0.1.0 1 worker"]
            report["summary"]["pypi 0.1.0 1 worker"]["requests_per_task"] = w["wire_requests_per_task"]
            report["summary"]["pypi 0.1.0 1 worker"]["requests_per_task_no_list"] = w["wire_requests_per_task_no_list"]
        if args.compare_pypi:
            ours = report["summary"]["ours 1 worker"]
            theirs = report["summary"]["pypi 0.1.0 1 worker"]
            report["ratio_ours1_vs_pypi"] = ours["tasks_per_s_claim_to_done"] / theirs["tasks_per_s_claim_to_done"]
            report["ratio_ours1_vs_pypi_submit_to_done"] = ours["tasks_per_s_submit_to_done"] / theirs["tasks_per_s_submit_to_done"]
        if args.latency_tasks > 0:
            report["latency"] = {}
            report["latency_summary"] = {}
            for k, leasing in scenarios:
                name = scenario_name(k, leasing)
                args.leasing_now = leasing
                runs = []
                for rep in range(args.repeat):
                    print(f"[bench] latency run {rep + 1}/{args.repeat}: {name}", file=sys.stderr)
                    runs.append(run_latency(args, endpoint, k))
                report["latency"][name] = runs
                report["latency_summary"][name] = summarize(runs, LAT_KEYS)
        if args.idle_seconds > 0:
            report["idle"] = {}
            for k, leasing in scenarios:
                name = scenario_name(k, leasing)
                args.leasing_now = leasing
                print(f"[bench] idle run: {name}", file=sys.stderr)
                report["idle"][name] = run_idle(args, endpoint, k)
        report["ratios"] = ratios(report)
    finally:
        if server is not None:
            server.stop()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)


if __name__ == "__main__":
    main()
