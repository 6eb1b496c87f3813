"""Benchmark the job watcher with many watched jobs: AWS calls and time per tick.

Usage: .venv/bin/python bench/watcher.py [--jobs 200] [--ticks 8] [--rate 40]

Starts moto S3, the Ground Truth emulator and the tests' Slack stub on loopback, creates `--jobs`
labeling jobs (2 frames, 1 worker each) and watches each in its own channel, then runs the real
Watcher with the real SlackNotifier. The claim under test: one paginated list_labeling_jobs per
region per tick serves every job, so the AWS calls a tick makes equal the number of list pages
(100 jobs a page) whatever the number of jobs. Counted twice: by the watcher (`TickReport`) and
by the emulator (every SageMaker request it answered, retries included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

REGION = "us-east-2"
TEAM = f"arn:aws:sagemaker:{REGION}:123456789012:workteam/private-crowd/sandbox-labelers"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=8, help="ticks while the jobs progress")
    parser.add_argument("--rate", type=float, default=8.0, help="emulated tasks per second")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="gtbot-bench-watcher-"))
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "GTBOT_DATABASE_URL": f"sqlite:///{workdir / 'gtbot.db'}",
            "GTBOT_POLL_SECONDS": "1",
        }
    )
    os.environ.pop("AWS_PROFILE", None)

    import boto3
    from slack_stub import SlackStub

    from aws.emulator.groundtruth import EmulatorSettings, start_groundtruth_emulator
    from aws.emulator.moto_s3 import start_local_s3
    from bot.context import Context
    from bot.jobs.watcher import Watcher
    from bot.settings import Settings
    from bot.state import Store
    from bot.synthetic import MARS_KEYPOINTS, draw_frames
    from handlers.slack import SlackNotifier, web_client

    s3_server = start_local_s3()
    emulator = start_groundtruth_emulator(
        s3_server.url, EmulatorSettings(rate=0.0, initializing_seconds=0.0, seed=1)
    )
    stub = SlackStub()
    os.environ["AWS_ENDPOINT_URL_S3"] = s3_server.url
    os.environ["AWS_ENDPOINT_URL_SAGEMAKER"] = emulator.url
    try:
        s3 = boto3.client("s3", region_name=REGION, endpoint_url=s3_server.url)
        sm = boto3.client("sagemaker", region_name=REGION, endpoint_url=emulator.url)
        for bucket in ("bench-frames", "bench-frames-output"):
            s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
            )
        lines = []
        for frame in draw_frames(workdir / "frames", 2, width=200, height=150):
            s3.upload_file(str(frame), "bench-frames", frame.name)
            lines.append(json.dumps({"source-ref": f"s3://bench-frames/{frame.name}"}) + "\n")
        s3.put_object(Bucket="bench-frames", Key="manifest.json", Body="".join(lines).encode())
        # The emulator renders every task from the job's template, as Ground Truth does.
        labels = [f"{a} mouse {k}" for a in ("black", "white") for k in MARS_KEYPOINTS]
        template = (
            '<crowd-form><crowd-keypoint src="{{ task.input.source-ref | grant_read_access }}" '
            f"labels='{json.dumps(labels)}' name=\"annotatedResult\"></crowd-keypoint></crowd-form>"
        )
        s3.put_object(Bucket="bench-frames", Key="template.html", Body=template.encode())

        settings = Settings.from_env()
        store = Store(settings.database_url)
        ctx = Context(settings=settings, store=store)
        started = time.perf_counter()
        for i in range(args.jobs):
            name = f"bench-job-{i:04d}"
            sm.create_labeling_job(
                LabelingJobName=name,
                LabelAttributeName="annotatedResult",
                InputConfig={
                    "DataSource": {
                        "S3DataSource": {"ManifestS3Uri": "s3://bench-frames/manifest.json"}
                    }
                },
                OutputConfig={"S3OutputPath": "s3://bench-frames-output/jobs/"},
                RoleArn="arn:aws:iam::123456789012:role/service-role/BenchRole",
                HumanTaskConfig={
                    "WorkteamArn": TEAM,
                    "UiConfig": {"UiTemplateS3Uri": "s3://bench-frames/template.html"},
                    "TaskTitle": "Label the mice",
                    "TaskDescription": "Place every keypoint",
                    "NumberOfHumanWorkersPerDataObject": 1,
                    "TaskTimeLimitInSeconds": 300,
                },
            )
            store.add_watch(job_name=name, region=REGION, channel=f"C{i:04d}")
        print(f"created and watched {args.jobs} jobs in {time.perf_counter() - started:.1f} s")
        pages = -(-args.jobs // 100)

        notifier = SlackNotifier(web_client("xoxb-bench", stub.api_url))
        watcher = Watcher(ctx, store, notifier, lease_seconds=60)
        rows: list[tuple[str, float, int, int, int, int]] = []

        def tick(label: str) -> None:
            before = len(emulator.calls)
            slack_before = len(stub.calls)
            t0 = time.perf_counter()
            report = watcher.tick()
            took = time.perf_counter() - t0
            seen = len(emulator.calls) - before
            rows.append(
                (
                    label,
                    took,
                    report.aws_calls,
                    seen,
                    len(report.updated),
                    len(stub.calls) - slack_before,
                )
            )

        tick("first (posts every card)")
        emulator.settings.update({"rate": args.rate})
        for i in range(args.ticks):
            time.sleep(1.0)
            tick(f"progressing {i + 1}")
        emulator.settings.update({"rate": 0.0})
        tick("settling")
        active = len(store.active_watches())
        for i in range(3):
            tick(f"quiet {i + 1} (nothing changed)")

        print(f"\n{args.jobs} watched jobs, {pages} list page(s) expected per tick\n")
        print(
            "| tick | time | AWS calls (watcher) | SageMaker requests (emulator) | cards changed | Slack calls |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for label, took, counted, seen, changed, slack in rows:
            print(f"| {label} | {took * 1000:.0f} ms | {counted} | {seen} | {changed} | {slack} |")
        quiet = [r[1] for r in rows if r[0].startswith("quiet")]
        print(
            f"\nquiet tick median: {statistics.median(quiet) * 1000:.0f} ms "
            f"with {active} jobs still watched"
        )
        worst = max(r[2] for r in rows)
        print(f"max AWS calls in a tick: {worst} (bound: {pages}; <= 3 required)")
        ok = all(r[2] == r[3] == pages for r in rows)
        print("every tick made exactly one call per list page:", "yes" if ok else "NO")
        return 0 if ok else 1
    finally:
        stub.stop()
        emulator.stop()
        s3_server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
