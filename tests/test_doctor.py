"""``buquet doctor``: the checks on atomic stores (memory, local directory, SeaweedFS),
on a store that ignores conditional headers (a proxy stripping them in front of
SeaweedFS, and an in-memory one), on a racy in-memory store, and on an unreachable
endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from buquet import MemoryStore
from buquet.cli import cli
from buquet.doctor import run_doctor
from buquet.errors import ObjectNotFound, PreconditionFailed

REPO = Path(__file__).resolve().parent.parent


def checks_by_name(report_json: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report_json["checks"]}


# --------------------------------------------------------------- atomic stores
async def test_memory_store_passes_every_check() -> None:
    store = MemoryStore()
    report = await run_doctor(store, write_test=True, rounds=5, writers=6)
    statuses = {c.name: c.status for c in report.checks}
    assert statuses == {"configuration": "ok", "credentials & bucket": "ok", "listing": "ok", "clock": "ok",
                        "conditional writes": "ok", "cleanup": "ok"}, report.checks
    race = next(c for c in report.checks if c.name == "conditional writes")
    assert race.data["passed"] == 5 and race.data["writers"] == 6
    assert report.ok
    # cost: 5 rounds x (2 x 6 PUT + 2 GET), + 5 listing PUTs + 4 probe PUTs, 1 GET config, 3 LIST, 1 delete
    assert report.requests == {"put": 5 * 12 + 9, "get": 5 * 2 + 1, "list": 3, "delete_many": 1}
    assert await store.list("") == []  # scratch objects deleted


def test_local_dir_passes_through_the_cli(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    r = CliRunner().invoke(cli, ["--local-dir", str(bucket), "doctor", "--write-test", "--rounds", "4", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["ok"] is True
    checks = checks_by_name(report)
    assert checks["conditional writes"]["data"]["passed"] == 4
    assert checks["configuration"]["data"]["local_dir"]["source"] == "--local-dir"
    assert report["requests"]["put"] == 4 * 16 + 9
    assert not [p for p in bucket.rglob("*") if p.is_file() and p.name != ".lock"]  # nothing left behind


def test_read_only_run_writes_nothing_and_says_the_race_was_skipped(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    r = CliRunner().invoke(cli, ["--local-dir", str(bucket), "doctor"])
    assert r.exit_code == 0, r.output
    assert "skip" in r.output and "--write-test" in r.output
    assert "should not trust" in r.output
    assert not bucket.exists() or not [p for p in bucket.rglob("*") if p.is_file() and p.name != ".lock"]


# --------------------------------------------------------- stores that are not
class IgnoringStore(MemoryStore):
    """Drops the conditions, as GCS's S3 API and Garage do."""

    async def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        return await super().put(key, data)


class RacyStore(MemoryStore):
    """Checks conditions, then yields before writing (a check-then-write store) on the
    race keys of the rounds in ``racy_rounds``; atomic elsewhere."""

    def __init__(self, racy_rounds: set[int]) -> None:
        super().__init__()
        self.racy = {f"race/{r:04d}" for r in racy_rounds}

    async def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        if not any(key.endswith(k) for k in self.racy) or not (if_match or if_none_match):
            return await super().put(key, data, if_match=if_match, if_none_match=if_none_match)
        try:
            current = (await self.head(key)).etag
        except ObjectNotFound:
            current = None
        if (if_none_match and current is not None) or (if_match and current != if_match):
            raise PreconditionFailed("precondition failed", key)
        await asyncio.sleep(0.001)  # every racer passes the check before anyone writes
        return await super().put(key, data)


async def test_store_ignoring_conditional_headers_fails() -> None:
    report = await run_doctor(IgnoringStore(), write_test=True, rounds=3)
    race = next(c for c in report.checks if c.name == "conditional writes")
    assert race.status == "fail" and "ignores conditional headers" in race.detail
    assert "If-None-Match and If-Match" in race.detail
    assert race.suggestion and "AWS S3" in race.suggestion
    assert not report.ok
    assert report.requests["put"] == 9  # the probe found it: no race
    assert next(c for c in report.checks if c.name == "cleanup").status == "ok"


async def test_two_winners_in_one_round_are_reported() -> None:
    store = RacyStore({3})
    report = await run_doctor(store, write_test=True, rounds=5, writers=4)
    race = next(c for c in report.checks if c.name == "conditional writes")
    assert race.status == "fail", race
    assert "let 4 writers win in round 3" in race.detail and "4/5 rounds passed" in race.detail
    assert race.data["mode"] == "multiple winners"
    assert {f["round"] for f in race.data["failures"]} == {3}
    assert await store.list("") == []


async def test_check_then_write_store_everyone_wins_every_round() -> None:
    report = await run_doctor(RacyStore({1, 2}), write_test=True, rounds=2, writers=3)
    race = next(c for c in report.checks if c.name == "conditional writes")
    assert race.status == "fail" and "ignores conditional headers under concurrency" in race.detail


class SkewedStore(MemoryStore):
    """A store whose own clock (its Date header) is ``skew`` seconds off."""

    def __init__(self, skew: float) -> None:
        super().__init__()
        self.skew = skew

    async def server_time(self):  # type: ignore[no-untyped-def]
        from datetime import datetime, timedelta, timezone

        return datetime.now(timezone.utc) + timedelta(seconds=self.skew)


@pytest.mark.parametrize("skew, status", [(0.2, "ok"), (-5.0, "warn"), (45.0, "fail")])
async def test_clock_skew_thresholds(skew: float, status: str) -> None:
    report = await run_doctor(SkewedStore(skew))  # read-only: the Date header alone
    clock = next(c for c in report.checks if c.name == "clock")
    assert clock.status == status, clock
    assert clock.data["skew_seconds"] == pytest.approx(skew, abs=0.2)
    if status != "ok":
        assert clock.suggestion and "NTP" in clock.suggestion
    assert report.ok is (status != "fail")


# ------------------------------------------------------------------ SeaweedFS
def _doctor_subprocess(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in ("S3_BUCKET", "S3_ENDPOINT", "S3_REGION", "BUQUET_LOCAL_DIR", "BUQUET_PREFIX"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "buquet", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def _settle(endpoint: str, bucket: str) -> None:
    """Wait for a new SeaweedFS bucket to take writes: its first PUT returns once the
    bucket's volume exists (s3-facts: racing writers were seen to both win on a bucket
    in its first seconds). Event-driven, no fixed sleep."""
    from tests._servers import s3_client

    s3_client(endpoint).put_object(Bucket=bucket, Key="settle", Body=b"x")
    s3_client(endpoint).delete_object(Bucket=bucket, Key="settle")


@pytest.mark.s3
def test_seaweedfs_passes_write_test(s3_endpoint: str, s3_bucket: str) -> None:
    _settle(s3_endpoint, s3_bucket)
    args = ("--endpoint", s3_endpoint, "--bucket", s3_bucket, "--region", "us-east-1",
            "doctor", "--write-test", "--rounds", "3", "--writers", "4", "--json")
    r = _doctor_subprocess(*args)
    report = json.loads(r.stdout)
    race = checks_by_name(report)["conditional writes"]
    if r.returncode != 0 and race["data"].get("mode") == "multiple winners":
        # SeaweedFS's known flaw (shared/notes/s3-facts.md), not ours: a settled bucket
        # has not shown it in hundreds of rounds; one more run must pass
        r = _doctor_subprocess(*args)
        report = json.loads(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    checks = checks_by_name(report)
    assert {n: c["status"] for n, c in checks.items()} == {
        "configuration": "ok", "credentials & bucket": "ok", "listing": "ok", "clock": "ok",
        "conditional writes": "ok", "cleanup": "ok"}
    assert abs(checks["clock"]["data"]["skew_seconds"]) < 1
    requests = dict(report["requests"])
    assert requests.pop("head_bucket") >= 1  # the clock; S3Store may send more to refine its offset
    assert requests == {"put": 3 * 8 + 9, "get": 3 * 2 + 1, "list": 3, "delete_many": 1}
    from tests._servers import s3_client

    left = s3_client(s3_endpoint).list_objects_v2(Bucket=s3_bucket, Prefix="_doctor/")
    assert left.get("KeyCount", 0) == 0


@pytest.mark.s3
def test_proxy_stripping_conditional_headers_fails(s3_endpoint: str, s3_bucket: str) -> None:
    from tests._faultproxy import FaultProxy

    _settle(s3_endpoint, s3_bucket)
    with FaultProxy(s3_endpoint, rates={}, strip_headers=("If-Match", "If-None-Match")) as proxy:
        r = _doctor_subprocess("--endpoint", proxy.endpoint, "--bucket", s3_bucket, "--region", "us-east-1",
                               "doctor", "--write-test", "--rounds", "3")
        assert proxy.stripped["If-None-Match"] >= 2 and proxy.stripped["If-Match"] >= 2
    assert r.returncode == 1, r.stdout + r.stderr
    assert "ignores conditional headers" in r.stdout
    assert "→ use a store with atomic conditional writes" in r.stdout
    assert "Traceback" not in r.stderr
    assert "cleanup" in r.stdout and "deleted" in r.stdout


def test_unreachable_endpoint_exits_1_with_one_readable_line() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = _doctor_subprocess("--endpoint", f"http://127.0.0.1:{port}", "--bucket", "nowhere", "doctor",
                           "--write-test", timeout=120)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr + r.stdout
    failing = [line for line in r.stdout.splitlines() if "FAIL" in line]
    assert len(failing) == 1 and "credentials & bucket" in failing[0] and "connection refused" in failing[0]
    assert "→ " in r.stdout  # a suggestion line


def test_nothing_configured_exits_1() -> None:
    r = _doctor_subprocess("doctor")
    assert r.returncode == 1 and "no queue store configured" in r.stdout and "Traceback" not in r.stderr
