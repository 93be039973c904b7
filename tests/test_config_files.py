"""Configuration files, profiles and environment (buquet.load_config), connect()'s use
of [default], apply_worker_config, and `buquet config show | validate | paths`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import buquet
from buquet import Config, ConfigurationError, MemoryStore, PollingStrategy, ShardLeaseConfig, ValidationError
from buquet import WorkerRunOptions, connect, load_config
from buquet import config as cfg
from buquet.cli import cli

# every variable load_config reads (cleared so the developer's shell does not leak in)
ALL_ENV = [k.env for k in cfg.KEYS] + ["BUQUET_LOCAL_DIR", "BUQUET_CONFIG", "BUQUET_PROFILE", "AWS_REGION"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """An isolated layout: user config dir, a project directory (the cwd), an extra dir."""
    for name in ALL_ENV:
        monkeypatch.delenv(name, raising=False)
    xdg, project, extra = tmp_path / "xdg", tmp_path / "project", tmp_path / "extra"
    for d in (xdg / "buquet", project, extra):
        d.mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.chdir(project)
    return {"user": xdg / "buquet" / "config.toml", "project": project / ".buquet.toml",
            "explicit": extra / "buquet.toml"}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ----------------------------------------------------------------- lookup order
LAYERS = """
[default]
bucket = "{name}"
region = "{name}-region"
"""


@pytest.mark.parametrize("strongest", ["defaults", "user", "project", "explicit", "profile", "env", "flag"])
def test_lookup_order_weakest_first(home: dict[str, Path], monkeypatch: pytest.MonkeyPatch, strongest: str) -> None:
    order = ["defaults", "user", "project", "explicit", "profile", "env", "flag"]
    present = order[1: order.index(strongest) + 1]
    for layer in ("user", "project", "explicit"):
        if layer in present:
            write(home[layer], LAYERS.format(name=layer))
    if "profile" in present:  # the profile lives in the weakest file and still beats every [default]
        with home["user"].open("a") as fh:
            fh.write('[profiles.p]\nbucket = "profile"\n')
    if "env" in present:
        monkeypatch.setenv("S3_BUCKET", "env")
    conf = load_config("p" if "profile" in present else None,
                       config_path=str(home["explicit"]) if "explicit" in present else None,
                       overrides={"bucket": "flag"} if "flag" in present else None)
    assert conf.bucket == ("" if strongest == "defaults" else strongest)
    if strongest == "defaults":
        assert conf.region == "us-east-1" and conf.sources == [] and conf.origins == {}
    else:
        expected = {"env": "env S3_BUCKET", "flag": "flag", "profile": f"{home['user']} [profiles.p]"}
        assert conf.origins["bucket"] == expected.get(strongest) or conf.origins["bucket"] == f"{home[strongest]} [default]"
    # region is set by files only: the strongest file wins it
    files = [f for f in ("user", "project", "explicit") if f in present]
    if files:
        assert conf.region == f"{files[-1]}-region"


def test_explicit_path_also_comes_from_buquet_config(home: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    write(home["project"], LAYERS.format(name="project"))
    monkeypatch.setenv("BUQUET_CONFIG", str(write(home["explicit"], LAYERS.format(name="explicit"))))
    assert load_config().bucket == "explicit"
    assert load_config(config_path=str(home["project"])).bucket == "project"  # --config wins over the variable


def test_missing_explicit_file_is_an_error(home: dict[str, Path]) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_config(config_path=str(home["explicit"]))


def test_files_merge_per_key_and_a_redefined_profile_replaces_the_earlier(home: dict[str, Path]) -> None:
    write(home["user"], """
[default]
bucket = "b"
endpoint = "http://user"
[worker.polling]
min_interval_ms = 200
[profiles.p]
bucket = "p-user"
region = "eu-west-1"
""")
    write(home["project"], """
[default]
endpoint = "http://project"
[worker.polling]
max_interval_ms = 9000
[profiles.p]
bucket = "p-project"
""")
    conf = load_config()
    assert (conf.bucket, conf.endpoint) == ("b", "http://project")
    assert conf.worker.polling == PollingStrategy.adaptive(200, 9000, 2.0)
    prof = load_config("p")
    assert prof.bucket == "p-project"
    assert prof.region == "us-east-1"  # the project file's [profiles.p] replaced the user file's whole table
    assert prof.sources == [str(home["user"]), str(home["project"])]


def test_unknown_profile_is_ignored_with_a_warning(home: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    write(home["project"], '[default]\nbucket = "b"\n[profiles.prod]\nbucket = "p"\n')
    with caplog.at_level(logging.WARNING, logger="buquet.config"):
        conf = load_config("nope")
    assert conf.bucket == "b"
    assert "profile 'nope' is not defined" in caplog.text
    assert any("nope" in p for p in cfg.validate_config(conf))


def test_unknown_keys_are_warnings_reported_by_validate(home: dict[str, Path]) -> None:
    write(home["project"], '[worker]\npoll_intervall_ms = 5\n[default]\nbuckett = "x"\n[queue]\nbucket = "q"\n')
    problems = cfg.validate_config(load_config())
    assert len(problems) == 3
    assert any("worker.poll_intervall_ms" in p for p in problems)
    assert any("'buckett'" in p for p in problems)
    assert any("queue.bucket" in p for p in problems)


def test_profile_may_nest_worker_tables(home: dict[str, Path]) -> None:
    write(home["project"], """
[worker.polling]
strategy = "fixed"
interval_ms = 100
[profiles.slow.worker.polling]
interval_ms = 2000
""")
    assert load_config().worker.polling == PollingStrategy.fixed(100)
    assert load_config("slow").worker.polling == PollingStrategy.fixed(2000)


def test_bad_toml_names_the_file(home: dict[str, Path]) -> None:
    write(home["project"], "[default\nbucket = 1\n")
    with pytest.raises(ConfigurationError) as exc:
        load_config()
    assert "Failed to parse TOML" in str(exc.value) and str(home["project"]) in str(exc.value)


# ----------------------------------------------------------- every setting
FULL = """
[default]
bucket = "jobs"
endpoint = "http://127.0.0.1:9000"
region = "eu-central-1"

[queue]
shard_prefix_len = 2

[worker]
poll_interval_ms = 750
index_mode = "hybrid"
shards = ["0a", "ff"]

[worker.polling]
strategy = "adaptive"
min_interval_ms = 50
max_interval_ms = 8000
backoff_multiplier = 1.5

[worker.shard_leasing]
enabled = true
shards_per_worker = 4
lease_ttl_secs = 20
renewal_interval_secs = 5

[monitor]
check_interval_secs = 15
sweep_interval_secs = 600
max_tasks_per_scan = 50
max_objects_per_sweep = 200
sweep_mode = "continuous"
"""


def test_every_file_key(home: dict[str, Path]) -> None:
    write(home["project"], FULL)
    conf = load_config()
    assert (conf.bucket, conf.endpoint, conf.region, conf.shard_prefix_len) == (
        "jobs", "http://127.0.0.1:9000", "eu-central-1", 2)
    w, m = conf.worker, conf.monitor
    assert (w.poll_interval_ms, w.index_mode, w.shards) == (750, "hybrid", ["0a", "ff"])
    assert w.polling == PollingStrategy.adaptive(50, 8000, 1.5)
    assert w.shard_leasing == ShardLeaseConfig.custom(4, 20, 5)
    assert (m.check_interval_secs, m.sweep_interval_secs, m.max_tasks_per_scan, m.max_objects_per_sweep,
            m.sweep_mode) == (15, 600, 50, 200, "continuous")
    assert cfg.validate_config(conf) == []
    assert conf.origins["worker.polling.min_interval_ms"] == f"{home['project']} [worker.polling]"
    assert conf.origins["bucket"] == f"{home['project']} [default]"


ENV_CASES = [
    ("S3_BUCKET", "b1", lambda c: c.bucket, "b1"),
    ("S3_ENDPOINT", "http://e", lambda c: c.endpoint, "http://e"),
    ("S3_REGION", "ap-south-1", lambda c: c.region, "ap-south-1"),
    ("BUQUET_SHARD_PREFIX_LEN", "3", lambda c: c.shard_prefix_len, 3),
    ("BUQUET_POLL_INTERVAL_MS", "250", lambda c: c.worker.poll_interval_ms, 250),
    ("BUQUET_INDEX_MODE", "Log-Scan", lambda c: c.worker.index_mode, "log-scan"),
    ("BUQUET_SHARDS", " 0, 1 ,2", lambda c: c.worker.shards, ["0", "1", "2"]),
    ("BUQUET_MONITOR_CHECK_INTERVAL", "7", lambda c: c.monitor.check_interval_secs, 7),
    ("BUQUET_MONITOR_SWEEP_INTERVAL", "0", lambda c: c.monitor.sweep_interval_secs, 0),
    ("BUQUET_MONITOR_MAX_TASKS_PER_SCAN", "20", lambda c: c.monitor.max_tasks_per_scan, 20),
    ("BUQUET_SWEEPER_MAX_OBJECTS_PER_SWEEP", "300", lambda c: c.monitor.max_objects_per_sweep, 300),
    ("BUQUET_SWEEPER_MODE", "on_demand", lambda c: c.monitor.sweep_mode, "on_demand"),
    ("BUQUET_POLLING_STRATEGY", "fixed", lambda c: c.worker.polling, PollingStrategy.fixed(500)),
    ("BUQUET_POLLING_MIN_INTERVAL_MS", "30", lambda c: c.worker.polling, PollingStrategy.adaptive(30, 5000, 2.0)),
    ("BUQUET_POLLING_MAX_INTERVAL_MS", "900", lambda c: c.worker.polling, PollingStrategy.adaptive(100, 900, 2.0)),
    ("BUQUET_POLLING_BACKOFF_MULTIPLIER", "3.5", lambda c: c.worker.polling, PollingStrategy.adaptive(100, 5000, 3.5)),
    ("BUQUET_POLLING_INTERVAL_MS", "40", lambda c: c.settings["worker.polling.interval_ms"], 40),
    ("BUQUET_SHARD_LEASING", "yes", lambda c: c.worker.shard_leasing, ShardLeaseConfig.enabled()),
    ("BUQUET_SHARD_LEASING", "false", lambda c: c.worker.shard_leasing, ShardLeaseConfig.disabled()),
    ("BUQUET_SHARD_LEASING_SHARDS_PER_WORKER", "2", lambda c: c.worker.shard_leasing.shards_per_worker, 2),
    ("BUQUET_SHARD_LEASING_TTL_SECS", "60", lambda c: c.worker.shard_leasing.lease_ttl_secs, 60),
    ("BUQUET_SHARD_LEASING_RENEW_SECS", "3", lambda c: c.worker.shard_leasing.renewal_interval_secs, 3),
]


@pytest.mark.parametrize(("var", "raw", "get", "expected"), ENV_CASES, ids=[f"{c[0]}={c[1]}" for c in ENV_CASES])
def test_each_environment_variable(home: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                   var: str, raw: str, get: Any, expected: Any) -> None:
    monkeypatch.setenv(var, raw)
    conf = load_config()
    assert get(conf) == expected
    assert var in conf.origins[next(k.name for k in cfg.KEYS if k.env == var)]
    assert conf.sources == ["env"]


def test_every_key_has_an_environment_variable_case() -> None:
    assert {k.env for k in cfg.KEYS} == {c[0] for c in ENV_CASES}


def test_environment_beats_the_profile_and_files_per_key(home: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    write(home["project"], FULL + '\n[profiles.p]\nbucket = "p"\n')
    monkeypatch.setenv("BUQUET_POLLING_MAX_INTERVAL_MS", "12000")
    monkeypatch.setenv("BUQUET_SHARD_LEASING_RENEW_SECS", "")  # empty = unset
    conf = load_config("p")
    assert conf.bucket == "p"
    assert conf.worker.polling == PollingStrategy.adaptive(50, 12000, 1.5)
    assert conf.worker.shard_leasing.renewal_interval_secs == 5


@pytest.mark.parametrize(("var", "raw"), [
    ("BUQUET_POLLING_MIN_INTERVAL_MS", "abc"), ("BUQUET_SHARD_PREFIX_LEN", "5"), ("BUQUET_INDEX_MODE", "turbo"),
    ("BUQUET_SHARD_LEASING", "maybe"), ("BUQUET_POLLING_BACKOFF_MULTIPLIER", "nan"),
    ("BUQUET_SWEEPER_MODE", "sometimes"), ("BUQUET_MONITOR_CHECK_INTERVAL", "0"),
    ("BUQUET_SWEEPER_MAX_OBJECTS_PER_SWEEP", "5000"),
])
def test_bad_environment_values_name_the_variable(home: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                  var: str, raw: str) -> None:
    monkeypatch.setenv(var, raw)
    with pytest.raises(ValidationError) as exc:
        load_config()
    assert exc.value.field == var and "must be" in exc.value.rule


@pytest.mark.parametrize(("toml", "key"), [
    ("[worker.polling]\nmin_interval_ms = \"fast\"", "worker.polling.min_interval_ms"),
    ("[queue]\nshard_prefix_len = 0", "queue.shard_prefix_len"),
    ("[worker]\nindex_mode = \"turbo\"", "worker.index_mode"),
    ("[worker]\nshards = \"0\"\nposition = 1", "worker.shards"),  # a string is one comma list: fine → position
    ("[worker.shard_leasing]\nenabled = \"on\"\nlease_ttl_secs = true", "worker.shard_leasing.lease_ttl_secs"),
    ("[monitor]\nsweep_interval_secs = -1", "monitor.sweep_interval_secs"),
    ("[default]\nbucket = 3", "bucket"),
    ("[worker.polling]\nmin_interval_ms = 900\nmax_interval_ms = 100", "worker.polling.max_interval_ms"),
])
def test_bad_file_values_name_the_key_and_the_file(home: dict[str, Path], toml: str, key: str) -> None:
    write(home["project"], toml)
    if key == "worker.shards":  # the unknown 'position' is only a warning; shards = "0" parses
        assert load_config().worker.shards == ["0"]
        return
    with pytest.raises(ValidationError) as exc:
        load_config()
    assert exc.value.field == key
    if key != "worker.polling.max_interval_ms":
        assert str(home["project"]) in exc.value.rule


def test_a_bad_flag_value_names_the_key(home: dict[str, Path]) -> None:
    with pytest.raises(ValidationError) as exc:
        load_config(overrides={"queue.shard_prefix_len": 9})
    assert exc.value.field == "queue.shard_prefix_len"
    with pytest.raises(ValidationError):
        load_config(overrides={"no.such.key": 1})


# ----------------------------------------------------------------- validation
@pytest.mark.parametrize(("toml", "fragment"), [
    ('[worker.polling]\nstrategy = "fixed"', "fixed needs worker.polling.interval_ms"),
    ("[worker.polling]\nbackoff_multiplier = 1.0", "greater than 1"),
    ("[worker.shard_leasing]\nenabled = true\nlease_ttl_secs = 10\nrenewal_interval_secs = 10",
     "less than lease_ttl_secs"),
    ('[queue]\nshard_prefix_len = 2\n[worker]\nshards = ["0", "1f"]', "do not have 2 hex digits"),
    ('[worker]\nshards = ["0", "g"]', "are not shard names"),
    ('[worker]\nshards = ["0", "0a"]', "different lengths"),
    ('[worker]\nshards = ["1", "1"]', "duplicates"),
])
def test_validate_config_reports_rule_breaks(home: dict[str, Path], toml: str, fragment: str) -> None:
    write(home["project"], toml)
    problems = cfg.validate_config(load_config())
    assert len(problems) == 1 and fragment in problems[0], problems


def test_fixed_polling_from_the_legacy_poll_interval_is_valid(home: dict[str, Path]) -> None:
    write(home["project"], '[worker]\npoll_interval_ms = 300\n[worker.polling]\nstrategy = "fixed"')
    conf = load_config()
    assert conf.worker.polling == PollingStrategy.fixed(300)
    assert cfg.validate_config(conf) == []


def test_validate_a_hand_made_config() -> None:
    assert cfg.validate_config(Config()) == []
    bad = Config(shard_prefix_len=7, worker=cfg.WorkerConfig(shard_leasing=ShardLeaseConfig.custom(0, 5, 9)))
    problems = cfg.validate_config(bad)
    assert any("shard_prefix_len" in p for p in problems)
    assert any("shards_per_worker" in p for p in problems)
    assert any("renewal_interval_secs (9)" in p for p in problems)


# --------------------------------------------------------------------- connect
async def test_connect_takes_shard_prefix_len_from_the_project_file(home: dict[str, Path]) -> None:
    write(home["project"], "[queue]\nshard_prefix_len = 1\n[profiles.p.queue]\nshard_prefix_len = 2\n")
    q = await connect(store=MemoryStore())
    assert len(q.shards) == 16 and q.shard_prefix_len == 1  # [default] level only, never a profile


async def test_connect_argument_and_env_beat_the_file(home: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    write(home["project"], "[queue]\nshard_prefix_len = 1\n")
    assert len((await connect(store=MemoryStore(), shard_prefix_len=2)).shards) == 256
    assert len((await connect(store=MemoryStore(), shard_count=4)).shards) == 4  # no mismatch with the file
    monkeypatch.setenv("BUQUET_SHARD_PREFIX_LEN", "2")
    assert len((await connect(store=MemoryStore())).shards) == 256


def test_connect_location_order(home: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    write(home["project"], '[default]\nbucket = "fb"\nendpoint = "http://file"\nregion = "file-r"\n'
                           '[profiles.p]\nbucket = "pb"\n')
    fill = cfg.with_file_defaults
    assert fill(None, None, None, None, want_store=True, want_shards=True) == ("http://file", "fb", "file-r", None)
    assert fill("http://arg", "ab", None, None, want_store=True, want_shards=True) == ("http://arg", "ab", "file-r", None)
    monkeypatch.setenv("S3_BUCKET", "eb")
    monkeypatch.setenv("S3_REGION", "er")
    # env wins: the values stay None here and store_from_env reads the variables
    assert fill(None, None, None, None, want_store=True, want_shards=True) == ("http://file", None, None, None)
    assert fill(None, None, None, None, want_store=False, want_shards=True) == (None, None, None, None)


async def test_connect_reads_the_bucket_from_the_project_file(home: dict[str, Path]) -> None:
    write(home["project"], "[default]\n")  # nothing in [default]: connect still says what is missing
    with pytest.raises(ConfigurationError, match="no queue store configured"):
        await connect()
    write(home["project"], "[default\n")
    with pytest.raises(ConfigurationError, match="Failed to parse TOML"):
        await connect()


@pytest.mark.s3
async def test_connect_uses_default_bucket_endpoint_and_prefix_len_on_seaweedfs(
        home: dict[str, Path], s3_endpoint: str) -> None:
    from tests._servers import unique_bucket

    bucket = unique_bucket(s3_endpoint)
    write(home["project"], f'[default]\nbucket = "{bucket}"\nendpoint = "{s3_endpoint}"\nregion = "us-east-1"\n'
                           "[queue]\nshard_prefix_len = 1\n")
    q = await connect()
    async with q:
        assert (q.store.bucket, q.store.endpoint) == (bucket, s3_endpoint)  # type: ignore[attr-defined]
        assert q.shards == [f"{i:x}" for i in range(16)]
        task = await q.submit("t", {"x": 1})
        assert (await q.get(task.id)) is not None
    again = await connect(read_only=True)  # the bucket's stored setting agrees
    async with again:
        assert len(again.shards) == 16


# ----------------------------------------------------------------- workers
def test_apply_worker_config_fills_only_what_code_left_at_defaults() -> None:
    conf = Config(worker=cfg.WorkerConfig(polling=PollingStrategy.fixed(700), shard_leasing=ShardLeaseConfig.enabled()),
                  monitor=cfg.MonitorConfig(check_interval_secs=12, sweep_interval_secs=60, max_objects_per_sweep=10))
    base = WorkerRunOptions()
    out = cfg.apply_worker_config(base, conf)
    assert out is not base and base.polling is None  # a copy
    assert out.polling == PollingStrategy.fixed(700)
    assert out.shard_lease_config == ShardLeaseConfig.enabled()
    assert (out.monitor_check_interval_s, out.monitor_sweep_interval_s, out.monitor_sweep_page_size) == (12, 60, 10)
    out.validate()

    explicit = WorkerRunOptions(polling=PollingStrategy.adaptive(10, 20), shard_lease_config=ShardLeaseConfig.disabled(),
                                monitor_check_interval_s=3, monitor_sweep_interval_s=0, monitor_sweep_page_size=5)
    kept = cfg.apply_worker_config(explicit, conf)
    assert kept == explicit
    assert cfg.apply_worker_config(WorkerRunOptions(poll_interval_ms=250), conf).polling is None
    assert cfg.apply_worker_config(WorkerRunOptions(shard_leasing_enabled=True), conf).shard_lease_config is None
    assert cfg.apply_worker_config(base, Config()) == base


def test_apply_worker_config_legacy_interval_and_on_demand_sweeps() -> None:
    conf = Config(worker=cfg.WorkerConfig(poll_interval_ms=900), monitor=cfg.MonitorConfig(sweep_mode="on_demand",
                                                                                         sweep_interval_secs=60))
    out = cfg.apply_worker_config(WorkerRunOptions(), conf)
    assert out.polling == PollingStrategy.fixed(900)
    assert out.monitor_sweep_interval_s == 0


# ------------------------------------------------------------------------- CLI
def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_cli_config_show(home: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    write(home["user"], FULL)
    write(home["project"], '[profiles.prod]\nbucket = "prod-jobs"\n')
    monkeypatch.setenv("BUQUET_POLLING_MIN_INTERVAL_MS", "60")
    r = invoke("--profile", "prod", "--region", "flag-region", "config", "show", "--json")
    assert r.exit_code == 0, r.output + r.stderr
    doc = json.loads(r.stdout)
    assert doc["profile"] == "prod"
    values = doc["values"]
    assert values["bucket"] == {"value": "prod-jobs", "source": f"{home['project']} [profiles.prod]", "env": "S3_BUCKET"}
    assert values["region"]["value"] == "flag-region" and values["region"]["source"] == "flag"
    assert values["worker.polling.min_interval_ms"]["source"] == "env BUQUET_POLLING_MIN_INTERVAL_MS"
    assert values["monitor.sweep_mode"]["value"] == "continuous"
    assert doc["sources"] == [str(home["user"]), str(home["project"]), "env", "flags"]

    r = invoke("config", "show", env={"BUQUET_PROFILE": "prod"})
    assert r.exit_code == 0
    line = next(x for x in r.output.splitlines() if x.startswith("bucket "))
    assert "prod-jobs" in line and "[profiles.prod]" in line
    assert "profile: prod" in r.output


def test_cli_config_validate(home: dict[str, Path]) -> None:
    write(home["project"], FULL)
    r = invoke("config", "validate")
    assert r.exit_code == 0 and "Configuration is valid" in r.output
    write(home["project"], "[worker.shard_leasing]\nenabled = true\nlease_ttl_secs = 5\nrenewal_interval_secs = 9\n"
                           '[worker.polling]\nstrategy = "fixed"\n')
    r = invoke("config", "validate")
    assert r.exit_code == 1
    assert "2 problem(s)" in r.stderr and "renewal_interval_secs (9)" in r.stderr and "fixed needs" in r.stderr
    write(home["project"], "[queue]\nshard_prefix_len = 8\n")
    r = invoke("config", "validate")
    assert r.exit_code == 1 and "queue.shard_prefix_len" in r.stderr
    write(home["project"], "not toml ][")
    r = invoke("config", "validate")
    assert r.exit_code == 1 and "Failed to parse TOML" in r.stderr and str(home["project"]) in r.stderr


def test_cli_config_paths(home: dict[str, Path]) -> None:
    write(home["project"], "")
    r = invoke("--config", str(home["explicit"]), "config", "paths", "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout) == [
        {"role": "user", "path": str(home["user"]), "exists": False},
        {"role": "project", "path": str(home["project"]), "exists": True},
        {"role": "explicit", "path": str(home["explicit"]), "exists": False},
    ]
    r = invoke("config", "paths")
    assert r.exit_code == 0 and str(home["user"]) in r.output and "explicit" not in r.output


def test_cli_queue_options_default_from_the_profile(home: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    write(home["project"], '[default]\nbucket = "d"\n[queue]\nshard_prefix_len = 1\n'
                           '[profiles.p]\nbucket = "pb"\nendpoint = "http://p"\n')
    seen: list[dict[str, Any]] = []

    async def fake_connect(**kwargs: Any) -> Any:
        seen.append(kwargs)
        raise ConfigurationError("stop here")

    monkeypatch.setattr("buquet.cli_common.connect", fake_connect)
    assert invoke("--profile", "p", "now").exit_code == 1
    assert invoke("now").exit_code == 1
    assert invoke("--profile", "p", "--bucket", "flag", "now").exit_code == 1
    assert [(s["bucket"], s["endpoint"], s["region"], s["shard_prefix_len"]) for s in seen] == [
        ("pb", "http://p", None, 1), ("d", None, None, 1), ("flag", "http://p", None, 1)]


def test_cli_worker_honours_worker_polling_and_leasing(home: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    write(home["project"], '[worker.polling]\nstrategy = "fixed"\ninterval_ms = 1234\n'
                           "[worker.shard_leasing]\nenabled = true\nshards_per_worker = 2\n"
                           "[monitor]\ncheck_interval_secs = 42\n")
    monkeypatch.setenv("BUQUET_LOCAL_DIR", str(tmp_path / "q"))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent))
    seen: list[WorkerRunOptions] = []

    async def fake_run(self: Any, options: WorkerRunOptions | None = None) -> int:
        seen.append(options)  # type: ignore[arg-type]
        return 0

    monkeypatch.setattr(buquet.Worker, "run", fake_run)
    r = invoke("worker", "tests.e2e_app:make_worker", "--no-monitor")
    assert r.exit_code == 0, r.output + r.stderr
    assert seen[-1].polling == PollingStrategy.fixed(1234)
    assert seen[-1].shard_leasing() == ShardLeaseConfig.custom(2, 30, 10)
    assert seen[-1].monitor_check_interval_s == 42
    # flags given on the command line win over the files
    r = invoke("worker", "tests.e2e_app:make_worker", "--poll-interval-ms", "500", "--monitor-interval-seconds", "9")
    assert r.exit_code == 0, r.output + r.stderr
    assert seen[-1].polling is None and seen[-1].poll_interval_ms == 500
    assert seen[-1].monitor_check_interval_s == 9
    assert seen[-1].shard_lease_config == ShardLeaseConfig.custom(2, 30, 10)
    # env beats files
    r = invoke("worker", "tests.e2e_app:make_worker", env={"BUQUET_POLLING_INTERVAL_MS": "77"})
    assert r.exit_code == 0 and seen[-1].polling == PollingStrategy.fixed(77)
    # a bad file: exit 1 before anything starts
    write(home["project"], "[worker.polling]\nmin_interval_ms = 0\n")
    n = len(seen)
    r = invoke("worker", "tests.e2e_app:make_worker")
    assert r.exit_code == 1 and "worker.polling.min_interval_ms" in r.stderr and len(seen) == n


def test_public_names_are_documented_with_docstrings() -> None:
    for name in ("load_config", "Config", "WorkerConfig", "MonitorConfig"):
        assert name in buquet.__all__ and getattr(buquet, name).__module__ == "buquet.config"
        assert (getattr(buquet, name).__doc__ or "").strip()
    assert "Raises" in (load_config.__doc__ or "")
