"""Offline consolidation of a manifest on disk: a line that is not even UTF-8 is one problem."""

from __future__ import annotations

import shutil
from pathlib import Path

from bot.results.runner import format_summary, run_consolidate

SAMPLES = Path(__file__).parent / "samples"


def test_local_manifest_with_a_broken_line_is_reported_and_the_rest_goes_on(tmp_path: Path) -> None:
    project = tmp_path / "demo"
    (project / "annotation-data" / "raw-images").mkdir(parents=True)
    shutil.copy(SAMPLES / "project-config.yml", project / "project-config.yml")
    manifest = tmp_path / "output.manifest"
    good = (SAMPLES / "output-recipe.manifest").read_bytes()
    manifest.write_bytes(good + b'{"source-ref": "s3://b/\xff\xfe.jpg"}\n')

    def no_s3() -> object:
        raise AssertionError("a local manifest needs no S3")

    summary = run_consolidate(str(manifest), project, tmp_path / "out", s3_client_factory=no_s3)
    assert summary.frames_consolidated == 6 and summary.frames_skipped == 1
    assert [p.line for p in summary.problems] == [7]
    assert format_summary(summary).splitlines()[-1] == "6 frames consolidated, 1 skipped."
    assert (tmp_path / "out" / "keypoints.csv").is_file()
