"""The compiled kernel against the NumPy reference, over a grid: dtype × order ×
read-only × n_threads × batch size × link, plus hand-computed values. Every test that
scores runs on both of the kernel's paths, AVX2+FMA and portable scalar (the ``simd``
fixture, tests/conftest.py)."""

from __future__ import annotations

import math
import os
import signal
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from scorewire.backends import _kernel
from scorewire.backends.native import NativeLinearModel
from scorewire.formats.linear_spec import LinearSpec
from tests.reference import reference_scores

from .parity import (
    assert_decisions_close,
    assert_labels_equal,
    assert_proba_close,
    decision_bound,
    decision_scale,
    exact_ties,
    first_maximum,
)

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


def label_bound(spec: LinearSpec, X: np.ndarray, ref: dict) -> np.ndarray:
    """How far the kernel's decisions may be from the reference's where it picks labels.

    NOTE: float64 whatever the output dtype: labels come from the kernel's float64
    decision (float32 inputs are widened exactly), never from the rounded output.
    """
    return decision_bound(ref["decision"], decision_scale(X, spec.coef, spec.intercept), "float64")


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


@pytest.mark.usefixtures("simd")
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
            assert_labels_equal(got[name], ref["label"], ref["decision"], label_bound(spec, X, ref))
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


@pytest.mark.usefixtures("simd")
def test_zero_rows_give_zero_rows(rng):
    spec = make_spec("softmax", 5, "float64", rng)
    out = NativeLinearModel(spec).predict(np.empty((0, 5)))
    assert out["probabilities"].shape == (0, 4)
    assert out["label"].shape == (0,)


@pytest.mark.usefixtures("simd")
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


@pytest.mark.usefixtures("simd")
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


#: every kind of native classifier: (link, decision columns, classes); the classes
#: are not sorted, so "first" means first in ``classes``, not smallest
TIE_CASES = {
    "logistic": ("logistic", 1, ("yes", "no")),
    "binary-scores": ("identity", 1, (1, 0)),
    "softmax": ("softmax", 4, ("d", "b", "a", "c")),
    "sigmoid": ("sigmoid", 3, (7, 3, 5)),
    "ovr": ("ovr", 3, (2, 0, 1)),
    "scores": ("identity", 3, ("z", "x", "y")),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", sorted(TIE_CASES))
def test_exact_ties_give_the_first_class(simd, case, dtype, rng):
    """The label rule (_label_row) on decisions tied exactly: small integers, exact in
    float64 (and float32) in any summation order, with or without FMA. One decision
    column: classes[1] only when z > 0, so z == 0 is classes[0]; k columns: the first
    of the tied classes. As scikit-learn (test_sklearn_parity) and onnxruntime
    (test_onnx_inspect); the NumPy reference agrees too. In every memory layout (each
    has its own decision loop) and in a batch large enough for two threads."""
    link, k, classes = TIE_CASES[case]
    coef, intercept, X = exact_ties(k, 9, rng)
    spec = LinearSpec("classification", link, coef, intercept, classes=classes, dtype=dtype)
    want = np.asarray(classes, dtype=object)[first_maximum(X @ coef.T + intercept)]
    np.testing.assert_array_equal(reference_scores(spec, X)["label"].astype(object), want)
    model = NativeLinearModel(spec, n_threads=2)
    for layout, Xl in _layouts(X.astype(dtype)):
        got = model.predict(Xl, outputs=["label"])["label"]
        np.testing.assert_array_equal(got.astype(object), want, err_msg=layout)
    many = np.tile(X.astype(dtype), (1 + 2 * _kernel.PARALLEL_MIN_WORK // X.size, 1))
    assert len(many) >= _kernel.PARALLEL_MIN_ROWS
    got = model.predict(many, outputs=["label"])["label"]
    np.testing.assert_array_equal(got.astype(object), np.resize(want, len(many)))


def test_kernel_reports_openmp():
    assert isinstance(_kernel.openmp_enabled(), bool)
    assert _kernel.max_threads() >= 1
    assert _kernel.PARALLEL_MIN_ROWS > 0


@pytest.mark.usefixtures("simd")
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


@pytest.mark.usefixtures("simd")
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


# ---------------------------------------------------------------------------
# the vector (AVX2+FMA) and scalar paths, the fast path, the parallel paths
# ---------------------------------------------------------------------------

@pytest.fixture
def openmp_prange():
    """Run a test with large batches on OpenMP's prange instead of the helper pool."""
    previous = _kernel._set_pool(False)
    try:
        yield
    finally:
        _kernel._set_pool(previous)


def _layouts(X: np.ndarray):
    """X in every memory layout the kernel reads: (name, array with X's values)."""
    n, d = X.shape
    yield "C", X
    yield "F", np.asfortranarray(X)
    padded = np.zeros((n, d + 3), dtype=X.dtype)  # row-major, rows 3 items apart
    padded[:, :d] = X
    yield "padded", padded[:, :d]
    wide = np.zeros((n, 2 * d), dtype=X.dtype)  # neither axis contiguous
    wide[:, ::2] = X
    yield "strided", wide[:, ::2]
    yield "reversed", X[::-1].copy()[::-1]  # negative row stride
    readonly = X.copy()
    readonly.setflags(write=False)
    yield "readonly", readonly


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", ["logistic", "softmax", "identity-multi"])
def test_vector_and_scalar_paths_match_reference(simd, dtype, case, rng):
    """Feature counts around the vector widths (d % 4 != 0, the four-row and one-row
    dot products either side of 64) and row counts that are not multiples of 4, in
    every layout: the paths of _decision_block, each against the NumPy reference."""
    for d in (1, 2, 3, 4, 5, 7, 8, 9, 13, 30, 63, 64, 65, 100, 257):
        spec = make_spec(case, d, dtype, rng)
        model = NativeLinearModel(spec, n_threads=1)
        for n in (1, 3, 4, 5, 9, 258):
            X = rng.normal(scale=3.0, size=(n, d)).astype(dtype)
            ref = reference_scores(spec, X.astype(np.float64))
            scale = decision_scale(X, spec.coef, spec.intercept)
            for layout, Xl in _layouts(X):
                got = model.predict(Xl)
                assert_decisions_close(got["decision"], ref["decision"], scale, dtype), (d, n, layout)
                if spec.task == "classification":
                    if spec.link != "identity":
                        assert_proba_close(got["probabilities"], ref["probabilities"], dtype)
                    assert_labels_equal(got["label"], ref["label"], ref["decision"], label_bound(spec, X, ref))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_row_scores_the_same_in_any_batch(simd, dtype, rng):
    """Bit for bit: a row alone, at any offset of a small batch (rows taken two at a
    time, an odd one alone, n % 4 rows in the vector link's padded tail), and in a
    batch large enough to be read from memory (long rows one at a time) and split
    over threads. The dynamic batcher relies on it: a merged request gets the answer
    it would get alone."""
    itemsize = np.dtype(dtype).itemsize
    for case in ("logistic", "softmax"):
        for d in (1, 3, 5, 16, 17, 30, 64, 100, 257):
            spec = make_spec(case, d, dtype, rng)
            model = NativeLinearModel(spec, n_threads=2)
            n = max(1000, (3 << 20) // (d * itemsize))  # over the 2 MiB "from memory" size
            X = rng.normal(size=(n, d)).astype(dtype)
            whole = model.predict(X)
            for start, stop in ((0, 1), (5, 6), (n - 1, n), (3, 10), (4, 9), (1, 4)):
                part = model.predict(X[start:stop])
                for name in whole:
                    np.testing.assert_array_equal(part[name], whole[name][start:stop])


@pytest.mark.parametrize("out_dtype", ["float32", "float64"])
def test_vector_logistic_link_equals_scalar(out_dtype):
    """The AVX2 exp against libm over the whole range: z = x exactly (one feature,
    weight 1, intercept 0), including both sides of the -708 cut-off to libm,
    subnormal results, +-inf and NaN."""
    if not _kernel.simd_available():
        pytest.skip("no AVX2+FMA on this CPU (or in this build): no vector exp to compare")
    z = np.concatenate([
        np.linspace(-40, 40, 4001),
        np.linspace(-800, 800, 1601),
        [-709.0, -708.5, -708.0, -707.9, 707.9, 708.0, 708.5, 709.0, -745.0, -746.0],
        [0.0, -0.0, 1e-300, -1e-300, 5e-324, np.inf, -np.inf, np.nan, 1e308, -1e308],
    ])
    X = z.reshape(-1, 1)
    spec = LinearSpec("classification", "logistic", [[1.0]], [0.0], classes=(0, 1), dtype=out_dtype)
    model = NativeLinearModel(spec, n_threads=1)
    results = {}
    for on in (True, False):
        previous = _kernel._set_simd(on)
        try:
            with np.errstate(all="raise"):
                results[on] = model.predict(X, outputs=("probabilities", "decision"))
        finally:
            _kernel._set_simd(previous)
    vec, sca = results[True]["probabilities"], results[False]["probabilities"]
    with np.errstate(over="ignore"):  # 1e308 as float32 is inf, in the kernel too
        np.testing.assert_array_equal(results[True]["decision"][:, 0], z.astype(out_dtype))
    assert np.array_equal(np.isnan(vec), np.isnan(sca))
    # libm's exp is within 1 ulp, the polynomial within ~2: a few ulp apart at most
    np.testing.assert_allclose(vec, sca, rtol=1e-15 if out_dtype == "float64" else 0, atol=0)
    ref = np.column_stack([1 / (1 + np.exp(np.clip(z, -700, 700))), 1 / (1 + np.exp(-np.clip(z, -700, 700)))])
    finite = np.abs(z) <= 700
    assert_proba_close(vec[finite], ref[finite], out_dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("pool", [True, False], ids=["pool", "openmp"])
@pytest.mark.parametrize("d", [3, 30, 257])
def test_parallel_equals_serial_bitwise(simd, dtype, pool, d, rng):
    """Every block is scored by the same code whichever thread runs it, so two threads
    (the helper pool or OpenMP's prange) give exactly the one-thread result; the row
    count is not a multiple of the block size."""
    n = 30_011  # n * d over PARALLEL_MIN_WORK for every d here
    assert n * 3 >= _kernel.PARALLEL_MIN_WORK
    spec = make_spec("logistic", d, dtype, rng)
    X = rng.normal(size=(n, d)).astype(dtype)
    one = NativeLinearModel(spec, n_threads=1).predict(X)
    previous = _kernel._set_pool(pool)
    try:
        two = NativeLinearModel(spec, n_threads=2).predict(X)
        two_f = NativeLinearModel(spec, n_threads=2).predict(np.asfortranarray(X))
    finally:
        _kernel._set_pool(previous)
    for name in one:
        np.testing.assert_array_equal(two[name], one[name])
    assert_decisions_close(two_f["decision"], one["decision"], decision_scale(X, spec.coef, spec.intercept), dtype)
    if pool and _kernel.openmp_enabled() and sys.platform == "linux":
        assert _kernel._pool_threads() >= 1


@pytest.mark.usefixtures("simd")
def test_concurrent_callers_share_the_pool(rng):
    """Callers on several Python threads at once: one owns the helper pool, the others
    score on their own thread rather than wait; every result is right."""
    spec = make_spec("softmax", 20, "float32", rng)
    model = NativeLinearModel(spec, n_threads=2)
    batches = [rng.normal(size=(9_000 + 17 * i, 20)).astype(np.float32) for i in range(8)]
    want = [NativeLinearModel(spec, n_threads=1).predict(X) for X in batches]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            got = list(pool.map(model.predict, batches))
            for g, w in zip(got, want, strict=True):
                for name in w:
                    np.testing.assert_array_equal(g[name], w[name])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_parallel_scoring_after_fork(rng):
    """A child forked after the helpers started scores large batches (it starts its
    own helpers: the parent's do not exist in it) instead of hanging."""
    spec = make_spec("logistic", 30, "float32", rng)
    model = NativeLinearModel(spec, n_threads=2)
    X = rng.normal(size=(50_000, 30)).astype(np.float32)
    want = model.predict(X)["probabilities"]  # starts the parent's helpers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = all(np.array_equal(model.predict(X)["probabilities"], want) for _ in range(20))
        os._exit(0 if ok else 1)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung scoring in parallel")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.usefixtures("simd")
def test_fast_path_declines_what_it_cannot_score(rng):
    """try_predict takes plain aligned native float arrays and returns None for the
    rest (the Python checks then raise or convert)."""
    spec = make_spec("logistic", 4, "float64", rng)
    kernel = NativeLinearModel(spec)._kernel
    plan = (("probabilities", _kernel.ROLE_PROBABILITIES),)

    class Sub(np.ndarray):
        pass

    X = rng.normal(size=(3, 4))
    unaligned = np.frombuffer(bytearray(X.nbytes + 1), dtype=np.float64, offset=1, count=12).reshape(3, 4)
    declined = [
        X.tolist(), X.view(Sub), X[:, :3], X.reshape(3, 2, 2), X.astype(np.float16),
        X.astype(np.int64), X.astype(">f8"), unaligned,
    ]
    for bad in declined:
        assert kernel.try_predict(bad, plan, 1) is None
    for good in (X, X.astype(np.float32), np.asfortranarray(X), X[::-1], X[::2]):
        got = kernel.try_predict(good, plan, 1)
        assert set(got) == {"probabilities"}
    # what the fast path declines, predict still scores
    unaligned[...] = X
    np.testing.assert_allclose(
        NativeLinearModel(spec).predict(unaligned)["probabilities"],
        reference_scores(spec, X)["probabilities"], rtol=1e-12)
    np.testing.assert_allclose(
        NativeLinearModel(spec).predict(X.view(Sub))["probabilities"],
        reference_scores(spec, X)["probabilities"], rtol=1e-12)


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_output_plans(dtype, rng):
    """Outputs by name: subsets, one role under two names, value (n,) with decision
    (n, 1), labels from string classes, and wide models (k > the on-stack scratch)."""
    X = rng.normal(size=(300, 6)).astype(dtype)
    reg = LinearSpec("regression", "identity", rng.normal(size=(1, 6)), [0.5], dtype=dtype,
                     outputs={"value": "value", "decision": "decision", "score": "value"})
    model = NativeLinearModel(reg)
    ref = reference_scores(reg, X)
    out = model.predict(X)
    assert out["value"].shape == (300,) and out["decision"].shape == (300, 1)
    assert out["score"] is out["value"]
    assert {a.dtype for a in out.values()} == {np.dtype(dtype)}
    scale = decision_scale(X, reg.coef, reg.intercept)
    assert_decisions_close(out["value"], ref["value"][:, 0], scale[:, 0], dtype)
    assert model.predict(X, outputs=["value"])["value"].shape == (300,)
    for k in (3, 12):  # 12 > SCRATCH_K: decisions in a scratch array of n rows
        classes = tuple(f"c{i}" for i in range(k))
        spec = LinearSpec("classification", "softmax", rng.normal(size=(k, 6)), rng.normal(size=k),
                          classes=classes, dtype=dtype)
        model = NativeLinearModel(spec, n_threads=2)
        for n in (1, 300, 30_000):
            Xn = rng.normal(size=(n, 6)).astype(dtype)
            ref = reference_scores(spec, Xn)
            for outputs in (("label",), ("probabilities",), ("label", "decision"), None):
                got = model.predict(Xn, outputs=outputs)
                assert set(got) == set(outputs or spec.outputs)
                if "label" in got:
                    assert_labels_equal(got["label"], ref["label"], ref["decision"], label_bound(spec, Xn, ref))
                if "probabilities" in got:
                    assert_proba_close(got["probabilities"], ref["probabilities"], dtype)
                if "decision" in got:
                    assert got["decision"].dtype == np.dtype(dtype)
                    assert_decisions_close(got["decision"], ref["decision"],
                                           decision_scale(Xn, spec.coef, spec.intercept), dtype)


@pytest.mark.usefixtures("simd")
def test_score_into_caller_buffers(rng):
    """LinearKernel.score: caller-allocated outputs, any of them None."""
    spec = make_spec("softmax", 5, "float64", rng)
    kernel = NativeLinearModel(spec)._kernel
    X = rng.normal(size=(11, 5)).astype(np.float32)
    ref = reference_scores(spec, X)
    z, out, labels = np.empty((11, 4)), np.empty((11, 4), np.float32), np.empty(11, np.int64)
    kernel.score(X, z, out, labels, 1)
    assert_decisions_close(z, ref["decision"], decision_scale(X, spec.coef, spec.intercept), "float64")
    assert_proba_close(out, ref["probabilities"], "float32")
    out[...] = 0
    kernel.score(X, None, out, None, 1)
    assert_proba_close(out, ref["probabilities"], "float32")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_all_finite_layouts_and_sizes(dtype, simd, rng):
    """Small and large (several blocks of the sum, the GIL released) arrays, in every
    layout; one bad value anywhere, first and last included; foreign byte order and
    other dtypes fall back to NumPy."""
    for n, d in ((1, 1), (3, 5), (1000, 30), (700, 256), (5000, 3)):
        X = rng.normal(size=(n, d)).astype(dtype)
        for layout, Xl in _layouts(X):
            assert _kernel.all_finite(Xl), layout
        for bad in (np.nan, np.inf, -np.inf):
            for i, j in ((0, 0), (n - 1, d - 1), (n // 2, d // 3)):
                Xb = X.copy()
                Xb[i, j] = bad
                for layout, Xl in _layouts(Xb):
                    assert not _kernel.all_finite(Xl), (layout, i, j, bad)
    X = rng.normal(size=(4, 3))
    assert _kernel.all_finite(X.astype(">f8"))
    X[1, 1] = np.nan
    assert not _kernel.all_finite(X.astype(">f8"))
    assert not _kernel.all_finite(X.astype(np.float16))
    assert _kernel.all_finite(np.zeros((0, 3))) and _kernel.all_finite(np.zeros((3, 0)))


def test_simd_switch():
    """_set_simd turns the vector paths off and back on (when the CPU has them)."""
    previous = _kernel._set_simd(False)
    try:
        assert not _kernel.simd_enabled()
        _kernel._set_simd(True)
        assert _kernel.simd_enabled() == _kernel.simd_available()
    finally:
        _kernel._set_simd(previous)


def test_no_simd_setting_turns_the_vector_paths_off():
    """`scorewire serve --no-simd` (SCOREWIRE_SIMD=0) keeps the kernel on its portable
    loops for the whole process; the default leaves the kernel's own choice."""
    from scorewire.backends.native import kernel_paths
    from scorewire.settings import settings_from

    previous = _kernel._set_simd(True)
    try:
        assert kernel_paths(settings_from(environ={}).simd) == ("avx2+fma" if _kernel.simd_available() else "portable")
        assert kernel_paths(settings_from(environ={"SCOREWIRE_SIMD": "0"}).simd) == "portable"
        assert not _kernel.simd_enabled()
    finally:
        _kernel._set_simd(previous)
