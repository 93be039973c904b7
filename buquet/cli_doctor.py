"""``buquet doctor [--write-test] [--rounds N] [--writers N] [--json]``: check that the
configured store can run a queue (see :mod:`buquet.doctor` for the checks).

Exit status 0 when no check failed, 1 otherwise (also when the store cannot be
configured or reached); each failure or warning comes with a suggestion line.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from . import cli_common
from .doctor import DEFAULT_ROUNDS, DEFAULT_WRITERS, Check, DoctorReport, configuration_check, run_doctor
from .errors import ConfigurationError, StorageError

#: root options → environment variable behind each (``buquet/cli.py``)
_ENV = {"bucket": "S3_BUCKET", "endpoint": "S3_ENDPOINT", "region": "S3_REGION",
        "local_dir": "BUQUET_LOCAL_DIR", "prefix": "BUQUET_PREFIX"}
_STYLE = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "bold red"), "skip": ("-", "dim")}


def _settings(ctx: click.Context) -> list[tuple[str, str | None, str]]:
    """``(name, value, source)`` of the root command's store options: where each came
    from (a flag, an environment variable, a default)."""
    from click.core import ParameterSource

    root = ctx.find_root()
    opts: dict[str, Any] = root.obj or {}
    out: list[tuple[str, str | None, str]] = []
    for name, env in _ENV.items():
        value = opts.get(name)
        source = root.get_parameter_source(name) if name in root.params else None
        if source == ParameterSource.COMMANDLINE:
            where = "--" + name.replace("_", "-")
        elif source == ParameterSource.ENVIRONMENT:
            where = f"env {env}"
        elif source is None and value:
            where = "configuration"
        else:
            where = "default"
        out.append((name, value or None, where))
    return out


def _credentials(store: Any) -> tuple[str, str | None, str] | None:
    """Where an S3 store's credentials came from (boto3's credential chain), if S3."""
    session = getattr(store, "_session", None)
    if session is None:
        return None
    try:
        creds = session.get_credentials()
    except Exception:  # a broken profile: the reachability check will say more
        return ("credentials", "unreadable", "boto3 credential chain")
    if creds is None:
        return ("credentials", "none (unsigned requests)", "boto3 credential chain")
    return ("credentials", f"access key …{(creds.access_key or '')[-4:]}",
            f"boto3 credential chain: {getattr(creds, 'method', '?')}")


def _render(report: DoctorReport, write_test: bool) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(soft_wrap=True, highlight=False)
    console.print(f"[bold]buquet doctor[/bold] — {escape(report.store)}")
    width = max(len(c.name) for c in report.checks)
    for c in report.checks:
        mark, style = _STYLE[c.status]
        label = c.status.upper() if c.status == "fail" else c.status
        console.print(f" [{style}]{mark} {label:<4}[/{style}]  {c.name:<{width}}  {escape(c.detail)}")
        if c.suggestion and c.status in ("fail", "warn"):
            console.print(f"   {'':<4}  {'':<{width}}  [dim]→ {escape(c.suggestion)}[/dim]")
    if report.requests:
        names = {"put": "PUT", "get": "GET", "list": "LIST", "head": "HEAD", "head_bucket": "HEAD Bucket",
                 "delete": "DELETE", "delete_many": "DeleteObjects"}
        parts = ", ".join(f"{n} {names.get(op, op)}" for op, n in sorted(report.requests.items(), key=lambda kv: -kv[1]))
        console.print(f"requests sent: {parts} ({report.total_requests} in all)")
    failed = [c.name for c in report.checks if c.status == "fail"]
    if failed:
        console.print(f"[bold red]{len(failed)} check(s) failed:[/bold red] {', '.join(failed)}")
    elif not write_test:
        console.print("[yellow]read-only checks passed; run with --write-test before trusting this endpoint[/yellow]")
    else:
        console.print("[green]all checks passed[/green]")


@click.command()
@click.option("--write-test", is_flag=True,
              help="Also run the checks that write scratch objects (listing order, clock, the atomicity race); "
                   "they are deleted afterwards.")
@click.option("--rounds", type=click.IntRange(1, 1000), default=DEFAULT_ROUNDS, show_default=True,
              help="Rounds of the atomicity race.")
@click.option("--writers", type=click.IntRange(2, 64), default=DEFAULT_WRITERS, show_default=True,
              help="Concurrent conditional writers per race phase.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def doctor(ctx: click.Context, write_test: bool, rounds: int, writers: int, as_json: bool) -> None:
    """Check the configured store: configuration, credentials and bucket, listing order,
    clock skew and, with --write-test, whether concurrent conditional writes have
    exactly one winner. Exit status 1 if any check fails."""
    settings = _settings(ctx)

    async def go() -> DoctorReport:
        try:
            queue = await cli_common.open_queue(ctx, read_only=True)
        except ConfigurationError as exc:
            report = DoctorReport("(none)")
            report.checks.append(Check("configuration", "fail", str(exc),
                                       "pass --bucket/--endpoint or --local-dir, or set S3_BUCKET/S3_ENDPOINT "
                                       "or BUQUET_LOCAL_DIR"))
            return report
        except StorageError as exc:
            # connect() reads config.json first: this is the reachability check failing
            report = DoctorReport(_where(settings))
            report.checks.append(configuration_check(report.store, settings))
            report.checks.append(Check("credentials & bucket", "fail", str(exc),
                                       exc.hint or "check the endpoint, the bucket name and the credentials"))
            for name in ("listing", "clock", "conditional writes"):
                report.checks.append(Check(name, "skip", "not run: the store is not reachable"))
            return report
        async with queue:
            extra = _credentials(queue.store)
            try:
                return await run_doctor(
                    queue.store, prefix=queue.layout.prefix, config_key=queue.layout.config(),
                    settings=settings + ([extra] if extra else []),
                    write_test=write_test, rounds=rounds, writers=writers,
                    progress=_progress if sys.stderr.isatty() and not as_json else None,
                )
            finally:
                if sys.stderr.isatty() and not as_json and write_test:
                    sys.stderr.write("\r\033[K")

    report = cli_common.run_async(go())  # other buquet errors: "Error: ..." and exit 1
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _render(report, write_test)
    sys.exit(0 if report.ok else 1)


def _progress(done: int, total: int) -> None:
    """One overwritten line on a terminal's stderr while the race runs."""
    sys.stderr.write(f"\ratomicity race: round {done}/{total} ...")
    sys.stderr.flush()


def _where(settings: list[tuple[str, str | None, str]]) -> str:
    values = {name: value for name, value, _ in settings}
    if values.get("local_dir"):
        return f"file://{values['local_dir']}"
    return f"s3://{values.get('bucket')} ({values.get('endpoint') or 'aws'})"


__all__ = ["doctor"]
