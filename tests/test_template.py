"""The annotation interface: every label, the submit check, and Liquid reaching S3 byte for byte."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from conftest import write_project

from bot.pipeline import render_interface
from bot.project import load_project


def test_interface_has_every_label_and_untouched_liquid(tmp_path: Path) -> None:
    write_project(tmp_path, "demo", num_obj=2, header='Mice & "friends"')
    project = load_project(tmp_path, "demo")
    page = render_interface(project, "s3://demo-ui/demo/instructions.png")

    # Liquid expressions, byte for byte, for Ground Truth to render per task.
    assert 'src="{{ task.input.taskObject | grant_read_access }}"' in page
    assert "{{ 's3://demo-ui/demo/instructions.png' | grant_read_access }}" in page
    assert "instruction_image_url" not in page

    attr = re.search(r"labels='([^']*)'", page)
    assert attr is not None
    labels = json.loads(html.unescape(attr.group(1)))
    assert labels == list(project.labels) and len(labels) == 14
    assert "white mouse base of tail" in labels
    # The submit check knows the labels and how often each must be placed.
    assert "var numObj = 2;" in page
    assert json.dumps(list(project.labels)) in page
    assert 'header="Mice &amp; &#34;friends&#34;"' in page
    assert "<b>Nose:</b>" in page  # the lab's HTML instructions are kept as HTML


def test_liquid_written_in_the_instructions_is_kept(tmp_path: Path) -> None:
    liquid = "<p>{% if task.input.note %}{{ task.input.note | escape }}{% endif %}</p>"
    write_project(tmp_path, "demo", full_instructions=liquid)
    page = render_interface(load_project(tmp_path, "demo"), "s3://b/k.png")
    assert liquid in page
