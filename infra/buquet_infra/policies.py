"""IAM statements of the queue, derived from the library's key layout.

Every resource path comes from :class:`buquet.keys.KeyLayout` (``iam_prefixes()`` and
the schedule sub-directories), so policies cannot drift from the keys the library
writes. One function per role: each allows only the key prefixes and actions its code
uses (``tests/test_infra.py`` runs each role's code paths on a recording store and
checks every request against these statements). ``s3:ListBucket`` is limited with
``s3:prefix`` conditions, plus requests without a prefix (HeadBucket, which the library
uses to read the store's clock, is authorised by ``s3:ListBucket``).

:func:`conditional_write_statement` is the bucket-policy side: it denies unconditional
``PutObject`` under ``tasks/`` to everyone.
"""

from __future__ import annotations

from aws_cdk import aws_iam as iam

# via .settings, which makes the library importable from a checkout if need be
from .settings import KeyLayout

#: key paths (:func:`key_paths` names) whose every write is conditional in the library
CONDITIONAL_WRITE_PATHS = ("tasks",)


def _parent(key: str, leaf: str) -> str:
    if not key.endswith(leaf):
        raise AssertionError(f"unexpected key layout: {key!r} does not end with {leaf!r}")
    return key[: -len(leaf)]


def key_paths(prefix: str) -> dict[str, str]:
    """The IAM resource paths (object keys or ``<prefix>*`` patterns) of the bucket's
    key layout under ``prefix``, by name, all derived from
    :class:`buquet.keys.KeyLayout` so policies cannot drift from the keys the library
    writes: ``config`` (the one key), every other entry of
    :meth:`~buquet.keys.KeyLayout.iam_prefixes` (``tasks``, ``ready``, ``leases``,
    ``expiries``, ``payloads``, ``schedules``, ``schemas``, ``idempotency``: each
    ``<iam prefix>*``), and the schedule sub-directories ``schedule_defs``,
    ``schedule_runs``, ``schedule_slots``.

    A role statement naming a path the layout does not have raises ``KeyError`` at
    synth: the policies follow the library's layout or the synth stops."""
    layout = KeyLayout(prefix)
    top = dict(layout.iam_prefixes())
    paths = {name: (p if name == "config" else f"{p}*") for name, p in top.items()}
    subdirs = {
        "schedule_defs": layout.schedule_defs_prefix(),
        "schedule_runs": _parent(layout.schedule_run("x"), "x.json"),
        "schedule_slots": _parent(layout.schedule_slots_prefix("x"), "x/"),
    }
    for name, p in subdirs.items():
        if not p.startswith(top["schedules"]):
            raise AssertionError(f"unexpected key layout: {name} {p!r} is not under {top['schedules']!r}")
        paths[name] = f"{p}*"
    return paths


def _list(bucket_arn: str, patterns: list[str], sid: str) -> list[iam.PolicyStatement]:
    return [
        iam.PolicyStatement(
            sid=f"{sid}ListPrefixes",
            actions=["s3:ListBucket"],
            resources=[bucket_arn],
            conditions={"StringLike": {"s3:prefix": patterns}},
        ),
        iam.PolicyStatement(
            # HeadBucket (the store's clock, from its Date header) has no prefix and is
            # authorised by s3:ListBucket; a ListObjects without a prefix is allowed too.
            sid=f"{sid}HeadBucket",
            actions=["s3:ListBucket"],
            resources=[bucket_arn],
            conditions={"Null": {"s3:prefix": "true"}},
        ),
    ]


def _statements(
    bucket_arn: str, prefix: str, sid: str, *, get: list[str], put: list[str], delete: list[str], list_: list[str]
) -> list[iam.PolicyStatement]:
    """Allow statements for the named :func:`key_paths` of ``prefix``."""
    paths = key_paths(prefix)

    def objects(names: list[str]) -> list[str]:
        return [f"{bucket_arn}/{paths[n]}" for n in names]

    out = [
        iam.PolicyStatement(sid=f"{sid}Get", actions=["s3:GetObject"], resources=objects(get)),
        iam.PolicyStatement(sid=f"{sid}Put", actions=["s3:PutObject"], resources=objects(put)),
    ]
    if delete:
        out.append(iam.PolicyStatement(sid=f"{sid}Delete", actions=["s3:DeleteObject"], resources=objects(delete)))
    return out + _list(bucket_arn, [paths[n] for n in list_], sid)


def worker_statements(bucket_arn: str, prefix: str) -> list[iam.PolicyStatement]:
    """What ``Worker.run_once`` does, and nothing else.

    GET ``tasks/*`` (claim) and ``ready/*`` (a submit marker's task copy) and
    ``config.json`` (connect); PUT ``tasks/*`` (every transition), ``ready/*`` (retry
    requeue, release) and ``leases/*`` (heartbeat); DELETE ``ready/*`` and ``leases/*``
    (index clean-up, DeleteObjects); LIST ``ready/``; HeadBucket. Handlers that submit
    follow-up tasks are covered (PUT ``tasks/*`` and ``ready/*``).
    """
    return _statements(
        bucket_arn, prefix, "Worker",
        get=["config", "tasks", "ready", "schemas", "payloads"],
        put=["tasks", "ready", "leases", "payloads"],
        delete=["ready", "leases", "expiries"],
        list_=["ready"],
    )


def monitor_statements(bucket_arn: str, prefix: str) -> list[iam.PolicyStatement]:
    """``Monitor.sweep`` and ``Monitor.poke_stalled``.

    LIST ``leases/`` and ``ready/``; GET/PUT ``tasks/*`` (requeue), ``ready/*`` (new
    marker; the poke re-writes one), ``config.json`` (created if missing); DELETE
    ``leases/*``; HeadBucket.
    """
    return _statements(
        bucket_arn, prefix, "Monitor",
        get=["config", "tasks", "ready"],
        put=["config", "tasks", "ready"],
        delete=["leases", "expiries", "ready"],
        list_=["leases", "ready", "expiries"],
    )


def scheduler_statements(bucket_arn: str, prefix: str) -> list[iam.PolicyStatement]:
    """``Scheduler.tick``.

    LIST ``schedules/defs/`` and ``schedules/slots/``; GET ``schedules/*``,
    ``config.json`` and ``tasks/*`` (HEAD: does a slot's task exist); PUT
    ``schedules/runs/*`` and ``schedules/slots/*`` (cursor, ledger), ``tasks/*`` and
    ``ready/*`` (it submits), ``config.json`` (created if missing); DELETE
    ``schedules/slots/*`` (ledger pruning); HeadBucket. It never writes definitions.
    """
    return _statements(
        bucket_arn, prefix, "Scheduler",
        get=["config", "schedules", "tasks"],
        put=["config", "schedule_runs", "schedule_slots", "tasks", "ready"],
        delete=["schedule_slots"],
        list_=["schedule_defs", "schedule_slots"],
    )


def client_statements(bucket_arn: str, prefix: str) -> list[iam.PolicyStatement]:
    """A submitting service: ``connect``, ``submit``, ``get``/``wait``/``get_history``,
    ``list``/``list_ready``, ``archive``, ``stats``/``workers`` (LIST ``leases/``,
    LIST and GET ``workers/``), and schedule management (create, enable,
    disable, delete, trigger — which records the run in ``schedules/runs/``). It cannot
    write ``leases/`` nor slot-ledger entries: running tasks and firing cron slots
    is the functions' job."""
    return _statements(
        bucket_arn, prefix, "Client",
        get=["config", "tasks", "ready", "schedules", "schemas", "payloads", "idempotency", "workers"],
        put=["config", "tasks", "ready", "schedule_defs", "schedule_runs", "schemas", "payloads", "expiries",
             "idempotency"],
        delete=["schedules", "tasks", "ready", "expiries", "payloads", "schemas"],
        list_=["tasks", "ready", "schedules", "schemas", "payloads", "leases", "workers"],
    )


def long_lived_worker_statements(bucket_arn: str, prefix: str) -> list[iam.PolicyStatement]:
    """A long-lived ``Worker.run`` (``buquet worker ...``) on the deployed bucket: what
    the worker function does plus its built-in lease monitor (``with_monitor=True``),
    creating ``config.json``, its registration object (PUT/DELETE
    ``workers/<worker_id>.json``) and, with shard leasing, its shard leases and
    membership (GET/PUT/DELETE/LIST ``shard-leases/``)."""
    return _statements(
        bucket_arn, prefix, "LongLivedWorker",
        get=["config", "tasks", "ready", "schemas", "payloads", "shard-leases"],
        put=["config", "tasks", "ready", "leases", "payloads", "workers", "shard-leases"],
        delete=["ready", "leases", "expiries", "workers", "shard-leases"],
        list_=["ready", "leases", "expiries", "shard-leases"],
    )


# --------------------------------------------------------------------------- stack


def config_statements(bucket_arn: str, prefix: str) -> list[iam.PolicyStatement]:
    """The deploy-time configuration resource (``lambdas.config_resource``): GET and
    PUT (``If-None-Match: *``) of ``config.json`` only, and ``s3:ListBucket`` without a
    prefix, so a missing key reads as 404 rather than 403."""
    paths = key_paths(prefix)
    return [
        iam.PolicyStatement(sid="ConfigGetPut", actions=["s3:GetObject", "s3:PutObject"], resources=[f"{bucket_arn}/{paths['config']}"]),
        iam.PolicyStatement(
            sid="ConfigNotFoundIs404",
            actions=["s3:ListBucket"],
            resources=[bucket_arn],
            conditions={"Null": {"s3:prefix": "true"}},
        ),
    ]


def conditional_write_statement(bucket_arn: str, prefix: str) -> iam.PolicyStatement:
    """A bucket-policy statement denying ``s3:PutObject`` under ``tasks/`` (of
    ``prefix``) to every principal when the request carries neither ``If-None-Match``
    nor ``If-Match``.

    IAM semantics: the keys of one condition operator are ANDed, and ``Null: true``
    matches an absent key, so ``{"Null": {"s3:if-none-match": "true", "s3:if-match":
    "true"}}`` matches exactly the requests with *both* headers absent — a submit
    (``If-None-Match: *``) and every transition (``If-Match: <etag>``) pass; a plain PUT
    from a buggy producer, which could overwrite a running task, is denied. An explicit
    deny beats every allow, the bucket owner's included.
    """
    paths = key_paths(prefix)
    return iam.PolicyStatement(
        sid="DenyUnconditionalTaskWrites",
        effect=iam.Effect.DENY,
        principals=[iam.AnyPrincipal()],
        actions=["s3:PutObject"],
        resources=[f"{bucket_arn}/{paths[name]}" for name in CONDITIONAL_WRITE_PATHS],
        conditions={"Null": {"s3:if-none-match": "true", "s3:if-match": "true"}},
    )


__all__ = [
    "CONDITIONAL_WRITE_PATHS",
    "client_statements",
    "conditional_write_statement",
    "config_statements",
    "key_paths",
    "long_lived_worker_statements",
    "monitor_statements",
    "scheduler_statements",
    "worker_statements",
]
