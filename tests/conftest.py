"""Shared fixtures: small real models trained on scikit-learn's bundled data."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    return np.random.default_rng(20261127)


@pytest.fixture(params=[True, False], ids=["simd", "scalar"])
def simd(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Run a test once on each path the kernel can choose: its AVX2+FMA code ("simd")
    and its portable scalar loops ("scalar": every CPU without AVX2+FMA, every
    non-x86 build). So a machine with another CPU runs code the suite has run here.
    Yields whether the vector paths are in use.

    NOTE: where this CPU (or build) has no AVX2+FMA, "simd" is skipped rather than
    run: the kernel would quietly run its scalar loops a second time, and the report
    would show a pass for a path that never ran.
    """
    from scorewire.backends import _kernel

    if request.param and not _kernel.simd_available():
        pytest.skip("no AVX2+FMA on this CPU (or in this build): the vector path cannot run here")
    previous = _kernel._set_simd(request.param)
    try:
        assert _kernel.simd_enabled() == request.param
        yield request.param
    finally:
        _kernel._set_simd(previous)


def pytest_configure(config: pytest.Config) -> None:
    """``SCOREWIRE_SIMD=0 make test`` runs the whole suite on the kernel's portable
    loops: here through the same setting `scorewire serve` reads, and in every
    server the tests start as a subprocess (they inherit the variable)."""
    from scorewire.backends.native import kernel_paths
    from scorewire.settings import settings_from

    kernel_paths(settings_from().simd)


def pytest_report_header(config: pytest.Config) -> str:
    from scorewire.backends.native import kernel_paths

    return f"scorewire kernel paths: {kernel_paths()}"
