"""`gtbot`: the terminal interface. `gtbot <command> ...` for every `/gt` command, generated
from the one command registry (bot/commands.COMMANDS: its docstrings are the help), plus the
commands that only make sense here (run, serve, socket, sandbox, completion).

Exit status: 0 done, 1 failed (including a check that failed), 2 the command was typed wrongly.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from bot import logs
from bot.commands import COMMANDS, Command, Param, Reply, Router, did_you_mean
from bot.context import Context
from bot.errors import GtBotError, UsageError
from bot.progress import TerminalProgress
from bot.recipe import Plan
from bot.settings import Settings

log = logging.getLogger("gtbot")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Shell completion of a project name: the folders in GTBOT_PROJECTS_DIR, listed by the shell
# itself, so a TAB never waits for Python.
_PROJECTS = 'ls -1 "${GTBOT_PROJECTS_DIR:-projects}" 2>/dev/null'


def _ask(plan: Plan) -> bool | None:
    """Show the plan and ask; None when there is nobody at a terminal to ask."""
    if not sys.stdin.isatty():
        return None
    from bot.commands import plan_text

    print(plan_text(plan))
    answer = input(f"Launch {plan.job_name}? [y/N] ").strip().lower()
    return answer in ("y", "yes")


def make_context() -> Context:
    return Context(settings=Settings.from_env(), progress=TerminalProgress())


def run_text(text: str, ctx: Context | None = None) -> Reply:
    """`/gt <text>` in this terminal."""
    return Router(ctx or make_context()).run(text, interface="console", confirm=_ask)


def run_command(cmd: Command, args: list[str], options: dict[str, str | bool]) -> Reply:
    return Router(make_context()).call(cmd, args, options, interface="console", confirm=_ask)


def guarded(func: Callable[..., Any], *args: Any) -> int:
    """Expected problems print their message; anything else prints a trace id, never a trace."""
    try:
        result = func(*args)
    except UsageError as exc:
        print(exc.user_message, file=sys.stderr)
        return EXIT_USAGE
    except GtBotError as exc:
        print(exc.user_message, file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except Exception:
        trace_id = logs.trace_id()
        log.exception("unexpected error, trace id %s", trace_id)
        print(
            f"Something went wrong inside gtbot (trace id {trace_id}). The details are in the "
            "log; please report the trace id.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if isinstance(result, Reply):
        print(result.text)
        return result.exit_status
    return int(result or 0)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help as wide as the terminal allows (up to 100 columns), descriptions as written."""

    def __init__(self, prog: str) -> None:
        import shutil

        width = min(shutil.get_terminal_size((100, 24)).columns, 100)
        super().__init__(prog, max_help_position=30, width=width)
        # argparse aligns help text after the longest option it has seen, not counting the
        # indentation of subcommands: start from the longest command name ("consolidate").
        self._action_max_length = 18

    def _split_lines(self, text: str, width: int) -> list[str]:
        """As argparse wraps option help, but never inside a hyphenated name: a bucket or job
        name cut at `sagemaker- ui` reads as two words (and depended on the terminal's width)."""
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class _Parser(argparse.ArgumentParser):
    """argparse with gtbot's manners: a suggestion for a mistyped option, exit status 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            known = [o for o in self._option_string_actions if o.startswith("--")]
            hints = [
                did_you_mean(word.partition("=")[0], known)
                for word in message.removeprefix("unrecognized arguments: ").split()
            ]
            message += "." + "".join(h for h in hints if h)
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: {message}\n")


class _Version(argparse.Action):
    """`--version`, read from the installed package only when asked (importlib.metadata costs
    every other command a few hundredths of a second)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        from importlib import metadata

        try:
            version = metadata.version("gtbot")
        except metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        print(f"gtbot {version}")
        parser.exit(EXIT_OK)


def _complete(action: argparse.Action, param: Param) -> None:
    """What shtab's completion script offers for this argument."""
    import shtab

    if param.complete == "project":
        action.complete = shtab.cmd(_PROJECTS)  # type: ignore[attr-defined]
    elif param.complete == "file":
        action.complete = shtab.FILE  # type: ignore[attr-defined]
    elif param.complete == "dir":
        action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]


def _literal(text: str) -> str:
    """argparse formats help strings with `%` (`%(default)s`); the registry's help is plain text,
    so a `25%` in it must reach the reader as written."""
    return text.replace("%", "%%")


def _add_registry_command(sub: Any, cmd: Command) -> None:
    parser = sub.add_parser(
        cmd.name,
        help=_literal(cmd.help),
        description=f"{cmd.help}\n\n{cmd.description}".strip(),
    )
    for param in cmd.positional:
        _complete(parser.add_argument(param.name, help=_literal(param.help)), param)
    for param in cmd.optional_positional:
        _complete(parser.add_argument(param.name, nargs="?", help=_literal(param.help)), param)
    for param in cmd.options:
        action = parser.add_argument(
            f"--{param.name}",
            dest=f"opt:{param.name}",
            metavar=param.metavar or "X",
            required=param.required,
            help=_literal(param.help),
        )
        _complete(action, param)
    for param in cmd.flags:
        parser.add_argument(
            f"--{param.name}",
            dest=f"opt:{param.name}",
            action="store_true",
            help=_literal(param.help),
        )
    parser.set_defaults(registry=cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gtbot",
        description=(
            "Run SageMaker Ground Truth keypoint-annotation jobs (the MARS pose recipe) from a "
            "terminal or from Slack (`/gt <command>`)."
        ),
        epilog=(
            "`gtbot <command> --help` explains a command. Exit status: 0 done, 1 failed, "
            "2 mistyped. Shell completion: `gtbot completion bash` (or zsh)."
        ),
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="show gtbot's version")
    sub = parser.add_subparsers(dest="command", metavar="<command>", title="commands")
    for cmd in COMMANDS.values():  # the registry's order is the workflow's
        if cmd.name != "help":
            _add_registry_command(sub, cmd)
    helper = sub.add_parser("help", help="Show the commands, or how to use one of them.")
    helper.add_argument("topic", nargs="?", metavar="command", help="the command to explain")
    run = sub.add_parser(
        "run",
        help='Run a command typed as after /gt, e.g. gtbot run "submit my-mice".',
        description=(
            "Run a command typed as after /gt in Slack. The first word may hold the whole "
            'command in quotes; words after it are arguments: `gtbot run "submit my-mice" '
            "--yes` launches."
        ),
    )
    run.add_argument("text", nargs=argparse.REMAINDER, help="the command, as typed after /gt")
    serve = sub.add_parser(
        "serve", help="Run the Slack app over HTTP (Slack posts to /slack/events)."
    )
    serve.add_argument("--port", type=int, default=3000, help="port to listen on (default 3000)")
    serve.add_argument(
        "--host", default=None, help="address to bind (default GTBOT_BIND or 0.0.0.0)"
    )
    socket_mode = sub.add_parser(
        "socket",
        help="Run the Slack app in Socket Mode (SLACK_APP_TOKEN; no public URL).",
        description=(
            "Run the Slack app over Socket Mode: gtbot connects out to Slack, so it needs no "
            "public URL and no signing secret. /healthz is served on --port for health checks."
        ),
    )
    socket_mode.add_argument(
        "--port", type=int, default=3000, help="port of /healthz (default 3000; 0: any free one)"
    )
    socket_mode.add_argument(
        "--host", default=None, help="address to bind (default GTBOT_BIND or 0.0.0.0)"
    )
    sandbox = sub.add_parser(
        "sandbox",
        help="Play the whole workflow against local emulators: no AWS account needed.",
        description=(
            "Play the whole workflow against local emulators of S3, IAM and Ground Truth. "
            "Needs the sandbox extra: pip install 'gtbot[sandbox]'."
        ),
    )
    sandbox.add_argument("--serve", action="store_true", help="keep the emulators up until Ctrl-C")
    sandbox.add_argument("--frames", type=int, default=12, help="synthetic frames to label (12)")
    sandbox.add_argument("--workers", type=int, default=3, help="workers per image (3)")
    sandbox.add_argument("--rate", type=float, default=12.0, help="emulated tasks per second (12)")
    sandbox.add_argument(
        "--workforce",
        choices=("public-crowd", "private-team"),
        default="public-crowd",
        help="how noisy the emulated workers are (public-crowd, as real MARS jobs; or private-team)",
    )
    sandbox.add_argument(
        "--clean", action="store_true", help="delete the sandbox's temporary folder at the end"
    )
    completion = sub.add_parser(
        "completion",
        help="Print a shell completion script (bash, zsh or tcsh).",
        description=(
            "Print a completion script for your shell. Bash: "
            "gtbot completion bash > ~/.local/share/bash-completion/completions/gtbot ; "
            'zsh: gtbot completion zsh > "${fpath[1]}/_gtbot". Project names complete from '
            "GTBOT_PROJECTS_DIR."
        ),
    )
    completion.add_argument("shell", choices=("bash", "zsh", "tcsh"), help="your shell")
    return parser


def _serve(port: int | None, host: str | None, socket_mode: bool) -> int:
    """Serve until SIGTERM or Ctrl-C, then stop gracefully (handlers/server.Running.shutdown)."""
    import signal
    import threading

    from handlers.server import start_bot

    settings = Settings.from_env()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    running = start_bot(settings, port=port, host=host, socket_mode=socket_mode)
    try:
        while not stop.wait(1.0):  # a timed wait, so Ctrl-C is seen at once
            pass
        log.info("SIGTERM: stopping")
    except KeyboardInterrupt:
        log.info("interrupted: stopping")
    finally:
        running.shutdown()
    return 0


def _run_words(words: list[str]) -> str:
    """`gtbot run` words as /gt text. The first word is command text (`"submit demo"` is two
    words); each later word is one argument (`init "my lab"` keeps its space), so
    `gtbot run "submit demo" --yes` means `submit demo --yes`."""
    if not words:
        return "help"
    return " ".join([words[0], *(shlex.quote(w) for w in words[1:])])


def _help(parser: argparse.ArgumentParser, topic: str | None) -> int:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if topic is None:
        parser.print_help()
        return EXIT_OK
    choice = sub.choices.get(topic.lower())
    if choice is None:
        print(_unknown(topic, sub.choices), file=sys.stderr)
        return EXIT_USAGE
    choice.print_help()
    return EXIT_OK


def _unknown(verb: str, choices: Any) -> str:
    hint = did_you_mean(verb, choices, prefix="gtbot ")
    return f"gtbot: unknown command {verb!r}.{hint} `gtbot --help` lists the commands."


def main(argv: Sequence[str] | None = None) -> int:
    import os

    try:
        level = logs.level_from_env(os.environ.get("GTBOT_LOG_LEVEL"))
    except GtBotError as exc:
        logs.configure_logging()
        print(exc.user_message, file=sys.stderr)
        return EXIT_FAILED
    logs.configure_logging(level)
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if not argv:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if not argv[0].startswith("-") and argv[0] not in sub.choices:
        print(_unknown(argv[0], sub.choices), file=sys.stderr)
        return EXIT_USAGE
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "registry", None) is not None:
        cmd: Command = args.registry
        positional = [
            value
            for p in (*cmd.positional, *cmd.optional_positional)
            if (value := getattr(args, p.name)) is not None
        ]
        options: dict[str, str | bool] = {
            key[4:]: value
            for key, value in vars(args).items()
            if key.startswith("opt:") and value not in (None, False)
        }
        return guarded(run_command, cmd, positional, options)
    if args.command == "help":
        return _help(parser, args.topic)
    if args.command == "run":
        return guarded(run_text, _run_words(args.text))
    if args.command == "serve":
        return guarded(_serve, args.port, args.host, False)
    if args.command == "socket":
        return guarded(_serve, args.port, args.host, True)
    if args.command == "completion":
        import shtab

        print(shtab.complete(parser, shell=args.shell))
        return EXIT_OK
    if args.command == "sandbox":
        from bot.sandbox import main_sandbox

        return guarded(
            main_sandbox,
            args.serve,
            args.frames,
            args.workers,
            args.rate,
            args.clean,
            args.workforce,
        )
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
