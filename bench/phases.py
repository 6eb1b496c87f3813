"""Where consolidation's time goes, per frame, one process: the figures of "Where the time goes"
in bench/README.md, and the msgspec-against-orjson figure the parse floor relies on.

The manifest is `bench/consolidate.py`'s (5 workers x 14 keypoints, recipe form), held in
memory so no phase pays for the disk. Each phase runs on its own over every frame, in the order
`bot.results` runs them, and is divided by the frame count:

  - one line's `orjson.loads`, and the five worker answers decoded three ways: msgspec into the
    reader's typed records (what `bot.results` does), msgspec plain (`msgspec.json.decode`, to
    dicts) and orjson (the parse floor's choice);
  - reading: `read_batches`, i.e. all of the above plus every check and the typed arrays;
  - per batch, as `BatchWork` does: consensus, export text, agreement, preview candidates;
  - the whole `consolidate(..., workers=1)` from a binary file handle; what it spends beyond
    the phases above is files, folding batches in order and the pictures.

    .venv/bin/python bench/phases.py [--frames 20000] [--repeat 3]

Each figure is the best of `--repeat` runs (the machine is shared; the best is the least
disturbed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from consolidate import SPEC, generate  # noqa: E402

from bot.results import consolidate  # noqa: E402
from bot.results.agreement import agreement_part  # noqa: E402
from bot.results.batch import worker_seconds  # noqa: E402
from bot.results.consensus import consensus_batch  # noqa: E402
from bot.results.exports import BatchEncoder  # noqa: E402
from bot.results.pictures import PreviewPicker  # noqa: E402
from bot.results.reader import (  # noqa: E402
    FrameBatch,
    ReadReport,
    _content_decoder,
    read_batches,
)


def best(repeat: int, run: Callable[[], object]) -> float:
    """The shortest of `repeat` runs, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def no_fetch(uri: str) -> bytes:
    raise FileNotFoundError(uri)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, repeat = args.frames, args.repeat
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "output.manifest"
        generate(manifest, n)
        lines = manifest.read_bytes().splitlines(keepends=True)
        contents = [
            [
                w["annotationData"]["content"]
                for w in orjson.loads(line)["annotatedResult"]["annotationsFromAllWorkers"]
            ]
            for line in lines
        ]
        typed = _content_decoder(tuple(SPEC.label_index.items())).decode
        rows: list[tuple[str, float]] = []

        def each_line() -> None:
            for line in lines:
                orjson.loads(line)

        def answers(decode: Callable[[str], object]) -> Callable[[], None]:
            def run() -> None:
                for frame in contents:
                    for content in frame:
                        decode(content)

            return run

        rows.append(("orjson of the line", best(repeat, each_line)))
        rows.append(
            ("5 answers, msgspec typed records (bot.results)", best(repeat, answers(typed)))
        )
        rows.append(("5 answers, msgspec plain decode", best(repeat, answers(msgspec.json.decode))))
        rows.append(("5 answers, orjson (the parse floor)", best(repeat, answers(orjson.loads))))

        def read() -> list[FrameBatch]:
            return list(read_batches(lines, SPEC, fetch=no_fetch, report=ReadReport()))

        batches = read()
        reading = best(repeat, read)
        rows.append(("reading (read_batches: the above, checks, typed arrays)", reading))

        results = [consensus_batch(b.coords, SPEC) for b in batches]
        encoder, picker = BatchEncoder(SPEC, "bench"), PreviewPicker()
        phases = {
            "consensus": lambda: [consensus_batch(b.coords, SPEC) for b in batches],
            "export text (four exports)": lambda: [
                encoder.encode(b, c) for b, c in zip(batches, results, strict=True)
            ],
            "agreement": lambda: [
                agreement_part(SPEC, c, b.workers, worker_seconds(b))
                for b, c in zip(batches, results, strict=True)
            ],
            "preview candidates": lambda: [
                picker.candidates(b, c) for b, c in zip(batches, results, strict=True)
            ],
        }
        for name, run in phases.items():
            rows.append((name, best(repeat, run)))

        def whole() -> None:
            with open(manifest, "rb") as handle:
                consolidate(
                    handle,
                    SPEC,
                    Path(tmp) / "out",
                    fetch=no_fetch,
                    load_image=lambda ref: None,
                    workers=1,
                )

        total = best(repeat, whole)
        parts = reading + sum(t for name, t in rows if name in phases)
        rows.append(("the rest: files, folding in order, pictures", total - parts))
        rows.append(("consolidate, one process (total)", total))

    print(f"{n} frames x 5 workers x 14 keypoints, one process, best of {repeat}\n")
    print("| phase | us per frame |")
    print("|---|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds / n * 1e6:.1f} |")


if __name__ == "__main__":
    main()
