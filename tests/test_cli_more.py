"""The ``buquet`` CLI's spec flags and newer commands (submit flags and --from-file, --json
everywhere, tail, monitor, schema, schedule show/run, migrate-shards, purge,
completions), on a local-directory store through click's runner."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from buquet import connect
from buquet.cli import cli
from buquet.cli_common import parse_duration, table


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.exists() else []


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = tmp_path / "bucket"

    def invoke(*args: str, input: str | None = None):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(cli, ["--local-dir", str(store), *args], input=input)

    invoke.store = store  # type: ignore[attr-defined]
    return invoke


# ------------------------------------------------------------------------ durations
@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("15m", 900), ("1.5h", 5400), ("2d", 172800),
                                           ("1w", 604800), (" 3m ", 180), ("0", 0)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, "--ttl") == seconds


@pytest.mark.parametrize("text", ["", "m", "5q", "-5s", "5 minutes", "1e3", "nan", "5ms"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(click.BadParameter) as err:
        parse_duration(text, "--ttl")
    assert "--ttl" in err.value.format_message() or err.value.param_hint == "--ttl"


# --------------------------------------------------------------------------- submit
def test_submit_spec_flags_and_json(run) -> None:  # type: ignore[no-untyped-def]
    r = run("submit", "-t", "send_email", "-i", '{"to": "a@b.c"}', "--timeout", "60", "--retries", "1",
            "--max-reschedules", "2", "--delay", "15m", "--ttl", "2h", "--json")
    assert r.exit_code == 0, r.output
    task = json.loads(r.output)
    assert task["task_type"] == "send_email" and task["input"] == {"to": "a@b.c"}
    assert task["timeout_seconds"] == 60 and task["max_retries"] == 1 and task["max_reschedules"] == 2
    assert "history" not in task
    created = at(task["created_at"])
    # --delay counts from the store time read just before the submit (a few ms earlier)
    assert abs(at(task["available_at"]) - created - timedelta(minutes=15)) < timedelta(seconds=2)
    assert at(task["expires_at"]) - created == timedelta(hours=2)
    # the id form prints just the id, and the stored task agrees
    r = run("get", task["id"], "--json")
    assert json.loads(r.output)["expires_at"] == task["expires_at"]

    r = run("submit", "-t", "job", "--at", "2030-01-01T00:00:00Z", "--expires-at", "2031-01-01T00:00:00Z", "--json")
    task = json.loads(r.output)
    assert at(task["available_at"]) == at("2030-01-01T00:00:00Z") and at(task["expires_at"]) == at("2031-01-01T00:00:00Z")

    # `-t TYPE INPUT` (one positional) is the input; the positional form still works
    r = run("submit", "-t", "job", "[1, 2]", "--json")
    assert json.loads(r.output)["input"] == [1, 2]
    r = run("submit", "job", '{"n": 1}')
    assert r.exit_code == 0 and len(r.output.strip()) == 36


def test_submit_idempotency_key_returns_the_first_task(run) -> None:  # type: ignore[no-untyped-def]
    first = run("submit", "-t", "job", "-i", "1", "--idempotency-key", "order-42").output.strip()
    again = run("submit", "-t", "job", "-i", "1", "--idempotency-key", "order-42").output.strip()
    assert first == again and len(first) == 36
    r = run("submit", "-t", "job", "-i", "2", "--idempotency-key", "order-42")
    assert r.exit_code in (1, 2) and "Traceback" not in r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["submit", "-t", "job", "--delay", "5q"], "--delay"),
        (["submit", "-t", "job", "--ttl", "soon"], "--ttl"),
        (["submit", "-t", "job", "--at", "2030-01-01T00:00:00Z", "--delay", "5m"], "--delay"),
        (["submit", "-t", "job", "--ttl", "5m", "--expires-at", "2030-01-01T00:00:00Z"], "--expires-at"),
        (["submit", "job", "-t", "job", "1"], "-t/--task-type"),
        (["submit", "job", "1", "-i", "2"], "-i/--input"),
        (["submit"], "task type"),
        (["submit", "-i", "1"], "task type"),
        (["submit", "-t", "job", "-i", "{nope"], "--input"),
        (["submit", "-t", "job", "--timeout", "0"], "timeout_seconds"),
        (["submit", "-t", "job", "--retries", "-1"], "max_retries"),
        (["submit", "-t", "job", "--max-reschedules", "-1"], "max_reschedules"),
        (["submit", "-t", "job", "--expires-at", "tomorrow"], "expires_at"),
        (["submit", "-t", "job", "--idempotency-key", ""], "idempotency"),
        (["submit", "a", "b", "c"], "at most"),
        (["submit", "-t", "job", "--from-file", "/nonexistent/x.jsonl"], "--from-file"),
        (["schedule", "create", "s", "job", "* * * * *", "-t", "job"], "-t/--task-type"),
        (["schedule", "create", "s", "-t", "job"], "cron"),
        (["schedule", "create", "s", "-t", "job", "-c", "bad"], "cron"),
        (["schedule", "create", "s", "-t", "job", "-c", "* * * * *", "--timeout", "0"], "timeout_seconds"),
        (["schema", "validate", "email"], "exactly one"),
        (["schema", "validate", "email", "--input", "1", "--output", "2"], "exactly one"),
        (["schema", "validate", "email", "--input", "{bad"], "--input"),
        (["schema", "publish", "bad type", "x.json"], "task_type"),
        (["tail", "-t", "bad type"], "--task-type"),
        (["tail", "--interval", "10"], "--interval"),
        (["monitor", "--check-interval", "0"], "--check-interval"),
        (["migrate-shards", "--from", "4", "--to", "0"], "--to"),
        (["purge", "--status", "pending", "--yes"], "--status"),
        (["purge", "--older-than", "old", "--yes"], "--older-than"),
    ],
)
def test_bad_input_is_a_usage_error_and_writes_nothing(run, args, message) -> None:  # type: ignore[no-untyped-def]
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output
    assert files_under(run.store) == []


def test_bulk_submit_from_file(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "inputs.jsonl"
    src.write_text('{"n": 1}\n\n{"n": 2}\n[3]\n"four"\n')
    r = run("submit", "-t", "bulk", "--from-file", str(src), "--retries", "0")
    assert r.exit_code == 0, r.output
    ids = r.output.split()
    assert len(ids) == 4 and len(set(ids)) == 4
    r = run("list", "-t", "bulk", "--json")
    stored = {t["id"]: t for t in map(json.loads, r.output.splitlines())}
    assert set(stored) == set(ids)
    assert sorted(json.dumps(stored[i]["input"]) for i in ids) == sorted(['{"n": 1}', '{"n": 2}', "[3]", '"four"'])
    assert all(t["max_retries"] == 0 for t in stored.values())
    # --json: one task per line, in file order; stdin works too
    r = run("submit", "-t", "bulk", "--from-file", "-", "--json", input="10\n20\n")
    assert [json.loads(x)["input"] for x in r.output.splitlines()] == [10, 20]


def test_bulk_submit_checks_every_line_before_writing(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "inputs.jsonl"
    src.write_text('1\n2\n{oops\n')
    r = run("submit", "-t", "bulk", "--from-file", str(src))
    assert r.exit_code == 2 and "line 3" in r.output
    for extra in (["-i", "1"], ["--delay", "1m"], ["--idempotency-key", "k"], ["--wait", "1"]):
        src.write_text("1\n")
        r = run("submit", "-t", "bulk", "--from-file", str(src), *extra)
        assert r.exit_code == 2 and "--from-file" in r.output, (extra, r.output)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert run("submit", "-t", "bulk", "--from-file", str(empty)).exit_code == 2
    assert files_under(run.store) == []


# -------------------------------------------------------------------- json outputs
def test_json_outputs_parse(run) -> None:  # type: ignore[no-untyped-def]
    ids = [run("submit", "job", str(i)).output.strip() for i in range(2)]
    hist = json.loads(run("history", ids[0], "--json").output)
    assert [h["status"] for h in hist] == ["pending"] and hist[0]["at"].endswith("Z")
    assert json.loads(run("status", ids[0], "--json").output)["id"] == ids[0]
    listed = [json.loads(x)["id"] for x in run("list", "--json").output.splitlines()]
    assert listed == ids[::-1]
    r = run("cancel", ids[0], "--json")
    assert [t["id"] for t in json.loads(r.output)["cancelled"]] == [ids[0]]
    assert json.loads(run("replay", ids[0], "--json").output)["status"] == "pending"
    r = run("schedule", "create", "nightly", "-t", "report", "-c", "0 2 * * *", "-i", '{"k": 1}', "--timeout", "60",
            "--retries", "1", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert (doc["task_type"], doc["cron"], doc["input"], doc["timeout_seconds"], doc["max_retries"]) == \
        ("report", "0 2 * * *", {"k": 1}, 60, 1)
    shown = json.loads(run("schedule", "show", "nightly", "--json").output)
    assert shown["id"] == "nightly" and shown["last_run"]["next_run_at"].startswith(("20",))
    assert [s["id"] for s in json.loads(run("schedule", "list", "--json").output)] == ["nightly"]
    text = run("schedule", "show", "nightly").output
    assert "next run" in text and "last run" in text and "never" in text
    task = json.loads(run("schedule", "trigger", "nightly", "--json").output)
    assert task["task_type"] == "report" and task["input"] == {"k": 1}


def test_tables_are_plain_when_not_a_terminal(run) -> None:  # type: ignore[no-untyped-def]
    rows = [{"id": "a", "status": "pending", "error": None}, {"id": "bbbb", "status": "failed", "error": "boom"}]
    assert table(rows, ["id", "status", "error"]).splitlines() == [
        "ID    STATUS   ERROR", "a     pending", "bbbb  failed   boom"]
    run("submit", "job", "1")
    out = run("list").output
    assert "\x1b[" not in out and "─" not in out and out.splitlines()[0].split() == \
        ["ID", "TYPE", "STATUS", "SHARD", "ATTEMPT", "UPDATED", "ERROR"]


# ----------------------------------------------------------------------------- tail
def _in_background(store: Path, steps) -> threading.Thread:  # type: ignore[no-untyped-def]
    """Run ``steps(queue)`` (a coroutine function) in another thread after a pause."""

    def main() -> None:
        async def go() -> None:
            await asyncio.sleep(0.6)
            async with await connect(local_dir=str(store)) as q:
                await steps(q)

        asyncio.run(go())

    t = threading.Thread(target=main, daemon=True)
    t.start()
    return t


def tail_with_deadline(run, *args: str, deadline: float = 30.0):  # type: ignore[no-untyped-def]
    """``run("tail", ...)``, interrupted with SIGINT (tail's clean stop) if it has not
    ended within ``deadline`` seconds, so a broken tail fails the test instead of hanging."""
    import os
    import signal

    lock, state = threading.Lock(), {"done": False}

    def interrupt() -> None:
        with lock:
            if not state["done"]:
                os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(deadline, interrupt)
    timer.start()
    try:
        return run("tail", *args)
    finally:
        with lock:
            state["done"] = True
        timer.cancel()


def test_tail_reports_new_tasks_and_changes_until_limit(run) -> None:  # type: ignore[no-untyped-def]
    old = run("submit", "job", "0").output.strip()  # before the tail: not reported as new

    async def steps(q) -> None:  # type: ignore[no-untyped-def]
        a = await q.submit("job", 1)
        await asyncio.sleep(0.3)
        await q.cancel(a.id, "changed my mind")
        await asyncio.sleep(0.3)
        await q.cancel(old, "old one too")
        await asyncio.sleep(0.3)
        await q.submit("other", 2)

    t = _in_background(run.store, steps)
    started = time.monotonic()
    r = tail_with_deadline(run, "--limit", "4", "--interval", "100", "--json")
    t.join(5)
    assert r.exit_code == 0, r.output
    assert time.monotonic() - started < 20
    events = [json.loads(x) for x in r.output.splitlines()]
    assert [(e["task_type"], e["status"]) for e in events] == [
        ("job", "pending"), ("job", "cancelled"), ("job", "cancelled"), ("other", "pending")]
    assert events[1]["error"] == "changed my mind" and events[2]["task_id"] == old
    assert all({"timestamp", "task_id", "task_type", "status"} <= set(e) for e in events)


def test_tail_filters_and_prints_lines(run) -> None:  # type: ignore[no-untyped-def]
    async def steps(q) -> None:  # type: ignore[no-untyped-def]
        await q.submit("other", 1)
        a = await q.submit("job", 2)
        await asyncio.sleep(0.3)
        await q.cancel(a.id, "stop")

    t = _in_background(run.store, steps)
    r = tail_with_deadline(run, "-t", "job", "--status", "cancelled", "--limit", "1", "--interval", "100")
    t.join(5)
    assert r.exit_code == 0, r.output
    (line,) = r.output.splitlines()
    assert line.startswith("[") and line[3] == ":" and " job cancelled (stop)" in line


# -------------------------------------------------------------------------- schema
def test_schema_commands(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    schema = {"input": {"type": "object", "required": ["to"], "properties": {"to": {"type": "string"}}},
              "output": {"type": "integer"}, "dropped": 1}
    path = tmp_path / "email.json"
    path.write_text(json.dumps(schema))
    assert run("schema", "list").output.strip() == "no schemas"
    r = run("schema", "publish", "email", str(path))
    assert r.exit_code == 0, r.output
    assert json.loads(run("schema", "get", "email").output) == {k: schema[k] for k in ("input", "output")}
    assert json.loads(run("schema", "list", "--json").output) == ["email"]
    r = run("schema", "validate", "email", "--input", '{"to": "a@b.c"}')
    assert r.exit_code == 0 and r.output.strip() == "Input is valid"
    r = run("schema", "validate", "email", "--input", '{"to": 5}')
    assert r.exit_code == 1 and r.output.startswith("Validation failed:") and "$.to" in r.output
    r = run("schema", "validate", "email", "--output", '"x"')
    assert r.exit_code == 1 and "Validation failed:" in r.output
    assert run("schema", "validate", "email", "--output", "3").output.strip() == "Output is valid"
    assert run("schema", "delete", "email").exit_code == 0
    r = run("schema", "get", "email")
    assert r.exit_code == 1 and "no schema" in r.output
    assert run("schema", "validate", "email", "--input", "{}").exit_code == 1


def test_schema_publish_rejects_a_bad_schema_before_writing(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.json"
    path.write_text('{"input": {"type": "no-such-type"}}')
    r = run("schema", "publish", "email", str(path))
    assert r.exit_code == 2 and "Invalid schema" in r.output
    path.write_text("{not json")
    assert run("schema", "publish", "email", str(path)).exit_code == 2
    assert files_under(run.store) == []


# ------------------------------------------------------------------ migrate-shards
def test_migrate_shards_dry_run_counts(run) -> None:  # type: ignore[no-untyped-def]
    ids = [run("submit", "job", str(i)).output.strip() for i in range(12)]
    dated = run("submit", "-t", "job", "--ttl", "1h").output.strip()  # one expiry-index entry
    before = files_under(run.store)

    def moves(tid: str) -> bool:
        x = int(tid[-12:], 16)
        return f"{x % 16:x}" != f"{x % 4:x}"

    everyone = ids + [dated]
    r = run("migrate-shards", "--from", "4", "--to", "16", "--json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)
    assert plan["task_objects"] == 13 and plan["task_objects_moving"] == sum(map(moves, everyone))
    assert plan["index_entries"] == {"ready": 13, "leases": 0, "expiries": 1}
    assert plan["index_entries_moving"] == {"ready": plan["task_objects_moving"], "leases": 0,
                                            "expiries": int(moves(dated))}
    assert plan["dry_run_requests"]["LIST"] == 16  # 4 shards x 4 prefixes, each under 1,000 keys
    n = plan["task_objects_moving"] + plan["index_entries_moving"]["ready"] + plan["index_entries_moving"]["expiries"]
    assert plan["estimated_requests_to_migrate"]["DELETE"] == n
    # every task moves when going from 4 to 256 shards: names become two digits wide
    assert json.loads(run("migrate-shards", "--from", "4", "--to", "256", "--json").output)["task_objects_moving"] == 13
    text = run("migrate-shards", "--from", "4", "--to", "16").output
    assert "dry run" in text and f"{plan['task_objects_moving']} of 13 task objects" in text
    r = run("migrate-shards", "--from", "16", "--to", "4")
    assert r.exit_code == 1 and "this bucket has 4 shards" in r.output
    assert files_under(run.store) == before  # dry runs write nothing


def test_migrate_shards_execute_moves_every_task_and_workers_then_find_them(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUQUET_LOCAL_DIR", str(run.store))
    pending = [run("submit", "record", json.dumps({"n": i})).output.strip() for i in range(20)]
    dated = run("submit", "-t", "record", "-i", '{"n": 99}', "--ttl", "1h").output.strip()
    done = run("submit", "record", '{"n": 100}').output.strip()
    assert run("cancel", done).exit_code == 0
    r = run("migrate-shards", "--from", "4", "--to", "16", "--execute", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["to_shard_count"] == 16 and report["copied"]["tasks"] > 0
    assert report["deleted"] == sum(report["copied"].values())

    async def check() -> None:
        async with await connect(local_dir=str(run.store)) as q:
            assert q.shard_count == 16
            for tid in [*pending, dated, done]:
                t = await q.get(tid)
                assert t is not None and t.shard == q.shard_of(tid), tid
            for shard in q.shards:  # every key sits under its task's new shard
                for prefix in (q.layout.tasks_prefix(shard), q.layout.ready_prefix(shard), q.layout.expiry_prefix(shard)):
                    for info in await q.store.list(prefix):
                        assert info.key.split("/")[1] == shard

    asyncio.run(check())
    r = CliRunner().invoke(cli, ["worker", "tests.e2e_app:make_worker", "--exit-when-idle", "--no-monitor"])
    assert r.exit_code == 0, r.output

    async def finished() -> None:
        async with await connect(local_dir=str(run.store)) as q:
            states = {(await q.get(tid)).status.value for tid in [*pending, dated]}  # type: ignore[union-attr]
            assert states == {"completed"}

    asyncio.run(finished())


def test_a_migration_that_stops_half_way_blocks_clients_and_resumes(tmp_path: Path) -> None:
    from buquet import ConfigurationError, LocalStore, StorageError
    from buquet._migrate import migrate_shards
    from buquet.keys import KeyLayout

    class Flaky(LocalStore):
        puts_left = 10 ** 9

        async def put(self, key, data, **kw):  # type: ignore[no-untyped-def]
            self.puts_left -= 1
            if self.puts_left < 0:
                raise StorageError("injected: connection reset", key, operation="PutObject", transient=True)
            return await super().put(key, data, **kw)

    async def go() -> None:
        store = Flaky(str(tmp_path / "b"))
        q = await connect(store=store)
        ids = [(await q.submit("job", i)).id for i in range(30)]
        now = await q.time()
        store.puts_left = 12  # the migration's config write + a few copies, then the "network" fails
        with pytest.raises(StorageError):
            await migrate_shards(store, KeyLayout(""), 4, 16, now=now)
        with pytest.raises(ConfigurationError, match="shard migration is in progress"):
            await connect(store=store)
        store.puts_left = 10 ** 9
        report = await migrate_shards(store, KeyLayout(""), 4, 16, now=now)
        assert report.resumed
        q2 = await connect(store=store)
        assert q2.shard_count == 16
        assert [(await q2.get(t)).id for t in ids] == ids  # type: ignore[union-attr]
        listed = [k for k in store.keys() if k.startswith("tasks/")] if hasattr(store, "keys") else None
        if listed is not None:
            assert len(listed) == 30

    asyncio.run(go())


def test_migrate_shards_refuses_while_a_worker_looks_alive(run) -> None:  # type: ignore[no-untyped-def]
    run("submit", "job", "1")
    from buquet import LocalStore

    asyncio.run(LocalStore(str(run.store)).put("workers/w1.json", b"{}"))  # a worker registered just now
    r = run("migrate-shards", "--from", "4", "--to", "16", "--execute")
    assert r.exit_code == 1 and "stop every worker" in r.output
    assert run("migrate-shards", "--from", "4", "--to", "16", "--execute", "--force").exit_code == 0


# ----------------------------------------------------------- monitor, purge, misc
def test_monitor_once(run) -> None:  # type: ignore[no-untyped-def]
    run("submit", "job", "1")
    r = run("monitor", "--once", "--retention-days", "30")
    assert r.exit_code == 0, r.output
    assert "recovered 0 task(s)" in r.output and "deleted 0 final task(s)" in r.output


def test_purge_deletes_only_final_tasks(run) -> None:  # type: ignore[no-untyped-def]
    ids = [run("submit", "job", str(i)).output.strip() for i in range(3)]
    run("cancel", ids[0], ids[1])
    r = run("purge", "--status", "cancelled", "--yes", "--json")
    assert r.exit_code == 0 and json.loads(r.output) == {"deleted": 2}
    assert run("status", ids[0]).exit_code == 1 and run("status", ids[2]).exit_code == 0
    r = CliRunner().invoke(cli, ["--local-dir", str(run.store), "purge"], input="n\n")
    assert r.exit_code == 1  # not confirmed


def test_cancel_by_type_and_schedule_run_alias(run) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        run("submit", "batch", str(i))
    r = run("cancel", "-t", "batch")
    assert r.exit_code == 0 and r.output.count("cancelled ") == 3
    r = run("schedule", "run", "--once", "--interval", "5")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("shell", ["powershell", "elvish"])
def test_unsupported_completion_shells_are_a_clear_error(shell: str) -> None:
    r = CliRunner().invoke(cli, ["completions", shell], env={"S3_BUCKET": "", "BUQUET_LOCAL_DIR": ""})
    assert r.exit_code == 1 and "not supported" in r.output and "bash" in r.output


def test_tail_reports_running_and_completed_with_worker_and_duration(run) -> None:  # type: ignore[no-untyped-def]
    from buquet import Worker

    async def steps(q) -> None:  # type: ignore[no-untyped-def]
        await q.submit("work", {"n": 1}, timeout_seconds=5)
        await asyncio.sleep(0.3)
        w = Worker(q, "tail-test-worker", q.shards)

        @w.task("work")
        async def work(payload: dict) -> dict:
            await asyncio.sleep(0.05)
            return payload

        await w.run_once(remaining_seconds=lambda: 600.0)

    t = _in_background(run.store, steps)
    r = tail_with_deadline(run, "--limit", "3", "--interval", "100", "--json")
    t.join(10)
    assert r.exit_code == 0, r.output
    events = [json.loads(x) for x in r.output.splitlines()]
    assert [e["status"] for e in events] == ["pending", "running", "completed"]
    assert events[1]["worker_id"] == "tail-test-worker" and events[2]["worker_id"] == "tail-test-worker"
    assert events[2]["duration_ms"] >= 50 and "duration_ms" not in events[1]


def test_monitor_retention_deletes_old_final_tasks_page_by_page(tmp_path: Path) -> None:
    from buquet import Monitor

    async def go() -> None:
        async with await connect(local_dir=str(tmp_path / "b"), shard_count=1) as q:
            done = [await q.submit("job", i) for i in range(3)]
            keep = await q.submit("job", 9)  # Pending: never deleted
            for t in done:
                await q.cancel(t.id)
            real_time = q.protocol.time

            async def later():  # type: ignore[no-untyped-def]
                return await real_time() + timedelta(days=2)

            q.protocol.time = later  # type: ignore[method-assign]
            young = Monitor(q, retention_days=3, sweep_page_size=2, sweep_interval_seconds=0.001)
            await young.sweep()
            assert young.retained == 0  # not old enough
            mon = Monitor(q, retention_days=1, sweep_page_size=2, sweep_interval_seconds=0.001)
            await mon.sweep()
            assert mon.retained == 2  # one page of 2 keys
            await asyncio.sleep(0.002)  # past the (tiny) retention interval
            await mon.sweep()
            assert mon.retained == 3  # the rest of the shard
            assert [t.id for t in (await q.recent(q.shards)).tasks] == [keep.id]

    asyncio.run(go())
