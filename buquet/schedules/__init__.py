"""Cron schedules: definitions, run state and the per-slot ledger, all in the bucket.

A schedule turns a 5-field cron expression, evaluated in an IANA time zone, into
*slots*: the UTC instants at which it should run. The scheduler
(:mod:`buquet.scheduler`) submits one task per slot. See ``docs/schedules.md``.

* :mod:`.cron` — the pure slot arithmetic (validation, daylight-saving rules, the
  catch-up plan); no storage, no I/O.
* :mod:`.model` — :class:`Schedule`, :class:`ScheduleLastRun`, :class:`CatchUp` and the
  stored run state.
* :mod:`.store` — :class:`ScheduleStore`: the definitions, run state and ledger in the
  bucket; :class:`~buquet.Queue`'s schedule methods delegate to it.
"""

from .cron import DEFAULT_MISFIRE_GRACE_SECONDS, MAX_CATCH_UP_LIMIT, check_timezone, normalize_cron
from .model import CatchUp, Schedule, ScheduleLastRun
from .store import DEFAULT_RECOVERY_SECONDS, LEDGER_RETENTION, ScheduleStore

__all__ = [
    "DEFAULT_MISFIRE_GRACE_SECONDS",
    "DEFAULT_RECOVERY_SECONDS",
    "LEDGER_RETENTION",
    "MAX_CATCH_UP_LIMIT",
    "CatchUp",
    "Schedule",
    "ScheduleLastRun",
    "ScheduleStore",
    "check_timezone",
    "normalize_cron",
]
