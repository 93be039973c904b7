"""``buquet submit``: one task (``TYPE INPUT`` positionally, or ``-t/-i``), or many from a
JSON-lines file (``--from-file``, through :meth:`Queue.submit_many`).

Every option is checked before connecting: a bad command writes nothing (not even the
bucket's ``config.json``) and exits 2 naming the flag.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta
from typing import Any

import click

from . import config as cfg
from .cli_common import (check, open_queue, parse_duration, parse_json_option, parse_retry_policy, progress,
                         read_text_arg, run_async, stdout_is_tty, task_doc)
from .models import TaskStatus
from .queue import validate_submit

#: tasks per :meth:`Queue.submit_many` call of ``--from-file`` (the progress bar's step)
BULK_BATCH = 100


def _read_inputs(path: str) -> list[Any]:
    """One JSON value per non-blank line of ``path`` (``-`` = stdin); a usage error naming
    the line otherwise."""
    text = read_text_arg(path, "--from-file")
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"line {n} is not valid JSON: {exc}", param_hint="--from-file") from None
    if not out:
        raise click.BadParameter(f"{path} holds no input lines", param_hint="--from-file")
    return out


def _one_of(positional: str | None, flag: str | None, pos_name: str, flag_name: str) -> str | None:
    if positional is not None and flag is not None:
        raise click.UsageError(f"give {pos_name} or {flag_name}, not both")
    return positional if positional is not None else flag


@click.command()
@click.argument("args", nargs=-1, metavar="[TASK_TYPE] [INPUT]")
@click.option("-t", "--task-type", default=None, help="Task type (instead of the TASK_TYPE argument).")
@click.option("-i", "--input", "input_opt", default=None, help="JSON input (instead of the INPUT argument; default null).")
@click.option("--from-file", "from_file", default=None, metavar="PATH",
              help="Submit one task per line of a JSON-lines file (- = stdin); needs -t.")
@click.option("--timeout-seconds", "--timeout", "timeout_seconds", type=int, default=cfg.DEFAULT_TIMEOUT_SECONDS,
              show_default=True, help="Handler time limit per attempt, seconds.")
@click.option("--max-retries", "--retries", "max_retries", type=int, default=cfg.DEFAULT_MAX_RETRIES,
              show_default=True, help="Retries after the first attempt.")
@click.option("--max-reschedules", type=int, default=None, help="Cap on handler reschedules (default unlimited).")
@click.option("--schedule-at", "--at", "schedule_at", default=None, help="Not before this RFC 3339 time, e.g. 2026-12-01T09:00:00Z.")
@click.option("--delay", default=None, metavar="DUR", help="Not before now + DUR (30s, 15m, 2h, 1d, 1w; bare = seconds).")
@click.option("--ttl", default=None, metavar="DUR", help="Expire if not claimed within DUR.")
@click.option("--expires-at", default=None, help="Expire if not claimed by this RFC 3339 time.")
@click.option("--idempotency-key", default=None, help="Same key + same input = the same task (30 days).")
@click.option("--retry-policy", default=None, help='JSON, e.g. {"initial_interval_ms":500}.')
@click.option("--wait", "wait_seconds", type=float, default=None, help="Wait up to N seconds for the result.")
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON instead of its id.")
@click.pass_context
def submit(ctx: click.Context, args: tuple[str, ...], task_type: str | None, input_opt: str | None,
           from_file: str | None, timeout_seconds: int, max_retries: int, max_reschedules: int | None,
           schedule_at: str | None, delay: str | None, ttl: str | None, expires_at: str | None,
           idempotency_key: str | None, retry_policy: str | None, wait_seconds: float | None, as_json: bool) -> None:
    """Submit a task and print its id (--json: the task).

    \b
      buquet submit send_email '{"to": "a@b.c"}'
      buquet submit -t send_email -i '{"to": "a@b.c"}' --delay 15m --ttl 1h --json
      buquet submit -t send_email --from-file inputs.jsonl     # one JSON input per line
    """
    if len(args) > 2:
        raise click.UsageError(f"expected at most TASK_TYPE and INPUT, got {len(args)} arguments")
    pos_type, pos_input = (args + (None, None))[:2]
    if task_type is not None and pos_type is not None and pos_input is None:
        pos_type, pos_input = None, pos_type  # `submit -t T INPUT`
    ttype = _one_of(pos_type, task_type, "TASK_TYPE", "-t/--task-type")
    raw_input = _one_of(pos_input, input_opt, "INPUT", "-i/--input")
    if ttype is None:
        raise click.UsageError("missing the task type: give TASK_TYPE or -t/--task-type")
    if schedule_at is not None and delay is not None:
        raise click.UsageError("give --at/--schedule-at or --delay, not both")
    if ttl is not None and expires_at is not None:
        raise click.UsageError("give --ttl or --expires-at, not both")
    delay_s = parse_duration(delay, "--delay") if delay is not None else None
    if delay_s is not None and delay_s > 10 * 365 * 86400:
        raise click.BadParameter("must be at most 10 years", param_hint="--delay")
    ttl_s = parse_duration(ttl, "--ttl") if ttl is not None else None
    policy = parse_retry_policy(retry_policy)
    if wait_seconds is not None and not (math.isfinite(wait_seconds) and wait_seconds >= 0):
        raise click.BadParameter(f"must be a finite number of seconds >= 0, got {wait_seconds}", param_hint="--wait")
    if from_file is not None:
        if raw_input is not None:
            raise click.UsageError("give INPUT/-i or --from-file, not both")
        for flag, given in (("--at/--delay", schedule_at or delay), ("--idempotency-key", idempotency_key),
                            ("--wait", wait_seconds is not None)):
            if given:
                raise click.UsageError(f"{flag} cannot be used with --from-file")
        inputs = _read_inputs(from_file)
        check(validate_submit, ttype, None, timeout_seconds, max_retries, policy, max_reschedules=max_reschedules,
              ttl_seconds=ttl_s, expires_at=expires_at)  # the options, once
        for n, value in enumerate(inputs, 1):
            try:
                validate_submit(ttype, value, timeout_seconds, max_retries, policy, max_reschedules=max_reschedules,
                                ttl_seconds=ttl_s, expires_at=expires_at)
            except Exception as exc:  # noqa: BLE001 - ValidationError with the line number
                raise click.UsageError(f"--from-file line {n}: {exc}") from None
        _submit_many(ctx, ttype, inputs, timeout_seconds, max_retries, policy, max_reschedules, ttl_s, expires_at, as_json)
        return

    payload = parse_json_option(raw_input if raw_input is not None else "null", "INPUT" if pos_input is not None else "--input")
    check(validate_submit, ttype, payload, timeout_seconds, max_retries, policy, schedule_at,
          max_reschedules=max_reschedules, ttl_seconds=ttl_s, expires_at=expires_at, idempotency_key=idempotency_key)

    async def go() -> None:
        q = await open_queue(ctx)
        async with q:
            when: Any = schedule_at
            if delay_s is not None:
                when = await q.time() + timedelta(seconds=delay_s)
            task = await q.submit(ttype, payload, timeout_seconds=timeout_seconds, max_retries=max_retries,
                                  retry_policy=policy, schedule_at=when, max_reschedules=max_reschedules,
                                  ttl_seconds=ttl_s, expires_at=expires_at, idempotency_key=idempotency_key)
            if wait_seconds is None:
                click.echo(json.dumps(task_doc(task), indent=2) if as_json else task.id)
                return
            if not as_json:
                click.echo(task.id)
            done = await q.wait(task.id, timeout_seconds=wait_seconds)
            click.echo(json.dumps(task_doc(done), indent=2))
            if done.status != TaskStatus.Completed:
                raise SystemExit(1)

    run_async(go())


def _submit_many(ctx: click.Context, task_type: str, inputs: list[Any], timeout_seconds: int, max_retries: int,
                 policy: Any, max_reschedules: int | None, ttl_s: float | None, expires_at: str | None,
                 as_json: bool) -> None:
    """``--from-file``: batches of :data:`BULK_BATCH` through ``submit_many``, a progress
    bar on stderr, one id (or one JSON task) per line on stdout as batches finish."""

    async def go() -> None:
        q = await open_queue(ctx)
        done = 0
        # on a terminal the lines wait until the progress bar is gone; piped, they stream
        held: list[str] | None = [] if stdout_is_tty() else None
        async with q:
            with progress(len(inputs), f"submitting {task_type}") as (bar, tid):
                for start in range(0, len(inputs), BULK_BATCH):
                    batch = [(task_type, value) for value in inputs[start:start + BULK_BATCH]]
                    try:
                        tasks = await q.submit_many(batch, timeout_seconds=timeout_seconds, max_retries=max_retries,
                                                    retry_policy=policy, max_reschedules=max_reschedules,
                                                    ttl_seconds=ttl_s, expires_at=expires_at)
                    except Exception as exc:
                        for line in held or ():
                            click.echo(line)
                        held = None
                        if done:
                            click.echo(f"submitted {done} tasks (lines 1-{done}) before this error; lines "
                                       f"{done + 1}-{done + len(batch)} may be partly submitted", err=True)
                        raise exc
                    for t in tasks:
                        line = json.dumps(task_doc(t)) if as_json else t.id
                        if held is None:
                            click.echo(line)
                        else:
                            held.append(line)
                    done += len(tasks)
                    bar.advance(tid, len(tasks))
            for line in held or ():
                click.echo(line)

    run_async(go())


__all__ = ["submit", "BULK_BATCH"]
