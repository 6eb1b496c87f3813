"""The whole recipe from a terminal, over loopback HTTP: moto S3 and gtbot's Ground Truth emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from conftest import POST_LAMBDA, PRE_LAMBDA, SANDBOX_TEAM, write_project

from aws.emulator.groundtruth import (
    GroundTruthEmulator,
)
from aws.emulator.moto_s3 import LocalS3
from bot.cli import run_text
from bot.context import Context
from bot.errors import NameInUseError
from bot.settings import Settings
from bot.synthetic import draw_frames

TEAM, PRE, POST = SANDBOX_TEAM, PRE_LAMBDA, POST_LAMBDA


@pytest.fixture
def emulator(make_emulator: Callable[..., GroundTruthEmulator]) -> GroundTruthEmulator:
    return make_emulator(rate=200.0, seed=3)


def _ctx() -> Context:
    return Context(settings=Settings.from_env())


def _wait_for(ctx: Context, job: str, status: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = run_text(f"status {job}", ctx).text
        if f": {status}" in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"{job} never reached {status}: {text}")


def _make(projects_dir: Path, frames: int, workers: int, **overrides: object) -> None:
    project = write_project(
        projects_dir, "demo", job_workteam_arn=TEAM, job_workers_per_image=workers, **overrides
    )
    draw_frames(project / "annotation-data" / "raw-images", frames, seed=5)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["worker-response", "consolidated"])
def test_init_to_completed_output_manifest(
    form: str, emulator: GroundTruthEmulator, projects_dir: Path
) -> None:
    lambdas = (
        {"job_pre_lambda_arn": PRE, "job_consolidation_lambda_arn": POST}
        if form == "consolidated"
        else {}
    )
    _make(projects_dir, frames=8, workers=3, **lambdas)
    ctx = _ctx()
    assert "Buckets ready" in run_text("setup demo", ctx).text
    assert "14 labels" in run_text("template demo", ctx).text
    assert "8 uploaded" in run_text("upload demo", ctx).text
    reply = run_text("submit demo --yes", ctx)
    assert reply.job is not None and "Launched labeling job" in reply.text
    assert "Images:            8" in reply.text and "Workers per image: 3" in reply.text
    job = reply.job.name
    final = _wait_for(ctx, job, "Completed")
    assert "100% (8/8 labeled)" in final
    assert emulator.calls.count("CreateLabelingJob") == 1

    body = (
        boto3.client("s3", region_name="us-east-2")
        .get_object(
            Bucket="demo-frames-output", Key=f"demo/{job}/manifests/output/output.manifest"
        )["Body"]
        .read()
    )
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert len(lines) == 8
    assert len({line["source-ref"] for line in lines}) == 8
    for line in lines:
        result = line["annotatedResult"]
        if form == "consolidated":
            answers = result["annotationsFromAllWorkers"]
            assert len(answers) == 3
            content = json.loads(answers[0]["annotationData"]["content"])
            assert content["annotatedResult"]["keypoints"]
        else:
            assert result == {}
            ref = line["annotatedResult-metadata"]["worker-response-ref"]
            bucket, key = ref[5:].split("/", 1)
            response = json.loads(
                boto3.client("s3", region_name="us-east-2")
                .get_object(Bucket=bucket, Key=key)["Body"]
                .read()
            )
            assert len(response["answers"]) == 3

    assert job in run_text("jobs", ctx).text
    results = run_text(f"results {job}", ctx)
    assert "8 frames consolidated, 0 skipped." in results.text
    assert all(Path(p).is_file() for p in results.files)


@pytest.mark.slow
def test_stop_mid_job_and_console_refuses_without_yes(
    emulator: GroundTruthEmulator, projects_dir: Path
) -> None:
    emulator.settings.rate = 2.0
    _make(projects_dir, frames=10, workers=2)
    ctx = _ctx()
    plan_only = run_text("submit demo", ctx)  # not a terminal: no prompt, nothing launched
    assert "Nothing launched" in plan_only.text and plan_only.job is None
    assert emulator.calls.count("CreateLabelingJob") == 0
    job = run_text("submit demo --yes", ctx).job
    assert job is not None
    _wait_for(ctx, job.name, "InProgress")
    assert "Stopping job" in run_text(f"stop {job.name}", ctx).text
    final = _wait_for(ctx, job.name, "Stopped")
    assert "(10/10 labeled)" not in final
    assert "already ended" in run_text(f"stop {job.name}", ctx).text


def test_duplicate_job_name_is_refused_with_advice(
    emulator: GroundTruthEmulator, projects_dir: Path
) -> None:
    from bot import recipe

    _make(projects_dir, frames=2, workers=1)
    ctx = _ctx()
    plan = recipe.prepare_submission(ctx, ctx.project("demo"))
    recipe.launch(ctx, plan)
    with pytest.raises(NameInUseError, match="unique forever"):
        recipe.launch(ctx, plan)
    assert emulator.calls.count("CreateLabelingJob") == 2


def _gtbot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_console_errors_are_messages_not_tracebacks(projects_dir: Path) -> None:
    env = dict(os.environ)
    no_region = _gtbot(
        "run", "jobs", env={k: v for k, v in env.items() if k != "AWS_DEFAULT_REGION"}
    )
    assert no_region.returncode == 1 and "set AWS_DEFAULT_REGION" in no_region.stderr
    missing = _gtbot("run", "setup nothing-here", env=env)
    assert missing.returncode == 1
    assert (
        "There is no project 'nothing-here'" in missing.stderr
        and "init nothing-here" in missing.stderr
    )
    assert "Traceback" not in missing.stderr
    unknown = _gtbot("run", "frobnicate", env=env)
    assert unknown.returncode == 2 and "Unknown command 'frobnicate'" in unknown.stderr
    created = _gtbot("run", "init", "lab-one", "--region", "eu-west-1", env=env)
    assert created.returncode == 0, created.stderr
    assert (projects_dir / "lab-one" / "project-config.yml").is_file()
    no_slack = {k: v for k, v in env.items() if not k.startswith("SLACK_")}
    socket_mode = _gtbot("socket", env=no_slack)
    assert socket_mode.returncode == 1
    # Socket Mode needs its app-level token and no signing secret.
    assert "SLACK_BOT_TOKEN, SLACK_APP_TOKEN not set" in socket_mode.stderr
    assert "slack-app-manifest.socket.yml" in socket_mode.stderr
    assert "Traceback" not in socket_mode.stderr
    helped = _gtbot("run", "help submit", env=env)
    assert helped.returncode == 0 and "submit <project> [--yes]" in helped.stdout


@pytest.mark.slow
def test_sandbox_runs_the_whole_workflow(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_ENDPOINT", "GTBOT_"))}
    env["TMPDIR"] = str(tmp_path)
    started = time.monotonic()
    done = _gtbot("sandbox", "--clean", env=env)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    assert elapsed < 60
    out = done.stdout
    assert "Sandbox summary" in out
    assert "(Completed)" in out and "Labeled:         12 of 12" in out
    assert "manifests/output/output.manifest" in out
    assert "This plan was launched as" in out  # the double click launched nothing more
    assert "ok    execution role reads frames: allowed" in out and "All checks passed." in out
    assert "Traceback" not in out + done.stderr
    assert list(tmp_path.iterdir()) == []  # --clean leaves nothing behind


def test_local_s3_server_is_loopback_only(local_s3_server: LocalS3) -> None:
    assert local_s3_server.url.startswith("http://127.0.0.1:")


def test_console_prompt_answers_launch_or_not(
    emulator: GroundTruthEmulator, projects_dir: Path
) -> None:
    from bot.commands import Router

    _make(projects_dir, frames=2, workers=1)
    router = Router(_ctx())
    shown: list[str] = []

    def decline(plan: object) -> bool:
        shown.append(str(plan))
        return False

    assert router.run("submit demo", confirm=decline).text == "Nothing launched."
    assert shown and emulator.calls.count("CreateLabelingJob") == 0
    time.sleep(1.1)  # job names carry the second
    launched = router.run("submit demo", confirm=lambda plan: True)
    assert launched.text.startswith("Launched labeling job demo-")  # the prompt showed the plan
    assert emulator.calls.count("CreateLabelingJob") == 1
