"""``buquet serve`` (alias ``buquet dashboard``): the web dashboard (``buquet.dashboard``).

Needs the ``dashboard`` extra (Starlette, Jinja2, uvicorn, python-multipart); the
command says so, with the pip line, when it is missing.
"""

from __future__ import annotations

import click

from .cli_common import open_queue


def _make_command(name: str, help_text: str) -> click.Command:
    @click.command(name=name, help=help_text)
    @click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
    @click.option("--port", type=click.IntRange(0, 65535), default=3000, show_default=True, help="TCP port.")
    @click.option("--allow-actions", is_flag=True,
                  help="Offer cancel/retry/archive/delete and schedule enable/disable/trigger "
                       "(otherwise read-only: actions answer 403).")
    @click.option("--sample-seconds", type=click.FloatRange(0, 3600), default=10.0, show_default=True,
                  help="Sample workers' counters for the throughput chart this often (1 LIST + 1 GET per "
                       "worker each time); 0 = only when the overview is viewed.")
    @click.pass_context
    def command(ctx: click.Context, host: str, port: int, allow_actions: bool, sample_seconds: float) -> None:
        try:
            import uvicorn

            from .dashboard.app import create_app
        except ImportError as exc:
            raise click.ClickException(
                f"the dashboard needs the 'dashboard' extra ({exc.name} is missing): pip install 'buquet[dashboard]'"
            ) from None

        async def factory():  # type: ignore[no-untyped-def]
            return await open_queue(ctx, read_only=True)

        app = create_app(factory, allow_actions=allow_actions, sample_seconds=sample_seconds or None)
        mode = "actions enabled" if allow_actions else "read-only"
        click.echo(f"buquet dashboard on http://{host}:{port}/ ({mode}); Ctrl-C stops it", err=True)
        if allow_actions and host not in ("127.0.0.1", "localhost", "::1"):
            click.echo("warning: actions are enabled on a non-loopback interface and there is no login; "
                       "put an authenticating proxy in front of it", err=True)
        uvicorn.run(app, host=host, port=port, log_level="warning")

    return command


serve = _make_command("serve", "Serve the web dashboard (read-only unless --allow-actions).")
dashboard = _make_command("dashboard", "Same as 'serve': the web dashboard.")

COMMANDS = [serve, dashboard]

__all__ = ["COMMANDS", "serve", "dashboard"]
