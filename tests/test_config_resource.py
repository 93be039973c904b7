"""The deploy-time configuration custom resource (``lambdas.config_resource``), invoked
as CloudFormation invokes it: with custom-resource events shaped like the real ones
(``tests/events/cfn-create.json``) against SeaweedFS, answering with a PUT to a
pre-signed ``ResponseURL`` — here a loopback HTTP server that records what it gets.

The server answers inside the handler's own request, so when the handler returns the
response has been recorded: no waiting.
"""

from __future__ import annotations

import asyncio
import copy
import http.server
import json
import threading
import urllib.parse
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from buquet import config, connect
from buquet.errors import ConfigurationError
from lambdas import config_resource

EVENTS = Path(__file__).parent / "events"


class ResponseRecorder:
    """A loopback HTTP server standing in for CloudFormation's pre-signed S3 URL: it
    records every PUT (path, headers, JSON body) and answers 200 (or ``status``)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                recorder.requests.append({
                    "path": self.path, "headers": dict(self.headers.items()), "body": json.loads(body),
                })
                self.send_response(recorder.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stack%7CQueueConfig%7Creq?X-Amz-Signature=abc"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    @property
    def last(self) -> dict[str, Any]:
        return self.requests[-1]["body"]


class Context:
    """The Lambda context attributes powertools' logger reads."""

    function_name = "Buquet-Config"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:Buquet-Config"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())


@pytest.fixture
def recorder() -> Iterator[ResponseRecorder]:
    r = ResponseRecorder()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> dict[str, str]:
    """What the function's environment holds, pointed at SeaweedFS."""
    env = {"S3_ENDPOINT": s3_endpoint, "S3_REGION": "us-east-1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("BUQUET_LOCAL_DIR", raising=False)
    return env


def cfn_event(recorder: ResponseRecorder, request: str = "Create", **props: Any) -> dict[str, Any]:
    """tests/events/cfn-create.json with ``props`` as resource properties (strings, as
    CloudFormation passes them) and the recorder's URL."""
    event = json.loads((EVENTS / "cfn-create.json").read_text())
    event["RequestType"] = request
    event["ResponseURL"] = recorder.url
    event["RequestId"] = str(uuid.uuid4())
    event["ResourceProperties"].update({k: str(v) for k, v in props.items()})
    return event


def update_event(event: dict[str, Any], physical_id: str, **props: Any) -> dict[str, Any]:
    new = copy.deepcopy(event)
    new["RequestType"] = "Update"
    new["PhysicalResourceId"] = physical_id
    new["OldResourceProperties"] = copy.deepcopy(event["ResourceProperties"])
    new["ResourceProperties"].update({k: str(v) for k, v in props.items()})
    return new


def read_config(endpoint: str, bucket: str, key: str) -> tuple[dict[str, Any], str]:
    """(the JSON document, its ETag) of ``key``."""

    async def go() -> tuple[dict[str, Any], str]:
        q = await connect(endpoint=endpoint, bucket=bucket, region="us-east-1", read_only=True)
        try:
            obj = await q.store.get(key)
            return json.loads(obj.data), obj.etag
        finally:
            await q.close()

    return asyncio.run(go())


# ------------------------------------------------------------------------- create
@pytest.mark.s3
@pytest.mark.parametrize("prefix", ["", "team-a/jobs/"])
def test_create_writes_config_json_and_reports_the_shard_count(
    recorder: ResponseRecorder, s3_env: dict[str, str], s3_bucket: str, prefix: str
) -> None:
    event = cfn_event(recorder, Bucket=s3_bucket, Prefix=prefix, ShardCount=8)
    sent = config_resource.handler(event, Context())
    [request] = recorder.requests
    body = request["body"]
    assert body == sent
    assert body["Status"] == "SUCCESS"
    assert body["PhysicalResourceId"] == f"{s3_bucket}/{prefix}config.json"
    assert body["Data"] == {"ShardCount": "8", "ConfigKey": f"{prefix}config.json"}
    for field in ("StackId", "RequestId", "LogicalResourceId"):
        assert body[field] == event[field]
    # the URL is signed without a content type: none is sent
    url = urllib.parse.urlsplit(recorder.url)
    assert request["headers"].get("Content-Type") == "" and request["path"] == f"{url.path}?{url.query}"
    doc, _ = read_config(s3_env["S3_ENDPOINT"], s3_bucket, f"{prefix}config.json")
    assert doc["shard_count"] == 8

    # every client now gets the bucket's value, and a disagreeing one is told it at connect()
    async def clients() -> None:
        q = await connect(endpoint=s3_env["S3_ENDPOINT"], bucket=s3_bucket, region="us-east-1", prefix=prefix)
        assert len(q.shards) == 8
        await q.close()
        with pytest.raises(ConfigurationError, match="shard_count=8"):
            await connect(endpoint=s3_env["S3_ENDPOINT"], bucket=s3_bucket, region="us-east-1", prefix=prefix, shard_count=4)

    asyncio.run(clients())


@pytest.mark.s3
def test_create_and_update_keep_an_existing_equal_config_untouched(
    recorder: ResponseRecorder, s3_env: dict[str, str], s3_bucket: str
) -> None:
    event = cfn_event(recorder, Bucket=s3_bucket, ShardCount=4)
    config_resource.handler(event, Context())
    _, etag = read_config(s3_env["S3_ENDPOINT"], s3_bucket, "config.json")
    config_resource.handler(event, Context())  # a retried create
    config_resource.handler(update_event(event, recorder.last["PhysicalResourceId"]), Context())
    assert [r["body"]["Status"] for r in recorder.requests] == ["SUCCESS"] * 3
    assert read_config(s3_env["S3_ENDPOINT"], s3_bucket, "config.json")[1] == etag  # never rewritten


@pytest.mark.s3
def test_a_producer_that_raced_the_deployment_fails_it_with_a_clear_message(
    recorder: ResponseRecorder, s3_env: dict[str, str], s3_bucket: str
) -> None:
    """The race of the issue: a producer connects first and creates config.json with the
    default 4 shards; the deployment asking for 8 must fail, naming both values, and
    must not overwrite what the bucket holds."""

    async def producer() -> None:
        q = await connect(endpoint=s3_env["S3_ENDPOINT"], bucket=s3_bucket, region="us-east-1")
        await q.close()

    asyncio.run(producer())
    _, etag = read_config(s3_env["S3_ENDPOINT"], s3_bucket, "config.json")
    config_resource.handler(cfn_event(recorder, Bucket=s3_bucket, ShardCount=8), Context())
    body = recorder.last
    assert body["Status"] == "FAILED"
    reason = body["Reason"]
    assert "shard_count=4" in reason and "shard_count=8" in reason and f"s3://{s3_bucket}/config.json" in reason
    assert "buquet:shardCount=4" in reason and "never changes" in reason
    assert body["PhysicalResourceId"] == f"{s3_bucket}/config.json" and body["Data"] == {}
    assert read_config(s3_env["S3_ENDPOINT"], s3_bucket, "config.json")[1] == etag

    # CloudFormation then deletes the failed resource: that must succeed and keep the file
    delete = cfn_event(recorder, "Delete", Bucket=s3_bucket, ShardCount=8)
    delete["PhysicalResourceId"] = body["PhysicalResourceId"]
    config_resource.handler(delete, Context())
    assert recorder.last["Status"] == "SUCCESS"
    assert read_config(s3_env["S3_ENDPOINT"], s3_bucket, "config.json")[1] == etag


@pytest.mark.s3
def test_an_update_that_changes_the_shard_count_fails_and_keeps_the_resource(
    recorder: ResponseRecorder, s3_env: dict[str, str], s3_bucket: str
) -> None:
    event = cfn_event(recorder, Bucket=s3_bucket, ShardCount=4)
    config_resource.handler(event, Context())
    pid = recorder.last["PhysicalResourceId"]
    config_resource.handler(update_event(event, pid, ShardCount=16), Context())
    assert recorder.last["Status"] == "FAILED" and "shard_count=16" in recorder.last["Reason"]
    assert recorder.last["PhysicalResourceId"] == pid  # the same resource: no replacement, no delete
    assert read_config(s3_env["S3_ENDPOINT"], s3_bucket, "config.json")[0]["shard_count"] == 4


@pytest.mark.s3
def test_a_new_prefix_replaces_the_resource_and_the_old_delete_keeps_its_config(
    recorder: ResponseRecorder, s3_env: dict[str, str], s3_bucket: str
) -> None:
    event = cfn_event(recorder, Bucket=s3_bucket, ShardCount=4)
    config_resource.handler(event, Context())
    old = recorder.last["PhysicalResourceId"]
    config_resource.handler(update_event(event, old, Prefix="v2/"), Context())
    assert recorder.last["Status"] == "SUCCESS" and recorder.last["PhysicalResourceId"] == f"{s3_bucket}/v2/config.json"
    delete = cfn_event(recorder, "Delete", Bucket=s3_bucket, ShardCount=4)
    delete["PhysicalResourceId"] = old
    config_resource.handler(delete, Context())
    assert recorder.last == {**recorder.last, "Status": "SUCCESS", "PhysicalResourceId": old}
    assert read_config(s3_env["S3_ENDPOINT"], s3_bucket, "config.json")[0]["shard_count"] == 4
    assert read_config(s3_env["S3_ENDPOINT"], s3_bucket, "v2/config.json")[0]["shard_count"] == 4


# ------------------------------------------------------------------------ failures
@pytest.mark.s3
def test_an_unreachable_bucket_fails_the_deployment_with_the_storage_error(
    recorder: ResponseRecorder, s3_env: dict[str, str]
) -> None:
    config_resource.handler(cfn_event(recorder, Bucket=f"no-such-bucket-{uuid.uuid4().hex[:12]}"), Context())
    assert recorder.last["Status"] == "FAILED"
    assert "no-such-bucket" in recorder.last["Reason"]


@pytest.mark.parametrize("props, message", [
    ({"Bucket": ""}, "Bucket"),
    ({"ShardCount": "0"}, "ShardCount"),
    ({"ShardCount": "many"}, "ShardCount"),
    ({"ShardCount": str(config.MAX_SHARD_COUNT + 1)}, f"1 to {config.MAX_SHARD_COUNT}"),
])
def test_bad_properties_fail_create_but_never_delete(recorder: ResponseRecorder, props: dict[str, str], message: str) -> None:
    event = cfn_event(recorder, **props)
    config_resource.handler(event, Context())
    assert recorder.last["Status"] == "FAILED" and message in recorder.last["Reason"]
    failed_id = recorder.last["PhysicalResourceId"]
    delete = {**event, "RequestType": "Delete", "PhysicalResourceId": failed_id}
    config_resource.handler(delete, Context())
    assert recorder.last["Status"] == "SUCCESS" and recorder.last["PhysicalResourceId"] == failed_id


def test_an_event_without_a_response_url_is_refused() -> None:
    with pytest.raises(ValueError, match="ResponseURL"):
        config_resource.handler({"RequestType": "Create"}, Context())


def test_a_response_that_cannot_be_delivered_is_raised(recorder: ResponseRecorder) -> None:
    recorder.status = 403  # e.g. the pre-signed URL expired
    delete = {**cfn_event(recorder, "Delete", Bucket="b"), "PhysicalResourceId": "b/config.json"}
    with pytest.raises(Exception, match="403"):
        config_resource.handler(delete, Context())
