"""Model monitoring: input drift against reference statistics, and ground-truth
feedback joined to recent predictions (see each module's docstring)."""

from .drift import (
    PSI_ALERT,
    PSI_MODERATE,
    DriftConfig,
    DriftMonitor,
    DriftSnapshot,
    Reference,
    psi,
)
from .feedback import (
    FeedbackConfig,
    FeedbackItem,
    FeedbackMetrics,
    FeedbackStore,
    ItemResult,
    Outcome,
    OutputRoles,
    route_feedback,
)

__all__ = [
    "PSI_ALERT",
    "PSI_MODERATE",
    "DriftConfig",
    "DriftMonitor",
    "DriftSnapshot",
    "FeedbackConfig",
    "FeedbackItem",
    "FeedbackMetrics",
    "FeedbackStore",
    "ItemResult",
    "Outcome",
    "OutputRoles",
    "Reference",
    "psi",
    "route_feedback",
]
