"""The annotation interface: what Ground Truth's Liquid pass makes of it, for every kind of text.

The page is checked the way a worker gets it: rendered with Liquid as Ground Truth renders it
(aws/worker_task.py), then read by an HTML parser, as a browser would.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import PRE_LAMBDA, SANDBOX_TEAM, write_project

from aws.worker_task import WorkerTemplates, keypoint_task, recipe_pre_annotation
from bot.context import Context
from bot.errors import ConfigError
from bot.project import load_project
from bot.recipe import (
    IMAGE_WITH_RECIPE_PRE_LAMBDA,
    IMAGE_WITHOUT_PRE_LAMBDA,
    prepare_submission,
    render_interface,
)
from bot.settings import Settings

SIGNED = "https://signed.example/"


def as_worker_sees_it(page: str, task_input: dict[str, Any]) -> str:
    renderer = WorkerTemplates(lambda bucket, key: f"{SIGNED}{bucket}/{key}?token=1&x=2")
    return renderer.render(renderer.parse(page), task_input)


def script_labels(page: str) -> list[str]:
    found = re.search(r"var labels = (.*);\n", page)
    assert found is not None
    labels: list[str] = json.loads(found.group(1))
    return labels


def test_image_expression_follows_the_lambda_configuration(tmp_path: Path) -> None:
    write_project(tmp_path, "plain")
    page = render_interface(load_project(tmp_path, "plain"), "s3://demo-ui/demo/instructions.png")
    assert f'src="{IMAGE_WITHOUT_PRE_LAMBDA}"' in page
    assert IMAGE_WITHOUT_PRE_LAMBDA == "{{ task.input.source-ref | grant_read_access }}"
    seen_page = as_worker_sees_it(page, {"source-ref": "s3://frames/a/b.jpg"})
    assert keypoint_task(seen_page).src == f"{SIGNED}frames/a/b.jpg?token=1&x=2"
    # The instruction image is private too: Ground Truth signs a link to it.
    assert "instruction_image_url" not in page
    assert html.escape(f"{SIGNED}demo-ui/demo/instructions.png?token=1&x=2") in seen_page
    # Without a pre-annotation Lambda there is no taskObject: the recipe's expression would be
    # empty, which is the bug this guards against.
    write_project(tmp_path, "recipe", job_pre_lambda_arn=PRE_LAMBDA)
    page = render_interface(load_project(tmp_path, "recipe"), "s3://demo-ui/demo/instructions.png")
    assert f'src="{IMAGE_WITH_RECIPE_PRE_LAMBDA}"' in page
    task_input = recipe_pre_annotation({"dataObject": {"source-ref": "s3://frames/a/b.jpg"}})
    seen = keypoint_task(as_worker_sees_it(page, task_input["taskInput"]))
    assert seen.src == f"{SIGNED}frames/a/b.jpg?token=1&x=2"
    assert keypoint_task(as_worker_sees_it(page, {"source-ref": "s3://frames/a/b.jpg"})).src == ""


HOSTILE = [
    "it's",
    'say "hi"',
    "a < b & c > d",
    "{{ task.input.source-ref }}",
    "{% if true %}x{% endif %}",
    "}}'\"</script><b>",
]


def test_labels_and_header_reach_the_worker_exactly_whatever_they_contain(
    tmp_path: Path,
) -> None:
    header = 'Mice & "friends" aren\'t <b>{{ task.input.source-ref }}</b> {% raw %}'
    write_project(tmp_path, "demo", num_obj=2, header=header, keypoints=HOSTILE, check_pairs=[])
    project = load_project(tmp_path, "demo")
    page = render_interface(project, "s3://demo-ui/demo/instructions.png")
    seen_page = as_worker_sees_it(page, {"source-ref": "s3://frames/f.jpg"})
    task = keypoint_task(seen_page)
    assert list(task.labels) == list(project.labels)
    assert task.header == header
    assert script_labels(seen_page) == list(project.labels)
    assert "var numObj = 2;" in seen_page
    # Ground Truth's pass finds no Liquid in them: the page renders byte for byte the same
    # apart from the two image links.
    assert seen_page.count(SIGNED) == 2
    assert "<script>" not in seen_page.split("</crowd-form>")[0]


def test_lab_html_and_liquid_in_the_instructions_are_kept(tmp_path: Path) -> None:
    liquid = "<p>{% if task.input.note %}{{ task.input.note | escape }}{% endif %}</p>"
    write_project(tmp_path, "demo", full_instructions=liquid)
    page = render_interface(load_project(tmp_path, "demo"), "s3://b/k.png")
    assert liquid in page
    assert "<b>Nose:</b>" in page  # the lab's HTML instructions are kept as HTML
    seen = as_worker_sees_it(page, {"source-ref": "s3://f/g.jpg", "note": "Tom & Jerry"})
    assert "<p>Tom &amp; Jerry</p>" in seen
    assert "instruction_image_url" not in page


@pytest.mark.parametrize(
    ("key", "text", "problem"),
    [
        ("full_instructions", "<p>{{ task.input.note </p>", "not valid Liquid"),
        ("short_instructions", "Click {% if x %}here", "not valid Liquid"),
        ("full_instructions", "{{ task.input.note | shout }}", "unknown filter 'shout'"),
    ],
)
def test_instructions_ground_truth_could_not_render_are_refused(
    tmp_path: Path, key: str, text: str, problem: str
) -> None:
    write_project(tmp_path, "demo", **{key: text})
    with pytest.raises(ConfigError) as caught:
        render_interface(load_project(tmp_path, "demo"), "s3://b/k.png")
    message = caught.value.user_message
    assert f"key `{key}`" in message and problem in message and "&#123;" in message


@pytest.mark.parametrize("pre_lambda", [None, PRE_LAMBDA], ids=["no-lambda", "recipe-lambda"])
def test_the_uploaded_template_shows_every_manifest_frame_with_every_label(
    s3_endpoint: str, projects_dir: Path, pre_lambda: str | None
) -> None:
    """What `submit` leaves in S3, rendered for each manifest line as Ground Truth will: each
    worker gets a link to exactly that line's frame and the project's labels."""
    overrides: dict[str, Any] = {"job_workteam_arn": SANDBOX_TEAM}
    if pre_lambda:
        overrides["job_pre_lambda_arn"] = pre_lambda
    write_project(projects_dir, "demo", frames=3, **overrides)
    ctx = Context(settings=Settings.from_env())
    project = ctx.project("demo")
    plan = prepare_submission(ctx, project)
    s3 = boto3.client("s3", region_name=project.region)
    ui = plan.request["HumanTaskConfig"]["UiConfig"]["UiTemplateS3Uri"]
    manifest = plan.request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]
    assert ("PreHumanTaskLambdaArn" in plan.request["HumanTaskConfig"]) == bool(pre_lambda)

    def read(uri: str) -> str:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return str(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode())

    renderer = WorkerTemplates(
        lambda bucket, key: s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}
        )
    )
    template = renderer.parse(read(ui))
    lines = [json.loads(line) for line in read(manifest).splitlines()]
    assert len(lines) == 3
    for line in lines:
        task_input = (
            recipe_pre_annotation({"dataObject": line})["taskInput"] if pre_lambda else line
        )
        task = keypoint_task(renderer.render(template, task_input))
        bucket, _, key = line["source-ref"].removeprefix("s3://").partition("/")
        assert task.src.startswith(f"{s3_endpoint}/{bucket}/{key}?")
        assert list(task.labels) == list(project.labels)
        assert task.name == "annotatedResult"
