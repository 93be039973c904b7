"""Storage errors read as one line naming operation, bucket, key, status and a hint.

Live cases run against SeaweedFS (``s3`` mark), moto (its own throwaway server) and an
unused loopback port. The other obstore failure texts (5xx, 429, 403 codes, resets,
timeouts, DNS, TLS, proxies' HTML pages) were recorded from obstore 0.12 against a
misbehaving test server and are replayed through :meth:`S3Store._errors`.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from typing import Iterator

import pytest
from obstore.exceptions import (
    GenericError,
    PermissionDeniedError,
    PreconditionError,
)

from buquet import connect
from buquet._logutil import ThrottledLog, describe, error_key
from buquet.errors import ObjectNotFound, PreconditionFailed, StorageError
from buquet.storage.local import LocalStore
from buquet.storage.s3 import S3Store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _assert_one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and len(text) < 300, text
    assert "Debug source" not in text and "RetryError" not in text, text
    assert exc.__cause__ is not None  # the full detail stays reachable for debug logs
    return text


def _missing_bucket_name() -> str:
    return f"no-such-bucket-{os.getpid()}-{time.monotonic_ns() % 10**9}"


# -- SeaweedFS ---------------------------------------------------------------------


@pytest.mark.s3
async def test_missing_bucket_get_says_bucket_does_not_exist(s3_endpoint: str) -> None:
    bucket = _missing_bucket_name()
    store = S3Store(bucket, endpoint=s3_endpoint, region="us-east-1")
    with pytest.raises(StorageError) as info:
        await store.get("config.json")
    err = info.value
    assert not isinstance(err, ObjectNotFound)
    text = _assert_one_line(err)
    assert text.startswith(f"S3 GET s3://{bucket}/config.json failed: 404 NoSuchBucket")
    assert f"bucket {bucket!r} does not exist" in text
    assert (err.operation, err.bucket, err.key) == ("GET", bucket, "config.json")
    assert (err.status, err.code, err.transient) == (404, "NoSuchBucket", False)


@pytest.mark.s3
async def test_missing_bucket_put_403_is_told_apart_by_one_probe(s3_endpoint: str) -> None:
    # SeaweedFS answers a PUT into a missing bucket with 403 AccessDenied
    bucket = _missing_bucket_name()
    store = S3Store(bucket, endpoint=s3_endpoint, region="us-east-1")
    for _ in range(2):
        with pytest.raises(StorageError) as info:
            await store.put("k", b"x", if_none_match=True)
        err = info.value
        assert not isinstance(err, PreconditionFailed)
        text = _assert_one_line(err)
        assert text.startswith(f"S3 PUT s3://{bucket}/k failed: 403")
        assert f"bucket {bucket!r} does not exist" in text
        assert err.status == 403 and not err.transient
    assert store.request_counts.get("head_bucket") == 1  # probed once, then cached


@pytest.mark.s3
async def test_connect_to_missing_bucket_fails_without_writing(s3_endpoint: str) -> None:
    bucket = _missing_bucket_name()
    with pytest.raises(StorageError, match="does not exist") as info:
        await connect(endpoint=s3_endpoint, bucket=bucket, region="us-east-1")
    assert not isinstance(info.value, ObjectNotFound)
    _assert_one_line(info.value)


@pytest.mark.s3
async def test_happy_path_sends_no_extra_request(s3_bucket: str, s3_endpoint: str) -> None:
    store = S3Store(s3_bucket, endpoint=s3_endpoint, region="us-east-1")
    etag = await store.put("a", b"1")
    with pytest.raises(ObjectNotFound):
        await store.get("missing")
    with pytest.raises(PreconditionFailed):
        await store.put("a", b"2", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        await store.put("gone", b"2", if_match=etag)
    await store.delete("never-there")
    assert "head_bucket" not in store.request_counts


# -- connection refused --------------------------------------------------------------


async def test_connection_refused_is_one_line_and_transient() -> None:
    port = _free_port()
    store = S3Store("some-bucket", endpoint=f"http://127.0.0.1:{port}", region="us-east-1",
                    access_key_id="k", secret_access_key="s")
    with pytest.raises(StorageError) as info:
        await store.get("config.json")
    err = info.value
    text = _assert_one_line(err)
    assert text.startswith(f"S3 GET s3://some-bucket/config.json failed: connection refused: "
                           f"cannot connect to 127.0.0.1:{port}")
    assert "server running?" in text and err.hint
    assert err.status is None and err.transient is True
    assert not isinstance(err, ObjectNotFound)


# -- moto: AWS-exact answers ---------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    pytest.importorskip("moto.server")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.skip("moto server did not start")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_missing_bucket_on_moto_is_not_a_missing_object(moto_endpoint: str) -> None:
    bucket = _missing_bucket_name()
    store = S3Store(bucket, endpoint=moto_endpoint, region="us-east-1",
                    access_key_id="k", secret_access_key="s")
    calls = {
        "GET": lambda: store.get("config.json"),
        "PUT": lambda: store.put("config.json", b"{}", if_none_match=True),
        # moto's answer comes as obstore's PreconditionError: NoSuchBucket must win
        "PUT ": lambda: store.put("t", b"{}", if_match='"0123"'),
        "LIST": lambda: store.list("p/"),
        "DELETE": lambda: store.delete("k"),
    }
    for op, call in calls.items():
        with pytest.raises(StorageError) as info:
            await call()
        err = info.value
        assert type(err) is StorageError, (op, err)
        text = _assert_one_line(err)
        assert text.startswith(f"S3 {op.strip()} s3://{bucket}/"), text
        assert "404 NoSuchBucket" in text and f"bucket {bucket!r} does not exist" in text
        assert err.code == "NoSuchBucket" and not err.transient
    assert "head_bucket" not in store.request_counts


async def test_connect_to_missing_bucket_on_moto(moto_endpoint: str) -> None:
    with pytest.raises(StorageError, match="does not exist") as info:
        await connect(endpoint=moto_endpoint, bucket=_missing_bucket_name(), region="us-east-1")
    assert not isinstance(info.value, ObjectNotFound)


# -- recorded obstore texts ----------------------------------------------------------

_PERFORMING = "Error performing {m} http://127.0.0.1:8772/b/k in 13.9ms, after 10 retries, max_retries: 10, retry_timeout: 180s  - "


def _status_text(status: str, body: str, m: str = "GET") -> str:
    return ("Generic S3 error: " + _PERFORMING.format(m=m)
            + f"Server returned non-2xx status code: {status}: {body}"
            + "\n\nDebug source:\nGeneric {\n    store: \"S3\",\n    source: RetryError(...)\n}")


def _transport_text(inner: str) -> str:
    return ("Generic S3 error: " + _PERFORMING.format(m="GET") + "HTTP error: error sending request"
            + "\n\nDebug source:\nGeneric {\n    store: \"S3\",\n    source: RetryError(\n"
            + "        RetryErrorImpl {\n            method: GET,\n            inner: Http(\n"
            + inner + "\n            ),\n        },\n    ),\n}")


_XML = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{msg}</Message></Error>'

RECORDED: list[tuple[str, BaseException, str, int | None, str | None, bool, str]] = [
    # (case, exception, expected start after "failed: ", status, code, transient, hint part)
    ("503 SlowDown", GenericError(_status_text("503 Service Unavailable", _XML.format(
        code="SlowDown", msg="Please reduce your request rate."))),
     "503 SlowDown: Please reduce your request rate.", 503, "SlowDown", True, "throttling"),
    ("500", GenericError(_status_text("500 Internal Server Error", _XML.format(
        code="InternalError", msg="We encountered an internal error. Please try again."))),
     "500 InternalError: We encountered an internal error.", 500, "InternalError", True, "retry later"),
    ("429", GenericError(_status_text("429 Too Many Requests", _XML.format(
        code="SlowDown", msg="Please reduce your request rate."))),
     "429 SlowDown", 429, "SlowDown", True, "throttling"),
    ("503 HEAD, no body", GenericError(_status_text("503 Service Unavailable", "", m="HEAD")),
     "503 Service Unavailable (server error", 503, None, True, "retry later"),
    ("502 proxy HTML", GenericError(_status_text("502 Bad Gateway",
                                                 "<html><body><h1>502 Bad Gateway</h1>\nnginx</body></html>")),
     "502 Bad Gateway: 502 Bad Gateway nginx", 502, None, True, "retry later"),
    ("403 key", PermissionDeniedError(
        "The operation lacked the necessary privileges to complete for path k: "
        + _PERFORMING.format(m="GET") + "Server returned non-2xx status code: 403 Forbidden: "
        + _XML.format(code="InvalidAccessKeyId",
                      msg="The AWS Access Key Id you provided does not exist in our records.")),
     "403 InvalidAccessKeyId: The AWS Access Key Id", 403, "InvalidAccessKeyId", False, "check the credentials"),
    ("403 signature", PermissionDeniedError(_status_text("403 Forbidden", _XML.format(
        code="SignatureDoesNotMatch", msg="The request signature we calculated does not match."))),
     "403 SignatureDoesNotMatch", 403, "SignatureDoesNotMatch", False, "wrong secret key"),
    ("400 region", GenericError(_status_text("400 Bad Request", _XML.format(
        code="AuthorizationHeaderMalformed", msg="the region 'us-east-1' is wrong; expecting 'eu-west-1'"))),
     "400 AuthorizationHeaderMalformed", 400, "AuthorizationHeaderMalformed", False, "wrong region"),
    ("refused", GenericError(_transport_text(
        "HttpError {\n kind: Connect,\n source: reqwest::Error {\n ConnectError(\n \"tcp connect error\",\n"
        " 127.0.0.1:1,\n Os {\n code: 111,\n kind: ConnectionRefused,\n message: \"Connection refused\",\n }")),
     "connection refused: cannot connect to 127.0.0.1:1 after 10 retries", None, None, True, "server running?"),
    ("reset", GenericError(_transport_text(
        "HttpError {\n kind: Interrupted,\n hyper::Error(\n Io,\n Os {\n code: 104,\n"
        " kind: ConnectionReset,\n message: \"Connection reset by peer\",\n }")),
     "connection reset:", None, None, True, "restarting"),
    ("closed", GenericError(_transport_text(
        "HttpError {\n kind: Request,\n hyper::Error(\n IncompleteMessage,\n ),")),
     "connection closed:", None, None, True, "restarting"),
    ("timeout", GenericError(_transport_text(
        "HttpError {\n kind: Timeout,\n source: reqwest::Error {\n kind: Request,\n source: TimedOut,\n }")),
     "timeout: no answer from 127.0.0.1:1 in time", None, None, True, "unreachable"),
    ("dns", GenericError(_transport_text(
        "HttpError {\n kind: Connect,\n ConnectError(\n \"dns error\",\n Custom {\n kind: Uncategorized,\n"
        " error: \"failed to lookup address information: Name or service not known\",\n }")),
     "DNS lookup failed: 127.0.0.1:1: failed to lookup address information", None, None, True, "host name"),
    ("tls", GenericError(_transport_text(
        "HttpError {\n kind: Connect,\n Custom {\n kind: Other,\n error: Custom {\n kind: InvalidData,\n"
        " error: InvalidMessage(\n InvalidContentType,\n ),\n }")),
     "TLS error:", None, None, False, "https://"),
    ("not http", GenericError(_transport_text(
        "HttpError {\n kind: Unknown,\n hyper::Error(\n Parse(\n Version,\n ),\n ),")),
     "protocol error:", None, None, False, "S3 endpoint?"),
    ("redirect", GenericError(
        "Generic S3 error: Error performing GET http://127.0.0.1:8772/b/k in 1.4ms - Received redirect "
        "without LOCATION, this normally indicates an incorrectly configured region\n\nDebug source:\n..."),
     "redirect:", None, None, False, "wrong region"),
    ("unknown", GenericError("Generic S3 error: Content-Range header not present in partial response"
                             "\n\nDebug source:\nGeneric {\n    store: \"S3\",\n    source: NoContentRange,\n}"),
     "error: Content-Range header not present in partial response", None, None, False, ""),
]


@pytest.fixture
def offline_store() -> S3Store:
    return S3Store("b", endpoint="http://127.0.0.1:1", region="us-east-1",
                   access_key_id="k", secret_access_key="s")


@pytest.mark.parametrize("case", RECORDED, ids=[c[0] for c in RECORDED])
async def test_recorded_obstore_texts_map_to_one_line(case: tuple, offline_store: S3Store) -> None:  # type: ignore[type-arg]
    _, original, start, status, code, transient, hint = case
    offline_store._bucket_probe = (None, time.monotonic() + 3600)  # no probe: offline
    with pytest.raises(StorageError) as info:
        async with offline_store._errors("GET", "k"):
            raise original
    err = info.value
    text = _assert_one_line(err)
    assert err.__cause__ is original
    assert text.startswith("S3 GET s3://b/k failed: " + start), text
    assert (err.status, err.code, err.transient) == (status, code, transient), text
    assert hint in text and (not hint or hint in (err.hint or "")), text


async def test_not_found_precondition_and_missing_ok_keep_their_meaning(offline_store: S3Store) -> None:
    no_key = FileNotFoundError(
        "Object at location k not found: Error performing GET http://h/b/k in 2ms - Server returned "
        "non-2xx status code: 404 Not Found: " + _XML.format(code="NoSuchKey", msg="The specified key does not exist.")
    )
    with pytest.raises(ObjectNotFound) as nf:
        async with offline_store._errors("GET", "k"):
            raise no_key
    assert str(nf.value) == "S3 GET s3://b/k failed: 404 NoSuchKey: The specified key does not exist."
    with pytest.raises(PreconditionFailed, match="If-Match on a missing object"):
        async with offline_store._errors("PUT", "k", if_match=True):
            raise no_key
    async with offline_store._errors("DELETE", "k", missing_ok=True):
        raise no_key  # swallowed
    with pytest.raises(PreconditionFailed) as pf:
        async with offline_store._errors("PUT", "k"):
            raise PreconditionError(_status_text("412 Precondition Failed", _XML.format(
                code="PreconditionFailed", msg="At least one of the pre-conditions you specified did not hold")))
    assert pf.value.status == 412 and not pf.value.transient
    # a missing bucket is never swallowed nor taken for a lost precondition
    no_bucket = _XML.format(code="NoSuchBucket", msg="The specified bucket does not exist")
    for exc_type, kwargs in ((FileNotFoundError, {"missing_ok": True}), (PreconditionError, {"if_match": True})):
        with pytest.raises(StorageError) as nb:
            async with offline_store._errors("PUT", "k", **kwargs):
                raise exc_type(_status_text("404 Not Found", no_bucket))
        assert type(nb.value) is StorageError and "bucket 'b' does not exist" in str(nb.value)


def test_storage_error_stays_compatible_and_derives_transient() -> None:
    plain = StorageError("boom", "k")
    assert (str(plain), plain.key, plain.operation, plain.status, plain.code, plain.hint) == (
        "boom", "k", None, None, None, None)
    assert plain.transient is False
    assert StorageError("x", status=503).transient
    assert StorageError("x", status=429).transient
    assert StorageError("x", status=400, code="RequestTimeout").transient
    assert not StorageError("x", status=404, code="NoSuchBucket").transient
    assert not StorageError("x", status=403).transient
    assert StorageError("x", transient=True).transient
    assert not StorageError("x", status=501, transient=False).transient
    assert isinstance(ObjectNotFound("gone", "k"), StorageError)


# -- local directory -----------------------------------------------------------------


async def test_local_os_errors_are_one_line_with_hint(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    in_the_way = tmp_path / "file"
    in_the_way.write_bytes(b"")
    store = LocalStore(in_the_way)
    with pytest.raises(StorageError) as info:
        await store.put("a/b", b"x")
    text = _assert_one_line(info.value)
    assert text.startswith(f"local PUT {in_the_way} failed: EEXIST: ")
    assert info.value.hint and info.value.operation == "PUT" and info.value.key == "a/b"

    ok = LocalStore(tmp_path / "bucket")
    await ok.put("p/1", b"x")

    def denied(path):  # type: ignore[no-untyped-def]
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(StorageError) as listing:
        await ok.list("p/")
    text = _assert_one_line(listing.value)
    assert text.startswith("local LIST ") and "EACCES: Permission denied (permission denied" in text
    monkeypatch.undo()
    assert await ok.list("missing/") == []  # a missing prefix directory is still empty


# -- ThrottledLog / describe ---------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttled_log_first_then_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    log = logging.getLogger("buquet.test.throttle")
    throttled = ThrottledLog(log, interval=30, clock=clock)
    with caplog.at_level(logging.WARNING, logger=log.name):
        assert throttled.warning("poll", "poll failed: %s", "refused")
        for _ in range(5):
            clock.now += 5
            assert not throttled.warning("poll", "poll failed: %s", "refused")
        assert throttled.warning("other", "other failed")  # another key: logged at once
        clock.now += 6  # 31 s after the first line
        assert throttled.warning("poll", "poll failed: %s", "still refused")
        clock.now += 31  # one more after a quiet interval: nothing to report as repeated
        assert throttled.warning("poll", "poll failed: %s", "again")
    assert [r.getMessage() for r in caplog.records] == [
        "poll failed: refused",
        "other failed",
        "poll failed: still refused (repeated 5 times in the last 31s)",
        "poll failed: again",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_throttled_log_clear_and_percent_signs(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    log = logging.getLogger("buquet.test.throttle2")
    throttled = ThrottledLog(log, interval=30, clock=clock)
    with caplog.at_level(logging.INFO, logger=log.name):
        throttled.error("k", "disk 100% full")
        throttled.error("k", "disk 100% full")
        throttled.error("k", "disk 100% full")
        assert throttled.clear("k") == 2  # recovered: two lines were never shown
        assert throttled.clear("k") == 0
        assert throttled.error("k", "disk 100% full")  # logged at once after clear
        throttled.error("k", "disk 100% full")
        clock.now += 30
        throttled.error("k", "disk 100% full")
        throttled.info("quiet", "x")
    assert [r.getMessage() for r in caplog.records] == [
        "disk 100% full",
        "disk 100% full",
        "disk 100% full (repeated 1 times in the last 30s)",
        "x",
    ]


def test_throttled_log_bounds_its_memory() -> None:
    clock = _Clock()
    throttled = ThrottledLog(logging.getLogger("buquet.test.throttle3"), clock=clock, max_keys=10)
    logging.getLogger("buquet.test.throttle3").setLevel(logging.WARNING)
    for i in range(100):
        throttled.warning(i, "x")
    assert len(throttled._entries) <= 10
    assert throttled.warning(99, "x") is False  # recent keys are kept


def test_describe_is_one_line() -> None:
    err = StorageError("S3 GET s3://b/k failed: 503 SlowDown: slow (retry later)", "k")
    assert describe(err) == "S3 GET s3://b/k failed: 503 SlowDown: slow (retry later)"
    assert describe(ValueError("bad\nvalue")) == "ValueError: bad value"
    assert describe(RuntimeError()) == "RuntimeError"
    assert len(describe(RuntimeError("x" * 2000))) == 500
    assert error_key(StorageError("m", operation="GET", status=503, code="SlowDown")) == (
        "StorageError", "GET", 503, "SlowDown")
    assert error_key(KeyError("k")) == ("KeyError",)
