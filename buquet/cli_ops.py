"""Operator commands of the ``buquet`` CLI: ``stats`` (counts from the indexes) and
``workers`` (the registered long-lived workers). Tables through
:func:`buquet.cli_common.table` (rich on a terminal, plain text in a pipe), or ``--json``."""

from __future__ import annotations

import json
from typing import Any

import click

from ._humanize import ago, span
from . import _validate as v
from .cli_common import check, open_queue, run_async, table


@click.command()
@click.option("-s", "--shard", "shards", multiple=True, help="Only this shard (repeatable); default all.")
@click.option("-t", "--task-type", default=None, help="Only tasks of this type.")
@click.option("--scan-limit", "final_scan_limit", type=int, default=1000, show_default=True,
              help="Task objects listed per shard at most (the total is a lower bound beyond).")
@click.option("--sample", "final_sample", type=int, default=100, show_default=True,
              help="Final tasks read (GETs) at most for the counts by final status.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_context
def stats(ctx: click.Context, shards: tuple[str, ...], task_type: str | None, final_scan_limit: int,
          final_sample: int, as_json: bool) -> None:
    """Queue counts: pending, scheduled and running by shard and type, queue lag, task
    objects and final tasks by status. Cheap: LISTs of the indexes (1 per shard and
    index per 1,000 entries) plus at most --sample GETs."""
    if task_type is not None:
        check(v.task_type, task_type)

    async def go() -> None:
        q = await open_queue(ctx, read_only=True)
        async with q:
            st = await q.stats(shards=list(shards) or None, task_type=task_type, final_scan_limit=final_scan_limit,
                               final_sample=final_sample)
        if as_json:
            click.echo(json.dumps(st.to_dict(), indent=2))
            return
        _print_stats(st)

    run_async(go())


def _print_stats(st: Any) -> None:
    objects = f"≥ {st.task_objects}" if st.task_objects_truncated else str(st.task_objects)
    sampled = f"{st.final_sampled} GETs" + ("" if st.final_by_status_complete else " (a sample)")
    rows: list[dict[str, Any]] = [
        {"status": "pending (due now)", "tasks": st.pending_count, "from": "ready/ LIST"},
        {"status": "scheduled (later)", "tasks": st.scheduled_count, "from": "ready/ LIST"},
        {"status": "running", "tasks": st.running_count,
         "from": "leases/ LIST" + (f", {st.expired_leases} lease(s) expired" if st.expired_leases else "")},
    ]
    for name, n in st.final_by_status.items():
        rows.append({"status": name, "tasks": n, "from": sampled})
    if not st.final_by_status:
        rows.append({"status": "final", "tasks": 0 if st.final_by_status_complete else "-", "from": sampled})
    rows.append({"status": "task objects", "tasks": objects,
                 "from": "tasks/ LIST" + (" (stopped at --scan-limit per shard)" if st.task_objects_truncated else "")})
    title = "Tasks by status" + (f" (type {st.task_type})" if st.task_type else "")
    out = [table(rows, ["status", "tasks", "from"], title=title)]
    types = sorted(set(st.pending_by_type) | set(st.scheduled_by_type))
    if types:
        out.append(table([{"type": t, "pending": st.pending_by_type.get(t, 0),
                           "scheduled": st.scheduled_by_type.get(t, 0)} for t in types],
                         ["type", "pending", "scheduled"], title="By type"))
    out.append(table([{"shard": s, "pending": st.pending_by_shard.get(s, 0), "scheduled": st.scheduled_by_shard.get(s, 0),
                       "running": st.running_by_shard.get(s, 0), "oldest_ready": span(st.oldest_ready_age_by_shard.get(s))}
                      for s in st.shards], ["shard", "pending", "scheduled", "running", "oldest_ready"], title="By shard"))
    out.append(f"Queue lag (oldest pending task waiting): {span(st.oldest_ready_age_seconds)}")
    out.append("S3 requests: " + (", ".join(f"{n} {op.upper()}" for op, n in st.requests.items()) or "none"))
    click.echo("\n\n".join(out[:-2]) + "\n\n" + "\n".join(out[-2:]))


@click.command()
@click.option("--all", "include_gone", is_flag=True, help="Also show workers that stopped writing (gone).")
@click.option("--threshold", "health_threshold_seconds", type=click.FloatRange(min=0), default=60.0,
              show_default=True, help="Seconds without a registration write after which a worker is gone.")
@click.option("--json", "as_json", is_flag=True, help="Print the workers as JSON.")
@click.pass_context
def workers(ctx: click.Context, include_gone: bool, health_threshold_seconds: float, as_json: bool) -> None:
    """Registered long-lived workers: host, pid, shards, types, in flight, counters, last
    seen. One LIST + one GET per worker."""

    async def go() -> None:
        q = await open_queue(ctx, read_only=True)
        async with q:
            found = await q.workers(health_threshold_seconds=health_threshold_seconds, include_gone=include_gone)
        if as_json:
            click.echo(json.dumps([w.to_dict() for w in found], indent=2))
            return
        _print_workers(found, include_gone)

    run_async(go())


def _print_workers(found: list[Any], include_gone: bool) -> None:
    if not found:
        click.echo("no workers registered" + ("" if include_gone else " and alive (--all also shows gone ones)"))
        return
    rows = [{
        "worker": w.worker_id, "host/pid": f"{w.host}/{w.pid}", "shards": ",".join(w.shards) or "-",
        "task_types": ",".join(w.task_types), "in_flight": w.in_flight, "completed": w.counters.get("completed", 0),
        "failed": w.counters.get("failed", 0), "last_seen": ago(w.seen_seconds_ago),
        "state": "alive" if w.alive else "gone",
    } for w in found]
    click.echo(table(rows, ["worker", "host/pid", "shards", "task_types", "in_flight", "completed", "failed",
                            "last_seen", "state"]))


COMMANDS = [stats, workers]

__all__ = ["COMMANDS", "stats", "workers"]
