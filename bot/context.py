"""What every use case needs from its surroundings, passed in rather than imported."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws.clients import ClientFactory
from bot.project import ProjectConfig, load_project
from bot.settings import Settings
from bot.state import Store

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    """Progress sink for callers that do not show progress."""


@dataclass
class Context:
    settings: Settings
    clients: ClientFactory = field(default_factory=ClientFactory)
    progress: Progress = _quiet
    store: Store | None = None

    def project(self, name: str) -> ProjectConfig:
        return load_project(self.settings.projects_dir, name, self.settings.lab_job_defaults)

    def s3(self, project: ProjectConfig) -> Any:
        return self.clients.s3(project.region)

    def sagemaker(self, region: str) -> Any:
        return self.clients.sagemaker(region)

    def with_progress(self, progress: Progress) -> Context:
        return Context(
            settings=self.settings, clients=self.clients, progress=progress, store=self.store
        )
