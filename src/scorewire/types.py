"""Plain data types shared by the core and every edge (no protobuf here)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from .errors import InvalidInput

#: Input dtypes a tabular model may declare.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: every element type a tensor may have, as numpy dtype names ("object": strings)
DTYPES = (
    "float16", "float32", "float64", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool", "object",
)  # fmt: skip
_DTYPES = {name: np.dtype(name) for name in DTYPES}

#: what a model is given: a tabular model's one matrix, or any other model's inputs
#: by name (see :mod:`scorewire.tensors`)
Inputs = Union[np.ndarray, Mapping[str, np.ndarray]]  # noqa: UP007 (a runtime alias)


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

def requested_outputs(
    requested: Iterable[str] | None, default: tuple[str, ...], offered: Collection[str], runs_on: str = ""
) -> tuple[str, ...]:
    """The outputs a request names, checked against those a model ``offered``
    (``default`` when it names none): every model's ``output_names``. An unknown
    name is InvalidInput listing what the model gives; asking a model that does not
    run on the kernel (``runs_on`` says what it runs on; "" for the kernel's) for
    its explanations says so."""
    if not requested:
        return default
    names = tuple(requested)
    for name in names:
        if name not in offered:
            if name in EXPLANATIONS and runs_on:
                raise InvalidInput(f"output {name!r}: explanations are available for native models; this one {runs_on}")
            raise InvalidInput(f"unknown output {name[:64]!r}; this model gives {list(offered)}")
    return names


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
    dtype: str  # numpy dtype name (one of DTYPES): "float32", "int64", "object" (strings), …
    shape: tuple[int, ...]
    role: str = ""
    #: the name of each symbolic dim as the graph declares it ("" for a fixed dim or
    #: an unnamed one); empty when no dim has a name. Inputs that share a name share
    #: the size (see scorewire.tensors)
    dim_names: tuple[str, ...] = ()

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
    """What a model takes and gives. ``input`` is the first of ``inputs`` (the only
    one of a tabular model: a 2-D float input of ``n_features`` columns; ``inputs``
    defaults to it). ``batched``: the first dim of every input is the rows (always
    so for a tabular model), so requests may be merged along it.
    ``explanation_baseline``: what its explanations are measured from
    (BASELINE_REFERENCE or BASELINE_ZEROS), "" for a model without them."""

    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    feature_names: tuple[str, ...] | None = None
    task: str = "regression"  # "regression" | "classification"
    classes: tuple[object, ...] | None = None
    explanation_baseline: str = ""
    inputs: tuple[TensorSpec, ...] = ()
    batched: bool = True
    #: one input of shape [rows, features], float32 or float64, with a fixed feature
    #: count: what the kernel and the wire codec's fast path take, given as one matrix
    #: (any other model is given its inputs by name). Worked out once, read per request
    tabular: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.inputs:
            object.__setattr__(self, "inputs", (self.input,))
        elif self.inputs[0] != self.input:
            raise ValueError("Signature: input must be the first of inputs")
        inp = self.input
        tabular = (
            len(self.inputs) == 1
            and inp.dtype in ("float32", "float64")
            and len(inp.shape) == 2
            and inp.shape[0] < 0
            and inp.shape[1] >= 0
        )
        object.__setattr__(self, "tabular", tabular)

    @property
    def n_features(self) -> int:
        """A tabular model's columns (the second dim of its input; -1 for an input
        that is not 2-D)."""
        shape = self.input.shape
        return shape[1] if len(shape) == 2 else -1

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
            "inputs": [i.to_dict() for i in self.inputs],
            "outputs": [o.to_dict() for o in self.outputs],
            "feature_names": list(self.feature_names) if self.feature_names else None,
            "classes": list(self.classes) if self.classes is not None else None,
            "explanation_baseline": self.explanation_baseline or None,
        }


@dataclass(slots=True)
class PredictRequest:
    """One scoring request as the core sees it, whatever the transport."""

    model: str
    #: one matrix (a tabular model's input), or arrays by input name
    inputs: Inputs
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
