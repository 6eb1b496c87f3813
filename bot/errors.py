"""Expected failures carry a message meant for the person who typed the command.

The edges (console, Slack) render `GtBotError.user_message`; anything else is a bug and is
reported with a trace id instead of a stack trace.
"""

from __future__ import annotations


class GtBotError(Exception):
    """A problem the user can fix; `user_message` says what was wrong and what to do."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


class ConfigError(GtBotError):
    """A project or lab configuration problem, found before any AWS call."""


class UsageError(GtBotError):
    """A command typed wrongly: unknown verb, missing or extra arguments."""


class NotFoundError(GtBotError):
    """A project, job or file that does not exist."""


class AwsError(GtBotError):
    """An AWS call failed in a way the user can act on (permissions, names, limits)."""


class PermissionDeniedError(GtBotError):
    """The caller may not run this command here."""


class NameInUseError(AwsError):
    """A labeling job with this name exists already (names are unique forever)."""
