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

from .backends.ensemble import Member, build_ensemble
from .backends.loader import ARTIFACTS, Model, find_artifact, load_model
from .backends.native import default_n_threads
from .errors import ModelLoadError, NotFound, ScorewireError, Unavailable
from .formats.files import DEFAULT_MAX_MODEL_MB, ModelFiles
from .formats.linear_json import load_linear_json
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
    #: an ensemble's version: the member versions it was built from (see "ensembles")
    members: tuple[ModelVersion, ...] = field(default=(), repr=False)


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
        names = []
        for mv in versions:
            for listener in self._on_retire:
                try:
                    listener(mv)
                except Exception:
                    log.exception("model %s version %d: a retire listener failed", mv.name, mv.version)
            names.append(mv.name)
        for name in dict.fromkeys(names):
            self._refresh_ensembles(name)

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
        """Load every model in the repository (errors are recorded, not raised);
        ensembles after the models they are made of."""
        entries = [self.prepare(name) for name in self.model_names()]
        for entry in sorted(entries, key=lambda e: e.config.ensemble is not None):
            for mv in list(entry.versions.values()):
                self.load_version(entry, mv.version)

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
        members: tuple[ModelVersion, ...] = ()
        try:
            self.files.check_inside(path)
            if entry.config.ensemble is not None:
                model, members = self._load_ensemble(entry, path)
            else:
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
                monitor=monitor, members=members,
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
        if mv.state is State.READY:
            self._refresh_ensembles(entry.name)
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
        self._refresh_ensembles(name)
        return mv

    def unload(self, name: str) -> None:
        """Stop serving a model (NotFound when it is not loaded)."""
        with self._lock:
            entry = self._entries.pop(name, None)
        if entry is None:
            raise NotFound(f"no model named {name!r} is loaded")
        self._retire(list(entry.versions.values()))

    # ------------------------------------------------------------- ensembles
    # An ensemble version is built from the member versions ready when it loads, and
    # keeps them (ModelVersion.members): a folded ensemble holds their weights. When
    # one of them stops being served (unloaded, replaced by a reload, dropped by its
    # version policy) the ensemble version is loaded again at once: on the member's
    # replacement, or, with none ready, recorded FAILED with an error naming the
    # member (health NOT_SERVING, requests UNAVAILABLE). When a member turns ready
    # (LoadModel), every ensemble version that names it and is not ready is loaded
    # again. Members are models, never ensembles, so this goes one level deep.

    def ensembles_of(self, member: str) -> list[str]:
        """The ensembles whose model.toml names ``member`` as a member."""
        with self._lock:
            return [e.name for e in self._entries.values()
                    if e.config.ensemble is not None and member in e.config.ensemble.member_names]  # fmt: skip

    def _load_ensemble(self, entry: ModelEntry, path: Path) -> tuple[Model, tuple[ModelVersion, ...]]:
        """An ensemble version's model over its members' ready versions, and those."""
        ensemble = entry.config.ensemble
        assert ensemble is not None
        if entry.config.backend != "auto":
            raise ModelLoadError(f"{entry.path / 'model.toml'}: \"backend\" does not apply to an ensemble")
        found = [p.name for p in (path / name for name in ARTIFACTS) if p.is_file()]
        final = ensemble.final
        if ensemble.combiner == "stack" and final is None and "model.json" in found:
            final = load_linear_json(path / "model.json", self.files)
            found.remove("model.json")
        if found:
            inline = " (its final model is in model.toml)" if ensemble.final is not None else ""
            raise ModelLoadError(f"{path}: the version directory of an ensemble holds no {', '.join(found)}{inline}")
        pinned = []
        for m in ensemble.members:
            try:
                if self.entry(m.model).config.ensemble is not None:
                    raise ModelLoadError("it is an ensemble (members must be models)")
                pinned.append(self.resolve(m.model, m.version))
            except ScorewireError as exc:
                raise ModelLoadError(f"{path}: member {m.describe()} cannot be used: {exc.message}") from None
        members = [Member(mv.name, mv.version, mv.model, m) for mv, m in zip(pinned, ensemble.members, strict=True)
                   if mv.model is not None]  # fmt: skip
        try:
            model = build_ensemble(ensemble, members, final, self.n_threads)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{path}: {exc.message}") from None
        return model, tuple(pinned)

    def _refresh_ensembles(self, member: str) -> None:
        """``member`` changed: load again each version of an ensemble naming it that
        no longer stands on its members' current ready versions, or is not ready."""
        with self._lock:
            changed = self._entries.get(member)
            if changed is not None and changed.config.ensemble is not None:
                return  # no ensemble is made of an ensemble
            dependents = [e for e in self._entries.values()
                          if e.config.ensemble is not None and member in e.config.ensemble.member_names]  # fmt: skip
        for entry in dependents:
            for version, mv in list(entry.versions.items()):
                if mv.state is State.LOADING or (mv.state is State.READY and self._members_current(mv)):
                    continue
                log.info("ensemble %s version %d: member %s changed, loading it again", entry.name, version, member)
                self.load_version(entry, version)

    def _members_current(self, mv: ModelVersion) -> bool:
        """True while each member version ``mv`` stands on is still the one its
        member resolves to, and ready."""
        ensemble = mv.config.ensemble
        if ensemble is None:
            return True
        for m, pinned in zip(ensemble.members, mv.members, strict=True):
            entry = self._entries.get(m.model)
            if entry is None or pinned.state is not State.READY:
                return False
            now = entry.newest_ready if m.version is None else entry.versions.get(m.version)
            if now is not pinned:
                return False
        return True

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
