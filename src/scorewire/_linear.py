"""Linear models: their specification and the native (compiled) scorer.

A :class:`LinearSpec` is what every linear format reduces to — ``model.json``, a
linear ONNX graph, a PMML RegressionModel, a fitted scikit-learn estimator: weights
``coef`` of shape (k, d), ``intercept`` of shape (k,), a link that turns the decision
``z = X @ coef.T + intercept`` into outputs, and the names clients use for them.

:class:`NativeLinearModel` scores a spec with ``scorewire._kernel``. Its ``predict``
validates dtype, rank, feature count and strides once and hands X to the kernel,
which allocates the outputs, validates nothing and releases the GIL. For the common
input (a plain, aligned, native-order float ndarray) the kernel's ``try_predict``
does those checks in C, which is what keeps a batch-1 call well under a microsecond;
it declines everything else, and the Python checks then raise or convert.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from . import _kernel
from .errors import InvalidInput, ModelLoadError
from .types import FLOAT_DTYPES, ROLES, Signature, TensorSpec

#: link name -> kernel constant
LINKS = {
    "identity": _kernel.LINK_IDENTITY,
    "logistic": _kernel.LINK_LOGISTIC,
    "softmax": _kernel.LINK_SOFTMAX,
    "sigmoid": _kernel.LINK_SIGMOID,
    "ovr": _kernel.LINK_OVR,
}


@dataclass(frozen=True)
class LinearSpec:
    """A linear or logistic model, format-independent.

    Attributes
    ----------
    task : "regression" or "classification"
    link : one of LINKS; "logistic" needs k == 1 and two classes
    coef : float64 array (k, d)
    intercept : float64 array (k,)
    classes : class labels (classification), in decision-column order; which one a
        row gets, ties included, is the kernel's label rule (``_label_row`` in
        ext/_kernel.pyx)
    feature_names : optional names of the d input columns
    dtype : the input dtype the model declares ("float32" or "float64"); float
        outputs have this dtype too
    outputs : public output name -> role (one of ROLES)
    input_name : the public name of the input tensor
    value_2d : regression "value" keeps shape (n, 1) for a single target (as ONNX
        graphs do) instead of (n,)
    """

    task: str
    link: str
    coef: np.ndarray
    intercept: np.ndarray
    classes: tuple[object, ...] | None = None
    feature_names: tuple[str, ...] | None = None
    dtype: str = "float64"
    outputs: Mapping[str, str] = field(default_factory=dict)
    input_name: str = "input"
    value_2d: bool = False

    def __post_init__(self) -> None:
        coef = np.ascontiguousarray(np.asarray(self.coef, dtype=np.float64))
        intercept = np.ascontiguousarray(np.asarray(self.intercept, dtype=np.float64))
        if coef.ndim == 1:
            coef = coef.reshape(1, -1)
        if intercept.ndim == 0:
            intercept = intercept.reshape(1)
        object.__setattr__(self, "coef", coef)
        object.__setattr__(self, "intercept", intercept)
        if not self.outputs:
            object.__setattr__(self, "outputs", default_outputs(self.task))
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ModelLoadError unless the spec is self-consistent."""
        if self.task not in ("regression", "classification"):
            raise ModelLoadError(f"unknown task {self.task!r}")
        if self.link not in LINKS:
            raise ModelLoadError(f"unknown link {self.link!r}; expected one of {sorted(LINKS)}")
        if self.coef.ndim != 2 or self.coef.shape[0] < 1 or self.coef.shape[1] < 1:
            raise ModelLoadError(f"coefficients must be a non-empty (outputs, features) matrix, got shape {self.coef.shape}")
        k, d = self.coef.shape
        if self.intercept.shape != (k,):
            raise ModelLoadError(f"one intercept per coefficient row: expected {k}, got {self.intercept.size}")
        if not (np.isfinite(self.coef).all() and np.isfinite(self.intercept).all()):
            raise ModelLoadError("coefficients and intercepts must be finite")
        if np.dtype(self.dtype) not in FLOAT_DTYPES:
            raise ModelLoadError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.feature_names is not None and len(self.feature_names) != d:
            raise ModelLoadError(f"{len(self.feature_names)} feature names for {d} features")
        if self.task == "regression":
            if self.link != "identity":
                raise ModelLoadError("a regression model must use the identity link")
        else:
            n_classes = len(self.classes or ())
            if self.link == "logistic" and (k != 1 or n_classes != 2):
                raise ModelLoadError(f"a binary logistic model needs 1 coefficient row and 2 classes, got {k} rows and {n_classes} classes")
            if self.link != "logistic" and k == 1 and n_classes != 2:
                raise ModelLoadError(f"one decision column needs 2 classes, got {n_classes}")
            if k > 1 and n_classes != k:
                raise ModelLoadError(f"{k} coefficient rows need {k} classes, got {n_classes}")
            if len(set(self.classes or ())) != n_classes:
                raise ModelLoadError("class labels must be distinct")
        for name, role in self.outputs.items():
            if role not in ROLES:
                raise ModelLoadError(f"output {name!r} has unknown role {role!r}")
            if self.task == "regression" and role not in ("value", "decision"):
                raise ModelLoadError(f"a regression model has no {role!r} output")
            if self.task == "classification" and role == "value":
                raise ModelLoadError("a classifier has no 'value' output")

    # ------------------------------------------------------------- properties
    @property
    def n_features(self) -> int:
        return int(self.coef.shape[1])

    @property
    def n_decisions(self) -> int:
        return int(self.coef.shape[0])

    @property
    def n_link_columns(self) -> int:
        return 2 if self.link == "logistic" else self.n_decisions

    def signature(self) -> Signature:
        return Signature(
            input=TensorSpec(self.input_name, self.dtype, (-1, self.n_features)),
            outputs=tuple(self._output_spec(n, r) for n, r in self.outputs.items()),
            feature_names=self.feature_names,
            task=self.task,
            classes=self.classes,
        )

    def _output_spec(self, name: str, role: str) -> TensorSpec:
        if role == "label":
            dtype = _classes_array(self.classes).dtype
            return TensorSpec(name, "int64" if dtype.kind == "i" else "object", (-1,), role)
        if role == "probabilities":
            return TensorSpec(name, self.dtype, (-1, self.n_link_columns), role)
        if role == "value" and self.n_decisions == 1 and not self.value_2d:
            return TensorSpec(name, self.dtype, (-1,), role)
        return TensorSpec(name, self.dtype, (-1, self.n_decisions), role)


def default_outputs(task: str) -> dict[str, str]:
    """The output names of a model.json model: each role under its own name."""
    if task == "regression":
        return {"value": "value"}
    return {"label": "label", "probabilities": "probabilities", "decision": "decision"}


def _classes_array(classes: Iterable[object] | None) -> np.ndarray:
    values = list(classes or ())
    if values and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in values):
        return np.asarray(values, dtype=np.int64)
    return np.asarray([str(c) for c in values], dtype=object)


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
        self._classes = _classes_array(spec.classes) if spec.classes is not None else None
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

    def check_input(self, X: np.ndarray) -> np.ndarray:
        """Validate X once; return an array the kernel can read: X itself unless its
        strides are not whole items or its byte order is foreign (then a copy)."""
        if X.__class__ is not np.ndarray:
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

    def predict(self, X: np.ndarray, outputs: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Score X (n, d), float32 or float64, any order, read-only allowed.

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
