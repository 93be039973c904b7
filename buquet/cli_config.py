"""``buquet config show | validate | paths``, and the CLI's view of the configuration
files (global ``--profile`` / ``--config``; see :func:`buquet.load_config`)."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click

from . import config as cfg
from .cli_common import table
from .errors import ConfigurationError, ValidationError

if TYPE_CHECKING:
    from .worker import WorkerRunOptions

#: root options that are also configuration keys (flag → key)
_FLAG_KEYS = {"bucket": "bucket", "endpoint": "endpoint", "region": "region"}
#: ``buquet worker`` options a config file must not override when given on the command line
_WORKER_FLAGS = {
    "poll_interval_ms": ("polling",),
    "max_poll_interval_ms": ("polling",),
    "monitor_interval_seconds": ("monitor_check_interval_s",),
}


def context_config(ctx: click.Context) -> cfg.Config:
    """The configuration of this invocation (loaded once per command line): the
    root's ``--profile`` and ``--config``, the environment, and the ``--bucket``,
    ``--endpoint``, ``--region`` flags when given on the command line.

    Raises:
        ConfigurationError: a config file is not valid TOML or cannot be read.
        ValidationError: a bad value (names the key or environment variable).
    """
    root = ctx.find_root()
    obj: dict[str, Any] = root.obj if isinstance(root.obj, dict) else {}
    cached = obj.get("_config")
    if cached is not None:
        return cached
    overrides: dict[str, Any] = {}
    for param, key in _FLAG_KEYS.items():
        if root.get_parameter_source(param) == click.core.ParameterSource.COMMANDLINE and obj.get(param):
            overrides[key] = obj[param]
    loaded = cfg.load_config(obj.get("profile"), config_path=obj.get("config_path"), overrides=overrides)
    obj["_config"] = loaded
    return loaded


def checked_config(ctx: click.Context) -> cfg.Config:
    """:func:`context_config`, with a bad file or value turned into a clean ``Error: ...``
    and exit status 1."""
    try:
        return context_config(ctx)
    except (ConfigurationError, ValidationError) as exc:
        raise click.ClickException(str(exc)) from None


def worker_options(ctx: click.Context, options: WorkerRunOptions) -> WorkerRunOptions:
    """``buquet worker``'s options with the configuration applied
    (:func:`buquet.config.apply_worker_config`), except where a flag was given on the
    command line: flags > environment > profile > files > defaults.

    Raises:
        click.ClickException: a bad config file or value (exit status 1).
    """
    conf = checked_config(ctx)
    out = cfg.apply_worker_config(options, conf)
    for param, fields in _WORKER_FLAGS.items():
        if ctx.get_parameter_source(param) == click.core.ParameterSource.COMMANDLINE:
            out = replace(out, **{f: getattr(options, f) for f in fields})
    return out


def _load_or_exit(ctx: click.Context) -> cfg.Config:
    quiet = logging.getLogger("buquet.config")  # these commands print the warnings themselves
    was = quiet.disabled
    quiet.disabled = True
    try:
        return context_config(ctx)
    except (ConfigurationError, ValidationError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    finally:
        quiet.disabled = was


def _display(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@click.group(name="config")
def config_group() -> None:
    """Inspect the configuration: files, profile, environment (see --profile, --config)."""


@config_group.command(name="show")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    """The effective value of every setting and where it came from."""
    conf = _load_or_exit(ctx)
    defaults = {"region": "us-east-1"}
    rows = []
    for key in cfg.KEYS:
        value = conf.settings.get(key.name, defaults.get(key.name))
        rows.append((key.name, value, conf.origins.get(key.name, "default"), key.env))
    if as_json:
        doc = {
            "profile": conf.profile,
            "sources": conf.sources,
            "values": {name: {"value": value, "source": source, "env": env} for name, value, source, env in rows},
            "warnings": conf.warnings,
        }
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(table([{"key": name, "value": _display(value), "source": source, "env": env}
                      for name, value, source, env in rows], ["key", "value", "source", "env"],
                     title=f"buquet configuration (profile: {conf.profile or '[default]'})"))
    click.echo("files read: " + (", ".join(s for s in conf.sources if s not in ("env", "flags")) or "none"))
    for warning in conf.warnings:
        click.echo(f"warning: {warning}")


@config_group.command(name="validate")
@click.pass_context
def validate(ctx: click.Context) -> None:
    """Check the configuration (types, ranges, cross-key rules); exit 1 with the problems."""
    conf = _load_or_exit(ctx)
    problems = cfg.validate_config(conf)
    if problems:
        click.echo(f"Configuration has {len(problems)} problem(s):", err=True)
        for problem in problems:
            click.echo(f"  - {problem}", err=True)
        sys.exit(1)
    files = [s for s in conf.sources if s not in ("env", "flags")]
    click.echo(f"Configuration is valid (profile: {conf.profile or '[default]'}; "
               f"files: {', '.join(files) or 'none'})")


@config_group.command(name="paths")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.pass_context
def paths(ctx: click.Context, as_json: bool) -> None:
    """The config files looked at, weakest first, and whether each exists."""
    obj = ctx.find_root().obj or {}
    found = [(role, str(path), path.is_file()) for role, path in cfg.config_paths(obj.get("config_path"))]
    if as_json:
        click.echo(json.dumps([{"role": r, "path": p, "exists": e} for r, p, e in found], indent=2))
        return
    click.echo(table([{"role": r, "path": p, "exists": "yes" if e else "no"} for r, p, e in found],
                     ["role", "path", "exists"], title="buquet config files, weakest first"))
    click.echo("then: [profiles.<name>] over [default] (--profile / BUQUET_PROFILE), environment, flags")


__all__ = ["checked_config", "config_group", "context_config", "worker_options"]
