"""The job watcher: keeps each job card current and announces the end exactly once.

One paginated list_labeling_jobs call per region serves every watched job's status and counters.
The database holds what was last posted, so a restart (or a second replica) posts nothing twice;
a lease row makes one replica at a time do the polling. Every replica ticks; a tick that cannot
take or renew the lease does nothing, so when the holder dies the lease lapses (it last renewed
it at most `lease` seconds before) and the next tick of another replica takes it: a takeover
within lease + poll seconds (`bot.settings.takeover_bound`).

The end of a job is told to the people it concerns: whoever launched it from Slack and whoever
asked `watch <job> --notify` are mentioned in the post (and when a running job has made no
progress for GTBOT_STALL_HOURS); when the channel is gone they are told in direct messages.
Building a finished job's results can take minutes, so with a `background` runner (the long
lane in `gtbot serve`) it runs outside the tick: the other cards keep moving, and the claim on
the announcement (and the lease) are renewed while it runs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from aws import groundtruth as gt
from aws import s3
from bot import logs
from bot.cards import JobCard
from bot.context import Context
from bot.errors import GtBotError, NotFoundError
from bot.links import Links
from bot.settings import takeover_bound
from bot.state import AnnouncementRow, ClaimLost, Store, WatchRow, utcnow

log = logging.getLogger("gtbot.watcher")
LEASE_NAME = "watcher"
# A step that keeps failing for passing reasons (Slack down for a while) is given up after this
# many ticks and reported, rather than retried forever.
MAX_STEP_ATTEMPTS = 5


@dataclass(frozen=True)
class Posted:
    """What a thread already holds: the step keys of gtbot's posts and the titles of files."""

    keys: frozenset[str] = frozenset()
    file_titles: frozenset[str] = frozenset()


class Notifier(Protocol):
    """Where cards and posts go: Slack in production, the terminal in the sandbox."""

    def post_card(self, channel: str, card: JobCard, thread_ts: str | None = None) -> str: ...

    def update_card(self, channel: str, ts: str, card: JobCard) -> None: ...

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
        """Post `text` mentioning `mention` (user ids), with `links`; a `key` is stored with the
        message so `posted` can find it later. A post that needs several messages stores
        `key#1`, `key#2`... on all but its last and leaves out the parts whose keys are in
        `skip` (found in the thread after a crash)."""
        ...

    def open_dm(self, user: str) -> str:
        """The direct-message channel with `user`, for posts when a job's channel is gone."""
        ...

    def upload_file(self, channel: str, thread_ts: str | None, path: Path, title: str) -> None: ...

    def posted(self, channel: str, thread_ts: str | None) -> Posted:
        """Read back what gtbot already posted there (after a crash, before posting again)."""
        ...


class PostFailed(Exception):
    """The notifier could not post. `permanent`: trying again cannot help (a missing scope,
    the bot not in the channel, a message Slack refuses); otherwise it may work next time."""

    def __init__(self, error: str, permanent: bool) -> None:
        super().__init__(error)
        self.error = error
        self.permanent = permanent


class DestinationGone(PostFailed):
    """The notifier can no longer post where the watch points (channel deleted, bot removed)."""

    def __init__(self, error: str) -> None:
        super().__init__(error, permanent=True)


class MessageGone(PostFailed):
    """The message a watch points at was deleted (its card, or the card its thread hangs on):
    a new card is posted, or the news goes to the channel; the old one is never retried."""

    def __init__(self, error: str) -> None:
        super().__init__(error, permanent=True)


class NotifierUnauthorized(PostFailed):
    """The notifier's credentials are refused (a revoked or wrong token): nothing can be
    posted anywhere until an admin fixes them, so a tick stops at the first refusal and no
    step counts it as an attempt."""

    def __init__(self, error: str) -> None:
        super().__init__(error, permanent=False)


@dataclass(frozen=True)
class Completion:
    """What the completion post says; built from the job and, when possible, its results."""

    text: str
    files: tuple[Path, ...] = ()
    links: Links | None = None


ResultsHook = Callable[[Context, WatchRow, gt.JobInfo], Completion | None]
# Runs an announcement outside the tick: (name, run, abandon(reason)), e.g. the long lane.
Background = Callable[[str, Callable[[], None], Callable[[str], None]], object]


@dataclass
class TickReport:
    held_lease: bool = False
    aws_calls: int = 0
    updated: list[str] = field(default_factory=list)
    announced: list[str] = field(default_factory=list)
    parked: list[str] = field(default_factory=list)


def card_counters(job: gt.JobInfo) -> dict[str, int]:
    """What a card shows of the counters, stored so that a tick can tell whether it changed."""
    c = job.counters
    return {"labeled": c.total_labeled, "failed": c.failed, "unlabeled": c.unlabeled}


def completion_text(job: gt.JobInfo) -> str:
    c = job.counters
    counts = f"{c.total_labeled} labeled, {c.failed} failed, {c.unlabeled} not labeled"
    if job.status == "Failed":
        return (
            f"{job.name} failed: {job.failure_reason or 'no reason given'}.\n"
            f"Counts: {counts}.\nWhat to check: the role's access to the buckets, the input "
            "manifest, the template, and the workteam (`doctor` checks them)."
        )
    lines = [f"{job.name} {job.status.lower()}. Counts: {counts}."]
    if job.output_manifest_uri:
        lines.append(f"Output manifest: {job.output_manifest_uri}")
    return "\n".join(lines)


def completion_links(ctx: Context, job: gt.JobInfo, region: str) -> Links | None:
    """A fresh link to the output manifest, under the title that says how long it lives."""
    uri = job.output_manifest_uri
    if not uri or job.status == "Failed":
        return None
    from bot.links import signing_lifetime

    bucket, key = s3.split_s3_uri(uri)
    lifetime = signing_lifetime(ctx)
    link = s3.presign_get(ctx.clients.s3(region), bucket, key, lifetime.seconds)
    return Links(f"Links ({lifetime.text()})", (("output.manifest", link),))


def stall_text(job: gt.JobInfo, hours: float) -> str:
    c = job.counters
    return (
        f"{job.name} has made no progress for {hours:g} h ({job.status}): {c.total_labeled} "
        f"labeled, {c.failed} failed, {c.unlabeled} not labeled. Workers may be passing its "
        "tasks by (price, instructions, task time) or the workteam may have nobody free. "
        f"`status {job.name}` shows it; `stop {job.name}` stops it and keeps the labels made."
    )


class Watcher:
    def __init__(
        self,
        ctx: Context,
        store: Store,
        notifier: Notifier,
        *,
        holder: str | None = None,
        lease_seconds: float | None = None,
        results: ResultsHook | None = None,
        after_tick: Callable[[Watcher], None] | None = None,
        background: Background | None = None,
    ) -> None:
        self.ctx = ctx
        self.store = store
        self.notifier = notifier
        self.holder = holder or default_holder()
        self.lease_seconds = lease_seconds or takeover_bound(ctx.settings)[0]
        self.results = results
        # Work that only the lease holder does, after the watches (bot/jobs/relabel.advance_chains).
        self.after_tick = after_tick
        self.background = background
        self._renewed = 0.0
        # None until the first tick, so that a replica starting as a standby says so too.
        self._held: bool | None = None
        self._inflight: set[str] = set()
        self._inflight_lock = threading.Lock()
        self._stopping = threading.Event()

    def stop(self) -> None:
        """No more ticks or lease renewals (a tick still running stops at its next watch), so
        the lease, once released, stays free for another replica."""
        self._stopping.set()

    def tick(self) -> TickReport:
        with logs.traced():
            return self._tick()

    def _tick(self) -> TickReport:
        report = TickReport()
        if self._stopping.is_set():
            return report
        held = self.store.acquire_lease(LEASE_NAME, self.holder, self.lease_seconds)
        if held != self._held:
            self._held = held
            if held:
                log.info("this replica (%s) is now the job watcher", self.holder)
            else:
                log.info("another replica holds the watcher lease; this one stands by")
        if not held:
            return report
        report.held_lease = True
        self._renewed = time.monotonic()
        by_region: dict[str, list[WatchRow]] = defaultdict(list)
        for watch in self.store.active_watches():
            by_region[watch.region].append(watch)
        for region, watches in by_region.items():
            try:
                jobs = self._list(region, watches, report)
            except GtBotError as exc:
                log.warning(
                    "listing jobs in %s failed, will retry next tick: %s", region, exc.user_message
                )
                continue
            for watch in watches:
                # A long tick (Slack retries, consolidation) renews the lease as it goes, so no
                # other replica starts polling while this one is still posting.
                if not self._renew():
                    log.warning("lost the watcher lease mid-tick; leaving the rest to its holder")
                    return report
                job = jobs.get(watch.job_name)
                if not self._guarded(watch, report, self._one, watch, job, region):
                    return report
        if self.after_tick is not None and self._renew():
            self._after_tick()
        return report

    def _after_tick(self) -> None:
        """The lease holder's work after the watches (automatic rounds consolidate results and
        plan jobs): in the background runner when there is one, so that it never holds up the
        cards, and never two at once."""
        after = self.after_tick
        assert after is not None

        def run() -> None:
            try:
                with logs.traced():
                    after(self)
            except Exception:
                log.exception("the watcher's after-tick work failed (will retry)")

        if self.background is None:
            run()
            return
        # No job name has a colon, so this key never stands for an announcement.
        self._hand_over(":after-tick", "automatic rounds", run, lambda reason: None)

    def _hand_over(
        self, key: str, name: str, run: Callable[[], None], abandon: Callable[[str], None]
    ) -> None:
        """Give `run` to the background runner unless work under `key` is already there; the
        key is free again once it ran, was abandoned by a stop, or could not be handed over."""
        with self._inflight_lock:
            if key in self._inflight:
                return
            self._inflight.add(key)

        def done() -> None:
            with self._inflight_lock:
                self._inflight.discard(key)

        def in_background() -> None:
            try:
                run()
            finally:
                done()

        def abandoned(reason: str) -> None:
            try:
                abandon(reason)
            finally:
                done()

        assert self.background is not None
        try:
            self.background(name, in_background, abandoned)
        except Exception:
            done()
            log.exception("could not hand %s to the background", name)

    def _guarded(
        self, watch: WatchRow, report: TickReport, func: Callable[..., None], *args: Any
    ) -> bool:
        """One watch's work: what fails is logged (and retried next tick), never raised. False
        when Slack refuses gtbot's token: then no other watch can be told either."""
        try:
            func(*args, report)
        except NotifierUnauthorized as exc:
            log.error(
                "Slack refuses gtbot's token (%s): nothing is posted until an admin fixes "
                "SLACK_BOT_TOKEN; the watches wait",
                exc.error,
            )
            return False
        except DestinationGone as exc:
            if not self._move_to_dm(watch, exc.error):
                self._park(watch, f"cannot post to channel {watch.channel}: {exc}", report)
        except PostFailed as exc:
            log.warning("watch %s: Slack said %s (will retry)", watch.job_name, exc.error)
        except GtBotError as exc:
            log.warning("watch %s: %s (will retry)", watch.job_name, exc.user_message)
        except Exception:
            log.exception("watch %s failed this tick (will retry)", watch.job_name)
        return True

    def holds_lease(self) -> bool:
        """Whether this replica is the watcher now, as the database says."""
        return self.store.lease_holder(LEASE_NAME) == self.holder

    def _renew(self) -> bool:
        if self._stopping.is_set():
            return False
        now = time.monotonic()
        if now - self._renewed < self.lease_seconds / 3:
            return True
        self._renewed = now
        return self.store.acquire_lease(LEASE_NAME, self.holder, self.lease_seconds)

    def _list(
        self, region: str, watches: list[WatchRow], report: TickReport
    ) -> dict[str, gt.JobInfo]:
        """Every watched job's summary from one paginated listing, bounded by the oldest."""
        oldest = min((w.job_created or w.created_at) for w in watches) - timedelta(minutes=10)
        client = self.ctx.sagemaker(region)
        jobs: dict[str, gt.JobInfo] = {}
        pages = gt.iter_labeling_job_pages(client, created_after=oldest)
        for page in pages:
            report.aws_calls += 1
            for job in page:
                jobs[job.name] = job
        return jobs

    def _park(self, watch: WatchRow, reason: str, report: TickReport) -> None:
        log.warning("parking the watch of %s: %s", watch.job_name, reason)
        self.store.update_watch(watch.job_name, parked=True, park_reason=reason)
        report.parked.append(watch.job_name)

    def _one(
        self, watch: WatchRow, job: gt.JobInfo | None, region: str, report: TickReport
    ) -> None:
        if job is None:
            try:
                report.aws_calls += 1
                job = gt.describe_labeling_job(self.ctx.sagemaker(region), watch.job_name)
            except NotFoundError:
                self._park(
                    watch, "the labeling job no longer exists in this account/region", report
                )
                return
        if watch.dm_only:
            self._without_card(watch, job, region, report)
            return
        before = watch
        counters = card_counters(job)
        if job.status != watch.last_status or counters != watch.last_counters:
            card = JobCard.from_job(job, project=watch.project, owner=watch.owner)
            message_ts, thread_ts = watch.message_ts, watch.thread_ts
            if message_ts:
                message_ts = self._update_card(watch, message_ts, card)
                if message_ts is None:  # deleted: the new card carries the job's news
                    thread_ts = None
            if not message_ts:
                message_ts = self._post_card(watch, card)
                thread_ts = thread_ts or message_ts
                # Remembered before anything else can fail (the status reply, a crash): a card
                # the database does not know about would make the next tick post a second one.
                self.store.update_watch(watch.job_name, message_ts=message_ts, thread_ts=thread_ts)
            if watch.last_status is not None and job.status != watch.last_status:
                self._refused_is_logged(
                    watch,
                    lambda: self.notifier.post_thread(
                        watch.channel, thread_ts, f"{job.name}: {watch.last_status} → {job.status}"
                    ),
                )
            self.store.update_watch(
                watch.job_name,
                last_status=job.status,
                last_counters=counters,
                job_created=job.created or watch.job_created,
            )
            report.updated.append(job.name)
            watch = self.store.get_watch(watch.job_name) or watch
        self._check_stall(before, job)
        if job.terminal:
            self._announce(watch, job, region, report)

    # ------------------------------------------------------------------ people

    def _people(self, job_name: str) -> list[str]:
        """Who is mentioned about a job: whoever launched it from Slack, then whoever asked
        `watch <job> --notify`."""
        plan = self.store.plan_for_job(job_name)
        launcher = [plan.requested_by] if plan and plan.state in ("launching", "launched") else []
        return list(dict.fromkeys(launcher + self.store.subscribers(job_name)))

    def _dm_people(self, watch: WatchRow) -> list[str]:
        """Who is told in a direct message when the channel is gone: the people above, and the
        person who asked for the watch (nobody else would learn where the card went)."""
        everyone = self._people(watch.job_name) + ([watch.owner] if watch.owner else [])
        return list(dict.fromkeys(everyone))

    def _move_to_dm(self, watch: WatchRow, error: str) -> bool:
        """The watch's channel is gone: its people are told so in direct messages, and about
        the job's end there later. False when there is nobody to tell (the watch is parked)."""
        people = self._dm_people(watch)
        if not people or watch.dm_only:
            return False
        log.warning(
            "the channel of %s is gone (%s): telling its people in DMs", watch.job_name, error
        )
        self.store.update_watch(watch.job_name, dm_only=True)
        for user in people:
            try:
                self.notifier.post_thread(
                    self.notifier.open_dm(user),
                    None,
                    f"gtbot can no longer post in the channel where the card of {watch.job_name} "
                    f"was (Slack said {error}). It will tell you here when the job ends; "
                    f"`/gt watch {watch.job_name}` in another channel shows its card there.",
                )
            except PostFailed as exc:
                log.warning("could not tell %s about %s: %s", user, watch.job_name, exc.error)
        return True

    def _without_card(
        self, watch: WatchRow, job: gt.JobInfo, region: str, report: TickReport
    ) -> None:
        """A watch whose channel is gone: no card to update; stalls and the end go to DMs."""
        counters = card_counters(job)
        if job.status != watch.last_status or counters != watch.last_counters:
            self.store.update_watch(watch.job_name, last_status=job.status, last_counters=counters)
        self._check_stall(watch, job)
        if job.terminal:
            self._announce(watch, job, region, report)

    def _check_stall(self, watch: WatchRow, job: gt.JobInfo) -> None:
        """A running job whose counts have not moved for GTBOT_STALL_HOURS is told once (in the
        card's thread, mentioning its people), and again only after it moves and stalls anew.
        Told at most once: the claim is taken before the post and given back only when Slack
        answers with an error worth retrying."""
        if job.terminal or job.status == "Stopping":
            return
        now = utcnow()
        if card_counters(job) != watch.last_counters or watch.progress_at is None:
            self.store.update_watch(watch.job_name, progress_at=now, stall_told_at=None)
            return
        hours = self.ctx.settings.stall_hours
        if watch.stall_told_at is not None or now - watch.progress_at < timedelta(hours=hours):
            return
        if not self.store.claim_stall(watch.job_name):
            return
        text = stall_text(job, hours)
        people = tuple(self._people(watch.job_name))
        try:
            if watch.dm_only:
                for user in self._dm_people(watch):
                    self.notifier.post_thread(self.notifier.open_dm(user), None, text)
            else:
                self.notifier.post_thread(watch.channel, watch.thread_ts, text, mention=people)
        except PostFailed as exc:
            if not exc.permanent:
                self.store.update_watch(watch.job_name, stall_told_at=None)
            raise
        log.info("told that %s has stalled for %g h", job.name, hours)

    def _update_card(self, watch: WatchRow, ts: str, card: JobCard) -> str | None:
        """The card's ts, or None when it was deleted (a new one is posted)."""
        try:
            self.notifier.update_card(watch.channel, ts, card)
        except MessageGone as exc:
            log.warning("the card of %s was deleted (%s); posting a new one", watch.job_name, exc)
            return None
        except PostFailed as exc:
            if isinstance(exc, DestinationGone) or not exc.permanent:
                raise
            # Slack refuses this card for good: said once per change, and the job goes on.
            log.warning("the card of %s was not updated: Slack said %s", watch.job_name, exc)
        return ts

    def _post_card(self, watch: WatchRow, card: JobCard) -> str | None:
        """A new card's ts; None when Slack refuses it for good (the news then goes to the
        channel without a thread, and the end is still announced)."""
        # A follow-up round's card goes in its parent's thread (a job's own card has no thread).
        thread = watch.thread_ts if watch.thread_ts != watch.message_ts else None
        return self._refused_is_logged(
            watch, lambda: self.notifier.post_card(watch.channel, card, thread)
        )

    def _refused_is_logged(self, watch: WatchRow, post: Callable[[], str]) -> str | None:
        """Run a post; a message Slack refuses for good is logged instead of retried every tick.
        A gone channel, a refused token and passing failures still raise."""
        try:
            return post()
        except PostFailed as exc:
            if isinstance(exc, DestinationGone) or not exc.permanent:
                raise
            log.warning("%s: Slack refused a post for good: %s", watch.job_name, exc)
            return None

    # ------------------------------------------------------------------ the announcement

    def _announce(self, watch: WatchRow, job: gt.JobInfo, region: str, report: TickReport) -> None:
        """The end of a job: in this tick, or handed to the background runner so that building
        the results never holds up the other cards. One announcement per job at a time."""
        if self.background is None:
            self._complete(watch, job, region, report)
            return

        def run() -> None:
            with logs.traced():
                self._guarded(watch, TickReport(), self._complete, watch, job, region)

        def abandon(reason: str) -> None:
            """gtbot is stopping: give the claim back, so the next watcher takes it at once."""
            log.warning("announcement of %s %s by a stop; handed back", job.name, reason)
            self.store.release_announcement(job.name, self.holder)

        self._hand_over(job.name, f"announce {job.name}", run, abandon)

    def _complete(self, watch: WatchRow, job: gt.JobInfo, region: str, report: TickReport) -> None:
        """The end of a job, told once: a record of steps in the database, each done once.

        A step is marked `attempted` before it is posted and `done` after; a step found
        `attempted` (a crash or an unknown answer in between) is looked for in the thread
        before it is posted again. The record outlives the watch, so watching a finished job
        again does not repeat it.
        """
        existing = self.store.get_announcement(job.name)
        if existing is not None and existing.state == "done":
            self.store.update_watch(job.name, completion_announced=True)
            return
        if self._run_announcement(
            job.name, watch.channel, watch.thread_ts, lambda: self._compose(watch, job, region)
        ):
            report.announced.append(job.name)

    def tell(self, key: str, channel: str, thread_ts: str | None, text: str) -> None:
        """Post `text` once under `key`, whatever retries, crashes or replicas: an announcement
        of one step. `key` must not be a job name (those announce the job's end)."""
        existing = self.store.get_announcement(key)
        if existing is None or existing.state != "done":
            self._run_announcement(key, channel, thread_ts, lambda: [_step("text", key, text=text)])

    def _run_announcement(
        self,
        key: str,
        channel: str,
        thread_ts: str | None,
        compose: Callable[[], list[dict[str, Any]]],
    ) -> bool:
        """Claim the announcement `key`, compose its steps once, run them; True when done."""
        ann = self.store.claim_announcement(
            key, self.holder, self.lease_seconds, channel=channel, thread_ts=thread_ts
        )
        if ann is None:
            return False
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(key, stop), name="gtbot-claim", daemon=True
        )
        beat.start()
        try:
            steps = ann.steps
            if steps is None:
                steps = compose()
                self.store.save_steps(key, self.holder, steps)
            self._run_steps(ann, steps)
            self.store.finish_announcement(key, self.holder)
            return True
        except ClaimLost:
            log.warning("another watcher took over the announcement of %s", key)
            return False
        except BaseException:
            self.store.release_announcement(key, self.holder)
            raise
        finally:
            stop.set()

    def _heartbeat(self, job_name: str, stop: threading.Event) -> None:
        """While an announcement is worked on (its results can take minutes), its claim is
        renewed, so no other watcher takes it over, and so is the lease, which a tick blocked
        by this work could not renew."""
        while not stop.wait(self.lease_seconds / 3):
            try:
                self.store.renew_announcement(job_name, self.holder)
                if self._held and not self._stopping.is_set():
                    self._held = self.store.acquire_lease(
                        LEASE_NAME, self.holder, self.lease_seconds
                    )
            except ClaimLost:
                return
            except Exception:  # the database may be back at the next beat
                log.exception("could not renew the claim on the announcement of %s", job_name)

    def _compose(self, watch: WatchRow, job: gt.JobInfo, region: str) -> list[dict[str, Any]]:
        """The steps: the text (with the results, or why there are none), then each picture."""
        text = completion_text(job)
        links = completion_links(self.ctx, job, region)
        completion: Completion | None = None
        why_not = ""
        if self.results is not None and job.status in ("Completed", "Stopped"):
            try:
                completion = self.results(self.ctx, watch, job)
            except GtBotError as exc:
                why_not = exc.user_message
            except Exception:  # the post goes out anyway; the details are in the log
                trace = logs.trace_id()
                log.exception("results of %s failed, trace id %s", job.name, trace)
                why_not = (
                    f"of an unexpected error (trace id {trace}); an admin can find it in the log"
                )
        if completion is not None:
            text += "\n" + completion.text
            if completion.links is not None:
                links = completion.links if links is None else links + completion.links
        elif why_not:
            log.warning("results for %s unavailable: %s", job.name, why_not)
            text += (
                f"\nResults unavailable because {why_not.rstrip('.')}. "
                f"`/gt results {job.name}` tries again."
            )
        first = _step("text", f"{job.name}:completion", text=text)
        first["mention"] = self._people(job.name)
        first["links"] = links.to_json() if links is not None else None
        if watch.dm_only:
            dms = self._dm_steps(job.name, first, self._dm_people(watch))
            return dms or [dict(first, state="failed", error="channel gone, nobody to tell")]
        steps: list[dict[str, Any]] = [first]
        for path in completion.files if completion is not None else ():
            title = f"{job.name}: {path.name}"
            steps.append(_step("file", title, path=str(path), title=title))
        return steps

    def _dm_steps(
        self, job_name: str, text_step: dict[str, Any], people: list[str]
    ) -> list[dict[str, Any]]:
        """The completion text once more, as a direct message to each of `people`."""
        return [
            _step(
                "dm",
                f"{job_name}:dm:{user}",
                user=user,
                text=text_step["text"]
                + "\n(Told here because gtbot can no longer post in the job's channel.)",
                links=text_step.get("links"),
            )
            for user in people
        ]

    def _run_steps(self, ann: AnnouncementRow, steps: list[dict[str, Any]]) -> None:
        seen: dict[str | None, Posted | None] = {}
        for step in steps:  # a failed file may append a note, taken in this same loop
            if step["state"] in ("done", "failed"):
                continue
            if step["kind"] == "dm" and not step.get("channel"):
                try:
                    step["channel"] = self.notifier.open_dm(step["user"])
                except PostFailed as exc:
                    if not exc.permanent:
                        raise
                    self._give_up(ann, steps, step, exc.error)
                    continue
                self.store.save_steps(ann.job_name, self.holder, steps)
            where = step.get("channel") if step["kind"] == "dm" else None
            if step["state"] == "attempted":
                if where not in seen:
                    seen[where] = self._read_back(ann, where)
                found = seen[where]
                if found is not None and (
                    step["key"] in found.keys or step["key"] in found.file_titles
                ):
                    step["state"] = "done"
                    self.store.save_steps(ann.job_name, self.holder, steps)
                    continue
            if step["attempts"] >= MAX_STEP_ATTEMPTS:
                self._give_up(
                    ann,
                    steps,
                    step,
                    f"gave up after {step['attempts']} attempts: {step.get('error')}",
                )
                continue
            step["state"] = "attempted"
            step["attempts"] += 1
            self.store.save_steps(ann.job_name, self.holder, steps)
            try:
                ann = self._post(ann, step, seen.get(where))
            except NotifierUnauthorized:
                step.update(state="pending", attempts=step["attempts"] - 1)
                self.store.save_steps(ann.job_name, self.holder, steps)
                raise
            except DestinationGone as exc:
                if step["kind"] == "dm":  # that person's DM: the others are still told
                    self._give_up(ann, steps, step, exc.error)
                    continue
                for rest in steps:
                    if rest["state"] != "done":
                        rest.update(state="failed", error=exc.error)
                watch = self.store.get_watch(ann.job_name)
                people = self._dm_people(watch) if watch is not None else []
                text = next((s for s in steps if s["kind"] == "text"), None)
                if people and text is not None:
                    log.warning(
                        "the channel of %s is gone (%s): its end goes to DMs", ann.job_name, exc
                    )
                    steps.extend(self._dm_steps(ann.job_name, text, people))
                    self.store.save_steps(ann.job_name, self.holder, steps)
                    continue
                self.store.save_steps(ann.job_name, self.holder, steps)
                self.store.finish_announcement(ann.job_name, self.holder)
                raise
            except PostFailed as exc:
                step["error"] = exc.error
                if exc.permanent:
                    self._give_up(ann, steps, step, exc.error)
                    continue
                self.store.save_steps(ann.job_name, self.holder, steps)
                raise
            step["state"] = "done"
            step["error"] = None
            self.store.save_steps(ann.job_name, self.holder, steps)

    def _post(
        self, ann: AnnouncementRow, step: dict[str, Any], seen: Posted | None
    ) -> AnnouncementRow:
        """Post a step in the job's thread; if that thread was deleted, in the channel (the
        rest of this run's steps follow it there)."""
        try:
            self._send(ann, step, seen)
        except MessageGone as exc:
            if ann.thread_ts is None:
                raise
            log.warning(
                "the thread of %s is gone (%s); announcing in the channel", ann.job_name, exc
            )
            ann = replace(ann, thread_ts=None)
            # What was read back is the deleted thread, gone with it: nothing to skip here.
            self._send(ann, step, None)
        return ann

    def _send(self, ann: AnnouncementRow, step: dict[str, Any], seen: Posted | None) -> None:
        if step["kind"] == "file":
            path = Path(step["path"])
            if not path.is_file():
                raise PostFailed(f"{path.name} is no longer on the bot's disk", permanent=True)
            self.notifier.upload_file(ann.channel, ann.thread_ts, path, step["title"])
            return
        channel, thread = ann.channel, ann.thread_ts
        if step["kind"] == "dm":
            channel, thread = step["channel"], None
        self.notifier.post_thread(
            channel,
            thread,
            step["text"],
            key=step["key"],
            mention=tuple(step.get("mention") or ()),
            links=Links.from_json(step.get("links")),
            skip=seen.keys if seen is not None else frozenset(),
        )

    def _read_back(self, ann: AnnouncementRow, channel: str | None = None) -> Posted | None:
        """What the thread (or a DM: `channel`) holds; None when it cannot be read (then
        posting may repeat)."""
        try:
            if channel is not None:
                return self.notifier.posted(channel, None)
            return self.notifier.posted(ann.channel, ann.thread_ts)
        except PostFailed as exc:
            if not exc.permanent:
                raise
            log.warning(
                "cannot read the thread of %s to check for an earlier post (%s); posting "
                "anyway, which may repeat it",
                ann.job_name,
                exc.error,
            )
            return None

    def _give_up(
        self, ann: AnnouncementRow, steps: list[dict[str, Any]], step: dict[str, Any], why: str
    ) -> None:
        """A step that cannot succeed is reported once (log, and a note in the thread for a
        file) and never tried again."""
        step.update(state="failed", error=why)
        log.warning(
            "announcement of %s: %s step failed for good: %s", ann.job_name, step["kind"], why
        )
        if step["kind"] == "file":
            name = Path(step["path"]).name
            steps.append(
                _step(
                    "note",
                    f"{ann.job_name}:note:{name}",
                    text=f"Could not attach {name} here: Slack said `{why}`. "
                    f"`/gt results {ann.job_name}` posts the pictures again.",
                )
            )
        self.store.save_steps(ann.job_name, self.holder, steps)


def default_holder() -> str:
    """A lease holder name no other process can have: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _step(kind: str, key: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "key": key, "state": "pending", "attempts": 0, "error": None, **fields}


def start_watcher(
    ctx: Context,
    store: Store,
    notifier: Notifier,
    *,
    results: ResultsHook | None = None,
    holder: str | None = None,
    after_tick: Callable[[Watcher], None] | None = None,
    background: Background | None = None,
) -> Callable[[], None]:
    """Run ticks on APScheduler's cadence; returns a function that stops it and frees the lease."""
    from apscheduler.schedulers.background import BackgroundScheduler

    watcher = Watcher(
        ctx,
        store,
        notifier,
        results=results,
        holder=holder,
        after_tick=after_tick,
        background=background,
    )
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.add_job(
        watcher.tick,
        "interval",
        seconds=ctx.settings.poll_seconds,
        id="gtbot-watcher",
        coalesce=True,
        max_instances=1,
        next_run_time=_now(),
    )
    scheduler.start()

    def stop() -> None:
        watcher.stop()
        scheduler.shutdown(wait=False)
        store.release_lease(LEASE_NAME, watcher.holder)

    return stop


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
