"""The bucket's key layout: every object key buquet reads or writes is built and parsed here.

Under an optional key prefix (``""`` or ``"myapp/"``)::

    config.json                                   per-bucket settings (shard count)
    tasks/<shard>/<task_id>.json                  a task's state: the source of truth
    ready/<shard>/<due_ms>.<task_id>.<task_type>  "claimable from due_ms on" (S3 events)
    leases/<shard>/<expires_ms>.<task_id>         lease index, sorted by expiry
    expiries/<shard>/<expires_ms>.<task_id>       deadlines of tasks with expires_at
    payloads/<task_id>/input.json, output.json    large inputs and outputs
    schedules/defs/<id>.json                      schedule definitions
    schedules/runs/<id>.json                      schedule run state
    schedules/slots/<id>/<YYYYMMDDTHHMMSSZ>.json  the per-slot ledger
    schemas/<task_type>.json                      a task type's JSON Schemas (buquet.schemas)
    workers/<worker_id>.json                      a running worker's registration (buquet workers)
    shard-leases/<shard>.json                     which worker polls a shard (shard leasing)
    shard-leases/members/<worker_id>              a leasing worker's liveness (LastModified)

``<due_ms>`` and ``<expires_ms>`` are 15-digit zero-padded epoch milliseconds (wide
enough for year 9999), so keys sort by time. The infrastructure code (``infra/``)
derives its IAM resource prefixes from :data:`TOP_LEVEL_DIRS` and
:meth:`KeyLayout.iam_prefixes`, so policies cannot drift from this layout.

A public module: `infra/` (IAM policies, the notification filter) and tools import it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import _ids

CONFIG_LEAF = "config.json"
TASKS_DIR = "tasks/"
READY_DIR = "ready/"
LEASES_DIR = "leases/"
EXPIRIES_DIR = "expiries/"
PAYLOADS_DIR = "payloads/"
SCHEDULES_DIR = "schedules/"
#: task schemas (:mod:`buquet.schemas`): read by workers, written by whoever publishes
SCHEMAS_DIR = "schemas/"
#: idempotency records (``Queue.submit(idempotency_key=...)``)
IDEMPOTENCY_DIR = "idempotency/"
#: registrations of running workers (``buquet._registry``): each worker PUTs its own
WORKERS_DIR = "workers/"
#: shard leases (``buquet._shard_leases``): one object per shard, conditional writes only
SHARD_LEASES_DIR = "shard-leases/"
#: every top-level directory of the layout (IAM policies are built from these)
TOP_LEVEL_DIRS = (TASKS_DIR, READY_DIR, LEASES_DIR, EXPIRIES_DIR, PAYLOADS_DIR, SCHEDULES_DIR, SCHEMAS_DIR, IDEMPOTENCY_DIR,
                  WORKERS_DIR, SHARD_LEASES_DIR)
#: width of the zero-padded millisecond fields in ready and lease keys
MS_DIGITS = 15
_SLOT_FMT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True, slots=True)
class ReadyKey:
    """A parsed ``ready/`` key: which task is claimable from when.

    Attributes:
        key: the full object key.
        shard: shard name.
        due_ms: epoch milliseconds from which the task may be claimed.
        task_id: the task id (canonical UUID string).
        task_type: the task type (so workers never read tasks they cannot run).
        last_modified: when the marker was written (store time), if known.
    """

    key: str
    shard: str
    due_ms: int
    task_id: str
    task_type: str
    last_modified: datetime | None = None


@dataclass(frozen=True, slots=True)
class LeaseKey:
    """A parsed ``leases/`` key: the lease of ``task_id`` ends at ``expires_ms``."""

    key: str
    shard: str
    expires_ms: int
    task_id: str


def normalize_prefix(prefix: str) -> str:
    """``"myapp"`` → ``"myapp/"``; ``""`` stays ``""``."""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return prefix


class KeyLayout:
    """Builds and parses every object key under one key prefix.

    Args:
        prefix: key prefix inside the bucket (``""`` = bucket root); a missing
            trailing ``/`` is added.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = normalize_prefix(prefix)

    # ---------------------------------------------------------------- config
    def config(self) -> str:
        """``config.json``"""
        return f"{self.prefix}{CONFIG_LEAF}"

    # ----------------------------------------------------------------- tasks
    def task(self, shard: str, task_id: str) -> str:
        """``tasks/<shard>/<task_id>.json``"""
        return f"{self.prefix}{TASKS_DIR}{shard}/{task_id}.json"

    def tasks_prefix(self, shard: str) -> str:
        """``tasks/<shard>/``"""
        return f"{self.prefix}{TASKS_DIR}{shard}/"

    def ready_root(self) -> str:
        """``ready/`` (the S3 event notification filter)."""
        return f"{self.prefix}{READY_DIR}"

    def ready_prefix(self, shard: str) -> str:
        """``ready/<shard>/``"""
        return f"{self.prefix}{READY_DIR}{shard}/"

    def ready(self, shard: str, due_ms: int, task_id: str, task_type: str) -> str:
        """``ready/<shard>/<due_ms:015d>.<task_id>.<task_type>``"""
        return f"{self.prefix}{READY_DIR}{shard}/{due_ms:0{MS_DIGITS}d}.{task_id}.{task_type}"

    def ready_for(self, task: Any) -> str:
        """The ready key of a task (anything with ``shard``, ``available_at``, ``id``
        and ``task_type``, such as :class:`~buquet.Task`): due at its ``available_at``."""
        due_ms = int(task.available_at.timestamp() * 1000)
        return self.ready(task.shard, due_ms, task.id, task.task_type)

    def lease_root(self) -> str:
        """``leases/`` (every shard's lease index)."""
        return f"{self.prefix}{LEASES_DIR}"

    def expiry_root(self) -> str:
        """``expiries/`` (every shard's deadline index)."""
        return f"{self.prefix}{EXPIRIES_DIR}"

    def lease_prefix(self, shard: str) -> str:
        """``leases/<shard>/``"""
        return f"{self.prefix}{LEASES_DIR}{shard}/"

    def lease(self, shard: str, expires_ms: int, task_id: str) -> str:
        """``leases/<shard>/<expires_ms:015d>.<task_id>``"""
        return f"{self.prefix}{LEASES_DIR}{shard}/{expires_ms:0{MS_DIGITS}d}.{task_id}"

    def expiry_prefix(self, shard: str) -> str:
        """``expiries/<shard>/``"""
        return f"{self.prefix}{EXPIRIES_DIR}{shard}/"

    def expiry(self, shard: str, expires_ms: int, task_id: str) -> str:
        """``expiries/<shard>/<expires_ms:015d>.<task_id>``: the expiry index of tasks
        with a deadline, sorted by deadline."""
        return f"{self.prefix}{EXPIRIES_DIR}{shard}/{expires_ms:0{MS_DIGITS}d}.{task_id}"

    def expiry_for(self, task: Any) -> str | None:
        """The expiry-index key of a task with ``expires_at``, else ``None``."""
        if task.expires_at is None:
            return None
        return self.expiry(task.shard, int(task.expires_at.timestamp() * 1000), task.id)

    def parse_expiry(self, key: str) -> LeaseKey | None:
        """Parse an expiry-index key (same shape as a lease key: shard, ms, task id)."""
        root = f"{self.prefix}{EXPIRIES_DIR}"
        if not key.startswith(root):
            return None
        try:
            shard, leaf = key[len(root) :].split("/", 1)
            ms, task_id = leaf.split(".", 1)
        except ValueError:
            return None
        if not (shard and len(ms) == MS_DIGITS and ms.isdigit() and _ids.is_task_id(task_id)):
            return None
        return LeaseKey(key, shard, int(ms), task_id)

    def payload_prefix(self, task_id: str) -> str:
        """``payloads/<task_id>/``"""
        return f"{self.prefix}{PAYLOADS_DIR}{task_id}/"

    def payload(self, task_id: str, name: str) -> str:
        """``payloads/<task_id>/<name>.json`` (``name``: ``input`` or ``output``)."""
        return f"{self.payload_prefix(task_id)}{name}.json"

    def parse_ready(self, key: str, last_modified: datetime | None = None) -> ReadyKey | None:
        """Parse a ready key of this layout; ``None`` for any other key (ignored)."""
        root = self.ready_root()
        if not key.startswith(root):
            return None
        try:
            shard, leaf = key[len(root) :].split("/", 1)
            due, task_id, task_type = leaf.split(".", 2)
        except ValueError:
            return None
        if not (shard and len(due) == MS_DIGITS and due.isdigit() and _ids.is_task_id(task_id) and task_type):
            return None
        return ReadyKey(key, shard, int(due), task_id, task_type, last_modified)

    def parse_lease(self, key: str) -> LeaseKey | None:
        """Parse a lease-index key of this layout; ``None`` for any other key."""
        root = f"{self.prefix}{LEASES_DIR}"
        if not key.startswith(root):
            return None
        try:
            shard, leaf = key[len(root) :].split("/", 1)
            expires, task_id = leaf.split(".", 1)
        except ValueError:
            return None
        if not (shard and len(expires) == MS_DIGITS and expires.isdigit() and _ids.is_task_id(task_id)):
            return None
        return LeaseKey(key, shard, int(expires), task_id)

    def parse_task(self, key: str) -> tuple[str, str] | None:
        """``(shard, task_id)`` of a task-object key, or ``None``."""
        root = f"{self.prefix}{TASKS_DIR}"
        if not key.startswith(root) or not key.endswith(".json"):
            return None
        try:
            shard, leaf = key[len(root) : -len(".json")].split("/", 1)
        except ValueError:
            return None
        return (shard, leaf) if shard and _ids.is_task_id(leaf) else None

    # ------------------------------------------------------------- schedules
    def schedule_defs_prefix(self) -> str:
        """``schedules/defs/``"""
        return f"{self.prefix}{SCHEDULES_DIR}defs/"

    def schedule_def(self, schedule_id: str) -> str:
        """``schedules/defs/<id>.json``"""
        return f"{self.schedule_defs_prefix()}{schedule_id}.json"

    def schedule_run(self, schedule_id: str) -> str:
        """``schedules/runs/<id>.json``"""
        return f"{self.prefix}{SCHEDULES_DIR}runs/{schedule_id}.json"

    def schedule_slots_prefix(self, schedule_id: str) -> str:
        """``schedules/slots/<id>/``"""
        return f"{self.prefix}{SCHEDULES_DIR}slots/{schedule_id}/"

    def schedule_slot(self, schedule_id: str, slot: datetime) -> str:
        """``schedules/slots/<id>/<YYYYMMDDTHHMMSSZ>.json`` (keys sort by slot)."""
        stamp = slot.astimezone(timezone.utc).strftime(_SLOT_FMT)
        return f"{self.schedule_slots_prefix(schedule_id)}{stamp}.json"

    def parse_schedule_slot(self, schedule_id: str, key: str) -> datetime | None:
        """The slot instant of a ledger key, or ``None`` for keys of another shape."""
        leaf = key[len(self.schedule_slots_prefix(schedule_id)) :]
        try:
            return datetime.strptime(leaf.removesuffix(".json"), _SLOT_FMT).replace(tzinfo=timezone.utc)
        except ValueError:
            return None

    def parse_schedule_def(self, key: str) -> str | None:
        """The schedule id of a definition key, or ``None`` (the caller validates
        the id's shape)."""
        root = self.schedule_defs_prefix()
        if not key.startswith(root) or not key.endswith(".json"):
            return None
        sid = key[len(root) : -len(".json")]
        return sid or None

    # --------------------------------------------------------------- schemas
    def schemas_prefix(self) -> str:
        """``schemas/``"""
        return f"{self.prefix}{SCHEMAS_DIR}"

    def schema(self, task_type: str) -> str:
        """``schemas/<task_type>.json``"""
        return f"{self.schemas_prefix()}{task_type}.json"

    def parse_schema(self, key: str) -> str | None:
        """The task type of a schema key, or ``None`` for a key of another shape (the
        caller validates the task type's shape)."""
        root = self.schemas_prefix()
        if not key.startswith(root) or not key.endswith(".json"):
            return None
        task_type = key[len(root) : -len(".json")]
        return task_type if task_type and "/" not in task_type else None

    # ----------------------------------------------------- idempotency keys
    def idempotency_prefix(self) -> str:
        """``idempotency/``: the records of idempotency keys (``buquet._idempotency``)."""
        return f"{self.prefix}{IDEMPOTENCY_DIR}"

    def idempotency(self, kind: str, namespace: str, key: str) -> str:
        """``idempotency/<kind>/<sha256>.json``: the record of idempotency key ``key``
        in ``namespace`` (``kind``: ``type``, ``queue`` or ``named``). The leaf is the
        SHA-256 of the JSON array ``[kind, namespace, key]``, so any key string is a
        safe, fixed-length object key and no two (namespace, key) pairs share one."""
        digest = hashlib.sha256(json.dumps([kind, namespace, key], ensure_ascii=False).encode()).hexdigest()
        return f"{self.idempotency_prefix()}{kind}/{digest}.json"

    # --------------------------------------------------------------- workers
    def workers_prefix(self) -> str:
        """``workers/``: the registrations of running workers (``buquet._registry``)."""
        return f"{self.prefix}{WORKERS_DIR}"

    def worker(self, worker_id: str) -> str:
        """``workers/<worker_id>.json``: one worker's registration object."""
        return f"{self.workers_prefix()}{worker_id}.json"

    def parse_worker(self, key: str) -> str | None:
        """The worker id of a registration key, or ``None`` for a key of another shape."""
        root = self.workers_prefix()
        if not key.startswith(root) or not key.endswith(".json"):
            return None
        worker_id = key[len(root) : -len(".json")]
        return worker_id if worker_id and "/" not in worker_id else None

    # ---------------------------------------------------------- shard leases
    def shard_leases_prefix(self) -> str:
        """``shard-leases/``: one lease object per shard (``buquet._shard_leases``)."""
        return f"{self.prefix}{SHARD_LEASES_DIR}"

    def shard_lease(self, shard: str) -> str:
        """``shard-leases/<shard>.json``: who polls ``shard`` until when."""
        return f"{self.shard_leases_prefix()}{shard}.json"

    def shard_lease_member(self, worker_id: str) -> str:
        """``shard-leases/members/<worker_id>``: a leasing worker's membership (its
        LastModified says it is alive)."""
        return f"{self.shard_leases_prefix()}members/{worker_id}"

    def parse_shard_lease_member(self, key: str) -> str | None:
        """The worker id of a membership key, or ``None`` for a key of another shape."""
        root = f"{self.shard_leases_prefix()}members/"
        worker_id = key[len(root):] if key.startswith(root) else ""
        return worker_id if worker_id and "/" not in worker_id else None

    # ------------------------------------------------------------------ IAM
    def iam_prefixes(self) -> dict[str, str]:
        """Key prefixes by purpose, for building IAM policies (``infra/``):
        ``{"config": ..., "tasks": ..., "ready": ..., "leases": ..., "schedules": ...}``."""
        return {
            "config": self.config(),
            "tasks": f"{self.prefix}{TASKS_DIR}",
            "ready": f"{self.prefix}{READY_DIR}",
            "leases": f"{self.prefix}{LEASES_DIR}",
            "expiries": f"{self.prefix}{EXPIRIES_DIR}",
            "payloads": f"{self.prefix}{PAYLOADS_DIR}",
            "schedules": f"{self.prefix}{SCHEDULES_DIR}",
            "schemas": f"{self.prefix}{SCHEMAS_DIR}",
            "idempotency": f"{self.prefix}{IDEMPOTENCY_DIR}",
            "workers": f"{self.prefix}{WORKERS_DIR}",
            "shard-leases": f"{self.prefix}{SHARD_LEASES_DIR}",
        }
