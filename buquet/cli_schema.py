"""``buquet schema publish|get|list|delete|validate``: task types' JSON Schemas
(:meth:`Queue.publish_schema` and friends; JSON Schema draft 2020-12).

``validate TYPE --input J`` (or ``--output J``) prints ``Input is valid`` or
``Validation failed:`` and one error per line, exit status 1.
"""

from __future__ import annotations

import json
from typing import Any

import click

from . import _validate as v
from .cli_common import check, open_queue, parse_json_option, read_text_arg, run_async


def _read_schema_file(path: str) -> Any:
    return parse_json_option(read_text_arg(path, "FILE"), "FILE")


@click.group("schema")
def schema_group() -> None:
    """Publish and check task types' JSON Schemas ({"input": ..., "output": ...}).

    Workers never validate on their own: handlers (or producers) call
    Queue.validate_input / validate_output with the published schema.
    """


@schema_group.command("publish")
@click.argument("task_type")
@click.argument("file", metavar="FILE")
@click.pass_context
def publish_cmd(ctx: click.Context, task_type: str, file: str) -> None:
    """Publish TASK_TYPE's schema from FILE (JSON; - = stdin), replacing any earlier one.
    Only its "input" and "output" keys are kept; each must be a valid schema."""
    from .schemas import normalize_schema

    check(v.task_type, task_type)
    doc = _read_schema_file(file)
    kept = check(normalize_schema, doc)  # a bad schema writes nothing, not even config.json

    async def go() -> None:
        q = await open_queue(ctx)
        async with q:
            await q.publish_schema(task_type, doc)
        click.echo(f"published schema for {task_type} ({', '.join(sorted(kept)) or 'no halves'})")

    run_async(go())


@schema_group.command("get")
@click.argument("task_type")
@click.pass_context
def get_cmd(ctx: click.Context, task_type: str) -> None:
    """Print TASK_TYPE's published schema as JSON (exit 1 if there is none)."""
    check(v.task_type, task_type)

    async def go() -> None:
        q = await open_queue(ctx, read_only=True)
        async with q:
            schema = await q.get_schema(task_type)
        if schema is None:
            raise click.ClickException(f"no schema published for {task_type}")
        click.echo(json.dumps(schema, indent=2))

    run_async(go())


@schema_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """List the task types that have a published schema."""
    async def go() -> None:
        q = await open_queue(ctx, read_only=True)
        async with q:
            names = await q.list_schemas()
        if as_json:
            click.echo(json.dumps(names))
        elif not names:
            click.echo("no schemas")
        else:
            for name in names:
                click.echo(name)

    run_async(go())


@schema_group.command("delete")
@click.argument("task_type")
@click.pass_context
def delete_cmd(ctx: click.Context, task_type: str) -> None:
    """Delete TASK_TYPE's schema (absent is fine)."""
    check(v.task_type, task_type)

    async def go() -> None:
        q = await open_queue(ctx)
        async with q:
            await q.delete_schema(task_type)
        click.echo(f"deleted schema for {task_type}")

    run_async(go())


@schema_group.command("validate")
@click.argument("task_type")
@click.option("--input", "input_json", default=None, help="JSON to check against the input schema.")
@click.option("--output", "output_json", default=None, help="JSON to check against the output schema.")
@click.pass_context
def validate_cmd(ctx: click.Context, task_type: str, input_json: str | None, output_json: str | None) -> None:
    """Check --input or --output JSON against TASK_TYPE's published schema: prints
    "Input is valid" (exit 0) or "Validation failed:" and the errors (exit 1)."""
    from .errors import SchemaValidationError
    from .schemas import validate_input, validate_output

    check(v.task_type, task_type)
    if (input_json is None) == (output_json is None):
        raise click.UsageError("give exactly one of --input and --output")
    half = "input" if input_json is not None else "output"
    data = parse_json_option(input_json if input_json is not None else output_json, f"--{half}")  # type: ignore[arg-type]

    async def go() -> Any:
        q = await open_queue(ctx, read_only=True)
        async with q:
            return await q.get_schema(task_type)

    schema = run_async(go())
    if schema is None:
        raise click.ClickException(f"no schema published for {task_type}")
    if half not in schema:
        click.echo(f"{half.capitalize()} is valid (the schema of {task_type} has no {half} part)")
        return
    try:
        (validate_input if half == "input" else validate_output)(schema, data)
    except SchemaValidationError as exc:
        click.echo("Validation failed:")
        for error in exc.errors:
            click.echo(f"  - {error}")
        raise SystemExit(1) from None
    click.echo(f"{half.capitalize()} is valid")


__all__ = ["schema_group"]
