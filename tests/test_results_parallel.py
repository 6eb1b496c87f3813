"""The two-process read gives exactly the single-process results: same files byte for byte,
same summary, same problems (line numbers and reasons, in order, capped the same way)."""

from __future__ import annotations

import csv
import dataclasses
import json
import multiprocessing
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from bot.results import LabelSpec, consolidate, consolidation, local_worker_response_fetch, parallel
from bot.results.consolidation import ConsolidationSummary
from bot.results.exports import ResultWriter

SAMPLES = Path(__file__).parent / "samples"
RECIPE = SAMPLES / "output-recipe.manifest"
NO_LAMBDA = SAMPLES / "no-consolidation" / "output.manifest"


@pytest.fixture(scope="module")
def spec() -> LabelSpec:
    return LabelSpec.from_mapping(yaml.safe_load((SAMPLES / "project-config.yml").read_text()))


def _jitter(record: dict, rng: random.Random, frame: int) -> dict:  # type: ignore[type-arg]
    """A new frame from a sample line: another source-ref, moved points, sometimes a worker
    fewer and some time spent reported."""
    record = json.loads(json.dumps(record))
    if frame < 300:
        # The job name must come from the first line that has one, careful path or not.
        del record["annotatedResult-metadata"]["job-name"]
    elif frame < 900:
        record["annotatedResult-metadata"]["job-name"] = "par-job"
    record["source-ref"] = f"s3://lab-frames/par/images/frame_{frame:05d}.jpg"
    workers = record["annotatedResult"]["annotationsFromAllWorkers"]
    if rng.random() < 0.2:
        del workers[rng.randrange(len(workers))]
    for worker in workers:
        content = json.loads(worker["annotationData"]["content"])
        for point in content["annotatedResult"]["keypoints"]:
            point["x"] = round(min(max(point["x"] + rng.gauss(0, 4), 0), 1024), 2)
            point["y"] = round(min(max(point["y"] + rng.gauss(0, 4), 0), 570), 2)
        worker["annotationData"]["content"] = json.dumps(content)
        if rng.random() < 0.3:
            worker["timeSpentInSeconds"] = round(rng.uniform(5, 90), 3)
    return record


def _hostile(record: dict, rng: random.Random, frame: int) -> bytes:  # type: ignore[type-arg]
    """One of the ways a line goes wrong; several give one problem per worker."""
    kind = rng.randrange(11)
    if kind == 0:
        return b"{not json"
    if kind == 10:
        # Far more workers than the rest: computed in a batch of its own (same files).
        record = _jitter(record, rng, frame)
        crowd = record["annotatedResult"]["annotationsFromAllWorkers"]
        wide = [dict(w, workerId=f"wide-{i}") for i, w in enumerate(crowd * 5)]
        record["annotatedResult"]["annotationsFromAllWorkers"] = wide[:24]
        return json.dumps(record).encode()
    if kind == 1:
        return b"[1, 2]"
    if kind == 2:
        failed = {"source-ref": f"s3://x/{frame}.jpg", "annotatedResult-metadata": {}}
        failed["annotatedResult-metadata"]["failure-reason"] = "ClientError: timeout"
        return json.dumps(failed).encode()
    if kind == 3:
        return b"\xff\xfe not utf-8"
    if kind == 4:
        return b""
    record = _jitter(record, rng, frame)
    for worker in record["annotatedResult"]["annotationsFromAllWorkers"]:
        if kind == 5:
            worker["annotationData"]["content"] = "__import__('os').system('touch /tmp/pwned')"
            continue
        content = json.loads(worker["annotationData"]["content"])
        point = content["annotatedResult"]["keypoints"][rng.randrange(3)]
        if kind == 6:
            point["x"] = float("nan")
        elif kind == 7:
            point["label"] = "purple mouse nose"
        elif kind == 8:
            point["y"] = 5000
        else:
            point["x"] = True
        worker["annotationData"]["content"] = json.dumps(content)
    return json.dumps(record).encode()


def _manifest(path: Path, frames: int) -> None:
    rng = random.Random(7)
    recipe = [json.loads(line) for line in RECIPE.read_text().splitlines()]
    by_reference = NO_LAMBDA.read_bytes().splitlines()
    with open(path, "wb") as out:
        for frame in range(frames):
            record = rng.choice(recipe)
            roll = rng.random()
            if roll < 0.2:
                line = _hostile(record, rng, frame)
            elif roll < 0.21 and frame >= 300:
                line = rng.choice(by_reference)  # needs `fetch`, which the child never has
            else:
                line = json.dumps(_jitter(record, rng, frame)).encode()
            out.write(line + b"\n")


def _run(manifest: Path, spec: LabelSpec, out: Path, workers: int) -> ConsolidationSummary:
    with open(manifest, "rb") as lines:
        summary = consolidate(
            lines,
            spec,
            out,
            fetch=local_worker_response_fetch(NO_LAMBDA),
            load_image=lambda ref: Image.new("RGB", (1024, 570), (40, 40, 40)),
            batch_frames=64,
            workers=workers,
        )
        assert lines.read() == b""  # the handle is left at the end either way
    return summary


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_two_processes_match_one_exactly(
    spec: LabelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    # Forked when the caller runs one thread, spawned when it runs several (the bot).
    if method == "fork" and threading.active_count() > 1:
        pytest.skip("other threads run in this test process; forking it would be unsafe")
    monkeypatch.setattr(parallel, "_context", lambda: multiprocessing.get_context(method))
    manifest = tmp_path / "output.manifest"
    _manifest(manifest, 4000)
    one = _run(manifest, spec, tmp_path / "one", workers=1)
    # Slow the main process's own reads down so the child, however slow to start, takes part.
    read, take = parallel._read, parallel._Inbox.take
    from_child: list[str] = []

    def slow_read(*args: object, **kwargs: object) -> object:
        time.sleep(0.03)
        return read(*args, **kwargs)  # type: ignore[arg-type]

    def counted_take(self: parallel._Inbox, index: int) -> object:
        received = take(self, index)
        if received is not None:
            from_child.append("lines" if isinstance(received, list) else "chunk")
        return received

    monkeypatch.setattr(parallel, "_read", slow_read)
    monkeypatch.setattr(parallel._Inbox, "take", counted_take)
    two = _run(manifest, spec, tmp_path / "two", workers=2)
    # Chunks from the child, and chunks it handed back because they need `fetch`.
    assert {"chunk", "lines"} <= set(from_child)
    for a, b in zip(
        (*one.files.all(), one.problems_file), (*two.files.all(), two.problems_file), strict=True
    ):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert one.problem_count > len(one.problems) == 1000  # the cap is exercised
    # Every problem is in problems.csv, in line order, whatever the cap on the summary's list.
    with open(one.problems_file, newline="") as handle:
        listed = list(csv.DictReader(handle))
    assert len(listed) == one.problem_count
    assert [int(row["line"]) for row in listed] == sorted(int(row["line"]) for row in listed)
    assert any(row["worker"] for row in listed)
    assert max(p.line for p in one.problems) > 20 * 64  # problems from many chunks
    assert one.job_name == "par-job"
    assert one.frames_skipped > 100 and one.frames_consolidated > 3500
    assert one.workers > 5  # worker-response lines bring their own people
    assert dataclasses.replace(two, files=one.files, problems_file=one.problems_file) == one
    assert not Path("/tmp/pwned").exists()


_FORKED_RUN = """
import sys
from pathlib import Path
import yaml
from PIL import Image
from bot.results import LabelSpec, consolidate, local_worker_response_fetch, parallel
manifest, out, samples = (Path(a) for a in sys.argv[1:4])
assert parallel._context().get_start_method() == "fork"
spec = LabelSpec.from_mapping(yaml.safe_load((samples / "project-config.yml").read_text()))
with open(manifest, "rb") as lines:
    consolidate(
        lines,
        spec,
        out,
        fetch=local_worker_response_fetch(samples / "no-consolidation" / "output.manifest"),
        load_image=lambda ref: Image.new("RGB", (1024, 570), (40, 40, 40)),
        batch_frames=64,
        workers=2,
    )
"""


def test_a_forked_child_matches_one_process_too(spec: LabelSpec, tmp_path: Path) -> None:
    # This test process may run other threads, so the forked run happens in a fresh one.
    manifest = tmp_path / "output.manifest"
    _manifest(manifest, 2000)
    one = _run(manifest, spec, tmp_path / "one", workers=1)
    subprocess.run(
        [sys.executable, "-c", _FORKED_RUN, str(manifest), str(tmp_path / "two"), str(SAMPLES)],
        check=True,
        timeout=120,
    )
    for a in (*one.files.all(), one.problems_file):
        assert a.read_bytes() == (tmp_path / "two" / a.name).read_bytes(), a.name


def test_the_child_is_forked_only_from_a_single_thread() -> None:
    assert parallel._context().get_start_method() == (
        "fork" if threading.active_count() == 1 else "spawn"
    )
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert parallel._context().get_start_method() == "spawn"
    finally:
        stop.set()
        other.join()


def test_small_or_unfit_inputs_stay_in_one_process(
    spec: LabelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a second process was started")

    monkeypatch.setattr(consolidation, "parallel_results", refuse)
    lines = RECIPE.read_text().splitlines()
    consolidate(lines, spec, tmp_path / "list", fetch=refuse, load_image=refuse, workers=2)
    with open(RECIPE, "rb") as handle:
        summary = consolidate(handle, spec, tmp_path / "small", fetch=refuse, load_image=refuse)
    assert summary.frames_consolidated == 6
    with open(RECIPE, encoding="utf-8") as text:
        consolidate(text, spec, tmp_path / "text", fetch=refuse, load_image=refuse, workers=2)


def test_a_failing_writer_stops_the_second_process(
    spec: LabelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []

    def broken(self: ResultWriter, *args: object) -> None:
        calls.append(args)
        if len(calls) == 10:
            raise OSError("disk full")

    manifest = tmp_path / "output.manifest"
    _manifest(manifest, 2000)
    before = set(Path(tempfile.gettempdir()).glob("gtbot-consolidate-*"))
    monkeypatch.setattr(ResultWriter, "add", broken)
    with pytest.raises(OSError, match="disk full"):
        _run(manifest, spec, tmp_path / "out", workers=2)
    assert multiprocessing.active_children() == []
    assert set(Path(tempfile.gettempdir()).glob("gtbot-consolidate-*")) == before


def test_chunks_are_cut_where_iterating_the_file_does(tmp_path: Path) -> None:
    rng = random.Random(3)
    for trial in range(200):
        lines = [b"x" * rng.randint(0, 30) for _ in range(rng.randint(0, 50))]
        data = b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")
        path = tmp_path / f"m{trial}"
        path.write_bytes(data)
        batch = rng.randint(1, 7)
        start = rng.randint(0, len(data)) if rng.random() < 0.2 else 0
        with open(path, "rb") as handle:
            handle.seek(start)
            expected = list(handle)
        got: list[bytes] = []
        with open(path, "rb") as handle:
            at = start
            while True:
                # Tiny first reads make cuts fall on read edges and reads grow.
                chunk, at = parallel.read_lines(handle.fileno(), at, batch, rng.randint(1, 40))
                if not chunk:
                    break
                assert len(chunk) == batch or at == len(data)
                got += [bytes(line) for line in chunk]
        assert got == expected, (data, batch)
