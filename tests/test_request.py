"""The CreateLabelingJob request: pure builder, model validation, and the call through Stubber."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import boto3
import pytest
from botocore.stub import Stubber

from aws import groundtruth as gt
from bot.errors import AwsError

ROLE = "arn:aws:iam::123456789012:role/service-role/AmazonSageMaker-ExecutionRole-20261101T000000"
PRIVATE = "arn:aws:sagemaker:us-east-2:123456789012:workteam/private-crowd/mouse-labelers"
PUBLIC = "arn:aws:sagemaker:us-east-2:394669845002:workteam/public-crowd/default"


def _spec(**changes: object) -> gt.JobSpec:
    base = dict(
        job_name="demo-mice-20261125120000",
        role_arn=ROLE,
        workteam_arn=PRIVATE,
        workteam_kind="private",
        manifest_uri="s3://lab-frames/demo-mice/manifests/input.manifest",
        output_uri="s3://lab-frames-output/demo-mice/",
        template_uri="s3://lab-annotation-ui/demo-mice/annotation-interface.template",
        workers_per_image=5,
        task_time_limit_seconds=300,
        task_availability_seconds=43200,
        title="Please label each body part of interest",
        description="Please label each body part of interest",
        keywords=("pose", "keypoints", "animal"),
        max_concurrent_tasks=200,
        tags=(("gtbot:project", "demo-mice"),),
    )
    base.update(changes)
    return gt.JobSpec(**base)  # type: ignore[arg-type]


def _expected(human_extra: dict, input_extra: dict | None = None, workteam: str = PRIVATE) -> dict:
    return {
        "LabelingJobName": "demo-mice-20261125120000",
        "LabelAttributeName": "annotatedResult",
        "InputConfig": {
            "DataSource": {
                "S3DataSource": {
                    "ManifestS3Uri": "s3://lab-frames/demo-mice/manifests/input.manifest"
                }
            },
            **(input_extra or {}),
        },
        "OutputConfig": {"S3OutputPath": "s3://lab-frames-output/demo-mice/"},
        "RoleArn": ROLE,
        "HumanTaskConfig": {
            "WorkteamArn": workteam,
            "UiConfig": {
                "UiTemplateS3Uri": "s3://lab-annotation-ui/demo-mice/annotation-interface.template"
            },
            "TaskTitle": "Please label each body part of interest",
            "TaskDescription": "Please label each body part of interest",
            "TaskKeywords": ["pose", "keypoints", "animal"],
            "NumberOfHumanWorkersPerDataObject": 5,
            "TaskTimeLimitInSeconds": 300,
            "TaskAvailabilityLifetimeInSeconds": 43200,
            "MaxConcurrentTaskCount": 200,
            **human_extra,
        },
        "Tags": [{"Key": "gtbot:project", "Value": "demo-mice"}],
    }


def _create_with_stub(request: dict, expected: dict) -> gt.JobInfo:
    client = boto3.client("sagemaker", region_name="us-east-2")
    arn = "arn:aws:sagemaker:us-east-2:123456789012:labeling-job/demo-mice-20261125120000"
    with Stubber(client) as stub:
        stub.add_response("create_labeling_job", {"LabelingJobArn": arn}, expected_params=expected)
        info = gt.create_labeling_job(client, request)
        stub.assert_no_pending_responses()
    assert info.arn == arn
    return info


def test_private_team_request_has_no_price_and_no_lambdas() -> None:
    request = gt.build_labeling_job_request(_spec())
    info = _create_with_stub(request, _expected({}))
    assert info.name == "demo-mice-20261125120000"


def test_public_crowd_request_has_price_and_content_classifiers() -> None:
    spec = _spec(workteam_arn=PUBLIC, workteam_kind="public", price_usd=Decimal("0.036"))
    request = gt.build_labeling_job_request(spec)
    expected = _expected(
        {
            "PublicWorkforceTaskPrice": {
                "AmountInUsd": {"Dollars": 0, "Cents": 3, "TenthFractionsOfACent": 6}
            }
        },
        {
            "DataAttributes": {
                "ContentClassifiers": [
                    "FreeOfPersonallyIdentifiableInformation",
                    "FreeOfAdultContent",
                ]
            }
        },
        workteam=PUBLIC,
    )
    _create_with_stub(request, expected)


@pytest.mark.parametrize(
    ("price", "parts"),
    [("1.200", (1, 20, 0)), ("0.012", (0, 1, 2)), ("0.840", (0, 84, 0)), ("0.072", (0, 7, 2))],
)
def test_price_split_into_dollars_cents_tenths(price: str, parts: tuple[int, int, int]) -> None:
    spec = _spec(workteam_arn=PUBLIC, workteam_kind="public", price_usd=Decimal(price))
    amount = gt.build_labeling_job_request(spec)["HumanTaskConfig"]["PublicWorkforceTaskPrice"]
    assert tuple(amount["AmountInUsd"].values()) == parts


def test_lambdas_are_passed_when_configured() -> None:
    pre = "arn:aws:lambda:us-east-2:123456789012:function:gt-pre"
    post = "arn:aws:lambda:us-east-2:123456789012:function:gt-post"
    request = gt.build_labeling_job_request(
        _spec(pre_lambda_arn=pre, consolidation_lambda_arn=post)
    )
    human = request["HumanTaskConfig"]
    assert human["PreHumanTaskLambdaArn"] == pre
    assert human["AnnotationConsolidationConfig"] == {"AnnotationConsolidationLambdaArn": post}
    gt.validate_request("CreateLabelingJob", request)


def test_model_validation_catches_what_the_builder_cannot() -> None:
    request = gt.build_labeling_job_request(_spec())
    request["HumanTaskConfig"]["TaskTitle"] = ""
    del request["RoleArn"]
    with pytest.raises(AwsError) as info:
        gt.validate_request("CreateLabelingJob", request)
    assert "RoleArn" in info.value.user_message and "TaskTitle" in info.value.user_message


@pytest.mark.parametrize(
    ("project", "expected"),
    [
        ("demo-mice", "demo-mice-20261125093005"),
        ("x" * 70, "x" * 48 + "-20261125093005"),
        ("a--b", "a--b-20261125093005"),
    ],
)
def test_job_names_are_valid_and_time_stamped(project: str, expected: str) -> None:
    name = gt.make_job_name(project, datetime(2026, 11, 25, 9, 30, 5, tzinfo=UTC))
    assert name == expected
    assert len(name) <= 63 and gt.JOB_NAME_RE.match(name)


def test_resource_in_use_becomes_advice() -> None:
    client = boto3.client("sagemaker", region_name="us-east-2")
    request = gt.build_labeling_job_request(_spec())
    with Stubber(client) as stub:
        stub.add_client_error(
            "create_labeling_job",
            "ResourceInUse",
            "Job name demo-mice-20261125120000 already exists",
            400,
            expected_params=request,
        )
        with pytest.raises(AwsError, match="unique forever"):
            gt.create_labeling_job(client, request)


def test_list_and_describe_return_dataclasses() -> None:
    client = boto3.client("sagemaker", region_name="us-east-2")
    created = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    summary = {
        "LabelingJobName": "demo-mice-1",
        "LabelingJobArn": "arn:aws:sagemaker:us-east-2:123456789012:labeling-job/demo-mice-1",
        "CreationTime": created,
        "LastModifiedTime": created,
        "LabelingJobStatus": "InProgress",
        "LabelCounters": {"TotalLabeled": 3, "HumanLabeled": 3, "Unlabeled": 7},
        "WorkteamArn": PRIVATE,
    }
    with Stubber(client) as stub:
        stub.add_response(
            "list_labeling_jobs",
            {"LabelingJobSummaryList": [summary]},
            expected_params={
                "SortBy": "CreationTime",
                "SortOrder": "Descending",
                "MaxResults": 100,
            },
        )
        jobs = list(gt.iter_labeling_jobs(client))
    assert jobs[0].counters.total == 10 and jobs[0].status == "InProgress"
    assert jobs[0].workteam_arn == PRIVATE
