"""Consolidating a manifest on disk or in S3 into a project's results folder, for `gtbot
consolidate <manifest or s3://...> <project>`, `/gt consolidate` and a finished job's results
(bot/job_results.py).

The spec comes from the project's `project-config.yml`; the manifest and worker responses come
from disk or S3 through a client made by the injected factory (no boto3 import here).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from aws import s3
from bot.errors import NotFoundError
from bot.project import ProjectConfig, parse_project, require_config_file
from bot.results.agreement import WorkerAgreement
from bot.results.consolidation import (
    ConsolidationSummary,
    consolidate,
    labels_text,
    problems_text,
    workers_text,
)
from bot.results.reader import job_name_of, local_worker_response_fetch
from bot.results.rounds import RoundSource

S3ClientFactory = Callable[[], Any]
# Workers listed by `format_summary` (all are in agreement.json and workers.png).
SHOWN_WORKERS = 10
CONSENSUS_TEXT = {
    "median": "median of the workers (MARS's)",
    "robust": "robust (each click weighed by how believable it is)",
}


def load_config(project_dir: Path) -> ProjectConfig:
    """The project in a folder given on the command line, validated by the project model."""
    return parse_project(require_config_file(project_dir, project_dir.name), project_dir.name, {})


class _S3:
    """One lazily made client shared by the manifest, the worker responses and the frames."""

    def __init__(self, factory: S3ClientFactory) -> None:
        self.factory = factory
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.factory()
        return self._client

    def get(self, uri: str) -> bytes:
        return s3.get_bytes(self.client, *s3.split_s3_uri(uri))

    def lines(self, uri: str) -> Iterator[bytes]:
        return s3.iter_lines(self.client, *s3.split_s3_uri(uri))


def _job_from_path(parts: tuple[str, ...]) -> str | None:
    """`<output>/<job>/manifests/output/output.manifest` names its job."""
    if len(parts) >= 4 and parts[-3:-1] == ("manifests", "output"):
        return parts[-4]
    return None


def _job_from_first_line(line: str | bytes) -> str | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    for key, value in record.items():
        if isinstance(key, str) and key.endswith("-metadata") and isinstance(value, dict):
            name = job_name_of(value)
            if name:
                return name
    return None


def _safe(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    return cleaned or "results"


def run_consolidate(
    source: str,
    project_dir: Path,
    out: Path | None,
    *,
    s3_client_factory: S3ClientFactory,
    progress: Callable[[int], None] | None = None,
    follow_ups: Sequence[tuple[str, str]] = (),
    consensus: str | None = None,
) -> ConsolidationSummary:
    """Consolidate a local or `s3://` output manifest into `out` (default
    `<project>/annotation-data/results/<job or manifest name>/`).

    `follow_ups` are (job name, output manifest) of follow-up rounds whose answers join the
    frames' own; `consensus` defaults to the project's (`job.consensus`)."""
    project = load_config(project_dir)
    spec = project.label_spec
    method = consensus or project.job.consensus_for(bool(follow_ups))
    store = _S3(s3_client_factory)
    load_image = _image_loader(project_dir, store)
    rounds = [_round(name, uri, store) for name, uri in follow_ups]
    if source.startswith("s3://"):
        _, key = s3.split_s3_uri(source)
        lines = store.lines(source)
        first = next(lines, None)
        job = _job_name(first, PurePosixPath(key).parts)
        target = out or _default_out(project_dir, job or PurePosixPath(key).stem)
        return consolidate(
            _prepend(first, lines),
            spec,
            target,
            fetch=store.get,
            load_image=load_image,
            job_name=job,
            progress=progress,
            consensus=method,
            follow_ups=rounds,
        )
    path = Path(source)
    if not path.is_file():
        raise NotFoundError(f"No manifest at {path}.")
    with path.open("rb") as peek:
        job = _job_name(peek.readline() or None, path.resolve().parts)
    target = out or _default_out(project_dir, job or path.stem)
    # A binary handle on a local file lets a large manifest be read by two processes.
    with path.open("rb") as handle:
        return consolidate(
            handle,
            spec,
            target,
            fetch=local_worker_response_fetch(path, store.get),
            load_image=load_image,
            job_name=job,
            progress=progress,
            consensus=method,
            follow_ups=rounds,
        )


def _round(name: str, uri: str, store: _S3) -> RoundSource:
    """A follow-up's output manifest, read from S3 or a local file (read whole: a follow-up
    asks about a share of its parent's frames)."""
    if uri.startswith("s3://"):
        return RoundSource(name, list(store.lines(uri)), store.get)
    path = Path(uri)
    if not path.is_file():
        raise NotFoundError(f"No manifest at {path} (round {name}).")
    return RoundSource(
        name, path.read_bytes().splitlines(), local_worker_response_fetch(path, store.get)
    )


def worker_lines(workers: Sequence[WorkerAgreement]) -> list[str]:
    """The per-worker report: the furthest from the consensus first, and who to review."""
    if not workers:
        return []
    out = [
        f"Workers, furthest from the consensus first (all {len(workers)} in agreement.json "
        "and workers.png):"
    ]
    for w in workers[:SHOWN_WORKERS]:
        error = "n/a" if w.median_error_px is None else f"{w.median_error_px:.1f} px"
        time = "" if w.median_seconds is None else f", median {w.median_seconds:g} s a frame"
        out.append(
            f"  {w.rank}. {_shown(w.worker)}: {error}, swaps in {w.swapped_frames} of {w.frames} "
            f"frames, {w.outliers} outliers{time}"
        )
    review = [w for w in workers if w.review]
    if review:
        out.append(f"Workers to review ({len(review)}):")
        out += [f"  {_shown(w.worker)}: {'; '.join(w.review)}" for w in review[:SHOWN_WORKERS]]
        if len(review) > SHOWN_WORKERS:
            out.append(f"  ... and {len(review) - SHOWN_WORKERS} more in agreement.json")
    else:
        out.append("No worker stands out for review.")
    return out


def _shown(worker: str) -> str:
    """A worker id as messages show it: ids come from worker answers, so any length."""
    return worker if len(worker) <= 80 else worker[:77] + "..."


def _job_name(first: str | bytes | None, parts: tuple[str, ...]) -> str | None:
    found = _job_from_first_line(first) if first is not None else None
    return found or _job_from_path(parts)


def _default_out(project_dir: Path, name: str) -> Path:
    return project_dir / "annotation-data" / "results" / _safe(name)


def _prepend(first: str | bytes | None, rest: Iterator[Any]) -> Iterator[Any]:
    if first is not None:
        yield first
    yield from rest


def _image_loader(project_dir: Path, store: _S3) -> Callable[[str], Image.Image | None]:
    """Frames for the preview: the project's local copy first, S3 second, grey if neither."""
    raw = project_dir / "annotation-data" / "raw-images"

    def load(source_ref: str) -> Image.Image | None:
        local = raw / PurePosixPath(source_ref).name
        try:
            if local.is_file():
                with Image.open(local) as image:
                    return image.convert("RGB")
            if source_ref.startswith("s3://"):
                with Image.open(io.BytesIO(store.get(source_ref))) as image:
                    return image.convert("RGB")
        except Exception:  # a preview without one frame beats no result at all
            return None
        return None

    return load


def format_summary(summary: ConsolidationSummary) -> str:
    """Plain text for a terminal and Slack; the last line is the frame count."""
    out = []
    if summary.job_name:
        out.append(f"Job {summary.job_name}")
    for path in (*summary.files.all(), summary.problems_file):
        out.append(f"  wrote {path}")
    if summary.keypoints:
        out.append("Agreement (median distance of workers to consensus):")
        for k in summary.keypoints:
            px = "n/a" if k.median_px is None else f"{k.median_px:.1f} px"
            frac = (
                ""
                if k.median_body_fraction is None
                else f" ({k.median_body_fraction:.1%} of body length)"
            )
            out.append(f"  {k.keypoint}: {px}{frac}, placed {k.placed_share:.0%}")
    out.append(
        f"{summary.workers} workers; left/right flips corrected in "
        f"{summary.flip_corrected_frames} frames."
    )
    out.append(f"Consensus: {CONSENSUS_TEXT.get(summary.consensus, summary.consensus)}.")
    if summary.workers_per_frame:
        by_count = ", ".join(f"{frames} with {n}" for n, frames in summary.workers_per_frame)
        out.append(
            f"Workers per frame: {workers_text(summary.workers_per_frame)} ({by_count}; "
            "each frame's count is in frames.csv)."
        )
    if summary.rounds:
        out.append(
            "Follow-up rounds merged: "
            + ", ".join(f"{job} ({frames} frames)" for job, frames in summary.rounds)
            + "."
        )
    out += worker_lines(summary.worker_report)
    out += labels_text(summary.expected_labels, summary.unknown_labels)
    out += problems_text(summary.problems, summary.problem_count, summary.problems_file)
    out.append(
        f"{summary.frames_consolidated} frames consolidated, {summary.frames_skipped} skipped."
    )
    return "\n".join(out)
