"""examples/wordcount.py refuses half-set S3 variables instead of quietly running on
the local store (e.g. after a failed ``eval "$(python scripts/seaweedfs.py start ...)"``)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "wordcount.py"
S3_VARS = ("S3_BUCKET", "S3_ENDPOINT", "S3_REGION", "BUQUET_LOCAL_DIR")


def run_example(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in S3_VARS}
    return subprocess.run(
        [sys.executable, str(EXAMPLE), "--local-dir", str(tmp_path / "q"), *args],
        capture_output=True, text=True, timeout=120, env={**base, "PYTHONPATH": str(REPO), **env}, cwd=REPO,
    )


@pytest.mark.parametrize("env, missing", [
    ({"S3_ENDPOINT": "http://127.0.0.1:1"}, "S3_BUCKET"),
    ({"S3_REGION": "eu-west-1"}, "S3_BUCKET"),
    ({"S3_BUCKET": "wordcount"}, "S3_ENDPOINT"),
])
def test_half_set_s3_variables_exit_2_naming_the_missing_one(tmp_path: Path, env: dict[str, str], missing: str) -> None:
    r = run_example(tmp_path, "--max-files", "1", **env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{missing} is missing" in r.stderr
    assert r.stdout == ""  # nothing submitted, no worker started
    assert not (tmp_path / "q").exists()


def test_aws_flag_accepts_a_bucket_without_endpoint() -> None:
    spec = importlib.util.spec_from_file_location("wordcount_example", EXAMPLE)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.s3_settings_problem({"S3_BUCKET": "b"}, aws=True) is None
    assert mod.s3_settings_problem({"S3_BUCKET": "b", "S3_ENDPOINT": "http://h"}) is None
    assert mod.s3_settings_problem({}) is None
    assert mod.s3_settings_problem({"S3_BUCKET": " ", "S3_ENDPOINT": "http://h"}) is not None


def test_nothing_set_runs_on_the_local_store(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("alpha beta beta\n")
    (src / "b.py").write_text("beta gamma\n")
    r = run_example(tmp_path, "--dir", str(src), "--workers", "1", "--top", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "file://" in r.stdout and "processed 2 files" in r.stdout
    assert "beta" in r.stdout
