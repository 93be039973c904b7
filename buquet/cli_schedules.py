"""``buquet schedule …`` and ``buquet scheduler`` commands.

``buquet schedule create ID TASK_TYPE CRON [--input JSON] [--timezone ZONE] …`` (or
``create ID -t TYPE -c CRON [-i JSON] [--timeout] [--retries]``), ``list``, ``get ID`` /
``show ID``, ``enable ID``, ``disable ID``, ``delete ID``, ``trigger ID``, and
``buquet scheduler`` = ``buquet schedule run`` (the long-lived scheduler; ``--once`` for
a single tick). Bad input
exits with status 2 and names the field; unknown or duplicate schedules exit with 1.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import click

from . import _validate as v
from . import cli_common
from .config import DEFAULT_MAX_RETRIES, DEFAULT_SCHEDULER_INTERVAL_SECONDS, DEFAULT_TIMEOUT_SECONDS
from .schedules import CatchUp, Schedule, ScheduleLastRun


def _utc(dt: datetime | None) -> str:
    return "-" if dt is None else dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _local(dt: datetime, zone: str) -> str:
    return dt.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def _relative(dt: datetime, now: datetime) -> str:
    seconds = int((dt - now).total_seconds())
    past, seconds = seconds < 0, abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if hours or days:
        parts.append(f"{hours}h")
    if not days:
        parts.append(f"{minutes}m")
    if not days and not hours:
        parts.append(f"{secs}s")
    text = "".join(parts)
    return f"{text} ago (overdue)" if past else f"in {text}"


def _options(s: Schedule) -> str:
    text = f"timeout {s.timeout_seconds}s, max {s.max_retries} retries"
    if s.retry_policy is not None:
        text += f", retry policy {json.dumps(s.retry_policy.to_dict())}"
    return text


def _catch_up(s: Schedule) -> str:
    return f"all (up to {s.catch_up_limit})" if s.catch_up == CatchUp.ALL else s.catch_up.value


def _detail(s: Schedule, run: ScheduleLastRun, now: datetime) -> str:
    rows: list[tuple[str, str]] = [
        ("id", s.id),
        ("task type", s.task_type),
        ("cron", s.cron),
        ("timezone", s.timezone),
        ("enabled", "yes" if s.enabled else "no"),
        ("catch-up", _catch_up(s)),
        ("input", json.dumps(s.input)),
        ("task options", _options(s)),
        ("created", _utc(s.created_at)),
        ("updated", _utc(s.updated_at)),
    ]
    if run.last_run_at is not None:
        rows.append(("last run", f"{_utc(run.last_run_at)} ({run.last_run_kind or 'slot'}) task {run.last_task_id}"))
    else:
        rows.append(("last run", "never"))
    rows.append(("last slot", _utc(run.last_slot_at)))
    if run.next_run_at is not None:
        when = _utc(run.next_run_at)
        if s.timezone not in ("UTC", "Etc/UTC"):
            when = f"{_local(run.next_run_at, s.timezone)} = {when}"
        rows.append(("next run", f"{when} {_relative(run.next_run_at, now)}"))
    else:
        rows.append(("next run", "- (disabled)" if not s.enabled else "- (the cron never matches again)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {val}" for k, val in rows)


def _as_json(s: Schedule, run: ScheduleLastRun | None) -> dict[str, Any]:
    doc = s.to_dict()
    doc.pop("version", None)
    if run is not None:
        doc["last_run"] = {
            "last_run_at": run.last_run_at and _iso(run.last_run_at),
            "last_task_id": run.last_task_id,
            "last_run_kind": run.last_run_kind,
            "last_slot_at": run.last_slot_at and _iso(run.last_slot_at),
            "next_run_at": run.next_run_at and _iso(run.next_run_at),
        }
    return doc


def _iso(dt: datetime) -> str:
    from ._time import to_rfc3339

    return to_rfc3339(dt)


async def _show(q: Any, schedule: Schedule, as_json: bool) -> None:
    run = await q.schedules.last_run_of(schedule)
    if as_json:
        click.echo(json.dumps(_as_json(schedule, run), indent=2))
    else:
        click.echo(_detail(schedule, run, await q.time()))


@click.group("schedule")
def schedule_group() -> None:
    """Create, inspect and control cron schedules.

    CRON is standard 5-field cron (minute hour day-of-month month day-of-week, e.g.
    "0 9 * * 1-5") or @hourly/@daily/@weekly/@monthly/@yearly, read in the schedule's
    --timezone. A scheduler (`buquet scheduler`, a worker with the scheduler on, or the
    scheduler Lambda) must run for schedules to fire.
    """


@schedule_group.command("create")
@click.argument("schedule_id", metavar="ID")
@click.argument("task_type_arg", metavar="[TASK_TYPE]", required=False)
@click.argument("cron_arg", metavar="[CRON]", required=False)
@click.option("-t", "--task-type", "task_type_opt", default=None, help="Task type (instead of the TASK_TYPE argument).")
@click.option("-c", "--cron", "cron_opt", default=None, help="Cron expression (instead of the CRON argument).")
@click.option("-i", "--input", "input_json", default="null", show_default=True, help="JSON input of every run's task.")
@click.option("--timezone", "tz", default="UTC", show_default=True, help="IANA time zone the cron is read in.")
@click.option("--timeout-seconds", "--timeout", "timeout_seconds", type=int, default=DEFAULT_TIMEOUT_SECONDS,
              show_default=True, help="Task timeout per attempt.")
@click.option("--max-retries", "--retries", "max_retries", type=int, default=DEFAULT_MAX_RETRIES, show_default=True,
              help="Task retries.")
@click.option("--retry-policy", default=None, help='Task retry policy as JSON, e.g. {"initial_interval_ms":500}.')
@click.option("--catch-up", type=click.Choice([c.value for c in CatchUp]), default="latest", show_default=True,
              help="Missed slots after downtime: run the latest once, all (bounded), or skip.")
@click.option("--catch-up-limit", type=int, default=10, show_default=True, help="With --catch-up all: most missed slots run.")
@click.option("--disabled", is_flag=True, help="Create it disabled.")
@click.option("--json", "as_json", is_flag=True, help="Print the schedule as JSON.")
@click.pass_context
def create_cmd(ctx: click.Context, schedule_id: str, task_type_arg: str | None, cron_arg: str | None,
               task_type_opt: str | None, cron_opt: str | None, input_json: str, tz: str,
               timeout_seconds: int, max_retries: int, retry_policy: str | None, catch_up: str,
               catch_up_limit: int, disabled: bool, as_json: bool) -> None:
    """Create schedule ID that submits TASK_TYPE on CRON. It first fires at its next slot.

    TASK_TYPE and CRON can also be given as -t/--task-type and -c/--cron
    (``buquet schedule create nightly -t report -c "0 2 * * *" -i '{}'``).
    """
    if task_type_opt is not None and cron_opt is None and task_type_arg is not None and cron_arg is None:
        task_type_arg, cron_arg = None, task_type_arg  # `create ID -t T CRON`
    if task_type_arg is not None and task_type_opt is not None:
        raise click.UsageError("give TASK_TYPE or -t/--task-type, not both")
    if cron_arg is not None and cron_opt is not None:
        raise click.UsageError("give CRON or -c/--cron, not both")
    task_type = task_type_arg if task_type_arg is not None else task_type_opt
    cron = cron_arg if cron_arg is not None else cron_opt
    if task_type is None:
        raise click.UsageError("missing the task type: give TASK_TYPE or -t/--task-type")
    if cron is None:
        raise click.UsageError("missing the cron expression: give CRON or -c/--cron")
    payload = cli_common.parse_json_option(input_json, "--input")
    policy = cli_common.parse_retry_policy(retry_policy)
    # validate everything before connecting: a bad command writes nothing, not even config.json
    stamp = datetime.now(timezone.utc)
    cli_common.check(v.name, schedule_id, "id")
    cli_common.check(
        Schedule, id=schedule_id, task_type=task_type, input=payload, cron=cron, enabled=not disabled,
        created_at=stamp, timezone=tz, updated_at=stamp, enabled_at=stamp, timeout_seconds=timeout_seconds,
        max_retries=max_retries, retry_policy=policy, catch_up=catch_up, catch_up_limit=catch_up_limit,
    )

    async def go() -> None:
        q = await cli_common.open_queue(ctx)
        async with q:
            s = await q.create_schedule(
                schedule_id, task_type, payload, cron, timezone=tz, enabled=not disabled,
                timeout_seconds=timeout_seconds, max_retries=max_retries, retry_policy=policy,
                catch_up=catch_up, catch_up_limit=catch_up_limit,
            )
            await _show(q, s, as_json)

    cli_common.run_async(go())


@schedule_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """List every schedule with its next and last run (times in UTC)."""
    async def go() -> None:
        q = await cli_common.open_queue(ctx, read_only=True)
        async with q:
            schedules = await q.list_schedules()
            now = await q.time()
            runs = await asyncio.gather(*(q.schedules.last_run_of(s, now) for s in schedules))
        if as_json:
            click.echo(json.dumps([_as_json(s, r) for s, r in zip(schedules, runs)], indent=2))
            return
        if not schedules:
            click.echo("no schedules")
            return
        rows = [
            {
                "id": s.id,
                "task type": s.task_type,
                "cron": s.cron,
                "timezone": s.timezone,
                "enabled": "yes" if s.enabled else "no",
                "catch-up": _catch_up(s),
                "next run (UTC)": _utc(r.next_run_at),
                "last run (UTC)": _utc(r.last_run_at),
                "last task": r.last_task_id or "-",
            }
            for s, r in zip(schedules, runs)
        ]
        click.echo(cli_common.table(rows, list(rows[0])))

    cli_common.run_async(go())


@schedule_group.command("get")
@click.argument("schedule_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def get_cmd(ctx: click.Context, schedule_id: str, as_json: bool) -> None:
    """Show one schedule, its last run and its next run."""
    async def go() -> None:
        from .errors import ScheduleNotFound

        q = await cli_common.open_queue(ctx, read_only=True)
        async with q:
            s = await q.get_schedule(schedule_id)
            if s is None:
                raise ScheduleNotFound(f"no schedule {schedule_id!r}")
            await _show(q, s, as_json)

    cli_common.run_async(go())


@schedule_group.command("show")
@click.argument("schedule_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show_cmd(ctx: click.Context, schedule_id: str, as_json: bool) -> None:
    """Show one schedule: its definition, last run and next run (same as `get`)."""
    get_cmd.callback(schedule_id, as_json)  # type: ignore[misc]


def _toggle(ctx: click.Context, schedule_id: str, enable: bool) -> None:
    async def go() -> None:
        q = await cli_common.open_queue(ctx)
        async with q:
            s = await (q.enable_schedule(schedule_id) if enable else q.disable_schedule(schedule_id))
            run = await q.schedules.last_run_of(s)
        state = "enabled" if s.enabled else "disabled"
        nxt = f"; next run {_utc(run.next_run_at)}" if run.next_run_at else ""
        click.echo(f"schedule {s.id} {state}{nxt}")

    cli_common.run_async(go())


@schedule_group.command("enable")
@click.argument("schedule_id", metavar="ID")
@click.pass_context
def enable_cmd(ctx: click.Context, schedule_id: str) -> None:
    """Enable a schedule. Slots missed while it was disabled are not replayed."""
    _toggle(ctx, schedule_id, True)


@schedule_group.command("disable")
@click.argument("schedule_id", metavar="ID")
@click.pass_context
def disable_cmd(ctx: click.Context, schedule_id: str) -> None:
    """Disable a schedule (it stays stored; `enable` resumes it)."""
    _toggle(ctx, schedule_id, False)


@schedule_group.command("delete")
@click.argument("schedule_id", metavar="ID")
@click.pass_context
def delete_cmd(ctx: click.Context, schedule_id: str) -> None:
    """Delete a schedule with its run state and slot ledger (its tasks stay)."""
    async def go() -> None:
        q = await cli_common.open_queue(ctx)
        async with q:
            await q.delete_schedule(schedule_id)
        click.echo(f"schedule {schedule_id} deleted")

    cli_common.run_async(go())


@schedule_group.command("trigger")
@click.argument("schedule_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the submitted task as JSON.")
@click.pass_context
def trigger_cmd(ctx: click.Context, schedule_id: str, as_json: bool) -> None:
    """Submit the schedule's task now (its cron slots are unaffected). Prints the task id."""
    async def go() -> None:
        q = await cli_common.open_queue(ctx)
        async with q:
            task = await q.trigger_schedule(schedule_id)
        if as_json:
            click.echo(json.dumps(cli_common.task_doc(task), indent=2))
        else:
            click.echo(task.id)

    cli_common.run_async(go())


@click.command("scheduler")
@click.option("--interval-seconds", type=float, default=DEFAULT_SCHEDULER_INTERVAL_SECONDS, show_default=True,
              help="Longest pause between ticks (slots fire on time regardless).")
@click.option("--once", is_flag=True, help="Run one tick, print the submitted task ids, and exit.")
@click.pass_context
def scheduler_command(ctx: click.Context, interval_seconds: float, once: bool) -> None:
    """Run the scheduler: fire due cron slots as tasks, once per slot.

    Run as many as you like against one bucket (each slot still fires once). Stops on
    SIGTERM/SIGINT.
    """
    from .scheduler import Scheduler

    logging.getLogger("buquet").setLevel(min(logging.getLogger().level, logging.INFO))

    async def go() -> None:
        q = await cli_common.open_queue(ctx)
        async with q:
            scheduler = Scheduler(q)
            if once:
                for task in await scheduler.tick():
                    click.echo(task.id)
                return
            stop = asyncio.Event()
            with cli_common.stop_on_signals(stop):
                await scheduler.run(interval_seconds, stop)

    cli_common.run_async(go())


@schedule_group.command("run")
@click.option("--interval", "--interval-seconds", "interval_seconds", type=click.FloatRange(0.1, 86400),
              default=60.0, show_default=True,
              help="Longest pause between ticks, seconds (slots fire on time regardless).")
@click.option("--once", is_flag=True, help="Run one tick, print the submitted task ids, and exit.")
@click.pass_context
def run_cmd(ctx: click.Context, interval_seconds: float, once: bool) -> None:
    """Run the scheduler (the same as `buquet scheduler`) until SIGTERM/SIGINT."""
    scheduler_command.callback(interval_seconds, once)  # type: ignore[misc]


__all__ = ["schedule_group", "scheduler_command"]
