"""Local-directory object store: the zero-setup backend for development and demos.

Each object is a file ``<root>/<key>.obj``; writes go to a temporary file and are
renamed into place, so readers never see half an object. Every write, conditional or
not, happens under an exclusive ``fcntl`` lock on ``<root>/.lock``, which makes
If-Match / If-None-Match atomic across all processes on one machine (not across
machines: use S3 for that). ETags are content MD5s in quotes, like S3's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import ObjectNotFound, PreconditionFailed, StorageError
from .base import ObjectInfo, ObjectStore, StoredObject, quote_etag

_SUFFIX = ".obj"

# errno → (hint, transient) for the one-line message of an OS error
_OS_HINTS: dict[int, tuple[str, bool]] = {
    errno.EACCES: ("permission denied — check the directory's owner and mode", False),
    errno.EPERM: ("operation not permitted — check the directory's owner and mode", False),
    errno.EROFS: ("the file system is read-only", False),
    errno.ENOSPC: ("the disk is full", False),
    errno.EDQUOT: ("disk quota exceeded", False),
    errno.ENOTDIR: ("a path component is a file, not a directory", False),
    errno.EEXIST: ("a file is in the way of a directory", False),
    errno.EISDIR: ("a directory is in the way of the object file", False),
    errno.ENAMETOOLONG: ("the key is too long for this file system", False),
    errno.EMFILE: ("too many open files — raise the limit (ulimit -n)", True),
    errno.ENFILE: ("too many open files system-wide", True),
    errno.EIO: ("I/O error — check the disk", False),
    errno.EAGAIN: ("resource temporarily unavailable — retry", True),
    errno.EBUSY: ("resource busy — retry", True),
    errno.EINTR: ("interrupted — retry", True),
    errno.ESTALE: ("stale file handle (network file system) — retry", True),
}


class LocalStore(ObjectStore):
    """A bucket in a local directory (created if missing).

    Args:
        root: directory that holds the bucket's objects.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__()
        self.root = Path(root).resolve()  # created by the first write, not before
        self._lock_path = self.root / ".lock"

    @property
    def description(self) -> str:
        return f"file://{self.root}"

    # -- helpers ---------------------------------------------------------------
    def _os_error(self, op: str, key: str | None, exc: OSError) -> StorageError:
        """``local <OP> <path> failed: <ERRNO>: <reason> (<hint>)``, one line."""
        path = exc.filename or (self.root / key if key else self.root)
        name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        reason = " ".join((exc.strerror or str(exc)).split())
        hint, transient = _OS_HINTS.get(exc.errno or 0, (None, False))
        message = f"local {op} {path} failed: {name}: {reason}" + (f" ({hint})" if hint else "")
        return StorageError(message, key, operation=op, bucket=str(self.root), code=name,
                            hint=hint, transient=transient)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in key:
            raise StorageError(f"key {key!r} cannot be stored in a local directory", key)
        return self.root.joinpath(*parts[:-1], parts[-1] + _SUFFIX)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def _info(key: str, data: bytes, mtime: float) -> ObjectInfo:
        return ObjectInfo(
            key,
            quote_etag(hashlib.md5(data).hexdigest()),
            len(data),
            datetime.fromtimestamp(mtime, timezone.utc),
        )

    def _read(self, key: str) -> StoredObject:
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
                mtime = os.fstat(fh.fileno()).st_mtime
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"no object at {key!r}", key) from None
        except OSError as exc:
            raise self._os_error("GET", key, exc) from exc
        return StoredObject(self._info(key, data, mtime), data)

    def _put(self, key: str, data: bytes, if_match: str | None, if_none_match: bool) -> str:
        path = self._path(key)
        try:
            with self._locked():
                if if_none_match or if_match is not None:
                    try:
                        current = self._read(key)
                    except ObjectNotFound:
                        current = None
                    if if_none_match and current is not None:
                        raise PreconditionFailed(f"{key!r} already exists", key)
                    if if_match is not None and (current is None or current.etag != if_match):
                        raise PreconditionFailed(f"{key!r} changed or is missing", key)
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
                try:
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(data)
                    os.replace(tmp, path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
        except (PreconditionFailed, StorageError):
            raise
        except OSError as exc:
            raise self._os_error("PUT", key, exc) from exc
        return quote_etag(hashlib.md5(data).hexdigest())

    def _delete(self, keys: Sequence[str]) -> None:
        key: str | None = keys[0] if keys else None
        try:
            with self._locked():
                for key in keys:
                    path = self._path(key)
                    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                        path.unlink()
                    # prune empty directories up to the root, best effort
                    parent = path.parent
                    while parent != self.root:
                        try:
                            parent.rmdir()
                        except OSError:
                            break
                        parent = parent.parent
        except StorageError:
            raise
        except OSError as exc:
            raise self._os_error("DELETE", key, exc) from exc

    def _list(self, prefix: str, start_after: str | None, limit: int) -> list[ObjectInfo]:
        base_parts = prefix.split("/")[:-1]
        base = self.root.joinpath(*base_parts) if base_parts else self.root
        keys: list[str] = []
        rel_root = len(str(self.root)) + 1

        def walk_error(exc: OSError) -> None:
            # a missing prefix directory is an empty listing; anything else is an error
            if not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                raise self._os_error("LIST", prefix, exc) from exc

        for dirpath, dirnames, filenames in os.walk(base, onerror=walk_error):
            for name in filenames:
                if not name.endswith(_SUFFIX) or name.startswith(".tmp-"):
                    continue
                full = os.path.join(dirpath, name)
                key = full[rel_root : -len(_SUFFIX)].replace(os.sep, "/")
                if key.startswith(prefix) and (start_after is None or key > start_after):
                    keys.append(key)
        keys.sort(key=lambda k: k.encode())
        out: list[ObjectInfo] = []
        for key in keys:
            if len(out) >= limit:
                break
            try:
                out.append(self._read(key).info)
            except ObjectNotFound:
                continue  # deleted while listing
        return out

    # -- port ------------------------------------------------------------------
    async def get(self, key: str) -> StoredObject:
        self._count("get")
        return await asyncio.to_thread(self._read, key)

    async def head(self, key: str) -> ObjectInfo:
        self._count("head")
        return (await asyncio.to_thread(self._read, key)).info

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        self._count("put")
        return await asyncio.to_thread(self._put, key, bytes(data), if_match, if_none_match)

    async def delete(self, key: str) -> None:
        self._count("delete")
        await asyncio.to_thread(self._delete, [key])

    async def delete_many(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        for start in range(0, len(keys), 1000):
            self._count("delete_many")
        await asyncio.to_thread(self._delete, list(keys))

    async def list(
        self, prefix: str, *, start_after: str | None = None, limit: int = 1000
    ) -> list[ObjectInfo]:
        self._count("list")
        return await asyncio.to_thread(self._list, prefix, start_after, limit)
