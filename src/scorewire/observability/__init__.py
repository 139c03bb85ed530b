"""Observability: Prometheus metrics and OpenTelemetry traces.

For the rest of scorewire (the edge, the core, the drift monitor):

* :func:`set_feature_psi` — export a feature's drift in this process as
  ``scorewire_feature_psi{model,version,feature}`` (for dashboards; the drift
  alert reads the fleet's PSI, made from the counters below);
* :data:`FEATURE_PSI_METRIC` — that metric's name;
* :func:`add_feature_bins` — export a version's drift histogram as counters
  (``scorewire_feature_bin_rows_total{model,version,feature,bin}``), its reference
  shares (``scorewire_feature_reference_share``) and its sample size
  (``scorewire_drift_sampled_rows_total``), from which the fleet PSI recording
  rule in deploy/prometheus/rules.yml is computed;
* :func:`set_feedback` — export a version's rolling feedback metrics
  (``scorewire_feedback_accuracy``, ``_log_loss``, ``_roc_auc``, ``_rmse``, ``_mae``),
  its feedback items by outcome and its predictions waiting for feedback;
* :func:`add_shadow_requests`, :func:`add_shadow_comparison` — count a shadow
  version's mirrored requests by outcome and how far it disagrees with the serving
  version (``scorewire_shadow_*``).

Everything else (the metric objects, the tracer) is private to the request path:
``scorewire.observability.metrics`` and ``scorewire.observability.tracing``.
"""

from .metrics import (
    add_feature_bins,
    add_shadow_comparison,
    add_shadow_requests,
    set_feature_psi,
    set_feedback,
)

FEATURE_PSI_METRIC = "scorewire_feature_psi"

__all__ = [
    "FEATURE_PSI_METRIC",
    "add_feature_bins",
    "add_shadow_comparison",
    "add_shadow_requests",
    "set_feature_psi",
    "set_feedback",
]
