"""The label comparison of the parity tests (tests/parity.py) compares what it should:
it leaves out rows within rounding of a tie, and only those."""

from __future__ import annotations

import numpy as np
import pytest

from .parity import assert_labels_equal, decided_rows, exact_ties, first_maximum


def test_rows_within_the_bound_of_a_tie_are_not_decided():
    z = np.array([[1.0, 1.0, 0.0], [1.0, 1.0 - 1e-9, 0.0], [1.0, 0.5, 0.0], [0.0, 0.0, 2.0]])
    np.testing.assert_array_equal(decided_rows(z, 1e-6), [False, False, True, True])
    np.testing.assert_array_equal(decided_rows(z, 0.0), [False, True, True, True])
    # one decision column: the label is z > 0, so the tie is z == 0
    np.testing.assert_array_equal(decided_rows(np.array([[0.0], [1e-9], [-2.0]]), 1e-6), [False, False, True])
    np.testing.assert_array_equal(decided_rows(np.array([0.0, 1e-9, -2.0]), np.array([1e-6, 1e-12, 1.0])), [False, True, True])
    assert decided_rows(np.empty((0, 3)), 1e-6).shape == (0,)


def test_labels_are_compared_on_decided_rows_only():
    z = np.array([[1.0, 1.0], [3.0, 0.0], [0.0, 3.0]])
    assert_labels_equal([1, 0, 1], [0, 0, 1], z, 1e-6)  # they differ on the tie only
    with pytest.raises(AssertionError):
        assert_labels_equal([0, 1, 1], [0, 0, 1], z, 1e-6)  # a decided row differs
    with pytest.raises(AssertionError, match="does not test labels"):
        assert_labels_equal([0, 0, 1], [0, 0, 1], z, 10.0)  # no row is decided
    with pytest.raises(AssertionError):
        assert_labels_equal([0, 0], [0, 0, 1], z, 1e-6)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_exact_ties_are_exact_and_numpy_picks_the_first_maximum(k, rng):
    coef, intercept, X = exact_ties(k, 9, rng)
    z = X @ coef.T + intercept
    assert np.array_equal(z, np.round(z))  # integers: exact in any summation order
    top = z == z.max(axis=1, keepdims=True)
    if k == 1:
        assert (z == 0).sum() >= 1 and (z > 0).sum() >= 1 and (z < 0).sum() >= 1
    else:
        assert (top.sum(axis=1) == k).any() and (top.sum(axis=1) == 2).any()
        assert not decided_rows(z, 0.0)[top.sum(axis=1) > 1].any()
        np.testing.assert_array_equal(z.argmax(axis=1), first_maximum(z))
    np.testing.assert_array_equal(first_maximum(z), first_maximum(z.astype(np.float32)))
