"""Cron schedules (issue 3): stored schedule definitions and the Queue methods for them."""

from __future__ import annotations


class SchedulesMixin:
    """Schedule methods of :class:`~buquet.Queue` (filled in by the schedules work)."""
