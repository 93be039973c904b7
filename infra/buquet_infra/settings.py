"""Deployment settings, read from CDK context (``cdk.json`` or ``-c key=value``).

Every key is prefixed ``buquet:``. Values given on the command line arrive as strings,
values in ``cdk.json`` as JSON; both are accepted. A bad value stops the synth with a
``ValueError`` naming the key.

=================================  =========  ==============================================
key                                default    meaning
=================================  =========  ==============================================
``buquet:stackName``               Buquet     CloudFormation stack name
``buquet:worker``                  (demo)     ``module:attribute`` of your Worker factory;
                                              default ``lambdas.demo:make_worker`` (an
                                              ``echo`` task type)
``buquet:appPath``                 none       your code to bundle: a package directory
                                              (copied under its own name) or a ``.py``
                                              file; a ``requirements.txt`` in it (or next to
                                              the file) is installed too. Relative paths
                                              are relative to the directory ``cdk`` runs in.
``buquet:prefix``                  ""         key prefix inside the bucket
``buquet:shardCount``              4          shards of the new bucket (``config.json``)
``buquet:architecture``            arm64      ``arm64`` or ``x86_64``
``buquet:workerMemory``            1024       MB
``buquet:workerTimeout``           900        seconds (≤ 900): the longest task that can run
                                              is this minus ``safetyMarginSeconds``
``buquet:workerConcurrency``       10         reserved concurrency of the worker (``none``:
                                              no reservation, the account limit applies)
``buquet:schedulerConcurrency``    1          reserved concurrency of the scheduler
``buquet:monitorConcurrency``      1          reserved concurrency of the monitor
``buquet:reserveConcurrency``      true       ``false`` drops every reservation (accounts
                                              whose concurrency limit is 10 cannot reserve)
``buquet:schedulerMemory``         256        MB
``buquet:monitorMemory``           256        MB
``buquet:monitorIntervalMinutes``  1          period of the monitor rule
``buquet:maxConcurrency``          8          tasks in flight per worker invocation
``buquet:leaseSeconds``            30         lease of a claim
``buquet:safetyMarginSeconds``     10         time a worker invocation keeps free at its end
``buquet:waitForDueSeconds``       5          a worker event for a task due within this
                                              waits for it
``buquet:drainLagSeconds``         30         a worker invocation polls for other due tasks
                                              only when its event is older than this
``buquet:stallSeconds``            60         the monitor re-announces ready tasks overdue
                                              by this
``buquet:logRetentionDays``        30         CloudWatch Logs retention
``buquet:metricsNamespace``        buquet     CloudWatch metrics namespace
``buquet:taskExpirationDays``      none       lifecycle rule deleting ``tasks/`` objects not
                                              written for this many days (all states!)
``buquet:removeBucket``            false      ``true``: the bucket and its objects are
                                              deleted with the stack
``buquet:bundle``                  true       ``false``: a placeholder code asset, for fast
                                              template tests (the functions would not run)
=================================  =========  ==============================================

The defaults of the library's own settings (shard count, concurrency, lease, margins,
waits, stall) are :mod:`buquet.config`'s ``DEFAULT_*`` constants, shared with the
library, the CLI and the handlers' environment parsing; the table shows their values.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

try:
    try:
        from buquet import config
    except ModuleNotFoundError as exc:  # not installed here: the library of this checkout
        if exc.name != "buquet":
            raise
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from buquet import config
except ModuleNotFoundError as exc:
    raise ImportError(
        "the CDK app takes its defaults and IAM key prefixes from the buquet library, which "
        f"needs {exc.name!r} here: install it (pip install -e .. in infra/)"
    ) from exc
from buquet.keys import KeyLayout  # the bucket's key layout (IAM prefixes, notification filter)

DEMO_WORKER = "lambdas.demo:make_worker"
_SPEC = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# Characters a key prefix may hold: no IAM wildcards (* ?) or policy variables ($).
_PREFIX = re.compile(r"^[A-Za-z0-9!\-_.'()/ ]*$")
_STACK = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")


def _whole(value: float) -> int:
    """A :mod:`buquet.config` default as the whole number of seconds the context and
    the functions' environment use (``30.0`` → ``30``, so ``"30"`` in the template)."""
    if value != int(value):
        raise ValueError(f"buquet.config default {value!r} is not a whole number")
    return int(value)


@dataclass(frozen=True)
class DeploySettings:
    """Parsed ``buquet:*`` context values (see the module docstring)."""

    stack_name: str = "Buquet"
    worker_spec: str = DEMO_WORKER
    app_path: Path | None = None
    prefix: str = ""
    shard_count: int = config.DEFAULT_SHARD_COUNT
    architecture: str = "arm64"
    worker_memory: int = 1024
    worker_timeout: int = 900
    worker_concurrency: int | None = 10
    scheduler_concurrency: int | None = 1
    monitor_concurrency: int | None = 1
    scheduler_memory: int = 256
    monitor_memory: int = 256
    monitor_interval_minutes: int = 1
    max_concurrency: int = config.DEFAULT_MAX_CONCURRENCY
    lease_seconds: int = _whole(config.DEFAULT_LEASE_SECONDS)
    safety_margin_seconds: int = _whole(config.DEFAULT_SAFETY_MARGIN_SECONDS)
    wait_for_due_seconds: int = _whole(config.DEFAULT_WAIT_FOR_DUE_SECONDS)
    drain_lag_seconds: int = _whole(config.DEFAULT_DRAIN_LAG_SECONDS)
    stall_seconds: int = _whole(config.DEFAULT_STALL_SECONDS)
    log_retention_days: int = 30
    metrics_namespace: str = "buquet"
    task_expiration_days: int | None = None
    remove_bucket: bool = False
    bundle: bool = True

    @property
    def ready_prefix(self) -> str:
        """The key prefix the worker's S3 notification filters on (the layout's
        ``ready_root()``)."""
        return KeyLayout(self.prefix).ready_root()


def _bool(key: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"context {key}={raw!r}: expected true or false")


def _int(lo: int, hi: int) -> Callable[[str, Any], int]:
    def parse(key: str, raw: Any) -> int:
        try:
            value = int(str(raw).strip()) if not isinstance(raw, bool) else None
        except ValueError:
            value = None
        if value is None or not lo <= value <= hi:
            raise ValueError(f"context {key}={raw!r}: expected an integer from {lo} to {hi}")
        return value

    return parse


def _optional_int(lo: int, hi: int) -> Callable[[str, Any], int | None]:
    inner = _int(lo, hi)

    def parse(key: str, raw: Any) -> int | None:
        if raw is None or str(raw).strip().lower() in ("none", "null", ""):
            return None
        return inner(key, raw)

    return parse


def from_context(get: Callable[[str], Any], cwd: Path | None = None) -> DeploySettings:
    """Build the settings from a context lookup (``app.node.try_get_context``).

    Args:
        get: returns the raw value of a context key, or ``None``.
        cwd: base of a relative ``buquet:appPath`` (default: the current directory).

    Raises:
        ValueError: a value is malformed or out of range (names the key).
    """
    values: dict[str, Any] = {}

    def take(key: str, field: str, parse: Callable[[str, Any], Any]) -> None:
        raw = get(f"buquet:{key}")
        if raw is not None:
            values[field] = parse(f"buquet:{key}", raw)

    def text(pattern: re.Pattern[str], what: str) -> Callable[[str, Any], str]:
        def parse(key: str, raw: Any) -> str:
            if not isinstance(raw, str) or not pattern.match(raw):
                raise ValueError(f"context {key}={raw!r}: expected {what}")
            return raw

        return parse

    def arch(key: str, raw: Any) -> str:
        value = str(raw).strip().lower().replace("-", "_")
        value = {"x86": "x86_64", "amd64": "x86_64", "aarch64": "arm64"}.get(value, value)
        if value not in ("arm64", "x86_64"):
            raise ValueError(f"context {key}={raw!r}: expected arm64 or x86_64")
        return value

    def path(key: str, raw: Any) -> Path:
        p = Path(str(raw)).expanduser()
        if not p.is_absolute():
            p = (cwd or Path.cwd()) / p
        p = p.resolve()
        if not p.exists():
            raise ValueError(f"context {key}={raw!r}: {p} does not exist")
        if p.is_file() and p.suffix != ".py":
            raise ValueError(f"context {key}={raw!r}: expected a directory or a .py file")
        return p

    def prefix(key: str, raw: Any) -> str:
        value = text(_PREFIX, "a key prefix without * ? $")(key, raw)
        if value and not value.endswith("/"):
            value += "/"
        if value.startswith("/"):
            raise ValueError(f"context {key}={raw!r}: a key prefix must not start with /")
        return value

    take("stackName", "stack_name", text(_STACK, "a CloudFormation stack name"))
    take("worker", "worker_spec", text(_SPEC, "module:attribute, e.g. myapp.tasks:make_worker"))
    take("appPath", "app_path", path)
    take("prefix", "prefix", prefix)
    take("shardCount", "shard_count", _int(1, config.MAX_SHARD_COUNT))
    take("architecture", "architecture", arch)
    take("workerMemory", "worker_memory", _int(128, 10240))
    take("workerTimeout", "worker_timeout", _int(30, 900))
    take("workerConcurrency", "worker_concurrency", _optional_int(1, 10000))
    take("schedulerConcurrency", "scheduler_concurrency", _optional_int(1, 10))
    take("monitorConcurrency", "monitor_concurrency", _optional_int(1, 10))
    take("schedulerMemory", "scheduler_memory", _int(128, 10240))
    take("monitorMemory", "monitor_memory", _int(128, 10240))
    take("monitorIntervalMinutes", "monitor_interval_minutes", _int(1, 60))
    take("maxConcurrency", "max_concurrency", _int(1, 1000))
    take("leaseSeconds", "lease_seconds", _int(3, 3600))
    take("safetyMarginSeconds", "safety_margin_seconds", _int(1, 600))
    take("waitForDueSeconds", "wait_for_due_seconds", _int(0, 600))
    take("drainLagSeconds", "drain_lag_seconds", _int(0, 86400))
    take("stallSeconds", "stall_seconds", _int(0, 86400))
    take("logRetentionDays", "log_retention_days", _int(1, 3653))
    take("metricsNamespace", "metrics_namespace", text(re.compile(r"^[A-Za-z0-9_./#:-]{1,255}$"), "a metrics namespace"))
    take("taskExpirationDays", "task_expiration_days", _optional_int(1, 36500))
    take("removeBucket", "remove_bucket", _bool)
    take("bundle", "bundle", _bool)
    reserve = get("buquet:reserveConcurrency")
    if reserve is not None and not _bool("buquet:reserveConcurrency", reserve):
        values.update(worker_concurrency=None, scheduler_concurrency=None, monitor_concurrency=None)
    cfg = DeploySettings(**values)
    if cfg.safety_margin_seconds >= cfg.worker_timeout - 10:
        raise ValueError(
            f"context buquet:safetyMarginSeconds={cfg.safety_margin_seconds} leaves no time for tasks "
            f"in a {cfg.worker_timeout} s worker invocation"
        )
    if cfg.worker_spec != DEMO_WORKER and cfg.app_path is None and cfg.bundle:
        root = cfg.worker_spec.split(":", 1)[0].split(".", 1)[0]
        if root not in ("lambdas", "buquet"):
            raise ValueError(
                f"context buquet:worker={cfg.worker_spec!r} names module {root!r}, but no "
                "buquet:appPath says where its code is (it would not be in the bundle)"
            )
    return cfg


__all__ = ["DEMO_WORKER", "DeploySettings", "from_context"]
