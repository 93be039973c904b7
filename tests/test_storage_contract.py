"""One contract, three backends: memory, local directory, SeaweedFS (real S3 server)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from buquet.errors import ObjectNotFound, PreconditionFailed
from buquet.storage.base import ObjectStore


async def test_put_get_roundtrip_with_etag(any_store: ObjectStore) -> None:
    etag = await any_store.put("a/one", b"hello")
    obj = await any_store.get("a/one")
    assert obj.data == b"hello"
    assert obj.etag == etag and etag.startswith('"')
    info = await any_store.head("a/one")
    assert info.size == 5 and info.etag == etag


async def test_missing_key_raises_not_found(any_store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        await any_store.get("nope/x")
    with pytest.raises(ObjectNotFound):
        await any_store.head("nope/x")


async def test_if_none_match_creates_once(any_store: ObjectStore) -> None:
    await any_store.put("k", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        await any_store.put("k", b"second", if_none_match=True)
    assert (await any_store.get("k")).data == b"first"


async def test_if_match_replaces_only_the_named_version(any_store: ObjectStore) -> None:
    e1 = await any_store.put("k", b"v1")
    e2 = await any_store.put("k", b"v2", if_match=e1)
    assert e2 != e1
    with pytest.raises(PreconditionFailed):
        await any_store.put("k", b"v3", if_match=e1)  # stale ETag
    assert (await any_store.get("k")).data == b"v2"


async def test_if_match_on_missing_key_is_precondition_failed(any_store: ObjectStore) -> None:
    with pytest.raises(PreconditionFailed):
        await any_store.put("missing", b"x", if_match='"0123456789abcdef0123456789abcdef"')
    with pytest.raises(ObjectNotFound):
        await any_store.get("missing")


async def test_list_is_sorted_prefixed_paged(any_store: ObjectStore) -> None:
    keys = [f"p/{i:03d}" for i in (5, 1, 3, 2, 4)]
    for k in keys:
        await any_store.put(k, b"")
    await any_store.put("other/1", b"")
    await any_store.put("p", b"")  # not under "p/"
    listed = [i.key for i in await any_store.list("p/")]
    assert listed == sorted(keys)
    assert [i.key for i in await any_store.list("p/", limit=2)] == ["p/001", "p/002"]
    assert [i.key for i in await any_store.list("p/", start_after="p/003")] == ["p/004", "p/005"]
    assert await any_store.list("empty/") == []


async def test_delete_is_idempotent_and_batched(any_store: ObjectStore) -> None:
    for i in range(5):
        await any_store.put(f"d/{i}", b"x")
    await any_store.delete("d/0")
    await any_store.delete("d/0")  # missing: no error
    await any_store.delete_many(["d/1", "d/2", "d/never"])
    assert [i.key for i in await any_store.list("d/")] == ["d/3", "d/4"]


async def test_server_time_is_close_to_now(any_store: ObjectStore) -> None:
    t = await any_store.server_time()
    if t is not None:  # memory/local have no clock of their own
        assert abs(t - datetime.now(timezone.utc)) < timedelta(seconds=5)


@pytest.mark.parametrize("backend", ["memory", "local"])
async def test_concurrent_if_none_match_has_one_winner(backend: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Only on stores atomic by construction: SeaweedFS and moto have been seen to let two
    # racing conditional writers win (shared/notes/s3-facts.md); AWS S3 documents atomicity.
    from buquet import LocalStore, MemoryStore

    store: ObjectStore = MemoryStore() if backend == "memory" else LocalStore(tmp_path)

    async def attempt(i: int) -> bool:
        try:
            await store.put("race", str(i).encode(), if_none_match=True)
            return True
        except PreconditionFailed:
            return False

    wins = await asyncio.gather(*(attempt(i) for i in range(8)))
    assert sum(wins) == 1
