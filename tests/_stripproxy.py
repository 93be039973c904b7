"""A loopback HTTP proxy in front of an S3 server that drops conditional-write headers
(stdlib only): it behaves like a store that ignores ``If-Match``/``If-None-Match``
(GCS's S3 API, Garage), for ``buquet doctor``'s tests.

Every request is forwarded to the upstream unchanged except that the headers named in
``strip`` are removed; the answer is relayed unchanged. HTTP/1.1 with keep-alive,
``Content-Length`` or chunked request bodies (re-sent with a ``Content-Length``).
The upstream must not check signatures over the stripped headers (SeaweedFS without
an IAM config accepts any signature).

Usage::

    with StripProxy(upstream) as proxy:
        ... point clients at proxy.endpoint ...
        assert proxy.stripped["If-None-Match"] > 0
"""

from __future__ import annotations

import http.client
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
              "te", "trailers", "transfer-encoding", "upgrade"}


class StripProxy:
    """Threaded loopback proxy to ``upstream`` (``http://host:port``) that removes the
    request headers in ``strip``. :attr:`endpoint` is its URL once started;
    :attr:`stripped` counts the headers removed, by name."""

    def __init__(self, upstream: str, strip: tuple[str, ...] = ("If-Match", "If-None-Match")) -> None:
        self.upstream = upstream.rstrip("/")
        self.strip = strip
        self.stripped: dict[str, int] = {h: 0 for h in strip}
        self.requests = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.endpoint = ""

    def start(self) -> "StripProxy":
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        self.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, name="stripproxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "StripProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _count(self, removed: list[str]) -> None:
        with self._lock:
            self.requests += 1
            for h in removed:
                self.stripped[h] += 1


def _handler(proxy: StripProxy) -> type[BaseHTTPRequestHandler]:
    up = urllib.parse.urlsplit(proxy.upstream)
    local = threading.local()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
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

        def _forward(self, headers: dict[str, str], body: bytes) -> tuple[http.client.HTTPResponse, bytes] | None:
            for attempt in range(2):
                conn = getattr(local, "conn", None)
                if conn is None:
                    conn = local.conn = http.client.HTTPConnection(up.hostname or "127.0.0.1", up.port or 80, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    return resp, resp.read()
                except (http.client.HTTPException, OSError) as exc:
                    conn.close()
                    local.conn = None
                    # retry once on a kept-alive connection the server closed while idle
                    if attempt == 1 or not isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError,
                                                            ConnectionResetError)):
                        print(f"[stripproxy] {self.command} {self.path}: {exc!r}", file=sys.stderr)
                        return None
            return None

        def _handle(self) -> None:
            body = self._body()
            removed = [h for h in proxy.strip if h in self.headers]
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in HOP_BY_HOP and k.lower() not in {h.lower() for h in proxy.strip}}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            proxy._count(removed)
            got = self._forward(headers, body)
            if got is None:
                self.send_error(502)
                return
            resp, data = got
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)) if self.command != "HEAD"
                             else resp.getheader("Content-Length") or "0")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler
