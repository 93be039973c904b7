"""PollingStrategy, ShardLeaseConfig and WorkerRunOptions' buquet 0.1.0 shape (spec §12)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from buquet import PollingStrategy, ShardLeaseConfig, ValidationError, WorkerRunOptions

SPEC_POSITIONAL = [
    "polling", "poll_interval_ms", "max_tasks", "heartbeat_interval_s", "with_monitor",
    "monitor_check_interval_s", "monitor_worker_health_threshold_s", "monitor_sweep_interval_s",
    "monitor_sweep_page_size", "shard_lease_config", "shard_leasing_enabled",
    "shard_leasing_shards_per_worker", "shard_leasing_ttl_s", "shard_leasing_renewal_interval_s",
]


def test_worker_run_options_has_the_fourteen_fields_in_buquet_0_1_0_positional_order() -> None:
    positional = [f.name for f in dataclasses.fields(WorkerRunOptions) if not f.kw_only and f.name != "_"]
    assert positional == SPEC_POSITIONAL
    opts = WorkerRunOptions(PollingStrategy.fixed(200), 300, 5)
    assert (opts.polling, opts.poll_interval_ms, opts.max_tasks) == (PollingStrategy.fixed(200), 300, 5)
    with pytest.raises(TypeError):
        WorkerRunOptions(*([None] * 15))  # everything after the fourteen is keyword-only


def test_adaptive_backs_off_by_the_multiplier_up_to_the_cap_and_resets_on_work() -> None:
    pacer = PollingStrategy.adaptive(100, 1000, 3.0).pacer(random.Random(1))
    raw = []
    for _ in range(5):
        raw.append(pacer.interval_ms)
        pacer.next_pause_seconds()
    assert raw == [100, 300, 900, 1000, 1000]
    pacer.found_work()
    assert pacer.interval_ms == 100


def test_pauses_are_jittered_within_ten_percent() -> None:
    pacer = PollingStrategy.fixed(1000).pacer(random.Random(7))
    pauses = [pacer.next_pause_seconds() for _ in range(200)]
    assert all(0.9 <= p <= 1.1 for p in pauses)
    assert max(pauses) - min(pauses) > 0.1  # really jittered, not constant


def test_polling_none_is_adaptive_from_poll_interval_ms() -> None:
    s = WorkerRunOptions(poll_interval_ms=200, max_poll_interval_ms=3000).polling_strategy()
    assert (s.kind, s.min_interval_ms, s.max_interval_ms, s.backoff_multiplier) == ("adaptive", 200, 3000, 2.0)


@pytest.mark.parametrize(("call", "field"), [
    (lambda: PollingStrategy.fixed(0), "interval_ms"),
    (lambda: PollingStrategy.adaptive(500, 100), "max_interval_ms"),
    (lambda: PollingStrategy.adaptive(100, 500, 0.5), "backoff_multiplier"),
    (lambda: PollingStrategy.adaptive(100, 500, float("nan")), "backoff_multiplier"),
])
def test_bad_polling_values_name_the_field(call, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match=field):
        call()


def test_shard_lease_config_constructors_and_properties() -> None:
    assert not ShardLeaseConfig.disabled().is_enabled
    e = ShardLeaseConfig.enabled()
    assert (e.is_enabled, e.shards_per_worker, e.lease_ttl_secs, e.renewal_interval_secs) == (True, 16, 30, 10)
    c = ShardLeaseConfig.custom(shards_per_worker=2, lease_ttl_secs=6, renewal_interval_secs=2)
    assert (c.shards_per_worker, c.lease_ttl_secs, c.renewal_interval_secs) == (2, 6, 2)
    assert ShardLeaseConfig.custom(0, 0, 0).shards_per_worker == 0  # unvalidated until run()


def test_shard_lease_config_wins_over_the_legacy_fields() -> None:
    legacy = WorkerRunOptions(shard_leasing_enabled=True, shard_leasing_shards_per_worker=3,
                              shard_leasing_ttl_s=9, shard_leasing_renewal_interval_s=3)
    assert legacy.shard_leasing() == ShardLeaseConfig.custom(3, 9, 3)
    both = dataclasses.replace(legacy, shard_lease_config=ShardLeaseConfig.disabled())
    assert not both.shard_leasing().is_enabled


@pytest.mark.parametrize(("config", "field"), [
    (ShardLeaseConfig.custom(0, 30, 10), "shards_per_worker"),
    (ShardLeaseConfig.custom(4, 0, 10), "lease_ttl_secs"),
    (ShardLeaseConfig.custom(4, 30, 0), "renewal_interval_secs"),
    (ShardLeaseConfig.custom(4, 10, 10), "renewal_interval_secs"),
])
def test_run_options_reject_zeros_and_renewal_not_below_ttl(config: ShardLeaseConfig, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        WorkerRunOptions(shard_lease_config=config).validate()
    WorkerRunOptions(shard_lease_config=dataclasses.replace(config, is_enabled=False)).validate()  # off: not checked
