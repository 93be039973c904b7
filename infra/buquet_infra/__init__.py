"""The CDK app that deploys buquet on AWS Lambda (see ``docs/serverless.md``).

Not a runtime dependency of the library: only the machine that runs ``cdk synth`` /
``cdk deploy`` needs ``aws-cdk-lib`` and ``constructs`` (``infra/requirements.txt``).
"""

from .settings import DEMO_WORKER, DeploySettings, from_context
from .stack import BuquetStack

__all__ = ["BuquetStack", "DEMO_WORKER", "DeploySettings", "from_context"]
