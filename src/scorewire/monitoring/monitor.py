"""One model version's monitors, as the repository creates them and the service
feeds them.

A :class:`VersionMonitor` is made when a version loads: its drift monitor from the
version directory's ``reference.json`` (none without one; a malformed one fails the
load, naming the file) and its feedback store from the model's signature. The
service calls :meth:`VersionMonitor.after_predict` once per answered request and
hands it a ``defer`` function so that the occasional heavier step (binning a full
stash of sampled rows, moving recorded predictions into the feedback window) runs
after the request that made it due, not inside it (the service's: on the event
loop after the current step, or on its monitoring thread from other threads).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..formats.files import DEFAULT, ModelFiles
from ..formats.reference import REFERENCE_FILE
from ..tensors import rows_of
from ..types import Inputs
from .drift import DriftMonitor, DriftSnapshot
from .feedback import FeedbackMetrics, FeedbackStore
from .shadow import ShadowMonitor, ShadowSnapshot

log = logging.getLogger("scorewire.monitoring")

#: why a version has no drift monitor
NO_REFERENCE = f"no {REFERENCE_FILE} beside the model"
NOT_TABULAR = "drift is monitored on one float matrix of features; this model takes other inputs"


@dataclass(frozen=True)
class RequestSummary:
    """A version's requests, from the Prometheus histograms (when metrics are on)."""

    answered: int  # of every status
    errors: int  # answered with a status other than OK
    latency_mean_s: float
    latency_p50_s: float  # estimated from the buckets, as histogram_quantile does
    latency_p99_s: float


@dataclass(frozen=True)
class VersionStats:
    """What ``GetModelStats`` reports for one model version."""

    version: int
    state: str
    #: requests answered by this version and rows scored, since it loaded
    requests: int
    rows: int
    latency: RequestSummary | None  # None: the server exports no metrics
    drift: DriftSnapshot | None  # None: no reference.json, or a model that is not tabular
    feedback: FeedbackMetrics | None
    #: as a shadow version: its disagreement with each version that served
    shadow: tuple[ShadowSnapshot, ...] = ()
    #: why drift is None ("" when it is not)
    drift_reason: str = ""


class VersionMonitor:
    """Drift and feedback of one model version, and its request counts."""

    __slots__ = ("drift", "drift_reason", "feedback", "requests", "rows", "shadow", "wired")

    def __init__(self, drift: DriftMonitor | None, feedback: FeedbackStore, drift_reason: str = "") -> None:
        self.drift = drift
        #: why there is no drift monitor (when there is none)
        self.drift_reason = "" if drift is not None else (drift_reason or NO_REFERENCE)
        self.feedback = feedback
        #: requests and rows seen by after_predict (on the event loop only)
        self.requests = 0
        self.rows = 0
        #: True once the service has given it its ``defer`` function
        self.wired = False
        #: made by the service when the version first shadows another (see monitoring.shadow)
        self.shadow: ShadowMonitor | None = None

    @classmethod
    def for_version(
        cls, path: str | Path | None, model: Any, nan_policy: str = "reject", files: ModelFiles = DEFAULT
    ) -> VersionMonitor:
        """The monitors of a loaded model whose version directory is ``path``
        (None: an in-memory model, no reference statistics), its reference.json read
        as ``files`` says (see :class:`~scorewire.formats.files.ModelFiles`)."""
        sig = model.signature
        drift = None
        reason = ""
        if not sig.tabular:
            reason = NOT_TABULAR
            if path is not None and (Path(path) / REFERENCE_FILE).is_file():
                log.warning("%s: drift monitoring is off: %s", path, NOT_TABULAR)
        elif path is not None:
            drift = DriftMonitor.from_version_dir(
                path, sig.n_features, files=files, dtype=sig.input.dtype, check_finite=nan_policy == "allow"
            )
        return cls(drift, FeedbackStore.for_model(model), reason)

    def wire(self, defer: Callable[..., Any]) -> None:
        """Run the monitors' occasional heavier steps through ``defer(fn, *args)``."""
        if self.drift is not None:
            self.drift.defer = defer
        self.feedback.defer = defer
        self.wired = True

    def after_predict(
        self, X: Inputs, request_id: str, outputs: Mapping[str, np.ndarray], observe: bool = True
    ) -> None:
        """Count an answered request, sample its rows for drift (unless the caller
        observes them elsewhere: ``observe=False``), and record its outputs for
        feedback when it has a request id. ``X``: a tabular model's matrix (the only
        kind with a drift monitor), or another model's inputs by name."""
        self.requests += 1
        drift = self.drift
        if drift is None:
            self.rows += rows_of(X)
        else:
            assert isinstance(X, np.ndarray)
            self.rows += X.shape[0]
            if observe:
                drift.observe(X)
        if request_id:
            self.feedback.record(request_id, outputs)

    def stats(self, version: int, state: str, latency: RequestSummary | None = None) -> VersionStats:
        """A snapshot of everything this monitor knows (costs a few ms: not per request)."""
        return VersionStats(
            version=version,
            state=state,
            requests=self.requests,
            rows=self.rows,
            latency=latency,
            drift=self.drift.snapshot() if self.drift is not None else None,
            feedback=self.feedback.metrics(),
            shadow=self.shadow.snapshot() if self.shadow is not None else (),
            drift_reason=self.drift_reason,
        )


def histogram_quantile(q: float, bounds: list[float], cumulative: list[float]) -> float:
    """The q-quantile of a Prometheus histogram: linear within the bucket it falls
    in, as PromQL's ``histogram_quantile`` (``bounds`` are the finite upper bounds,
    ``cumulative`` the counts at each, then the +Inf count). NaN without data."""
    total = cumulative[-1] if cumulative else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in zip(bounds, cumulative, strict=False):
        if count >= rank:
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return bounds[-1] if bounds else math.nan  # in the +Inf bucket: the largest finite bound


def request_summary(model: str, version: int) -> RequestSummary | None:
    """This process's requests of one model version, read from the Prometheus
    request counter and latency histogram (all RPCs); None before any request."""
    from ..observability.metrics import REQUEST_DURATION, REQUESTS

    labels = {"model": model, "version": str(version)}

    def ours(sample: Any) -> bool:
        return all(sample.labels.get(k) == v for k, v in labels.items())

    answered = errors = 0.0
    for metric in REQUESTS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and ours(sample):
                answered += sample.value
                if sample.labels.get("code") != "OK":
                    errors += sample.value
    buckets: dict[float, float] = {}
    total = count = 0.0
    for metric in REQUEST_DURATION.collect():
        for sample in metric.samples:
            if not ours(sample):
                continue
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
    if not answered and not count:
        return None
    bounds = sorted(b for b in buckets if math.isfinite(b))
    cumulative = [buckets[b] for b in bounds] + [buckets.get(math.inf, count)]
    return RequestSummary(
        answered=int(answered),
        errors=int(errors),
        latency_mean_s=total / count if count else math.nan,
        latency_p50_s=histogram_quantile(0.5, bounds, cumulative),
        latency_p99_s=histogram_quantile(0.99, bounds, cumulative),
    )


_QUALITY = {"classification": ("accuracy", "log_loss", "roc_auc"), "regression": ("rmse", "mae")}


def export_gauges(model: str, version: int, stats: VersionStats) -> None:
    """Set one version's drift and feedback gauges from its stats."""
    from ..observability import set_feature_psi, set_feedback

    if stats.drift is not None:
        for name, value in zip(stats.drift.feature_names, stats.drift.psi, strict=True):
            set_feature_psi(model, version, name, value)
    fb = stats.feedback
    if fb is not None:
        quality = {name: getattr(fb, name) for name in _QUALITY[fb.task]}
        outcomes = {"matched": fb.matched, "unknown": fb.unknown, "expired": fb.expired,
                    "duplicate": fb.duplicate, "invalid": fb.invalid}  # fmt: skip
        set_feedback(model, version, quality, outcomes, fb.pending)


def export_drift_bins(model: str, version: int, drift: DriftMonitor) -> None:
    """Add what one version's drift monitor binned since the last export to the
    per-bin counters (and set the reference shares beside them): the fleet PSI
    rule's inputs (any thread: each call adds what no call took before it)."""
    from ..observability import add_feature_bins

    counts, binned = drift.take_binned()
    features = [(name, shares.tolist(), counts[j, : shares.size].tolist())
                for j, name, shares in drift.reference_bins()]  # fmt: skip
    add_feature_bins(model, version, features, binned)
