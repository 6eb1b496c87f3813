"""`gtbot`: the terminal entry point. `gtbot run "<text>"` is `/gt <text>` without Slack."""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from collections.abc import Sequence

from bot.commands import Reply, Router
from bot.context import Context
from bot.errors import GtBotError
from bot.pipeline import Plan
from bot.settings import Settings

log = logging.getLogger("gtbot")


def _print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _ask(plan: Plan) -> bool:
    if not sys.stdin.isatty():
        return False
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
        trace_id = uuid.uuid4().hex[:12]
        log.exception("unexpected error, trace id %s", trace_id)
        print(
            f"Something went wrong inside gtbot (trace id {trace_id}). The details are in the "
            "log; please report the trace id.",
            file=sys.stderr,
        )
        return 1
    if isinstance(result, Reply):
        print(result.text)
        return 0
    return int(result or 0)  # type: ignore[call-overload]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gtbot",
        description="Run SageMaker Ground Truth keypoint-annotation jobs from Slack or a terminal.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help='run one /gt command here, e.g. gtbot run "submit my-project"')
    run.add_argument("text", nargs=argparse.REMAINDER, help="the command text, as typed after /gt")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("botocore", "urllib3", "werkzeug", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return guarded(lambda: run_text(" ".join(args.text)))
    return 2


if __name__ == "__main__":
    sys.exit(main())
