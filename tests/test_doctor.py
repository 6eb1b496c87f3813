"""`doctor` reports each prerequisite as ok or not, with what to do, without raising."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from conftest import SANDBOX_TEAM, write_project

from aws.emulator.groundtruth import GroundTruthEmulator
from bot.cli import run_text
from bot.context import Context
from bot.settings import Settings


def test_doctor_checks_credentials_role_workteam_and_buckets(
    make_emulator: Callable[..., GroundTruthEmulator],
    s3_endpoint: str,
    projects_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_emulator()
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", s3_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_IAM", s3_endpoint)
    role = boto3.client("iam", region_name="us-east-2").create_role(
        RoleName="GtbotRole",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    write_project(projects_dir, "demo", job_workteam_arn=SANDBOX_TEAM, job_role_arn=role)
    ctx = Context(settings=Settings.from_env())

    before = run_text("doctor demo", ctx).text
    assert "ok    credentials: account 123456789012" in before
    assert "ok    role GtbotRole: exists" in before
    assert "ok    workteam sandbox-labelers" in before
    assert "FAIL  bucket demo-frames: does not exist: run `setup <project>`" in before
    assert before.endswith("3 check(s) failed; see above.")

    run_text("setup demo", ctx)
    after = run_text("doctor demo", ctx).text
    assert after.endswith("All checks passed."), after
