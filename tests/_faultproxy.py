"""A fault-injecting S3 proxy for the chaos test (stdlib only, loopback, seeded).

Clients (the test's own queue and every ``buquet worker`` process) talk to the proxy
instead of the S3 server; the proxy forwards each request to the upstream unchanged,
except that, driven by one seeded :class:`random.Random`, it injects per request:

* ``http500`` — answers ``500 InternalError`` (S3 XML error body) without forwarding;
* ``http503`` — answers ``503 SlowDown`` without forwarding;
* ``reset`` — resets the client connection (``SO_LINGER`` 0, so the client sees
  ``ECONNRESET``) without forwarding;
* ``lost_response`` — forwards the request, lets the server apply it, reads the
  server's answer and then resets the client connection instead of answering. For a
  conditional PUT this is the ambiguous case: the write landed, the client does not
  know, and its retry meets its own write as ``412``;
* ``delay`` — waits 0.5–3 s (seeded) before forwarding.

The draws come from one RNG in request *arrival* order, so a seed fixes the sequence of
faults; which request meets which fault also depends on how the processes interleave.
Every injected fault is logged (:attr:`FaultProxy.events`: kind, S3 operation, method,
path, upstream status) so a failing task can be traced to the requests that hit it.

With ``strip_headers`` it also removes those request headers before forwarding — with
``rates={}`` and ``strip_headers=("If-Match", "If-None-Match")`` it plays a store that
ignores conditional writes (GCS's S3 API, Garage), for ``buquet doctor``'s tests; the
upstream must not check signatures over them (SeaweedFS without an IAM config does not).

Usage::

    with FaultProxy(upstream, seed=7, rates=FaultProxy.scaled_rates(0.10)) as proxy:
        ... point clients at proxy.endpoint ...
        proxy.faults_enabled = False        # e.g. for a settle phase
        print(proxy.stats())
"""

from __future__ import annotations

import html
import http.client
import os
import random
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KINDS = ("http500", "http503", "reset", "lost_response", "delay")

#: relative weights of the fault kinds; :meth:`FaultProxy.scaled_rates` scales them
DEFAULT_MIX = {"http500": 0.2, "http503": 0.2, "reset": 0.2, "lost_response": 0.25, "delay": 0.15}

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "trailers", "transfer-encoding", "upgrade",
}

_ERRORS = {
    "http500": (500, "Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
    "http503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
}


def _object_key(raw_path: str) -> str:
    """The object key of a path-style request path (``/bucket/key?query`` → ``key``)."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(raw_path).path.lstrip("/"))
    return path.partition("/")[2]


def classify(method: str, raw_path: str, headers: Any) -> str:
    """Name the S3 operation of a path-style request (``/bucket/key?query``)."""
    parsed = urllib.parse.urlsplit(raw_path)
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    path = parsed.path.lstrip("/")
    bucket_level = "/" not in path.rstrip("/")
    if method == "GET":
        if "list-type" in query:
            return "list"
        return "list_v1" if bucket_level else "get"
    if method == "HEAD":
        return "head_bucket" if bucket_level else "head"
    if method == "PUT":
        if bucket_level:
            return "create_bucket"
        if headers.get("If-None-Match"):
            return "put_if_none_match"
        if headers.get("If-Match"):
            return "put_if_match"
        return "put"
    if method == "DELETE":
        return "delete_bucket" if bucket_level else "delete"
    if method == "POST":
        return "delete_many" if "delete" in query else "post"
    return method.lower()


@dataclass(frozen=True)
class FaultEvent:
    """One injected fault."""

    seq: int            # request number at the proxy (arrival order, from 0)
    at: float           # time.time() when the fault was decided
    kind: str           # one of KINDS
    op: str             # S3 operation (see classify)
    method: str
    path: str           # URL-decoded path and query
    upstream_status: int | None = None  # lost_response: what the server answered
    delay_seconds: float | None = None  # delay: how long
    keys: tuple[str, ...] = ()          # delete_many: the keys in the request body

    def describe(self) -> str:
        extra = ""
        if self.upstream_status is not None:
            extra = f" (server answered {self.upstream_status}, client got a reset)"
        elif self.delay_seconds is not None:
            extra = f" ({self.delay_seconds:.2f} s)"
        keys = f" keys={list(self.keys)}" if self.keys else ""
        return f"#{self.seq} {self.kind}{extra}: {self.method} {self.path} [{self.op}]{keys}"


@dataclass(frozen=True)
class JournalEntry:
    """One request that reached the server and touched a journaled key (see
    ``FaultProxy(journal_prefixes=...)``): when it was forwarded and answered."""

    seq: int
    forwarded_at: float
    answered_at: float
    op: str
    keys: tuple[str, ...]   # object keys (without the bucket)
    status: int             # the server's answer
    fault: str | None       # fault injected on this request (delay, lost_response) or None


class FaultProxy:
    """A threaded loopback HTTP proxy that injects S3 faults (see the module docstring).

    Args:
        upstream: base URL of the S3 server, ``http://host:port``.
        seed: seed of the fault RNG.
        rates: probability per request of each fault kind (missing kinds: 0); their sum
            must be at most 1. ``None``: :meth:`scaled_rates` of 10 %.
        delay_range: (min, max) seconds of a ``delay`` fault.
        port: listening port on 127.0.0.1 (0: any free port).
        journal_prefixes: object-key prefixes (e.g. ``("ready/", "leases/")``) whose
            PUTs and deletes reaching the server are recorded in :attr:`journal`.
    """

    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 0,
        rates: dict[str, float] | None = None,
        delay_range: tuple[float, float] = (0.5, 3.0),
        port: int = 0,
        journal_prefixes: tuple[str, ...] = (),
        strip_headers: tuple[str, ...] = (),
    ) -> None:
        rates = dict(self.scaled_rates(0.10) if rates is None else rates)
        unknown = set(rates) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {KINDS}")
        if any(r < 0 for r in rates.values()) or sum(rates.values()) > 1:
            raise ValueError(f"fault rates must be >= 0 and sum to at most 1: {rates}")
        self.upstream = upstream.rstrip("/")
        self.seed = seed
        self.rates = {k: float(rates.get(k, 0.0)) for k in KINDS}
        self.delay_range = delay_range
        #: switch: False forwards everything untouched (counting goes on)
        self.faults_enabled = True
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._seq = 0
        self.requests: dict[str, int] = {}                 # op -> requests seen
        self.faults: dict[str, int] = {k: 0 for k in KINDS}  # kind -> faults injected
        self.faults_by_op: dict[str, dict[str, int]] = {}  # op -> kind -> n
        self.statuses: dict[str, int] = {}                 # "op status" -> n (answers really sent)
        self.events: list[FaultEvent] = []
        self.journal_prefixes = journal_prefixes
        self.journal: list[JournalEntry] = []
        #: request headers removed before forwarding (e.g. ``If-Match``/``If-None-Match``:
        #: a store that ignores conditional writes), and how many of each were removed
        self.strip_headers = tuple(h.lower() for h in strip_headers)
        self.stripped: dict[str, int] = {h: 0 for h in strip_headers}
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    @staticmethod
    def scaled_rates(total: float, mix: dict[str, float] | None = None) -> dict[str, float]:
        """Per-kind rates summing to ``total``, in the proportions of ``mix``."""
        mix = mix or DEFAULT_MIX
        weight = sum(mix.values())
        return {k: total * w / weight for k, w in mix.items()}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FaultProxy":
        self._server = _Server(("127.0.0.1", self._port), _make_handler(self))
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ decisions
    def _decide(self, method: str, raw_path: str, op: str, keys: tuple[str, ...] = ()) -> tuple[int, str | None, float]:
        """(seq, fault kind or None, delay seconds) for one request, counted."""
        with self._lock:
            seq = self._seq
            self._seq += 1
            self.requests[op] = self.requests.get(op, 0) + 1
            # draw even with faults off, so the sequence of draws is the same per request
            r = self._rng.random()
            delay = self._rng.uniform(*self.delay_range)
            if not self.faults_enabled:
                return seq, None, 0.0
            kind = None
            acc = 0.0
            for k in KINDS:
                acc += self.rates[k]
                if r < acc:
                    kind = k
                    break
            if kind is not None:
                self.faults[kind] += 1
                per_op = self.faults_by_op.setdefault(op, {})
                per_op[kind] = per_op.get(kind, 0) + 1
                if kind != "lost_response":  # logged once the server's answer is known
                    self.events.append(FaultEvent(
                        seq, time.time(), kind, op, method, urllib.parse.unquote(raw_path),
                        delay_seconds=delay if kind == "delay" else None, keys=keys))
            return seq, kind, delay

    def _log_lost(self, seq: int, op: str, method: str, raw_path: str, status: int, keys: tuple[str, ...]) -> None:
        with self._lock:
            self.events.append(FaultEvent(seq, time.time(), "lost_response", op, method,
                                          urllib.parse.unquote(raw_path), upstream_status=status, keys=keys))

    def _journal(self, entry: JournalEntry) -> None:
        with self._lock:
            self.journal.append(entry)

    def journal_for(self, key: str) -> list[JournalEntry]:
        """Requests that wrote or deleted ``key`` at the server, in answer order."""
        with self._lock:
            return sorted((e for e in self.journal if key in e.keys), key=lambda e: e.answered_at)

    def _answered(self, op: str, status: int) -> None:
        with self._lock:
            key = f"{op} {status}"
            self.statuses[key] = self.statuses.get(key, 0) + 1

    # ------------------------------------------------------------------ reading
    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters."""
        with self._lock:
            return {
                "seed": self.seed,
                "requests": sum(self.requests.values()),
                "requests_by_op": dict(sorted(self.requests.items())),
                "faults": sum(self.faults.values()),
                "faults_by_kind": dict(self.faults),
                "faults_by_op": {op: dict(k) for op, k in sorted(self.faults_by_op.items())},
                "answers": dict(sorted(self.statuses.items())),
            }

    def events_matching(self, text: str) -> list[FaultEvent]:
        """Injected faults whose (decoded) path, or one of whose DeleteObjects keys,
        contains ``text`` (e.g. a task id or an object key)."""
        with self._lock:
            return [e for e in self.events if text in e.path or any(text in k for k in e.keys)]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)):
            return  # a client hung up (a SIGKILLed worker, a client-side timeout)
        super().handle_error(request, client_address)


def _make_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    up = urllib.parse.urlsplit(proxy.upstream)
    host, port = up.hostname or "127.0.0.1", up.port or 80
    local = threading.local()

    def upstream_conn() -> http.client.HTTPConnection:
        c = getattr(local, "conn", None)
        if c is None:
            c = http.client.HTTPConnection(host, port, timeout=60)
            c.connect()
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local.conn = c
        return c

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

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

        def _reset(self) -> None:
            """Abort the client connection: RST (SO_LINGER 0) instead of FIN."""
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                # close the descriptor now, although rfile/wfile still refer to the
                # socket object (which is left holding no descriptor)
                os.close(self.connection.detach())
            except OSError:
                pass

        def _error(self, kind: str) -> None:
            status, reason, code, message = _ERRORS[kind]
            resource = urllib.parse.urlsplit(self.path).path
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message>"
                f"<Resource>{resource}</Resource><RequestId>faultproxy</RequestId></Error>"
            ).encode()
            self.send_response_only(status, reason)
            self.send_header("Date", self.date_time_string())
            self.send_header("Content-Type", "application/xml")
            self.send_header("x-amz-request-id", "faultproxy")
            self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _upstream(self, body: bytes) -> tuple[http.client.HTTPResponse, bytes] | None:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            for name in [k for k in headers if k.lower() in proxy.strip_headers]:
                del headers[name]
                with proxy._lock:
                    for h in proxy.stripped:
                        if h.lower() == name.lower():
                            proxy.stripped[h] += 1
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            for attempt in range(2):
                c = upstream_conn()
                try:
                    c.request(self.command, self.path, body=body, headers=headers)
                    resp = c.getresponse()
                    return resp, resp.read()
                except (http.client.HTTPException, OSError) as exc:
                    c.close()
                    local.conn = None
                    # retry only a kept-alive connection the server had closed while idle
                    # (the request was not processed); anything else could double a write
                    stale = isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))
                    if attempt == 1 or not stale:
                        print(f"[faultproxy] upstream {self.command} {self.path}: {exc!r}", file=sys.stderr)
                        return None
            return None

        def _handle(self) -> None:
            body = self._body()
            op = classify(self.command, self.path, self.headers)
            keys: tuple[str, ...] = ()
            if op == "delete_many":
                keys = tuple(html.unescape(k.decode("utf-8", "replace")) for k in re.findall(rb"<Key>(.*?)</Key>", body))
            seq, kind, delay = proxy._decide(self.command, self.path, op, keys)
            if kind in ("http500", "http503"):
                self._error(kind)
                proxy._answered(op, _ERRORS[kind][0])
                return
            if kind == "reset":
                self._reset()
                return
            if kind == "delay":
                time.sleep(delay)
            forwarded_at = time.time()
            got = self._upstream(body)
            if got is None:
                self.send_error(502)
                proxy._answered(op, 502)
                return
            resp, data = got
            if proxy.journal_prefixes and op in ("put", "put_if_match", "put_if_none_match", "delete", "delete_many"):
                objects = keys or (_object_key(self.path),)
                objects = tuple(k for k in objects if k.startswith(proxy.journal_prefixes))
                if objects:
                    proxy._journal(JournalEntry(seq, forwarded_at, time.time(), op, objects, resp.status, kind))
            if kind == "lost_response":
                proxy._log_lost(seq, op, self.command, self.path, resp.status, keys)
                self._reset()
                return
            proxy._answered(op, resp.status)
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

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler
