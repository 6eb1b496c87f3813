"""Reading and writing gtbot's YAML files (project configs, gtbot.yml) as hostile input.

A config file is written by whoever can write to the projects folder, and `/gt jobs` and
`/gt status` read every project's file: one file must never be able to stall or crash those
for everyone. So a file is size-checked before it is read, must be UTF-8, and may not use
anchors and aliases (`&a` / `*a`): a few hundred bytes of nested aliases expand to gigabytes
("billion laughs"), and no MARS or gtbot config needs them. Values written into a config go
through the YAML emitter, so no value can ever become a key of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bot.errors import ConfigError

# A generous MARS config with long HTML instructions is a few kilobytes; 256 KiB is two orders
# of magnitude above any real one and small enough to parse in milliseconds.
MAX_CONFIG_BYTES = 256 * 1024


class _AliasRefused(yaml.YAMLError):
    def __init__(self, mark: yaml.Mark) -> None:
        super().__init__("alias")
        self.problem_mark = mark


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases at the event level, before anything is expanded."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise _AliasRefused(self.peek_event().start_mark)
        return super().compose_node(parent, index)


def read_config_text(path: Path) -> str:
    """The file's text, refusing files too large to be a config and text that is not UTF-8."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: more than {MAX_CONFIG_BYTES // 1024} KiB, far larger than any gtbot or MARS "
            "config. Is this the right file? Keep long instructions short or in the image."
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}). Save the file "
            "as UTF-8 in your editor."
        ) from None


def _where(path: Path, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"{path}, line {mark.line + 1}" if mark is not None else str(path)


def load(text: str, path: Path) -> Any:
    """Parse one YAML document without aliases; every failure is a ConfigError naming the line."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except _AliasRefused as exc:
        raise ConfigError(
            f"{_where(path, exc)}: anchors and aliases (`&name` / `*name`) are not allowed in "
            "gtbot config files. Write the value out in full where it is used."
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{_where(path, exc)}: this is not valid YAML ({getattr(exc, 'problem', exc)}). "
            "Check indentation and quote text that contains `:` or `#`."
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{path}: nested too deeply to be a config file. Write lists and mappings flat."
        ) from None


def compose(text: str) -> yaml.Node | None:
    """The node tree (for line numbers); only called on text `load` has accepted."""
    return yaml.compose(text, Loader=_NoAliasLoader)  # type: ignore[no-any-return]


def load_file(path: Path) -> tuple[str, Any]:
    text = read_config_text(path)
    return text, load(text, path)


# YAML line breaks: besides \n and \r, NEL and the Unicode line and paragraph separators end a
# line for a YAML parser (YAML 1.1 §5.4) even where shell-style splitting saw one word.
YAML_LINE_BREAKS = frozenset("\n\r\x85\u2028\u2029")


def scalar(value: str | int | None) -> str:
    """One value as a YAML scalar, by PyYAML's emitter: plain where plain is unambiguous, else
    quoted with line breaks and every non-ASCII character escaped, so whatever the value holds
    it reads back as this one value."""
    dumped = yaml.safe_dump(value, allow_unicode=False, width=10**6)
    dumped = dumped.removesuffix("\n...\n").rstrip("\n")
    if "\n" in dumped:  # a multi-line scalar would depend on the indentation around it
        dumped = yaml.safe_dump(value, allow_unicode=False, width=10**6, default_style='"')
        dumped = dumped.rstrip("\n")
    return dumped


def comment_text(value: str) -> str:
    """Text placed inside a `#` comment: a line break in it is written escaped (`\\u2028`), so
    it cannot end the comment and start a key."""
    return "".join(
        ch.encode("unicode_escape").decode() if ch in YAML_LINE_BREAKS else ch for ch in value
    )
