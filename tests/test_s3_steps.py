"""setup, template, upload and manifest against moto's S3 server over real HTTP."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from conftest import write_project

from aws import s3
from aws.clients import ClientFactory
from bot import recipe
from bot.context import Context
from bot.errors import AwsError, NotFoundError
from bot.settings import Settings


@pytest.fixture
def ctx(s3_endpoint: str, projects_dir: Path) -> Context:
    return Context(settings=Settings.from_env(), clients=ClientFactory())


def _client() -> object:
    return boto3.client("s3", region_name="us-east-2")


def test_setup_creates_three_buckets_with_cors_and_blocked_public_access(ctx: Context) -> None:
    write_project(ctx.settings.projects_dir)
    project = ctx.project("demo")
    first = recipe.setup_buckets(ctx, project)
    assert [b.created for b in first.buckets] == [True, True, True]
    client = _client()
    for bucket in ("demo-frames", "demo-frames-output", "demo-ui"):
        assert client.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "us-east-2"
        block = client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(block.values()) and len(block) == 4
    for bucket in ("demo-frames", "demo-frames-output"):
        rules = client.get_bucket_cors(Bucket=bucket)["CORSRules"]
        assert rules[0]["AllowedMethods"] == ["GET"] and rules[0]["AllowedOrigins"] == ["*"]
        assert rules[0]["ExposeHeaders"] == ["Access-Control-Allow-Origin"]
    with pytest.raises(client.exceptions.ClientError):
        client.get_bucket_cors(Bucket="demo-ui")  # the template bucket needs no CORS

    second = recipe.setup_buckets(ctx, project)
    assert not second.changed
    assert all(b.changes == () and not b.created for b in second.buckets)


def test_setup_repairs_a_bucket_whose_settings_drifted(ctx: Context) -> None:
    write_project(ctx.settings.projects_dir)
    project = ctx.project("demo")
    recipe.setup_buckets(ctx, project)
    _client().delete_bucket_cors(Bucket="demo-frames")
    again = recipe.setup_buckets(ctx, project)
    assert again.buckets[0].changes == ("CORS rule set",)


def test_cors_rule_goes_beside_another_applications_rules(ctx: Context) -> None:
    """PutBucketCors replaces the whole configuration: setup must write the others back."""
    client = _client()
    client.create_bucket(
        Bucket="demo-frames", CreateBucketConfiguration={"LocationConstraint": "us-east-2"}
    )
    theirs = {
        "ID": "viewer-app",
        "AllowedHeaders": ["Authorization"],
        "AllowedMethods": ["GET", "PUT"],
        "AllowedOrigins": ["https://viewer.example.org"],
        "ExposeHeaders": ["ETag"],
        "MaxAgeSeconds": 600,
    }
    client.put_bucket_cors(Bucket="demo-frames", CORSConfiguration={"CORSRules": [theirs]})
    write_project(ctx.settings.projects_dir)
    project = ctx.project("demo")
    first = recipe.setup_buckets(ctx, project)
    assert first.buckets[0].changes[0] == "CORS rule added beside the others"
    rules = client.get_bucket_cors(Bucket="demo-frames")["CORSRules"]
    assert rules[0] == theirs
    assert rules[1]["AllowedOrigins"] == ["*"] and rules[1]["AllowedMethods"] == ["GET"]
    assert len(rules) == 2
    again = recipe.setup_buckets(ctx, project)
    assert not again.changed
    assert client.get_bucket_cors(Bucket="demo-frames")["CORSRules"] == rules


def test_bucket_in_another_region_is_a_clear_error(ctx: Context) -> None:
    boto3.client("s3", region_name="eu-west-1").create_bucket(
        Bucket="demo-frames", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    write_project(ctx.settings.projects_dir)
    with pytest.raises(
        AwsError, match="exists in eu-west-1, but the project's region is us-east-2"
    ):
        recipe.setup_buckets(ctx, ctx.project("demo"))


def test_bucket_of_another_account_is_a_clear_error() -> None:
    client = boto3.client("s3", region_name="us-east-2")
    with Stubber(client) as stub:
        stub.add_client_error(
            "head_bucket", "403", "Forbidden", 403, expected_params={"Bucket": "taken"}
        )
        with pytest.raises(AwsError, match="belongs to another AWS account"):
            s3.ensure_bucket(client, "taken", "us-east-2", cors=True)
        stub.assert_no_pending_responses()


def test_template_upload_and_manifest(ctx: Context) -> None:
    project_dir = write_project(ctx.settings.projects_dir, frames=6)
    images = project_dir / "annotation-data" / "raw-images"
    (images / "session2").mkdir()
    (images / "frame_000000.jpg").replace(images / "session2" / "nested.jpg")
    (images / "notes.txt").write_text("not a frame")
    (images / "broken.jpg").write_bytes(b"this is not a jpeg")
    project = ctx.project("demo")
    recipe.setup_buckets(ctx, project)

    template = recipe.publish_template(ctx, project)
    client = _client()
    uploaded = client.get_object(Bucket="demo-ui", Key="demo/annotation-interface.template")
    assert uploaded["Body"].read().decode() == project.template_file.read_text()
    assert client.head_object(Bucket="demo-ui", Key="demo/instructions.png")["ContentLength"] > 1000
    assert template.template_uri == "s3://demo-ui/demo/annotation-interface.template"

    messages: list[str] = []
    first = recipe.upload_frames(ctx.with_progress(messages.append), project)
    assert (first.uploaded, first.skipped) == (6, 0)
    assert {r[0] for r in first.rejected} == {"notes.txt", "broken.jpg"}
    assert "unreadable image" in dict(first.rejected)["broken.jpg"]
    assert messages[-1].startswith("Uploading frames: 6/6 (100%), ")
    assert "frames/s, done in" in messages[-1]
    keys = {o.key for o in s3.iter_objects(client, "demo-frames", "demo/images/")}
    assert "demo/images/session2/nested.jpg" in keys and len(keys) == 6

    second = recipe.upload_frames(ctx, project)
    assert (second.uploaded, second.skipped) == (0, 6)
    # A frame that changed on disk is uploaded again.
    from PIL import Image

    Image.new("RGB", (64, 48), (1, 2, 3)).save(images / "frame_000003.jpg")
    third = recipe.upload_frames(ctx, project)
    assert (third.uploaded, third.skipped) == (1, 5)

    manifest = recipe.write_manifest(ctx, project)
    assert manifest.images == 6 and manifest.uri == "s3://demo-frames/demo/manifests/input.manifest"
    body = client.get_object(Bucket="demo-frames", Key="demo/manifests/input.manifest")["Body"]
    lines = [json.loads(line) for line in body.read().decode().splitlines()]
    assert {"source-ref": "s3://demo-frames/demo/images/session2/nested.jpg"} in lines


def test_manifest_lists_past_the_first_thousand_objects(ctx: Context) -> None:
    write_project(ctx.settings.projects_dir)
    project = ctx.project("demo")
    recipe.setup_buckets(ctx, project)
    client = _client()

    def put(i: int) -> None:
        client.put_object(Bucket="demo-frames", Key=f"demo/images/f{i:05d}.jpg", Body=b"x")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(2500)))
    manifest = recipe.write_manifest(ctx, project)
    assert manifest.images == 2500
    body = client.get_object(Bucket="demo-frames", Key="demo/manifests/input.manifest")["Body"]
    refs = [json.loads(line)["source-ref"] for line in body.read().decode().splitlines()]
    assert len(set(refs)) == 2500 and refs[-1] == "s3://demo-frames/demo/images/f02499.jpg"


def test_upload_without_frames_and_manifest_without_upload_say_what_to_do(ctx: Context) -> None:
    write_project(ctx.settings.projects_dir)
    project = ctx.project("demo")
    with pytest.raises(NotFoundError, match="No frames in .*raw-images.*frames demo"):
        recipe.upload_frames(ctx, project)
    recipe.setup_buckets(ctx, project)
    with pytest.raises(NotFoundError, match="Run `upload demo` first"):
        recipe.write_manifest(ctx, project)


def test_missing_bucket_says_run_setup(ctx: Context) -> None:
    write_project(ctx.settings.projects_dir, frames=1)
    with pytest.raises(NotFoundError, match="Run `setup <project>` first"):
        recipe.write_manifest(ctx, ctx.project("demo"))
