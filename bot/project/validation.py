"""The project-level checks: known keys, labels, buckets, region, instructions; then the job.

Each check adds what it finds to one `ConfigProblems` and hands back its value (or a default), so
a config with five mistakes gets five messages in one run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.project.aws_rules import bucket_name_problem, known_regions
from bot.project.job_settings import validate_job
from bot.project.model import ProjectConfig
from bot.project.problems import EXAMPLES, ConfigProblems, suggest
from bot.results.spec import LabelSpec, read_label_config

TOP_KEYS = {
    "project_name", "species", "animal_names", "num_obj", "keypoints", "check_pairs",
    "data_bucket", "output_bucket", "template_bucket", "region", "header",
    "short_instructions", "full_instructions", "instruction_image", "job", "label_map",
}  # fmt: skip

IMAGE_FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")


@dataclass(frozen=True)
class _Buckets:
    data: str
    template: str
    output: str


@dataclass(frozen=True)
class _Instructions:
    header: str
    short: str
    full: str
    image: Path | None


def validate_project(
    data: dict[str, Any],
    config_file: Path,
    name: str,
    lab_job_defaults: Mapping[str, Any],
    p: ConfigProblems,
) -> ProjectConfig:
    """The one definition of a valid project: every reader of a config comes through here."""
    _check_top_keys(data, p)
    labels = _check_labels(data, p)
    buckets = _check_buckets(data, p)
    region = _check_region(data, p)
    texts = _check_instructions(data, config_file, p)
    job = validate_job(data.get("job"), lab_job_defaults, region, p)
    p.raise_if_any()
    # No problem was reported, so the labels were read (read_label_config gives None only
    # with problems).
    assert labels is not None
    return ProjectConfig(
        name=name,
        path=config_file.parent,
        config_file=config_file,
        species=labels.species,
        animal_names=labels.animals,
        num_obj=labels.num_obj,
        keypoints=labels.keypoints,
        check_pairs=labels.check_pairs,
        data_bucket=buckets.data,
        template_bucket=buckets.template,
        output_bucket=buckets.output,
        region=region,
        header=texts.header,
        short_instructions=texts.short,
        full_instructions=texts.full,
        instruction_image=texts.image,
        job=job,
        label_map=labels.label_map,
    )


def _check_top_keys(data: dict[str, Any], p: ConfigProblems) -> None:
    for key in data:
        if not isinstance(key, str):
            p.add(str(key), "keys must be text.")
            continue
        # MARS has many more keys (tfrecord settings and the like): ignore those, but a near
        # miss of one of ours is a typo that would otherwise silently fall back to a default.
        if key not in TOP_KEYS and (hint := suggest(key, TOP_KEYS)):
            p.add(key, f"unknown key; did you mean `{hint}`?")


def _check_labels(data: dict[str, Any], p: ConfigProblems) -> LabelSpec | None:
    """Species, animals, keypoints, pairs and label_map follow the one definition the results
    code uses too (bot.results.spec), so the bot never accepts a config results would refuse."""
    labels, label_problems = read_label_config(data)
    for key, message in label_problems:
        p.add(key, message)
    return labels


def _text(
    data: dict[str, Any], p: ConfigProblems, key: str, *, required: bool, default: str = ""
) -> str:
    value = data.get(key)
    if value is None:
        if required:
            p.add(key, "missing. Add it to the file, e.g. `" + EXAMPLES[key] + "`.")
        return default
    if not isinstance(value, str) or not value.strip():
        p.add(key, f"must be non-empty text, found {value!r}. Example: `{EXAMPLES[key]}`.")
        return default
    return value


def _check_buckets(data: dict[str, Any], p: ConfigProblems) -> _Buckets:
    data_bucket = _text(data, p, "data_bucket", required=True)
    template_bucket = _text(data, p, "template_bucket", required=True)
    output_bucket = _text(data, p, "output_bucket", required=False) or (
        f"{data_bucket}-output" if data_bucket else ""
    )
    for key, bucket in (("data_bucket", data_bucket), ("template_bucket", template_bucket)):
        if bucket and (why := bucket_name_problem(bucket)):
            p.add(key, why + " Example: `lab-mouse-sagemaker`.")
    if output_bucket and (why := bucket_name_problem(output_bucket)):
        if "output_bucket" in data:
            p.add("output_bucket", why)
        elif data_bucket and not bucket_name_problem(data_bucket):
            p.add(
                "data_bucket",
                f"the output bucket is named after it ({output_bucket!r}): {why} "
                "Shorten data_bucket or set output_bucket.",
            )
    names = [b for b in (data_bucket, output_bucket, template_bucket) if b]
    if len(set(names)) != len(names):
        p.add(
            "template_bucket", "data, output and template buckets must be three different buckets."
        )
    return _Buckets(data=data_bucket, template=template_bucket, output=output_bucket)


def _check_region(data: dict[str, Any], p: ConfigProblems) -> str:
    """The region when SageMaker has it, else "" (the job checks that compare with it skip)."""
    region = _text(data, p, "region", required=True)
    if not region or region in known_regions():
        return region
    hint = suggest(region, set(known_regions()))
    p.add(
        "region",
        f"{region!r} is not an AWS region with SageMaker."
        + (f" Did you mean {hint!r}?" if hint else " Example: `region: us-east-1`."),
    )
    return ""


def _check_instructions(
    data: dict[str, Any], config_file: Path, p: ConfigProblems
) -> _Instructions:
    return _Instructions(
        header=_text(
            data, p, "header", required=False, default="Label the body parts of each animal."
        ),
        short=_text(
            data,
            p,
            "short_instructions",
            required=False,
            default="Click on each body part of each animal.",
        ),
        full=_text(
            data,
            p,
            "full_instructions",
            required=False,
            default="<p>Click on each body part of each animal.</p>",
        ),
        image=_check_instruction_image(data, config_file, p),
    )


def _check_instruction_image(
    data: dict[str, Any], config_file: Path, p: ConfigProblems
) -> Path | None:
    raw_image = data.get("instruction_image")
    if raw_image is None:
        return None
    candidate = config_file.parent / str(raw_image)
    if not isinstance(raw_image, str) or candidate.suffix.lower() not in IMAGE_FILE_SUFFIXES:
        p.add(
            "instruction_image",
            f"must be the path of a .png/.jpg/.gif file in the project, found {raw_image!r}.",
        )
    elif not _inside(candidate, config_file.parent):
        # `template` uploads this file to S3: a path (or a link) leading out of the project
        # would publish any file the bot's host can read.
        p.add(
            "instruction_image",
            f"{raw_image!r} is outside the project folder. Put the image in the project "
            "(e.g. `instruction_image: instructions.png`) and give its path from there.",
        )
    elif not candidate.is_file():
        p.add(
            "instruction_image",
            f"{candidate} does not exist. Put the image there or remove the key to use the default.",
        )
    else:
        return candidate
    return None


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path`, links and `..` resolved, lies within `folder`."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a link loop
        return False
