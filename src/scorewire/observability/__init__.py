"""Observability: Prometheus metrics and OpenTelemetry traces.

For the rest of scorewire (the edge, the core, the drift monitor):

* :func:`set_feature_psi` — export a feature's drift as
  ``scorewire_feature_psi{model,version,feature}`` (the gauge the ``drift`` alert
  rule in deploy/prometheus/rules.yml reads);
* :data:`FEATURE_PSI_METRIC` — that metric's name.

Everything else (the metric objects, the tracer) is private to the request path:
``scorewire.observability._metrics`` and ``scorewire.observability._tracing``.
"""

from ._metrics import set_feature_psi

FEATURE_PSI_METRIC = "scorewire_feature_psi"

__all__ = ["FEATURE_PSI_METRIC", "set_feature_psi"]
