"""Model monitoring: input drift against reference statistics (see the module
docstring of :mod:`scorewire.monitoring.drift`)."""

from .drift import (
    PSI_ALERT,
    PSI_MODERATE,
    DriftConfig,
    DriftMonitor,
    DriftSnapshot,
    Reference,
    psi,
)

__all__ = [
    "PSI_ALERT",
    "PSI_MODERATE",
    "DriftConfig",
    "DriftMonitor",
    "DriftSnapshot",
    "Reference",
    "psi",
]
