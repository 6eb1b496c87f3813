"""The project model: a folder with `project-config.yml` and frames, validated before any AWS call.

The config accepts MARS's keys unchanged, so a lab can point gtbot at an existing MARS project.
Every problem is reported with the file, the line, the key and what to write instead, all at once,
because a lab manager fixing a config one error per run gives up quickly.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import yaml

from bot import yamlio
from bot.adaptive import (
    DEFAULT_MAX_ROUNDS,
    DEFAULT_SELECT,
    DEFAULT_WORKERS_PER_ROUND,
    MAX_ROUNDS,
    MAX_WORKERS_PER_FRAME,
    AdaptivePolicy,
    FrameRule,
)
from bot.errors import ConfigError, NotFoundError, UsageError
from bot.results.spec import LabelSpec, read_label_config

CONFIG_NAMES = (
    "project-config.yml",
    "project_config.yaml",
    "project-config.yaml",
    "project_config.yml",
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
PROJECT_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")

# USD per task that the public crowd accepts for custom tasks (SageMaker API model).
PUBLIC_CROWD_PRICES = tuple(
    Decimal(p)
    for p in (
        "0.012", "0.024", "0.036", "0.048", "0.060", "0.072", "0.120", "0.240",
        "0.360", "0.480", "0.600", "0.720", "0.840", "0.960", "1.080", "1.200",
    )
)  # fmt: skip

TOP_KEYS = {
    "project_name", "species", "animal_names", "num_obj", "keypoints", "check_pairs",
    "data_bucket", "output_bucket", "template_bucket", "region", "header",
    "short_instructions", "full_instructions", "instruction_image", "job", "label_map",
}  # fmt: skip
JOB_KEYS = {
    "workteam_arn", "role_arn", "workers_per_image", "task_time_limit_seconds",
    "task_availability_seconds", "max_concurrent_tasks", "title", "description", "keywords",
    "price_usd", "pre_lambda_arn", "consolidation_lambda_arn", "consensus", "adaptive",
}  # fmt: skip
ADAPTIVE_KEYS = {"select", "workers_per_round", "max_rounds", "budget_usd"}
CONSENSUS_METHODS = ("median", "robust")

WORKTEAM_ARN_RE = re.compile(
    r"^arn:aws[a-z\-]*:sagemaker:(?P<region>[a-z0-9\-]+):(?P<account>\d{12}):"
    r"workteam/(?P<kind>private-crowd|public-crowd|vendor-crowd)/[A-Za-z0-9\-_.]+$"
)
ROLE_ARN_RE = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/[\w+=,.@\-/]{1,512}$")
LAMBDA_ARN_RE = re.compile(
    r"^arn:aws[a-z\-]*:lambda:[a-z0-9\-]+:\d{12}:function:[A-Za-z0-9\-_]+(:[\w$-]+)?$"
)
KEYWORD_RE = re.compile(r"^[A-Za-z0-9]+( [A-Za-z0-9]+)*$")


# TaskAvailabilityLifetimeInSeconds per workforce (SageMaker API model, HumanTaskConfig): the
# public crowd allows at most 12 hours and defaults to 6; private and vendor teams default to,
# and for most accounts allow at most, 30 days. An object nobody labels in time fails.
PUBLIC_AVAILABILITY_MAX = 43_200
TEAM_AVAILABILITY_MAX = 2_592_000
DEFAULT_AVAILABILITY = {
    "public": PUBLIC_AVAILABILITY_MAX,
    "private": 2_592_000,
    "vendor": 2_592_000,
}
# "MaxConcurrentTaskCount ... The default value is 1000 objects. To increase the maximum value to
# 5000 objects, contact Amazon Web Services Support." (SageMaker API model, HumanTaskConfig)
MAX_CONCURRENT_WITHOUT_SUPPORT = 1000


@dataclass(frozen=True)
class JobConfig:
    """The `job:` section after merging lab defaults; role and workteam may still be unset."""

    workteam_arn: str | None = None
    role_arn: str | None = None
    workers_per_image: int = 5
    task_time_limit_seconds: int = 300
    task_availability_seconds: int | None = None  # None: the workforce's default (below)
    max_concurrent_tasks: int | None = None
    title: str = "Label body parts of the animals"
    description: str = "Click on each body part of each animal in the image"
    keywords: tuple[str, ...] = ("pose", "keypoints", "animal")
    price_usd: Decimal | None = None
    pre_lambda_arn: str | None = None
    consolidation_lambda_arn: str | None = None
    # "median" (MARS's) or "robust" (bot/results/robust.py); None: robust for jobs with
    # follow-up rounds or an adaptive policy, median otherwise.
    consensus: str | None = None
    adaptive: AdaptivePolicy | None = None

    def consensus_for(self, rounds: bool) -> str:
        """The estimator for a job's results; `rounds`: it has follow-up rounds."""
        if self.consensus is not None:
            return self.consensus
        return "robust" if rounds or self.adaptive is not None else "median"

    @property
    def workteam_kind(self) -> str:
        """private, public or vendor: it decides whether a price and classifiers are sent."""
        match = WORKTEAM_ARN_RE.match(self.workteam_arn or "")
        kind = match.group("kind") if match else "private-crowd"
        return {"private-crowd": "private", "public-crowd": "public", "vendor-crowd": "vendor"}[
            kind
        ]

    @property
    def availability_seconds(self) -> int:
        """How long each task stays on offer: the setting, else 12 hours for the public crowd
        (its maximum; MARS's value) and 30 days for a private or vendor team (the service's
        default), so a lab team working through a large job over days is not cut off at 12 h."""
        if self.task_availability_seconds is not None:
            return self.task_availability_seconds
        return DEFAULT_AVAILABILITY[self.workteam_kind]


@dataclass(frozen=True)
class ProjectConfig:
    """One validated project; `labels` is what workers see and what the output manifest holds."""

    name: str
    path: Path
    config_file: Path
    species: str
    animal_names: tuple[str, ...]
    num_obj: int
    keypoints: tuple[str, ...]
    check_pairs: tuple[tuple[str, str], ...]
    data_bucket: str
    template_bucket: str
    output_bucket: str
    region: str
    header: str
    short_instructions: str
    full_instructions: str
    instruction_image: Path | None
    job: JobConfig = field(default_factory=JobConfig)
    label_map: tuple[tuple[str, str], ...] = ()

    @cached_property
    def label_spec(self) -> LabelSpec:
        """What workers are asked to place, as the results code reads it (one definition)."""
        return LabelSpec(
            species=self.species,
            animals=self.animal_names,
            keypoints=self.keypoints,
            check_pairs=self.check_pairs,
            num_obj=self.num_obj,
            label_map=self.label_map,
        )

    @property
    def labels(self) -> tuple[str, ...]:
        return self.label_spec.labels

    @property
    def images_dir(self) -> Path:
        return self.path / "annotation-data" / "raw-images"

    @property
    def template_file(self) -> Path:
        return self.path / "annotation-data" / "annotation-interface.template"

    @property
    def results_dir(self) -> Path:
        return self.path / "annotation-data" / "results"

    @property
    def images_prefix(self) -> str:
        return f"{self.name}/images/"

    @property
    def manifest_key(self) -> str:
        return f"{self.name}/manifests/input.manifest"

    @property
    def template_key(self) -> str:
        return f"{self.name}/annotation-interface.template"

    @property
    def instruction_image_key(self) -> str:
        suffix = self.instruction_image.suffix.lower() if self.instruction_image else ".png"
        return f"{self.name}/instructions{suffix}"

    @property
    def output_prefix(self) -> str:
        return f"{self.name}/"


# --------------------------------------------------------------------------- locations


def _yaml_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path to its 1-based line, so messages can say where to look."""
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yamlio.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = str(key_node.value)
                lines[path + (key,)] = key_node.start_mark.line + 1
                walk(value_node, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (str(i),)] = item.start_mark.line + 1
                walk(item, path + (str(i),))

    if root is not None:
        walk(root, ())
    return lines


@dataclass
class _Problems:
    """Collects every problem of one config, each pinned to a file, a line and a key."""

    file: Path
    lines: dict[tuple[str, ...], int]
    items: list[str] = field(default_factory=list)

    def add(self, key: str, message: str, *, source: str | None = None) -> None:
        path = tuple(key.split("."))
        where = source
        if where is None:
            line = self.lines.get(path)
            while line is None and len(path) > 1:
                path = path[:-1]
                line = self.lines.get(path)
            where = f"{self.file}, line {line}" if line else str(self.file)
        self.items.append(f"{where}, key `{key}`: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            count = len(self.items)
            head = f"{self.file} has {count} problem{'s' if count > 1 else ''}:"
            raise ConfigError(head + "\n" + "\n".join(f"- {item}" for item in self.items))


# --------------------------------------------------------------------------- rules


# SageMaker's endpoint prefix (botocore SageMaker model, metadata.endpointPrefix), named here so
# that listing its regions does not load the whole 4 MB service model first (a tenth of a
# second of every command's start-up); tests/test_cli.py checks it against the model.
SAGEMAKER_ENDPOINT_PREFIX = "api.sagemaker"


@cache
def known_regions() -> frozenset[str]:
    """Regions botocore knows for SageMaker in every partition, read from its own data (what
    boto3's `get_available_regions("sagemaker")` answers, partition by partition)."""
    from botocore.loaders import create_loader
    from botocore.regions import EndpointResolver

    resolver = EndpointResolver(create_loader().load_data("endpoints"))
    regions: set[str] = set()
    for partition in resolver.get_available_partitions():
        regions.update(resolver.get_available_endpoints(SAGEMAKER_ENDPOINT_PREFIX, partition))
    return frozenset(regions)


def bucket_name_problem(name: str) -> str | None:
    """Why S3 would refuse this bucket name, or None; the rules are S3's general-purpose ones."""
    if not 3 <= len(name) <= 63:
        return f"{name!r} is {len(name)} characters long; S3 bucket names have 3 to 63."
    if not re.fullmatch(r"[a-z0-9.\-]+", name):
        return f"{name!r} may only contain lowercase letters, digits, dots and hyphens."
    if not (name[0].isalnum() and name[-1].isalnum()):
        return f"{name!r} must begin and end with a lowercase letter or a digit."
    if ".." in name:
        return f"{name!r} has two dots in a row."
    try:
        ipaddress.IPv4Address(name)
        return f"{name!r} looks like an IP address, which S3 does not allow."
    except ValueError:
        pass
    for prefix in ("xn--", "sthree-", "amzn-s3-demo-"):
        if name.startswith(prefix):
            return f"{name!r} starts with {prefix!r}, which S3 reserves."
    for suffix in ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"):
        if name.endswith(suffix):
            return f"{name!r} ends with {suffix!r}, which S3 reserves."
    return None


def _suggest(key: str, choices: set[str]) -> str | None:
    match = difflib.get_close_matches(key, sorted(choices), n=1, cutoff=0.75)
    return match[0] if match else None


def _as_str_list(value: Any) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        return [v.strip() for v in value]
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- loading


def find_config_file(project_dir: Path) -> Path | None:
    for name in CONFIG_NAMES:
        candidate = project_dir / name
        if candidate.is_file():
            return candidate
    return None


def project_dir_for(projects_dir: Path, name: str) -> Path:
    """The folder of a project, refusing names that would escape the projects folder."""
    if not PROJECT_NAME_RE.match(name):
        raise ConfigError(
            f"{name!r} is not a valid project name. Use 1 to 40 lowercase letters, digits and "
            "hyphens, starting and ending with a letter or digit (it becomes part of S3 keys "
            "and job names), e.g. `mouse-pose`."
        )
    return projects_dir / name


def load_project(
    projects_dir: Path, name: str, lab_job_defaults: Mapping[str, Any] | None = None
) -> ProjectConfig:
    project_dir = project_dir_for(projects_dir, name)
    if not project_dir.is_dir():
        raise NotFoundError(
            f"There is no project {name!r} in {projects_dir}. Create it with `init {name}`, "
            "or set GTBOT_PROJECTS_DIR to the folder that holds your projects."
        )
    config_file = find_config_file(project_dir)
    if config_file is None:
        raise NotFoundError(
            f"{project_dir} has no project-config.yml (nor MARS's project_config.yaml). "
            f"Run `init {name}` in an empty folder to get a commented one."
        )
    return parse_project(config_file, name, lab_job_defaults or {})


def parse_project(
    config_file: Path, name: str, lab_job_defaults: Mapping[str, Any]
) -> ProjectConfig:
    text, data = yamlio.load_file(config_file)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{config_file}: expected `key: value` lines (a mapping), found "
            f"{type(data).__name__}. Start from `init` for a commented example."
        )
    problems = _Problems(config_file, _yaml_lines(text))
    return _validate(data, config_file, name, lab_job_defaults, problems)


def _validate(
    data: dict[str, Any],
    config_file: Path,
    name: str,
    lab_job_defaults: Mapping[str, Any],
    p: _Problems,
) -> ProjectConfig:
    for key in data:
        if not isinstance(key, str):
            p.add(str(key), "keys must be text.")
            continue
        # MARS has many more keys (tfrecord settings and the like): ignore those, but a near
        # miss of one of ours is a typo that would otherwise silently fall back to a default.
        if key not in TOP_KEYS and (hint := _suggest(key, TOP_KEYS)):
            p.add(key, f"unknown key; did you mean `{hint}`?")

    def text(key: str, *, required: bool, default: str = "") -> str:
        value = data.get(key)
        if value is None:
            if required:
                p.add(key, "missing. Add it to the file, e.g. `" + _EXAMPLES[key] + "`.")
            return default
        if not isinstance(value, str) or not value.strip():
            p.add(key, f"must be non-empty text, found {value!r}. Example: `{_EXAMPLES[key]}`.")
            return default
        return value

    # Species, animals, keypoints, pairs and label_map follow the one definition the results
    # code uses too (bot.results.spec), so the bot never accepts a config results would refuse.
    labels, label_problems = read_label_config(data)
    for key, message in label_problems:
        p.add(key, message)

    data_bucket = text("data_bucket", required=True)
    template_bucket = text("template_bucket", required=True)
    output_bucket = text("output_bucket", required=False) or (
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

    region = text("region", required=True)
    region_ok = bool(region) and region in known_regions()
    if region and not region_ok:
        hint = _suggest(region, set(known_regions()))
        p.add(
            "region",
            f"{region!r} is not an AWS region with SageMaker."
            + (f" Did you mean {hint!r}?" if hint else " Example: `region: us-east-1`."),
        )

    header = text("header", required=False, default="Label the body parts of each animal.")
    short = text(
        "short_instructions", required=False, default="Click on each body part of each animal."
    )
    full = text(
        "full_instructions",
        required=False,
        default="<p>Click on each body part of each animal.</p>",
    )

    instruction_image: Path | None = None
    if data.get("instruction_image") is not None:
        raw_image = data["instruction_image"]
        candidate = config_file.parent / str(raw_image)
        if not isinstance(raw_image, str) or candidate.suffix.lower() not in (
            ".png",
            ".jpg",
            ".jpeg",
            ".gif",
        ):
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
            instruction_image = candidate

    job = _validate_job(data.get("job"), lab_job_defaults, region if region_ok else "", p)
    p.raise_if_any()
    return ProjectConfig(
        name=name,
        path=config_file.parent,
        config_file=config_file,
        species=labels.species if labels else "",
        animal_names=labels.animals if labels else (),
        num_obj=labels.num_obj if labels else 1,
        keypoints=labels.keypoints if labels else (),
        check_pairs=labels.check_pairs if labels else (),
        data_bucket=data_bucket,
        template_bucket=template_bucket,
        output_bucket=output_bucket,
        region=region,
        header=header,
        short_instructions=short,
        full_instructions=full,
        instruction_image=instruction_image,
        job=job,
        label_map=labels.label_map if labels else (),
    )


_EXAMPLES = {
    "species": "species: mouse",
    "data_bucket": "data_bucket: lab-mouse-sagemaker",
    "template_bucket": "template_bucket: lab-mouse-sagemaker-ui",
    "output_bucket": "output_bucket: lab-mouse-sagemaker-output",
    "region": "region: us-east-1",
    "header": "header: Label body parts of the two mice.",
    "short_instructions": "short_instructions: Click on each body part.",
    "full_instructions": "full_instructions: <p>Detailed instructions</p>",
    "job.title": "title: Label mouse body parts",
    "job.description": "description: Click on each body part of each mouse",
}


def _validate_job(
    raw: Any, lab_defaults: Mapping[str, Any], region: str, p: _Problems
) -> JobConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        p.add(
            "job", f"must be a mapping of job settings, found {raw!r}. See `init` for an example."
        )
        raw = {}
    for key in raw:
        if key not in JOB_KEYS:
            hint = _suggest(str(key), JOB_KEYS)
            p.add(
                f"job.{key}",
                "unknown job setting."
                + (
                    f" Did you mean `{hint}`?"
                    if hint
                    else f" Known settings: {', '.join(sorted(JOB_KEYS))}."
                ),
            )

    def value(key: str) -> tuple[Any, str | None]:
        """The value and, when it came from the lab defaults, where (for the message)."""
        if key in raw:
            return raw[key], None
        if key in lab_defaults:
            src = (
                "GTBOT_ROLE_ARN"
                if key == "role_arn"
                else "GTBOT_WORKTEAM_ARN"
                if key == "workteam_arn"
                else "gtbot.yml"
            )
            return lab_defaults[key], f"lab default ({src} or gtbot.yml)"
        return None, None

    out: dict[str, Any] = {}

    def check_int(key: str, lo: int, hi: int, fix: str) -> None:
        v, src = value(key)
        if v is None:
            return
        if not _is_int(v):
            p.add(f"job.{key}", f"must be a whole number, found {v!r}. {fix}", source=src)
        elif not lo <= v <= hi:
            p.add(f"job.{key}", f"{v} is outside {lo}..{hi}. {fix}", source=src)
        else:
            out[key] = v

    check_int("workers_per_image", 1, 9, "Write a number from 1 to 9 (MARS recommends 5).")
    check_int(
        "task_time_limit_seconds", 30, 28800, "Write seconds from 30 to 28800 (8 hours), e.g. 300."
    )
    check_int(
        "task_availability_seconds",
        60,
        TEAM_AVAILABILITY_MAX,
        "Write seconds from 60 to 2592000 (30 days; the public crowd allows at most 43200, "
        "12 hours), or remove the key for the workforce's default.",
    )
    check_int(
        "max_concurrent_tasks",
        1,
        5000,
        "Write a number from 1 to 5000 (above 1000 needs AWS Support), or remove the key.",
    )

    def check_arn(key: str, pattern: re.Pattern[str], example: str) -> None:
        v, src = value(key)
        if v is None:
            return
        if not isinstance(v, str) or not pattern.match(v.strip()):
            p.add(
                f"job.{key}",
                f"{v!r} is not an ARN of the right form. Expected e.g. `{example}`.",
                source=src,
            )
        else:
            out[key] = v.strip()

    check_arn(
        "workteam_arn",
        WORKTEAM_ARN_RE,
        "arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/my-team",
    )
    check_arn(
        "role_arn",
        ROLE_ARN_RE,
        "arn:aws:iam::123456789012:role/service-role/AmazonSageMaker-ExecutionRole",
    )
    check_arn(
        "pre_lambda_arn", LAMBDA_ARN_RE, "arn:aws:lambda:us-east-1:123456789012:function:gt-pre"
    )
    check_arn(
        "consolidation_lambda_arn",
        LAMBDA_ARN_RE,
        "arn:aws:lambda:us-east-1:123456789012:function:gt-post",
    )

    workteam = out.get("workteam_arn")
    if workteam and region:
        team_region = WORKTEAM_ARN_RE.match(workteam).group("region")  # type: ignore[union-attr]
        if team_region != region:
            p.add(
                "job.workteam_arn",
                f"the workteam is in {team_region} but the project's region is "
                f"{region}; Ground Truth needs both in the same region.",
                source=value("workteam_arn")[1],
            )

    for key, limit in (("title", 128), ("description", 255)):
        v, src = value(key)
        if v is None:
            continue
        if not isinstance(v, str) or not v.strip():
            p.add(
                f"job.{key}",
                f"must be non-empty text. Example: `{_EXAMPLES['job.' + key]}`.",
                source=src,
            )
        elif len(v) > limit:
            p.add(
                f"job.{key}",
                f"is {len(v)} characters; Ground Truth allows at most {limit}.",
                source=src,
            )
        else:
            out[key] = v.strip()

    kw, src = value("keywords")
    if kw is not None:
        words = _as_str_list(kw)
        if not words or not 1 <= len(words) <= 5:
            p.add(
                "job.keywords",
                f"must be a list of 1 to 5 keywords, found {kw!r}. Example: `keywords: [pose, mouse]`.",
                source=src,
            )
        else:
            bad = [w for w in words if len(w) > 30 or not KEYWORD_RE.match(w)]
            if bad:
                p.add(
                    "job.keywords",
                    f"{bad[0]!r} is not allowed: keywords are letters, digits and single "
                    "spaces, at most 30 characters.",
                    source=src,
                )
            else:
                out["keywords"] = tuple(words)

    kind = JobConfig(workteam_arn=workteam).workteam_kind if workteam else None
    price, src = value("price_usd")
    if price is not None:
        try:
            dec = Decimal(str(price))
        except InvalidOperation:
            dec = None
        if isinstance(price, bool) or dec is None:
            p.add("job.price_usd", f"must be a number of US dollars, found {price!r}.", source=src)
        elif kind in ("private", "vendor"):
            p.add(
                "job.price_usd",
                f"a {kind} workteam takes no price per task; remove `price_usd`.",
                source=src,
            )
        elif not any(dec == allowed for allowed in PUBLIC_CROWD_PRICES):
            allowed = ", ".join(str(a) for a in PUBLIC_CROWD_PRICES)
            nearest = min(PUBLIC_CROWD_PRICES, key=lambda a: abs(a - dec))  # type: ignore[operator]
            p.add(
                "job.price_usd",
                f"{price} is not a price the public crowd accepts. Use one of: {allowed} "
                f"(nearest: {nearest}).",
                source=src,
            )
        else:
            out["price_usd"] = next(a for a in PUBLIC_CROWD_PRICES if a == dec)
    elif kind == "public":
        p.add("job.price_usd", "the public crowd needs a price per task, e.g. `price_usd: 0.036`.")

    availability = out.get("task_availability_seconds")
    if kind == "public" and availability is not None and availability > PUBLIC_AVAILABILITY_MAX:
        p.add(
            "job.task_availability_seconds",
            f"{availability} is too long for the public crowd, which allows at most 43200 "
            "(12 hours). Write 43200 or less, or remove the key.",
            source=value("task_availability_seconds")[1],
        )
    consensus, src = value("consensus")
    if consensus is not None:
        if consensus not in CONSENSUS_METHODS:
            p.add(
                "job.consensus",
                f"must be `median` (MARS's per-keypoint median) or `robust` (gtbot's, which "
                f"weighs each click by how believable it is), found {consensus!r}.",
                source=src,
            )
        else:
            out["consensus"] = consensus
    adaptive, src = value("adaptive")
    if adaptive is not None:
        policy = _validate_adaptive(adaptive, kind, out.get("workers_per_image", 5), p, src)
        if policy is not None:
            out["adaptive"] = policy
    # Pre-annotation and consolidation Lambdas are independently optional (botocore >= 1.35.26
    # model: neither is required in HumanTaskConfig), so either may be set alone.
    return JobConfig(**out)


def _validate_adaptive(
    raw: Any, kind: str | None, first_workers: int, p: _Problems, src: str | None
) -> AdaptivePolicy | None:
    """The `job: adaptive:` section: automatic follow-up rounds (bot/adaptive.py)."""
    if not isinstance(raw, dict):
        p.add(
            "job.adaptive",
            f"must be a mapping, found {raw!r}. Example: `adaptive: {{select: worst 25%, "
            "workers_per_round: 1, max_rounds: 3, budget_usd: 40}}`.",
            source=src,
        )
        return None
    count = len(p.items)
    for key in raw:
        if key not in ADAPTIVE_KEYS:
            hint = _suggest(str(key), ADAPTIVE_KEYS)
            p.add(
                f"job.adaptive.{key}",
                "unknown setting."
                + (
                    f" Did you mean `{hint}`?"
                    if hint
                    else f" Known settings: {', '.join(sorted(ADAPTIVE_KEYS))}."
                ),
                source=src,
            )
    if kind == "vendor":
        p.add(
            "job.adaptive",
            "a vendor workforce sets its own price, which gtbot cannot see, so it cannot keep "
            "automatic rounds within a budget. Remove `adaptive` and run `relabel <job>` when "
            "you want another round.",
            source=src,
        )
    select = None
    try:
        select = FrameRule.parse(raw.get("select", DEFAULT_SELECT), "`select`")
    except UsageError as exc:
        p.add("job.adaptive.select", exc.user_message, source=src)
    numbers: dict[str, int] = {}
    for key, lo, hi, default in (
        ("workers_per_round", 1, 9, DEFAULT_WORKERS_PER_ROUND),
        ("max_rounds", 2, MAX_ROUNDS, DEFAULT_MAX_ROUNDS),
    ):
        v = raw.get(key, default)
        if not _is_int(v) or not lo <= v <= hi:
            p.add(
                f"job.adaptive.{key}",
                f"must be a whole number from {lo} to {hi}, found {v!r}.",
                source=src,
            )
        else:
            numbers[key] = v
    if len(numbers) == 2:
        most = first_workers + (numbers["max_rounds"] - 1) * numbers["workers_per_round"]
        if most > MAX_WORKERS_PER_FRAME:
            p.add(
                "job.adaptive",
                f"a frame could get {most} answers in all ({first_workers} + "
                f"{numbers['max_rounds'] - 1} rounds x {numbers['workers_per_round']}); gtbot "
                f"uses at most {MAX_WORKERS_PER_FRAME} a frame. Lower max_rounds or "
                "workers_per_round.",
                source=src,
            )
    budget = None
    raw_budget = raw.get("budget_usd")
    if raw_budget is not None:
        try:
            budget = Decimal(str(raw_budget))
        except InvalidOperation:
            budget = None
        if isinstance(raw_budget, bool) or budget is None or not budget.is_finite() or budget <= 0:
            p.add(
                "job.adaptive.budget_usd",
                f"must be a positive number of US dollars, found {raw_budget!r}.",
                source=src,
            )
            budget = None
        elif kind == "private":
            p.add(
                "job.adaptive.budget_usd",
                "a private team takes no price per task, so there is no worker pay to cap; "
                "rounds are bounded by `max_rounds`. Remove `budget_usd`.",
                source=src,
            )
        elif budget > Decimal(10_000_000):
            p.add("job.adaptive.budget_usd", f"{raw_budget} is not a plausible budget.", source=src)
        else:
            # Whole cents, never above what was written.
            budget = budget.quantize(Decimal("0.01"), rounding=ROUND_DOWN)
    elif kind == "public":
        p.add(
            "job.adaptive.budget_usd",
            "automatic rounds on the public crowd spend money without anyone clicking Launch, "
            "so they need a cap: add e.g. `budget_usd: 40` (US dollars of worker pay for all "
            "rounds together, the first included).",
            source=src,
        )
    if len(p.items) > count or select is None:
        return None
    return AdaptivePolicy(
        select=select,
        workers_per_round=numbers["workers_per_round"],
        max_rounds=numbers["max_rounds"],
        budget_usd=budget,
    )


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path`, links and `..` resolved, lies within `folder`."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a link loop
        return False


def require_job_identity(project: ProjectConfig) -> tuple[str, str]:
    """Role and workteam are needed only to launch; say where to set them when absent."""
    missing = []
    if not project.job.role_arn:
        missing.append(("role_arn", "GTBOT_ROLE_ARN"))
    if not project.job.workteam_arn:
        missing.append(("workteam_arn", "GTBOT_WORKTEAM_ARN"))
    if missing:
        what = " and ".join(f"`job.{k}`" for k, _ in missing)
        env = " / ".join(e for _, e in missing)
        raise ConfigError(
            f"{project.config_file}: {what} not set. Add it under `job:` in the project's config, "
            f"or set it lab-wide with {env} or in gtbot.yml (`job: {{{missing[0][0]}: arn:...}}`)."
        )
    return project.job.role_arn or "", project.job.workteam_arn or ""


def list_images(project: ProjectConfig) -> list[Path]:
    """Frames under raw-images, nested folders included, in a stable order."""
    root = project.images_dir
    if not root.is_dir():
        return []
    return sorted(
        path for path in root.rglob("*") if path.is_file() and not path.name.startswith(".")
    )


ProgressFn = Callable[[str], None]
