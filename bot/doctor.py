"""`doctor`: the checks a lab manager would otherwise make by clicking through the AWS console."""

from __future__ import annotations

from bot.context import Context
from bot.errors import GtBotError

Check = tuple[str, bool, str]


def run_doctor(ctx: Context, project_name: str | None) -> list[Check]:
    from aws import checks

    results: list[Check] = []
    region = ctx.clients.default_region() or "us-east-1"
    project = None
    if project_name:
        try:
            project = ctx.project(project_name)
            region = project.region
            results.append(("project config", True, str(project.config_file)))
        except GtBotError as exc:
            results.append(("project config", False, exc.user_message))
    results.append(checks.identity(ctx.clients.client("sts", region)))
    if project is None:
        return results
    results.append(("region", True, project.region))
    job = project.job
    if job.role_arn:
        results.append(checks.role(ctx.clients.client("iam", region), job.role_arn))
    else:
        results.append(("role", False, "no role_arn: set job.role_arn or GTBOT_ROLE_ARN"))
    if job.workteam_arn and job.workteam_kind == "private":
        results.append(checks.workteam(ctx.sagemaker(region), job.workteam_arn))
    elif job.workteam_arn:
        results.append(("workteam", True, f"{job.workteam_kind} workforce"))
    else:
        results.append(
            ("workteam", False, "no workteam_arn: set job.workteam_arn or GTBOT_WORKTEAM_ARN")
        )
    s3 = ctx.s3(project)
    for bucket in (project.data_bucket, project.output_bucket, project.template_bucket):
        results.append(checks.bucket(s3, bucket, project.region))
    return results
