"""Input validation shared by the queue, schedules and CLI. Internal.

Every check raises :class:`~buquet.errors.ValidationError` naming the field, before
anything is written.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ._ids import check_task_id
from .config import MAX_RETRIES_LIMIT, MAX_TIMEOUT_SECONDS
from .errors import ValidationError

TASK_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
__all__ = ["MAX_RETRIES_LIMIT", "MAX_TIMEOUT_SECONDS", "check_task_id", "task_type", "task_id", "name",
           "json_value", "int_in_range"]


def task_type(value: Any, field: str = "task_type") -> str:
    """A task type: 1–128 characters of letters, digits and ``_ . : -``, starting with a
    letter or digit (it becomes part of object keys)."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    if not value:
        raise ValidationError(field, "must not be empty")
    if not TASK_TYPE_RE.match(value):
        raise ValidationError(
            field,
            f"{value!r} must be 1-128 characters of letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or digit",
        )
    return value


def task_id(value: Any, field: str = "task_id") -> str:
    """A task id: a UUID string (returned in canonical lowercase form)."""
    return check_task_id(value, field)


def name(value: Any, field: str) -> str:
    """A worker id, schedule id or similar name that ends up in object keys."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValidationError(
            field,
            f"must be 1-128 characters of letters, digits, '_', '.' or '-', starting with a "
            f"letter or digit, got {value!r}",
        )
    return value


def _check_json(value: Any, path: str, depth: int) -> None:
    if depth > 100:
        raise ValidationError(path, "nested deeper than 100 levels")
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(path, f"{value!r} is not valid JSON (NaN and infinities are not)")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise ValidationError(path, f"object keys must be strings, got {k!r}")
            _check_json(item, f"{path}.{k}", depth + 1)
        return
    raise ValidationError(path, f"{type(value).__name__} is not JSON-serializable")


def json_value(value: Any, field: str) -> str:
    """Check that ``value`` is plain JSON (dict/list/str/int/float/bool/None, finite
    numbers, string keys) and return its compact encoding."""
    _check_json(value, field, 0)
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def int_in_range(value: Any, field: str, lo: int, hi: int) -> int:
    """An int (not a bool) with ``lo <= value <= hi``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ValidationError(field, f"must be between {lo} and {hi}, got {value}")
    return value
