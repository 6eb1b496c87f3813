"""`template <project> --preview`: the task as a worker sees it, in a real browser.

The machine has no internet, so AWS's crowd-html-elements.js cannot load here. The browser test
therefore serves a local stand-in at the page's script address (the page is copied with exactly
that one URL replaced), which defines `<crowd-form>` and `<crowd-keypoint>` just far enough to
(1) show the element's `src` as an image and report its size once it has loaded, and (2) let
the page's own submit check run against `value.keypoints` and `_submittableValue.keypoints`,
the two properties AWS's crowd-keypoint example reads. What that proves: the rendered page's
link loads the frame from the emulated S3 (the size is the frame's, which no other server has),
the page parses in Chromium, and gtbot's submit check accepts a complete answer and refuses an
incomplete one. What it does not prove: how AWS's real elements draw the page, or that they
expose the value in the same properties at submit time (that rests on AWS's example).
"""

from __future__ import annotations

import html
import io
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import SANDBOX_TEAM, write_project
from PIL import Image

from aws.worker_task import CROWD_ELEMENTS_URL
from bot.cli import run_text
from bot.context import Context
from bot.errors import NotFoundError
from bot.preview import Preview, chromium_command, find_chromium, preview_task
from bot.recipe import publish_template
from bot.settings import Settings

STAND_IN = """
// A stand-in for AWS's crowd-html-elements.js, for a machine without internet (see the test).
customElements.define("crowd-form", class extends HTMLElement {});
customElements.define("crowd-keypoint", class extends HTMLElement {
  connectedCallback() {
    const img = document.createElement("img");
    img.onload = () => { this.dataset.loaded = img.naturalWidth + "x" + img.naturalHeight; };
    img.onerror = () => { this.dataset.error = "not loaded"; };
    img.src = this.getAttribute("src");
    this.appendChild(img);
  }
});
window.addEventListener("load", () => {
  const form = document.querySelector("crowd-form");
  const keypoint = document.querySelector("crowd-keypoint");
  const labels = JSON.parse(keypoint.getAttribute("labels"));
  const every = labels.map((label) => ({label: label, x: 1, y: 1}));
  function submit() {
    const event = new Event("submit", {cancelable: true});
    form.dispatchEvent(event);
    return {refused: event.defaultPrevented,
            message: document.getElementById("gtbot-errors").textContent};
  }
  const checks = {};
  keypoint.value = {keypoints: every};
  checks.complete = submit();
  keypoint.value = undefined;
  keypoint._submittableValue = {keypoints: every};
  checks.submittable = submit();
  keypoint._submittableValue = undefined;
  keypoint.value = {keypoints: every.slice(1)};
  checks.missing = submit();
  keypoint.value = {keypoints: every.concat([every[0]])};
  checks.doubled = submit();
  document.body.dataset.checks = JSON.stringify(checks);
});
"""


@pytest.fixture
def ctx(s3_endpoint: str, projects_dir: Path) -> Context:
    write_project(projects_dir, "demo", frames=2, job_workteam_arn=SANDBOX_TEAM)
    context = Context(settings=Settings.from_env())
    run_text("setup demo", context)
    return context


def _labels(page: str) -> list[str]:
    attr = re.search(r"labels='([^']*)'", page)
    assert attr is not None
    labels: list[str] = json.loads(html.unescape(attr.group(1)))
    return labels


def test_preview_renders_one_frame_as_ground_truth_would(
    ctx: Context, s3_endpoint: str, projects_dir: Path
) -> None:
    reply = run_text("template demo --preview", ctx)
    preview = reply.data
    assert isinstance(preview, Preview)
    page = preview.page.read_text()
    assert preview.page == projects_dir / "demo" / "annotation-data" / "preview.html"
    assert f"open {preview.page} in a browser" in reply.text
    assert "frame link valid for 24 h" in reply.text
    # Liquid is gone; the frame is a real presigned link on the (emulated) S3; AWS's script stays.
    assert "{{" not in page and "{%" not in page
    assert f'<script src="{CROWD_ELEMENTS_URL}"></script>' in page
    src = re.search(r'<crowd-keypoint\s+src="([^"]+)"', page)
    assert src is not None
    link = html.unescape(src.group(1))
    assert link.startswith(f"{s3_endpoint}/demo-frames/demo/images/frame_000000.jpg?")
    assert "Signature=" in link or "X-Amz-Signature=" in link
    assert preview.frame_uri == "s3://demo-frames/demo/images/frame_000000.jpg"
    assert preview.task_input == {"source-ref": preview.frame_uri}
    assert _labels(page) == list(ctx.project("demo").labels)
    # The instruction image is signed too.
    assert f"{s3_endpoint}/demo-ui/demo/instructions.png?" in html.unescape(page)


def test_preview_with_the_recipe_lambda_uses_its_task_object(
    s3_endpoint: str, projects_dir: Path
) -> None:
    write_project(
        projects_dir,
        "demo",
        frames=1,
        job_workteam_arn=SANDBOX_TEAM,
        job_pre_lambda_arn="arn:aws:lambda:us-east-2:123456789012:function:GtRecipePreHumanTaskFunction",
    )
    ctx = Context(settings=Settings.from_env())
    run_text("setup demo", ctx)
    project = ctx.project("demo")
    template = publish_template(ctx, project).local_file.read_text()
    preview = preview_task(ctx, project, template, screenshot=False)
    assert preview.task_input == {"taskObject": "s3://demo-frames/demo/images/frame_000000.jpg"}
    assert f"{s3_endpoint}/demo-frames/demo/images/frame_000000.jpg?" in html.unescape(
        preview.page.read_text()
    )


def test_preview_needs_a_frame(s3_endpoint: str, projects_dir: Path) -> None:
    write_project(projects_dir, "demo", frames=0, job_workteam_arn=SANDBOX_TEAM)
    ctx = Context(settings=Settings.from_env())
    run_text("setup demo", ctx)
    with pytest.raises(NotFoundError, match="No frame to preview"):
        preview_task(ctx, ctx.project("demo"), "<p>page</p>", screenshot=False)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback web server for the page and the stand-in script."""
    root = tmp_path / "site"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_the_frame_loads_in_chromium_through_the_rendered_link(
    ctx: Context, site: tuple[str, Path], tmp_path: Path, projects_dir: Path
) -> None:
    project = ctx.project("demo")
    template = publish_template(ctx, project).local_file.read_text()
    preview = preview_task(ctx, project, template, screenshot=False)
    base, root = site
    page = preview.page.read_text()
    assert page.count(CROWD_ELEMENTS_URL) == 1
    (root / "crowd-html-elements.js").write_text(STAND_IN)
    (root / "preview.html").write_text(
        page.replace(CROWD_ELEMENTS_URL, f"{base}/crowd-html-elements.js")
    )
    binary = find_chromium()
    assert binary is not None
    dom = subprocess.run(
        chromium_command(
            binary,
            tmp_path / "profile",
            "--virtual-time-budget=5000",
            "--dump-dom",
            f"{base}/preview.html",
        ),
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.decode()
    with Image.open(
        projects_dir / "demo" / "annotation-data" / "raw-images" / "frame_000000.jpg"
    ) as frame:
        size = f"{frame.width}x{frame.height}"
    assert f'data-loaded="{size}"' in dom, dom[:2000]
    checks_attr = re.search(r'data-checks="([^"]*)"', dom)
    assert checks_attr is not None, dom[-2000:]
    checks = json.loads(html.unescape(checks_attr.group(1)))
    assert checks["complete"] == {"refused": False, "message": ""}
    assert checks["submittable"] == {"refused": False, "message": ""}
    assert checks["missing"]["refused"] and "black mouse nose (0)" in checks["missing"]["message"]
    assert checks["doubled"]["refused"] and "black mouse nose (2)" in checks["doubled"]["message"]


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_slack_posts_the_screenshot_in_the_channel(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from slack_harness import CHANNEL, SUBMITTER, start_harness

    bot = start_harness(tmp_path, s3_endpoint, setenv=monkeypatch.setenv, frames=1)
    try:
        bot.said("setup demo", user=SUBMITTER)
        bot.stub.clear()
        seen = bot.said("template demo --preview", user=SUBMITTER, timeout=60)
        assert "a screenshot is attached" in seen
        complete = bot.wait_for(lambda: bot.stub.of("files.completeUploadExternal"), 30, "upload")
        # In the thread of the command's progress message, beside its answer.
        progress = bot.progress_message("template demo --preview")
        assert progress is not None and complete[0].params["channel_id"] == CHANNEL
        assert complete[0].params["thread_ts"] == progress["ts"]
        (shot,) = bot.stub.uploads.values()
        with Image.open(io.BytesIO(shot)) as picture:
            assert picture.format == "PNG" and picture.size == (1280, 1000)
    finally:
        bot.stop()


def test_without_chromium_slack_gets_the_page_and_how_to_open_it(
    ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.commands import Router

    monkeypatch.setenv("PATH", str(tmp_path / "no-browsers-here"))
    reply = Router(ctx).run("template demo --preview", interface="slack")
    preview = reply.data
    assert preview.screenshot is None
    assert reply.files == (str(preview.page),)
    assert "no screenshot (headless Chromium is not installed on the bot's host)" in reply.text
    assert "download preview.html and open it in a browser" in reply.text
    assert "apt-get install chromium" in reply.text
