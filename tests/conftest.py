"""Shared fixtures: small real models trained on scikit-learn's bundled data."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    return np.random.default_rng(20261127)
