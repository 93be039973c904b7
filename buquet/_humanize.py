"""Durations for people (the CLI tables and the dashboard): one way to say "how long"."""

from __future__ import annotations


def span(seconds: float | None, missing: str = "-") -> str:
    """A duration in the largest fitting unit: ``"0.4 s"``, ``"12 s"``, ``"3.5 min"``,
    ``"2.0 h"``, ``"5.0 d"``; ``missing`` for ``None``. Negative values count as 0."""
    if seconds is None:
        return missing
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f} s"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def ago(seconds: float | None, missing: str = "-") -> str:
    """``span(seconds) + " ago"``; ``missing`` for ``None``."""
    return missing if seconds is None else f"{span(seconds)} ago"
