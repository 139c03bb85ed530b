"""Prometheus metrics: every name, label and bucket scorewire exports, in one place.

The metric objects are module globals in prometheus-client's default registry. The
request path never formats a label: it takes the label children of a model version
(:class:`VersionMetrics`) or of an RPC once, caches them, and only observes.

Under ``--workers N`` each worker writes its values to prometheus-client's
multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor before
the worker starts) and the supervisor serves their sum; each gauge says how its
workers' values combine (``multiprocess_mode``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

#: seconds: from a 1-row native score (~10 µs) to a slow request
SECONDS_BUCKETS = (
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536, 262144, 1048576)

#: the states a model version is in (scorewire.repository.State values)
MODEL_STATES = ("LOADING", "READY", "FAILED", "UNLOADED")

# ------------------------------------------------------------------ per request (edge)
REQUEST_DURATION = Histogram(
    "scorewire_request_duration_seconds",
    "Time from the start of a scoring request to its response (or error), by model version and RPC.",
    ("model", "version", "rpc"),
    buckets=SECONDS_BUCKETS,
)
REQUESTS = Counter(
    "scorewire_requests",
    "Scoring requests answered, by model version, RPC and gRPC status code (a stream counts each "
    "message). model and version are empty when the request named no loaded model.",
    ("model", "version", "rpc", "code"),
)
IN_FLIGHT = Gauge(
    "scorewire_requests_in_flight",
    "Scoring requests being answered now, by RPC.",
    ("rpc",),
    multiprocess_mode="livesum",
)

# ------------------------------------------------------------- per model version (core)
QUEUE_WAIT = Histogram(
    "scorewire_queue_wait_seconds",
    "Time a request waited in its model version's batching queue.",
    ("model", "version"),
    buckets=SECONDS_BUCKETS,
)
SCORING = Histogram(
    "scorewire_scoring_duration_seconds",
    "Time the model took to score one batch (a request that is not batched is its own batch).",
    ("model", "version"),
    buckets=SECONDS_BUCKETS,
)
BATCH_ROWS = Histogram(
    "scorewire_batch_rows",
    "Rows the model scored at once (a request that is not batched is its own batch).",
    ("model", "version"),
    buckets=ROWS_BUCKETS,
)
QUEUE_ROWS = Gauge(
    "scorewire_queue_rows",
    "Rows waiting in a model version's batching queue.",
    ("model", "version"),
    multiprocess_mode="livesum",
)
MODEL_STATE = Gauge(
    "scorewire_model_state",
    "1 for the state a model version is in, 0 for the others (under --workers: the number of "
    "workers where it is in that state).",
    ("model", "version", "state"),
    multiprocess_mode="livesum",
)
FEATURE_PSI = Gauge(
    "scorewire_feature_psi",
    "Population stability index of one input feature: served inputs against the reference "
    "statistics (under --workers: the largest of the workers' values).",
    ("model", "version", "feature"),
    multiprocess_mode="livemax",
)


# ------------------------------------------------------ feedback (scorewire.monitoring)
#: the rolling quality gauges; each is set for the tasks it applies to
FEEDBACK_QUALITY = {
    name: Gauge(
        f"scorewire_feedback_{name}",
        f"{text} of a model version over its last joined feedback rows (the rolling window); "
        "NaN until feedback with what it needs arrives (under --workers: one series per worker).",
        ("model", "version"),
        multiprocess_mode="liveall",
    )
    for name, text in (
        ("accuracy", "Accuracy (classifiers)"),
        ("log_loss", "Log-loss (classifiers with probabilities)"),
        ("roc_auc", "ROC AUC (two-class classifiers with probabilities)"),
        ("rmse", "Root mean squared error (regressors)"),
        ("mae", "Mean absolute error (regressors)"),
    )
}
FEEDBACK_ITEMS = Counter(
    "scorewire_feedback_items",
    "Feedback items by outcome: matched, unknown (no such request id), expired (the prediction "
    "left the window first), duplicate, invalid (the truth does not fit the prediction).",
    ("model", "version", "outcome"),
)
FEEDBACK_PENDING = Gauge(
    "scorewire_feedback_pending",
    "Recorded predictions (requests with a request id) waiting for feedback.",
    ("model", "version"),
    multiprocess_mode="livesum",
)
FEEDBACK_OUTCOMES = ("matched", "unknown", "expired", "duplicate", "invalid")


class VersionMetrics:
    """The label children of one model version, made once (``labels()`` per request
    would cost microseconds)."""

    __slots__ = ("batch_rows", "queue_rows", "queue_wait", "scoring")

    def __init__(self, model: str, version: int) -> None:
        labels = (model, str(version))
        self.queue_wait = QUEUE_WAIT.labels(*labels)
        self.scoring = SCORING.labels(*labels)
        self.batch_rows = BATCH_ROWS.labels(*labels)
        self.queue_rows = QUEUE_ROWS.labels(*labels)

    def scored(self, seconds: float, rows: int) -> None:
        """One batch (or unbatched request) of ``rows`` rows took ``seconds``."""
        self.scoring.observe(seconds)
        self.batch_rows.observe(rows)


_versions: dict[tuple[str, int], VersionMetrics] = {}


def version_metrics(model: str, version: int) -> VersionMetrics:
    """The cached :class:`VersionMetrics` of a model version."""
    vm = _versions.get((model, version))
    if vm is None:
        vm = _versions[(model, version)] = VersionMetrics(model, version)
    return vm


_exported_states: dict[str, set[int]] = {}


def set_model_states(model: str, states: Mapping[int, str]) -> None:
    """Export the state of each version of ``model`` (``{}``: unloaded); versions
    exported before and missing now go to UNLOADED."""
    versions = set(states)
    for version in _exported_states.get(model, set()) - versions:
        for state in MODEL_STATES:
            MODEL_STATE.labels(model, str(version), state).set(1 if state == "UNLOADED" else 0)
        _forget_monitoring(model, version)
    for version, current in states.items():
        for state in MODEL_STATES:
            MODEL_STATE.labels(model, str(version), state).set(1 if state == current else 0)
    _exported_states[model] = versions


def set_feature_psi(model: str, version: int, feature: str, psi: float) -> None:
    """Export the drift of one feature: ``scorewire_feature_psi{model,version,feature}``.

    For the drift monitor; the ``ScorewireFeatureDrift`` alert in
    deploy/prometheus/rules.yml reads this gauge. Call it when the value changes
    (not per request).
    """
    FEATURE_PSI.labels(model, str(version), feature).set(psi)
    _psi_features.setdefault((model, version), set()).add(feature)


#: the features whose PSI each (model, version) has exported
_psi_features: dict[tuple[str, int], set[str]] = {}
#: the (model, version)s whose feedback gauges have been exported
_feedback_exported: dict[tuple[str, int], set[str]] = {}


def _forget_monitoring(model: str, version: int) -> None:
    """Drop an unloaded version's drift and feedback gauges, so that no alert keeps
    reading its last values. (Under --workers a removed series' last value stays
    in the worker's file: it is set to NaN first, which no alert fires on.)"""
    v = str(version)
    for feature in _psi_features.pop((model, version), set()):
        FEATURE_PSI.labels(model, v, feature).set(math.nan)
        FEATURE_PSI.remove(model, v, feature)
    names = _feedback_exported.pop((model, version), None)
    if names is not None:
        for name in names:
            FEEDBACK_QUALITY[name].labels(model, v).set(math.nan)
            FEEDBACK_QUALITY[name].remove(model, v)
        FEEDBACK_PENDING.labels(model, v).set(0)
        FEEDBACK_PENDING.remove(model, v)


_feedback_counted: dict[tuple[str, int, str], int] = {}


def set_feedback(
    model: str, version: int, quality: Mapping[str, float], outcomes: Mapping[str, int], pending: int
) -> None:
    """Export one version's feedback: the rolling ``quality`` metrics given (names of
    :data:`FEEDBACK_QUALITY`), the items by outcome (``outcomes``: running totals,
    exported as counter increments) and the predictions waiting. For the
    monitoring export, now and then (not per request)."""
    labels = (model, str(version))
    _feedback_exported.setdefault((model, version), set()).update(quality)
    for name, value in quality.items():
        FEEDBACK_QUALITY[name].labels(*labels).set(value)
    for outcome in FEEDBACK_OUTCOMES:
        total = outcomes.get(outcome, 0)
        key = (model, version, outcome)
        before = _feedback_counted.get(key, 0)
        if total < before:  # the version was reloaded: its store counts from zero
            before = 0
        if total > before:
            FEEDBACK_ITEMS.labels(*labels, outcome).inc(total - before)
        _feedback_counted[key] = total
    FEEDBACK_PENDING.labels(*labels).set(pending)
