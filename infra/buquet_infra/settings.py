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
``buquet:pythonVersion``           3.12       the functions' runtime: 3.11, 3.12 or 3.13
``buquet:precompile``              auto       ``.pyc`` for that Python in the bundle: ``auto``
                                              (when an interpreter of that version is
                                              found, else a loud warning), ``true``
                                              (required), ``false``
``buquet:workerMemory``            1024       MB
``buquet:workerTimeout``           900        seconds (≤ 900): the longest task that can run
                                              is this minus ``safetyMarginSeconds``; the
                                              synth fails when that is shorter than the
                                              default task timeout (300 s)
``buquet:allowShortWorkerTimeout`` false      ``true``: only warn about the above (all your
                                              tasks set a shorter ``timeout_seconds``)
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
``buquet:bucketName``              none       adopt this existing bucket instead of
                                              creating one
``buquet:alarmTopicArn``           none       SNS topic the alarms notify
``buquet:queueLagAlarmSeconds``    300        the queue-lag alarm's threshold
``buquet:bundle``                  true       ``false``: a placeholder code asset, for fast
                                              template tests (the functions would not run)
=================================  =========  ==============================================

:class:`BuquetQueueProps` holds the same settings (minus the stack name) for the
:class:`~buquet_infra.BuquetQueue` construct, plus the CDK objects a context value
cannot carry (an existing bucket, an SNS topic).

The defaults of the library's own settings (shard count, concurrency, lease, margins,
waits, stall) are :mod:`buquet.config`'s ``DEFAULT_*`` constants, shared with the
library, the CLI and the handlers' environment parsing; the table shows their values.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

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

if TYPE_CHECKING:
    from aws_cdk import aws_s3, aws_sns

DEMO_WORKER = "lambdas.demo:make_worker"
#: the Lambda Python runtimes the bundle can target (``bundle.PYTHON_VERSIONS``)
PYTHON_VERSIONS = ("3.11", "3.12", "3.13")
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
class BuquetQueueProps:
    """Everything a :class:`~buquet_infra.BuquetQueue` is made of (the module docstring
    has each setting's context key, default and meaning; times are seconds, memory MB).

    Attributes:
        worker_spec: ``module:attribute`` of the Worker factory.
        app_path: the user's code to bundle (a package directory or a ``.py`` file).
        prefix: key prefix inside the bucket (``""`` or ending in ``/``).
        shard_count: shards of the queue (written to ``config.json`` at deploy).
        architecture: ``"arm64"`` or ``"x86_64"``.
        python_version: the functions' runtime, ``"3.11"``, ``"3.12"`` or ``"3.13"``.
        precompile: ``None`` (auto), ``True`` (required) or ``False``: ``.pyc`` files
            for ``python_version`` in the bundle.
        worker_memory, worker_timeout: the worker function's MB and seconds.
        allow_short_worker_timeout: only warn (instead of failing) when
            ``worker_timeout - safety_margin_seconds`` is below the default task timeout.
        worker_concurrency, scheduler_concurrency, monitor_concurrency: reserved
            concurrency (``None``: unreserved).
        scheduler_memory, monitor_memory: MB.
        monitor_interval_minutes: period of the monitor rule.
        max_concurrency, lease_seconds, safety_margin_seconds, wait_for_due_seconds,
            drain_lag_seconds, stall_seconds: the handlers' settings (their
            environment variables).
        log_retention_days: CloudWatch Logs retention of every log group.
        metrics_namespace: CloudWatch namespace of the functions' metrics (give each
            queue of one account and region its own).
        task_expiration_days: lifecycle rule on ``tasks/`` (``None``: none).
        remove_bucket: delete the created bucket and its objects with the stack.
        bundle: ``False`` for a placeholder code asset (template tests only).
        bucket: an existing bucket to adopt (``None``: create one). The construct then
            cannot add lifecycle rules or bucket-policy statements to it: see
            :attr:`BuquetQueue.conditional_write_statement`.
        alarm_topic: an SNS topic every alarm notifies (alarm and OK).
        queue_lag_alarm_seconds: the queue-lag alarm fires when the oldest ready task a
            worker event names had waited longer than this.
        export_prefix: when set, every output is exported as ``<export_prefix>-<Name>``
            (``Fn::ImportValue`` from other stacks).
    """

    worker_spec: str = DEMO_WORKER
    app_path: Path | None = None
    prefix: str = ""
    shard_count: int = config.DEFAULT_SHARD_COUNT
    architecture: str = "arm64"
    python_version: str = "3.12"
    precompile: bool | None = None
    worker_memory: int = 1024
    worker_timeout: int = 900
    allow_short_worker_timeout: bool = False
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
    bucket: aws_s3.IBucket | None = None
    alarm_topic: aws_sns.ITopic | None = None
    queue_lag_alarm_seconds: int = 300
    export_prefix: str | None = None

    @property
    def ready_prefix(self) -> str:
        """The key prefix the worker's S3 notification filters on (the layout's
        ``ready_root()``)."""
        return KeyLayout(self.prefix).ready_root()

    @property
    def longest_task_seconds(self) -> int:
        """The longest ``timeout_seconds`` a task may have to run on the worker
        function: its timeout minus the safety margin."""
        return self.worker_timeout - self.safety_margin_seconds

    def check(self) -> list[str]:
        """Validate the combination of settings.

        Returns:
            Warnings to show (the synth goes on).

        Raises:
            ValueError: a setting is out of range or the combination cannot work; the
                message names the setting by its property and context key.
        """
        if not isinstance(self.prefix, str) or not _PREFIX.match(self.prefix) or self.prefix.startswith("/"):
            raise ValueError(f"prefix (buquet:prefix) {self.prefix!r}: a key prefix without * ? $ and no leading /")
        if self.prefix and not self.prefix.endswith("/"):
            raise ValueError(f"prefix (buquet:prefix) {self.prefix!r} must end with '/'")
        if not _SPEC.match(self.worker_spec):
            raise ValueError(f"worker_spec (buquet:worker) {self.worker_spec!r}: expected module:attribute")
        if self.architecture not in ("arm64", "x86_64"):
            raise ValueError(f"architecture (buquet:architecture) {self.architecture!r}: expected arm64 or x86_64")
        if self.python_version not in PYTHON_VERSIONS:
            raise ValueError(
                f"python_version (buquet:pythonVersion) {self.python_version!r}: expected one of {', '.join(PYTHON_VERSIONS)}"
            )
        if not 1 <= self.shard_count <= config.MAX_SHARD_COUNT:
            raise ValueError(f"shard_count (buquet:shardCount) {self.shard_count}: expected 1 to {config.MAX_SHARD_COUNT}")
        if not 30 <= self.worker_timeout <= 900:
            raise ValueError(f"worker_timeout (buquet:workerTimeout) {self.worker_timeout}: expected 30 to 900 s")
        if self.safety_margin_seconds >= self.worker_timeout - 10:
            raise ValueError(
                f"context buquet:safetyMarginSeconds={self.safety_margin_seconds} leaves no time for tasks "
                f"in a {self.worker_timeout} s worker invocation"
            )
        warnings: list[str] = []
        default = config.DEFAULT_TIMEOUT_SECONDS
        if self.longest_task_seconds < default:
            message = (
                f"buquet:workerTimeout={self.worker_timeout} (worker_timeout) minus buquet:safetyMarginSeconds="
                f"{self.safety_margin_seconds} leaves {self.longest_task_seconds} s for a task, less than the "
                f"default task timeout of {default} s (submit(timeout_seconds=...) default): every task submitted "
                f"with the default would never start on Lambda, only be re-announced every minute. Raise "
                f"buquet:workerTimeout to at least {default + self.safety_margin_seconds}, or, if every task is "
                f"submitted with timeout_seconds <= {self.longest_task_seconds}, set "
                f"buquet:allowShortWorkerTimeout=true (allow_short_worker_timeout=True); longer tasks need a "
                f"long-lived worker on the same bucket."
            )
            if not self.allow_short_worker_timeout:
                raise ValueError(message)
            warnings.append(message)
        return warnings


@dataclass(frozen=True)
class DeploySettings(BuquetQueueProps):
    """Parsed ``buquet:*`` context values (see the module docstring): the construct's
    props plus what only the bundled app uses.

    Attributes:
        stack_name: CloudFormation stack name.
        bucket_name: an existing bucket to adopt (``buquet:bucketName``).
        alarm_topic_arn: an SNS topic for the alarms (``buquet:alarmTopicArn``).
    """

    stack_name: str = "Buquet"
    bucket_name: str | None = None
    alarm_topic_arn: str | None = None

    def props(self, **cdk_objects: Any) -> BuquetQueueProps:
        """The construct's props: these settings plus ``cdk_objects`` (``bucket``,
        ``alarm_topic``)."""
        own = {f.name: getattr(self, f.name) for f in fields(BuquetQueueProps)}
        return BuquetQueueProps(**{**own, **cdk_objects})


def _bool(key: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"context {key}={raw!r}: expected true or false")


def _auto_bool(key: str, raw: Any) -> bool | None:
    if raw is None or str(raw).strip().lower() in ("auto", ""):
        return None
    return _bool(key, raw)


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

    Warnings of :meth:`BuquetQueueProps.check` are printed to stderr (the construct
    also records them as CDK warnings).

    Args:
        get: returns the raw value of a context key, or ``None``.
        cwd: base of a relative ``buquet:appPath`` (default: the current directory).

    Raises:
        ValueError: a value is malformed or out of range, or the combination cannot
            work — e.g. a worker timeout too short for the default task timeout
            (names the key).
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

    def choice(options: tuple[str, ...]) -> Callable[[str, Any], str]:
        def parse(key: str, raw: Any) -> str:
            value = str(raw).strip()
            if value not in options:
                raise ValueError(f"context {key}={raw!r}: expected one of {', '.join(options)}")
            return value

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
    take("pythonVersion", "python_version", choice(PYTHON_VERSIONS))
    take("precompile", "precompile", _auto_bool)
    take("allowShortWorkerTimeout", "allow_short_worker_timeout", _bool)
    take("bucketName", "bucket_name", text(re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"), "an S3 bucket name"))
    take("alarmTopicArn", "alarm_topic_arn", text(re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$"), "an SNS topic ARN"))
    take("queueLagAlarmSeconds", "queue_lag_alarm_seconds", _int(1, 86400 * 14))
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
    for warning in cfg.check():
        print(f"[buquet] WARNING: {warning}", file=sys.stderr)
    if cfg.worker_spec != DEMO_WORKER and cfg.app_path is None and cfg.bundle:
        root = cfg.worker_spec.split(":", 1)[0].split(".", 1)[0]
        if root not in ("lambdas", "buquet"):
            raise ValueError(
                f"context buquet:worker={cfg.worker_spec!r} names module {root!r}, but no "
                "buquet:appPath says where its code is (it would not be in the bundle)"
            )
    return cfg


__all__ = ["BuquetQueueProps", "DEMO_WORKER", "DeploySettings", "PYTHON_VERSIONS", "from_context"]
