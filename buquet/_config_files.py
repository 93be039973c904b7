"""Configuration files and profiles (``config.toml``, ``.buquet.toml``). Internal: the
public names are re-exported by :mod:`buquet.config`, the one configuration module.

Lookup, weakest first (each layer overrides the keys it sets):

1. the defaults (in code);
2. the user file ``<user config dir>/buquet/config.toml`` — ``$XDG_CONFIG_HOME/buquet``
   when that variable is set (any OS), else ``~/.config/buquet`` on Linux,
   ``~/Library/Application Support/buquet`` on macOS, ``%APPDATA%\\buquet`` on Windows;
3. ``./.buquet.toml`` (the current directory);
4. the ``--config`` path, else ``BUQUET_CONFIG``;
5. ``[profiles.<name>]`` over ``[default]`` (files merged first);
6. environment variables;
7. command-line flags (``overrides``).

Files merge per key; a profile defined again in a later file replaces the earlier one
as a whole. Tables: ``[default]`` and ``[profiles.<name>]`` hold ``bucket``, ``region``,
``endpoint`` (and may nest ``queue``/``worker``/``monitor`` tables); top-level
``[queue]``, ``[worker]``, ``[worker.polling]``, ``[worker.shard_leasing]``,
``[monitor]`` apply to every profile.
"""

from __future__ import annotations

import logging
import os
import sys
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import ConfigurationError, ValidationError

if TYPE_CHECKING:  # config.py sits below polling.py and worker.py in the import order
    from .polling import PollingStrategy, ShardLeaseConfig
    from .worker import WorkerRunOptions

log = logging.getLogger("buquet.config")

ENV_CONFIG = "BUQUET_CONFIG"
ENV_PROFILE = "BUQUET_PROFILE"
PROJECT_FILE = ".buquet.toml"
INDEX_MODES = ("hybrid", "index", "index-only", "log", "log-scan")
POLLING_STRATEGIES = ("adaptive", "fixed")
SWEEP_MODES = ("continuous", "on_demand")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


# ------------------------------------------------------------- value parsers
def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ValueError(f"must be an integer from {lo} to {hi}, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"must be an integer from {lo} to {hi}, got {value!r}")
        return value

    return parse


def _float(lo: float, hi: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        raw = value
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError(f"must be a number from {lo:g} to {hi:g}, got {raw!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise ValueError(f"must be a number from {lo:g} to {hi:g}, got {raw!r}")  # NaN fails too
        return float(value)

    return parse


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value.strip()


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return value.strip().lower()

    return parse


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"must be true or false, got {value!r}")


def _shards(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [s for s in (p.strip() for p in value.split(",")) if s]
    if not isinstance(value, list) or not value or not all(isinstance(s, str) and s for s in value):
        raise ValueError(f"must be a non-empty list of shard names (env: comma-separated), got {value!r}")
    return [s.strip() for s in value]


@dataclass(frozen=True)
class _Key:
    name: str  # dotted, e.g. "worker.polling.min_interval_ms"
    env: str
    parse: Callable[[Any], Any]
    help: str


#: every setting: dotted key (its place in the files), environment variable, parser
KEYS: tuple[_Key, ...] = (
    _Key("bucket", "S3_BUCKET", _str, "the queue's bucket"),
    _Key("endpoint", "S3_ENDPOINT", _str, "S3-compatible endpoint URL (unset for AWS)"),
    _Key("region", "S3_REGION", _str, "region"),
    _Key("queue.shard_prefix_len", "BUQUET_SHARD_PREFIX_LEN", _int(1, 4), "16**N shards for a new bucket"),
    _Key("worker.poll_interval_ms", "BUQUET_POLL_INTERVAL_MS", _int(1, 3_600_000), "legacy: fixed poll interval, ms"),
    _Key("worker.index_mode", "BUQUET_INDEX_MODE", _choice(*INDEX_MODES), "accepted, no effect"),
    _Key("worker.shards", "BUQUET_SHARDS", _shards, "shards a worker polls"),
    _Key("worker.polling.strategy", "BUQUET_POLLING_STRATEGY", _choice(*POLLING_STRATEGIES), "adaptive or fixed"),
    _Key("worker.polling.min_interval_ms", "BUQUET_POLLING_MIN_INTERVAL_MS", _int(1, 3_600_000), "adaptive: first pause, ms"),
    _Key("worker.polling.max_interval_ms", "BUQUET_POLLING_MAX_INTERVAL_MS", _int(1, 3_600_000), "adaptive: cap, ms"),
    _Key("worker.polling.backoff_multiplier", "BUQUET_POLLING_BACKOFF_MULTIPLIER", _float(1.0, 100.0), "adaptive: growth"),
    _Key("worker.polling.interval_ms", "BUQUET_POLLING_INTERVAL_MS", _int(1, 3_600_000), "fixed: pause, ms"),
    _Key("worker.shard_leasing.enabled", "BUQUET_SHARD_LEASING", _bool, "shard leases on"),
    _Key("worker.shard_leasing.shards_per_worker", "BUQUET_SHARD_LEASING_SHARDS_PER_WORKER", _int(1, 65_536),
         "most shards one worker holds"),
    _Key("worker.shard_leasing.lease_ttl_secs", "BUQUET_SHARD_LEASING_TTL_SECS", _int(1, 86_400), "lease TTL, s"),
    _Key("worker.shard_leasing.renewal_interval_secs", "BUQUET_SHARD_LEASING_RENEW_SECS", _int(1, 86_400),
         "lease renewal period, s"),
    _Key("monitor.check_interval_secs", "BUQUET_MONITOR_CHECK_INTERVAL", _int(1, 86_400), "lease-recovery period, s"),
    _Key("monitor.sweep_interval_secs", "BUQUET_MONITOR_SWEEP_INTERVAL", _int(0, 7 * 86_400), "sweep period, s (0 off)"),
    _Key("monitor.max_tasks_per_scan", "BUQUET_MONITOR_MAX_TASKS_PER_SCAN", _int(1, 1_000_000), "accepted, no effect"),
    _Key("monitor.max_objects_per_sweep", "BUQUET_SWEEPER_MAX_OBJECTS_PER_SWEEP", _int(1, 1000),
         "task objects a sweep lists per shard"),
    _Key("monitor.sweep_mode", "BUQUET_SWEEPER_MODE", _choice(*SWEEP_MODES), "continuous or on_demand"),
)
KEYS_BY_NAME = {k.name: k for k in KEYS}
_PROFILE_KEYS = ("bucket", "endpoint", "region")
_SECTIONS = ("queue", "worker", "monitor")


# ------------------------------------------------------------------ dataclasses
@dataclass
class WorkerConfig:
    """Worker settings from files and environment (``[worker]`` and its subtables).

    ``None`` everywhere means "not configured": the code's own value (``WorkerRunOptions``
    defaults) stands. Applied to a worker by :func:`apply_worker_config`.

    Attributes:
        poll_interval_ms: ``[worker] poll_interval_ms`` — legacy: a fixed pause between
            empty polls, milliseconds (used when ``[worker.polling]`` is absent).
        index_mode: ``hybrid``, ``index``, ``index-only``, ``log`` or ``log-scan``;
            accepted and validated for compatibility with buquet 0.1.0's files, **no
            effect**: buquet has a single index layout.
        shards: shard names (``BUQUET_SHARDS`` is comma-separated); informational for
            ``buquet config``: a :class:`~buquet.Worker` gets its shards from code.
        polling: the :class:`~buquet.PollingStrategy` ``[worker.polling]`` describes.
        shard_leasing: the :class:`~buquet.ShardLeaseConfig` ``[worker.shard_leasing]``
            describes.
    """

    poll_interval_ms: int | None = None
    index_mode: str | None = None
    shards: list[str] | None = None
    polling: PollingStrategy | None = None
    shard_leasing: ShardLeaseConfig | None = None


@dataclass
class MonitorConfig:
    """Monitor settings (``[monitor]``); ``None`` = not configured.

    Attributes:
        check_interval_secs: lease-recovery check period, seconds (→
            ``WorkerRunOptions.monitor_check_interval_s``).
        sweep_interval_secs: task-object sweep period, seconds; 0 = off (→
            ``monitor_sweep_interval_s``).
        max_tasks_per_scan: accepted for compatibility, no effect.
        max_objects_per_sweep: task objects a sweep lists per shard per run, 1–1000 (→
            ``monitor_sweep_page_size``).
        sweep_mode: ``continuous`` (sweep every ``sweep_interval_secs``) or
            ``on_demand`` (a worker's built-in monitor does not sweep).
    """

    check_interval_secs: int | None = None
    sweep_interval_secs: int | None = None
    max_tasks_per_scan: int | None = None
    max_objects_per_sweep: int | None = None
    sweep_mode: str | None = None


@dataclass
class Config:
    """The effective configuration: defaults < config files < profile < environment <
    flags (see :func:`load_config`).

    Attributes:
        bucket: the queue's bucket, ``""`` when unset.
        endpoint: S3-compatible endpoint URL; ``None`` for AWS.
        region: the region (default ``"us-east-1"``).
        shard_prefix_len: ``[queue] shard_prefix_len`` (1–4: 16**N shards for a new
            bucket); ``None`` = the bucket's stored setting.
        worker: :class:`WorkerConfig`.
        monitor: :class:`MonitorConfig`.
        profile: the profile asked for (``None``: ``[default]`` only).
        sources: what contributed, weakest first: file paths, ``"env"``, ``"flags"``.
        settings: every configured key (dotted, e.g. ``"worker.polling.strategy"``) →
            its value as given (after type checks).
        origins: the same keys → where each value came from (``"<path> [default]"``,
            ``"env S3_BUCKET"``, ``"flag"``).
        warnings: unknown keys and an unknown profile (logged; ``config validate``
            reports them).
    """

    bucket: str = ""
    endpoint: str | None = None
    region: str = "us-east-1"
    shard_prefix_len: int | None = None
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    profile: str | None = None
    sources: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------- files
def user_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``<user config dir>/buquet/config.toml``: ``$XDG_CONFIG_HOME/buquet/config.toml``
    when set (any OS), else the platform's user config directory."""
    env = os.environ if env is None else env
    xdg = (env.get("XDG_CONFIG_HOME") or "").strip()
    if xdg:
        base = Path(xdg)
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif sys.platform == "win32":
        base = Path(env.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    else:
        base = Path.home() / ".config"
    return base / "buquet" / "config.toml"


def config_paths(config_path: str | os.PathLike[str] | None = None,
                 env: Mapping[str, str] | None = None) -> list[tuple[str, Path]]:
    """The files :func:`load_config` looks at, weakest first, as ``(role, path)``:
    ``user``, ``project`` (``./.buquet.toml``), and ``explicit`` (``config_path``, else
    ``BUQUET_CONFIG``) when one is given."""
    env = os.environ if env is None else env
    paths = [("user", user_config_path(env)), ("project", Path.cwd() / PROJECT_FILE)]
    chosen = config_path if config_path is not None else (env.get(ENV_CONFIG) or "").strip() or None
    if chosen is not None:
        paths.append(("explicit", Path(chosen).expanduser()))
    return paths


Layer = dict[str, tuple[Any, str]]  # dotted key -> (value, origin)


def _flatten(table: Mapping[str, Any], prefix: str, path: Path, root: str, out: Layer, unknown: list[str],
             allowed_top: tuple[str, ...]) -> None:
    """Dotted keys of ``table`` (a ``[root]`` table of ``path``) into ``out``, each with
    its origin ``"<path> [<table>]"``."""
    section = ".".join(p for p in (root, prefix.rstrip(".")) if p)
    origin = f"{path} [{section}]"
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name in ("queue", "worker", "monitor", "worker.polling", "worker.shard_leasing"):
            _flatten(value, f"{name}.", path, root, out, unknown, allowed_top)
        elif name in KEYS_BY_NAME and ("." in name or name in allowed_top):
            out[name] = (value, origin)
        else:
            unknown.append(f"unknown key {name!r} in {origin}")


def _read_file(path: Path) -> tuple[Layer, dict[str, Layer], list[str]]:
    """One file → (its [default] + top-level sections, its profiles, unknown keys)."""
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"Failed to parse TOML in {path}: {exc}") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    base: Layer = {}
    profiles: dict[str, Layer] = {}
    unknown: list[str] = []
    for key, value in doc.items():
        if key in _SECTIONS and isinstance(value, dict):
            _flatten({key: value}, "", path, "", base, unknown, ())
    default = doc.get("default", {})
    if isinstance(default, dict):
        _flatten(default, "", path, "default", base, unknown, _PROFILE_KEYS)
    raw_profiles = doc.get("profiles", {})
    if isinstance(raw_profiles, dict):
        for name, table in raw_profiles.items():
            if isinstance(table, dict):
                layer: Layer = {}
                _flatten(table, "", path, f"profiles.{name}", layer, unknown, _PROFILE_KEYS)
                profiles[name] = layer
            else:
                unknown.append(f"[profiles.{name}] in {path} is not a table")
    for key, value in doc.items():
        if key not in ("default", "profiles") and not (key in _SECTIONS and isinstance(value, dict)):
            hint = " (put it under [default] or [profiles.<name>])" if key in _PROFILE_KEYS else ""
            unknown.append(f"unknown key {key!r} in {path}{hint}")
        elif key in ("default", "profiles") and not isinstance(value, dict):
            unknown.append(f"{key!r} in {path} must be a table")
    return base, profiles, unknown


def _files(config_path: str | os.PathLike[str] | None, env: Mapping[str, str]
           ) -> tuple[Layer, dict[str, Layer], list[str], list[str]]:
    """Every existing config file merged: (base, profiles, unknown keys, files read)."""
    base: Layer = {}
    profiles: dict[str, Layer] = {}
    unknown: list[str] = []
    read: list[str] = []
    for role, path in config_paths(config_path, env):
        if not path.is_file():
            if role == "explicit":
                raise ConfigurationError(f"config file {path} (from --config or {ENV_CONFIG}) does not exist")
            continue
        b, p, u = _read_file(path)
        base.update(b)
        profiles.update(p)  # a profile defined again replaces the earlier one
        unknown.extend(u)
        read.append(str(path))
    return base, profiles, unknown, read


def _parse(key: _Key, value: Any, where: str) -> Any:
    try:
        return key.parse(value)
    except ValueError as exc:
        if where.startswith("env "):
            raise ValidationError(key.env, f"{exc} (sets {key.name})") from None
        raise ValidationError(key.name, f"{exc} ({where}; env {key.env})") from None


# ------------------------------------------------------------------- loading
def load_config(profile: str | None = None, *, config_path: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """The effective configuration (sync; reads local files only, never the bucket).

    Weakest first: defaults; ``<user config dir>/buquet/config.toml``;
    ``./.buquet.toml``; ``config_path`` (else env ``BUQUET_CONFIG``); the profile's
    ``[profiles.<name>]`` over ``[default]``; environment variables (``S3_BUCKET``,
    ``S3_ENDPOINT``, ``S3_REGION``, ``BUQUET_SHARD_PREFIX_LEN``,
    ``BUQUET_POLL_INTERVAL_MS``, ``BUQUET_INDEX_MODE``, ``BUQUET_SHARDS``,
    ``BUQUET_MONITOR_*``, ``BUQUET_SWEEPER_*``, ``BUQUET_POLLING_*``,
    ``BUQUET_SHARD_LEASING*``; empty values count as unset); ``overrides``.

    Args:
        profile: a ``[profiles.<name>]`` table to apply over ``[default]``; an unknown
            profile is ignored with a warning (logged, and in ``Config.warnings``).
            ``BUQUET_PROFILE`` is read by the CLI, not here.
        config_path: an extra file, strongest of the files (``--config``); must exist.
        env: the environment to read (default ``os.environ``; also used for
            ``XDG_CONFIG_HOME`` and ``BUQUET_CONFIG``).
        overrides: dotted keys (``"bucket"``, ``"worker.polling.strategy"``, ...) →
            values, strongest of all (command-line flags).

    Returns:
        A :class:`Config`. Unknown keys are logged and listed in ``Config.warnings``.

    Raises:
        ConfigurationError: a file is not valid TOML (``"Failed to parse TOML in
            <path>: ..."``), cannot be read, or the explicit file does not exist.
        ValidationError: a bad value; ``field`` is the key (files, flags) or the
            environment variable, the message says the rule and where it came from.
    """
    env = os.environ if env is None else env
    base, profiles, unknown, read = _files(config_path, env)
    effective: Layer = dict(base)
    if profile:
        if profile in profiles:
            effective.update(profiles[profile])
        else:
            unknown.append(f"profile {profile!r} is not defined in any config file "
                           f"({', '.join(read) or 'none found'}); using [default]")
    sources = list(read)
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, (value, origin) in effective.items():
        values[name] = _parse(KEYS_BY_NAME[name], value, origin)
        origins[name] = origin
    used_env = False
    for key in KEYS:
        raw = env.get(key.env)
        if raw is not None and raw.strip() != "":
            values[key.name] = _parse(key, raw, f"env {key.env}")
            origins[key.name] = f"env {key.env}"
            used_env = True
    if used_env:
        sources.append("env")
    for name, value in (overrides or {}).items():
        if name not in KEYS_BY_NAME:
            raise ValidationError(name, f"is not a configuration key (known: {', '.join(KEYS_BY_NAME)})")
        if value is not None:
            values[name] = _parse(KEYS_BY_NAME[name], value, "flag")
            origins[name] = "flag"
            if "flags" not in sources:
                sources.append("flags")
    for message in unknown:
        log.warning("config: %s", message)
    config = _build(values, origins)
    return replace(config, profile=profile or None, sources=sources, warnings=unknown)


def _build(values: dict[str, Any], origins: dict[str, str]) -> Config:
    from .polling import PollingStrategy, ShardLeaseConfig

    g = values.get
    polling = None
    if any(k.startswith("worker.polling.") for k in values):
        strategy = g("worker.polling.strategy", "adaptive")
        try:
            if strategy == "fixed":
                polling = PollingStrategy.fixed(g("worker.polling.interval_ms") or g("worker.poll_interval_ms") or 500)
            else:
                lo = g("worker.polling.min_interval_ms", 100)
                polling = PollingStrategy.adaptive(lo, g("worker.polling.max_interval_ms", max(lo, 5000)),
                                                   g("worker.polling.backoff_multiplier", 2.0))
        except ValidationError as exc:
            name = f"worker.polling.{exc.field}"
            raise ValidationError(name, f"{exc.rule} ({origins.get(name, 'default')})") from None
    leasing = None
    if any(k.startswith("worker.shard_leasing.") for k in values):
        leasing = ShardLeaseConfig(
            bool(g("worker.shard_leasing.enabled", False)),
            g("worker.shard_leasing.shards_per_worker", 16),
            g("worker.shard_leasing.lease_ttl_secs", 30),
            g("worker.shard_leasing.renewal_interval_secs", 10),
        )
    return Config(
        bucket=g("bucket") or "",
        endpoint=g("endpoint") or None,
        region=g("region") or "us-east-1",
        shard_prefix_len=g("queue.shard_prefix_len"),
        worker=WorkerConfig(g("worker.poll_interval_ms"), g("worker.index_mode"), g("worker.shards"), polling, leasing),
        monitor=MonitorConfig(g("monitor.check_interval_secs"), g("monitor.sweep_interval_secs"),
                              g("monitor.max_tasks_per_scan"), g("monitor.max_objects_per_sweep"),
                              g("monitor.sweep_mode")),
        settings=values,
        origins=origins,
    )


def file_defaults(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What ``connect()`` takes from the files: ``bucket``, ``endpoint``, ``region`` of
    ``[default]`` and ``shard_prefix_len`` of ``[queue]`` (no profile, no environment);
    only the keys that are set.

    Raises:
        ConfigurationError: a file is not valid TOML.
        ValidationError: a bad value for one of these keys.
    """
    env = os.environ if env is None else env
    base, _, _, _ = _files(None, env)
    out: dict[str, Any] = {}
    for name, short in (("bucket", "bucket"), ("endpoint", "endpoint"), ("region", "region"),
                        ("queue.shard_prefix_len", "shard_prefix_len")):
        if name in base:
            value, origin = base[name]
            out[short] = _parse(KEYS_BY_NAME[name], value, origin) or None
    return {k: v for k, v in out.items() if v is not None}


# ---------------------------------------------------------------- validation
def validate_config(config: Config) -> list[str]:
    """Problems with ``config``, one sentence each (empty: valid). Checks ranges and
    the rules across keys: a ``fixed`` strategy needs ``interval_ms``, an adaptive
    ``backoff_multiplier`` must be > 1, shard-lease renewal < TTL, shards are lowercase
    hex of ``shard_prefix_len`` characters (or of one length 1–4 when unset), unknown
    keys and an unknown profile. Never raises for a bad value; never writes anything."""
    problems = list(config.warnings)
    s, origins = config.settings, config.origins

    def where(key: str) -> str:
        return f" ({origins[key]})" if key in origins else ""

    if config.shard_prefix_len is not None and not (isinstance(config.shard_prefix_len, int)
                                                    and 1 <= config.shard_prefix_len <= 4):
        problems.append(f"queue.shard_prefix_len must be from 1 to 4, got {config.shard_prefix_len!r}")
    w = config.worker
    if w.index_mode is not None and w.index_mode not in INDEX_MODES:
        problems.append(f"worker.index_mode must be one of {', '.join(INDEX_MODES)}, got {w.index_mode!r}")
    if s.get("worker.polling.strategy") == "fixed" and "worker.polling.interval_ms" not in s \
            and "worker.poll_interval_ms" not in s:
        problems.append("worker.polling.strategy = fixed needs worker.polling.interval_ms"
                        f"{where('worker.polling.strategy')}")
    p = w.polling
    if p is not None:
        if p.is_adaptive and not p.backoff_multiplier > 1:
            problems.append(f"worker.polling.backoff_multiplier must be greater than 1 for the adaptive strategy, "
                            f"got {p.backoff_multiplier:g}{where('worker.polling.backoff_multiplier')}")
        if p.max_interval_ms < p.min_interval_ms:
            problems.append(f"worker.polling.max_interval_ms ({p.max_interval_ms}) must be at least "
                            f"min_interval_ms ({p.min_interval_ms})")
    lease = w.shard_leasing
    if lease is not None and lease.is_enabled:
        for attr in ("shards_per_worker", "lease_ttl_secs", "renewal_interval_secs"):
            value = getattr(lease, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"worker.shard_leasing.{attr} must be a positive integer, got {value!r}")
        if isinstance(lease.renewal_interval_secs, int) and isinstance(lease.lease_ttl_secs, int) \
                and lease.renewal_interval_secs >= lease.lease_ttl_secs:
            problems.append(f"worker.shard_leasing.renewal_interval_secs ({lease.renewal_interval_secs}) must be "
                            f"less than lease_ttl_secs ({lease.lease_ttl_secs})"
                            f"{where('worker.shard_leasing.renewal_interval_secs')}")
    if w.shards is not None:
        problems.extend(_shard_problems(w.shards, config.shard_prefix_len, where("worker.shards")))
    m = config.monitor
    if m.sweep_mode is not None and m.sweep_mode not in SWEEP_MODES:
        problems.append(f"monitor.sweep_mode must be one of {', '.join(SWEEP_MODES)}, got {m.sweep_mode!r}")
    for attr, lo, hi in (("check_interval_secs", 1, 86_400), ("sweep_interval_secs", 0, 7 * 86_400),
                         ("max_tasks_per_scan", 1, 1_000_000), ("max_objects_per_sweep", 1, 1000)):
        value = getattr(m, attr)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi):
            problems.append(f"monitor.{attr} must be an integer from {lo} to {hi}, got {value!r}")
    return problems


def _shard_problems(shards: list[str], prefix_len: int | None, where: str) -> list[str]:
    out = []
    hexdigits = set("0123456789abcdef")
    bad = [sh for sh in shards if not sh or set(sh) - hexdigits or len(sh) > 4]
    if bad:
        out.append(f"worker.shards: {bad!r} are not shard names (1-4 lowercase hex digits){where}")
    if prefix_len is not None and isinstance(prefix_len, int):
        wrong = [sh for sh in shards if sh not in bad and len(sh) != prefix_len]
        if wrong:
            out.append(f"worker.shards: {wrong!r} do not have {prefix_len} hex digits "
                       f"(queue.shard_prefix_len = {prefix_len}){where}")
    elif len({len(sh) for sh in shards if sh not in bad}) > 1:
        out.append(f"worker.shards: names of different lengths {shards!r}; a bucket's shards all have one length{where}")
    if len(set(shards)) != len(shards):
        out.append(f"worker.shards: duplicates in {shards!r}{where}")
    return out


# ------------------------------------------------------------------ workers
def apply_worker_config(options: WorkerRunOptions, config: Config) -> WorkerRunOptions:
    """A copy of ``options`` with the configured worker and monitor settings filled in
    wherever the code left the default (what the code set explicitly wins):

    * ``polling`` ← ``config.worker.polling`` (else a fixed ``[worker]
      poll_interval_ms``) when ``options.polling is None`` and ``poll_interval_ms`` is
      the default;
    * ``shard_lease_config`` ← ``config.worker.shard_leasing`` when it is ``None`` and
      ``shard_leasing_enabled`` is False;
    * ``monitor_check_interval_s`` ← ``check_interval_secs``, ``monitor_sweep_interval_s``
      ← ``sweep_interval_secs`` (0 with ``sweep_mode = "on_demand"``),
      ``monitor_sweep_page_size`` ← ``max_objects_per_sweep``, each when at its default.

    ``index_mode``, ``shards`` and ``max_tasks_per_scan`` have no effect here. Never
    raises; the result is checked by ``Worker.run`` (``WorkerRunOptions.validate``).
    """
    from . import config as cfg
    from .polling import PollingStrategy

    changes: dict[str, Any] = {}
    w, m = config.worker, config.monitor
    if options.polling is None and options.poll_interval_ms == cfg.DEFAULT_POLL_INTERVAL_MS:
        if w.polling is not None:
            changes["polling"] = w.polling
        elif w.poll_interval_ms is not None:
            changes["polling"] = PollingStrategy.fixed(w.poll_interval_ms)
    if options.shard_lease_config is None and not options.shard_leasing_enabled and w.shard_leasing is not None:
        changes["shard_lease_config"] = w.shard_leasing
    if m.check_interval_secs is not None and options.monitor_check_interval_s == cfg.DEFAULT_MONITOR_INTERVAL_SECONDS:
        changes["monitor_check_interval_s"] = float(m.check_interval_secs)
    if options.monitor_sweep_interval_s == cfg.DEFAULT_SWEEP_INTERVAL_SECONDS:
        if m.sweep_mode == "on_demand":
            changes["monitor_sweep_interval_s"] = 0.0
        elif m.sweep_interval_secs is not None:
            changes["monitor_sweep_interval_s"] = float(m.sweep_interval_secs)
    if m.max_objects_per_sweep is not None and options.monitor_sweep_page_size == cfg.DEFAULT_SWEEP_PAGE_SIZE:
        changes["monitor_sweep_page_size"] = m.max_objects_per_sweep
    return replace(options, **changes)
