"""Job parameters as the service defines them (SageMaker API model, HumanTaskConfig; Input Data
Quotas), checked where a user meets them: the config, the plan, the request sent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
import yaml
from conftest import POST_LAMBDA, SANDBOX_TEAM, write_project

from aws import groundtruth as gt
from aws.checks import MANAGED_POLICY_BUCKET_WORDS
from aws.emulator.groundtruth import GroundTruthEmulator
from bot import recipe
from bot.cli import run_text
from bot.context import Context
from bot.errors import ConfigError
from bot.project import load_project
from bot.settings import Settings

PUBLIC = "arn:aws:sagemaker:us-east-2:394669845002:workteam/public-crowd/default"
VENDOR = "arn:aws:sagemaker:us-east-2:123456789012:workteam/vendor-crowd/acme"


def _project(tmp_path: Path, **job: object) -> recipe.ProjectConfig:
    write_project(tmp_path, "demo", **{f"job_{k}": v for k, v in job.items()})
    config = tmp_path / "demo" / "project-config.yml"
    data = yaml.safe_load(config.read_text())
    for key in ("task_availability_seconds", "max_concurrent_tasks"):
        if key not in job:
            data["job"].pop(key, None)
    config.write_text(yaml.safe_dump(data))
    return load_project(tmp_path, "demo")


@pytest.mark.parametrize(
    ("team", "price", "seconds"),
    [(SANDBOX_TEAM, None, 2_592_000), (VENDOR, None, 2_592_000), (PUBLIC, 0.036, 43_200)],
    ids=["private", "vendor", "public"],
)
def test_task_availability_defaults_per_workforce(
    tmp_path: Path, team: str, price: float | None, seconds: int
) -> None:
    extra = {"price_usd": price} if price else {}
    project = _project(tmp_path, workteam_arn=team, **extra)
    assert project.job.task_availability_seconds is None
    assert project.job.availability_seconds == seconds


def test_teams_may_take_up_to_30_days_the_public_crowd_12_hours(tmp_path: Path) -> None:
    assert _project(tmp_path, task_availability_seconds=2_592_000).job.availability_seconds == (
        2_592_000
    )
    with pytest.raises(ConfigError, match="2592001 is outside 60..2592000"):
        _project(tmp_path, task_availability_seconds=2_592_001)
    with pytest.raises(ConfigError, match="too long for the public crowd"):
        _project(tmp_path, workteam_arn=PUBLIC, price_usd=0.036, task_availability_seconds=43_201)


def test_a_consolidation_lambda_alone_is_accepted(tmp_path: Path) -> None:
    project = _project(tmp_path, consolidation_lambda_arn=POST_LAMBDA)
    assert project.job.consolidation_lambda_arn == POST_LAMBDA
    assert project.job.pre_lambda_arn is None


def test_init_proposes_bucket_names_the_managed_policy_covers(tmp_path: Path) -> None:
    result = recipe.init_project(tmp_path, "x" * 40, region="us-east-2")
    project = load_project(tmp_path, "x" * 40)
    for bucket in (project.data_bucket, project.output_bucket, project.template_bucket):
        assert any(word in bucket for word in MANAGED_POLICY_BUCKET_WORDS), bucket
    text = result.config_file.read_text()
    assert "AmazonSageMakerGroundTruthExecution" in text
    # A new project leaves availability to the workforce's default, not 12 h for everyone.
    assert project.job.task_availability_seconds is None


def test_more_than_100000_frames_are_refused_before_anything_is_spent(
    make_emulator: Callable[..., GroundTruthEmulator],
    projects_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator = make_emulator()
    write_project(projects_dir, "demo", frames=4, job_workteam_arn=SANDBOX_TEAM)
    with pytest.raises(ConfigError) as caught:
        recipe.check_dataset_size(load_project(projects_dir, "demo"), 100_001, "here")
    message = caught.value.user_message
    assert "100,001 frames here" in message and "at most 100,000" in message
    assert "into 2 projects" in message and "init demo-part2" in message
    recipe.check_dataset_size(load_project(projects_dir, "demo"), 100_000, "here")

    monkeypatch.setattr(recipe, "MAX_JOB_OBJECTS", 3)  # the same rule, on 4 small frames
    ctx = Context(settings=Settings.from_env())
    with pytest.raises(ConfigError, match="4 frames in .*raw-images"):
        run_text("submit demo --yes", ctx)
    assert boto3.client("s3", region_name="us-east-2").list_buckets()["Buckets"] == []
    assert emulator.calls == []


def test_max_concurrent_tasks_above_1000_is_warned_about_in_the_plan(
    make_emulator: Callable[..., GroundTruthEmulator], projects_dir: Path
) -> None:
    make_emulator()
    write_project(
        projects_dir, "demo", frames=1, job_workteam_arn=SANDBOX_TEAM, job_max_concurrent_tasks=2000
    )
    ctx = Context(settings=Settings.from_env())
    text = run_text("submit demo", ctx).text
    assert "WARNING: max_concurrent_tasks 2000 is above 1,000" in text
    assert "AWS Support" in text and "Nothing launched" in text
    write_project(projects_dir, "demo", frames=1, job_workteam_arn=SANDBOX_TEAM)
    assert "WARNING" not in run_text("submit demo", ctx).text


def test_the_request_carries_the_workforce_default(
    make_emulator: Callable[..., GroundTruthEmulator], projects_dir: Path
) -> None:
    make_emulator()
    write_project(projects_dir, "demo", frames=1, job_workteam_arn=SANDBOX_TEAM)
    config = projects_dir / "demo" / "project-config.yml"
    data = yaml.safe_load(config.read_text())
    del data["job"]["task_availability_seconds"]
    config.write_text(yaml.safe_dump(data))
    ctx = Context(settings=Settings.from_env())
    plan = recipe.prepare_submission(ctx, ctx.project("demo"))
    assert plan.request["HumanTaskConfig"]["TaskAvailabilityLifetimeInSeconds"] == 2_592_000


@pytest.mark.parametrize("output_path", ["s3://lab-out/jobs", "s3://lab-out/jobs/"])
def test_output_manifest_is_under_the_job_name_before_aws_reports_it(output_path: str) -> None:
    """Before a job reports LabelingJobOutput (a job stopped before anything was written has
    none), its manifest's place follows from the output path: Ground Truth writes
    <S3OutputPath>/<job name>/manifests/output/output.manifest (AWS developer guide, "Labeling
    job output data", https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-output.html)."""
    job = gt.JobInfo("mice-20261120", "arn:x", "Stopped", None, output_path=output_path)
    assert job.output_manifest_uri == (
        "s3://lab-out/jobs/mice-20261120/manifests/output/output.manifest"
    )
    reported = "s3://lab-out/jobs/mice-20261120/manifests/output/output.manifest"
    assert gt.JobInfo("m", "a", "Completed", None, output_dataset_uri=reported).output_manifest_uri
    assert gt.JobInfo("m", "a", "Failed", None).output_manifest_uri is None
