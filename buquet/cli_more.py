"""``buquet tail``, ``buquet monitor`` and ``buquet migrate-shards``.

* ``tail`` follows task transitions as they happen (a polling watch on the task objects'
  ETags; see :func:`tail` for its request cost).
* ``monitor`` runs :class:`buquet.Monitor` (lease recovery, deadlines) on its own, with
  optional retention, until SIGTERM/SIGINT.
* ``migrate-shards`` reports what changing the bucket's shard count would move (dry run);
  the move itself needs an engine primitive and is refused (see the command's help).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import click

from . import _validate as v
from . import config as cfg
from .cli_common import check, open_queue, open_store, progress, run_async, stop_on_signals, table
from .cli_schema import schema_group
from .models import Task, TaskStatus

log = logging.getLogger("buquet.cli")

#: most task objects ``tail`` reads (GETs) per interval; later changes wait for the next one
TAIL_MAX_READS = 100


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


# ---------------------------------------------------------------------------- tail
def _parse_at(text: str) -> datetime:
    from ._time import parse_when

    return parse_when("at", text)


@dataclass
class _Seen:
    etag: str
    emitted: int | None = None  # history entries already reported (None: not read yet)


@dataclass
class TailState:
    """What ``tail`` remembers between intervals: each task object's ETag and how many
    of its history entries were reported. Transitions stamped before ``start`` are
    never reported (they happened before the tail began)."""

    start: datetime
    tasks: dict[str, _Seen] = field(default_factory=dict)


def task_events(task: Task, entries: list[dict[str, Any]], all_entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One event per history entry of ``task`` (``entries``, a tail of ``all_entries``):
    ``timestamp, task_id, task_type, status`` plus ``worker_id``, ``duration_ms``,
    ``attempt`` and ``error`` when known."""
    out = []
    offset = len(all_entries) - len(entries)
    for i, e in enumerate(entries):
        ev: dict[str, Any] = {"timestamp": e["at"], "task_id": task.id, "task_type": task.task_type,
                              "status": e["status"], "attempt": e.get("attempt")}
        if e.get("worker_id"):
            ev["worker_id"] = e["worker_id"]
        if e.get("error"):
            ev["error"] = e["error"]
        prev = all_entries[offset + i - 1] if offset + i > 0 else None
        if e["status"] != TaskStatus.Running.value and prev is not None and prev["status"] == TaskStatus.Running.value:
            # the attempt this entry ends: since the Running entry before it
            ms = (_parse_at(e["at"]) - _parse_at(prev["at"])).total_seconds() * 1000
            ev["duration_ms"] = max(0, int(ms))
        out.append(ev)
    return out


def event_line(ev: dict[str, Any], full_ids: bool = False) -> str:
    """``[HH:MM:SS] <id[:8]> <type> <status> (<detail>)`` (time in UTC; the whole id with
    ``full_ids`` — ids are time-ordered UUIDv7s, so tasks created within the same ~65 s
    share their first 8 digits)."""
    at = _parse_at(ev["timestamp"]).astimezone(timezone.utc).strftime("%H:%M:%S")
    detail = []
    if ev.get("worker_id"):
        detail.append(f"worker {ev['worker_id']}")
    if ev.get("attempt"):
        detail.append(f"attempt {ev['attempt']}")
    if "duration_ms" in ev:
        detail.append(f"{ev['duration_ms'] / 1000:.2f}s")
    if ev.get("error"):
        err = str(ev["error"]).splitlines()[0] if str(ev["error"]).strip() else ""
        detail.append(err[:120])
    text = f"[{at}] {ev['task_id'] if full_ids else ev['task_id'][:8]} {ev['task_type']} {ev['status']}"
    return f"{text} ({', '.join(detail)})" if detail else text


async def tail_step(q: Any, state: TailState, shards: list[str], max_reads: int = TAIL_MAX_READS) -> list[dict[str, Any]]:
    """One ``tail`` interval: LIST the task objects of ``shards``, GET (through
    :meth:`Queue.get`) the new or changed ones — newest first, at most ``max_reads``; the
    others keep their old ETag and are read at a later interval — and return their new
    transitions as events, oldest first.

    Cost: one LIST per 1,000 task objects per shard, plus one GET per new or changed
    task object (a heartbeat or progress report changes it too), at most ``max_reads``.
    """
    changed: list[tuple[str, str]] = []  # (task id, etag)
    present: set[str] = set()
    for shard in shards:
        async for page in q.store.scan(q.layout.tasks_prefix(shard)):
            for info in page:
                parsed = q.layout.parse_task(info.key)
                if parsed is None:
                    continue
                tid = parsed[1]
                present.add(tid)
                seen = state.tasks.get(tid)
                if seen is None or seen.etag != info.etag:
                    changed.append((tid, info.etag))
    for gone in set(state.tasks) - present:  # deleted (purge, retention)
        del state.tasks[gone]
    changed.sort(reverse=True)  # ids are time-ordered: newest first
    events: list[dict[str, Any]] = []
    sem = asyncio.Semaphore(16)

    async def read(tid: str, etag: str) -> None:
        async with sem:
            task = await q.get(tid)
        seen = state.tasks.get(tid)
        if task is None:
            return
        history = list(task.history)
        if seen is None or seen.emitted is None:
            new = [e for e in history if _parse_at(e["at"]) >= state.start]
        else:
            new = history[seen.emitted:]
        state.tasks[tid] = _Seen(etag, len(history))
        events.extend(task_events(task, new, history))

    await asyncio.gather(*(read(tid, etag) for tid, etag in changed[:max_reads]))
    events.sort(key=lambda ev: (_parse_at(ev["timestamp"]), ev["task_id"]))
    return events


async def tail_baseline(q: Any, shards: list[str]) -> TailState:
    """The starting point of ``tail``: every task object's ETag (LISTs only, no GET)."""
    state = TailState(start=await q.time())
    for shard in shards:
        async for page in q.store.scan(q.layout.tasks_prefix(shard)):
            for info in page:
                parsed = q.layout.parse_task(info.key)
                if parsed is not None:
                    state.tasks[parsed[1]] = _Seen(info.etag)
    return state


@click.command()
@click.option("-t", "--task-type", default=None, help="Only tasks of this type.")
@click.option("--status", type=click.Choice([s.value for s in TaskStatus]), default=None,
              help="Only transitions into this status.")
@click.option("--shard", "shards", multiple=True, help="Shard(s) to watch (default: all).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line: timestamp, task_id, task_type, status (+ worker_id, duration_ms, error).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Stop after N events.")
@click.option("--interval", type=click.IntRange(100, 3_600_000), default=1000, show_default=True,
              help="Milliseconds between polls.")
@click.option("--full-ids", is_flag=True, help="Print whole task ids (ids created close together share their first 8 digits).")
@click.pass_context
def tail(ctx: click.Context, task_type: str | None, status: str | None, shards: tuple[str, ...], as_json: bool,
         limit: int | None, interval: int, full_ids: bool) -> None:
    """Follow new tasks and status changes as they happen, until Ctrl-C (or --limit).

    One line per transition: [HH:MM:SS] <id[:8]> <type> <status> (<detail>), time in
    UTC. Transitions from before the start are not shown.

    Cost per interval: one LIST per 1,000 task objects per shard, plus one GET per new
    or changed task object (at most 100 per interval; heartbeats count as changes). At
    the default 1 s interval on a 4-shard bucket holding fewer than 1,000 tasks per
    shard, that is 4 LISTs a second plus the GETs of the tasks that moved.
    """
    if task_type is not None:
        check(v.task_type, task_type, "--task-type")

    async def go() -> None:
        q = await open_queue(ctx, read_only=True)
        async with q:
            chosen = list(shards) or q.shards
            check(q.check_shards, chosen, "--shard")
            stop = asyncio.Event()
            shown = 0
            with stop_on_signals(stop):
                state = await tail_baseline(q, chosen)
                while not stop.is_set():
                    await _sleep_or_stop(stop, interval / 1000)
                    if stop.is_set():
                        break
                    for ev in await tail_step(q, state, chosen):
                        if (task_type and ev["task_type"] != task_type) or (status and ev["status"] != status):
                            continue
                        click.echo(json.dumps(ev) if as_json else event_line(ev, full_ids))
                        shown += 1
                        if limit is not None and shown >= limit:
                            return

    run_async(go())


# ------------------------------------------------------------------------- monitor
@click.command()
@click.option("--check-interval", type=click.FloatRange(0.1, 86400), default=30.0,
              show_default=True, help="Seconds between lease/deadline sweeps (and worker health checks).")
@click.option("--worker-health-threshold", type=click.FloatRange(1, 10**6), default=60.0, show_default=True,
              help="A registered worker not seen for this many seconds is reported gone.")
@click.option("--sweep-interval", type=click.FloatRange(1, 10**6), default=300.0, show_default=True,
              help="Seconds between retention passes (with --retention-days).")
@click.option("--sweep-page-size", type=click.IntRange(1, 1000), default=1000, show_default=True,
              help="Task objects read per shard per retention pass.")
@click.option("--shard", "shards", multiple=True, help="Shard(s) to watch (default: all).")
@click.option("--retention-days", type=click.FloatRange(0.001, 36500), default=None,
              help="Delete final tasks unchanged for this many days.")
@click.option("--once", is_flag=True, help="One sweep (and one retention pass), print what it did, exit.")
@click.pass_context
def monitor(ctx: click.Context, check_interval: float, worker_health_threshold: float, sweep_interval: float,
            sweep_page_size: int, shards: tuple[str, ...], retention_days: float | None, once: bool) -> None:
    """Run the monitor on its own: requeue tasks whose lease lapsed (crashed workers),
    expire tasks past their deadline, report workers gone silent, and (with
    --retention-days) delete old final tasks. Stops on SIGTERM/SIGINT (exit 0).

    Workers run this in-process unless started with --no-monitor; one standalone
    monitor per bucket lets every worker run with --no-monitor. Cost per sweep: two
    LISTs per shard plus one GET and up to two PUTs per recovered task; a worker health
    check is one LIST plus one GET per registered worker.
    """
    from .monitor import Monitor

    logging.getLogger("buquet").setLevel(min(logging.getLogger().level, logging.INFO))

    async def go() -> None:
        q = await open_queue(ctx)
        async with q:
            chosen = list(shards) or q.shards
            check(q.check_shards, chosen, "--shard")
            mon = Monitor(q, chosen, retention_days=retention_days, sweep_interval_seconds=sweep_interval,
                          sweep_page_size=sweep_page_size)
            gone: set[str] = set()

            async def health() -> list[str]:
                newly = []
                for w in await q.workers(health_threshold_seconds=worker_health_threshold):
                    if not w.alive and w.worker_id not in gone:
                        gone.add(w.worker_id)
                        newly.append(f"{w.worker_id} (host {w.host}, pid {w.pid}, last seen "
                                     f"{w.seen_seconds_ago:.0f}s ago)")
                    elif w.alive:
                        gone.discard(w.worker_id)
                return newly

            if once:
                recovered = await mon.sweep()
                click.echo(f"recovered {recovered} task(s) (lapsed leases requeued or failed, deadlines expired)")
                if retention_days is not None:
                    click.echo(f"deleted {mon.retained} final task(s) older than {retention_days:g} days")
                for line in await health():
                    click.echo(f"worker gone: {line}")
                return

            stop = asyncio.Event()

            async def report_gone() -> None:
                while not stop.is_set():
                    try:
                        for line in await health():
                            log.warning("monitor: worker gone: %s", line)
                    except Exception as exc:  # noqa: BLE001 - keep watching
                        log.warning("monitor: worker health check failed: %s", exc)
                    await _sleep_or_stop(stop, check_interval)

            with stop_on_signals(stop):
                await asyncio.gather(mon.run(check_interval, stop), report_gone())

    run_async(go())


# ------------------------------------------------------------------ migrate-shards
@dataclass
class MigrationPlan:
    """What changing the shard count from ``from_count`` to ``to_count`` moves."""

    from_count: int
    to_count: int
    tasks: int = 0
    tasks_moving: int = 0
    index_entries: dict[str, int] = field(default_factory=lambda: {"ready": 0, "leases": 0, "expiries": 0})
    index_moving: dict[str, int] = field(default_factory=lambda: {"ready": 0, "leases": 0, "expiries": 0})
    list_requests: int = 0

    def cost(self) -> dict[str, int]:
        """Estimated requests of the move: per moved task one GET, one conditional PUT at
        its new key and one DELETE; per moved index entry one PUT and one DELETE; the
        LISTs again; one PUT of ``config.json``."""
        idx = sum(self.index_moving.values())
        return {"LIST": self.list_requests, "GET": self.tasks_moving, "PUT": self.tasks_moving + idx + 1,
                "DELETE": self.tasks_moving + idx}

    def to_dict(self) -> dict[str, Any]:
        return {"from_shard_count": self.from_count, "to_shard_count": self.to_count, "task_objects": self.tasks,
                "task_objects_moving": self.tasks_moving, "index_entries": dict(self.index_entries),
                "index_entries_moving": dict(self.index_moving), "dry_run_requests": {"LIST": self.list_requests},
                "estimated_requests_to_migrate": self.cost()}


async def plan_migration(q: Any, to_count: int, concurrency: int = 10) -> MigrationPlan:
    """Count what moves if the bucket's shard count became ``to_count``: a task lives in
    shard ``int(id[-12:], 16) % shard_count`` under a name zero-padded to the widest
    shard number, so a task moves when its shard name changes. LISTs only."""
    from ._ids import shard_index, shard_names

    new_names = shard_names(to_count)
    plan = MigrationPlan(q.shard_count, to_count)
    sem = asyncio.Semaphore(concurrency)
    lay = q.layout
    kinds: list[tuple[str, Callable[[str], str], Callable[[str], Any]]] = [
        ("tasks", lay.tasks_prefix, lambda k: (lay.parse_task(k) or (None, None))[1]),
        ("ready", lay.ready_prefix, lambda k: getattr(lay.parse_ready(k), "task_id", None)),
        ("leases", lay.lease_prefix, lambda k: getattr(lay.parse_lease(k), "task_id", None)),
        ("expiries", lay.expiry_prefix, lambda k: getattr(lay.parse_expiry(k), "task_id", None)),
    ]

    async def count(shard: str, kind: str, prefix: Callable[[str], str], tid_of: Callable[[str], Any]) -> None:
        async with sem:
            start_after: str | None = None
            while True:
                page = await q.store.list(prefix(shard), start_after=start_after, limit=1000)
                plan.list_requests += 1
                for info in page:
                    tid = tid_of(info.key)
                    if tid is None:
                        continue
                    moves = new_names[shard_index(tid, to_count)] != shard
                    if kind == "tasks":
                        plan.tasks += 1
                        plan.tasks_moving += moves
                    else:
                        plan.index_entries[kind] += 1
                        plan.index_moving[kind] += moves
                if len(page) < 1000:
                    break
                start_after = page[-1].key

    jobs: list[Awaitable[None]] = [count(s, *k) for s in q.shards for k in kinds]
    await asyncio.gather(*jobs)
    return plan


@click.command("migrate-shards")
@click.option("--from", "from_count", type=click.IntRange(1, cfg.MAX_SHARD_COUNT), required=True,
              help="The bucket's current shard count (must match its config.json).")
@click.option("--to", "to_count", type=click.IntRange(1, cfg.MAX_SHARD_COUNT), required=True, help="The new shard count.")
@click.option("--execute", is_flag=True, help="Perform the move (stop every worker first); run again to resume.")
@click.option("--force", is_flag=True, help="With --execute: skip the check that no worker looks alive.")
@click.option("--concurrency", type=click.IntRange(1, 256), default=10, show_default=True, help="Prefixes listed at once.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_context
def migrate_shards(ctx: click.Context, from_count: int, to_count: int, execute: bool, force: bool,
                   concurrency: int, as_json: bool) -> None:
    """Change the bucket's shard count from --from to --to. Without --execute: a dry run
    reporting what would move (task objects, index entries) and the requests it would
    cost (LISTs only; writes nothing).

    With --execute (every worker, scheduler and monitor stopped): copies what moves,
    switches config.json, deletes the old keys. Clients refuse the bucket meanwhile; a
    run that stops half-way is resumed by running the same command again.
    """
    if execute:
        _execute_migration(ctx, from_count, to_count, force, concurrency, as_json)
        return

    async def go() -> None:
        q = await open_queue(ctx, read_only=True)
        async with q:
            if q.shard_count != from_count:
                raise click.ClickException(f"--from {from_count}: this bucket has {q.shard_count} shards "
                                           "(its config.json shard_count)")
            plan = await plan_migration(q, to_count, concurrency)
        if as_json:
            click.echo(json.dumps(plan.to_dict(), indent=2))
            return
        idx_total, idx_moving = sum(plan.index_entries.values()), sum(plan.index_moving.values())
        click.echo(f"dry run: shard count {from_count} -> {to_count} (nothing was written)")
        rows = [{"objects": "task objects", "total": plan.tasks, "moving": plan.tasks_moving}]
        rows += [{"objects": f"{k} index entries", "total": plan.index_entries[k], "moving": plan.index_moving[k]}
                 for k in plan.index_entries]
        click.echo(table(rows, ["objects", "total", "moving"]))
        cost = plan.cost()
        click.echo(f"{plan.tasks_moving} of {plan.tasks} task objects and {idx_moving} of {idx_total} index entries "
                   f"would move; this dry run cost {plan.list_requests} LIST requests")
        click.echo("estimated requests to migrate: " + ", ".join(f"{n} {k}" for k, n in cost.items()))

    run_async(go())


def _execute_migration(ctx: click.Context, from_count: int, to_count: int, force: bool, concurrency: int,
                       as_json: bool) -> None:
    from ._migrate import migrate_shards as migrate

    async def go() -> None:
        store, layout = await open_store(ctx)
        try:
            now = await store.server_time() or datetime.now(timezone.utc)
            with progress(None, "migrating shards") as (bar, tid):
                report = await migrate(store, layout, from_count, to_count, now=now, force=force,
                                       concurrency=concurrency,
                                       progress=lambda phase, n: bar.update(tid, description=f"{phase}: {n} objects"))
        finally:
            await store.close()
        if as_json:
            click.echo(json.dumps(report.to_dict(), indent=2))
            return
        click.echo(f"{'resumed and finished' if report.resumed else 'done'}: {from_count} -> {to_count} shards; "
                   f"copied {sum(report.copied.values())} objects ({report.copied}), deleted {report.deleted} old "
                   f"keys; requests {report.requests}")

    run_async(go())


COMMANDS = [tail, monitor, migrate_shards, schema_group]

__all__ = ["COMMANDS", "tail", "monitor", "migrate_shards", "plan_migration", "tail_step", "tail_baseline",
           "event_line", "MigrationPlan"]
