"""The native backend: a :class:`~scorewire.formats.linear_spec.LinearSpec` scored by
the compiled kernel (``ext/_kernel.pyx``, built as ``scorewire.backends._kernel``).

:class:`NativeLinearModel` scores a spec with the kernel. Its ``predict``
validates dtype, rank, feature count and strides once and hands X to the kernel,
which allocates the outputs, validates nothing and releases the GIL. For the common
input (a plain, aligned, native-order float ndarray) the kernel's ``try_predict``
does those checks in C, which is what keeps a batch-1 call well under a microsecond;
it declines everything else, and the Python checks then raise or convert.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import numpy as np

from ..errors import InvalidInput
from ..formats.linear_spec import LinearSpec, classes_array
from ..types import Inputs
from . import _kernel

#: link name -> kernel constant
LINKS = {
    "identity": _kernel.LINK_IDENTITY,
    "logistic": _kernel.LINK_LOGISTIC,
    "softmax": _kernel.LINK_SOFTMAX,
    "sigmoid": _kernel.LINK_SIGMOID,
    "ovr": _kernel.LINK_OVR,
}


def all_finite(X: np.ndarray) -> bool:
    """True when no element of the matrix X is NaN or infinite (the kernel's check,
    without a temporary the size of X)."""
    return bool(_kernel.all_finite(X))


def kernel_paths(simd: bool = True) -> str:
    """Let the kernel use its AVX2+FMA paths (when the CPU has them) or not, for the
    whole process; returns which paths it uses now: "avx2+fma" or "portable"."""
    if not simd:
        _kernel._set_simd(False)
    return "avx2+fma" if _kernel.simd_enabled() else "portable"


def default_n_threads() -> int:
    """Threads for large batches: the CPUs this process may run on, capped by
    OpenMP's own limit (OMP_NUM_THREADS), never more."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, _kernel.max_threads()))


class NativeLinearModel:
    """Scores a :class:`LinearSpec` with the compiled kernel."""

    backend = "native"
    native_reason = ""

    def __init__(self, spec: LinearSpec, n_threads: int | None = None) -> None:
        self.spec = spec
        self.signature = spec.signature()
        self.n_threads = default_n_threads() if n_threads is None else max(1, int(n_threads))
        self._dtype = _F64 if np.dtype(spec.dtype) == _F64 else _F32
        self._classes = classes_array(spec.classes) if spec.classes is not None else None
        self._d = spec.n_features
        self._all_outputs = tuple(spec.outputs)
        self._kernel = _kernel.LinearKernel(
            spec.coef,
            spec.intercept,
            LINKS[spec.link],
            out64=self._dtype is _F64,
            value_1d=spec.n_decisions == 1 and not spec.value_2d,
            classes=self._classes,
        )
        self._try_predict = self._kernel.try_predict
        self._kernel_predict = self._kernel.predict
        #: requested outputs -> the kernel's plan: ((name, role), ...)
        self._plans: dict[tuple[str, ...] | None, _kernel.Plan] = {}

    def output_names(self, requested: Iterable[str] | None) -> tuple[str, ...]:
        """The outputs to compute: all when none are asked for; unknown names raise."""
        if not requested:
            return self._all_outputs
        names = tuple(requested)
        for name in names:
            if name not in self.spec.outputs:
                raise InvalidInput(
                    f"unknown output {name[:64]!r}; this model gives {list(self._all_outputs)}"
                )
        return names

    def _plan(self, outputs: Iterable[str] | None) -> _kernel.Plan:
        """(name, kernel role) pairs for a request's outputs, cached per request shape."""
        key = outputs if outputs is None or isinstance(outputs, tuple) else tuple(outputs)
        plan = self._plans.get(key)
        if plan is None:
            plan = tuple((n, _ROLES[self.spec.outputs[n]]) for n in self.output_names(key))
            if len(self._plans) < 64:
                self._plans[key] = plan
        return plan

    def check_input(self, X: Inputs) -> np.ndarray:
        """Validate X once; return an array the kernel can read: X itself unless its
        strides are not whole items or its byte order is foreign (then a copy)."""
        if X.__class__ is not np.ndarray:
            if isinstance(X, Mapping):
                raise InvalidInput("this model takes one matrix, not inputs by name")
            X = np.asarray(X)
        if X.ndim != 2:
            raise InvalidInput(f"input must be a 2-D (rows, features) array, got {X.ndim} dimensions")
        if X.shape[1] != self._d:
            raise InvalidInput(f"expected {self._d} features, got {X.shape[1]}")
        dtype = X.dtype
        if dtype.char not in "fd":
            raise InvalidInput(f"input dtype must be float32 or float64, got {dtype}")
        isz = dtype.itemsize
        if X.strides[0] % isz or X.strides[1] % isz or not dtype.isnative:
            X = np.ascontiguousarray(X, dtype=dtype.newbyteorder("="))
        return X

    def predict(self, X: Inputs, outputs: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Score X (n, d), float32 or float64, any order, read-only allowed (a
        tabular model is given one matrix, never inputs by name).

        Returns the requested outputs by name (all of them by default). Float outputs
        have the model's dtype.
        """
        # the batch-1 hot path: a cached plan, and the kernel's own C checks of X
        # (try_predict); anything it declines goes through check_input, which raises
        # the errors or converts X
        try:
            plan = self._plans[outputs]  # type: ignore[index]
        except (KeyError, TypeError):
            plan = self._plan(outputs)
        result = self._try_predict(X, plan, self.n_threads)
        if result is None:
            result = self._kernel_predict(self.check_input(X), plan, self.n_threads)
        return result


#: output role -> kernel role code
_ROLES = {
    "value": _kernel.ROLE_VALUE,
    "decision": _kernel.ROLE_DECISION,
    "probabilities": _kernel.ROLE_PROBABILITIES,
    "label": _kernel.ROLE_LABEL,
}

_F64 = np.dtype(np.float64)
_F32 = np.dtype(np.float32)
