"""Time helpers: RFC 3339 formatting/parsing and epoch milliseconds. Internal."""

from __future__ import annotations

from datetime import datetime, timezone

from .errors import ValidationError


def utcnow() -> datetime:
    """The local clock as an aware UTC datetime."""
    return datetime.now(timezone.utc)


def to_rfc3339(dt: datetime) -> str:
    """``2026-11-29T16:20:00.123Z`` (UTC, millisecond precision)."""
    if dt.utcoffset():
        dt = dt.astimezone(timezone.utc)
    return (f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}."
            f"{dt.microsecond // 1000:03d}Z")


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
            parsed = from_rfc3339(value)
        except (ValueError, OverflowError):
            raise ValidationError(
                field, f"must be an RFC 3339 timestamp with a UTC offset, got {value!r}"
            ) from None
        return _in_range(field, parsed)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValidationError(field, "must be timezone-aware (naive datetimes are ambiguous)")
        try:
            utc = value.astimezone(timezone.utc)
        except OverflowError:
            raise ValidationError(field, f"{value.isoformat()} is after the year 9999 in UTC") from None
        return _in_range(field, utc)
    raise ValidationError(field, f"must be a datetime or RFC 3339 string, got {type(value).__name__}")


#: the latest time a task may be scheduled for (keys hold 15-digit epoch milliseconds)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)


def _in_range(field: str, dt: datetime) -> datetime:
    if dt > LATEST:
        raise ValidationError(field, f"{to_rfc3339(dt)} is later than {to_rfc3339(LATEST)}")
    return dt
