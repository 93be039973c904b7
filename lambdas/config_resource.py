"""The deploy-time configuration custom resource: writes the queue's ``config.json``.

``infra/`` (the ``BuquetQueue`` construct) declares one ``Custom::BuquetConfig``
resource whose service token is this function (``lambdas.config_resource.handler``).
CloudFormation invokes it on create, update and delete of the stack with an event like
``tests/events/cfn-create.json``; the function answers with a PUT of a JSON document to
the event's pre-signed ``ResponseURL`` (the custom-resource protocol, no framework).

Resource properties (strings, as CloudFormation passes them):

==============  ==================================================================
``Bucket``      the queue's bucket
``Prefix``      key prefix inside it (``""`` = bucket root)
``ShardCount``  the shard count the stack is configured with
==============  ==================================================================

What each request type does:

* **Create / Update** — :func:`buquet.config.load_bucket_config` with the stack's shard
  count: ``config.json`` is created with ``If-None-Match: *`` when it is missing (so a
  producer racing the deployment and the deployment agree on one value), and an existing
  one is read. If the bucket already holds a *different* shard count, the resource
  fails with a message naming both values and what to do — a queue's shard count can
  never change, and nothing is overwritten. Returns ``ShardCount`` (the bucket's value)
  and ``ConfigKey`` as attributes (``Fn::GetAtt``).
* **Delete** — nothing: the configuration belongs to the queue's data, which outlives
  the stack (the bucket is retained, or emptied by its own auto-delete resource).

The physical resource id is ``<bucket>/<config key>``: changing the bucket or prefix
replaces the resource (CloudFormation then deletes the old one, a no-op).

Environment: ``S3_ENDPOINT`` (tests, S3-compatible servers), ``S3_REGION`` /
``AWS_REGION``. Every failure is reported to CloudFormation as ``FAILED`` with a
one-line reason; the function itself only raises when the response cannot be sent.
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Mapping

from buquet import config
from buquet.errors import BuquetError, ConfigurationError
from buquet.keys import KeyLayout

from ._common import logger, run_fresh

#: the CloudFormation resource type the construct declares
RESOURCE_TYPE = "Custom::BuquetConfig"
#: how long the PUT of the response may take, seconds
RESPONSE_TIMEOUT_SECONDS = 30.0
#: CloudFormation's limit on the response body, bytes (the reason is cut to fit)
_MAX_REASON = 3000


@dataclass(frozen=True)
class Outcome:
    """What the resource reports to CloudFormation.

    Attributes:
        status: ``"SUCCESS"`` or ``"FAILED"``.
        physical_id: the physical resource id.
        reason: a one-line explanation (shown in the stack events on failure).
        data: attributes for ``Fn::GetAtt`` (``ShardCount``, ``ConfigKey``).
    """

    status: str
    physical_id: str
    reason: str = ""
    data: dict[str, str] = field(default_factory=dict)


def _properties(event: Mapping[str, Any]) -> tuple[str, str, int]:
    """``(bucket, prefix, shard_count)`` from the event's ``ResourceProperties``.

    Raises:
        ValueError: a property is missing or malformed (names it).
    """
    props = event.get("ResourceProperties")
    if not isinstance(props, Mapping):
        raise ValueError("the event has no ResourceProperties object")
    bucket = props.get("Bucket")
    if not isinstance(bucket, str) or not bucket:
        raise ValueError("ResourceProperties.Bucket must be the bucket name")
    prefix = props.get("Prefix", "")
    if not isinstance(prefix, str):
        raise ValueError("ResourceProperties.Prefix must be a string")
    raw = props.get("ShardCount")
    try:
        shards = int(str(raw))
    except ValueError:
        shards = 0
    if not 1 <= shards <= config.MAX_SHARD_COUNT:
        raise ValueError(f"ResourceProperties.ShardCount must be an integer from 1 to {config.MAX_SHARD_COUNT}, got {raw!r}")
    return bucket, prefix, shards


def physical_id(bucket: str, prefix: str) -> str:
    """The resource's physical id: ``<bucket>/<prefix>config.json``."""
    return f"{bucket}/{KeyLayout(prefix).config()}"


def _store_env() -> dict[str, str]:
    """The environment the store is built from: S3 settings only (never a local
    directory, whatever the process environment holds)."""
    keys = (config.ENV_ENDPOINT, config.ENV_REGION, "AWS_REGION")
    return {k: os.environ[k] for k in keys if os.environ.get(k)}


async def ensure_config(bucket: str, prefix: str, shard_count: int) -> int:
    """Create ``config.json`` with ``shard_count`` unless it exists; return the bucket's
    shard count.

    Args:
        bucket: the queue's bucket.
        prefix: key prefix inside it.
        shard_count: the stack's setting, 1 to ``MAX_SHARD_COUNT``.

    Returns:
        The shard count now in the bucket (equal to ``shard_count``).

    Raises:
        ConfigurationError: the bucket holds a different shard count (the message names
            both values and the fix) or a malformed ``config.json``.
        StorageError: the bucket cannot be reached or the role may not read or write
            the key.

    S3: one GET of the config key; one conditional PUT when it is missing (and one more
    GET if another client created it in between); on a mismatch one more GET.
    """
    store = config.store_from_env(bucket=bucket, env=_store_env())
    layout = KeyLayout(prefix)
    try:
        try:
            return await config.load_bucket_config(store, layout, shard_count)
        except ConfigurationError:
            stored = await config.load_bucket_config(store, layout, None, read_only=True)
            if stored == shard_count:  # pragma: no cover - malformed-then-fixed race
                raise
            raise ConfigurationError(
                f"s3://{bucket}/{layout.config()} says this queue has shard_count={stored}, but the stack "
                f"asks for shard_count={shard_count}. A queue's shard count never changes and the "
                f"deployment does not overwrite it: deploy with shard_count={stored} "
                f"(-c buquet:shardCount={stored}, or BuquetQueueProps(shard_count={stored})), or give "
                "the queue another bucket or key prefix."
            ) from None
    finally:
        await store.close()


def decide(event: Mapping[str, Any]) -> Outcome:
    """Carry out one custom-resource request and say what to report (never raises).

    Args:
        event: the CloudFormation custom-resource event (``RequestType``,
            ``ResourceProperties``, ``PhysicalResourceId`` on update and delete).

    Returns:
        The :class:`Outcome`.
    """
    request = event.get("RequestType")
    old_id = event.get("PhysicalResourceId")
    try:
        bucket, prefix, shards = _properties(event)
    except ValueError as exc:
        # a Delete of a resource whose Create failed this way must still succeed
        fallback = old_id if isinstance(old_id, str) and old_id else f"buquet-config-invalid-{event.get('LogicalResourceId', 'x')}"
        if request == "Delete":
            return Outcome("SUCCESS", fallback, "nothing to delete")
        return Outcome("FAILED", fallback, f"invalid resource properties: {exc}")
    pid = physical_id(bucket, prefix)
    if request == "Delete":
        # the configuration belongs to the queue's data: kept with the bucket
        return Outcome("SUCCESS", old_id if isinstance(old_id, str) and old_id else pid, "config.json is kept")
    if request not in ("Create", "Update"):
        return Outcome("FAILED", old_id or pid, f"unknown RequestType {request!r}")
    try:
        stored = run_fresh(ensure_config(bucket, prefix, shards))
    except BuquetError as exc:
        return Outcome("FAILED", old_id if request == "Update" and old_id else pid, str(exc))
    except Exception as exc:  # noqa: BLE001 - CloudFormation must always get an answer
        return Outcome("FAILED", old_id if request == "Update" and old_id else pid, f"{type(exc).__name__}: {exc}")
    return Outcome(
        "SUCCESS",
        pid,
        f"shard_count={stored} in s3://{bucket}/{KeyLayout(prefix).config()}",
        {"ShardCount": str(stored), "ConfigKey": KeyLayout(prefix).config()},
    )


def response_body(event: Mapping[str, Any], outcome: Outcome) -> dict[str, Any]:
    """The JSON document CloudFormation expects at the ``ResponseURL``."""
    return {
        "Status": outcome.status,
        "Reason": outcome.reason[:_MAX_REASON] or outcome.status,
        "PhysicalResourceId": outcome.physical_id,
        "StackId": event.get("StackId"),
        "RequestId": event.get("RequestId"),
        "LogicalResourceId": event.get("LogicalResourceId"),
        "NoEcho": False,
        "Data": outcome.data,
    }


def send_response(url: str, body: Mapping[str, Any], timeout: float = RESPONSE_TIMEOUT_SECONDS) -> int:
    """PUT ``body`` as JSON to the pre-signed ``url``.

    The URL is signed without a content type, so the request sends an empty one.

    Returns:
        The HTTP status code.

    Raises:
        urllib.error.URLError: the request failed (HTTPError for a non-2xx answer).
    """
    data = json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(data))}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - CloudFormation's https URL
        return int(resp.status)


@logger.inject_lambda_context(clear_state=True)
def handler(event: Any, context: Any) -> dict[str, Any]:
    """Lambda entry point (``lambdas.config_resource.handler``).

    Args:
        event: a CloudFormation custom-resource request.
        context: the Lambda context (unused beyond logging).

    Returns:
        The response document that was sent (handy in tests and logs).

    Raises:
        ValueError: the event has no ``ResponseURL`` (not a CloudFormation request).
        urllib.error.URLError: the response could not be delivered; CloudFormation
            then waits for its own timeout, so this is logged before it propagates.
    """
    if not isinstance(event, Mapping) or not isinstance(event.get("ResponseURL"), str):
        raise ValueError("not a CloudFormation custom-resource event (no ResponseURL)")
    outcome = decide(event)
    body = response_body(event, outcome)
    log = logger.info if outcome.status == "SUCCESS" else logger.error
    log(
        "%s %s: %s (%s)", event.get("RequestType"), RESOURCE_TYPE, outcome.status, outcome.reason,
        extra={"physical_id": outcome.physical_id},
    )
    try:
        send_response(event["ResponseURL"], body)
    except Exception:
        logger.exception("could not send the response to CloudFormation")
        raise
    return body


__all__ = ["Outcome", "RESOURCE_TYPE", "decide", "ensure_config", "handler", "physical_id", "response_body", "send_response"]
