"""Error handling shared by every servicer: core errors → gRPC status, once."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

import grpc

from ..errors import ScorewireError
from ._status import INTERNAL_MESSAGE, STATUS

log = logging.getLogger("scorewire.grpc")

T = TypeVar("T")


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and message a client gets for an exception (logged if unexpected)."""
    if isinstance(exc, ScorewireError):
        return STATUS[exc.code], exc.message
    log.error("unexpected error while handling an RPC", exc_info=exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def unary(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Wrap a unary servicer method: a ScorewireError aborts with its mapped status,
    anything else with INTERNAL and a generic message."""

    @wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await method(self, request, context)
        except ScorewireError as exc:
            await context.abort(STATUS[exc.code], exc.message)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception as exc:  # never a traceback to the client
            code, message = status_of(exc)
            await context.abort(code, message)
        raise AssertionError("unreachable")  # pragma: no cover - abort raises

    return wrapper


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline as an absolute time.monotonic() value, or None."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining
