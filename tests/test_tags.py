"""Cost-allocation tags on every bucket and labeling job gtbot creates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from conftest import SANDBOX_TEAM, write_project

from aws import s3
from aws.emulator.groundtruth import GroundTruthEmulator
from bot.commands import Router
from bot.context import Context
from bot.settings import Settings


@pytest.fixture
def ctx(s3_endpoint: str, projects_dir: Path) -> Context:
    return Context(settings=Settings.from_env())


def _tags(bucket: str) -> dict[str, str]:
    client = boto3.client("s3", region_name="us-east-2")
    return {t["Key"]: t["Value"] for t in client.get_bucket_tagging(Bucket=bucket)["TagSet"]}


def test_setup_tags_buckets_beside_their_own_tags_and_then_changes_nothing(ctx: Context) -> None:
    write_project(ctx.settings.projects_dir, "demo")
    client = boto3.client("s3", region_name="us-east-2")
    client.create_bucket(
        Bucket="demo-ui", CreateBucketConfiguration={"LocationConstraint": "us-east-2"}
    )
    # A lab's own tags, and another project's claim on a shared bucket, stay as they are.
    client.put_bucket_tagging(
        Bucket="demo-ui",
        Tagging={
            "TagSet": [{"Key": "team", "Value": "vision"}, {"Key": "gtbot:project", "Value": "old"}]
        },
    )
    router = Router(ctx)
    first = router.run("setup demo", interface="slack", user="U0LAB", channel="C1").text
    assert "tagged gtbot:project=demo, gtbot:requested-by=U0LAB" in first
    for bucket in ("demo-frames", "demo-frames-output"):
        assert _tags(bucket) == {"gtbot:project": "demo", "gtbot:requested-by": "U0LAB"}
    assert _tags("demo-ui") == {
        "team": "vision",
        "gtbot:project": "old",
        "gtbot:requested-by": "U0LAB",
    }
    again = router.run("setup demo", interface="slack", user="U0OTHER", channel="C1").text
    assert again.startswith("Buckets already set up; nothing changed")
    assert _tags("demo-frames")["gtbot:requested-by"] == "U0LAB"  # who created it stays


def test_a_bucket_that_cannot_be_tagged_is_reported_and_setup_goes_on() -> None:
    client = boto3.client("s3", region_name="us-east-2")
    with Stubber(client) as stub:
        stub.add_client_error("get_bucket_tagging", "AccessDenied", http_status_code=403)
        tagged, problem = s3.ensure_bucket_tags(client, "lab-frames", {"gtbot:project": "demo"})
        stub.assert_no_pending_responses()
    assert tagged is None
    assert problem is not None and "AccessDenied" in problem and "s3:PutBucketTagging" in problem
    full = [{"Key": f"k{i}", "Value": "v"} for i in range(50)]
    with Stubber(client) as stub:
        stub.add_response("get_bucket_tagging", {"TagSet": full}, {"Bucket": "lab-frames"})
        tagged, problem = s3.ensure_bucket_tags(client, "lab-frames", {"gtbot:project": "demo"})
    assert tagged is None and problem == "not tagged: it has 50 tags, and S3 allows 50"


def test_the_job_carries_the_project_and_who_asked(
    make_emulator: Callable[..., GroundTruthEmulator], projects_dir: Path
) -> None:
    emulator = make_emulator()
    write_project(projects_dir, "demo", frames=2, job_workteam_arn=SANDBOX_TEAM)
    router = Router(Context(settings=Settings.from_env()))
    plan = router.run("submit demo", interface="slack", user="U0LAB", channel="C1").plan
    assert plan is not None
    assert plan.request["Tags"] == [
        {"Key": "gtbot:project", "Value": "demo"},
        {"Key": "gtbot:requested-by", "Value": "U0LAB"},
    ]
    launched = router.run("submit demo --yes", confirm=lambda _: True)
    assert launched.job is not None
    job = emulator.store.jobs[("us-east-2", launched.job.name.lower())]
    assert {t["Key"] for t in job.request["Tags"]} == {"gtbot:project", "gtbot:requested-by"}
