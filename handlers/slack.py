"""The Bolt app: `/gt` and the plan/job card buttons. Slack glue only.

Every request is acknowledged first (Slack allows 3 seconds) and only then authorized and handed
to bot/. The ack runs on the HTTP request's own thread and the work as a Bolt lazy listener: with
Bolt's default runner the ack itself waited for a free listener thread (5 of them), so a few slow
AWS calls in flight made every further command miss its 3 seconds. Dependencies are closed over
by factories, because Bolt injects listener arguments by name.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slack_bolt import Ack, App, BoltResponse, Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from aws.groundtruth import JobInfo
from bot import launcher, pipeline
from bot.cards import JobCard
from bot.commands import Reply, Router, parse
from bot.context import Context
from bot.errors import GtBotError
from bot.render import escape_mrkdwn
from bot.state import Store
from bot.watcher import DestinationGone, card_counters
from handlers import blocks
from handlers.auth import Authorizer

log = logging.getLogger("gtbot.slack")
audit = logging.getLogger("gtbot.audit")
DEFAULT_SLACK_API = "https://slack.com/api/"


@dataclass
class SlackDeps:
    ctx: Context
    store: Store
    client: WebClient
    auth: Authorizer

    @property
    def router(self) -> Router:
        return Router(self.ctx)


def audit_line(action: str, *, user: str, channel: str, **fields: Any) -> None:
    """One structured line per action that spends money or changes AWS."""
    audit.info(json.dumps({"action": action, "user": user, "channel": channel, **fields}))


def apology(exc: BaseException) -> str:
    trace_id = uuid.uuid4().hex[:12]
    log.error("unexpected error, trace id %s", trace_id, exc_info=exc)
    return (
        f"Sorry, something went wrong inside gtbot (trace id `{trace_id}`). Nothing more was "
        "done; an admin can find the details in the log under that id."
    )


def guarded_run(respond: Callable[..., Any], work: Callable[[], None]) -> None:
    """Expected problems become an ephemeral message that says what to do; others an apology."""
    try:
        work()
    except GtBotError as exc:
        respond(text=escape_mrkdwn(exc.user_message), response_type="ephemeral")
    except SlackApiError as exc:
        if exc.response.get("error") in _NOT_IN_CHANNEL:
            respond(
                text="gtbot cannot post in this channel yet. Invite it with `/invite @gtbot` "
                "and run the command again.",
                response_type="ephemeral",
            )
        else:
            respond(text=apology(exc), response_type="ephemeral")
    except Exception as exc:  # the edge: never a stack trace in chat
        respond(text=apology(exc), response_type="ephemeral")


_GONE = frozenset({"channel_not_found", "not_in_channel", "is_archived", "account_inactive"})
# A private channel the bot was never invited to answers channel_not_found, a public one
# not_in_channel: either way the fix is an invitation.
_NOT_IN_CHANNEL = frozenset({"channel_not_found", "not_in_channel"})


@contextmanager
def _destination_check() -> Iterator[None]:
    """Slack errors that mean "this channel is gone for us": the watch is parked, not retried."""
    try:
        yield
    except SlackApiError as exc:
        error = str(exc.response.get("error", ""))
        if error in _GONE:
            raise DestinationGone(error) from None
        raise


class SlackNotifier:
    """Posts and updates cards for the watcher; bot/ sees only these methods."""

    def __init__(self, client: WebClient) -> None:
        self.client = client

    def post_card(self, channel: str, card: JobCard, thread_ts: str | None = None) -> str:
        with _destination_check():
            response = self.client.chat_postMessage(
                channel=channel,
                blocks=blocks.job_blocks(card),
                text=blocks.job_fallback_text(card),
                thread_ts=thread_ts,
            )
        return str(response["ts"])

    def update_card(self, channel: str, ts: str, card: JobCard) -> None:
        with _destination_check():
            self.client.chat_update(
                channel=channel,
                ts=ts,
                blocks=blocks.job_blocks(card),
                text=blocks.job_fallback_text(card),
            )

    def post_thread(self, channel: str, thread_ts: str | None, text: str) -> str:
        with _destination_check():
            response = self.client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=escape_mrkdwn(text)
            )
        return str(response["ts"])

    def upload_files(
        self, channel: str, thread_ts: str | None, files: list[Path], title: str
    ) -> None:
        with _destination_check():
            self.client.files_upload_v2(
                channel=channel,
                thread_ts=thread_ts,
                initial_comment=escape_mrkdwn(title),
                file_uploads=[{"file": str(f), "title": f.name} for f in files],
            )


def _post_plan(deps: SlackDeps, plan: pipeline.Plan, user: str, channel: str) -> None:
    plan_id = launcher.record_plan(deps.store, plan, user=user, channel=channel)
    summary = launcher.plan_summary(plan)
    response = deps.client.chat_postMessage(
        channel=channel,
        blocks=blocks.plan_blocks(summary, plan_id, user, "pending"),
        text=escape_mrkdwn(f"Plan for {plan.project}: {plan.images} images, {plan.cost_text()}"),
    )
    deps.store.set_plan_message(plan_id, str(response["ts"]))


def _reply_to_slack(respond: Respond, reply: Reply) -> None:
    respond(
        text=escape_mrkdwn(reply.text[:300]),
        blocks=blocks.text_blocks(reply.text),
        response_type="ephemeral",
    )


def acknowledge(ack: Ack) -> None:
    """The whole synchronous part of every listener: nothing here may wait on AWS or Slack."""
    ack()


def make_gt_command(deps: SlackDeps) -> Callable[..., None]:
    def handle_gt(body: dict[str, Any], respond: Respond) -> None:
        text = str(body.get("text") or "")
        user = str(body.get("user_id") or "")
        channel = str(body.get("channel_id") or "")

        def work() -> None:
            # The channel first: outside GTBOT_CHANNELS even a typo gets only "not here".
            deps.auth.check_channel(channel)
            cmd, args, _ = parse(text)
            deps.auth.check_command(cmd, user, channel)
            if cmd.spends:
                audit_line(cmd.name, user=user, channel=channel, args=args)
            if cmd.name == "submit":
                respond(
                    text=f"Preparing `{escape_mrkdwn(args[0])}`: buckets, interface, frames, "
                    "manifest. The plan card follows here.",
                    response_type="ephemeral",
                )
            progress = ProgressMessage(deps.client, channel, f"/gt {cmd.name}")
            router = Router(deps.ctx.with_progress(progress.update))
            try:
                reply = router.run(text, interface="slack", user=user, channel=channel)
            finally:
                progress.finish()
            if reply.plan is not None:
                _post_plan(deps, reply.plan, user, channel)
            elif cmd.name == "watch" and reply.job is not None:
                _start_watch_card(deps, reply.job, channel)
                _reply_to_slack(respond, reply)
            elif cmd.name == "results" and reply.files:
                _post_results(deps, reply, channel)
                respond(
                    text=f"Results of `{escape_mrkdwn(args[0])}` posted in the channel.",
                    response_type="ephemeral",
                )
            elif cmd.name == "template" and reply.files:
                _reply_to_slack(respond, reply)
                SlackNotifier(deps.client).upload_files(
                    channel, None, [Path(f) for f in reply.files], "Annotation interface preview"
                )
            else:
                _reply_to_slack(respond, reply)

        guarded_run(respond, work)

    return handle_gt


class ProgressMessage:
    """Long commands (frames, upload, submit) show their progress as one message kept updated.

    The message is posted on the first progress line and then edited at most every
    `interval` seconds, so a 10,000-frame upload does not flood the channel or hit rate limits.
    """

    def __init__(self, client: WebClient, channel: str, title: str, interval: float = 2.0) -> None:
        self.client = client
        self.channel = channel
        self.title = title
        self.interval = interval
        self.ts: str | None = None
        self.last_sent = 0.0
        self.last_line = ""

    def _send(self, line: str) -> None:
        text = f"{escape_mrkdwn(self.title)}: {escape_mrkdwn(line)}"
        try:
            if self.ts is None:
                self.ts = str(self.client.chat_postMessage(channel=self.channel, text=text)["ts"])
            else:
                self.client.chat_update(channel=self.channel, ts=self.ts, text=text)
        except SlackApiError as exc:  # progress is a courtesy; the command goes on
            log.warning("progress message failed: %s", exc.response.get("error"))
        self.last_sent = time.monotonic()

    def update(self, line: str) -> None:
        self.last_line = line
        if self.ts is None or time.monotonic() - self.last_sent >= self.interval:
            self._send(line)

    def finish(self) -> None:
        """The message ends on the last line reported, so it never shows a stale percentage."""
        if self.ts is not None:
            self._send(f"{self.last_line} (finished)")


def _post_results(deps: SlackDeps, reply: Reply, channel: str) -> None:
    """Results go to the job's thread when the job is watched here, else to the channel."""
    results = reply.data
    job_name = getattr(results, "job_name", "")
    watch = deps.store.get_watch(job_name) if job_name else None
    thread = watch.thread_ts if watch is not None and watch.channel == channel else None
    notifier = SlackNotifier(deps.client)
    notifier.post_thread(channel, thread, reply.text)
    notifier.upload_files(channel, thread, [Path(f) for f in reply.files], f"{job_name}: results")


def _start_watch_card(deps: SlackDeps, job: JobInfo, channel: str) -> None:
    """The card of a newly watched job, from the description `watch` just fetched."""
    watch = deps.store.get_watch(job.name)
    if watch is None:
        return
    card = JobCard.from_job(job, project=watch.project, owner=watch.owner)
    ts = SlackNotifier(deps.client).post_card(channel, card)
    deps.store.update_watch(
        job.name,
        message_ts=ts,
        thread_ts=ts,
        last_status=job.status,
        last_counters=card_counters(job),
    )


def _action_value(body: dict[str, Any]) -> str:
    actions = body.get("actions") or [{}]
    return str(actions[0].get("value") or "")


def _actor(body: dict[str, Any]) -> tuple[str, str]:
    """Who clicked, and where: the rest of a click comes from the stored plan or watch."""
    user = str((body.get("user") or {}).get("id") or "")
    channel = str((body.get("channel") or {}).get("id") or "")
    return user, channel


def make_plan_action(deps: SlackDeps, action: str) -> Callable[..., None]:
    """Launch or Cancel on a plan card; a compare-and-set makes every extra click harmless."""

    def handle_plan_button(body: dict[str, Any], respond: Respond) -> None:
        plan_id = _action_value(body)
        user, channel = _actor(body)

        def work() -> None:
            deps.auth.check_channel(channel)
            is_admin = deps.auth.is_admin(user)
            if action == "launch":
                decision = launcher.launch_plan(
                    deps.ctx, deps.store, plan_id, user=user, is_admin=is_admin
                )
            else:
                decision = launcher.cancel_plan(deps.store, plan_id, user=user, is_admin=is_admin)
            plan = decision.plan
            if decision.kind in ("launched", "cancelled") and plan is not None:
                audit_line(
                    action, user=user, channel=channel, job=plan.job_name, project=plan.project
                )
            if decision.kind == "launched" and plan is not None and decision.job is not None:
                card = JobCard.from_job(decision.job, project=plan.project, owner=plan.requested_by)
                if plan.message_ts:
                    SlackNotifier(deps.client).update_card(plan.channel, plan.message_ts, card)
                deps.store.update_watch(
                    plan.job_name,
                    last_status=decision.job.status,
                    last_counters=card_counters(decision.job),
                )
                return
            if decision.kind == "cancelled" and plan is not None and plan.message_ts:
                deps.client.chat_update(
                    channel=plan.channel,
                    ts=plan.message_ts,
                    blocks=blocks.plan_blocks(
                        plan.summary, plan.id, plan.requested_by, "cancelled"
                    ),
                    text="Plan cancelled.",
                )
                return
            if decision.kind == "failed" and plan is not None and plan.message_ts:
                deps.client.chat_update(
                    channel=plan.channel,
                    ts=plan.message_ts,
                    blocks=blocks.plan_blocks(plan.summary, plan.id, plan.requested_by, "failed")
                    + blocks.text_blocks(f"Launch failed: {decision.message}"),
                    text="Launch failed.",
                )
            respond(
                text=escape_mrkdwn(decision.message),
                response_type="ephemeral",
                replace_original=False,
            )

        guarded_run(respond, work)

    return handle_plan_button


def make_stop_action(deps: SlackDeps) -> Callable[..., None]:
    def handle_stop_button(body: dict[str, Any], respond: Respond) -> None:
        job_name = _action_value(body)
        user, channel = _actor(body)

        def work() -> None:
            deps.auth.check_channel(channel)
            watch = deps.store.get_watch(job_name)
            owner = watch.owner if watch else None
            if not (deps.auth.is_admin(user) or (owner is not None and owner == user)):
                respond(
                    text="Only the person who launched this job, or an admin, may stop it.",
                    response_type="ephemeral",
                    replace_original=False,
                )
                return
            audit_line("stop", user=user, channel=channel, job=job_name)
            job = pipeline.stop_job(deps.ctx, job_name)
            if watch and watch.message_ts:
                card = JobCard.from_job(job, project=watch.project, owner=watch.owner)
                SlackNotifier(deps.client).update_card(watch.channel, watch.message_ts, card)
            respond(
                text=escape_mrkdwn(f"Stopping {job_name}: labels already made are kept."),
                response_type="ephemeral",
                replace_original=False,
            )

        guarded_run(respond, work)

    return handle_stop_button


MENTION_REPLY = (
    "I answer `/gt` commands: `/gt help` lists them, `/gt submit <project>` starts a labeling "
    "job with a plan card to confirm."
)


def make_mention_reply(deps: SlackDeps) -> Callable[..., None]:
    """Someone @-mentions the bot: point them at `/gt` in the mention's thread."""

    def reply_to_mention(event: dict[str, Any]) -> None:
        channel = str(event.get("channel") or "")
        if not deps.auth.channel_allowed(channel):
            return
        try:
            deps.client.chat_postMessage(
                channel=channel,
                thread_ts=event.get("thread_ts") or event.get("ts"),
                text=MENTION_REPLY,
            )
        except SlackApiError as exc:
            log.warning("could not answer a mention in %s: %s", channel, exc.response.get("error"))

    return reply_to_mention


def ignore_retries(request: Any, next: Callable[[], BoltResponse]) -> BoltResponse:  # noqa: A002
    """Slack re-sends a request it thinks we missed; the first delivery is already at work."""
    retry = request.headers.get("x-slack-retry-num")
    if retry:
        log.info("ignoring Slack retry %s (%s)", retry, request.headers.get("x-slack-retry-reason"))
        return BoltResponse(status=200, body="")
    return next()


def web_client(token: str, api_url: str | None) -> WebClient:
    """A Web API client that waits out 429s (Retry-After) and retries Slack's 5xx."""
    base = api_url or DEFAULT_SLACK_API
    client = WebClient(token=token, base_url=base if base.endswith("/") else base + "/")
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=5))
    client.retry_handlers.append(ServerErrorRetryHandler(max_retry_count=3))
    return client


def build_app(
    ctx: Context, store: Store, *, token: str, signing_secret: str, api_url: str | None = None
) -> tuple[App, SlackDeps]:
    client = web_client(token, api_url)
    app = App(
        token=token,
        signing_secret=signing_secret,
        client=client,
        # The listener's synchronous part (`acknowledge`) answers the HTTP request; the work
        # runs in Bolt's lazy-listener threads, so it never delays an ack.
        process_before_response=True,
    )
    deps = SlackDeps(ctx=ctx, store=store, client=client, auth=Authorizer(ctx.settings, client))
    app.middleware(ignore_retries)
    app.command("/gt")(ack=acknowledge, lazy=[make_gt_command(deps)])
    app.action(blocks.LAUNCH_ACTION)(ack=acknowledge, lazy=[make_plan_action(deps, "launch")])
    app.action(blocks.CANCEL_ACTION)(ack=acknowledge, lazy=[make_plan_action(deps, "cancel")])
    app.action(blocks.STOP_ACTION)(ack=acknowledge, lazy=[make_stop_action(deps)])
    app.event("app_mention")(ack=acknowledge, lazy=[make_mention_reply(deps)])
    return app, deps


__all__ = ["SlackApiError", "SlackDeps", "SlackNotifier", "build_app"]
