"""`iam-policy`: the policies are checked against the calls gtbot really makes.

The flow test records every AWS operation of a whole workflow (a botocore event hook on the
session gtbot's clients come from), then checks that aws/iam_policy.OPERATIONS names exactly
those operations, that the printed policy allows each call on the exact resource it named,
and that `doctor` passes once the two printed policies are the only ones attached.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import POST_LAMBDA, PRE_LAMBDA, SANDBOX_TEAM, write_project

from aws import iam_policy
from aws.clients import ClientFactory
from aws.emulator.iam import evaluate
from bot.commands import Router
from bot.context import Context
from bot.doctor import iam_policies, job_needs
from bot.settings import Settings
from bot.state import Store
from bot.synthetic import draw_frames

ACCOUNT = "123456789012"


def _allowed(policy: dict[str, Any], action: str, resource: str, **context: str) -> bool:
    keys = {k.replace("__", ":").lower(): [v] for k, v in context.items()}
    return evaluate([("policy", policy)], action, resource, keys).decision == "allowed"


def test_the_bot_policy_holds_the_table_scoped_to_the_project(projects_dir: Path) -> None:
    write_project(projects_dir, "demo", job_workteam_arn=SANDBOX_TEAM)
    project = Context(settings=Settings.from_env()).project("demo")
    policy = iam_policies(project, principal=f"arn:aws:iam::{ACCOUNT}:user/gtbot").bot
    granted = {a for s in policy["Statement"] for a in s["Action"]}
    assert granted == {
        a for grants in iam_policy.OPERATIONS.values() for g in grants for a in g.actions
    }
    assert "sagemaker:AddTags" in granted  # CreateLabelingJob sends Tags
    for statement in policy["Statement"]:
        resources = statement["Resource"]
        assert resources != "*" or statement["Action"] == ["sagemaker:ListLabelingJobs"]
    (pass_role,) = [s for s in policy["Statement"] if "iam:PassRole" in s["Action"]]
    assert pass_role["Action"] == ["iam:PassRole"] and pass_role["Resource"] == project.job.role_arn
    role = project.job.role_arn
    assert _allowed(policy, "iam:PassRole", role, iam__PassedToService="sagemaker.amazonaws.com")
    assert not _allowed(policy, "iam:PassRole", role, iam__PassedToService="ec2.amazonaws.com")
    assert not _allowed(policy, "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/Admin")
    assert _allowed(policy, "s3:PutObject", "arn:aws:s3:::demo-frames/demo/images/a.jpg")
    assert not _allowed(policy, "s3:PutObject", "arn:aws:s3:::demo-frames/other/a.jpg")
    assert not _allowed(policy, "s3:PutObject", "arn:aws:s3:::someone-elses/demo/a.jpg")
    job = f"arn:aws:sagemaker:us-east-2:{ACCOUNT}:labeling-job/demo-20260101000000"
    assert _allowed(policy, "sagemaker:StopLabelingJob", job)
    assert not _allowed(policy, "sagemaker:StopLabelingJob", job.replace("demo-", "other-"))


def test_the_role_policy_is_what_doctor_simulates_for_every_job(projects_dir: Path) -> None:
    write_project(
        projects_dir,
        "demo",
        frames=1,
        job_pre_lambda_arn=PRE_LAMBDA,
        job_consolidation_lambda_arn=POST_LAMBDA,
    )
    project = Context(settings=Settings.from_env()).project("demo")
    policy = iam_policies(project).execution_role
    for when in (datetime(2026, 1, 1, tzinfo=UTC), datetime(2031, 7, 9, 3, 4, 5, tzinfo=UTC)):
        for need in job_needs(project, when):
            assert _allowed(policy, need.action, need.resource), need
    manifest = "arn:aws:s3:::demo-frames/demo/manifests/demo-20260101000000.manifest"
    assert _allowed(policy, "s3:GetObject", manifest)
    assert not _allowed(policy, "s3:PutObject", manifest)  # the role only reads its inputs
    assert not _allowed(policy, "s3:GetObject", "arn:aws:s3:::demo-frames/other/x.jpg")
    assert not _allowed(policy, "lambda:InvokeFunction", "arn:aws:lambda:us-east-2:1:function:x")


def test_iam_policy_without_a_role_says_what_to_set(
    projects_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    write_project(projects_dir, "demo", job_role_arn=None)
    assert main(["iam-policy", "demo"]) == 1
    assert "has no execution role: set job.role_arn" in capsys.readouterr().err
    assert main(["iam-policy", "demo", "--only", "both"]) == 2
    assert main(["iam-policy", "demo", "--principal", "gtbot"]) == 2
    assert "is not the ARN of an IAM user or role" in capsys.readouterr().err


class Recorder:
    """Every operation made through clients of one session, with the parameters it named."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.service_model.service_name, model.name, dict(params)))

    def operations(self) -> set[tuple[str, str]]:
        return {(service, name) for service, name, _ in self.calls}


@pytest.fixture
def sandbox_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The sandbox's emulators (S3, IAM with policy simulation, STS, Ground Truth) and the IAM
    a lab sets up: an execution role and a user for gtbot, whose keys this process uses."""
    from bot.sandbox import start_emulators

    emulators = start_emulators(rate=100.0, profile="private-team")
    env = emulators.env() | {"GTBOT_PROJECTS_DIR": str(tmp_path / "projects")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    yield env
    emulators.stop()


def _resource(service: str, operation: str, params: dict[str, Any], role: str) -> str:
    """The ARN a call acts on, as IAM authorizes it."""
    if service == "s3":
        key = params.get("Key")
        return f"arn:aws:s3:::{params['Bucket']}" + (f"/{key}" if key else "")
    if service == "sagemaker":
        if "LabelingJobName" in params:
            name = params["LabelingJobName"]
            return f"arn:aws:sagemaker:us-east-2:{ACCOUNT}:labeling-job/{name}"
        if "WorkteamName" in params:
            return SANDBOX_TEAM
        return "*"
    if service == "iam":
        return str(params.get("PolicySourceArn") or role)
    return "*"


@pytest.mark.slow
def test_the_policy_allows_exactly_the_calls_a_whole_workflow_makes(
    sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    session = boto3.session.Session()
    recorder = Recorder()
    session.events.register("provide-client-params.*.*", recorder)
    store = Store(f"sqlite:///{tmp_path / 'gtbot.db'}")
    ctx = Context(settings=Settings.from_env(), clients=ClientFactory(session), store=store)
    router = Router(ctx)
    project_dir = Path(sandbox_env["GTBOT_PROJECTS_DIR"]) / "demo-mice"

    def run(text: str, **kwargs: Any) -> Any:
        reply = router.run(text, **kwargs)
        assert reply.exit_status == 0, reply.text
        return reply

    run("init demo-mice --region us-east-2")
    draw_frames(project_dir / "annotation-data" / "raw-images", 3, seed=4)
    run("setup demo-mice")
    run("template demo-mice")
    run("upload demo-mice")
    run("manifest demo-mice")
    stopped = run("submit demo-mice --yes").job
    run(f"stop {stopped.name}")  # still Initializing: a real StopLabelingJob
    time.sleep(1.1)  # job names carry the second
    job = run("submit demo-mice --yes").job
    deadline = time.monotonic() + 30
    while "Completed" not in run(f"status {job.name}").text:
        assert time.monotonic() < deadline, "the job did not complete"
        time.sleep(0.3)
    run("jobs")
    run(f"results {job.name}")
    output = (
        f"s3://demo-mice-sagemaker-output/demo-mice/{job.name}/manifests/output/output.manifest"
    )
    run(f"consolidate {output} --project demo-mice --out {tmp_path / 'again'}")

    # The lab attaches the two printed policies and nothing else; doctor passes.
    project = ctx.project("demo-mice")
    user = f"arn:aws:iam::{ACCOUNT}:user/gtbot"
    policies = iam_policies(project, principal=user)
    admin = boto3.client("iam", region_name="us-east-2")
    role_name = project.job.role_arn.rsplit("/", 1)[-1]
    admin.put_user_policy(
        UserName="gtbot", PolicyName="pass-role", PolicyDocument=json.dumps(policies.bot)
    )
    admin.put_role_policy(
        RoleName=role_name,
        PolicyName="ground-truth-job",
        PolicyDocument=json.dumps(policies.execution_role),
    )
    doctor = run("doctor demo-mice")
    assert doctor.text.rstrip().endswith("All checks passed."), doctor.text

    # One source of truth: the table names exactly the operations the code made.
    assert recorder.operations() == set(iam_policy.OPERATIONS)
    for service, operation, params in recorder.calls:
        resource = _resource(service, operation, params, project.job.role_arn)
        for grant in iam_policy.OPERATIONS[(service, operation)]:
            for action in grant.actions:
                if action == "iam:PassRole":
                    assert _allowed(
                        policies.bot,
                        action,
                        params["RoleArn"],
                        iam__PassedToService="sagemaker.amazonaws.com",
                    )
                else:
                    assert _allowed(policies.bot, action, resource), (operation, action, resource)
