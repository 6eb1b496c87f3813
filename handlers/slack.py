"""The Bolt app: `/gt` and the plan/job card buttons. Slack glue only.

Every request is acknowledged first (Slack allows 3 seconds) on its own HTTP (or Socket Mode)
thread, and its work handed to one of gtbot's two lanes (bot/lanes.py): quick commands and
clicks to the quick lane, where they are authorized and answered through `response_url`; long
commands, once authorized there, to the long lane (GTBOT_LONG_JOBS at once). A long command
reports through messages, because `response_url` takes at most 5 posts within 30 minutes
(https://docs.slack.dev/interactivity/handling-user-interaction): a progress message in the
channel where it was asked, kept current (handlers/progress_message.py), and its answer in that
message's thread, mentioning who asked, however long it took. Dependencies are closed over by
factories, because Bolt injects listener arguments by name.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
from bot import logs, recipe
from bot.cards import JobCard
from bot.commands import COMMANDS, Command, Reply, Router, parse
from bot.context import Context
from bot.errors import GtBotError
from bot.jobs import launcher
from bot.jobs.watcher import (
    DestinationGone,
    MessageGone,
    NotifierUnauthorized,
    Posted,
    PostFailed,
    card_counters,
)
from bot.lanes import LaneFullError, Lanes
from bot.links import Links
from bot.render import escape_mrkdwn
from bot.state import PlanRow, Store
from handlers import blocks
from handlers.auth import Authorizer
from handlers.blocks import public_text, say
from handlers.progress_message import ProgressBoard, ProgressMessage

log = logging.getLogger("gtbot.slack")
audit = logging.getLogger("gtbot.audit")
DEFAULT_SLACK_API = "https://slack.com/api/"


@dataclass
class SlackDeps:
    ctx: Context
    store: Store
    client: WebClient
    auth: Authorizer
    lanes: Lanes = field(default_factory=lambda: Lanes(2))
    board: ProgressBoard = field(default_factory=ProgressBoard)

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
    """Each request, click or event gets its own trace id, and the user who sent it; the lane
    that does the work runs it in a copy of this context, so every log line carries both."""

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> None:
        body = kwargs.get("body") or kwargs.get("event") or {}
        user = body.get("user_id") or (body.get("user") or {})
        if isinstance(user, dict):
            user = user.get("id")
        # The HTTP edge has already given this request its trace id; Socket Mode has not.
        with logs.traced(
            logs.current_trace_id(), user=str(user or "") or None, command=_verb(body)
        ):
            handler(*args, **kwargs)

    return run


def _verb(body: dict[str, Any]) -> str | None:
    """The command's verb for the log (never its arguments: they are the user's text)."""
    if "command" in body:
        words = str(body.get("text") or "").split()
        verb = words[0].lower() if words else "help"
        return verb if verb in COMMANDS else "?"
    actions = body.get("actions") or []
    return str(actions[0].get("action_id")) if actions else None


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


def _quick(deps: SlackDeps, respond: Callable[..., Any], work: Callable[[], None]) -> None:
    """Hand `work` to the quick lane (called on the request's thread, right after the ack)."""

    def abandon(reason: str) -> None:
        respond(
            text="gtbot restarted before it could answer. Run the command again in a minute.",
            response_type="ephemeral",
        )

    def run() -> None:
        guarded_run(respond, work)

    try:
        deps.lanes.quick.submit(run, name=getattr(work, "__qualname__", "quick"), abandon=abandon)
    except LaneFullError as exc:  # rare: answer from a thread of its own, the ack goes now
        threading.Thread(
            target=respond, kwargs={"text": say(exc.user_message), "response_type": "ephemeral"}
        ).start()


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
    # conversations.open (https://docs.slack.dev/reference/methods/conversations.open): the
    # person cannot be written to (deactivated, unknown, a bot).
    "user_disabled",
    "user_not_found",
    "cannot_dm_bot",
    "users_list_not_supplied",
    "not_enough_users",
    "too_many_users",
    "invalid_user_combination",
    "method_not_supported_for_channel_type",
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
        """The text fitted to Slack (handlers/blocks.fit), mentioning `mention`; a part of it
        whose key is in `skip` is already in the thread and is not posted again."""
        messages = blocks.fit(public_text(text), mention=mention, links=links)
        ts = ""
        for n, message in enumerate(messages, start=1):
            part = key if key is None or n == len(messages) else f"{key}#{n}"
            if part is not None and part in skip:
                continue
            ts = post_message(self.client, channel, message, thread_ts=thread_ts, key=part)
        return ts

    def open_dm(self, user: str) -> str:
        """conversations.open with one user (https://docs.slack.dev/reference/methods/
        conversations.open: a bot needs im:write) opens or resumes the DM with them."""
        return open_dm(self.client, user)

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


def post_message(
    client: WebClient,
    channel: str,
    message: blocks.Message,
    *,
    thread_ts: str | None = None,
    key: str | None = None,
) -> str:
    """chat.postMessage of one fitted message (https://docs.slack.dev/reference/methods/
    chat.postMessage: with blocks, `text` is the notification's fallback); a `key` goes in its
    metadata, for reading the thread back. Slack's errors come out as PostFailed."""
    metadata = None if key is None else {"event_type": STEP_EVENT, "event_payload": {"key": key}}
    with _slack_errors():
        response = client.chat_postMessage(
            channel=channel,
            thread_ts=thread_ts,
            text=message.text,
            blocks=message.blocks,
            metadata=metadata,
        )
    return str(response["ts"])


def open_dm(client: WebClient, user: str) -> str:
    with _slack_errors():
        response = client.conversations_open(users=user)
    return str((response.get("channel") or {}).get("id") or "")


def _post_plan(deps: SlackDeps, plan: recipe.Plan, user: str, channel: str) -> None:
    # A follow-up round's card goes in its parent's thread when the parent is followed here.
    parent = deps.store.get_watch(plan.parent) if plan.parent else None
    thread = parent.thread_ts if parent is not None and parent.channel == channel else None
    plan_id = launcher.record_plan(deps.store, plan, user=user, channel=channel, thread_ts=thread)
    summary = launcher.plan_summary(plan)
    response = deps.client.chat_postMessage(
        channel=channel,
        thread_ts=thread,
        blocks=blocks.plan_blocks(summary, plan_id, user, "pending"),
        text=escape_mrkdwn(f"Plan for {plan.project}: {plan.images} images, {plan.cost_text()}"),
    )
    deps.store.set_plan_message(plan_id, str(response["ts"]))


def _more(reply: Reply, cmd: Command) -> str:
    return reply.more or (f"A terminal on gtbot's host shows all of it: `gtbot {cmd.name} ...`.")


def _reply_to_slack(respond: Respond, reply: Reply, cmd: Command) -> None:
    """A quick command's answer, ephemeral, through response_url (one use; at most three when
    its links need messages of their own)."""
    messages = blocks.fit(
        public_text(reply.text_without_links()), links=reply.links, more=_more(reply, cmd)
    )
    for message in messages[:3]:
        respond(text=message.text, blocks=message.blocks, response_type="ephemeral")


def acknowledge(ack: Ack) -> None:
    """The whole synchronous part of a listener: nothing here may wait on AWS or Slack."""
    ack()


def make_gt_command(deps: SlackDeps) -> Callable[..., None]:
    def handle_gt(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
        text = str(body.get("text") or "")
        user = str(body.get("user_id") or "")
        channel = str(body.get("channel_id") or "")

        def guard(job_name: str, verb: str) -> None:
            deps.auth.check_job_control(deps.store, job_name, user, verb)

        def work() -> None:
            # The channel first: outside GTBOT_CHANNELS even a typo gets only "not here".
            deps.auth.check_channel(channel)
            cmd, args, options = parse(text)
            logs.set_command(cmd.name)
            deps.auth.check_command(cmd, user, channel, options)
            if cmd.spends_with(options):
                audit_line(cmd.name, user=user, channel=channel, args=args, options=options)
            if cmd.long:
                # Its quick checks first: a typo is answered here, to the asker alone.
                Router(deps.ctx).check(
                    cmd, args, options, interface="slack", user=user, channel=channel
                )
                LongCommand(deps, cmd, args, options, text, user, channel, respond).queue()
                return
            reply = Router(deps.ctx).call(
                cmd, args, options, interface="slack", user=user, channel=channel, guard=guard
            )
            if cmd.name == "watch" and reply.job is not None:
                _start_watch_card(deps, reply.job, channel)
            _reply_to_slack(respond, reply, cmd)
            if reply.files:
                title = "IAM policies" if cmd.name == "iam-policy" else f"/gt {cmd.name}"
                SlackNotifier(deps.client).upload_files(
                    channel, None, [Path(f) for f in reply.files], title
                )

        _quick(deps, respond, work)

    return _traced(handle_gt)


class LongCommand:
    """A long command's life in Slack: queued in the long lane; one progress message in the
    channel where it was asked (queued, running with rate and time left, finished); its answer
    in that message's thread, mentioning who asked. When the channel refuses the bot from the
    start, the command does not run and the asker is told to invite it; when the channel goes
    away later, the answer goes to the asker's DM."""

    def __init__(
        self,
        deps: SlackDeps,
        cmd: Command,
        args: list[str],
        options: dict[str, str | bool],
        text: str,
        user: str,
        channel: str,
        respond: Callable[..., Any],
    ) -> None:
        self.deps, self.cmd, self.args, self.options = deps, cmd, args, options
        self.user, self.channel, self.respond = user, channel, respond
        self.shown = f"/gt {' '.join(text.split())}"[:200]
        self.progress = ProgressMessage(deps.board, deps.client, channel, self.shown)
        self.opened = threading.Event()
        self.cancelled = False
        self.closed = threading.Lock()
        self.done = False

    @property
    def slots(self) -> int:
        return self.deps.lanes.long.workers

    def queue(self) -> None:
        """Into the long lane, then the progress message (the work waits for it)."""
        ahead = self.deps.lanes.long.submit(
            self.run,
            name=f"{self.cmd.name} for {self.user}",
            abandon=self.abandon,
            moved=lambda n: self.progress.moved(n, self.slots),
        )
        try:
            self.progress.open(ahead, self.slots)
        except SlackApiError:
            self.cancelled = True
            raise  # guarded_run says how to invite the bot; the work sees `cancelled`
        finally:
            self.opened.set()

    def run(self) -> None:
        self.opened.wait(30)
        if self.cancelled or self.progress.ts is None:
            return
        self.progress.start()
        ctx = self.deps.ctx.with_progress(self.progress)

        def guard(job_name: str, verb: str) -> None:
            self.deps.auth.check_job_control(self.deps.store, job_name, self.user, verb)

        try:
            reply = Router(ctx).call(
                self.cmd,
                self.args,
                self.options,
                interface="slack",
                user=self.user,
                channel=self.channel,
                guard=guard,
            )
            self.deliver(reply)
        except GtBotError as exc:
            self.answer(f"`{self.shown}` failed:", exc.user_message, failed=True)
        except Exception as exc:  # the edge: an apology with the trace id, never a trace
            self.answer(f"`{self.shown}` failed:", apology(exc), failed=True)

    def deliver(self, reply: Reply) -> None:
        """The command's own answer: a plan card, results in the job's thread, or text."""
        if reply.plan is not None:
            _post_plan(self.deps, reply.plan, self.user, self.channel)
            self.finish(f"finished in {self.progress.summary()}: the plan card is below.")
            return
        files = [Path(f) for f in reply.files]
        if self.cmd.name == "results" and files:
            thread = _job_thread(self.deps, reply, self.channel)
            if thread is not None:
                notifier = SlackNotifier(self.deps.client)
                notifier.post_thread(
                    self.channel, thread, reply.text_without_links(), links=reply.links
                )
                notifier.upload_files(self.channel, thread, files, f"{self.args[0]}: results")
                self.answer(
                    f"`{self.shown}` finished:",
                    f"The results of {self.args[0]} are in the thread of its card.",
                )
                return
        self.answer(
            f"`{self.shown}` finished:",
            reply.text_without_links(),
            links=reply.links,
            files=files,
            more=_more(reply, self.cmd),
        )

    def answer(
        self,
        head: str,
        body: str,
        *,
        failed: bool = False,
        links: Links | None = None,
        files: list[Path] | None = None,
        more: str = "",
    ) -> None:
        """The answer in the progress message's thread, mentioning the asker; the progress
        message says finished or failed. Once only: a stop may have answered already."""
        with self.closed:
            if self.done:
                return
            self.done = True
        messages = blocks.fit(
            public_text(body), head=head, mention=(self.user,), links=links, more=more
        )
        where, thread = self.channel, self.progress.ts
        try:
            for message in messages:
                post_message(self.deps.client, where, message, thread_ts=thread)
            if files:
                SlackNotifier(self.deps.client).upload_files(where, thread, files, head.rstrip(":"))
        except DestinationGone:
            dm = self._to_dm(messages)
            if dm and files:
                SlackNotifier(self.deps.client).upload_files(dm, None, files, head.rstrip(":"))
        except PostFailed as exc:
            log.warning("could not post the answer to %s: %s", self.shown, exc.error)
        if failed:
            self.progress.finish(
                f"failed after {self.progress.summary()}; the thread says why.", ":warning:"
            )
        else:
            self.progress.finish(
                f"finished in {self.progress.summary()}; the answer is in the thread."
            )

    def _to_dm(self, messages: list[blocks.Message]) -> str | None:
        """The channel is gone: the answer goes to the asker's DM (im:write); failing that, to
        response_url while it still takes posts."""
        try:
            dm = open_dm(self.deps.client, self.user)
            for message in messages:
                post_message(self.deps.client, dm, message)
            return dm
        except PostFailed as exc:
            log.warning("could not DM the answer to %s: %s", self.shown, exc.error)
        try:
            self.respond(
                text=messages[0].text, blocks=messages[0].blocks, response_type="ephemeral"
            )
        except Exception:
            log.exception("could not answer %s at all", self.shown)
        return None

    def finish(self, line: str) -> None:
        with self.closed:
            self.done = True
        self.progress.finish(line)

    def abandon(self, reason: str) -> None:
        """gtbot is stopping: the asker is told, so the command is never silently lost."""
        if self.cancelled:
            return
        self.opened.wait(5)
        if reason == "not started":
            body = f"gtbot restarted before `{self.shown}` began. Run it again."
        else:
            body = (
                f"gtbot restarted while `{self.shown}` ran. Run it again: what was done is kept "
                "and not done twice (an upload skips what is there, frames tops up)."
            )
        self.answer(f"`{self.shown}` {reason}:", body, failed=True)


def _job_thread(deps: SlackDeps, reply: Reply, channel: str) -> str | None:
    """The thread of the job's card when the job is watched in this channel."""
    job_name = getattr(reply.data, "job_name", "")
    watch = deps.store.get_watch(job_name) if job_name else None
    if watch is None or watch.channel != channel or watch.dm_only:
        return None
    return watch.thread_ts


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

    def handle_plan_button(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
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

        _quick(deps, respond, work)

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
    def handle_stop_button(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
        job_name = _action_value(body)
        user, channel = _actor(body)

        def work() -> None:
            deps.auth.check_channel(channel)
            deps.auth.check_job_control(deps.store, job_name, user, "stop")
            audit_line("stop", user=user, channel=channel, job=job_name)
            job = recipe.stop_job(deps.ctx, job_name)
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

        _quick(deps, respond, work)

    return _traced(handle_stop_button)


MENTION_REPLY = (
    "I answer `/gt` commands: `/gt help` lists them, `/gt submit <project>` starts a labeling "
    "job with a plan card to confirm."
)


def make_mention_reply(deps: SlackDeps) -> Callable[..., None]:
    """Someone @-mentions the bot: point them at `/gt` in the mention's thread."""

    def reply_to_mention(ack: Ack, event: dict[str, Any]) -> None:
        ack()
        channel = str(event.get("channel") or "")
        if not deps.auth.channel_allowed(channel):
            return

        def work() -> None:
            try:
                deps.client.chat_postMessage(
                    channel=channel,
                    thread_ts=event.get("thread_ts") or event.get("ts"),
                    text=MENTION_REPLY,
                )
            except SlackApiError as exc:
                log.warning(
                    "could not answer a mention in %s: %s", channel, exc.response.get("error")
                )

        try:
            deps.lanes.quick.submit(work, name="mention")
        except LaneFullError:
            log.warning("too busy to answer a mention in %s", channel)

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
    ctx: Context,
    store: Store,
    *,
    token: str,
    signing_secret: str | None = None,
    api_url: str | None = None,
    lanes: Lanes | None = None,
) -> tuple[App, SlackDeps]:
    """The Bolt app and what its listeners share. `signing_secret` is for HTTP only (the WSGI
    layer checks it); Socket Mode is authenticated by its app-level token instead."""
    client = web_client(token, api_url)
    app = App(
        token=token,
        signing_secret=signing_secret or "socket-mode-needs-no-signing-secret",
        client=client,
        # Signatures are checked, with the body size capped first, by the WSGI app in front
        # (handlers/server.make_wsgi), which Bolt's docs allow for "a proxy that verifies
        # request signature in front of the Bolt app". Bolt's own check would log a rejected
        # body whole at INFO (RequestVerification._debug_log_error). Socket Mode needs none.
        request_verification_enabled=False,
        # Each listener acks and hands its work to a lane, on the request's own thread, and
        # returns at once: the ack never waits for a thread of Bolt's 5-thread pool.
        process_before_response=True,
    )
    deps = SlackDeps(
        ctx=ctx,
        store=store,
        client=client,
        auth=Authorizer(ctx.settings, client),
        lanes=lanes or Lanes(ctx.settings.long_jobs),
    )
    app.middleware(ignore_retries)
    app.command("/gt")(make_gt_command(deps))
    app.action(blocks.LAUNCH_ACTION)(make_plan_action(deps, "launch"))
    app.action(blocks.CANCEL_ACTION)(make_plan_action(deps, "cancel"))
    app.action(blocks.STOP_ACTION)(make_stop_action(deps))
    app.event("app_mention")(make_mention_reply(deps))
    return app, deps


__all__ = ["SlackApiError", "SlackDeps", "SlackNotifier", "build_app"]
