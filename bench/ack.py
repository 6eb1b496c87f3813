"""How long Slack waits for gtbot's ack, with AWS fast and with AWS slow.

Slack gives a slash command or a button 3 seconds to be acknowledged. The bot is started for real
(`start_bot` on 127.0.0.1, its WSGI app on a real port) against a loopback stub of the Slack Web
API, moto S3 and the Ground Truth emulator, and is sent signed requests the way Slack sends them.
For each emulator delay (every SageMaker call sleeps that long first) and each command it reports
the HTTP round trip of the ack: sequential deliveries, then a concurrent burst larger than Bolt's
listener pool. The work behind each ack keeps running in the background; the next rows are
measured while it does, as they would be in a busy channel.

    .venv/bin/python bench/ack.py [--reps 10] [--burst 12] [--delays 0 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import conftest  # noqa: E402,F401  (fake AWS credentials before any client exists)
from slack_harness import SUBMITTER, Harness, Sent, start_harness  # noqa: E402

from aws.emulator.groundtruth import EmulatorSettings  # noqa: E402
from aws.emulator.moto_s3 import start_local_s3  # noqa: E402
from handlers import blocks  # noqa: E402


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def row(label: str, delay: float, sent: list[Sent]) -> str:
    ms = [s.seconds * 1000 for s in sent]
    bad = sum(1 for s in sent if s.status != 200)
    return (
        f"| {delay:>4.0f} s | {label:<22} | {len(ms):>3} | {statistics.median(ms):>7.1f} | "
        f"{percentile(ms, 95):>7.1f} | {max(ms):>7.1f} |" + (f" {bad} not 200" if bad else "")
    )


def measure(bot: Harness, delay: float, reps: int, burst: int) -> list[str]:
    bot.emu.settings.delay_seconds = 0.0
    job, _ = bot.launch()
    time.sleep(1.0)  # a fresh second, so the submits below name a new job
    plan_id, ts = bot.submit_plan(user=SUBMITTER)
    bot.emu.settings.delay_seconds = delay
    commands: list[tuple[str, Callable[[], Sent]]] = [
        ("/gt help", lambda: bot.command("help", user=SUBMITTER)),
        ("/gt status <job>", lambda: bot.command(f"status {job}", user=SUBMITTER)),
        ("/gt jobs", lambda: bot.command("jobs", user=SUBMITTER)),
        ("/gt submit demo", lambda: bot.command("submit demo", user=SUBMITTER)),
        ("/gt stop <job>", lambda: bot.command(f"stop {job}", user=SUBMITTER)),
        (
            "Launch click",
            lambda: bot.click(blocks.LAUNCH_ACTION, plan_id, user=SUBMITTER, message_ts=ts),
        ),
    ]
    lines = []
    for label, send in commands:
        lines.append(row(label, delay, [send() for _ in range(reps)]))
    with ThreadPoolExecutor(max_workers=burst) as pool:
        sent = list(pool.map(lambda _: bot.command(f"status {job}", user=SUBMITTER), range(burst)))
    lines.append(row(f"burst: {burst} x status", delay, sent))
    drain(bot, quiet_seconds=delay + 1.5)
    return lines


def drain(bot: Harness, quiet_seconds: float) -> None:
    """Let the work behind the acks finish (AWS fast again) before the servers go away; calls
    already asleep in the emulator keep their delay, hence a quiet period longer than it."""
    bot.emu.settings.delay_seconds = 0.0
    last, since = -1, time.monotonic()
    while time.monotonic() - since < quiet_seconds:
        count = len(bot.stub.calls) + len(bot.emu.calls)
        if count != last:
            last, since = count, time.monotonic()
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10, help="sequential deliveries per command")
    parser.add_argument("--burst", type=int, default=12, help="concurrent `status` deliveries")
    parser.add_argument("--delays", type=float, nargs="+", default=[0.0, 2.0])
    args = parser.parse_args()
    s3 = start_local_s3()
    lines = [
        "| delay | command                | n   | p50 ms  | p95 ms  | max ms  |",
        "|------:|------------------------|----:|--------:|--------:|--------:|",
    ]
    try:
        for delay in args.delays:
            s3.reset()
            with tempfile.TemporaryDirectory(prefix="gtbot-bench-ack-") as tmp:
                bot = start_harness(Path(tmp), s3.url, emulator=EmulatorSettings(seed=1, rate=50.0))
                try:
                    lines += measure(bot, delay, args.reps, args.burst)
                finally:
                    bot.stop()
    finally:
        s3.stop()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
