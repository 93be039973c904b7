"""S3 backend: the data path on obstore, boto3 for what obstore lacks.

obstore (Rust ``object_store``) sends the GET/PUT/LIST/DELETE requests: it costs about
a tenth of boto3's client CPU per request (see docs/protocol.md). boto3 is used for
two things only: the standard AWS credential chain (env, profiles, SSO, instance and
container roles — through obstore's ``Boto3CredentialProvider``) and reading the
``Date`` header of a HEAD Bucket response for :meth:`S3Store.server_time`.

This is the only module that imports an S3 client.

Errors: every request runs inside :meth:`S3Store._errors`, which turns obstore's (and
boto3's) exceptions into buquet's, with a one-line message::

    S3 <OP> s3://<bucket>/<key> failed: <status or kind>: <short reason> (<hint>)

The HTTP status and S3 error code are read off the text of obstore's exception (its
only structured form is a Rust debug dump, see :func:`_diagnose`); the original
exception stays reachable as ``__cause__`` and never appears in ``str()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import html
import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Sequence
from urllib.parse import urlsplit

import obstore
import obstore.exceptions as obstore_exc
from obstore.exceptions import (
    AlreadyExistsError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
)
from obstore.store import S3Store as _ObS3Store

from .._exit import quiesce_native_threads_at_exit
from ..errors import ObjectNotFound, PreconditionFailed, StorageError
from .base import ObjectInfo, ObjectStore, StoredObject, quote_etag


log = logging.getLogger("buquet.storage")

# Loop-free state shared by every S3Store of the process, so that short-lived stores
# (one per Lambda invocation) skip rebuilding a boto3 session and re-reading the clock.
_sessions: dict[tuple[Any, ...], tuple[Any, Any]] = {}
_clock_offsets: dict[tuple[str | None, str], tuple[timedelta, float]] = {}
#: offsets measured to ~RTT precision by watching the Date header tick (see S3Store.server_time)
_refined_offsets: dict[tuple[str | None, str], tuple[timedelta, float]] = {}
_refining: dict[tuple[str | None, str], asyncio.Task[None]] = {}
#: boto3 client creation is not thread-safe; HEAD Buckets run in worker threads
_CLIENT_LOCK = threading.Lock()
#: a refined offset is re-measured after this many seconds
_REFINED_TTL_SECONDS = 3600.0
#: pause between the HEADs that watch for the Date header's next second, seconds
_TICK_PROBE_SECONDS = 0.05


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


# -- error diagnosis ---------------------------------------------------------------
# obstore's exceptions carry their detail only as text: a first paragraph such as
#   "Object at location k not found: Error performing GET http://h/b/k in 2.7ms -
#    Server returned non-2xx status code: 404 Not Found: <?xml ...><Code>NoSuchBucket..."
# then "\n\nDebug source:\n" and a ~35-line Rust debug dump (HttpError kind, OS error).
_DEBUG_MARK = "\n\nDebug source:"
_STATUS_RE = re.compile(r"Server returned non-2xx status code: (\d{3})(?: ([A-Za-z][A-Za-z -]*))?:? ?")
_CODE_RE = re.compile(r"<Code>([^<]{1,100})</Code>")
_MESSAGE_RE = re.compile(r"<Message>([^<]{0,400})</Message>")
_URL_RE = re.compile(r"Error performing [A-Z]+ (\S+)")
_RETRIES_RE = re.compile(r"after (\d+) retries")
_DNS_RE = re.compile(r'error: "([^"]{1,200})"')
_CONTEXT_RE = re.compile(r"Error performing [A-Z]+ \S+ in \S+?(?:, after [^-]*)?\s+-\s+")
_MAX_REASON = 160

#: 403 codes that name the cause already: no HEAD Bucket probe needed.
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId": "unknown access key — check the credentials",
    "SignatureDoesNotMatch": "wrong secret key — check the credentials",
    "InvalidToken": "invalid session token — check the credentials",
    "ExpiredToken": "the credentials expired — refresh them",
    "TokenRefreshRequired": "the credentials expired — refresh them",
    "RequestTimeTooSkewed": "the local clock is too far from the server's — sync it (NTP)",
}
_CODE_HINTS = {
    **_CREDENTIAL_CODES,
    "AuthorizationHeaderMalformed": "wrong region — set region / S3_REGION to the bucket's region",
    "PermanentRedirect": "wrong region or endpoint for this bucket",
    "InvalidBucketName": "invalid bucket name",
    "AccountProblem": "the account is blocked — check it with the provider",
    "NotImplemented": "the server does not support this request",
}


@dataclass(slots=True)
class _Diagnosis:
    """What went wrong, in the parts of the one-line message."""

    status: int | None = None
    code: str | None = None
    what: str = "error"  # "404 NoSuchBucket", "connection refused", ...
    reason: str | None = None
    hint: str | None = None
    transient: bool | None = None  # None: derived from status/code by StorageError


def _one_line(text: str, limit: int = _MAX_REASON) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _host(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return urlsplit(url).netloc or None
    except ValueError:
        return None


def _status_hint(status: int, code: str | None) -> tuple[str | None, bool | None]:
    """(hint, explicit transient) for an HTTP error answer."""
    if code == "NoSuchBucket":
        return None, None  # the caller words it with the bucket name
    if code in _CODE_HINTS:
        return _CODE_HINTS[code], False if code == "NotImplemented" else None
    if status == 429 or code in ("SlowDown", "Throttling", "RequestThrottled"):
        return "the server is throttling requests — retry later or lower the request rate", None
    if status == 501:
        return "the server does not support this request", False
    if status >= 500:
        return "server error — retry later", None
    if status in (301, 307):
        return "wrong region or endpoint for this bucket", None
    if status == 401:
        return "not authenticated — check the credentials", None
    if status == 403:
        return "access denied — check the credentials and the bucket policy", None
    if status == 408 or code == "RequestTimeout":
        return "the request timed out — retry", None
    return None, None


def _diagnose_obstore(text: str, endpoint: str | None) -> _Diagnosis:
    head, _, debug = text.partition(_DEBUG_MARK)
    m = _STATUS_RE.search(head)
    if m:
        status = int(m.group(1))
        phrase = (m.group(2) or "").strip()
        body = head[m.end():]
        cm = _CODE_RE.search(body)
        code = html.unescape(cm.group(1)).strip() if cm else None
        mm = _MESSAGE_RE.search(body)
        if mm:
            reason: str | None = html.unescape(mm.group(1))
        elif body.strip():  # not S3 XML: an HTML error page of a proxy, plain text, ...
            reason = html.unescape(re.sub(r"<[^>]*>", " ", body))
        else:
            reason = None  # HEAD answers have no body
        hint, transient = _status_hint(status, code)
        return _Diagnosis(
            status, code, f"{status} {code or phrase}".strip(),
            _one_line(reason) if reason and reason.strip() else None, hint, transient,
        )

    # No HTTP answer: name the transport failure from the debug dump.
    host = _host(endpoint) or _host((_URL_RE.search(head) or [None, None])[1]) or "the endpoint"
    rm = _RETRIES_RE.search(head)
    n = int(rm.group(1)) if rm else 0
    retries = f" after {n} retr{'y' if n == 1 else 'ies'}" if n else ""
    where = endpoint or host
    if "ConnectionRefused" in debug:
        return _Diagnosis(
            what="connection refused", reason=f"cannot connect to {host}{retries}",
            hint=f"is the endpoint {where} right and the server running?", transient=True,
        )
    if '"dns error"' in debug or "dns error" in head:
        dm = _DNS_RE.search(debug)
        return _Diagnosis(
            what="DNS lookup failed",
            reason=f"{host}: {dm.group(1)}" if dm else f"cannot resolve {host}",
            hint="check the endpoint's host name and the network", transient=True,
        )
    if "ConnectionReset" in debug or "ConnectionAborted" in debug or "BrokenPipe" in debug:
        return _Diagnosis(
            what="connection reset", reason=f"{host} dropped the connection{retries}",
            hint="is the server restarting or overloaded?", transient=True,
        )
    if "IncompleteMessage" in debug:
        return _Diagnosis(
            what="connection closed", reason=f"{host} closed the connection before answering{retries}",
            hint="is the server restarting or overloaded?", transient=True,
        )
    if "kind: Timeout" in debug or "TimedOut" in debug:
        return _Diagnosis(
            what="timeout", reason=f"no answer from {host} in time{retries}",
            hint="server slow or unreachable — check the endpoint and the network", transient=True,
        )
    if re.search(r"InvalidContentType|InvalidCertificate|certificate|HandshakeFailure|[Tt][Ll][Ss]", debug):
        return _Diagnosis(
            what="TLS error", reason=f"TLS handshake with {host} failed",
            hint="https:// endpoint on a plain-HTTP server, or an untrusted certificate?", transient=False,
        )
    if "Parse(" in debug:
        return _Diagnosis(
            what="protocol error", reason=f"{host} did not answer in HTTP",
            hint=f"is {where} an S3 endpoint?", transient=False,
        )
    if "redirect without LOCATION" in head:
        return _Diagnosis(
            what="redirect", reason="the server redirected the request elsewhere",
            hint="wrong region or endpoint for this bucket", transient=False,
        )
    if "body error" in head or "kind: Decode" in debug or "kind: Interrupted" in debug:
        return _Diagnosis(
            what="connection broken", reason=f"the answer from {host} was cut off{retries}",
            hint="is the server restarting or overloaded?", transient=True,
        )
    if "kind: Connect" in debug:
        return _Diagnosis(
            what="connection failed", reason=f"cannot connect to {host}{retries}",
            hint=f"is the endpoint {where} right and reachable?", transient=True,
        )
    first = head.strip().splitlines()[0] if head.strip() else ""
    first = first.removeprefix("Generic S3 error: ")
    cm = _CONTEXT_RE.search(first)  # drop "Error performing GET <url> in 2ms - "
    first = first[cm.end():] if cm else first.removeprefix("Error performing list request: ")
    return _Diagnosis(reason=_one_line(first) if first else None)


def _diagnose_botocore(exc: Exception, endpoint: str | None) -> _Diagnosis:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # ClientError: the server answered
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        error = response.get("Error", {})
        raw_code = str(error.get("Code") or "")
        code = raw_code if raw_code and not raw_code.isdigit() else None
        if status is None and raw_code.isdigit():
            status = int(raw_code)
        if status == 404 and code in (None, "NotFound") and getattr(exc, "operation_name", "") == "HeadBucket":
            code = "NoSuchBucket"  # HEAD answers have no body, hence no code
        message = error.get("Message") or None
        hint, transient = _status_hint(int(status or 0), code)
        what = f"{status} {code}" if code else f"{status}"
        return _Diagnosis(status, code, what, _one_line(message) if message else None, hint, transient)
    name = type(exc).__name__
    host = _host(endpoint) or "the endpoint"
    if name in ("EndpointConnectionError", "ConnectionClosedError"):
        return _Diagnosis(what="connection failed", reason=f"cannot connect to {host}",
                          hint=f"is the endpoint {endpoint or host} right and the server running?",
                          transient=True)
    if "Timeout" in name:
        return _Diagnosis(what="timeout", reason=f"no answer from {host} in time",
                          hint="server slow or unreachable — check the endpoint and the network",
                          transient=True)
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return _Diagnosis(what="no credentials", reason=_one_line(str(exc)),
                          hint="set AWS credentials (environment, profile or role)", transient=False)
    return _Diagnosis(what=name, reason=_one_line(str(exc)) or None)


def _diagnose(exc: BaseException, endpoint: str | None) -> _Diagnosis:
    """Read status, S3 error code, kind of failure and a hint off a foreign exception."""
    if type(exc).__module__.startswith("botocore"):
        return _diagnose_botocore(exc, endpoint)  # type: ignore[arg-type]
    if isinstance(exc, (obstore_exc.BaseError, OSError)):
        return _diagnose_obstore(str(exc), endpoint)
    return _Diagnosis(what=type(exc).__name__, reason=_one_line(str(exc)) or None)


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
        quiesce_native_threads_at_exit()  # no SIGABRT at exit: see buquet/_exit.py
        self._store = _ObS3Store(bucket, config=config, client_options=client_options, **kwargs)
        self._boto_client: Any = None
        self._clock_key = (endpoint, bucket)
        # (bucket exists? None = could not tell, monotonic time): HEAD Bucket result on
        # the 403 error path, reused for a minute so an outage adds no request storm
        self._bucket_probe: tuple[bool | None, float] | None = None

    @property
    def description(self) -> str:
        where = self.endpoint or f"aws:{self.region}"
        return f"s3://{self.bucket} ({where})"

    # -- error mapping -----------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _errors(
        self,
        op: str,
        key: str | None,
        *,
        if_match: bool = False,
        missing_ok: bool = False,
        more: int = 0,
        probe: bool = True,
    ) -> AsyncIterator[None]:
        """Map any foreign exception raised in the block to the most specific buquet
        error, raised ``from`` the original (which keeps the full detail).

        * S3 code ``NoSuchBucket`` → :class:`StorageError` saying the bucket does not
          exist (before anything else: on moto even a conditional PUT says so).
        * not found → :class:`ObjectNotFound`; with ``if_match`` →
          :class:`PreconditionFailed` (AWS answers 404 to If-Match on a missing key);
          with ``missing_ok`` the error is swallowed (DELETE of a missing key).
        * already exists / precondition failed (409/412) → :class:`PreconditionFailed`.
        * 403 with a non-specific code → one HEAD Bucket (boto3, error path only,
          cached for a minute) tells "bucket does not exist" (SeaweedFS answers a PUT
          into a missing bucket with 403 AccessDenied) from "access denied".
        * anything else → :class:`StorageError` with status, code, hint, transient.
        """
        try:
            yield
        except StorageError:
            raise
        except Exception as exc:
            diag = _diagnose(exc, self.endpoint)
            bucket_exists: bool | None = None
            if (
                probe
                and diag.code != "NoSuchBucket"
                and (diag.status == 403 or isinstance(exc, PermissionDeniedError))
                and diag.code not in _CREDENTIAL_CODES
            ):
                bucket_exists = await self._probe_bucket()
            err = self._error(exc, diag, op, key, if_match=if_match, more=more,
                              bucket_exists=bucket_exists)
            if missing_ok and isinstance(err, ObjectNotFound):
                return
            raise err from exc

    def _error(
        self,
        exc: BaseException,
        diag: _Diagnosis,
        op: str,
        key: str | None,
        *,
        if_match: bool = False,
        more: int = 0,
        bucket_exists: bool | None = None,
    ) -> StorageError:
        """The buquet exception for a diagnosed failure (see :meth:`_errors`)."""
        cls: type[StorageError] = StorageError
        hint = diag.hint
        missing_bucket = f"bucket {self.bucket!r} does not exist — create it or fix the bucket name"
        if diag.code == "NoSuchBucket":
            hint = missing_bucket
        elif isinstance(exc, (NotFoundError, FileNotFoundError)):
            cls = ObjectNotFound
            if if_match:
                cls, hint = PreconditionFailed, "If-Match on a missing object"
        elif isinstance(exc, (AlreadyExistsError, PreconditionError, FileExistsError)):
            cls = PreconditionFailed
        elif bucket_exists is False:
            hint = missing_bucket
        elif bucket_exists and op in ("GET", "HEAD"):
            hint = ("access denied — check the bucket policy (without s3:ListBucket, "
                    "S3 answers 403 for a missing key)")
        elif bucket_exists is None and diag.status == 403 and diag.code not in _CREDENTIAL_CODES:
            hint = "access denied or the bucket does not exist — check the credentials and the bucket name"
        where = f"s3://{self.bucket}" + (f"/{key}" if key is not None else "")
        if more:
            where += f" (+{more} more)"
        message = f"S3 {op} {where} failed: {diag.what}"
        if diag.reason:
            message += f": {diag.reason}"
        if hint:
            message += f" ({hint})"
        return cls(
            message, key, operation=op, bucket=self.bucket, status=diag.status,
            code=diag.code, hint=hint, transient=diag.transient,
        )

    async def _probe_bucket(self) -> bool | None:
        """Does the bucket exist? One boto3 HEAD Bucket, on error paths only; the
        answer is reused for 60 s. ``None`` when the probe cannot tell (403, no answer)."""
        cached = self._bucket_probe
        if cached is not None and time.monotonic() - cached[1] < 60:
            return cached[0]
        self._count("head_bucket")
        result: bool | None
        try:
            await asyncio.wait_for(
                asyncio.to_thread(lambda: self._client().head_bucket(Bucket=self.bucket)), 10
            )
            result = True
        except Exception as exc:  # botocore ClientError, timeouts, ...
            status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            result = False if status == 404 else None
        self._bucket_probe = (result, time.monotonic())
        return result

    # -- port ----------------------------------------------------------------------
    async def get(self, key: str) -> StoredObject:
        self._count("get")
        async with self._errors("GET", key):
            result = await obstore.get_async(self._store, key)
            data = await result.bytes_async()
        return StoredObject(_info(result.meta), bytes(data))

    async def head(self, key: str) -> ObjectInfo:
        self._count("head")
        # A HEAD answer has no body: a missing bucket looks like a missing key here.
        async with self._errors("HEAD", key):
            meta = await obstore.head_async(self._store, key)
        return _info(meta)

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
        async with self._errors("PUT", key, if_match=if_match is not None):
            result = await obstore.put_async(self._store, key, data, mode=mode)
        return quote_etag(result.get("e_tag") or "")

    async def delete(self, key: str) -> None:
        self._count("delete")
        async with self._errors("DELETE", key, missing_ok=True):
            await obstore.delete_async(self._store, key)

    async def delete_many(self, keys: Sequence[str]) -> None:
        keys = list(keys)
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            self._count("delete_many")
            async with self._errors("DELETE", chunk[0], missing_ok=True, more=len(chunk) - 1):
                await obstore.delete_async(self._store, chunk)

    async def list(
        self, prefix: str, *, start_after: str | None = None, limit: int = 1000
    ) -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        self._count("list")
        async with self._errors("LIST", prefix):
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
        return out

    async def server_time(self) -> datetime | None:
        """The server's clock from the ``Date`` header of a HEAD Bucket response.

        ``Date`` has whole seconds, so one response places the server's clock only
        within a second; two processes could then disagree by up to a second about
        whether a task is due. So the first call also starts, in the background, a
        measurement that sends a HEAD Bucket every 50 ms until the header's second
        ticks over (~1 s and ~15 requests on average, at most 60): the tick lies between the
        send of the last request before it and the receipt of the first after it, which
        places the server's clock within about a round trip. That refined offset is
        used from then on (re-measured in the background every hour); until it is
        ready, the coarse one (cached for 5 minutes), taken at the start of the
        header's second so that switching to the refined one only moves this clock
        forward (by under a second). Most calls send no request."""
        refined = _refined_offsets.get(self._clock_key)
        if refined is not None:
            if time.monotonic() - refined[1] >= _REFINED_TTL_SECONDS:
                self._start_refining()  # re-measured in the background; the old one serves meanwhile
            return datetime.now(timezone.utc) + refined[0]
        self._start_refining()
        offset, checked_at = _clock_offsets.get(self._clock_key, (None, 0.0))
        if offset is None or time.monotonic() - checked_at > 300:
            self._count("head_bucket")
            async with self._errors("HeadBucket", None, probe=False):  # boto3 errors must not leak
                date_header = await asyncio.to_thread(self._head_bucket_date)
            local = datetime.now(timezone.utc)
            if date_header:
                server = email.utils.parsedate_to_datetime(date_header)
                # Date has whole seconds: the true time is up to 1 s later. Take the
                # earliest: the refined offset then only ever moves this clock forward, so
                # nothing that was due becomes not-due when it arrives mid-invocation
                offset = server - local
            else:
                offset = timedelta(0)
            _clock_offsets[self._clock_key] = (offset, time.monotonic())
        return datetime.now(timezone.utc) + offset

    def _start_refining(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no running loop: the coarse offset it is
        task = _refining.get(self._clock_key)
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        _refining[self._clock_key] = loop.create_task(self._refine_clock())

    async def _refine_clock(self) -> None:
        """Watch the ``Date`` header tick (see :meth:`server_time`); errors leave the
        coarse offset in place."""
        prev: tuple[float, float] | None = None  # (local time the request was sent, its Date)
        failures = 0
        try:
            for _ in range(60):
                sent = time.time()
                self._count("head_bucket")
                try:
                    date_header = await asyncio.to_thread(self._head_bucket_date)
                except Exception as exc:  # noqa: BLE001 - a failed probe: try again, a few times
                    failures += 1
                    if failures > 3:
                        raise
                    log.debug("clock probe failed (%s); retrying", exc)
                    prev = None
                    await asyncio.sleep(_TICK_PROBE_SECONDS)
                    continue
                received = time.time()
                if not date_header:
                    return
                server_s = email.utils.parsedate_to_datetime(date_header).timestamp()
                if prev is not None and server_s > prev[1] and received - prev[0] < 0.25:
                    offset = timedelta(seconds=server_s - (prev[0] + received) / 2)
                    _refined_offsets[self._clock_key] = (offset, time.monotonic())
                    return
                prev = (sent, server_s)  # no tick yet, or one seen too coarsely: watch for the next
                await asyncio.sleep(_TICK_PROBE_SECONDS)
            log.warning("could not refine the clock of %s: no clean tick of its Date header in 60 probes; "
                        "using whole seconds (±1 s)", self.bucket)
        except Exception as exc:  # noqa: BLE001 - only a refinement
            log.warning("could not refine the clock of %s from its Date header (%s); using whole seconds (±1 s)",
                        self.bucket, exc)

    def _client(self) -> Any:
        # threads (asyncio.to_thread) may ask at once; boto3 sessions are not thread-safe
        with _CLIENT_LOCK:
            return self._client_locked()

    def _client_locked(self) -> Any:
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
            raise self._error(exc, _diagnose(exc, self.endpoint), "CreateBucket", None) from exc
