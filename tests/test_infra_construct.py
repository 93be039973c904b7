"""``BuquetQueue`` as a construct other CDK apps import: the second, minimal app in
``tests/cdk_consumer_app.py`` (an adopted bucket, an SNS topic, exports, a producer
in another stack), and the wheel of this project, which ships the construct and the
handlers it bundles (``pip install 'buquet[cdk]'``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

import aws_cdk as cdk  # noqa: E402
from aws_cdk import aws_s3 as s3  # noqa: E402
from aws_cdk.assertions import Annotations, Match, Template  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "infra"))
sys.path.insert(0, str(REPO / "tests"))

from buquet_infra import BuquetQueue, BuquetQueueProps  # noqa: E402

import cdk_consumer_app  # noqa: E402


def resources(t: Template, kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in t.to_json()["Resources"].items() if v["Type"] == kind}


@pytest.fixture(scope="module")
def consumer() -> cdk.App:
    app = cdk.App()
    platform = cdk_consumer_app.PlatformStack(app, "Platform", bundle=False)
    cdk_consumer_app.ApiStack(app, "Api", queue=platform.queue)
    return app


def test_the_second_app_adopts_its_bucket_and_gets_every_piece(consumer: cdk.App) -> None:
    platform = consumer.node.find_child("Platform")
    t = Template.from_stack(platform)
    # one bucket: the app's own, adopted (no second bucket, its settings untouched)
    [(bucket_id, bucket)] = resources(t, "AWS::S3::Bucket").items()
    assert "LifecycleConfiguration" not in bucket["Properties"]
    queue: BuquetQueue = platform.queue  # type: ignore[attr-defined]
    assert queue.bucket_created is False and queue.key_prefix == "jobs/" and queue.shard_count == 2
    # config.json at deploy, the notification on jobs/ready/, the policy's conditional-write deny
    [config] = resources(t, "Custom::BuquetConfig").values()
    assert config["Properties"]["Bucket"] == {"Ref": bucket_id}
    assert config["Properties"]["Prefix"] == "jobs/" and config["Properties"]["ShardCount"] == "2"
    [notifications] = resources(t, "Custom::S3BucketNotifications").values()
    rules = notifications["Properties"]["NotificationConfiguration"]["LambdaFunctionConfigurations"]
    assert rules[0]["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "jobs/ready/"}]
    [policy] = resources(t, "AWS::S3::BucketPolicy").values()
    [deny] = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s.get("Sid") == "DenyUnconditionalTaskWrites"]
    assert deny["Resource"]["Fn::Join"][1][-1] == "/jobs/tasks/*"
    # alarms notify the app's topic
    [topic_id] = resources(t, "AWS::SNS::Topic")
    alarms = resources(t, "AWS::CloudWatch::Alarm")
    assert len(alarms) == 5
    assert all(a["Properties"]["AlarmActions"] == [{"Ref": topic_id}] for a in alarms.values())
    t.resource_count_is("AWS::CloudWatch::Dashboard", 1)
    t.has_resource_properties("AWS::Lambda::Function", {"Handler": "lambdas.worker.handler", "MemorySize": 512,
                                                        "Architectures": ["x86_64"]})
    # outputs exported under the prefix asked for, KeyPrefix included
    exports = {o["Export"]["Name"] for o in t.to_json()["Outputs"].values() if "Export" in o}
    for name in ("BucketName", "KeyPrefix", "QueueUri", "ShardCount", "WorkerFunctionName", "SchedulerFunctionName",
                 "MonitorFunctionName", "ClientPolicyArn", "WorkerPolicyArn"):
        assert f"Platform-Jobs-{name}" in exports, name


def test_another_stack_references_the_construct_attributes(consumer: cdk.App) -> None:
    api = Template.from_stack(consumer.node.find_child("Api"))
    [role] = resources(api, "AWS::IAM::Role").values()
    [policy_arn] = role["Properties"]["ManagedPolicyArns"]
    assert "Fn::ImportValue" in policy_arn  # the producer policy, across stacks
    [fn] = [f for f in resources(api, "AWS::Lambda::Function").values() if f["Properties"].get("Handler") == "index.handler"]
    env = fn["Properties"]["Environment"]["Variables"]
    assert "Fn::ImportValue" in env["S3_BUCKET"] and env["BUQUET_PREFIX"] == "jobs/"


def test_an_imported_bucket_is_adopted_with_a_warning_about_its_policy() -> None:
    app = cdk.App()
    stack = cdk.Stack(app, "S", env=cdk.Environment(account="123456789012", region="eu-west-1"))
    bucket = s3.Bucket.from_bucket_name(stack, "Existing", "existing-queue-bucket")
    queue = BuquetQueue(stack, "Q", props=BuquetQueueProps(bucket=bucket, bundle=False))
    t = Template.from_stack(stack)
    t.resource_count_is("AWS::S3::Bucket", 0)
    t.resource_count_is("AWS::S3::BucketPolicy", 0)
    t.has_resource_properties("Custom::BuquetConfig", {"Bucket": "existing-queue-bucket", "ShardCount": "4"})
    assert Annotations.from_stack(stack).find_warning("*", Match.string_like_regexp(".*conditional_write_statement.*"))
    assert queue.conditional_write_statement.to_statement_json()["Condition"] == {
        "Null": {"s3:if-none-match": "true", "s3:if-match": "true"}
    }
    outputs = t.to_json()["Outputs"]
    assert not any("Export" in o for o in outputs.values())  # no export_prefix, no exports


def test_two_queues_in_one_stack_share_the_notification_handler_log_group() -> None:
    app = cdk.App()
    stack = cdk.Stack(app, "Two")
    BuquetQueue(stack, "A", props=BuquetQueueProps(bundle=False))
    BuquetQueue(stack, "B", props=BuquetQueueProps(bundle=False, prefix="b/", metrics_namespace="buquet-b"))
    t = Template.from_stack(stack)
    t.resource_count_is("AWS::S3::Bucket", 2)
    t.resource_count_is("Custom::BuquetConfig", 2)
    groups = resources(t, "AWS::Logs::LogGroup")
    functions = resources(t, "AWS::Lambda::Function")
    assert len(functions) == 9 and len(groups) == 9  # 4 + 4 + CDK's notification function
    assert all(f["Properties"]["LoggingConfig"]["LogGroup"]["Ref"] in groups for f in functions.values())


def test_the_consumer_app_synthesizes_on_its_own_and_lints_clean(tmp_path: Path) -> None:
    # buquet_infra as an editable install of this checkout provides it (infra/ on the path)
    path = os.pathsep.join(p for p in (str(REPO / "infra"), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "CDK_OUTDIR": str(tmp_path), "PYTHONPATH": path}
    out = subprocess.run([sys.executable, str(REPO / "tests" / "cdk_consumer_app.py")], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    templates = sorted(tmp_path.glob("*.template.json"))
    assert [p.name for p in templates] == ["Api.template.json", "Platform.template.json"]
    cfn_lint = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or shutil.which("cfn-lint")
    assert cfn_lint, "cfn-lint (dev extra) is not installed"
    lint = subprocess.run([cfn_lint, "--non-zero-exit-code", "error", *map(str, templates)],
                          capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr[-3000:]


# ----------------------------------------------------------------------- the wheel
@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This project's wheel, built as pip builds it and unpacked like an install. The
    sources are copied first: an in-tree build would leave build/ in the checkout."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "cdk.out")
    for name in ("buquet", "lambdas", "infra"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(src)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    [wheel] = dist.glob("buquet-*.whl")
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return site


def test_the_wheel_ships_the_construct_and_the_handlers_it_bundles(installed: Path) -> None:
    for path in ("buquet/queue.py", "buquet_infra/construct.py", "buquet_infra/bundle.py", "buquet_infra/policies.py",
                 "lambdas/worker.py", "lambdas/config_resource.py"):
        assert (installed / path).is_file(), path
    assert not (installed / "tests").exists() and not (installed / "infra").exists()
    [dist_info] = installed.glob("buquet-*.dist-info")
    metadata = (dist_info / "METADATA").read_text()
    assert "Provides-Extra: cdk" in metadata
    assert any(line.startswith("Requires-Dist: aws-cdk-lib") and 'extra == "cdk"' in line for line in metadata.splitlines())


def test_the_installed_construct_synthesizes_the_consumer_app_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    """Outside the checkout: the wheel's buquet, buquet_infra and lambdas come first on
    sys.path (aws-cdk-lib from this environment), the app is a copy elsewhere."""
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(REPO / "tests" / "cdk_consumer_app.py", app / "cdk_consumer_app.py")
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "import buquet, buquet_infra, lambdas\n"
        "from buquet_infra import bundle\n"
        "for m in (buquet, buquet_infra, lambdas): assert m.__file__.startswith(sys.argv[1]), m.__file__\n"
        "assert str(bundle.handlers_dir()).startswith(sys.argv[1]), bundle.handlers_dir()\n"
        "assert any(r.startswith('obstore') for r in bundle.buquet_requirements())\n"
        "import cdk_consumer_app; cdk_consumer_app.main([])\n"
        "print('ok')\n"
    )
    env = {**os.environ, "CDK_OUTDIR": str(tmp_path / "out")}
    out = subprocess.run([sys.executable, "-c", code, str(installed), str(app)], cwd=tmp_path, capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
    template = json.loads((tmp_path / "out" / "Platform.template.json").read_text())
    assert any(r["Type"] == "Custom::BuquetConfig" for r in template["Resources"].values())
