"""Who may do what, where: GTBOT_ADMINS, GTBOT_SUBMITTERS and GTBOT_CHANNELS.

Ids starting with S are Slack user groups, resolved through usergroups.users.list and cached
for a few minutes so a click does not wait on Slack each time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.commands import Command
from bot.errors import PermissionDeniedError
from bot.settings import Settings
from bot.state import Store

log = logging.getLogger("gtbot.auth")
GROUP_CACHE_SECONDS = 300


class Authorizer:
    def __init__(
        self, settings: Settings, client: Any, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.client = client
        self._clock = clock  # a test's own clock moves the group cache's age
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def _members(self, group: str) -> frozenset[str]:
        with self._lock:
            cached = self._groups.get(group)
            if cached and self._clock() - cached[0] < GROUP_CACHE_SECONDS:
                return cached[1]
        try:
            users = frozenset(self.client.usergroups_users_list(usergroup=group).get("users", []))
        except SlackApiError as exc:
            log.warning("cannot read user group %s: %s", group, exc.response.get("error"))
            users = frozenset()
        with self._lock:
            self._groups[group] = (self._clock(), users)
        return users

    def _in(self, user: str, ids: frozenset[str]) -> bool:
        if user in ids:
            return True
        return any(user in self._members(i) for i in ids if i.startswith("S"))

    def channel_allowed(self, channel: str) -> bool:
        return not self.settings.channels or channel in self.settings.channels

    def is_admin(self, user: str) -> bool:
        return self._in(user, self.settings.admins)

    def is_submitter(self, user: str) -> bool:
        return self.is_admin(user) or self._in(user, self.settings.submitters)

    def check_channel(self, channel: str) -> None:
        if not self.channel_allowed(channel):
            raise PermissionDeniedError(
                "gtbot does not answer in this channel. Use it in one of the channels in "
                "GTBOT_CHANNELS, or ask an admin to add this one."
            )

    def check_command(
        self, cmd: Command, user: str, channel: str, options: dict[str, str | bool] | None = None
    ) -> None:
        """Reading is open in allowed channels; spending needs a submitter (or an admin)."""
        self.check_channel(channel)
        if not cmd.spends_with(options or {}) or self.is_submitter(user):
            return
        if not self.settings.submitters and not self.settings.admins:
            raise PermissionDeniedError(
                f"`{cmd.name}` changes AWS or the lab's files, and no one may run it yet. Set "
                "GTBOT_SUBMITTERS (and GTBOT_ADMINS) to Slack user ids (U...) or user-group "
                "ids (S...), comma-separated, and restart gtbot."
            )
        raise PermissionDeniedError(
            f"`{cmd.name}` changes AWS or the lab's files; only submitters may run it. Ask an "
            "admin to add you (or your user group) to GTBOT_SUBMITTERS."
        )

    def check_job_control(self, store: Store, job_name: str, user: str, verb: str) -> None:
        """Stopping a job, unwatching someone else's watch, moving a card to another channel.

        Watching is reading, so whoever watches a job gains nothing by it. A job launched from
        Slack belongs to the person who asked for its plan; any other job to the submitters.
        Admins may do all of it. Rights are those of the settings now, so someone removed from
        GTBOT_SUBMITTERS loses them even for a job launched before the restart.
        """
        if self.is_admin(user):
            return
        plan = store.plan_for_job(job_name)
        slack_launched = plan is not None and plan.state in ("launching", "launched")
        launcher = plan.requested_by if plan is not None and slack_launched else None
        if launcher is not None and user != launcher:
            raise PermissionDeniedError(
                f"Only the person who launched this job, or an admin, may {verb} it."
            )
        if not self.is_submitter(user):
            raise PermissionDeniedError(
                f"Only a submitter, or an admin, may {verb} {job_name}"
                + (" (you launched it, but are no longer in GTBOT_SUBMITTERS)" if launcher else "")
                + ". Ask an admin to add you (or your user group) to GTBOT_SUBMITTERS."
            )
