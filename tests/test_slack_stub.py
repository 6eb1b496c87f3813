"""The Slack stub refuses what Slack refuses (each method's "Errors" table on docs.slack.dev),
so a defect that real Slack would answer with an error cannot pass the other tests.

Driven with a plain WebClient (no retry handlers), as any Slack client would see the answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_stub import MAX_BLOCKS, SECTION_TEXT, SlackStub


@pytest.fixture
def slack() -> Iterator[SlackStub]:
    stub = SlackStub()
    yield stub
    stub.stop()


def _client(stub: SlackStub, token: str | None = "xoxb-test") -> WebClient:
    return WebClient(token=token, base_url=stub.api_url)


def _error(call: object) -> str:
    with pytest.raises(SlackApiError) as caught:
        call()  # type: ignore[operator]
    return str(caught.value.response["error"])


def _section(text: str) -> dict[str, object]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def test_tokens_are_checked(slack: SlackStub) -> None:
    assert _error(lambda: _client(slack, None).auth_test()) == "not_authed"
    assert _error(lambda: _client(slack, "nonsense").auth_test()) == "invalid_auth"
    assert _error(lambda: _client(slack, "xapp-1").chat_postMessage(channel="C", text="x")) == (
        "not_allowed_token_type"
    )
    slack.revoke("xoxb-test")
    assert _error(lambda: _client(slack).chat_postMessage(channel="C", text="x")) == "invalid_auth"


def test_channels_are_checked(slack: SlackStub) -> None:
    client = _client(slack)
    slack.gone_channels.add("CGONE")
    slack.outside_channels.add("COUT")
    assert _error(lambda: client.chat_postMessage(channel="CGONE", text="x")) == (
        "channel_not_found"
    )
    assert _error(lambda: client.chat_postMessage(channel="COUT", text="x")) == "not_in_channel"
    assert _error(lambda: client.chat_postMessage(channel="", text="x")) == "channel_not_found"


def test_block_kit_limits_answer_invalid_blocks(slack: SlackStub) -> None:
    client = _client(slack)
    for blocks in (
        [_section("x")] * (MAX_BLOCKS + 1),
        [_section("x" * (SECTION_TEXT + 1))],
        [{"type": "header", "text": {"type": "mrkdwn", "text": "a header is plain_text"}}],
        [{"type": "actions", "elements": []}],
        [{"type": "section"}],
    ):
        assert _error(
            lambda b=blocks: client.chat_postMessage(channel="C", text="t", blocks=b)
        ) == ("invalid_blocks")
    assert client.chat_postMessage(channel="C", text="t", blocks=[_section("x")] * MAX_BLOCKS)["ok"]
    with pytest.warns(UserWarning, match="text"):  # slack_sdk warns too
        assert _error(lambda: client.chat_postMessage(channel="C")) == "no_text"


def test_a_deleted_or_foreign_message_cannot_be_edited(slack: SlackStub) -> None:
    client = _client(slack)
    ts = str(client.chat_postMessage(channel="C", text="card")["ts"])
    assert client.chat_update(channel="C", ts=ts, text="card, updated")["ok"]
    slack.delete("C", ts)
    assert _error(lambda: client.chat_update(channel="C", ts=ts, text="x")) == "message_not_found"
    assert _error(lambda: client.chat_update(channel="C", ts="1.000001", text="x")) == (
        "message_not_found"
    )
    assert _error(lambda: client.chat_postMessage(channel="C", thread_ts=ts, text="x")) == (
        "thread_not_found"
    )
    theirs = slack.post_as("C", "a person's message")
    assert _error(lambda: client.chat_update(channel="C", ts=theirs, text="x")) == (
        "cant_update_message"
    )


def test_a_deleted_parent_with_replies_keeps_its_thread(slack: SlackStub) -> None:
    client = _client(slack)
    ts = str(client.chat_postMessage(channel="C", text="card")["ts"])
    client.chat_postMessage(channel="C", thread_ts=ts, text="reply")
    slack.delete("C", ts)
    assert client.chat_postMessage(channel="C", thread_ts=ts, text="later")["ok"]
    assert _error(lambda: client.chat_update(channel="C", ts=ts, text="x")) == "message_not_found"


def test_rate_limits_answer_429_with_retry_after(slack: SlackStub) -> None:
    slack.rate_limit_next, slack.retry_after = 1, 2
    with pytest.raises(SlackApiError) as caught:
        _client(slack).chat_postMessage(channel="C", text="x")
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] in ("2", ["2"])
    assert caught.value.response["error"] == "ratelimited"
    started = time.monotonic()
    assert _client(slack).chat_postMessage(channel="C", text="x")["ok"]  # the next call passes
    assert time.monotonic() - started < 1.0
