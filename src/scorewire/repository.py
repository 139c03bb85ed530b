"""The model repository: ``<root>/<model>/<version>/model.*`` plus ``model.toml``.

::

    models/
      credit/
        model.toml        optional (see scorewire.formats.model_toml)
        1/model.json
        2/model.onnx

A model that fails to load is recorded with its error and does not stop the others.
Each version goes LOADING → READY (or FAILED); only READY versions answer.

The directories may have been written by someone else: every directory and file
of a model is read through :class:`~scorewire.formats.files.ModelFiles`, so a
symbolic link leading out of the root, a file over ``max_model_mb`` or a model
declaring more than that fails that model (or version) with a load error naming the
path; links that stay inside the root are followed.

Whoever keeps state per served version (the service: batchers, per-version
request facts) subscribes with :meth:`ModelRepository.on_retire` and is told, once
per :class:`ModelVersion`, when that version stops being served: replaced by a
reload, dropped by the version policy, or unloaded.
"""

from __future__ import annotations

import enum
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .backends.loader import Model, find_artifact, load_model
from .backends.native import default_n_threads
from .errors import ModelLoadError, NotFound, ScorewireError, Unavailable
from .formats.files import DEFAULT_MAX_MODEL_MB, ModelFiles
from .formats.model_toml import ModelConfig, load_model_config
from .monitoring.monitor import VersionMonitor

log = logging.getLogger("scorewire.repository")

#: version directories: a positive integer without leading zeros, as int64 holds it
VERSION_RE = re.compile(r"^[1-9][0-9]{0,17}$")

#: model names: a letter or digit, then letters, digits, '_', '-', '.'; no '..'
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def valid_model_name(name: str) -> bool:
    """True for a name that is safe as one path component."""
    return bool(NAME_RE.match(name)) and ".." not in name


class State(enum.Enum):
    """The life of one model version."""

    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"
    UNLOADED = "UNLOADED"


@dataclass(eq=False)  # identity: one record per load, usable as a dict key
class ModelVersion:
    """One version of a model and its state (one record per load: a reload makes a
    new one)."""

    name: str
    version: int
    path: Path
    state: State = State.LOADING
    model: Model | None = None
    error: str = ""
    loaded_at: float = 0.0
    config: ModelConfig = field(default_factory=ModelConfig)
    #: drift and feedback monitoring (made with the model: see scorewire.monitoring)
    monitor: VersionMonitor | None = field(default=None, repr=False)


@dataclass
class ModelEntry:
    """One model: its configuration and its versions."""

    name: str
    path: Path
    config: ModelConfig = field(default_factory=ModelConfig)
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    error: str = ""  # a model-level error (bad model.toml, no versions)
    #: what was ignored while reading its directory (see ModelRepository._versions_on_disk)
    warnings: list[str] = field(default_factory=list)
    #: the newest READY version, what a request without a version gets (kept by refresh())
    newest_ready: ModelVersion | None = field(default=None, repr=False)

    def refresh(self) -> None:
        """Recompute newest_ready after ``versions`` changed."""
        ready = self.ready_versions()
        self.newest_ready = self.versions[ready[-1]] if ready else None

    @property
    def state(self) -> State:
        """READY when any version is ready, else LOADING, else FAILED."""
        states = {v.state for v in self.versions.values()}
        if State.READY in states:
            return State.READY
        if State.LOADING in states:
            return State.LOADING
        if not self.versions and not self.error:
            return State.UNLOADED
        return State.FAILED

    def load_error(self) -> str:
        """The model-level error, or the first version's load error."""
        return self.error or next((mv.error for mv in self.versions.values() if mv.error), "no version loaded")

    def ready_versions(self) -> list[int]:
        return sorted(v for v, mv in self.versions.items() if mv.state is State.READY)


class ModelRepository:
    """Finds, loads and serves the models under one directory.

    Thread-safe: loading may run in worker threads while requests resolve models.
    """

    def __init__(self, root: str | Path, n_threads: int | None = None, max_model_mb: int = DEFAULT_MAX_MODEL_MB) -> None:
        self.root = Path(root)
        self.n_threads = default_n_threads() if n_threads is None else n_threads
        #: how every file of the repository is read: inside the root, at most max_model_mb each
        self.files = ModelFiles(max_bytes=max_model_mb << 20, root=self.root)
        self._lock = threading.Lock()
        self._entries: dict[str, ModelEntry] = {}
        self._on_retire: list[Callable[[ModelVersion], None]] = []

    def on_retire(self, listener: Callable[[ModelVersion], None]) -> None:
        """Call ``listener(mv)`` (from whichever thread changed the repository, after
        the change) once for each version that stops being served."""
        self._on_retire.append(listener)

    def _retire(self, versions: Iterable[ModelVersion]) -> None:
        for mv in versions:
            for listener in self._on_retire:
                try:
                    listener(mv)
                except Exception:
                    log.exception("model %s version %d: a retire listener failed", mv.name, mv.version)

    # ------------------------------------------------------------- discovery
    def model_names(self) -> list[str]:
        """Names of the model directories under the root (valid names only)."""
        if not self.root.is_dir():
            raise ModelLoadError(f"{self.root}: the model repository is not a directory")
        names = []
        for p in sorted(self.root.iterdir()):
            if p.is_dir() and not p.name.startswith("."):
                if valid_model_name(p.name):
                    names.append(p.name)
                else:
                    log.warning("skipping %s: not a valid model name", p.name)
        return names

    def _versions_on_disk(self, model_dir: Path) -> tuple[list[int], list[str]]:
        """The version directories of a model, and a warning for each directory
        named with digits that is not a version (Triton's rule: a version is a
        positive integer written without leading zeros, so "01" cannot shadow "1")."""
        versions, warnings = [], []
        for p in sorted(model_dir.iterdir()):
            if not p.is_dir() or not p.name.isdigit():
                continue
            if VERSION_RE.match(p.name):
                versions.append(int(p.name))
            else:
                warnings.append(
                    f"directory {p.name[:32]!r} ignored: a version directory is named by a positive integer "
                    "without leading zeros (at most 18 digits)"
                )
        return sorted(versions), warnings

    # --------------------------------------------------------------- loading
    def load_all(self) -> None:
        """Load every model in the repository (errors are recorded, not raised)."""
        for name in self.model_names():
            self.load(name)

    def prepare(self, name: str) -> ModelEntry:
        """Read a model's config and mark the versions it will serve as LOADING.

        Raises NotFound for an unknown or invalid name.
        """
        if not valid_model_name(name):
            raise NotFound("no such model (invalid model name)")
        model_dir = self.root / name
        if not model_dir.is_dir():
            raise NotFound(f"no model named {name!r} in the repository")
        entry = ModelEntry(name=name, path=model_dir)
        try:
            self.files.check_inside(model_dir)
            entry.config = load_model_config(model_dir / "model.toml", self.files)
            on_disk, entry.warnings = self._versions_on_disk(model_dir)
            for warning in entry.warnings:
                log.warning("model %s: %s", name, warning)
            selected = entry.config.version_policy.select(on_disk)
            if not selected:
                raise ModelLoadError(f"{model_dir}: no version directory to serve (expected {model_dir}/1/...)")
        except ModelLoadError as exc:
            entry.error = exc.message
            log.error("model %s: %s", name, exc.message)
            selected = []
        with self._lock:
            old = self._entries.get(name)
            for v in selected:
                if old and v in old.versions and old.versions[v].state is State.READY:
                    entry.versions[v] = old.versions[v]  # keep serving it while reloading
                else:
                    entry.versions[v] = ModelVersion(name, v, model_dir / str(v), config=entry.config)
            entry.refresh()
            self._entries[name] = entry
        if old is not None:  # what the new entry does not carry over
            kept = set(map(id, entry.versions.values()))
            self._retire(mv for mv in old.versions.values() if id(mv) not in kept)
        return entry

    def load(self, name: str) -> ModelEntry:
        """Load (or reload) one model's served versions, synchronously."""
        entry = self.prepare(name)
        for mv in list(entry.versions.values()):
            self.load_version(entry, mv.version)
        return entry

    def load_version(self, entry: ModelEntry, version: int) -> ModelVersion:
        """Load one version of a prepared model, recording READY or FAILED."""
        path = entry.path / str(version)
        started = time.monotonic()
        try:
            self.files.check_inside(path)
            artifact = find_artifact(path)
            model = load_model(artifact, backend=entry.config.backend, n_threads=self.n_threads, files=self.files)
            # reference.json, when there is one: a malformed one fails the load like a bad artifact
            monitor = VersionMonitor.for_version(path, model, entry.config.nan_policy, self.files)
        except ScorewireError as exc:
            mv = ModelVersion(entry.name, version, path, State.FAILED, error=exc.message, config=entry.config)
            log.error("model %s version %d: %s", entry.name, version, exc.message)
        except Exception:  # a bug or an unexpected library error: keep the others loading
            log.exception("model %s version %d: unexpected error while loading", entry.name, version)
            mv = ModelVersion(
                entry.name, version, path, State.FAILED,
                error="unexpected error while loading (see the server log)", config=entry.config,
            )  # fmt: skip
        else:
            mv = ModelVersion(
                entry.name, version, path, State.READY, model=model, loaded_at=time.time(), config=entry.config,
                monitor=monitor,
            )  # fmt: skip
            reason = model.native_reason
            log.info(
                "model %s version %d ready: %s backend%s, %.0f ms",
                entry.name, version, model.backend, f" ({reason})" if reason else "",
                1000 * (time.monotonic() - started),
            )  # fmt: skip
        with self._lock:
            current = self._entries.get(entry.name)
            replaced = entry.versions.get(version) if current is entry else mv  # not served: retired at once
            if current is entry:
                entry.versions[version] = mv
                entry.refresh()
        if replaced is not None:
            self._retire([replaced])
        return mv

    def add_model(
        self, name: str, model: Model, version: int = 1, config: ModelConfig | None = None
    ) -> ModelVersion:
        """Serve an in-memory model object (no artifact on disk) under ``name``."""
        if not valid_model_name(name):
            raise ModelLoadError(f"invalid model name {name[:64]!r}")
        config = config or ModelConfig()
        mv = ModelVersion(name, version, self.root / name / str(version), State.READY, model=model,
                          loaded_at=time.time(), config=config,
                          monitor=VersionMonitor.for_version(None, model, config.nan_policy))  # fmt: skip
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                entry = self._entries[name] = ModelEntry(name=name, path=self.root / name, config=config)
            replaced = entry.versions.get(version)
            entry.versions[version] = mv
            entry.refresh()
        if replaced is not None:
            self._retire([replaced])
        return mv

    def unload(self, name: str) -> None:
        """Stop serving a model (NotFound when it is not loaded)."""
        with self._lock:
            entry = self._entries.pop(name, None)
        if entry is None:
            raise NotFound(f"no model named {name!r} is loaded")
        self._retire(list(entry.versions.values()))

    # -------------------------------------------------------------- serving
    def entries(self) -> list[ModelEntry]:
        with self._lock:
            return list(self._entries.values())

    def entry(self, name: str) -> ModelEntry:
        entry = self._entries.get(name)  # NOTE: one dict read is atomic; writers hold the lock
        if entry is None:
            raise NotFound(f"no model named {name[:128]!r}")
        return entry

    def resolve(self, name: str, version: int | None = None) -> ModelVersion:
        """The ready version asked for (the newest ready one by default)."""
        entry = self.entry(name)
        if version is None:
            if entry.newest_ready is not None:
                return entry.newest_ready
            if entry.state is State.LOADING:
                raise Unavailable(f"model {name!r} is loading")
            raise Unavailable(f"model {name!r} failed to load")
        mv = entry.versions.get(version)
        if mv is None:
            raise NotFound(f"model {name!r} has no version {version}")
        if mv.state is State.LOADING:
            raise Unavailable(f"model {name!r} version {version} is loading")
        if mv.state is not State.READY:
            raise Unavailable(f"model {name!r} version {version} failed to load")
        return mv

    def names(self) -> Iterable[str]:
        with self._lock:
            return list(self._entries)
