"""In-memory state of the emulated account: labeling jobs and workteams, behind one lock.

The HTTP threads and the workforce thread share this state. Every read or write of a job's
status, counters or output goes through `JobStore.lock`; the per-object working data
(`DataObject`) is touched only by the workforce thread.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aws.emulator.lambdas import LAMBDA_ARN, LambdaStandIn, seeded, stand_in

ACCOUNT_ID = "123456789012"
PUBLIC_CROWD_ACCOUNT_ID = "394669845002"

ACTIVE_STATUSES = ("Initializing", "InProgress", "Stopping")
ENDED_STATUSES = ("Completed", "Failed", "Stopped")


def now_ms() -> float:
    """The service's timestamps have millisecond precision; so do the emulator's."""
    return round(time.time(), 3)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key); the emulator does not resolve https:// S3 URLs."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri} is not an s3:// URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"{uri} names no bucket")
    return bucket, key


@dataclass
class DataObject:
    """One input manifest line and the answers collected for it so far."""

    index: int
    line: dict[str, Any]
    source_ref: str
    task_input: dict[str, Any] | None = None
    loaded: bool = False
    failure: str | None = None
    width: int = 0
    height: int = 0
    truth: dict[str, tuple[float, float]] | None = None
    truth_pairs: list[tuple[str, str]] = field(default_factory=list)
    # How hard the frame is (bot/synthetic.py draws it so): keypoints another animal hides,
    # each animal's labels (in the same keypoint order), and whether the animals are huddled.
    truth_occluded: frozenset[str] = frozenset()
    truth_animals: tuple[tuple[str, ...], ...] = ()
    huddled: bool = False
    answers: list[dict[str, Any]] = field(default_factory=list)
    workers_used: set[str] = field(default_factory=set)


@dataclass
class LabelingJob:
    """A job as the service keeps it: the validated request plus progress."""

    name: str
    arn: str
    region: str
    request: dict[str, Any]
    created: float
    modified: float
    job_reference_code: str
    rng: random.Random
    started_monotonic: float
    status: str = "Initializing"
    failure_reason: str | None = None
    output_dataset_uri: str | None = None
    stop_requested_monotonic: float | None = None
    objects: list[DataObject] = field(default_factory=list)
    pending: deque[int] = field(default_factory=deque)
    in_flight: list[int] = field(default_factory=list)
    labeled: dict[int, dict[str, Any]] = field(default_factory=dict)
    failed: dict[int, dict[str, Any]] = field(default_factory=dict)
    template: Any = None  # the parsed worker task template (a liquid.BoundTemplate)
    manifest_dirty: bool = False

    @property
    def human_task_config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.request["HumanTaskConfig"]
        return config

    @property
    def workteam_arn(self) -> str:
        return str(self.human_task_config["WorkteamArn"])

    @property
    def workers_per_object(self) -> int:
        return int(self.human_task_config["NumberOfHumanWorkersPerDataObject"])

    @property
    def max_concurrent_objects(self) -> int:
        return int(self.human_task_config.get("MaxConcurrentTaskCount", 1000))

    @property
    def consolidates(self) -> bool:
        return "AnnotationConsolidationConfig" in self.human_task_config

    @property
    def pre_lambda_arn(self) -> str | None:
        arn = self.human_task_config.get("PreHumanTaskLambdaArn")
        return str(arn) if arn else None

    @property
    def consolidation_lambda_arn(self) -> str | None:
        config = self.human_task_config.get("AnnotationConsolidationConfig") or {}
        arn = config.get("AnnotationConsolidationLambdaArn")
        return str(arn) if arn else None

    @property
    def label_attribute(self) -> str:
        return str(self.request["LabelAttributeName"])

    @property
    def output_prefix(self) -> str:
        """`<S3OutputPath>/<job>`: where the real service puts everything a job writes."""
        base = str(self.request["OutputConfig"]["S3OutputPath"]).rstrip("/")
        return f"{base}/{self.name}"

    @property
    def output_manifest_uri(self) -> str:
        return f"{self.output_prefix}/manifests/output/output.manifest"

    def counters(self) -> dict[str, int]:
        """LabelCounters (API reference: FailedNonRetryableError is "the total number of objects
        that could not be labeled due to an error")."""
        labeled = len(self.labeled)
        failed = len(self.failed)
        return {
            "TotalLabeled": labeled,
            "HumanLabeled": labeled,
            "MachineLabeled": 0,
            "FailedNonRetryableError": failed,
            "Unlabeled": len(self.objects) - labeled - failed,
        }

    def set_status(self, status: str, failure_reason: str | None = None) -> None:
        self.status = status
        if failure_reason is not None:
            self.failure_reason = failure_reason
        self.touch()

    def touch(self) -> None:
        self.modified = now_ms()


@dataclass
class Workteam:
    arn: str
    name: str
    region: str
    kind: str
    created: float
    description: str

    def describe(self) -> dict[str, Any]:
        """The DescribeWorkteam form; private teams get a Cognito member like real ones."""
        body: dict[str, Any] = {
            "WorkteamName": self.name,
            "WorkteamArn": self.arn,
            "Description": self.description,
            "CreateDate": self.created,
            "LastUpdatedDate": self.created,
            "MemberDefinitions": [
                {
                    "CognitoMemberDefinition": {
                        "UserPool": f"{self.region}_emulator",
                        "UserGroup": f"{self.name}-group",
                        "ClientId": "emulatorclientid0000000000",
                    }
                }
            ],
        }
        if self.kind == "private-crowd":
            body["WorkforceArn"] = f"arn:aws:sagemaker:{self.region}:{ACCOUNT_ID}:workforce/default"
            digest = zlib.crc32(self.arn.encode()) % 10**8
            body["SubDomain"] = f"emulator{digest:08d}.labeling.{self.region}.sagemaker.aws"
        return body


def parse_workteam_arn(arn: str) -> tuple[str, str, str]:
    """-> (region, kind, name) for `arn:aws:sagemaker:<region>:<acct>:workteam/<kind>/<name>`."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[:3] != ["arn", "aws", "sagemaker"] or not parts[3]:
        raise ValueError(f"{arn!r} is not a SageMaker workteam ARN")
    resource = parts[5].split("/")
    if len(resource) != 3 or resource[0] != "workteam" or not resource[2]:
        raise ValueError(f"{arn!r} is not a SageMaker workteam ARN (workteam/<kind>/<name>)")
    if resource[1] not in ("private-crowd", "public-crowd", "vendor-crowd"):
        raise ValueError(
            f"{arn!r}: workteam kind must be private-crowd, public-crowd or vendor-crowd"
        )
    return parts[3], resource[1], resource[2]


class JobStore:
    """Jobs keyed by (region, lower-case name): names are unique per region, ignoring case."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.jobs: dict[tuple[str, str], LabelingJob] = {}
        self.extra_workteams: dict[str, Workteam] = {}
        self.extra_lambdas: dict[str, LambdaStandIn] = {}
        self.started = now_ms()

    def lambda_function(self, arn: str) -> LambdaStandIn | None:
        with self.lock:
            added = self.extra_lambdas.get(arn)
        return added or seeded(arn, ACCOUNT_ID)

    def add_lambda(self, arn: str, purpose: str) -> LambdaStandIn:
        if not LAMBDA_ARN.match(arn):
            raise ValueError(f"{arn!r} is not a Lambda function ARN")
        function = stand_in(purpose, arn)
        with self.lock:
            self.extra_lambdas[arn] = function
        return function

    def new_job(self, name: str, region: str, request: dict[str, Any], seed: int) -> LabelingJob:
        """The job's workers draw from a stream keyed by the emulator's seed and the job's
        place in the order of creation, not by its name: gtbot's names carry the submit time,
        so a name-keyed stream gave every run a different workforce and the same seed did
        not replay the same job."""
        now = now_ms()
        ordinal = sum(1 for other in self.jobs.values() if other.region == region)
        return LabelingJob(
            name=name,
            arn=f"arn:aws:sagemaker:{region}:{ACCOUNT_ID}:labeling-job/{name.lower()}",
            region=region,
            request=request,
            created=now,
            modified=now,
            job_reference_code=f"{ACCOUNT_ID}{uuid.uuid4().hex[:12]}",
            rng=random.Random(f"{seed}:{region}:{ordinal}"),
            started_monotonic=time.monotonic(),
        )

    def find(self, region: str, name: str) -> LabelingJob | None:
        return self.jobs.get((region, name.lower()))

    def active(self) -> list[LabelingJob]:
        with self.lock:
            return [job for job in self.jobs.values() if job.status in ACTIVE_STATUSES]

    def workteams(self, region: str) -> list[Workteam]:
        """The two seeded teams exist in every region; added teams only in their own."""
        seeded = [
            Workteam(
                arn=f"arn:aws:sagemaker:{region}:{ACCOUNT_ID}:workteam/private-crowd/sandbox-labelers",
                name="sandbox-labelers",
                region=region,
                kind="private-crowd",
                created=self.started,
                description="Simulated private workforce of the gtbot Ground Truth emulator",
            ),
            Workteam(
                arn=f"arn:aws:sagemaker:{region}:{PUBLIC_CROWD_ACCOUNT_ID}:workteam/public-crowd/default",
                name="default",
                region=region,
                kind="public-crowd",
                created=self.started,
                description="Simulated Amazon Mechanical Turk public crowd",
            ),
        ]
        with self.lock:
            added = [team for team in self.extra_workteams.values() if team.region == region]
        return seeded + added

    def add_workteam(self, arn: str, description: str) -> Workteam:
        region, kind, name = parse_workteam_arn(arn)
        team = Workteam(
            arn=arn,
            name=name,
            region=region,
            kind=kind,
            created=now_ms(),
            description=description,
        )
        with self.lock:
            self.extra_workteams[arn] = team
        return team
