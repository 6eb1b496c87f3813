"""What a keypoint job asked workers to place, and the one definition of a valid label set.

`label_problems` holds every rule about species, animals, `num_obj`, keypoints, left/right pairs
and `label_map`; `read_label_config` reads those keys from a config mapping (MARS's
`project-config.yml` keys unchanged) and applies the rules. The project model reports the
problems with file and line (`bot.project`); `LabelSpec.from_mapping` and `LabelSpec(...)` raise
them. So a config the bot accepts is exactly one the results code accepts.

Labels workers send back, in the forms gtbot understands:
- "<animal> <species> <keypoint>" (today's template, MARS's `generate_AWS_template`);
- "<species> <keypoint>" when there are no animal names (MARS's `animal_names: []`);
- the bare "<keypoint>" (MARS's 2019 template) when there is one animal, so it is unambiguous;
- anything else through `label_map: {"worker label": "label or bare keypoint"}`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from bot.errors import ConfigError

# A config is hand-written: these bounds only stop a hostile or mistaken file from making
# every later step (templates, arrays of workers x labels) unreasonably large.
MAX_LABELS = 200
MAX_NAME_CHARS = 100
MAX_NUM_OBJ = 20

Problems = list[tuple[str, str]]  # (key, message), key dotted like "check_pairs.0"


def normalise_label(label: str) -> str:
    """Workers' labels come back exactly as the template sent them, but hand-edited configs and
    older templates differ in case and spacing; matching on a normal form avoids false
    "unknown label" reports without accepting anything genuinely different."""
    return " ".join(label.split()).casefold()


def _names(value: object, key: str, example: str, problems: Problems) -> list[str] | None:
    """A list of non-empty names (a single name is taken as a list of one), or None."""
    if value is None:
        return []
    if isinstance(value, str) and value.strip():
        return [value.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        problems.append((key, f"must be a list of names, found {value!r}. Example: `{example}`."))
        return None
    return [v.strip() for v in value]


def read_label_config(d: Mapping[str, Any]) -> tuple[LabelSpec | None, Problems]:
    """The label spec of a config mapping and every problem with its label keys.

    `animal_names` may be empty (`[]`, or left blank): one unnamed animal, as MARS documents
    for single-animal projects (its template config says `animal_names: []` with `num_obj: 1`).
    """
    problems: Problems = []
    species = d.get("species")
    if species is None:
        problems.append(("species", "missing. Add it to the file, e.g. `species: mouse`."))
    elif not isinstance(species, str) or not species.strip():
        problems.append(
            ("species", f"must be non-empty text, found {species!r}. Example: `species: mouse`.")
        )
    animals = d.get("animal_names")
    if "animal_names" not in d:  # MARS requires the key too (`config['animal_names']`)
        problems.append(
            (
                "animal_names",
                "missing. Add e.g. `animal_names: [black, white]`, or `animal_names: []` for "
                "one unnamed animal.",
            )
        )
        animal_list = None
    elif isinstance(animals, str):  # one name written without brackets is not what MARS means
        problems.append(
            (
                "animal_names",
                f"must be a list of names, found {animals!r}. Example: "
                "`animal_names: [black, white]`, or `animal_names: []` for one unnamed animal.",
            )
        )
        animal_list = None
    else:
        animal_list = _names(animals, "animal_names", "animal_names: [black, white]", problems)
    raw_keypoints = d.get("keypoints")
    keypoints: list[str] | None = []
    if raw_keypoints is None:
        problems.append(
            ("keypoints", "missing. Add e.g. `keypoints: [nose, right ear, left ear]`.")
        )
    elif isinstance(raw_keypoints, str) or not (
        keypoints := _names(raw_keypoints, "keypoints", "keypoints: [nose, tail]", [])
    ):
        problems.append(
            ("keypoints", f"must be a list of body-part names, found {raw_keypoints!r}.")
        )
        keypoints = None
    num_obj = d.get("num_obj", 1)
    if num_obj is None:
        num_obj = 1
    if isinstance(num_obj, bool) or not isinstance(num_obj, int) or num_obj < 1:
        problems.append(
            (
                "num_obj",
                "must be a whole number of at least 1 (animals of each name per frame), "
                f"found {num_obj!r}.",
            )
        )
        num_obj = None
    pairs: list[tuple[str, str]] = []
    raw_pairs = d.get("check_pairs") or []
    if not isinstance(raw_pairs, list):
        problems.append(
            ("check_pairs", f"must be a list of [left, right] pairs, found {raw_pairs!r}.")
        )
        raw_pairs = []
    for i, pair in enumerate(raw_pairs):
        names = _names(pair, f"check_pairs.{i}", "[right ear, left ear]", [])
        if isinstance(pair, str) or not names or len(names) != 2:
            problems.append(
                (
                    f"check_pairs.{i}",
                    f"must be a pair like `[right ear, left ear]`, found {pair!r}.",
                )
            )
            continue
        pairs.append((names[0], names[1]))
    label_map: list[tuple[str, str]] = []
    raw_map = d.get("label_map") or {}
    if not isinstance(raw_map, dict):
        problems.append(
            (
                "label_map",
                "must map the labels workers sent to this project's labels, e.g. "
                f"`label_map: {{Nase: nose}}`; found {raw_map!r}.",
            )
        )
        raw_map = {}
    for key, value in raw_map.items():
        if not (isinstance(key, str) and key.strip() and isinstance(value, str) and value.strip()):
            problems.append(
                (f"label_map.{key}", f"maps {key!r} to {value!r}; both must be label text.")
            )
            continue
        label_map.append((key.strip(), value.strip()))
    if not isinstance(species, str) or not species.strip() or not keypoints:
        return None, problems
    # The rules run even when another key had the wrong type, so every problem shows at once.
    problems += label_problems(
        species.strip(), tuple(animal_list or ()), int(num_obj or 1), tuple(keypoints),
        tuple(pairs), tuple(label_map),
    )  # fmt: skip
    if problems or animal_list is None or num_obj is None:
        return None, problems
    spec = LabelSpec(
        species=species.strip(),
        animals=tuple(animal_list),
        keypoints=tuple(keypoints),
        check_pairs=tuple(pairs),
        num_obj=int(num_obj),
        label_map=tuple(label_map),
    )
    return spec, []


def label_problems(
    species: str,
    animals: tuple[str, ...],
    num_obj: int,
    keypoints: tuple[str, ...],
    check_pairs: tuple[tuple[str, str], ...],
    label_map: tuple[tuple[str, str], ...] = (),
) -> Problems:
    """Every rule a label set must meet, on values already of the right types."""
    problems: Problems = []
    if not species.strip():
        problems.append(("species", "is empty: name the species, e.g. `species: mouse`."))
    if not keypoints:
        problems.append(("keypoints", "is empty: list the body parts, e.g. `[nose, tail]`."))
    seen: set[str] = set()
    for kp in keypoints:
        if kp in seen:
            problems.append(
                ("keypoints", f"{kp!r} is listed twice; each keypoint must appear once.")
            )
        seen.add(kp)
    if len(set(animals)) != len(animals):
        problems.append(("animal_names", "names must be different from each other."))
    if num_obj < 1 or num_obj > MAX_NUM_OBJ:
        problems.append(("num_obj", f"is {num_obj}: it must be from 1 to {MAX_NUM_OBJ}."))
    too_long = [n for n in (species, *animals, *keypoints) if len(n) > MAX_NAME_CHARS]
    if too_long:
        problems.append(
            ("keypoints", f"{too_long[0][:40]!r}... is longer than {MAX_NAME_CHARS} characters.")
        )
    if max(len(animals), 1) * len(keypoints) * max(num_obj, 1) > MAX_LABELS:
        problems.append(
            (
                "keypoints",
                f"animals x keypoints x num_obj is more than {MAX_LABELS} points a frame.",
            )
        )
    for i, (first, second) in enumerate(check_pairs):
        for kp in (first, second):
            if keypoints and kp not in keypoints:
                match = difflib.get_close_matches(kp, keypoints, n=1, cutoff=0.75)
                fix = (
                    f" Did you mean {match[0]!r}?"
                    if match
                    else f" Known keypoints: {', '.join(keypoints)}."
                )
                problems.append((f"check_pairs.{i}", f"{kp!r} is not in `keypoints`.{fix}"))
        if first == second:
            problems.append((f"check_pairs.{i}", f"pairs a keypoint with itself ({first!r})."))
    if problems:
        return problems
    names = animals or (species,)
    canonical = [_label(species, animals, a, k) for a in names for k in keypoints]
    if len({normalise_label(label) for label in canonical}) != len(canonical):
        problems.append(
            (
                "keypoints",
                "two labels read the same once animal, species and keypoint are joined: "
                "rename an animal or a keypoint.",
            )
        )
        return problems
    known = _direct_labels(species, animals, keypoints)
    for worker_label, target in label_map:
        index = known.get(normalise_label(target))
        if index is None:
            examples = ", ".join(repr(label) for label in canonical[:3])
            problems.append(
                (
                    f"label_map.{worker_label}",
                    f"maps to {target!r}, which is not a label of this project; map it to one "
                    f"of its labels ({examples}, ...)"
                    + (" or a keypoint name." if len(names) == 1 else "."),
                )
            )
        elif (
            normalise_label(worker_label) in known and known[normalise_label(worker_label)] != index
        ):
            problems.append(
                (
                    f"label_map.{worker_label}",
                    f"{worker_label!r} is already a label of this project; it cannot mean "
                    f"{target!r} too.",
                )
            )
    return problems


def _label(species: str, animals: tuple[str, ...], animal: str, keypoint: str) -> str:
    if not animals:
        return f"{species} {keypoint}"
    return f"{animal} {species} {keypoint}"


def _direct_labels(
    species: str, animals: tuple[str, ...], keypoints: tuple[str, ...]
) -> dict[str, int]:
    """Normalised label -> label index for the labels gtbot reads without a `label_map`: the
    full labels, and with a single animal also "<species> <keypoint>" and the bare keypoint."""
    names = animals or (species,)
    out: dict[str, int] = {}
    for a, animal in enumerate(names):
        for k, keypoint in enumerate(keypoints):
            out[normalise_label(_label(species, animals, animal, keypoint))] = (
                a * len(keypoints) + k
            )
    if len(names) == 1:
        for k, keypoint in enumerate(keypoints):
            for alias in (f"{species} {keypoint}", keypoint):
                out.setdefault(normalise_label(alias), k)
    return out


@dataclass(frozen=True)
class LabelSpec:
    """Species, animals and keypoints of one job; labels are "<animal> <species> <keypoint>".

    With no animal names (a single unnamed animal, as MARS allows) labels are
    "<species> <keypoint>" and the animal is called by the species name in exports.
    `label_map` pairs (worker label, project label or keypoint) for any other spelling.
    """

    species: str
    animals: tuple[str, ...]
    keypoints: tuple[str, ...]
    check_pairs: tuple[tuple[str, str], ...]
    num_obj: int = 1
    label_map: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        problems = label_problems(
            self.species,
            self.animals,
            self.num_obj,
            self.keypoints,
            self.check_pairs,
            self.label_map,
        )
        if problems:
            raise ConfigError(_joined(problems))

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> LabelSpec:
        """Read the MARS `project-config.yml` keys, naming the key at fault on bad input."""
        spec, problems = read_label_config(d)
        if spec is None:
            raise ConfigError(_joined(problems))
        return spec

    @property
    def animal_names(self) -> tuple[str, ...]:
        """Animals as exports name them: the species stands in for a single unnamed animal."""
        return self.animals or (self.species,)

    def label(self, animal: str, keypoint: str) -> str:
        return _label(self.species, self.animals, animal, keypoint)

    @cached_property
    def labels(self) -> tuple[str, ...]:
        """Label order is animal-major, keypoint-minor; every array in `bot.results` uses it."""
        return tuple(self.label(a, k) for a in self.animal_names for k in self.keypoints)

    @cached_property
    def label_index(self) -> dict[str, int]:
        """Every exact label text gtbot reads -> label index: the labels themselves, the
        single-animal short forms and the `label_map` entries."""
        out = {label: i for i, label in enumerate(self.labels)}
        for alias, index in self._aliases.items():
            out.setdefault(alias, index)
        return out

    @cached_property
    def normalised_label_index(self) -> dict[str, int]:
        direct = _direct_labels(self.species, self.animals, self.keypoints)
        out = dict(direct)
        for worker_label, target in self.label_map:
            out[normalise_label(worker_label)] = direct[normalise_label(target)]
        return out

    @cached_property
    def _aliases(self) -> dict[str, int]:
        """Exact-text forms other than the labels (the fast path matches exact text only)."""
        out: dict[str, int] = {}
        if len(self.animal_names) == 1:
            for k, keypoint in enumerate(self.keypoints):
                out.setdefault(f"{self.species} {keypoint}", k)
                out.setdefault(keypoint, k)
        direct = _direct_labels(self.species, self.animals, self.keypoints)
        for worker_label, target in self.label_map:
            out[worker_label] = direct[normalise_label(target)]
        return out

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


def _joined(problems: Problems) -> str:
    return "\n".join(f"`{key}`: {message}" for key, message in problems)
