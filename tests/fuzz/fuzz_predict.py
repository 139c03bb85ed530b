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

try:
    from . import harness, messages
except ImportError:  # run as a script
    import harness  # type: ignore[no-redef]
    import messages  # type: ignore[no-redef]

with harness.instrumented(__name__):
    try:  # the shared oracle imports scorewire: inside the block, so it is instrumented too
        from . import reading
    except ImportError:  # run as a script
        import reading  # type: ignore[no-redef]
    from scorewire.grpc import _wire
    from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
    from scorewire.grpc._predict import V1

ADAPTER = V1(reading.OneModel())  # type: ignore[arg-type]  # reading asks only whether a model is tabular


def message(data: bytes) -> bytes:
    if not data or data[0] & 1 == 0:
        return data[1:]
    return messages.predict_request(harness.Choices(data[1:]))


def one_input(data: bytes) -> None:
    reading.check(message(data), _wire.decode_predict, pb.PredictRequest, ADAPTER)


if __name__ == "__main__":
    harness.main("predict", one_input)
