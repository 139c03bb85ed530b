"""The specification every linear format reduces to — ``model.json``, a linear ONNX
graph, a PMML RegressionModel, a fitted scikit-learn estimator: weights ``coef`` of
shape (k, d), ``intercept`` of shape (k,), a link that turns the decision
``z = X @ coef.T + intercept`` into outputs, and the names clients use for them.
The native backend (``scorewire.backends.native``) scores it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelLoadError
from ..types import FLOAT_DTYPES, ROLES, Signature, TensorSpec
from .files import quoted

#: the links a linear model may have (what turns its decisions into outputs)
LINK_NAMES = ("identity", "logistic", "softmax", "sigmoid", "ovr")


@dataclass(frozen=True)
class LinearSpec:
    """A linear or logistic model, format-independent.

    Attributes
    ----------
    task : "regression" or "classification"
    link : one of LINK_NAMES; "logistic" needs k == 1 and two classes
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
        if self.link not in LINK_NAMES:
            raise ModelLoadError(f"unknown link {self.link!r}; expected one of {sorted(LINK_NAMES)}")
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
            if any(isinstance(c, int) and not -(2**63) <= c < 2**63 for c in self.classes or ()):
                raise ModelLoadError("integer class labels must fit in 64 bits")
        for name, role in self.outputs.items():
            if role not in ROLES:
                raise ModelLoadError(f"output {quoted(name)} has unknown role {quoted(role)}")
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
            dtype = classes_array(self.classes).dtype
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


def classes_array(classes: Iterable[object] | None) -> np.ndarray:
    """Class labels as an array: int64 when every label is an integer, else strings."""
    values = list(classes or ())
    if values and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in values):
        return np.asarray(values, dtype=np.int64)
    return np.asarray([str(c) for c in values], dtype=object)
