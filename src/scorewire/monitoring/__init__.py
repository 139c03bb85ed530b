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
from .shadow import OutputDisagreement, ShadowMonitor, ShadowSnapshot

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
    "OutputDisagreement",
    "OutputRoles",
    "Reference",
    "ShadowMonitor",
    "ShadowSnapshot",
    "psi",
    "route_feedback",
]
