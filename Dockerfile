# gtbot: the Slack app. Builds from the repository alone: `docker build -t gtbot:local .`
#   over HTTP (Slack posts to :3000/slack/events):  docker run ... gtbot:local
#   in Socket Mode (SLACK_APP_TOKEN, no public URL): docker run ... gtbot:local gtbot socket
# Both serve GET /healthz on port 3000, which HEALTHCHECK asks.

# Stage 1: gtbot's own code as a wheel (the sources, build tools and caches stay here).
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY aws ./aws
COPY templates ./templates
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheel .

# Stage 2: what `gtbot serve` and `gtbot socket` run, nothing else.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    GTBOT_PROJECTS_DIR=/app/projects GTBOT_DATABASE_URL=sqlite:////app/data/gtbot.db

# `docker build --build-arg WITH_CHROMIUM=1 ...` adds headless Chromium, so that
# `/gt template <project> --preview` can post a screenshot in Slack.
ARG WITH_CHROMIUM=0
RUN if [ "$WITH_CHROMIUM" = "1" ]; then apt-get update \
      && apt-get install -y --no-install-recommends chromium && rm -rf /var/lib/apt/lists/*; fi
RUN useradd --create-home --uid 10001 gtbot

# The dependencies (with the PostgreSQL driver, for replicas), read from pyproject.toml alone:
# this layer is rebuilt when they change, not when gtbot's code does.
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; p = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['postgresql']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/pyproject.toml /tmp/requirements.txt

COPY --from=wheel /wheel /wheel
RUN pip install --no-cache-dir --no-deps /wheel/*.whl && rm -rf /wheel \
    && mkdir -p /app/projects /app/data && chown -R gtbot /app

USER gtbot
WORKDIR /app
EXPOSE 3000
# `docker stop` sends SIGTERM and kills 10 s later: gtbot finishes or hands back its work,
# and frees the watcher lease, within that.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=4).status == 200 else 1)"]
CMD ["gtbot", "serve", "--port", "3000"]
