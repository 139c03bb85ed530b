"""Fuzz target: an Open Inference Protocol ``ModelInferRequest`` read from its bytes —
the path of every ``ModelInfer`` call and every ``ModelStreamInfer`` message
(``OIP.read``: the wire decoder ``_wire.decode_infer``, and protobuf for what it
declines).

Oracle, for any bytes: as fuzz_predict's, with ``OIP.from_message`` as the
protobuf reading; and answering the request (``to_core`` against a model whose
input is named ``input``, ``labels``) raises nothing but scorewire's own errors.

The first byte chooses how the rest is read: as the message itself, or as the
choices that write one (see ``messages.py``).
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

try:
    from . import harness, messages
except ImportError:  # run as a script
    import harness  # type: ignore[no-redef]
    import messages  # type: ignore[no-redef]

with harness.instrumented(__name__):
    from scorewire.errors import ScorewireError
    from scorewire.grpc import _wire
    from scorewire.grpc._gen.inference import grpc_service_pb2 as oip
    from scorewire.grpc._handlers import UNPARSEABLE
    from scorewire.grpc._oip import OIP


class OneModel:
    """The service as ``OIP.to_core`` sees it: every name is a model whose input is
    named ``input``."""

    def resolve(self, name: str, version: int | None) -> SimpleNamespace:
        signature = SimpleNamespace(input=SimpleNamespace(name="input"))
        return SimpleNamespace(name=name, version=version or 1, model=SimpleNamespace(signature=signature))


ADAPTER = OIP(OneModel())  # type: ignore[arg-type]


def fields(r: _wire.Request) -> tuple:  # type: ignore[type-arg]
    """Everything of a read request but its matrix (the error by type and message)."""
    error = None if r.error is None else (type(r.error), str(r.error))
    return r.model, r.version, r.request_id, r.outputs, r.input_name, r.raw, error


def same_request(got: _wire.Request, want: _wire.Request) -> None:
    assert fields(got) == fields(want), (fields(got), fields(want))
    if want.X is None:
        assert got.X is None
        return
    assert got.X.dtype == want.X.dtype and got.X.shape == want.X.shape, (got.X.shape, want.X.shape)
    assert got.X.tobytes() == want.X.tobytes()


def message(data: bytes) -> bytes:
    if not data or data[0] & 1 == 0:
        return data[1:]
    return messages.infer_request(harness.Choices(data[1:]))


def one_input(data: bytes) -> None:
    blob = message(data)
    decoded = _wire.decode_infer(blob)
    try:
        parsed = oip.ModelInferRequest.FromString(blob)
    except Exception:  # protobuf's DecodeError, by its own name per backend
        parsed = None
    if decoded is not None:
        assert parsed is not None, "the wire decoder read bytes protobuf refuses"
        X = decoded.X
        assert X.ndim == 2 and X.flags.c_contiguous and X.flags.aligned and X.flags.writeable and X.flags.owndata
        same_request(decoded, ADAPTER.from_message(parsed))
    read = ADAPTER.read(blob)
    if parsed is None:
        assert read is UNPARSEABLE
        return
    assert isinstance(read, _wire.Request)
    same_request(read, decoded if decoded is not None else ADAPTER.from_message(parsed))
    ADAPTER.labels(read)
    with contextlib.suppress(ScorewireError):
        ADAPTER.to_core(read, None)


if __name__ == "__main__":
    harness.main("infer", one_input)
