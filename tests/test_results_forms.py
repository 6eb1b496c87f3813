"""Results on every form real Ground Truth output takes: label forms (bare, prefixed, mapped),
MARS's single-animal config, the documented manifest forms, the `aws s3 sync` layout, hostile
worker numbers, honest exits, problems.csv, formula-safe cells, the DeepLabCut export and the
per-worker report."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from bot import cli
from bot.errors import ConfigError
from bot.project import parse_project
from bot.results import LabelSpec, consolidate, local_worker_response_fetch
from bot.results.consolidation import NothingConsolidatedError
from bot.results.reader import ReadReport, read_batches
from bot.results.runner import format_summary, run_consolidate

SAMPLES = Path(__file__).parent / "samples"
RECIPE = SAMPLES / "output-recipe.manifest"
NO_LAMBDA = SAMPLES / "no-consolidation"
DOCS = SAMPLES / "aws-docs"
KEYPOINTS = ["nose", "right ear", "left ear", "top of neck", "right rear knee", "left rear knee",
             "base of tail"]  # fmt: skip
UNPAIRED = [0, 3, 6]  # nose, top of neck, base of tail

# A MARS `project_config.yaml` for one mouse, written the way MARS's template documents a
# single-animal project (`animal_names: []`, `num_obj: 1`), MARS-only keys included.
MARS_SINGLE = f"""
project_name: 'single_mouse'
manifest_name : 'output.manifest'
pixels_per_cm : 18.33
framerate : 25
detection:
  top: []
pose:
  top: []
verbose: 1
species : 'mouse'
animal_names : []
num_obj : 1
keypoints : {KEYPOINTS!r}
check_pairs : [['right ear','left ear'],['right rear knee','left rear knee']]
data_bucket : 'my-aws-bucket'
template_bucket : 'my-annotation-instructions'
region : 'us-east-2'
header : Label body parts of the mouse.
short_instructions : |
  Label each body part of interest on the mouse.
full_instructions : |
  <p> Examples and detailed instructions for each body part:</p>
video_formats : ['mp4','avi','wav','mpg','seq']
"""


def no_fetch(uri: str) -> bytes:
    raise FileNotFoundError(uri)


def no_image(ref: str) -> Image.Image | None:
    return None


def no_s3() -> object:
    raise AssertionError("no S3 here")


def _project(tmp_path: Path, config: str, name: str = "mice") -> Path:
    project = tmp_path / "projects" / name
    (project / "annotation-data" / "raw-images").mkdir(parents=True)
    (project / "project_config.yaml").write_text(config)
    return project


def _two_mice() -> str:
    return (SAMPLES / "project-config.yml").read_text()


def _public_crowd(rng: np.random.Generator, frames: int, labels: list[str]) -> list[str]:
    """Lines as the 2019 MARS template and Lambda wrote them: 6 public-crowd workers a
    frame, content strings with the given labels, integer-ish clicks, a missed point now and
    then, 1250x906 frames."""
    out = []
    for f in range(frames):
        centre = rng.uniform([200, 200], [1000, 700])
        workers = []
        for w in range(6):
            points = []
            for k, label in enumerate(labels):
                if rng.random() < 0.03:
                    continue
                x, y = centre + [k * 12.0, k * 7.0] + rng.normal(0, 15, 2)
                points.append({"label": label, "x": round(float(x)), "y": round(float(y))})
            content = {
                "annotatedResult": {
                    "inputImageProperties": {"height": 906, "width": 1250},
                    "keypoints": points,
                }
            }
            workers.append(
                {
                    "workerId": f"public.us-east-1.{f % 7}{w}",
                    "annotationData": {"content": json.dumps(content)},
                }
            )
        out.append(
            json.dumps(
                {
                    "source-ref": f"s3://caltech-mars/frames/mouse{f:04d}.jpg",
                    "annotatedResult": {"annotationsFromAllWorkers": workers},
                    "annotatedResult-metadata": {
                        "type": "groundtruth/custom",
                        "job-name": "mars-public-2019",
                        "human-annotated": "yes",
                        "creation-date": "2019-06-26T00:00:00.000000",
                    },
                }
            )
        )
    return out


def _worker_points(line: str) -> dict[str, list[tuple[float, float]]]:
    by_label: dict[str, list[tuple[float, float]]] = {}
    for worker in json.loads(line)["annotatedResult"]["annotationsFromAllWorkers"]:
        answer = json.loads(worker["annotationData"]["content"])["annotatedResult"]
        for point in answer["keypoints"]:
            by_label.setdefault(point["label"], []).append((point["x"], point["y"]))
    return by_label


# -- label forms and MARS configs ------------------------------------------------------------


def test_mars_single_animal_config_loads_unchanged_and_bare_labels_consolidate(
    tmp_path: Path,
) -> None:
    project = _project(tmp_path, MARS_SINGLE)
    config = parse_project(project / "project_config.yaml", "mice", {})
    assert config.animal_names == () and config.labels[0] == "mouse nose"
    manifest = tmp_path / "output.manifest"
    lines = _public_crowd(np.random.default_rng(1), 40, KEYPOINTS)
    manifest.write_text("\n".join(lines) + "\n")
    summary = run_consolidate(str(manifest), project, tmp_path / "out", s3_client_factory=no_s3)
    assert summary.frames_consolidated == 40 and summary.problem_count == 0
    with open(summary.files.csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["animal"] for r in rows} == {"mouse"}
    # Unpaired keypoints are exactly the workers' median (pairs may be swapped back first).
    for line, frame_rows in zip(
        lines, [rows[i : i + 7] for i in range(0, len(rows), 7)], strict=True
    ):
        by_label = _worker_points(line)
        for k in UNPAIRED:
            expected = np.median(np.array(by_label[KEYPOINTS[k]]), axis=0)
            got = (float(frame_rows[k]["x"]), float(frame_rows[k]["y"]))
            assert got == pytest.approx(tuple(expected.round(2)), abs=1e-9)


@pytest.mark.parametrize("form", ["mouse {}", "black mouse {}", "  Black  Mouse  {}"])
def test_one_named_animal_reads_every_spelling(tmp_path: Path, form: str) -> None:
    spec = LabelSpec("mouse", ("black",), tuple(KEYPOINTS), (("right ear", "left ear"),))
    lines = _public_crowd(np.random.default_rng(2), 5, [form.format(k) for k in KEYPOINTS])
    summary = consolidate(lines, spec, tmp_path, fetch=no_fetch, load_image=no_image)
    assert summary.frames_consolidated == 5 and summary.problem_count == 0


def test_bare_labels_with_two_animals_explain_themselves_then_a_label_map_fixes_it(
    tmp_path: Path,
) -> None:
    project = _project(tmp_path, _two_mice())
    manifest = tmp_path / "output.manifest"
    manifest.write_text("\n".join(_public_crowd(np.random.default_rng(3), 12, KEYPOINTS)) + "\n")
    with pytest.raises(NothingConsolidatedError) as caught:
        run_consolidate(str(manifest), project, tmp_path / "out", s3_client_factory=no_s3)
    message = caught.value.user_message
    assert "none of the 12 lines" in message and "no exports were written" in message
    assert "Labels expected (14): black mouse nose, black mouse right ear" in message
    assert "'nose' x" in message and "'base of tail' x" in message  # seen, with counts
    assert "label_map" in message and "line 1: worker 1: " in message
    assert "more in" in message and str(tmp_path / "out" / "problems.csv") in message
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert left == ["problems.csv"]  # nothing that looks like a result
    # Mapped to the black mouse, the same manifest consolidates.
    config = yaml.safe_load(_two_mice())
    config["label_map"] = {k: f"black mouse {k}" for k in KEYPOINTS}
    (project / "project-config.yml").write_text(yaml.safe_dump(config))
    (project / "project_config.yaml").unlink()
    summary = run_consolidate(str(manifest), project, tmp_path / "out", s3_client_factory=no_s3)
    assert summary.frames_consolidated == 12 and summary.problem_count == 0
    with open(summary.files.csv, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["x"]]
    assert {r["animal"] for r in rows} == {"black"}


def test_a_label_map_must_point_at_a_label_of_the_project(tmp_path: Path) -> None:
    config = yaml.safe_load(_two_mice())
    config["label_map"] = {"Nase": "purple mouse nose", "nose": "black mouse nose"}
    (tmp_path / "project-config.yml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"key `label_map.Nase`: maps to 'purple mouse nose'"):
        parse_project(tmp_path / "project-config.yml", "mice", {})
    with pytest.raises(ConfigError, match="label_map"):
        LabelSpec.from_mapping({**config, "label_map": ["nose"]})


def test_project_model_and_results_agree_on_what_is_valid(tmp_path: Path) -> None:
    bad = {
        "species": ["mouse"],
        "animal_names": ["a", "a"],
        "keypoints": ["nose", "nose"],
        "check_pairs": [["nose", "tail"]],
        "num_obj": True,
    }
    base = yaml.safe_load(_two_mice())
    for key, value in bad.items():
        broken = {**base, key: value}
        (tmp_path / "c.yml").write_text(yaml.safe_dump(broken))
        with pytest.raises(ConfigError) as from_project:
            parse_project(tmp_path / "c.yml", "mice", {})
        with pytest.raises(ConfigError) as from_results:
            LabelSpec.from_mapping(broken)
        assert f"`{key}" in from_project.value.user_message
        assert f"`{key}" in from_results.value.user_message


# -- documented manifest forms ---------------------------------------------------------------


def _consensus_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    ("sample", "job"),
    [
        ("content-job-name.manifest", "docs-job-name"),
        ("content-job_name.manifest", "docs-job-underscore"),
        ("s3uri.manifest", "docs-s3uri"),
    ],
)
def test_every_documented_output_form_gives_the_same_consensus(
    tmp_path: Path, sample: str, job: str
) -> None:
    spec = LabelSpec.from_mapping(yaml.safe_load(_two_mice()))
    reference = consolidate(
        RECIPE.read_text().splitlines()[:2], spec, tmp_path / "ref", fetch=no_fetch,
        load_image=no_image,
    )  # fmt: skip

    def answers(uri: str) -> bytes:
        return (DOCS / "s3uri-answers" / uri.rsplit("/", 1)[1]).read_bytes()

    with open(DOCS / sample, "rb") as lines:
        summary = consolidate(lines, spec, tmp_path / "form", fetch=answers, load_image=no_image)
    assert summary.job_name == job and summary.frames_consolidated == 2
    assert summary.problem_count == 0
    assert _consensus_csv(summary.files.csv) == _consensus_csv(reference.files.csv)


def test_an_unreadable_s3uri_answer_is_one_problem_not_the_line(tmp_path: Path) -> None:
    spec = LabelSpec.from_mapping(yaml.safe_load(_two_mice()))

    def some(uri: str) -> bytes:
        if uri.endswith("0-1.json"):
            raise PermissionError("AccessDenied")
        return (DOCS / "s3uri-answers" / uri.rsplit("/", 1)[1]).read_bytes()

    summary = consolidate(
        (DOCS / "s3uri.manifest").read_text().splitlines(), spec, tmp_path, fetch=some,
        load_image=no_image,
    )  # fmt: skip
    assert summary.frames_consolidated == 2 and summary.problem_count == 1
    assert "worker 2: cannot read its answer s3://" in summary.problems[0].reason
    assert summary.problems[0].worker == "private.us-east-2.3f98e2774cbd87ad"


def _synced_job(tmp_path: Path) -> Path:
    """A job's output as `aws s3 sync s3://<output>/<prefix>/<job> <dir>` leaves it."""
    job = tmp_path / "synced" / "demo-mice-nolambda"
    (job / "manifests" / "output").mkdir(parents=True)
    shutil.copy(NO_LAMBDA / "output.manifest", job / "manifests" / "output" / "output.manifest")
    shutil.copytree(NO_LAMBDA / "worker-response", job / "annotations" / "worker-response")
    return job


def test_sync_layout_finds_worker_responses_before_s3(tmp_path: Path) -> None:
    project = _project(tmp_path, _two_mice())
    job = _synced_job(tmp_path)
    manifest = job / "manifests" / "output" / "output.manifest"
    summary = run_consolidate(str(manifest), project, None, s3_client_factory=no_s3)
    assert summary.frames_consolidated == 3 and summary.problem_count == 0
    assert summary.files.coco.parent.name == "demo-mice-nolambda"
    # A missing file: the problem says where gtbot looked, locally and then in S3.
    missing = job / "annotations" / "worker-response" / "iteration-1" / "2"
    shutil.rmtree(missing)

    class Refusing:
        def get_object(self, **kwargs: Any) -> Any:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")

    summary = run_consolidate(
        str(manifest), project, tmp_path / "out2", s3_client_factory=lambda: Refusing()
    )
    (problem,) = summary.problems
    assert problem.line == 3 and "cannot read worker responses s3://" in problem.reason
    assert str(job / "annotations" / "worker-response" / "iteration-1" / "2") in problem.reason
    assert str(job / "manifests" / "output" / "worker-response") in problem.reason
    assert "S3 said:" in problem.reason and "does not exist" in problem.reason


def test_a_link_out_of_the_worker_response_folder_is_never_read(tmp_path: Path) -> None:
    job = _synced_job(tmp_path)
    secret = tmp_path / "secret.json"
    secret.write_text(
        (NO_LAMBDA / "worker-response/iteration-1/0/2026-11-20_10:00:00.json").read_text()
    )
    target = job / "annotations" / "worker-response" / "iteration-1" / "0"
    answer = next(target.iterdir())
    answer.unlink()
    os.symlink(secret, answer)
    # A link that stays inside the folder is fine.
    inside = job / "annotations" / "worker-response" / "iteration-1" / "1"
    real = next(inside.iterdir())
    copy = inside / "real.json"
    real.rename(copy)
    os.symlink(copy, real)
    manifest = job / "manifests" / "output" / "output.manifest"
    fetch = local_worker_response_fetch(manifest)
    spec = LabelSpec.from_mapping(yaml.safe_load(_two_mice()))
    summary = consolidate(
        manifest.read_text().splitlines(), spec, tmp_path / "out", fetch=fetch, load_image=no_image
    )
    assert summary.frames_consolidated == 2
    (problem,) = summary.problems
    assert problem.line == 1 and "outside" in problem.reason and "not read" in problem.reason


# -- hostile numbers, bounded ----------------------------------------------------------------


def _with_answers(line: str, change: Any) -> str:
    record = json.loads(line)
    for worker in record["annotatedResult"]["annotationsFromAllWorkers"]:
        content = json.loads(worker["annotationData"]["content"])
        change(content["annotatedResult"], worker)
        worker["annotationData"]["content"] = json.dumps(content)
    return json.dumps(record)


def test_hostile_numbers_are_skipped_with_a_reason(tmp_path: Path) -> None:
    spec = LabelSpec.from_mapping(yaml.safe_load(_two_mice()))
    lines = RECIPE.read_text().splitlines()

    def huge_image(answer: dict[str, Any], worker: dict[str, Any]) -> None:
        answer["inputImageProperties"] = {"width": 1e20, "height": 1e20}

    def boolean_size(answer: dict[str, Any], worker: dict[str, Any]) -> None:
        answer["inputImageProperties"] = {"width": True, "height": 570}

    def far_points(answer: dict[str, Any], worker: dict[str, Any]) -> None:
        del answer["inputImageProperties"]
        for point in answer["keypoints"]:
            point["x"] = 1e12

    def endless_time(answer: dict[str, Any], worker: dict[str, Any]) -> None:
        worker["timeSpentInSeconds"] = 1e308

    hostile = [
        _with_answers(lines[0], huge_image),
        _with_answers(lines[1], boolean_size),
        _with_answers(lines[2], far_points),
        _with_answers(lines[3], endless_time),
    ]
    summary = consolidate(hostile + lines[4:], spec, tmp_path, fetch=no_fetch, load_image=no_image)
    reasons: dict[int, str] = {}
    for problem in summary.problems:
        reasons.setdefault(problem.line, problem.reason)
    assert "image size 1e+20x1e+20 is not a size from 1 to 100,000 px" in reasons[1]
    assert "image size Truex570" in reasons[2]
    assert "outside the image" in reasons[3]
    assert 4 not in reasons  # an unbelievable time is not reported, just not counted
    assert summary.frames_consolidated == 3 and summary.frames_skipped == 3
    agreement = json.loads(summary.files.agreement.read_text())
    assert all(w["total_seconds"] is None for w in agreement["workers"])


def test_a_line_with_thousands_of_workers_costs_no_more_than_a_normal_one(tmp_path: Path) -> None:
    spec = LabelSpec.from_mapping(yaml.safe_load(_two_mice()))
    lines = RECIPE.read_text().splitlines()
    record = json.loads(lines[0])
    crowd = record["annotatedResult"]["annotationsFromAllWorkers"]
    wide = dict(record, annotatedResult={"annotationsFromAllWorkers": (crowd * 20)[:100]})
    wider = dict(record, annotatedResult={"annotationsFromAllWorkers": crowd * 1600})
    normal = lines * 40

    def peak(manifest: list[str], out: str) -> tuple[int, Any]:
        tracemalloc.start()
        summary = consolidate(manifest, spec, tmp_path / out, fetch=no_fetch, load_image=no_image)
        high = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return high, summary

    base, _ = peak(normal, "normal")
    lines_in = [json.dumps(wide), json.dumps(wider)]
    high, summary = peak(lines_in + normal, "hostile")
    manifest_bytes = sum(map(len, lines_in))
    assert manifest_bytes > 4_000_000  # the 8,000-worker line
    # Holding the hostile lines themselves, and nothing in proportion to their workers (the
    # 8,000 answers are never decoded; bench/consolidate.py --hostile times such lines).
    assert high < base + 2 * manifest_bytes + 4_000_000
    reasons = [p.reason for p in summary.problems]
    assert any("100 worker answers on one line" in r for r in reasons)
    assert any("bytes long" in r for r in reasons)
    assert summary.frames_consolidated == len(normal)


def test_wide_lines_are_computed_apart_and_change_no_result(tmp_path: Path) -> None:
    spec = LabelSpec.from_mapping(yaml.safe_load(_two_mice()))
    lines = RECIPE.read_text().splitlines()
    record = json.loads(lines[2])
    crowd = record["annotatedResult"]["annotationsFromAllWorkers"]
    wide = [dict(w, workerId=f"extra-{i}") for i, w in enumerate(crowd * 6)][:30]
    record["annotatedResult"]["annotationsFromAllWorkers"] = wide
    manifest = [*lines, json.dumps(record), *lines, json.dumps(record), *lines] * 10
    batches = list(read_batches(manifest, spec, fetch=no_fetch, report=ReadReport()))
    # One chunk of 512 lines, cut so the 30-worker lines never widen the 5-worker ones.
    assert [b.coords.shape[1] for b in batches[:3]] == [5, 30, 5]
    together = consolidate(manifest, spec, tmp_path / "a", fetch=no_fetch, load_image=no_image)
    alone = consolidate(
        manifest, spec, tmp_path / "b", fetch=no_fetch, load_image=no_image, batch_frames=1
    )
    for a, b in zip(together.files.all(), alone.files.all(), strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_an_answer_with_endless_keypoints_is_skipped(tmp_path: Path) -> None:
    spec = LabelSpec.from_mapping(yaml.safe_load(_two_mice()))
    lines = RECIPE.read_text().splitlines()

    def endless(answer: dict[str, Any], worker: dict[str, Any]) -> None:
        answer["keypoints"] = answer["keypoints"] * 50

    summary = consolidate(
        [_with_answers(lines[0], endless), *lines[1:]], spec, tmp_path, fetch=no_fetch,
        load_image=no_image,
    )  # fmt: skip
    assert summary.frames_consolidated == 5
    assert "700 keypoints; this project asks for 14" in summary.problems[0].reason


# -- honest exits ----------------------------------------------------------------------------


def test_an_input_manifest_given_by_mistake_exits_non_zero_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project = _project(tmp_path, MARS_SINGLE, name="mice")
    monkeypatch.setenv("GTBOT_PROJECTS_DIR", str(tmp_path / "projects"))
    manifest = tmp_path / "input.manifest"
    manifest.write_text(
        "".join(json.dumps({"source-ref": f"s3://b/f{i}.jpg"}) + "\n" for i in range(30))
    )
    out = tmp_path / "out"
    out.mkdir()
    (out / "keypoints.csv").write_text("an earlier run's file\n")
    code = cli.main(["consolidate", str(manifest), "--project", "mice", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "none of the 30 lines" in err and "input manifest" in err
    assert "line 1: only a `source-ref`, no labels" in err
    assert "... 20 more in" in err and "problems.csv" in err
    assert sorted(p.name for p in out.iterdir()) == ["problems.csv"]
    with open(out / "problems.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 30 and rows[0]["line"] == "1" and project.is_dir()


def test_problems_csv_lists_everything_and_messages_show_ten(tmp_path: Path) -> None:
    spec = LabelSpec.from_mapping(yaml.safe_load(_two_mice()))
    lines = RECIPE.read_text().splitlines()
    broken = ["{not json"] * 25
    summary = consolidate(broken + lines, spec, tmp_path, fetch=no_fetch, load_image=no_image)
    text = format_summary(summary)
    assert "25 problems:" in text and "line 10: line is not valid JSON" in text
    assert "line 11:" not in text and f"... 15 more in {summary.problems_file}" in text
    with open(summary.problems_file, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["line", "worker", "reason"] and len(rows) == 26


def test_text_cells_cannot_run_as_formulas(tmp_path: Path) -> None:
    spec = LabelSpec.from_mapping(yaml.safe_load(_two_mice()))
    record = json.loads(RECIPE.read_text().splitlines()[0])
    record["source-ref"] = '=HYPERLINK("http://evil","x")'
    workers = record["annotatedResult"]["annotationsFromAllWorkers"]
    workers[0]["workerId"] = "@SUM(1+1)"
    workers[0]["annotationData"]["content"] = "not json"
    summary = consolidate([json.dumps(record)], spec, tmp_path, fetch=no_fetch, load_image=no_image)
    for path in (summary.files.csv, summary.problems_file, summary.files.dlc):
        with open(path, newline="") as handle:
            cells = [cell for row in csv.reader(handle) for cell in row]
        assert not any(cell[:1] in "=+-@" and cell[1:2] for cell in cells if cell), path.name
    with open(summary.files.csv, newline="") as handle:
        assert next(csv.DictReader(handle))["frame"] == "'" + record["source-ref"]


# -- DeepLabCut export -----------------------------------------------------------------------


def _read_like_deeplabcut(path: Path) -> pd.DataFrame:
    """As `deeplabcut.utils.conversioncode.convertcsv2h5` reads a CollectedData csv: four header
    rows when the second line names individuals, three otherwise; a three-column index when
    rows start with `labeled-data`."""
    with open(path) as handle:
        head = [next(handle) for _ in range(5)]
    header = list(range(4)) if "individuals" in head[1] else list(range(3))
    index_col = [0, 1, 2] if head[-1].split(",")[0] == "labeled-data" else 0
    return pd.read_csv(path, index_col=index_col, header=header)


def test_deeplabcut_export_reads_back_multi_animal(tmp_path: Path) -> None:
    spec = LabelSpec.from_mapping(yaml.safe_load(_two_mice()))
    summary = consolidate(
        RECIPE.read_text().splitlines(), spec, tmp_path, fetch=no_fetch, load_image=no_image,
        job_name="demo-mice-20261120",
    )  # fmt: skip
    assert summary.files.dlc.name == "CollectedData_gtbot.csv"
    frame = _read_like_deeplabcut(summary.files.dlc)
    assert frame.columns.names == ["scorer", "individuals", "bodyparts", "coords"]
    assert frame.shape == (6, 2 * 7 * 2)
    assert frame.index[0] == ("labeled-data", "demo-mice-20261120", "frame_000000.jpg")
    rows = _consensus_csv(summary.files.csv)
    for row in rows:
        name = row["frame"].rsplit("/", 1)[1]
        x = frame.loc[
            ("labeled-data", "demo-mice-20261120", name),
            ("gtbot", row["animal"], row["keypoint"], "x"),
        ]
        assert x == pytest.approx(float(row["x"]))


def test_deeplabcut_export_single_animal_layout(tmp_path: Path) -> None:
    spec = LabelSpec.from_mapping(yaml.safe_load(MARS_SINGLE))
    lines = _public_crowd(np.random.default_rng(4), 6, KEYPOINTS)
    summary = consolidate(lines, spec, tmp_path, fetch=no_fetch, load_image=no_image)
    frame = _read_like_deeplabcut(summary.files.dlc)
    assert frame.columns.names == ["scorer", "bodyparts", "coords"]
    assert list(frame.columns.get_level_values("bodyparts")[::2]) == KEYPOINTS
    # No job name given: the folder is called "gtbot".
    assert frame.index[0] == ("labeled-data", "gtbot", "mouse0000.jpg")
    assert frame.notna().all().all()


# -- per-worker report -----------------------------------------------------------------------


def test_workers_are_ranked_and_the_careless_one_is_named(tmp_path: Path) -> None:
    spec = LabelSpec.from_mapping(yaml.safe_load(_two_mice()))
    lines = _public_crowd(np.random.default_rng(5), 60, [f"black mouse {k}" for k in KEYPOINTS])

    def careless(answer: dict[str, Any], worker: dict[str, Any]) -> None:
        if worker["workerId"].endswith("3"):
            worker["workerId"] = "public.us-east-1.careless"
            for point in answer["keypoints"]:
                point["x"] = min(point["x"] + 150, 1250)

    bad = [_with_answers(line, careless) for line in lines]
    summary = consolidate(bad, spec, tmp_path, fetch=no_fetch, load_image=no_image)
    agreement = json.loads(summary.files.agreement.read_text())
    assert agreement["workers_to_review"] == ["public.us-east-1.careless"]
    first = agreement["workers"][0]
    assert first["rank"] == 1 and first["worker"] == "public.us-east-1.careless"
    assert first["review"] and "median distance" in first["review"][0]
    assert [w["rank"] for w in agreement["workers"]] == list(
        range(1, len(agreement["workers"]) + 1)
    )
    text = format_summary(summary)
    assert "Workers to review (1):\n  public.us-east-1.careless: median distance" in text
    assert "  1. public.us-east-1.careless: " in text
    assert Image.open(summary.files.workers_chart).size[0] > 300


# -- results of a finished job ---------------------------------------------------------------


def test_a_job_whose_results_cannot_be_built_says_why(tmp_path: Path) -> None:
    from aws import groundtruth as gt
    from bot.context import Context
    from bot.errors import GtBotError
    from bot.job_results import ResultsUnavailableError, completion_results, job_results
    from bot.settings import Settings

    ctx = Context(settings=Settings.from_env({"GTBOT_PROJECTS_DIR": str(tmp_path)}))
    with pytest.raises(ResultsUnavailableError) as caught:
        job_results(ctx, "elsewhere-20261120")
    assert caught.value.user_message.startswith(
        "Results of elsewhere-20261120 are unavailable because no project in "
    )
    # The watcher's completion post puts "Results unavailable because" in front of the reason.
    job = gt.JobInfo("elsewhere-20261120", "arn:aws:sagemaker:x", "Completed", None)
    with pytest.raises(GtBotError) as reason:
        completion_results(ctx, None, job)
    assert reason.value.user_message.startswith("no project in ")
