"""`gtbot`: the terminal entry point. `gtbot run "<text>"` is `/gt <text>` without Slack."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from bot import logs
from bot.commands import Reply, Router
from bot.context import Context
from bot.errors import GtBotError
from bot.pipeline import Plan
from bot.settings import Settings

log = logging.getLogger("gtbot")


def _print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _ask(plan: Plan) -> bool | None:
    """Show the plan and ask; None when there is nobody at a terminal to ask."""
    if not sys.stdin.isatty():
        return None
    from bot.commands import plan_text

    print(plan_text(plan))
    answer = input(f"Launch {plan.job_name}? [y/N] ").strip().lower()
    return answer in ("y", "yes")


def make_context() -> Context:
    return Context(settings=Settings.from_env(), progress=_print_progress)


def run_text(text: str, ctx: Context | None = None) -> Reply:
    return Router(ctx or make_context()).run(text, interface="console", confirm=_ask)


def guarded(func: object, *args: object) -> int:
    """Expected problems print their message; anything else prints a trace id, never a trace."""
    try:
        result = func(*args)  # type: ignore[operator]
    except GtBotError as exc:
        print(exc.user_message, file=sys.stderr)
        return 1
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
        return 1
    if isinstance(result, Reply):
        print(result.text)
        return result.exit_status
    return int(result or 0)  # type: ignore[call-overload]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gtbot",
        description="Run SageMaker Ground Truth keypoint-annotation jobs from Slack or a terminal.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help='run one /gt command here, e.g. gtbot run "submit my-project"')
    run.add_argument("text", nargs=argparse.REMAINDER, help="the command text, as typed after /gt")
    serve = sub.add_parser(
        "serve", help="run the Slack app over HTTP (Slack posts to /slack/events)"
    )
    serve.add_argument("--port", type=int, default=3000, help="port to listen on (default 3000)")
    serve.add_argument(
        "--host", default=None, help="address to bind (default GTBOT_BIND or 0.0.0.0)"
    )
    sub.add_parser(
        "socket", help="run the Slack app in Socket Mode (SLACK_APP_TOKEN; no public URL)"
    )
    sandbox = sub.add_parser(
        "sandbox", help="play the whole workflow against local emulators: no AWS account needed"
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
    consolidate = sub.add_parser(
        "consolidate", help="consensus, exports and pictures from an output.manifest you have"
    )
    consolidate.add_argument("manifest", help="local path or s3:// URI of output.manifest")
    consolidate.add_argument("--project", required=True, help="project whose keypoints apply")
    consolidate.add_argument("--out", default=None, help="output folder (default: in the project)")
    return parser


def _serve(port: int | None, host: str | None, socket_mode: bool) -> int:
    import signal
    import threading

    from handlers.server import start_bot

    settings = Settings.from_env()
    running = start_bot(settings, port=port, host=host, socket_mode=socket_mode)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    handler = None
    try:
        if socket_mode:
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            from handlers.server import slack_credentials

            handler = SocketModeHandler(running.app, slack_credentials(True)[2])
            handler.connect()
            log.info("gtbot connected to Slack in Socket Mode")
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if handler is not None:
            handler.close()
        running.shutdown()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logs.configure_logging()
    args = build_parser().parse_args(argv)
    if args.command == "run":
        if not args.text:
            return guarded(lambda: run_text("help"))
        # `gtbot run "submit demo"` is one string; `gtbot run submit demo` is several words.
        text = args.text[0] if len(args.text) == 1 else " ".join(_quote(w) for w in args.text)
        return guarded(lambda: run_text(text))
    if args.command == "serve":
        return guarded(_serve, args.port, args.host, False)
    if args.command == "socket":
        return guarded(_serve, None, None, True)
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
    if args.command == "consolidate":
        words = ["consolidate", args.manifest, "--project", args.project]
        if args.out:
            words += ["--out", args.out]
        return guarded(lambda: run_text(" ".join(_quote(w) for w in words)))
    return 2


def _quote(word: str) -> str:
    """Re-quote a shell word so that `gtbot run init "my lab"` means what it says."""
    import shlex

    return word if " " not in word and '"' not in word else shlex.quote(word)


if __name__ == "__main__":
    sys.exit(main())
