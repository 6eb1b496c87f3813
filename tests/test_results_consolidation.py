"""Results post-processing on the shared samples: parsing, consensus vs truth, hostile input,
exports (pycocotools round trip, CSV columns), pictures and the offline CLI entry."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from bot.errors import ConfigError
from bot.results import LabelSpec, consolidate, local_worker_response_fetch
from bot.results.consensus import consensus_batch, nanmedian_workers
from bot.results.exports import (
    CSV_COLUMNS,
    _csv_field,
    _csv_fields,
    skeleton,
)
from bot.results.reader import ReadReport, read_manifest
from bot.results.runner import format_summary, run_consolidate

SAMPLES = Path(__file__).parent / "samples"
RECIPE = SAMPLES / "output-recipe.manifest"
NO_LAMBDA = SAMPLES / "no-consolidation" / "output.manifest"


def no_fetch(uri: str) -> bytes:
    raise FileNotFoundError(uri)


def no_image(ref: str) -> Image.Image | None:
    return None


@pytest.fixture(scope="module")
def spec() -> LabelSpec:
    return LabelSpec.from_mapping(yaml.safe_load((SAMPLES / "project-config.yml").read_text()))


def _frames(spec: LabelSpec, lines: list[str], fetch=no_fetch):  # type: ignore[no-untyped-def]
    report = ReadReport()
    return list(read_manifest(lines, spec, fetch=fetch, report=report)), report


def test_spec_from_sample_config(spec: LabelSpec) -> None:
    assert spec.labels[0] == "black mouse nose"
    assert spec.labels[-1] == "white mouse base of tail"
    assert spec.n_labels == 14 and spec.pair_indices == ((1, 2), (4, 5))
    assert spec.body_axis == (0, 6)
    with pytest.raises(ConfigError, match="check_pairs"):
        LabelSpec.from_mapping({"species": "m", "keypoints": ["a"], "check_pairs": [["a", "b"]]})


def test_recipe_sample_parses_exactly(spec: LabelSpec) -> None:
    frames, report = _frames(spec, RECIPE.read_text().splitlines())
    assert len(frames) == 6 and report.problem_count == 0 and report.frames_skipped == 0
    assert [len(f.workers) for f in frames] == [5] * 6
    placed = sum(np.count_nonzero(~np.isnan(np.array(f.coords))) // 2 for f in frames)
    assert placed == 6 * 5 * 14 - 1  # one worker skipped "top of neck" in frame 4
    assert (frames[0].width, frames[0].height) == (1024.0, 570.0)
    assert report.job_name == "demo-mice-20261120"


def test_worker_response_sample_parses_exactly(spec: LabelSpec) -> None:
    frames, report = _frames(
        spec, NO_LAMBDA.read_text().splitlines(), local_worker_response_fetch(NO_LAMBDA)
    )
    assert len(frames) == 3 and report.problem_count == 0
    assert [len(f.workers) for f in frames] == [3, 3, 3]
    assert len({w for f in frames for w in f.workers}) == 9  # distinct Cognito subs
    placed = sum(np.count_nonzero(~np.isnan(np.array(f.coords))) // 2 for f in frames)
    assert placed == 3 * 3 * 14 - 1
    assert frames[0].seconds == [20.805, 82.487, 51.063]


def test_consensus_beats_single_workers_and_corrects_flips(spec: LabelSpec) -> None:
    truth = json.loads((SAMPLES / "output-recipe.truth.json").read_text())["truth"]
    frames, _ = _frames(spec, RECIPE.read_text().splitlines())
    coords = np.array([f.coords for f in frames]).reshape(6, 5, 14, 2)
    true = np.array([[truth[f.source_ref][a] for a in spec.animals] for f in frames])
    true = true.reshape(6, 14, 2)
    result = consensus_batch(coords, spec)
    single = np.sqrt(((coords - true[:, None]) ** 2).sum(-1))
    consensus = np.sqrt(((result.points - true) ** 2).sum(-1))
    # Frame 0 has three of five workers with both ears swapped: the median follows the majority
    # (as MARS does), so its ears are judged by the other frames only.
    ears = [1, 2, 8, 9]
    fair = np.ones_like(consensus, dtype=bool)
    fair[0, ears] = False
    assert np.median(consensus[fair]) < 0.6 * np.nanmedian(single)  # ~1.9 px vs ~3.5 px
    assert np.mean(consensus[fair]) < 2.5 < np.nanmean(single)
    # Minority flips (frame 3 worker 0, frame 5 worker 4) are swapped back.
    assert result.flipped[3, 0] and result.flipped[5, 4]
    for b, w in [(3, 0), (5, 4)]:
        before = single[b, w, ears].max()
        after = np.sqrt(((result.coords[b, w, ears] - true[b, ears]) ** 2).sum(-1)).max()
        assert before > 15 and after < 10
    assert result.n_workers[4].min() == 4 and result.n_workers.sum() == 6 * 5 * 14 - 1


def test_swapped_points_move_the_consensus_to_where_the_majority_put_them() -> None:
    """Two of five workers named the ears the other way round. Swapping them back must move
    the consensus too: before the swap the median of the left ear is the third of
    x = [10, 11, 12, 50, 52], 12; after it, the third of [9, 10, 11, 12, 13], 11."""
    ears = LabelSpec("mouse", (), ("left ear", "right ear"), (("left ear", "right ear"),))
    left = [[10, 20], [11, 21], [12, 22], [50, 60], [52, 62]]
    right = [[50, 60], [51, 61], [52, 62], [9, 19], [13, 23]]
    coords = np.array([[[lft, rgt] for lft, rgt in zip(left, right, strict=True)]], dtype=float)
    result = consensus_batch(coords, ears)
    assert result.flipped[0].tolist() == [False, False, False, True, True]
    np.testing.assert_array_equal(result.points[0], [[11, 21], [51, 61]])
    # What is reported agrees with itself: the points are the medians of the corrected clicks,
    # and each distance is measured to them.
    np.testing.assert_array_equal(result.points, nanmedian_workers(result.coords))
    assert result.distance[0, 3, 0] == pytest.approx(np.hypot(9 - 11, 19 - 21))


def test_consensus_is_the_median_of_the_corrected_clicks(spec: LabelSpec) -> None:
    frames, _ = _frames(spec, RECIPE.read_text().splitlines())
    coords = np.array([f.coords for f in frames]).reshape(6, 5, 14, 2)
    result = consensus_batch(coords, spec)
    assert result.flipped.any()
    np.testing.assert_array_equal(result.points, nanmedian_workers(result.coords))
    expected = np.sqrt(((result.coords - result.points[:, None]) ** 2).sum(-1))
    np.testing.assert_array_equal(result.distance, expected)


@pytest.mark.parametrize("workers", [1, 2, 3, 5, 6, 8, 9, 14])
def test_nanmedian_matches_numpy(workers: int) -> None:
    rng = np.random.default_rng(workers)
    values = rng.normal(size=(50, workers, 9, 2)).round(1)  # ties included
    values[rng.random(values.shape[:3]) < 0.3] = np.nan
    values[0, :, 0] = np.nan
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanmedian(values, axis=1)
    np.testing.assert_array_equal(nanmedian_workers(values), expected)


def test_missing_is_not_zero_and_num_obj(spec: LabelSpec) -> None:
    two = LabelSpec("mouse", (), ("nose", "tail"), (), num_obj=2)
    nan = np.nan
    # 3 workers, 2 instances of nose/tail each, placed in different orders.
    w = [
        [[10, 10], [100, 100], [20, 20], [120, 120]],
        [[101, 99], [11, 9], [121, 119], [21, 19]],
        [[nan, nan], [99, 101], [19, 21], [nan, nan]],
    ]
    result = consensus_batch(np.array([w], dtype=float), two)
    np.testing.assert_allclose(
        result.points[0], [[10.5, 9.5], [100, 100], [20, 20], [120.5, 119.5]]
    )
    assert result.n_workers[0].tolist() == [2, 3, 3, 2]


def test_hostile_lines_are_reported_and_change_nothing_else(
    spec: LabelSpec, tmp_path: Path
) -> None:
    lines = RECIPE.read_text().splitlines()
    clean = consolidate(lines, spec, tmp_path / "clean", fetch=no_fetch, load_image=no_image)
    record = json.loads(lines[0])
    workers = record["annotatedResult"]["annotationsFromAllWorkers"]
    evil = json.loads(json.dumps(record))
    evil["source-ref"] = "s3://lab-frames/demo/images/evil.jpg"
    evil_workers = evil["annotatedResult"]["annotationsFromAllWorkers"]
    evil_workers[0]["annotationData"]["content"] = "__import__('os').system('touch /tmp/pwned')"
    content = json.loads(workers[1]["annotationData"]["content"])
    content["annotatedResult"]["keypoints"][0]["x"] = float("nan")
    content["annotatedResult"]["keypoints"][1]["y"] = float("inf")
    content["annotatedResult"]["keypoints"][2]["label"] = "purple mouse nose"
    content["annotatedResult"]["keypoints"][3]["x"] = 5000
    evil_workers[1]["annotationData"]["content"] = json.dumps(content)
    failed = {"source-ref": "s3://x/y.jpg", "annotatedResult-metadata": {"failure-reason": "E"}}
    hostile = [
        "{not json",
        json.dumps(evil),
        "[1, 2]",
        json.dumps(failed),
        '{"source-ref": "s3://x/z.jpg", "annotatedResult": {"annotationsFromAllWorkers": '
        '[{"annotationData": {"content": "{\\"annotatedResult\\": {\\"keypoints\\": '
        '[{\\"label\\": \\"black mouse nose\\", \\"x\\": Infinity, \\"y\\": NaN}]}}"}}]}}',
    ]
    mixed = lines[:3] + hostile + lines[3:]
    summary = consolidate(mixed, spec, tmp_path / "mixed", fetch=no_fetch, load_image=no_image)
    by_line: dict[int, list[str]] = {}
    for problem in summary.problems:
        by_line.setdefault(problem.line, []).append(problem.reason)
    assert "not valid JSON" in by_line[4][0]
    assert any("worker 1: answer is not valid JSON" in r for r in by_line[5])
    assert any("non-finite" in r and "nose" in r for r in by_line[5])
    assert any("non-finite" in r and "right ear" in r for r in by_line[5])
    assert any("labels this project does not have ('purple mouse nose')" in r for r in by_line[5])
    assert any("outside the image" in r for r in by_line[5])
    assert "not a JSON object" in by_line[6][0]
    assert "failed" in by_line[7][0]
    assert any("non-finite" in r for r in by_line[8])
    assert summary.frames_skipped == 4 and summary.frames_consolidated == 7
    assert not Path("/tmp/pwned").exists()
    with open(clean.files.csv) as a, open(summary.files.csv) as b:
        clean_rows = list(csv.DictReader(a))
        mixed_rows = [r for r in csv.DictReader(b) if not r["frame"].endswith("evil.jpg")]
    assert clean_rows == mixed_rows


def test_coco_export_round_trips_with_pycocotools(spec: LabelSpec, tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    lines = RECIPE.read_text().splitlines()
    summary = consolidate(lines, spec, tmp_path, fetch=no_fetch, load_image=no_image)
    coco = COCO(str(summary.files.coco))
    assert len(coco.getImgIds()) == 6 and len(coco.getAnnIds()) == 12
    cats = coco.loadCats(coco.getCatIds())
    assert [c["name"] for c in cats] == ["black", "white"]
    assert cats[0]["keypoints"] == list(spec.keypoints) and cats[0]["skeleton"] == skeleton(spec)
    frames, _ = _frames(spec, lines)
    result = consensus_batch(np.array([f.coords for f in frames]).reshape(6, 5, 14, 2), spec)
    for image in coco.loadImgs(coco.getImgIds()):
        b = [f.source_ref for f in frames].index(image["coco_url"])
        assert (image["width"], image["height"]) == (1024, 570)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
            kp = np.array(ann["keypoints"]).reshape(-1, 3)
            a = ann["category_id"] - 1
            expected = result.points[b, a * 7 : a * 7 + 7]
            np.testing.assert_allclose(kp[:, :2], expected, atol=0.006)
            assert (kp[:, 2] == 2).all() and ann["num_keypoints"] == 7
            x, y, w, h = ann["bbox"]
            assert x <= kp[:, 0].min() and x + w >= kp[:, 0].max() - 0.01
            assert ann["area"] == pytest.approx(w * h, abs=0.05) and ann["iscrowd"] == 0
    # The mouse skeleton: nose-ears-neck and neck-knees-tail diamonds.
    assert skeleton(spec) == [[1, 2], [1, 3], [2, 4], [3, 4], [4, 5], [4, 6], [5, 7], [6, 7]]


def test_coco_ids_are_manifest_line_numbers(spec: LabelSpec, tmp_path: Path) -> None:
    """The README's promise: an image's id is its line in the manifest (1-based, blank and
    refused lines counted), so an annotation leads back to the workers' answers; an
    annotation's id is (line - 1) x individuals + individual + 1."""
    lines = RECIPE.read_text().splitlines()
    shifted = ["", lines[0], "{not json", *lines[1:]]
    summary = consolidate(shifted, spec, tmp_path, fetch=no_fetch, load_image=no_image)
    coco = json.loads(summary.files.coco.read_text())
    refs = {
        json.loads(line)["source-ref"]: n for n, line in enumerate(shifted, 1) if n not in (1, 3)
    }
    assert {image["coco_url"]: image["id"] for image in coco["images"]} == refs
    assert sorted(refs.values()) == [2, 4, 5, 6, 7, 8]
    individuals = len(spec.animal_names)
    for ann in coco["annotations"]:
        assert ann["id"] == (ann["image_id"] - 1) * individuals + ann["category_id"]
    assert sorted(a["image_id"] for a in coco["annotations"]) == sorted(2 * list(refs.values()))


def test_csv_mars_agreement_and_pictures(spec: LabelSpec, tmp_path: Path) -> None:
    summary = consolidate(
        NO_LAMBDA.read_text().splitlines(),
        spec,
        tmp_path,
        fetch=local_worker_response_fetch(NO_LAMBDA),
        load_image=lambda ref: Image.new("RGB", (1024, 570), (40, 40, 40)),
    )
    assert all(p.is_file() for p in summary.files.all())
    with open(summary.files.csv, newline="") as handle:
        reader = csv.reader(handle)
        assert (
            tuple(next(reader))
            == CSV_COLUMNS
            == ("frame", "animal", "keypoint", "x", "y", "n_workers", "spread")
        )
        rows = list(reader)
    assert len(rows) == 3 * 14
    assert sum(int(r[5]) for r in rows) == 3 * 3 * 14 - 1
    mars = json.loads(summary.files.mars.read_text())
    assert len(mars) == 3 and mars[0]["ann_label"] == list(spec.keypoints)
    black = mars[0]["ann_black"]
    assert np.array(black["X"]).shape == (3, 7) and len(black["med"]) == 2
    assert 0 < black["med"][1][0] < 1 and len(black["bbox"]) == 4
    agreement = json.loads(summary.files.agreement.read_text())
    assert agreement["frames"] == 3 and len(agreement["workers"]) == 9
    assert all(w["timed_tasks"] == 1 and w["median_seconds"] for w in agreement["workers"])
    assert [k["keypoint"] for k in agreement["keypoints"]] == list(spec.keypoints)
    assert all(0 < k["median_px"] < 20 for k in agreement["keypoints"])
    assert Image.open(summary.files.preview).size[0] > 300
    assert Image.open(summary.files.agreement_chart).size[0] > 300


def test_outlier_worker_is_flagged(spec: LabelSpec, tmp_path: Path) -> None:
    lines = RECIPE.read_text().splitlines()
    bad = []
    for line in lines:
        record = json.loads(line)
        worker = record["annotatedResult"]["annotationsFromAllWorkers"][2]
        content = json.loads(worker["annotationData"]["content"])
        for point in content["annotatedResult"]["keypoints"]:
            point["x"] = min(point["x"] + 80, 1024)
        worker["annotationData"]["content"] = json.dumps(content)
        bad.append(json.dumps(record))
    summary = consolidate(bad, spec, tmp_path, fetch=no_fetch, load_image=no_image)
    workers = json.loads(summary.files.agreement.read_text())["workers"]
    # One shifted worker per frame (six in all); nobody else is flagged.
    shares = sorted((w["outlier_share"] for w in workers), reverse=True)
    assert min(shares[:6]) > 0.9 and max(shares[6:]) == 0.0


def test_run_consolidate_offline(spec: LabelSpec, tmp_path: Path) -> None:
    project = tmp_path / "demo"
    (project / "annotation-data" / "raw-images").mkdir(parents=True)
    shutil.copy(SAMPLES / "project-config.yml", project / "project-config.yml")
    job = tmp_path / "copy"
    shutil.copytree(SAMPLES / "no-consolidation", job)

    def no_s3() -> object:
        raise AssertionError("no S3 needed for a local manifest")

    summary = run_consolidate(str(job / "output.manifest"), project, None, s3_client_factory=no_s3)
    expected = project / "annotation-data" / "results" / "demo-mice-nolambda"
    assert summary.files.coco.parent == expected and summary.frames_consolidated == 3
    assert format_summary(summary).splitlines()[-1] == "3 frames consolidated, 0 skipped."


@pytest.mark.parametrize(
    "text", ["plain.jpg", "a,b.jpg", 'say "hi".jpg', "line\nbreak", "cr\rhere", "", " lead"]
)
def test_csv_fields_are_written_as_csv_writer_would(text: str) -> None:
    out = io.StringIO()
    csv.writer(out).writerow([text, "x"])
    assert _csv_field(text) + b",x\r\n" == out.getvalue().encode()


@pytest.mark.parametrize(
    "texts",
    [["a.jpg", "b.jpg"], ["=x", "b"], ["a,b", "c"], ["a", "-1"], ["a", "@"], ["\tx"], ["a\x00b"]],
)
def test_a_batch_of_csv_fields_is_each_field(texts: list[str]) -> None:
    # One check for a whole batch must give what a check per field gives, formula guard included.
    assert _csv_fields(texts) == [_csv_field(text) for text in texts]
    assert all(not f.startswith((b"=", b"+", b"-", b"@", b"\t")) for f in _csv_fields(texts))
