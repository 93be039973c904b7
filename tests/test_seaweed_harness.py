"""The SeaweedFS test harness: the server starts, takes objects, and honours If-None-Match."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests._servers import s3_client, seaweed_endpoint, unique_bucket

pytestmark = pytest.mark.s3


def test_server_starts_and_stores_objects() -> None:
    endpoint = seaweed_endpoint()
    assert endpoint.startswith("http")
    bucket = unique_bucket(endpoint, prefix="harness")
    assert bucket.startswith("harness-")
    client = s3_client(endpoint)
    client.head_bucket(Bucket=bucket)  # exists (SeaweedFS's ListBuckets is empty without IAM)

    client.put_object(Bucket=bucket, Key="dir/hello.txt", Body=b"hello")
    got = client.get_object(Bucket=bucket, Key="dir/hello.txt")
    assert got["Body"].read() == b"hello"
    listed = client.list_objects_v2(Bucket=bucket, Prefix="dir/")
    assert [o["Key"] for o in listed.get("Contents", [])] == ["dir/hello.txt"]

    assert unique_bucket(endpoint, prefix="harness") != bucket


def test_put_if_none_match_on_existing_key_is_412() -> None:
    endpoint = seaweed_endpoint()
    bucket = unique_bucket(endpoint)
    client = s3_client(endpoint)

    client.put_object(Bucket=bucket, Key="k", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=bucket, Key="k", Body=b"second", IfNoneMatch="*")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first"


def test_cli_start_on_a_taken_port_fails_and_the_eval_fails_too(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import socket
    import subprocess
    import sys

    from tests._servers import SEAWEEDFS_SCRIPT

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, str(SEAWEEDFS_SCRIPT), "start", "--port", str(port), "--dir", str(tmp_path / "sw"),
               "--timeout", "20"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert r.returncode != 0
        assert "start failed" in r.stderr and f"port {port}" in r.stderr and "already in use" in r.stderr
        assert r.stdout.strip() == "false"  # not a terminal: what `eval "$(...)"` runs
        # the README's pattern: the eval fails, so `&&` stops before the example runs
        quoted = " ".join(f"'{c}'" for c in cmd)
        sh = subprocess.run(["bash", "-c", f'eval "$({quoted})" && echo RAN'], capture_output=True, text=True,
                            timeout=60)
        assert sh.returncode != 0 and "RAN" not in sh.stdout
