#!/usr/bin/env python
"""S3 requests of the operator views on a big bucket: `buquet stats` (Queue.stats), the
dashboard's overview, task list and task page, `buquet workers`, on an in-memory store
that counts every request like S3 would be billed (same calls as on S3, minus the
clock's HEAD Bucket). Builds N tasks (default 100,000) in 4 shards: 99 % final
(cancelled), the rest pending, created over ``--spread-days`` (an injected clock) so that
the task list's look-back window behaves as on a long-running queue.

    python bench/operator_costs.py [--tasks 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from buquet import MemoryStore, connect  # noqa: E402


def delta(store: MemoryStore, before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in store.request_counts.items() if v - before.get(k, 0)}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--final-fraction", type=float, default=0.99)
    ap.add_argument("--spread-days", type=float, default=10.0, help="tasks were created over this many days")
    args = ap.parse_args()
    store = MemoryStore()
    start_at = datetime.now(timezone.utc) - timedelta(days=args.spread_days)
    clock = [start_at]
    q = await connect(store=store, clock=lambda: clock[0])
    t0 = time.time()
    ids: list[str] = []
    step = timedelta(days=args.spread_days) / max(1, args.tasks // 100)
    for start in range(0, args.tasks, 100):
        tasks = await q.submit_many([("job", {"i": i}) for i in range(start, min(args.tasks, start + 100))])
        ids += [t.id for t in tasks]
        clock[0] += step
    n_final = int(args.tasks * args.final_fraction)
    for start in range(0, n_final, 1000):
        await q.cancel_many(ids[start:start + 1000])
    print(f"built {args.tasks} tasks ({n_final} final) in {time.time() - t0:.0f} s", file=sys.stderr)

    rows = []
    before = dict(store.request_counts)
    st = await q.stats()
    rows.append(("stats() / buquet stats", delta(store, before), f"task_objects {'≥ ' if st.task_objects_truncated else ''}{st.task_objects}"))
    before = dict(store.request_counts)
    await q.workers()
    rows.append(("workers() / buquet workers", delta(store, before), "no registrations (+1 GET per worker)"))
    from buquet.dashboard.views import Dashboard
    from buquet.dashboard.params import parse_task_query

    dash = Dashboard(q)
    now = await q.time()
    for name, coro in (
        ("dashboard overview", dash.overview()),
        ("dashboard /tasks (newest page)", dash.task_page(parse_task_query({}, q.shards, now))),
        ("dashboard /tasks?status=pending", dash.task_page(parse_task_query({"status": "pending"}, q.shards, now))),
        ("dashboard task page", dash.task(ids[-1])),
    ):
        before = dict(store.request_counts)
        await coro
        rows.append((name, delta(store, before), ""))
    print(f"\nS3 requests per call on {args.tasks:,} tasks in 4 shards ({n_final:,} final), in-memory counting store:")
    for name, d, extra in rows:
        total = sum(d.values())
        print(f"  {name:34s} {total:5d}  {d}  {extra}")


if __name__ == "__main__":
    asyncio.run(main())
