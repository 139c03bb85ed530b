"""``scorewire export`` of scikit-learn's ensembles: served through the repository,
each kind equals scikit-learn's ``predict_proba`` / ``predict`` to 1e-9 in float64
(relative to the scale of what is summed), labels compared only where no error
within that bound can change them (tests/parity.py); the estimators are trained on
data with a margin (tests/ensembles.py).

Members: linear ones (native) and MLPs, which skl2onnx converts in float64
(onnxruntime), so that float64 parity holds for the ONNX members too."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.ensemble import (
    RandomForestClassifier,
    StackingClassifier,
    StackingRegressor,
    VotingClassifier,
    VotingRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, SGDClassifier
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

import scorewire
from scorewire import ModelRepository, State
from scorewire.errors import InvalidInput
from scorewire.formats.model_toml import load_model_config

from .ensembles import CLASSES, margin_blobs, regression_data
from .parity import assert_labels_equal, decided_rows

RTOL = 1e-9


def lr():
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=5000))


def mlp():
    return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(8,), max_iter=3000, random_state=0))


def sgd():
    return make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss", random_state=0))


def svc():
    return make_pipeline(StandardScaler(), LinearSVC())


def mlp_reg():
    return make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(8,), max_iter=5000, random_state=0))


def fit(est, X, y):
    with warnings.catch_warnings():  # an MLP that stops at max_iter is still a fitted model
        warnings.simplefilter("ignore")
        return est.fit(X, y)


@pytest.fixture(scope="module")
def blobs():
    """3 classes (ant, bee, cat) with a margin: training rows, and fresh rows."""
    rng = np.random.default_rng(7)
    X, y = margin_blobs(rng, n=450)
    return X[:300], np.asarray(CLASSES)[y[:300]], X[300:]


@pytest.fixture(scope="module")
def binary():
    rng = np.random.default_rng(8)
    X, y = margin_blobs(rng, n=450, k=2)
    return X[:300], np.array([3, 8])[y[:300]], X[300:]


@pytest.fixture(scope="module")
def reg():
    rng = np.random.default_rng(9)
    X, y = regression_data(rng, n=400)
    return X[:300], y[:300], X[300:]


def export_and_load(est, tmp_path, name="ens"):
    result = scorewire.export_estimator(est, tmp_path, name)
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    assert repo.entry(name).state is State.READY, repo.entry(name).load_error()
    return result, repo.resolve(name).model, repo


def assert_proba_parity(got, want):
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-15)


def rows(data):
    X, _, fresh = data
    return np.vstack([X, fresh])


def member_decisions(member, X):
    """A fitted member's own decisions and how far rounding may move them: its
    probabilities (bound RTOL), or its linear decision (bound RTOL of its terms)."""
    if hasattr(member, "predict_proba"):
        return member.predict_proba(X), RTOL
    scaled = member[:-1].transform(X) if isinstance(member, Pipeline) else X
    last = member[-1] if isinstance(member, Pipeline) else member
    z = member.decision_function(X)
    terms = np.abs(scaled) @ np.abs(np.atleast_2d(last.coef_)).T + np.abs(last.intercept_)
    return z, RTOL * (np.abs(z).reshape(terms.shape) + terms).reshape(z.shape)


def stack_decision_bound(est, X):
    """RTOL of the final model's terms: |F| |meta| + |c|."""
    final = est.final_estimator_
    meta = est.transform(X)
    z = est.decision_function(X)
    terms = np.abs(meta) @ np.abs(np.atleast_2d(final.coef_)).T + np.abs(final.intercept_)
    return z, RTOL * (np.abs(z).reshape(terms.shape) + terms).reshape(z.shape)


# --------------------------------------------------------------------- voting
@pytest.mark.parametrize("weights", [None, [2, 1, 0.5]])
def test_soft_voting_equals_sklearn(weights, blobs, tmp_path):
    X, y, _ = blobs
    est = fit(VotingClassifier([("lr", lr()), ("mlp", mlp()), ("sgd", sgd())], voting="soft", weights=weights), X, y)
    result, model, repo = export_and_load(est, tmp_path)
    assert result.backend == model.backend == "ensemble"
    assert [(m.artifact.parent.parent.name, m.backend) for m in result.members] == [
        ("ens-lr", "native"), ("ens-mlp", "onnxruntime"), ("ens-sgd", "native")]  # fmt: skip
    assert model.signature.input.dtype == "float64" and model.signature.classes == CLASSES
    Xt = rows(blobs)
    got, want = model.predict(Xt), est.predict_proba(Xt)
    assert_proba_parity(got["probabilities"], want)
    assert_labels_equal(got["label"], est.predict(Xt), want, RTOL)
    # each member is a model of its own, with the ensemble's labels
    for name, member in est.named_estimators_.items():
        served = repo.resolve(f"ens-{name}").model.predict(Xt)
        np.testing.assert_array_equal(served["label"], np.asarray(CLASSES)[member.predict(Xt)])


@pytest.mark.parametrize("weights", [None, [1, 2, 1.5]])
def test_hard_voting_equals_sklearn(weights, blobs, tmp_path):
    """Labels equal on every row where each member's own label is decided."""
    X, y, _ = blobs
    est = fit(VotingClassifier([("lr", lr()), ("mlp", mlp()), ("svc", svc())], voting="hard", weights=weights), X, y)
    _, model, _ = export_and_load(est, tmp_path)
    assert model.backend == "ensemble" and [o.name for o in model.signature.outputs] == ["label"]
    Xt = rows(blobs)
    decided = np.ones(len(Xt), dtype=bool)
    for member in est.estimators_:
        z, bound = member_decisions(member, Xt)
        decided &= decided_rows(z, bound)
    assert decided.mean() > 0.9
    got = model.predict(Xt)["label"]
    np.testing.assert_array_equal(got[decided], est.predict(Xt)[decided])


@pytest.mark.parametrize("weights", [None, [1, 1, 2], [2.5, 1, 1.5], [0.5, 0.25, 0.25]])
def test_hard_voting_ties_are_decided_as_sklearn(weights, tmp_path):
    """Members with small-integer weights on small-integer rows: every member's
    decision is exact, so its label is certain, and rows where the (weighted) votes
    tie are many. scikit-learn gives the first tied class in class order
    (argmax of the weighted bincount); so does the served ensemble, row for row."""
    rng = np.random.default_rng(11)
    Xfit = rng.normal(size=(30, 5))
    est = VotingClassifier([(n, LogisticRegression()) for n in ("a", "b", "c")], voting="hard", weights=weights)
    est.fit(Xfit, np.asarray(CLASSES)[np.arange(30) % 3])
    for member in est.estimators_:
        member.coef_ = rng.integers(-3, 4, size=(3, 5)).astype(float)
        member.intercept_ = rng.integers(-2, 3, size=3).astype(float)
    X = rng.integers(-3, 4, size=(400, 5)).astype(float)
    votes = np.stack([m.predict(X) for m in est.estimators_], axis=1)
    tied = [len(set(v)) == 3 or (weights is not None and len(set(v)) == 2) for v in votes.tolist()]
    assert sum(tied) > 50
    _, model, _ = export_and_load(est, tmp_path)
    np.testing.assert_array_equal(model.predict(X)["label"], est.predict(X))


@pytest.mark.parametrize("weights", [None, [1, 3, 0.5]])
def test_voting_regressor_equals_sklearn(weights, reg, tmp_path):
    X, y, _ = reg
    est = fit(VotingRegressor([("lr", LinearRegression()), ("ridge", Ridge(alpha=3.0)), ("mlp", mlp_reg())], weights=weights), X, y)
    _, model, _ = export_and_load(est, tmp_path)
    assert model.backend == "ensemble" and "member 'ens-mlp' v1 (onnxruntime) is not linear" in model.native_reason
    Xt = rows(reg)
    want = est.predict(Xt)
    w = np.ones(3) if weights is None else np.asarray(weights, dtype=float)
    terms = sum(wi * np.abs(m.predict(Xt)) for wi, m in zip(w, est.estimators_, strict=True)) / w.sum()
    assert np.all(np.abs(model.predict(Xt)["value"] - want) <= RTOL * np.maximum(np.abs(want), terms))


def test_a_linear_voting_regressor_is_exported_folded(reg, tmp_path):
    X, y, _ = reg
    est = VotingRegressor([("lr", LinearRegression()), ("ridge", Ridge(alpha=3.0))], weights=[1, 3]).fit(X, y)
    result, model, _ = export_and_load(est, tmp_path)
    assert result.backend == model.backend == "native" and "folded" in model.native_reason
    Xt = rows(reg)
    want = est.predict(Xt)
    terms = (np.abs(est.estimators_[0].predict(Xt)) + 3 * np.abs(est.estimators_[1].predict(Xt))) / 4
    assert np.all(np.abs(model.predict(Xt)["value"] - want) <= RTOL * np.maximum(np.abs(want), terms))


# ------------------------------------------------------------------- stacking
@pytest.mark.parametrize("passthrough", [False, True])
def test_stacking_classifier_binary_equals_sklearn(passthrough, binary, tmp_path):
    """Two classes: each member feeds P(classes[1]) only (StackingClassifier drops
    the first probability column), then the input with passthrough."""
    X, y, _ = binary
    est = fit(StackingClassifier([("lr", lr()), ("mlp", mlp())], passthrough=passthrough,
                                 final_estimator=LogisticRegression(max_iter=5000)), X, y)  # fmt: skip
    assert est.transform(X[:1]).shape[1] == 2 + (X.shape[1] if passthrough else 0)
    _, model, _ = export_and_load(est, tmp_path)
    assert model.backend == "ensemble" and model.signature.classes == (3, 8)
    config = load_model_config(tmp_path / "ens" / "model.toml").ensemble
    assert config is not None and config.passthrough == passthrough
    assert [m.output for m in config.members] == ["probabilities", "probabilities"]
    Xt = rows(binary)
    got = model.predict(Xt)
    assert_proba_parity(got["probabilities"], est.predict_proba(Xt))
    z, bound = stack_decision_bound(est, Xt)
    assert_labels_equal(got["label"], est.predict(Xt), z, bound)


def test_stacking_classifier_multiclass_equals_sklearn(blobs, tmp_path):
    X, y, _ = blobs
    est = fit(StackingClassifier([("lr", lr()), ("mlp", mlp()), ("sgd", sgd())]), X, y)
    _, model, _ = export_and_load(est, tmp_path)
    Xt = rows(blobs)
    got = model.predict(Xt)
    assert_proba_parity(got["probabilities"], est.predict_proba(Xt))
    z, bound = stack_decision_bound(est, Xt)
    assert_labels_equal(got["label"], est.predict(Xt), z, bound)
    assert np.all(np.abs(got["decision"] - z) <= bound)


def test_stacking_on_decision_functions_of_linear_members_folds(blobs, tmp_path):
    """stack_method decision_function over linear members: one logistic model."""
    X, y, _ = blobs
    est = fit(StackingClassifier([("svc", svc()), ("lr", lr())], stack_method="decision_function", passthrough=True), X, y)
    result, model, _ = export_and_load(est, tmp_path)
    assert result.backend == model.backend == "native" and "folded into one linear model" in model.native_reason
    Xt = rows(blobs)
    got = model.predict(Xt)
    z, bound = stack_decision_bound(est, Xt)
    assert np.all(np.abs(got["decision"] - z) <= bound)
    assert_proba_parity(got["probabilities"], est.predict_proba(Xt))
    assert_labels_equal(got["label"], est.predict(Xt), z, bound)


@pytest.mark.parametrize("members, folded", [(("lr", "ridge"), True), (("lr", "mlp"), False)])
def test_stacking_regressor_equals_sklearn(members, folded, reg, tmp_path):
    make = {"lr": LinearRegression, "ridge": lambda: Ridge(alpha=3.0), "mlp": mlp_reg}
    X, y, _ = reg
    est = fit(StackingRegressor([(m, make[m]()) for m in members], passthrough=not folded), X, y)
    _, model, _ = export_and_load(est, tmp_path)
    assert model.backend == ("native" if folded else "ensemble")
    Xt = rows(reg)
    want = est.predict(Xt)
    meta = est.transform(Xt)
    terms = np.abs(meta) @ np.abs(est.final_estimator_.coef_) + abs(est.final_estimator_.intercept_)
    assert np.all(np.abs(model.predict(Xt)["value"] - want) <= RTOL * np.maximum(np.abs(want), terms))


# ------------------------------------------------------------ what export does
def test_members_that_do_not_convert_in_float64_make_a_float32_ensemble(blobs, tmp_path):
    """skl2onnx converts trees in float32 only: every member is then written for
    float32 input (model.json says so), and the ensemble takes float32."""
    X, y, _ = blobs
    est = VotingClassifier([("lr", lr()), ("rf", RandomForestClassifier(n_estimators=5, random_state=0))], voting="soft").fit(X, y)
    _, model, repo = export_and_load(est, tmp_path)
    assert model.signature.input.dtype == "float32"
    assert [repo.resolve(f"ens-{n}").model.signature.input.dtype for n in ("lr", "rf")] == ["float32", "float32"]
    Xt = rows(blobs).astype(np.float32)
    out = model.predict(Xt)
    assert out["probabilities"].dtype == np.float32
    # on these well-separated rows the trees and the logistic model agree with scikit-learn
    np.testing.assert_allclose(out["probabilities"], est.predict_proba(Xt.astype(np.float64)), atol=1e-6)


def test_a_second_export_is_a_new_version_over_new_member_versions(reg, tmp_path):
    X, y, _ = reg
    est = VotingRegressor([("lr", LinearRegression()), ("ridge", Ridge())])
    first = scorewire.export_estimator(est.fit(X, y), tmp_path, "ens", reference=X)
    second = scorewire.export_estimator(clone(est).fit(X[:200], y[:200]), tmp_path, "ens", reference=X)
    assert [m.artifact.parent.name for m in first.members + second.members] == ["1", "1", "2", "2"]
    assert first.reference == tmp_path / "ens" / "1" / "reference.json" and second.reference is not None
    assert all(m.reference is not None for m in second.members)
    config = load_model_config(tmp_path / "ens" / "model.toml").ensemble
    assert config is not None and [(m.model, m.version) for m in config.members] == [("ens-lr", 2), ("ens-ridge", 2)]
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    mv = repo.resolve("ens")
    assert mv.version == 2 and mv.monitor is not None and mv.monitor.drift is not None


def test_member_names_are_made_valid_model_names(reg, tmp_path):
    X, y, _ = reg
    est = VotingRegressor([("linear regression", LinearRegression()), ("ridge/3", Ridge())]).fit(X, y)
    result = scorewire.export_estimator(est, tmp_path, "ens")
    assert [m.artifact.parent.parent.name for m in result.members] == ["ens-linear_regression", "ens-ridge_3"]


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: StackingClassifier([("lr", lr()), ("mlp", mlp())], final_estimator=RandomForestClassifier(n_estimators=3)),
         "the final estimator (RandomForestClassifier) is not linear"),
        (lambda: StackingClassifier([("lr", lr()), ("svc", SVC())]), "member 'svc' feeds its decision_function"),
    ],
)
def test_what_cannot_be_exported_says_why(make, words, blobs, tmp_path):
    X, y, _ = blobs
    est = fit(make(), X, y)
    with pytest.raises(InvalidInput) as info:
        scorewire.export_estimator(est, tmp_path, "ens")
    assert words in info.value.message
    assert not (tmp_path / "ens").exists()


def test_the_cli_exports_an_ensemble(reg, tmp_path):
    import joblib

    from .test_cli import run

    X, y, _ = reg
    joblib.dump(VotingRegressor([("lr", LinearRegression()), ("ridge", Ridge())]).fit(X, y), tmp_path / "v.joblib")
    r = run("export", str(tmp_path / "v.joblib"), "--repo", str(tmp_path / "models"), "--name", "ens")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"wrote {tmp_path}/models/ens-lr/1/model.json (native backend)",
        f"wrote {tmp_path}/models/ens-ridge/1/model.json (native backend)",
        f"wrote {tmp_path}/models/ens/model.toml (native backend)",
    ]
