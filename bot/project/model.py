"""The validated project and its job settings, and where its files and S3 keys live."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from pathlib import Path

from bot.errors import ConfigError
from bot.jobs.adaptive import (
    AdaptivePolicy,
)
from bot.project.aws_rules import DEFAULT_AVAILABILITY, WORKTEAM_ARN_RE
from bot.results.spec import LabelSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


CONSENSUS_METHODS = ("median", "robust")


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
