"""`doctor`: what a real job needs, checked on the exact ARNs, with the missing permission named.

IAM policy simulation runs for real over loopback: moto stores users, roles and policies (AWS's
managed Ground Truth policy included) and gtbot's IAM front (aws/emulator/iam.py) evaluates
SimulatePrincipalPolicy on them, since moto does not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from conftest import SANDBOX_TEAM, write_project

from aws import checks
from aws.emulator.groundtruth import GroundTruthEmulator
from aws.emulator.iam import evaluate, start_iam_emulator
from bot.cli import main

MANAGED = "arn:aws:iam::aws:policy/AmazonSageMakerGroundTruthExecution"


@pytest.fixture
def iam_endpoint(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """IAM with policy simulation; STS straight from moto. Loads AWS's managed policies (the
    variable is read when moto's IAM starts, i.e. after the reset of `s3_endpoint`)."""
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    emulator = start_iam_emulator(s3_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_IAM", emulator.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", s3_endpoint)
    yield emulator.url
    emulator.stop()


def _bot_user(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    """gtbot runs as an IAM user of its own: its keys make STS answer with that user."""
    iam = boto3.client("iam", region_name="us-east-2")
    user = iam.create_user(UserName="gtbot")["User"]["Arn"]
    key = iam.create_access_key(UserName="gtbot")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return iam, user


def _doctor(project: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(["run", f"doctor {project}"])
    return status, capsys.readouterr().out


@pytest.mark.slow
def test_doctor_names_what_the_role_and_the_bot_lack_and_exits_non_zero(
    make_emulator: Callable[..., GroundTruthEmulator],
    iam_endpoint: str,
    projects_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_emulator()
    iam, user = _bot_user(monkeypatch)
    role = iam.create_role(
        RoleName="GtbotRole",
        Path="/service-role/",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    iam.attach_role_policy(RoleName="GtbotRole", PolicyArn=MANAGED)
    common = {"frames": 1, "job_workteam_arn": SANDBOX_TEAM, "job_role_arn": role}
    write_project(projects_dir, "demo", **common)  # buckets demo-frames, demo-ui

    status, out = _doctor("demo", capsys)
    assert status == 1
    assert "ok    credentials: account 123456789012 as arn:aws:iam::123456789012:user/gtbot" in out
    assert "ok    role GtbotRole: exists" in out
    template_arn = "arn:aws:s3:::demo-ui/demo/annotation-interface.template"
    assert (
        f"FAIL  execution role reads the annotation interface: missing s3:GetObject on "
        f"{template_arn}: no policy allows it (a statement would, given "
        "s3:ExistingObjectTag/SageMaker)"
    ) in out
    assert (
        "FAIL  execution role reads frames: missing s3:GetObject on arn:aws:s3:::demo-frames/demo/images/frame_000000.jpg"
        in out
    )
    assert (
        "FAIL  execution role writes the output: missing s3:PutObject on arn:aws:s3:::demo-frames-output/demo/demo-"
        in out
    )
    assert (
        "warn  bucket names: demo-frames, demo-frames-output, demo-ui: the role relies on AWS's "
        "managed AmazonSageMakerGroundTruthExecution policy"
    ) in out
    assert (
        f"FAIL  gtbot may pass the role to SageMaker: missing iam:PassRole on {role} for {user}"
        in out
    )
    assert "FAIL  bucket demo-frames: does not exist: run `setup <project>`" in out
    assert "ok    workteam sandbox-labelers" in out

    # Buckets the managed policy covers, the bot allowed to pass the role (to SageMaker only):
    # every check passes and `gtbot run` exits 0.
    iam.put_user_policy(
        UserName="gtbot",
        PolicyName="pass-gt-role",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "iam:PassRole",
                        "Resource": role,
                        "Condition": {
                            "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
                        },
                    }
                ],
            }
        ),
    )
    write_project(
        projects_dir,
        "mice",
        data_bucket="mice-sagemaker",
        template_bucket="mice-sagemaker-ui",
        **common,
    )
    assert main(["run", "setup mice"]) == 0
    capsys.readouterr()
    status, out = _doctor("mice", capsys)
    assert status == 0, out
    assert out.rstrip().endswith("All checks passed."), out
    assert "ok    execution role writes the output: allowed" in out
    assert f"ok    gtbot may pass the role to SageMaker: {user} has iam:PassRole on it" in out


def test_role_permissions_are_simulated_on_the_exact_arns() -> None:
    iam = boto3.client("iam", region_name="us-east-1")
    role = "arn:aws:iam::123456789012:role/GtRole"
    needs = [
        checks.Need("s3:GetObject", "arn:aws:s3:::d/m/input.manifest", "reads the input manifest"),
        checks.Need("s3:GetObject", "arn:aws:s3:::d/m/images/f.jpg", "reads frames"),
        checks.Need("lambda:InvokeFunction", "arn:aws:lambda:us-east-1:1:function:f", "invokes"),
    ]
    with Stubber(iam) as stub:
        stub.add_response(
            "simulate_principal_policy",
            {
                "EvaluationResults": [
                    {
                        "EvalActionName": "s3:GetObject",
                        "EvalResourceName": "arn:aws:s3:::d/m/input.manifest",
                        "EvalDecision": "allowed",
                    },
                    {
                        "EvalActionName": "s3:GetObject",
                        "EvalResourceName": "arn:aws:s3:::d/m/images/f.jpg",
                        "EvalDecision": "explicitDeny",
                    },
                ],
                "IsTruncated": False,
            },
            {
                "PolicySourceArn": role,
                "ActionNames": ["s3:GetObject"],
                "ResourceArns": [
                    "arn:aws:s3:::d/m/input.manifest",
                    "arn:aws:s3:::d/m/images/f.jpg",
                ],
            },
        )
        stub.add_client_error(
            "simulate_principal_policy",
            "AccessDenied",
            "not authorized to perform: iam:SimulatePrincipalPolicy",
            403,
            expected_params={
                "PolicySourceArn": role,
                "ActionNames": ["lambda:InvokeFunction"],
                "ResourceArns": ["arn:aws:lambda:us-east-1:1:function:f"],
            },
        )
        results = checks.role_permissions(iam, role, needs)
        stub.assert_no_pending_responses()
    assert len(results) == 1 and results[0].status == checks.WARN
    assert "iam:SimulatePrincipalPolicy" in results[0].detail


def test_pass_role_is_simulated_for_the_role_behind_an_assumed_role_session() -> None:
    iam = boto3.client("iam", region_name="us-east-1")
    target = "arn:aws:iam::123456789012:role/service-role/GtRole"
    with Stubber(iam) as stub:
        stub.add_response(
            "get_role",
            {
                "Role": {
                    "Path": "/ops/",
                    "RoleName": "LabOps",
                    "RoleId": "AROAEXAMPLEEXAMPLE01",
                    "Arn": "arn:aws:iam::123456789012:role/ops/LabOps",
                    "CreateDate": "2026-01-01T00:00:00Z",
                }
            },
            {"RoleName": "LabOps"},
        )
        stub.add_response(
            "simulate_principal_policy",
            {
                "EvaluationResults": [
                    {
                        "EvalActionName": "iam:PassRole",
                        "EvalResourceName": target,
                        "EvalDecision": "implicitDeny",
                    }
                ]
            },
            {
                "PolicySourceArn": "arn:aws:iam::123456789012:role/ops/LabOps",
                "ActionNames": ["iam:PassRole"],
                "ResourceArns": [target],
                "ContextEntries": [
                    {
                        "ContextKeyName": "iam:PassedToService",
                        "ContextKeyValues": ["sagemaker.amazonaws.com"],
                        "ContextKeyType": "string",
                    }
                ],
            },
        )
        result = checks.can_pass_role(
            iam, "arn:aws:sts::123456789012:assumed-role/LabOps/alice", target
        )
        stub.assert_no_pending_responses()
    assert result.status == checks.FAIL
    assert f"missing iam:PassRole on {target} for arn:aws:iam::123456789012:role/ops/LabOps" in (
        result.detail
    )


def test_policy_evaluation_follows_iam_rules() -> None:
    allow = {
        "Statement": [
            {"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::lab-*/*"},
            {
                "Effect": "Allow",
                "NotAction": "iam:*",
                "Resource": "*",
                "Condition": {"StringEqualsIfExists": {"aws:RequestedRegion": "us-east-2"}},
            },
        ]
    }
    deny = {"Statement": {"Effect": "Deny", "Action": "S3:GETOBJECT", "Resource": "*secret*"}}
    docs = [("allow", allow), ("deny", deny)]
    assert evaluate(docs, "s3:GetObject", "arn:aws:s3:::lab-a/k", {}).decision == "allowed"
    assert evaluate(docs, "s3:GetObject", "arn:aws:s3:::lab-a/secret", {}).decision == (
        "explicitDeny"
    )
    assert evaluate(docs, "iam:PassRole", "arn:aws:iam::1:role/r", {}).decision == "implicitDeny"
    west = {"aws:requestedregion": ["us-west-2"]}
    assert evaluate(docs, "sqs:SendMessage", "arn:x", west).decision == "implicitDeny"
    tagged = [("p", {"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*", "Condition": {"StringEqualsIgnoreCase": {"s3:ExistingObjectTag/SageMaker": "true"}}}]})]  # fmt: skip
    found = evaluate(tagged, "s3:GetObject", "arn:aws:s3:::b/k", {})
    assert found.decision == "implicitDeny" and found.missing == {"s3:ExistingObjectTag/SageMaker"}
    context = {"s3:existingobjecttag/sagemaker": ["TRUE"]}
    assert evaluate(tagged, "s3:GetObject", "arn:aws:s3:::b/k", context).decision == "allowed"
