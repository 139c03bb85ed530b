"""OpenTelemetry tracing: set up from ``--trace`` and the standard ``OTEL_*`` variables.

Off by default. ``--trace`` (``SCOREWIRE_TRACE=1``) installs an SDK tracer provider:

* exporters from ``OTEL_TRACES_EXPORTER`` (comma-separated ``otlp``, ``console``,
  ``none``; default ``otlp``, which is OTLP over gRPC and reads
  ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``, … itself);
* the sampler from ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` as the SDK
  reads them; when ``OTEL_TRACES_SAMPLER`` is unset, scorewire samples
  parent-based at 1% (``OTEL_TRACES_SAMPLER_ARG`` changes the ratio) instead of the
  SDK's always-on, so that ``--trace`` is cheap enough to leave on. A client's
  sampled trace is always continued;
* the resource from ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES``
  (``service.name`` defaults to ``scorewire``); batching from ``OTEL_BSP_*``.

The provider is scorewire's own (the process-global one is left alone); spans are
parented explicitly, never through the implicit current context, so a batcher's
long-lived task cannot inherit a request's span. With tracing off, :data:`ENABLED`
is False and callers create no span objects at all; with it on, the edge passes
the core a request's span only when it is recording (sampled), so unsampled
requests cost one sampling decision.

That decision is made cheaply for scorewire's default sampler and propagators
(:func:`server_span`): the SDK's own path — extract the context, start a span, ask
the sampler, make a non-recording span — costs ~5–10 µs per unsampled request,
more than everything else tracing adds at 1%.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.trace import (
    INVALID_SPAN,
    Link,
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    set_span_in_context,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("scorewire.tracing")

#: the ratio of new traces sampled when OTEL_TRACES_SAMPLER is unset
DEFAULT_SAMPLE_RATIO = 0.01

# span attributes
MODEL = "scorewire.model"
VERSION = "scorewire.model.version"
BACKEND = "scorewire.backend"
ROWS = "scorewire.rows"
BATCH_ROWS = "scorewire.batch.rows"
BATCH_REQUESTS = "scorewire.batch.requests"
REQUEST_ID = "scorewire.request_id"

#: read on every request: False → no span is created anywhere
ENABLED = False
_tracer: Tracer | None = None
_provider: TracerProvider | None = None
#: the default sampler's bound on a trace id's low 64 bits, when the fast path applies
_fast_bound: int | None = None
_TRACE_ID_LOW = (1 << 64) - 1
_EMPTY = Context()
#: a valid version-00 traceparent whose sampled flag is clear (as the W3C propagator reads it)
_NOT_SAMPLED = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f][02468ace]")
_DEFAULT_FIELDS = frozenset({"traceparent", "tracestate", "baggage"})


class _NextTraceId(threading.local):
    value = 0


_next_trace_id = _NextTraceId()


def _id_generator() -> Any:
    """The SDK's random ids, except a trace id :func:`server_span` already drew."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class PresampledIdGenerator(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            trace_id = _next_trace_id.value
            if trace_id:
                _next_trace_id.value = 0
                return trace_id
            return super().generate_trace_id()

    return PresampledIdGenerator()


def configure(enabled: bool) -> TracerProvider | None:
    """Install the tracer provider for ``--trace`` (see the module docstring);
    ValueError for an unknown exporter name or sampler ratio."""
    if not enabled:
        use(None)
        return None
    provider, fast_bound = provider_from_environ()
    use(provider, fast_bound)
    log.info(
        "tracing on: exporter %s, sampler %s",
        os.environ.get("OTEL_TRACES_EXPORTER", "otlp"), provider.sampler.get_description(),
    )  # fmt: skip
    return provider


def provider_from_environ() -> tuple[TracerProvider, int | None]:
    """A tracer provider configured from the OTEL_* variables, and the bound for
    :func:`use`'s fast path (None when the sampler is not scorewire's default)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    from .. import __version__

    # NOTE: the OTEL_* variables are OpenTelemetry's own; the SDK reads most of them
    # itself, these only in its auto-configuration (which scorewire does not use).
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name[:40]!r} (otlp, console or none)")
    sampler = None  # the SDK's own, from OTEL_TRACES_SAMPLER
    fast_bound = None
    if not os.environ.get("OTEL_TRACES_SAMPLER"):
        from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio, TraceIdRatioBased

        text = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "")
        try:
            ratio = float(text) if text else DEFAULT_SAMPLE_RATIO
        except ValueError:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG: not a ratio: {text[:40]!r}") from None
        if not 0.0 <= ratio <= 1.0:
            raise ValueError("OTEL_TRACES_SAMPLER_ARG: the ratio must be in 0..1")
        sampler = ParentBasedTraceIdRatio(ratio)
        fast_bound = TraceIdRatioBased.get_bound_for_rate(ratio)
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "scorewire"}))
    provider = TracerProvider(sampler=sampler, resource=resource, id_generator=_id_generator())
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, fast_bound


def use(provider: TracerProvider | None, fast_bound: int | None = None) -> None:
    """Trace with ``provider`` from now on (None: tracing off). Tests install one
    with an in-memory exporter here.

    ``fast_bound``: the provider samples parent-based with TraceIdRatioBased of this
    bound and draws trace ids through :func:`_id_generator`; :func:`server_span` may
    then decide for the SDK (the same decision, without its cost), as long as the
    propagators are the default W3C ones.
    """
    from .. import __version__

    global ENABLED, _tracer, _provider, _fast_bound
    _provider = provider
    _tracer = provider.get_tracer("scorewire", __version__) if provider is not None else None
    default_propagators = set(propagate.get_global_textmap().fields) == _DEFAULT_FIELDS
    _fast_bound = fast_bound if default_propagators and _tracer is not None else None
    ENABLED = _tracer is not None


def flush(timeout_s: float = 5.0) -> None:
    """Export the spans that are still buffered."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


def shutdown() -> None:
    """Flush and stop the exporters; tracing is off afterwards."""
    provider = _provider
    use(None)
    if provider is not None:
        provider.shutdown()


# ------------------------------------------------------------------ spans
def server_span(name: str, metadata: Iterable[tuple[str, Any]], attributes: Mapping[str, Any]) -> Span | None:
    """A SERVER span continuing the trace context in ``metadata`` (header pairs:
    W3C ``traceparent`` by default; OTEL_PROPAGATORS), or None when it is not sampled.

    With the default sampler and propagators, an unsampled request costs a scan of
    its metadata and a random number: no traceparent → draw the trace id the SDK
    would, and start a span only when the ratio keeps it (the SDK's sampler then
    takes the same decision on the same id); a traceparent whose sampled flag is
    clear → parent-based sampling drops it. Anything else takes the SDK's path.
    """
    assert _tracer is not None
    if _fast_bound is not None:
        traceparent = None
        for key, value in metadata:
            if key == "traceparent":
                traceparent = value
                break
        if traceparent is None:
            trace_id = random.getrandbits(128)
            if trace_id & _TRACE_ID_LOW >= _fast_bound:
                return None
            _next_trace_id.value = trace_id
            span = _tracer.start_span(name, context=_EMPTY, kind=SpanKind.SERVER, attributes=attributes)
            return span if span.is_recording() else None
        if isinstance(traceparent, str) and _NOT_SAMPLED.fullmatch(traceparent):
            return None
    carrier = dict(metadata)
    span = _tracer.start_span(name, context=propagate.extract(carrier), kind=SpanKind.SERVER, attributes=attributes)
    return span if span.is_recording() else None


def child(
    parent: Span,
    name: str,
    start_time: int | None = None,
    attributes: Mapping[str, Any] | None = None,
    links: Sequence[Link] | None = None,
) -> Span:
    """A span under ``parent`` (a recording span); ``start_time`` in ns since the epoch."""
    if _tracer is None:  # tracing was turned off while the request ran
        return INVALID_SPAN
    return _tracer.start_span(
        name, context=set_span_in_context(parent), start_time=start_time, attributes=attributes, links=links
    )


def annotate(span: Span, model: str, version: int, backend: str, rows: int) -> None:
    """The model version that answers a request, and the request's size."""
    span.set_attributes({MODEL: model, VERSION: version, BACKEND: backend, ROWS: rows})


def set_error(span: Span, exc: BaseException) -> None:
    span.set_status(Status(StatusCode.ERROR, getattr(exc, "message", None) or type(exc).__name__))


def trace_batch(
    requests: Sequence[tuple[Span, int]],
    n_requests: int,
    rows: int,
    started: int,
    ended: int,
    error: BaseException | None = None,
) -> None:
    """Record a batch after the fact: a ``batch`` span (a child of the first sampled
    request, linked to every sampled request it served) and, under each sampled
    request, its ``queue`` (from ``queued`` to ``started``) and ``score`` spans.

    ``requests``: (span, queued at) of each sampled request; times in ns since the epoch.
    """
    if _tracer is None:  # tracing was turned off while the batch waited
        return
    batch = _tracer.start_span(
        "batch",
        context=set_span_in_context(requests[0][0]),
        start_time=started,
        links=[Link(span.get_span_context()) for span, _ in requests],
        attributes={BATCH_ROWS: rows, BATCH_REQUESTS: n_requests},
    )
    to_batch = [Link(batch.get_span_context())]
    for span, queued in requests:
        child(span, "queue", start_time=queued).end(end_time=started)
        score = child(span, "score", start_time=started, attributes={BATCH_ROWS: rows}, links=to_batch)
        if span.is_recording():  # not when its caller went away (the span has ended)
            span.set_attribute(BATCH_ROWS, rows)
        if error is not None:
            set_error(score, error)
        score.end(end_time=ended)
    if error is not None:
        set_error(batch, error)
    batch.end(end_time=ended)
