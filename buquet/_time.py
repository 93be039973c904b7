"""Time helpers: RFC 3339 formatting/parsing and epoch milliseconds. Internal."""

from __future__ import annotations

from datetime import datetime, timezone

from .errors import ValidationError


def utcnow() -> datetime:
    """The local clock as an aware UTC datetime."""
    return datetime.now(timezone.utc)


def to_rfc3339(dt: datetime) -> str:
    """``2026-11-29T16:20:00.123Z`` (UTC, millisecond precision)."""
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def from_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (``Z`` or an offset) into an aware UTC datetime.
    Raises ValueError."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return dt.astimezone(timezone.utc)


def to_ms(dt: datetime) -> int:
    """Milliseconds since the Unix epoch."""
    return int(dt.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """Aware UTC datetime from epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def parse_when(field: str, value: datetime | str) -> datetime:
    """Accept an aware datetime or an RFC 3339 string with an offset; return aware UTC.

    Raises:
        ValidationError: naive datetimes, unparseable strings, other types.
    """
    if isinstance(value, str):
        try:
            return from_rfc3339(value)
        except ValueError:
            raise ValidationError(
                field, f"must be an RFC 3339 timestamp with a UTC offset, got {value!r}"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValidationError(field, "must be timezone-aware (naive datetimes are ambiguous)")
        return value.astimezone(timezone.utc)
    raise ValidationError(field, f"must be a datetime or RFC 3339 string, got {type(value).__name__}")
