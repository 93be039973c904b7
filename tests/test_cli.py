"""The ``buquet`` command line, on a local-directory store, through click's runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from buquet.cli import cli


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.exists() else []


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = tmp_path / "bucket"

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(cli, ["--local-dir", str(store), *args])

    invoke.store = store  # type: ignore[attr-defined]
    return invoke


def test_submit_get_list_history_round_trip(run) -> None:  # type: ignore[no-untyped-def]
    r = run("submit", "send_email", '{"to": "a@b.c"}')
    assert r.exit_code == 0, r.output
    task_id = r.output.strip()
    assert len(task_id) == 36
    r = run("get", task_id)
    assert r.exit_code == 0 and '"status": "pending"' in r.output and '"to": "a@b.c"' in r.output
    r = run("list", "--status", "pending")
    assert r.exit_code == 0 and task_id in r.output and "send_email" in r.output
    r = run("history", task_id)
    assert r.exit_code == 0 and "pending" in r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["get", "nothex"], "task_id"),
        (["history", "xyz"], "task_id"),
        (["submit", "echo", "{not json"], "INPUT"),
        (["submit", "bad type", "{}"], "task_type"),
        (["submit", "echo", "{}", "--timeout-seconds", "0"], "timeout_seconds"),
        (["submit", "echo", "{}", "--max-retries", "-1"], "max_retries"),
        (["submit", "echo", "{}", "--schedule-at", "2030-01-01T00:00:00"], "schedule_at"),
        (["submit", "echo", "{}", "--retry-policy", "[1]"], "retry_policy"),
        (["submit", "echo", "{}", "--retry-policy", '{"jitter_percent": 5}'], "jitter_percent"),
        (["submit", "echo", "{}", "--retry-policy", '{"foo": 1}'], "unknown fields"),
        (["submit", "echo", "{}", "--wait", "nan"], "--wait"),
        (["submit", "echo", "{}", "--wait", "-1"], "--wait"),
        (["schedule", "create", "s", "t", "bad cron"], "cron"),
        (["schedule", "create", "bad id!", "t", "* * * * *"], "id"),
        (["schedule", "create", "s", "t", "* * * * *", "--timezone", "Mars/Olympus"], "timezone"),
        (["schedule", "create", "s", "t", "* * * * *", "--retry-policy", '{"multiplier": "x"}'], "multiplier"),
    ],
)
def test_bad_input_is_a_usage_error_and_writes_nothing(run, args, message) -> None:  # type: ignore[no-untyped-def]
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output
    assert files_under(run.store) == []  # not even the bucket's config.json


def test_inspection_commands_do_not_create_a_queue(run) -> None:  # type: ignore[no-untyped-def]
    for args in (["list"], ["get", "00000000-0000-7000-8000-000000000000"], ["schedule", "list"], ["now"]):
        r = run(*args)
        assert r.exit_code in (0, 1) and "Traceback" not in r.output, r.output
    assert files_under(run.store) == []


def test_wait_timeout_is_a_clean_error(run) -> None:  # type: ignore[no-untyped-def]
    r = run("submit", "nobody_handles_this", "{}", "--wait", "0.2")
    assert r.exit_code == 1
    assert "is still pending" in r.output and "Traceback" not in r.output


def test_no_store_configured_names_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("S3_BUCKET", "S3_ENDPOINT", "S3_REGION", "BUQUET_LOCAL_DIR"):
        monkeypatch.delenv(var, raising=False)
    r = CliRunner().invoke(cli, ["list"])
    assert r.exit_code == 1 and "S3_BUCKET" in r.output and "BUQUET_LOCAL_DIR" in r.output


def test_worker_command_runs_tasks(run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BUQUET_LOCAL_DIR", str(run.store))
    r = run("submit", "record", '{"n": 7}')
    task_id = r.output.strip()
    r = CliRunner().invoke(cli, ["worker", "tests.e2e_app:make_worker", "--exit-when-idle", "--no-monitor"])
    assert r.exit_code == 0, r.output
    r = run("get", task_id)
    assert '"status": "completed"' in r.output and '"n": 7' in r.output


def test_exit_when_idle_waits_for_a_retry_that_comes_due_within_its_horizon(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUQUET_LOCAL_DIR", str(run.store))
    flag = tmp_path / "flag"
    r = run("submit", "flaky_once", f'{{"flag": "{flag}"}}', "--retry-policy",
            '{"initial_interval_ms": 3000, "max_interval_ms": 3000, "jitter_percent": 0}')
    task_id = r.output.strip()
    r = CliRunner().invoke(cli, ["worker", "tests.e2e_app:make_worker_with_flaky", "--exit-when-idle", "--no-monitor",
                                 "--idle-horizon-seconds", "10"])
    assert r.exit_code == 0, r.output
    r = run("get", task_id)
    assert '"status": "completed"' in r.output and '"attempt": 2' in r.output, r.output


def test_status_cancel_replay_archive_delete_wait(run) -> None:  # type: ignore[no-untyped-def]
    import json as _json

    ids = [run("submit", "job", str(i)).output.strip() for i in range(3)]
    r = run("status", ids[0])
    assert r.exit_code == 0 and r.output.startswith(f"{ids[0]} job pending")
    assert _json.loads(run("status", ids[0], "--json").output)["status"] == "pending"
    r = run("cancel", ids[0], "-r", "no longer needed", "-b", "ops")
    assert r.exit_code == 0 and f"cancelled {ids[0]}" in r.output
    r = run("cancel", ids[0])
    assert r.exit_code == 1 and "Cannot cancel task with status Cancelled" in r.output
    assert run("cancel").exit_code == 2 and run("cancel", ids[1], "-t", "job").exit_code == 2
    r = run("cancel", "-t", "job", "--json")
    assert r.exit_code == 0 and sorted(t["id"] for t in _json.loads(r.output)["cancelled"]) == sorted(ids[1:])
    r = run("replay", ids[0])
    assert r.exit_code == 0 and f"{ids[0]} job pending" in r.output
    r = run("archive", ids[1])
    assert r.exit_code == 1 and "only completed or failed" in r.output
    r = run("wait", ids[1], "--timeout", "0")
    assert r.exit_code == 1 and '"status": "cancelled"' in r.output
    r = run("wait", ids[0], "--timeout", "0")
    assert r.exit_code == 1 and "still pending" in r.output
    assert run("delete", ids[0], "--yes").exit_code == 1  # Pending: not final
    r = run("delete", ids[1], "--yes")
    assert r.exit_code == 0 and run("status", ids[1]).exit_code == 1
    r = CliRunner().invoke(cli, ["--local-dir", str(run.store), "delete", ids[2]], input="n\n")
    assert r.exit_code == 1 and run("status", ids[2]).exit_code == 0  # not confirmed: kept
    assert run("status", "nope").exit_code == 2


def test_list_is_newest_first_filters_by_type_and_says_how_many(run) -> None:  # type: ignore[no-untyped-def]
    ids = [run("submit", "a" if i % 2 else "b", str(i)).output.strip() for i in range(5)]
    r = run("list", "--limit", "2")
    lines = r.output.splitlines()
    assert r.exit_code == 0 and ids[4] in lines[1] and ids[3] in lines[2]  # header, then rows
    # the listing looked back only as far as the page needed: a lower bound, and a cursor
    assert lines[-1].startswith("showing 2 of ≥ 5 tasks in 4 shard(s), newest first; older: --before ")
    r = run("list", "-t", "a", "--json")
    import json as _json
    assert [_json.loads(x)["id"] for x in r.output.splitlines()] == [ids[3], ids[1]]
    assert run("list", "--shard", "9").exit_code == 2


@pytest.mark.parametrize("shell,marker", [("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete --no-files")])
def test_completions_print_a_script_without_any_store(shell: str, marker: str) -> None:
    r = CliRunner().invoke(cli, ["completions", shell], env={"S3_BUCKET": "", "BUQUET_LOCAL_DIR": ""})
    assert r.exit_code == 0 and marker in r.output and "_BUQUET_COMPLETE" in r.output
