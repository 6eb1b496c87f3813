"""Follow-up rounds merged into their parent's results, and the robust consensus, on emulated
public-crowd answers to synthetic frames whose truth is known."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from aws.emulator.jobs import DataObject
from aws.emulator.knobs import EmulatorSettings
from aws.emulator.workforce import answer_keypoints, make_team, parse_frame_truth
from bot.results import LabelSpec, consolidate
from bot.results.consensus import consensus_batch
from bot.results.robust import robust_batch
from bot.results.rounds import RoundSource
from bot.synthetic import MARS_KEYPOINTS, MARS_PAIRS, draw_frames

SPEC = LabelSpec(
    species="mouse", animals=("black", "white"), keypoints=MARS_KEYPOINTS, check_pairs=MARS_PAIRS
)
TEAM = make_team(3, "arn:aws:sagemaker:us-east-2:394669845002:workteam/public-crowd/default", 20)


def no_fetch(uri: str) -> bytes:
    raise FileNotFoundError(uri)


def no_image(ref: str) -> Image.Image | None:
    return None


@pytest.fixture(scope="module")
def truths(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, DataObject]]:
    out = []
    for path in draw_frames(
        tmp_path_factory.mktemp("r") / "img", 60, seed=2, width=512, height=300
    ):
        with Image.open(path) as image:
            found = parse_frame_truth(image.info.get("comment"))
            width, height = image.size
        assert found is not None
        obj = DataObject(
            0,
            {},
            "",
            width=width,
            height=height,
            truth=found.points,
            truth_pairs=found.pairs,
            truth_occluded=found.occluded,
            truth_animals=found.animals,
            huddled=found.huddled,
        )
        out.append((f"s3://frames/{path.name}", obj))
    return out


def _answers(obj: DataObject, workers: int, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "workerId": worker.worker_id,
            "annotationData": {
                "content": json.dumps(
                    {
                        "annotatedResult": {
                            "inputImageProperties": {"width": obj.width, "height": obj.height},
                            "keypoints": answer_keypoints(
                                worker, obj, list(SPEC.labels), EmulatorSettings(), rng
                            ),
                        }
                    }
                )
            },
        }
        for worker in rng.sample(TEAM, workers)
    ]


def _line(ref: str, job: str, answers: list[dict[str, Any]]) -> str:
    return json.dumps(
        {
            "source-ref": ref,
            "annotatedResult": {"annotationsFromAllWorkers": answers},
            "annotatedResult-metadata": {"job-name": job, "type": "groundtruth/custom"},
        }
    )


def _errors(points: np.ndarray, truths: list[tuple[str, DataObject]]) -> np.ndarray:
    truth = np.array([[obj.truth[label] for label in SPEC.labels] for _, obj in truths])  # type: ignore[index]
    return np.sqrt(((points - truth) ** 2).sum(axis=-1)).ravel()


def test_robust_consensus_is_closer_to_the_truth_than_the_median(
    truths: list[tuple[str, DataObject]],
) -> None:
    rng = random.Random(4)
    coords = np.full((len(truths), 3, SPEC.n_slots, 2), np.nan)
    names = []
    for b, (_, obj) in enumerate(truths):
        chosen = rng.sample(TEAM, 3)
        names.append([w.worker_id for w in chosen])
        for w, worker in enumerate(chosen):
            for p in answer_keypoints(worker, obj, list(SPEC.labels), EmulatorSettings(), rng):
                coords[b, w, SPEC.label_index[p["label"]]] = (p["x"], p["y"])
    median = _errors(consensus_batch(coords, SPEC).points, truths)
    robust_result = robust_batch(coords, SPEC, names, 512.0)
    robust = _errors(robust_result.points, truths)
    # Three public-crowd workers: wild clicks and swaps make the median's tail long.
    assert np.median(robust) < np.median(median)
    assert np.percentile(robust, 95) < 0.8 * np.percentile(median, 95)
    # Its expected error ranks the frames: the least certain half holds most large errors.
    assert robust_result.uncertainty is not None
    per_frame = np.nanmean(robust_result.uncertainty, axis=1)
    worst = np.argsort(-per_frame)[: len(truths) // 2]
    big = (robust.reshape(len(truths), -1) > np.percentile(robust, 90)).sum(axis=1)
    assert big[worst].sum() > 0.6 * big.sum()


def test_follow_up_answers_join_their_frames(
    truths: list[tuple[str, DataObject]], tmp_path: Path
) -> None:
    rng = random.Random(8)
    parent = [_line(ref, "mice-1", _answers(obj, 3, rng)) for ref, obj in truths[:10]]
    again = [_line(ref, "mice-1-r2", _answers(obj, 2, rng)) for ref, obj in truths[2:4]]
    third = [_line(ref, "mice-1-r3", _answers(obj, 1, rng)) for ref, obj in truths[3:4]]
    stray = _line("s3://frames/elsewhere.jpg", "mice-1-r3", _answers(truths[0][1], 1, rng))
    summary = consolidate(
        parent,
        SPEC,
        tmp_path,
        fetch=no_fetch,
        load_image=no_image,
        job_name="mice-1",
        consensus="robust",
        follow_ups=[
            RoundSource("mice-1-r2", again, no_fetch),
            RoundSource("mice-1-r3", [*third, stray], no_fetch),
        ],
    )
    assert summary.frames_consolidated == 10
    assert summary.rounds == (("mice-1-r2", 2), ("mice-1-r3", 2))
    assert summary.workers_per_frame == ((3, 8), (5, 1), (6, 1))
    with summary.files.frames.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["image_id"], r["n_workers"], r["rounds"]) for r in rows[1:5]] == [
        ("2", "3", "1"),
        ("3", "5", "2"),
        ("4", "6", "3"),
        ("5", "3", "1"),
    ]
    assert all(float(r["uncertainty"]) > 0 and float(r["spread"]) >= 0 for r in rows)
    coco = json.loads(summary.files.coco.read_text())
    assert [image["n_workers"] for image in coco["images"][:5]] == [3, 3, 5, 6, 3]
    with summary.files.csv.open() as handle:
        placed = [int(r["n_workers"]) for r in csv.DictReader(handle) if r["frame"] == truths[3][0]]
    assert max(placed) == 6  # keypoints.csv: the workers who placed each point
    agreement = json.loads(summary.files.agreement.read_text())
    assert agreement["workers_per_frame"] == {"3": 8, "5": 1, "6": 1}
    assert agreement["follow_up_rounds"] == [
        {"job": "mice-1-r2", "frames": 2},
        {"job": "mice-1-r3", "frames": 2},
    ]
    mars = summary.files.mars.read_text().replace("NaN", "null")
    assert len(json.loads(mars)[3]["ann_black"]["X"]) == 6  # one row per worker
    problems = summary.problems_file.read_text()
    assert "elsewhere.jpg" in problems and "lacks" in problems


def test_results_without_follow_ups_say_one_round(
    truths: list[tuple[str, DataObject]], tmp_path: Path
) -> None:
    rng = random.Random(9)
    lines = [_line(ref, "mice-2", _answers(obj, 5, rng)) for ref, obj in truths[:4]]
    summary = consolidate(lines, SPEC, tmp_path, fetch=no_fetch, load_image=no_image)
    assert summary.consensus == "median" and summary.rounds == ()
    with summary.files.frames.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["n_workers"], r["rounds"], r["uncertainty"]) for r in rows] == [("5", "1", "")] * 4
    assert all(not math.isnan(float(r["spread"])) for r in rows)


def test_robust_files_are_the_same_from_one_process_or_two(
    truths: list[tuple[str, DataObject]], tmp_path: Path
) -> None:
    rng = random.Random(11)
    manifest = tmp_path / "output.manifest"
    manifest.write_text(
        "".join(
            _line(f"{ref}?copy={i}", "mice-3", _answers(obj, 3, rng)) + "\n"
            for i in range(4)
            for ref, obj in truths
        )
    )
    outputs = []
    for workers in (1, 2):
        with manifest.open("rb") as handle:
            summary = consolidate(
                handle,
                SPEC,
                tmp_path / f"w{workers}",
                fetch=no_fetch,
                load_image=no_image,
                batch_frames=64,
                workers=workers,
                consensus="robust",
            )
        outputs.append({p.name: p.read_bytes() for p in summary.files.all()})
    assert outputs[0] == outputs[1]
