"""Replies fitted to Slack's limits (handlers/blocks.fit): a section's 3,000 characters, 50
blocks, ~12,000 characters of blocks a message; code fences never cut; long replies end with
"...and N more lines" and how to see all; links are names; mentions only of real user ids."""

from __future__ import annotations

import json
import re

from bot.links import Links
from handlers.blocks import (
    FENCE,
    MAX_BLOCKS,
    MAX_LINES,
    MESSAGE_CHARS,
    SECTION_CHARS,
    Message,
    fit,
    mentions,
)

# A presigned URL as a role session signs it: about 1,300 characters, most of them the token.
URL = (
    "https://demo-output.s3.us-east-2.amazonaws.com/demo-1/gtbot-results/{name}"
    "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAEXAMPLE%2F20250101%2Fus-east-2"
    "%2Fs3%2Faws4_request&X-Amz-Date=20250101T000000Z&X-Amz-Expires=86400"
    "&X-Amz-SignedHeaders=host&X-Amz-Security-Token=" + "T" * 1000 + "&X-Amz-Signature=" + "a" * 64
)


def _texts(message: Message) -> list[str]:
    out = []
    for block in message.blocks:
        if "text" in block:
            out.append(block["text"]["text"])
        out += [e["text"] for e in block.get("elements", [])]
    return out


def _sizes_fit(messages: list[Message]) -> None:
    for message in messages:
        assert len(message.blocks) <= MAX_BLOCKS
        assert all(len(t) <= SECTION_CHARS for t in _texts(message))
        assert sum(len(t) for t in _texts(message)) <= MESSAGE_CHARS
        assert len(message.text) <= 300


def test_a_long_table_is_split_into_whole_code_blocks() -> None:
    """The old reply cut at 3,000 characters, in the middle of its code block."""
    table = "\n".join(f"{i:>4}  worker-{i:04d}  {'#' * 40}  {i * 1.5:.1f} px" for i in range(55))
    (message,) = fit(table)
    sections = _texts(message)
    assert len(sections) >= 2  # over one section's limit
    for text in sections:
        assert text.startswith(FENCE) and text.endswith(FENCE) and text.count(FENCE) == 2
    shown = "\n".join(t[len(FENCE) : -len(FENCE)] for t in sections)
    assert shown == table  # nothing lost, nothing cut mid-line
    _sizes_fit([message])


def test_a_fence_in_the_text_cannot_close_the_block() -> None:
    (message,) = fit("first line\nsomeone typed ``` here\nlast line")
    (section,) = _texts(message)
    assert section.count(FENCE) == 2 and section.startswith(FENCE) and section.endswith(FENCE)


def test_a_long_list_ends_with_how_many_more_and_how_to_see_them() -> None:
    jobs = "\n".join(
        ["Recent jobs:"] + [f"demo-{i:014d}  Completed  [##########]" for i in range(500)]
    )
    (message,) = fit(jobs, more="`/gt jobs --limit 20` lists fewer.")
    last = _texts(message)[-1]
    shown = sum(t.count("\n") + 1 for t in _texts(message)[:-1])
    assert shown <= MAX_LINES
    assert last == f"...and {501 - shown} more lines. `/gt jobs --limit 20` lists fewer."
    _sizes_fit([message])


def test_one_very_long_line_is_cut_into_pieces_not_dropped() -> None:
    line = "x" * 7000
    messages = fit(f"a\n{line}")
    _sizes_fit(messages)
    assert "".join(_texts(messages[0])).count("x") == 7000


def test_links_are_names_packed_into_sections_and_messages_of_their_own() -> None:
    """Nine presigned links: 12,000 characters of URL that nobody should have to read."""
    names = [f"file-{i}.json" for i in range(9)]
    links = Links("Links (valid for 24 h)", tuple((n, URL.format(name=n)) for n in names))
    messages = fit("4 frames consolidated, 0 skipped.", links=links)
    _sizes_fit(messages)
    assert len(messages) >= 2  # the URLs do not fit beside the text in one message
    everything = "\n".join(t for m in messages for t in _texts(m))
    shown = re.sub(r"<https://[^|>]+\|([^>]+)>", r"\1", everything)
    assert "X-Amz" not in shown and all(n in shown for n in names)
    # Each URL is whole, its "&" escaped as Slack's formatting asks.
    found = re.findall(r"<(https://[^|>]+)\|([^>]+)>", everything)
    assert [n for _, n in found] == names
    assert all(u.replace("&amp;", "&") == URL.format(name=n) for u, n in found)
    assert messages[0].text.startswith("4 frames consolidated")


def test_mentions_only_of_user_ids_and_in_the_notification_text() -> None:
    assert mentions(["U012ABCDEF", "<!channel>", "W0GRID", "U012ABCDEF", "x"]) == (
        "<@U012ABCDEF> <@W0GRID>"
    )
    (message,) = fit("1000 uploaded", head="`/gt upload demo` finished:", mention=("U012ABCDEF",))
    assert message.text.startswith("<@U012ABCDEF> `/gt upload demo` finished:")
    assert _texts(message)[0] == "<@U012ABCDEF> `/gt upload demo` finished:"


def test_user_text_stays_escaped() -> None:
    (message,) = fit("status <!channel> & <@U0BOSS>", head="head <!here>")
    said = json.dumps(message.blocks) + message.text
    assert "<!channel>" not in said and "<@U0BOSS>" not in said and "<!here>" not in said
    assert "&lt;!channel&gt; &amp; &lt;@U0BOSS&gt;" in said
