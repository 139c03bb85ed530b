"""--trace and the OTEL_* variables: exporters, sampler, resource; and the fast
sampling decision, which must take exactly the decisions the SDK would."""

from __future__ import annotations

import os
import random
import subprocess

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scorewire.observability import tracing as _tracing

from ..servers import ROOT, SCOREWIRE

ATTRS = {"rpc.system": "grpc"}


@pytest.fixture
def otel_env(monkeypatch):
    for name in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    yield monkeypatch
    _tracing.shutdown()


def test_off_by_default():
    assert _tracing.configure(False) is None
    assert not _tracing.ENABLED


def test_trace_samples_one_percent_parent_based_by_default(otel_env):
    provider = _tracing.configure(True)
    assert _tracing.ENABLED and provider is not None
    description = provider.sampler.get_description()
    assert description.startswith("ParentBased{root:TraceIdRatioBased{0.01}")
    assert provider.resource.attributes["service.name"] == "scorewire"
    assert provider.resource.attributes["service.version"] == "0.1.0"


def test_the_standard_variables_are_honoured(otel_env):
    otel_env.setenv("OTEL_SERVICE_NAME", "scoring-eu")
    otel_env.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    provider = _tracing.configure(True)
    assert provider.sampler.get_description().startswith("ParentBased{root:TraceIdRatioBased{0.25}")
    assert provider.resource.attributes["service.name"] == "scoring-eu"
    otel_env.setenv("OTEL_TRACES_SAMPLER", "always_on")
    provider = _tracing.configure(True)
    assert provider.sampler.get_description() == "AlwaysOnSampler"
    assert _tracing._fast_bound is None  # another sampler: the SDK decides


@pytest.mark.parametrize("exporters", ["otlp", "console", "none", "otlp,console"])
def test_exporters(otel_env, exporters):
    otel_env.setenv("OTEL_TRACES_EXPORTER", exporters)
    provider = _tracing.configure(True)
    processors = provider._active_span_processor._span_processors
    assert len(processors) == len([n for n in exporters.split(",") if n != "none"])


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("OTEL_TRACES_EXPORTER", "zipkin", "unknown exporter"),
        ("OTEL_TRACES_SAMPLER_ARG", "often", "not a ratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5", "0..1"),
    ],
)
def test_bad_values_are_refused(otel_env, name, value, words):
    otel_env.setenv(name, value)
    with pytest.raises(ValueError, match=words):
        _tracing.configure(True)


def test_serve_refuses_a_bad_exporter_at_start():
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "zipkin"}
    r = subprocess.run([*SCOREWIRE, "serve", "--port", "0", "--trace"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode != 0
    assert "unknown exporter 'zipkin'" in r.stderr


# --------------------------------------------------- the fast sampling decision
def decisions(env, ratio: float, metadata_list, fast: bool) -> list:
    """(trace id, parent span id) of server_span for each metadata; None: not sampled."""
    env.setenv("OTEL_TRACES_SAMPLER_ARG", str(ratio))
    provider, bound = _tracing.provider_from_environ()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    _tracing.use(provider, bound if fast else None)
    out = []
    for metadata in metadata_list:
        span = _tracing.server_span("x", metadata, ATTRS)
        if span is None:
            out.append(None)
        else:
            ctx, parent = span.get_span_context(), span.parent
            out.append((ctx.trace_id, parent.span_id if parent else None))
            span.end()
    return out


HEADERS = [
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # sampled
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",  # not sampled
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03",  # sampled + another flag
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-02",  # another flag only
    "00-00000000000000000000000000000000-b7ad6b7169203331-00",  # invalid trace id: ignored
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-00",  # invalid span id: ignored
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",  # invalid version: ignored
    "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-extra",  # a future version
    "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-00",  # upper case: invalid
    " 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",  # leading space
    "garbage",
]


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_fast_decisions_equal_the_sdks_for_client_traces(otel_env, ratio):
    """With a deterministic root sampler (0 or 1) every decision is comparable."""
    metadata = [(("user-agent", "x"), ("traceparent", h)) for h in HEADERS] + [(("user-agent", "x"),), ()]
    fast = decisions(otel_env, ratio, metadata, fast=True)
    sdk = decisions(otel_env, ratio, metadata, fast=False)
    # a new root trace gets a fresh trace id: compare whether it was sampled, and its parent
    assert [d is None for d in fast] == [d is None for d in sdk]
    assert [d and d[1] for d in fast] == [d and d[1] for d in sdk]
    assert [d for d in fast[:4] if d] == [d for d in sdk[:4] if d]  # continued traces: same ids
    assert fast[1] is None  # the client did not sample: neither do we


def test_fast_decision_samples_the_ratio_by_trace_id(otel_env):
    random.seed(7)
    fast = decisions(otel_env, 0.25, [()] * 4000, fast=True)
    sampled = [d for d in fast if d is not None]
    assert 800 < len(sampled) < 1200
    bound = round(0.25 * 2**64)
    assert all(trace_id & (2**64 - 1) < bound for trace_id, _ in sampled)  # as TraceIdRatioBased
    assert len({trace_id for trace_id, _ in sampled}) == len(sampled)
