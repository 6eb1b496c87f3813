"""Benchmark: five workers on every frame against gtbot's adaptive re-labeling, on the emulator.

Usage: .venv/bin/python bench/relabel.py [--frames 300] [--seed 1] [worker-noise options]
       .venv/bin/python bench/relabel.py --explore [...]   (the evidence for the choices)

Both policies run on the Ground Truth emulator (moto S3 on loopback), over the same synthetic
frames whose truth is known (bot/synthetic.py, a quarter of them with huddled animals), with
emulated public-crowd workers (aws/emulator/, shared/DESIGN.md's figures by default; every noise
setting can be changed on the command line, e.g. `--outlier-fraction 0.2 --noise-px 15`):

  (a) five workers on every frame: one job, as MARS does, consolidated with MARS's median (the
      default consensus of a plain job); the same answers are also consolidated with gtbot's
      robust consensus, as (a'), to show what the estimator alone does;
  (b) the adaptive policy: a first round of `--first` workers on every frame, then gtbot itself
      launches rounds of `--per-round` more workers on the frames its results rank least
      certain (`--select`), up to `--rounds` rounds, within a budget of `--budget-share` of
      (a)'s worker pay. This is the real path: plans, Launch, the job watcher and its
      after-tick hook, results merging every round (robust consensus).

It prints, side by side: worker tasks, USD of worker pay at `--price` (a public-crowd price per
task), objects sent to Ground Truth (its per-object fee is per object and job), and the median,
95th and 99th percentile of the consensus points' distance to the truth (px), then whether (b)
meets the goal against (a): at most 0.65x the worker tasks, median error at most 1.05x, 95th
percentile no higher.

`--explore` runs one job with `--pool` (9) workers on every frame instead and compares, on the
same answers, consensus estimators (on 3 and 5 workers) and frame-selection rules (revealing
the pool's later workers as later rounds): the measurements bench/README.md gives for why the
robust consensus and the expected-error rule were chosen.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REGION = "us-east-2"
PUBLIC = f"arn:aws:sagemaker:{REGION}:394669845002:workteam/public-crowd/default"
ROLE = "arn:aws:iam::123456789012:role/service-role/GtbotBenchRole"
USER = "UBENCH"
CHANNEL = "CBENCH"
NOISE = (
    "profile",
    "noise_fraction",
    "noise_px",
    "swap_fraction",
    "miss_fraction",
    "outlier_fraction",
    "difficulty",
    "identity_fraction",
)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1, help="frames and workers")
    parser.add_argument("--price", default="0.036", help="USD per task (a public-crowd price)")
    parser.add_argument("--rate", type=float, default=1500.0, help="emulated tasks per second")
    parser.add_argument("--huddle-fraction", type=float, default=None, help="frames huddled")
    parser.add_argument("--first", type=int, default=3, help="(b): first round's workers")
    parser.add_argument("--select", default="worst 25%", help="(b): frames each later round")
    parser.add_argument("--per-round", type=int, default=1, help="(b): workers per later round")
    parser.add_argument("--rounds", type=int, default=3, help="(b): rounds at most")
    parser.add_argument("--budget-share", type=float, default=0.65, help="(b): of (a)'s pay")
    parser.add_argument("--explore", action="store_true", help="estimators and rules instead")
    parser.add_argument("--pool", type=int, default=9, help="--explore: workers per frame")
    for name in NOISE:
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=str if name == "profile" else float,
            default=None,
            help="emulator worker noise (aws/emulator/knobs.py)",
        )
    return parser.parse_args()


@dataclass
class Bench:
    """Emulators, a database and a projects folder in a temporary directory."""

    price: Decimal
    workdir: Path
    frames: list[Path]
    truth: dict[str, Any]
    stop: Callable[[], None]
    emulator: Any
    settings: Any


def _start(args: argparse.Namespace) -> Bench:
    workdir = Path(tempfile.mkdtemp(prefix="gtbot-bench-relabel-"))
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "GTBOT_DATABASE_URL": f"sqlite:///{workdir / 'gtbot.db'}",
            "GTBOT_PROJECTS_DIR": str(workdir / "projects"),
            "GTBOT_CONFIG": str(workdir / "gtbot.yml"),
        }
    )
    (workdir / "gtbot.yml").write_text("job: {}\n")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "GTBOT_ROLE_ARN", "GTBOT_WORKTEAM_ARN"):
        os.environ.pop(name, None)
    from aws.emulator.groundtruth import EmulatorSettings, start_groundtruth_emulator
    from aws.emulator.moto_s3 import start_local_s3
    from bot.synthetic import HUDDLE_FRACTION, draw_frames

    s3 = start_local_s3()
    s3.reset()
    noise = {k: getattr(args, k) for k in NOISE if getattr(args, k) is not None}
    profile = noise.pop("profile", "public-crowd")
    settings = EmulatorSettings.for_profile(profile, rate=args.rate, seed=args.seed, **noise)
    emulator = start_groundtruth_emulator(s3.url, settings)
    os.environ["AWS_ENDPOINT_URL_S3"] = s3.url
    os.environ["AWS_ENDPOINT_URL_SAGEMAKER"] = emulator.url
    huddles = HUDDLE_FRACTION if args.huddle_fraction is None else args.huddle_fraction
    print(f"Drawing {args.frames} frames ({huddles:.0%} huddled) ...", file=sys.stderr)
    frames = draw_frames(
        workdir / "frames" / "raw",
        args.frames,
        seed=args.seed,
        truth_path=workdir / "truth.json",
        huddle_fraction=huddles,
    )
    truth = json.loads((workdir / "truth.json").read_text())

    def stop() -> None:
        emulator.stop()
        s3.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    return Bench(Decimal(args.price), workdir, frames, truth, stop, emulator, settings)


def _project(bench: Bench, name: str, workers: int, adaptive: dict[str, Any] | None) -> None:
    import yaml

    from bot.synthetic import MARS_KEYPOINTS, MARS_PAIRS

    folder = bench.workdir / "projects" / name
    raw = folder / "annotation-data" / "raw-images"
    raw.mkdir(parents=True)
    for frame in bench.frames:
        shutil.copy(frame, raw / frame.name)
    job: dict[str, Any] = {
        "workteam_arn": PUBLIC,
        "role_arn": ROLE,
        "workers_per_image": workers,
        "price_usd": float(bench.price),
        "task_availability_seconds": 43200,
        "max_concurrent_tasks": 1000,
    }
    if adaptive is not None:
        job["adaptive"] = adaptive
    config = {
        "species": "mouse",
        "animal_names": ["black", "white"],
        "num_obj": 1,
        "keypoints": list(MARS_KEYPOINTS),
        "check_pairs": [list(p) for p in MARS_PAIRS],
        "data_bucket": f"{name}-sagemaker",
        "template_bucket": f"{name}-sagemaker-ui",
        "region": REGION,
        "header": "Label body parts of the two mice.",
        "short_instructions": "Label each body part of both mice.",
        "full_instructions": "<p>Label each body part of both mice.</p>",
        "job": job,
    }
    (folder / "project-config.yml").write_text(yaml.safe_dump(config, sort_keys=False))


def _errors(keypoints_csv: Path, truth: dict[str, Any]) -> tuple[np.ndarray, int]:
    """Each consensus point's distance to the truth (px), and how many points had none."""
    import csv

    index = {k: i for i, k in enumerate(truth["keypoints"])}
    out, missing = [], 0
    with keypoints_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            name = row["frame"].rsplit("/", 1)[-1]
            tx, ty = truth["truth"][name][row["animal"]][index[row["keypoint"]]]
            if not row["x"]:
                missing += 1
                continue
            out.append(math.hypot(float(row["x"]) - tx, float(row["y"]) - ty))
    return np.array(out), missing


@dataclass
class Outcome:
    name: str
    consensus: str
    tasks: int
    objects: int
    errors: np.ndarray
    missing: int
    jobs: int
    usd: Decimal


def _run_policies(args: argparse.Namespace, bench: Bench) -> list[Outcome]:
    from bot import recipe
    from bot.context import Context
    from bot.job_results import completion_results
    from bot.jobs import launcher
    from bot.jobs.relabel import advance_chains
    from bot.jobs.watcher import Watcher
    from bot.results.runner import run_consolidate
    from bot.sandbox import ConsoleNotifier
    from bot.settings import Settings
    from bot.state import Store

    n = args.frames
    five_cost = bench.price * 5 * n
    budget = (five_cost * Decimal(str(args.budget_share))).quantize(Decimal("0.01"))
    _project(bench, "bench-a", 5, None)
    policy = {
        "select": args.select,
        "workers_per_round": args.per_round,
        "max_rounds": args.rounds,
        "budget_usd": float(budget),
    }
    _project(bench, "bench-b", args.first, policy)
    settings = Settings.from_env()
    store = Store(settings.database_url)
    ctx = Context(settings=settings, store=store)
    jobs = {}
    for name in ("bench-a", "bench-b"):
        print(f"Submitting {name} ...", file=sys.stderr)
        plan = recipe.prepare_submission(ctx, ctx.project(name))
        plan_id = launcher.record_plan(store, plan, user=USER, channel=CHANNEL)
        store.set_plan_message(plan_id, f"card-{name}")
        decision = launcher.launch_plan(
            ctx, store, plan_id, user=USER, is_admin=False, is_submitter=True
        )
        if decision.kind != "launched":
            raise SystemExit(f"{name} was not launched: {decision.message}")
        jobs[name] = plan.job_name
    posts: list[str] = []
    notifier = ConsoleNotifier(posts.append)
    watcher = Watcher(
        ctx,
        store,
        notifier,
        lease_seconds=60,
        results=completion_results,
        after_tick=lambda w: advance_chains(w.ctx, w.store, w.tell, None),
    )
    started = time.monotonic()
    root_a, root_b = jobs["bench-a"], jobs["bench-b"]
    while True:
        watcher.tick()
        chain = store.get_chain(root_b)
        last = [root_b, *(p.job_name for p in store.follow_up_plans(root_b))][-1]
        told = store.get_announcement(last)
        told_a = store.get_announcement(root_a)
        if (
            chain is not None
            and chain.state != "active"
            and told is not None
            and told.state == "done"
            and told_a is not None
            and told_a.state == "done"
        ):
            break
        if time.monotonic() - started > 1800:
            raise SystemExit("the jobs did not finish within 30 minutes")
        time.sleep(0.5)
    print(f"Both policies ran in {time.monotonic() - started:.0f} s.", file=sys.stderr)
    for text in posts:
        if "Automatic round" in text or "No further automatic round" in text:
            print(text.replace("│", "").replace("└─", "").strip(), file=sys.stderr)

    results = bench.workdir / "projects"
    a_dir = results / "bench-a" / "annotation-data" / "results" / root_a
    b_dir = results / "bench-b" / "annotation-data" / "results" / root_b
    from bot.job_results import job_results

    job_results(ctx, root_b)  # every round merged (the last completion post built it)
    a_job = recipe.job_status(ctx, root_a)
    robust_dir = bench.workdir / "a-robust"
    run_consolidate(
        a_job.output_manifest_uri or "",
        results / "bench-a",
        robust_dir,
        s3_client_factory=lambda: ctx.clients.s3(REGION),
        consensus="robust",
    )
    plans_b = [store.plan_for_job(root_b), *store.follow_up_plans(root_b)]
    tasks_b = sum(
        int(p.summary["images"]) * int(p.summary["workers_per_image"]) for p in plans_b if p
    )
    objects_b = sum(int(p.summary["images"]) for p in plans_b if p)
    outcomes = []
    for name, consensus, folder, tasks, objects, count in (
        ("(a) 5 workers, every frame", "median (MARS)", a_dir, 5 * n, n, 1),
        ("(a') 5 workers, every frame", "robust", robust_dir, 5 * n, n, 1),
        ("(b) adaptive", "robust", b_dir, tasks_b, objects_b, len(plans_b)),
    ):
        errors, missing = _errors(folder / "keypoints.csv", bench.truth)
        usd = (bench.price * tasks).quantize(Decimal("0.01"))
        outcomes.append(Outcome(name, consensus, tasks, objects, errors, missing, count, usd))
    return outcomes


def _table(outcomes: Sequence[Outcome], n: int) -> str:
    def pct(o: Outcome, q: float) -> float:
        return float(np.percentile(o.errors, q))

    rows = [
        ("consensus", [o.consensus for o in outcomes]),
        ("labeling jobs (rounds)", [str(o.jobs) for o in outcomes]),
        ("worker tasks", [f"{o.tasks:,} ({o.tasks / n:.2f} a frame)" for o in outcomes]),
        ("worker pay, USD", [f"${o.usd}" for o in outcomes]),
        ("objects sent to Ground Truth", [f"{o.objects:,}" for o in outcomes]),
        ("median error, px", [f"{pct(o, 50):.2f}" for o in outcomes]),
        ("95th percentile error, px", [f"{pct(o, 95):.2f}" for o in outcomes]),
        ("99th percentile error, px", [f"{pct(o, 99):.2f}" for o in outcomes]),
        ("points without consensus", [str(o.missing) for o in outcomes]),
    ]
    head = "| figure | " + " | ".join(o.name for o in outcomes) + " |"
    lines = [head, "|---|" + "---|" * len(outcomes)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return "\n".join(lines)


def _verdict(a: Outcome, b: Outcome, against: str) -> str:
    tasks = b.tasks / a.tasks
    med = float(np.median(b.errors) / np.median(a.errors))
    p95 = float(np.percentile(b.errors, 95) / np.percentile(a.errors, 95))
    ok = tasks <= 0.65 and med <= 1.05 and p95 <= 1.0
    return (
        f"(b) against {against}: worker tasks {tasks:.3f}x (goal <= 0.65), median error "
        f"{med:.3f}x (<= 1.05), 95th percentile {p95:.3f}x (<= 1.00): "
        + ("goal met" if ok else "goal NOT met")
    )


# --------------------------------------------------------------------------- --explore


def _pool(args: argparse.Namespace, bench: Bench) -> tuple[np.ndarray, list[list[str]], np.ndarray]:
    """One emulated job with `--pool` workers on every frame: (frames, workers, slots, 2)
    answers in the order workers submitted them, their ids, and the truth (frames, slots, 2)."""
    from bot import recipe
    from bot.context import Context
    from bot.jobs import launcher
    from bot.results.reader import ReadReport, read_batches
    from bot.results.runner import _S3  # noqa: PLC2701 - the same S3 reader the results use
    from bot.settings import Settings
    from bot.state import Store

    _project(bench, "bench-pool", args.pool, None)
    settings = Settings.from_env()
    store = Store(settings.database_url)
    ctx = Context(settings=settings, store=store)
    project = ctx.project("bench-pool")
    plan = recipe.prepare_submission(ctx, project)
    plan_id = launcher.record_plan(store, plan, user=USER, channel=CHANNEL)
    launcher.launch_plan(ctx, store, plan_id, user=USER, is_admin=False, is_submitter=True)
    while (job := recipe.job_status(ctx, plan.job_name)).status != "Completed":
        if job.terminal:
            raise SystemExit(f"the pool job ended {job.status}: {job.failure_reason}")
        time.sleep(0.5)
    spec = project.label_spec
    reader = _S3(lambda: ctx.clients.s3(REGION))
    batches = list(
        read_batches(
            reader.lines(job.output_manifest_uri or ""),
            spec,
            fetch=reader.get,
            report=ReadReport(),
            batch_lines=100_000,
        )
    )
    batch = batches[0]
    names = [ref.rsplit("/", 1)[-1] for ref in batch.source_refs]
    index = {k: i for i, k in enumerate(bench.truth["keypoints"])}
    truth = np.array(
        [
            [
                bench.truth["truth"][name][label.split(" mouse ")[0]][
                    index[label.split(" mouse ")[1]]
                ]
                for label in spec.labels
            ]
            for name in names
        ]
    )
    return batch.coords, batch.workers, truth


def _explore(args: argparse.Namespace, bench: Bench) -> None:
    from bot.results.consensus import consensus_batch
    from bot.results.robust import robust_batch
    from bot.results.spec import LabelSpec
    from bot.synthetic import MARS_KEYPOINTS, MARS_PAIRS

    spec = LabelSpec(
        species="mouse",
        animals=("black", "white"),
        keypoints=MARS_KEYPOINTS,
        check_pairs=MARS_PAIRS,
    )
    coords, workers, truth = _pool(args, bench)
    n = len(coords)
    width = 1024.0

    def errors(points: np.ndarray) -> np.ndarray:
        return np.sqrt(((points - truth) ** 2).sum(axis=-1)).ravel()

    def figures(e: np.ndarray) -> str:
        e = e[np.isfinite(e)]
        return f"{np.median(e):6.2f} | {np.percentile(e, 95):6.2f} | {np.percentile(e, 99):6.2f}"

    print("\nEstimators on the same answers (first k workers of each frame):")
    print("| workers | estimator | median px | p95 px | p99 px |\n|---|---|---|---|---|")
    estimators: list[tuple[str, Callable[[np.ndarray, list[list[str]]], np.ndarray]]] = [
        ("median (MARS)", lambda c, w: consensus_batch(c, spec).points),
        (
            "robust, no shape, no worker weights",
            lambda c, w: robust_batch(c, spec, w, width, shape=False, weights=False).points,
        ),
        (
            "robust, no shape",
            lambda c, w: robust_batch(c, spec, w, width, shape=False).points,
        ),
        ("robust (gtbot's)", lambda c, w: robust_batch(c, spec, w, width).points),
    ]
    for k in (3, 5, args.pool):
        for name, estimate in estimators:
            cut = [names[:k] for names in workers]
            print(f"| {k} | {name} | {figures(errors(estimate(coords[:, :k], cut)))} |")

    print(
        "\nFrame-selection rules: a first round of 3 workers, then rounds of 1 more worker on "
        "the frames a rule picks (later workers of the pool), robust consensus:"
    )
    print("| rule | rounds | worker tasks a frame | median px | p95 px | p99 px |")
    print("|---|---|---|---|---|---|")
    rng = random.Random(args.seed)

    def run(rule: str, shares: Sequence[float]) -> tuple[np.ndarray, float]:
        count = np.full(n, 3)
        for share in shares:
            masked = coords.copy()
            masked[np.arange(coords.shape[1])[None, :] >= count[:, None]] = np.nan
            cut = [names[: count[b]] for b, names in enumerate(workers)]
            result = robust_batch(masked, spec, cut, width)
            if rule == "expected error (gtbot's)":
                assert result.uncertainty is not None
                score = np.nanmean(result.uncertainty, axis=1)
            elif rule == "spread":
                score = np.fmax.reduce(result.spread, axis=1)
            elif rule == "oracle (true error)":
                score = np.nanmean(np.sqrt(((result.points - truth) ** 2).sum(-1)), axis=1)
            else:
                score = np.array([rng.random() for _ in range(n)])
            score = np.where(count < coords.shape[1], np.nan_to_num(score, nan=-1.0), -np.inf)
            count[np.argsort(-score, kind="stable")[: int(round(share * n))]] += 1
        masked = coords.copy()
        masked[np.arange(coords.shape[1])[None, :] >= count[:, None]] = np.nan
        cut = [names[: count[b]] for b, names in enumerate(workers)]
        return errors(robust_batch(masked, spec, cut, width).points), float(count.mean())

    for rule in ("random", "spread", "expected error (gtbot's)", "oracle (true error)"):
        for shares in ((0.25,), (0.15, 0.10), (0.125, 0.125)):
            e, tasks = run(rule, shares)
            label = " + ".join(f"{s:.0%}" for s in shares)
            print(f"| {rule} | {label} | {tasks:.2f} | {figures(e)} |")
    base = errors(consensus_batch(coords[:, :5], spec).points)
    print(f"\nReference: 5 workers, median (MARS): {figures(base)} (median | p95 | p99 px)")


def main() -> int:
    args = _arguments()
    bench = _start(args)
    try:
        print(f"Emulated workers: {json.dumps(bench.settings.as_dict())}", file=sys.stderr)
        if args.explore:
            _explore(args, bench)
            return 0
        outcomes = _run_policies(args, bench)
        n = args.frames
        print(
            f"\n{n} frames (1024x570, two mice, 14 keypoints), worker pay at ${bench.price} a "
            f"task; (b): first round {args.first} workers, then {args.per_round} more on "
            f"`{args.select}` a round, at most {args.rounds} rounds, budget "
            f"{args.budget_share:.0%} of (a)'s pay\n"
        )
        print(_table(outcomes, n))
        print()
        print(_verdict(outcomes[0], outcomes[2], "(a), five workers with MARS's median"))
        print(_verdict(outcomes[1], outcomes[2], "(a'), five workers with the robust consensus"))
        return 0
    finally:
        bench.stop()


if __name__ == "__main__":
    sys.exit(main())
