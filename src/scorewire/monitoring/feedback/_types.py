"""The data of feedback: items and their outcomes, the store's bounds, which
outputs a store reads, and the metrics it reports."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
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
        """The roles of a model's outputs: a native model states them; for others
        they are read off the signature (a 1-D integer or string output is the
        label, a 2-D float output of a classifier the probabilities, the first
        float output of a regressor the value)."""
        spec = getattr(model, "spec", None)
        named = getattr(spec, "outputs", None)
        if isinstance(named, Mapping):
            by_role: dict[str, str] = {}
            for name, role in named.items():
                by_role.setdefault(role, name)
            return cls(by_role.get("label"), by_role.get("probabilities"), by_role.get("value"))
        sig = model.signature
        label = proba = value = None
        for o in sig.outputs:
            if len(o.shape) == 1 and o.dtype in ("int64", "int32", "object") and label is None:
                label = o.name
            elif o.dtype in ("float32", "float64"):
                if sig.task == "classification" and len(o.shape) == 2 and proba is None:
                    proba = o.name
                elif sig.task == "regression" and value is None:
                    value = o.name
        return cls(label, proba, value)


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
