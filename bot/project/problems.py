"""Problems of one config file, each pinned to a line and a key, reported all at once, and
the examples the messages show."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot import yamlio
from bot.errors import ConfigError


def yaml_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path to its 1-based line, so messages can say where to look."""
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yamlio.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = str(key_node.value)
                lines[path + (key,)] = key_node.start_mark.line + 1
                walk(value_node, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (str(i),)] = item.start_mark.line + 1
                walk(item, path + (str(i),))

    if root is not None:
        walk(root, ())
    return lines


@dataclass
class ConfigProblems:
    """Collects every problem of one config, each pinned to a file, a line and a key."""

    file: Path
    lines: dict[tuple[str, ...], int]
    items: list[str] = field(default_factory=list)

    def add(self, key: str, message: str, *, source: str | None = None) -> None:
        path = tuple(key.split("."))
        where = source
        if where is None:
            line = self.lines.get(path)
            while line is None and len(path) > 1:
                path = path[:-1]
                line = self.lines.get(path)
            where = f"{self.file}, line {line}" if line else str(self.file)
        self.items.append(f"{where}, key `{key}`: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            count = len(self.items)
            head = f"{self.file} has {count} problem{'s' if count > 1 else ''}:"
            raise ConfigError(head + "\n" + "\n".join(f"- {item}" for item in self.items))


def suggest(key: str, choices: set[str]) -> str | None:
    match = difflib.get_close_matches(key, sorted(choices), n=1, cutoff=0.75)
    return match[0] if match else None


def check_known_keys(
    raw: Mapping[Any, Any],
    known: set[str],
    section: str,
    unknown: str,
    p: ConfigProblems,
    *,
    source: str | None = None,
) -> None:
    """Report each key of a section the bot does not know, with the nearest known one."""
    for key in raw:
        if key not in known:
            hint = suggest(str(key), known)
            p.add(
                f"{section}.{key}",
                unknown
                + (
                    f" Did you mean `{hint}`?"
                    if hint
                    else f" Known settings: {', '.join(sorted(known))}."
                ),
                source=source,
            )


def as_str_list(value: Any) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        return [v.strip() for v in value]
    return None


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


EXAMPLES = {
    "species": "species: mouse",
    "data_bucket": "data_bucket: lab-mouse-sagemaker",
    "template_bucket": "template_bucket: lab-mouse-sagemaker-ui",
    "output_bucket": "output_bucket: lab-mouse-sagemaker-output",
    "region": "region: us-east-1",
    "header": "header: Label body parts of the two mice.",
    "short_instructions": "short_instructions: Click on each body part.",
    "full_instructions": "full_instructions: <p>Detailed instructions</p>",
    "job.title": "title: Label mouse body parts",
    "job.description": "description: Click on each body part of each mouse",
}
