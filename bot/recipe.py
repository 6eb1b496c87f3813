"""The use cases of the manual MARS recipe, each one step a lab used to do by hand.

Pure Python over the aws/ functions: each takes a Context and a validated project and returns a
result dataclass; rendering for a terminal or for Slack happens at the edges.
"""

from __future__ import annotations

import difflib
import hashlib
import html
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import markupsafe
from PIL import Image, UnidentifiedImageError

from aws import groundtruth as gt
from aws import s3
from bot import yamlio
from bot.context import Context
from bot.errors import ConfigError, GtBotError, NotFoundError, UsageError
from bot.project import (
    IMAGE_SUFFIXES,
    MAX_CONCURRENT_WITHOUT_SUPPORT,
    ROLE_ARN_RE,
    WORKTEAM_ARN_RE,
    ProjectConfig,
    bucket_name_problem,
    known_regions,
    list_images,
    project_dir_for,
    require_job_identity,
)
from bot.upload_cache import FILE_NAME as UPLOAD_CACHE_FILE
from bot.upload_cache import FileState, UploadCache

if TYPE_CHECKING:
    import jinja2

# --------------------------------------------------------------------------- init


@dataclass(frozen=True)
class InitResult:
    path: Path
    config_file: Path


def init_project(
    projects_dir: Path,
    name: str,
    *,
    data_bucket: str | None = None,
    template_bucket: str | None = None,
    region: str = "us-east-1",
    role_arn: str | None = None,
    workteam_arn: str | None = None,
) -> InitResult:
    """Write a commented MARS-default config and the folder layout; never overwrite.

    Every value is checked before anything is written (an option is text from a chat), and the
    file is written through the YAML emitter, so no value can add a key of its own.
    """
    project_dir = project_dir_for(projects_dir, name)
    # Names AWS's managed Ground Truth execution policy covers (see bot/doctor.py).
    data_bucket = data_bucket or f"{name}-sagemaker"
    template_bucket = template_bucket or f"{name}-sagemaker-ui"
    _check_init_values(region, data_bucket, template_bucket, role_arn, workteam_arn)
    if project_dir.exists() and any(project_dir.iterdir()):
        raise ConfigError(
            f"{project_dir} already exists and is not empty; gtbot will not overwrite a project. "
            "Choose another name or remove the folder yourself."
        )
    text = render_project_config(
        name=name,
        data_bucket=data_bucket,
        template_bucket=template_bucket,
        region=region,
        role_arn=role_arn,
        workteam_arn=workteam_arn,
    )
    (project_dir / "annotation-data" / "raw-images").mkdir(parents=True, exist_ok=True)
    (project_dir / "annotation-data" / "videos").mkdir(parents=True, exist_ok=True)
    config_file = project_dir / "project-config.yml"
    config_file.write_text(text, encoding="utf-8")
    return InitResult(path=project_dir, config_file=config_file)


def _check_init_values(
    region: str,
    data_bucket: str,
    template_bucket: str,
    role_arn: str | None,
    workteam_arn: str | None,
) -> None:
    """Refuse any value the project model would refuse, naming the option that carried it."""
    if region not in known_regions():
        hint = difflib.get_close_matches(region, sorted(known_regions()), n=1)
        raise UsageError(
            f"--region {region!r} is not an AWS region with SageMaker."
            + (f" Did you mean {hint[0]!r}?" if hint else " Example: `--region us-east-1`.")
        )
    for option, bucket in (("--data-bucket", data_bucket), ("--template-bucket", template_bucket)):
        if why := bucket_name_problem(bucket):
            raise UsageError(f"{option}: {why} Example: `{option} lab-mouse-frames`.")
    if why := bucket_name_problem(f"{data_bucket}-output"):
        raise UsageError(
            f"--data-bucket: the output bucket is named after it ({data_bucket}-output): {why} "
            "Choose a shorter data bucket name."
        )
    # Lab defaults come from the environment or gtbot.yml, not from the chat, but they are
    # written into the file all the same.
    for label, value, pattern in (
        ("GTBOT_ROLE_ARN (or gtbot.yml's job.role_arn)", role_arn, ROLE_ARN_RE),
        ("GTBOT_WORKTEAM_ARN (or gtbot.yml's job.workteam_arn)", workteam_arn, WORKTEAM_ARN_RE),
    ):
        if value is not None and not (isinstance(value, str) and pattern.fullmatch(value)):
            raise ConfigError(f"{label} is {value!r}, which is not an ARN of the right form.")


def render_project_config(**values: str | None) -> str:
    """The commented project-config.yml (name, buckets, region, role and workteam ARNs);
    values pass through the YAML emitter, and into comments with line breaks escaped."""
    env = _jinja()
    env.filters["yaml"] = yamlio.scalar
    env.filters["comment"] = yamlio.comment_text
    return env.get_template("project-config.yml.j2").render(**values)


# --------------------------------------------------------------------------- setup


@dataclass(frozen=True)
class SetupResult:
    buckets: tuple[s3.BucketResult, ...]

    @property
    def changed(self) -> bool:
        return any(b.changed for b in self.buckets)


# Cost allocation: every bucket and labeling job gtbot creates carries the project's name and,
# when known, who asked (a lab activates them as cost allocation tags in the Billing console).
TAG_PROJECT = "gtbot:project"
TAG_REQUESTER = "gtbot:requested-by"
# What both services allow in a tag value: letters, digits, spaces and _ . : / = + - @, at most
# 256 characters (botocore SageMaker model, Tag.Value; the S3 user guide, "Using cost
# allocation S3 bucket tags", states the same rules).
_NOT_IN_TAG = re.compile(r"[^\w .:/=+\-@]")


def resource_tags(project: ProjectConfig, requester: str | None) -> dict[str, str]:
    tags = {TAG_PROJECT: project.name}
    who = _NOT_IN_TAG.sub("", requester or "")[:256].strip()
    if who:
        tags[TAG_REQUESTER] = who
    return tags


def setup_buckets(
    ctx: Context, project: ProjectConfig, requester: str | None = None
) -> SetupResult:
    client = ctx.s3(project)
    tags = resource_tags(project, requester)
    results = []
    for bucket, cors in (
        (project.data_bucket, True),
        (project.output_bucket, True),
        (project.template_bucket, False),
    ):
        ctx.progress(f"Checking bucket {bucket} ...")
        results.append(s3.ensure_bucket(client, bucket, project.region, cors=cors, tags=tags))
    return SetupResult(tuple(results))


# --------------------------------------------------------------------------- template


_IMAGE_PLACEHOLDER = re.compile(r"\{\{\s*instruction_image_url\s*\}\}")

# Where the frame comes from in `task.input` (developer guide, "Adding automation with Liquid",
# https://docs.aws.amazon.com/sagemaker/latest/dg/sms-custom-templates-step2-automate.html): with
# no pre-annotation Lambda, Ground Truth passes the manifest line itself; with the recipe's (and
# MARS's) pre-annotation Lambda, its `taskInput`, which names the frame `taskObject`.
IMAGE_WITHOUT_PRE_LAMBDA = "{{ task.input.source-ref | grant_read_access }}"
IMAGE_WITH_RECIPE_PRE_LAMBDA = "{{ task.input.taskObject | grant_read_access }}"


def _jinja() -> jinja2.Environment:
    import jinja2  # only commands that render need it: the others start faster

    return jinja2.Environment(
        loader=jinja2.PackageLoader("templates", ""),
        autoescape=jinja2.select_autoescape(["html", "html.j2"], default_for_string=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def liquid_image_expression(uri: str) -> str:
    """Workers see the private instruction image through a presigned link Ground Truth makes."""
    return "{{ '" + uri + "' | grant_read_access }}"


def image_expression(project: ProjectConfig) -> str:
    """The Liquid that gives workers the frame, for this project's Lambda configuration."""
    return IMAGE_WITH_RECIPE_PRE_LAMBDA if project.job.pre_lambda_arn else IMAGE_WITHOUT_PRE_LAMBDA


def _inert(text: str) -> markupsafe.Markup:
    """Text for an HTML attribute that neither HTML nor Ground Truth's Liquid pass reads as markup.

    Quotes, `<` and `&` become entities; so do `{` and `}`, which the browser turns back into
    braces in an attribute but which can then never open a Liquid `{{` or `{%`.
    """
    escaped = html.escape(text, quote=True)
    return markupsafe.Markup(escaped.replace("{", "&#123;").replace("}", "&#125;"))


def _script_json(value: object) -> markupsafe.Markup:
    """JSON for an inline script: no `</script>`, `<!--` or Liquid `{{`/`{%` can appear in it."""
    text = json.dumps(value)  # ensure_ascii: U+2028/2029 arrive escaped too
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return markupsafe.Markup(text.replace("{", "\\u007b").replace("}", "\\u007d"))


def render_interface(project: ProjectConfig, instruction_image_uri: str) -> str:
    """The annotation interface; Liquid in the instructions stays as is, and is checked.

    Labels and the header are data and reach the page inert (see `_inert`); the instructions
    are the lab's HTML and may use Liquid on purpose, so instead of escaping them the whole page
    is rendered once the way Ground Truth will render it, and Liquid that would fail there is
    refused here, naming the key to fix.
    """
    image = liquid_image_expression(instruction_image_uri)
    labels = list(project.labels)
    short = _IMAGE_PLACEHOLDER.sub(image, project.short_instructions)
    full = _IMAGE_PLACEHOLDER.sub(image, project.full_instructions)
    page = (
        _jinja()
        .get_template("annotation-interface.html.j2")
        .render(
            image_src=markupsafe.Markup(image_expression(project)),
            labels_attr=_inert(json.dumps(labels)),
            labels_js=_script_json(labels),
            header_attr=_inert(project.header.strip()),
            short_instructions=markupsafe.Markup(short),
            full_instructions=markupsafe.Markup(full),
            num_obj=project.num_obj,
        )
    )
    _check_liquid(project, page, {"short_instructions": short, "full_instructions": full})
    return page


def _check_liquid(project: ProjectConfig, page: str, parts: dict[str, str]) -> None:
    """Render the page as Ground Truth would for a sample frame; name the key that breaks it."""
    from aws.worker_task import WorkerTemplateError, WorkerTemplates

    renderer = WorkerTemplates(lambda bucket, key: f"https://{bucket}.s3.amazonaws.com/{key}")
    sample = {"source-ref": f"s3://{project.data_bucket}/{project.images_prefix}frame.jpg"}
    sample["taskObject"] = sample["source-ref"]
    try:
        renderer.render(renderer.parse(page), sample)
        return
    except WorkerTemplateError as exc:
        problem = str(exc)
    for key, text in parts.items():
        try:
            renderer.render(renderer.parse(text), sample)
        except WorkerTemplateError as exc:
            raise ConfigError(
                f"{project.config_file}, key `{key}`: Ground Truth renders the instructions as "
                f"Liquid, and this text is {exc}. Fix the `{{{{ ... }}}}` or `{{% ... %}}` part, "
                "or write a literal brace as `&#123;`."
            ) from None
    raise GtBotError(f"The annotation interface gtbot rendered is {problem}.")


@dataclass(frozen=True)
class TemplateResult:
    local_file: Path
    template_uri: str
    instruction_image_uri: str
    labels: int


def _instruction_image_bytes(project: ProjectConfig) -> tuple[bytes, str]:
    if project.instruction_image:
        suffix = project.instruction_image.suffix.lower()
        ctype = {".png": "image/png", ".gif": "image/gif"}.get(suffix, "image/jpeg")
        return _read_inside(project.instruction_image, project.path), ctype
    return resources.files("templates").joinpath("default-instructions.png").read_bytes(), (
        "image/png"
    )


def _read_inside(path: Path, folder: Path) -> bytes:
    """Read a file the project model placed inside `folder`, checked again as it is opened:
    the file is published to S3, and a link put in its place since must not lead out."""
    real = path.resolve()
    if not real.is_relative_to(folder.resolve()):
        raise ConfigError(f"{path} now leads outside the project folder; gtbot will not upload it.")
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read ({exc.strerror or exc}).") from None


def publish_template(ctx: Context, project: ProjectConfig) -> TemplateResult:
    image_uri = f"s3://{project.template_bucket}/{project.instruction_image_key}"
    html = render_interface(project, image_uri)
    project.template_file.parent.mkdir(parents=True, exist_ok=True)
    project.template_file.write_text(html, encoding="utf-8")
    client = ctx.s3(project)
    body, ctype = _instruction_image_bytes(project)
    s3.put_bytes(client, project.template_bucket, project.instruction_image_key, body, ctype)
    uri = s3.put_bytes(
        client, project.template_bucket, project.template_key, html.encode(), "text/html"
    )
    return TemplateResult(project.template_file, uri, image_uri, len(project.labels))


# --------------------------------------------------------------------------- upload


@dataclass(frozen=True)
class UploadSummary:
    uploaded: int
    skipped: int
    rejected: tuple[tuple[str, str], ...]
    failed: tuple[tuple[str, str], ...]
    prefix_uri: str


def _check_image(path: Path) -> str | None:
    """Why this file is not a frame Ground Truth can show, or None."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not a frame (only {', '.join(IMAGE_SUFFIXES)} are uploaded)"
    try:
        with Image.open(path) as im:
            im.verify()
            if im.format not in ("JPEG", "PNG"):
                return f"its content is {im.format}, not JPEG or PNG"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"unreadable image ({exc.__class__.__name__})"
    return None


def _content_type(path: Path) -> str:
    return "image/png" if path.suffix.lower() == ".png" else "image/jpeg"


def upload_frames(ctx: Context, project: ProjectConfig) -> UploadSummary:
    """Frames to the data bucket. What the last run uploaded from a file still of the same
    size and mtime is neither read nor checked again (bot/upload_cache.py); a first upload
    reads each file once, to check it and to send it."""
    files = list_images(project)
    if not files:
        raise NotFoundError(
            f"No frames in {project.images_dir}. Put .jpg/.png frames there (subfolders are "
            f"fine), or extract them from videos with `frames {project.name}`."
        )
    cache = UploadCache.load(project.path / "annotation-data" / UPLOAD_CACHE_FILE)
    rejected: list[tuple[str, str]] = []
    items: list[s3.UploadItem] = []
    states: dict[str, tuple[str, FileState]] = {}
    for path in files:
        rel = path.relative_to(project.images_dir).as_posix()
        try:
            state = FileState.of(path)
        except OSError as exc:
            rejected.append((rel, f"cannot be read ({exc.strerror or exc})"))
            continue
        md5 = cache.md5(rel, state)
        why = None if md5 else _check_image(path)
        if why:
            rejected.append((rel, why))
            continue
        key = project.images_prefix + rel
        items.append(s3.UploadItem(path=path, key=key, size=state.size, md5=md5))
        states[key] = (rel, state)
    client = ctx.s3(project)
    existing = {
        o.key: o for o in s3.iter_objects(client, project.data_bucket, project.images_prefix)
    }
    task = ctx.progress.task("Uploading frames", len(items), "frames")
    try:
        result = s3.upload_files(
            client,
            project.data_bucket,
            items,
            existing=existing,
            done=task.advance,
            content_type=_content_type,
        )
    finally:
        task.close()
    cache.save({states[key][0]: (states[key][1], etag) for key, etag in result.etags.items()})
    return UploadSummary(
        uploaded=len(result.uploaded),
        skipped=len(result.skipped),
        rejected=tuple(rejected),
        failed=result.failed,
        prefix_uri=f"s3://{project.data_bucket}/{project.images_prefix}",
    )


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class ManifestResult:
    uri: str
    images: int
    sha256: str


# "For all other labeling job types, the dataset size quota is 100,000 items" (Input Data
# Quotas, https://docs.aws.amazon.com/sagemaker/latest/dg/input-data-limits.html).
MAX_JOB_OBJECTS = 100_000


def check_dataset_size(project: ProjectConfig, frames: int, where: str) -> None:
    """Refuse, before anything is uploaded or launched, a job Ground Truth would not take."""
    if frames <= MAX_JOB_OBJECTS:
        return
    jobs = -(-frames // MAX_JOB_OBJECTS)
    raise ConfigError(
        f"{project.name} has {frames:,} frames {where}, and Ground Truth takes at most "
        f"{MAX_JOB_OBJECTS:,} per labeling job (its dataset size quota). Nothing was uploaded "
        f"or launched. Split the frames into {jobs} projects of at most {MAX_JOB_OBJECTS:,}: "
        f"e.g. `init {project.name}-part2`, move whole subfolders of raw-images into the new "
        "project's raw-images, and submit each project; or ask AWS for a quota increase."
    )


def manifest_digest(body: bytes) -> tuple[str, int]:
    """A manifest's SHA-256 and its number of lines (objects to label)."""
    return hashlib.sha256(body).hexdigest(), sum(1 for line in body.splitlines() if line.strip())


def write_manifest(ctx: Context, project: ProjectConfig, key: str | None = None) -> ManifestResult:
    """One `{"source-ref": ...}` line per frame in S3, every page listed (MARS stopped at 1,000).

    `submit` writes each plan's own copy (`key`), so a plan launches exactly what it showed
    even when frames are added or another submit rewrites the project's input.manifest."""
    client = ctx.s3(project)
    lines = [
        json.dumps({"source-ref": f"s3://{project.data_bucket}/{obj.key}"})
        for obj in s3.iter_objects(client, project.data_bucket, project.images_prefix)
        if obj.key.lower().endswith(IMAGE_SUFFIXES)
    ]
    if not lines:
        raise NotFoundError(
            f"No frames under s3://{project.data_bucket}/{project.images_prefix}. "
            f"Run `upload {project.name}` first."
        )
    check_dataset_size(
        project, len(lines), f"under s3://{project.data_bucket}/{project.images_prefix}"
    )
    body = ("\n".join(lines) + "\n").encode()
    key = key or project.manifest_key
    uri = s3.put_bytes(client, project.data_bucket, key, body, "application/jsonl")
    digest, images = manifest_digest(body)
    return ManifestResult(uri=uri, images=images, sha256=digest)


# --------------------------------------------------------------------------- submit


def plan_manifest_key(project: ProjectConfig, job_name: str) -> str:
    """Each plan's own input manifest, so a plan launches exactly the frames it showed."""
    return f"{project.name}/manifests/{job_name}.manifest"


@dataclass(frozen=True)
class Plan:
    """What Launch will do and cost; the request inside is final, job name included."""

    project: str
    region: str
    job_name: str
    images: int
    workers_per_image: int
    workteam_kind: str
    workteam_arn: str
    price_usd: Decimal | None
    request: dict[str, Any]
    prepared: tuple[str, ...]
    manifest_sha256: str = ""
    # A follow-up round (bot/jobs/relabel.py): its parent job, its round, and why these frames.
    parent: str | None = None
    round: int | None = None
    reason: str = ""
    # The project's adaptive policy, as Launch will record it (bot/jobs/adaptive.py).
    adaptive: dict[str, Any] | None = None

    @property
    def tasks(self) -> int:
        return self.images * self.workers_per_image

    @property
    def estimated_worker_cost_usd(self) -> Decimal | None:
        return (
            None
            if self.price_usd is None
            else (self.price_usd * self.tasks).quantize(Decimal("0.01"))
        )

    def price_text(self) -> str:
        if self.workteam_kind == "public":
            return f"${self.price_usd} per task"
        if self.workteam_kind == "vendor":
            return "set by the vendor's listing"
        return "none (private team)"

    def cost_text(self) -> str:
        cost = self.estimated_worker_cost_usd
        if cost is not None:
            return (
                f"${cost} ({self.images} images x {self.workers_per_image} workers x "
                f"${self.price_usd}), plus Ground Truth's per-object fee"
            )
        if self.workteam_kind == "vendor":
            return "per the vendor's price, plus Ground Truth's per-object fee"
        return "no worker payments (private team); Ground Truth's per-object fee applies"


def job_request(
    project: ProjectConfig,
    *,
    job_name: str,
    manifest_uri: str,
    template_uri: str,
    workers: int,
    tags: tuple[tuple[str, str], ...] = (),
    requester: str | None = None,
) -> tuple[gt.JobSpec, dict[str, Any]]:
    """The CreateLabelingJob request of one of the project's jobs, checked against the model.
    `requester` (who asked) goes into the job's tags beside the project's."""
    role_arn, workteam_arn = require_job_identity(project)
    job = project.job
    spec = gt.JobSpec(
        job_name=job_name,
        role_arn=role_arn,
        workteam_arn=workteam_arn,
        workteam_kind=job.workteam_kind,
        manifest_uri=manifest_uri,
        output_uri=f"s3://{project.output_bucket}/{project.output_prefix}",
        template_uri=template_uri,
        workers_per_image=workers,
        task_time_limit_seconds=job.task_time_limit_seconds,
        task_availability_seconds=job.availability_seconds,
        title=job.title,
        description=job.description,
        keywords=job.keywords,
        max_concurrent_tasks=job.max_concurrent_tasks,
        price_usd=job.price_usd if job.workteam_kind == "public" else None,
        pre_lambda_arn=job.pre_lambda_arn,
        consolidation_lambda_arn=job.consolidation_lambda_arn,
        tags=(*resource_tags(project, requester).items(), *tags),
    )
    request = gt.build_labeling_job_request(spec)
    gt.validate_request("CreateLabelingJob", request)
    return spec, request


def prepare_submission(
    ctx: Context,
    project: ProjectConfig,
    now: datetime | None = None,
    requester: str | None = None,
) -> Plan:
    """Every missing step of the recipe, then the plan; nothing here costs worker money.
    `requester` (who asked) goes into the tags of the buckets and of the job."""
    _, workteam_arn = require_job_identity(project)
    check_dataset_size(project, len(list_images(project)), f"in {project.images_dir}")
    prepared: list[str] = []
    setup = setup_buckets(ctx, project, requester)
    prepared.append("buckets ready" + (" (created/updated)" if setup.changed else ""))
    ctx.progress("Rendering the annotation interface ...")
    template = publish_template(ctx, project)
    prepared.append("annotation interface uploaded")
    ctx.progress("Uploading frames ...")
    upload = upload_frames(ctx, project)
    prepared.append(f"frames: {upload.uploaded} uploaded, {upload.skipped} already there")
    if upload.rejected:
        prepared.append(f"{len(upload.rejected)} file(s) not uploaded (not frames)")
    if upload.failed:
        first = upload.failed[0]
        raise GtBotError(
            f"{len(upload.failed)} frame(s) failed to upload (first: {first[0]}: {first[1]}). "
            "Nothing was launched; run submit again to retry."
        )
    job_name = gt.make_job_name(project.name, now)
    manifest = write_manifest(ctx, project, plan_manifest_key(project, job_name))
    prepared.append(f"manifest with {manifest.images} images")
    job = project.job
    if job.max_concurrent_tasks and job.max_concurrent_tasks > MAX_CONCURRENT_WITHOUT_SUPPORT:
        prepared.append(
            f"WARNING: max_concurrent_tasks {job.max_concurrent_tasks} is above "
            f"{MAX_CONCURRENT_WITHOUT_SUPPORT:,}, which Ground Truth allows only after AWS "
            "Support raises the account's limit; without that, lower it or remove the key"
        )
    spec, request = job_request(
        project,
        job_name=job_name,
        manifest_uri=manifest.uri,
        template_uri=template.template_uri,
        workers=job.workers_per_image,
        requester=requester,
    )
    plan = Plan(
        project=project.name,
        region=project.region,
        job_name=job_name,
        images=manifest.images,
        workers_per_image=job.workers_per_image,
        workteam_kind=job.workteam_kind,
        workteam_arn=workteam_arn,
        price_usd=spec.price_usd,
        request=request,
        prepared=tuple(prepared),
        manifest_sha256=manifest.sha256,
        adaptive=None if job.adaptive is None else job.adaptive.as_dict(),
    )
    _check_budget(project, plan)
    return plan


def _check_budget(project: ProjectConfig, plan: Plan) -> None:
    """An adaptive budget must at least pay for the first round it is meant to cap."""
    policy = project.job.adaptive
    cost = plan.estimated_worker_cost_usd
    if policy is None or policy.budget_usd is None or cost is None or cost <= policy.budget_usd:
        return
    raise ConfigError(
        f"{project.config_file}, key `job.adaptive.budget_usd`: ${policy.budget_usd} does not "
        f"cover the first round, which costs ${cost} ({plan.images} images x "
        f"{plan.workers_per_image} workers x ${plan.price_usd}). Nothing was launched. Raise "
        "the budget, or lower `workers_per_image`."
    )


def launch(ctx: Context, plan: Plan) -> gt.JobInfo:
    return gt.create_labeling_job(ctx.sagemaker(plan.region), plan.request)


# --------------------------------------------------------------------------- jobs


def lab_regions(ctx: Context) -> list[str]:
    """Regions of the lab's projects (plus the default), for listing jobs across them."""
    regions: list[str] = []
    root = ctx.settings.projects_dir
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if child.is_dir():
                try:
                    region = ctx.project(child.name).region
                except GtBotError:
                    continue
                if region not in regions:
                    regions.append(region)
    default = ctx.clients.default_region()
    if default and default not in regions:
        regions.append(default)
    return regions


def projects_named_in(ctx: Context, job_name: str) -> list[str]:
    """Projects whose name starts the job name (`<project>-<time>`), the most specific first."""
    root = ctx.settings.projects_dir
    if not root.is_dir():
        return []
    names = [c.name for c in root.iterdir() if c.is_dir() and job_name.startswith(c.name + "-")]
    return sorted(names, key=len, reverse=True)


def region_for_job(ctx: Context, job_name: str) -> str:
    """A job name alone has no region: use its project's (names start with the project)."""
    if not gt.JOB_NAME_RE.match(job_name):
        raise ConfigError(
            f"{job_name!r} is not a labeling job name (letters, digits and hyphens, at most 63). "
            "`jobs` lists the recent ones."
        )
    for name in projects_named_in(ctx, job_name):
        try:
            return ctx.project(name).region
        except GtBotError:
            continue
    regions = lab_regions(ctx)
    if not regions:
        raise ConfigError(
            f"Cannot tell which region {job_name} is in: it matches no project and no default "
            "region is set. Set AWS_DEFAULT_REGION."
        )
    return regions[0]


def job_status(ctx: Context, job_name: str) -> gt.JobInfo:
    return gt.describe_labeling_job(ctx.sagemaker(region_for_job(ctx, job_name)), job_name)


def recent_jobs(ctx: Context, limit: int = 20) -> list[gt.JobInfo]:
    jobs: list[gt.JobInfo] = []
    regions = lab_regions(ctx)
    if not regions:
        raise ConfigError(
            f"No projects in {ctx.settings.projects_dir} and no AWS region set, so gtbot does not "
            "know where to look for jobs. Create a project (`init <name>`), set "
            "GTBOT_PROJECTS_DIR to your projects folder, or set AWS_DEFAULT_REGION."
        )
    for region in regions:
        jobs.extend(gt.iter_labeling_jobs(ctx.sagemaker(region), max_items=limit))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    jobs.sort(key=lambda j: j.created or epoch, reverse=True)
    return jobs[:limit]


def stop_job(ctx: Context, job_name: str) -> gt.JobInfo:
    region = region_for_job(ctx, job_name)
    client = ctx.sagemaker(region)
    info = gt.describe_labeling_job(client, job_name)
    if info.terminal or info.status == "Stopping":
        return info
    gt.stop_labeling_job(client, job_name)
    return gt.describe_labeling_job(client, job_name)
