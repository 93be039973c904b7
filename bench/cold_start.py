#!/usr/bin/env python3
"""Cold-import cost of the Lambda bundle, without and with precompiled bytecode.

    python bench/cold_start.py [--runs 15] [--architecture x86_64] [--json out.json]

What a Lambda cold start pays in Python before the first invocation is mostly the
import of the handler module: ``lambdas.worker`` pulls in buquet, obstore, boto3 and
aws-lambda-powertools. Lambda's code directory (``/var/task``) is read-only, so when
the bundle holds no ``.pyc`` files Python compiles every imported module again at every
cold start and cannot cache the result.

This script builds (or reuses from the cache) the real bundle with
``infra/buquet_infra/bundle.py`` for the machine's architecture, makes a copy without
any ``__pycache__`` ("before": what the bundle shipped until it was precompiled), and
imports what each function imports on a cold start — its handler module and the S3
store its first ``connect()`` loads (obstore, boto3) — in fresh interpreters of the
runtime's Python version (found like the bundle build finds it) with ``-I -S -B`` —
nothing is written, as on the read-only filesystem —
alternating the two variants run by run so both see the same machine load. It reports
the median and spread of the import's wall time and CPU time (``time.process_time``
inside the child, interpreter start-up excluded) per module and variant.

The figures are this machine's CPU; a Lambda function gets a share of a core
proportional to its memory (a full vCPU at 1,769 MB), so at 1,024 MB expect roughly
1.7× these CPU times in wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "infra"))

from buquet_infra import bundle as bundling  # noqa: E402

#: what each function imports before its first invocation finishes: the handler module
#: (init phase) and the S3 store (obstore, boto3), which the first connect() imports
MODULES = {
    "worker": ("lambdas.worker", "buquet.storage.s3"),
    "scheduler": ("lambdas.scheduler", "buquet.storage.s3"),
    "monitor": ("lambdas.monitor", "buquet.storage.s3"),
    "config": ("lambdas.config_resource", "buquet.storage.s3"),
}
_CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
wall, cpu = time.perf_counter(), time.process_time()
for name in sys.argv[2:]:
    __import__(name)
print(time.perf_counter() - wall, time.process_time() - cpu)
"""


def measure(python: str, root: Path, modules: tuple[str, ...]) -> tuple[float, float]:
    """One cold import of ``modules`` from ``root`` in a fresh interpreter (``-B``:
    nothing is written, as on Lambda's read-only filesystem; ``-I`` alone would not
    stop it, since it ignores ``PYTHONDONTWRITEBYTECODE``).

    Returns:
        ``(wall seconds, CPU seconds)`` of the import alone.

    Raises:
        RuntimeError: the import failed (its stderr in the message).
    """
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(root),
        "AWS_REGION": "us-east-1",
        "S3_BUCKET": "cold-start-bench",
        "BUQUET_WORKER": "lambdas.demo:make_worker",
        "POWERTOOLS_SERVICE_NAME": "buquet-worker",
    }
    cmd = [python, "-I", "-S", "-B", "-c", _CHILD, str(root), *modules]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"importing {modules} from {root} failed:\n{out.stderr[-3000:]}")
    wall, cpu = out.stdout.split()[-2:]
    return float(wall), float(cpu)


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and max in milliseconds."""
    return {
        "median_ms": round(statistics.median(values) * 1000, 1),
        "min_ms": round(min(values) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the benchmark; print a table; return the figures.

    Raises:
        SystemExit: no interpreter of the runtime's Python version on this machine, or
            the bundle's native wheels are for another architecture.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="imports per module and variant (default 15)")
    parser.add_argument("--architecture", default={"aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "x86_64"))
    parser.add_argument("--python-version", default=bundling.PYTHON_VERSION)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    python = bundling.find_python(args.python_version)
    if python is None:
        raise SystemExit(f"no Python {args.python_version} interpreter here (set BUQUET_LAMBDA_PYTHON)")
    built = bundling.build(None, args.architecture, python_version=args.python_version, precompile_mode=True)
    results: dict[str, object] = {
        "python": python, "python_version": args.python_version, "architecture": args.architecture,
        "runs": args.runs, "machine": platform.machine(), "cpus": os.cpu_count(), "modules": {},
    }
    with tempfile.TemporaryDirectory(prefix="buquet-cold-") as tmp:
        before = Path(tmp) / "bundle-without-pyc"
        shutil.copytree(built.path, before, ignore=shutil.ignore_patterns("__pycache__"))
        variants = {"before (sources only)": before, "after (unchecked-hash .pyc)": built.path}
        for module, imports in MODULES.items():
            samples: dict[str, dict[str, list[float]]] = {v: {"wall": [], "cpu": []} for v in variants}
            for name, root in variants.items():  # warm the page cache once, not counted
                measure(python, root, imports)
            for _ in range(args.runs):
                for name, root in variants.items():
                    wall, cpu = measure(python, root, imports)
                    samples[name]["wall"].append(wall)
                    samples[name]["cpu"].append(cpu)
            results["modules"][module] = {  # type: ignore[index]
                name: {"wall": summary(s["wall"]), "cpu": summary(s["cpu"])} for name, s in samples.items()
            }
    print(f"cold import, Python {args.python_version} ({python}), {args.architecture} bundle, "
          f"{args.runs} runs each, medians [min-max] in ms")
    print(f"{'function':<20} {'variant':<28} {'wall':>22} {'cpu':>22}")
    for module, by_variant in results["modules"].items():  # type: ignore[union-attr]
        for name, fig in by_variant.items():
            w, c = fig["wall"], fig["cpu"]
            print(f"{module:<20} {name:<28} {w['median_ms']:>8} [{w['min_ms']}-{w['max_ms']}]"
                  f" {c['median_ms']:>8} [{c['min_ms']}-{c['max_ms']}]")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
