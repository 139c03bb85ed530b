"""The generated gRPC stubs and the tensor helpers, for programs that call what
:class:`scorewire.Client` does not cover (or build their own messages)::

    from scorewire.grpc.stubs import pb, pb_grpc, oip, oip_grpc, array_to_tensor, tensor_to_array

``pb`` / ``pb_grpc``: scorewire.v1 (``scorewire_pb2`` and ``scorewire_pb2_grpc``);
``oip`` / ``oip_grpc``: the Open Inference Protocol (``inference.GRPCInferenceService``);
``array_to_tensor(X, raw=True)`` / ``tensor_to_array(t)``: NumPy ⇄ ``pb.Tensor``.
Generated from ``proto/`` for protobuf 6 and 7 runtimes.
"""

from ._codec import array_to_tensor, tensor_to_array
from ._gen.inference import grpc_service_pb2 as oip
from ._gen.inference import grpc_service_pb2_grpc as oip_grpc
from ._gen.scorewire.v1 import scorewire_pb2 as pb
from ._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc

__all__ = ["array_to_tensor", "oip", "oip_grpc", "pb", "pb_grpc", "tensor_to_array"]
