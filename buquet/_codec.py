"""One codec for every JSON document buquet stores (tasks, schedules, run state, ledger).

Every write carries a fresh random ``rev`` nonce, so

* two writes never share an ETag even when their states are equal (``If-Match`` can
  never confuse them), and
* a writer whose response was lost can re-read the object and recognise its own write
  by the ``rev`` (the body of a retried write is byte-identical: it is encoded once).

Decoding checks the JSON and the fields' types; a bad object raises
:class:`~buquet.errors.CorruptObject` naming the key and the field.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from .errors import CorruptObject, ValidationError
from .models import Task

T = TypeVar("T")


def new_rev() -> str:
    """A fresh 16-hex-digit revision nonce."""
    return secrets.token_hex(8)


def encode(doc: dict[str, Any], rev: str | None = None) -> bytes:
    """Compact JSON of ``doc`` plus ``"rev"`` (a fresh nonce unless given)."""
    out = dict(doc)
    out["rev"] = rev or new_rev()
    return json.dumps(out, separators=(",", ":"), allow_nan=False).encode()


def decode_json(data: bytes, key: str) -> dict[str, Any]:
    """Parse a stored JSON object. Raises CorruptObject (field ``"json"``)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptObject(key, "json", f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise CorruptObject(key, "json", f"must be a JSON object, got {type(doc).__name__}")
    return doc


def rev_of(data: bytes) -> str | None:
    """The ``rev`` of a stored body, or ``None`` when it has none or is not JSON."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    rev = doc.get("rev") if isinstance(doc, dict) else None
    return rev if isinstance(rev, str) else None


def decode_with(data: bytes, key: str, build: Callable[[dict[str, Any]], T]) -> tuple[T, str | None]:
    """Decode a stored document with ``build`` (a ``from_dict``) and return it with its
    ``rev``. A ValidationError (or a stray TypeError/ValueError) from ``build`` becomes
    CorruptObject naming the key and the field."""
    doc = decode_json(data, key)
    try:
        value = build(doc)
    except ValidationError as exc:
        raise CorruptObject(key, exc.field, exc.rule) from None
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        raise CorruptObject(key, "document", f"{type(exc).__name__}: {exc}") from None
    rev = doc.get("rev")
    return value, rev if isinstance(rev, str) else None


@dataclass(frozen=True, slots=True)
class Encoded:
    """A document encoded once, to be written (and, if need be, re-sent) as is."""

    body: bytes
    rev: str


def encode_task(task: Task) -> Encoded:
    """Encode a task state with a fresh ``rev``."""
    rev = new_rev()
    return Encoded(encode(task.to_document(), rev), rev)


def decode_task(data: bytes, key: str) -> tuple[Task, str | None]:
    """Decode a stored task document: ``(task, rev)``. Raises CorruptObject."""
    return decode_with(data, key, Task.from_dict)
