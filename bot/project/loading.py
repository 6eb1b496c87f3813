"""Finding a project's config file and turning it into a validated `ProjectConfig`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bot import yamlio
from bot.errors import ConfigError, NotFoundError
from bot.project.model import ProjectConfig
from bot.project.problems import ConfigProblems, yaml_lines
from bot.project.validation import validate_project

CONFIG_NAMES = (
    "project-config.yml",
    "project_config.yaml",
    "project-config.yaml",
    "project_config.yml",
)


PROJECT_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")


def find_config_file(project_dir: Path) -> Path | None:
    """gtbot's name first, then MARS's spellings, so a MARS project folder works as it is."""
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
    return parse_project(require_config_file(project_dir, name), name, lab_job_defaults or {})


def require_config_file(project_dir: Path, name: str) -> Path:
    """The project's config file, or a message saying how to make `project_dir` a project."""
    config_file = find_config_file(project_dir)
    if config_file is None:
        raise NotFoundError(
            f"{project_dir} has no project-config.yml (nor MARS's project_config.yaml). "
            f"Run `init {name}` in an empty folder to get a commented one."
        )
    return config_file


def parse_project(
    config_file: Path, name: str, lab_job_defaults: Mapping[str, Any]
) -> ProjectConfig:
    text, data = yamlio.load_file(config_file)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{config_file}: expected `key: value` lines (a mapping), found "
            f"{type(data).__name__}. Start from `init` for a commented example."
        )
    problems = ConfigProblems(config_file, yaml_lines(text))
    return validate_project(data, config_file, name, lab_job_defaults, problems)
