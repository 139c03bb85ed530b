"""The one table from scorewire's error codes to gRPC status codes."""

from __future__ import annotations

import grpc

from ..errors import Code

STATUS: dict[Code, grpc.StatusCode] = {
    Code.INVALID_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    Code.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Code.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Code.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Code.DEADLINE: grpc.StatusCode.DEADLINE_EXCEEDED,
    Code.LOAD_ERROR: grpc.StatusCode.FAILED_PRECONDITION,
    Code.CONFIG: grpc.StatusCode.FAILED_PRECONDITION,
    Code.INTERNAL: grpc.StatusCode.INTERNAL,
}

#: what a client sees for an unexpected exception (the traceback goes to the log)
INTERNAL_MESSAGE = "internal error (logged on the server)"
