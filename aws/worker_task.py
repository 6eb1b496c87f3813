"""A worker task as Ground Truth renders it: the template's Liquid, given one data object.

One implementation serves the emulated workforce (what its simulated workers see) and
`template --preview` (what a lab manager opens before paying), so the two cannot disagree.
Everything here follows the SageMaker developer guide, "Creating a custom worker task template"
and its section "Adding automation with Liquid":
https://docs.aws.amazon.com/sagemaker/latest/dg/sms-custom-templates-step2-automate.html

- `task.input` is the `taskInput` a pre-annotation Lambda returns; without such a Lambda, Ground
  Truth makes the task itself and `task.input` is the manifest line (so the image is
  `task.input.source-ref`). The recipe's pre-annotation Lambda returns
  `{"taskObject": <source or source-ref>}` (see `recipe_pre_annotation`).
- "By default, inputs will be HTML escaped": every output is escaped, string literals too, unless
  its last filter is `escape`, `escape_once` or `skip_autoescape`. Ground Truth's own filters are `grant_read_access` (an S3 URI -> an HTTPS URL with a
  short-lived access token), `to_json`, `skip_autoescape` (the one that turns escaping off),
  `escape` and `escape_once`, beside the standard Liquid filters. Any other filter name is an
  error here (python-liquid's strict filters): the page lists no other, so a template that
  relies on one would not render the same on the service.
- Undefined variables render as nothing (standard Liquid), which is exactly how a template that
  names the wrong `task.input` member shows workers an empty image.
"""

from __future__ import annotations

import ast
import html
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any, TextIO

import liquid
import markupsafe
from liquid.builtin.output import Output, OutputNode
from liquid.exceptions import LiquidError
from liquid.stringify import to_liquid_string

if TYPE_CHECKING:
    from liquid.context import RenderContext

# The crowd HTML elements every worker page loads (developer guide, "Developing templates
# locally": https://docs.aws.amazon.com/sagemaker/latest/dg/sms-custom-templates-step2.html).
CROWD_ELEMENTS_URL = "https://assets.crowd.aws/crowd-html-elements.js"

Presign = Callable[[str, str], str]
"""(bucket, key) -> a URL that reads the object for a short while."""


class WorkerTemplateError(ValueError):
    """The template does not parse or render as Liquid; the message says where."""


class _Trusted(str):
    """Output a filter has already made HTML-safe (`escape`, `escape_once`, `skip_autoescape`)."""


class _GroundTruthOutputNode(OutputNode):
    """`{{ ... }}` as Ground Truth prints it: everything HTML-escaped, string literals included
    (the guide's example escapes `{{ "Have you read 'James & the Giant Peach'?" }}`), unless the
    last filter made it safe. python-liquid's own autoescape trusts literals, hence this node."""

    def _text(self, value: object) -> str:
        text = to_liquid_string(value, False)
        return text if isinstance(value, _Trusted) else str(markupsafe.escape(text))

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        return buffer.write(self._text(self.expression.evaluate(context)))

    async def render_to_output_async(self, context: RenderContext, buffer: TextIO) -> int:
        return buffer.write(self._text(await self.expression.evaluate_async(context)))


class _GroundTruthOutput(Output):
    node_class = _GroundTruthOutputNode


class _Environment(liquid.Environment):
    # A worker template is a page, not a program: bound what a hostile one can make us do.
    output_stream_limit = 5_000_000
    loop_iteration_limit = 100_000
    context_depth_limit = 30


def _text(value: object) -> str:
    return "" if isinstance(value, liquid.Undefined) or value is None else str(value)


def _to_json(value: object) -> str:
    """`to_json`: "will encode what you feed it to JSON" (escaped afterwards like any output)."""
    return json.dumps(None if isinstance(value, liquid.Undefined) else value)


def _escape(value: object) -> _Trusted:
    return _Trusted(markupsafe.escape(_text(value)))


def _escape_once(value: object) -> _Trusted:
    """Per the guide, it "ensures that if you've already escaped your code, it doesn't get
    re-escaped"."""
    return _Trusted(markupsafe.escape(html.unescape(_text(value))))


def _skip_autoescape(value: object) -> _Trusted:
    return _Trusted(_text(value))


def split_s3_uri(uri: str) -> tuple[str, str] | None:
    if not uri.startswith("s3://"):
        return None
    bucket, _, key = uri[5:].partition("/")
    return (bucket, key) if bucket and key else None


class WorkerTemplates:
    """Parses and renders worker task templates the way Ground Truth does, signing links with
    `presign` (the emulator's S3 in the sandbox, the lab's own credentials for a preview)."""

    def __init__(self, presign: Presign) -> None:
        self._presign = presign
        self.env = _Environment()
        self.env.add_tag(_GroundTruthOutput)
        self.env.add_filter("grant_read_access", self._grant_read_access)
        self.env.add_filter("to_json", _to_json)
        self.env.add_filter("escape", _escape)
        self.env.add_filter("escape_once", _escape_once)
        self.env.add_filter("skip_autoescape", _skip_autoescape)

    def _grant_read_access(self, value: object) -> str:
        """An S3 URI becomes a presigned HTTPS link; nothing (an undefined variable) stays
        nothing. Other text passes through: the page defines the filter for S3 URIs only."""
        text = _text(value)
        if not text:
            return ""
        parts = split_s3_uri(text)
        return self._presign(*parts) if parts else text

    def parse(self, text: str) -> liquid.BoundTemplate:
        try:
            return self.env.from_string(text)
        except LiquidError as exc:
            raise WorkerTemplateError(f"not valid Liquid: {_one_line(exc)}") from None

    def render(self, template: liquid.BoundTemplate, task_input: Mapping[str, Any]) -> str:
        try:
            return template.render(task={"input": dict(task_input)})
        except LiquidError as exc:
            raise WorkerTemplateError(f"Liquid failed to render: {_one_line(exc)}") from None


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def recipe_pre_annotation(event: Mapping[str, Any]) -> dict[str, Any]:
    """What the recipe's pre-annotation Lambda returns for one data object.

    aws-samples/aws-sagemaker-ground-truth-recipe, `pre_human_task_lambda.py` (the one MARS
    deploys), as documented in "Pre-annotation and Post-annotation Lambda Function Requirements"
    (https://docs.aws.amazon.com/sagemaker/latest/dg/sms-custom-templates-step3-lambda-requirements.html):
    `source` if the line has it, else `source-ref`, as `taskInput.taskObject`; no object at all
    means "humanAnnotationRequired": "false".
    """
    data = event.get("dataObject") or {}
    task_object = data.get("source") if "source" in data else data.get("source-ref")
    return {
        "taskInput": {"taskObject": task_object},
        "humanAnnotationRequired": "false" if task_object is None else "true",
    }


def human_annotation_required(response: Mapping[str, Any]) -> bool:
    """The page names the flag `isHumanAnnotationRequired`; the recipe sends
    `humanAnnotationRequired` as a string. Both default to true."""
    for key in ("isHumanAnnotationRequired", "humanAnnotationRequired"):
        if key in response:
            value = response[key]
            return value is True or str(value).strip().lower() == "true"
    return True


@dataclass(frozen=True)
class KeypointTask:
    """The `<crowd-keypoint>` element of a rendered task: what a worker sees and answers into.

    Attributes per the crowd-keypoint reference
    (https://docs.aws.amazon.com/sagemaker/latest/dg/sms-ui-template-crowd-keypoint.html):
    `src` the image URL, `labels` a JSON array of strings, `name` the key of the answer.
    """

    src: str
    labels: tuple[str, ...]
    name: str
    header: str


class _KeypointFinder(HTMLParser):
    """HTMLParser copes with quoting, entities and line breaks inside the tag; regexes do not."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.attrs: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "crowd-keypoint" and self.attrs is None:
            self.attrs = dict(attrs)


def keypoint_task(page: str) -> KeypointTask:
    """The keypoint element of a rendered page; ValueError says what a worker would miss."""
    finder = _KeypointFinder()
    finder.feed(page)
    finder.close()
    if finder.attrs is None:
        raise ValueError("the page has no <crowd-keypoint> element")
    attrs = finder.attrs
    raw = (attrs.get("labels") or "").strip()
    if not raw:
        raise ValueError("the <crowd-keypoint> element has no labels")
    try:
        labels: Any = json.loads(raw)
    except json.JSONDecodeError:
        try:  # AWS's own examples write labels="['Item A', 'Item B']"
            labels = ast.literal_eval(raw)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(f"its labels are not a JSON list: {raw[:80]!r}") from None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"its labels must be a non-empty list of strings: {raw[:80]!r}")
    return KeypointTask(
        src=(attrs.get("src") or "").strip(),
        labels=tuple(labels),
        name=attrs.get("name") or "annotatedResult",
        header=attrs.get("header") or "",
    )
