"""What any process does with one batch of frames: everything the batch alone determines."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bot.results.agreement import AgreementPart, agreement_part
from bot.results.consensus import BatchConsensus, FloatArray, consensus_batch
from bot.results.exports import BatchEncoder, BatchTexts, FrameRows
from bot.results.pictures import PreviewCandidate, PreviewPicker
from bot.results.reader import FrameBatch
from bot.results.robust import robust_batch
from bot.results.spec import LabelSpec

# The consensus estimators: MARS's median with flip correction, and gtbot's robust one
# (bot/results/robust.py).
CONSENSUS_METHODS = ("median", "robust")


@dataclass(frozen=True, slots=True)
class BatchResult:
    """All a batch contributes to a consolidation. It depends on the batch alone, so either
    process may compute it; the caller folds results in manifest order."""

    texts: BatchTexts
    agreement: AgreementPart
    preview: list[PreviewCandidate]
    frames: bytes = b""  # its rows of frames.csv


class BatchWork:
    """Consensus, export text, agreement figures and preview candidates of one batch."""

    def __init__(self, spec: LabelSpec, dlc_folder: str, consensus: str = "median") -> None:
        if consensus not in CONSENSUS_METHODS:
            raise ValueError(f"unknown consensus {consensus!r}")
        self.spec = spec
        self.consensus = consensus
        self.encoder = BatchEncoder(spec, dlc_folder)
        self.frame_rows = FrameRows()
        self.picker = PreviewPicker()

    def estimate(self, batch: FrameBatch) -> BatchConsensus:
        if self.consensus == "robust":
            known = [w for w in batch.widths if w is not None]
            width = float(np.median(known)) if known else 1000.0
            return robust_batch(batch.coords, self.spec, batch.workers, width)
        return consensus_batch(batch.coords, self.spec)

    def __call__(self, batch: FrameBatch) -> BatchResult:
        consensus = self.estimate(batch)
        return BatchResult(
            self.encoder.encode(batch, consensus),
            agreement_part(self.spec, consensus, batch.workers, worker_seconds(batch)),
            self.picker.candidates(batch, consensus),
            self.frame_rows.encode(batch, consensus),
        )


def worker_seconds(batch: FrameBatch) -> FloatArray:
    """(B, W) the seconds each worker spent, NaN where not reported (padding included)."""
    seconds = np.full(batch.coords.shape[:2], math.nan, dtype=np.float64)
    for b, spent in enumerate(batch.seconds):
        if spent.count(None) != len(spent):
            seconds[b, : len(spent)] = [math.nan if s is None else s for s in spent]
    return seconds
