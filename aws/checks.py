"""Read-only checks for `doctor`: each returns (what, ok, detail) and never raises for AWS errors."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from aws.errors import error_code
from aws.s3 import bucket_region

Check = tuple[str, bool, str]


def _fail(what: str, exc: Exception) -> Check:
    if isinstance(exc, ClientError):
        return (
            what,
            False,
            f"{error_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}",
        )
    return (what, False, str(exc))


def identity(sts: Any) -> Check:
    try:
        who = sts.get_caller_identity()
    except (ClientError, BotoCoreError) as exc:
        return _fail("credentials", exc)
    return ("credentials", True, f"account {who['Account']} as {who['Arn']}")


def role(iam: Any, arn: str) -> Check:
    name = arn.rsplit("/", 1)[-1]
    try:
        iam.get_role(RoleName=name)
    except (ClientError, BotoCoreError) as exc:
        return _fail(f"role {name}", exc)
    return (f"role {name}", True, "exists")


def workteam(sagemaker: Any, arn: str) -> Check:
    name = arn.rsplit("/", 1)[-1]
    try:
        team = sagemaker.describe_workteam(WorkteamName=name)["Workteam"]
    except (ClientError, BotoCoreError) as exc:
        return _fail(f"workteam {name}", exc)
    return (f"workteam {name}", True, team.get("Description") or "exists")


def bucket(s3: Any, name: str, region: str) -> Check:
    try:
        s3.head_bucket(Bucket=name)
        actual = bucket_region(s3, name)
    except (ClientError, BotoCoreError) as exc:
        if isinstance(exc, ClientError) and error_code(exc) in ("404", "NoSuchBucket"):
            return (f"bucket {name}", False, "does not exist: run `setup <project>`")
        return _fail(f"bucket {name}", exc)
    if actual != region:
        return (f"bucket {name}", False, f"in {actual}, project region is {region}")
    return (f"bucket {name}", True, f"in {region}")
