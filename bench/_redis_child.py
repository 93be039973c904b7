"""Runs INSIDE the separate venv that holds SAQ and arq (not our package).

Used by compare_redis.py through that venv's python. Uses only the libraries' public,
documented API: SAQ ``Queue.from_url``, ``Queue.connect``, ``Queue.enqueue``,
``Queue.disconnect``, ``Worker(queue, functions, after_process=...)``, ``Worker.start``,
``Worker.stop``; arq ``create_pool``, ``RedisSettings.from_dsn``, ``ArqRedis.enqueue_job``,
``Worker(functions, queue_name=, redis_pool=, handle_signals=False, after_job_end=...)``,
``Worker.async_run``, ``Worker.close``. Every worker option not listed is the library's
default.

    python _redis_child.py work   LIB URL QUEUE N
    python _redis_child.py submit LIB URL QUEUE N CONCURRENCY
    python _redis_child.py paced  LIB URL QUEUE N RATE

LIB is ``saq`` or ``arq``. ``work`` prints ``READY <settings json>`` once connected (the
worker is built but not started), waits for a line on stdin, runs the worker until N
jobs have completed (the library's after-job hook ran N times), stops it, then prints
``RESULT <json>``. ``submit`` enqueues N jobs, CONCURRENCY at a time; ``paced`` enqueues
N jobs one at a time at RATE per second. Both print ``RESULT <json>``.
"""

import asyncio
import json
import resource
import sys
import time

STARTS: list = []  # (i, handler start time)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _hwm_kb() -> int:
    """Peak RSS in KiB from VmHWM (ru_maxrss is inherited across fork/exec on Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# --------------------------------------------------------------- the no-op handlers
async def noop(ctx, *, i):  # SAQ: ctx, then the job's kwargs
    STARTS.append((i, time.time()))


async def noop_arq(ctx, i):  # arq: ctx, then the job's args
    STARTS.append((i, time.time()))


# --------------------------------------------------------------- clients
async def _client(lib: str, url: str, queue: str):
    """(enqueue coroutine function, close coroutine function), connected."""
    if lib == "saq":
        from saq import Queue

        q = Queue.from_url(url, name=queue)
        await q.connect()
        await q.redis.ping()  # open a connection before timing

        async def enqueue(i: int) -> None:
            if await q.enqueue("noop", i=i) is None:
                raise RuntimeError("SAQ refused the job")

        return enqueue, q.disconnect
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings.from_dsn(url), default_queue_name=queue)
    await pool.ping()

    async def enqueue(i: int) -> None:
        if await pool.enqueue_job("noop_arq", i) is None:
            raise RuntimeError("arq refused the job")

    async def close() -> None:
        await pool.aclose() if hasattr(pool, "aclose") else await pool.close()

    return enqueue, close


async def submit(lib: str, url: str, queue: str, n: int, concurrency: int) -> dict:
    enqueue, close = await _client(lib, url, queue)
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await enqueue(i)

    cpu0 = _cpu()
    t0 = time.time()
    await asyncio.gather(*(one(i) for i in range(n)))
    t1 = time.time()
    cpu = _cpu() - cpu0
    await close()
    return {"submit_start": t0, "submit_end": t1, "cpu_s": cpu, "maxrss_kb": _hwm_kb()}


async def paced(lib: str, url: str, queue: str, n: int, rate: float) -> dict:
    enqueue, close = await _client(lib, url, queue)
    times = {}
    t0 = time.time()
    for i in range(n):
        delay = t0 + i / rate - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        ts = time.time()
        await enqueue(i)
        times[i] = (ts, time.time())
    await close()
    return {"times": times, "start": t0}


# --------------------------------------------------------------- worker
async def work(lib: str, url: str, queue: str, n: int) -> dict:
    done: list = []
    finished = asyncio.Event()

    async def after(ctx) -> None:
        done.append(time.time())
        if len(done) >= n:
            finished.set()

    if lib == "saq":
        import saq
        from saq import Queue, Worker

        q = Queue.from_url(url, name=queue)
        await q.connect()
        await q.redis.ping()
        w = Worker(q, functions=[noop], after_process=after)
        settings = {
            "library": f"saq {getattr(saq, '__version__', '?')}",
            "Worker(concurrency)": w.concurrency,
            "dequeue_timeout_s": w.dequeue_timeout,
            "dequeue": "BLMOVE queued->active, blocking (timeout 0 = wait forever), one per concurrency slot",
            "timers_s": dict(w.timers),
            "burst": w.burst,
        }

        async def run() -> None:
            await w.start()

        async def stop() -> None:
            await w.stop()

        async def close() -> None:
            await q.disconnect()
    else:
        import importlib.metadata

        from arq import create_pool
        from arq.connections import RedisSettings
        from arq.worker import Worker

        pool = await create_pool(RedisSettings.from_dsn(url), default_queue_name=queue)
        await pool.ping()
        w = Worker(functions=[noop_arq], queue_name=queue, redis_pool=pool, handle_signals=False,
                   after_job_end=after)
        settings = {
            "library": f"arq {importlib.metadata.version('arq')}",
            "max_jobs": w.max_jobs,
            "poll_delay_s": w.poll_delay_s,
            "queue_read_limit": w.queue_read_limit,
            "dequeue": "polls ZRANGEBYSCORE every poll_delay, WATCH/MULTI per job to claim it",
            "keep_result_s": w.keep_result_s,
            "job_timeout_s": w.job_timeout_s,
            "max_tries": w.max_tries,
            "handle_signals": False,
        }

        async def run() -> None:
            try:
                await w.async_run()
            except asyncio.CancelledError:
                pass

        async def stop() -> None:
            await w.close()  # cancels the main task, waits for running jobs, closes the pool

        async def close() -> None:
            pass

    print("READY " + json.dumps(settings), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    cpu0 = _cpu()
    t0 = time.time()
    task = asyncio.create_task(run())
    await finished.wait()
    t_done = time.time()
    await stop()
    try:
        await asyncio.wait_for(task, 30)
    except (asyncio.CancelledError, asyncio.TimeoutError):
        pass
    t1 = time.time()
    cpu = _cpu() - cpu0
    await close()
    return {
        "run_start": t0,
        "run_end": t1,
        "all_done": t_done,
        "handler_starts": STARTS,
        "completions": done,
        "cpu_s": cpu,
        "maxrss_kb": _hwm_kb(),
        "settings": settings,
    }


def main() -> None:
    mode, lib, url, queue, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    if mode == "work":
        out = asyncio.run(work(lib, url, queue, n))
    elif mode == "submit":
        out = asyncio.run(submit(lib, url, queue, n, int(sys.argv[6])))
    elif mode == "paced":
        out = asyncio.run(paced(lib, url, queue, n, float(sys.argv[6])))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
