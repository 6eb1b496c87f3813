"""The terminal interface: `gtbot <command>` from the registry, help, suggestions, exit codes,
completion and progress bars. A few tests run the installed console script, as a user does."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SANDBOX_TEAM

from aws.emulator.groundtruth import GroundTruthEmulator
from bot import sandbox
from bot.cli import _run_words, build_parser, main
from bot.commands import COMMANDS
from bot.progress import LineProgress, TerminalProgress, counted
from bot.synthetic import draw_frames

GTBOT = Path(sys.executable).parent / "gtbot"
ROLE = "arn:aws:iam::123456789012:role/service-role/GtbotTestRole"


def _gtbot(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The console script pip installed, in a fresh process, with no terminal attached."""
    return subprocess.run(
        [str(GTBOT), *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def _help_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_every_registry_command_is_a_subcommand_whose_help_explains_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Help is as wide as the terminal (up to 100 columns); a test worker's "terminal" is
    # whatever width it inherited, so pin it.
    monkeypatch.setenv("COLUMNS", "100")
    listing = _help_of(["--help"], capsys)
    for cmd in COMMANDS.values():
        assert cmd.name in listing
        if cmd.name == "help":
            continue
        text = " ".join(_help_of([cmd.name, "--help"], capsys).split())
        assert f"usage: gtbot {cmd.name}" in text
        assert " ".join(cmd.help.split()) in text and " ".join(cmd.description.split()) in text
        for param in (*cmd.positional, *cmd.optional_positional, *cmd.options, *cmd.flags):
            assert " ".join(param.help.split()) in text, (cmd.name, param.name)
    # `help <command>` in Slack reads from the same registry: usage, description, options.
    assert main(["run", "help frames"]) == 0
    manual = capsys.readouterr().out
    assert manual.startswith("frames <project> [--count N] [--from DIR]")
    assert "--quality Q  JPEG quality of the frames written (default 90)" in manual


@pytest.mark.parametrize(
    ("argv", "status", "says"),
    [
        (["sumbit", "demo"], 2, "Did you mean `gtbot submit`?"),
        (["submit", "demo", "--yess"], 2, "Did you mean `--yes`?"),
        (["submit"], 2, "the following arguments are required: project"),
        (["jobs", "--limit", "0"], 2, "--limit must be from 1 to 500"),
        (["run", "sumbit demo"], 2, "Did you mean `submit`?"),
        (["run", "submit demo --yess"], 2, "Did you mean `--yes`?"),
        (["help", "statuss"], 2, "Did you mean `gtbot status`?"),
        (["consolidate", "out.manifest"], 2, "required: --project"),
        (["setup", "nothing-here"], 1, "There is no project 'nothing-here'"),
        ([], 2, "usage: gtbot"),
    ],
)
def test_mistakes_exit_2_with_a_suggestion_and_failures_exit_1(
    argv: list[str],
    status: int,
    says: str,
    projects_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    assert code == status
    assert says in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert _help_of(["--version"], capsys).strip() == f"gtbot {version('gtbot')}"


def test_run_takes_the_command_in_quotes_and_later_words_as_arguments() -> None:
    assert _run_words(["submit my-mice", "--yes"]) == "submit my-mice --yes"
    assert _run_words(["submit", "my-mice", "--yes"]) == "submit my-mice --yes"
    assert _run_words(["init", "my lab"]) == "init 'my lab'"
    assert _run_words([]) == "help"


def test_completion_scripts_know_every_command_and_complete_project_names() -> None:
    import shtab

    parser = build_parser()
    for shell in ("bash", "zsh"):
        script = shtab.complete(parser, shell=shell)
        for name in (*COMMANDS, "sandbox", "serve", "completion"):
            assert name in script
        assert "GTBOT_PROJECTS_DIR" in script


def test_the_sandbox_names_its_extra_when_the_emulators_are_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sandbox, "SANDBOX_MODULES", ("moto", "gtbot_no_such_module"))
    assert main(["sandbox"]) == 1
    err = capsys.readouterr().err
    assert "gtbot_no_such_module" in err and "pip install 'gtbot[sandbox]'" in err


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_progress_is_a_bar_with_rate_and_silent_without_a_terminal() -> None:
    screen = _Tty()
    task = TerminalProgress(screen).task("Uploading frames", 40, "frames")
    for _ in range(40):
        task.advance()
    task.close()
    drawn = screen.getvalue()
    assert "Uploading frames" in drawn and "40/40" in drawn and "frames/s" in drawn
    piped = io.StringIO()
    quiet = TerminalProgress(piped)
    quiet.note("Checking bucket ...")
    quiet.task("Uploading frames", 40, "frames").advance(40)
    assert piped.getvalue() == ""


def test_line_progress_says_count_rate_and_time_left_every_tenth() -> None:
    lines: list[str] = []
    task = LineProgress(lines.append).task("Consolidating", 200, "frames")
    seen = counted(task)
    for done in range(0, 201, 20):
        seen(done)
    task.close()
    assert len(lines) == 11  # 10 %, 20 %, ... 100 %, and the end
    assert lines[0].startswith("Consolidating: 20/200 (10%), ")
    assert "frames/s" in lines[0] and "left" in lines[0]
    assert lines[-1].startswith("Consolidating: 200/200 (100%), ") and "done in" in lines[-1]


@pytest.mark.slow
def test_the_installed_console_script_runs_the_recipe(
    make_emulator: Callable[..., GroundTruthEmulator],
    projects_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_emulator()
    monkeypatch.setenv("GTBOT_ROLE_ARN", ROLE)
    monkeypatch.setenv("GTBOT_WORKTEAM_ARN", SANDBOX_TEAM)
    assert _gtbot("init", "my-mice", "--region", "us-east-2").returncode == 0
    draw_frames(projects_dir / "my-mice" / "annotation-data" / "raw-images", 3, seed=2)

    asked = _gtbot("submit", "my-mice")  # nobody at a terminal to ask: nothing launches
    assert asked.returncode == 0, asked.stderr
    assert "Images:            3" in asked.stdout and "Nothing launched." in asked.stdout
    assert asked.stderr == ""  # no terminal: no progress bars either

    launched = _gtbot("run", "submit my-mice", "--yes")
    assert launched.returncode == 0, launched.stderr
    assert "Launched labeling job my-mice-" in launched.stdout
    job = launched.stdout.split("Launched labeling job ")[1].split(".")[0]
    status = _gtbot("status", job)
    assert status.returncode == 0 and job in status.stdout


def test_start_up_stays_light_and_region_checks_say_what_boto3_says() -> None:
    """Every command pays the start-up (`bench/upload.py` compares re-runs with aws s3 sync):
    SQLAlchemy, Jinja2 and SageMaker's 4 MB model load only when a command needs them."""
    import boto3
    import botocore.session

    from bot.project import SAGEMAKER_ENDPOINT_PREFIX, known_regions

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, bot.cli; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "'sqlalchemy'" not in loaded and "'jinja2'" not in loaded
    model = botocore.session.get_session().get_service_model("sagemaker")
    assert model.endpoint_prefix == SAGEMAKER_ENDPOINT_PREFIX
    session = boto3.session.Session()
    expected = {
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("sagemaker", partition_name=partition)
    }
    assert known_regions() == expected and "us-east-1" in expected
