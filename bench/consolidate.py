"""Benchmark of `bot.results.consolidate` against the JSON parse floor.

Generates N frames x 5 workers x 14 keypoints (the demo two-mouse project) in the recipe
manifest form to a temp file, then measures in the same run:
  - the parse floor: `orjson.loads` of every line and of every worker content string, from the
    same binary file handle. `bot.results` reads lines with orjson and content strings with
    msgspec; msgspec's plain decode of the content strings measured the same (17.3 against
    17.5 us a frame), so the floor keeps orjson for both;
  - the full consolidation (read, consensus with flip correction, agreement, every result
    file: four exports, agreement.json, three pictures, problems.csv), with
    the manifest passed as a binary file handle, so it uses two processes on a 2-core machine
    (`--workers 1` forces the single-process path for comparison).
Peak memory is ru_maxrss after each phase (tracemalloc would slow the run), of this process and
of its largest child (the second reading process); their sum bounds the run's peak.

    .venv/bin/python bench/consolidate.py [--frames 100000] [--workers 1|2] [--consensus robust]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.results import LabelSpec, consolidate  # noqa: E402
from bot.synthetic import MARS_KEYPOINTS, MARS_PAIRS  # noqa: E402

SPEC = LabelSpec(
    species="mouse", animals=("black", "white"), keypoints=MARS_KEYPOINTS, check_pairs=MARS_PAIRS
)
WORKERS = 5
WIDTH, HEIGHT = 1024, 570


def generate(path: Path, frames: int, seed: int = 1, hostile: bool = False) -> None:
    """The manifest; with `hostile`, of every 50 frames one has 30 workers (the usual 5 six
    times, under new ids) and one claims a 1e20-pixel-wide image in every answer."""
    rng = random.Random(seed)
    pool = [f"private.us-east-2.{rng.getrandbits(64):016x}" for _ in range(40)]
    offsets = [(0, 0), (-10, 12), (10, 12), (0, 25), (-15, 60), (15, 60), (0, 85)]
    with open(path, "w") as out:
        for f in range(frames):
            centres = {a: (rng.uniform(150, 870), rng.uniform(120, 380)) for a in SPEC.animals}
            workers = []
            for worker in rng.sample(pool, WORKERS):
                flip = rng.random() < 0.1
                points = []
                for animal, (cx, cy) in centres.items():
                    for k, name in enumerate(SPEC.keypoints):
                        if rng.random() < 0.01:
                            continue  # a point the worker missed
                        kk = {1: 2, 2: 1, 4: 5, 5: 4}.get(k, k) if flip else k
                        dx, dy = offsets[kk]
                        x = min(max(cx + dx + rng.gauss(0, 3), 0), WIDTH)
                        y = min(max(cy + dy + rng.gauss(0, 3), 0), HEIGHT)
                        label = f"{animal} mouse {name}"
                        points.append({"label": label, "x": round(x, 1), "y": round(y, 1)})
                content = {
                    "annotatedResult": {
                        "inputImageProperties": {"height": HEIGHT, "width": WIDTH},
                        "keypoints": points,
                    }
                }
                workers.append(
                    {"workerId": worker, "annotationData": {"content": json.dumps(content)}}
                )
            if hostile and f % 50 == 0:
                workers = [
                    dict(w, workerId=f"{w['workerId']}-{i}") for i in range(6) for w in workers
                ]
            elif hostile and f % 50 == 1:
                for w in workers:
                    w["annotationData"]["content"] = w["annotationData"]["content"].replace(
                        f'"width": {WIDTH}', '"width": 1e20'
                    )
            record = {
                "source-ref": f"s3://lab-frames/bench/images/frame_{f:06d}.jpg",
                "annotatedResult": {"annotationsFromAllWorkers": workers},
                "annotatedResult-metadata": {
                    "type": "groundtruth/custom",
                    "job-name": "bench",
                    "human-annotated": "yes",
                },
            }
            out.write(json.dumps(record) + "\n")


def parse_floor(path: Path) -> float:
    start = time.perf_counter()
    with open(path, "rb") as lines:
        for line in lines:
            record = orjson.loads(line)
            for worker in record["annotatedResult"]["annotationsFromAllWorkers"]:
                orjson.loads(worker["annotationData"]["content"])
    return time.perf_counter() - start


def rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=None, help="default: automatic")
    parser.add_argument(
        "--hostile", action="store_true", help="every 50 frames a 30-worker line and a 1e20 one"
    )
    parser.add_argument(
        "--consensus", choices=("median", "robust"), default="median", help="the estimator"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "output.manifest"
        t0 = time.perf_counter()
        generate(manifest, args.frames, hostile=args.hostile)
        print(
            f"generated {args.frames} frames ({manifest.stat().st_size / 1e6:.0f} MB) "
            f"in {time.perf_counter() - t0:.1f} s; rss {rss_mb():.0f} MB"
        )
        floor = parse_floor(manifest)
        rss_before = rss_mb()
        print(
            f"parse floor: {floor:.2f} s ({args.frames / floor:,.0f} frames/s); "
            f"rss {rss_before:.0f} MB"
        )

        def no_fetch(uri: str) -> bytes:
            raise FileNotFoundError(uri)

        start = time.perf_counter()
        with open(manifest, "rb") as lines:
            summary = consolidate(
                lines,
                SPEC,
                Path(tmp) / "out",
                fetch=no_fetch,
                load_image=lambda ref: None,
                workers=args.workers,
                consensus=args.consensus,
            )
        took = time.perf_counter() - start
        peak = rss_mb()
        child = rss_mb(resource.RUSAGE_CHILDREN)
        sizes = {p.name: p.stat().st_size / 1e6 for p in summary.files.all()}
        print(
            f"consolidate: {took:.2f} s ({summary.frames_consolidated / took:,.0f} frames/s), "
            f"{took / floor:.2f}x the parse floor"
        )
        print(
            f"peak rss: {peak:.0f} MB (before consolidate {rss_before:.0f} MB); "
            f"largest child {child:.0f} MB; sum {peak + child:.0f} MB"
        )
        print(
            f"frames {summary.frames_consolidated}, skipped {summary.frames_skipped}, "
            f"flip-corrected frames {summary.flip_corrected_frames}, "
            f"problems {summary.problem_count}"
        )
        print("files (MB): " + ", ".join(f"{k} {v:.1f}" for k, v in sizes.items()))


if __name__ == "__main__":
    main()
