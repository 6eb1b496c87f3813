"""The command registry and router shared by `/gt` in Slack and `gtbot <command>` in a terminal.

Each subcommand is a function whose docstring's first line is its help text. A command returns a
Reply: text both edges can show, plus the structured result (a plan, a job) that Slack turns into
cards. Authorization happens at the edge, from `Command.spends`; a `long` command runs in the
Slack edge's long lane (bot/lanes.py) and reports through messages.
"""

from __future__ import annotations

import difflib
import getpass
import re
import shlex
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aws.groundtruth import JobInfo
from bot import recipe
from bot.context import Context
from bot.errors import NotFoundError, UsageError
from bot.jobs.adaptive import DEFAULT_SELECT, AdaptivePolicy, FrameRule
from bot.links import Links
from bot.progress import counted
from bot.project import ProjectConfig
from bot.render import job_line, job_text


@dataclass(frozen=True)
class Reply:
    text: str
    plan: recipe.Plan | None = None
    job: JobInfo | None = None
    jobs: tuple[JobInfo, ...] = ()
    files: tuple[str, ...] = ()
    data: Any = None
    exit_status: int = 0  # what `gtbot` exits with: non-zero when a check failed
    # Links the text also lists (`links.lines()`), for an edge that shows them as links.
    links: Links | None = None
    # How to see all of a reply that an edge has to cut ("`jobs --limit 20` lists fewer").
    more: str = ""

    def text_without_links(self) -> str:
        """The text without the lines of `links`, for an edge that shows the links itself."""
        if self.links is None:
            return self.text
        return self.text.replace("\n".join(self.links.lines()), "").replace("\n\n\n", "\n\n")


# Asked before a command acts on a job someone else may own: (job name, verb) -> raises
# PermissionDeniedError. Slack passes one; a terminal on the bot's host needs none.
JobGuard = Callable[[str, str], None]


@dataclass
class Invocation:
    """One parsed command: positional arguments, options, and how to talk back."""

    ctx: Context
    args: list[str]
    options: dict[str, str | bool]
    interface: str = "console"
    confirm: Callable[[recipe.Plan], bool | None] | None = None
    user: str | None = None
    channel: str | None = None
    guard: JobGuard | None = None

    def opt_int(self, name: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
        raw = self.options.get(name)
        if raw is None:
            return default
        try:
            value = int(str(raw))
        except ValueError:
            raise UsageError(f"--{name} needs a whole number, got {raw!r}.") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise UsageError(f"--{name} must be from {lo} to {hi}, got {value}.")
        return value

    @property
    def requester(self) -> str | None:
        """Who asked, for the tags of what this creates: the Slack user, or the login of the
        terminal's user."""
        if self.user:
            return self.user
        if self.interface != "console":
            return None
        try:
            return getpass.getuser()
        except (OSError, KeyError):  # a uid with no name (containers)
            return None

    def check_job(self, job_name: str, verb: str) -> None:
        if self.guard is not None:
            self.guard(job_name, verb)


@dataclass(frozen=True)
class Param:
    """An argument or option of a command, with the help both edges show for it."""

    name: str
    help: str
    metavar: str = ""  # what an option's value is: N, DIR, ARN
    required: bool = False  # an option the command cannot do without
    complete: str = ""  # what a shell may complete it with: "project", "file", "dir"


PROJECT = Param(
    "project", "a project: a folder under GTBOT_PROJECTS_DIR (./projects)", complete="project"
)
JOB = Param("job", "a labeling job's name (`jobs` lists them)")


@dataclass(frozen=True)
class Command:
    name: str
    func: Callable[[Invocation], Reply]
    positional: tuple[Param, ...] = ()
    optional_positional: tuple[Param, ...] = ()
    options: tuple[Param, ...] = ()
    flags: tuple[Param, ...] = ()
    spends: bool = False
    spending_flags: tuple[str, ...] = ()
    # Minutes rather than seconds (uploads, frames, consolidation): Slack runs it in the long
    # lane, a bounded number at once, and reports through a progress message.
    long: bool = False
    # The command's quick checks of its input (the project exists and loads, no host paths
    # from Slack), which it also makes itself: Slack runs them before a long command queues,
    # so a typo is answered at once, to the asker alone, and nothing is queued.
    check: Callable[[Invocation], object] | None = None

    def spends_with(self, options: dict[str, str | bool]) -> bool:
        """Whether this use changes AWS or the lab's files (some flags make a reader write)."""
        return self.spends or any(options.get(f) for f in self.spending_flags)

    @property
    def help(self) -> str:
        """The docstring's first line: one line in every list of commands."""
        return (self.func.__doc__ or "").strip().splitlines()[0]

    @property
    def description(self) -> str:
        """The docstring after its first line: what `help <command>` and `--help` add."""
        lines = (self.func.__doc__ or "").strip().splitlines()[1:]
        return textwrap.dedent("\n".join(lines)).strip()

    def option(self, name: str) -> Param | None:
        return next((o for o in self.options if o.name == name), None)

    def flag(self, name: str) -> Param | None:
        return next((f for f in self.flags if f.name == name), None)

    @property
    def usage(self) -> str:
        parts = [self.name]
        parts += [f"<{p.name}>" for p in self.positional]
        parts += [f"[{p.name}]" for p in self.optional_positional]
        parts += [
            f"--{o.name} {o.metavar or 'X'}" if o.required else f"[--{o.name} {o.metavar or 'X'}]"
            for o in self.options
        ]
        parts += [f"[--{f.name}]" for f in self.flags]
        return " ".join(parts)

    def manual(self) -> str:
        """Usage, help, description and every argument and option: `help <command>`."""
        lines = [self.usage, self.help]
        if self.description:
            lines += ["", self.description]
        params = [(f"<{p.name}>", p.help) for p in self.positional]
        params += [(f"[{p.name}]", p.help) for p in self.optional_positional]
        params += [(f"--{o.name} {o.metavar or 'X'}", o.help) for o in self.options]
        params += [(f"--{f.name}", f.help) for f in self.flags]
        if params:
            width = max(len(name) for name, _ in params)
            lines += [""] + [f"  {name.ljust(width)}  {text}" for name, text in params]
        return "\n".join(lines)


COMMANDS: dict[str, Command] = {}


def command(
    name: str,
    *,
    positional: tuple[Param, ...] = (),
    optional_positional: tuple[Param, ...] = (),
    options: tuple[Param, ...] = (),
    flags: tuple[Param, ...] = (),
    spends: bool = False,
    spending_flags: tuple[str, ...] = (),
    long: bool = False,
    check: Callable[[Invocation], object] | None = None,
) -> Callable[[Callable[[Invocation], Reply]], Callable[[Invocation], Reply]]:
    def register(func: Callable[[Invocation], Reply]) -> Callable[[Invocation], Reply]:
        COMMANDS[name] = Command(
            name,
            func,
            positional,
            optional_positional,
            options,
            flags,
            spends,
            spending_flags,
            long,
            check,
        )
        return func

    return register


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """A hint naming the closest choice (`Did you mean ...?`), or nothing when none is close."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" Did you mean `{prefix}{close[0]}`?" if close else ""


def unknown_command(verb: str) -> UsageError:
    return UsageError(
        f"Unknown command {verb!r}.{did_you_mean(verb, COMMANDS)} `help` lists the commands."
    )


def parse(text: str) -> tuple[Command, list[str], dict[str, str | bool]]:
    """Split `/gt` text into a command, its arguments and options, with usage on any mistake."""
    cleaned = text.replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'")
    cleaned = cleaned.replace("\u2019", "'").replace("\u2014", "--")
    try:
        words = shlex.split(cleaned)
    except ValueError as exc:
        raise UsageError(f"Could not read the command ({exc}). Check the quotes.") from None
    if not words:
        words = ["help"]
    verb, rest = words[0].lower(), words[1:]
    cmd = COMMANDS.get(verb)
    if cmd is None:
        raise unknown_command(verb)
    args: list[str] = []
    options: dict[str, str | bool] = {}
    i = 0
    while i < len(rest):
        word = rest[i]
        if word.startswith("--"):
            key, eq, value = word[2:].partition("=")
            if cmd.flag(key) and not eq:
                options[key] = True
            elif cmd.option(key):
                if not eq:
                    i += 1
                    if i >= len(rest):
                        raise UsageError(f"--{key} needs a value. Usage: {cmd.usage}")
                    value = rest[i]
                options[key] = value
            else:
                known = [f"--{p.name}" for p in (*cmd.options, *cmd.flags)]
                raise UsageError(
                    f"{cmd.name} has no option --{key}.{did_you_mean('--' + key, known)} "
                    f"Usage: {cmd.usage}"
                )
        else:
            args.append(word)
        i += 1
    if len(args) < len(cmd.positional):
        missing = cmd.positional[len(args)].name
        raise UsageError(f"{cmd.name} needs <{missing}>. Usage: {cmd.usage}")
    if len(args) > len(cmd.positional) + len(cmd.optional_positional):
        raise UsageError(f"Too many arguments for {cmd.name}. Usage: {cmd.usage}")
    for option in cmd.options:
        if option.required and not options.get(option.name):
            raise UsageError(
                f"{cmd.name} needs --{option.name} {option.metavar or 'X'} ({option.help}). "
                f"Usage: {cmd.usage}"
            )
    return cmd, args, options


@dataclass
class Router:
    ctx: Context
    extra: dict[str, Any] = field(default_factory=dict)

    def run(self, text: str, **how: Any) -> Reply:
        """`/gt` text: parsed, then called as `call` (keywords: interface, confirm, user,
        channel, guard)."""
        cmd, args, options = parse(text)
        return self.call(cmd, args, options, **how)

    def call(
        self,
        cmd: Command,
        args: list[str],
        options: dict[str, str | bool],
        *,
        interface: str = "console",
        confirm: Callable[[recipe.Plan], bool | None] | None = None,
        user: str | None = None,
        channel: str | None = None,
        guard: JobGuard | None = None,
    ) -> Reply:
        """A command already parsed (by `parse`, or by the terminal's argparse)."""
        return cmd.func(
            Invocation(self.ctx, args, options, interface, confirm, user, channel, guard)
        )

    def check(
        self,
        cmd: Command,
        args: list[str],
        options: dict[str, str | bool],
        *,
        interface: str,
        user: str | None = None,
        channel: str | None = None,
    ) -> None:
        """Only the command's quick checks (`Command.check`): raises what `call` would raise
        for the same input before doing anything slow."""
        if cmd.check is not None:
            cmd.check(Invocation(self.ctx, args, options, interface, None, user, channel))


def _project_check(inv: Invocation) -> ProjectConfig:
    """The project named first exists and its configuration is valid."""
    return inv.ctx.project(inv.args[0])


# --------------------------------------------------------------------------- commands

# `jobs` lists at most this many: more is a page nobody reads and one listing call per 100.
MAX_JOBS_LISTED = 500


@command("help", optional_positional=(Param("command", "the command to explain"),))
def cmd_help(inv: Invocation) -> Reply:
    """Show the commands, or how to use one of them."""
    if inv.args:
        cmd = COMMANDS.get(inv.args[0].lower())
        if cmd is None:
            raise unknown_command(inv.args[0])
        return Reply(cmd.manual())
    width = max(len(name) for name in COMMANDS)
    lines = ["Commands (`help <command>` shows its arguments and options):"] + [
        f"  {c.name.ljust(width)}  {c.help}"
        for c in sorted(COMMANDS.values(), key=lambda c: c.name)
    ]
    return Reply("\n".join(lines))


@command(
    "init",
    positional=(Param("project", "the new project's name (its folder in GTBOT_PROJECTS_DIR)"),),
    options=(
        Param("region", "AWS region of its buckets and jobs (default: your AWS region)", "REGION"),
        Param(
            "data-bucket", "bucket for frames and manifests (default <project>-sagemaker)", "NAME"
        ),
        Param(
            "template-bucket", "bucket for the interface (default <project>-sagemaker-ui)", "NAME"
        ),
    ),
    spends=True,
)
def cmd_init(inv: Invocation) -> Reply:
    """Create a project folder with a commented project-config.yml (MARS defaults).

    Two mice, seven keypoints and their left/right pairs, as MARS labels them; edit the file
    for your animals. Bucket names are global across AWS: keep `sagemaker` in them, so AWS's
    managed Ground Truth policy covers them. Never overwrites an existing project."""
    name = inv.args[0]
    defaults = inv.ctx.settings.lab_job_defaults
    result = recipe.init_project(
        inv.ctx.settings.projects_dir,
        name,
        region=str(inv.options.get("region") or inv.ctx.clients.default_region() or "us-east-1"),
        data_bucket=_opt_str(inv, "data-bucket"),
        template_bucket=_opt_str(inv, "template-bucket"),
        role_arn=defaults.get("role_arn"),
        workteam_arn=defaults.get("workteam_arn"),
    )
    return Reply(
        f"Created project {name} in {result.path}.\n"
        f"Next: edit {result.config_file} (bucket names are global: make them yours), put frames "
        f"in {result.path / 'annotation-data' / 'raw-images'}, then `setup {name}`."
    )


def _opt_str(inv: Invocation, name: str) -> str | None:
    value = inv.options.get(name)
    return str(value) if value else None


@command("setup", positional=(PROJECT,), spends=True, long=True, check=_project_check)
def cmd_setup(inv: Invocation) -> Reply:
    """Create the data, output and template buckets with CORS and public access blocked.

    Idempotent: an existing bucket gets only what it lacks (Ground Truth's CORS rule beside
    any others, public access blocked, gtbot's cost-allocation tags), and a second run changes
    nothing."""
    project = inv.ctx.project(inv.args[0])
    result = recipe.setup_buckets(inv.ctx, project, inv.requester)
    lines = []
    for b in result.buckets:
        if b.created:
            lines.append(f"  {b.name}: created ({', '.join(b.changes) or 'settings in place'})")
        elif b.changes:
            lines.append(f"  {b.name}: existed; {', '.join(b.changes)}")
        else:
            lines.append(f"  {b.name}: already set up, nothing changed")
        lines += [f"  {b.name}: {warning}" for warning in b.warnings]
    head = "Buckets ready:" if result.changed else "Buckets already set up; nothing changed:"
    return Reply("\n".join([head, *lines]))


@command(
    "template",
    positional=(PROJECT,),
    flags=(Param("preview", "also render one task as a worker will see it"),),
    spends=True,
    long=True,
    check=_project_check,
)
def cmd_template(inv: Invocation) -> Reply:
    """Render the annotation interface and upload it; --preview shows one task as workers see it.

    The interface is rendered from project-config.yml (labels, instructions, the instruction
    image) and checked as Ground Truth will render it. --preview writes
    annotation-data/preview.html: one of your frames in the real page, to open in a browser
    before paying."""
    project = inv.ctx.project(inv.args[0])
    result = recipe.publish_template(inv.ctx, project)
    text = (
        f"Annotation interface with {result.labels} labels written to {result.local_file} "
        f"and uploaded to {result.template_uri} (instruction image {result.instruction_image_uri})."
    )
    if not inv.options.get("preview"):
        return Reply(text)
    from bot.preview import preview_task

    preview = preview_task(inv.ctx, project, result.local_file.read_text(encoding="utf-8"))
    lines = [
        text,
        f"Preview of {preview.frame_uri} as a worker sees it, rendered as Ground Truth renders "
        f"the template (its frame link {preview.link_lifetime.text()}):",
    ]
    if inv.interface == "console":
        lines.append(f"  open {preview.page} in a browser")
        if preview.screenshot:
            lines.append(f"  screenshot: {preview.screenshot}")
        return Reply("\n".join(lines), data=preview)
    if preview.screenshot:
        lines.append("  a screenshot is attached.")
        return Reply("\n".join(lines), files=(str(preview.screenshot),), data=preview)
    lines.append(
        f"  no screenshot ({preview.screenshot_problem} on the bot's host): the page itself is "
        "attached; download preview.html and open it in a browser. For screenshots here, install "
        "Chromium on the bot's host (Debian: `apt-get install chromium`)."
    )
    return Reply("\n".join(lines), files=(str(preview.page),), data=preview)


@command("upload", positional=(PROJECT,), spends=True, long=True, check=_project_check)
def cmd_upload(inv: Invocation) -> Reply:
    """Upload frames to the data bucket, skipping those already there.

    Frames come from annotation-data/raw-images (subfolders kept). A file is skipped when the
    object in S3 has its size and MD5; a file unchanged since the last upload (same size and
    modification time) is not even read again. Files that are not JPEG or PNG are listed, not
    uploaded."""
    project = inv.ctx.project(inv.args[0])
    result = recipe.upload_frames(inv.ctx, project)
    lines = [
        f"Frames in {result.prefix_uri}: {result.uploaded} uploaded, {result.skipped} already there."
    ]
    for rel, why in result.rejected[:10]:
        lines.append(f"  not uploaded: {rel}: {why}")
    if len(result.rejected) > 10:
        lines.append(f"  ... and {len(result.rejected) - 10} more files not uploaded")
    for path, why in result.failed[:10]:
        lines.append(f"  FAILED: {path}: {why} (run upload again to retry)")
    return Reply("\n".join(lines))


@command("manifest", positional=(PROJECT,), spends=True, long=True, check=_project_check)
def cmd_manifest(inv: Invocation) -> Reply:
    """Write the input manifest listing every uploaded frame.

    One line per frame in the data bucket, every page of the listing (MARS stopped at 1,000).
    `submit` writes each plan's own manifest; this one is for jobs you start yourself."""
    project = inv.ctx.project(inv.args[0])
    result = recipe.write_manifest(inv.ctx, project)
    return Reply(f"Input manifest with {result.images} images written to {result.uri}.")


def plan_text(plan: recipe.Plan) -> str:
    follow_up = (
        [f"  Follow-up:         round {plan.round} of {plan.parent}: {plan.reason}"]
        if plan.parent
        else []
    )
    adaptive = (
        [f"  Adaptive:          {AdaptivePolicy.from_dict(plan.adaptive).text()}"]
        if plan.adaptive
        else []
    )
    return "\n".join(
        [
            f"Plan for project {plan.project} ({plan.region})",
            *follow_up,
            f"  Images:            {plan.images}",
            f"  Workers per image: {plan.workers_per_image}",
            f"  Workteam:          {plan.workteam_kind} ({plan.workteam_arn.rsplit('/', 1)[-1]})",
            f"  Price per task:    {plan.price_text()}",
            f"  Estimated cost:    {plan.cost_text()}",
            f"  Job name:          {plan.job_name}",
            *adaptive,
            "  Prepared:          " + "; ".join(plan.prepared),
        ]
    )


@command(
    "submit",
    positional=(PROJECT,),
    flags=(Param("yes", "launch without asking (in a terminal; Slack has the Launch button)"),),
    spends=True,
    long=True,
    check=_project_check,
)
def cmd_submit(inv: Invocation) -> Reply:
    """Prepare everything that is missing, show the plan and cost, and launch on confirmation.

    Creates what is missing (buckets, interface, uploads, the plan's own manifest), then shows
    images, workers per image, price and estimated cost. A terminal asks before launching
    (nothing launches when no one can be asked: add --yes); Slack posts a plan card with
    Launch and Cancel. A plan launches exactly what it showed, once."""
    project = inv.ctx.project(inv.args[0])
    plan = recipe.prepare_submission(inv.ctx, project, requester=inv.requester)
    rounds = (
        " The project's adaptive rounds are launched by gtbot's job watcher for jobs launched "
        "from Slack (`gtbot serve` or `gtbot socket`); for this one, run `relabel <job>` when "
        "it has ended to plan its next round."
        if plan.adaptive
        else ""
    )
    return _offer(
        inv,
        plan,
        f"submit {project.name}",
        lambda job: (
            f"Launched labeling job {job.name}. Follow it with `status {job.name}`." + rounds
        ),
    )


def _offer(
    inv: Invocation, plan: recipe.Plan, again: str, launched: Callable[[JobInfo], str]
) -> Reply:
    """A plan: Slack shows its card; a terminal asks (or takes --yes) and launches it."""
    text = plan_text(plan)
    if inv.interface != "console":
        return Reply(text, plan=plan)
    # The console's prompt shows the plan itself; None means nobody could be asked.
    answer = True if inv.options.get("yes") else (inv.confirm(plan) if inv.confirm else None)
    if answer is None:
        return Reply(f"{text}\nNothing launched. Run `{again} --yes` to launch.")
    if not answer:
        return Reply("Nothing launched.")
    job = recipe.launch(inv.ctx, plan)
    shown = text + "\n" if inv.options.get("yes") else ""
    return Reply(shown + launched(job), plan=plan, job=job)


def _relabel_rule(inv: Invocation) -> FrameRule | None:
    """relabel's options, checked before anything slow: the frame rule, or None for --stop."""
    if inv.options.get("stop"):
        if any(inv.options.get(o) for o in ("worst", "spread", "workers", "yes")):
            raise UsageError("--stop takes no other option: `relabel <job> --stop`.")
        return None
    worst, spread = _opt_str(inv, "worst"), _opt_str(inv, "spread")
    if worst and spread:
        raise UsageError("Give --worst or --spread, not both. Usage: " + COMMANDS["relabel"].usage)
    inv.opt_int("workers", 1, lo=1, hi=9)
    if spread:
        return FrameRule.parse(f"spread {spread}", "--spread")
    return FrameRule.parse(f"worst {worst or DEFAULT_SELECT.split()[1]}", "--worst")


@command(
    "relabel",
    positional=(JOB,),
    options=(
        Param("worst", "the N (or N%) least certain frames; default worst 25%", metavar="N"),
        Param("spread", "the frames whose workers are PX pixels apart or more", metavar="PX"),
        Param("workers", "more workers on each chosen frame, 1-9; default 1", metavar="K"),
    ),
    flags=(
        Param("yes", "launch without asking (in a terminal; Slack has the Launch button)"),
        Param("stop", "stop the job's automatic rounds"),
    ),
    spends=True,
    long=True,
    check=_relabel_rule,
)
def cmd_relabel(inv: Invocation) -> Reply:
    """Ask more workers about a finished job's least certain frames (--stop: no more rounds)."""
    from bot.jobs import relabel

    name = inv.args[0]
    rule = _relabel_rule(inv)
    if rule is None:
        root = relabel.root_of(inv.ctx, name)
        inv.check_job(root, "stop the automatic rounds of")
        return Reply(relabel.stop_chain(inv.ctx, root, inv.user or "the terminal"))
    spread = _opt_str(inv, "spread")
    root = relabel.root_of(inv.ctx, name)
    store = inv.ctx.store
    chain = store.get_chain(root) if store is not None else None
    if chain is not None and chain.state == "active":
        raise UsageError(
            f"{root} has automatic rounds, which gtbot launches itself as each round ends. "
            f"Stop them first (`relabel {root} --stop`) to choose the next round by hand."
        )
    workers = inv.opt_int("workers", 1, lo=1, hi=9)
    plan = relabel.plan_follow_up(
        inv.ctx, root, rule=rule, workers=workers, requester=inv.requester
    )
    again = f"relabel {name} " + (f"--spread {spread}" if spread else f"--worst {rule.text()[6:]}")
    return _offer(
        inv,
        plan,
        again + (f" --workers {workers}" if workers != 1 else ""),
        lambda job: (
            f"Launched round {plan.round} of {plan.parent} as {job.name}. Follow it "
            f"with `status {job.name}`; `results {plan.parent}` merges every round once it has "
            "ended."
        ),
    )


@command("status", optional_positional=(JOB,))
def cmd_status(inv: Invocation) -> Reply:
    """Show a job's status and progress (or the jobs still running)."""
    if inv.args:
        job = recipe.job_status(inv.ctx, inv.args[0])
        return Reply(job_text(job), job=job)
    jobs = [j for j in recipe.recent_jobs(inv.ctx, limit=50) if not j.terminal]
    if not jobs:
        return Reply("No labeling jobs are running. `jobs` lists recent ones.")
    return Reply(
        "\n".join(["Running jobs:", *(job_line(j) for j in jobs)]),
        jobs=tuple(jobs),
        more="`status <job>` shows one of them.",
    )


@command(
    "jobs",
    options=(Param("limit", f"how many to list (default 20, at most {MAX_JOBS_LISTED})", "N"),),
)
def cmd_jobs(inv: Invocation) -> Reply:
    """List recent labeling jobs, newest first.

    Jobs of every region your projects use (and of your default region), with their progress."""
    jobs = recipe.recent_jobs(inv.ctx, limit=inv.opt_int("limit", 20, lo=1, hi=MAX_JOBS_LISTED))
    if not jobs:
        return Reply("No labeling jobs yet. Start one with `submit <project>`.")
    return Reply(
        "\n".join(["Recent jobs:", *(job_line(j) for j in jobs)]),
        jobs=tuple(jobs),
        more="`jobs --limit 20` lists fewer; `gtbot jobs --limit 500` in a terminal lists all.",
    )


@command("stop", positional=(JOB,), spends=True)
def cmd_stop(inv: Invocation) -> Reply:
    """Stop a running labeling job (work already done is kept)."""
    name = recipe.job_status(inv.ctx, inv.args[0]).name
    inv.check_job(name, "stop")
    job = recipe.stop_job(inv.ctx, name)
    if job.status in ("Completed", "Failed", "Stopped"):
        return Reply(f"Job {job.name} had already ended ({job.status}); nothing to stop.", job=job)
    return Reply(f"Stopping job {job.name} ({job.status}). Labels already made are kept.", job=job)


@command(
    "watch",
    positional=(JOB,),
    flags=(
        Param("notify", "mention me when it ends, fails or stalls (a DM if the channel is gone)"),
    ),
)
def cmd_watch(inv: Invocation) -> Reply:
    """Follow an existing labeling job in this channel, even one gtbot did not launch.

    Its card shows the progress; its end (with the results) is posted in the card's thread.
    The person who launched it from Slack is mentioned there; --notify adds you."""
    store, channel = inv.ctx.store, inv.channel
    if store is None or channel is None:
        raise UsageError("`watch` follows a job in a Slack channel; run it as `/gt watch <job>`.")
    job = recipe.job_status(inv.ctx, inv.args[0])
    existing = store.get_watch(job.name)
    if inv.options.get("notify") and inv.user:
        announcement = store.get_announcement(job.name)
        if announcement is not None and announcement.state == "done":
            return Reply(
                f"{job.name} has ended ({job.status}) and its end was already announced. "
                f"`results {job.name}` gives the results.",
                job=job,
            )
        store.add_subscriber(job.name, inv.user)
        if existing is not None and existing.channel == channel and not existing.parked:
            return Reply(
                f"You will be mentioned in the thread of {job.name}'s card here when it ends, "
                "fails or stalls.",
            )
    if existing is not None and existing.channel != channel and existing.owner != inv.user:
        inv.check_job(job.name, "move the card of")
    region = recipe.region_for_job(inv.ctx, job.name)
    new = store.add_watch(
        job_name=job.name,
        region=region,
        channel=channel,
        owner=inv.user,
        job_created=job.created,
    )
    verb = "Now watching" if new else "Moved the watch of"
    if not job.terminal:
        notify = " You will be mentioned when it ends." if inv.options.get("notify") else ""
        return Reply(f"{verb} {job.name} here ({job.status}); its card follows.{notify}", job=job)
    announcement = store.get_announcement(job.name)
    told = announcement is not None and announcement.state == "done"
    return Reply(
        f"{verb} {job.name} here ({job.status}): it has ended, so its card shows the final "
        + (
            "state; its end was announced before and is not repeated."
            if told
            else "state and its end follows in the card's thread."
        )
        + f" `results {job.name}` gives the results.",
        job=job,
    )


@command("unwatch", positional=(JOB,))
def cmd_unwatch(inv: Invocation) -> Reply:
    """Stop following a labeling job (the job itself keeps running)."""
    store = inv.ctx.store
    if store is None:
        raise UsageError(
            "`unwatch` applies to jobs followed in Slack; run it as `/gt unwatch <job>`."
        )
    watch = store.get_watch(inv.args[0])
    if watch is None:
        raise NotFoundError(f"{inv.args[0]} is not being watched. `jobs` lists recent jobs.")
    if watch.owner != inv.user:
        inv.check_job(watch.job_name, "unwatch")
    store.remove_watch(watch.job_name)
    return Reply(f"No longer watching {watch.job_name}. The job itself is unchanged.")


# Slack users must not name files on the bot's host: reading or writing there is for a terminal.
_HOST_PATHS = (
    "From Slack, give an s3:// URI and no --out/--from: paths on the bot's machine can only be "
    "used from a terminal there (`gtbot <command> ...`)."
)


def _frames_check(inv: Invocation) -> ProjectConfig:
    project = _project_check(inv)
    if _opt_str(inv, "from") and inv.interface != "console":
        raise UsageError(_HOST_PATHS)
    return project


def _consolidate_check(inv: Invocation) -> ProjectConfig:
    name = _opt_str(inv, "project")
    if not name:
        raise UsageError("consolidate needs --project <name> (for its keypoints and pairs).")
    project = inv.ctx.project(name)
    if inv.interface != "console" and (_opt_str(inv, "out") or not inv.args[0].startswith("s3://")):
        raise UsageError(_HOST_PATHS)
    return project


@command(
    "frames",
    positional=(PROJECT,),
    options=(
        Param("count", "frames wanted in all, those already sampled included (default 200)", "N"),
        Param("from", "folder of videos (default annotation-data/videos)", "DIR", complete="dir"),
        Param("seed", "seed of the sampling, for a repeatable set (default 0)", "S"),
        Param("quality", "JPEG quality of the frames written (default 90)", "Q"),
    ),
    spends=True,
    long=True,
    check=_frames_check,
)
def cmd_frames(inv: Invocation) -> Reply:
    """Sample frames worth labeling from the project's videos into raw-images.

    Frames are spread over the videos in proportion to their length and evenly within each;
    near-duplicates (a still arena, a sleeping animal) are skipped; annotation-data/frames.csv
    traces each frame to its video. Running it again tops raw-images up to --count."""
    from pathlib import Path

    from bot.frames import extract_frames, format_frames_result

    project = _frames_check(inv)
    source = _opt_str(inv, "from")
    task = inv.ctx.progress.task("Extracting frames", None, "frames")
    seen = counted(task)

    def progress(p: Any) -> None:
        task.set_total(p.total)
        seen(p.done)

    try:
        result = extract_frames(
            project.path,
            count=inv.opt_int("count", 200),
            source_dir=Path(source).expanduser() if source else None,
            seed=inv.opt_int("seed", 0),
            quality=inv.opt_int("quality", 90),
            progress=progress,
        )
    finally:
        task.close()
    return Reply(format_frames_result(result), data=result)


@command(
    "results",
    positional=(JOB,),
    flags=(Param("rebuild", "consolidate again instead of reusing earlier results"),),
    spending_flags=("rebuild",),
    long=True,
)
def cmd_results(inv: Invocation) -> Reply:
    """Consensus keypoints, exports, agreement figures and preview pictures of a finished job.

    Written to annotation-data/results/<job>/ (COCO, CSV, MARS training format, agreement,
    pictures), copied next to the job's output in S3, with presigned links."""
    from bot.job_results import job_results

    results = job_results(inv.ctx, inv.args[0], rebuild=bool(inv.options.get("rebuild")))
    return Reply(
        results.text(),
        files=tuple(str(p) for p in results.pictures),
        data=results,
        links=results.link_list(),
    )


@command(
    "consolidate",
    positional=(
        Param("manifest", "an output.manifest: a local path or s3:// URI", complete="file"),
    ),
    options=(
        Param("project", "the project whose keypoints and pairs apply", "P", True, "project"),
        Param(
            "out", "output folder (default annotation-data/results/<job>)", "DIR", complete="dir"
        ),
    ),
    spends=True,
    long=True,
    check=_consolidate_check,
)
def cmd_consolidate(inv: Invocation) -> Reply:
    """Consolidate an output.manifest you already have (local path or s3:// URI) offline.

    The same consensus, exports and pictures as `results`, for a job gtbot did not launch or
    a manifest copied from elsewhere."""
    from pathlib import Path

    from bot.results.runner import format_summary, run_consolidate

    project = _consolidate_check(inv)
    out = _opt_str(inv, "out")
    source = inv.args[0]
    task = inv.ctx.progress.task("Consolidating", _line_count(source), "frames")
    try:
        summary = run_consolidate(
            source,
            project.path,
            Path(out).expanduser() if out else None,
            s3_client_factory=lambda: inv.ctx.clients.s3(project.region),
            progress=counted(task),
        )
    finally:
        task.close()
    return Reply(format_summary(summary), data=summary)


def _line_count(source: str) -> int | None:
    """Lines of a local manifest, for the progress bar's total (a streamed s3:// has none)."""
    if source.startswith("s3://"):
        return None
    try:
        with open(source, "rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except OSError:
        return None  # run_consolidate says what is wrong with the path


@command("doctor", optional_positional=(PROJECT,))
def cmd_doctor(inv: Invocation) -> Reply:
    """Check credentials, the role's permissions, workteam and buckets before spending anything.

    Checks on the exact objects and Lambdas the project's next job will use, by IAM policy
    simulation: that the execution role may read the interface, the manifest and the frames
    and write the output, that gtbot may pass it to SageMaker, the workteam and the buckets.
    Fails (exit 1 in a terminal) when a check fails."""
    from bot.doctor import doctor_text, run_doctor

    checks = run_doctor(inv.ctx, inv.args[0] if inv.args else None)
    failed = any(not check.ok for check in checks)
    return Reply(doctor_text(checks), data=checks, exit_status=1 if failed else 0)


# An IAM user's or role's ARN (IAM user guide, "IAM identifiers": paths and names of
# letters, digits and +=,.@_- ; at most 64 characters a name).
_PRINCIPAL_ARN = re.compile(
    r"arn:aws[a-z-]*:iam::\d{12}:(user|role)/([\w+=,.@-]+/)*[\w+=,.@-]{1,64}"
)


@command(
    "iam-policy",
    positional=(PROJECT,),
    options=(
        Param(
            "principal",
            "gtbot's own IAM user or role ARN: lets `doctor` check that it may pass the role",
            "ARN",
        ),
        Param("only", "print one policy alone, as bare JSON: `bot` or `role`", "WHICH"),
    ),
)
def cmd_iam_policy(inv: Invocation) -> Reply:
    """Print the IAM policies gtbot's identity and the project's execution role need.

    The first is for the IAM user or role gtbot runs as: only the actions gtbot calls, on this
    project's buckets and jobs, and iam:PassRole on the execution role only, to SageMaker only.
    The second is for the execution role (job.role_arn): read the frames, manifests and
    interface, write the output, log to CloudWatch, invoke the configured Lambdas. Attach them
    as inline policies (e.g. `aws iam put-role-policy ... --policy-document file://role.json`)."""
    import json

    from bot.doctor import iam_policies

    only = _opt_str(inv, "only")
    if only not in (None, "bot", "role"):
        raise UsageError(f"--only takes `bot` or `role`, not {only!r}.")
    principal = _opt_str(inv, "principal")
    if principal and not _PRINCIPAL_ARN.fullmatch(principal):
        raise UsageError(
            f"--principal {principal!r} is not the ARN of an IAM user or role, like "
            "arn:aws:iam::123456789012:user/gtbot (`aws sts get-caller-identity` shows it)."
        )
    project = inv.ctx.project(inv.args[0])
    policies = iam_policies(project, principal)
    if only:
        document = policies.bot if only == "bot" else policies.execution_role
        return Reply(json.dumps(document, indent=2), data=policies)
    role_name = policies.role_arn.rsplit("/", 1)[-1]
    name = project.name
    if inv.interface != "console":
        # A chat message is cut at a few thousand characters: the policies go as files.
        folder = project.path / "annotation-data" / "iam-policy"
        folder.mkdir(parents=True, exist_ok=True)
        files = (folder / f"gtbot-{name}.json", folder / f"{role_name}-{name}.json")
        for path, document in zip(files, (policies.bot, policies.execution_role), strict=True):
            path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        return Reply(
            f"IAM policies for {name}, attached: {files[0].name} for gtbot's own IAM user or "
            f"role, {files[1].name} for the execution role {policies.role_arn}. In a terminal, "
            f"`gtbot iam-policy {name}` prints them with the commands that attach them.",
            files=tuple(str(f) for f in files),
            data=policies,
        )
    text = "\n".join(
        [
            f"# 1. For gtbot's own IAM user or role (project {name}). To attach it:",
            f"#   gtbot iam-policy {name} --only bot > gtbot-{name}.json",
            f"#   aws iam put-user-policy --user-name <gtbot's user> --policy-name gtbot-{name} "
            f"--policy-document file://gtbot-{name}.json   (put-role-policy for a role)",
            json.dumps(policies.bot, indent=2),
            "",
            f"# 2. For the execution role {policies.role_arn}. To attach it:",
            f"#   gtbot iam-policy {name} --only role > {role_name}-{name}.json",
            f"#   aws iam put-role-policy --role-name {role_name} --policy-name gtbot-{name} "
            f"--policy-document file://{role_name}-{name}.json",
            json.dumps(policies.execution_role, indent=2),
        ]
    )
    return Reply(text, data=policies)
