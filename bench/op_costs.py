#!/usr/bin/env python
"""Cost of each S3 operation buquet uses, on this server, through our S3Store:
wall time, client CPU and server CPU per request (server CPU when the server's PID can
be found from its port). Helps turn "requests per task by op" into time.

    python bench/op_costs.py --endpoint http://127.0.0.1:8333 [--ops 500] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _infra

from bench import _cpu_s


async def measure(name: str, n: int, conc: int, make: Callable[[int], Awaitable[Any]], spid: int | None) -> dict[str, Any]:
    sem = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        async with sem:
            await make(i)

    s0, c0, t0 = _infra.proc_cpu_s(spid), _cpu_s(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    t1, c1, s1 = time.perf_counter(), _cpu_s(), _infra.proc_cpu_s(spid)
    return {
        "op": name,
        "n": n,
        "ops_per_s": n / (t1 - t0),
        "client_cpu_ms": 1000 * (c1 - c0) / n,
        "server_cpu_ms": 1000 * (s1 - s0) / n if s0 is not None and s1 is not None else None,
    }


async def main_async(args: argparse.Namespace, endpoint: str, bucket: str) -> list[dict[str, Any]]:
    from buquet.storage.s3 import S3Store

    store = S3Store(bucket, endpoint=endpoint)
    spid = _infra.server_pid(endpoint)
    n, conc = args.ops, args.concurrency
    body = b"x" * args.size
    out = []
    # prefixes holding 1000 / 250 / 100 keys, like a shard's ready index with that backlog
    for prefix, count in (("ready/0/", 1000), ("ready/2/", 250), ("ready/3/", 100)):
        for i in range(0, count, 100):
            await asyncio.gather(*(store.put(f"{prefix}{j:013d}.k", b"") for j in range(i, min(i + 100, count))))
    etags: dict[int, str] = {}

    async def put_create(i: int) -> None:
        etags[i] = await store.put(f"tasks/0/{i}.json", body, if_none_match=True)

    async def put_match(i: int) -> None:
        etags[i] = await store.put(f"tasks/0/{i}.json", body, if_match=etags[i])

    out.append(await measure("put (plain)", n, conc, lambda i: store.put(f"plain/{i}", body), spid))
    out.append(await measure("put If-None-Match", n, conc, put_create, spid))
    out.append(await measure("put If-Match", n, conc, put_match, spid))
    out.append(await measure("get", n, conc, lambda i: store.get(f"tasks/0/{i}.json"), spid))
    out.append(await measure("list 100 of 1000 keys", n, conc, lambda i: store.list("ready/0/", limit=100), spid))
    out.append(await measure("list 100 of 250 keys", n, conc, lambda i: store.list("ready/2/", limit=100), spid))
    out.append(await measure("list 100 of 100 keys", n, conc, lambda i: store.list("ready/3/", limit=100), spid))
    out.append(await measure("list 10 of 1000 keys", n, conc, lambda i: store.list("ready/0/", limit=10), spid))
    out.append(await measure("list 1 of 1000 keys", n, conc, lambda i: store.list("ready/0/", limit=1), spid))
    out.append(await measure("list empty prefix", n, conc, lambda i: store.list("ready/1/", limit=100), spid))
    out.append(await measure("delete_many 25 keys", max(1, n // 10), conc,
                             lambda i: store.delete_many([f"plain/{j}" for j in range(25 * i, 25 * i + 25)]), spid))
    await store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--endpoint", help="default: start a throwaway SeaweedFS")
    ap.add_argument("--ops", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--size", type=int, default=700, help="object body bytes (a task document is ~700)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    _infra.ensure_creds()
    server = None
    endpoint = args.endpoint
    if not endpoint:
        server = _infra.start_server()
        endpoint = server.endpoint
    bucket = f"bench-ops-{uuid.uuid4().hex[:10]}"
    try:
        _infra.create_bucket(endpoint, bucket)
        rows = asyncio.run(main_async(args, endpoint, bucket))
    finally:
        _infra.delete_bucket(endpoint, bucket)
        if server is not None:
            server.stop()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'op':24} {'ops/s':>8} {'client CPU ms':>14} {'server CPU ms':>14}")
    for r in rows:
        sc = f"{r['server_cpu_ms']:.2f}" if r["server_cpu_ms"] is not None else "-"
        print(f"{r['op']:24} {r['ops_per_s']:8.0f} {r['client_cpu_ms']:14.2f} {sc:>14}")


if __name__ == "__main__":
    main()
