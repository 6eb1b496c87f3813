"""The IAM policies a lab pastes: one for gtbot's own identity, one for a job's execution role.

gtbot's policy comes from one table, `OPERATIONS`: every AWS operation gtbot makes, with the
IAM actions it needs and the kind of resource they apply to. A test records every operation the
end-to-end flow makes (a botocore event hook) and checks both ways that the table holds exactly
those, so the policy cannot drift from the code. The execution role's policy is made from
`Need`s, the same records `doctor` simulates on exact ARNs (bot/doctor.job_needs), each with
the scope a policy grants it on.

Sources: the Service Authorization Reference pages for Amazon S3
(https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html),
Amazon SageMaker (.../list_amazonsagemaker.html), IAM (.../list_awsidentityandaccessmanagementiam.html)
and STS (.../list_awssecuritytokenservice.html); for S3 also "Required permissions for Amazon S3
API operations" (https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-with-s3-policy-actions.html)
and each operation's "Permissions" in the botocore S3 model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aws.checks import PASSED_TO_SERVICE, Need

POLICY_VERSION = "2012-10-17"


@dataclass(frozen=True)
class Grant:
    """IAM actions one operation needs, on a kind of resource (see `PolicyScope.resources`)."""

    actions: tuple[str, ...]
    on: str


# Every operation gtbot's code makes, by (botocore service name, operation name).
OPERATIONS: dict[tuple[str, str], tuple[Grant, ...]] = {
    # HeadBucket: "you must have permission to perform the s3:ListBucket action" (botocore
    # model); ListObjectsV2 likewise needs s3:ListBucket (S3 "Required permissions" page).
    ("s3", "HeadBucket"): (Grant(("s3:ListBucket",), "bucket"),),
    ("s3", "ListObjectsV2"): (Grant(("s3:ListBucket",), "bucket"),),
    # CreateBucket without an ACL or Object Lock header needs only s3:CreateBucket.
    ("s3", "CreateBucket"): (Grant(("s3:CreateBucket",), "bucket"),),
    ("s3", "GetBucketLocation"): (Grant(("s3:GetBucketLocation",), "bucket"),),
    ("s3", "GetBucketCors"): (Grant(("s3:GetBucketCORS",), "bucket"),),
    ("s3", "PutBucketCors"): (Grant(("s3:PutBucketCORS",), "bucket"),),
    ("s3", "GetPublicAccessBlock"): (Grant(("s3:GetBucketPublicAccessBlock",), "bucket"),),
    ("s3", "PutPublicAccessBlock"): (Grant(("s3:PutBucketPublicAccessBlock",), "bucket"),),
    ("s3", "GetBucketTagging"): (Grant(("s3:GetBucketTagging",), "bucket"),),
    ("s3", "PutBucketTagging"): (Grant(("s3:PutBucketTagging",), "bucket"),),
    # PutObject with no ACL or tagging headers needs s3:PutObject only; GetObject of the
    # current version s3:GetObject only (presigned links included: they act as the signer).
    ("s3", "PutObject"): (Grant(("s3:PutObject",), "object"),),
    ("s3", "GetObject"): (Grant(("s3:GetObject",), "object"),),
    # CreateLabelingJob's dependent actions: iam:PassRole, and sagemaker:AddTags since gtbot
    # sends Tags (Service Authorization Reference, Amazon SageMaker, CreateLabelingJob).
    ("sagemaker", "CreateLabelingJob"): (
        Grant(("sagemaker:CreateLabelingJob", "sagemaker:AddTags"), "job"),
        Grant(("iam:PassRole",), "pass-role"),
    ),
    ("sagemaker", "DescribeLabelingJob"): (Grant(("sagemaker:DescribeLabelingJob",), "job"),),
    ("sagemaker", "StopLabelingJob"): (Grant(("sagemaker:StopLabelingJob",), "job"),),
    # ListLabelingJobs names no resource type: only "*" grants it.
    ("sagemaker", "ListLabelingJobs"): (Grant(("sagemaker:ListLabelingJobs",), "any"),),
    ("sagemaker", "DescribeWorkteam"): (Grant(("sagemaker:DescribeWorkteam",), "workteam"),),
    # doctor: the execution role, and policy simulation on it and on gtbot itself.
    ("iam", "GetRole"): (Grant(("iam:GetRole",), "role"),),
    ("iam", "ListAttachedRolePolicies"): (Grant(("iam:ListAttachedRolePolicies",), "role"),),
    ("iam", "SimulatePrincipalPolicy"): (Grant(("iam:SimulatePrincipalPolicy",), "principals"),),
    # "No permissions are required to perform this operation" (botocore STS model).
    ("sts", "GetCallerIdentity"): (),
}

# Statement order and names in the printed policy.
_STATEMENTS = (
    ("bucket", "ProjectBuckets"),
    ("object", "ProjectObjects"),
    ("job", "ProjectLabelingJobs"),
    ("any", "ListLabelingJobs"),
    ("workteam", "Workteam"),
    ("role", "ReadExecutionRole"),
    ("principals", "SimulatePolicies"),
    ("pass-role", "PassExecutionRoleToSageMaker"),
)


@dataclass(frozen=True)
class PolicyScope:
    """The resources of one project that gtbot's identity acts on."""

    partition: str
    region: str
    account: str
    buckets: tuple[str, ...]
    object_prefix: str  # every key gtbot writes or reads starts with it (`<project>/`)
    job_prefix: str  # every job gtbot names starts with it (`<project>-`)
    role_arn: str
    workteam_arn: str | None = None  # a private team's; None for the public crowd or vendors
    principal: str | None = None  # gtbot's own user or role, for doctor's PassRole check

    def resources(self, kind: str) -> list[str]:
        if kind == "bucket":
            return [f"arn:{self.partition}:s3:::{b}" for b in self.buckets]
        if kind == "object":
            return [f"arn:{self.partition}:s3:::{b}/{self.object_prefix}*" for b in self.buckets]
        if kind == "job":
            base = f"arn:{self.partition}:sagemaker:{self.region}:{self.account}:labeling-job/"
            # Job names are not case sensitive (botocore SageMaker model, LabelingJobName) and
            # SageMaker has been seen to lower-case names in ARNs: grant both spellings.
            return sorted({f"{base}{self.job_prefix}*", f"{base}{self.job_prefix.lower()}*"})
        if kind == "any":
            return ["*"]
        if kind == "workteam":
            return [self.workteam_arn] if self.workteam_arn else []
        if kind in ("role", "pass-role"):
            return [self.role_arn]
        if kind == "principals":
            return [self.role_arn, *([self.principal] if self.principal else [])]
        raise ValueError(f"unknown resource kind {kind!r}")


def actions_by_kind() -> dict[str, list[str]]:
    kinds: dict[str, set[str]] = {}
    for grants in OPERATIONS.values():
        for grant in grants:
            kinds.setdefault(grant.on, set()).update(grant.actions)
    return {kind: sorted(actions) for kind, actions in kinds.items()}


def bot_policy(scope: PolicyScope) -> dict[str, Any]:
    """gtbot's identity policy: the actions of `OPERATIONS`, on this project's resources only;
    PassRole on the execution role only, and only to SageMaker."""
    kinds = actions_by_kind()
    statements: list[dict[str, Any]] = []
    for kind, sid in _STATEMENTS:
        resources = scope.resources(kind)
        if kind not in kinds or not resources:
            continue
        statement: dict[str, Any] = {
            "Sid": sid,
            "Effect": "Allow",
            "Action": kinds[kind],
            "Resource": resources[0] if len(resources) == 1 else resources,
        }
        if kind == "pass-role":
            # "iam:PassedToService ... Filters by the service to which this role is passed"
            # (Service Authorization Reference, IAM); the SageMaker guide's own example scopes
            # PassRole to sagemaker.amazonaws.com the same way.
            statement["Condition"] = {"StringEquals": {"iam:PassedToService": PASSED_TO_SERVICE}}
        statements.append(statement)
    return {"Version": POLICY_VERSION, "Statement": statements}


def _sid(purpose: str) -> str:
    return "".join(word.capitalize() for word in re.findall(r"[A-Za-z0-9]+", purpose))


def execution_role_policy(needs: Iterable[Need]) -> dict[str, Any]:
    """The execution role's policy: one statement per purpose (and set of actions), granting
    each need's actions on its scope."""
    by_purpose: dict[str, dict[str, set[str]]] = {}
    for need in needs:
        by_purpose.setdefault(need.purpose, {}).setdefault(need.policy_resource, set()).add(
            need.action
        )
    statements: list[dict[str, Any]] = []
    for purpose, scopes in by_purpose.items():
        groups: dict[tuple[str, ...], list[str]] = {}
        for resource, wanted in scopes.items():
            groups.setdefault(tuple(sorted(wanted)), []).append(resource)
        for n, (actions, resources) in enumerate(groups.items()):
            statements.append(
                {
                    "Sid": _sid(purpose) + (str(n + 1) if n else ""),
                    "Effect": "Allow",
                    "Action": list(actions),
                    "Resource": resources[0] if len(resources) == 1 else sorted(resources),
                }
            )
    return {"Version": POLICY_VERSION, "Statement": statements}


_ARN = re.compile(r"^arn:(?P<partition>aws[a-z-]*):iam::(?P<account>\d{12}):role/")


def role_account(role_arn: str) -> tuple[str, str]:
    """The partition and account of an execution role's ARN (the project model checked it)."""
    match = _ARN.match(role_arn)
    if not match:
        raise ValueError(f"{role_arn!r} is not an IAM role ARN")
    return match.group("partition"), match.group("account")
