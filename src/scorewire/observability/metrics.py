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

import contextlib
import math
from collections.abc import Mapping, Sequence

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
#: drift that adds up across processes and replicas: the served histogram as
#: counters, the reference beside it; deploy/prometheus/rules.yml computes the
#: fleet's PSI from them. Series per model version: Σ over features of their bins
#: (10 for a reference scorewire export wrote), each for both metrics.
FEATURE_BIN_ROWS = Counter(
    "scorewire_feature_bin_rows",
    "Estimated rows served whose value of one input feature fell in one reference bin (bin: its "
    "index, 0 = below the first edge): the drift monitor's sampled rows times their sampling "
    "weights, so not always whole numbers. Summed over replicas and divided by the feature's "
    "total, the served share of each bin.",
    ("model", "version", "feature", "bin"),
)
FEATURE_REFERENCE_SHARE = Gauge(
    "scorewire_feature_reference_share",
    "Share of the reference rows (reference.json) in one bin of one input feature.",
    ("model", "version", "feature", "bin"),
    multiprocess_mode="livemax",
)
DRIFT_SAMPLED_ROWS = Counter(
    "scorewire_drift_sampled_rows",
    "Rows the drift monitor binned (its sample, unweighted): the fleet PSI rule's measure of how "
    "much data a PSI rests on.",
    ("model", "version"),
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
FEEDBACK_FORWARDS = Counter(
    "scorewire_feedback_forwards",
    "Feedback calls this process forwarded to another (items it held no prediction for), by hop "
    "(worker: another worker of --workers; replica: one of --peers) and the call's gRPC status "
    "code (CANCELLED: no longer awaited, every item having been answered by another).",
    ("hop", "code"),
)


# ---------------------------------------------------- shadow versions (scorewire.service)
SHADOW_LABELS = ("model", "version", "serving_version")
SHADOW_REQUESTS = Counter(
    "scorewire_shadow_requests",
    "Copies of requests for a shadow version (version) of what serving_version answered, by outcome: "
    "compared, failed (the shadow could not score them), dropped (its queue was full).",
    (*SHADOW_LABELS, "outcome"),
)
SHADOW_ROWS = Counter(
    "scorewire_shadow_compared_rows",
    "Rows of one output of serving_version compared with the shadow version's.",
    (*SHADOW_LABELS, "output"),
)
SHADOW_DIFFERING_ROWS = Counter(
    "scorewire_shadow_differing_rows",
    "Rows of a label output where the shadow version's label differs from serving_version's "
    "(divided by scorewire_shadow_compared_rows_total: the share that differs).",
    (*SHADOW_LABELS, "output"),
)
SHADOW_VALUES = Counter(
    "scorewire_shadow_compared_values",
    "Values of a numeric output (probabilities, values, decisions) compared, shadow against serving_version.",
    (*SHADOW_LABELS, "output"),
)
SHADOW_ABS_DIFF = Counter(
    "scorewire_shadow_abs_diff",
    "Sum of the absolute differences of a numeric output, shadow against serving_version (divided by "
    "scorewire_shadow_compared_values_total: the mean absolute difference).",
    (*SHADOW_LABELS, "output"),
)
SHADOW_ABS_DIFF_MAX = Gauge(
    "scorewire_shadow_abs_diff_max",
    "Largest absolute difference of a numeric output, shadow against serving_version, since the shadow "
    "version loaded (under --workers: the largest of the workers').",
    (*SHADOW_LABELS, "output"),
    multiprocess_mode="livemax",
)
SHADOW_OUTCOMES = ("compared", "failed", "dropped")
#: the (serving version, output) series each shadow (model, version) has exported ("" output: requests)
_shadow_series: dict[tuple[str, int], set[tuple[str, str]]] = {}
_shadow_max: dict[tuple[str, int, str, str], float] = {}


def add_shadow_requests(model: str, version: int, serving_version: int, outcome: str, n: int) -> None:
    """Count ``n`` copies of requests for shadow ``version`` of what
    ``serving_version`` answered, by ``outcome`` (:data:`SHADOW_OUTCOMES`)."""
    serving = str(serving_version)
    series = _shadow_series.setdefault((model, version), set())
    if (serving, "") not in series:  # every outcome's series from the first on, at 0
        for o in SHADOW_OUTCOMES:
            SHADOW_REQUESTS.labels(model, str(version), serving, o)
        series.add((serving, ""))
    SHADOW_REQUESTS.labels(model, str(version), serving, outcome).inc(n)


def add_shadow_comparison(
    model: str, version: int, serving_version: int, output: str, kind: str,
    rows: int, differing_rows: int, values: int, abs_diff_sum: float, abs_diff_max: float,
) -> None:  # fmt: skip
    """Add one comparison of ``output`` (of ``serving_version``) with shadow
    ``version``: a label output's rows and differing rows, or a numeric output's
    values, sum and largest of their absolute differences."""
    labels = (model, str(version), str(serving_version), output)
    _shadow_series.setdefault((model, version), set()).add((labels[2], output))
    SHADOW_ROWS.labels(*labels).inc(rows)
    if kind == "label":
        SHADOW_DIFFERING_ROWS.labels(*labels).inc(differing_rows)
        return
    SHADOW_VALUES.labels(*labels).inc(values)
    SHADOW_ABS_DIFF.labels(*labels).inc(abs_diff_sum)
    key = (model, version, labels[2], output)
    if not math.isnan(abs_diff_max) and abs_diff_max > _shadow_max.get(key, -1.0):
        _shadow_max[key] = abs_diff_max
        SHADOW_ABS_DIFF_MAX.labels(*labels).set(abs_diff_max)


def _forget_shadow(model: str, version: int) -> None:
    """Drop an unloaded shadow version's series."""
    v = str(version)
    for serving, output in _shadow_series.pop((model, version), set()):
        if not output:
            for o in SHADOW_OUTCOMES:
                SHADOW_REQUESTS.remove(model, v, serving, o)
            continue
        if (model, version, serving, output) in _shadow_max:  # under --workers its last value stays: NaN
            SHADOW_ABS_DIFF_MAX.labels(model, v, serving, output).set(math.nan)
        for metric in (SHADOW_ROWS, SHADOW_DIFFERING_ROWS, SHADOW_VALUES, SHADOW_ABS_DIFF, SHADOW_ABS_DIFF_MAX):
            with contextlib.suppress(KeyError):  # a label output has no value series, and the other way round
                metric.remove(model, v, serving, output)
        _shadow_max.pop((model, version, serving, output), None)


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

    For the drift monitor: this process's PSI (the ``ScorewireFeatureDrift`` alert
    in deploy/prometheus/rules.yml reads the fleet's, from :func:`add_feature_bins`).
    Call it when the value changes (not per request).
    """
    FEATURE_PSI.labels(model, str(version), feature).set(psi)
    _psi_features.setdefault((model, version), set()).add(feature)


def add_feature_bins(
    model: str,
    version: int,
    features: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    sampled_rows: int,
) -> None:
    """Export one version's drift histogram for the fleet rule: for each feature
    (name, reference shares of its bins, estimated rows binned since the last call
    in each bin) add the rows to ``scorewire_feature_bin_rows_total`` and set
    ``scorewire_feature_reference_share``; add the rows binned to
    ``scorewire_drift_sampled_rows_total``. Every bin's counter exists from the
    first call on (at 0 when no row fell in it), so the rule sees empty bins.
    For the monitoring export, now and then (not per request)."""
    v = str(version)
    exported = _bin_series.setdefault((model, version), set())
    for feature, shares, rows in features:
        for i, (share, n) in enumerate(zip(shares, rows, strict=True)):
            b = str(i)
            FEATURE_REFERENCE_SHARE.labels(model, v, feature, b).set(share)
            FEATURE_BIN_ROWS.labels(model, v, feature, b).inc(n)
            exported.add((feature, b))
    DRIFT_SAMPLED_ROWS.labels(model, v).inc(sampled_rows)


#: the features whose PSI each (model, version) has exported
_psi_features: dict[tuple[str, int], set[str]] = {}
#: the (feature, bin) series each (model, version) has exported
_bin_series: dict[tuple[str, int], set[tuple[str, str]]] = {}
#: the (model, version)s whose feedback gauges have been exported
_feedback_exported: dict[tuple[str, int], set[str]] = {}


def _forget_monitoring(model: str, version: int) -> None:
    """Drop an unloaded version's drift and feedback series, so that no alert keeps
    reading its last values. (Under --workers a removed series' last value stays
    in the worker's file: a gauge is set to NaN first, which no alert fires on; a
    counter keeps its last value, so its rate falls to 0, and without a reference
    share the fleet PSI of the version is NaN.)"""
    v = str(version)
    for feature in _psi_features.pop((model, version), set()):
        FEATURE_PSI.labels(model, v, feature).set(math.nan)
        FEATURE_PSI.remove(model, v, feature)
    bins = _bin_series.pop((model, version), None)
    if bins is not None:
        for feature, b in bins:
            FEATURE_REFERENCE_SHARE.labels(model, v, feature, b).set(math.nan)
            FEATURE_REFERENCE_SHARE.remove(model, v, feature, b)
            FEATURE_BIN_ROWS.remove(model, v, feature, b)
        DRIFT_SAMPLED_ROWS.remove(model, v)
    names = _feedback_exported.pop((model, version), None)
    if names is not None:
        for name in names:
            FEEDBACK_QUALITY[name].labels(model, v).set(math.nan)
            FEEDBACK_QUALITY[name].remove(model, v)
        FEEDBACK_PENDING.labels(model, v).set(0)
        FEEDBACK_PENDING.remove(model, v)
    _forget_shadow(model, version)


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
