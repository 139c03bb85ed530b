"""The pure half of batching: merge requests' rows, split a batch's outputs.

No asyncio here: these are plain functions over arrays, tested on their own
(including a property test: every caller gets exactly its own rows back).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from ..tensors import rows_of
from ..types import Inputs


def merge_inputs(inputs: Sequence[Inputs]) -> tuple[Inputs, list[int]]:
    """Stack the requests' rows: 2-D inputs of one dtype and width, or inputs by name
    whose dims but the first agree (each name stacked along its first dim); return the
    batch and the row offsets (``offsets[i]:offsets[i + 1]`` are request i's rows)."""
    offsets = [0]
    for X in inputs:
        offsets.append(offsets[-1] + rows_of(X))
    if len(inputs) == 1:
        return inputs[0], offsets
    first = inputs[0]
    if isinstance(first, np.ndarray):
        return np.concatenate(inputs, axis=0), offsets  # type: ignore[arg-type]
    return {name: np.concatenate([X[name] for X in inputs], axis=0) for name in first}, offsets  # type: ignore[index]


def batch_key(X: Inputs) -> tuple[tuple[int, ...], ...] | None:
    """What requests must share to be merged: None for a matrix (its width is the
    model's), else every input's dims but the first."""
    if isinstance(X, np.ndarray):
        return None
    return tuple(a.shape[1:] for a in X.values())


def rows_match(outputs: dict[str, np.ndarray], rows: int, whole: Collection[str] = ()) -> bool:
    """Whether every output but those in ``whole`` has ``rows`` rows, so that
    :func:`split_outputs` can slice it (a graph may give an output whose first dim
    is not the batch's)."""
    return all((a.ndim and a.shape[0] == rows) or name in whole for name, a in outputs.items())


def split_outputs(
    outputs: dict[str, np.ndarray],
    offsets: Sequence[int],
    wanted: Sequence[Sequence[str]],
    whole: Collection[str] = (),
) -> list[dict[str, np.ndarray]]:
    """Slice each batch output back into per-request outputs (views, no copies),
    keeping only the names each request asked for. The outputs named in ``whole``
    have no row dimension (a model's base value): each request gets them as they are."""
    result = []
    for i, names in enumerate(wanted):
        lo, hi = offsets[i], offsets[i + 1]
        result.append({name: outputs[name] if name in whole else outputs[name][lo:hi] for name in names})
    return result
