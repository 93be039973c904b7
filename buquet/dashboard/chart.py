"""Throughput over the last minutes, from workers' counters sampled in memory, drawn
as a small inline SVG on the server (no JavaScript, no external assets).

Each registered worker's registration carries its cumulative ``completed`` and
``failed`` counters and the time it was written (``last_seen_at``, every 10 s by
default). A worker's rate is the increase of those counters between its two latest
registrations divided by the time between them (a restarted worker — new
``started_at`` — counts from its start); a gone worker's rate is 0. A chart point is
the sum of the workers' rates when the sample was taken. Samples are taken when the
overview or workers page is viewed and, with ``create_app(sample_seconds=...)``
(``buquet serve`` does it every 10 s), in the background; they live in the server's
memory only (the last 30 minutes).
"""

from __future__ import annotations

import html
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

#: counters that mean "a task finished an attempt" in a worker registration
DONE_COUNTERS = ("completed", "failed")
#: samples older than this are dropped, seconds
WINDOW_SECONDS = 30 * 60


@dataclass(frozen=True, slots=True)
class Point:
    """One interval of the chart: its end time and the rate in tasks per second."""

    at: datetime
    per_second: float


class Throughput:
    """Worker-counter samples kept in memory; :meth:`points` gives the rates."""

    def __init__(self, window_seconds: float = WINDOW_SECONDS, min_gap_seconds: float = 1.0) -> None:
        self.window = window_seconds
        self.min_gap = min_gap_seconds
        # worker id -> (started_at, last_seen_at, finished total, rate per second)
        self._workers: dict[str, tuple[datetime, datetime, int, float]] = {}
        self._points: deque[Point] = deque()

    def add(self, at: datetime, workers: Iterable[Any]) -> None:
        """Record a sample at ``at`` (aware UTC) from ``Queue.workers()`` results
        (:class:`~buquet.WorkerInfo`: ``worker_id``, ``started_at``, ``last_seen_at``,
        ``counters``, ``alive``). A sample closer than ``min_gap_seconds`` to the
        previous point only updates the workers' rates."""
        seen: dict[str, tuple[datetime, datetime, int, float]] = {}
        for w in workers:
            total = sum(int(w.counters.get(c, 0)) for c in DONE_COUNTERS)
            prev = self._workers.get(w.worker_id)
            if prev is not None and prev[0] == w.started_at and w.last_seen_at <= prev[1]:
                rate = prev[3]  # no newer registration since the last sample
            elif prev is not None and prev[0] == w.started_at and total >= prev[2]:
                rate = (total - prev[2]) / max((w.last_seen_at - prev[1]).total_seconds(), 1e-3)
            else:  # first seen, or restarted: its average since it started
                rate = total / max((w.last_seen_at - w.started_at).total_seconds(), 1.0)
            seen[w.worker_id] = (w.started_at, w.last_seen_at, total, rate if w.alive else 0.0)
        self._workers = seen
        if self._points and (at - self._points[-1].at).total_seconds() < self.min_gap:
            return
        self._points.append(Point(at, sum(r for *_, r in seen.values())))
        while self._points and (at - self._points[0].at).total_seconds() > self.window:
            self._points.popleft()

    def points(self) -> list[Point]:
        """The rates measured in the window, oldest first."""
        return list(self._points)


def svg(points: list[Point], width: int = 560, height: int = 120) -> str:
    """An inline SVG line chart of ``points`` (tasks/s over time); a short note when
    there are fewer than two points. The result is safe HTML (all text escaped)."""
    if len(points) < 2:
        latest = f" Latest: {points[0].per_second:.2f} tasks/s." if points else ""
        return ('<p class="muted" id="throughput-empty">Not enough samples yet: the chart fills in while the '
                f"server runs (samples every few seconds, or on each view of this page).{html.escape(latest)}</p>")
    pad_l, pad_b, pad_t = 44, 18, 8
    t0, t1 = points[0].at, points[-1].at
    span = max((t1 - t0).total_seconds(), 1.0)
    top = max(max(p.per_second for p in points), 1.0)
    w, h = width - pad_l - 4, height - pad_b - pad_t

    def xy(p: Point) -> str:
        x = pad_l + w * (p.at - t0).total_seconds() / span
        y = pad_t + h * (1 - p.per_second / top)
        return f"{x:.1f},{y:.1f}"

    line = " ".join(xy(p) for p in points)
    last = points[-1].per_second
    label = html.escape(f"{top:.1f}/s")
    minutes = span / 60
    return (
        f'<svg id="throughput-chart" class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="tasks finished per second over the last {minutes:.0f} minutes; latest {last:.2f}/s">'
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + h}" class="axis"/>'
        f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" class="axis"/>'
        f'<text x="{pad_l - 4}" y="{pad_t + 10}" text-anchor="end">{label}</text>'
        f'<text x="{pad_l - 4}" y="{pad_t + h}" text-anchor="end">0</text>'
        f'<text x="{pad_l}" y="{height - 3}">{html.escape(t0.strftime("%H:%M:%S"))}</text>'
        f'<text x="{pad_l + w}" y="{height - 3}" text-anchor="end">{html.escape(t1.strftime("%H:%M:%S"))} UTC</text>'
        f'<polyline points="{line}" class="line"/></svg>'
    )


__all__ = ["Throughput", "Point", "svg", "DONE_COUNTERS"]
