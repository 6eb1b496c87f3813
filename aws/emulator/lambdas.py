"""Stand-ins for the Lambda functions a custom labeling job names, addressed by ARN.

No Lambda runs on this machine (moto's needs Docker), so the emulator answers for the functions
of the Ground Truth recipe that MARS deploys (aws-samples/aws-sagemaker-ground-truth-recipe,
`template.yaml`: GtRecipePreHumanTaskFunction and GtRecipeAnnotationConsolidationFunction). They
exist in every region of the emulated account, as the seeded workteams do; a lab's own ARNs can
be added with `GroundTruthEmulator.add_lambda`. A job that names any other function fails the
way a job whose Lambda cannot be invoked does: with a ClientError naming the ARN.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws.worker_task import recipe_pre_annotation

PRE_ANNOTATION = "pre-annotation"
CONSOLIDATION = "consolidation"
RECIPE_FUNCTIONS = {
    "GtRecipePreHumanTaskFunction": PRE_ANNOTATION,
    "GtRecipeAnnotationConsolidationFunction": CONSOLIDATION,
}
# The SageMaker model's pattern for both Lambda ARNs, plus an optional version or alias.
LAMBDA_ARN = re.compile(
    r"^arn:aws[a-z\-]*:lambda:(?P<region>[a-z0-9\-]+):(?P<account>\d{12}):function:"
    r"(?P<name>[A-Za-z0-9\-_]+)(?::[\w$-]+)?$"
)


@dataclass(frozen=True)
class LambdaStandIn:
    """A function the emulator can "invoke": what it is for, and, for a pre-annotation
    function, what it returns for one data object (the consolidation stand-in is the
    emulator's recipe-form output, see workforce.py)."""

    arn: str
    purpose: str
    handler: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def stand_in(purpose: str, arn: str) -> LambdaStandIn:
    if purpose == PRE_ANNOTATION:
        return LambdaStandIn(arn, purpose, recipe_pre_annotation)
    if purpose == CONSOLIDATION:
        return LambdaStandIn(arn, purpose)
    raise ValueError(
        f"a stand-in Lambda is for {PRE_ANNOTATION} or {CONSOLIDATION}, not {purpose!r}"
    )


def seeded(arn: str, account: str) -> LambdaStandIn | None:
    """The recipe's functions, in any region of the emulated account."""
    match = LAMBDA_ARN.match(arn)
    if match is None or match.group("account") != account:
        return None
    purpose = RECIPE_FUNCTIONS.get(match.group("name"))
    return stand_in(purpose, arn) if purpose else None
