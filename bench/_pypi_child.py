"""Runs INSIDE the separate venv that holds the PyPI ``buquet==0.1.0`` (not our package).

Used by compare_pypi.py through that venv's python. Uses only the PyPI package's public,
documented API (connect, Queue.submit, Queue.all_shards, Worker, Worker.task,
Worker.on_success, WorkerRunOptions, PollingStrategy).

    python _pypi_child.py submit  ENDPOINT BUCKET N CONCURRENCY
    python _pypi_child.py work    ENDPOINT BUCKET N POLLING MONITOR(0/1)

POLLING is ``default`` (WorkerRunOptions' own defaults), ``fixed:MS`` or
``adaptive:MIN_MS:MAX_MS``.

``work`` prints ``READY`` once connected, waits for a line on stdin, runs until N tasks
completed (``max_tasks``), then prints ``RESULT <json>``. ``submit`` prints
``RESULT <json>`` when done.
"""

import asyncio
import json
import resource
import sys
import time


def _cpu() -> float:
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


async def submit(endpoint: str, bucket: str, n: int, concurrency: int) -> dict:
    import buquet

    q = await buquet.connect(endpoint=endpoint, bucket=bucket, region="us-east-1")
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await q.submit("noop", {"i": i})

    cpu0 = _cpu()
    t0 = time.time()
    await asyncio.gather(*(one(i) for i in range(n)))
    t1 = time.time()
    return {"submit_start": t0, "submit_end": t1, "cpu_s": _cpu() - cpu0}


def _options(buquet, n: int, polling: str, monitor: bool):
    kind, _, rest = polling.partition(":")
    if kind == "default":
        return buquet.WorkerRunOptions(max_tasks=n, with_monitor=monitor)
    if kind == "fixed":
        strategy = buquet.PollingStrategy.fixed(interval_ms=int(rest))
    elif kind == "adaptive":
        lo, hi = (int(x) for x in rest.split(":"))
        strategy = buquet.PollingStrategy.adaptive(min_interval_ms=lo, max_interval_ms=hi, backoff_multiplier=2.0)
    else:
        raise SystemExit(f"bad polling spec {polling!r}")
    return buquet.WorkerRunOptions(max_tasks=n, with_monitor=monitor, polling=strategy)


async def work(endpoint: str, bucket: str, n: int, polling: str, monitor: bool) -> dict:
    import buquet

    q = await buquet.connect(endpoint=endpoint, bucket=bucket, region="us-east-1")
    shards = list(q.all_shards())
    w = buquet.Worker(q, "bench-pypi-w0", shards)
    starts: list[float] = []
    done: list[float] = []

    @w.task("noop")
    async def noop(inp):
        t = time.time()
        starts.append(t)
        return {"t": t}

    @w.on_success
    async def ok(task):
        done.append(time.time())

    opts = _options(buquet, n, polling, monitor)
    cpu0 = _cpu()
    print("READY", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    t0 = time.time()
    await w.run(opts)
    t1 = time.time()
    return {
        "run_start": t0,
        "run_end": t1,
        "handler_starts": starts,
        "completions": done,
        "cpu_s": _cpu() - cpu0,
        "maxrss_kb": _maxrss_kb(),
        "shards": len(shards),
        "module": buquet.__file__,
        "options": repr(opts),
    }


def main() -> None:
    mode, endpoint, bucket, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if mode == "submit":
        out = asyncio.run(submit(endpoint, bucket, n, int(sys.argv[5])))
    else:
        out = asyncio.run(
            work(endpoint, bucket, n, sys.argv[5], sys.argv[6] == "1")
        )
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
