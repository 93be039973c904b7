"""``buquet schedule …`` and ``buquet scheduler`` commands (issue 3)."""

from __future__ import annotations

import click


@click.group("schedule")
def schedule_group() -> None:
    """Create, inspect and control cron schedules."""
