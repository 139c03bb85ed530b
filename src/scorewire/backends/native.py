"""The native backend: a :class:`~scorewire.formats.linear_spec.LinearSpec` scored by
the compiled kernel (``ext/_kernel.pyx``, built as ``scorewire.backends._kernel``).

:class:`NativeLinearModel` scores a spec with the kernel. Its ``predict``
validates dtype, rank, feature count and strides once and hands X to the kernel,
which allocates the outputs, validates nothing and releases the GIL. For the common
input (a plain, aligned, native-order float ndarray) the kernel's ``try_predict``
does those checks in C, which is what keeps a batch-1 call well under a microsecond;
it declines everything else, and the Python checks then raise or convert.

Every native model also explains its decisions, when a request names the outputs
``contributions`` and ``base_value`` (``scorewire.types.EXPLANATIONS``): with
independent features the exact Shapley values of a linear decision are closed-form,
``coef[c, j] * (x[j] - baseline[j])``, and the kernel writes them in the same pass
as the scores. The baseline is the feature means of the version's reference.json
(see :func:`scorewire.backends.loader.load_model`), else zeros.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping

import numpy as np

from ..errors import InvalidInput, ModelLoadError
from ..formats.linear_spec import LinearSpec, classes_array
from ..types import (
    BASE_VALUE,
    BASELINE_REFERENCE,
    BASELINE_ZEROS,
    CONTRIBUTIONS,
    EXPLANATIONS,
    Inputs,
    Signature,
    TensorSpec,
    requested_outputs,
)
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
    """Scores a :class:`LinearSpec` with the compiled kernel.

    ``baseline``: the feature values explanations are measured from, shape (d,)
    (the reference means); None: zeros. ``signature.explanation_baseline`` says
    which.
    """

    backend = "native"
    native_reason = ""

    def __init__(self, spec: LinearSpec, n_threads: int | None = None, baseline: np.ndarray | None = None) -> None:
        self.spec = spec
        self.n_threads = default_n_threads() if n_threads is None else max(1, int(n_threads))
        self._dtype = _F64 if np.dtype(spec.dtype) == _F64 else _F32
        self._classes = classes_array(spec.classes) if spec.classes is not None else None
        self._d = spec.n_features
        self._all_outputs = tuple(spec.outputs)
        #: output name -> kernel role: the spec's outputs, then the explanations (unless
        #: the spec names an output like one of them: its own output keeps the name)
        self._roles = {name: _ROLES[role] for name, role in spec.outputs.items()}
        explains = not any(name in spec.outputs for name in EXPLANATIONS)
        if explains:
            self._roles[CONTRIBUTIONS] = _kernel.ROLE_CONTRIBUTIONS
            self._roles[BASE_VALUE] = _kernel.ROLE_BASE_VALUE
        mu = None
        if baseline is not None:
            mu = np.ascontiguousarray(baseline, dtype=np.float64)
            if mu.shape != (self._d,) or not np.isfinite(mu).all():
                raise ModelLoadError(f"the explanation baseline must be {self._d} finite feature values")
        self.signature = _with_explanations(spec.signature(), spec, mu is not None) if explains else spec.signature()
        self._kernel = _kernel.LinearKernel(
            spec.coef,
            spec.intercept,
            LINKS[spec.link],
            out64=self._dtype is _F64,
            value_1d=spec.n_decisions == 1 and not spec.value_2d,
            classes=self._classes,
            baseline=mu,
        )
        self._try_predict = self._kernel.try_predict
        self._kernel_predict = self._kernel.predict
        #: requested outputs -> the kernel's plan: ((name, role), ...)
        self._plans: dict[tuple[str, ...] | None, _kernel.Plan] = {}

    def output_names(self, requested: Iterable[str] | None) -> tuple[str, ...]:
        """The outputs to compute: all when none are asked for; unknown names raise."""
        return requested_outputs(requested, self._all_outputs, self._roles)

    def _plan(self, outputs: Iterable[str] | None) -> _kernel.Plan:
        """(name, kernel role) pairs for a request's outputs, cached per request shape."""
        key = outputs if outputs is None or isinstance(outputs, tuple) else tuple(outputs)
        plan = self._plans.get(key)
        if plan is None:
            plan = tuple((n, self._roles[n]) for n in self.output_names(key))
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

        Returns the requested outputs by name (all but the explanations by default).
        Float outputs have the model's dtype; the explanations have X's.
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


def _with_explanations(sig: Signature, spec: LinearSpec, reference: bool) -> Signature:
    """A spec's signature with the explanation outputs after its own."""
    k, d = spec.n_decisions, spec.n_features
    shape = (-1, d) if k == 1 else (-1, k, d)
    return dataclasses.replace(
        sig,
        outputs=(
            *sig.outputs,
            TensorSpec(CONTRIBUTIONS, spec.dtype, shape, CONTRIBUTIONS),
            TensorSpec(BASE_VALUE, spec.dtype, (k,), BASE_VALUE),
        ),
        explanation_baseline=BASELINE_REFERENCE if reference else BASELINE_ZEROS,
    )


#: output role -> kernel role code
_ROLES = {
    "value": _kernel.ROLE_VALUE,
    "decision": _kernel.ROLE_DECISION,
    "probabilities": _kernel.ROLE_PROBABILITIES,
    "label": _kernel.ROLE_LABEL,
}

_F64 = np.dtype(np.float64)
_F32 = np.dtype(np.float32)
