"""Drift: reference.json is validated; the monitor bins exactly as the reference
did; PSI stays low on reference-like traffic and crosses the alert threshold on
shifted traffic, whatever the mix of request sizes; old traffic ages out."""

from __future__ import annotations

import copy
import json
import math
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris

import scorewire
from scorewire.errors import ModelLoadError
from scorewire.monitoring.drift import (
    PSI_ALERT,
    PSI_EPSILON,
    PSI_MODERATE,
    DriftConfig,
    DriftMonitor,
    Reference,
    psi,
)

DEMO = scorewire.demo_repository()
BC = load_breast_cancer().data
BC_REF = Reference.load(DEMO / "breast-cancer" / "1", n_features=30)
#: sample every row, bin every row: the histogram is exact
EXACT = DriftConfig(min_sample_every=1, max_sample_every=1, max_rows_per_call=10**9, min_samples=1)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh generator per test: each test draws the same data whatever runs before it."""
    return np.random.default_rng(20261127)


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def serve_rows(monitor: DriftMonitor, X: np.ndarray, rng: np.random.Generator, sizes=(1,)) -> None:
    """Feed X to the monitor as requests whose sizes are drawn from ``sizes``."""
    i = 0
    while i < len(X):
        n = int(rng.choice(sizes))
        monitor.observe(X[i : i + n])
        i += n


# ---------------------------------------------------------------- reference.json

@pytest.mark.parametrize("name, n", [("breast-cancer", 30), ("diabetes", 10), ("wine", 13), ("iris-forest", 4)])
def test_every_demo_reference_loads(name, n):
    ref = Reference.load(DEMO / name / "1", n_features=n)
    assert ref is not None and len(ref.features) == n
    for f in ref.features:
        assert f.fractions.size == f.edges.size + 1
        assert f.fractions.sum() == pytest.approx(1.0)


def test_a_missing_reference_means_no_drift_monitoring(tmp_path):
    assert Reference.load(tmp_path) is None
    assert DriftMonitor.from_version_dir(tmp_path) is None


def _doc() -> dict:
    return json.loads((DEMO / "breast-cancer" / "1" / "reference.json").read_text())


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda d: d.update(format="something.else"), "format must be"),
        (lambda d: d.update(format_version=2), "format_version"),
        (lambda d: d.update(extra=1), "unknown field 'extra'"),
        (lambda d: d.update(features=[]), "non-empty"),
        (lambda d: d["features"][3].update(bin_edges=[1.0, 2.0]), "feature 3: 10 bin_fractions for 2 bin_edges"),
        (lambda d: d["features"][3].update(bin_edges=[2.0, 1.0], bin_fractions=[0.5, 0.25, 0.25]), "strictly increasing"),
        (lambda d: d["features"][0].update(bin_fractions=[0.5] * 10), "sum to 1"),
        (lambda d: d["features"][0].update(bin_edges=[1.0, "x"]), "finite numbers"),
        (lambda d: d["features"][0].update(mean=None), "mean must be a finite number"),
        (lambda d: d["features"][0].update(colour="red"), "unknown field 'colour'"),
        (lambda d: d["features"].pop(), "29 features, the model takes 30"),
        # found by tests/fuzz/fuzz_reference.py: OverflowError, and a key echoed whole
        (lambda d: d["features"][0].update(mean=10**400), "mean must be a finite number"),
        (lambda d: d["features"][0].update(bin_edges=[-(10**309)]), "bin_edges must be a list of finite numbers"),
        (lambda d: d.update({"k" * 10_000: 1}), "unknown field 'kkkkkkkkkk"),
    ],
)
def test_malformed_references_are_load_errors_naming_the_file(tmp_path, change, words):
    doc = _doc()
    change(doc)
    (tmp_path / "reference.json").write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError) as err:
        Reference.load(tmp_path, n_features=30)
    assert "reference.json" in err.value.message and words in err.value.message
    assert len(err.value.message) < 300


@pytest.mark.parametrize("data", [b"{not json", b"[" * 100_000, b'{"format": "\xff"}'])
def test_invalid_json_is_a_load_error(tmp_path, data):
    """Deep nesting (RecursionError) and bytes that are not UTF-8 (UnicodeDecodeError)
    escaped as other errors (found by tests/fuzz/fuzz_reference.py)."""
    (tmp_path / "reference.json").write_bytes(data)
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        Reference.load(tmp_path)


def test_exported_reference_round_trips(rng):
    X = rng.normal(size=(500, 4))
    X[:, 2] = 7.0  # a constant feature: one edge
    X[:50, 3] = np.nan  # non-finite values are left out of the reference
    ref = Reference.from_dict(scorewire.reference_statistics(X))
    assert [f.edges.size for f in ref.features] == [9, 9, 1, 9]


# ---------------------------------------------------------------------- PSI

def test_psi_formula_by_hand():
    a, e = [0.5, 0.3, 0.2], [0.4, 0.4, 0.2]
    expected = (0.5 - 0.4) * math.log(0.5 / 0.4) + (0.3 - 0.4) * math.log(0.3 / 0.4)
    assert psi(a, e) == pytest.approx(expected, rel=1e-12)
    assert psi(e, e) == 0.0
    # an empty bin is clipped to epsilon, not infinite
    assert psi([1.0, 0.0], [0.5, 0.5]) == pytest.approx(0.5 * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5))
    assert (PSI_MODERATE, PSI_ALERT) == (0.1, 0.2)


def test_binning_the_reference_data_reproduces_its_fractions():
    """Every row binned once: the served histogram is the reference's, PSI is 0."""
    monitor = DriftMonitor(BC_REF, EXACT)
    monitor.observe(BC)
    counts, sampled, weight = monitor.histogram()
    assert sampled == len(BC) and weight == len(BC)
    for j, f in enumerate(BC_REF.features):
        np.testing.assert_allclose(counts[j, : f.fractions.size] / len(BC), f.fractions, rtol=0, atol=1e-15)
        assert counts[j, f.fractions.size :].sum() == 0  # nothing lands in padding
    assert max(monitor.snapshot().psi) == pytest.approx(0.0, abs=1e-12)


def test_one_row_at_a_time_bins_like_a_batch():
    one, batch = DriftMonitor(BC_REF, EXACT), DriftMonitor(BC_REF, EXACT)
    for i in range(len(BC)):
        one.observe(BC[i : i + 1])
    batch.observe(BC)
    np.testing.assert_array_equal(one.histogram()[0], batch.histogram()[0])


@pytest.mark.parametrize("sizes", [(1,), (1, 2, 5, 40, 300), (1000, 5000)])
def test_psi_stays_low_on_reference_like_data(rng, sizes):
    """Bootstrap rows of the training data, jittered by 1% of each feature's spread."""
    monitor = DriftMonitor(BC_REF, seed=1)
    X = BC[rng.integers(0, len(BC), 60_000)]
    X = X + rng.normal(scale=0.01 * BC.std(axis=0), size=X.shape)
    serve_rows(monitor, X, rng, sizes)
    snap = monitor.snapshot()
    assert snap.sampled_rows >= 1000
    assert snap.estimated_rows == pytest.approx(len(X), rel=0.1)
    assert snap.max_psi < PSI_MODERATE, snap.psi
    assert snap.drifted() == []
    print(f"reference-like, sizes {sizes}: max PSI {snap.max_psi:.4f}, median {np.median(snap.psi):.4f}, "
          f"{snap.sampled_rows} rows binned")  # fmt: skip


@pytest.mark.parametrize("sizes", [(1,), (1, 2, 5, 40, 300), (1000, 5000)])
def test_psi_crosses_the_alert_threshold_on_shifted_data(rng, sizes):
    """The same traffic with every input scaled by 1.25 (a unit change, a drifting sensor)."""
    monitor = DriftMonitor(BC_REF, seed=2)
    X = BC[rng.integers(0, len(BC), 60_000)] * 1.25
    serve_rows(monitor, X, rng, sizes)
    snap = monitor.snapshot()
    drifted = snap.drifted(PSI_ALERT)
    assert snap.max_psi > PSI_ALERT
    assert len(drifted) >= 15, snap.psi  # most features moved (20-26 of 30 over seeds)
    assert "mean radius" in drifted
    print(f"scaled x1.25, sizes {sizes}: max PSI {snap.max_psi:.3f}, median {np.median(snap.psi):.3f}, "
          f"{len(drifted)}/30 features over {PSI_ALERT}")  # fmt: skip


def test_a_shift_in_one_feature_flags_that_feature_only(rng):
    monitor = DriftMonitor(BC_REF, seed=3)
    X = BC[rng.integers(0, len(BC), 40_000)].copy()
    X[:, 7] += 2 * BC[:, 7].std()  # "mean concave points" moves by two standard deviations
    serve_rows(monitor, X, rng, (1, 3, 100))
    snap = monitor.snapshot()
    assert snap.drifted() == [BC_REF.features[7].name]
    others = [v for j, v in enumerate(snap.psi) if j != 7]
    assert max(others) < PSI_MODERATE


def test_rows_of_small_and_large_requests_weigh_the_same(rng):
    """Half the rows come as one-row requests from shifted data, half as large
    requests from reference data: the estimate is the 50/50 mixture by rows."""
    monitor = DriftMonitor(BC_REF, seed=4)
    exact = DriftMonitor(BC_REF, EXACT)
    small = BC[rng.integers(0, len(BC), 30_000)] * 1.5
    large = BC[rng.integers(0, len(BC), 30_000)]
    for i in range(0, 30_000, 3000):
        for j in range(i, i + 3000):
            monitor.observe(small[j : j + 1])
        monitor.observe(large[i : i + 3000])
    exact.observe(small)
    exact.observe(large)
    counts, _, weight = monitor.histogram()
    truth, _, _ = exact.histogram()
    assert weight == pytest.approx(60_000, rel=0.1)
    share = counts / counts.sum(axis=1, keepdims=True)
    true_share = truth / truth.sum(axis=1, keepdims=True)
    assert np.abs(share - true_share).max() < 0.05


# --------------------------------------------------------------- the window

def test_old_traffic_ages_out_of_the_window(rng):
    clock = FakeClock()
    monitor = DriftMonitor(BC_REF, DriftConfig(window_s=600, n_buckets=6), clock=clock, seed=5)
    serve_rows(monitor, BC[rng.integers(0, len(BC), 40_000)] * 1.5, rng, (1, 50))
    assert monitor.snapshot().max_psi > PSI_ALERT
    clock.t += 300  # half a window later, with reference-like traffic
    serve_rows(monitor, BC[rng.integers(0, len(BC), 40_000)], rng, (1, 50))
    half = monitor.snapshot().max_psi
    clock.t += 400  # the shifted traffic is now older than the window
    snap = monitor.snapshot()
    assert snap.max_psi < PSI_MODERATE < half
    clock.t += 700  # everything is
    snap = monitor.snapshot()
    assert snap.sampled_rows == 0 and math.isnan(snap.max_psi)


def test_too_few_rows_give_nan_not_a_noisy_number():
    monitor = DriftMonitor(BC_REF, DriftConfig(min_samples=500, min_sample_every=1, max_sample_every=1, max_rows_per_call=1000))
    monitor.observe(BC[:100])
    snap = monitor.snapshot()
    assert snap.sampled_rows == 100 and all(math.isnan(v) for v in snap.psi)
    monitor.observe(BC[100:])
    assert not any(math.isnan(v) for v in monitor.snapshot().psi)


def test_sampling_period_adapts_to_traffic(rng):
    clock = FakeClock()
    cfg = DriftConfig(window_s=600, n_buckets=6, target_samples_per_bucket=1000)
    monitor = DriftMonitor(BC_REF, cfg, clock=clock, seed=6)
    assert monitor.sample_every == cfg.min_sample_every
    row = BC[:1]
    # 1. busy: 200 000 one-row requests in one 100 s bucket
    for _ in range(200_000):
        monitor.observe(row)
    # the rate halved within the bucket, so it binned fewer than ~4 × its target
    assert monitor.sample_every > cfg.min_sample_every
    _, sampled, estimated = monitor.histogram()
    assert sampled < 4 * cfg.target_samples_per_bucket + 64
    assert estimated == pytest.approx(200_000, rel=0.1)
    # 2. the next bucket starts at the period the last one needed
    clock.t += 100
    monitor.snapshot()  # a metrics scrape
    assert monitor.sample_every == math.ceil(estimated / cfg.target_samples_per_bucket)
    # 3. quiet for longer than a bucket: a scrape brings the period back down
    clock.t += 1000
    monitor.snapshot()
    assert monitor.sample_every == cfg.min_sample_every


def test_non_finite_values_are_left_out(rng):
    X = BC[rng.integers(0, len(BC), 5000)].copy()
    X[::3, 0] = np.nan
    X[1::7, 1] = np.inf
    monitor = DriftMonitor(BC_REF, EXACT)
    monitor.observe(X)
    counts, _, _ = monitor.histogram()
    assert counts[0].sum() == np.isfinite(X[:, 0]).sum()
    assert counts[1].sum() == np.isfinite(X[:, 1]).sum()
    assert counts[2].sum() == len(X)
    assert monitor.snapshot().max_psi < PSI_MODERATE


def test_float32_inputs_of_an_onnx_model():
    iris = load_iris().data
    ref = Reference.load(DEMO / "iris-forest" / "1", n_features=4)
    monitor = DriftMonitor(ref, EXACT, dtype="float32")
    monitor.observe(iris.astype(np.float32))
    assert monitor.snapshot().max_psi < 1e-12
    for row in iris.astype(np.float32):  # one row at a time, through the float32 stash
        monitor.observe(row[None, :])
    assert monitor.snapshot().max_psi < 1e-12


def test_observe_from_many_threads_at_once(rng):
    monitor = DriftMonitor(BC_REF, DriftConfig(min_sample_every=4, max_sample_every=4), seed=7)
    X = BC[rng.integers(0, len(BC), 20_000)]
    errors = []
    start = threading.Barrier(4)  # all four at once, however the threads get scheduled

    def worker(part):
        try:
            start.wait(30)
            for i in range(0, len(part), 2):
                monitor.observe(part[i : i + 2])
            monitor.observe(part)
        except Exception as exc:  # pragma: no cover - the test fails below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(X[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    counts, _, weight = monitor.histogram()
    assert np.allclose(counts.sum(axis=1), counts.sum(axis=1)[0])  # every feature got every row
    assert weight == pytest.approx(2 * len(X), rel=0.1)
    assert monitor.snapshot().max_psi < PSI_MODERATE


def test_reset_forgets_everything():
    monitor = DriftMonitor(BC_REF, EXACT)
    monitor.observe(BC)
    monitor.reset()
    assert monitor.histogram()[1] == 0


def test_config_is_checked():
    with pytest.raises(ValueError):
        DriftConfig(min_sample_every=8, max_sample_every=4)
    with pytest.raises(ValueError):
        DriftConfig(window_s=0)


def test_reference_dict_is_not_modified():
    doc = _doc()
    before = copy.deepcopy(doc)
    DriftMonitor(Reference.from_dict(doc)).observe(BC)
    assert doc == before


def test_the_fleet_drift_rules_use_the_servers_threshold_epsilon_and_minimum():
    """deploy/prometheus/rules.yml computes PSI as this module does: the same ε,
    the alert at PSI_ALERT, and only over as many binned rows as a PSI needs."""
    rules = (Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml").read_text()
    m = re.search(r"scorewire:feature_psi:rate1h >= ([0-9.]+)\s+and on \(model, version\) "
                  r"scorewire:drift_sampled_rows:increase1h >= ([0-9]+)", rules)  # fmt: skip
    assert m and float(m.group(1)) == PSI_ALERT and int(m.group(2)) == DriftConfig().min_samples
    clips = re.findall(r"clamp_min\((?:[^()]|\([^()]*\))*?,\s*([0-9.e-]+)\s*\)", rules)
    assert len(clips) == 2 and all(float(c) == PSI_EPSILON for c in clips), clips


# ---------------------------------------------------------------- counters for a fleet

def test_take_binned_gives_what_was_binned_since_the_last_call(rng):
    """The counters' increments: every binned row once, weighted as in the window."""
    monitor = DriftMonitor(BC_REF, EXACT)
    monitor.observe(BC[:300])
    first, rows = monitor.take_binned()
    window, sampled, _ = monitor.histogram()
    assert rows == sampled == 300 and np.array_equal(first, window)
    assert first.sum(axis=1)[0] == 300
    again, rows = monitor.take_binned()
    assert rows == 0 and not again.any()
    for i in range(300, 340):  # one row at a time: through the stash, binned when taken
        monitor.observe(BC[i : i + 1])
    later, rows = monitor.take_binned()
    assert rows == 40 and np.array_equal(first + later, monitor.histogram()[0])


def test_binned_weights_estimate_the_rows_served(rng):
    """Sampled (1 row in k, weight k): each feature's bins sum to the estimated rows;
    1024-row requests are estimated exactly (a stride of k through them)."""
    monitor = DriftMonitor(BC_REF, seed=3)
    for _ in range(20):
        monitor.observe(BC[rng.integers(0, len(BC), 1024)])
    counts, rows = monitor.take_binned()
    assert rows == 20 * 64
    assert np.array_equal(counts.sum(axis=1), np.full(30, 20 * 1024.0))
    small = DriftMonitor(BC_REF, seed=4)
    serve_rows(small, BC[rng.integers(0, len(BC), 20_000)], rng)
    counts, rows = small.take_binned()
    assert counts.sum(axis=1) == pytest.approx(np.full(30, 20_000), rel=0.15)
    assert counts.sum() > 0 and np.all(counts.sum(axis=1) == counts.sum(axis=1)[0])


def test_reference_bins_skip_features_without_a_reference():
    doc = _doc()
    doc["features"][1]["bin_fractions"] = [0.0] * len(doc["features"][1]["bin_fractions"])
    monitor = DriftMonitor(Reference.from_dict(doc))
    bins = monitor.reference_bins()
    assert [j for j, _, _ in bins] == [j for j in range(30) if j != 1]
    j, name, shares = bins[0]
    assert (j, name) == (0, "mean radius") and shares.sum() == pytest.approx(1.0)
