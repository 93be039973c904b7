"""Task ids: canonical RFC 9562 UUID strings, version 7 (time-ordered).

A new id is ``xxxxxxxx-xxxx-7xxx-yxxx-xxxxxxxxxxxx``: 48 bits of Unix milliseconds, the
version nibble ``7``, 12 random bits, the variant bits ``10`` and 62 random bits, as
lowercase hex. Ids of one shard therefore sort by creation time, as object keys do.
The shard of a task is derived from the id's last 48 random bits, so any client can
find a task from its id alone.

Internal module; the public surface is ``Queue.submit`` (which returns the id) and
``Queue.get`` (which validates it).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

from .errors import ValidationError

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _format(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _uuid7(unix_ms: int, rand_a: int, rand_b: int) -> str:
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (rand_a & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand_b & ((1 << 62) - 1)
    return _format(value)


def new_task_id(unix_ms: int) -> str:
    """A fresh UUIDv7 string for a task created at ``unix_ms`` (epoch milliseconds)."""
    return _uuid7(unix_ms, secrets.randbits(12), secrets.randbits(62))


def derived_task_id(unix_ms: int, *material: str) -> str:
    """A deterministic UUIDv7 string: the time field from ``unix_ms``, the random
    fields from a SHA-256 of ``material``. Every caller with the same material gets the
    same id (cron slots: each scheduler that submits a slot writes the same task)."""
    digest = int.from_bytes(hashlib.sha256("\0".join(material).encode()).digest()[:10], "big")
    return _uuid7(unix_ms, digest >> 68, digest)


def is_task_id(value: Any) -> bool:
    """True for a canonical (lowercase, hyphenated) UUID string."""
    return isinstance(value, str) and _UUID_RE.match(value) is not None


def check_task_id(value: Any, field: str = "task_id") -> str:
    """Validate a task id and return it in canonical form (upper-case hex accepted).

    Raises:
        ValidationError: not a UUID string such as
            ``0193a4f2-7c1e-7d2a-9b3c-4d5e6f708192`` (names ``field``).
    """
    if isinstance(value, str):
        lowered = value.strip().lower()
        if _UUID_RE.match(lowered):
            return lowered
    raise ValidationError(
        field, f"Invalid UUID: {value!r} (a task id is a UUID string such as '0193a4f2-7c1e-7d2a-9b3c-4d5e6f708192')"
    )


def id_floor(unix_ms: int) -> str:
    """The first 13 characters of a UUIDv7 task id created at ``unix_ms`` (its 48-bit
    millisecond time in hex, hyphenated): every id created at or after that time sorts
    after it, every earlier id before it (so a LIST's ``StartAfter`` can start there)."""
    h = f"{max(0, unix_ms):012x}"
    return f"{h[:8]}-{h[8:]}"


def shard_index(task_id: str, shard_count: int) -> int:
    """The shard number of a (canonical) task id: its last 48 bits modulo ``shard_count``."""
    return int(task_id[-12:], 16) % shard_count


def shard_names(shard_count: int) -> list[str]:
    """The shard names of a bucket: shard numbers in lowercase hex, zero-padded to one
    width — ``"0"``…``"3"`` for 4 shards, ``"0"``…``"f"`` for 16, ``"00"``…``"ff"`` for
    256. With ``16**N`` shards a task's shard is the last ``N`` hex digits of its id."""
    width = max(1, len(f"{shard_count - 1:x}"))
    return [f"{i:0{width}x}" for i in range(shard_count)]
