"""One pass over an output manifest: read, batch, consolidate, write the six result files.

Every batch is turned into a `BatchResult` (export text, agreement figures, preview
candidates) by `BatchWork`, which needs the batch alone; the results are then folded into the
files and figures in manifest order. One process does both in turn, or two processes share the
batches (`bot.results.parallel`) and the main one folds; the files are the same either way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path

from bot.results.agreement import AgreementAccumulator, KeypointAgreement
from bot.results.batch import BatchResult, BatchWork
from bot.results.exports import ResultWriter
from bot.results.parallel import PARALLEL_MIN_LINES, local_manifest, parallel_results
from bot.results.pictures import LoadImage, PreviewPicker, agreement_png, preview_png
from bot.results.reader import Fetch, Problem, ReadReport, read_batches
from bot.results.spec import LabelSpec

# Manifest lines (so at most that many frames) per numpy batch: large enough that per-call
# overhead vanishes, small enough that a batch's arrays (frames x workers x slots x 2 doubles)
# stay in a core's cache; 512 measured a few per cent faster than 1,024 or 2,048.
BATCH_FRAMES = 512

FILE_NAMES = {
    "coco": "coco-keypoints.json",
    "csv": "keypoints.csv",
    "mars": "processed_keypoints.json",
    "agreement": "agreement.json",
    "preview": "preview.png",
    "agreement_chart": "agreement.png",
}


@dataclass(frozen=True, slots=True)
class ResultFiles:
    coco: Path
    csv: Path
    mars: Path
    agreement: Path
    preview: Path
    agreement_chart: Path

    @classmethod
    def in_dir(cls, out_dir: Path) -> ResultFiles:
        return cls(**{key: out_dir / name for key, name in FILE_NAMES.items()})

    def all(self) -> tuple[Path, ...]:
        return (
            self.coco,
            self.csv,
            self.mars,
            self.agreement,
            self.preview,
            self.agreement_chart,
        )


@dataclass(frozen=True, slots=True)
class ConsolidationSummary:
    """What a consolidation produced; `problems` is capped, `problem_count` is not."""

    job_name: str | None
    frames_consolidated: int
    frames_skipped: int
    problems: tuple[Problem, ...]
    problem_count: int
    workers: int
    flip_corrected_frames: int
    files: ResultFiles
    keypoints: tuple[KeypointAgreement, ...]


def consolidate(
    manifest_lines: Iterable[str] | Iterable[bytes],
    spec: LabelSpec,
    out_dir: Path,
    *,
    fetch: Fetch,
    load_image: LoadImage,
    job_name: str | None = None,
    label_attribute: str | None = None,
    batch_frames: int = BATCH_FRAMES,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ConsolidationSummary:
    """Stream the manifest once and write the six result files into `out_dir`.

    Memory is bounded by a few batches, the agreement histograms (workers x labels) and the
    few preview frames, whatever the number of frames. Files are written under a `.part` name
    and renamed when complete, so a failure never leaves a truncated file that looks finished.

    `workers` is how many processes read the manifest: None lets a binary file handle on a
    local file (`open(path, "rb")`) of at least `PARALLEL_MIN_LINES` lines use two when the
    machine has two cores, 1 forces one process, 2 uses two for any local binary file handle.
    The files and the summary are the same either way (see `bot.results.parallel`).
    `progress` hears how many manifest lines were read so far, after each batch.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ResultFiles.in_dir(out_dir)
    report = ReadReport()
    writer = ResultWriter((files.coco, files.csv, files.mars), spec, job_name)
    results = _results(
        manifest_lines,
        spec,
        fetch=fetch,
        report=report,
        label_attribute=label_attribute,
        batch_frames=batch_frames,
        workers=workers,
        writer=writer,
    )
    agreement = AgreementAccumulator(spec)
    picker = PreviewPicker()
    try:
        for result in results:
            writer.add(result.texts)
            agreement.merge(result.agreement)
            picker.merge(result.preview)
            if progress:
                progress(report.lines)
    except BaseException:
        results.close()  # stops the second process too
        writer.abort()
        raise
    # Finishing the exports is mostly a copy in the kernel (no GIL): draw meanwhile.
    with ThreadPoolExecutor(1, thread_name_prefix="gtbot-exports") as finishing:
        closed = finishing.submit(writer.close)
        name = job_name or report.job_name
        keypoints = agreement.keypoints()
        document = agreement.to_json(name)
        document["frames_skipped"] = report.frames_skipped
        document["problem_count"] = report.problem_count
        _write_json(files.agreement, document)
        preview_png(files.preview, spec, picker.chosen(), load_image)
        agreement_png(
            files.agreement_chart,
            spec.keypoints,
            [k.median_px for k in keypoints],
            f"Worker agreement per keypoint ({agreement.frames} frames"
            + (f", {name})" if name else ")"),
        )
        closed.result()
    return ConsolidationSummary(
        job_name=name,
        frames_consolidated=agreement.frames,
        frames_skipped=report.frames_skipped,
        problems=tuple(report.problems),
        problem_count=report.problem_count,
        workers=len(agreement.worker_names),
        flip_corrected_frames=agreement.flip_frames,
        files=files,
        keypoints=keypoints,
    )


def _results(
    manifest_lines: Iterable[str] | Iterable[bytes],
    spec: LabelSpec,
    *,
    fetch: Fetch,
    report: ReadReport,
    label_attribute: str | None,
    batch_frames: int,
    workers: int | None,
    writer: ResultWriter,
) -> Generator[BatchResult, None, None]:
    """Every usable batch's result in manifest order, from one process or two."""
    manifest = None
    if workers is None:
        if (os.cpu_count() or 1) >= 2:
            manifest = local_manifest(manifest_lines, PARALLEL_MIN_LINES)
    elif workers >= 2:
        manifest = local_manifest(manifest_lines, None)
    if manifest is not None:
        yield from parallel_results(
            manifest,
            spec,
            fetch=fetch,
            report=report,
            label_attribute=label_attribute,
            batch_lines=batch_frames,
            writer=writer,
        )
        # Leave the caller's handle where the sequential path would: at the end.
        if isinstance(manifest_lines, BufferedReader):
            manifest_lines.seek(0, os.SEEK_END)
        return
    work = BatchWork(spec)
    for batch in read_batches(
        manifest_lines,
        spec,
        fetch=fetch,
        report=report,
        label_attribute=label_attribute,
        batch_lines=batch_frames,
    ):
        yield work(batch)


def _write_json(path: Path, document: object) -> None:
    part = path.with_name(path.name + ".part")
    with open(part, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=2, allow_nan=False)
        out.write("\n")
    os.replace(part, path)
