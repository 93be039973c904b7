"""The buquet web dashboard: ``buquet serve`` (alias ``buquet dashboard``).

A Starlette + Jinja2 application served by uvicorn. Read-only unless started with
``--allow-actions``. Needs the ``dashboard`` extra (``pip install 'buquet[dashboard]'``).
See ``docs/dashboard.md`` for the pages and what each costs in S3 requests.
"""

from __future__ import annotations

from typing import Any


def create_app(*args: Any, **kwargs: Any) -> Any:
    """:func:`buquet.dashboard.app.create_app` (imported lazily: Starlette is optional)."""
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = ["create_app"]
