"""The pure half of batching: merge requests' rows, split a batch's outputs.

No asyncio here: these are plain functions over arrays, tested on their own
(including a property test: every caller gets exactly its own rows back).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np


def merge_inputs(inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Stack 2-D inputs of one dtype and width; return the batch and the row offsets
    (``offsets[i]:offsets[i + 1]`` are request i's rows)."""
    offsets = [0]
    for X in inputs:
        offsets.append(offsets[-1] + X.shape[0])
    if len(inputs) == 1:
        return inputs[0], offsets
    return np.concatenate(inputs, axis=0), offsets


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
