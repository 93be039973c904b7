""":class:`StorageClient`: buquet 0.1.0's raw object access on the queue's bucket
(``Queue.storage``), for tools and for data that lives beside the queue.

Keys are bucket keys (the queue's key prefix is *not* added). Writes here bypass the
task protocol: never write under the queue's own directories (``tasks/``, ``ready/``,
``leases/``, ...) with it.
"""

from __future__ import annotations

from ..errors import ObjectNotFound, PreconditionFailed
from .base import ObjectStore


class StorageClient:
    """Byte-level access to one bucket.

    Args:
        store: the queue's object store.
    """

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    async def get(self, key: str) -> tuple[bytes, str]:
        """``(data, etag)`` of an object (1 GET; the ETag as the server gives it).

        Raises:
            ObjectNotFound: ``"Object not found: <key>"`` (also a ``RuntimeError``).
            StorageError: the store failed.
        """
        try:
            obj = await self._store.get(key)
        except ObjectNotFound:
            raise ObjectNotFound(f"Object not found: {key}", key) from None
        return obj.data, obj.etag

    async def put(self, key: str, data: bytes, if_match: str | None = None) -> str:
        """Write an object, only over the version with ETag ``if_match`` when given;
        returns the new ETag (1 PUT).

        Raises:
            PreconditionFailed: ``"Precondition failed for object: <key>"``.
            StorageError: the store failed.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        try:
            return await self._store.put(key, bytes(data), if_match=if_match)
        except PreconditionFailed:
            raise PreconditionFailed(f"Precondition failed for object: {key}", key) from None

    async def delete(self, key: str) -> None:
        """Delete an object; a missing one is fine (1 DELETE)."""
        await self._store.delete(key)

    async def list(self, prefix: str, start_after: str | None = None, limit: int = 1000) -> list[str]:
        """Keys under ``prefix`` in ascending order, strictly after ``start_after``, at
        most ``limit`` of them — pages past 1,000 (1 LIST per 1,000 keys)."""
        out: list[str] = []
        cursor = start_after
        while len(out) < limit:
            want = min(1000, limit - len(out))
            page = await self._store.list(prefix, start_after=cursor, limit=want)
            out.extend(info.key for info in page)
            if len(page) < want:
                break
            cursor = page[-1].key
        return out

    async def exists(self, key: str) -> bool:
        """Does the object exist? (1 HEAD)"""
        try:
            await self._store.head(key)
            return True
        except ObjectNotFound:
            return False
