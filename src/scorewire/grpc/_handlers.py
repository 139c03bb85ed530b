"""Error handling shared by every servicer: core errors → gRPC status, once."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

import grpc

from ..errors import ScorewireError
from ._access import CONTROL, Access, group_of
from ._calls import OVER_LIMIT, UNLIMITED, Calls, answer_abandoned, answering, refusal
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
        except asyncio.CancelledError as exc:  # the client's, or abandoned at shutdown
            await answer_abandoned(context, exc)
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


# --------------------------------------------------------------------------
# Unparseable messages
#
# grpc answers a request it cannot deserialize with UNKNOWN and the exception text.
# scorewire registers every servicer through `register`. A method marked
# `raw_request` (the scoring RPCs) gets its requests' bytes and reads them with its
# protocol's adapter (`_scoring.Adapter.read`), which gives UNPARSEABLE for what it
# cannot parse (a unary call answers INVALID_ARGUMENT, a stream ends with it). Every
# other unary method gets a deserializer that returns UNPARSEABLE instead of
# raising, answered INVALID_ARGUMENT.
# --------------------------------------------------------------------------

UNPARSEABLE_MESSAGE = "the request message cannot be parsed"


class _Unparseable:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNPARSEABLE"


UNPARSEABLE: Any = _Unparseable()


def _safe(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def safe_deserialize(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:
            return UNPARSEABLE

    return safe_deserialize


def _passthrough(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """A response serializer that also takes a response already serialized (a
    handler's wire fast path returns bytes)."""
    if serialize is None:
        return None

    def serialize_or_pass(response: Any) -> bytes:
        return response if response.__class__ is bytes else serialize(response)

    return serialize_or_pass


def raw_request(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Mark a servicer method as taking its requests serialized (``bytes``): grpc
    hands them over unparsed, and the method reads them with its protocol's adapter
    (through ``_scoring.serve_unary`` or ``serve_stream``)."""
    method.raw_request = True  # type: ignore[attr-defined]
    return method


def _guard(behavior: Callable[..., Any]) -> Callable[..., Any]:
    """A stock servicer's method (coroutine or async generator): an unparseable
    request is INVALID_ARGUMENT, a call abandoned at shutdown UNAVAILABLE."""
    if inspect.isasyncgenfunction(behavior):

        @wraps(behavior)
        async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if request is UNPARSEABLE:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, UNPARSEABLE_MESSAGE)
            try:
                async for response in behavior(request, context):
                    yield response
            except asyncio.CancelledError as exc:
                await answer_abandoned(context, exc)
                raise

        return guarded_stream

    @wraps(behavior)
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request is UNPARSEABLE:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, UNPARSEABLE_MESSAGE)
        try:
            return await behavior(request, context)
        except asyncio.CancelledError as exc:
            await answer_abandoned(context, exc)
            raise

    return guarded


class MethodTable(grpc.GenericRpcHandler):
    """Every scorewire method, by full name, in one generic handler; and where each
    call is counted in (see :mod:`._calls`) and refused: once the server stops taking
    calls (UNAVAILABLE), or by the access rules. (The limit of calls served at once
    is applied when a handler starts: see ``_served``.)

    The generated ``add_*_to_server`` functions register each method with grpc as a
    "registered method"; grpc.aio's serving loop then keeps one pending request per
    registered method and, for every RPC it accepts, re-arms an ``asyncio.wait``
    over all of them (~0.5 µs per method per call; scorewire has 20). Served from
    one table, the loop waits on a single pending request, and finding the handler
    is one dict lookup.
    """

    def __init__(self, calls: Calls | None = None, access: Access | None = None, control: bool = True) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}
        self.refusals: dict[str, grpc.RpcMethodHandler] = {}
        self.calls = calls or Calls()
        #: who may call what (see ``_access``); None: everyone may call everything
        self.access = access if access is not None and access.enabled else None
        #: whether this table's port serves the control plane
        self.control = control
        #: with an access file: each method behind a look at the client certificate
        self.checked: dict[str, grpc.RpcMethodHandler] = {}
        self._denials: dict[tuple[str, grpc.StatusCode, str], grpc.RpcMethodHandler] = {}

    def add(self, method: str, handler: grpc.RpcMethodHandler) -> None:
        if not self.control and group_of(method) == CONTROL:
            handler = answering(handler, grpc.StatusCode.PERMISSION_DENIED, CONTROL_NOT_HERE)
        self.handlers[method] = handler
        self.refusals[method] = refusal(handler)
        if self.access is not None:
            self.checked[method] = _checked(handler, self.access, method)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = self.handlers.get(method)
        if handler is None:
            return None
        calls = self.calls
        calls.count_in(method)
        if calls.refusing:
            calls.last_refused = time.monotonic()
            return self.refusals[method]
        access = self.access
        verdict = None if access is None else access.check_metadata(method, handler_call_details.invocation_metadata)
        if verdict is not None and verdict is not True:  # refused by the access file
            return self._denial(method, handler, verdict)
        if verdict is True:  # no token: the client certificate decides
            return self.checked[method]
        return handler

    def _denial(self, method: str, handler: grpc.RpcMethodHandler, verdict: tuple[grpc.StatusCode, str]) -> grpc.RpcMethodHandler:
        key = (method, *verdict)
        denial = self._denials.get(key)
        if denial is None:
            denial = self._denials[key] = answering(handler, *verdict)
        return denial


#: what a control-plane call gets on a port that does not serve the control plane
CONTROL_NOT_HERE = "the control plane is not served on this port (see --control-plane and --admin-port)"


def _checked(handler: grpc.RpcMethodHandler, access: Access, method: str) -> grpc.RpcMethodHandler:
    """``handler`` behind a look at the call's client certificate: answered
    UNAUTHENTICATED or PERMISSION_DENIED unless the access file maps it to the
    method's group."""

    async def check(context: grpc.aio.ServicerContext) -> None:
        verdict = access.check_identity(method, context.auth_context())
        if verdict is not None:
            await context.abort(*verdict)

    behavior = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    if inspect.isasyncgenfunction(behavior):

        async def checked_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            async for response in behavior(request, context):
                yield response

        checked: Callable[..., Any] = checked_stream
    else:

        async def checked_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            return await behavior(request, context)

        checked = checked_call
    factory = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return factory(checked, handler.request_deserializer, handler.response_serializer)


class _Registrar:
    """Stands in for the server while a generated ``add_*_to_server`` runs: puts
    its methods, guarded, into a MethodTable."""

    def __init__(self, table: MethodTable) -> None:
        self._table = table

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same handlers arrive through add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        for name, h in handlers.items():
            method = f"/{service}/{name}"
            self._table.add(method, _served(h, None if method in UNLIMITED else self._table.calls))


def _served(h: grpc.RpcMethodHandler, calls: Calls | None) -> grpc.RpcMethodHandler:
    """A generated method handler as scorewire serves it (made anew with grpc's
    public factories): a ``raw_request`` method gets its requests' bytes and may
    return a serialized response; a stock servicer's unary request is parsed
    without raising (UNPARSEABLE), and its methods answer UNAVAILABLE when
    abandoned at shutdown. With ``calls`` (all but health checks, which probes must
    always reach) a handler is served only within the limit of calls at once."""

    def admitted(behavior: Callable[..., Any]) -> Callable[..., Any]:
        return behavior if calls is None else _admitted(behavior, calls)

    serialize = h.response_serializer
    if h.unary_unary is not None:
        if getattr(h.unary_unary, "raw_request", False):  # reads its requests itself
            return grpc.unary_unary_rpc_method_handler(admitted(h.unary_unary), None, _passthrough(serialize))
        return grpc.unary_unary_rpc_method_handler(
            admitted(_guard(h.unary_unary)), _safe(h.request_deserializer), _passthrough(serialize)
        )
    if h.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            admitted(_guard(h.unary_stream)), _safe(h.request_deserializer), serialize
        )
    if h.stream_stream is not None:
        if getattr(h.stream_stream, "raw_request", False):
            return grpc.stream_stream_rpc_method_handler(admitted(h.stream_stream), None, _passthrough(serialize))
        return grpc.stream_stream_rpc_method_handler(admitted(_guard(h.stream_stream)), h.request_deserializer, serialize)
    return grpc.stream_unary_rpc_method_handler(admitted(_guard(h.stream_unary)), h.request_deserializer, serialize)


def _admitted(behavior: Callable[..., Any], calls: Calls) -> Callable[..., Any]:
    """``behavior`` served only within ``calls``' limit of calls at once; over it,
    RESOURCE_EXHAUSTED at once."""
    if inspect.isasyncgenfunction(behavior):

        @wraps(behavior)
        async def admitted_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if not calls.admit():
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, OVER_LIMIT)
            try:
                async for response in behavior(request, context):
                    yield response
            finally:
                calls.release()

        return admitted_stream

    @wraps(behavior)
    async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if not calls.admit():
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, OVER_LIMIT)
        try:
            return await behavior(request, context)
        finally:
            calls.release()

    return admitted


def register(add_to_server: Callable[[Any, Any], None], servicer: Any, table: MethodTable) -> None:
    """``add_XServicer_to_server(servicer, ...)`` into ``table`` (which the server
    serves as one generic handler), each method as :func:`_served` makes it."""
    add_to_server(servicer, _Registrar(table))
