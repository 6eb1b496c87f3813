"""compose.yaml, the replicated deployment: two gtbot replicas on PostgreSQL behind nginx, each
with a health check, the database on a volume, and the image able to reach PostgreSQL.

Docker is not on the test machine, so this reads the file the way Compose would and checks
what the README promises; `docker compose config` validates it where Docker is installed.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from handlers.server import MAX_BODY_BYTES

ROOT = Path(__file__).parent.parent


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "compose.yaml").read_text()))


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    pairs = (item.partition("=") for item in service["environment"])
    return {name: (value if sep else None) for name, sep, value in pairs}


def test_two_gtbot_replicas_share_postgresql_and_the_projects_folder() -> None:
    compose = _compose()
    assert set(compose["services"]) == {"postgres", "gtbot", "lb"}
    gtbot, postgres = compose["services"]["gtbot"], compose["services"]["postgres"]
    assert gtbot["deploy"]["replicas"] == 2
    assert gtbot["build"] == "."
    assert gtbot["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = _environment(gtbot)
    url = env["GTBOT_DATABASE_URL"] or ""
    assert url.startswith("postgresql+psycopg://gtbot:") and url.endswith("@postgres:5432/gtbot")
    assert postgres["environment"]["POSTGRES_USER"] == "gtbot"
    assert postgres["environment"]["POSTGRES_DB"] == "gtbot"
    # Secrets come from the shell, and compose refuses to start without them.
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
        assert re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", env[name] or ""), name
    assert "${GTBOT_DB_PASSWORD:?" in postgres["environment"]["POSTGRES_PASSWORD"]
    assert "${GTBOT_DB_PASSWORD:?" in url
    # The projects folder is one folder for every replica, where the image looks for it.
    docker = (ROOT / "Dockerfile").read_text()
    projects = re.search(r"GTBOT_PROJECTS_DIR=(\S+)", docker)
    assert projects and f"./projects:{projects[1]}" in gtbot["volumes"]
    # Every setting passed on is one the README documents.
    readme = (ROOT / "README.md").read_text()
    for name in env:
        if name.startswith("GTBOT_"):
            assert f"`{name}`" in readme, name


def test_the_database_lives_on_a_volume() -> None:
    compose = _compose()
    assert "gtbot-postgres" in compose["volumes"]
    assert "gtbot-postgres:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]


def test_every_service_has_a_health_check_and_gtbots_asks_healthz() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "unless-stopped", name
    assert "pg_isready -U gtbot -d gtbot" in services["postgres"]["healthcheck"]["test"][1]
    probe = " ".join(services["gtbot"]["healthcheck"]["test"])
    assert "http://127.0.0.1:3000/healthz" in probe
    assert 'CMD ["gtbot", "serve", "--port", "3000"]' in (ROOT / "Dockerfile").read_text()
    assert services["lb"]["depends_on"]["gtbot"]["condition"] == "service_healthy"


def test_the_image_has_the_postgresql_driver() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(d.startswith("psycopg[binary]") for d in extras["postgresql"])
    docker = (ROOT / "Dockerfile").read_text()
    assert "p['optional-dependencies']['postgresql']" in docker


def test_the_load_balancer_spreads_over_the_replicas_and_keeps_gtbots_body_cap() -> None:
    compose = _compose()
    nginx = compose["configs"]["nginx"]["content"]
    lb = compose["services"]["lb"]
    assert lb["configs"] == [{"source": "nginx", "target": "/etc/nginx/conf.d/default.conf"}]
    assert lb["ports"] == ["3000:80"]
    assert re.search(r"upstream gtbot \{\s*server gtbot:3000\b", nginx)
    assert "proxy_pass http://gtbot;" in nginx
    assert "non_idempotent" not in nginx  # a Slack request is never sent to two replicas
    size = re.search(r"client_max_body_size (\d+)m;", nginx)
    assert size and int(size[1]) * 1024 * 1024 == MAX_BODY_BYTES
    # Compose would read `$host` as one of its own variables: nginx's are written `$$`.
    assert re.findall(r"(?<!\$)\$(?!\$)\w+", nginx) == []
