"""The one place boto3 clients are made.

Clients are built once per (service, region) and shared: boto3 clients are thread-safe, sessions
are not. Endpoints come from boto3's own AWS_ENDPOINT_URL* variables, which is how the sandbox
and the tests point gtbot at the local emulators without any gtbot-specific switch.
"""

from __future__ import annotations

import threading
import urllib.parse
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config

RETRY_CONFIG = Config(
    retries={"mode": "adaptive", "max_attempts": 10},
    connect_timeout=10,
    read_timeout=60,
    max_pool_connections=32,
)
# S3's presigned links are opened by browsers and Slack, not by boto3, so nothing follows a
# redirect or re-signs for them. botocore, in the regions older than 2014 (us-east-1,
# us-west-2...), presigns with Signature Version 2 on the legacy global endpoint:
# - S3 refuses SigV2 for buckets created after 24 June 2020, and in every newer region
#   (https://docs.aws.amazon.com/AmazonS3/latest/API/Appendix-Sigv2.html, "Specifying the
#   Signature Version in request authentication");
# - the global endpoint answers a bucket younger than a day with a 307 to its regional one,
#   and the link no longer matches its signature there (boto/boto3#1982, boto/boto3#2989), so
#   a lab's first job, a day after `setup` made its buckets, would post dead links.
# Hence SigV4 everywhere, and virtual-hosted addressing, which names the bucket's regional
# endpoint, only on AWS's own hosts: an emulator or MinIO under another name keeps paths.
S3_CONFIG = RETRY_CONFIG.merge(Config(signature_version="s3v4"))
S3_ON_AWS_CONFIG = S3_CONFIG.merge(Config(s3={"addressing_style": "virtual"}))
AWS_HOSTS = (".amazonaws.com", ".amazonaws.com.cn")


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
                self._clients[key] = self._make(service, region)
            return self._clients[key]

    def _make(self, service: str, region: str) -> Any:
        if service != "s3":
            return self._session.client(service, region_name=region, config=RETRY_CONFIG)
        client = self._session.client(service, region_name=region, config=S3_CONFIG)
        host = urllib.parse.urlsplit(client.meta.endpoint_url).hostname or ""
        if host.endswith(AWS_HOSTS):
            client = self._session.client(service, region_name=region, config=S3_ON_AWS_CONFIG)
        return client

    def s3(self, region: str) -> Any:
        return self.client("s3", region)

    def sagemaker(self, region: str) -> Any:
        return self.client("sagemaker", region)

    def credentials_expire_at(self) -> datetime | None:
        """When the credentials that sign requests and links expire; None for long-term keys.

        Temporary credentials (assumed roles, SSO, AWS_CREDENTIAL_EXPIRATION with a session token)
        are botocore RefreshableCredentials; reading them first refreshes them if they are about to
        expire, so the expiry returned is that of the credentials a signature made now uses.
        botocore has no public accessor for the expiry, hence the attribute.
        """
        credentials = self._session.get_credentials()
        if credentials is None:
            return None
        credentials.get_frozen_credentials()
        expiry = getattr(credentials, "_expiry_time", None)
        return expiry if isinstance(expiry, datetime) else None

    def default_region(self) -> str | None:
        """The region of the environment or profile, for commands that name no project."""
        return self._session.region_name
