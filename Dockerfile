# gtbot: the Slack app over HTTP. Builds from the repository alone.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    GTBOT_PROJECTS_DIR=/app/projects GTBOT_DATABASE_URL=sqlite:////app/data/gtbot.db

# `docker build --build-arg WITH_CHROMIUM=1 ...` adds headless Chromium, so that
# `/gt template <project> --preview` can post a screenshot in Slack.
ARG WITH_CHROMIUM=0
RUN if [ "$WITH_CHROMIUM" = "1" ]; then apt-get update \
      && apt-get install -y --no-install-recommends chromium && rm -rf /var/lib/apt/lists/*; fi
RUN useradd --create-home --uid 10001 gtbot
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY aws ./aws
COPY templates ./templates
RUN pip install --no-cache-dir '.[postgresql]' && mkdir -p /app/projects /app/data && chown -R gtbot /app

USER gtbot
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=4).status == 200 else 1)"
CMD ["gtbot", "serve", "--port", "3000"]
