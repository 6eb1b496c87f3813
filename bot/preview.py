"""`template <project> --preview`: one task exactly as a worker will see it, before paying.

The uploaded template is rendered the way Ground Truth renders it (aws/worker_task.py, the same
code the emulated workers see through) for one real frame of the project, with a real presigned
link in place of `grant_read_access` and AWS's crowd-html-elements script, and written to
`annotation-data/preview.html`. When headless Chromium is on this machine, a screenshot of the
page is taken too (what Slack gets); otherwise the page itself is the preview.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws import s3
from aws.worker_task import WorkerTemplates, recipe_pre_annotation
from bot.context import Context
from bot.errors import NotFoundError
from bot.links import signing_lifetime
from bot.project import IMAGE_SUFFIXES, ProjectConfig, list_images

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Headless flags that work on a server without a desktop session (and in CI containers): no
# sandbox (containers run as root), no GPU, and none of the browser's own background traffic.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
SCREENSHOT_SECONDS = 90


@dataclass(frozen=True)
class Preview:
    page: Path
    frame_uri: str
    task_input: dict[str, Any]
    link_lifetime: s3.LinkLifetime
    screenshot: Path | None
    screenshot_problem: str | None


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_command(binary: str, profile_dir: Path, *args: str) -> list[str]:
    """A headless Chromium run with its own empty profile, so nothing of a user's leaks in."""
    return [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", *args]


def _preview_frame(ctx: Context, project: ProjectConfig) -> str:
    """A frame already in S3, or the project's first frame uploaded where `upload` puts it."""
    client = ctx.s3(project)
    for obj in s3.iter_objects(client, project.data_bucket, project.images_prefix):
        if obj.key.lower().endswith(IMAGE_SUFFIXES):
            return f"s3://{project.data_bucket}/{obj.key}"
    for path in list_images(project):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            key = project.images_prefix + path.relative_to(project.images_dir).as_posix()
            ctype = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
            return s3.put_bytes(client, project.data_bucket, key, path.read_bytes(), ctype)
    raise NotFoundError(
        f"No frame to preview: s3://{project.data_bucket}/{project.images_prefix} and "
        f"{project.images_dir} are empty. Put a frame in raw-images first."
    )


def preview_task(
    ctx: Context, project: ProjectConfig, template_html: str, *, screenshot: bool = True
) -> Preview:
    """Render `template_html` for one frame as Ground Truth would, and screenshot it if possible."""
    frame = _preview_frame(ctx, project)
    line = {"source-ref": frame}
    # task.input: the manifest line, or with a pre-annotation Lambda what the recipe's returns.
    if project.job.pre_lambda_arn:
        task_input = dict(recipe_pre_annotation({"dataObject": line})["taskInput"])
    else:
        task_input = dict(line)
    lifetime = signing_lifetime(ctx)
    client = ctx.s3(project)
    renderer = WorkerTemplates(
        lambda bucket, key: s3.presign_get(client, bucket, key, lifetime.seconds)
    )
    page_html = renderer.render(renderer.parse(template_html), task_input)
    page = project.path / "annotation-data" / "preview.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(page_html, encoding="utf-8")
    shot, problem = (
        take_screenshot(page, page.with_suffix(".png")) if screenshot else (None, "not asked for")
    )
    return Preview(page, frame, task_input, lifetime, shot, problem)


def take_screenshot(page: Path, out: Path) -> tuple[Path | None, str | None]:
    """(screenshot, None) or (None, why not): a missing browser is a normal situation."""
    binary = find_chromium()
    if binary is None:
        return None, "headless Chromium is not installed"
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="gtbot-chromium-") as profile:
        command = chromium_command(
            binary,
            Path(profile),
            "--window-size=1280,1000",
            # Let the crowd elements script and the frame load before the picture is taken.
            "--virtual-time-budget=15000",
            f"--screenshot={out}",
            page.resolve().as_uri(),
        )
        try:
            done = subprocess.run(
                command, capture_output=True, timeout=SCREENSHOT_SECONDS, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"Chromium did not finish ({type(exc).__name__})"
    if done.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        return None, f"Chromium exited with {done.returncode} {tail[0][:200]}".strip()
    return out, None
