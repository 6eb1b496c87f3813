"""What a keypoint job asked workers to place, independent of where the config came from.

The project model builds a `LabelSpec` from its validated config; `from_mapping` exists so the
results tools also work on a bare MARS `project-config.yml` (offline consolidation, tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from bot.errors import ConfigError


def normalise_label(label: str) -> str:
    """Workers' labels come back exactly as the template sent them, but hand-edited configs and
    older templates differ in case and spacing; matching on a normal form avoids false
    "unknown label" reports without accepting anything genuinely different."""
    return " ".join(label.split()).casefold()


@dataclass(frozen=True)
class LabelSpec:
    """Species, animals and keypoints of one job; labels are "<animal> <species> <keypoint>".

    With no animal names (a single unnamed animal, as MARS allows) labels are
    "<species> <keypoint>" and the animal is called by the species name in exports.
    """

    species: str
    animals: tuple[str, ...]
    keypoints: tuple[str, ...]
    check_pairs: tuple[tuple[str, str], ...]
    num_obj: int = 1

    def __post_init__(self) -> None:
        if not self.species.strip():
            raise ConfigError("`species` is empty: name the species, e.g. `species: mouse`.")
        if not self.keypoints:
            raise ConfigError("`keypoints` is empty: list the body parts, e.g. `[nose, tail]`.")
        if len(set(self.keypoints)) != len(self.keypoints):
            raise ConfigError("`keypoints` lists a body part twice: each name must be unique.")
        if len(set(self.animals)) != len(self.animals):
            raise ConfigError("`animal_names` lists an animal twice: each name must be unique.")
        if self.num_obj < 1:
            raise ConfigError(f"`num_obj` is {self.num_obj}: it must be 1 or more.")
        for pair in self.check_pairs:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ConfigError(
                    f"`check_pairs` entry {list(pair)} is not a pair of two different keypoints."
                )
            for name in pair:
                if name not in self.keypoints:
                    raise ConfigError(
                        f"`check_pairs` names {name!r}, which is not in `keypoints`: "
                        "use the keypoint names exactly as listed."
                    )
        labels = [normalise_label(label) for label in self.labels]
        if len(set(labels)) != len(labels):
            raise ConfigError(
                "Two labels read the same once animal, species and keypoint are joined: "
                "rename an animal or a keypoint."
            )

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> LabelSpec:
        """Read the MARS `project-config.yml` keys, naming the key at fault on bad input."""
        species = d.get("species")
        if not isinstance(species, str) or not species.strip():
            raise ConfigError("`species` is missing: add e.g. `species: mouse`.")
        animals = _str_list(d.get("animal_names"), "animal_names")
        keypoints = _str_list(d.get("keypoints"), "keypoints")
        raw_pairs = d.get("check_pairs") or []
        if not isinstance(raw_pairs, list):
            raise ConfigError(
                "`check_pairs` must be a list of pairs, e.g. `[[left ear, right ear]]`."
            )
        pairs: list[tuple[str, str]] = []
        for pair in raw_pairs:
            if not (
                isinstance(pair, list | tuple)
                and len(pair) == 2
                and all(isinstance(p, str) for p in pair)
            ):
                raise ConfigError(
                    f"`check_pairs` entry {pair!r} is not a pair of keypoint names, "
                    "e.g. `[left ear, right ear]`."
                )
            pairs.append((pair[0].strip(), pair[1].strip()))
        num_obj = d.get("num_obj", 1)
        if num_obj is None:
            num_obj = 1
        if isinstance(num_obj, bool) or not isinstance(num_obj, int):
            raise ConfigError(f"`num_obj` is {num_obj!r}: it must be a whole number such as 1.")
        return cls(
            species=species.strip(),
            animals=tuple(animals),
            keypoints=tuple(keypoints),
            check_pairs=tuple(pairs),
            num_obj=num_obj,
        )

    @property
    def animal_names(self) -> tuple[str, ...]:
        """Animals as exports name them: the species stands in for a single unnamed animal."""
        return self.animals or (self.species,)

    def label(self, animal: str, keypoint: str) -> str:
        if not self.animals:
            return f"{self.species} {keypoint}"
        return f"{animal} {self.species} {keypoint}"

    @cached_property
    def labels(self) -> tuple[str, ...]:
        """Label order is animal-major, keypoint-minor; every array in `bot.results` uses it."""
        return tuple(self.label(a, k) for a in self.animal_names for k in self.keypoints)

    @cached_property
    def label_index(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    @cached_property
    def normalised_label_index(self) -> dict[str, int]:
        return {normalise_label(label): i for i, label in enumerate(self.labels)}

    @property
    def n_labels(self) -> int:
        return len(self.animal_names) * len(self.keypoints)

    @property
    def n_slots(self) -> int:
        """Positions per worker answer: each label may be placed `num_obj` times."""
        return self.n_labels * self.num_obj

    @cached_property
    def pair_indices(self) -> tuple[tuple[int, int], ...]:
        """Keypoint-index pairs (within one animal) for left/right flip correction."""
        kp = {k: i for i, k in enumerate(self.keypoints)}
        return tuple((kp[a], kp[b]) for a, b in self.check_pairs)

    @cached_property
    def body_axis(self) -> tuple[int, int]:
        """Keypoints whose distance is the body length used to scale errors across animal sizes:
        nose to base of tail when both exist, otherwise the first and last keypoint."""
        kp = {k.casefold(): i for i, k in enumerate(self.keypoints)}
        if "nose" in kp and "base of tail" in kp:
            return kp["nose"], kp["base of tail"]
        return 0, len(self.keypoints) - 1


def _str_list(value: object, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"`{key}` must be a list of names, e.g. `{key}: [black, white]`.")
    return [v.strip() for v in value]
