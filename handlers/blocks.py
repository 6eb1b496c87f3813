"""Block Kit for the plan card, the job card and text replies. All user text is escaped.

Replies are fitted to Slack's limits (Block Kit reference, https://docs.slack.dev/reference/
block-kit/blocks: a section's text at most 3,000 characters, at most 50 blocks a message):
console text is split across sections at line ends, each its own complete code block, so no
fence is ever cut; a reply longer than a message can carry ends "...and N more lines" with how
to see all of it. Slack also refuses a message whose blocks hold too much text in all
(`msg_blocks_too_long`, near 12,000 characters: undocumented, reported in slackapi/bolt-js
#2509 and #2867), so a message carries at most MESSAGE_CHARS. Links are `<url|name>`
(https://docs.slack.dev/messaging/formatting-message-text: "&", "<" and ">" are Slack's control
characters and are escaped everywhere else), packed into sections of their own and, when they do
not fit beside the text, into the messages after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.cards import JobCard
from bot.jobs.launcher import PLAN_TTL
from bot.links import Links
from bot.render import escape_mrkdwn

Blocks = list[dict[str, Any]]

SECTION_CHARS = 3000
MAX_BLOCKS = 50
MESSAGE_CHARS = 8000
# A reply longer than this many lines ends with "...and N more lines": a channel is not a log.
MAX_LINES = 60
# How much of a reply the notification (the message's `text`, shown where blocks cannot be)
# carries: chat.postMessage uses `text` as the fallback when blocks are given.
FALLBACK_CHARS = 300
FENCE = "```"
# An absolute path on the bot's host: a slash not preceded by a word, a dot, a colon or a slash
# (so URLs, s3:// URIs, ARNs and `/gt` stay), then two or more segments.
_HOST_PATH = re.compile(r"(?<![\w.:/~@-])~?/(?:[\w.@+-]+/)+[\w.@+-]*")
# A Slack user (U...) or, on Enterprise Grid, W...: anything else is not turned into a mention.
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")

LAUNCH_ACTION = "gt_launch"
CANCEL_ACTION = "gt_cancel"
STOP_ACTION = "gt_stop"
PLAN_HOURS = int(PLAN_TTL.total_seconds() // 3600)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}


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


@dataclass(frozen=True)
class Message:
    """One Slack message: its blocks, and the `text` shown in notifications."""

    text: str
    blocks: Blocks


def mentions(users: tuple[str, ...] | list[str]) -> str:
    """`<@U...>` for each well-formed user id (https://docs.slack.dev/messaging/formatting-
    message-text, "Mentioning users"), once each, in order."""
    seen = dict.fromkeys(u for u in users if _USER_ID.fullmatch(u))
    return " ".join(f"<@{u}>" for u in seen)


def _pieces(line: str, width: int) -> list[str]:
    """A line no longer than `width`, or its pieces (a long URL, a wide table row)."""
    return [line[i : i + width] for i in range(0, len(line), width)] or [""]


def _code_sections(lines: list[str], budget: int) -> tuple[Blocks, int]:
    """Escaped lines as code-block sections within `budget` characters: (blocks, lines used).
    Each section opens and closes its own fence, and a fence inside the text is broken with
    zero-width spaces, so nothing the text holds can end a block early."""
    width = SECTION_CHARS - 2 * len(FENCE)
    blocks: Blocks = []
    chunk: list[str] = []
    size = used = spent = 0
    for line in lines:
        safe = escape_mrkdwn(line).replace(FENCE, "`\u200b`\u200b`")
        pieces = _pieces(safe, width)
        need = sum(len(p) + 1 for p in pieces)
        if spent + size + need + 2 * len(FENCE) > budget or len(blocks) >= MAX_BLOCKS - 4:
            break
        for piece in pieces:
            if chunk and size + len(piece) + 1 > width:
                blocks.append(_section(FENCE + "\n".join(chunk) + FENCE))
                spent += size + 2 * len(FENCE)
                chunk, size = [], 0
            chunk.append(piece)
            size += len(piece) + 1
        used += 1
    if chunk:
        blocks.append(_section(FENCE + "\n".join(chunk) + FENCE))
    return blocks, used


def _link_sections(links: Links) -> list[dict[str, Any]]:
    """`*title*: <url|name> · <url|name>`, as many sections as the URLs need."""
    head = f"*{escape_mrkdwn(links.title)}*: "
    sections: list[str] = []
    current = head
    for name, url in links.items:
        safe_url = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E")
        safe_url = safe_url.replace("|", "%7C")
        label = escape_mrkdwn(name).replace("|", "/")
        link = f"<{safe_url}|{label}>"
        if len(head) + len(link) > SECTION_CHARS:
            link = f"{label} (its link is too long for Slack; a terminal prints it)"
        joiner = "" if current.endswith(": ") else " · "
        if len(current) + len(joiner) + len(link) > SECTION_CHARS:
            sections.append(current)
            current, joiner = head, ""
        current += joiner + link
    sections.append(current)
    return [_section(text) for text in sections]


def fit(
    body: str,
    *,
    head: str = "",
    mention: tuple[str, ...] | list[str] = (),
    links: Links | None = None,
    more: str = "",
) -> list[Message]:
    """A reply as messages that Slack accepts whole: `head` (a line of plain text) after the
    mentions, `body` as text (a code block when it has several lines, to keep its columns),
    cut after MAX_LINES or MESSAGE_CHARS with "...and N more lines. <more>", then `links`.
    The first message holds everything but links that do not fit beside the text."""
    who = mentions(mention)
    top = " ".join(part for part in (who, escape_mrkdwn(head)) if part)
    blocks: Blocks = []
    if top:
        blocks.append(_section(top))
    lines = body.splitlines()
    spent = len(top)
    if len(lines) > 1:
        shown = lines[:MAX_LINES]
        sections, used = _code_sections(shown, MESSAGE_CHARS - spent - 400)
        blocks += sections
        left = len(lines) - used
    else:
        text = escape_mrkdwn(body)[: MESSAGE_CHARS - spent - 400]
        blocks += [_section(piece) for piece in _pieces(text, SECTION_CHARS) if piece]
        left = 0
    if left:
        note = f"...and {left} more line{'s' * (left != 1)}."
        blocks.append(_context(escape_mrkdwn(f"{note} {more}".strip())))
    fallback = " ".join(p for p in (who, escape_mrkdwn(head or body)) if p)[:FALLBACK_CHARS]
    messages = [Message(fallback or " ", blocks)]
    if links is not None and links.items:
        size = sum(_chars(b) for b in blocks)
        for section in _link_sections(links):
            current = messages[-1]
            if size + _chars(section) > MESSAGE_CHARS or len(current.blocks) >= MAX_BLOCKS:
                messages.append(Message(escape_mrkdwn(links.title), []))
                size = 0
            messages[-1].blocks.append(section)
            size += _chars(section)
    return messages


def _chars(block: dict[str, Any]) -> int:
    text = block.get("text") or {}
    elements = block.get("elements") or []
    return len(str(text.get("text", ""))) + sum(len(str(e.get("text", ""))) for e in elements)


def text_blocks(text: str) -> Blocks:
    """Console text in Slack: keep its columns by showing it as a code block."""
    return fit(text)[0].blocks


def plan_blocks(summary: dict[str, Any], plan_id: str, requested_by: str, state: str) -> Blocks:
    e = escape_mrkdwn
    fields = [
        ("Project", f"`{e(str(summary['project']))}` ({e(str(summary['region']))})"),
        ("Images", str(summary["images"])),
        ("Workers per image", str(summary["workers_per_image"])),
        ("Workteam", f"{e(str(summary['workteam_kind']))} ({e(str(summary['workteam']))})"),
        ("Price per task", e(str(summary["price"]))),
        ("Estimated worker cost", e(str(summary["cost"]))),
        ("Job name", f"`{e(str(summary['job_name']))}`"),
    ]
    follow_up = summary.get("parent")
    if follow_up:
        fields.insert(
            0, ("Follow-up of", f"`{e(str(follow_up))}`, round {e(str(summary['round']))}")
        )
    title = "Follow-up labeling plan" if follow_up else "Labeling job plan"
    blocks: Blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": title}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields],
        },
    ]
    if follow_up and summary.get("reason"):
        blocks.append(_section(f"*Frames chosen:* {e(str(summary['reason']))}"))
    if summary.get("adaptive_text"):
        blocks.append(
            _section(
                f"*Adaptive rounds:* {e(str(summary['adaptive_text']))}. Launch also lets gtbot "
                "launch those rounds when each one ends; `relabel <job> --stop` stops them."
            )
        )
    blocks.append(_context("Prepared: " + e("; ".join(summary.get("prepared", [])))))
    if state == "pending":
        blocks.append(
            {
                "type": "actions",
                "block_id": "gt_plan",
                "elements": [
                    {
                        "type": "button",
                        "action_id": LAUNCH_ACTION,
                        "text": {"type": "plain_text", "text": "Launch"},
                        "style": "primary",
                        "value": plan_id,
                        "confirm": {
                            "title": {"type": "plain_text", "text": "Launch the job?"},
                            "text": {
                                "type": "mrkdwn",
                                "text": f"Estimated worker cost: {e(str(summary['cost']))}",
                            },
                            "confirm": {"type": "plain_text", "text": "Launch"},
                            "deny": {"type": "plain_text", "text": "Not yet"},
                        },
                    },
                    {
                        "type": "button",
                        "action_id": CANCEL_ACTION,
                        "text": {"type": "plain_text", "text": "Cancel"},
                        "value": plan_id,
                    },
                ],
            }
        )
        blocks.append(
            _context(
                f"Requested by <@{e(requested_by)}>. Only they or an admin may launch, within "
                f"{PLAN_HOURS} h; after that, submit again."
            )
        )
    else:
        blocks.append(_context(f"Plan {e(state)}."))
    return blocks


def job_blocks(card: JobCard) -> Blocks:
    e = escape_mrkdwn
    title = f"*Labeling job* `{e(card.job_name)}`: *{e(card.status)}*"
    if card.project:
        title += f"  (project `{e(card.project)}`)"
    lines = [title, f"`{e(card.progress)}`"]
    detail = f"Elapsed {e(card.elapsed)} · time left: {e(card.eta)}"
    if card.counters.failed:
        detail = f"Failed objects: {card.counters.failed} · " + detail
    blocks: Blocks = [_section("\n".join(lines)), _context(detail)]
    if card.failure_reason:
        blocks.append(_section(f"Failure: {e(card.failure_reason)}"))
    if card.active and card.status != "Stopping":
        blocks.append(
            {
                "type": "actions",
                "block_id": "gt_job",
                "elements": [
                    {
                        "type": "button",
                        "action_id": STOP_ACTION,
                        "text": {"type": "plain_text", "text": "Stop"},
                        "style": "danger",
                        "value": card.job_name,
                        "confirm": {
                            "title": {"type": "plain_text", "text": "Stop the job?"},
                            "text": {"type": "mrkdwn", "text": "Labels already made are kept."},
                            "confirm": {"type": "plain_text", "text": "Stop"},
                            "deny": {"type": "plain_text", "text": "Keep running"},
                        },
                    }
                ],
            }
        )
    return blocks


def job_fallback_text(card: JobCard) -> str:
    return escape_mrkdwn(f"{card.job_name}: {card.status} {card.progress}")
