"""The files a lab installs from: Slack app manifests and the Dockerfile stay in step with the code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from handlers.blocks import CANCEL_ACTION, LAUNCH_ACTION, STOP_ACTION

ROOT = Path(__file__).parent.parent


def test_slack_manifests_declare_the_command_scopes_and_mode() -> None:
    http = yaml.safe_load((ROOT / "slack-app-manifest.yml").read_text())
    socket = yaml.safe_load((ROOT / "slack-app-manifest.socket.yml").read_text())
    for manifest in (http, socket):
        assert manifest["features"]["slash_commands"][0]["command"] == "/gt"
        scopes = set(manifest["oauth_config"]["scopes"]["bot"])
        assert {"commands", "chat:write", "files:write", "usergroups:read"} <= scopes
        # conversations.replies with a bot token (docs.slack.dev/reference/methods/conversations.replies)
        assert {"channels:history", "groups:history"} <= scopes
        assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert http["features"]["slash_commands"][0]["url"].endswith("/slack/events")
    assert http["settings"]["interactivity"]["request_url"].endswith("/slack/events")
    for manifest in (http, socket):
        assert manifest["settings"]["event_subscriptions"]["bot_events"] == ["app_mention"]
        assert "app_mentions:read" in manifest["oauth_config"]["scopes"]["bot"]
    assert http["settings"]["event_subscriptions"]["request_url"].endswith("/slack/events")
    assert http["settings"]["socket_mode_enabled"] is False
    assert socket["settings"]["socket_mode_enabled"] is True
    assert "url" not in socket["features"]["slash_commands"][0]
    assert len({LAUNCH_ACTION, CANCEL_ACTION, STOP_ACTION}) == 3


def test_dockerfile_copies_every_package_and_runs_serve_as_non_root() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]
    for top in {p.split(".")[0] for p in packages}:
        assert f"COPY {top} ./{top}" in docker
    assert "FROM python:3.11-slim" in docker
    assert "USER gtbot" in docker
    assert "HEALTHCHECK" in docker and "/healthz" in docker
    assert 'CMD ["gtbot", "serve", "--port", "3000"]' in docker


def _final_stage(docker: str) -> list[str]:
    """The instructions of the image's last stage, continuation lines joined."""
    lines = docker.replace("\\\n", " ").splitlines()
    last = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return [line for line in lines[last:] if line and not line.startswith("#")]


def test_dependencies_sit_in_a_layer_that_code_changes_do_not_invalidate() -> None:
    """Docker reuses a layer while its instruction and the files it copied are unchanged: the
    dependencies are installed from pyproject.toml alone, before any of gtbot's code arrives,
    and the image carries the built wheel, not the sources, tests or benchmarks."""
    stage = _final_stage((ROOT / "Dockerfile").read_text())
    copies = [line for line in stage if line.startswith("COPY ")]
    assert copies == [
        "COPY pyproject.toml /tmp/pyproject.toml",
        "COPY --from=wheel /wheel /wheel",
    ]
    deps = next(i for i, line in enumerate(stage) if "-r /tmp/requirements.txt" in line)
    assert stage.index(copies[0]) < deps < stage.index(copies[1])
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests", "bench"} <= set(ignored)


def test_the_dependency_layer_installs_exactly_what_pyproject_lists(tmp_path: Path) -> None:
    """The Dockerfile's own command, run on pyproject.toml: the dependencies and the
    PostgreSQL driver, nothing of the dev or sandbox extras."""
    stage = _final_stage((ROOT / "Dockerfile").read_text())
    (run,) = [line for line in stage if "requirements.txt" in line and "tomllib" in line]
    program = re.search(r'python -c "([^"]+)"', run)
    assert program
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    code = program[1].replace("/tmp/pyproject.toml", str(tmp_path / "pyproject.toml"))
    printed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = project["dependencies"] + project["optional-dependencies"]["postgresql"]
    assert [line for line in printed if line] == expected
    assert any(d.startswith("psycopg[binary]") for d in expected)


def healthcheck(port: int) -> int:
    """Run the Dockerfile's HEALTHCHECK command against 127.0.0.1:`port`: its exit status."""
    docker = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = re.search(r"^HEALTHCHECK .*? CMD (\[.*\])$", docker, re.MULTILINE)
    assert found, "HEALTHCHECK must use the exec form"
    argv = json.loads(found[1])
    assert argv[0] == "python" and "127.0.0.1:3000/healthz" in argv[2]
    argv = [sys.executable, *argv[1:2], argv[2].replace(":3000/", f":{port}/")]
    return subprocess.run(argv, capture_output=True, timeout=20).returncode


def test_every_package_and_template_file_goes_into_the_wheel() -> None:
    """A package left out of pyproject's list installs fine in editable mode and breaks Docker."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("bot", "aws", "handlers", "templates")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found == listed
    patterns = setuptools["package-data"]["templates"]
    for data in (ROOT / "templates").iterdir():
        if data.suffix != ".py" and not data.name.startswith("__"):
            assert any(data.match(p) for p in patterns), data.name
