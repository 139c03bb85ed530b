"""Telemetry of the scoring RPCs at the edge (Predict, PredictStream, ModelInfer,
ModelStreamInfer): Prometheus metrics by model version, RPC and gRPC status code,
and a SERVER span per RPC that continues the client's trace (W3C ``traceparent``
in the call's metadata).

A stream is one RPC and one server span; each of its messages is a request of its
own: counted, timed, and traced as a ``message`` span under the stream's span.
Calls refused before their request is read (over ``--max-concurrent-rpcs``, over
the message size limit) are not counted; an unparseable message is, under an
empty model label.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import grpc

from ..errors import ScorewireError
from ..observability import tracing
from ..observability.metrics import IN_FLIGHT, REQUEST_DURATION, REQUESTS
from ._calls import abandoned
from ._status import STATUS

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from ..service import ScoringService

#: the span attribute of the gRPC status code (OpenTelemetry's RPC conventions)
GRPC_STATUS = "rpc.grpc.status_code"


def code_of(exc: BaseException) -> grpc.StatusCode:
    """The status an exception ends a call with (as ``_handlers.unary`` maps it)."""
    if isinstance(exc, ScorewireError):
        return STATUS[exc.code]
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.UNAVAILABLE if abandoned(exc) else grpc.StatusCode.CANCELLED
    return grpc.StatusCode.INTERNAL


class _Children:
    """The label children of one (model, version, RPC)."""

    __slots__ = ("_labels", "codes", "latency", "ok")

    def __init__(self, model: str, version: str, rpc: str) -> None:
        self._labels = (model, version, rpc)
        self.latency = REQUEST_DURATION.labels(model, version, rpc)
        self.ok = REQUESTS.labels(model, version, rpc, "OK")
        self.codes = {grpc.StatusCode.OK: self.ok}

    def count(self, code: grpc.StatusCode) -> None:
        counter = self.codes.get(code)
        if counter is None:
            counter = self.codes[code] = REQUESTS.labels(*self._labels, code.name)
        counter.inc()


class RpcTelemetry:
    """The instruments of one scoring RPC, made once when the servicer is.

    Per request: :meth:`begin`, then :meth:`ok` or :meth:`failed` (each exactly
    once). With metrics and tracing both off (``metrics`` and ``tracing.ENABLED``
    false) a servicer skips all of it.
    """

    def __init__(self, service: str, method: str, scoring: ScoringService) -> None:
        self.method = method
        self.metrics = scoring.metrics
        self.span_name = f"{service}/{method}"
        self._attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        self._repository = scoring.repository
        self._children: dict[tuple[str, Any], _Children] = {}  # by the response's (model, version)
        self._labelled: dict[tuple[str, str], _Children] = {}  # by label values
        self._in_flight = IN_FLIGHT.labels(method) if self.metrics else None

    # ------------------------------------------------------------- tracing
    def server_span(self, context: grpc.aio.ServicerContext) -> Span | None:
        """The call's SERVER span when tracing is on and it is sampled, else None."""
        if not tracing.ENABLED:
            return None
        return tracing.server_span(self.span_name, context.invocation_metadata() or (), self._attributes)

    @staticmethod
    def message_span(stream: Span) -> Span:
        """The span of one message of a (sampled) stream."""
        return tracing.child(stream, "message")

    @staticmethod
    def end_stream(span: Span | None, exc: BaseException | None = None, code: grpc.StatusCode | None = None) -> None:
        """End a stream's span: OK, or ``code`` (default: the one ``exc`` maps to)."""
        if span is None:
            return
        if exc is None:
            span.set_attribute(GRPC_STATUS, 0)
        else:
            if code is None:
                code = grpc.StatusCode.CANCELLED if isinstance(exc, GeneratorExit) else code_of(exc)
            span.set_attribute(GRPC_STATUS, code.value[0])
            tracing.set_error(span, exc)
        span.end()

    # ------------------------------------------------------------- one request
    def begin(self) -> float:
        if self._in_flight is not None:
            self._in_flight.inc()
        return time.perf_counter()

    def ok(self, model: str, version: Any, started: float, span: Span | None) -> None:
        """The request was answered by ``version`` of ``model``."""
        if span is not None:
            span.set_attribute(GRPC_STATUS, 0)
            span.end()
        if self._in_flight is not None:
            children = self._children.get((model, version))
            if children is None:
                children = self._children[(model, version)] = self._by_labels(model, str(version))
            children.latency.observe(time.perf_counter() - started)
            children.ok.inc()
            self._in_flight.dec()

    def failed(
        self, exc: BaseException, model: str, version: int | None, started: float, span: Span | None
    ) -> grpc.StatusCode:
        """The request for ``version`` (None: the newest) of ``model`` failed with ``exc``."""
        code = code_of(exc)
        if span is not None:
            span.set_attribute(GRPC_STATUS, code.value[0])
            tracing.set_error(span, exc)
            if code is grpc.StatusCode.INTERNAL:
                span.record_exception(exc)
            span.end()
        if self._in_flight is not None:
            children = self._by_labels(*self._error_labels(model, version))
            children.latency.observe(time.perf_counter() - started)
            children.count(code)
            self._in_flight.dec()
        return code

    def _by_labels(self, model: str, version: str) -> _Children:
        children = self._labelled.get((model, version))
        if children is None:
            children = self._labelled[(model, version)] = _Children(model, version, self.method)
        return children

    def _error_labels(self, model: str, version: int | None) -> tuple[str, str]:
        """Label values for a failed request: only names the repository knows (a
        client's made-up names would make a label of unbounded cardinality)."""
        try:
            entry = self._repository.entry(model)
        except ScorewireError:
            return "", ""
        if version:
            return model, str(version) if version in entry.versions else ""
        newest = entry.newest_ready
        return model, str(newest.version) if newest is not None else ""


def version_of(text: str) -> int | None:
    """An OIP ``model_version`` as a label lookup key (None: newest, or invalid).
    ASCII digits only (``str.isdigit`` also takes "²", which ``int`` refuses), and at
    most 18 of them: a version directory's name never has more, and ``int`` refuses
    past 4 300."""
    return int(text) if len(text) <= 18 and text.isascii() and text.isdigit() else None
