"""`gtbot sandbox --serve`: another shell, given the printed exports, runs the recipe against it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.mark.slow
def test_serve_prints_exports_that_another_shell_can_use(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GTBOT_"))}
    env["TMPDIR"] = str(tmp_path)
    server = subprocess.Popen(
        [sys.executable, "-m", "bot", "sandbox", "--serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        exports: dict[str, str] = {}
        deadline = time.monotonic() + 30
        assert server.stdout is not None
        line = ""
        while time.monotonic() < deadline and "then e.g." not in line:
            line = server.stdout.readline()
            if line.strip().startswith("export "):
                key, _, value = line.strip()[len("export ") :].partition("=")
                exports[key] = value
        for service in ("S3", "SAGEMAKER", "STS", "IAM"):
            assert exports[f"AWS_ENDPOINT_URL_{service}"].startswith("http://127.0.0.1:")
        shell = env | exports

        def gtbot(text: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "bot", "run", text],
                capture_output=True,
                text=True,
                env=shell,
                cwd=tmp_path,
                timeout=60,
            )

        assert gtbot("init demo-mice --region us-east-2").returncode == 0
        frames = (
            Path(exports["GTBOT_PROJECTS_DIR"]) / "demo-mice" / "annotation-data" / "raw-images"
        )
        from bot.synthetic import draw_frames

        draw_frames(frames, 3, seed=1)
        submitted = gtbot("submit demo-mice --yes")
        assert submitted.returncode == 0, submitted.stderr
        assert "Launched labeling job demo-mice-" in submitted.stdout
        assert "demo-mice-" in gtbot("jobs").stdout
        doctor = gtbot("doctor")  # STS answers from the sandbox, not from real AWS
        assert "ok    credentials: account 123456789012" in doctor.stdout, doctor.stdout
    finally:
        server.send_signal(signal.SIGINT)
        out, _ = server.communicate(timeout=20)
    assert server.returncode == 0
    assert "Stopping the emulators." in out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_stops_on_a_signal_even_when_started_with_sigint_ignored(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """A shell script's background job starts with SIGINT ignored, and Python keeps it so:
    `--serve` waited for a KeyboardInterrupt that never came (the test above, run from a
    backgrounded pytest, hung until its timeout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GTBOT_"))}
    env["TMPDIR"] = str(tmp_path)
    server = subprocess.Popen(
        ["sh", "-c", 'trap "" INT; exec "$0" -m bot sandbox --serve', sys.executable],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline and "then e.g." not in line:
            line = server.stdout.readline()
        assert "then e.g." in line
        server.send_signal(sig)
        out, _ = server.communicate(timeout=20)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, out
    assert "Stopping the emulators." in out
    assert not any(tmp_path.glob("gtbot-sandbox-*")), "the sandbox's folder is removed"


def test_the_exports_point_every_service_doctor_uses_at_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`doctor` asks STS and IAM too: in a sandbox shell they must answer from loopback."""
    import boto3

    from bot.sandbox import Emulators

    exported = Emulators(
        s3_url="http://127.0.0.1:4566",
        sagemaker_url="http://127.0.0.1:4567",
        iam_url="http://127.0.0.1:4568",
        access_key=("sandbox", "sandbox"),
        stop=print,
        settings=None,
    ).env()
    for key, value in exported.items():
        monkeypatch.setenv(key, value)
    for service in ("s3", "sagemaker", "sts", "iam"):
        client = boto3.session.Session().client(service, region_name="us-east-2")
        assert client.meta.endpoint_url.startswith("http://127.0.0.1:45"), service
