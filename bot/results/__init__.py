"""Results post-processing: MARS consensus, training exports, agreement figures, pictures."""

from bot.results.agreement import KeypointAgreement
from bot.results.consolidation import (
    ConsolidationSummary,
    NothingConsolidatedError,
    ResultFiles,
    consolidate,
)
from bot.results.reader import Problem, local_worker_response_fetch
from bot.results.spec import LabelSpec

__all__ = [
    "ConsolidationSummary",
    "KeypointAgreement",
    "LabelSpec",
    "NothingConsolidatedError",
    "Problem",
    "ResultFiles",
    "consolidate",
    "local_worker_response_fetch",
]
