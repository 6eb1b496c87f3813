"""The lifetime every link gtbot posts is signed for: one function, so no message can state an
expiry that the signing credentials will not honour."""

from __future__ import annotations

from aws import s3
from bot.context import Context


def signing_lifetime(ctx: Context) -> s3.LinkLifetime:
    """GTBOT_LINK_HOURS, cut to the signing credentials' expiry when they expire sooner."""
    return s3.link_lifetime(ctx.settings.link_hours * 3600, ctx.clients.credentials_expire_at())
