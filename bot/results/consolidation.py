"""One pass over an output manifest: read, batch, consolidate, write the six result files.

Every batch is turned into a `BatchResult` (export text, agreement figures, preview
candidates) by `BatchWork`, which needs the batch alone; the results are then folded into the
files and figures in manifest order. One process does both in turn, or two processes share the
batches (`bot.results.parallel`) and the main one folds; the files are the same either way.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path

from bot.errors import GtBotError
from bot.results.agreement import (
    AgreementAccumulator,
    KeypointAgreement,
    WorkerAgreement,
    worker_report,
)
from bot.results.batch import BatchResult, BatchWork
from bot.results.exports import DLC_SCORER, FRAME_COLUMNS, ResultWriter, csv_line
from bot.results.parallel import PARALLEL_MIN_LINES, local_manifest, parallel_results
from bot.results.pictures import (
    LoadImage,
    PreviewPicker,
    agreement_png,
    preview_png,
    workers_png,
)
from bot.results.reader import Fetch, Problem, ReadReport, read_batches
from bot.results.rounds import FollowUps, RoundSource
from bot.results.spec import LabelSpec

# Manifest lines (so at most that many frames) per numpy batch: large enough that per-call
# overhead vanishes, small enough that a batch's arrays (frames x workers x slots x 2 doubles)
# stay in a core's cache; 512 measured a few per cent faster than 1,024 or 2,048.
BATCH_FRAMES = 512

FILE_NAMES = {
    "coco": "coco-keypoints.json",
    "csv": "keypoints.csv",
    "mars": "processed_keypoints.json",
    "dlc": f"CollectedData_{DLC_SCORER}.csv",
    "agreement": "agreement.json",
    "preview": "preview.png",
    "agreement_chart": "agreement.png",
    "workers_chart": "workers.png",
    "frames": "frames.csv",
}
PROBLEMS_FILE = "problems.csv"
PROBLEM_COLUMNS = ("line", "worker", "reason")
# How many problems messages list before pointing at problems.csv.
SHOWN_PROBLEMS = 10


class NothingConsolidatedError(GtBotError):
    """No frame of the manifest could be consolidated: nothing was exported."""


@dataclass(frozen=True, slots=True)
class ResultFiles:
    coco: Path
    csv: Path
    mars: Path
    dlc: Path
    agreement: Path
    preview: Path
    agreement_chart: Path
    workers_chart: Path
    frames: Path

    @classmethod
    def in_dir(cls, out_dir: Path) -> ResultFiles:
        return cls(**{key: out_dir / name for key, name in FILE_NAMES.items()})

    def all(self) -> tuple[Path, ...]:
        return tuple(getattr(self, key) for key in FILE_NAMES)


@dataclass(frozen=True, slots=True)
class ConsolidationSummary:
    """What a consolidation produced; `problems` is capped, `problem_count` is not, and every
    problem is in `problems_file`."""

    job_name: str | None
    frames_consolidated: int
    frames_skipped: int
    problems: tuple[Problem, ...]
    problem_count: int
    workers: int
    flip_corrected_frames: int
    files: ResultFiles
    keypoints: tuple[KeypointAgreement, ...]
    problems_file: Path
    lines: int = 0
    unknown_labels: tuple[tuple[str, int], ...] = ()
    expected_labels: tuple[str, ...] = ()
    worker_report: tuple[WorkerAgreement, ...] = ()
    consensus: str = "median"
    # (workers, frames) for every number of workers a frame had, and each follow-up round
    # merged in as (job, frames it answered).
    workers_per_frame: tuple[tuple[int, int], ...] = ()
    rounds: tuple[tuple[str, int], ...] = ()


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
    consensus: str = "median",
    follow_ups: Sequence[RoundSource] = (),
) -> ConsolidationSummary:
    """Stream the manifest once and write the result files and `problems.csv` into `out_dir`.

    Memory is bounded by a few batches, the agreement histograms (workers x labels) and the
    few preview frames, whatever the number of frames. Files are written under a `.part` name
    and renamed when complete, so a failure never leaves a truncated file that looks finished.
    When no frame could be consolidated, no export is left in `out_dir` (earlier ones
    included) and `NothingConsolidatedError` says why; `problems.csv` stays.

    `workers` is how many processes read the manifest: None lets a binary file handle on a
    local file (`open(path, "rb")`) of at least `PARALLEL_MIN_LINES` lines use two when the
    machine has two cores, 1 forces one process, 2 uses two for any local binary file handle.
    The files and the summary are the same either way (see `bot.results.parallel`).
    `progress` hears how many manifest lines were read so far, after each batch.

    `consensus` is "median" (MARS's) or "robust" (bot/results/robust.py). `follow_ups` are the
    outputs of follow-up rounds of this job: their answers join each frame's own (one process).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ResultFiles.in_dir(out_dir)
    problems_file = out_dir / PROBLEMS_FILE
    problems = _CsvFile(problems_file, PROBLEM_COLUMNS)
    report = ReadReport(sink=problems.write)
    dlc_folder = _folder_name(job_name)
    extra: FollowUps | None = None
    try:
        frames = _CsvFile(files.frames, FRAME_COLUMNS)
    except BaseException:
        problems.abort()
        raise
    try:
        if follow_ups:
            extra = FollowUps(spec)
            for source in follow_ups:
                extra.read(source, problems.write, label_attribute)
            workers = 1
        writer = ResultWriter(
            (files.coco, files.csv, files.mars, files.dlc), spec, job_name, dlc_folder
        )
    except BaseException:
        problems.abort()
        frames.abort()
        raise
    results = _results(
        manifest_lines,
        spec,
        fetch=fetch,
        report=report,
        label_attribute=label_attribute,
        batch_frames=batch_frames,
        workers=workers,
        writer=writer,
        dlc_folder=dlc_folder,
        consensus=consensus,
        extra=extra,
        sink=problems.write,
    )
    agreement = AgreementAccumulator(spec)
    picker = PreviewPicker()
    try:
        for result in results:
            writer.add(result.texts)
            agreement.merge(result.agreement)
            picker.merge(result.preview)
            frames.add(result.frames)
            if progress:
                progress(report.lines)
        for ref in extra.unmatched() if extra is not None else ():
            problems.write(
                Problem(0, f"a follow-up round answered {ref[:300]}, which this job's output lacks")
            )
    except BaseException:
        results.close()  # stops the second process too
        writer.abort()
        problems.abort()
        frames.abort()
        raise
    problems.close()
    name = job_name or report.job_name
    if agreement.frames == 0:
        writer.abort()
        frames.abort()
        for path in files.all():
            path.unlink(missing_ok=True)
        raise NothingConsolidatedError(nothing_message(report, spec, problems_file))
    frames.close()
    # Finishing the exports is mostly a copy in the kernel (no GIL): draw meanwhile.
    with ThreadPoolExecutor(1, thread_name_prefix="gtbot-exports") as finishing:
        closed = finishing.submit(writer.close)
        keypoints = agreement.keypoints()
        document = agreement.to_json(name, consensus)
        document["frames_skipped"] = report.frames_skipped
        document["problem_count"] = report.problem_count
        rounds = tuple(extra.jobs) if extra is not None else ()
        if rounds:
            document["follow_up_rounds"] = [{"job": j, "frames": n} for j, n in rounds]
        _write_json(files.agreement, document)
        ranked = worker_report(document)
        preview_png(files.preview, spec, picker.chosen(), load_image)
        per_frame = agreement.workers_per_frame()
        agreement_png(
            files.agreement_chart,
            spec.keypoints,
            [k.median_px for k in keypoints],
            f"Worker agreement per keypoint ({agreement.frames} frames, "
            f"{workers_text(per_frame)}" + (f", {name})" if name else ")"),
        )
        workers_png(
            files.workers_chart,
            ranked,
            f"Workers, furthest from the consensus first ({len(ranked)} workers)",
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
        problems_file=problems_file,
        lines=report.lines,
        unknown_labels=_by_count(report.unknown_labels),
        expected_labels=spec.labels,
        worker_report=ranked,
        consensus=consensus,
        workers_per_frame=per_frame,
        rounds=rounds,
    )


def workers_text(per_frame: Sequence[tuple[int, int]]) -> str:
    """How many workers frames had, for titles: "5 workers each", "3-7 workers a frame"."""
    if not per_frame:
        return "no workers"
    low, high = per_frame[0][0], per_frame[-1][0]
    if low == high:
        return f"{low} worker{'s' if low != 1 else ''} each"
    return f"{low}-{high} workers a frame"


def _folder_name(job_name: str | None) -> str:
    """DeepLabCut's `labeled-data/<folder>` for this job's frames: the job name, made safe."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", job_name or "").strip(".-")
    return cleaned or "gtbot"


def _by_count(counts: dict[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def labels_text(
    expected: Sequence[str], unknown: Sequence[tuple[str, int]], shown: int = 20
) -> list[str]:
    """What the project expects and what workers sent instead, with counts, for messages."""
    if not unknown:
        return []
    lines = [
        f"Labels expected ({len(expected)}): "
        + ", ".join(expected[:shown])
        + (", ..." if len(expected) > shown else "")
    ]
    seen = ", ".join(f"{label!r} x{count:,}" for label, count in unknown[:shown])
    more = f", and {len(unknown) - shown} more" if len(unknown) > shown else ""
    lines.append(f"Labels seen that the project does not have: {seen}{more}")
    lines.append(
        "A bare keypoint name is read without configuration only when the project has one "
        "animal; otherwise map each label in project-config.yml, e.g. "
        f"`label_map: {{{unknown[0][0]!r}: {expected[0]!r}}}`."
    )
    return lines


def problems_text(problems: Sequence[Problem], count: int, problems_file: Path) -> list[str]:
    """The first problems and where the rest are."""
    if not count:
        return []
    out = [f"{count:,} problem{'s' if count > 1 else ''}:"]
    out += [f"  {problem.text()}" for problem in problems[:SHOWN_PROBLEMS]]
    if count > SHOWN_PROBLEMS:
        out.append(f"  ... {count - SHOWN_PROBLEMS:,} more in {problems_file}")
    else:
        out.append(f"  (also in {problems_file})")
    return out


def nothing_message(report: ReadReport, spec: LabelSpec, problems_file: Path) -> str:
    """Why a manifest gave no frame at all, for a person: what was expected, what was found,
    the first offending lines."""
    lines = report.lines
    out = [
        f"Nothing was consolidated: none of the {lines:,} lines of the manifest gave a usable "
        "frame, so no exports were written."
        if lines
        else "Nothing was consolidated: the manifest is empty, so no exports were written."
    ]
    if report.input_lines and report.input_lines >= report.frames_skipped:
        out.append(
            "This looks like an input manifest (lines with only a `source-ref`): give the "
            "job's output manifest instead, `<output bucket>/<prefix>/<job>/manifests/output/"
            "output.manifest`."
        )
    out.append(
        "Expected: output-manifest lines with each worker's keypoints (consolidated "
        "annotations or a `worker-response-ref`) labelled with this project's labels."
    )
    out += labels_text(spec.labels, _by_count(report.unknown_labels))
    out += problems_text(report.problems, report.problem_count, problems_file)
    return "\n".join(out)


class _CsvFile:
    """A CSV file written as its rows arrive, under a `.part` name until it is complete:
    `problems.csv` (line, worker, reason, in line order) and `frames.csv`."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = path
        self.part = path.with_name(path.name + ".part")
        self.file = open(self.part, "wb")  # noqa: SIM115 - closed by close() or abort()
        self.file.write(csv_line(columns))

    def write(self, problem: Problem) -> None:
        self.file.write(csv_line((str(problem.line), problem.worker or "", problem.reason)))

    def add(self, rows: bytes) -> None:
        self.file.write(rows)

    def close(self) -> None:
        self.file.close()
        os.replace(self.part, self.path)

    def abort(self) -> None:
        self.file.close()
        self.part.unlink(missing_ok=True)


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
    dlc_folder: str,
    consensus: str,
    extra: FollowUps | None,
    sink: Callable[[Problem], None],
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
            dlc_folder=dlc_folder,
            consensus=consensus,
        )
        # Leave the caller's handle where the sequential path would: at the end.
        if isinstance(manifest_lines, BufferedReader):
            manifest_lines.seek(0, os.SEEK_END)
        return
    work = BatchWork(spec, dlc_folder, consensus)
    for batch in read_batches(
        manifest_lines,
        spec,
        fetch=fetch,
        report=report,
        label_attribute=label_attribute,
        batch_lines=batch_frames,
    ):
        yield work(batch if extra is None else extra.widen(batch, sink))


def _write_json(path: Path, document: object) -> None:
    part = path.with_name(path.name + ".part")
    with open(part, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=2, allow_nan=False)
        out.write("\n")
    os.replace(part, path)
