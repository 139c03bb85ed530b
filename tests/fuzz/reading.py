"""The oracle both request targets share (fuzz_predict, fuzz_infer): a request read
from its bytes by the wire decoder is what protobuf and the adapter read; the
adapter's ``read`` refuses exactly what protobuf refuses; answering it raises only
scorewire's own errors."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from scorewire.errors import ScorewireError
from scorewire.grpc import _wire
from scorewire.grpc._handlers import UNPARSEABLE


def fields(r: _wire.Request) -> tuple:  # type: ignore[type-arg]
    """Everything of a read request but its matrix (the error by type and message)."""
    error = None if r.error is None else (type(r.error), str(r.error))
    return r.model, r.version, r.request_id, r.outputs, r.input_name, r.raw, error


class OneModel:
    """The service as the adapters see it: every name is a tabular model whose input
    is named ``input``."""

    def resolve(self, name: str, version: int | None) -> SimpleNamespace:
        signature = SimpleNamespace(input=SimpleNamespace(name="input"), tabular=True)
        return SimpleNamespace(name=name, version=version or 1, model=SimpleNamespace(signature=signature))


def same_request(got: _wire.Request, want: _wire.Request) -> None:
    assert fields(got) == fields(want), (fields(got), fields(want))
    if want.X is None:
        assert got.X is None
        return
    if isinstance(want.X, dict):  # inputs by name, read by protobuf
        assert isinstance(got.X, dict) and list(got.X) == list(want.X)
        pairs = [(got.X[k], want.X[k]) for k in want.X]
    else:
        assert isinstance(got.X, np.ndarray)
        pairs = [(got.X, want.X)]
    for a, b in pairs:
        assert a.dtype == b.dtype and a.shape == b.shape, (a.shape, b.shape)
        assert a.tobytes() == b.tobytes() if a.dtype.kind != "O" else a.reshape(-1).tolist() == b.reshape(-1).tolist()


def check(blob: bytes, decode: Callable[[bytes], _wire.Request | None], message_class: Any, adapter: Any) -> None:
    decoded = decode(blob)
    try:
        parsed = message_class.FromString(blob)
    except Exception:  # protobuf's DecodeError, by its own name per backend
        parsed = None
    if decoded is not None:
        assert parsed is not None, "the wire decoder read bytes protobuf refuses"
        X = decoded.X
        assert isinstance(X, np.ndarray) and X.ndim == 2 and X.flags.c_contiguous and X.flags.aligned and X.flags.writeable and X.flags.owndata
        same_request(decoded, adapter.from_message(parsed))
    read = adapter.read(blob)
    if parsed is None:
        assert read is UNPARSEABLE
        return
    assert isinstance(read, _wire.Request)
    same_request(read, decoded if decoded is not None else adapter.from_message(parsed))
    adapter.labels(read)
    with contextlib.suppress(ScorewireError):
        adapter.to_core(read, None)
