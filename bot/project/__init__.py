"""The project model: a folder with `project-config.yml` and frames, validated before any AWS call.

The config accepts MARS's keys unchanged, so a lab can point gtbot at an existing MARS project.
Every problem is reported with the file, the line, the key and what to write instead, all at once,
because a lab manager fixing a config one error per run gives up quickly.

One module per concern: `model` (the validated project), `loading` (finding and parsing the
file), `validation` (project-level checks), `job_settings` and `adaptive_settings` (the `job:`
section), `aws_rules` (what AWS accepts), `problems` (messages pinned to lines).
"""

from bot.project.aws_rules import (
    MAX_CONCURRENT_WITHOUT_SUPPORT,
    ROLE_ARN_RE,
    SAGEMAKER_ENDPOINT_PREFIX,
    WORKTEAM_ARN_RE,
    bucket_name_problem,
    known_regions,
)
from bot.project.loading import (
    find_config_file,
    load_project,
    parse_project,
    project_dir_for,
    require_config_file,
)
from bot.project.model import (
    IMAGE_SUFFIXES,
    ProjectConfig,
    list_images,
    require_job_identity,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_CONCURRENT_WITHOUT_SUPPORT",
    "ROLE_ARN_RE",
    "SAGEMAKER_ENDPOINT_PREFIX",
    "WORKTEAM_ARN_RE",
    "ProjectConfig",
    "bucket_name_problem",
    "find_config_file",
    "known_regions",
    "list_images",
    "load_project",
    "parse_project",
    "project_dir_for",
    "require_config_file",
    "require_job_identity",
]
