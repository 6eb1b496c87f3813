"""Liquid as Ground Truth renders it: the filter examples of the developer guide, "Adding
automation with Liquid" (sms-custom-templates-step2-automate), input and output as printed."""

from __future__ import annotations

import pytest

from aws.worker_task import (
    WorkerTemplateError,
    WorkerTemplates,
    human_annotation_required,
    keypoint_task,
    recipe_pre_annotation,
)

PEACH = "Have you read 'James & the Giant Peach'?"


def render(text: str, task_input: dict[str, object] | None = None) -> str:
    renderer = WorkerTemplates(
        lambda bucket, key: f"https://s3.amazonaws.com/{bucket}/{key}?t=1&s=2"
    )
    return renderer.render(renderer.parse(text), task_input or {})


def test_the_guides_filter_examples() -> None:
    assert render('{{ "' + PEACH + '" }}') == "Have you read &#39;James &amp; the Giant Peach&#39;?"
    assert render('{{ "' + PEACH + '" | escape }}') == (
        "Have you read &#39;James &amp; the Giant Peach&#39;?"
    )
    once = "Have you read 'James &amp; the Giant Peach'?"
    assert render('{{ "' + once + '" | escape_once }}') == (
        "Have you read &#39;James &amp; the Giant Peach&#39;?"
    )
    assert render('{{ "' + PEACH + '" | skip_autoescape }}') == PEACH
    assert render('{{ "s3://mybucket/myphoto.png" | grant_read_access }}') == (
        "https://s3.amazonaws.com/mybucket/myphoto.png?t=1&amp;s=2"
    )


def test_task_input_members_and_to_json() -> None:
    task = {"source-ref": "s3://b/k.jpg", "labels": ["a'b", "<c>"], "header": "Tom & Jerry"}
    page = render(
        "<x src=\"{{ task.input.source-ref | grant_read_access }}\" l='{{ task.input.labels | to_json }}' "
        'h="{{ task.input.header }}">',
        task,
    )
    assert page == (
        '<x src="https://s3.amazonaws.com/b/k.jpg?t=1&amp;s=2" '
        "l='[&#34;a&#39;b&#34;, &#34;&lt;c&gt;&#34;]' h=\"Tom &amp; Jerry\">"
    )


def test_undefined_variables_render_empty_and_unknown_filters_fail() -> None:
    assert render("[{{ task.input.taskObject | grant_read_access }}]", {"source-ref": "x"}) == "[]"
    assert render("[{{ task.nothing.here }}]") == "[]"
    with pytest.raises(WorkerTemplateError, match="unknown filter 'skip_encoding'"):
        render("{{ task.input.x | skip_encoding }}", {"x": "y"})
    with pytest.raises(WorkerTemplateError, match="not valid Liquid"):
        render("{% if task.input.x %}")


def test_recipe_pre_annotation_lambda() -> None:
    answer = recipe_pre_annotation({"dataObject": {"source-ref": "s3://b/k.jpg"}})
    assert answer == {
        "taskInput": {"taskObject": "s3://b/k.jpg"},
        "humanAnnotationRequired": "true",
    }
    assert human_annotation_required(answer)
    text = recipe_pre_annotation({"dataObject": {"source": "a text", "source-ref": "s3://x"}})
    assert text["taskInput"] == {"taskObject": "a text"}
    empty = recipe_pre_annotation({"dataObject": {}})
    assert not human_annotation_required(empty)
    assert not human_annotation_required({"isHumanAnnotationRequired": False})
    assert human_annotation_required({})


def test_keypoint_element_as_a_browser_reads_it() -> None:
    task = keypoint_task(
        "<crowd-form><crowd-keypoint\n src='https://x/y.jpg?a=1&amp;b=2'\n"
        ' labels="[\'Item A\', \'Item B\']" header="Find &quot;it&quot;" name="pose">'
    )
    assert task.src == "https://x/y.jpg?a=1&b=2"
    assert task.labels == ("Item A", "Item B") and task.name == "pose"
    assert task.header == 'Find "it"'
    with pytest.raises(ValueError, match="no <crowd-keypoint>"):
        keypoint_task("<crowd-bounding-box labels='[\"a\"]'>")
    with pytest.raises(ValueError, match="no labels"):
        keypoint_task("<crowd-keypoint src='x'>")
