"""gtbot's acks against a bare Bolt app, and a quick answer while long work is in flight.

Both measured in one run, with every SageMaker call of the Ground Truth emulator delayed
`--delay` seconds (2 s by default: real AWS is often that slow):

1. **Acks.** gtbot (`start_bot`: waitress, its signature check, the lanes) and a bare Bolt app
   that acks `/gt` on the request thread and does nothing else, served by the same server
   (`handlers.server.HttpServer`, the same waitress settings), on loopback. Each is sent the same
   signed `/gt status <job>`: `--reps` times one after the other, alternating between the two
   apps (gtbot's work behind each ack, a 2 s DescribeLabelingJob, keeps running meanwhile, as in
   a busy channel); then `--bursts` rounds of a burst of `--burst` at once to gtbot, a burst to
   the bare app once gtbot's work sleeps in the emulator, and a lull until that work is done, so
   each app's burst meets only the work it starts itself. Goal: gtbot's p99 at most 1.3x the
   bare app's.
2. **A quick answer under load.** `--slow` `/gt status <job>` (quick lane, 2 s each on AWS) and
   `--long` `/gt results <job>` (long lane, GTBOT_LONG_JOBS=2 at once, the rest queued) are sent
   at once; then `/gt help`, timed from its delivery until its answer reaches the response_url.
   Goal: under 2 s. (Before the lanes, on Bolt's pool of 5 threads: 12.6 s with 30 in flight.)

    .venv/bin/python bench/lanes.py [--delay 2] [--reps 100] [--burst 30] [--bursts 5]
                                    [--slow 30] [--long 5] [--rounds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

import conftest  # noqa: E402,F401  (fake AWS credentials before any client exists)
from ack import drain, percentile  # noqa: E402
from slack_bolt import Ack, App  # noqa: E402
from slack_bolt.adapter.wsgi import SlackRequestHandler  # noqa: E402
from slack_harness import SECRET, SUBMITTER, TOKEN, Harness, Sent, start_harness  # noqa: E402
from slack_sdk import WebClient  # noqa: E402

from aws.emulator.groundtruth import EmulatorSettings  # noqa: E402
from aws.emulator.moto_s3 import start_local_s3  # noqa: E402
from handlers.server import HttpServer  # noqa: E402


@dataclasses.dataclass
class _Port:
    """What Harness needs of a running bot to send it requests: its port."""

    server: HttpServer

    @property
    def port(self) -> int:
        return self.server.port


def bare_bolt(api_url: str) -> HttpServer:
    """The floor: Bolt acking on the request thread (process_before_response), nothing else.
    Its one auth.test (Bolt's single-team authorization, cached) goes to the same Slack stub."""
    app = App(
        client=WebClient(token=TOKEN, base_url=api_url),
        signing_secret=SECRET,
        token_verification_enabled=False,
        process_before_response=True,
    )

    @app.command("/gt")
    def _ack(ack: Ack) -> None:
        ack()

    return HttpServer(SlackRequestHandler(app), "127.0.0.1", 0)


def figures(label: str, sent: list[Sent]) -> tuple[str, float]:
    ms = [s.seconds * 1000 for s in sent]
    bad = sum(1 for s in sent if s.status != 200)
    p99 = percentile(ms, 99)
    line = (
        f"| {label:<28} | {len(ms):>4} | {percentile(ms, 50):>7.1f} | {percentile(ms, 95):>7.1f} "
        f"| {p99:>7.1f} | {max(ms):>7.1f} |" + (f" {bad} not 200" if bad else "")
    )
    return line, p99


def acks(bot: Harness, bare: Harness, job: str, args: argparse.Namespace) -> list[str]:
    text = f"status {job}"
    seq: dict[str, list[Sent]] = {"gtbot": [], "bare": []}
    for _ in range(args.reps):
        seq["gtbot"].append(bot.command(text, user=SUBMITTER))
        seq["bare"].append(bare.command(text, user=SUBMITTER))
    drain(bot, quiet_seconds=args.delay + 1.5)
    bot.emu.settings.delay_seconds = args.delay
    # Bursts: gtbot's, then (its work asleep in the emulator) the bare app's, then a lull until
    # gtbot's work is done, so each burst meets only the work its own app starts.
    burst: dict[str, list[Sent]] = {"gtbot": [], "bare": []}
    with ThreadPoolExecutor(max_workers=args.burst) as pool:
        for _ in range(args.bursts):
            for name, target in (("gtbot", bot), ("bare", bare)):
                burst[name] += pool.map(
                    lambda _, t=target: t.command(text, user=SUBMITTER), range(args.burst)
                )
                time.sleep(args.delay / 2)
            drain(bot, quiet_seconds=args.delay + 1.0)
            bot.emu.settings.delay_seconds = args.delay
    lines = [
        "| acks of `/gt status <job>`   | n    | p50 ms  | p95 ms  | p99 ms  | max ms  |",
        "|------------------------------|-----:|--------:|--------:|--------:|--------:|",
    ]
    for kind, runs in (("one at a time", seq), (f"bursts of {args.burst}", burst)):
        line_g, p99_g = figures(f"gtbot, {kind}", runs["gtbot"])
        line_b, p99_b = figures(f"bare Bolt, {kind}", runs["bare"])
        lines += [line_g, line_b]
        lines.append(f"| p99 gtbot / bare, {kind:<11} | {p99_g / p99_b:.2f}x (goal <= 1.3x) |")
    return lines


def quick_under_load(bot: Harness, job: str, args: argparse.Namespace) -> list[str]:
    waits: list[float] = []
    with ThreadPoolExecutor(max_workers=args.slow + args.long) as pool:
        for _ in range(args.rounds):
            loads = [
                pool.submit(bot.command, f"status {job}", user=SUBMITTER) for _ in range(args.slow)
            ]
            loads += [
                pool.submit(bot.command, f"results {job}", user=SUBMITTER) for _ in range(args.long)
            ]
            for future in loads:
                future.result()  # every one acked: all of them are in flight now
            began = time.monotonic()
            sent = bot.command("help", user=SUBMITTER)
            path = f"/response/{sent.response_id}"
            answers: list[Any] = bot.wait_for(
                lambda p=path: [c for c in bot.stub.of("response_url") if c.params["_path"] == p],
                30,
                "the answer to /gt help",
            )
            call = answers[0]
            assert "Commands" in str(call.params)
            waits.append(call.at - began)
            drain(bot, quiet_seconds=args.delay + 1.5)
            bot.emu.settings.delay_seconds = args.delay
    ms = sorted(w * 1000 for w in waits)
    return [
        f"`/gt help` answered while {args.slow} `status` and {args.long} `results` were in "
        f"flight, {args.rounds} rounds: "
        + ", ".join(f"{m:.0f}" for m in ms)
        + f" ms (max {ms[-1]:.0f} ms; goal < 2000 ms)"
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=2.0, help="seconds each SageMaker call")
    parser.add_argument("--reps", type=int, default=100, help="acks one at a time, per app")
    parser.add_argument("--burst", type=int, default=30, help="requests at once in a burst")
    parser.add_argument("--bursts", type=int, default=5, help="bursts per app")
    parser.add_argument("--slow", type=int, default=30, help="`status` in flight")
    parser.add_argument("--long", type=int, default=5, help="`results` in flight")
    parser.add_argument("--rounds", type=int, default=5, help="`help` timed this many times")
    args = parser.parse_args()
    # waitress warns "Task queue depth is N" for every request a burst queues: expected here.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    s3 = start_local_s3()
    try:
        with tempfile.TemporaryDirectory(prefix="gtbot-bench-lanes-") as tmp:
            bot = start_harness(Path(tmp), s3.url, emulator=EmulatorSettings(seed=1, rate=0.0))
            server = bare_bolt(bot.stub.api_url)
            bare = dataclasses.replace(bot, running=_Port(server))  # type: ignore[arg-type]
            try:
                job, _ = bot.launch()
                bot.emu.settings.delay_seconds = args.delay
                lines = acks(bot, bare, job, args)
                drain(bot, quiet_seconds=args.delay + 1.5)
                bot.emu.settings.delay_seconds = args.delay
                lines += ["", *quick_under_load(bot, job, args)]
                drain(bot, quiet_seconds=args.delay + 1.5)
            finally:
                server.stop_accepting()
                server.close(time.monotonic() + 2)
                bot.stop()
    finally:
        s3.stop()
    print(f"SageMaker calls delayed {args.delay:g} s.\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
