"""Shared plumbing of the ``buquet`` command line: global options → Queue, asyncio glue."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Coroutine, TypeVar

import click

from .errors import BuquetError
from .queue import Queue, connect

T = TypeVar("T")


async def open_queue(ctx: click.Context, read_only: bool = False) -> Queue:
    """Build the Queue from the root command's options (``--bucket``, ``--endpoint``,
    ``--region``, ``--local-dir``, ``--prefix``), which default to the environment
    variables ``S3_BUCKET``, ``S3_ENDPOINT``, ``S3_REGION``, ``BUQUET_LOCAL_DIR``.

    ``read_only=True`` (inspection commands) never creates ``config.json`` in a fresh
    bucket or directory, so a mistyped location is not turned into a new queue.

    Raises:
        ConfigurationError: nothing configured.
    """
    root = ctx.find_root()
    opts: dict[str, Any] = root.obj or {}
    return await connect(
        endpoint=opts.get("endpoint"),
        bucket=opts.get("bucket"),
        region=opts.get("region"),
        local_dir=opts.get("local_dir"),
        prefix=opts.get("prefix") or "",
        read_only=read_only,
    )


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


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table with a header row, columns padded to their widest cell."""
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    for row in cells:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


__all__ = ["open_queue", "run_async", "parse_json_option", "parse_retry_policy", "check", "table"]
