"""`upload` decides re-runs from its cache of (path, size, mtime) -> MD5, against moto's S3."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest
from conftest import write_project

from aws import s3
from aws.clients import ClientFactory
from bot import recipe
from bot.context import Context
from bot.settings import Settings
from bot.upload_cache import FILE_NAME, FileState, UploadCache


@pytest.fixture
def ctx(s3_endpoint: str, projects_dir: Path) -> Context:
    return Context(settings=Settings.from_env(), clients=ClientFactory())


def _unreadable(path: Path) -> str:
    raise AssertionError(f"{path} was hashed")


def _frame(project_dir: Path, i: int) -> Path:
    return project_dir / "annotation-data" / "raw-images" / f"frame_{i:06d}.jpg"


def test_first_upload_hashes_nothing_and_reruns_read_only_what_changed(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    project_dir = write_project(ctx.settings.projects_dir, frames=4)
    project = ctx.project("demo")
    recipe.setup_buckets(ctx, project)
    monkeypatch.setattr(s3, "file_md5", _unreadable)  # no key is in S3 yet: nothing to compare

    first = recipe.upload_frames(ctx, project)
    assert (first.uploaded, first.skipped) == (4, 0)
    cache = UploadCache.load(project_dir / "annotation-data" / FILE_NAME)
    assert len(cache.entries) == 4

    # Unchanged files are decided from the cache: not hashed, not even opened as images.
    monkeypatch.setattr(recipe, "_check_image", _unreadable)
    second = recipe.upload_frames(ctx, project)
    assert (second.uploaded, second.skipped) == (0, 4)

    # Same size and mtime is "unchanged" (as for `aws s3 sync`): new bytes behind an old
    # mtime are not read. A new mtime makes the file read, hashed and sent.
    frame = _frame(project_dir, 1)
    before = frame.stat()
    frame.write_bytes(bytes(reversed(frame.read_bytes())))
    os.utime(frame, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert recipe.upload_frames(ctx, project).uploaded == 0
    monkeypatch.undo()
    os.utime(frame, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    _frame(project_dir, 1).write_bytes(_frame(project_dir, 2).read_bytes())
    third = recipe.upload_frames(ctx, project)
    assert (third.uploaded, third.skipped) == (1, 3)


def test_an_object_replaced_in_s3_is_sent_again_despite_the_cache(ctx: Context) -> None:
    write_project(ctx.settings.projects_dir, frames=2)
    project = ctx.project("demo")
    recipe.setup_buckets(ctx, project)
    recipe.upload_frames(ctx, project)
    client = boto3.client("s3", region_name="us-east-2")
    key = "demo/images/frame_000000.jpg"
    size = client.head_object(Bucket="demo-frames", Key=key)["ContentLength"]
    client.put_object(Bucket="demo-frames", Key=key, Body=b"x" * size)  # same size, other bytes
    again = recipe.upload_frames(ctx, project)
    assert (again.uploaded, again.skipped) == (1, 1)
    assert client.get_object(Bucket="demo-frames", Key=key)["Body"].read()[:2] == b"\xff\xd8"


def test_a_lost_or_damaged_cache_falls_back_to_hashing(ctx: Context) -> None:
    project_dir = write_project(ctx.settings.projects_dir, frames=3)
    project = ctx.project("demo")
    recipe.setup_buckets(ctx, project)
    recipe.upload_frames(ctx, project)
    cache_file = project_dir / "annotation-data" / FILE_NAME
    for damaged in (b"{not json", b"[1, 2]", b'{"version": 1, "files": {"frame_000000.jpg": 7}}'):
        cache_file.write_bytes(damaged)
        assert UploadCache.load(cache_file).entries == {}
        rerun = recipe.upload_frames(ctx, project)
        assert (rerun.uploaded, rerun.skipped) == (0, 3)  # hashed, found equal
    state = FileState.of(_frame(project_dir, 0))
    assert UploadCache.load(cache_file).md5("frame_000000.jpg", state) == s3.file_md5(
        _frame(project_dir, 0)
    )
