"""Task-control commands of the ``buquet`` CLI: ``status``, ``wait``, ``cancel``,
``replay``, ``archive``, ``delete`` (buquet 0.1.0's names and flags where it had them).
Every id is checked before anything is sent; errors exit 1 with one line, usage errors 2.
"""

from __future__ import annotations

import json

import click

from . import _validate as v
from .cli_common import check, open_queue, progress, run_async
from .errors import BuquetError
from .models import Task


def _dump(task: Task) -> str:
    return json.dumps(task.to_dict(), indent=2)


def _line(task: Task) -> str:
    extra = f" ({task.last_error})" if task.last_error else ""
    return f"{task.id} {task.task_type} {task.status.value}{extra}"


@click.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON.")
@click.pass_context
def status(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Show a task's status (one line; --json for the whole task)."""
    check(v.task_id, task_id)

    async def go() -> None:
        q = await open_queue(ctx, read_only=True)
        async with q:
            task = await q.get(task_id)
        if task is None:
            raise click.ClickException(f"no task {task_id}")
        click.echo(_dump(task) if as_json else _line(task))

    run_async(go())


@click.command()
@click.argument("task_id")
@click.option("--timeout", "timeout_seconds", type=click.FloatRange(min=0), default=None,
              help="Give up after this many seconds (exit 1).")
@click.pass_context
def wait(ctx: click.Context, task_id: str, timeout_seconds: float | None) -> None:
    """Wait until a task is final and print it as JSON (exit 1 unless Completed)."""
    check(v.task_id, task_id)

    async def go() -> None:
        q = await open_queue(ctx, read_only=True)
        async with q:
            try:
                task = await q.wait(task_id, timeout_seconds=timeout_seconds)
            except BuquetError as exc:
                raise click.ClickException(str(exc)) from None
        click.echo(_dump(task))
        if task.status.value != "completed":
            raise SystemExit(1)

    run_async(go())


@click.command()
@click.argument("task_ids", nargs=-1)
@click.option("-t", "--task-type", default=None, help="Cancel every Pending task of this type instead.")
@click.option("-r", "--reason", default=None, help="Stored as the task's last_error.")
@click.option("-b", "--cancelled-by", default=None, help="Who cancels (stored as cancelled_by).")
@click.option("--json", "as_json", is_flag=True, help="Print the cancelled tasks as JSON.")
@click.pass_context
def cancel(ctx: click.Context, task_ids: tuple[str, ...], task_type: str | None, reason: str | None,
           cancelled_by: str | None, as_json: bool) -> None:
    """Cancel Pending tasks: TASK_IDS, or every Pending task of --task-type."""
    if bool(task_ids) == bool(task_type):
        raise click.UsageError("give task ids or --task-type, not both and not neither")
    for tid in task_ids:
        check(v.task_id, tid)
    if task_type is not None:
        check(v.task_type, task_type)

    async def go() -> None:
        q = await open_queue(ctx)
        async with q:
            if task_type is not None:
                with progress(None, f"cancelling pending {task_type} tasks"):
                    result = await q.cancel_by_type(task_type, reason, cancelled_by)
                done, failed = result.cancelled, result.failed
            else:
                done, failed = [], []
                for tid in task_ids:
                    try:
                        done.append(await q.cancel(tid, reason, cancelled_by))
                    except BuquetError as exc:
                        failed.append((tid, str(exc)))
        if as_json:
            click.echo(json.dumps({"cancelled": [t.to_dict() for t in done],
                                   "failed": [{"task_id": i, "error": e} for i, e in failed]}, indent=2))
        else:
            for t in done:
                click.echo(f"cancelled {t.id}")
            for tid, error in failed:
                click.echo(f"not cancelled {tid}: {error}", err=True)
        if failed:
            raise SystemExit(1)

    run_async(go())


def _one(verb: str, help_text: str):  # type: ignore[no-untyped-def]
    """A command that applies one Queue method to one task id and prints the result."""

    @click.command(name=verb, help=help_text)
    @click.argument("task_id")
    @click.option("--json", "as_json", is_flag=True, help="Print the task as JSON.")
    @click.pass_context
    def command(ctx: click.Context, task_id: str, as_json: bool) -> None:
        check(v.task_id, task_id)

        async def go() -> None:
            q = await open_queue(ctx)
            async with q:
                try:
                    task = await {"replay": q.retry, "archive": q.archive}[verb](task_id)
                except BuquetError as exc:
                    raise click.ClickException(str(exc)) from None
            click.echo(_dump(task) if as_json else _line(task))

        run_async(go())

    return command


replay = _one("replay", "Put a Failed, Cancelled or Expired task back to Pending (fresh attempts).")
archive = _one("archive", "Move a Completed or Failed task to Archived.")


@click.command()
@click.argument("task_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete(ctx: click.Context, task_id: str, yes: bool) -> None:
    """Delete a final task and its payload objects."""
    check(v.task_id, task_id)
    if not yes:
        click.confirm(f"Delete task {task_id}?", abort=True)

    async def go() -> None:
        q = await open_queue(ctx)
        async with q:
            try:
                await q.delete(task_id)
            except BuquetError as exc:
                raise click.ClickException(str(exc)) from None
        click.echo(f"deleted {task_id}")

    run_async(go())


#: shells click's completion supports; the spec's other two are refused clearly
_CLICK_SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish", "powershell", "elvish"]))
def completions(shell: str) -> None:
    """Print the shell completion script for SHELL (click's own completion; no store,
    no credentials). Install: ``buquet completions bash > ~/.buquet-complete.bash`` and
    source it from ``~/.bashrc``. powershell and elvish are not supported by click's
    completion (exit 1)."""
    from click.shell_completion import get_completion_class

    from .cli import cli

    cls = get_completion_class(shell) if shell in _CLICK_SHELLS else None
    if cls is None:
        raise click.ClickException(
            f"{shell} completion is not supported: buquet uses click's shell completion, which supports "
            f"{', '.join(_CLICK_SHELLS)} only")
    click.echo(cls(cli, {}, "buquet", "_BUQUET_COMPLETE").source())


_FINAL = ["completed", "failed", "cancelled", "archived", "expired"]


@click.command()
@click.option("--status", type=click.Choice(_FINAL), default=None, help="Only tasks in this final status (default: every final task).")
@click.option("-t", "--task-type", default=None, help="Only tasks of this type.")
@click.option("--older-than", default=None, metavar="DUR", help="Only tasks unchanged for DUR (30m, 12h, 7d, 2w).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help='Print {"deleted": N}.')
@click.pass_context
def purge(ctx: click.Context, status: str | None, task_type: str | None, older_than: str | None, yes: bool,
          as_json: bool) -> None:
    """Delete final tasks (Completed, Failed, Cancelled, Archived, Expired) with their
    payloads; Pending and Running tasks are never touched. Reads every task object: one
    LIST per 1,000 tasks, one GET per task, one DeleteObjects per deleted task."""
    from .cli_common import parse_duration

    if task_type is not None:
        check(v.task_type, task_type, "--task-type")
    older = parse_duration(older_than, "--older-than") if older_than is not None else None
    if not yes:
        what = " ".join(x for x in (status or "final", task_type and f"{task_type}") if x)
        age = f" unchanged for {older_than}" if older_than else ""
        click.confirm(f"Delete every {what} task{age}?", abort=True)

    async def go() -> None:
        q = await open_queue(ctx, read_only=True)
        async with q:
            with progress(None, "purging final tasks"):
                n = await q.purge(status=status, task_type=task_type, older_than_seconds=older)
        click.echo(json.dumps({"deleted": n}) if as_json else f"deleted {n} task(s)")

    run_async(go())


COMMANDS = [status, wait, cancel, replay, archive, delete, purge, completions]
