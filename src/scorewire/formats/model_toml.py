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

Unknown keys are errors (a misspelt key would otherwise be silently ignored).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
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
    #: ``[ensemble]``: the model is made of other models (see scorewire.formats.ensemble)
    ensemble: EnsembleConfig | None = None


_TOP_KEYS = {"backend", "nan_policy", "max_batch_rows", "description", "version_policy", "batching"}
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
        ensemble=parse_ensemble(doc[_ENSEMBLE], source) if _ENSEMBLE in doc else None,
    )


def load_model_config(path: str | os.PathLike[str], files: ModelFiles = DEFAULT) -> ModelConfig:
    """Read model.toml, or the defaults when it does not exist (see
    :class:`~scorewire.formats.files.ModelFiles`)."""
    data = files.read(path, missing_ok=True)
    return ModelConfig() if data is None else parse_model_config(data, source=os.fspath(path))
