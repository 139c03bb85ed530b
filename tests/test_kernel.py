"""The compiled kernel against the NumPy reference, over a grid (STYLE.md 13):
dtype × order × read-only × n_threads × batch size × link, plus hand-computed values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from scorewire import _kernel
from scorewire._linear import LinearSpec, NativeLinearModel
from scorewire._reference import reference_scores

from .parity import assert_decisions_close, assert_proba_close, decision_scale

LINK_CASES = {
    # link: (task, k decision columns, classes)
    "identity-reg": ("regression", "identity", 1, None),
    "identity-multi": ("regression", "identity", 3, None),
    "logistic": ("classification", "logistic", 1, (0, 1)),
    "softmax": ("classification", "softmax", 4, ("a", "b", "c", "d")),
    "sigmoid": ("classification", "sigmoid", 3, (3, 5, 7)),
    "ovr": ("classification", "ovr", 3, (0, 1, 2)),
    "scores": ("classification", "identity", 3, (0, 1, 2)),
}


def make_spec(case: str, d: int, dtype: str, rng: np.random.Generator) -> LinearSpec:
    task, link, k, classes = LINK_CASES[case]
    return LinearSpec(
        task=task,
        link=link,
        coef=rng.normal(size=(k, d)),
        intercept=rng.normal(size=k),
        classes=classes,
        dtype=dtype,
        outputs={"value": "value", "decision": "decision"}
        if task == "regression"
        else {"label": "label", "probabilities": "probabilities", "decision": "decision"},
    )


def _grid():
    """The full grid for small batches; for 100 000 rows (above the parallel
    threshold) every link × dtype × C/F order × threads, writable only."""
    for case in sorted(LINK_CASES):
        for dtype in ("float32", "float64"):
            for order in ("C", "F", "strided"):
                for readonly in (False, True):
                    for n_threads in (1, 2):
                        for n in (0, 1, 7, 1000, 100_000):
                            if n == 100_000 and (readonly or order == "strided"):
                                continue
                            yield case, dtype, order, readonly, n_threads, n


@pytest.mark.parametrize("case, dtype, order, readonly, n_threads, n", list(_grid()))
def test_kernel_matches_reference(case, dtype, order, readonly, n_threads, n, rng):
    d = 13
    spec = make_spec(case, d, dtype, rng)
    X = rng.normal(scale=3.0, size=(n, d)).astype(dtype)
    if order == "F":
        X = np.asfortranarray(X)
    elif order == "strided":
        X = np.asarray(rng.normal(size=(n, 2 * d)).astype(dtype))[:, ::2]
    if readonly:
        X.setflags(write=False)
    model = NativeLinearModel(spec, n_threads=n_threads)
    got = model.predict(X)
    ref = reference_scores(spec, X.astype(np.float64))
    for name, role in spec.outputs.items():
        if role == "label":
            np.testing.assert_array_equal(got[name], ref["label"])
            continue
        want = ref[role]
        if role == "value" and spec.n_decisions == 1:
            want = want.reshape(-1)
        assert got[name].dtype == np.dtype(dtype)
        assert got[name].shape == want.shape
        if role == "probabilities" and spec.link != "identity":
            assert_proba_close(got[name], want, dtype)
        else:
            scale = decision_scale(X, spec.coef, spec.intercept).reshape(want.shape)
            assert_decisions_close(got[name], want, scale, dtype)


def test_zero_rows_give_zero_rows(rng):
    spec = make_spec("softmax", 5, "float64", rng)
    out = NativeLinearModel(spec).predict(np.empty((0, 5)))
    assert out["probabilities"].shape == (0, 4)
    assert out["label"].shape == (0,)


def test_hand_computed_values():
    # z = 1*2 + 2*(-1) + 0.5 = 0.5 ; sigma(0.5) = 1 / (1 + e^-0.5)
    spec = LinearSpec("classification", "logistic", [[2.0, -1.0]], [0.5], classes=("no", "yes"))
    out = NativeLinearModel(spec).predict(np.array([[1.0, 2.0], [0.0, 0.0]]))
    p = 1.0 / (1.0 + math.exp(-0.5))
    np.testing.assert_allclose(out["probabilities"][0], [1 - p, p], rtol=1e-15)
    assert out["label"].tolist() == ["yes", "yes"]
    np.testing.assert_allclose(out["decision"][:, 0], [0.5, 0.5])
    # softmax of [0, ln 2, ln 3] = [1, 2, 3] / 6
    spec = LinearSpec("classification", "softmax", np.eye(3), [0.0, math.log(2), math.log(3)], classes=(0, 1, 2))
    out = NativeLinearModel(spec).predict(np.zeros((1, 3)))
    np.testing.assert_allclose(out["probabilities"], [[1 / 6, 2 / 6, 3 / 6]], rtol=1e-15)
    assert out["label"].tolist() == [2]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_extreme_decisions_are_stable(dtype):
    """|z| > 700: no overflow warnings, probabilities exactly 0/1, softmax finite."""
    X = np.array([[800.0], [-800.0], [1e6], [-1e6], [36.0], [-36.0]], dtype=dtype)
    spec = LinearSpec("classification", "logistic", [[1.0]], [0.0], classes=(0, 1), dtype=dtype)
    soft = LinearSpec("classification", "softmax", [[1.0], [-1.0], [0.0]], [0, 0, 0], classes=(0, 1, 2), dtype=dtype)
    ovr = LinearSpec("classification", "ovr", [[1.0], [-1.0], [0.0]], [0, 0, 0], classes=(0, 1, 2), dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            p = NativeLinearModel(spec).predict(X)["probabilities"]
            ps = NativeLinearModel(soft).predict(X)["probabilities"]
            po = NativeLinearModel(ovr).predict(X)["probabilities"]
    assert np.isfinite(p).all() and np.isfinite(ps).all() and np.isfinite(po).all()
    assert p[0].tolist() == [0.0, 1.0] and p[1].tolist() == [1.0, 0.0]
    # sigma(-36) keeps its relative precision (1 - sigma(36) would not)
    np.testing.assert_allclose(p[4, 0], 1.0 / (1.0 + math.exp(36.0)), rtol=1e-6 if dtype == "float32" else 1e-14)
    np.testing.assert_allclose(ps.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(po.sum(axis=1), 1.0, rtol=1e-6)


def test_kernel_reports_openmp():
    assert isinstance(_kernel.openmp_enabled(), bool)
    assert _kernel.max_threads() >= 1
    assert _kernel.PARALLEL_MIN_ROWS > 0


def test_foreign_byte_order_and_odd_strides(rng):
    spec = make_spec("logistic", 4, "float64", rng)
    X = rng.normal(size=(9, 4))
    ref = reference_scores(spec, X)["probabilities"]
    big = X.astype(">f8")
    np.testing.assert_allclose(NativeLinearModel(spec).predict(big)["probabilities"], ref, rtol=1e-12)
    # a view whose strides are not whole items (a field of a packed record)
    rec = np.zeros(9, dtype=[("pad", "u1"), ("x", "<f8", (4,))])
    rec["x"] = X
    np.testing.assert_allclose(NativeLinearModel(spec).predict(rec["x"])["probabilities"], ref, rtol=1e-12)


@pytest.mark.parametrize(
    "X, message",
    [
        (np.zeros((2, 3, 1)), "2-D"),
        (np.zeros(3), "2-D"),
        (np.zeros((2, 5)), "expected 4 features, got 5"),
        (np.zeros((2, 4), dtype=np.int64), "dtype"),
        (np.zeros((2, 4), dtype=np.float16), "dtype"),
    ],
)
def test_bad_inputs_are_rejected(X, message, rng):
    from scorewire.errors import InvalidInput

    model = NativeLinearModel(make_spec("logistic", 4, "float64", rng))
    with pytest.raises(InvalidInput, match=message):
        model.predict(X)


def test_unknown_output_is_rejected(rng):
    from scorewire.errors import InvalidInput

    model = NativeLinearModel(make_spec("logistic", 4, "float64", rng))
    with pytest.raises(InvalidInput, match="unknown output"):
        model.predict(np.zeros((1, 4)), outputs=("nope",))
    assert set(model.predict(np.zeros((1, 4)), outputs=["label"])) == {"label"}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, None])
def test_all_finite(dtype, order, bad, rng):
    X = np.asarray(rng.normal(size=(37, 5)) * 1e30, dtype=dtype, order=order)
    X[3, 3] = np.finfo(dtype).max  # finite extremes are finite
    if bad is not None:
        X[rng.integers(37), rng.integers(5)] = bad
    assert _kernel.all_finite(X) == bool(np.isfinite(X).all())
    assert _kernel.all_finite(X[::2]) == bool(np.isfinite(X[::2]).all())
