"""Links gtbot posts: the lifetime every one is signed for (one function, so no message can state
an expiry that the signing credentials will not honour), and a titled list of them that each edge
shows its own way: a terminal prints the URLs, Slack shows each as a name (`<url|name>`), since a
presigned URL is hundreds of characters that nobody reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws import s3
from bot.context import Context


def signing_lifetime(ctx: Context) -> s3.LinkLifetime:
    """GTBOT_LINK_HOURS, cut to the signing credentials' expiry when they expire sooner."""
    return s3.link_lifetime(ctx.settings.link_hours * 3600, ctx.clients.credentials_expire_at())


@dataclass(frozen=True)
class Links:
    """A titled list of (name, url), e.g. "Links (valid for 24 h)" and the results' files."""

    title: str
    items: tuple[tuple[str, str], ...] = ()

    def lines(self) -> list[str]:
        """As a terminal shows them: the title, then `name: url` per line."""
        return [f"{self.title}:"] + [f"  {name}: {url}" for name, url in self.items]

    def __add__(self, other: Links) -> Links:
        return Links(self.title, self.items + other.items)

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "items": [list(item) for item in self.items]}

    @classmethod
    def from_json(cls, data: Any) -> Links | None:
        """Links stored in a step record; None for an older record without them."""
        if not isinstance(data, dict):
            return None
        items = tuple((str(n), str(u)) for n, u in data.get("items") or [])
        return cls(str(data.get("title") or "Links"), items)
