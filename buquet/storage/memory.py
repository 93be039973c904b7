"""In-memory object store with S3 semantics, for tests (yours and ours).

ETags are content MD5s in quotes like S3's, conditional writes are atomic (the event
loop runs each call without interleaving), listings are sorted and paged, missing keys
raise :class:`~buquet.errors.ObjectNotFound`.
"""

from __future__ import annotations

import bisect
import hashlib
from datetime import datetime, timezone
from typing import Sequence

from ..errors import ObjectNotFound, PreconditionFailed
from .base import ObjectInfo, ObjectStore, StoredObject, quote_etag


class MemoryStore(ObjectStore):
    """Objects in a dict; one instance is one bucket. Share the instance between queues,
    workers and schedulers in one process to let them see the same bucket."""

    def __init__(self) -> None:
        super().__init__()
        self._objects: dict[str, StoredObject] = {}
        self._keys: list[str] = []  # kept sorted for listing

    @property
    def description(self) -> str:
        return "memory://"

    def keys(self) -> list[str]:
        """Every key currently stored, sorted (a test helper; sends no request)."""
        return list(self._keys)

    async def get(self, key: str) -> StoredObject:
        self._count("get")
        try:
            return self._objects[key]
        except KeyError:
            raise ObjectNotFound(f"no object at {key!r}", key) from None

    async def head(self, key: str) -> ObjectInfo:
        self._count("head")
        try:
            return self._objects[key].info
        except KeyError:
            raise ObjectNotFound(f"no object at {key!r}", key) from None

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        self._count("put")
        current = self._objects.get(key)
        if if_none_match and current is not None:
            raise PreconditionFailed(f"{key!r} already exists", key)
        if if_match is not None and (current is None or current.etag != if_match):
            raise PreconditionFailed(f"{key!r} changed or is missing", key)
        etag = quote_etag(hashlib.md5(data).hexdigest())
        info = ObjectInfo(key, etag, len(data), datetime.now(timezone.utc))
        if current is None:
            bisect.insort(self._keys, key)
        self._objects[key] = StoredObject(info, bytes(data))
        return etag

    def _remove(self, key: str) -> None:
        if self._objects.pop(key, None) is not None:
            i = bisect.bisect_left(self._keys, key)
            del self._keys[i]

    async def delete(self, key: str) -> None:
        self._count("delete")
        self._remove(key)

    async def delete_many(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), 1000):
            self._count("delete_many")
            for key in keys[start : start + 1000]:
                self._remove(key)

    async def list(
        self, prefix: str, *, start_after: str | None = None, limit: int = 1000
    ) -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        lo = bisect.bisect_left(self._keys, prefix)
        if start_after is not None and start_after >= prefix:
            lo = bisect.bisect_right(self._keys, start_after)
        self._count("list")
        for key in self._keys[lo:]:
            if not key.startswith(prefix):
                break
            if len(out) >= limit:
                break
            if len(out) and len(out) % 1000 == 0:
                self._count("list")
            out.append(self._objects[key].info)
        return out
