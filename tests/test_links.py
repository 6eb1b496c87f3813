"""A link's stated expiry is its real one: GTBOT_LINK_HOURS, or sooner when the credentials
that sign it expire sooner (role sessions and SSO last 1-12 h)."""

from __future__ import annotations

import re
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aws.clients import ClientFactory
from aws.groundtruth import JobInfo
from aws.s3 import link_lifetime, presign_get
from bot.context import Context
from bot.jobs.watcher import completion_links, completion_text
from bot.settings import Settings

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def test_lifetime_is_the_earlier_of_the_setting_and_the_credentials() -> None:
    plain = link_lifetime(24 * 3600, None, NOW)
    assert (plain.seconds, plain.cut_by_credentials) == (86_400, False)
    assert plain.text() == "valid for 24 h, until 2026-05-05 10:00 UTC"
    short = link_lifetime(24 * 3600, NOW + timedelta(minutes=40), NOW)
    assert (short.seconds, short.cut_by_credentials) == (2400, True)
    assert short.text().startswith("valid for only 40 min, until 2026-05-04 10:40 UTC: the AWS")
    assert "ask for `results` again for fresh links" in short.text()
    assert (
        link_lifetime(24 * 3600, NOW + timedelta(hours=3, minutes=30), NOW)
        .text()
        .startswith("valid for only 3 h 30 min")
    )
    assert link_lifetime(24 * 3600, NOW + timedelta(days=2), NOW).seconds == 86_400
    assert link_lifetime(30 * 86_400, None, NOW).seconds == 604_800  # S3's 7-day ceiling
    assert link_lifetime(3600, NOW - timedelta(minutes=5), NOW).seconds == 1


def test_the_expiry_of_temporary_credentials_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ClientFactory().credentials_expire_at() is None  # the tests' plain keys
    expiry = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=45)
    monkeypatch.setenv("AWS_CREDENTIAL_EXPIRATION", expiry.isoformat())
    assert ClientFactory().credentials_expire_at() == expiry


def test_a_completion_post_states_and_signs_the_real_lifetime(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expiry = datetime.now(UTC) + timedelta(minutes=30)
    monkeypatch.setenv("AWS_CREDENTIAL_EXPIRATION", expiry.isoformat())
    ctx = Context(
        settings=Settings.from_env({"GTBOT_PROJECTS_DIR": str(tmp_path)}), clients=ClientFactory()
    )
    job = JobInfo(
        name="demo-1",
        arn="arn:aws:sagemaker:us-east-2:123456789012:labeling-job/demo-1",
        status="Completed",
        created=None,
        output_dataset_uri="s3://out/demo/demo-1/manifests/output/output.manifest",
    )
    assert "X-Amz" not in completion_text(job)  # the text names, links sign
    links = completion_links(ctx, job, "us-east-2")
    assert links is not None
    assert links.title in ("Links (valid for only 29 min", "Links (valid for only 30 min") or (
        links.title.startswith(("Links (valid for only 29 min", "Links (valid for only 30 min"))
    )
    ((name, url),) = links.items
    assert name == "output.manifest"
    signed = re.search(r"X-Amz-Expires=(\d+)", url)
    assert signed is not None and 1700 < int(signed.group(1)) <= 1800


@pytest.mark.parametrize("region", ["us-east-1", "us-west-2", "eu-central-1"])
def test_a_link_is_signed_v4_on_the_buckets_own_endpoint(
    region: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Browsers open the links, so nothing re-signs them: botocore's own default in the old
    regions (SigV2 on the global endpoint) is refused for buckets made since June 2020, and
    a bucket younger than a day is redirected away from the signed host (aws/clients.py)."""
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    url = presign_get(ClientFactory().s3(region), "lab-output", "demo-1/output.manifest", 3600)
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    regional = "s3" if region == "us-east-1" else f"s3.{region}"  # us-east-1's is the global
    assert (parts.scheme, parts.hostname) == ("https", f"lab-output.{regional}.amazonaws.com")
    assert parts.path == "/demo-1/output.manifest"
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert f"/{region}/s3/aws4_request" in query["X-Amz-Credential"][0]


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", "http://minio:9000"])
def test_an_emulator_or_minio_keeps_path_style_links(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    url = presign_get(ClientFactory().s3("us-west-2"), "lab-output", "k.png", 60)
    assert url.startswith(f"{endpoint}/lab-output/k.png?X-Amz-Algorithm=AWS4-HMAC-SHA256&")
