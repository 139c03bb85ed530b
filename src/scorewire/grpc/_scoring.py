"""The scoring RPCs of both protocols, written once: Predict / ModelInfer
(:func:`serve_unary`) and PredictStream / ModelStreamInfer (:func:`serve_stream`).

What differs between scorewire.v1 and the Open Inference Protocol is one
:class:`Adapter` each (``_predict.V1``, ``_oip.OIP``): how a request is read from
its bytes (into a :class:`~scorewire.grpc._wire.Request`), turned into the core's
:class:`~scorewire.types.PredictRequest`, and answered; how a stream's answers and
in-band errors look. Here is how a request is served: read, answered on the fast
path (the response serialized by ``scorewire.grpc._wire``) unless it is observed —
metrics on, or tracing samples it — then counted and traced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from ..errors import InvalidInput, ScorewireError, Unavailable
from ..observability import tracing
from ..service import ScoringService
from ..types import PredictRequest, PredictResponse
from ._calls import DRAIN, SHUTTING_DOWN, Calls, abandoned
from ._codec import INPUT_RANKS, Ranks
from ._handlers import UNPARSEABLE, UNPARSEABLE_MESSAGE, deadline_of, status_of
from ._telemetry import RpcTelemetry
from ._wire import Request

if TYPE_CHECKING:
    from opentelemetry.trace import Span


class Adapter:
    """One scoring protocol at the edge. A subclass says how its requests are read
    and its answers written (the methods that raise NotImplementedError); how a
    request is answered — fast, observed or traced — is written once, here."""

    def __init__(self, service: ScoringService, decode: Callable[[bytes], Request | None], message_class: Any) -> None:
        self.service = service
        self._decode = decode
        self._message_class = message_class

    # ------------------------------------------------------ the protocol's own
    def from_message(self, message: Any) -> Request:
        """A request protobuf parsed (an encoding the wire decoder leaves to it)."""
        raise NotImplementedError

    def to_core(self, request: Request, deadline: float | None, key: str = "") -> PredictRequest:
        """The core's request (``key``: its route key, see :meth:`route_key`);
        raises what reading the input raised."""
        raise NotImplementedError

    def encode(self, request: Request, result: PredictResponse) -> Any:
        """The response message."""
        raise NotImplementedError

    def encode_wire(self, request: Request, result: PredictResponse) -> bytes | None:
        """The response serialized by ``scorewire.grpc._wire``, or None when it cannot."""
        raise NotImplementedError

    def labels(self, request: Request) -> tuple[str, Any]:
        """The (model, version) a request is counted under when it fails."""
        raise NotImplementedError

    def answered(self, response: Any) -> tuple[str, Any]:
        """The (model, version) that answered (a response message)."""
        raise NotImplementedError

    def stream_ok(self, request: Request, response: Any) -> Any:
        """A stream's answer around a response, serialized (bytes) or not."""
        raise NotImplementedError

    def stream_error(self, request: Request, code: grpc.StatusCode, message: str) -> Any:
        """A stream's in-band error for one request."""
        raise NotImplementedError

    # ------------------------------------------------------------ written once
    def input_ranks(self, model: str, version: int | None) -> Ranks | None:
        """The ranks a request's one input may have: INPUT_RANKS for a tabular model
        (and for one that cannot answer now: the request fails on that, under its
        model), None (any, checked by the core against the signature) for any other."""
        try:
            mv = self.service.resolve(model, version)
        except ScorewireError:
            return INPUT_RANKS
        return INPUT_RANKS if mv.model is None or mv.model.signature.tabular else None

    def read(self, data: bytes) -> Request | Any:
        """A request from its bytes: the common encoding by ``scorewire.grpc._wire``, the
        rest parsed by protobuf; UNPARSEABLE for what protobuf cannot parse."""
        request = self._decode(data)
        if request is not None:
            return request
        try:
            message = self._message_class.FromString(data)
        except Exception:
            return UNPARSEABLE
        return self.from_message(message)

    def route_key(self, request: Request, context: grpc.aio.ServicerContext) -> str:
        """The value of the metadata header that places requests for the request's
        model in its traffic split (``[traffic] key_header`` in model.toml), or ""
        (no such header configured, or not sent: the core then uses the request id).
        Costs one look at an empty dict for every model without one."""
        headers = self.service.repository.key_headers
        if not headers:
            return ""
        name = headers.get(request.model)
        if not name:
            return ""
        for k, v in context.invocation_metadata() or ():
            if k == name and isinstance(v, str):
                return v
        return ""

    async def answer(self, request: Request, deadline: float | None, key: str = "") -> Any:
        return self.encode(request, await self.service.predict(self.to_core(request, deadline, key)))

    async def answer_wire(self, request: Request, deadline: float | None, key: str = "") -> Any:
        """:meth:`answer`, serialized by ``scorewire.grpc._wire`` when it can (the
        unobserved path)."""
        result = await self.service.predict(self.to_core(request, deadline, key))
        body = self.encode_wire(request, result)
        return self.encode(request, result) if body is None else body

    async def answer_traced(self, request: Request, deadline: float | None, span: Span, key: str = "") -> Any:
        """:meth:`answer` with ``decode`` and ``encode`` spans under the request's."""
        with tracing.child(span, "decode"):
            core = self.to_core(request, deadline, key)
        if core.request_id:
            span.set_attribute(tracing.REQUEST_ID, core.request_id)
        result = await self.service.predict(core, span)
        with tracing.child(span, "encode"):
            return self.encode(request, result)


def _parsed(request: Any) -> Request:
    if request is UNPARSEABLE:
        raise InvalidInput(UNPARSEABLE_MESSAGE)
    return request  # type: ignore[no-any-return]


def serve_unary(data: bytes, context: grpc.aio.ServicerContext, t: RpcTelemetry, adapter: Adapter) -> Awaitable[Any]:
    """The one body of Predict and ModelInfer (their methods return this coroutine,
    so it adds no layer). An unparseable request is INVALID_ARGUMENT, counted (when
    observed) under no model."""
    span = t.server_span(context)  # None unless tracing is on and samples this call
    if span is None and not t.metrics:  # the default, and 99% of calls at a 1% sampler
        request = _parsed(adapter.read(data))
        return adapter.answer_wire(request, deadline_of(context), adapter.route_key(request, context))
    return _serve_observed(data, context, t, adapter, span)


async def _serve_observed(
    data: bytes, context: grpc.aio.ServicerContext, t: RpcTelemetry, adapter: Adapter, span: Span | None
) -> Any:
    started = t.begin()
    request = None
    try:
        request = _parsed(adapter.read(data))
        key = adapter.route_key(request, context)
        if span is None:
            response = await adapter.answer(request, deadline_of(context), key)
        else:
            response = await adapter.answer_traced(request, deadline_of(context), span, key)
    except BaseException as exc:
        model, version = ("", None) if request is None else adapter.labels(request)
        t.failed(exc, model, version, started, span)
        raise
    t.ok(*adapter.answered(response), started, span)
    return response


#: messages a stream reads ahead of the one being answered (bounded: backpressure)
READ_AHEAD = 32
_END: Any = object()


async def serve_stream(context: grpc.aio.ServicerContext, calls: Calls, t: RpcTelemetry, adapter: Adapter) -> None:
    """The one loop behind PredictStream and ModelStreamInfer: each message is
    answered in order, a bad one with an in-band error while the stream goes on; an
    unparseable one ends the stream with INVALID_ARGUMENT. ``t`` is the RPC's
    telemetry (metrics and the stream's span).

    A reader task keeps up to READ_AHEAD messages received (``context.read``; the
    servicer's request iterator is never started) while answers are written
    (``context.write``), so receiving the next message overlaps scoring and sending
    this one instead of alternating with them; the servicer method is therefore a
    coroutine, not an async generator.

    Once the server refuses new calls (``calls``, at shutdown: the drain delay
    has passed, so what the client sent before the signal has arrived), the stream
    answers the messages it has received and ends with UNAVAILABLE: its client
    reconnects elsewhere, knowing (by the answers, in order) which of its messages
    were answered.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue(READ_AHEAD)
    read_message = adapter.read

    async def read() -> None:
        try:
            # context.read() rather than the request iterator: the same messages without
            # an async generator step around each one (the iterator is never started)
            while (data := await context.read()) is not grpc.aio.EOF:
                await queue.put(read_message(data))
        except asyncio.CancelledError:  # the loop below is done with the stream
            raise
        except Exception as exc:  # the client went away, or the stream was aborted:
            await queue.put(exc)  # the loop below re-raises it, no task keeps it unretrieved
            return
        await queue.put(_END)

    reader = asyncio.ensure_future(read())
    deadline = deadline_of(context)
    stream = t.server_span(context)
    handle = adapter.answer if t.metrics else adapter.answer_wire  # metrics read the message
    calls.streams.add(queue)
    try:
        while True:
            if calls.refusing and queue.empty():  # shutting down, every message received answered
                t.end_stream(stream, Unavailable(SHUTTING_DOWN))
                stream = None
                await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
            request = await queue.get()
            if request is _END:
                break
            if request is DRAIN:
                continue
            if isinstance(request, BaseException):
                raise request
            if request is UNPARSEABLE:
                if t.metrics:
                    t.failed(InvalidInput(UNPARSEABLE_MESSAGE), "", None, t.begin(), None)
                t.end_stream(stream, InvalidInput(UNPARSEABLE_MESSAGE))
                stream = None
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, UNPARSEABLE_MESSAGE)
            observed = t.metrics or stream is not None
            started = t.begin() if observed else 0.0
            span = None if stream is None else t.message_span(stream)
            try:
                key = adapter.route_key(request, context)
                if span is None:
                    response = await handle(request, deadline, key)
                else:
                    response = await adapter.answer_traced(request, deadline, span, key)
            except Exception as exc:  # one bad message: an error response, the stream goes on
                code, message = status_of(exc)
                if observed:
                    t.failed(exc, *adapter.labels(request), started, span)
                await context.write(adapter.stream_error(request, code, message))
            except BaseException as exc:  # cancelled
                if observed:
                    t.failed(exc, *adapter.labels(request), started, span)
                raise
            else:
                if observed:
                    t.ok(*adapter.answered(response), started, span)
                await context.write(adapter.stream_ok(request, response))
    except BaseException as exc:
        t.end_stream(stream, exc)
        if abandoned(exc):  # at shutdown: UNAVAILABLE, not CANCELLED
            await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        raise
    finally:
        calls.streams.discard(queue)
        if not reader.done():
            reader.cancel()
    t.end_stream(stream)
