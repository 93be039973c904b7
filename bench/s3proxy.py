"""A counting HTTP proxy for S3 requests (stdlib only).

Point any S3 client at the proxy instead of the server and it forwards every request
unchanged, counting it by S3 operation and HTTP status. This measures the requests a
client really sends on the wire, whatever the client is (our buquet, the PyPI buquet
0.1.0 written in Rust, boto3 ...), without touching the client.

It is meant for request *counting* runs: the forwarding costs CPU on the same machine,
so time throughput on runs that talk to the server directly.

Control endpoints (answered by the proxy itself, never forwarded):

* ``GET /__proxy__/stats`` — JSON ``{"ops": {op: n}, "detail": {"op status": n}}``
* ``POST /__proxy__/reset`` — zero the counters

Run standalone::

    python bench/s3proxy.py --upstream http://127.0.0.1:8333 --port 0

It prints ``PROXY http://127.0.0.1:PORT`` once listening. Signature checks: SeaweedFS
without an IAM config does not verify request signatures, so forwarding with the
original ``Host`` header is fine there; a server that verifies them also still works
because the request line, signed headers and body are passed through as they are.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}


def classify(method: str, raw_path: str, headers: Any) -> str:
    """Name the S3 operation of a request (path-style addressing: ``/bucket/key``)."""
    parsed = urllib.parse.urlsplit(raw_path)
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    path = parsed.path.lstrip("/")
    bucket_level = "/" not in path or path.endswith("/") and path.count("/") == 1
    if method == "GET":
        if "list-type" in query:
            return "list"
        if bucket_level:
            if "versioning" in query:
                return "get_bucket_versioning"
            if "versions" in query:
                return "list_versions"
            if "location" in query:
                return "get_bucket_location"
            return "list_v1"
        return "get"
    if method == "HEAD":
        return "head_bucket" if bucket_level else "head"
    if method == "PUT":
        if bucket_level:
            if "versioning" in query:
                return "put_bucket_versioning"
            return "create_bucket"
        if "partNumber" in query:
            return "upload_part"
        if headers.get("x-amz-copy-source"):
            return "copy"
        if headers.get("If-None-Match"):
            return "put_if_none_match"
        if headers.get("If-Match"):
            return "put_if_match"
        return "put"
    if method == "DELETE":
        return "delete_bucket" if bucket_level else "delete"
    if method == "POST":
        if "delete" in query:
            return "delete_many"
        if "uploads" in query or "uploadId" in query:
            return "multipart"
        return "post"
    return method.lower()


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops: dict[str, int] = {}
        self.detail: dict[str, int] = {}

    def add(self, op: str, status: int) -> None:
        with self.lock:
            self.ops[op] = self.ops.get(op, 0) + 1
            key = f"{op} {status}"
            self.detail[key] = self.detail.get(key, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"ops": dict(self.ops), "detail": dict(self.detail)}

    def reset(self) -> None:
        with self.lock:
            self.ops.clear()
            self.detail.clear()


def make_handler(upstream: str, counter: Counter) -> type[BaseHTTPRequestHandler]:
    up = urllib.parse.urlsplit(upstream)
    host, port = up.hostname or "127.0.0.1", up.port or 80
    local = threading.local()

    def conn() -> http.client.HTTPConnection:
        c = getattr(local, "conn", None)
        if c is None:
            c = http.client.HTTPConnection(host, port, timeout=60)
            c.connect()
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local.conn = c
        return c

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _control(self) -> bool:
            if not self.path.startswith("/__proxy__/"):
                return False
            if self.path.startswith("/__proxy__/reset"):
                counter.reset()
                body = b"{}"
            else:
                body = json.dumps(counter.snapshot()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True

        def _forward(self) -> None:
            body = self._body()
            if self._control():
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            op = classify(self.command, self.path, self.headers)
            for attempt in range(2):
                c = conn()
                try:
                    c.request(self.command, self.path, body=body, headers=headers)
                    resp = c.getresponse()
                    data = resp.read()  # b"" for HEAD; closes the response either way
                    break
                except (http.client.HTTPException, OSError) as exc:
                    c.close()
                    local.conn = None
                    # Retry only a reused connection the server had closed while idle
                    # (the request was not processed); anything else could double a write.
                    stale = isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))
                    print(f"[s3proxy] upstream {self.command} {self.path}: {exc!r} (attempt {attempt})", file=sys.stderr)
                    if attempt == 1 or not stale:
                        self.send_error(502)
                        counter.add(op, 502)
                        return
            counter.add(op, resp.status)
            self.send_response_only(resp.status, resp.reason)
            length_sent = False
            for k, v in resp.getheaders():
                lk = k.lower()
                if lk in HOP_BY_HOP:
                    continue
                if lk == "content-length":
                    if self.command != "HEAD":
                        continue
                    length_sent = True
                self.send_header(k, v)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            elif not length_sent:
                self.send_header("Content-Length", "0")
            self.end_headers()
            if data:
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError)):
            return  # a client hung up mid-answer (e.g. a worker process exiting)
        super().handle_error(request, client_address)


class CountingProxy:
    """The proxy in a background thread of this process (tests, small runs)."""

    def __init__(self, upstream: str, port: int = 0) -> None:
        self.counter = Counter()
        self.server = _Server(("127.0.0.1", port), make_handler(upstream, self.counter))
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def fetch_stats(endpoint: str) -> dict[str, Any]:
    with urllib.request.urlopen(endpoint + "/__proxy__/stats", timeout=10) as r:
        return json.loads(r.read())


def reset_stats(endpoint: str) -> None:
    req = urllib.request.Request(endpoint + "/__proxy__/reset", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    counter = Counter()
    server = _Server(("127.0.0.1", args.port), make_handler(args.upstream, counter))
    print(f"PROXY http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
