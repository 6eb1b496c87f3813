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


# validate_job word for word: each message names the file and line, or the lab default it came
# from, the key, what was found and how to fix it. Lines: `job:` on 3, each key on its own line.
_KEYS = sorted(
    ["workteam_arn", "role_arn", "workers_per_image", "task_time_limit_seconds",
     "task_availability_seconds", "max_concurrent_tasks", "title", "description", "keywords",
     "price_usd", "pre_lambda_arn", "consolidation_lambda_arn", "consensus", "adaptive"]
)  # fmt: skip
_LINES = {("job",): 3, **{("job", k): 10 + i for i, k in enumerate(_KEYS)}}
_AT = {k: f"p.yml, line {10 + i}, key `job.{k}`" for i, k in enumerate(_KEYS)}
_LAB = {k: f"lab default (gtbot.yml), key `job.{k}`" for k in _KEYS}
_LAB["role_arn"] = "lab default (GTBOT_ROLE_ARN or gtbot.yml), key `job.role_arn`"
_LAB["workteam_arn"] = "lab default (GTBOT_WORKTEAM_ARN or gtbot.yml), key `job.workteam_arn`"
PRIVATE = "arn:aws:sagemaker:us-east-2:123456789012:workteam/private-crowd/lab"


def _job(raw: object, lab: dict[str, object] | None = None, region: str = "us-east-2") -> tuple:
    from bot.project.job_settings import validate_job
    from bot.project.problems import ConfigProblems

    # The lines of the keys the project sets; any other key's problem points at `job:`.
    keys = raw if isinstance(raw, dict) else {}
    lines = {k: v for k, v in _LINES.items() if len(k) == 1 or k[1] in keys}
    p = ConfigProblems(Path("p.yml"), lines)
    return validate_job(raw, lab or {}, region, p), p.items


LIMITS = {
    "workers_per_image": (1, 9, "Write a number from 1 to 9 (MARS recommends 5)."),
    "task_time_limit_seconds": (30, 28800, "Write seconds from 30 to 28800 (8 hours), e.g. 300."),
    "task_availability_seconds": (
        60,
        2592000,
        "Write seconds from 60 to 2592000 (30 days; the public crowd allows at most 43200, "
        "12 hours), or remove the key for the workforce's default.",
    ),
    "max_concurrent_tasks": (
        1,
        5000,
        "Write a number from 1 to 5000 (above 1000 needs AWS Support), or remove the key.",
    ),
}


@pytest.mark.parametrize("key", list(LIMITS))
def test_job_limits_word_for_word_at_both_edges(key: str) -> None:
    lo, hi, fix = LIMITS[key]
    # Only this key is set: the keys before it being absent must not end the checks.
    for ok in (lo, hi):
        job, items = _job({key: ok})
        assert items == [] and getattr(job, key) == ok
    for bad in (lo - 1, hi + 1):
        assert _job({key: bad})[1] == [f"{_AT[key]}: {bad} is outside {lo}..{hi}. {fix}"]
    assert _job({key: "5"})[1] == [f"{_AT[key]}: must be a whole number, found '5'. {fix}"]
    assert _job({}, {key: True})[1] == [f"{_LAB[key]}: must be a whole number, found True. {fix}"]
    assert _job({}, {key: hi + 1})[1] == [f"{_LAB[key]}: {hi + 1} is outside {lo}..{hi}. {fix}"]


def test_a_job_section_that_is_absent_or_not_a_mapping() -> None:
    from bot.project.model import JobConfig

    assert _job(None) == (JobConfig(), [])
    job, items = _job("yes", {"workers_per_image": 3})
    assert job == JobConfig(workers_per_image=3)
    assert items == [
        "p.yml, line 3, key `job`: must be a mapping of job settings, found 'yes'. "
        "See `init` for an example."
    ]


ARN_EXAMPLES = {
    "workteam_arn": "arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/my-team",
    "role_arn": "arn:aws:iam::123456789012:role/service-role/AmazonSageMaker-ExecutionRole",
    "pre_lambda_arn": "arn:aws:lambda:us-east-1:123456789012:function:gt-pre",
    "consolidation_lambda_arn": "arn:aws:lambda:us-east-1:123456789012:function:gt-post",
}


@pytest.mark.parametrize("key", list(ARN_EXAMPLES))
def test_arns_word_for_word(key: str) -> None:
    example = ARN_EXAMPLES[key]
    message = f"'arn:aws:nope' is not an ARN of the right form. Expected e.g. `{example}`."
    assert _job({key: "arn:aws:nope"})[1] == [f"{_AT[key]}: {message}"]
    assert _job({}, {key: "arn:aws:nope"})[1] == [f"{_LAB[key]}: {message}"]
    # The example itself is of the right form (a lab copies it); a team's region must match.
    job, items = _job({key: f" {example} "}, region="us-east-1")
    assert items == [] and getattr(job, key) == example


def test_a_lab_default_workteam_in_another_region_names_the_lab_default() -> None:
    expected = (
        "the workteam is in us-east-2 but the project's region is eu-west-1; Ground Truth "
        "needs both in the same region."
    )
    assert _job({}, {"workteam_arn": PRIVATE}, region="eu-west-1")[1] == [
        f"{_LAB['workteam_arn']}: {expected}"
    ]
    assert _job({"workteam_arn": PRIVATE}, region="eu-west-1")[1] == [
        f"{_AT['workteam_arn']}: {expected}"
    ]


def test_texts_word_for_word_at_their_limits() -> None:
    job, items = _job({"title": "t" * 128, "description": " " + "d" * 255})
    assert items == [] and (job.title, job.description) == ("t" * 128, "d" * 255)
    assert _job({"description": "d" * 256})[1] == [
        f"{_AT['description']}: is 256 characters; Ground Truth allows at most 255."
    ]
    assert _job({}, {"title": "t" * 129})[1] == [
        f"{_LAB['title']}: is 129 characters; Ground Truth allows at most 128."
    ]
    assert _job({"title": 5, "description": "  "})[1] == [
        f"{_AT['title']}: must be non-empty text. Example: `title: Label mouse body parts`.",
        f"{_AT['description']}: must be non-empty text. Example: "
        "`description: Click on each body part of each mouse`.",
    ]
    assert _job({}, {"description": None, "title": ""})[1] == [
        f"{_LAB['title']}: must be non-empty text. Example: `title: Label mouse body parts`."
    ]


def test_keywords_word_for_word_at_their_limits() -> None:
    five = ["a", "b c", "d" * 30, "e", "f"]
    job, items = _job({"keywords": five})
    assert items == [] and job.keywords == tuple(five)
    six = [*five, "g"]
    assert _job({"keywords": six})[1] == [
        f"{_AT['keywords']}: must be a list of 1 to 5 keywords, found {six!r}. "
        "Example: `keywords: [pose, mouse]`."
    ]
    assert _job({}, {"keywords": []})[1] == [
        f"{_LAB['keywords']}: must be a list of 1 to 5 keywords, found []. "
        "Example: `keywords: [pose, mouse]`."
    ]
    for bad in ("d" * 31, "two  spaces"):
        assert _job({}, {"keywords": ["ok", bad]})[1] == [
            f"{_LAB['keywords']}: {bad!r} is not allowed: keywords are letters, digits and "
            "single spaces, at most 30 characters."
        ]


def test_prices_word_for_word() -> None:
    job, items = _job({"workteam_arn": PUBLIC, "price_usd": 0.06})
    assert items == [] and str(job.price_usd) == "0.060"
    allowed = (
        "0.012, 0.024, 0.036, 0.048, 0.060, 0.072, 0.120, 0.240, 0.360, 0.480, 0.600, 0.720, "
        "0.840, 0.960, 1.080, 1.200"
    )
    assert _job({"workteam_arn": PUBLIC}, {"price_usd": 0.05})[1] == [
        f"{_LAB['price_usd']}: 0.05 is not a price the public crowd accepts. Use one of: "
        f"{allowed} (nearest: 0.048)."
    ]
    assert _job({"workteam_arn": PUBLIC, "price_usd": "1.1"})[1] == [
        f"{_AT['price_usd']}: 1.1 is not a price the public crowd accepts. Use one of: "
        f"{allowed} (nearest: 1.080)."
    ]
    assert _job({"workteam_arn": PUBLIC}, {"price_usd": "cheap"})[1] == [
        f"{_LAB['price_usd']}: must be a number of US dollars, found 'cheap'."
    ]
    assert _job({"workteam_arn": PUBLIC, "price_usd": False})[1] == [
        f"{_AT['price_usd']}: must be a number of US dollars, found False."
    ]
    for team, kind in ((PRIVATE, "private"), (VENDOR, "vendor")):
        assert _job({"workteam_arn": team}, {"price_usd": 0.036})[1] == [
            f"{_LAB['price_usd']}: a {kind} workteam takes no price per task; remove `price_usd`."
        ]


def test_adaptive_as_a_lab_default_is_checked_against_the_projects_workers() -> None:
    # 5 workers (the default) + 3 rounds x 9 is the most a frame may get; 6 would be 33.
    most = {"workers_per_round": 9, "max_rounds": 4}
    job, items = _job({"workteam_arn": PRIVATE}, {"adaptive": most})
    assert items == [] and job.adaptive.workers_per_round == 9
    assert _job({"workteam_arn": PRIVATE, "workers_per_image": 6}, {"adaptive": most})[1] == [
        f"{_LAB['adaptive']}: a frame could get 33 answers in all (6 + 3 rounds x 9); gtbot uses "
        "at most 32 a frame. Lower max_rounds or workers_per_round."
    ]


def test_public_crowd_pay_and_offer_time_word_for_word() -> None:
    assert _job({"workteam_arn": PUBLIC})[1] == [
        "p.yml, line 3, key `job.price_usd`: the public crowd needs a price per task, e.g. "
        "`price_usd: 0.036`."
    ]
    paid = {"workteam_arn": PUBLIC, "price_usd": 0.036}
    job, items = _job({**paid, "task_availability_seconds": 43200})
    assert items == [] and job.task_availability_seconds == 43200
    too_long = (
        "43201 is too long for the public crowd, which allows at most 43200 (12 hours). Write "
        "43200 or less, or remove the key."
    )
    assert _job({**paid, "task_availability_seconds": 43201})[1] == [
        f"{_AT['task_availability_seconds']}: {too_long}"
    ]
    assert _job(paid, {"task_availability_seconds": 43201})[1] == [
        f"{_LAB['task_availability_seconds']}: {too_long}"
    ]


def test_consensus_word_for_word() -> None:
    message = (
        "must be `median` (MARS's per-keypoint median) or `robust` (gtbot's, which weighs each "
        "click by how believable it is), found 'mean'."
    )
    assert _job({"consensus": "mean"})[1] == [f"{_AT['consensus']}: {message}"]
    assert _job({}, {"consensus": "mean"})[1] == [f"{_LAB['consensus']}: {message}"]
    assert _job({}, {"consensus": "robust"})[0].consensus == "robust"
