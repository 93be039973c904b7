"""Shared plumbing of the ``buquet`` command line: global options → Queue, asyncio glue."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
from typing import Any, Coroutine, Iterator, TypeVar

import click

from .errors import BuquetError
from .queue import Queue, connect

T = TypeVar("T")


async def open_queue(ctx: click.Context, read_only: bool = False) -> Queue:
    """Build the Queue from the root command's options (``--bucket``, ``--endpoint``,
    ``--region``, ``--local-dir``, ``--prefix``), which default to the environment
    variables ``S3_BUCKET``, ``S3_ENDPOINT``, ``S3_REGION``, ``BUQUET_LOCAL_DIR``, then
    to the config files and ``--profile`` (:func:`buquet.load_config`).

    ``read_only=True`` (inspection commands) never creates ``config.json`` in a fresh
    bucket or directory, so a mistyped location is not turned into a new queue.

    Raises:
        ConfigurationError: nothing configured.
    """
    from .cli_config import context_config

    root = ctx.find_root()
    opts: dict[str, Any] = root.obj or {}
    conf = context_config(ctx)  # --profile/--config: files < profile < env < flags
    return await connect(
        endpoint=opts.get("endpoint") or conf.endpoint,
        bucket=opts.get("bucket") or conf.bucket or None,
        region=opts.get("region") or (conf.region if "region" in conf.origins else None),
        local_dir=opts.get("local_dir"),
        prefix=opts.get("prefix") or "",
        read_only=read_only,
        shard_prefix_len=conf.shard_prefix_len,
    )


async def open_store(ctx: click.Context) -> tuple[Any, Any]:
    """``(store, layout)`` of the bucket the root command's options name (as
    :func:`open_queue`), without reading ``config.json`` — for tools that must work on a
    bucket ``connect()`` refuses (a shard migration in progress). Close the store after.

    Raises:
        ConfigurationError: nothing configured.
    """
    from . import config as cfg
    from .cli_config import context_config
    from .keys import KeyLayout

    opts: dict[str, Any] = ctx.find_root().obj or {}
    conf = context_config(ctx)
    endpoint, bucket, region, _ = cfg.with_file_defaults(
        opts.get("endpoint") or conf.endpoint, opts.get("bucket") or conf.bucket or None,
        opts.get("region") or (conf.region if "region" in conf.origins else None), None,
        want_store=not opts.get("local_dir"), want_shards=False)
    store = cfg.store_from_env(endpoint, bucket, region, opts.get("local_dir"))
    return store, KeyLayout(cfg.prefix_from_env(opts.get("prefix") or None))


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine for a CLI command, turning buquet errors into a clean
    ``Error: …`` message and exit status 1 (2 for bad input)."""
    from .errors import ValidationError

    try:
        return asyncio.run(coro)
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from None
    except (BuquetError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None


def parse_json_option(value: str, name: str) -> Any:
    """Parse a JSON command-line value; a clear usage error naming ``name`` otherwise."""
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=name) from None


def parse_retry_policy(value: str | None, name: str = "--retry-policy") -> Any:
    """A :class:`~buquet.RetryPolicy` from a JSON option, or ``None``; a usage error
    naming the option and the field otherwise (checked before anything is written)."""
    from .errors import ValidationError
    from .models import RetryPolicy

    if value is None:
        return None
    try:
        return RetryPolicy.from_dict(parse_json_option(value, name))
    except (ValidationError, TypeError) as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


def check(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a validation function before connecting; its ValidationError becomes a
    usage error (exit 2)."""
    from .errors import ValidationError

    try:
        return fn(*args, **kwargs)
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from None


def stdout_is_tty() -> bool:
    import sys

    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> str:
    """A table with a header row (rich). On a terminal: a boxed header in colour, fitted
    to the terminal's width. Otherwise (a pipe, a file, a test): plain, stable text —
    no colour, no box characters, columns padded to their widest cell, never wrapped,
    no trailing spaces — so scripts can still ``grep``/``awk`` it."""
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table

    tty = stdout_is_tty()
    t = Table(box=box.SIMPLE_HEAD if tty else None, show_edge=False, pad_edge=False, title=title if tty else None,
              header_style="bold" if tty else "", padding=(0, 2, 0, 0) if not tty else (0, 1))
    for c in columns:
        t.add_column(c.upper(), no_wrap=True, overflow="ignore")
    for r in rows:
        t.add_row(*[("" if r.get(c) is None else str(r.get(c))) for c in columns])
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=tty, no_color=not tty, color_system="auto" if tty else None,
                      width=1_000_000, highlight=False, emoji=False, markup=False)
    if tty:  # the terminal's width, or the table's natural width when wider: cells never wrap
        import shutil

        natural = console.measure(t).maximum
        console.width = max(shutil.get_terminal_size((100, 24)).columns, natural)
    console.print(t)
    lines = [line.rstrip() for line in buf.getvalue().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not tty and title:
        lines.insert(0, title)
    return "\n".join(lines)


def progress(total: int | None = None, description: str = "") -> Any:
    """A rich progress display on stderr for a long operation: a bar when ``total`` is
    known, else a spinner with the elapsed time. Shown only when stderr is a terminal
    (stdout stays clean for ids/JSON). Use as ``with progress(n, "submitting") as (p, tid):
    p.advance(tid, k)``."""
    import contextlib
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    bar = Progress(*columns, console=Console(stderr=True), transient=True, disable=not tty,
                   redirect_stdout=False, redirect_stderr=False)

    @contextlib.contextmanager
    def cm() -> Any:
        with bar:
            yield bar, bar.add_task(description, total=total)

    return cm()


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str, name: str) -> float:
    """Seconds from a duration: a number with an optional unit ``s``/``m``/``h``/``d``/``w``
    (``90``, ``90s``, ``15m``, ``1.5h``, ``7d``, ``2w``; bare = seconds). A usage error
    naming ``name`` otherwise."""
    m = _DURATION.match(value)
    if m is None:
        raise click.BadParameter(
            f"{value!r} is not a duration: a number with an optional unit s, m, h, d or w (e.g. 30s, 15m, 2h, 7d)",
            param_hint=name)
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def echo_json(doc: Any, lines: bool = False) -> None:
    """Print ``doc`` as indented JSON (``lines=True``: a list as one compact object per line)."""
    if lines:
        for item in doc:
            click.echo(json.dumps(item, default=str))
    else:
        click.echo(json.dumps(doc, indent=2, default=str))


__all__ = ["open_queue", "run_async", "parse_json_option", "parse_retry_policy", "check", "table", "progress",
           "parse_duration", "echo_json"]


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """While inside, SIGTERM/SIGINT set ``stop`` (long-running commands then end
    cleanly with exit status 0); the handlers are removed on the way out. Call from the
    running event loop's thread."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def read_text_arg(path: str, param_hint: str) -> str:
    """The text of the file ``path`` (``-``: standard input), UTF-8; a usage error
    naming ``param_hint`` when it cannot be read."""
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise click.BadParameter(f"cannot read {path}: {reason}", param_hint=param_hint) from None


def task_doc(task: Any) -> dict[str, Any]:
    """A task as JSON for the CLI (``Task.to_dict()`` without its history, which
    ``buquet history`` shows)."""
    doc = task.to_dict()
    doc.pop("history", None)
    return doc
