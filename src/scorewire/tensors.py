"""Named input tensors: what a model that is not tabular is given, checked once.

A tabular model (one ``[rows, features]`` float input: every native model, and an
ONNX graph of that shape) is given one matrix; the service checks it itself. Any
other model — several inputs, integer ids, strings, images of rank 4 — is given a
mapping of input names to arrays, and :class:`InputSchema` checks such a mapping
against the model's signature before the model (onnxruntime) sees anything:
missing, extra and misspelt names; dtypes; ranks; fixed dims; symbolic dims that
two inputs share (the rows, a sequence length) agreeing; the rows limit; NaN and
infinite values under ``nan_policy = "reject"``. Each problem is an InvalidInput
naming the input (never its values); onnxruntime's own errors are never the
validation.

The edges make the mapping (a name given twice is their error: a dict cannot hold
it); strings arrive as ``str`` or ``bytes`` elements and leave as ``str``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .errors import InvalidInput, Overloaded
from .types import Inputs, Signature, TensorSpec

#: a quoted name in a message: never longer than this
_NAME_CHARS = 64


def quoted(name: str) -> str:
    return repr(name[:_NAME_CHARS])


def rows_of(inputs: Inputs) -> int:
    """The rows of a request: its matrix's, or its first input's first dim (1 for a
    scalar input)."""
    if isinstance(inputs, np.ndarray):
        return int(inputs.shape[0]) if inputs.ndim else 1
    for a in inputs.values():
        return int(a.shape[0]) if a.ndim else 1
    return 0


def size_of(inputs: Inputs) -> int:
    """The elements of a request, over all its inputs."""
    if isinstance(inputs, np.ndarray):
        return int(inputs.size)
    return sum(int(a.size) for a in inputs.values())


def _strings(name: str, a: np.ndarray) -> np.ndarray:
    """A string input as an object array of ``str`` (bytes decoded as UTF-8)."""
    if a.dtype.kind == "U":
        return a.astype(object)
    if a.dtype.kind == "S":
        a = a.astype(object)
    elif a.dtype.kind != "O":
        raise InvalidInput(f"input {quoted(name)} must be strings, got {a.dtype}")
    flat = a.reshape(-1)
    out = None
    for i, v in enumerate(flat):
        if type(v) is str:
            continue
        if isinstance(v, bytes):
            try:
                text = v.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"input {quoted(name)} holds bytes that are not UTF-8 text") from None
            if out is None:
                out = flat.copy()
            out[i] = text
        elif isinstance(v, str):
            if out is None:
                out = flat.copy()
            out[i] = str(v)
        else:
            raise InvalidInput(f"input {quoted(name)} must hold strings, got a {type(v).__name__}")
    return a if out is None else out.reshape(a.shape)


class InputSchema:
    """How a model's named inputs are checked (see the module docstring); made once
    per model version."""

    __slots__ = ("_dims", "_names", "batched", "model", "specs")

    def __init__(self, signature: Signature, model: str = "") -> None:
        self.model = model
        self.specs = signature.inputs
        self._names = tuple(s.name for s in self.specs)
        #: whether the first dim of every input is the rows (what batching merges along)
        self.batched = signature.batched
        # each input's dims: a fixed size (int), a symbolic dim's name (str), or None
        # (a symbolic dim without a name: it agrees with nothing)
        self._dims: list[tuple[int | str | None, ...]] = []
        for spec in self.specs:
            names = spec.dim_names or ("",) * len(spec.shape)
            dims: list[int | str | None] = []
            for i, (size, dim_name) in enumerate(zip(spec.shape, names, strict=True)):
                if size >= 0:
                    dims.append(size)
                elif i == 0 and self.batched:
                    dims.append("\0rows")  # the rows: the same in every input, whatever its name
                else:
                    dims.append(dim_name or None)
            self._dims.append(tuple(dims))

    def _whose(self) -> str:
        return f"model {quoted(self.model)}" if self.model else "the model"

    def names_of(self, inputs: Mapping[str, np.ndarray]) -> None:
        """InvalidInput unless ``inputs`` names exactly the model's inputs."""
        if len(inputs) == len(self._names) and all(n in inputs for n in self._names):
            return
        takes = ", ".join(quoted(n) for n in self._names[:8]) + (", …" if len(self._names) > 8 else "")
        for name in inputs:
            if name not in self._names:
                raise InvalidInput(f"{self._whose()} has no input {quoted(name)}; it takes {takes}")
        missing = next(n for n in self._names if n not in inputs)
        raise InvalidInput(f"input {quoted(missing)} is missing; {self._whose()} takes {takes}")

    def check(self, inputs: Mapping[str, np.ndarray], row_limit: int, check_finite: bool) -> dict[str, np.ndarray]:
        """The inputs, checked, in the model's order (strings as ``str``; arrays
        C-contiguous in native byte order, copied only when they were not):
        InvalidInput naming the first bad input; Overloaded over ``row_limit``."""
        self.names_of(inputs)
        out: dict[str, np.ndarray] = {}
        seen: dict[str, tuple[int, str]] = {}  # a symbolic dim's size, and the input that set it
        for spec, dims in zip(self.specs, self._dims, strict=True):
            name = spec.name
            a = inputs[name]
            if not isinstance(a, np.ndarray):
                raise InvalidInput(f"input {quoted(name)} must be an array")
            if a.ndim != len(dims):
                raise InvalidInput(
                    f"input {quoted(name)} must have rank {len(dims)} (shape {_shape_text(spec)}), got rank {a.ndim}"
                )
            for axis, (want, got) in enumerate(zip(dims, a.shape, strict=True)):
                if want is None:
                    continue
                if isinstance(want, int):
                    if got != want:
                        raise InvalidInput(
                            f"input {quoted(name)} must have {want} in dim {axis} (shape {_shape_text(spec)}), got {got}"
                        )
                    continue
                first = seen.setdefault(want, (got, name))
                if first[0] != got:
                    what = "rows" if want == "\0rows" else f"dim {quoted(want)}"
                    raise InvalidInput(
                        f"input {quoted(name)} has {got} in dim {axis} but input {quoted(first[1])} has {first[0]}: "
                        f"the {what} must agree"
                    )
            a = self._typed(spec, a)
            if self.batched and a.ndim and a.shape[0] > row_limit:
                raise Overloaded(
                    f"input {quoted(name)} has {a.shape[0]} rows, over the limit of {row_limit} rows per request"
                )
            if check_finite and a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
                raise InvalidInput(
                    f"input {quoted(name)} contains NaN or infinite values (this model's nan_policy is 'reject')"
                )
            out[name] = a
        return out

    def _typed(self, spec: TensorSpec, a: np.ndarray) -> np.ndarray:
        """``a`` in the spec's dtype (the same type, in native order and C layout)."""
        if spec.dtype == "object":
            return _strings(spec.name, a)
        want = spec.np_dtype
        if a.dtype.kind != want.kind or a.dtype.itemsize != want.itemsize:
            raise InvalidInput(f"input {quoted(spec.name)} must be {spec.dtype}, got {_dtype_name(a.dtype)}")
        if a.dtype.isnative and a.flags.c_contiguous:
            return a
        return np.ascontiguousarray(a, dtype=want)


def _dtype_name(dt: np.dtype) -> str:
    if dt.kind in "OUS":
        return "strings"
    return dt.newbyteorder("=").name


def _shape_text(spec: TensorSpec) -> str:
    names = spec.dim_names or ("",) * len(spec.shape)
    return "[" + ", ".join(str(s) if s >= 0 else (n[:24] or "?") for s, n in zip(spec.shape, names, strict=True)) + "]"
