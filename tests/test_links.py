"""A link's stated expiry is its real one: GTBOT_LINK_HOURS, or sooner when the credentials
that sign it expire sooner (role sessions and SSO last 1-12 h)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aws.clients import ClientFactory
from aws.groundtruth import JobInfo
from aws.s3 import link_lifetime
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
    assert "X-Amz" not in completion_text(ctx, job, "us-east-2")  # the text names, links sign
    links = completion_links(ctx, job, "us-east-2")
    assert links is not None
    assert links.title in ("Links (valid for only 29 min", "Links (valid for only 30 min") or (
        links.title.startswith(("Links (valid for only 29 min", "Links (valid for only 30 min"))
    )
    ((name, url),) = links.items
    assert name == "output.manifest"
    signed = re.search(r"X-Amz-Expires=(\d+)", url)
    assert signed is not None and 1700 < int(signed.group(1)) <= 1800
