"""Plain data types shared by the core and every edge (no protobuf here)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Input dtypes a tabular model may declare.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_DTYPES = {name: np.dtype(name) for name in ("float32", "float64", "int32", "int64", "object", "bool")}


#: what an output carries, whatever it is named
ROLES = ("value", "decision", "probabilities", "label")

#: the explanations every native model gives when asked for them by name (never by
#: default), under these names and roles: each feature's contribution to each
#: decision column, and the decision at the baseline they are measured from; for
#: every row, the contributions summed over the features plus the base value are the
#: decision (see the README, "Explanations")
CONTRIBUTIONS = "contributions"
BASE_VALUE = "base_value"
EXPLANATIONS = (CONTRIBUTIONS, BASE_VALUE)
#: the baselines explanations are measured from: the feature means of the version's
#: reference.json, or zeros when it has none
BASELINE_REFERENCE = "reference"
BASELINE_ZEROS = "zeros"


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one input or output; -1 marks a free dimension.
    An output's ``role`` (one of ROLES or EXPLANATIONS, "" when it has none of them)
    says what it carries: monitoring and clients read it instead of guessing from
    names. The base value (role BASE_VALUE) is the one output without a row
    dimension: the same for every row of every request."""

    name: str
    dtype: str  # numpy dtype name: "float32", "float64", "int64", "object" (strings)
    shape: tuple[int, ...]
    role: str = ""

    @property
    def np_dtype(self) -> np.dtype:
        return _DTYPES[self.dtype]

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.role:
            d["role"] = self.role
        return d


@dataclass(frozen=True)
class Signature:
    """What a model takes and gives: one 2-D input of ``n_features`` columns.
    ``explanation_baseline``: what its explanations are measured from
    (BASELINE_REFERENCE or BASELINE_ZEROS), "" for a model without them."""

    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    feature_names: tuple[str, ...] | None = None
    task: str = "regression"  # "regression" | "classification"
    classes: tuple[object, ...] | None = None
    explanation_baseline: str = ""

    @property
    def n_features(self) -> int:
        return self.input.shape[1]

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def output_for(self, role: str) -> str | None:
        """The name of the first output with ``role``, or None."""
        return next((o.name for o in self.outputs if o.role == role), None)

    def to_dict(self) -> dict[str, object]:
        return {
            "task": self.task,
            "input": self.input.to_dict(),
            "outputs": [o.to_dict() for o in self.outputs],
            "feature_names": list(self.feature_names) if self.feature_names else None,
            "classes": list(self.classes) if self.classes is not None else None,
            "explanation_baseline": self.explanation_baseline or None,
        }


@dataclass(slots=True)
class PredictRequest:
    """One scoring request as the core sees it, whatever the transport."""

    model: str
    inputs: np.ndarray
    version: int | None = None
    outputs: tuple[str, ...] = ()
    request_id: str = ""
    deadline: float | None = None  # absolute, time.monotonic() seconds
    #: places a request without a version in its model's traffic split (sticky:
    #: the same key, the same version); "" → the request id, or random without one.
    #: The edge fills it from the metadata header model.toml names ([traffic] key_header)
    route_key: str = ""
    #: the input's name as the request gave it ("": not given); checked against the model's
    input_name: str = ""


@dataclass(slots=True)
class PredictResponse:
    """The answer to a :class:`PredictRequest`."""

    model: str
    version: int
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    request_id: str = ""
