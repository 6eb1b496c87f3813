"""`doctor`: the checks a lab manager would otherwise make by clicking through the AWS console,
made on the exact resources the next job will use, so a job does not fail on its first task."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aws import checks, iam_policy
from aws.checks import FAIL, CheckResult, Need, s3_object_arn
from bot.context import Context
from bot.errors import ConfigError, GtBotError
from bot.project import ProjectConfig, list_images
from bot.recipe import plan_manifest_key

# What the execution role needs besides S3 and the Lambdas: "CloudWatch to log worker metrics
# and labeling job statuses"; the SageMaker developer guide's policy for it grants these on "*"
# ("Create a SageMaker Execution Role for a Ground Truth Labeling Job",
# https://docs.aws.amazon.com/sagemaker/latest/dg/sms-security-permission-execution-role.html).
CLOUDWATCH_ACTIONS = (
    "cloudwatch:PutMetricData",
    "logs:CreateLogGroup",
    "logs:CreateLogStream",
    "logs:DescribeLogStreams",
    "logs:PutLogEvents",
)


def job_needs(project: ProjectConfig, now: datetime | None = None) -> list[Need]:
    """What Ground Truth does with the execution role for this project's next job, on the
    exact objects it will use (for `doctor`'s simulation) and on the scope that covers every
    job of the project (for `iam-policy`): read the template, the instruction image, the
    plan's own manifest and the frames, write under the output prefix, see the buckets, log to
    CloudWatch, and invoke the configured Lambdas. The S3 and CloudWatch actions are those of
    the developer guide's execution-role policy for Ground Truth (see CLOUDWATCH_ACTIONS)."""
    from aws.groundtruth import make_job_name

    data, out, ui = project.data_bucket, project.output_bucket, project.template_bucket
    job = make_job_name(project.name, now)
    frames = list_images(project)
    frame = (
        project.images_prefix + frames[0].relative_to(project.images_dir).as_posix()
        if frames
        else f"{project.images_prefix}*"
    )
    output = f"{project.output_prefix}{job}/manifests/output/output.manifest"
    needs = [
        Need(
            "s3:GetObject",
            s3_object_arn(ui, project.template_key),
            "reads the annotation interface",
        ),
        Need(
            "s3:GetObject",
            s3_object_arn(ui, project.instruction_image_key),
            "reads the annotation interface",
        ),
        Need(
            "s3:GetObject",
            s3_object_arn(data, plan_manifest_key(project, job)),
            "reads the input manifest",
            s3_object_arn(data, plan_manifest_key(project, "*")),
        ),
        Need(
            "s3:GetObject",
            s3_object_arn(data, frame),
            "reads frames",
            s3_object_arn(data, f"{project.images_prefix}*"),
        ),
    ]
    # The guide's policy grants GetObject, PutObject and AbortMultipartUpload on the output
    # bucket's objects, not only the writes.
    for action, purpose in (
        ("s3:PutObject", "writes the output"),
        ("s3:AbortMultipartUpload", "writes the output"),
        ("s3:GetObject", "reads back the output"),
    ):
        needs.append(
            Need(
                action,
                s3_object_arn(out, output),
                purpose,
                s3_object_arn(out, f"{project.output_prefix}*"),
            )
        )
    for bucket in dict.fromkeys((data, out, ui)):
        for action in ("s3:ListBucket", "s3:GetBucketLocation"):
            needs.append(Need(action, f"arn:aws:s3:::{bucket}", "finds the buckets"))
    needs += [Need(action, "*", "logs to CloudWatch") for action in CLOUDWATCH_ACTIONS]
    for arn, purpose in (
        (project.job.pre_lambda_arn, "invokes the pre-annotation Lambda"),
        (project.job.consolidation_lambda_arn, "invokes the consolidation Lambda"),
    ):
        if arn:
            needs.append(Need("lambda:InvokeFunction", arn, purpose))
    return needs


@dataclass(frozen=True)
class Policies:
    role_arn: str
    bot: dict[str, Any]
    execution_role: dict[str, Any]


def iam_policies(project: ProjectConfig, principal: str | None = None) -> Policies:
    """The two policies a lab attaches for this project (aws/iam_policy.py says where each
    action comes from). `principal` is gtbot's own user or role, which `doctor` simulates."""
    from aws.groundtruth import make_job_name

    role_arn = project.job.role_arn
    if not role_arn:
        raise ConfigError(
            f"{project.name} has no execution role: set job.role_arn in {project.config_file} "
            "(or GTBOT_ROLE_ARN), then ask for the policies again."
        )
    partition, account = iam_policy.role_account(role_arn)
    stamp = make_job_name(project.name, datetime(2000, 1, 1, tzinfo=UTC))
    scope = iam_policy.PolicyScope(
        partition=partition,
        region=project.region,
        account=account,
        buckets=tuple(
            dict.fromkeys((project.data_bucket, project.output_bucket, project.template_bucket))
        ),
        object_prefix=project.output_prefix,
        job_prefix=stamp.rsplit("-", 1)[0] + "-",
        role_arn=role_arn,
        workteam_arn=project.job.workteam_arn if project.job.workteam_kind == "private" else None,
        principal=principal,
    )
    return Policies(
        role_arn=role_arn,
        bot=iam_policy.bot_policy(scope),
        execution_role=iam_policy.execution_role_policy(job_needs(project)),
    )


def run_doctor(ctx: Context, project_name: str | None) -> list[CheckResult]:
    results: list[CheckResult] = []
    region = ctx.clients.default_region() or "us-east-1"
    project = None
    if project_name:
        try:
            project = ctx.project(project_name)
            region = project.region
            results.append(CheckResult("project config", "ok", str(project.config_file)))
        except GtBotError as exc:
            results.append(CheckResult("project config", FAIL, exc.user_message))
    identity, caller = checks.identity(ctx.clients.client("sts", region))
    results.append(identity)
    if project is None:
        return results
    results.append(CheckResult("region", "ok", project.region))
    job = project.job
    iam = ctx.clients.client("iam", region)
    buckets = (project.data_bucket, project.output_bucket, project.template_bucket)
    if job.role_arn:
        role = checks.role(iam, job.role_arn)
        results.append(role)
        if role.ok:
            results += checks.role_permissions(iam, job.role_arn, job_needs(project))
            warning = checks.managed_policy_buckets(iam, job.role_arn, buckets)
            if warning is not None:
                results.append(warning)
        if caller:
            results.append(checks.can_pass_role(iam, caller, job.role_arn))
    else:
        results.append(CheckResult("role", FAIL, "no role_arn: set job.role_arn or GTBOT_ROLE_ARN"))
    if job.workteam_arn and job.workteam_kind == "private":
        results.append(checks.workteam(ctx.sagemaker(region), job.workteam_arn))
    elif job.workteam_arn:
        results.append(CheckResult("workteam", "ok", f"{job.workteam_kind} workforce"))
    else:
        results.append(
            CheckResult(
                "workteam", FAIL, "no workteam_arn: set job.workteam_arn or GTBOT_WORKTEAM_ARN"
            )
        )
    s3 = ctx.s3(project)
    for bucket in buckets:
        results.append(checks.bucket(s3, bucket, project.region))
    return results


def doctor_text(results: list[CheckResult]) -> str:
    marks = {"ok": "ok  ", "warn": "warn", FAIL: "FAIL"}
    lines = [f"{marks[r.status]}  {r.what}: {r.detail}" for r in results]
    failed = sum(1 for r in results if r.status == FAIL)
    warned = sum(1 for r in results if r.status == "warn")
    tail = f" ({warned} warning(s))" if warned else ""
    lines.append(
        f"All checks passed{tail}." if not failed else f"{failed} check(s) failed{tail}; see above."
    )
    return "\n".join(lines)
