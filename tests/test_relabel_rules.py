"""The adaptive policy's settings, the frame rules of `relabel`, follow-up names and the choice
of frames: pure logic, no AWS."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from aws.groundtruth import JOB_NAME_RE
from bot.errors import ConfigError, UsageError
from bot.jobs.adaptive import AdaptivePolicy, FrameRule
from bot.jobs.relabel import FrameRow, NothingToRelabelError, choose, followup_name, read_frames
from bot.project import load_project

SAMPLES = Path(__file__).parent / "samples"
PUBLIC = "arn:aws:sagemaker:us-east-2:394669845002:workteam/public-crowd/default"
VENDOR = "arn:aws:sagemaker:us-east-2:123456789012:workteam/vendor-crowd/some-vendor"


def _load(tmp_path: Path, job: dict[str, Any]) -> Any:
    data = yaml.safe_load((SAMPLES / "project-config.yml").read_text())
    data["job"].update(job)
    project = tmp_path / "proj"
    project.mkdir(exist_ok=True)
    (project / "project-config.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    return load_project(tmp_path, "proj")


def test_a_valid_policy_and_its_defaults(tmp_path: Path) -> None:
    project = _load(
        tmp_path,
        {"workteam_arn": PUBLIC, "price_usd": 0.036, "adaptive": {"budget_usd": 25.999}},
    )
    policy = project.job.adaptive
    assert policy == AdaptivePolicy(FrameRule("worst", 25.0, True), 1, 3, Decimal("25.99"))
    assert AdaptivePolicy.from_dict(policy.as_dict()) == policy
    assert project.job.consensus_for(rounds=False) == "robust"  # adaptive: robust by default
    assert "up to 3 rounds" in policy.text() and "$25.99 in all" in policy.text()
    largest = {"workteam_arn": PUBLIC, "price_usd": 0.036, "adaptive": {"budget_usd": 10_000_000}}
    assert _load(tmp_path, largest).job.adaptive.budget_usd == Decimal("10000000.00")
    plain = _load(tmp_path, {})
    assert plain.job.adaptive is None and plain.job.consensus_for(rounds=False) == "median"
    assert plain.job.consensus_for(rounds=True) == "robust"
    chosen = _load(tmp_path, {"consensus": "median", "adaptive": {"select": "spread 12"}})
    assert chosen.job.consensus_for(rounds=True) == "median"
    assert chosen.job.adaptive.select == FrameRule("spread", 12.0)


BAD = [
    ({"adaptive": "yes"}, "job.adaptive`: must be a mapping"),
    ({"adaptive": {"selct": "worst 10"}}, "Did you mean `select`?"),
    ({"adaptive": {"select": "best 10"}}, "write `worst N`"),
    ({"adaptive": {"select": "worst 120%"}}, "at most 100 %"),
    ({"adaptive": {"select": "spread 5%"}}, "takes pixels"),
    ({"adaptive": {"workers_per_round": 0}}, "from 1 to 9"),
    ({"adaptive": {"max_rounds": 9}}, "from 2 to 5"),
    (
        {"workers_per_image": 9, "adaptive": {"workers_per_round": 9, "max_rounds": 5}},
        "could get 45 answers",
    ),
    ({"adaptive": {"budget_usd": 10}}, "a private team takes no price per task"),
    ({"workteam_arn": PUBLIC, "price_usd": 0.036, "adaptive": {}}, "need a cap"),
    ({"workteam_arn": PUBLIC, "price_usd": 0.036, "adaptive": {"budget_usd": "lots"}}, "positive"),
    ({"workteam_arn": PUBLIC, "price_usd": 0.036, "adaptive": {"budget_usd": -3}}, "positive"),
    ({"workteam_arn": PUBLIC, "price_usd": 0.036, "adaptive": {"budget_usd": 0}}, "found 0."),
    ({"workteam_arn": PUBLIC, "price_usd": 0.036, "adaptive": {"budget_usd": True}}, "found True"),
    (
        {"workteam_arn": PUBLIC, "price_usd": 0.036, "adaptive": {"budget_usd": ".nan"}},
        "found '.nan'",
    ),
    (
        {"workteam_arn": PUBLIC, "price_usd": 0.036, "adaptive": {"budget_usd": 10_000_000.01}},
        "10000000.01 is not a plausible budget.",
    ),
    ({"workteam_arn": VENDOR, "adaptive": {}}, "vendor workforce sets its own price"),
    ({"consensus": "mean"}, "must be `median`"),
]


@pytest.mark.parametrize(("job", "expected"), BAD, ids=[b[1][:30] for b in BAD])
def test_bad_policies_name_the_key_and_the_fix(
    tmp_path: Path, job: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, job)
    assert expected in info.value.user_message
    assert ", line " in info.value.user_message


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("worst 25%", FrameRule("worst", 25.0, True)),
        ("WORST 40", FrameRule("worst", 40.0)),
        ("spread 12", FrameRule("spread", 12.0)),
        ("spread 7.5 px", FrameRule("spread", 7.5)),
    ],
)
def test_frame_rules(text: str, rule: FrameRule) -> None:
    assert FrameRule.parse(text) == rule
    assert FrameRule.parse(rule.text()) == rule


@pytest.mark.parametrize("text", ["worst", "worst 0", "worst 2.5", "worst 10px", "spread 0", "x"])
def test_bad_frame_rules_say_how_to_write_them(text: str) -> None:
    with pytest.raises(UsageError, match="--worst"):
        FrameRule.parse(text, "--worst")


def test_follow_up_names_fit_ground_truth_and_differ_per_root() -> None:
    assert followup_name("mice-20260101120000", 2) == "mice-20260101120000-r2"
    long_a, long_b = "a" * 62 + "x", "a" * 62 + "y"
    names = {followup_name(root, n) for root in (long_a, long_b) for n in (2, 3, 12)}
    assert len(names) == 6
    assert all(len(n) <= 63 and JOB_NAME_RE.match(n) for n in names)
    assert followup_name(long_a, 12).endswith("-r12")


def _rows(uncertainty: list[float], spread: list[float], workers: int = 3) -> list[FrameRow]:
    return [
        FrameRow(f"s3://b/f{i}.jpg", i + 1, workers, u, s)
        for i, (u, s) in enumerate(zip(uncertainty, spread, strict=True))
    ]


def test_choosing_frames() -> None:
    rows = _rows([5.0, 20.0, 8.0, 30.0, math.nan], [4.0, 25.0, 9.0, 12.0, 2.0])
    worst = choose(rows, FrameRule("worst", 40.0, True), 1)
    assert [r.image_id for r in worst.frames] == [2, 4]  # manifest order
    assert "2 of 5 frames" in worst.reason and "mean expected error is 25.0 px" in worst.reason
    assert "the other frames' 6.5 px" in worst.reason
    spread = choose(rows, FrameRule("spread", 10.0), 2)
    assert [r.image_id for r in spread.frames] == [2, 4]
    capped = choose(rows, FrameRule("worst", 3.0), 1, most=1)
    assert [r.image_id for r in capped.frames] == [4]
    assert "the budget left pays for 1 of the 3 it picked" in capped.reason
    # Ranked by spread when the results used the median (no expected error).
    median = choose(_rows([math.nan] * 3, [3.0, 9.0, 1.0]), FrameRule("worst", 1.0), 1)
    assert [r.image_id for r in median.frames] == [2] and "mean spread" in median.reason
    with pytest.raises(NothingToRelabelError, match="no frame has a keypoint"):
        choose(rows, FrameRule("spread", 50.0), 1)
    with pytest.raises(NothingToRelabelError, match="budget left"):
        choose(rows, FrameRule("worst", 2.0), 1, most=0)
    with pytest.raises(NothingToRelabelError, match="as many answers as gtbot uses"):
        choose(_rows([9.0], [9.0], workers=31), FrameRule("worst", 1.0), 2)


def test_frames_csv_is_read_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "frames.csv"
    path.write_text(
        "frame,image_id,n_workers,rounds,uncertainty,spread\r\n"
        "s3://b/a.jpg,1,3,1,4.5,7.25\r\n"
        "'=x.jpg,2,5,2,,3.0\r\n"
        "broken,row\r\n"
    )
    rows = read_frames(path)
    assert [(r.source_ref, r.image_id, r.workers, r.spread) for r in rows] == [
        ("s3://b/a.jpg", 1, 3, 7.25),
        ("=x.jpg", 2, 5, 3.0),
    ]
    assert rows[0].uncertainty == 4.5 and math.isnan(rows[1].uncertainty)


# The `adaptive` section as a lab default (gtbot.yml): every message word for word, pinned to
# where the section came from, not to a line of project-config.yml.
LAB = "lab default (gtbot.yml)"
PINNED = f"{LAB}, key `job.adaptive"


def _adaptive(raw: Any, kind: str | None = "public", first: int = 5) -> tuple[Any, list[str]]:
    from bot.project.adaptive_settings import validate_adaptive
    from bot.project.problems import ConfigProblems

    p = ConfigProblems(Path("project-config.yml"), {("job", "adaptive"): 7})
    return validate_adaptive(raw, kind, first, p, LAB), p.items


ADAPTIVE_MESSAGES = [
    (
        "yes",
        "public",
        [
            f"{PINNED}`: must be a mapping, found 'yes'. Example: `adaptive: {{select: worst 25%, "
            "workers_per_round: 1, max_rounds: 3, budget_usd: 40}`."
        ],
    ),
    (
        {"selct": "worst 10", "budget_usd": 5},
        "public",
        [f"{PINNED}.selct`: unknown setting. Did you mean `select`?"],
    ),
    (
        {"budget_usd": 5},
        "vendor",
        [
            f"{PINNED}`: a vendor workforce sets its own price, which gtbot cannot see, so it "
            "cannot keep automatic rounds within a budget. Remove `adaptive` and run "
            "`relabel <job>` when you want another round."
        ],
    ),
    (
        {"select": "best 3", "budget_usd": 5},
        "public",
        [
            f"{PINNED}.select`: `select` is 'best 3'; write `worst N` (the N least certain "
            "frames), `worst N%` (that share of them) or `spread PX` (frames with a keypoint "
            "whose workers are PX pixels apart or more), e.g. `worst 25%`."
        ],
    ),
    (
        {"workers_per_round": 9, "max_rounds": 5, "budget_usd": 5},
        "public",
        [
            f"{PINNED}`: a frame could get 41 answers in all (5 + 4 rounds x 9); gtbot uses at "
            "most 32 a frame. Lower max_rounds or workers_per_round."
        ],
    ),
    (
        {"max_rounds": 1, "budget_usd": 5},
        "public",
        [f"{PINNED}.max_rounds`: must be a whole number from 2 to 5, found 1."],
    ),
    (
        {},
        "public",
        [
            f"{PINNED}.budget_usd`: automatic rounds on the public crowd spend money without "
            "anyone clicking Launch, so they need a cap: add e.g. `budget_usd: 40` (US dollars "
            "of worker pay for all rounds together, the first included)."
        ],
    ),
    (
        {"budget_usd": 0},
        "public",
        [f"{PINNED}.budget_usd`: must be a positive number of US dollars, found 0."],
    ),
    (
        {"budget_usd": 10},
        "private",
        [
            f"{PINNED}.budget_usd`: a private team takes no price per task, so there is no "
            "worker pay to cap; rounds are bounded by `max_rounds`. Remove `budget_usd`."
        ],
    ),
    (
        {"budget_usd": 2e7},
        "public",
        [f"{PINNED}.budget_usd`: 20000000.0 is not a plausible budget."],
    ),
]


@pytest.mark.parametrize(
    ("raw", "kind", "expected"), ADAPTIVE_MESSAGES, ids=[m[2][0][37:70] for m in ADAPTIVE_MESSAGES]
)
def test_adaptive_messages_word_for_word(raw: Any, kind: str, expected: list[str]) -> None:
    policy, items = _adaptive(raw, kind)
    assert items == expected
    assert policy is None


def test_adaptive_edges_are_accepted() -> None:
    # 32 answers a frame is the most (5 + 3 rounds x 9), a budget under a dollar is a budget.
    policy, items = _adaptive(
        {"select": "spread 4", "workers_per_round": 9, "max_rounds": 4, "budget_usd": 0.5}
    )
    assert items == []
    assert policy == AdaptivePolicy(FrameRule("spread", 4.0), 9, 4, Decimal("0.50"))
    policy, items = _adaptive({"workers_per_round": 2, "max_rounds": 5}, kind="private", first=3)
    assert items == [] and policy == AdaptivePolicy(FrameRule("worst", 25.0, True), 2, 5, None)
