"""The storage port: a small async object-store interface that knows nothing about tasks.

Every backend (S3, local directory, in-memory) implements :class:`ObjectStore` with
S3 semantics:

* ``put`` returns the new object's ETag; ``if_none_match=True`` is S3's
  ``If-None-Match: *`` (create only), ``if_match=etag`` is S3's ``If-Match`` (replace
  only that version). A failed precondition raises
  :class:`~buquet.errors.PreconditionFailed` — including If-Match on a missing key,
  where AWS answers 404 and SeaweedFS 412.
* ``get``/``head`` raise :class:`~buquet.errors.ObjectNotFound` for a missing key.
* ``list`` returns keys under a prefix in ascending UTF-8 byte order, strictly after
  ``start_after``, at most ``limit`` of them (ListObjectsV2 ``StartAfter``/``MaxKeys``).
* ``delete`` of a missing key succeeds (S3 DeleteObject is idempotent).
"""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import AsyncIterator, Sequence

from ..errors import ObjectNotFound


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """Metadata of one stored object.

    Attributes:
        key: the object key.
        etag: the entity tag, quotes included as S3 returns it (``'"9e10..."'``).
        size: size in bytes.
        last_modified: aware UTC datetime of the last write, as the store reports it.
    """

    key: str
    etag: str
    size: int
    last_modified: datetime


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object's bytes with its metadata (see :class:`ObjectInfo`)."""

    info: ObjectInfo
    data: bytes

    @property
    def etag(self) -> str:
        """The object's ETag."""
        return self.info.etag


class ObjectStore(abc.ABC):
    """Async object store with S3 semantics (see the module docstring).

    Implementations count the requests they send in :attr:`request_counts` (a dict of
    operation name → count: ``put``, ``get``, ``head``, ``delete``, ``delete_many``,
    ``list``) so tests and benchmarks can check the per-task request budget.
    """

    def __init__(self) -> None:
        self.request_counts: dict[str, int] = {}

    def _count(self, op: str) -> None:
        self.request_counts[op] = self.request_counts.get(op, 0) + 1

    def total_requests(self, *, exclude: Sequence[str] = ()) -> int:
        """Total requests sent so far, leaving out the operations named in ``exclude``."""
        return sum(n for op, n in self.request_counts.items() if op not in exclude)

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """A short human-readable name of where the data lives (for logs and the CLI)."""

    @abc.abstractmethod
    async def get(self, key: str) -> StoredObject:
        """Read an object. Raises ObjectNotFound, StorageError."""

    @abc.abstractmethod
    async def head(self, key: str) -> ObjectInfo:
        """Read an object's metadata. Raises ObjectNotFound, StorageError."""

    @abc.abstractmethod
    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        """Write an object and return its new ETag.

        Args:
            key: object key.
            data: the full new content.
            if_match: only replace the object whose current ETag is this one.
            if_none_match: only create; fail if the key exists.

        Raises:
            PreconditionFailed: the condition did not hold; nothing was written.
            StorageError: any other failure.
        """

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Delete one object; a missing key is not an error. Raises StorageError."""

    @abc.abstractmethod
    async def delete_many(self, keys: Sequence[str]) -> None:
        """Delete many objects in as few requests as the backend allows (S3
        DeleteObjects takes 1,000 keys a request). Missing keys are not errors.
        Raises StorageError."""

    @abc.abstractmethod
    async def list(
        self, prefix: str, *, start_after: str | None = None, limit: int = 1000
    ) -> list[ObjectInfo]:
        """List up to ``limit`` objects whose key starts with ``prefix``, in ascending
        key order, strictly after ``start_after``. One S3 LIST request per 1,000 keys.
        Raises StorageError."""

    async def scan(self, prefix: str, page_size: int = 1000) -> AsyncIterator[list[ObjectInfo]]:
        """Every object under ``prefix``, in key order, one page (one LIST) at a time.
        Raises StorageError."""
        start_after: str | None = None
        while True:
            page = await self.list(prefix, start_after=start_after, limit=page_size)
            if page:
                yield page
            if len(page) < page_size:
                return
            start_after = page[-1].key

    async def get_many(self, keys: Sequence[str], concurrency: int = 16) -> list[StoredObject | None]:
        """GET each key, ``concurrency`` requests in flight; ``None`` for a missing key.
        Results are in the order of ``keys``. Raises StorageError."""
        sem = asyncio.Semaphore(concurrency)

        async def one(key: str) -> StoredObject | None:
            async with sem:
                try:
                    return await self.get(key)
                except ObjectNotFound:
                    return None

        return list(await asyncio.gather(*(one(k) for k in keys)))

    async def server_time(self) -> datetime | None:
        """The store's own clock as an aware UTC datetime, or ``None`` when the backend
        has no clock of its own (the caller then uses the local clock). S3 reads it
        from a response ``Date`` header; this must not write anything."""
        return None

    async def close(self) -> None:
        """Release connections and files. Idempotent."""


def quote_etag(raw: str) -> str:
    """Return ``raw`` as S3 shows ETags: wrapped in double quotes."""
    return raw if raw.startswith('"') or raw.startswith('W/') else f'"{raw}"'
