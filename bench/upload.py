"""Benchmark `gtbot upload` against `aws s3 sync`, side by side, on the same local S3.

Usage: .venv/bin/python bench/upload.py --aws /path/to/aws [--frames 1000] [--rounds 3]

Draws N JPEG frames (640x480, noise, about 100 KB each: a noise image does not compress, so
the bytes are those of real frames of that size), starts moto's S3 server on loopback, and in
each round times, as separate processes each with its own start-up:

  gtbot first    `gtbot upload bench` into an empty bucket, with no upload cache
  aws first      `aws s3 sync raw-images s3://<another empty bucket>/bench/images/`
  gtbot again    the same `gtbot upload bench`, nothing changed
  aws again      the same `aws s3 sync`, nothing changed

The order of gtbot and aws alternates between rounds. awscli is not a gtbot dependency (it
pins its own botocore): install it in a venv of its own, see bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aws.emulator.moto_s3 import start_local_s3  # noqa: E402

REGION = "us-east-2"


def draw(images: Path, n: int) -> int:
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    total = 0
    for i in range(n):
        pixels = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
        path = images / f"frame_{i:06d}.jpg"
        Image.fromarray(pixels).save(path, quality=60)
        total += path.stat().st_size
    return total


def project(projects: Path, bucket: str, frames: int) -> Path:
    config = yaml.safe_load((ROOT / "tests" / "samples" / "project-config.yml").read_text())
    config.update({"data_bucket": bucket, "template_bucket": f"{bucket}-ui", "region": REGION})
    folder = projects / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "project-config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aws", required=True, help="the aws command (awscli) to compare with")
    parser.add_argument("--frames", type=int, default=1000, help="frames to upload (1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, order alternating (3)")
    args = parser.parse_args()
    gtbot = str(Path(sys.executable).parent / "gtbot")

    work = Path(tempfile.mkdtemp(prefix="gtbot-bench-upload-"))
    server = start_local_s3()
    try:
        projects = work / "projects"
        folder = project(projects, "placeholder", args.frames)
        images = folder / "annotation-data" / "raw-images"
        size = draw(images, args.frames)
        print(f"{args.frames} frames, {size / 1e6:.0f} MB, moto S3 at {server.url}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GTBOT_"))} | {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL_S3": server.url,
            "AWS_EC2_METADATA_DISABLED": "true",
            "GTBOT_PROJECTS_DIR": str(projects),
        }
        s3 = boto3.client(
            "s3",
            region_name=REGION,
            endpoint_url=server.url,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        times: dict[str, list[float]] = {k: [] for k in ("gtbot first", "aws first")}
        times |= {"gtbot again": [], "aws again": []}
        for round_ in range(args.rounds):
            ours, theirs = f"bench-gtbot-{round_}", f"bench-aws-{round_}"
            for bucket in (ours, theirs):
                s3.create_bucket(
                    Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
                )
            project(projects, ours, args.frames)
            cache = folder / "annotation-data" / ".gtbot-upload-cache.json"
            cache.unlink(missing_ok=True)
            run_ours = [gtbot, "upload", "bench"]
            run_theirs = [
                args.aws,
                "s3",
                "sync",
                str(images),
                f"s3://{theirs}/bench/images/",
                "--endpoint-url",
                server.url,
                "--only-show-errors",
                "--no-progress",
            ]
            order = [("gtbot", run_ours), ("aws", run_theirs)]
            if round_ % 2:
                order.reverse()
            for phase in ("first", "again"):
                for name, argv in order:
                    times[f"{name} {phase}"].append(timed(argv, env))
            listed = [
                sum(1 for _ in s3.list_objects_v2(Bucket=b).get("Contents", []))
                for b in (ours, theirs)
            ]
            assert listed == [args.frames, args.frames], listed
            print(
                f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
            )
        print(f"\nmedian of {args.rounds} rounds ({args.frames} frames):")
        for phase in ("first", "again"):
            ours_t = statistics.median(times[f"gtbot {phase}"])
            theirs_t = statistics.median(times[f"aws {phase}"])
            print(
                f"  {phase:5}  gtbot {ours_t:6.2f} s   aws s3 sync {theirs_t:6.2f} s   "
                f"gtbot/aws {ours_t / theirs_t:.2f}"
            )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
