"""Query-parameter parsing for the dashboard's routes.

Every parser raises :class:`BadParam` naming the parameter; the app turns it into a
400 page that says which parameter is wrong and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Mapping

from .. import _validate as v
from .._ids import check_task_id
from .._time import from_rfc3339
from ..errors import ValidationError
from ..models import TaskStatus

#: page sizes a task list accepts
MIN_PAGE_SIZE, MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE = 1, 200, 25
_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: choices the task list's "created" selector offers (any duration/RFC 3339 works)
SINCE_CHOICES = ("15m", "1h", "6h", "24h", "7d")


class BadParam(ValueError):
    """A query parameter that cannot be used.

    Attributes:
        name: the parameter's name (``"status"``, ``"limit"``, ...).
        reason: what is wrong, for people.
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"bad query parameter {name!r}: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """A task-list request, validated.

    Attributes:
        status: only tasks in this status, or ``None`` for all.
        task_type: only tasks of this type, or ``None``.
        shard: only this shard, or ``None`` for all shards.
        since: only tasks created at or after this time (aware UTC), or ``None``.
        until: only tasks created before this time (aware UTC), or ``None``.
        before: paging cursor: only tasks older than this task id (exclusive).
        limit: tasks per page, 1..200.
        raw: the parameters as given (non-empty ones), to rebuild links.
    """

    status: TaskStatus | None
    task_type: str | None
    shard: str | None
    since: datetime | None
    until: datetime | None
    before: str | None
    limit: int
    raw: dict[str, str]


def _time(name: str, value: str, now: datetime) -> datetime:
    """``15m``/``1h``/``2d`` (that long before ``now``) or an RFC 3339 time."""
    m = _DURATION.match(value)
    if m:
        return now - timedelta(seconds=int(m.group(1)) * _UNIT_SECONDS[m.group(2)])
    try:
        return from_rfc3339(value)
    except (ValueError, OverflowError):
        raise BadParam(name, f"must be a duration such as 15m, 1h, 7d or an RFC 3339 time, got {value!r}") from None


def parse_int(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    """An integer parameter in ``lo..hi`` (``default`` when absent or empty).

    Raises:
        BadParam: not an integer, or out of range.
    """
    text = (params.get(name) or "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadParam(name, f"must be an integer, got {text!r}") from None
    if not lo <= value <= hi:
        raise BadParam(name, f"must be between {lo} and {hi}, got {value}")
    return value


def parse_task_query(params: Mapping[str, str], shards: list[str], now: datetime) -> TaskQuery:
    """Validate the task list's query parameters.

    Args:
        params: the request's query parameters (``status``, ``type``, ``shard``,
            ``since``, ``until``, ``before``, ``limit``); empty values mean "any".
        shards: the bucket's shard names.
        now: the time relative durations count back from (aware UTC).

    Raises:
        BadParam: names the first bad parameter.
    """
    known = {"status", "type", "shard", "since", "until", "before", "limit"}
    raw = {k: params[k].strip() for k in known if params.get(k, "").strip()}
    status = None
    if "status" in raw:
        try:
            status = TaskStatus(raw["status"].lower())
        except ValueError:
            raise BadParam("status", f"must be one of {', '.join(s.value for s in TaskStatus)}; got {raw['status']!r}") from None
    task_type = raw.get("type")
    if task_type is not None:
        try:
            v.task_type(task_type)
        except ValidationError as exc:
            raise BadParam("type", exc.rule) from None
    shard = raw.get("shard")
    if shard is not None and shard not in shards:
        raise BadParam("shard", f"must be one of {', '.join(shards)}; got {shard!r}")
    since = _time("since", raw["since"], now) if "since" in raw else None
    until = _time("until", raw["until"], now) if "until" in raw else None
    before = None
    if "before" in raw:
        try:
            before = check_task_id(raw["before"], "before")
        except ValidationError as exc:
            raise BadParam("before", exc.rule) from None
    limit = parse_int(params, "limit", DEFAULT_PAGE_SIZE, MIN_PAGE_SIZE, MAX_PAGE_SIZE)
    return TaskQuery(status, task_type, shard, since, until, before, limit, raw)


def parse_task_id(value: str, name: str = "task_id") -> str:
    """A canonical task id. Raises BadParam naming ``name``."""
    try:
        return check_task_id(value, name)
    except ValidationError as exc:
        raise BadParam(name, exc.rule) from None


__all__ = ["BadParam", "TaskQuery", "parse_task_query", "parse_int", "parse_task_id", "SINCE_CHOICES",
           "DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE"]
