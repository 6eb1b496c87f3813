"""What any process does with one batch of frames: everything the batch alone determines."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bot.results.agreement import AgreementPart, agreement_part
from bot.results.consensus import FloatArray, consensus_batch
from bot.results.exports import BatchEncoder, BatchTexts
from bot.results.pictures import PreviewCandidate, PreviewPicker
from bot.results.reader import FrameBatch
from bot.results.spec import LabelSpec


@dataclass(frozen=True, slots=True)
class BatchResult:
    """All a batch contributes to a consolidation. It depends on the batch alone, so either
    process may compute it; the caller folds results in manifest order."""

    texts: BatchTexts
    agreement: AgreementPart
    preview: list[PreviewCandidate]


class BatchWork:
    """Consensus, export text, agreement figures and preview candidates of one batch."""

    def __init__(self, spec: LabelSpec, dlc_folder: str) -> None:
        self.spec = spec
        self.encoder = BatchEncoder(spec, dlc_folder)
        self.picker = PreviewPicker()

    def __call__(self, batch: FrameBatch) -> BatchResult:
        consensus = consensus_batch(batch.coords, self.spec)
        return BatchResult(
            self.encoder.encode(batch, consensus),
            agreement_part(self.spec, consensus, batch.workers, worker_seconds(batch)),
            self.picker.candidates(batch, consensus),
        )


def worker_seconds(batch: FrameBatch) -> FloatArray:
    """(B, W) the seconds each worker spent, NaN where not reported (padding included)."""
    seconds = np.full(batch.coords.shape[:2], math.nan, dtype=np.float64)
    for b, spent in enumerate(batch.seconds):
        if spent.count(None) != len(spent):
            seconds[b, : len(spent)] = [math.nan if s is None else s for s in spent]
    return seconds
