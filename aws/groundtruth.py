"""Ground Truth: the CreateLabelingJob request as a pure function, and create/describe/list/stop.

The request is checked against botocore's own SageMaker model before it is sent, so a bad request
fails on the lab's machine with a readable message instead of as a ValidationException mid-flow.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

import botocore.session
from botocore.validate import ParamValidator

from aws.error_messages import aws_call
from bot.errors import AwsError

LABEL_ATTRIBUTE = "annotatedResult"
JOB_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Stopped"})


@dataclass(frozen=True)
class JobSpec:
    """Everything the request needs, already validated by the project model."""

    job_name: str
    role_arn: str
    workteam_arn: str
    workteam_kind: str
    manifest_uri: str
    output_uri: str
    template_uri: str
    workers_per_image: int
    task_time_limit_seconds: int
    task_availability_seconds: int
    title: str
    description: str
    keywords: tuple[str, ...]
    max_concurrent_tasks: int | None = None
    price_usd: Decimal | None = None
    pre_lambda_arn: str | None = None
    consolidation_lambda_arn: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LabelCounters:
    total_labeled: int = 0
    human_labeled: int = 0
    machine_labeled: int = 0
    failed: int = 0
    unlabeled: int = 0

    @property
    def total(self) -> int:
        return self.total_labeled + self.failed + self.unlabeled

    @classmethod
    def from_api(cls, raw: dict[str, Any] | None) -> LabelCounters:
        raw = raw or {}
        return cls(
            total_labeled=int(raw.get("TotalLabeled", 0)),
            human_labeled=int(raw.get("HumanLabeled", 0)),
            machine_labeled=int(raw.get("MachineLabeled", 0)),
            failed=int(raw.get("FailedNonRetryableError", 0)),
            unlabeled=int(raw.get("Unlabeled", 0)),
        )


@dataclass(frozen=True)
class JobInfo:
    name: str
    arn: str
    status: str
    created: datetime | None
    counters: LabelCounters = field(default_factory=LabelCounters)
    failure_reason: str | None = None
    output_dataset_uri: str | None = None
    output_path: str | None = None
    workteam_arn: str | None = None
    last_modified: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def output_manifest_uri(self) -> str | None:
        """Where Ground Truth puts `output.manifest`, known before the job reports it."""
        if self.output_dataset_uri:
            return self.output_dataset_uri
        if self.output_path:
            base = self.output_path if self.output_path.endswith("/") else self.output_path + "/"
            return f"{base}{self.name}/manifests/output/output.manifest"
        return None


def make_job_name(project: str, now: datetime | None = None) -> str:
    """`<project>-<UTC yyyymmddHHMMSS>`, made valid: names are unique forever, so time-stamp them."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    base = re.sub(r"[^a-zA-Z0-9-]+", "-", project).strip("-") or "gtbot"
    base = base[: 63 - len(stamp) - 1].rstrip("-")
    name = f"{base}-{stamp}" if base else stamp
    assert JOB_NAME_RE.match(name), name
    return name


def build_labeling_job_request(spec: JobSpec) -> dict[str, Any]:
    """The CreateLabelingJob request. Pure: same spec, same request."""
    human: dict[str, Any] = {
        "WorkteamArn": spec.workteam_arn,
        "UiConfig": {"UiTemplateS3Uri": spec.template_uri},
        "TaskTitle": spec.title,
        "TaskDescription": spec.description,
        "TaskKeywords": list(spec.keywords),
        "NumberOfHumanWorkersPerDataObject": spec.workers_per_image,
        "TaskTimeLimitInSeconds": spec.task_time_limit_seconds,
        "TaskAvailabilityLifetimeInSeconds": spec.task_availability_seconds,
    }
    if spec.pre_lambda_arn:
        human["PreHumanTaskLambdaArn"] = spec.pre_lambda_arn
    if spec.consolidation_lambda_arn:
        human["AnnotationConsolidationConfig"] = {
            "AnnotationConsolidationLambdaArn": spec.consolidation_lambda_arn
        }
    if spec.max_concurrent_tasks:
        human["MaxConcurrentTaskCount"] = spec.max_concurrent_tasks
    if spec.workteam_kind == "public":
        if spec.price_usd is None:
            raise AwsError("The public crowd needs a price per task (`job.price_usd`).")
        dollars = int(spec.price_usd)
        cents = int((spec.price_usd * 100) % 100)
        tenths = int((spec.price_usd * 1000) % 10)
        human["PublicWorkforceTaskPrice"] = {
            "AmountInUsd": {"Dollars": dollars, "Cents": cents, "TenthFractionsOfACent": tenths}
        }
    request: dict[str, Any] = {
        "LabelingJobName": spec.job_name,
        "LabelAttributeName": LABEL_ATTRIBUTE,
        "InputConfig": {
            "DataSource": {"S3DataSource": {"ManifestS3Uri": spec.manifest_uri}},
        },
        "OutputConfig": {"S3OutputPath": spec.output_uri},
        "RoleArn": spec.role_arn,
        "HumanTaskConfig": human,
    }
    if spec.workteam_kind == "public":
        # The public crowd refuses work that is not declared free of PII and adult content.
        request["InputConfig"]["DataAttributes"] = {
            "ContentClassifiers": [
                "FreeOfPersonallyIdentifiableInformation",
                "FreeOfAdultContent",
            ]
        }
    if spec.tags:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in spec.tags]
    return request


@cache
def _sagemaker_model() -> Any:
    return botocore.session.get_session().get_service_model("sagemaker")


def validate_request(operation: str, request: dict[str, Any]) -> None:
    """Check a request with botocore's own model; the message lists every problem."""
    shape = _sagemaker_model().operation_model(operation).input_shape
    report = ParamValidator().validate(request, shape)
    if report.has_errors():
        raise AwsError(
            f"The {operation} request gtbot built is not valid for this boto3 version:\n"
            f"{report.generate_report()}\nUpgrade boto3 (>= 1.35.26) or check the job settings."
        )


def _job_info(raw: dict[str, Any]) -> JobInfo:
    output = raw.get("LabelingJobOutput") or {}
    human = raw.get("HumanTaskConfig") or {}
    return JobInfo(
        name=raw["LabelingJobName"],
        arn=raw.get("LabelingJobArn", ""),
        status=raw.get("LabelingJobStatus", "Unknown"),
        created=raw.get("CreationTime"),
        counters=LabelCounters.from_api(raw.get("LabelCounters")),
        failure_reason=raw.get("FailureReason"),
        output_dataset_uri=output.get("OutputDatasetS3Uri"),
        output_path=(raw.get("OutputConfig") or {}).get("S3OutputPath"),
        workteam_arn=human.get("WorkteamArn") or raw.get("WorkteamArn"),
        last_modified=raw.get("LastModifiedTime"),
    )


def create_labeling_job(client: Any, request: dict[str, Any]) -> JobInfo:
    validate_request("CreateLabelingJob", request)
    with aws_call(f"create labeling job {request['LabelingJobName']}"):
        response = client.create_labeling_job(**request)
    return JobInfo(
        name=request["LabelingJobName"],
        arn=response["LabelingJobArn"],
        status="Initializing",
        created=None,
        output_path=request["OutputConfig"]["S3OutputPath"],
        workteam_arn=request["HumanTaskConfig"]["WorkteamArn"],
    )


def describe_labeling_job(client: Any, name: str) -> JobInfo:
    with aws_call(f"describe labeling job {name}"):
        return _job_info(client.describe_labeling_job(LabelingJobName=name))


def iter_labeling_job_pages(
    client: Any, *, created_after: datetime | None = None
) -> Iterator[list[JobInfo]]:
    """Page by page, so a caller can count the calls (one per page) it spends per tick."""
    params: dict[str, Any] = {"SortBy": "CreationTime", "SortOrder": "Descending"}
    if created_after:
        params["CreationTimeAfter"] = created_after
    with aws_call("list labeling jobs"):
        paginator = client.get_paginator("list_labeling_jobs")
        for page in paginator.paginate(**params, PaginationConfig={"PageSize": 100}):
            yield [_job_info(raw) for raw in page.get("LabelingJobSummaryList", [])]


def iter_labeling_jobs(
    client: Any,
    *,
    name_contains: str | None = None,
    status: str | None = None,
    created_after: datetime | None = None,
    max_items: int | None = None,
) -> Iterator[JobInfo]:
    """Newest first, through every page; one call per page serves many jobs' counters."""
    params: dict[str, Any] = {"SortBy": "CreationTime", "SortOrder": "Descending"}
    if name_contains:
        params["NameContains"] = name_contains
    if status:
        params["StatusEquals"] = status
    if created_after:
        params["CreationTimeAfter"] = created_after
    with aws_call("list labeling jobs"):
        paginator = client.get_paginator("list_labeling_jobs")
        config = {"PageSize": 100}
        if max_items:
            config["MaxItems"] = max_items
        for page in paginator.paginate(**params, PaginationConfig=config):
            for raw in page.get("LabelingJobSummaryList", []):
                yield _job_info(raw)


def stop_labeling_job(client: Any, name: str) -> None:
    with aws_call(f"stop labeling job {name}"):
        client.stop_labeling_job(LabelingJobName=name)


def describe_workteam(client: Any, arn: str) -> dict[str, Any]:
    name = arn.rsplit("/", 1)[-1]
    with aws_call(f"describe workteam {name}"):
        return dict(client.describe_workteam(WorkteamName=name)["Workteam"])
