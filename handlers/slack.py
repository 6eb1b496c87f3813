"""The Bolt app: `/gt` and the plan/job card buttons. Slack glue only.

Every request is acknowledged first (Slack allows 3 seconds) and only then authorized and handed
to bot/. The ack runs on the HTTP request's own thread and the work as a Bolt lazy listener: with
Bolt's default runner the ack itself waited for a free listener thread (5 of them), so a few slow
AWS calls in flight made every further command miss its 3 seconds. Dependencies are closed over
by factories, because Bolt injects listener arguments by name.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from slack_bolt import Ack, App, BoltResponse, Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from aws.groundtruth import JobInfo
from bot import launcher, logs, pipeline
from bot.cards import JobCard
from bot.commands import Reply, Router, parse
from bot.context import Context
from bot.errors import GtBotError
from bot.render import escape_mrkdwn
from bot.state import PlanRow, Store
from bot.watcher import (
    DestinationGone,
    MessageGone,
    NotifierUnauthorized,
    Posted,
    PostFailed,
    card_counters,
)
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
    """One structured record per action that spends money or changes AWS (a JSON log line:
    no value in it can start a record of its own)."""
    audit.info(
        "audit %s",
        action,
        extra={"audit": {"action": action, "user": user, "channel": channel, **fields}},
    )


def apology(exc: BaseException) -> str:
    """What a user reads about an unexpected error: the trace id of this piece of work, whose
    every log line carries it; never the error itself, and no claim about what happened."""
    trace_id = logs.trace_id()
    log.error("unexpected error, trace id %s", trace_id, exc_info=exc)
    return (
        f"Sorry, something went wrong inside gtbot (trace id `{trace_id}`). An admin can find "
        "what happened in the log under that id."
    )


def _traced(handler: Callable[..., None]) -> Callable[..., None]:
    """Each request, click or event runs under its own trace id (Bolt's lazy listeners run on
    threads of their own, so the id is set here, not at the HTTP edge)."""

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> None:
        with logs.traced():
            handler(*args, **kwargs)

    return run


# An absolute path on the bot's host: a slash not preceded by a word, a dot, a colon or a slash
# (so URLs, s3:// URIs, ARNs and `/gt` stay), then two or more segments.
_HOST_PATH = re.compile(r"(?<![\w.:/~@-])~?/(?:[\w.@+-]+/)+[\w.@+-]*")


def public_text(text: str) -> str:
    """Text for a channel: the bot's own folders are its business, so an absolute path keeps
    only its last two parts (`…/demo/project-config.yml` still says which file)."""

    def shorten(match: re.Match[str]) -> str:
        parts = [p for p in match.group(0).split("/") if p]
        tail = "/".join(parts[-2:] if len(parts) > 2 else parts[-1:])
        return "…/" + tail + ("/" if match.group(0).endswith("/") else "")

    return _HOST_PATH.sub(shorten, text)


def say(text: str) -> str:
    """Any text gtbot puts in Slack: no host paths, and mrkdwn escaped."""
    return escape_mrkdwn(public_text(text))


def guarded_run(respond: Callable[..., Any], work: Callable[[], None]) -> None:
    """Expected problems become an ephemeral message that says what to do; others an apology."""
    try:
        work()
    except GtBotError as exc:
        respond(text=say(exc.user_message), response_type="ephemeral")
    except (SlackApiError, PostFailed) as exc:
        error = exc.error if isinstance(exc, PostFailed) else exc.response.get("error")
        if error in _NOT_IN_CHANNEL:
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
# The message is gone: chat.update and chat.delete answer message_not_found for a deleted or
# unknown ts (https://docs.slack.dev/reference/methods/chat.update), and a reply to a deleted
# parent, or reading its thread, answers thread_not_found
# (https://docs.slack.dev/reference/methods/conversations.replies).
_MESSAGE_GONE = frozenset({"message_not_found", "thread_not_found"})
# The token itself is refused (the "Errors" tables of every Web API method): no call can work.
_UNAUTHORIZED = frozenset({"not_authed", "invalid_auth", "token_revoked", "token_expired"})
# Errors that the same call will meet again however often it is retried: the app's scopes or
# token, or a message Slack refuses (the "Errors" tables of chat.postMessage, chat.update,
# files.completeUploadExternal and conversations.replies on docs.slack.dev). Anything else
# (ratelimited after the client's own retries, internal_error, fatal_error, timeouts) may pass.
_PERMANENT = _GONE | {
    "missing_scope",
    "no_permission",
    "access_denied",
    "not_allowed_token_type",
    "team_access_not_granted",
    "ekm_access_denied",
    "restricted_action",
    "restricted_action_read_only_channel",
    "restricted_action_thread_only_channel",
    "restricted_action_non_threadable_channel",
    "restricted_action_thread_locked",
    "invalid_blocks",
    "invalid_blocks_format",
    "msg_too_long",
    "msg_blocks_too_long",
    "no_text",
    "invalid_metadata_format",
    "invalid_metadata_schema",
    "metadata_too_large",
    "invalid_arguments",
    "cant_update_message",
    "edit_window_closed",
    "file_uploads_disabled",
    "file_uploads_except_images_disabled",
    "file_upload_size_restricted",
}
# The metadata event type on gtbot's step posts (https://docs.slack.dev/messaging/message-metadata:
# `metadata` on chat.postMessage is {event_type, event_payload}; conversations.replies returns it
# with include_all_metadata=true).
STEP_EVENT = "gtbot_step"
# A job's thread holds its status changes and the completion: a few dozen messages.
_READ_PAGES = 10


@contextmanager
def _slack_errors() -> Iterator[None]:
    """Slack's answers as bot/ understands them: gone, permanent, or worth another try."""
    try:
        yield
    except SlackApiError as exc:
        error = str(exc.response.get("error", "")) or f"HTTP {exc.response.status_code}"
        if error in _GONE:
            raise DestinationGone(error) from None
        if error in _MESSAGE_GONE:
            raise MessageGone(error) from None
        if error in _UNAUTHORIZED:
            raise NotifierUnauthorized(error) from None
        raise PostFailed(error, permanent=error in _PERMANENT) from None
    except (OSError, SlackClientError) as exc:  # network: connection refused, timeouts
        raise PostFailed(type(exc).__name__, permanent=False) from None


class SlackNotifier:
    """Posts and updates cards for the watcher; bot/ sees only these methods."""

    def __init__(self, client: WebClient) -> None:
        self.client = client

    def post_card(self, channel: str, card: JobCard, thread_ts: str | None = None) -> str:
        with _slack_errors():
            response = self.client.chat_postMessage(
                channel=channel,
                blocks=blocks.job_blocks(card),
                text=blocks.job_fallback_text(card),
                thread_ts=thread_ts,
            )
        return str(response["ts"])

    def update_card(self, channel: str, ts: str, card: JobCard) -> None:
        with _slack_errors():
            self.client.chat_update(
                channel=channel,
                ts=ts,
                blocks=blocks.job_blocks(card),
                text=blocks.job_fallback_text(card),
            )

    def post_thread(
        self, channel: str, thread_ts: str | None, text: str, key: str | None = None
    ) -> str:
        metadata = (
            None if key is None else {"event_type": STEP_EVENT, "event_payload": {"key": key}}
        )
        with _slack_errors():
            response = self.client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=say(text), metadata=metadata
            )
        return str(response["ts"])

    def upload_files(
        self, channel: str, thread_ts: str | None, files: list[Path], title: str
    ) -> None:
        with _slack_errors():
            self.client.files_upload_v2(
                channel=channel,
                thread_ts=thread_ts,
                initial_comment=say(title),
                file_uploads=[{"file": str(f), "title": f.name} for f in files],
            )

    def upload_file(self, channel: str, thread_ts: str | None, path: Path, title: str) -> None:
        with _slack_errors():
            self.client.files_upload_v2(
                channel=channel, thread_ts=thread_ts, file=str(path), title=title
            )

    def posted(self, channel: str, thread_ts: str | None) -> Posted:
        """gtbot's step posts and the file titles in a thread (or, without one, the channel's
        latest messages). Needs channels:history / groups:history."""
        keys: set[str] = set()
        titles: set[str] = set()
        cursor = None
        with _slack_errors():
            for _ in range(_READ_PAGES):
                args: dict[str, Any] = {
                    "channel": channel,
                    "include_all_metadata": True,
                    "limit": 200,
                    "cursor": cursor,
                }
                response = (
                    self.client.conversations_replies(ts=thread_ts, **args)
                    if thread_ts
                    else self.client.conversations_history(**args)
                )
                for message in response.get("messages") or []:
                    meta = message.get("metadata") or {}
                    if meta.get("event_type") == STEP_EVENT:
                        keys.add(str((meta.get("event_payload") or {}).get("key")))
                    titles.update(str(f.get("title")) for f in message.get("files") or [])
                cursor = (response.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    break
        return Posted(frozenset(keys), frozenset(titles))


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
    text = public_text(reply.text)
    respond(
        text=escape_mrkdwn(text[:300]),
        blocks=blocks.text_blocks(text),
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

        def guard(job_name: str, verb: str) -> None:
            deps.auth.check_job_control(deps.store, job_name, user, verb)

        def work() -> None:
            # The channel first: outside GTBOT_CHANNELS even a typo gets only "not here".
            deps.auth.check_channel(channel)
            cmd, args, options = parse(text)
            deps.auth.check_command(cmd, user, channel, options)
            if cmd.spends_with(options):
                audit_line(cmd.name, user=user, channel=channel, args=args, options=options)
            if cmd.name == "submit":
                respond(
                    text=f"Preparing `{escape_mrkdwn(args[0])}`: buckets, interface, frames, "
                    "manifest. The plan card follows here.",
                    response_type="ephemeral",
                )
            progress = ProgressMessage(deps.client, channel, f"/gt {cmd.name}")
            router = Router(deps.ctx.with_progress(progress.update))
            try:
                reply = router.run(text, interface="slack", user=user, channel=channel, guard=guard)
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

    return _traced(handle_gt)


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
        text = f"{say(self.title)}: {say(line)}"
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
    notifier.post_thread(channel, thread, public_text(reply.text))
    notifier.upload_files(channel, thread, [Path(f) for f in reply.files], f"{job_name}: results")


def _start_watch_card(deps: SlackDeps, job: JobInfo, channel: str) -> None:
    """The card of a newly watched job, from the description `watch` just fetched. A job whose
    end was announced before gets its card and nothing more."""
    watch = deps.store.get_watch(job.name)
    if watch is None:
        return
    card = JobCard.from_job(job, project=watch.project, owner=watch.owner)
    ts = SlackNotifier(deps.client).post_card(channel, card)
    announcement = deps.store.get_announcement(job.name)
    deps.store.update_watch(
        job.name,
        message_ts=ts,
        thread_ts=ts,
        last_status=job.status,
        last_counters=card_counters(job),
        completion_announced=announcement is not None and announcement.state == "done",
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
            # Rights as they are now, not as they were when the plan was made.
            is_admin = deps.auth.is_admin(user)
            if action == "launch":
                decision = launcher.launch_plan(
                    deps.ctx,
                    deps.store,
                    plan_id,
                    user=user,
                    is_admin=is_admin,
                    is_submitter=deps.auth.is_submitter(user),
                )
            else:
                decision = launcher.cancel_plan(deps.store, plan_id, user=user, is_admin=is_admin)
            plan = decision.plan
            if decision.kind in ("launched", "cancelled") and plan is not None:
                audit_line(
                    action, user=user, channel=channel, job=plan.job_name, project=plan.project
                )
            if decision.kind == "launched" and plan is not None and decision.job is not None:
                if _show_launched(deps, plan, decision.job) and decision.recorded:
                    return  # the card turning into the job card is the answer
            elif decision.kind == "cancelled" and plan is not None and plan.message_ts:
                deps.client.chat_update(
                    channel=plan.channel,
                    ts=plan.message_ts,
                    blocks=blocks.plan_blocks(
                        plan.summary, plan.id, plan.requested_by, "cancelled"
                    ),
                    text="Plan cancelled.",
                )
                return
            elif decision.kind in ("failed", "expired") and plan is not None and plan.message_ts:
                deps.client.chat_update(
                    channel=plan.channel,
                    ts=plan.message_ts,
                    blocks=blocks.plan_blocks(
                        plan.summary, plan.id, plan.requested_by, decision.kind
                    )
                    + blocks.text_blocks(f"Not launched: {public_text(decision.message)}"),
                    text="Not launched.",
                )
            respond(
                text=say(decision.message),
                response_type="ephemeral",
                replace_original=False,
            )

        guarded_run(respond, work)

    return _traced(handle_plan_button)


def _show_launched(deps: SlackDeps, plan: PlanRow, job: JobInfo) -> bool:
    """The plan card becomes the job card; False if it could not (the clicker is then told
    in words). The job exists whatever fails here: errors are logged, never raised."""
    card = JobCard.from_job(job, project=plan.project, owner=plan.requested_by)
    shown = False
    if plan.message_ts:
        try:
            SlackNotifier(deps.client).update_card(plan.channel, plan.message_ts, card)
            shown = True
        except PostFailed as exc:
            log.warning("launched %s but could not update its card: %s", plan.job_name, exc.error)
    try:
        deps.store.update_watch(
            plan.job_name, last_status=job.status, last_counters=card_counters(job)
        )
    except sa.exc.SQLAlchemyError:
        log.exception("launched %s but could not note its card in the database", plan.job_name)
    return shown


def make_stop_action(deps: SlackDeps) -> Callable[..., None]:
    def handle_stop_button(body: dict[str, Any], respond: Respond) -> None:
        job_name = _action_value(body)
        user, channel = _actor(body)

        def work() -> None:
            deps.auth.check_channel(channel)
            deps.auth.check_job_control(deps.store, job_name, user, "stop")
            audit_line("stop", user=user, channel=channel, job=job_name)
            job = pipeline.stop_job(deps.ctx, job_name)
            watch = deps.store.get_watch(job_name)
            if watch and watch.message_ts:
                card = JobCard.from_job(job, project=watch.project, owner=watch.owner)
                # A deleted card: the watcher posts a new one at its next tick.
                with contextlib.suppress(MessageGone):
                    SlackNotifier(deps.client).update_card(watch.channel, watch.message_ts, card)
            respond(
                text=say(f"Stopping {job_name}: labels already made are kept."),
                response_type="ephemeral",
                replace_original=False,
            )

        guarded_run(respond, work)

    return _traced(handle_stop_button)


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

    return _traced(reply_to_mention)


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
        # Signatures are checked, with the body size capped first, by the WSGI app in front
        # (handlers/server.make_wsgi), which Bolt's docs allow for "a proxy that verifies
        # request signature in front of the Bolt app". Bolt's own check would log a rejected
        # body whole at INFO (RequestVerification._debug_log_error). Socket Mode needs none.
        request_verification_enabled=False,
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
