"""Results of a finished job, for `/gt results`, the watcher's completion post and the console.

Consolidation itself lives in bot/results; this module finds the job's output manifest, runs it
once into the project (reusing earlier results), puts the exports next to the job's output in S3,
and signs links to them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from aws import groundtruth as gt
from aws import s3
from bot import recipe
from bot.context import Context
from bot.errors import GtBotError, NotFoundError
from bot.jobs.watcher import Completion
from bot.links import Links, signing_lifetime
from bot.progress import counted
from bot.project import ProjectConfig
from bot.results.consolidation import FILE_NAMES, PROBLEMS_FILE, ConsolidationSummary
from bot.results.runner import format_summary, run_consolidate

EXPORTS = (*FILE_NAMES.values(), PROBLEMS_FILE)
PICTURES = (FILE_NAMES["preview"], FILE_NAMES["agreement_chart"], FILE_NAMES["workers_chart"])


class ResultsUnavailableError(GtBotError):
    """A job's results could not be built; `reason` says why, to follow "because"."""

    def __init__(self, job_name: str, reason: str) -> None:
        super().__init__(f"Results of {job_name} are unavailable because {reason}")
        self.reason = reason


@dataclass(frozen=True)
class JobResults:
    job_name: str
    out_dir: Path
    summary_text: str
    links: tuple[tuple[str, str], ...]
    link_lifetime: s3.LinkLifetime
    pictures: tuple[Path, ...]
    reused: bool

    def link_list(self) -> Links:
        return Links(f"Links ({self.link_lifetime.text()})", self.links)

    def text(self, with_links: bool = True) -> str:
        """The summary, the links (as `name: url` lines, for a terminal) and the local copy."""
        links = self.link_list().lines() if with_links else []
        return "\n".join([self.summary_text, *links, f"Local copy: {self.out_dir}"])


def _sentence(message: str) -> str:
    """A message that starts a sentence, to follow "because"."""
    if message[:1].isupper() and not message[1:2].isupper():
        return message[0].lower() + message[1:]
    return message


def project_of_job(ctx: Context, job_name: str) -> ProjectConfig:
    names = recipe.projects_named_in(ctx, job_name)
    if names:
        return ctx.project(names[0])
    raise NotFoundError(
        f"No project in {ctx.settings.projects_dir} matches job {job_name} (jobs are named "
        "<project>-<time>). "
        "For a job launched elsewhere, use `gtbot consolidate <output.manifest> --project <name>`."
    )


def _saved_summary(out_dir: Path, marker: dict[str, object]) -> str | None:
    """The summary of results already built from the same rounds with the same consensus."""
    summary, rounds = out_dir / "summary.txt", out_dir / "rounds.json"
    if not (all((out_dir / name).is_file() for name in EXPORTS) and summary.is_file()):
        return None
    try:
        saved = json.loads(rounds.read_text(encoding="utf-8")) if rounds.is_file() else None
    except ValueError:
        return None
    # Results from before rounds existed were a single round with MARS's median.
    if (saved or {"rounds": [], "consensus": "median"}) != marker:
        return None
    return summary.read_text(encoding="utf-8")


def consolidate_job(
    ctx: Context,
    job: gt.JobInfo,
    project: ProjectConfig,
    follow_ups: tuple[gt.JobInfo, ...] = (),
    consensus: str | None = None,
) -> ConsolidationSummary:
    uri = job.output_manifest_uri
    if uri is None:
        raise NotFoundError(f"AWS does not say where {job.name} writes its output manifest.")
    out_dir = project.results_dir / job.name
    what = f"Consolidating {job.name}" + (" and its follow-up rounds" if follow_ups else "")
    task = ctx.progress.task(what, job.counters.total or None, "frames")
    try:
        return run_consolidate(
            uri,
            project.path,
            out_dir,
            s3_client_factory=lambda: ctx.clients.s3(project.region),
            progress=counted(task),
            follow_ups=[(f.name, f.output_manifest_uri or "") for f in follow_ups],
            consensus=consensus,
        )
    finally:
        task.close()


def job_results(ctx: Context, job_name: str, *, rebuild: bool = False) -> JobResults:
    """Build (or reuse) a job's results and sign links to the copies in S3. A job with
    follow-up rounds (bot/jobs/relabel.py), named by any of its rounds, gets the results of every
    round that has ended, merged. Every expected failure (no project, AWS refusing, nothing
    usable in the output) is a `ResultsUnavailableError` that says why."""
    from bot.jobs.relabel import follow_up_jobs, root_of

    try:
        project = project_of_job(ctx, job_name)
        root = root_of(ctx, job_name)
        client = ctx.sagemaker(project.region)
        job = gt.describe_labeling_job(client, root)
        rounds = [j for _, j in follow_up_jobs(client, root)]
    except GtBotError as exc:
        raise ResultsUnavailableError(job_name, _sentence(exc.user_message)) from exc
    if job.status not in ("Completed", "Stopped"):
        which = "it is" if root == job_name else f"its first round, {root}, is"
        raise ResultsUnavailableError(
            job_name,
            f"{which} {job.status}; results come when it has Completed or been Stopped. "
            f"`status {root}` shows its progress.",
        )
    merged = tuple(
        j for j in rounds if j.status in ("Completed", "Stopped") and j.output_manifest_uri
    )
    waiting = [j for j in rounds if not j.terminal]
    consensus = project.job.consensus_for(bool(merged))
    out_dir = project.results_dir / root
    marker: dict[str, object] = {"rounds": [j.name for j in merged], "consensus": consensus}
    saved = None if rebuild else _saved_summary(out_dir, marker)
    reused = saved is not None
    if saved is None:
        try:
            summary = consolidate_job(ctx, job, project, merged, consensus)
        except GtBotError as exc:
            raise ResultsUnavailableError(
                job_name, f"consolidating its output failed:\n{exc.user_message}"
            ) from exc
        except OSError as exc:  # the results folder: disk full, permissions
            raise ResultsUnavailableError(
                job_name, f"they could not be written in {out_dir}: {exc.strerror or exc}."
            ) from exc
        saved = format_summary(summary)
        (out_dir / "summary.txt").write_text(saved, encoding="utf-8")
        (out_dir / "rounds.json").write_text(json.dumps(marker), encoding="utf-8")
    if waiting:
        saved += "\nNot merged yet (still running): " + ", ".join(
            f"{j.name} ({j.status})" for j in waiting
        )
    client = ctx.s3(project)
    prefix = f"{project.output_prefix}{root}/gtbot-results/"
    links = []
    lifetime = signing_lifetime(ctx)  # fresh on every call: a new signature, a true expiry
    for name in EXPORTS:
        ctype = {"png": "image/png", "csv": "text/csv"}.get(
            name.rsplit(".", 1)[-1], "application/json"
        )
        s3.put_bytes(
            client, project.output_bucket, prefix + name, (out_dir / name).read_bytes(), ctype
        )
        links.append(
            (name, s3.presign_get(client, project.output_bucket, prefix + name, lifetime.seconds))
        )
    return JobResults(
        job_name=root,
        out_dir=out_dir,
        summary_text=saved,
        links=tuple(links),
        link_lifetime=lifetime,
        pictures=tuple(out_dir / p for p in PICTURES),
        reused=reused,
    )


def completion_results(ctx: Context, watch: object, job: gt.JobInfo) -> Completion:
    """The watcher's completion post carries the results when the job's project is known here."""
    try:
        results = job_results(ctx, job.name)
    except ResultsUnavailableError as exc:
        # The completion post says "Results unavailable because <reason>" itself.
        raise GtBotError(exc.reason) from exc
    return Completion(
        text=results.text(with_links=False), files=results.pictures, links=results.link_list()
    )
