"""``buquet doctor``: can this store run a buquet queue safely?

A library (no click, no printing): :func:`run_doctor` runs the checks against an
:class:`~buquet.storage.base.ObjectStore` and returns a :class:`DoctorReport`;
``buquet/cli_doctor.py`` renders it.

The checks, in order (each one :class:`Check` with a status ``ok``/``warn``/``fail``/
``skip``, a one-line detail and, for a failure or warning, a suggestion):

``configuration``
    which store is in use and where each setting came from (given by the caller).
``credentials & bucket``
    one GET of the queue's ``config.json``: an answer (the object or 404 NoSuchKey)
    proves the credentials and the bucket; a missing bucket, wrong credentials or an
    unreachable endpoint fail with the store's one-line error.
``listing``
    without writes: one LIST under the queue's prefix, checked for ascending key order.
    With ``write_test``: 5 scratch objects written in shuffled order, then one LIST
    that must return exactly them in ascending UTF-8 byte order and one LIST with
    ``StartAfter``/``MaxKeys`` that must return the right page (S3 ListObjectsV2).
``clock``
    the store's clock against this machine's: the ``Date`` header of one HEAD Bucket
    (:meth:`ObjectStore.server_time`) and, with ``write_test``, the ``Last-Modified``
    of the scratch objects. Warn above 1 s, fail above 30 s.
``conditional writes``
    with ``write_test`` only (it writes): first a sequential probe (a second
    ``If-None-Match: *`` create of an existing key and an ``If-Match`` with a wrong
    ETag must both get 412), then the **atomicity race**: per round, ``writers``
    concurrent ``If-None-Match: *`` creates of one fresh key (exactly one may win),
    then ``writers`` concurrent ``If-Match: <etag>`` updates of it with the ETag read
    back from the store (exactly one may win); after each phase a GET checks that the
    stored body is the winner's. Without ``write_test`` the check is ``skip``.
``cleanup``
    with ``write_test``: every scratch object (under ``<prefix>_doctor/<random>/``) is
    deleted in one DeleteObjects request, and a LIST confirms none is left — also when
    an earlier check failed.

Request cost (S3) with ``write_test``, ``rounds`` R and ``writers`` W: R × (2W PUT +
2 GET) for the race, plus 1 GET (config.json), 9 PUT (5 listing, 4 probe), 2 LIST
(listing), 1 HEAD Bucket (clock), 1 DeleteObjects and 1 LIST (cleanup). Defaults
(R=20, W=8): 329 PUT, 41 GET, 3 LIST, 1 HEAD Bucket, 1 DeleteObjects — 375 requests,
about $0.0017 at AWS list prices (measured the same on SeaweedFS; the S3 backend may add
HEAD Buckets of its own while it refines its clock offset, counted too). Without
``write_test``: 1 GET, 1 LIST, 1 HEAD Bucket. A store whose probe shows it ignores the
headers skips the race (15 requests). The report counts the requests really sent
(:attr:`DoctorReport.requests`).
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from .errors import ObjectNotFound, PreconditionFailed, StorageError
from .storage.base import ObjectInfo, ObjectStore

Status = Literal["ok", "warn", "fail", "skip"]

#: default number of race rounds and concurrent writers per round (``buquet doctor``)
DEFAULT_ROUNDS = 20
DEFAULT_WRITERS = 8
#: clock skew (seconds) above which the clock check warns / fails
SKEW_WARN_SECONDS = 1.0
SKEW_FAIL_SECONDS = 30.0
#: scratch objects live under ``<queue prefix>_doctor/<random>/``
SCRATCH_DIR = "_doctor/"

SUGGEST_ATOMIC = ("use a store with atomic conditional writes — AWS S3, MinIO, Cloudflare R2, or a "
                  "SeaweedFS bucket that has settled (see docs/protocol.md, 'What the store must offer')")


@dataclass(slots=True)
class Check:
    """The outcome of one check.

    Attributes:
        name: what was checked (``"listing"``, ``"conditional writes"``, ...).
        status: ``"ok"``, ``"warn"``, ``"fail"`` or ``"skip"``.
        detail: one line: what was seen.
        suggestion: one line: what to do about a failure or warning, else ``None``.
        data: machine-readable figures (for ``--json``), e.g. the race's rounds.
    """

    name: str
    status: Status
    detail: str
    suggestion: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class DoctorReport:
    """Everything :func:`run_doctor` found.

    Attributes:
        store: the store's description (``s3://bucket (endpoint)``, ``file://...``).
        checks: the checks, in the order they ran.
        requests: requests sent by the checks, by operation (``put``, ``get``,
            ``list``, ``head``, ``head_bucket``, ``delete``, ``delete_many``), as the
            store counts them (:attr:`ObjectStore.request_counts`).
    """

    store: str
    checks: list[Check] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings and skips do not count)."""
        return not any(c.status == "fail" for c in self.checks)

    @property
    def total_requests(self) -> int:
        """Number of requests the checks sent."""
        return sum(self.requests.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``ok``, ``store``, ``checks`` (list of dicts),
        ``requests`` (by operation) and ``total_requests``."""
        return {
            "ok": self.ok,
            "store": self.store,
            "checks": [asdict(c) for c in self.checks],
            "requests": dict(sorted(self.requests.items())),
            "total_requests": self.total_requests,
        }


@dataclass(frozen=True, slots=True)
class ScratchWrites:
    """Objects the doctor wrote, as listed back, and the local time window of the writes
    (aware UTC datetimes): what the clock check compares ``Last-Modified`` with."""

    infos: list[ObjectInfo]
    started: datetime
    finished: datetime


class _Meter:
    """Requests a store sent between construction and :meth:`delta` (from its
    ``request_counts``)."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self._start = dict(store.request_counts)

    def delta(self) -> dict[str, int]:
        now = self._store.request_counts
        out = {op: n - self._start.get(op, 0) for op, n in now.items()}
        return {op: n for op, n in out.items() if n}


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()


# ------------------------------------------------------------------- checks
def configuration_check(description: str, settings: Sequence[tuple[str, str | None, str]] = ()) -> Check:
    """The ``configuration`` check: which store is in use and where each setting came
    from. Never fails (a store that cannot be built is reported by the caller).

    Args:
        description: the store's description (:attr:`ObjectStore.description`).
        settings: ``(name, value or None, source)`` triples, e.g.
            ``("bucket", "jobs", "env S3_BUCKET")``; unset values are left out.
    """
    parts = [f"{name}={value} ({source})" for name, value, source in settings if value]
    detail = description + (": " + ", ".join(parts) if parts else "")
    return Check("configuration", "ok", detail,
                 data={name: {"value": value, "source": source} for name, value, source in settings if value})


async def reachability_check(store: ObjectStore, config_key: str) -> Check:
    """The ``credentials & bucket`` check: one GET of ``config_key``.

    S3 behaviour relied on: a GET of a missing key in an existing bucket answers
    404 NoSuchKey (:class:`~buquet.errors.ObjectNotFound`), which proves the
    credentials and the bucket as well as 200 does; a missing bucket (NoSuchBucket),
    bad credentials (403) or no answer raise :class:`~buquet.errors.StorageError`,
    whose one-line message is the detail. Never raises.
    """
    try:
        obj = await store.get(config_key)
    except ObjectNotFound:
        return Check("credentials & bucket", "ok",
                     f"reachable; no {config_key} yet (a new queue: the first client creates it)")
    except StorageError as exc:
        return Check("credentials & bucket", "fail", str(exc),
                     exc.hint or "check the endpoint, the bucket name and the credentials")
    return Check("credentials & bucket", "ok",
                 f"reachable; {config_key}: {obj.data.decode('utf-8', 'replace').strip()[:80]}")


def _sorted_bytes(keys: Sequence[str]) -> bool:
    encoded = [k.encode() for k in keys]
    return all(a < b for a, b in zip(encoded, encoded[1:]))


async def listing_check_read_only(store: ObjectStore, prefix: str, limit: int = 100) -> Check:
    """The ``listing`` check without writes: one LIST of up to ``limit`` keys under
    ``prefix``, which must come back in strictly ascending UTF-8 byte order (S3
    ListObjectsV2 order; buquet finds due work by it). Never raises.
    """
    try:
        infos = await store.list(prefix, limit=limit)
    except StorageError as exc:
        return Check("listing", "fail", str(exc), exc.hint or "the credentials need s3:ListBucket")
    keys = [i.key for i in infos]
    if not _sorted_bytes(keys):
        return Check("listing", "fail", f"LIST under {prefix or '/'!r} returned {len(keys)} keys out of order",
                     "buquet needs keys listed in ascending order (S3 ListObjectsV2)")
    if len(keys) < 2:
        return Check("listing", "ok", f"LIST works ({len(keys)} key(s)); order not verifiable without --write-test")
    return Check("listing", "ok", f"LIST returned {len(keys)} keys in ascending order")


async def listing_check_scratch(
    store: ObjectStore, scratch: str, written: list[str]
) -> tuple[Check, ScratchWrites | None]:
    """The ``listing`` check with writes: 5 objects under ``<scratch>list/`` written
    concurrently in shuffled order (keys appended to ``written`` before each write, for
    cleanup), then one LIST that must return exactly them in ascending UTF-8 byte
    order, then one LIST with ``start_after`` = the 2nd key and ``limit`` 2 that must
    return the 3rd and 4th (S3 ListObjectsV2 ``StartAfter``/``MaxKeys``).

    Returns:
        ``(check, writes)``: ``writes`` (for the clock check) is ``None`` unless the
        check passed. Never raises.
    """
    base = f"{scratch}list/"
    # shaped like buquet's index keys: 15-digit times, then id and type
    names = ["000000000000100.b", "000000000000100.c", "000000000000099.z", "000000000000101.a",
             "000000000000100.B"]
    keys = [base + n for n in names]
    expected = sorted(keys, key=str.encode)
    shuffled = keys[:]
    random.shuffle(shuffled)
    written.extend(shuffled)
    t0 = datetime.now(timezone.utc)
    # every write finishes (or fails) before the check goes on: none lands after cleanup
    results = await asyncio.gather(*(store.put(k, b"doctor listing probe") for k in shuffled),
                                   return_exceptions=True)
    for exc in results:
        if isinstance(exc, StorageError):
            return Check("listing", "fail", f"scratch write failed: {exc}", exc.hint), None
        if isinstance(exc, BaseException):
            raise exc
    t1 = datetime.now(timezone.utc)
    try:
        infos = await store.list(base, limit=1000)
        page = await store.list(base, start_after=expected[1], limit=2)
    except StorageError as exc:
        return Check("listing", "fail", str(exc), exc.hint or "the credentials need s3:ListBucket"), None
    got = [i.key for i in infos]
    if got != expected:
        if sorted(got, key=str.encode) == expected:
            detail = f"LIST returned the 5 scratch keys out of order: {[g[len(base):] for g in got]}"
        else:
            detail = f"LIST returned {len(got)} of the 5 scratch keys just written (list-after-write is not consistent)"
        return Check("listing", "fail", detail,
                     "buquet needs strongly consistent LISTs in ascending key order (S3 ListObjectsV2)"), None
    if [i.key for i in page] != expected[2:4]:
        return Check("listing", "fail",
                     f"LIST with StartAfter/MaxKeys returned {[i.key[len(base):] for i in page]}, "
                     f"expected {[k[len(base):] for k in expected[2:4]]}",
                     "buquet pages through listings with StartAfter and MaxKeys (S3 ListObjectsV2)"), None
    return (Check("listing", "ok", "5 scratch keys listed in ascending byte order; StartAfter/MaxKeys paging works"),
            ScratchWrites(infos, t0, t1))


async def clock_check(store: ObjectStore, writes: ScratchWrites | None = None) -> Check:
    """The ``clock`` check: the store's clock minus this machine's, in seconds.

    Sources: :meth:`ObjectStore.server_time` (S3: the ``Date`` header of one HEAD
    Bucket, whole seconds, taken at the middle of its second, so ±0.5 s plus the round
    trip); and, when ``writes`` is given (objects written between local times ``t0``
    and ``t1``), their ``Last-Modified``: a write stamped
    ``LM`` (whole seconds) means the skew lies in ``(LM - t1, LM + 1 s - t0)``, so a
    bound that excludes 0 proves a skew at least that large. The larger of the two
    estimates is judged: warn above 1 s, fail above 30 s. Stores without a clock of
    their own (local directory, memory) use this machine's clock: ok. Never raises.

    buquet computes lease expiries, ``available_at`` and task timestamps from this
    machine's clock plus the offset to the store's ``Date`` (re-read every 5 minutes),
    so a steady skew is tolerated; what the check guards against is a clock far off
    (AWS refuses requests more than 15 minutes off, ``RequestTimeTooSkewed``) or one
    that is being stepped, which moves every lease this process writes.
    """
    estimates: list[float] = []
    parts: list[str] = []
    try:
        server = await store.server_time()
    except StorageError as exc:
        return Check("clock", "warn", f"cannot read the store's clock: {exc}",
                     "the clock is read from the Date header of a HEAD Bucket request")
    if server is not None:
        date_skew = _seconds(server - datetime.now(timezone.utc))
        estimates.append(date_skew)
        parts.append(f"Date header {date_skew:+.1f} s (±0.5 s)")
    if writes is not None and writes.infos:
        infos, t0, t1 = writes.infos, writes.started, writes.finished
        lo = max(_seconds(i.last_modified - t1) for i in infos)
        hi = min(_seconds(i.last_modified + timedelta(seconds=1) - t0) for i in infos)
        bound = lo if lo > 0 else (hi if hi < 0 else 0.0)
        estimates.append(bound)
        parts.append("Last-Modified of scratch writes " + ("within 1 s" if bound == 0 else f"≥ {bound:+.1f} s"))
    if not estimates:
        return Check("clock", "ok", "the store uses this machine's clock (no skew possible)",
                     data={"skew_seconds": 0.0})
    skew = max(estimates, key=abs)
    detail = f"store clock {skew:+.1f} s from this machine's (" + "; ".join(parts) + ")"
    data = {"skew_seconds": round(skew, 3)}
    note = ("leases are timed by this machine's clock plus the offset to the store's Date header, "
            "re-read every 5 minutes")
    if abs(skew) > SKEW_FAIL_SECONDS:
        return Check("clock", "fail", detail,
                     f"sync this machine's clock (NTP); {note}; AWS refuses requests over 15 minutes off", data)
    if abs(skew) > SKEW_WARN_SECONDS:
        return Check("clock", "warn", detail, f"sync this machine's clock (NTP); {note}", data)
    return Check("clock", "ok", detail, data=data)


# ------------------------------------------------------------ atomicity race
@dataclass(slots=True)
class _Outcome:
    won: bool
    etag: str | None = None
    error: str | None = None  # a failure other than a precondition failure


async def _attempt(write: Callable[[], Awaitable[str]]) -> _Outcome:
    try:
        return _Outcome(True, await write())
    except PreconditionFailed:
        return _Outcome(False)
    except StorageError as exc:
        return _Outcome(False, error=str(exc))


async def _race_phase(store: ObjectStore, key: str, bodies: list[bytes], if_match: str | None) -> list[_Outcome]:
    """One phase: every body written to ``key`` at once, ``If-None-Match: *`` when
    ``if_match`` is None, else ``If-Match: if_match``."""
    start = asyncio.Event()

    async def one(body: bytes) -> _Outcome:
        await start.wait()  # every writer is created before any request leaves
        if if_match is None:
            return await _attempt(lambda: store.put(key, body, if_none_match=True))
        return await _attempt(lambda: store.put(key, body, if_match=if_match))

    tasks = [asyncio.ensure_future(one(b)) for b in bodies]
    await asyncio.sleep(0)
    start.set()
    return list(await asyncio.gather(*tasks))


async def conditional_probe(store: ObjectStore, scratch: str, written: list[str]) -> tuple[bool, bool, str | None]:
    """Sequential check of the conditional headers on ``<scratch>probe``: create it
    (``If-None-Match: *``), create it again (must fail), update with a made-up ETag
    (``If-Match``, must fail), update ``<scratch>probe-missing`` with ``If-Match``
    (must fail: 412 on most stores, 404 on AWS). 4 PUTs.

    Returns:
        ``(if_none_match_honoured, if_match_honoured, error)``; ``error`` is the
        one-line message of an unexpected failure (then the booleans mean nothing).
    """
    key, missing = f"{scratch}probe", f"{scratch}probe-missing"
    written.extend([key, missing])
    try:
        etag = await store.put(key, b"doctor probe 1", if_none_match=True)
    except PreconditionFailed:
        return False, False, f"a create of the fresh key {key} got 412"
    except StorageError as exc:
        return False, False, str(exc)
    checks: list[bool] = []
    wrong = '"00000000000000000000000000000000"' if etag != '"00000000000000000000000000000000"' else '"1"'
    writes: list[Callable[[], Awaitable[str]]] = [
        lambda: store.put(key, b"doctor probe 2", if_none_match=True),
        lambda: store.put(key, b"doctor probe 3", if_match=wrong),
        lambda: store.put(missing, b"doctor probe 4", if_match=wrong),
    ]
    for write in writes:
        out = await _attempt(write)
        if out.error:
            return False, False, out.error
        checks.append(not out.won)
    return checks[0], checks[1] and checks[2], None


async def atomicity_race(
    store: ObjectStore,
    scratch: str,
    written: list[str],
    *,
    rounds: int = DEFAULT_ROUNDS,
    writers: int = DEFAULT_WRITERS,
    progress: Callable[[int, int], None] | None = None,
) -> Check:
    """The ``conditional writes`` check: :func:`conditional_probe`, then ``rounds``
    rounds of the race on keys ``<scratch>race/<round>`` (appended to ``written``).

    Per round (2 × ``writers`` PUTs, 2 GETs): ``writers`` concurrent ``If-None-Match: *``
    creates of a fresh key — exactly one must return an ETag and the others raise
    :class:`~buquet.errors.PreconditionFailed` (412); a GET must show the winner's
    body. Then ``writers`` concurrent ``If-Match: <etag>`` updates, with the ETag from
    that GET — again exactly one winner, and a GET showing its body. Other errors
    (5xx, resets) are reported and fail the round only when they leave it without
    exactly one winner.

    S3 behaviour relied on: a conditional PUT is decided atomically against the
    object's current state (AWS S3, MinIO, R2 document it; moto and SeaweedFS have
    been seen to let two writers win, stores such as GCS's S3 API or Garage ignore
    the headers).

    Args:
        rounds: rounds to run (≥ 1).
        writers: concurrent writers per phase (≥ 2).
        progress: called with ``(rounds done, rounds)`` after each round.

    Returns:
        ``fail`` with the failure mode: ``"ignores conditional headers"`` (a
        conditional write that must fail succeeded in the sequential probe, or no
        writer ever got 412 in the race), or ``"let two writers win in round k"``.
        Never raises.
    """
    inm_ok, im_ok, error = await conditional_probe(store, scratch, written)
    if error:
        return Check("conditional writes", "fail", f"probe write failed: {error}",
                     "check the endpoint and the credentials (s3:PutObject on the bucket)")
    if not (inm_ok and im_ok):
        ignored = " and ".join(h for h, ok in (("If-None-Match", inm_ok), ("If-Match", im_ok)) if not ok)
        what = []
        if not inm_ok:
            what.append("a second If-None-Match:* create of an existing key succeeded")
        if not im_ok:
            what.append("an If-Match write with a wrong ETag succeeded")
        return Check(
            "conditional writes", "fail",
            f"the store ignores conditional headers ({ignored}): " + "; ".join(what) + "; race not run",
            SUGGEST_ATOMIC, data={"mode": "ignores conditional headers", "ignored": ignored},
        )

    nonce = secrets.token_hex(4)
    failures: list[dict[str, Any]] = []
    errors: list[str] = []
    saw_412 = False
    passed = 0
    for r in range(1, rounds + 1):
        key = f"{scratch}race/{r:04d}"
        written.append(key)
        round_ok = True
        etag: str | None = None
        for phase in ("create", "update"):
            if phase == "update" and etag is None:
                break
            bodies = [f"doctor {nonce} round {r} {phase} writer {i}".encode() for i in range(writers)]
            outcomes = await _race_phase(store, key, bodies, etag if phase == "update" else None)
            winners = [i for i, o in enumerate(outcomes) if o.won]
            errs = [o.error for o in outcomes if o.error]
            errors.extend(errs)
            saw_412 = saw_412 or any(not o.won and not o.error for o in outcomes)
            try:
                stored = await store.get(key)
            except StorageError as exc:
                failures.append({"round": r, "phase": phase, "winners": len(winners),
                                 "problem": f"read-back failed: {exc}"})
                round_ok = False
                break
            problem = None
            if len(winners) > 1:
                problem = f"{len(winners)} writers won"
            elif not winners:
                problem = "no writer won" + (f" ({len(errs)} errors)" if errs else "")
            elif stored.data != bodies[winners[0]]:
                problem = "the stored body is not the winner's"
            if problem:
                failures.append({"round": r, "phase": phase, "winners": len(winners), "problem": problem})
                round_ok = False
            etag = stored.etag
        passed += round_ok
        if progress is not None:
            progress(r, rounds)

    data: dict[str, Any] = {"rounds": rounds, "writers": writers, "passed": passed,
                            "failures": failures, "errors": len(errors)}
    err_note = f"; {len(errors)} writes failed otherwise (e.g. {errors[0]})" if errors else ""
    if not saw_412 and passed < rounds:
        # the sequential probe passed: the headers are read, but not decided atomically
        data["mode"] = "ignores conditional headers under concurrency"
        return Check("conditional writes", "fail",
                     f"not atomic: the store ignores conditional headers under concurrency — no racing writer "
                     f"ever got 412, {passed}/{rounds} rounds passed (one at a time they are honoured){err_note}",
                     SUGGEST_ATOMIC, data)
    if failures:
        multi = [f for f in failures if f["winners"] > 1]
        if multi:
            data["mode"] = "multiple winners"
            first = multi[0]
            where = ", ".join(f"{f['round']} ({'If-None-Match' if f['phase'] == 'create' else 'If-Match'})"
                              for f in multi[:5]) + (" ..." if len(multi) > 5 else "")
            detail = (f"not atomic: let {first['winners']} writers win in round {first['round']} — "
                      f"{passed}/{rounds} rounds passed; several winners in round(s) {where}{err_note}")
        else:
            data["mode"] = "other"
            first = failures[0]
            detail = (f"{passed}/{rounds} rounds passed; round {first['round']} ({first['phase']}): "
                      f"{first['problem']}{err_note}")
        return Check("conditional writes", "fail", detail, SUGGEST_ATOMIC, data)
    return Check("conditional writes", "ok",
                 f"{passed}/{rounds} rounds passed: {writers} concurrent If-None-Match:* creates and "
                 f"{writers} If-Match updates each had exactly one winner, read back intact{err_note}",
                 data=data)


async def cleanup_check(store: ObjectStore, scratch: str, written: Sequence[str]) -> Check:
    """The ``cleanup`` check: delete every key in ``written`` (one DeleteObjects per
    1,000 keys), then LIST ``scratch`` and delete anything left (a write whose
    response was lost). Never raises."""
    try:
        if written:
            await store.delete_many(sorted(set(written)))
        left = await store.list(scratch, limit=1000)
        if left:
            await store.delete_many([i.key for i in left])
            left = await store.list(scratch, limit=1000)
    except StorageError as exc:
        return Check("cleanup", "warn", f"scratch objects may be left under {scratch}: {exc}",
                     f"delete {scratch} by hand")
    if left:
        return Check("cleanup", "warn", f"{len(left)} scratch objects left under {scratch}",
                     f"delete {scratch} by hand")
    return Check("cleanup", "ok", f"scratch objects under {scratch} deleted")


# --------------------------------------------------------------------- entry
async def run_doctor(
    store: ObjectStore,
    *,
    prefix: str = "",
    config_key: str | None = None,
    settings: Sequence[tuple[str, str | None, str]] = (),
    write_test: bool = False,
    rounds: int = DEFAULT_ROUNDS,
    writers: int = DEFAULT_WRITERS,
    on_check: Callable[[Check], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DoctorReport:
    """Run every check against ``store`` and return the report. Never raises for
    a store failure: each one becomes a failed check.

    Without ``write_test`` nothing is written (the race is ``skip``: workers should not
    trust an endpoint until it passed). With it, scratch objects are written under
    ``<prefix>_doctor/<16 hex digits>/`` and deleted at the end, also after a failure
    (see the module docstring for the request cost).

    Args:
        store: the queue's object store.
        prefix: the queue's key prefix (``""`` or ending in ``/``).
        config_key: the key of the queue's ``config.json`` (default
            ``<prefix>config.json``).
        settings: for the configuration check, see :func:`configuration_check`.
        write_test: run the checks that write (listing order, the race).
        rounds: race rounds (1–1000).
        writers: concurrent writers per race phase (2–64).
        on_check: called with each :class:`Check` as soon as it is decided.
        progress: called with ``(rounds done, rounds)`` during the race.

    Raises:
        ValueError: ``rounds`` or ``writers`` out of range.
    """
    if not 1 <= rounds <= 1000:
        raise ValueError(f"rounds must be between 1 and 1000, got {rounds}")
    if not 2 <= writers <= 64:
        raise ValueError(f"writers must be between 2 and 64, got {writers}")
    report = DoctorReport(store.description)
    meter = _Meter(store)

    def add(check: Check) -> Check:
        report.checks.append(check)
        if on_check is not None:
            on_check(check)
        return check

    add(configuration_check(store.description, settings))
    reach = add(await reachability_check(store, config_key or f"{prefix}config.json"))
    if reach.status == "fail":
        for name in ("listing", "clock", "conditional writes"):
            add(Check(name, "skip", "not run: the store is not reachable"))
        report.requests = meter.delta()
        return report

    if not write_test:
        add(await listing_check_read_only(store, prefix))
        add(await clock_check(store))
        add(Check("conditional writes", "skip",
                  "atomicity race not run (it writes; pass --write-test): workers should not trust this "
                  "endpoint until it has passed", data={"mode": "skipped"}))
        report.requests = meter.delta()
        return report

    scratch = f"{prefix}{SCRATCH_DIR}{secrets.token_hex(8)}/"
    written: list[str] = []
    try:
        listing, writes = await listing_check_scratch(store, scratch, written)
        add(listing)
        add(await clock_check(store, writes))
        add(await atomicity_race(store, scratch, written, rounds=rounds, writers=writers, progress=progress))
    finally:
        # shielded: a Ctrl-C during the race still removes the scratch objects
        add(await asyncio.shield(cleanup_check(store, scratch, written)))
        report.requests = meter.delta()
    return report


__all__ = [
    "Check", "DoctorReport", "run_doctor", "configuration_check", "reachability_check",
    "listing_check_read_only", "listing_check_scratch", "clock_check", "ScratchWrites", "conditional_probe",
    "atomicity_race", "cleanup_check", "DEFAULT_ROUNDS", "DEFAULT_WRITERS",
]
