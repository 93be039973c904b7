"""Real S3 servers for the test suite, as plain functions (tests/conftest.py wraps them).

``seaweed_endpoint()`` returns ``$BUQUET_TEST_S3_ENDPOINT`` when set, else starts one
throwaway SeaweedFS (scripts/seaweedfs.py) per process, stopped at interpreter exit.
``unique_bucket(endpoint)`` creates a fresh, randomly named bucket there.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import re
import secrets
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SEAWEEDFS_SCRIPT = REPO / "scripts" / "seaweedfs.py"
ENV_ENDPOINT = "BUQUET_TEST_S3_ENDPOINT"
_MODULE_NAME = "buquet_scripts_seaweedfs"

_lock = threading.Lock()
_server: Any = None  # scripts/seaweedfs.py SeaweedServer, once started
_server_owner_pid: int | None = None
_clients: dict[str, Any] = {}


def seaweedfs_module() -> ModuleType:
    """scripts/seaweedfs.py, imported by path (scripts/ is not a package)."""
    mod = sys.modules.get(_MODULE_NAME)
    if mod is None:
        spec = importlib.util.spec_from_file_location(_MODULE_NAME, SEAWEEDFS_SCRIPT)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {SEAWEEDFS_SCRIPT}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[_MODULE_NAME] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[_MODULE_NAME]
            raise
    return mod


def _stop_at_exit() -> None:
    global _server
    server = _server
    # Only the process that started it stops it (a forked child inherits this handler).
    if server is not None and os.getpid() == _server_owner_pid:
        _server = None
        # Throwaway data: no need to wait out weed's ~15 s graceful shutdown.
        server.stop(grace_seconds=3.0)


def seaweed_endpoint() -> str:
    """Endpoint URL of the S3 server the tests use (started on first call)."""
    global _server, _server_owner_pid
    env = os.environ.get(ENV_ENDPOINT, "").strip()
    if env:
        return env.rstrip("/")
    with _lock:
        if _server is not None and not _server.running():
            print(f"[tests] SeaweedFS {_server.endpoint} died; its log ends with:\n"
                  f"{_server.log_tail(20)}\n[tests] starting another", file=sys.stderr)
            _server.stop()
            _server = None
        if _server is None:
            t0 = time.monotonic()
            server = seaweedfs_module().start()
            _server, _server_owner_pid = server, os.getpid()
            atexit.register(_stop_at_exit)
            print(f"[tests] SeaweedFS ready at {server.endpoint} after "
                  f"{time.monotonic() - t0:.1f} s (data {server.data_dir})", file=sys.stderr)
        return str(_server.endpoint)


def s3_client(endpoint: str) -> Any:
    """A cached boto3 S3 client for ``endpoint`` (path-style; env credentials or dummies)."""
    with _lock:
        client = _clients.get(endpoint)
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name=_region(),
                aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "buquet-test"),
                aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "buquet-test"),
                aws_session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
                config=Config(
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 5, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=60,
                ),
            )
            _clients[endpoint] = client
        return client


def _region() -> str:
    return os.environ.get("S3_REGION") or os.environ.get("AWS_REGION") or "us-east-1"


def unique_bucket(endpoint: str, prefix: str = "t") -> str:
    """Create a new bucket with a random name on ``endpoint`` and return its name."""
    from botocore.exceptions import ClientError

    clean = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:40] or "t"
    client = s3_client(endpoint)
    region = _region()
    kwargs: dict[str, Any] = {}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    for _ in range(5):
        name = f"{clean}-{secrets.token_hex(6)}"
        if len(name) < 3:
            name += "-b"
        try:
            client.create_bucket(Bucket=name, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                continue  # taken: not fresh, draw another name
            raise
        return name
    raise RuntimeError(f"could not create a fresh bucket on {endpoint}")
