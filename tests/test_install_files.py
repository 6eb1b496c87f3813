"""The files a lab installs from: Slack app manifests and the Dockerfile stay in step with the code."""

from __future__ import annotations

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
