"""The one place boto3 clients are made.

Clients are built once per (service, region) and shared: boto3 clients are thread-safe, sessions
are not. Endpoints come from boto3's own AWS_ENDPOINT_URL* variables, which is how the sandbox
and the tests point gtbot at the local emulators without any gtbot-specific switch.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

RETRY_CONFIG = Config(
    retries={"mode": "adaptive", "max_attempts": 10},
    connect_timeout=10,
    read_timeout=60,
    max_pool_connections=32,
)


class ClientFactory:
    """Hands out shared clients; the region always comes from the project."""

    def __init__(self, session: boto3.session.Session | None = None) -> None:
        self._session = session or boto3.session.Session()
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str, region: str) -> Any:
        key = (service, region)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = self._session.client(
                    service, region_name=region, config=RETRY_CONFIG
                )
            return self._clients[key]

    def s3(self, region: str) -> Any:
        return self.client("s3", region)

    def sagemaker(self, region: str) -> Any:
        return self.client("sagemaker", region)

    def default_region(self) -> str | None:
        """The region of the environment or profile, for commands that name no project."""
        return self._session.region_name
