"""S3 backend: the data path on obstore, boto3 for what obstore lacks.

obstore (Rust ``object_store``) sends the GET/PUT/LIST/DELETE requests: it costs about
a tenth of boto3's client CPU per request (see docs/protocol.md). boto3 is used for
two things only: the standard AWS credential chain (env, profiles, SSO, instance and
container roles — through obstore's ``Boto3CredentialProvider``) and reading the
``Date`` header of a HEAD Bucket response for :meth:`S3Store.server_time`.

This is the only module that imports an S3 client.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    NotFoundError,
    PreconditionError,
)
from obstore.store import S3Store as _ObS3Store

from ..errors import ObjectNotFound, PreconditionFailed, StorageError
from .base import ObjectInfo, ObjectStore, StoredObject, quote_etag


# Loop-free state shared by every S3Store of the process, so that short-lived stores
# (one per Lambda invocation) skip rebuilding a boto3 session and re-reading the clock.
_sessions: dict[tuple[Any, ...], tuple[Any, Any]] = {}
_clock_offsets: dict[tuple[str | None, str], tuple[timedelta, float]] = {}


def _session_for(
    access_key_id: str | None, secret_access_key: str | None, session_token: str | None, region: str | None
) -> tuple[Any, Any]:
    """(boto3 Session, obstore credential provider or None), cached per credentials and
    region. The provider refreshes temporary credentials itself."""
    key = (access_key_id, secret_access_key, session_token, region)
    cached = _sessions.get(key)
    if cached is None:
        import boto3  # deferred: only the S3 backend pays its import time

        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            region_name=region,
        )
        provider = None
        if session.get_credentials() is not None:
            from obstore.auth.boto3 import Boto3CredentialProvider

            provider = Boto3CredentialProvider(session)
        cached = _sessions[key] = (session, provider)
    return cached


def _info(meta: Any) -> ObjectInfo:
    return ObjectInfo(
        key=meta["path"],
        etag=quote_etag(meta.get("e_tag") or ""),
        size=int(meta["size"]),
        last_modified=meta["last_modified"],
    )


class S3Store(ObjectStore):
    """A bucket on AWS S3 or any S3-compatible server.

    Args:
        bucket: bucket name.
        endpoint: base URL of an S3-compatible server (``http://127.0.0.1:8333``);
            ``None`` for AWS. With an endpoint, path-style addressing is used.
        region: AWS region; defaults to the boto3 session's region, else ``us-east-1``.
        access_key_id / secret_access_key / session_token: explicit credentials; when
            omitted the standard AWS credential chain (via boto3) is used.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
    ) -> None:
        super().__init__()
        self.bucket = bucket
        self.endpoint = endpoint
        self._session, provider = _session_for(access_key_id, secret_access_key, session_token, region)
        self.region = region or self._session.region_name or "us-east-1"
        config: dict[str, Any] = {"region": self.region, "conditional_put": "etag"}
        client_options: dict[str, Any] = {
            "timeout": timedelta(seconds=30),
            "connect_timeout": timedelta(seconds=5),
        }
        if endpoint:
            config["endpoint"] = endpoint
            config["virtual_hosted_style_request"] = False
            if endpoint.startswith("http://"):
                client_options["allow_http"] = True
        kwargs: dict[str, Any] = {}
        if provider is not None:
            kwargs["credential_provider"] = provider
        else:
            config["skip_signature"] = True
        self._store = _ObS3Store(bucket, config=config, client_options=client_options, **kwargs)
        self._boto_client: Any = None
        self._clock_key = (endpoint, bucket)

    @property
    def description(self) -> str:
        where = self.endpoint or f"aws:{self.region}"
        return f"s3://{self.bucket} ({where})"

    # -- error mapping -----------------------------------------------------------
    @staticmethod
    def _map(exc: Exception, key: str | None) -> StorageError:
        if isinstance(exc, StorageError):
            return exc
        if isinstance(exc, (NotFoundError, FileNotFoundError)):
            return ObjectNotFound(f"no object at {key!r}", key)
        if isinstance(exc, (AlreadyExistsError, PreconditionError, FileExistsError)):
            return PreconditionFailed(f"precondition failed on {key!r}", key)
        return StorageError(f"S3 request on {key!r} failed: {exc}", key)

    # -- port ----------------------------------------------------------------------
    async def get(self, key: str) -> StoredObject:
        self._count("get")
        try:
            result = await obstore.get_async(self._store, key)
            data = await result.bytes_async()
        except Exception as exc:
            raise self._map(exc, key) from exc
        return StoredObject(_info(result.meta), bytes(data))

    async def head(self, key: str) -> ObjectInfo:
        self._count("head")
        try:
            return _info(await obstore.head_async(self._store, key))
        except Exception as exc:
            raise self._map(exc, key) from exc

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        self._count("put")
        mode: Any
        if if_none_match:
            mode = "create"
        elif if_match is not None:
            mode = {"e_tag": if_match}
        else:
            mode = "overwrite"
        try:
            result = await obstore.put_async(self._store, key, data, mode=mode)
        except (NotFoundError, FileNotFoundError) as exc:  # AWS: If-Match on a missing key is 404
            if if_match is not None:
                raise PreconditionFailed(f"{key!r} is missing", key) from exc
            raise self._map(exc, key) from exc
        except Exception as exc:
            raise self._map(exc, key) from exc
        return quote_etag(result.get("e_tag") or "")

    async def delete(self, key: str) -> None:
        self._count("delete")
        try:
            await obstore.delete_async(self._store, key)
        except (NotFoundError, FileNotFoundError):
            return
        except Exception as exc:
            raise self._map(exc, key) from exc

    async def delete_many(self, keys: Sequence[str]) -> None:
        keys = list(keys)
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            self._count("delete_many")
            try:
                await obstore.delete_async(self._store, chunk)
            except (NotFoundError, FileNotFoundError):
                continue
            except Exception as exc:
                raise self._map(exc, chunk[0]) from exc

    async def list(
        self, prefix: str, *, start_after: str | None = None, limit: int = 1000
    ) -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        self._count("list")
        try:
            stream = obstore.list(
                self._store, prefix, offset=start_after, chunk_size=min(max(limit, 1), 1000)
            )
            async for chunk in stream:
                for meta in chunk:
                    if not meta["path"].startswith(prefix):
                        continue
                    out.append(_info(meta))
                    if len(out) >= limit:
                        return out
                if len(out) % 1000 == 0 and out:
                    self._count("list")
        except Exception as exc:
            raise self._map(exc, prefix) from exc
        return out

    async def server_time(self) -> datetime | None:
        """The server's clock from the ``Date`` header of a HEAD Bucket response
        (1-second resolution). The offset to the local clock is cached for 5 minutes,
        so most calls send no request."""
        offset, checked_at = _clock_offsets.get(self._clock_key, (None, 0.0))
        if offset is None or time.monotonic() - checked_at > 300:
            self._count("head_bucket")
            try:
                date_header = await asyncio.to_thread(self._head_bucket_date)
            except Exception as exc:  # boto3/botocore errors must not leak
                raise StorageError(f"reading the server clock failed: {exc}") from exc
            local = datetime.now(timezone.utc)
            if date_header:
                server = email.utils.parsedate_to_datetime(date_header)
                # Date has whole seconds: the true time is up to 1 s later; use the middle
                offset = server + timedelta(milliseconds=500) - local
            else:
                offset = timedelta(0)
            _clock_offsets[self._clock_key] = (offset, time.monotonic())
        return datetime.now(timezone.utc) + offset

    def _client(self) -> Any:
        if self._boto_client is None:
            from botocore.config import Config

            self._boto_client = self._session.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.region,
                config=Config(s3={"addressing_style": "path"} if self.endpoint else {}),
            )
        return self._boto_client

    def _head_bucket_date(self) -> str | None:
        response = self._client().head_bucket(Bucket=self.bucket)
        return response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")

    def create_bucket(self) -> None:
        """Create the bucket if it does not exist (boto3 CreateBucket; blocking).
        Raises StorageError."""
        try:
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            if self.region != "us-east-1" and not self.endpoint:
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            self._client().create_bucket(**kwargs)
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return
            raise StorageError(f"creating bucket {self.bucket!r} failed: {exc}") from exc
