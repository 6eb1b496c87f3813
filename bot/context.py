"""What every use case needs from its surroundings, passed in rather than imported."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aws.clients import ClientFactory
from bot.progress import LineProgress, Progress
from bot.project import ProjectConfig, load_project
from bot.settings import Settings

if TYPE_CHECKING:  # SQLAlchemy takes a third of a second to import; a terminal command needs none
    from bot.state import Store


@dataclass
class Context:
    settings: Settings
    clients: ClientFactory = field(default_factory=ClientFactory)
    progress: Progress = field(default_factory=Progress)
    store: Store | None = None

    def project(self, name: str) -> ProjectConfig:
        return load_project(self.settings.projects_dir, name, self.settings.lab_job_defaults)

    def s3(self, project: ProjectConfig) -> Any:
        return self.clients.s3(project.region)

    def sagemaker(self, region: str) -> Any:
        return self.clients.sagemaker(region)

    def with_progress(self, progress: Progress | Callable[[str], None]) -> Context:
        """The same context reporting elsewhere; a plain callable gets the progress as lines."""
        if not isinstance(progress, Progress):
            progress = LineProgress(progress)
        return Context(
            settings=self.settings, clients=self.clients, progress=progress, store=self.store
        )
