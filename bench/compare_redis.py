#!/usr/bin/env python
"""Peers on Redis: N no-op tasks through ONE worker process of SAQ and of arq.

Neither library, nor redis-py, is installed in the project's venv: they live in their
own venv (default ``/tmp/buquet-redis-peers``, override with ``--venv`` or
``BUQUET_REDIS_VENV``; created on first use with ``pip install saq arq
typing_extensions``) and run in subprocesses of that venv's python
(``_redis_child.py``), driven only through their documented public API.

Redis: ``redis-server`` from PATH, else ``apt-get install -y redis-server`` (waits for
the apt/dpkg lock), started on a free loopback port with ``--save '' --appendonly no``
in a temp dir and stopped at the end. ``--redis-url`` uses a running server instead.

Method per peer and run (fresh queue name, ``FLUSHDB`` afterwards):

1. one worker process connects, builds the library's worker with its defaults and
   waits (not started);
2. a submitter process enqueues N jobs, ``--submit-concurrency`` at a time;
3. the worker is started and stopped after its after-job hook ran N times.

Reported like bench.py's throughput rows: submits/s, tasks/s from the first handler
start to the last completion (after-job hook) and from submit start, worker and
submitter CPU (getrusage), worker peak RSS (VmHWM), Redis server CPU, and Redis
commands per task from ``INFO commandstats`` (commands a Lua script or a MULTI runs are
counted one by one; our own INFO/CONFIG/FLUSHDB/PING are left out). These are Redis
commands, not S3 requests: compare "billed requests" only loosely.

Latency (fresh worker process): the worker is started and idles for
``--latency-warmup`` s (Redis commands per second while idle are recorded), then
``--latency-tasks`` jobs are enqueued one at a time at ``--latency-rate``/s;
latency = handler start − time just before the enqueue call.

    python bench/compare_redis.py --tasks 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _infra

DEFAULT_VENV = os.environ.get("BUQUET_REDIS_VENV", "/tmp/buquet-redis-peers")
CHILD = str(HERE / "_redis_child.py")
# saq 0.26 imports typing_extensions without declaring it
PEER_PACKAGES = ["saq", "arq", "typing_extensions"]
PEERS = ("saq", "arq")
# commands the bench itself sends (or a client sends once to check its connection)
OWN_COMMANDS = ("info", "config", "flushdb", "flushall", "ping")


# ============================================================== venv
def venv_python(venv: str) -> str:
    return str(Path(venv) / "bin" / "python")


def _child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def peer_versions(python: str) -> dict[str, str] | None:
    probe = ("import importlib.metadata as m, json, saq, arq; "
             "print(json.dumps({p: m.version(p) for p in ('saq', 'arq', 'redis')}))")
    r = subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd="/", env=_child_env(), check=False)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def ensure_venv(venv: str = DEFAULT_VENV, quiet: bool = False) -> str:
    """Create ``venv`` with saq and arq from PyPI unless they import there already.
    Returns the venv's python."""
    py = venv_python(venv)
    if Path(py).exists() and peer_versions(py):
        return py
    if not quiet:
        print(f"[compare_redis] creating {venv} with {' '.join(PEER_PACKAGES)} from PyPI", file=sys.stderr)
    if not Path(py).exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", venv], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    if not peer_versions(py):
        raise RuntimeError(f"saq/arq do not import in {venv}")
    return py


# ============================================================== redis server
def _apt(*args: str, wait_s: float = 900) -> None:
    """apt-get with a wait for the dpkg/apt locks held by another apt process."""
    cmd = ["apt-get", "-o", f"DPkg::Lock::Timeout={int(wait_s)}", *args]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    deadline = time.time() + wait_s
    while True:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if r.returncode == 0:
            return
        locked = "lock" in (r.stderr + r.stdout).lower()
        if not locked or time.time() > deadline:
            raise RuntimeError(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
        print("[compare_redis] apt is locked by another process, waiting", file=sys.stderr)
        time.sleep(5)


def ensure_redis_server(quiet: bool = False) -> str:
    """Path of ``redis-server``; installs the Debian package when it is not on PATH."""
    path = shutil.which("redis-server")
    if path:
        return path
    if not quiet:
        print("[compare_redis] redis-server not on PATH: apt-get install -y redis-server", file=sys.stderr)
    _apt("update", "-qq")
    _apt("install", "-y", "-qq", "redis-server")
    path = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if not path:
        raise RuntimeError("redis-server still not found after apt-get install")
    return path


def _resp_encode(args: tuple[Any, ...]) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _resp_read(f: Any) -> Any:
    line = f.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(f"redis error: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = f.read(size + 2)[:-2]
        return data.decode(errors="replace")
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_resp_read(f) for _ in range(size)]
    raise RuntimeError(f"unexpected RESP reply {line!r}")


def redis_call(url: str, *args: Any, timeout: float = 10) -> Any:
    """One command on a fresh connection (stdlib only: the bench venv has no redis-py)."""
    u = urllib.parse.urlsplit(url)
    with socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=timeout) as s:
        s.sendall(_resp_encode(args))
        with s.makefile("rb") as f:
            return _resp_read(f)


def command_stats(url: str) -> dict[str, int]:
    """``INFO commandstats`` as {command: calls}."""
    out: dict[str, int] = {}
    for line in redis_call(url, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line[len("cmdstat_"):].partition(":")
            fields = dict(kv.split("=", 1) for kv in rest.split(","))
            out[name] = int(fields["calls"])
    return out


def _cmd_diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    d = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in d.items() if v and k.split("|")[0] not in OWN_COMMANDS}


class RedisServer:
    """A throwaway redis-server on a free loopback port, no persistence."""

    def __init__(self, binary: str | None = None, quiet: bool = False) -> None:
        binary = binary or ensure_redis_server(quiet=quiet)
        self.dir = tempfile.mkdtemp(prefix="buquet-bench-redis-")
        self.port = _infra._free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--logfile", str(Path(self.dir) / "redis.log"), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.dir,
        )
        self.pid = self.proc.pid
        deadline = time.time() + 20
        while True:
            try:
                if redis_call(self.url, "PING", timeout=1) == "PONG":
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.stop()
                raise RuntimeError(f"redis-server did not start: {err[-2000:]}")
            time.sleep(0.05)
        info = redis_call(self.url, "INFO", "server")
        self.version = next((ln.split(":", 1)[1] for ln in info.splitlines() if ln.startswith("redis_version:")), "?")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_redis(quiet: bool = False) -> RedisServer:
    return RedisServer(quiet=quiet)


# ============================================================== runs
def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def _result(out: str, what: str, err: str = "") -> dict[str, Any]:
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{what} printed no RESULT:\n{err[-3000:]}\n{out[-2000:]}")


def _start_worker(python: str, lib: str, url: str, queue: str, n: int) -> tuple[subprocess.Popen, dict[str, Any]]:
    w = subprocess.Popen([python, CHILD, "work", lib, url, queue, str(n)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/", env=_child_env())
    assert w.stdout is not None
    line = w.stdout.readline()
    if not line.startswith("READY"):
        w.kill()
        raise RuntimeError(f"{lib} worker did not start: {line}{w.stderr.read() if w.stderr else ''}")
    return w, json.loads(line[len("READY "):])


def _go(w: subprocess.Popen) -> None:
    assert w.stdin is not None
    w.stdin.write("GO\n")
    w.stdin.flush()


def _finish_worker(w: subprocess.Popen, lib: str, timeout: float) -> dict[str, Any]:
    try:
        out, err = w.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        w.kill()
        out, err = w.communicate()
        raise RuntimeError(f"{lib} worker timed out:\n{err[-3000:]}")
    return _result(out, f"{lib} worker (exit {w.returncode})", err)


def run_throughput(lib: str, url: str, n: int, *, python: str, submit_concurrency: int = 16,
                   server_pid: int | None = None, timeout: float = 300) -> dict[str, Any]:
    """N no-op jobs through one worker process of ``lib`` ('saq' or 'arq')."""
    queue = f"bench-{lib}-{uuid.uuid4().hex[:10]}"
    w, settings = _start_worker(python, lib, url, queue, n)
    try:
        c0 = command_stats(url)
        scpu0 = _infra.proc_cpu_s(server_pid)
        sub = subprocess.run([python, CHILD, "submit", lib, url, queue, str(n), str(submit_concurrency)],
                             capture_output=True, text=True, cwd="/", env=_child_env(), timeout=timeout, check=False)
        submitted = _result(sub.stdout, f"{lib} submit (exit {sub.returncode})", sub.stderr)
        c1 = command_stats(url)
        scpu1 = _infra.proc_cpu_s(server_pid)
        busy0 = _infra.machine_busy_s()
        _go(w)
        worked = _finish_worker(w, lib, timeout)
        busy1 = _infra.machine_busy_s()
        scpu2 = _infra.proc_cpu_s(server_pid)
        c2 = command_stats(url)
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
        redis_call(url, "FLUSHDB")
    starts = [t for _, t in worked["handler_starts"]]
    done = worked["completions"]
    ids = [i for i, _ in worked["handler_starts"]]
    first, last = min(starts), max(done)
    sub_cmds, work_cmds = _cmd_diff(c1, c0), _cmd_diff(c2, c1)
    all_cmds = dict(sub_cmds)
    for k, v in work_cmds.items():
        all_cmds[k] = all_cmds.get(k, 0) + v
    have_server = server_pid is not None and None not in (scpu0, scpu1, scpu2)
    return {
        "impl": lib,
        "workers": 1,
        "tasks": n,
        "handled": len(ids),
        "completed": len(done),
        "duplicates": len(ids) - len(set(ids)),
        "submits_per_s": n / (submitted["submit_end"] - submitted["submit_start"]),
        "tasks_per_s_claim_to_done": n / (last - first),
        "tasks_per_s_submit_to_done": n / (last - submitted["submit_start"]),
        "go_to_first_start_ms": 1000 * (first - worked["run_start"]),
        "cpu_ms_per_task": 1000 * (worked["cpu_s"] + submitted["cpu_s"]) / n,
        "worker_cpu_ms_per_task": 1000 * worked["cpu_s"] / n,
        "submitter_cpu_ms_per_task": 1000 * submitted["cpu_s"] / n,
        "peak_rss_mb": worked["maxrss_kb"] / 1024,
        "worker_maxrss_mb": worked["maxrss_kb"] / 1024,
        "submitter_maxrss_mb": submitted["maxrss_kb"] / 1024,
        "commands_per_task": sum(all_cmds.values()) / n,
        "submit_commands_per_task": sum(sub_cmds.values()) / n,
        "worker_commands_per_task": sum(work_cmds.values()) / n,
        "commands_by_name_per_task": {k: v / n for k, v in sorted(all_cmds.items())},
        "server_cpu_ms_per_task_submit": 1000 * (scpu1 - scpu0) / n if have_server else None,
        "server_cpu_ms_per_task_work": 1000 * (scpu2 - scpu1) / n if have_server else None,
        "other_cpu_ms_per_task_work": (
            1000 * ((busy1 - busy0) - (scpu2 - scpu1) - worked["cpu_s"]) / n
            if have_server and busy0 is not None and busy1 is not None else None),
        "settings": settings,
        "exit_codes": {"submit": sub.returncode, "worker": w.returncode},
    }


def run_latency(lib: str, url: str, m: int = 100, rate: float = 20.0, *, python: str, warmup: float = 2.0,
                timeout: float = 300) -> dict[str, Any]:
    """Enqueue→handler-start latency: one started, idle worker; m jobs one at a time at ``rate``/s."""
    queue = f"bench-lat-{lib}-{uuid.uuid4().hex[:10]}"
    w, settings = _start_worker(python, lib, url, queue, m)
    try:
        _go(w)
        time.sleep(0.3)  # let the worker start its loops
        c0, t0 = command_stats(url), time.time()
        time.sleep(max(0.0, warmup - 0.3))
        c1, t1 = command_stats(url), time.time()
        sub = subprocess.run([python, CHILD, "paced", lib, url, queue, str(m), str(rate)],
                             capture_output=True, text=True, cwd="/", env=_child_env(), timeout=timeout, check=False)
        paced = _result(sub.stdout, f"{lib} paced submit (exit {sub.returncode})", sub.stderr)
        worked = _finish_worker(w, lib, timeout)
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
        redis_call(url, "FLUSHDB")
    starts: dict[int, float] = {}
    for i, t in worked["handler_starts"]:
        starts.setdefault(i, t)
    times = {int(i): v for i, v in paced["times"].items()}
    lat = [1000 * (starts[i] - times[i][0]) for i in times if i in starts]
    call = [1000 * (b - a) for a, b in times.values()]
    return {
        "impl": lib,
        "tasks": m,
        "rate_per_s": rate,
        "started": len(lat),
        "latency_ms_p50": _pct(lat, 50),
        "latency_ms_p90": _pct(lat, 90),
        "latency_ms_p99": _pct(lat, 99),
        "latency_ms_max": max(lat) if lat else float("nan"),
        "submit_call_ms_p50": _pct(call, 50),
        "idle_commands_per_s": sum(_cmd_diff(c1, c0).values()) / (t1 - t0),
        "idle_commands_by_name": _cmd_diff(c1, c0),
        "idle_window_s": t1 - t0,
        "settings": settings,
    }


def run_peer(lib: str, n: int = 1000, *, redis_url: str, python: str | None = None, submit_concurrency: int = 16,
             latency_tasks: int = 100, latency_rate: float = 20.0, latency_warmup: float = 2.0,
             server_pid: int | None = None, timeout: float = 300) -> dict[str, Any]:
    """One throughput run plus (``latency_tasks`` > 0) one latency run of ``lib``; one dict."""
    python = python or ensure_venv()
    if server_pid is None:
        server_pid = _infra.server_pid("tcp://" + redis_url.split("://", 1)[-1])
    res = run_throughput(lib, redis_url, n, python=python, submit_concurrency=submit_concurrency,
                         server_pid=server_pid, timeout=timeout)
    if latency_tasks > 0:
        lat = run_latency(lib, redis_url, latency_tasks, latency_rate, python=python, warmup=latency_warmup,
                          timeout=timeout)
        for k in ("latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_ms_max", "submit_call_ms_p50",
                  "idle_commands_per_s", "idle_commands_by_name", "idle_window_s", "rate_per_s"):
            res[k if k.startswith(("latency", "idle")) else f"latency_{k}"] = lat[k]
        res["latency_tasks"] = latency_tasks
        res["latency_started"] = lat["started"]
    return res


def run_saq(n: int = 1000, *, redis_url: str, python: str | None = None, submit_concurrency: int = 16,
            latency_tasks: int = 100, latency_rate: float = 20.0, latency_warmup: float = 2.0,
            server_pid: int | None = None, timeout: float = 300) -> dict[str, Any]:
    """SAQ, one worker process with ``Worker``'s defaults. See run_peer / the module doc."""
    return run_peer("saq", n, redis_url=redis_url, python=python, submit_concurrency=submit_concurrency,
                    latency_tasks=latency_tasks, latency_rate=latency_rate, latency_warmup=latency_warmup,
                    server_pid=server_pid, timeout=timeout)


def run_arq(n: int = 1000, *, redis_url: str, python: str | None = None, submit_concurrency: int = 16,
            latency_tasks: int = 100, latency_rate: float = 20.0, latency_warmup: float = 2.0,
            server_pid: int | None = None, timeout: float = 300) -> dict[str, Any]:
    """arq, one worker process with ``Worker``'s defaults. See run_peer / the module doc."""
    return run_peer("arq", n, redis_url=redis_url, python=python, submit_concurrency=submit_concurrency,
                    latency_tasks=latency_tasks, latency_rate=latency_rate, latency_warmup=latency_warmup,
                    server_pid=server_pid, timeout=timeout)


# ============================================================== output
SUMMARY_KEYS = [
    "submits_per_s", "tasks_per_s_claim_to_done", "tasks_per_s_submit_to_done", "cpu_ms_per_task",
    "worker_cpu_ms_per_task", "submitter_cpu_ms_per_task", "peak_rss_mb", "latency_ms_p50", "latency_ms_p99",
    "commands_per_task", "submit_commands_per_task", "worker_commands_per_task", "idle_commands_per_s",
    "server_cpu_ms_per_task_work", "other_cpu_ms_per_task_work",
]
HEADS = {
    "submits_per_s": "submits/s", "tasks_per_s_claim_to_done": "tasks/s start→done",
    "tasks_per_s_submit_to_done": "tasks/s submit→done", "cpu_ms_per_task": "client CPU ms/task",
    "worker_cpu_ms_per_task": "worker CPU ms/task", "submitter_cpu_ms_per_task": "submit CPU ms/task",
    "peak_rss_mb": "worker peak RSS MB", "latency_ms_p50": "lat p50 ms", "latency_ms_p99": "lat p99 ms",
    "commands_per_task": "Redis cmds/task", "submit_commands_per_task": "(submit)",
    "worker_commands_per_task": "(worker)", "idle_commands_per_s": "idle cmds/s",
    "server_cpu_ms_per_task_work": "redis CPU ms/task (work)", "other_cpu_ms_per_task_work": "other procs CPU ms/task",
}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in SUMMARY_KEYS:
        vals = [r[k] for r in rows if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
        out[k] = statistics.median(vals) if vals else None
    out["runs"] = len(rows)
    names = sorted({c for r in rows for c in r["commands_by_name_per_task"]})
    out["commands_by_name_per_task"] = {
        c: statistics.median(r["commands_by_name_per_task"].get(c, 0.0) for r in rows) for c in names}
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
    return str(v)


def print_report(report: dict[str, Any]) -> None:
    cfg = report["config"]
    print(f"\nRedis peers — redis-server {cfg['redis_version']} on {cfg['redis_url']} (no persistence), "
          f"{cfg['tasks']} no-op tasks, 1 worker process, submit concurrency {cfg['submit_concurrency']}, "
          f"{cfg['repeat']} run(s) each (medians); latency: {cfg['latency_tasks']} tasks at {cfg['latency_rate']}/s "
          f"to an idle worker; versions {cfg['versions']}")
    names = list(report["summary"])
    header = ["peer"] + [HEADS[k] for k in SUMMARY_KEYS]
    rows = [[n] + [_fmt(report["summary"][n].get(k)) for k in SUMMARY_KEYS] for n in names]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    print("\n'Redis cmds/task' = INFO commandstats calls (submitter + worker) / N; commands run inside a Lua script "
          "or a MULTI/EXEC block count one by one. Redis commands, not S3 requests.")
    for n in names:
        s = report["summary"][n]
        r0 = report["runs"][n][0]
        print(f"\n{n}: worker settings (library defaults): {r0['settings']}")
        print("  Redis commands per task by command (medians): "
              + ", ".join(f"{c} {v:.2f}" for c, v in s["commands_by_name_per_task"].items()))
        if "idle_window_s" in r0:
            print(f"  idle worker's Redis commands (run 1, in {r0['idle_window_s']:.1f} s before the latency phase): "
                  f"{r0['idle_commands_by_name']}")
        for i, r in enumerate(report["runs"][n]):
            print(f"  run {i + 1}: {r['tasks_per_s_claim_to_done']:.0f} tasks/s, {r['submits_per_s']:.0f} submits/s, "
                  f"p50 {r.get('latency_ms_p50', float('nan')):.1f} ms, p99 {r.get('latency_ms_p99', float('nan')):.1f} ms, "
                  f"handled {r['handled']} (duplicates {r['duplicates']}), exit codes {r['exit_codes']}")


# ============================================================== main
def main() -> None:
    ap = argparse.ArgumentParser(description="SAQ and arq (one worker each) on a local Redis, as peers of bench.py",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--peers", default="saq,arq", help="comma-separated subset of saq,arq")
    ap.add_argument("--submit-concurrency", type=int, default=16)
    ap.add_argument("--latency-tasks", type=int, default=100, help="0 skips the latency phase")
    ap.add_argument("--latency-rate", type=float, default=20.0)
    ap.add_argument("--latency-warmup", type=float, default=2.0, help="idle seconds before the latency phase")
    ap.add_argument("--redis-url", help="use this running Redis (its db is FLUSHDB'd after each run)")
    ap.add_argument("--venv", default=DEFAULT_VENV)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--report", metavar="FILE", help="only re-print the table of a saved --json result")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            print_report(json.load(f))
        return
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    for p in peers:
        if p not in PEERS:
            ap.error(f"unknown peer {p!r}")
    py = ensure_venv(args.venv)
    server = None if args.redis_url else start_redis()
    url = args.redis_url or server.url  # type: ignore[union-attr]
    spid = server.pid if server else _infra.server_pid("tcp://" + url.split("://", 1)[-1])
    version = server.version if server else "?"
    report: dict[str, Any] = {
        "config": {"tasks": args.tasks, "repeat": args.repeat, "submit_concurrency": args.submit_concurrency,
                   "latency_tasks": args.latency_tasks, "latency_rate": args.latency_rate,
                   "latency_warmup": args.latency_warmup, "redis_url": url, "redis_version": version,
                   "versions": peer_versions(py), "cpus": os.cpu_count()},
        "runs": {},
        "summary": {},
    }
    t = time.time()
    try:
        for rep in range(args.repeat):
            for p in peers:  # interleaved, so drift on a shared machine hits both alike
                print(f"[compare_redis] run {rep + 1}/{args.repeat}: {p}", file=sys.stderr)
                report["runs"].setdefault(p, []).append(run_peer(
                    p, args.tasks, redis_url=url, python=py, submit_concurrency=args.submit_concurrency,
                    latency_tasks=args.latency_tasks, latency_rate=args.latency_rate,
                    latency_warmup=args.latency_warmup, server_pid=spid, timeout=args.timeout))
    finally:
        if server:
            server.stop()
    for p, rows in report["runs"].items():
        report["summary"][p] = summarize(rows)
    report["wall_s"] = time.time() - t
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)
        print(f"\nwall time {report['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
