"""`doctor`: the checks a lab manager would otherwise make by clicking through the AWS console,
made on the exact resources the next job will use, so a job does not fail on its first task."""

from __future__ import annotations

from datetime import datetime

from aws import checks
from aws.checks import FAIL, CheckResult, Need, s3_object_arn
from bot.context import Context
from bot.errors import GtBotError
from bot.project import ProjectConfig, list_images


def job_needs(project: ProjectConfig, now: datetime | None = None) -> list[Need]:
    """What Ground Truth does with the execution role for this project's next job: read the
    template, the instruction image, the manifest and the frames, write under the output
    prefix, and invoke the configured Lambdas."""
    from aws.groundtruth import make_job_name

    needs = [
        Need(
            "s3:GetObject",
            s3_object_arn(project.template_bucket, project.template_key),
            "reads the annotation interface",
        ),
        Need(
            "s3:GetObject",
            s3_object_arn(project.template_bucket, project.instruction_image_key),
            "reads the annotation interface",
        ),
        Need(
            "s3:GetObject",
            s3_object_arn(project.data_bucket, project.manifest_key),
            "reads the input manifest",
        ),
    ]
    frames = list_images(project)
    if frames:
        key = project.images_prefix + frames[0].relative_to(project.images_dir).as_posix()
        needs.append(Need("s3:GetObject", s3_object_arn(project.data_bucket, key), "reads frames"))
    job = make_job_name(project.name, now)
    output = f"{project.output_prefix}{job}/manifests/output/output.manifest"
    needs.append(
        Need("s3:PutObject", s3_object_arn(project.output_bucket, output), "writes the output")
    )
    for arn, purpose in (
        (project.job.pre_lambda_arn, "invokes the pre-annotation Lambda"),
        (project.job.consolidation_lambda_arn, "invokes the consolidation Lambda"),
    ):
        if arn:
            needs.append(Need("lambda:InvokeFunction", arn, purpose))
    return needs


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
