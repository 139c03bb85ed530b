"""``model.toml``: a model's optional configuration in the repository.

Example::

    backend = "auto"            # auto | native | onnxruntime
    nan_policy = "reject"       # reject | allow: NaN/Inf in inputs
    max_batch_rows = 100000     # rows per request, above it: RESOURCE_EXHAUSTED
    description = "credit default, v2024-06"

    [version_policy]
    policy = "latest"           # latest | all | specific
    count = 1                   # with latest: how many of the newest versions
    versions = [1, 3]           # with specific

    [batching]                  # dynamic batching (default: on for onnxruntime, off for native)
    enabled = true
    max_batch_rows = 4096       # rows per batch (one larger request runs alone)
    max_delay_us = 500          # how long a request waits for company
    max_queue_rows = 65536      # queued rows; beyond: RESOURCE_EXHAUSTED at once

    [traffic]                   # where requests without a version go (default: the newest ready)
    split = { 1 = 95, 2 = 5 }   # weights by version; sticky per key, only READY versions take any
    key_header = "x-user-id"    # metadata header whose value is the sticky key (default: request id)
    shadow = 3                  # a version that scores a copy of the traffic, after the answer
    shadow_fraction = 0.25      # the share of requests copied to it (default 1)

Unknown keys are errors (a misspelt key would otherwise be silently ignored).
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, field, replace
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..errors import ModelLoadError
from .ensemble import EnsembleConfig, parse_ensemble
from .files import DEFAULT, ModelFiles, quoted

BACKENDS = ("auto", "native", "onnxruntime")


@dataclass(frozen=True)
class BatchConfig:
    """``[batching]`` in model.toml. ``enabled=None``: the backend's default (off
    for the native kernel, whose per-call cost is too small to amortise; on for
    onnxruntime)."""

    enabled: bool | None = None
    max_batch_rows: int = 4096
    max_delay_us: int = 500
    max_queue_rows: int = 65536

    def enabled_for(self, backend: str) -> bool:
        return self.enabled if self.enabled is not None else backend == "onnxruntime"

    @classmethod
    def from_toml(cls, section: dict[str, Any], source: str) -> BatchConfig:
        unknown = set(section) - {"enabled", "max_batch_rows", "max_delay_us", "max_queue_rows"}
        if unknown:
            raise ModelLoadError(f"{source}: unknown [batching] key(s) {', '.join(quoted(k) for k in sorted(unknown)[:5])}")
        values: dict[str, Any] = {"enabled": section.get("enabled")}
        if values["enabled"] is not None and not isinstance(values["enabled"], bool):
            raise ModelLoadError(f"{source}: batching.enabled must be true or false")
        for key in ("max_batch_rows", "max_delay_us", "max_queue_rows"):
            if key in section:
                v = section[key]
                if not isinstance(v, int) or isinstance(v, bool) or v < (0 if key == "max_delay_us" else 1):
                    raise ModelLoadError(f"{source}: batching.{key} must be a {'non-negative' if key == 'max_delay_us' else 'positive'} integer")
                values[key] = v
        return cls(**values)


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model are served."""

    policy: str = "latest"  # latest | all | specific
    count: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """The served versions among ``available``, ascending."""
        available = sorted(available)
        if self.policy == "all":
            return available
        if self.policy == "specific":
            return [v for v in available if v in self.versions]
        return available[-self.count :] if available else []


#: a version as written in model.toml: a positive integer without leading zeros
_VERSION_KEY = re.compile(r"^[1-9][0-9]{0,17}$")
#: a gRPC metadata key a client can send as text (lowercase; not reserved, not binary)
_HEADER = re.compile(r"^[0-9a-z_.-]{1,64}$")


@dataclass(frozen=True)
class TrafficConfig:
    """``[traffic]`` in model.toml: how requests that name no version are spread
    over the model's versions, and which version shadows them.

    ``split``: (version, weight) pairs in ascending version order (empty: the
    newest ready version takes everything); ``key_header``: the metadata header
    whose value is a request's sticky key ("": its request id); ``shadow``: the
    version that scores a copy of the traffic (None: none), ``shadow_fraction``
    of the requests."""

    split: tuple[tuple[int, float], ...] = ()
    key_header: str = ""
    shadow: int | None = None
    shadow_fraction: float = 1.0

    @property
    def versions(self) -> tuple[int, ...]:
        """Every version the section names (the split's, then the shadow)."""
        return tuple(v for v, _ in self.split) + (() if self.shadow is None else (self.shadow,))

    @property
    def configured(self) -> bool:
        return bool(self.split) or self.shadow is not None

    @classmethod
    def from_toml(cls, section: Any, source: str) -> TrafficConfig:
        def fail(msg: str) -> ModelLoadError:
            return ModelLoadError(f"{source}: {msg}")

        if not isinstance(section, dict):
            raise fail("[traffic] must be a table")
        unknown = set(section) - {"split", "key_header", "shadow", "shadow_fraction"}
        if unknown:
            raise fail(f"unknown [traffic] key(s) {', '.join(quoted(k) for k in sorted(unknown)[:5])}")
        split = section.get("split", {})
        if not isinstance(split, dict):
            raise fail('traffic.split must be a table of version = weight, e.g. { 1 = 95, 2 = 5 }')
        weights = []
        for key, weight in split.items():
            if not _VERSION_KEY.match(key):
                raise fail(f"traffic.split: {quoted(key, 24)} is not a version (a positive integer without leading zeros)")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                    or not 0 < weight <= 1e9:  # fmt: skip
                raise fail(f"traffic.split: the weight of version {key} must be a positive number (at most 1e9)")
            weights.append((int(key), float(weight)))
        if "split" in section and not weights:
            raise fail("traffic.split names no version")
        key_header = section.get("key_header", "")
        if not isinstance(key_header, str) or (
            key_header and (not _HEADER.match(key_header) or key_header.startswith("grpc-") or key_header.endswith("-bin"))
        ):
            raise fail("traffic.key_header must be a metadata header name: lowercase letters, digits, '-', '_', "
                       "'.', at most 64, not 'grpc-...' nor '...-bin'")  # fmt: skip
        if "key_header" in section and not weights:
            raise fail("traffic.key_header needs traffic.split (it places requests in the split)")
        shadow = section.get("shadow")
        if shadow is not None and (not isinstance(shadow, int) or isinstance(shadow, bool) or not 0 < shadow < 10**18):
            raise fail("traffic.shadow must be a version (a positive integer)")
        if shadow is not None and shadow in dict(weights):
            raise fail(f"traffic.shadow: version {shadow} is in traffic.split; a shadow takes no traffic of its own")
        fraction = section.get("shadow_fraction", 1.0)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise fail("traffic.shadow_fraction must be a number in (0, 1]")
        if "shadow_fraction" in section and shadow is None:
            raise fail("traffic.shadow_fraction needs traffic.shadow")
        return cls(tuple(sorted(weights)), key_header, shadow, float(fraction))


@dataclass(frozen=True)
class ModelConfig:
    """Everything model.toml may say (defaults when the file is absent)."""

    backend: str = "auto"
    nan_policy: str = "reject"
    max_batch_rows: int | None = None
    description: str = ""
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    batching: BatchConfig = field(default_factory=BatchConfig)
    extra: dict[str, Any] = field(default_factory=dict)
    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    #: ``[ensemble]``: the model is made of other models (see scorewire.formats.ensemble)
    ensemble: EnsembleConfig | None = None

    def same_versions(self, other: ModelConfig) -> bool:
        """True when a version loaded under ``other`` would load the same under this
        configuration: they differ at most in what is read per model, not per
        version (``[traffic]``, the description)."""
        return replace(self, traffic=other.traffic, description=other.description) == other


_TOP_KEYS = {"backend", "nan_policy", "max_batch_rows", "description", "version_policy", "batching", "traffic"}
#: the ensemble section (scorewire.formats.ensemble)
_ENSEMBLE = "ensemble"
#: sections that other parts of the server read (drift, ...)
_SECTIONS = {"drift", "monitoring"}


def parse_model_config(data: bytes, source: str = "model.toml") -> ModelConfig:
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelLoadError(f"{source}: not valid TOML ({str(exc)[:120]})") from None
    unknown = sorted(set(doc) - _TOP_KEYS - _SECTIONS - {_ENSEMBLE})
    if unknown:
        raise ModelLoadError(f"{source}: unknown key(s) {', '.join(quoted(k) for k in unknown[:5])}")

    def fail(msg: str) -> ModelLoadError:
        return ModelLoadError(f"{source}: {msg}")

    backend = doc.get("backend", "auto")
    if backend not in BACKENDS:
        raise fail(f'"backend" must be one of {list(BACKENDS)}')
    nan_policy = doc.get("nan_policy", "reject")
    if nan_policy not in ("reject", "allow"):
        raise fail('"nan_policy" must be "reject" or "allow"')
    max_rows = doc.get("max_batch_rows")
    if max_rows is not None and (not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 1):
        raise fail('"max_batch_rows" must be a positive integer')
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise fail('"description" must be a string')
    vp = doc.get("version_policy", {})
    if not isinstance(vp, dict) or set(vp) - {"policy", "count", "versions"}:
        raise fail('"version_policy" takes policy, count and versions')
    policy = vp.get("policy", "latest")
    if policy not in ("latest", "all", "specific"):
        raise fail('version_policy.policy must be "latest", "all" or "specific"')
    count = vp.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise fail("version_policy.count must be a positive integer")
    versions = vp.get("versions", [])
    if not isinstance(versions, list) or not all(isinstance(v, int) and v > 0 for v in versions):
        raise fail("version_policy.versions must be a list of positive integers")
    if policy == "specific" and not versions:
        raise fail('version_policy "specific" needs a "versions" list')
    batching = doc.get("batching", {})
    if not isinstance(batching, dict):
        raise fail("[batching] must be a table")
    return ModelConfig(
        batching=BatchConfig.from_toml(batching, source),
        backend=backend,
        nan_policy=nan_policy,
        max_batch_rows=max_rows,
        description=description,
        version_policy=VersionPolicy(policy, count, tuple(versions)),
        extra={k: doc[k] for k in _SECTIONS if k in doc},
        traffic=TrafficConfig.from_toml(doc.get("traffic", {}), source),
        ensemble=parse_ensemble(doc[_ENSEMBLE], source) if _ENSEMBLE in doc else None,
    )


def load_model_config(path: str | os.PathLike[str], files: ModelFiles = DEFAULT) -> ModelConfig:
    """Read model.toml, or the defaults when it does not exist (see
    :class:`~scorewire.formats.files.ModelFiles`)."""
    data = files.read(path, missing_ok=True)
    return ModelConfig() if data is None else parse_model_config(data, source=os.fspath(path))
