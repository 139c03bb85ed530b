"""Fuzz target: a scorewire.v1 ``PredictRequest`` read from its bytes — the path of
every ``Predict`` call and every ``PredictStream`` message (``V1.read``: the wire
decoder ``_wire.decode_predict``, and protobuf for what it declines).

Oracle, for any bytes:

- ``decode_predict`` returns None or a Request, and raises nothing;
- a Request it returns is what protobuf reads: protobuf parses the same bytes and
  the adapter's protobuf path (``V1.from_message``) gives the same fields and a
  matrix equal bit for bit (dtype, shape, bytes); the decoder's matrix is its own
  (writeable, aligned, C-ordered);
- ``V1.read`` gives UNPARSEABLE exactly when protobuf refuses the bytes, else that
  same request;
- answering it raises nothing but scorewire's own errors (``to_core``, ``labels``).

The first byte chooses how the rest is read: as the message itself, or as the
choices that write one (see ``messages.py``).
"""

from __future__ import annotations

import contextlib

try:
    from . import harness, messages
except ImportError:  # run as a script
    import harness  # type: ignore[no-redef]
    import messages  # type: ignore[no-redef]

with harness.instrumented(__name__):
    from scorewire.errors import ScorewireError
    from scorewire.grpc import _wire
    from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
    from scorewire.grpc._handlers import UNPARSEABLE
    from scorewire.grpc._predict import V1

ADAPTER = V1(None)  # type: ignore[arg-type]  # reading needs no service


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
    return messages.predict_request(harness.Choices(data[1:]))


def one_input(data: bytes) -> None:
    blob = message(data)
    decoded = _wire.decode_predict(blob)
    try:
        parsed = pb.PredictRequest.FromString(blob)
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
    harness.main("predict", one_input)
