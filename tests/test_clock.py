"""The store's clock on S3: the Date header's whole seconds are refined, in the
background, to about a round trip by watching the header tick (SeaweedFS runs on this
machine, so the true offset to the local clock is ~0)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from buquet.storage import s3 as s3mod


@pytest.mark.s3
async def test_the_server_clock_is_refined_to_within_a_round_trip(s3_queue_factory) -> None:  # type: ignore[no-untyped-def]
    q = await s3_queue_factory()
    key = q.store._clock_key  # noqa: SLF001 - the module-level caches are keyed by (endpoint, bucket)
    s3mod._refined_offsets.pop(key, None)  # noqa: SLF001
    s3mod._clock_offsets.pop(key, None)  # noqa: SLF001
    coarse = (await q.protocol.time() - datetime.now(timezone.utc)).total_seconds()  # starts the refinement
    task = s3mod._refining[key]  # noqa: SLF001
    await asyncio.wait_for(asyncio.shield(task), timeout=10)
    assert key in s3mod._refined_offsets, "the Date header never ticked within 60 probes"  # noqa: SLF001
    heads = q.store.request_counts["head_bucket"]
    assert 2 <= heads <= 62
    offsets = []
    for _ in range(5):
        offsets.append(abs((await q.protocol.time() - datetime.now(timezone.utc)).total_seconds()))
    assert max(offsets) < 0.15, offsets  # the coarse estimate alone is off by up to 1 s
    refined = s3mod._refined_offsets[key][0].total_seconds()  # noqa: SLF001
    # the coarse offset is taken at the start of the Date second: switching to the refined
    # one moves the clock forward (never back: nothing due becomes not-due)
    assert refined >= coarse - 0.05, (coarse, refined)
    assert q.store.request_counts["head_bucket"] == heads  # refined: no further requests
