"""Chaos: S3 faults and SIGKILLed workers, then a check of everything from the bucket.

A fault proxy (tests/_faultproxy.py: loopback, seeded) sits in front of SeaweedFS and
injects 500/503 answers, connection resets, responses lost after the server applied
the write, and 0.5–3 s delays. The test's own queue (config and submits) and several
``buquet worker tests.fault_app:make_worker`` processes go through it; a chaos loop
SIGKILLs a random worker every few seconds and starts a replacement. Then faults go
off, the workers (with their monitors) get a bounded settle, stop on SIGTERM (exit 0),
and the bucket is read directly (not through the proxy) to check:

* every submitted task exists and is final, with exactly one final state in its
  history; Completed with the correct output, Failed only where ``max_retries``
  allows it (all its attempts really failed);
* ``attempt <= max_retries + 1``; no execution without a claim in the history;
* executions of one task (side channel outside S3, tests/fault_app.py) never overlap
  unless the history shows that the lease of one of the two workers' attempts expired
  and the other worker claimed the task after it (a SIGKILLed worker's execution ends
  at the kill); a live overlap without one means fencing failed;
* a submit that raised names its ``task_id``;
* no entries left under ``ready/`` or ``leases/`` for final tasks, a few seconds
  (BUQUET_FAULT_INDEX_GRACE_SECONDS, 10) after every task is final.

It prints the figures (tasks, faults by kind, kills, duplicate executions and why) in
one summary line and writes a full report (per failing task: the stored document, its
history, its executions, the faults that hit its requests, worker log lines; per stray
index entry: the requests that wrote and deleted it at the server).

The seed fixes the task mix, the kill schedule and the sequence of fault draws; which
request meets which fault also depends on how the processes interleave, so two runs
with one seed inject the same kinds of faults at the same rate, not on the same keys.

CI size by default (150 tasks submitted over 36 s, faults and kills for up to 60 s —
less once every task is final —, a settle of up to 90 s; about 1–1.5 min when the
engine is healthy, under 4 min when tasks are stranded). Longer by hand::

    BUQUET_FAULT_TASKS=2000 BUQUET_FAULT_SECONDS=600 python -m pytest tests/test_faults.py -s

Knobs (env): BUQUET_FAULT_TASKS, BUQUET_FAULT_SECONDS (fault phase), BUQUET_FAULT_SETTLE_SECONDS,
BUQUET_FAULT_SEED, BUQUET_FAULT_RATE (total fault probability per request),
BUQUET_FAULT_WORKERS, BUQUET_FAULT_KILL_EVERY ("min,max" seconds between kills),
BUQUET_FAULT_INDEX_GRACE_SECONDS, BUQUET_FAULT_REPORT (also write the report to this path),
BUQUET_FAULT_ARTIFACTS (copy the side channel and worker logs under this directory).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from buquet import Queue, RetryPolicy, Task, TaskStatus, connect
from tests._faultproxy import KINDS, FaultEvent, FaultProxy, JournalEntry
from tests.fault_app import TASK_TYPE, expected_output

ROOT = Path(__file__).resolve().parent.parent
RETRY_POLICY = RetryPolicy(initial_interval_ms=200, max_interval_ms=2000, multiplier=2.0, jitter_percent=0.25)
MAX_RETRIES = 5          # ordinary tasks: a few kills cannot exhaust them
FAIL_MAX_RETRIES = 1     # "fail" tasks: end Failed after 2 attempts
TIMEOUT_SECONDS = 60     # handlers sleep at most 4 s: timeouts are not part of this test
#: for the batched deletes of index entries once every task is final
INDEX_GRACE_SECONDS = float(os.environ.get("BUQUET_FAULT_INDEX_GRACE_SECONDS") or 10)
FINAL = (TaskStatus.Completed, TaskStatus.Failed)


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


@dataclass
class Settings:
    tasks: int
    fault_seconds: float
    settle_seconds: float
    seed: int
    fault_rate: float
    workers: int
    kill_every: tuple[float, float]
    lease_seconds: float = 3.0
    concurrency: int = 4

    @classmethod
    def from_env(cls) -> "Settings":
        lo, _, hi = (os.environ.get("BUQUET_FAULT_KILL_EVERY") or "2,5").partition(",")
        return cls(
            tasks=int(os.environ.get("BUQUET_FAULT_TASKS") or 150),
            fault_seconds=_env_float("BUQUET_FAULT_SECONDS", 60),
            settle_seconds=_env_float("BUQUET_FAULT_SETTLE_SECONDS", 90),
            seed=int(os.environ.get("BUQUET_FAULT_SEED") or 7),
            fault_rate=_env_float("BUQUET_FAULT_RATE", 0.10),
            workers=int(os.environ.get("BUQUET_FAULT_WORKERS") or 3),
            kill_every=(float(lo), float(hi or lo)),
        )

    @property
    def submit_window(self) -> float:
        """Submits are spread over this many seconds, so kills meet work throughout."""
        return 0.6 * self.fault_seconds


# ----------------------------------------------------------------------------- tasks
@dataclass
class Spec:
    k: str
    n: int
    mode: str            # ok | slow | flaky | fail
    sleep: float
    xs: list[int]

    @property
    def max_retries(self) -> int:
        return FAIL_MAX_RETRIES if self.mode == "fail" else MAX_RETRIES

    def payload(self) -> dict[str, Any]:
        return {"k": self.k, "n": self.n, "mode": self.mode, "sleep": self.sleep, "xs": self.xs}


def make_specs(rng: random.Random, n: int) -> list[Spec]:
    specs = []
    for i in range(n):
        r = rng.random()
        if i < 2 or r < 0.04:
            mode, sleep = "fail", rng.uniform(0.02, 0.2)
        elif r < 0.12:
            mode, sleep = "slow", rng.uniform(1.5, 4.0)   # past heartbeats: the lease index
        elif r < 0.32:
            mode, sleep = "flaky", rng.uniform(0.02, 0.3)
        else:
            mode, sleep = "ok", rng.uniform(0.02, 0.3)
        specs.append(Spec(f"k{i:05d}", i, mode, round(sleep, 3), [rng.randrange(1000) for _ in range(3)]))
    rng.shuffle(specs)
    return specs


@dataclass
class SubmitFailure:
    exc: str
    task_id: str | None
    at: float


async def submit_all(queue: Queue, specs: list[Spec], window: float, ids: dict[str, str],
                     failures: dict[str, SubmitFailure]) -> None:
    """Submit every spec through the proxy, paced over ``window`` seconds."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    sem = asyncio.Semaphore(16)

    async def one(i: int, spec: Spec) -> None:
        await asyncio.sleep(max(0.0, t0 + i * window / len(specs) - loop.time()))  # pacing
        async with sem:
            try:
                task = await queue.submit(TASK_TYPE, spec.payload(), timeout_seconds=TIMEOUT_SECONDS,
                                          max_retries=spec.max_retries, retry_policy=RETRY_POLICY)
            except Exception as exc:  # recorded and checked, never swallowed
                failures[spec.k] = SubmitFailure(f"{type(exc).__name__}: {exc}", getattr(exc, "task_id", None), time.time())
            else:
                ids[spec.k] = task.id

    await asyncio.gather(*(one(i, s) for i, s in enumerate(specs)))


# --------------------------------------------------------------------------- workers
@dataclass
class WorkerProc:
    wid: str
    proc: subprocess.Popen[bytes]
    log: Path
    started: float
    killed_at: float | None = None
    exited_on_its_own: int | None = None   # return code when it died without our signal
    stop_rc: int | None = None


class Fleet:
    """The ``buquet worker`` processes: spawn, SIGKILL, replace, SIGTERM."""

    def __init__(self, env: dict[str, str], log_dir: Path, settings: Settings) -> None:
        self.env = env
        self.log_dir = log_dir
        self.settings = settings
        self.all: list[WorkerProc] = []
        self._n = 0

    def spawn(self) -> WorkerProc:
        self._n += 1
        wid = f"fw{self._n:03d}"
        log = self.log_dir / f"worker-{wid}.log"
        s = self.settings
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "buquet", "worker", "tests.fault_app:make_worker",
                 "--concurrency", str(s.concurrency), "--lease-seconds", str(s.lease_seconds),
                 "--poll-interval-ms", "200", "--max-poll-interval-ms", "1000",
                 "--monitor-interval-seconds", "1", "--shutdown-grace-seconds", "10"],
                cwd=ROOT, env={**self.env, "FAULT_WORKER_ID": wid},
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        w = WorkerProc(wid, proc, log, time.time())
        self.all.append(w)
        return w

    def live(self) -> list[WorkerProc]:
        return [w for w in self.all if w.killed_at is None and w.exited_on_its_own is None and w.stop_rc is None]

    def reap(self) -> list[WorkerProc]:
        """Workers that exited without being signalled (a defect): note and replace them."""
        dead = []
        for w in self.live():
            rc = w.proc.poll()
            if rc is not None:
                w.exited_on_its_own = rc
                dead.append(w)
                self.spawn()
        return dead

    def kill(self, w: WorkerProc) -> None:
        """SIGKILL ``w`` (no wait: it is reaped later). Call from the event loop's
        thread only, like :meth:`reap`, so a kill is never mistaken for a crash."""
        try:
            os.killpg(w.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        w.killed_at = time.time()

    def stop_all(self) -> None:
        """SIGTERM every live worker once it is up (a replacement spawned a moment ago may
        still be importing: the interpreter's default action would then be the status we
        read, not buquet's), and record each exit status."""
        live = self.live()
        ready_dir = self.log_dir / "ready"
        deadline = time.time() + 60
        while time.time() < deadline and not all((ready_dir / w.wid).exists() or w.proc.poll() is not None
                                                 for w in live):
            time.sleep(0.05)
        for w in live:
            w.proc.send_signal(signal.SIGTERM)
        for w in live:
            try:
                w.stop_rc = w.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(w.proc.pid, signal.SIGKILL)
                w.proc.wait()
                w.stop_rc = -999  # did not stop within 40 s of SIGTERM

    def kill_leftovers(self) -> None:
        for w in self.all:
            if w.proc.poll() is None:
                try:
                    os.killpg(w.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                w.proc.wait()


async def chaos(fleet: Fleet, rng: random.Random, stop: asyncio.Event, kills: list[tuple[str, int, float]]) -> None:
    """SIGKILL a random live worker every few seconds and start a replacement."""
    lo, hi = fleet.settings.kill_every
    while True:
        try:
            await asyncio.wait_for(stop.wait(), timeout=rng.uniform(lo, hi))
            return
        except asyncio.TimeoutError:
            pass
        fleet.reap()
        live = fleet.live()
        if not live:
            continue
        victim = rng.choice(live)
        fleet.kill(victim)
        kills.append((victim.wid, victim.proc.pid, victim.killed_at or time.time()))
        fleet.spawn()
        await asyncio.to_thread(victim.proc.wait, 30)


# ----------------------------------------------------------------------- side channel
@dataclass
class Execution:
    key: str
    wid: str
    pid: int
    eid: str
    start: float
    end: float | None = None
    outcome: str | None = None
    killed_at: float | None = None     # its worker's SIGKILL time, if killed

    def effective_end(self) -> float:
        """When it stopped: its end line, else its worker's kill, else never."""
        if self.end is not None:
            return self.end
        return self.killed_at if self.killed_at is not None else float("inf")


def read_executions(log_dir: Path, kill_times: dict[str, float]) -> dict[str, list[Execution]]:
    by_eid: dict[str, Execution] = {}
    for path in sorted(log_dir.glob("exec-*.log")):
        for line in path.read_text().splitlines():
            f = line.split()
            if len(f) >= 6 and f[0] == "S":
                by_eid[f[4]] = Execution(f[1], f[2], int(f[3]), f[4], float(f[5]), killed_at=kill_times.get(f[2]))
            elif len(f) >= 7 and f[0] == "E" and f[4] in by_eid:
                by_eid[f[4]].end, by_eid[f[4]].outcome = float(f[5]), f[6]
    out: dict[str, list[Execution]] = defaultdict(list)
    for e in by_eid.values():
        out[e.key].append(e)
    for execs in out.values():
        execs.sort(key=lambda e: e.start)
    return out


# ----------------------------------------------------------------------------- bucket
async def raw_keys(queue: Queue, prefix: str) -> list[Any]:
    """Every object under ``prefix`` (raw listing, paged)."""
    out: list[Any] = []
    start_after = None
    while True:
        page = await queue.store.list(prefix, start_after=start_after, limit=1000)
        out.extend(page)
        if len(page) < 1000:
            return out
        start_after = page[-1].key


def id_of(key: str, known: set[str] | frozenset[str] = frozenset()) -> str | None:
    """The task id in a key: ``tasks/<shard>/<id>.json``, ``ready/<shard>/<due>.<id>.<type>``,
    ``leases/<shard>/<expires>.<id>`` (docs/protocol.md); else any known id it contains."""
    leaf = key.rsplit("/", 1)[-1]
    if key.startswith("tasks/"):
        tid = leaf[: -len(".json")] if leaf.endswith(".json") else None
    else:
        parts = leaf.split(".")
        tid = parts[1] if len(parts) >= 2 else None
    if tid is not None and (not known or tid in known):
        return tid
    return next((k for k in known if k in key), tid)


async def final_states(queue: Queue, ids: list[str]) -> dict[str, Task | None]:
    sem = asyncio.Semaphore(16)

    async def one(i: str) -> Task | None:
        async with sem:
            return await queue.get(i)

    return dict(zip(ids, await asyncio.gather(*(one(i) for i in ids))))


async def wait_until_final(queue: Queue, ids: list[str], deadline: float, fleet: Fleet) -> set[str]:
    """Poll the bucket (directly) until every id is final or ``deadline`` (loop time).
    Returns the ids still not final."""
    loop = asyncio.get_running_loop()
    pending = set(ids)
    while pending:
        fleet.reap()
        got = await final_states(queue, sorted(pending))
        pending = {i for i, t in got.items() if t is None or t.status not in FINAL}
        if not pending or loop.time() >= deadline:
            break
        await asyncio.sleep(1.0)
    return pending


async def strays(queue: Queue, final_ids: set[str], known_ids: set[str]) -> list[Any]:
    """Index entries (ready/, leases/) of final tasks or of no known task."""
    out = []
    for prefix in ("ready/", "leases/"):
        for info in await raw_keys(queue, prefix):
            tid = id_of(info.key, known_ids)
            if tid is None or tid in final_ids or tid not in known_ids:
                out.append(info)
    return out


# ---------------------------------------------------------------------------- analysis
@dataclass
class Findings:
    failures: list[str] = field(default_factory=list)       # one line per violated check
    failed_tasks: dict[str, list[str]] = field(default_factory=dict)  # task id -> reasons
    notes: list[str] = field(default_factory=list)
    duplicate_causes: Counter[str] = field(default_factory=Counter)
    figures: dict[str, Any] = field(default_factory=dict)

    def task_fail(self, tid: str, reason: str) -> None:
        self.failed_tasks.setdefault(tid, []).append(reason)


_LEASE_EXPIRED = re.compile(r"lease\b.*\bexpired", re.IGNORECASE)  # "lease of attempt 2 expired (worker w stopped)"


def lease_expiry_between(history: list[Task], wid_a: str, wid_b: str) -> bool:
    """True if some attempt held by worker ``wid_a`` ended by lease expiry (reclaimed
    Running→Running, or requeued/failed with "lease of attempt N expired") before a
    later attempt was claimed by ``wid_b``."""
    for i, snap in enumerate(history[:-1]):
        if snap.status != TaskStatus.Running or snap.worker_id != wid_a:
            continue
        nxt = history[i + 1]
        expired = nxt.status == TaskStatus.Running or (
            nxt.status in (TaskStatus.Pending, TaskStatus.Failed) and _LEASE_EXPIRED.search(nxt.last_error or "") is not None
        )
        if expired and any(s.status == TaskStatus.Running and s.worker_id == wid_b for s in history[i + 1:]):
            return True
    return False


def duplicate_cause(e: Execution, nxt: Execution, spec: Spec | None) -> str:
    """Why execution ``e`` was followed by another one (``nxt``) of the same task."""
    if spec is not None and spec.mode == "flaky" and e.outcome == "error":
        return "by design: flaky first execution raised"
    if spec is not None and spec.mode == "fail" and e.outcome == "fail":
        return "by design: fail task retried"
    if e.killed_at is not None and e.start <= e.killed_at <= nxt.start + 1.0:
        return "worker SIGKILLed" + (" mid-handler" if e.end is None else " before its result was recorded")
    if e.outcome == "cancelled":
        return "lease lost while running (heartbeat fenced)"
    if e.outcome == "ok":
        return "result not recorded by a live worker (completion write lost or lease expired)"
    return f"other ({e.outcome})"


#: a worker killed this soon after its handler ended may not have sent its batched
#: delete yet (final write under faults, then the batch's flush delay)
KILL_WINDOW = 5.0


def stray_cause(key: str, t: Task, execs: list[Execution], events: list[FaultEvent],
                journal: list[JournalEntry], t0: float) -> tuple[str, str]:
    """(cause, detail) of an index entry left behind by the final task ``t``, from the
    proxy's journal of the requests that wrote or deleted it at the server."""
    ends = [e.end for e in execs if e.wid == t.worker_id and e.end is not None]
    end = ends[-1] if ends else None
    timeline = "; ".join(
        f"{'PUT' if e.op.startswith('put') else e.op} #{e.seq} forwarded {e.forwarded_at - t0:+.3f}s answered "
        f"{e.status} {e.answered_at - t0:+.3f}s" + (f" [{e.fault}]" if e.fault else "") for e in journal)
    detail = f"final state by {t.worker_id}" + (f", its handler ended {end - t0:+.3f}s" if end else "")
    detail += f"; requests on the entry: {timeline or 'none reached the server'}"
    puts = [e for e in journal if e.op.startswith("put")]
    dels = [e for e in journal if not e.op.startswith("put")]
    if puts and dels and puts[-1].answered_at > dels[-1].answered_at:
        return "re-created after its delete (a late PUT)", detail + " -> the PUT landed after the delete"
    if dels:
        return "deleted at the server, still listed", detail
    faulted = [ev for ev in events if ev.op in ("delete", "delete_many") and (key in ev.keys or ev.path.endswith(key))]
    killed = next((e for e in reversed(execs)  # a worker that held an attempt died soon after it
                   if e.end is not None and e.killed_at is not None and 0 <= e.killed_at - e.end <= KILL_WINDOW), None)
    seen = ", ".join(f"#{ev.seq} {ev.kind} at {ev.at - t0:+.3f}s" for ev in faulted)
    if any(ev.kind in ("reset", "lost_response") for ev in faulted):
        kind = next(ev.kind for ev in faulted if ev.kind in ("reset", "lost_response"))
        return (f"its DeleteObjects met {kind}, never sent again",
                detail + f" -> DeleteObjects carrying it met {seen} and was not sent again")
    if killed is not None:
        how = f" while its DeleteObjects was being retried ({seen})" if faulted else " before its batched delete"
        return (f"a worker SIGKILLed{' during a DeleteObjects retry' if faulted else ' before its batched delete'}",
                detail + f" -> {killed.wid} (attempt ending {killed.end - t0:+.3f}s, {killed.outcome}) was SIGKILLed "
                f"{killed.killed_at - killed.end:.2f} s after its handler ended{how}")
    if faulted:
        return "its DeleteObjects met 5xx, no retry reached the server", detail + f" -> {seen}"
    return "no delete ever sent by a live worker", detail + " -> no DeleteObjects carried it"


def analyse(specs: dict[str, Spec], submitted: dict[str, str], submit_failures: dict[str, SubmitFailure],
            tasks: dict[str, Task], histories: dict[str, list[Task]], task_object_ids: set[str],
            execs: dict[str, list[Execution]], kills: dict[str, float], stray_entries: list[Any],
            fleet: Fleet, proxy: FaultProxy | None = None, t0: float = 0.0) -> Findings:
    f = Findings()
    # -- submits
    for k, sf in sorted(submit_failures.items()):
        if sf.task_id is None:
            f.failures.append(f"submit of {k} raised without a task_id: {sf.exc.splitlines()[0][:300]}")
    # -- which task ids belong to which key (from the bucket, by input["k"])
    ids_by_key: dict[str, set[str]] = defaultdict(set)
    for tid, t in tasks.items():
        if isinstance(t.input, dict) and "k" in t.input:
            ids_by_key[t.input["k"]].add(tid)
    for k, tid in submitted.items():
        ids_by_key[k].add(tid)
    for k, sf in submit_failures.items():
        if sf.task_id:
            ids_by_key[k].add(sf.task_id)
    for k, tids in sorted(ids_by_key.items()):
        if len(tids) > 1:
            f.failures.append(f"one submit of {k} produced {len(tids)} tasks: {sorted(tids)}")
            for tid in tids:
                f.task_fail(tid, f"one of {len(tids)} tasks for the single submit of {k}")
    # -- every task that must exist: returned by submit, named by a raised submit whose
    #    task left a trace in the bucket, or found in the bucket
    for k, sf in submit_failures.items():
        if sf.task_id and sf.task_id not in tasks:
            f.notes.append(f"submit of {k} raised ({sf.exc.splitlines()[0][:300]}); its task {sf.task_id} was never written")
    must_exist = set(submitted.values()) | set(tasks)
    dup_tasks = 0
    for tid in sorted(must_exist):
        t = tasks.get(tid)
        if t is None:
            f.task_fail(tid, "submitted but missing from the bucket (lost)")
            continue
        if tid not in task_object_ids:
            f.task_fail(tid, "no task object tasks/<shard>/<id>.json (only its ready marker)")
        k = t.input.get("k") if isinstance(t.input, dict) else None
        spec = specs.get(k) if k else None
        hist = histories.get(tid, [])
        if spec is None:
            f.task_fail(tid, f"unknown input {t.input!r}")
            continue
        if t.status not in FINAL:
            f.task_fail(tid, f"not final after the settle: {t.status.value} (stranded)")
        finals = [s for s in hist if s.status in FINAL]
        if len(finals) != 1 or not hist or hist[-1].status not in FINAL:
            if t.status in FINAL:
                f.task_fail(tid, f"history has {len(finals)} final states (want exactly one, last)")
        if t.attempt > t.max_retries + 1:
            f.task_fail(tid, f"attempt {t.attempt} > max_retries + 1 = {t.max_retries + 1}")
        if t.max_retries != spec.max_retries:
            f.task_fail(tid, f"max_retries {t.max_retries}, submitted with {spec.max_retries}")
        mine = sorted(execs.get(k, []), key=lambda e: e.start)
        running = [s for s in hist if s.status == TaskStatus.Running]
        # each execution needs a claim (a Running entry) by its worker
        for wid, n in Counter(e.wid for e in mine).items():
            claims = sum(1 for s in running if s.worker_id == wid)
            if n > claims:
                f.task_fail(tid, f"worker {wid} executed it {n}x but holds {claims} claims in the history")
        # phantom attempts: claims by a worker that never ran them and was not killed
        phantom = 0
        for wid, claims in Counter(s.worker_id for s in running).items():
            n = sum(1 for e in mine if e.wid == wid)
            phantom += max(0, claims - n - (1 if wid in kills else 0))
        if phantom:
            f.figures["phantom_attempts"] = f.figures.get("phantom_attempts", 0) + phantom
            f.notes.append(f"task {tid} ({k}): {phantom} attempt(s) claimed but never executed by a live worker")
        if t.status == TaskStatus.Completed:
            if spec.mode == "fail":
                f.task_fail(tid, "Completed, but its handler always raises")
            if t.output != expected_output(spec.payload()):
                f.task_fail(tid, f"wrong output {t.output!r}, want {expected_output(spec.payload())!r}")
            if not any(e.wid == t.worker_id and e.outcome == "ok" for e in mine):
                f.task_fail(tid, f"Completed by {t.worker_id}, which never finished an execution of it")
        elif t.status == TaskStatus.Failed:
            if t.attempt != t.max_retries + 1:
                f.task_fail(tid, f"Failed at attempt {t.attempt} with {t.max_retries} retries allowed: {t.last_error}")
            elif spec.mode != "fail":
                if phantom:
                    f.task_fail(tid, f"Failed ({t.last_error}) after {phantom} attempt(s) that never ran")
                else:
                    f.notes.append(f"task {tid} ({k}, {spec.mode}) Failed legitimately: {t.last_error}")
        # overlapping executions
        for i, a in enumerate(mine):
            for b in mine[i + 1:]:
                if b.start < a.effective_end():
                    overlap = min(a.effective_end(), b.effective_end()) - b.start
                    if lease_expiry_between(hist, a.wid, b.wid):
                        f.figures["explained_overlaps"] = f.figures.get("explained_overlaps", 0) + 1
                        if overlap != float("inf"):
                            f.figures["max_overlap_seconds"] = round(max(f.figures.get("max_overlap_seconds", 0), overlap), 3)
                        f.notes.append(f"task {tid} ({k}): executions {a.eid} ({a.wid}, {a.outcome or 'no end'}) and "
                                       f"{b.eid} ({b.wid}) overlap {overlap:.2f} s after the lease of {a.wid}'s "
                                       f"attempt expired (explained)")
                    elif lease_expiry_between(hist, b.wid, a.wid):
                        # b's attempt is the earlier one: its handler started after its lease
                        # had lapsed and a's worker had claimed the task again
                        f.figures["late_starts"] = f.figures.get("late_starts", 0) + 1
                        f.notes.append(f"task {tid} ({k}): LATE START: {b.wid} started its handler ({b.eid}) at "
                                       f"{b.start - a.start:.3f} s after {a.wid}'s later attempt had started "
                                       f"({a.eid}): its own lease had lapsed before it began (explained by lease "
                                       f"expiry, its writes were fenced)")
                    else:
                        f.task_fail(tid, f"executions {a.eid} ({a.wid}) and {b.eid} ({b.wid}) overlap "
                                         f"{'until the end' if overlap == float('inf') else f'{overlap:.2f} s'} "
                                         f"with no lease expiry between their attempts in the history (fencing failed)")
        if len(mine) > 1:
            dup_tasks += 1
            causes = [duplicate_cause(a, b, spec) for a, b in zip(mine, mine[1:])]
            f.duplicate_causes.update(causes)
            extra = [c for c in causes if not c.startswith("by design")]
            if extra:
                f.notes.append(f"task {tid} ({k}, {spec.mode}) executed {len(mine)}x, "
                               f"attempt {t.attempt}: duplicate because {'; '.join(extra)}")
    f.figures["tasks_executed_more_than_once"] = dup_tasks
    # -- index
    for info in stray_entries:
        tid = id_of(info.key, set(tasks))
        entry = f"stray index entry {info.key} (written {info.last_modified:%H:%M:%S})"
        if tid in tasks:
            t = tasks[tid]
            key = t.input.get("k", "") if isinstance(t.input, dict) else ""
            cause, why = stray_cause(info.key, t, execs.get(key, []),
                                     proxy.events_matching(info.key) if proxy else [],
                                     proxy.journal_for(info.key) if proxy else [], t0)
            causes = f.figures.setdefault("stray_causes", {})
            causes[cause] = causes.get(cause, 0) + 1
            f.task_fail(tid, f"{entry}; the task is {t.status.value}; {why}")
        else:
            f.failures.append(f"{entry} of no known task")
    for tid, reasons in f.failed_tasks.items():
        for r in reasons:
            f.failures.append(f"task {tid}: {r}")
    # -- workers
    for w in fleet.all:
        if w.exited_on_its_own is not None:
            f.failures.append(f"worker {w.wid} exited on its own with code {w.exited_on_its_own}: {tail(w.log, 15)}")
        if w.stop_rc not in (None, 0):
            f.failures.append(f"worker {w.wid} exited with code {w.stop_rc} on SIGTERM: {tail(w.log, 15)}")
    return f


def tail(path: Path, n: int) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(lines[-n:])


def task_dossier(tid: str, t: Task | None, hist: list[Task], execs: list[Execution], proxy: FaultProxy,
                 log_dir: Path, kills: dict[str, float], t0: float, index: list[Any]) -> str:
    """Everything known about one task, for the report."""
    out = [f"=== task {tid}"]
    if t is None:
        out.append("  not in the bucket")
    else:
        doc = {f.name: getattr(t, f.name) for f in dataclasses.fields(t) if f.name != "history"}
        out.append("  document: " + json.dumps(doc, sort_keys=True, default=str))
        out.append("  history:")
        for s in hist:
            err = f"  error={s.last_error!r}" if s.status != TaskStatus.Running else ""
            out.append(f"    {s.updated_at.timestamp() - t0:+9.3f}s {s.status.value:9s} attempt={s.attempt} "
                       f"worker={s.worker_id}{err}")
    out.append("  executions (side channel):")
    for e in execs:
        end = f"{e.end - t0:+9.3f}s {e.outcome}" if e.end is not None else "(no end line)"
        killed = f"  worker SIGKILLed at {e.killed_at - t0:+.3f}s" if e.killed_at is not None else ""
        out.append(f"    {e.eid} {e.wid}: {e.start - t0:+9.3f}s .. {end}{killed}")
    for info in index:
        if tid in info.key:
            out.append(f"  index entry left: {info.key}")
    events = proxy.events_matching(tid)
    out.append(f"  faults injected on its requests ({len(events)}):")
    for ev in events:
        out.append(f"    {ev.at - t0:+9.3f}s {ev.describe()}")
    lines = []
    for path in sorted(log_dir.glob("worker-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if tid in line:
                lines.append(f"    [{path.stem[7:]}] {line}")
    out.append(f"  worker log lines ({len(lines)}):")
    out.extend(lines[:40])
    return "\n".join(out)


# -------------------------------------------------------------------------------- test
@pytest.mark.s3
@pytest.mark.e2e
async def test_faults_and_sigkills(s3_endpoint: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from tests._servers import unique_bucket

    s = Settings.from_env()
    t0 = time.time()
    loop = asyncio.get_running_loop()
    bucket = unique_bucket(s3_endpoint, "faults")
    specs = make_specs(random.Random(s.seed), s.tasks)
    spec_by_key = {sp.k: sp for sp in specs}
    chaos_rng = random.Random(s.seed + 1)
    log_dir = tmp_path / "side"
    log_dir.mkdir()
    phases: dict[str, float] = {}

    with FaultProxy(s3_endpoint, seed=s.seed, rates=FaultProxy.scaled_rates(s.fault_rate),
                    journal_prefixes=("ready/", "leases/")) as proxy:
        # the queue's config and the submits go through the proxy as well
        queue = await connect(endpoint=proxy.endpoint, bucket=bucket, region="us-east-1")
        direct = await connect(endpoint=s3_endpoint, bucket=bucket, region="us-east-1", read_only=True)
        env = {k: v for k, v in os.environ.items() if k not in ("BUQUET_LOCAL_DIR", "BUQUET_PREFIX")}
        env.update({"S3_ENDPOINT": proxy.endpoint, "S3_BUCKET": bucket, "S3_REGION": "us-east-1",
                    "FAULT_LOG_DIR": str(log_dir), "PYTHONPATH": str(ROOT)})
        fleet = Fleet(env, log_dir, s)
        kills: list[tuple[str, int, float]] = []
        submitted: dict[str, str] = {}
        submit_failures: dict[str, SubmitFailure] = {}
        not_final: set[str] = set()
        stray_entries: list[Any] = []
        try:
            for _ in range(s.workers):
                fleet.spawn()
            deadline = loop.time() + 90
            while len(list((log_dir / "ready").glob("*")) if (log_dir / "ready").exists() else []) < s.workers:
                fleet.reap()
                assert loop.time() < deadline, "the workers did not start: " + tail(fleet.all[0].log, 20)
                await asyncio.sleep(0.1)
            phases["start"] = time.time() - t0

            # -- fault phase: submits, faults, SIGKILLs
            stop_chaos = asyncio.Event()
            chaos_task = asyncio.create_task(chaos(fleet, chaos_rng, stop_chaos, kills))
            submit_task = asyncio.create_task(submit_all(queue, specs, s.submit_window, submitted, submit_failures))
            fault_end = loop.time() + s.fault_seconds
            seen_final: set[str] = set()
            while loop.time() < fault_end:
                fleet.reap()
                if submit_task.done():
                    todo = sorted(set(submitted.values()) - seen_final)
                    left = await wait_until_final(direct, todo, 0, fleet)
                    seen_final.update(set(todo) - left)
                    if not left:
                        break  # all done early: no need to keep hitting idle workers
                await asyncio.sleep(1.0)
            stop_chaos.set()
            await chaos_task
            proxy.faults_enabled = False
            phases["faults_off"] = time.time() - t0
            await asyncio.wait_for(submit_task, timeout=180)  # submits still in flight finish fault-free

            # -- settle: workers and monitors recover, no faults, no kills
            ids = sorted(set(submitted.values()) | {sf.task_id for sf in submit_failures.values() if sf.task_id})
            not_final = await wait_until_final(direct, ids, loop.time() + s.settle_seconds, fleet)
            phases["settled"] = time.time() - t0

            # -- index entries of final tasks: give the batched deletes a few seconds
            index_deadline = loop.time() + INDEX_GRACE_SECONDS
            while True:
                objs = await raw_keys(direct, "tasks/")
                known = {tid for tid in (id_of(o.key) for o in objs) if tid} | set(ids)
                states = await final_states(direct, sorted(known))
                final_ids = {tid for tid, t in states.items() if t is not None and t.status in FINAL}
                stray_entries = await strays(direct, final_ids, known)
                if not stray_entries or loop.time() >= index_deadline:
                    break
                await asyncio.sleep(0.5)
        finally:
            fleet.stop_all()
            fleet.kill_leftovers()
            phases["stopped"] = time.time() - t0
            await queue.close()
        stats = proxy.stats()

        # -- read everything back from the bucket, directly
        objs = await raw_keys(direct, "tasks/")
        task_object_ids = {tid for tid in (id_of(o.key) for o in objs) if tid}
        known = task_object_ids | set(submitted.values()) | {sf.task_id for sf in submit_failures.values() if sf.task_id}
        got = await final_states(direct, sorted(known))
        tasks = {tid: t for tid, t in got.items() if t is not None}
        histories = dict(zip(tasks, await asyncio.gather(*(direct.get_history(tid) for tid in tasks))))
        final_ids = {tid for tid, t in tasks.items() if t.status in FINAL}
        stray_entries = await strays(direct, final_ids, known)   # after SIGTERM's last flush
        index_left = [*await raw_keys(direct, "ready/"), *await raw_keys(direct, "leases/")]
        kill_times = {wid: at for wid, _, at in kills}
        execs = read_executions(log_dir, kill_times)
        findings = analyse(spec_by_key, submitted, submit_failures, tasks, histories, task_object_ids,
                           execs, kill_times, stray_entries, fleet, proxy, t0)

        # -- figures and report
        n_exec = sum(len(v) for v in execs.values())
        by_design = sum(n for c, n in findings.duplicate_causes.items() if c.startswith("by design"))
        figures = {
            "seed": s.seed,
            "tasks": s.tasks,
            "submitted": len(submitted),
            "submit_errors": len(submit_failures),
            "completed": sum(1 for t in tasks.values() if t.status == TaskStatus.Completed),
            "failed": sum(1 for t in tasks.values() if t.status == TaskStatus.Failed),
            "failed_expected": sum(1 for sp in specs if sp.mode == "fail"),
            "not_final": len(not_final),
            "requests": stats["requests"],
            "faults": stats["faults"],
            "faults_by_kind": stats["faults_by_kind"],
            "kills": len(kills),
            "workers_started": len(fleet.all),
            "executions": n_exec,
            "duplicate_executions": n_exec - len(execs) - by_design,
            "duplicate_causes": dict(findings.duplicate_causes),
            "stray_index_entries": len(stray_entries),
            "failed_checks": len(findings.failures),
            **findings.figures,
            "phases_s": {k: round(v, 1) for k, v in phases.items()},
        }
        by_kind = ", ".join(f"{k}={stats['faults_by_kind'][k]}" for k in KINDS)
        summary = (
            f"FAULTS seed={s.seed} tasks={s.tasks} submitted={figures['submitted']} submit_errors={figures['submit_errors']} "
            f"completed={figures['completed']} failed={figures['failed']}/{figures['failed_expected']} expected "
            f"not_final={figures['not_final']} requests={stats['requests']} faults={stats['faults']} "
            f"({by_kind}) kills={len(kills)} "
            f"executions={n_exec} duplicate_executions={figures['duplicate_executions']} "
            f"(tasks executed more than once: {figures['tasks_executed_more_than_once']}) "
            f"failed_checks={len(findings.failures)} in {time.time() - t0:.0f} s"
        )
        report = [summary, "figures: " + json.dumps(figures, sort_keys=True),
                  "faults by op: " + json.dumps(stats["faults_by_op"], sort_keys=True),
                  "requests by op: " + json.dumps(stats["requests_by_op"], sort_keys=True),
                  f"kills: {[(w, round(at - t0, 2)) for w, _, at in kills]}",
                  "", f"FAILED CHECKS ({len(findings.failures)}):", *findings.failures,
                  "", f"NOTES ({len(findings.notes)}):", *findings.notes, ""]
        for k, sf in sorted(submit_failures.items()):
            report.append(f"submit {k} raised at {sf.at - t0:+.3f}s (task_id={sf.task_id}): {sf.exc}")
        for tid in sorted(findings.failed_tasks):
            k = tasks[tid].input.get("k") if tid in tasks and isinstance(tasks[tid].input, dict) else None
            report.append(task_dossier(tid, tasks.get(tid), histories.get(tid, []), execs.get(k, []) if k else [],
                                       proxy, log_dir, kill_times, t0, index_left))
        text = "\n".join(report)
        (tmp_path / "report.txt").write_text(text)
        if os.environ.get("BUQUET_FAULT_REPORT"):
            Path(os.environ["BUQUET_FAULT_REPORT"]).write_text(text)
        if os.environ.get("BUQUET_FAULT_ARTIFACTS"):  # side channel, worker logs, faults, kept
            kept = Path(os.environ["BUQUET_FAULT_ARTIFACTS"]) / bucket
            shutil.copytree(log_dir, kept)
            with open(kept / "faults.log", "w") as out:
                for ev in proxy.events:
                    out.write(f"{ev.at - t0:+10.3f}s {ev.describe()}\n")
            with open(kept / "index-journal.log", "w") as out:
                for j in proxy.journal:
                    out.write(f"#{j.seq} {j.op} forwarded {j.forwarded_at - t0:+.3f}s answered {j.status} "
                              f"{j.answered_at - t0:+.3f}s fault={j.fault} {' '.join(j.keys)}\n")
            (kept / "report.txt").write_text(text)
        print(text)
        await direct.close()
        reporter = request.config.pluginmanager.getplugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("")
            reporter.write_line(summary)
            reporter.write_line(f"report: {tmp_path / 'report.txt'}")

    assert not findings.failures, (
        f"{summary}\n{len(findings.failures)} failed checks (full report: {tmp_path / 'report.txt'}):\n"
        + "\n".join(findings.failures[:40])
    )
