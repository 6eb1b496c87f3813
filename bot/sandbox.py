"""`gtbot sandbox`: the whole workflow on one machine, no AWS account and no Slack workspace.

moto's S3 server and gtbot's Ground Truth emulator run in-process on loopback; boto3 reaches them
through its own AWS_ENDPOINT_URL_* variables, and the workflow is played through the same command
router, launcher and watcher that serve `/gt` in Slack. What a channel would show is printed.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.cards import JobCard
from bot.jobs.watcher import Posted
from bot.links import Links

REGION = "us-east-2"
ACCOUNT = "123456789012"
SANDBOX_ROLE = f"arn:aws:iam::{ACCOUNT}:role/service-role/GtbotSandboxRole"
SANDBOX_TEAM = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:workteam/private-crowd/sandbox-labelers"
PROJECT = "demo-mice"
CHANNEL = "#sandbox"
USER = "U0SANDBOX"

Print = Callable[[str], None]


class ConsoleNotifier:
    """Shows, in a terminal, the posts and card updates a Slack channel would get."""

    def __init__(self, out: Print) -> None:
        self.out = out
        self._next = 0

    def _ts(self) -> str:
        self._next += 1
        return f"{self._next}"

    def post_card(self, channel: str, card: JobCard, thread_ts: str | None = None) -> str:
        self.out(_boxed(f"{channel} · new job card", card.text()))
        return self._ts()

    def update_card(self, channel: str, ts: str, card: JobCard) -> None:
        self.out(_boxed(f"{channel} · job card updated", card.text()))

    def post_thread(
        self,
        channel: str,
        thread_ts: str | None,
        text: str,
        key: str | None = None,
        *,
        mention: tuple[str, ...] = (),
        links: Links | None = None,
        skip: frozenset[str] = frozenset(),
    ) -> str:
        body = "\n".join([" ".join(f"@{u}" for u in mention), text] if mention else [text])
        if links is not None:
            body += "\n" + "\n".join(links.lines())
        self.out(_boxed(f"{channel} · in the job's thread", body))
        return self._ts()

    def open_dm(self, user: str) -> str:
        return f"DM with {user}"

    def upload_file(self, channel: str, thread_ts: str | None, path: Path, title: str) -> None:
        self.out(_boxed(f"{channel} · file posted: {title}", str(path)))

    def posted(self, channel: str, thread_ts: str | None) -> Posted:
        """A terminal keeps nothing to read back: the sandbox lives as long as its process."""
        return Posted()


def _boxed(title: str, body: str) -> str:
    lines = [f"┌─ {title}"]
    for line in body.splitlines() or [""]:
        wrapped = textwrap.wrap(line, 96, subsequent_indent="    ") or [""]
        lines += [f"│ {w}" for w in wrapped]
    lines.append("└─")
    return "\n".join(lines)


@dataclass
class Emulators:
    s3_url: str
    sagemaker_url: str
    iam_url: str
    access_key: tuple[str, str]
    stop: Callable[[], None]
    settings: object

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL_S3": self.s3_url,
            "AWS_ENDPOINT_URL_SAGEMAKER": self.sagemaker_url,
            # moto's server answers STS too and gtbot's IAM front answers IAM; boto3 reads
            # AWS_ENDPOINT_URL_<SERVICE ID> (AWS SDKs reference guide, "Service-specific
            # endpoints"), so `doctor` in a sandbox shell never reaches for real AWS.
            "AWS_ENDPOINT_URL_IAM": self.iam_url,
            "AWS_ENDPOINT_URL_STS": self.s3_url,
            "AWS_ACCESS_KEY_ID": self.access_key[0],
            "AWS_SECRET_ACCESS_KEY": self.access_key[1],
            "AWS_DEFAULT_REGION": REGION,
            "GTBOT_ROLE_ARN": SANDBOX_ROLE,
            "GTBOT_WORKTEAM_ARN": SANDBOX_TEAM,
        }


def _sandbox_identities(iam_url: str) -> tuple[str, str]:
    """The IAM a lab sets up once, in the emulated account: an execution role that may read and
    write buckets named like the ones `init` proposes (as AWS's managed Ground Truth policy
    allows), and a user for gtbot that may pass that role to SageMaker. Returns its keys."""
    import json

    import boto3

    iam = boto3.session.Session().client(
        "iam",
        endpoint_url=iam_url,
        region_name=REGION,
        aws_access_key_id="sandbox",
        aws_secret_access_key="sandbox",
    )
    path, name = SANDBOX_ROLE.split(":role", 1)[1].rsplit("/", 1)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sagemaker.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    iam.create_role(RoleName=name, Path=path + "/", AssumeRolePolicyDocument=json.dumps(trust))
    from bot.doctor import CLOUDWATCH_ACTIONS

    buckets = [f"arn:aws:s3:::*{word}*" for word in ("sagemaker", "groundtruth")]
    access = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                "Resource": buckets,
            },
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                "Resource": buckets,
            },
            {"Effect": "Allow", "Action": list(CLOUDWATCH_ACTIONS), "Resource": "*"},
            {
                "Effect": "Allow",
                "Action": "lambda:InvokeFunction",
                "Resource": "arn:aws:lambda:*:*:function:*GtRecipe*",
            },
        ],
    }
    iam.put_role_policy(
        RoleName=name, PolicyName="ground-truth-job", PolicyDocument=json.dumps(access)
    )
    iam.create_user(UserName="gtbot")
    pass_role = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": SANDBOX_ROLE,
                "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            }
        ],
    }
    iam.put_user_policy(
        UserName="gtbot", PolicyName="pass-role", PolicyDocument=json.dumps(pass_role)
    )
    key = iam.create_access_key(UserName="gtbot")["AccessKey"]
    return str(key["AccessKeyId"]), str(key["SecretAccessKey"])


def start_emulators(rate: float, profile: str = "public-crowd") -> Emulators:
    from aws.emulator.groundtruth import EmulatorSettings, start_groundtruth_emulator
    from aws.emulator.iam import start_iam_emulator
    from aws.emulator.moto_s3 import start_local_s3

    s3 = start_local_s3()
    # moto keeps its accounts per process, not per server: start from an empty one.
    s3.reset()
    iam = start_iam_emulator(s3.url)
    settings = EmulatorSettings.for_profile(profile, rate=rate, initializing_seconds=1.0, seed=7)
    gt = start_groundtruth_emulator(s3.url, settings)

    def stop() -> None:
        gt.stop()
        iam.stop()
        s3.stop()

    try:
        keys = _sandbox_identities(iam.url)
    except BaseException:
        stop()
        raise
    return Emulators(
        s3_url=s3.url,
        sagemaker_url=gt.url,
        iam_url=iam.url,
        access_key=keys,
        stop=stop,
        settings=settings,
    )


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Point this process (boto3 included) at the sandbox, and put everything back after."""
    saved = {k: os.environ.get(k) for k in values}
    removed = {
        k: os.environ.pop(k) for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN") if k in os.environ
    }
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        os.environ.update(removed)


@dataclass(frozen=True)
class SandboxSummary:
    job_name: str
    status: str
    images: int
    labels: int
    workers_per_image: int
    output_manifest: str
    local_results: Path | None
    workdir: Path


def run_sandbox(
    *,
    frames: int = 12,
    workers: int = 3,
    rate: float = 12.0,
    profile: str = "public-crowd",
    keep: bool = True,
    timeout: float = 50.0,
    out: Print = print,
) -> SandboxSummary:
    workdir = Path(tempfile.mkdtemp(prefix="gtbot-sandbox-"))
    out(f"gtbot sandbox: S3, IAM and Ground Truth emulators on loopback, files in {workdir}")
    out(f"(emulated workers: {profile} noise)")
    emulators = start_emulators(rate, profile)
    env = emulators.env() | {
        "GTBOT_PROJECTS_DIR": str(workdir / "projects"),
        "GTBOT_DATABASE_URL": f"sqlite:///{workdir / 'gtbot.db'}",
        "GTBOT_CONFIG": "",
    }
    logging.getLogger("gtbot").setLevel(logging.WARNING)
    try:
        with _environment(env):
            os.environ.pop("GTBOT_CONFIG", None)
            return _play(
                workdir, frames=frames, workers=workers, timeout=timeout, out=out, keep=keep
            )
    finally:
        emulators.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _say(out: Print, who: str, text: str) -> None:
    out(f"\n{who}: /gt {text}")


def _play(
    workdir: Path, *, frames: int, workers: int, timeout: float, out: Print, keep: bool
) -> SandboxSummary:
    import yaml

    from bot.commands import Router, plan_text
    from bot.context import Context
    from bot.job_results import completion_results
    from bot.jobs import launcher
    from bot.jobs.watcher import Watcher
    from bot.progress import LineProgress
    from bot.settings import Settings
    from bot.state import Store
    from bot.synthetic import draw_frames

    settings = Settings.from_env()
    store = Store(settings.database_url)
    progress_lines: list[str] = []
    ctx = Context(settings=settings, store=store, progress=LineProgress(progress_lines.append))
    router = Router(ctx)

    def run(text: str) -> str:
        _say(out, "you", text)
        reply = router.run(text, interface="slack", user=USER, channel=CHANNEL)
        out(_boxed(f"{CHANNEL} · gtbot (only visible to you)", reply.text))
        return reply.text

    run(f"init {PROJECT} --region {REGION}")
    project_dir = settings.projects_dir / PROJECT
    config_file = project_dir / "project-config.yml"
    config = yaml.safe_load(config_file.read_text())
    config["job"]["workers_per_image"] = workers
    config_file.write_text(
        config_file.read_text().replace("workers_per_image: 5 ", f"workers_per_image: {workers} ")
    )
    images_dir = project_dir / "annotation-data" / "raw-images"
    draw_frames(images_dir, frames, seed=11, truth_path=workdir / "truth.json")
    out(f"\n(the sandbox drew {frames} frames of two mice at known poses into {images_dir})")
    run("help")
    run(f"setup {PROJECT}")
    run(f"doctor {PROJECT}")

    _say(out, "you", f"submit {PROJECT}")
    reply = router.run(f"submit {PROJECT}", interface="slack", user=USER, channel=CHANNEL)
    plan = reply.plan
    assert plan is not None
    plan_id = launcher.record_plan(store, plan, user=USER, channel=CHANNEL)
    store.set_plan_message(plan_id, "plan-card")
    out(_boxed(f"{CHANNEL} · plan card  [Launch] [Cancel]", plan_text(plan)))
    out("\nyou: (click Launch)")
    decision = launcher.launch_plan(
        ctx, store, plan_id, user=USER, is_admin=False, is_submitter=True
    )
    out(_boxed(f"{CHANNEL} · gtbot", decision.message))
    if decision.kind != "launched":
        raise RuntimeError(f"the sandbox could not launch: {decision.message}")
    out("you: (click Launch again: a double click must not launch twice)")
    again = launcher.launch_plan(ctx, store, plan_id, user=USER, is_admin=False, is_submitter=True)
    out(_boxed(f"{CHANNEL} · gtbot (only visible to you)", again.message))

    notifier = ConsoleNotifier(out)
    watcher = Watcher(ctx, store, notifier, results=completion_results, lease_seconds=30)
    deadline = time.monotonic() + timeout
    watch = store.get_watch(plan.job_name)
    while watch is not None and not watch.completion_announced:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{plan.job_name} did not finish within {timeout:.0f} s")
        watcher.tick()
        time.sleep(0.5)
        watch = store.get_watch(plan.job_name)

    run(f"status {plan.job_name}")
    from bot.recipe import job_status

    job = job_status(ctx, plan.job_name)
    manifest = job.output_dataset_uri or "(none)"
    results_dir = project_dir / "annotation-data" / "results" / plan.job_name
    summary = SandboxSummary(
        job_name=plan.job_name,
        status=job.status,
        images=plan.images,
        labels=job.counters.total_labeled,
        workers_per_image=workers,
        output_manifest=manifest,
        local_results=results_dir if results_dir.is_dir() else None,
        workdir=workdir,
    )
    out("\n" + "=" * 72)
    out("Sandbox summary")
    out(f"  Job:             {summary.job_name} ({summary.status})")
    if job.failure_reason:
        out(f"  Failure reason:  {job.failure_reason}")
    out(f"  Images:          {summary.images}, {summary.workers_per_image} workers each")
    out(f"  Labeled:         {summary.labels} of {summary.images}")
    out(f"  Output manifest: {summary.output_manifest}")
    if summary.local_results:
        out(f"  Results:         {summary.local_results}")
        if keep:
            out("                   (preview.png and agreement.png are pictures to open)")
        else:
            out("                   (removed at exit: run without --clean to keep them)")
    out("Next: try it on your AWS account (README, 'From the sandbox to a real job'), or keep the")
    out("emulators up with `gtbot sandbox --serve` and point `gtbot ...` at them (there,")
    out("`template demo-mice --preview` shows a task as a worker sees it).")
    return summary


def serve_sandbox(*, rate: float, profile: str = "public-crowd", out: Print = print) -> None:
    """Keep the emulators up for another shell or the Slack bot, until Ctrl-C."""
    # The stop signals are caught before anything is started or printed: a script that waits
    # for the "then e.g." line and then signals must never meet the process still ignoring it.
    with _stop_signals() as received:
        workdir = Path(tempfile.mkdtemp(prefix="gtbot-sandbox-"))
        emulators = start_emulators(rate, profile)
        try:
            env = emulators.env() | {"GTBOT_PROJECTS_DIR": str(workdir / "projects")}
            out("gtbot sandbox: emulators running. In another shell, run:\n")
            for key, value in env.items():
                out(f"  export {key}={value}")
            out(f"\nthen e.g. `gtbot init demo-mice --region {REGION}`. Ctrl-C stops the emulators")
            out(f"(their state is in memory; files go to {workdir}).")
            while not received:
                time.sleep(0.2)
            out("\nStopping the emulators.")
        finally:
            emulators.stop()
            shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """The SIGINT (Ctrl-C) and SIGTERM received while inside. Both get a handler of their own:
    a process started with SIGINT ignored (a background job of a shell script, CI runners)
    keeps it ignored in Python, so waiting for KeyboardInterrupt would never end. The handler
    only records the signal (an Event's lock could be held by the very bytecode it interrupts);
    the caller polls with short sleeps, so the main thread sees it even when the kernel
    delivers the signal to another thread."""
    received: list[int] = []

    def note(signum: int, _frame: object) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# What the emulators import that a gtbot for real AWS does not install (the `sandbox` extra).
SANDBOX_MODULES = ("moto", "flask", "flask_cors")


def require_sandbox_extra() -> None:
    """Name the extra to install, rather than fail on an import deep in moto."""
    import importlib.util

    from bot.errors import ConfigError

    missing = [m for m in SANDBOX_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"The sandbox's emulators need {', '.join(missing)}, which a plain install of gtbot "
            "leaves out. Install the `sandbox` extra: pip install 'gtbot[sandbox]' (from a "
            "clone of the repository: pip install -e '.[sandbox]'), then run gtbot sandbox again."
        )


def main_sandbox(
    serve: bool, frames: int, workers: int, rate: float, clean: bool, profile: str = "public-crowd"
) -> int:
    require_sandbox_extra()
    if serve:
        serve_sandbox(rate=rate, profile=profile)
        return 0
    started = time.monotonic()
    summary = run_sandbox(
        frames=frames, workers=workers, rate=rate, profile=profile, keep=not clean
    )
    where = "removed (--clean)" if clean else f"kept in {summary.workdir}; delete it when done"
    print(f"Done in {time.monotonic() - started:.0f} s. Sandbox files {where}.", file=sys.stderr)
    return 0 if summary.status == "Completed" else 1
