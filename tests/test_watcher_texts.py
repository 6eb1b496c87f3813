"""What the watcher says of a job, word for word: the card's counters, the completion post, the
stall warning. The ticks themselves, against the emulators, are in test_watcher."""

from __future__ import annotations

from pathlib import Path

from aws.groundtruth import JobInfo, LabelCounters
from bot.context import Context
from bot.jobs.watcher import card_counters, completion_links, completion_text, stall_text
from bot.settings import Settings

COUNTS = LabelCounters(total_labeled=7, human_labeled=6, machine_labeled=1, failed=2, unlabeled=3)
OUT = "s3://lab-out/mice-1/manifests/output/output.manifest"


def _job(status: str, **extra: object) -> JobInfo:
    return JobInfo("mice-1", "arn:job/mice-1", status, None, COUNTS, **extra)  # type: ignore[arg-type]


def _ctx(tmp_path: Path) -> Context:
    return Context(settings=Settings(projects_dir=tmp_path, database_url="", lab_config_path=None))


def test_a_cards_counters() -> None:
    assert card_counters(_job("InProgress")) == {"labeled": 7, "failed": 2, "unlabeled": 3}


def test_completion_posts_word_for_word(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    counts = "7 labeled, 2 failed, 3 not labeled"
    assert completion_text(_job("Completed", output_dataset_uri=OUT)) == (
        f"mice-1 completed. Counts: {counts}.\nOutput manifest: {OUT}"
    )
    assert completion_text(_job("Stopped")) == (f"mice-1 stopped. Counts: {counts}.")
    what_to_check = (
        "What to check: the role's access to the buckets, the input manifest, the template, "
        "and the workteam (`doctor` checks them)."
    )
    failed = _job("Failed", failure_reason="ClientError: no access", output_dataset_uri=OUT)
    assert completion_text(failed) == (
        f"mice-1 failed: ClientError: no access.\nCounts: {counts}.\n{what_to_check}"
    )
    assert completion_text(_job("Failed")) == (
        f"mice-1 failed: no reason given.\nCounts: {counts}.\n{what_to_check}"
    )
    # A failed job's output is not offered, nor a job without one.
    assert completion_links(ctx, failed, "us-east-2") is None
    assert completion_links(ctx, _job("Stopped"), "us-east-2") is None


def test_a_completed_jobs_output_is_linked_for_as_long_as_the_link_lives(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    links = completion_links(ctx, _job("Completed", output_dataset_uri=OUT), "us-east-2")
    assert links is not None and links.title.startswith("Links (valid for 24 h, until ")
    [(name, url)] = links.items
    assert name == "output.manifest"
    assert "/mice-1/manifests/output/output.manifest?" in url and "X-Amz-Expires=86400" in url


def test_a_stall_warning_word_for_word() -> None:
    assert stall_text(_job("InProgress"), 6.0) == (
        "mice-1 has made no progress for 6 h (InProgress): 7 labeled, 2 failed, 3 not labeled. "
        "Workers may be passing its tasks by (price, instructions, task time) or the workteam "
        "may have nobody free. `status mice-1` shows it; `stop mice-1` stops it and keeps the "
        "labels made."
    )
    assert "for 1.5 h (" in stall_text(_job("InProgress"), 1.5)
