"""The data of feedback: items and their outcomes, the store's bounds, which
outputs a store reads, and the metrics it reports."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any


class Outcome(enum.Enum):
    """What happened to one feedback item."""

    MATCHED = "matched"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"
    INVALID = "invalid"


@dataclass(frozen=True)
class FeedbackItem:
    """The ground truth of one earlier request: one label or value per row."""

    request_id: str
    truth: Any  # a sequence or array with one entry per row of the request


@dataclass(frozen=True)
class ItemResult:
    """The outcome of one :class:`FeedbackItem`."""

    request_id: str
    outcome: Outcome
    message: str = ""  # why, for INVALID


@dataclass(frozen=True)
class FeedbackConfig:
    """How much a :class:`FeedbackStore` remembers."""

    #: predictions waiting for feedback: at most this many requests …
    max_requests: int = 100_000
    #: … holding at most this many rows …
    max_rows: int = 1_000_000
    #: … none older than this (seconds)
    max_age_s: float = 3600.0
    #: joined rows the rolling metrics cover
    window_rows: int = 10_000
    #: ids of expired and answered requests remembered (to report EXPIRED / DUPLICATE):
    #: at least half this many, at most this many
    remembered_ids: int = 100_000

    def __post_init__(self) -> None:
        if min(self.max_requests, self.max_rows, self.window_rows, self.remembered_ids) < 1 or self.max_age_s <= 0:
            raise ValueError("feedback limits must be positive")


@dataclass(frozen=True)
class OutputRoles:
    """Which output names carry the label, the probabilities and the value."""

    label: str | None = None
    probabilities: str | None = None
    value: str | None = None

    @classmethod
    def of_model(cls, model: Any) -> OutputRoles:
        """The outputs a model's signature declares for each role."""
        sig = model.signature
        return cls(sig.output_for("label"), sig.output_for("probabilities"), sig.output_for("value"))


@dataclass(frozen=True)
class FeedbackMetrics:
    """Rolling quality and feedback counts of one model version."""

    task: str  # "classification" | "regression"
    #: joined rows the quality metrics cover (the last ``window_rows``)
    window_rows: int
    accuracy: float = math.nan
    log_loss: float = math.nan
    roc_auc: float = math.nan  # two-class classifiers only
    rmse: float = math.nan
    mae: float = math.nan
    #: predictions recorded, and those waiting for feedback now
    recorded: int = 0
    pending: int = 0
    #: feedback items by outcome
    matched: int = 0
    unknown: int = 0
    expired: int = 0
    duplicate: int = 0
    invalid: int = 0
    #: joined rows since the start
    matched_rows: int = 0
