"""Shared fixtures: fake AWS credentials, a moto S3 server on loopback, temp project dirs."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from db_support import BACKENDS, database
from watcher_support import JobRig, RecordingSlackStub

from aws.emulator.groundtruth import (
    EmulatorSettings,
    GroundTruthEmulator,
    start_groundtruth_emulator,
)
from aws.emulator.moto_s3 import LocalS3, start_local_s3
from bot.logs import NOISY

SAMPLES = Path(__file__).parent / "samples"

# Never reach real AWS from a test: fake credentials and no profile, set before any client exists.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-2",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)
os.environ.pop("AWS_PROFILE", None)
for _var in ("GTBOT_ROLE_ARN", "GTBOT_WORKTEAM_ARN", "GTBOT_CONFIG", "GTBOT_DATABASE_URL"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def local_s3_server() -> Iterator[LocalS3]:
    server = start_local_s3()
    yield server
    server.stop()


@pytest.fixture
def s3_endpoint(local_s3_server: LocalS3, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty moto S3 account over real HTTP; boto3 reaches it through its own variable."""
    local_s3_server.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", local_s3_server.url)
    return local_s3_server.url


def write_project(
    projects_dir: Path, name: str = "demo", *, frames: int = 0, **overrides: object
) -> Path:
    """A project like the MARS sample, with small solid-colour frames, for tests of the recipe steps."""
    import yaml
    from PIL import Image

    data = yaml.safe_load((SAMPLES / "project-config.yml").read_text())
    data.update({"data_bucket": f"{name}-frames", "template_bucket": f"{name}-ui"})
    for key, value in overrides.items():
        if key.startswith("job_"):
            data["job"][key[4:]] = value
        else:
            data[key] = value
    project = projects_dir / name
    images = project / "annotation-data" / "raw-images"
    images.mkdir(parents=True, exist_ok=True)
    (project / "project-config.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    for i in range(frames):
        Image.new("RGB", (64, 48), (i * 7 % 255, 80, 120)).save(images / f"frame_{i:06d}.jpg")
    return project


@pytest.fixture
def projects_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "projects"
    root.mkdir()
    monkeypatch.setenv("GTBOT_PROJECTS_DIR", str(root))
    monkeypatch.chdir(tmp_path)
    return root


SANDBOX_TEAM = "arn:aws:sagemaker:us-east-2:123456789012:workteam/private-crowd/sandbox-labelers"
# The recipe's Lambdas (aws-sagemaker-ground-truth-recipe), which the emulator answers for.
PRE_LAMBDA = "arn:aws:lambda:us-east-2:123456789012:function:GtRecipePreHumanTaskFunction"
POST_LAMBDA = (
    "arn:aws:lambda:us-east-2:123456789012:function:GtRecipeAnnotationConsolidationFunction"
)


@pytest.fixture
def make_emulator(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., GroundTruthEmulator]]:
    """Start gtbot's Ground Truth emulator on loopback and point boto3 at it."""
    started: list[GroundTruthEmulator] = []

    def start(**settings: Any) -> GroundTruthEmulator:
        emu = start_groundtruth_emulator(s3_endpoint, EmulatorSettings(**settings))
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", emu.url)
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def stub() -> Iterator[RecordingSlackStub]:
    """A Slack Web API stub that records each answer's status (the watcher tests; a module
    may define its own `stub`, as the Socket Mode tests do)."""
    server = RecordingSlackStub()
    yield server
    server.stop()


@pytest.fixture
def rig(emulator: GroundTruthEmulator, s3_endpoint: str, tmp_path: Path) -> JobRig:
    """Jobs on the emulators, from the `emulator` fixture of the module that asks."""
    return JobRig(emulator, s3_endpoint, tmp_path / "frames")


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """gtbot's entry points configure the process's logging (the root level, a JSON handler on
    the stderr of the moment, the noisy libraries' levels). A test that runs one must not leave
    that to the next test in its worker: INFO lines from other loggers then reached tests that
    read their own log lines, and the handler wrote to a closed stream."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {name: logging.getLogger(name).level for name in NOISY}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    for name, was in noisy.items():
        logging.getLogger(name).setLevel(was)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, and a PostgreSQL database when GTBOT_TEST_POSTGRES_URL
    names a server (`.ci/with-postgres` starts one)."""
    with database(request.param, tmp_path) as url:
        yield url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under a mutant (tests/mutation.py), the quickest tests run first: mutmut stops at the
    first failure, so a mutant a unit test kills no longer waits for the emulator flows."""
    if "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", ""):
        return
    stats = Path("mutmut-stats.json")  # mutmut runs the tests in its `mutants/` copy
    if not stats.is_file():
        return
    import json

    seconds: dict[str, float] = json.loads(stats.read_text()).get("duration_by_test", {})
    items.sort(key=lambda item: seconds.get(item.nodeid, float("inf")))
