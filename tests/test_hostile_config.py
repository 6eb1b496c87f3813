"""Config files and `init` options as an attacker would write them.

`/gt init` options come from a chat; project configs from whoever can write to the projects
folder, and `/gt jobs` and `/gt status` read every one of them. A value must never become a key,
an instruction image must stay inside its project, and one bad file (an alias bomb, a huge or
non-UTF-8 file) must be refused quickly with a clear message while the others still list.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import SANDBOX_TEAM, write_project
from watcher_support import JobRig

from aws.emulator.groundtruth import GroundTruthEmulator
from bot.commands import Router
from bot.context import Context
from bot.errors import ConfigError, UsageError
from bot.project import load_project
from bot.recipe import init_project, render_project_config
from bot.settings import Settings, load_lab_config
from bot.yamlio import MAX_CONFIG_BYTES

INJECTED_REGION = "us-east-2 #\u2028instruction_image: /etc/hostname #"


# --------------------------------------------------------------------------- init options


def test_init_refuses_an_option_that_would_inject_a_key(projects_dir: Path) -> None:
    """The adversarial run's option: U+2028 is one word to shell-style splitting and a line
    break to YAML. It is refused before anything is written."""
    router = Router(Context(settings=Settings.from_env()))
    with pytest.raises(UsageError, match="--region .* is not an AWS region"):
        router.run(f'init evil --region "{INJECTED_REGION}"')
    with pytest.raises(UsageError, match="--data-bucket"):
        router.run('init evil --data-bucket "ok-bucket\ninstruction_image: /etc/hostname"')
    assert not (projects_dir / "evil").exists()


@pytest.mark.parametrize(
    "field", ["data_bucket", "template_bucket", "region", "role_arn", "workteam_arn"]
)
@pytest.mark.parametrize(
    "value",
    [
        INJECTED_REGION,
        "x\ninstruction_image: /etc/hostname",
        "x\rinstruction_image: /etc/hostname",
        "x\x85instruction_image: /etc/hostname",
        "x\u2029instruction_image: /etc/hostname",
        "x # comment: y",
        "'quoted' \"double\" {flow: map} [list] &anchor *alias !tag",
    ],
    ids=["u2028", "lf", "cr", "nel", "u2029", "hash", "indicators"],
)
def test_the_written_config_keeps_every_value_a_value(field: str, value: str) -> None:
    """Whatever reaches the writer (validation aside), the file reads back with the same keys
    and the value in its own place."""
    values: dict[str, str | None] = {
        "data_bucket": "lab-frames",
        "template_bucket": "lab-ui",
        "region": "us-east-2",
        "role_arn": None,
        "workteam_arn": "arn:aws:sagemaker:us-east-2:123456789012:workteam/private-crowd/t",
    }
    values[field] = value
    data = yaml.safe_load(render_project_config(name="demo", **values))  # type: ignore[arg-type]
    assert "instruction_image" not in data
    where = data["job"] if field in ("role_arn", "workteam_arn") else data
    assert where[field] == value


def test_lab_defaults_are_checked_before_they_are_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GTBOT_ROLE_ARN"):
        init_project(
            tmp_path,
            "demo",
            region="us-east-2",
            role_arn="arn:aws:iam::123456789012:role/x\ninstruction_image: /etc/hostname",
        )
    assert not (tmp_path / "demo").exists()


# --------------------------------------------------------------------------- instruction image


def _project_with_image(root: Path, image: str) -> Path:
    from conftest import write_project

    return write_project(root, "demo", instruction_image=image)


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_instruction_images_outside_the_project_are_refused(tmp_path: Path, how: str) -> None:
    """`template` uploads the image to S3: outside the project it would publish a host file."""
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"\x89PNG not for workers")
    projects = tmp_path / "projects"
    if how == "absolute":
        _project_with_image(projects, str(outside))
    elif how == "dotdot":
        _project_with_image(projects, "../../secret.png")
    else:
        project = _project_with_image(projects, "instructions.png")
        (project / "instructions.png").symlink_to(outside)
    with pytest.raises(ConfigError, match="outside the project folder") as info:
        load_project(projects, "demo")
    assert "instruction_image" in info.value.user_message


def test_an_instruction_image_inside_the_project_is_used(tmp_path: Path) -> None:
    project = _project_with_image(tmp_path, "docs/instructions.png")
    (project / "docs").mkdir()
    (project / "docs" / "instructions.png").write_bytes(b"\x89PNG")
    loaded = load_project(tmp_path, "demo")
    assert loaded.instruction_image == project / "docs" / "instructions.png"


def test_an_image_swapped_for_a_link_after_loading_is_not_uploaded(
    tmp_path: Path, s3_endpoint: str
) -> None:
    """Between loading the config and `template` reading the image, a link put in its place
    must not publish the file it points to."""
    from bot.recipe import publish_template

    outside = tmp_path / "secret.png"
    outside.write_bytes(b"\x89PNG not for workers")
    project_dir = _project_with_image(tmp_path / "projects", "instructions.png")
    (project_dir / "instructions.png").write_bytes(b"\x89PNG")
    project = load_project(tmp_path / "projects", "demo")
    (project_dir / "instructions.png").unlink()
    (project_dir / "instructions.png").symlink_to(outside)
    with pytest.raises(ConfigError, match="now leads outside the project folder"):
        publish_template(Context(settings=Settings.from_env({})), project)


# --------------------------------------------------------------------------- loading


def _alias_bomb(levels: int = 8) -> str:
    """Each level lists the previous one eight times: a few hundred bytes, 8**levels leaves."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 8)
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append(f"species: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    (tmp_path / "bomb").mkdir()
    (tmp_path / "bomb" / "project-config.yml").write_text(_alias_bomb())
    started = time.monotonic()
    with pytest.raises(ConfigError, match="line 2: anchors and aliases"):
        load_project(tmp_path, "bomb")
    assert time.monotonic() - started < 1.0


def test_gtbot_yml_refuses_aliases_and_non_utf8_too(tmp_path: Path) -> None:
    lab = tmp_path / "gtbot.yml"
    lab.write_text("x: &r arn:aws:iam::123456789012:role/r\njob: {role_arn: *r}\n")
    with pytest.raises(ConfigError, match="anchors and aliases"):
        load_lab_config(lab)
    lab.write_bytes(b"job:\n  role_arn: caf\xe9\n")
    with pytest.raises(ConfigError, match="line 2: not UTF-8"):
        load_lab_config(lab)


def test_huge_deep_and_non_utf8_configs_are_refused_clearly(tmp_path: Path) -> None:
    for name, content in (
        ("huge", b"species: mouse\n" + b"# padding\n" * (MAX_CONFIG_BYTES // 10)),
        ("deep", b"species: " + b"[" * 5_000),
        ("latin1", b"species: souris\nheader: \xe9tiquette\n"),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "project-config.yml").write_bytes(content)
    with pytest.raises(ConfigError, match="more than 256 KiB"):
        load_project(tmp_path, "huge")
    with pytest.raises(ConfigError, match="nested too deeply|not valid YAML"):
        load_project(tmp_path, "deep")
    with pytest.raises(ConfigError, match=r"line 2: not UTF-8 text \(byte 0xe9\)"):
        load_project(tmp_path, "latin1")


def test_one_bad_project_never_breaks_the_listing(
    make_emulator: Callable[..., GroundTruthEmulator],
    projects_dir: Path,
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    """`jobs` and `status` read every project's region; bad ones are skipped, quickly."""
    emulator = make_emulator(rate=0)
    write_project(projects_dir, "good", frames=1, job_workteam_arn=SANDBOX_TEAM)
    for name, content in (
        ("bomb", _alias_bomb(9).encode()),
        ("latin1", b"species: souris\nheader: \xe9tiquette\n"),
        ("huge", b"# x\n" * MAX_CONFIG_BYTES),
    ):
        (projects_dir / name).mkdir()
        (projects_dir / name / "project-config.yml").write_bytes(content)
    # A real job (frames, manifest and interface in S3) that stays in progress: no worker works.
    JobRig(emulator, s3_endpoint, tmp_path / "frames").create_job("good-20260101000000", frames=1)
    ctx = Context(settings=Settings.from_env())
    router = Router(ctx)
    started = time.monotonic()
    listed = router.run("jobs")
    running = router.run("status")
    assert time.monotonic() - started < 5.0
    assert "good-20260101000000" in listed.text
    assert "good-20260101000000" in running.text
