"""Feedback: ground truth for earlier predictions, joined by request id, and
rolling quality metrics per model version.

The prediction window
    :meth:`FeedbackStore.record` keeps what a joined metric needs of each answered
    request that carried a request id — for a classifier its predicted labels and
    probability rows, for a regressor its values — as references to the output
    arrays (no copy; the outputs must not be modified afterwards). It appends to a
    queue without taking a lock (O(1)); on :meth:`FeedbackStore.flush`, before
    any read, and every 128 records (later, through the store's ``defer`` function
    when it has one), the queue moves into an insertion-ordered map bounded by count
    (``max_requests``), by rows (``max_rows``) and by age (``max_age_s``,
    monotonic clock, stamped at record time); the oldest entries leave first.
    A memory guide: a one-row classifier prediction holds two small arrays,
    roughly 300–400 bytes, so the default 100 000 requests are tens of MB.

Outcomes
    Each :class:`FeedbackItem` gives the true label (or value) of every row of one
    earlier request, and gets one :class:`Outcome`: ``MATCHED``; ``UNKNOWN`` (never
    recorded here); ``EXPIRED`` (recorded, but it left the window before the
    feedback came); ``DUPLICATE`` (feedback was already joined for it); ``INVALID``
    (wrong number of values, a label that is not one of the model's classes, a
    non-finite value — with a message). Only ``INVALID`` leaves the prediction
    waiting. None of them fails the whole call; each is counted. Expired and
    answered ids are remembered (ids only, bounded) to tell them from unknown ones.

The rolling metrics
    Joined rows go into a ring of the last ``window_rows`` rows. Classifiers:
    accuracy, log-loss (p clipped to [ε, 1 − ε], ε the machine epsilon of the
    probabilities' dtype, as :func:`scorewire.evaluate.log_loss`) and, for two
    classes, ROC AUC on P(classes[1]) (sorting the window: computed when asked and
    cached until new feedback arrives). Regressors: RMSE and MAE. A metric that
    needs an output the request did not ask for (log-loss without probabilities)
    covers the rows that have it and is NaN when none do. A classifier whose class
    labels are unknown (an ONNX graph that does not state them) gets accuracy
    only, by comparing labels.

Thread safety: one lock per store guards the window, the ring and the counters.

The parts, one module each: the types (``_types``), the prediction window
(``_window``), joining truth to a prediction (``_join``), the rolling quality
metrics (``_quality``), the store that puts them together (``_store``), and routing
feedback across a model's versions (``_routing``).
"""

from ._routing import route_feedback
from ._store import FeedbackStore
from ._types import FeedbackConfig, FeedbackItem, FeedbackMetrics, ItemResult, Outcome, OutputRoles

__all__ = [
    "FeedbackConfig",
    "FeedbackItem",
    "FeedbackMetrics",
    "FeedbackStore",
    "ItemResult",
    "Outcome",
    "OutputRoles",
    "route_feedback",
]
