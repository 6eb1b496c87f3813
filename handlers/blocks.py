"""Block Kit for the plan card, the job card and text replies. All user text is escaped."""

from __future__ import annotations

from typing import Any

from bot.cards import JobCard
from bot.launcher import PLAN_TTL
from bot.render import escape_mrkdwn

Blocks = list[dict[str, Any]]

LAUNCH_ACTION = "gt_launch"
CANCEL_ACTION = "gt_cancel"
STOP_ACTION = "gt_stop"
PLAN_HOURS = int(PLAN_TTL.total_seconds() // 3600)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}


def text_blocks(text: str) -> Blocks:
    """Console text in Slack: keep its columns by showing it as a code block."""
    body = escape_mrkdwn(text)
    if "\n" in text:
        return [_section(f"```{body}```")]
    return [_section(body)]


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
