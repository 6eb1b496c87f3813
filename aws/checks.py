"""Read-only checks for `doctor`: each returns CheckResults and never raises for AWS errors."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from aws.error_messages import error_code
from aws.s3 import bucket_region

OK, WARN, FAIL = "ok", "warn", "fail"

# AWS's managed execution policy for Ground Truth lets a role read and write only S3 buckets
# whose names contain GroundTruth/Groundtruth/groundtruth/SageMaker/Sagemaker/sagemaker (or
# objects tagged SageMaker): "Use IAM Managed Policies with Ground Truth",
# https://docs.aws.amazon.com/sagemaker/latest/dg/sms-security-permissions-get-started.html,
# and the policy document itself,
# https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AmazonSageMakerGroundTruthExecution.html
# (S3 bucket names are lower case, so "groundtruth" and "sagemaker" are what can match).
GROUND_TRUTH_MANAGED_POLICY = "arn:aws:iam::aws:policy/AmazonSageMakerGroundTruthExecution"
MANAGED_POLICY_BUCKET_WORDS = ("sagemaker", "groundtruth")
# CreateLabelingJob passes the role to SageMaker: the caller needs iam:PassRole on it, for this
# service (SageMaker developer guide, "Grant IAM Permission to Use the Amazon SageMaker Ground
# Truth Console": "you must add a PassRole permission to allow SageMaker AI to use the
# execution role").
PASSED_TO_SERVICE = "sagemaker.amazonaws.com"


@dataclass(frozen=True)
class CheckResult:
    what: str
    status: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.status != FAIL


@dataclass(frozen=True)
class Need:
    """One permission a job needs, on one exact resource, and what for (for the message).
    `scope` is what a policy grants it on so that every job of the project is covered (a
    prefix with `*`); by default the exact resource."""

    action: str
    resource: str
    purpose: str
    scope: str = ""

    @property
    def policy_resource(self) -> str:
        return self.scope or self.resource


def _problem(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return f"{error_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}"
    return str(exc)


def _fail(what: str, exc: Exception) -> CheckResult:
    return CheckResult(what, FAIL, _problem(exc))


def s3_object_arn(bucket: str, key: str) -> str:
    return f"arn:aws:s3:::{bucket}/{key}"


def identity(sts: Any) -> tuple[CheckResult, str | None]:
    """The check, and the caller's ARN for the PassRole check."""
    try:
        who = sts.get_caller_identity()
    except (ClientError, BotoCoreError) as exc:
        return _fail("credentials", exc), None
    return CheckResult("credentials", OK, f"account {who['Account']} as {who['Arn']}"), who["Arn"]


def role(iam: Any, arn: str) -> CheckResult:
    name = arn.rsplit("/", 1)[-1]
    try:
        iam.get_role(RoleName=name)
    except (ClientError, BotoCoreError) as exc:
        return _fail(f"role {name}", exc)
    return CheckResult(f"role {name}", OK, "exists")


def _simulate(
    iam: Any, principal: str, action: str, resources: list[str], context: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """EvaluationResults by resource for one action, through every page."""
    params: dict[str, Any] = {
        "PolicySourceArn": principal,
        "ActionNames": [action],
        "ResourceArns": resources,
    }
    if context:
        params["ContextEntries"] = context
    results: dict[str, dict[str, Any]] = {}
    for page in iam.get_paginator("simulate_principal_policy").paginate(**params):
        for result in page.get("EvaluationResults", []):
            results[result.get("EvalResourceName", "*")] = result
    return results


def _denial(result: dict[str, Any] | None) -> str:
    if result is None:
        return "no decision"
    decision = str(result.get("EvalDecision", "implicitDeny"))
    missing = [str(k) for k in result.get("MissingContextValues") or []]
    if decision == "explicitDeny":
        return "explicitly denied by a policy statement"
    text = "no policy allows it"
    if missing:
        text += f" (a statement would, given {', '.join(missing)})"
    return text


def role_permissions(iam: Any, role_arn: str, needs: Iterable[Need]) -> list[CheckResult]:
    """What the execution role may do on the exact ARNs a job uses (IAM SimulatePrincipalPolicy:
    "Simulate how a set of IAM policies attached to an IAM entity works with a list of API
    operations and Amazon Web Services resources", botocore IAM model). One line per purpose,
    naming each missing permission on its resource."""
    by_action: dict[str, list[Need]] = {}
    for need in needs:
        by_action.setdefault(need.action, []).append(need)
    lines: dict[str, list[str]] = {}
    for action, wanted in by_action.items():
        try:
            results = _simulate(iam, role_arn, action, [n.resource for n in wanted], [])
        except (ClientError, BotoCoreError) as exc:
            what = "execution role permissions"
            if isinstance(exc, ClientError) and error_code(exc) in ("AccessDenied", "403"):
                return [
                    CheckResult(
                        what,
                        WARN,
                        f"not checked: these credentials may not simulate IAM policies "
                        f"({_problem(exc)}); grant them iam:SimulatePrincipalPolicy on the role, "
                        "or check by hand that it may read the template, manifest and frames "
                        "and write the output prefix.",
                    )
                ]
            return [_fail(what, exc)]
        for need in wanted:
            result = results.get(need.resource)
            if result is not None and result.get("EvalDecision") == "allowed":
                lines.setdefault(need.purpose, [])
            else:
                lines.setdefault(need.purpose, []).append(
                    f"{action} on {need.resource}: {_denial(result)}"
                )
    checks = []
    for purpose, missing in lines.items():
        if missing:
            detail = "missing " + "; ".join(missing) + ". Add it to the role's policy."
            checks.append(CheckResult(f"execution role {purpose}", FAIL, detail))
        else:
            checks.append(CheckResult(f"execution role {purpose}", OK, "allowed"))
    return checks


def _principal_of(iam: Any, caller_arn: str) -> str | None:
    """The IAM user or role whose policies apply to the caller (an assumed-role session ARN
    names the role but not its path, so the role is looked up)."""
    if re.match(r"^arn:aws[a-z\-]*:iam::\d{12}:user/", caller_arn):
        return caller_arn
    session = re.match(r"^arn:aws[a-z\-]*:sts::\d{12}:assumed-role/([^/]+)/", caller_arn)
    if session:
        return str(iam.get_role(RoleName=session.group(1))["Role"]["Arn"])
    return None


def can_pass_role(iam: Any, caller_arn: str, role_arn: str) -> CheckResult:
    what = "gtbot may pass the role to SageMaker"
    if re.match(r"^arn:aws[a-z\-]*:iam::\d{12}:root$", caller_arn):
        return CheckResult(what, OK, "root user (may do anything; an IAM role is safer)")
    try:
        principal = _principal_of(iam, caller_arn)
        if principal is None:
            return CheckResult(
                what, WARN, f"not checked: {caller_arn} is not an IAM user or assumed role"
            )
        context = [
            {
                "ContextKeyName": "iam:PassedToService",
                "ContextKeyValues": [PASSED_TO_SERVICE],
                "ContextKeyType": "string",
            }
        ]
        result = _simulate(iam, principal, "iam:PassRole", [role_arn], context).get(role_arn)
    except (ClientError, BotoCoreError) as exc:
        if isinstance(exc, ClientError) and error_code(exc) in ("AccessDenied", "403"):
            return CheckResult(what, WARN, f"not checked: {_problem(exc)}")
        return _fail(what, exc)
    if result is not None and result.get("EvalDecision") == "allowed":
        return CheckResult(what, OK, f"{principal} has iam:PassRole on it")
    return CheckResult(
        what,
        FAIL,
        f"missing iam:PassRole on {role_arn} for {principal}: {_denial(result)}. Add it "
        f"(with iam:PassedToService = {PASSED_TO_SERVICE} if you scope it).",
    )


def managed_policy_buckets(iam: Any, role_arn: str, buckets: Iterable[str]) -> CheckResult | None:
    """A warning when the role relies on the managed Ground Truth policy and a bucket's name
    puts it outside what that policy covers; None when there is nothing to say."""
    name = role_arn.rsplit("/", 1)[-1]
    try:
        attached = [
            policy["PolicyArn"]
            for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=name)
            for policy in page.get("AttachedPolicies", [])
        ]
    except (ClientError, BotoCoreError):
        return None  # the role check already says what is wrong with the role
    if GROUND_TRUTH_MANAGED_POLICY not in attached:
        return None
    outside = [b for b in buckets if not any(w in b.lower() for w in MANAGED_POLICY_BUCKET_WORDS)]
    if not outside:
        return None
    return CheckResult(
        "bucket names",
        WARN,
        f"{', '.join(outside)}: the role relies on AWS's managed AmazonSageMakerGroundTruthExecution "
        'policy, which covers only buckets whose names contain "sagemaker" or "groundtruth". '
        "Rename the bucket(s) in project-config.yml (e.g. add -sagemaker) or give the role its "
        "own S3 permissions on them.",
    )


def workteam(sagemaker: Any, arn: str) -> CheckResult:
    name = arn.rsplit("/", 1)[-1]
    try:
        team = sagemaker.describe_workteam(WorkteamName=name)["Workteam"]
    except (ClientError, BotoCoreError) as exc:
        return _fail(f"workteam {name}", exc)
    return CheckResult(f"workteam {name}", OK, team.get("Description") or "exists")


def bucket(s3: Any, name: str, region: str) -> CheckResult:
    try:
        s3.head_bucket(Bucket=name)
        actual = bucket_region(s3, name)
    except (ClientError, BotoCoreError) as exc:
        if isinstance(exc, ClientError) and error_code(exc) in ("404", "NoSuchBucket"):
            return CheckResult(f"bucket {name}", FAIL, "does not exist: run `setup <project>`")
        return _fail(f"bucket {name}", exc)
    if actual != region:
        return CheckResult(f"bucket {name}", FAIL, f"in {actual}, project region is {region}")
    return CheckResult(f"bucket {name}", OK, f"in {region}")
