"""Configuration in one place: defaults, environment variables, and the bucket's settings.

Every surface that has a setting — :func:`buquet.connect`, ``WorkerRunOptions``, the
CLI's options, the Lambda handlers' environment and the CDK app's context — takes its
default from the constants here, so a default is typed once.

Environment variables read by :func:`store_from_env` (and so by ``connect()``):

=====================  ====================================================
``S3_BUCKET``          the queue's bucket (S3 or an S3-compatible server)
``S3_ENDPOINT``        an S3-compatible endpoint URL; unset for AWS
``S3_REGION``          the region (``AWS_REGION`` is the fallback)
``BUQUET_LOCAL_DIR``   a local directory store instead of S3
``BUQUET_PREFIX``      a key prefix inside the bucket
=====================  ====================================================

Configuration files and profiles (``config.toml``, ``./.buquet.toml``, ``--config``,
``[profiles.<name>]``) and every ``BUQUET_*`` worker/monitor variable:
:func:`load_config` → :class:`Config`, :func:`validate_config`,
:func:`apply_worker_config` (implemented in ``buquet._config_files``, public here).
``connect()`` uses the files' ``[default]`` through :func:`with_file_defaults`.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

from .keys import KeyLayout
from .errors import ConfigurationError, ObjectNotFound, PreconditionFailed, ValidationError
from .storage.base import ObjectStore

# ------------------------------------------------------------------ defaults
#: shards of a new bucket (shards "0".."3", the Quick Start's worker list)
DEFAULT_SHARD_COUNT = 4
MAX_SHARD_COUNT = 16**4  # shard_prefix_len=4
#: Queue.submit defaults
DEFAULT_TIMEOUT_SECONDS = 300
DEFAULT_MAX_RETRIES = 3
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
MAX_RETRIES_LIMIT = 1000
#: inputs and outputs whose compact JSON is larger go to payload objects
#: (``payloads/<task_id>/input.json``), never inline in the task object
PAYLOAD_THRESHOLD_BYTES = 256 * 1024
#: the largest input or output accepted at all (compact JSON)
MAX_PAYLOAD_BYTES = 32 * 1024 * 1024
#: idempotency records live this long unless ``idempotency_ttl_days`` says otherwise
DEFAULT_IDEMPOTENCY_TTL_DAYS = 30
#: worker defaults (WorkerRunOptions, `buquet worker`, the Lambda worker)
DEFAULT_POLL_INTERVAL_MS = 50
DEFAULT_MAX_POLL_INTERVAL_MS = 5000
DEFAULT_MAX_CONCURRENCY = 8
DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_SHUTDOWN_GRACE_SECONDS = 30.0
DEFAULT_MONITOR_INTERVAL_SECONDS = 10.0
DEFAULT_SCHEDULER_INTERVAL_SECONDS = 10.0
#: a worker re-writes its registration object (``workers/<worker_id>.json``) this often
DEFAULT_HEARTBEAT_INTERVAL_SECONDS = 10.0
#: a registration not refreshed for this long means the worker is gone
DEFAULT_WORKER_HEALTH_THRESHOLD_SECONDS = 60.0
#: the monitor's task-object sweep (retention, index repair): period and page size
DEFAULT_SWEEP_INTERVAL_SECONDS = 300.0
DEFAULT_SWEEP_PAGE_SIZE = 1000
#: shard leases (ShardLeaseConfig)
DEFAULT_SHARDS_PER_WORKER = 16
DEFAULT_SHARD_LEASE_TTL_SECONDS = 30
DEFAULT_SHARD_LEASE_RENEWAL_SECONDS = 10
#: serverless defaults (Lambda handlers and the CDK app)
DEFAULT_SAFETY_MARGIN_SECONDS = 10.0
DEFAULT_WAIT_FOR_DUE_SECONDS = 5.0
DEFAULT_DRAIN_LAG_SECONDS = 30.0
DEFAULT_STALL_SECONDS = 60.0

ENV_BUCKET = "S3_BUCKET"
ENV_ENDPOINT = "S3_ENDPOINT"
ENV_REGION = "S3_REGION"
ENV_LOCAL_DIR = "BUQUET_LOCAL_DIR"
ENV_PREFIX = "BUQUET_PREFIX"
ENV_SHARD_PREFIX_LEN = "BUQUET_SHARD_PREFIX_LEN"
CONFIG_VERSION = 1


# ----------------------------------------------------------- number checks
def finite_number(value: Any, field: str, lo: float, hi: float) -> float:
    """A real number (int or float, not bool, not NaN/±inf) with ``lo <= value <= hi``.

    Raises:
        ValidationError: names ``field`` and the range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationError(field, f"must be a finite number, got {value!r}")
    if not lo <= value <= hi:
        raise ValidationError(field, f"must be between {lo:g} and {hi:g}, got {value!r}")
    return float(value)


def env_number(env: Mapping[str, str | None], name: str, default: float, lo: float, hi: float) -> float:
    """A number from environment variable ``name`` (``default`` when unset or empty).

    Raises:
        ConfigurationError: not a finite number in ``[lo, hi]`` (names the variable).
    """
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"environment variable {name}={raw!r} is not a number") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ConfigurationError(f"environment variable {name}={raw!r} must be between {lo:g} and {hi:g}")
    return value


def env_int(env: Mapping[str, str | None], name: str, default: int | None, lo: int, hi: int) -> int | None:
    """An integer from environment variable ``name`` (``default`` when unset or empty).

    Raises:
        ConfigurationError: not an integer in ``[lo, hi]`` (names the variable).
    """
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"environment variable {name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise ConfigurationError(f"environment variable {name}={raw!r} must be between {lo} and {hi}")
    return value


# ------------------------------------------------------------------- stores
def store_from_env(
    endpoint: str | None = None,
    bucket: str | None = None,
    region: str | None = None,
    local_dir: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ObjectStore:
    """The store that arguments and environment describe, first match wins:
    ``local_dir``/``BUQUET_LOCAL_DIR`` → :class:`~buquet.LocalStore`;
    ``bucket``/``S3_BUCKET`` → :class:`~buquet.storage.s3.S3Store` with
    ``endpoint``/``S3_ENDPOINT`` and ``region``/``S3_REGION`` (else ``AWS_REGION``).

    Raises:
        ConfigurationError: nothing configured (the message names the variables).
    """
    env = os.environ if env is None else env
    local = local_dir or env.get(ENV_LOCAL_DIR)
    bucket = bucket or env.get(ENV_BUCKET)
    if local:
        from .storage.local import LocalStore

        return LocalStore(local)
    if bucket:
        from .storage.s3 import S3Store

        return S3Store(
            bucket,
            endpoint=endpoint or env.get(ENV_ENDPOINT) or None,
            region=region or env.get(ENV_REGION) or env.get("AWS_REGION") or None,
        )
    raise ConfigurationError(
        "no queue store configured: pass bucket= (or set S3_BUCKET, with S3_ENDPOINT "
        "and S3_REGION as needed) for S3, local_dir= (or set BUQUET_LOCAL_DIR) for a "
        "local directory, or store= for any ObjectStore such as MemoryStore()"
    )


def prefix_from_env(prefix: str | None, env: Mapping[str, str] | None = None) -> str:
    """``prefix`` if given, else ``BUQUET_PREFIX``, else ``""``."""
    env = os.environ if env is None else env
    return prefix if prefix is not None else env.get(ENV_PREFIX, "")


def shard_count_from(
    shard_count: int | None, shard_prefix_len: int | None, env: Mapping[str, str] | None = None
) -> int | None:
    """The shard count a client asks for: ``shard_count``, or ``16 ** shard_prefix_len``
    (argument, else env ``BUQUET_SHARD_PREFIX_LEN``); ``None`` = the bucket's own.

    Raises:
        ValidationError: ``shard_prefix_len`` outside 1–4, ``shard_count`` outside
            1–65536, or the two disagree.
    """
    env = os.environ if env is None else env
    if shard_prefix_len is None:
        raw = (env.get(ENV_SHARD_PREFIX_LEN) or "").strip()
        if raw:
            try:
                shard_prefix_len = int(raw)
            except ValueError:
                raise ValidationError(ENV_SHARD_PREFIX_LEN, f"must be an integer from 1 to 4, got {raw!r}") from None
    if shard_prefix_len is not None:
        if isinstance(shard_prefix_len, bool) or not isinstance(shard_prefix_len, int) or not 1 <= shard_prefix_len <= 4:
            raise ValidationError("shard_prefix_len", f"must be an integer from 1 to 4, got {shard_prefix_len!r}")
        wanted = 16**shard_prefix_len
        if shard_count is not None and shard_count != wanted:
            raise ValidationError("shard_prefix_len", f"shard_prefix_len={shard_prefix_len} means {wanted} shards, "
                                  f"but shard_count={shard_count} was given")
        return wanted
    if shard_count is not None:
        if isinstance(shard_count, bool) or not isinstance(shard_count, int) or not 1 <= shard_count <= MAX_SHARD_COUNT:
            raise ValidationError("shard_count", f"must be an integer from 1 to {MAX_SHARD_COUNT}, got {shard_count!r}")
    return shard_count


def prefix_len_of(shard_count: int) -> int | None:
    """``N`` when a bucket has ``16 ** N`` shards (``N`` ≥ 1), else ``None`` (e.g. the
    default 4-shard bucket)."""
    for n in range(1, 5):
        if shard_count == 16**n:
            return n
    return None


# ------------------------------------------------------------ bucket config
def _parse_shard_count(data: bytes, key: str) -> int:
    try:
        cfg = json.loads(data)
        stored = cfg["shard_count"]
        if isinstance(stored, bool) or not isinstance(stored, int) or not 1 <= stored <= MAX_SHARD_COUNT:
            raise ValueError(f"shard_count must be an integer from 1 to {MAX_SHARD_COUNT}, got {stored!r}")
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        raise ConfigurationError(f"{key} in the bucket is malformed: {exc}") from exc
    return stored


def migration_in_progress(data: bytes) -> str | None:
    """A one-line description when a ``config.json`` body names an unfinished shard
    migration, else ``None`` (``connect()`` refuses such a bucket)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    migration = doc.get("migration") if isinstance(doc, dict) else None
    if not isinstance(migration, dict):
        return None
    return (f"a shard migration is in progress in this bucket (phase {migration.get('phase')!r}, "
            f"{doc.get('shard_count')} shards now, {json.dumps(migration)}); finish it with "
            "`buquet migrate-shards --from N --to M --execute` (the same N and M) before using the queue")


async def load_bucket_config(
    store: ObjectStore, layout: KeyLayout, shard_count: int | None, read_only: bool = False
) -> int:
    """The bucket's shard count from ``config.json`` (one GET), creating the file with
    ``If-None-Match: *`` when it is missing (unless ``read_only``). Two clients
    creating it at once agree: the loser of the conditional create reads the winner's.

    Raises:
        ConfigurationError: ``shard_count`` disagrees with the bucket's, the file is
            malformed, or a shard migration is in progress (``buquet migrate-shards``).
        StorageError: the store cannot be reached.
    """
    key = layout.config()
    try:
        obj = await store.get(key)
    except ObjectNotFound:
        wanted = shard_count or DEFAULT_SHARD_COUNT
        if read_only:
            return wanted
        body = json.dumps({"version": CONFIG_VERSION, "shard_count": wanted}).encode()
        try:
            await store.put(key, body, if_none_match=True)
            return wanted
        except PreconditionFailed:
            obj = await store.get(key)  # another client created it first (or our retry did)
    stored = _parse_shard_count(obj.data, key)
    migrating = migration_in_progress(obj.data)
    if migrating is not None:
        raise ConfigurationError(migrating)
    if shard_count is not None and shard_count != stored:
        raise ConfigurationError(
            f"shard_count={shard_count} was asked for, but this bucket was set up with "
            f"shard_count={stored} ({key}); every client must agree"
        )
    return stored


# ------------------------------------------------------- configuration files
# Files, profiles and the full list of settings live in ._config_files (kept apart for
# size); these are their public names.
from ._config_files import (  # noqa: E402
    ENV_CONFIG,
    ENV_PROFILE,
    KEYS,
    Config,
    MonitorConfig,
    WorkerConfig,
    apply_worker_config,
    config_paths,
    file_defaults,
    load_config,
    user_config_path,
    validate_config,
)

for _public in (Config, WorkerConfig, MonitorConfig, load_config, validate_config, apply_worker_config):
    _public.__module__ = __name__  # documented (and pickled) as buquet.config.<name>


def with_file_defaults(
    endpoint: str | None,
    bucket: str | None,
    region: str | None,
    shard_prefix_len: int | None,
    *,
    want_store: bool,
    want_shards: bool,
    env: Mapping[str, str] | None = None,
) -> tuple[str | None, str | None, str | None, int | None]:
    """``connect()``'s order for each of ``endpoint``, ``bucket``, ``region`` and
    ``shard_prefix_len``: the argument, else its environment variable, else the config
    files' ``[default]`` (``[queue]`` for ``shard_prefix_len``; no profile), else
    unset (for the shard count: the bucket's stored setting). Files are read only when
    something is still missing: ``want_store`` (no ``store=``/``local_dir=``) for the
    location, ``want_shards`` (no ``shard_count=``) for the prefix length.

    Raises:
        ConfigurationError: a config file is not valid TOML.
        ValidationError: a bad value in one of these keys.
    """
    env = os.environ if env is None else env

    def unset(arg: Any, var: str) -> bool:
        return arg is None and not (env.get(var) or "").strip()

    store_keys = want_store and not (env.get(ENV_LOCAL_DIR) or "").strip() and (
        unset(bucket, ENV_BUCKET) or unset(endpoint, ENV_ENDPOINT) or unset(region, ENV_REGION))
    shards_key = want_shards and unset(shard_prefix_len, ENV_SHARD_PREFIX_LEN)
    if not (store_keys or shards_key):
        return endpoint, bucket, region, shard_prefix_len
    files = file_defaults(env)
    if store_keys:
        if unset(bucket, ENV_BUCKET):
            bucket = files.get("bucket")
        if unset(endpoint, ENV_ENDPOINT):
            endpoint = files.get("endpoint")
        if unset(region, ENV_REGION):
            region = files.get("region")
    if shards_key:
        shard_prefix_len = files.get("shard_prefix_len")
    return endpoint, bucket, region, shard_prefix_len
