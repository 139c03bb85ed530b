"""Feedback: ground truth joins recorded predictions by request id; unknown,
expired, duplicate and invalid ids are reported per item and counted; rolling
metrics equal scikit-learn's over the same rows."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.metrics import (
    accuracy_score,
    log_loss,
    mean_absolute_error,
    roc_auc_score,
    root_mean_squared_error,
)

import scorewire
from scorewire.monitoring.feedback import (
    FeedbackConfig,
    FeedbackItem,
    FeedbackStore,
    Outcome,
    OutputRoles,
    route_feedback,
)

DEMO = scorewire.demo_repository()
BREAST = scorewire.load_model(DEMO / "breast-cancer" / "1")
WINE = scorewire.load_model(DEMO / "wine" / "1")
DIABETES = scorewire.load_model(DEMO / "diabetes" / "1")
IRIS_FOREST = scorewire.load_model(DEMO / "iris-forest" / "1")


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def record_rows(store: FeedbackStore, model, X: np.ndarray, rows_per_request: int = 1, prefix: str = "r") -> list[str]:
    """Score X in requests of ``rows_per_request`` rows, recording each; the ids."""
    ids = []
    for i in range(0, len(X), rows_per_request):
        rid = f"{prefix}{i}"
        assert store.record(rid, model.predict(X[i : i + rows_per_request]))
        ids.append(rid)
    return ids


def outcomes(results) -> list[str]:
    return [r.outcome.value for r in results]


# ------------------------------------------------------------ the metrics

@pytest.mark.parametrize("rows_per_request", [1, 7, 100])
def test_binary_metrics_equal_sklearn(rows_per_request):
    data = load_breast_cancer()
    X, y = data.data, data.target
    store = FeedbackStore.for_model(BREAST)
    ids = record_rows(store, BREAST, X, rows_per_request)
    items = [FeedbackItem(rid, y[i * rows_per_request : (i + 1) * rows_per_request]) for i, rid in enumerate(ids)]
    results = store.feedback(items)
    assert set(outcomes(results)) == {"matched"}
    m = store.metrics()
    out = BREAST.predict(X)
    proba = out["probabilities"]
    assert m.window_rows == len(y) and m.matched == len(ids) and m.matched_rows == len(y)
    # NOTE: of the labels the store was given, not argmax of the probabilities: the
    # two differ where rounding ties the probabilities of a decision near 0
    assert m.accuracy == pytest.approx(accuracy_score(y, out["label"]), rel=1e-12)
    assert m.log_loss == pytest.approx(log_loss(y, proba), rel=1e-9)
    assert m.roc_auc == pytest.approx(roc_auc_score(y, proba[:, 1]), rel=1e-12)
    assert m.pending == 0 and m.unknown == m.expired == m.invalid == 0


def test_multiclass_metrics_equal_sklearn():
    data = load_wine()
    X, y = data.data, data.target
    store = FeedbackStore.for_model(WINE)
    ids = record_rows(store, WINE, X, 1)
    store.feedback([FeedbackItem(rid, [int(t)]) for rid, t in zip(ids, y, strict=True)])
    m = store.metrics()
    out = WINE.predict(X)
    proba = out["probabilities"]
    assert m.accuracy == pytest.approx(accuracy_score(y, out["label"]), rel=1e-12)  # the labels recorded
    assert m.log_loss == pytest.approx(log_loss(y, proba), rel=1e-9)
    assert math.isnan(m.roc_auc)  # rolling AUC is for two classes only


def test_regression_metrics_equal_sklearn():
    data = load_diabetes()
    X, y = data.data, data.target
    store = FeedbackStore.for_model(DIABETES)
    ids = record_rows(store, DIABETES, X, 5)
    store.feedback([FeedbackItem(rid, y[i * 5 : i * 5 + 5].tolist()) for i, rid in enumerate(ids)])
    m = store.metrics()
    pred = DIABETES.predict(X)["value"]
    assert m.task == "regression" and m.window_rows == len(y)
    assert m.rmse == pytest.approx(root_mean_squared_error(y, pred), rel=1e-12)
    assert m.mae == pytest.approx(mean_absolute_error(y, pred), rel=1e-12)
    assert math.isnan(m.accuracy)


def test_the_window_covers_the_last_joined_rows():
    data = load_breast_cancer()
    X, y = data.data, data.target
    store = FeedbackStore.for_model(BREAST, FeedbackConfig(window_rows=100))
    ids = record_rows(store, BREAST, X, 1)
    store.feedback([FeedbackItem(rid, [t]) for rid, t in zip(ids, y, strict=True)])
    m = store.metrics()
    proba = BREAST.predict(X[-100:])["probabilities"]
    assert m.window_rows == 100 and m.matched_rows == len(y)
    assert m.log_loss == pytest.approx(log_loss(y[-100:], proba, labels=[0, 1]), rel=1e-9)
    # a single request larger than the window keeps its last rows
    big = FeedbackStore.for_model(BREAST, FeedbackConfig(window_rows=100))
    big.record("all", BREAST.predict(X))
    big.feedback([FeedbackItem("all", y)])
    assert big.metrics().log_loss == pytest.approx(m.log_loss, rel=1e-12)


def test_label_only_requests_give_accuracy_without_log_loss():
    X, y = load_breast_cancer(return_X_y=True)
    store = FeedbackStore.for_model(BREAST)
    for i in range(50):
        store.record(f"r{i}", BREAST.predict(X[i : i + 1], outputs=("label",)))
    store.feedback([FeedbackItem(f"r{i}", [y[i]]) for i in range(50)])
    m = store.metrics()
    assert m.accuracy == pytest.approx(accuracy_score(y[:50], BREAST.predict(X[:50])["label"]))
    assert math.isnan(m.log_loss) and math.isnan(m.roc_auc)


def test_probabilities_only_requests_give_accuracy_from_argmax():
    X, y = load_wine(return_X_y=True)
    store = FeedbackStore.for_model(WINE)
    store.record("a", WINE.predict(X[:30], outputs=("probabilities",)))
    for i in range(30, 40):
        store.record(f"b{i}", WINE.predict(X[i : i + 1], outputs=("probabilities",)))
    store.feedback([FeedbackItem("a", y[:30]), *(FeedbackItem(f"b{i}", [y[i]]) for i in range(30, 40))])
    proba = WINE.predict(X[:40])["probabilities"]
    m = store.metrics()
    assert m.accuracy == pytest.approx(accuracy_score(y[:40], proba.argmax(axis=1)))
    assert m.log_loss == pytest.approx(log_loss(y[:40], proba, labels=[0, 1, 2]), rel=1e-9)


def test_string_classes_and_numbers_as_text():
    spec = scorewire.LinearSpec("classification", "logistic", np.array([[1.0, -1.0]]), np.array([0.0]), classes=("no", "yes"))
    model = scorewire.NativeLinearModel(spec)
    store = FeedbackStore.for_model(model)
    store.record("a", model.predict(np.array([[2.0, 0.0], [0.0, 2.0]])))
    assert outcomes(store.feedback([FeedbackItem("a", ["yes", "yes"])])) == ["matched"]
    assert store.metrics().accuracy == 0.5
    # integer classes accept 1.0 and "1"
    num = FeedbackStore.for_model(BREAST)
    X = load_breast_cancer().data[:3]
    for i, truth in enumerate([1.0, "1", np.int64(1)]):
        num.record(f"r{i}", BREAST.predict(X[i : i + 1]))
        assert outcomes(num.feedback([FeedbackItem(f"r{i}", [truth])])) == ["matched"]


def test_an_onnx_classifiers_classes_come_from_its_graph():
    """The forest's TreeEnsembleClassifier names its classes: truth labels find their
    probability column, so log-loss is reported too."""
    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    assert IRIS_FOREST.signature.classes == (0, 1, 2)
    store = FeedbackStore.for_model(IRIS_FOREST)
    ids = record_rows(store, IRIS_FOREST, X, 5)
    store.feedback([FeedbackItem(rid, y[i * 5 : i * 5 + 5]) for i, rid in enumerate(ids)])
    m = store.metrics()
    out = IRIS_FOREST.predict(X)
    assert m.accuracy == pytest.approx(accuracy_score(y, out["label"]))
    assert m.log_loss == pytest.approx(log_loss(y, out["probabilities"], labels=[0, 1, 2]), rel=1e-6)


def test_unknown_class_labels_give_accuracy_by_comparing_labels():
    X, y = load_iris(return_X_y=True)
    roles = OutputRoles.of_model(IRIS_FOREST)
    store = FeedbackStore(IRIS_FOREST.signature.task, None, roles)  # a graph that names no classes
    ids = record_rows(store, IRIS_FOREST, X.astype(np.float32), 1)
    store.feedback([FeedbackItem(rid, [t]) for rid, t in zip(ids, y, strict=True)])
    m = store.metrics()
    labels = IRIS_FOREST.predict(X.astype(np.float32))["label"]
    assert m.accuracy == pytest.approx(accuracy_score(y, labels))
    assert math.isnan(m.log_loss)


# ----------------------------------------------------------- the outcomes

def test_unknown_expired_duplicate_and_invalid_ids_are_reported_per_item():
    clock = FakeClock()
    store = FeedbackStore.for_model(BREAST, FeedbackConfig(max_age_s=60), clock=clock)
    X = load_breast_cancer().data
    store.record("old", BREAST.predict(X[:1]))
    clock.t += 61
    store.record("two-rows", BREAST.predict(X[1:3]))
    store.record("fresh", BREAST.predict(X[3:4]))
    results = store.feedback(
        [
            FeedbackItem("never-seen", [1]),
            FeedbackItem("old", [1]),  # older than max_age_s
            FeedbackItem("fresh", [1]),
            FeedbackItem("fresh", [1]),  # the same id again
            FeedbackItem("two-rows", [1]),  # one label for two rows
            FeedbackItem("two-rows", [1, 7]),  # 7 is not a class
            FeedbackItem("", [1]),  # no id
        ]
    )
    assert outcomes(results) == ["unknown", "expired", "matched", "duplicate", "invalid", "invalid", "unknown"]
    assert "1 true labels for a request of 2 rows" in results[4].message
    assert "'7' is not one of the model's classes" in results[5].message
    m = store.metrics()
    assert (m.matched, m.unknown, m.expired, m.duplicate, m.invalid) == (1, 2, 1, 1, 2)
    # an invalid item leaves the prediction waiting: corrected feedback still joins
    assert m.pending == 1
    assert outcomes(store.feedback([FeedbackItem("two-rows", [0, 1])])) == ["matched"]
    # a later call for an answered id is a duplicate, not unknown
    assert outcomes(store.feedback([FeedbackItem("fresh", [0])])) == ["duplicate"]


def test_the_window_is_bounded_by_count_and_by_rows():
    X = load_breast_cancer().data
    store = FeedbackStore.for_model(BREAST, FeedbackConfig(max_requests=100, max_rows=150))
    for i in range(300):
        store.record(f"r{i}", BREAST.predict(X[i : i + 1]))
    store.flush()
    assert store.metrics().pending == 100
    assert outcomes(store.feedback([FeedbackItem("r0", [1]), FeedbackItem("r299", [1])])) == ["expired", "matched"]
    store.record("big", BREAST.predict(X[:120]))  # 120 rows: older predictions make room
    store.flush()
    assert store.metrics().pending <= 31
    assert store.status("big") == "live" and store.status("r200") == "expired"
    assert not store.record("huge", BREAST.predict(X[:151]))  # more rows than the window holds


def test_remembered_ids_are_bounded():
    X = load_breast_cancer().data
    store = FeedbackStore.for_model(BREAST, FeedbackConfig(max_requests=10, remembered_ids=100))
    out = BREAST.predict(X[:1])
    for i in range(1000):
        store.record(f"r{i}", out)
    store.flush()
    assert store.status("r985") == "expired"
    assert store.status("r0") is None  # forgotten long ago: reported as unknown
    assert store.window.remembered <= 100


def test_regression_truth_is_checked():
    store = FeedbackStore.for_model(DIABETES)
    X = load_diabetes().data
    store.record("a", DIABETES.predict(X[:2]))
    results = store.feedback([FeedbackItem("a", [1.0]), FeedbackItem("a", [1.0, math.nan]), FeedbackItem("a", ["x", "y"])])
    assert outcomes(results) == ["invalid", "invalid", "invalid"]
    assert [r.message for r in results] == [
        "1 true values for a request of 2 rows", "true values must be finite", "true values must be numbers"
    ]  # fmt: skip


def test_nothing_to_record():
    store = FeedbackStore.for_model(BREAST)
    X = load_breast_cancer().data
    assert not store.record("", BREAST.predict(X[:1]))  # no request id
    assert not store.record("d", BREAST.predict(X[:1], outputs=("decision",)))  # nothing to join
    assert not store.record("z", BREAST.predict(X[:0]))  # no rows
    assert store.metrics().recorded == 0


def test_output_roles():
    assert OutputRoles.of_model(BREAST) == OutputRoles("label", "probabilities", None)
    assert OutputRoles.of_model(DIABETES) == OutputRoles(None, None, "value")
    assert OutputRoles.of_model(IRIS_FOREST) == OutputRoles("label", "probabilities", None)
    spec = scorewire.LinearSpec(
        "classification", "softmax", np.eye(3), np.zeros(3), classes=(0, 1, 2),
        outputs={"cls": "label", "p": "probabilities"},
    )  # fmt: skip
    renamed = scorewire.NativeLinearModel(spec)
    assert OutputRoles.of_model(renamed) == OutputRoles("cls", "p", None)
    store = FeedbackStore.for_model(renamed)
    store.record("a", renamed.predict(np.array([[0.0, 5.0, 0.0]])))
    store.feedback([FeedbackItem("a", [1])])
    assert store.metrics().accuracy == 1.0


def test_a_reused_request_id_keeps_the_latest_prediction():
    X, y = load_breast_cancer(return_X_y=True)
    store = FeedbackStore.for_model(BREAST)
    store.record("same", BREAST.predict(X[:1]))
    store.record("same", BREAST.predict(X[1:3]))
    assert outcomes(store.feedback([FeedbackItem("same", y[1:3])])) == ["matched"]
    assert store.metrics().pending == 0


# ------------------------------------------------------- versions, threads

def test_route_feedback_to_the_version_that_answered():
    X = load_breast_cancer().data
    v1, v2 = FeedbackStore.for_model(BREAST), FeedbackStore.for_model(BREAST)
    v1.record("a", BREAST.predict(X[:1]))
    v2.record("b", BREAST.predict(X[1:2]))
    routed = route_feedback({1: v1, 2: v2}, [FeedbackItem("a", [1]), FeedbackItem("b", [0]), FeedbackItem("c", [0]),
                                             FeedbackItem("a", [1])])  # fmt: skip
    assert [(v, r.outcome) for v, r in routed] == [
        (1, Outcome.MATCHED), (2, Outcome.MATCHED), (2, Outcome.UNKNOWN), (1, Outcome.DUPLICATE)
    ]  # fmt: skip
    assert (v1.metrics().matched, v2.metrics().matched, v2.metrics().unknown) == (1, 1, 1)
    assert [r.outcome for _, r in route_feedback({}, [FeedbackItem("a", [1])])] == [Outcome.UNKNOWN]


def test_route_feedback_can_leave_unknown_ids_uncounted():
    """What a process does not know may be known by another (the edge asks it):
    such items are UNKNOWN without a version and counted nowhere; what it knows
    is joined and counted as always."""
    X = load_breast_cancer().data
    v1 = FeedbackStore.for_model(BREAST)
    v1.record("a", BREAST.predict(X[:1]))
    items = [FeedbackItem("a", [1]), FeedbackItem("elsewhere", [0]), FeedbackItem("", [0]), FeedbackItem("a", [1])]
    routed = route_feedback({1: v1}, items, count_unknown=False)
    assert [(v, r.outcome) for v, r in routed] == [
        (1, Outcome.MATCHED), (None, Outcome.UNKNOWN), (None, Outcome.UNKNOWN), (1, Outcome.DUPLICATE)
    ]  # fmt: skip
    m = v1.metrics()
    assert (m.matched, m.duplicate, m.unknown) == (1, 1, 0)
    # nobody knew it: counted now, by the caller's second pass
    assert [r.outcome for _, r in route_feedback({1: v1}, items[1:2])] == [Outcome.UNKNOWN]
    assert v1.metrics().unknown == 1


def test_record_and_feedback_from_many_threads():
    X, y = load_breast_cancer(return_X_y=True)
    store = FeedbackStore.for_model(BREAST, FeedbackConfig(window_rows=20 * len(X)))
    outputs = [BREAST.predict(X[i : i + 1]) for i in range(len(X))]
    errors = []
    start = threading.Barrier(4)  # all four at once, however the threads get scheduled

    def worker(w: int) -> None:
        try:
            start.wait(30)
            for rep in range(20):
                for i in range(w, len(X), 4):
                    store.record(f"{rep}-{i}", outputs[i])
                store.feedback([FeedbackItem(f"{rep}-{i}", [y[i]]) for i in range(w, len(X), 4)])
        except Exception as exc:  # pragma: no cover - the test fails below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    m = store.metrics()
    assert m.recorded == m.matched == 20 * len(X) and m.pending == 0
    proba = BREAST.predict(X)["probabilities"]
    assert m.log_loss == pytest.approx(log_loss(y, proba), rel=1e-9)  # 20 copies of the same rows


def test_config_is_checked():
    with pytest.raises(ValueError):
        FeedbackConfig(max_requests=0)
    with pytest.raises(ValueError):
        FeedbackStore("ranking")
