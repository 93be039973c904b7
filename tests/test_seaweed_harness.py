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
