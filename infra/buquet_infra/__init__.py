"""buquet on AWS Lambda, as CDK code (see ``docs/serverless.md``).

* :class:`BuquetQueue` — the construct: bucket (created or adopted), deploy-time
  ``config.json``, worker/scheduler/monitor functions, rules, policies, alarms and a
  dashboard. Import it in your own CDK app (``pip install 'buquet[cdk]'``).
* :class:`BuquetQueueProps` — its typed settings.
* :class:`BuquetStack` — the stack ``infra/app.py`` deploys: one ``BuquetQueue`` whose
  settings come from CDK context (:func:`from_context`, ``buquet:*`` keys).

Not a runtime dependency of the library: only the machine that runs ``cdk synth`` /
``cdk deploy`` needs ``aws-cdk-lib`` and ``constructs`` (the ``cdk`` extra).
"""

try:
    import aws_cdk  # noqa: F401
    import constructs  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"buquet_infra (the BuquetQueue CDK construct) needs {exc.name!r}: install buquet with the cdk "
        "extra (pip install -e '.[cdk]' in a checkout)"
    ) from exc

from .construct import BuquetQueue  # noqa: E402
from .settings import DEMO_WORKER, BuquetQueueProps, DeploySettings, from_context  # noqa: E402
from .stack import BuquetStack  # noqa: E402

__all__ = ["BuquetQueue", "BuquetQueueProps", "BuquetStack", "DEMO_WORKER", "DeploySettings", "from_context"]
