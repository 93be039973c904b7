"""Conditional writes that survive lost responses: retry with the identical body,
recognise your own write.

A PUT whose response was lost (connection reset, timeout, a 5xx from a proxy after the
server applied it) *may have been applied*. Re-sending it conditionally can then fail
with 412 against our own write. So a write here is encoded once (:class:`~buquet._codec.
Encoded`, with its ``rev`` nonce) and, after any error, the object is re-read: if it
holds our ``rev``, the write landed; if it still holds the state we conditioned on,
the same body is sent again; otherwise someone else won and
:class:`~buquet.errors.PreconditionFailed` is raised.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ._codec import Encoded, rev_of
from .errors import CorruptObject, ObjectNotFound, PreconditionFailed, StorageError
from .storage.base import ObjectStore, StoredObject

log = logging.getLogger("buquet.protocol")

#: tries of one write (the first included) before a transient error is raised
WRITE_ATTEMPTS = 5
#: backoff between tries, seconds (doubles; ± nothing: few writers share a key)
WRITE_BACKOFF_SECONDS = 0.1


def is_transient(exc: BaseException) -> bool:
    """Is ``exc`` worth retrying (server error, throttling, connection trouble)?"""
    if isinstance(exc, (PreconditionFailed, ObjectNotFound, CorruptObject)):
        return False
    if isinstance(exc, StorageError):
        return bool(getattr(exc, "transient", True))
    return False


@dataclass(frozen=True, slots=True)
class Written:
    """The outcome of a resolved write: the object's new ETag, and whether an earlier
    send of the same body was found applied (``recovered``)."""

    etag: str
    recovered: bool = False


async def _read(store: ObjectStore, key: str) -> StoredObject | None:
    try:
        return await store.get(key)
    except ObjectNotFound:
        return None


async def put_resolved(
    store: ObjectStore,
    key: str,
    enc: Encoded,
    *,
    if_match: str | None = None,
    if_none_match: bool = False,
    own_revs: frozenset[str] = frozenset(),
) -> Written:
    """Write ``enc.body`` to ``key`` conditionally, resolving ambiguous outcomes.

    Args:
        store: the object store.
        key: object key.
        enc: the encoded document (sent byte-identical on every try).
        if_match: only replace the object with this ETag.
        if_none_match: only create.
        own_revs: revs of this writer's earlier writes to ``key`` whose outcome it has
            not seen (e.g. a heartbeat cancelled in flight). Finding one of them stored
            means the object still holds our own state: the write is re-sent against
            its ETag.

    Returns:
        :class:`Written` with the new ETag.

    Raises:
        PreconditionFailed: another writer changed (or created, or deleted) the object.
        StorageError: a non-transient error, or transient errors on every try.

    S3: one PUT on the happy path; after an error, one GET per try to resolve it.
    """
    delay = WRITE_BACKOFF_SECONDS
    last: StorageError | None = None
    for attempt in range(WRITE_ATTEMPTS):
        try:
            if if_none_match:
                return Written(await store.put(key, enc.body, if_none_match=True))
            if if_match is not None:
                return Written(await store.put(key, enc.body, if_match=if_match))
            return Written(await store.put(key, enc.body))
        except PreconditionFailed:
            pass  # maybe our own earlier try of this very write: look
        except StorageError as exc:
            if not is_transient(exc):
                raise
            last = exc
            log.debug("write of %s failed (try %d): %s; resolving", key, attempt + 1, exc)
        # What is stored now?
        try:
            current = await _read(store, key)
        except StorageError as exc:
            if not is_transient(exc):
                raise
            last = exc
            await asyncio.sleep(delay)
            delay *= 2
            continue
        stored_rev = rev_of(current.data) if current is not None else None
        if current is not None and stored_rev == enc.rev:
            return Written(current.etag, recovered=True)
        if if_none_match:
            if current is not None:
                raise PreconditionFailed(f"{key!r} already exists", key)
        elif if_match is not None:
            if current is None:
                raise PreconditionFailed(f"{key!r} is missing", key)
            if current.etag != if_match:
                if stored_rev is not None and stored_rev in own_revs:
                    if_match = current.etag  # our own earlier write landed: write over it
                else:
                    raise PreconditionFailed(f"{key!r} was changed by another writer", key)
        if last is not None and attempt < WRITE_ATTEMPTS - 1:
            await asyncio.sleep(delay)
            delay *= 2
    if last is not None:
        raise last
    raise PreconditionFailed(f"{key!r}: conditional write kept failing", key)
