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
    from scorewire.grpc._gen.inference import grpc_service_pb2 as oip
    from scorewire.grpc._oip import OIP


ADAPTER = OIP(reading.OneModel())  # type: ignore[arg-type]


def message(data: bytes) -> bytes:
    if not data or data[0] & 1 == 0:
        return data[1:]
    return messages.infer_request(harness.Choices(data[1:]))


def one_input(data: bytes) -> None:
    reading.check(message(data), _wire.decode_infer, oip.ModelInferRequest, ADAPTER)


if __name__ == "__main__":
    harness.main("infer", one_input)
