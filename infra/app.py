#!/usr/bin/env python3
"""CDK entry point (``cdk.json``: ``"app": "python app.py"``).

    cd infra
    pip install -r requirements.txt
    cdk deploy -c buquet:appPath=../myapp -c buquet:worker=myapp.tasks:make_worker

Settings are CDK context values (``buquet:*``, see ``buquet_infra/settings.py``). The
Lambda code bundle is built here, at synth time, with pip for the Lambda platform — no
Docker (see ``buquet_infra/bundle.py``).

Without the CDK CLI (CI, or machines without Node's ``aws-cdk`` package),
``python app.py [-c key=value ...]`` synthesizes the same cloud assembly into
``cdk.out/`` (or ``$CDK_OUTDIR``), reading the context of ``cdk.json`` itself.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import aws_cdk as cdk

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from buquet_infra import DEMO_WORKER, BuquetStack, from_context  # noqa: E402
from buquet_infra.bundle import BundleError  # noqa: E402


def _standalone_context(argv: list[str]) -> dict[str, Any] | None:
    """The context the CDK CLI would pass (cdk.json, then ``-c key=value``), when this
    script runs on its own; ``None`` under the CLI (it sets ``CDK_CONTEXT_JSON``)."""
    if "CDK_CONTEXT_JSON" in os.environ or "CDK_CONTEXT_FILE" in os.environ:
        return None
    context: dict[str, Any] = json.loads((HERE / "cdk.json").read_text()).get("context", {})
    args = iter(argv)
    for arg in args:
        if arg in ("-c", "--context"):
            value = next(args, None)
        elif arg.startswith("--context="):
            value = arg.split("=", 1)[1]
        else:
            raise SystemExit(f"usage: python app.py [-c key=value ...] (unknown argument {arg!r})")
        if value is None or "=" not in value:
            raise SystemExit(f"-c expects key=value, got {value!r}")
        key, _, raw = value.partition("=")
        context[key] = raw
    return context


def main(argv: list[str]) -> None:
    """Synthesize the stack. ``argv``: ``-c key=value`` pairs when run without the CDK
    CLI.

    Raises:
        SystemExit: bad ``buquet:*`` context or settings that cannot work together (a
            worker timeout too short for the default task timeout ...), or the Lambda
            bundle could not be built; the message (no traceback) says why and what to
            do.
    """
    context = _standalone_context(argv)
    app = cdk.App(context=context) if context is not None else cdk.App()
    try:
        settings = from_context(app.node.try_get_context, cwd=Path.cwd())
        if settings.worker_spec == DEMO_WORKER:
            print(
                f"[buquet] no -c buquet:worker given: deploying the demo worker {DEMO_WORKER} (task type 'echo')",
                file=sys.stderr,
            )
        BuquetStack(app, settings.stack_name, settings=settings)
    except (ValueError, BundleError) as exc:
        raise SystemExit(f"[buquet] synth failed: {exc}") from None
    app.synth()


if __name__ == "__main__":
    main(sys.argv[1:])
