"""Observability: Prometheus metrics and OpenTelemetry traces.

For the rest of scorewire (the edge, the core, the drift monitor):

* :func:`set_feature_psi` — export a feature's drift as
  ``scorewire_feature_psi{model,version,feature}`` (the gauge the ``drift`` alert
  rule in deploy/prometheus/rules.yml reads);
* :data:`FEATURE_PSI_METRIC` — that metric's name;
* :func:`set_feedback` — export a version's rolling feedback metrics
  (``scorewire_feedback_accuracy``, ``_log_loss``, ``_roc_auc``, ``_rmse``, ``_mae``),
  its feedback items by outcome and its predictions waiting for feedback.

Everything else (the metric objects, the tracer) is private to the request path:
``scorewire.observability.metrics`` and ``scorewire.observability.tracing``.
"""

from .metrics import set_feature_psi, set_feedback

FEATURE_PSI_METRIC = "scorewire_feature_psi"

__all__ = ["FEATURE_PSI_METRIC", "set_feature_psi", "set_feedback"]
