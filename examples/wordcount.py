"""Word frequencies of every Python source file under a directory, computed by a pool
of buquet worker processes.

    python examples/wordcount.py                      # the standard library, local store
    python examples/wordcount.py --dir ~/src --workers 4
    S3_ENDPOINT=http://127.0.0.1:8333 S3_BUCKET=wordcount python examples/wordcount.py

The main process submits one ``count_words`` task per file, starts ``--workers`` worker
processes (``buquet worker examples.wordcount:make_worker``), waits until every task is
final, stops the workers with SIGTERM, and prints the combined counts.

Where the queue lives: ``S3_BUCKET`` + ``S3_ENDPOINT`` (+ ``S3_REGION``) if set, else a
local directory (``--local-dir``, default ``.buquet-data/wordcount``). S3 variables that
are only half set (``S3_ENDPOINT`` or ``S3_REGION`` without ``S3_BUCKET``; ``S3_BUCKET``
without ``S3_ENDPOINT`` unless ``--aws`` says AWS S3 is meant) stop the example with
exit status 2 instead of running it on the local store (a failed
``eval "$(python scripts/seaweedfs.py start ...)"`` must not go unnoticed).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from buquet import Queue, TaskStatus, Worker, connect

WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]+")
ROOT = Path(__file__).resolve().parent.parent


async def make_worker() -> Worker:
    """The worker the child processes run (``buquet worker examples.wordcount:make_worker``)."""
    queue = await connect()
    worker = Worker(queue, os.environ.get("WORDCOUNT_WORKER_ID", f"wc-{os.getpid()}"), queue.shards)

    @worker.task("count_words")
    def count_words(payload: dict) -> dict:
        text = Path(payload["path"]).read_text(encoding="utf-8", errors="replace")
        counts = collections.Counter(w.lower() for w in WORD.findall(text))
        return {"path": payload["path"], "words": sum(counts.values()), "counts": dict(counts)}

    return worker


def s3_settings_problem(env: "os._Environ[str] | dict[str, str]", aws: bool = False) -> str | None:
    """Why the S3 variables in ``env`` are only half set, or ``None`` when they are
    either complete (``S3_BUCKET`` with ``S3_ENDPOINT``, or with ``aws``) or all unset."""
    bucket, endpoint, region = (env.get(n, "").strip() for n in ("S3_BUCKET", "S3_ENDPOINT", "S3_REGION"))
    if not bucket:
        given = [n for n, v in (("S3_ENDPOINT", endpoint), ("S3_REGION", region)) if v]
        if given:
            return (f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} set but S3_BUCKET is missing: "
                    "set S3_BUCKET too, or unset " + " and ".join(given) + " to use the local store")
        return None
    if not endpoint and not aws:
        return ("S3_BUCKET is set but S3_ENDPOINT is missing: set S3_ENDPOINT for an S3-compatible server "
                "(e.g. from `python scripts/seaweedfs.py start`), or pass --aws to use AWS S3")
    return None


async def run(args: argparse.Namespace) -> int:
    root = Path(args.dir).expanduser().resolve()
    files = sorted(
        str(p) for p in root.rglob("*.py")
        if p.is_file() and not {"site-packages", "dist-packages"} & set(p.parts)
    )[: args.max_files]
    if not files:
        print(f"no .py files under {root}", file=sys.stderr)
        return 1
    env = dict(os.environ)
    if not env.get("S3_BUCKET"):
        env["BUQUET_LOCAL_DIR"] = str(Path(args.local_dir).resolve())
        os.environ["BUQUET_LOCAL_DIR"] = env["BUQUET_LOCAL_DIR"]
    queue: Queue = await connect()
    print(f"queue: {queue.store.description}; {len(files)} files under {root}; {args.workers} workers")

    started = time.perf_counter()
    sem = asyncio.Semaphore(32)

    async def submit(path: str) -> str:
        async with sem:
            return (await queue.submit("count_words", {"path": path}, timeout_seconds=60)).id

    ids = await asyncio.gather(*(submit(f) for f in files))
    submitted = time.perf_counter()
    print(f"submitted {len(ids)} tasks in {submitted - started:.1f}s")

    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log_path = Path(args.local_dir).resolve().parent / "wordcount-workers.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "ab")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "buquet", "worker", "examples.wordcount:make_worker",
             "--concurrency", "4", "--poll-interval-ms", "100"],
            cwd=ROOT, env={**env, "WORDCOUNT_WORKER_ID": f"wc-{i}"}, stderr=log_file,
        )
        for i in range(args.workers)
    ]
    print(f"worker logs: {log_path}")
    results = []
    try:
        deadline = time.monotonic() + args.timeout_seconds
        for task_id in ids:  # in submit order: once one is final, most later ones are too
            remaining = max(0.0, deadline - time.monotonic())
            results.append(await queue.wait(task_id, timeout_seconds=remaining, poll_interval_ms=200))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
        log_file.close()
    finished = time.perf_counter()

    total: collections.Counter[str] = collections.Counter()
    per_worker: collections.Counter[str] = collections.Counter()
    failed = [t for t in results if t.status != TaskStatus.Completed]
    words = 0
    for t in results:
        if t.status == TaskStatus.Completed:
            total.update(t.output["counts"])
            words += t.output["words"]
            per_worker[t.worker_id or "?"] += 1
    print(f"processed {len(results) - len(failed)} files, {words:,} words, {len(total):,} distinct, "
          f"in {finished - submitted:.1f}s ({len(results) / (finished - submitted):.0f} tasks/s)")
    print("tasks per worker: " + ", ".join(f"{w}={n}" for w, n in sorted(per_worker.items())))
    print(f"\n{'word':<20}{'count':>10}")
    for word, n in total.most_common(args.top):
        print(f"{word:<20}{n:>10,}")
    for t in failed:
        print(f"FAILED {t.input['path']}: {t.last_error}", file=sys.stderr)
    await queue.close()
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=sysconfig.get_paths()["stdlib"], help="directory to scan (default: the stdlib)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes")
    parser.add_argument("--max-files", type=int, default=10_000)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--local-dir", default=str(ROOT / ".buquet-data" / "wordcount"))
    parser.add_argument("--timeout-seconds", type=float, default=600)
    parser.add_argument("--aws", action="store_true", help="S3_BUCKET without S3_ENDPOINT means AWS S3")
    args = parser.parse_args()
    problem = s3_settings_problem(os.environ, aws=args.aws)
    if problem:
        print(f"wordcount: {problem}", file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
