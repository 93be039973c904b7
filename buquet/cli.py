"""The ``buquet`` command line (also ``python -m buquet``).

Configuration comes from flags or the same environment variables as
:func:`buquet.connect`: ``S3_BUCKET``, ``S3_ENDPOINT``, ``S3_REGION``,
``BUQUET_LOCAL_DIR``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from . import _validate as v
from . import config as cfg
from .cli_config import checked_config, config_group, worker_options
from .cli_common import check, open_queue, run_async, table, task_doc
from .cli_dashboard import COMMANDS as DASHBOARD_COMMANDS
from .cli_doctor import doctor as doctor_command
from .cli_schedules import schedule_group, scheduler_command
from .cli_more import COMMANDS as MORE_COMMANDS
from .cli_submit import submit as submit_command
from .cli_tasks import COMMANDS as TASK_COMMANDS
from .cli_ops import COMMANDS as OPS_COMMANDS
from .models import Task, TaskStatus
from .worker import Worker, WorkerRunOptions


def _task_json(task: Task) -> str:
    return json.dumps(task_doc(task), indent=2)


@click.group()
@click.option("--bucket", envvar="S3_BUCKET", help="S3 bucket [env S3_BUCKET].")
@click.option("--endpoint", envvar="S3_ENDPOINT", help="S3-compatible endpoint URL [env S3_ENDPOINT].")
@click.option("--region", envvar="S3_REGION", help="Region [env S3_REGION].")
@click.option("--local-dir", envvar="BUQUET_LOCAL_DIR", help="Use a local directory as the bucket [env BUQUET_LOCAL_DIR].")
@click.option("--prefix", envvar="BUQUET_PREFIX", default="", help="Key prefix inside the bucket [env BUQUET_PREFIX].")
@click.option("--profile", envvar="BUQUET_PROFILE", default=None, help="Config profile: [profiles.<name>] over [default] [env BUQUET_PROFILE].")
@click.option("--config", "config_path", envvar="BUQUET_CONFIG", default=None, help="Config file, strongest of the files [env BUQUET_CONFIG].")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="buquet")
@click.pass_context
def cli(ctx: click.Context, bucket: str | None, endpoint: str | None, region: str | None,
        local_dir: str | None, prefix: str, profile: str | None, config_path: str | None, verbose: int) -> None:
    """buquet: a task queue whose only backend is an S3 bucket."""
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2) if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = {"bucket": bucket, "endpoint": endpoint, "region": region, "local_dir": local_dir, "prefix": prefix,
               "profile": profile or None, "config_path": config_path or None}


class _EarlyStop:
    """SIGTERM/SIGINT handlers for the window before ``Worker.run`` installs its own:
    a signal then asks the worker to stop as soon as it exists (``run`` returns at once,
    nothing claimed, exit status 0) instead of killing the process mid-import."""

    def __init__(self) -> None:
        self._signalled = False
        self._stop: Callable[[], None] | None = None
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self._signalled = True
        if self._stop is not None:
            self._stop()

    def attach(self, worker: Worker) -> None:
        """Route a signal that arrives from now on (until ``run`` takes over) to ``worker``."""
        loop = asyncio.get_running_loop()
        self._stop = lambda: loop.call_soon_threadsafe(worker.stop)
        if self._signalled:
            worker.stop()

    def restore(self) -> None:
        """Put back the handlers that were there before."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _load_worker(spec: str) -> Any:
    """The Worker, or Worker factory, that WORKER names (see :mod:`buquet.imports`);
    modules are imported from the current directory too. A usage error otherwise."""
    from .errors import ConfigurationError, ValidationError
    from .imports import load_worker_factory

    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return load_worker_factory(spec, allow_worker=True)
    except ValidationError as exc:
        raise click.BadParameter(exc.rule, param_hint="WORKER") from None
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="WORKER") from None


@cli.command()
@click.argument("worker_spec", metavar="WORKER")
@click.option("--concurrency", default=cfg.DEFAULT_MAX_CONCURRENCY, show_default=True, help="Tasks in flight at once.")
@click.option("--poll-interval-ms", default=cfg.DEFAULT_POLL_INTERVAL_MS, show_default=True, help="Idle poll interval (doubles while idle).")
@click.option("--max-poll-interval-ms", default=cfg.DEFAULT_MAX_POLL_INTERVAL_MS, show_default=True, help="Cap of the idle backoff.")
@click.option("--lease-seconds", default=cfg.DEFAULT_LEASE_SECONDS, show_default=True, help="Lease (visibility timeout) per claim.")
@click.option("--no-monitor", is_flag=True, help="Do not run lease recovery in this process.")
@click.option("--monitor-interval-seconds", default=cfg.DEFAULT_MONITOR_INTERVAL_SECONDS, show_default=True, help="Lease recovery period.")
@click.option("--shutdown-grace-seconds", default=cfg.DEFAULT_SHUTDOWN_GRACE_SECONDS, show_default=True, help="On SIGTERM, time for in-flight tasks.")
@click.option("--with-scheduler", is_flag=True, help="Also fire due cron schedules in this process.")
@click.option("--exit-when-idle", is_flag=True, help="Stop when no work is left (retries and tasks due within --idle-horizon-seconds are waited for).")
@click.option("--idle-horizon-seconds", type=click.FloatRange(0, 3600), default=60.0, show_default=True,
              help="With --exit-when-idle: wait for tasks of handled types coming due within this many seconds.")
@click.option("--max-tasks", type=int, default=None, help="Stop after this many tasks.")
@click.pass_context
def worker(ctx: click.Context, worker_spec: str, concurrency: int, poll_interval_ms: int, max_poll_interval_ms: int, lease_seconds: float,
           no_monitor: bool, monitor_interval_seconds: float, shutdown_grace_seconds: float,
           with_scheduler: bool, exit_when_idle: bool, idle_horizon_seconds: float, max_tasks: int | None) -> None:
    """Run a Worker defined in your code as module:attribute.

    The attribute is a buquet.Worker, or a function (sync or async) returning one,
    called inside the worker's event loop. Its queue comes from your code; the global
    flags are not used for it.
    """
    # A SIGTERM/SIGINT that arrives while the app is still being imported or built means
    # "stop before starting": a clean exit 0 once the Worker exists. Worker.run then installs
    # its own handlers for the graceful drain.
    source = _load_worker(worker_spec)
    checked_config(ctx)  # a bad config file fails here, before signal handlers are swapped
    early = _EarlyStop()
    opts = WorkerRunOptions(
        poll_interval_ms=poll_interval_ms, max_poll_interval_ms=max(max_poll_interval_ms, poll_interval_ms),
        max_concurrency=concurrency, lease_seconds=lease_seconds,
        with_monitor=not no_monitor, exit_when_idle=exit_when_idle, max_tasks=max_tasks,
        idle_horizon_ms=int(idle_horizon_seconds * 1000),
        monitor_check_interval_s=monitor_interval_seconds, shutdown_grace_seconds=shutdown_grace_seconds,
        with_scheduler=with_scheduler,
    )
    opts = worker_options(ctx, opts)  # [worker.polling], [worker.shard_leasing], [monitor] unless flags say otherwise
    logging.getLogger("buquet").setLevel(min(logging.getLogger().level, logging.INFO))

    async def go() -> None:
        from .imports import build_worker
        from .metrics import auto_configure

        auto_configure()  # BUQUET_METRICS_EXPORTER=prometheus|statsd|otlp (buquet.metrics)
        # a factory runs in the loop the worker runs in: its Queue's connections belong to it
        w = await build_worker(source, name="WORKER")
        early.attach(w)
        await w.run(opts)

    try:
        run_async(go())
    finally:
        early.restore()


@cli.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Accepted for symmetry: the task is always printed as JSON.")
@click.pass_context
def get(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Show one task as JSON."""
    check(v.task_id, task_id)

    async def go() -> None:
        q = await open_queue(ctx, read_only=True)
        async with q:
            task = await q.get(task_id)
        if task is None:
            raise click.ClickException(f"no task {task_id}")
        click.echo(_task_json(task))

    run_async(go())


@cli.command(name="list")
@click.option("--shard", "shards", multiple=True, help="Shard(s) to list (default: all).")
@click.option("--status", type=click.Choice([s.value for s in TaskStatus]), default=None)
@click.option("-t", "--task-type", default=None, help="Only tasks of this type.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--before", default=None, metavar="TASK_ID", help="Only tasks older than this one (the next page).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def list_cmd(ctx: click.Context, shards: tuple[str, ...], status: str | None, task_type: str | None, limit: int,
             before: str | None, as_json: bool) -> None:
    """List tasks, newest first, and say how many there are (pages: --before)."""
    if task_type is not None:
        check(v.task_type, task_type, "--task-type")
    if before is not None:
        check(v.task_id, before, "--before")

    async def go() -> None:
        q = await open_queue(ctx, read_only=True)
        async with q:
            chosen = list(shards) or q.shards
            check(q.check_shards, chosen, "--shard")
            page = await q.recent(chosen, status=status, task_type=task_type, limit=limit, before=before)
        tasks = page.tasks
        if as_json:
            for t in tasks:
                click.echo(json.dumps(t.to_dict()))
            return
        rows = [{"id": t.id, "type": t.task_type, "status": t.status.value, "shard": t.shard,
                 "attempt": t.attempt, "updated": t.updated_at.isoformat(timespec="seconds"),
                 "error": (t.last_error or "")[:60]} for t in tasks]
        click.echo(table(rows, ["id", "type", "status", "shard", "attempt", "updated", "error"]))
        what = " matching" if status or task_type else ""
        total = f"{page.listed}" if page.complete else f"≥ {page.listed}"
        more = f"; older: --before {page.next_before}" if page.next_before else ""
        click.echo(f"showing {len(tasks)}{what} of {total} tasks in {len(chosen)} shard(s), newest first{more}")

    run_async(go())


@cli.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print the transitions as a JSON list.")
@click.pass_context
def history(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Show every state a task went through."""
    check(v.task_id, task_id)

    async def go() -> None:
        q = await open_queue(ctx, read_only=True)
        async with q:
            snaps = await q.get_history(task_id)
        if not snaps:
            raise click.ClickException(f"no task {task_id}")
        if as_json:
            click.echo(json.dumps([{"at": s.updated_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                                    "status": s.status.value, "attempt": s.attempt, "worker_id": s.worker_id,
                                    "error": s.last_error if s.status.value != "completed" else None}
                                   for s in snaps], indent=2))
            return
        rows = [{"at": s.updated_at.isoformat(timespec="milliseconds"), "status": s.status.value,
                 "attempt": s.attempt, "worker": s.worker_id, "error": s.last_error if s.status.value != "completed" else None}
                for s in snaps]
        click.echo(table(rows, ["at", "status", "attempt", "worker", "error"]))

    run_async(go())


@cli.command()
@click.pass_context
def now(ctx: click.Context) -> None:
    """Print the store's current time (RFC 3339)."""
    async def go() -> None:
        q = await open_queue(ctx, read_only=True)
        async with q:
            click.echo(await q.now())

    run_async(go())


cli.add_command(doctor_command)
cli.add_command(schedule_group)
cli.add_command(config_group)
cli.add_command(submit_command)
for _command in MORE_COMMANDS:
    cli.add_command(_command)
cli.add_command(scheduler_command)
for _command in TASK_COMMANDS + OPS_COMMANDS:
    cli.add_command(_command)
for _command in DASHBOARD_COMMANDS:
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="buquet")
