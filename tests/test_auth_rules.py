"""Who may do what (handlers/auth.py) as pure rules: a Slack client and a store we control,
a clock we move. The flows through Slack are in test_slack_permissions and test_job_permissions."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError

from bot.commands import COMMANDS
from bot.errors import PermissionDeniedError
from bot.settings import Settings
from handlers.auth import GROUP_CACHE_SECONDS, Authorizer


@dataclass
class Groups:
    """usergroups.users.list as Slack answers it; a group in `broken` answers an error."""

    members: dict[str, list[str]]
    broken: set[str] = field(default_factory=set)
    asked: list[str] = field(default_factory=list)

    def usergroups_users_list(self, usergroup: str) -> dict[str, Any]:
        self.asked.append(usergroup)
        if usergroup in self.broken:
            raise SlackApiError("no", {"ok": False, "error": "no_such_subteam"})
        if usergroup not in self.members:
            return {"ok": True}  # an answer without its list grants nothing
        return {"ok": True, "users": self.members[usergroup]}


@dataclass
class Plan:
    state: str
    requested_by: str


@dataclass
class Plans:
    by_job: dict[str, Plan]

    def plan_for_job(self, job_name: str) -> Plan | None:
        return self.by_job.get(job_name)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _auth(
    admins: str = "", submitters: str = "", channels: str = "", groups: Groups | None = None
) -> tuple[Authorizer, Groups, Clock]:
    def ids(text: str) -> frozenset[str]:
        return frozenset(filter(None, text.split(",")))

    settings = Settings(
        projects_dir=Path("."),
        database_url="sqlite://",
        lab_config_path=None,
        admins=ids(admins),
        submitters=ids(submitters),
        channels=ids(channels),
    )
    groups = groups or Groups({})
    clock = Clock()
    return Authorizer(settings, groups, clock=clock), groups, clock


def test_user_groups_are_read_once_per_five_minutes() -> None:
    auth, groups, clock = _auth(submitters="U1,S9", groups=Groups({"S9": ["U2"]}))
    assert auth.is_submitter("U1") and groups.asked == []  # a plain id needs no Slack call
    assert auth.is_submitter("U2") and not auth.is_submitter("U3")
    assert groups.asked == ["S9"]  # the second question was answered from the cache
    groups.members["S9"] = ["U3"]
    clock.now += GROUP_CACHE_SECONDS - 0.5
    assert auth.is_submitter("U2") and groups.asked == ["S9"]
    clock.now += 0.5  # five minutes old: asked again, and the group has changed
    assert auth.is_submitter("U3") and not auth.is_submitter("U2")
    assert groups.asked == ["S9", "S9"]
    assert GROUP_CACHE_SECONDS == 300


def test_a_group_slack_cannot_read_grants_nothing_and_is_not_asked_again_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth, groups, _ = _auth(admins="S1", submitters="S2,S3", groups=Groups({"S2": ["U2"]}, {"S1"}))
    with caplog.at_level(logging.WARNING, logger="gtbot.auth"):
        assert not auth.is_admin("U2") and auth.is_submitter("U2")
        assert not auth.is_admin("U1") and not auth.is_submitter("U1")
    assert sorted(groups.asked) == ["S1", "S2", "S3"]  # each asked once
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("gtbot.auth", "cannot read user group S1: no_such_subteam")
    ]
    # A user id that is not a group id is never looked up as one.
    auth, groups, _ = _auth(admins="U5,W7", groups=Groups({"U5": ["U1"], "W7": ["U1"]}))
    assert not auth.is_admin("U1") and groups.asked == []


def test_admins_are_submitters_and_channels_are_open_when_none_are_set() -> None:
    auth, _, _ = _auth(admins="UA")
    assert auth.is_admin("UA") and auth.is_submitter("UA") and not auth.is_admin("UB")
    assert auth.channel_allowed("C1") and auth.channel_allowed("")
    auth, _, _ = _auth(channels="C1,C2")
    assert auth.channel_allowed("C2") and not auth.channel_allowed("C3")
    with pytest.raises(PermissionDeniedError) as info:
        auth.check_channel("C3")
    assert info.value.user_message == (
        "gtbot does not answer in this channel. Use it in one of the channels in "
        "GTBOT_CHANNELS, or ask an admin to add this one."
    )


def test_commands_that_spend_need_a_submitter_word_for_word() -> None:
    submit, status, results = COMMANDS["submit"], COMMANDS["status"], COMMANDS["results"]
    nobody, _, _ = _auth()
    nobody.check_command(status, "U1", "C1")  # reading is open
    with pytest.raises(PermissionDeniedError) as info:
        nobody.check_command(submit, "U1", "C1")
    assert info.value.user_message == (
        "`submit` changes AWS or the lab's files, and no one may run it yet. Set "
        "GTBOT_SUBMITTERS (and GTBOT_ADMINS) to Slack user ids (U...) or user-group ids "
        "(S...), comma-separated, and restart gtbot."
    )
    only_admins, _, _ = _auth(admins="UA")
    only_admins.check_command(submit, "UA", "C1")
    for some_set in (only_admins, _auth(submitters="US")[0]):  # someone can ask an admin
        with pytest.raises(PermissionDeniedError, match="; only submitters may run it"):
            some_set.check_command(submit, "U1", "C1")
    lab, _, _ = _auth(admins="UA", submitters="US", channels="C1")
    lab.check_command(submit, "US", "C1")
    with pytest.raises(PermissionDeniedError) as info:
        lab.check_command(submit, "U1", "C1")
    assert info.value.user_message == (
        "`submit` changes AWS or the lab's files; only submitters may run it. Ask an admin to "
        "add you (or your user group) to GTBOT_SUBMITTERS."
    )
    with pytest.raises(PermissionDeniedError, match="does not answer in this channel"):
        lab.check_command(status, "UA", "C2")  # the channel comes first, even for an admin
    # A flag can make a reading command write; without it, anyone may read.
    flag = results.spending_flags[0]
    lab.check_command(results, "U1", "C1", {flag: False})
    with pytest.raises(PermissionDeniedError, match="only submitters"):
        lab.check_command(results, "U1", "C1", {flag: True})


def test_who_may_control_a_job_word_for_word() -> None:
    auth, _, _ = _auth(admins="UA", submitters="U1,U2")
    plans = Plans(
        {
            "slack-job": Plan("launched", "U1"),
            "launching-job": Plan("launching", "U1"),
            "failed-plan": Plan("failed", "U1"),
            "left-job": Plan("launched", "U9"),
        }
    )
    for job in ("slack-job", "launching-job", "other-job", "left-job"):
        auth.check_job_control(plans, job, "UA", "stop")  # admins may do all of it
    auth.check_job_control(plans, "slack-job", "U1", "stop")
    with pytest.raises(PermissionDeniedError) as info:
        auth.check_job_control(plans, "launching-job", "U2", "stop")
    assert info.value.user_message == (
        "Only the person who launched this job, or an admin, may stop it."
    )
    # A plan that never launched, or a job launched elsewhere, belongs to the submitters.
    auth.check_job_control(plans, "failed-plan", "U2", "stop")
    auth.check_job_control(plans, "other-job", "U2", "move")
    with pytest.raises(PermissionDeniedError) as info:
        auth.check_job_control(plans, "other-job", "U3", "move")
    assert info.value.user_message == (
        "Only a submitter, or an admin, may move other-job. Ask an admin to add you (or your "
        "user group) to GTBOT_SUBMITTERS."
    )
    with pytest.raises(PermissionDeniedError) as info:
        auth.check_job_control(plans, "left-job", "U9", "stop")
    assert info.value.user_message == (
        "Only a submitter, or an admin, may stop left-job (you launched it, but are no longer in "
        "GTBOT_SUBMITTERS). Ask an admin to add you (or your user group) to GTBOT_SUBMITTERS."
    )
