"""How a long-lived worker paces its polls and shares shards: :class:`PollingStrategy`
and :class:`ShardLeaseConfig` (both part of :class:`~buquet.WorkerRunOptions`).

Pure values: no I/O here. The worker asks a :class:`PollingStrategy` for a
:class:`PollPacer` and tells it after each poll whether work turned up; the shard
leases themselves live in :mod:`buquet._shard_leases`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from . import _validate as v
from . import config as cfg
from .errors import ValidationError

#: polls sleep the chosen interval ± this fraction (spreads workers that started together)
JITTER_FRACTION = 0.10


@dataclass(frozen=True, slots=True)
class PollingStrategy:
    """The pause between polls that found nothing.

    Build one with :meth:`fixed` or :meth:`adaptive`. After a poll that claimed work,
    every strategy polls again at once (a busy worker never sleeps between tasks);
    only empty polls pause. Each pause is jittered ±10 %.

    Attributes:
        kind: ``"fixed"`` or ``"adaptive"``.
        min_interval_ms: pause after the first empty poll, milliseconds (for
            ``fixed``: every pause).
        max_interval_ms: cap of the adaptive backoff, milliseconds (``fixed``: equal
            to ``min_interval_ms``).
        backoff_multiplier: each further empty poll multiplies the pause by this (≥ 1;
            ``fixed``: 1.0).
    """

    kind: str
    min_interval_ms: int
    max_interval_ms: int
    backoff_multiplier: float

    @staticmethod
    def fixed(interval_ms: int = 500) -> PollingStrategy:
        """Pause ``interval_ms`` milliseconds after every empty poll.

        Raises:
            ValidationError: ``interval_ms`` not an int in 1…3,600,000.
        """
        v.int_in_range(interval_ms, "interval_ms", 1, 3_600_000)
        return PollingStrategy("fixed", interval_ms, interval_ms, 1.0)

    @staticmethod
    def adaptive(min_interval_ms: int = 100, max_interval_ms: int = 5000,
                 backoff_multiplier: float = 2.0) -> PollingStrategy:
        """Start at ``min_interval_ms``; after each further empty poll multiply the
        pause by ``backoff_multiplier`` up to ``max_interval_ms``; back to the minimum
        as soon as a poll claims work.

        Raises:
            ValidationError: ``min_interval_ms`` not in 1…3,600,000, ``max_interval_ms``
                below it or above 3,600,000, or ``backoff_multiplier`` not a finite
                number in 1…100.
        """
        v.int_in_range(min_interval_ms, "min_interval_ms", 1, 3_600_000)
        v.int_in_range(max_interval_ms, "max_interval_ms", min_interval_ms, 3_600_000)
        cfg.finite_number(backoff_multiplier, "backoff_multiplier", 1.0, 100.0)
        return PollingStrategy("adaptive", min_interval_ms, max_interval_ms, float(backoff_multiplier))

    @property
    def is_adaptive(self) -> bool:
        """True for :meth:`adaptive`."""
        return self.kind == "adaptive"

    def pacer(self, rng: random.Random | None = None) -> PollPacer:
        """A fresh :class:`PollPacer` following this strategy (one per running worker)."""
        return PollPacer(self, rng or random.Random())


class PollPacer:
    """The running state of a :class:`PollingStrategy`: the next pause.

    Args:
        strategy: the strategy to follow.
        rng: randomness for the ±10 % jitter.
    """

    def __init__(self, strategy: PollingStrategy, rng: random.Random) -> None:
        self.strategy = strategy
        self._rng = rng
        self._interval_ms = float(strategy.min_interval_ms)

    @property
    def interval_ms(self) -> float:
        """The un-jittered pause the next empty poll gets, milliseconds."""
        return self._interval_ms

    def found_work(self) -> None:
        """A poll claimed work (or a slot came free): back to the minimum pause."""
        self._interval_ms = float(self.strategy.min_interval_ms)

    def next_pause_seconds(self) -> float:
        """The pause after an empty poll, seconds (jittered ±10 %); advances the
        adaptive backoff for the poll after it."""
        s = self.strategy
        pause_ms = self._interval_ms * self._rng.uniform(1 - JITTER_FRACTION, 1 + JITTER_FRACTION)
        self._interval_ms = min(float(s.max_interval_ms), self._interval_ms * s.backoff_multiplier)
        return pause_ms / 1000


@dataclass(frozen=True, slots=True)
class ShardLeaseConfig:
    """Whether and how a worker takes exclusive, expiring leases on shards.

    With leasing on, each worker holds leases (one small object per shard, written with
    conditional PUTs and timed by the store's clock) on up to ``shards_per_worker`` of
    its shards and polls only those, so N workers do not all LIST and race on every
    shard. See ``docs/protocol.md`` ("Shard leases") for the rules and request costs.

    Values are not validated here (as in buquet 0.1.0); :meth:`Worker.run` rejects
    zeros and ``renewal_interval_secs >= lease_ttl_secs`` before it starts.

    Attributes:
        is_enabled: leasing on.
        shards_per_worker: most shards one worker holds.
        lease_ttl_secs: a lease not renewed for this many seconds may be taken over.
        renewal_interval_secs: how often a holder renews its leases, seconds.
    """

    is_enabled: bool
    shards_per_worker: int = cfg.DEFAULT_SHARDS_PER_WORKER
    lease_ttl_secs: int = cfg.DEFAULT_SHARD_LEASE_TTL_SECONDS
    renewal_interval_secs: int = cfg.DEFAULT_SHARD_LEASE_RENEWAL_SECONDS

    @staticmethod
    def disabled() -> ShardLeaseConfig:
        """Leasing off: the worker polls all of its shards."""
        return ShardLeaseConfig(False)

    @staticmethod
    def enabled() -> ShardLeaseConfig:
        """Leasing on with the defaults: 16 shards per worker, 30 s TTL, renewed every 10 s."""
        return ShardLeaseConfig(True)

    @staticmethod
    def custom(shards_per_worker: int = cfg.DEFAULT_SHARDS_PER_WORKER,
               lease_ttl_secs: int = cfg.DEFAULT_SHARD_LEASE_TTL_SECONDS,
               renewal_interval_secs: int = cfg.DEFAULT_SHARD_LEASE_RENEWAL_SECONDS) -> ShardLeaseConfig:
        """Leasing on with these settings (checked when the worker starts)."""
        return ShardLeaseConfig(True, shards_per_worker, lease_ttl_secs, renewal_interval_secs)

    def validate(self) -> None:
        """Raise :class:`~buquet.ValidationError` naming the first bad field: every
        number must be a positive int and ``renewal_interval_secs < lease_ttl_secs``."""
        if not self.is_enabled:
            return
        v.int_in_range(self.shards_per_worker, "shards_per_worker", 1, 65_536)
        v.int_in_range(self.lease_ttl_secs, "lease_ttl_secs", 1, 86_400)
        v.int_in_range(self.renewal_interval_secs, "renewal_interval_secs", 1, 86_400)
        if self.renewal_interval_secs >= self.lease_ttl_secs:
            raise ValidationError("renewal_interval_secs", f"must be less than lease_ttl_secs ({self.lease_ttl_secs}), "
                                  f"got {self.renewal_interval_secs}")
