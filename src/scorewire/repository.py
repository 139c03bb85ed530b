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
reload, dropped by the version policy, or unloaded. A retired version's
``retired`` is set before the listeners hear of it, so a request that picked it
just before can tell and pick again.

A reload never leaves a model without an answer it had: the versions it served
keep answering until their replacements are ready, whether the replacement is a
new record of the same version or another version (``ModelEntry.outgoing``).

Where requests that name no version go is the model's :class:`Traffic`
(``[traffic]`` in model.toml: a weighted split over versions, sticky per key, and
a shadow version), recomputed whenever its versions change.
"""

from __future__ import annotations

import bisect
import enum
import hashlib
import logging
import os
import random
import re
import stat
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .backends.ensemble import Member, build_ensemble
from .backends.loader import ARTIFACTS, Model, explanation_baseline, find_artifact, load_model
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
    #: its directory's files as they were when it was read (see version_fingerprint)
    fingerprint: tuple[Hashable, ...] = field(default=(), repr=False)
    #: set once the repository no longer serves it, before its retire listeners run
    retired: bool = field(default=False, repr=False)
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
    #: the newest READY version, what a request without a version gets (kept by
    #: refresh()): never the shadow; an outgoing version only while no other is ready
    newest_ready: ModelVersion | None = field(default=None, repr=False)
    #: versions the previous load served and this one does not: they keep answering
    #: until the load is done (ModelRepository.finish), then they are retired
    outgoing: set[int] = field(default_factory=set, repr=False)
    #: the versions this load reads (prepare() decides; the others are carried over)
    pending: list[int] = field(default_factory=list, repr=False)
    #: while a load is in progress: the share of the traffic each version took
    #: before it (prepare() sets it, finish() clears it), so that until the versions
    #: the new configuration sends traffic to are ready, those that had it keep it
    previous: dict[int, float] = field(default_factory=dict, repr=False)
    #: where requests without a version go when model.toml has a [traffic] section,
    #: or while a load is in progress (None: to newest_ready)
    traffic: Traffic | None = field(default=None, repr=False)

    def refresh(self) -> None:
        """Recompute newest_ready and traffic after ``versions`` changed."""
        shadow = self.config.traffic.shadow
        serving = [v for v in self.ready_versions() if v != shadow]
        current = [v for v in serving if v not in self.outgoing] or serving
        self.newest_ready = self.versions[current[-1]] if current else None
        self.traffic = Traffic(self) if self.config.traffic.configured or self.previous else None

    def shares(self) -> dict[int, float]:
        """The share of requests without a version each version takes now."""
        if self.traffic is not None:
            return dict(self.traffic.shares)
        return {self.newest_ready.version: 1.0} if self.newest_ready is not None else {}

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
        #: model → the metadata header whose value is its requests' sticky key
        #: (``[traffic] key_header``), for the edge; replaced whole, never changed
        self.key_headers: dict[str, str] = {}

    def on_retire(self, listener: Callable[[ModelVersion], None]) -> None:
        """Call ``listener(mv)`` (from whichever thread changed the repository, after
        the change) once for each version that stops being served."""
        self._on_retire.append(listener)

    def _retire(self, versions: Iterable[ModelVersion]) -> None:
        names = []
        for mv in versions:
            mv.retired = True
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
            for v in list(entry.pending):
                self.load_version(entry, v)
            self.finish(entry)

    def prepare(self, name: str, reuse: bool = False) -> ModelEntry:
        """Read a model's config and mark the versions it will serve as LOADING
        (``entry.pending``: the versions to load).

        A version the model serves now keeps serving until its new record is loaded;
        a served version the new configuration drops keeps serving as ``outgoing``
        until :meth:`finish`. ``reuse``: a version whose files and configuration are
        unchanged since it was read is kept as it is (not read again), so it keeps
        its monitoring; else every served version is read again (a reload).

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
            selected = self._served(entry.config, on_disk, model_dir)
            if not selected:
                raise ModelLoadError(f"{model_dir}: no version directory to serve (expected {model_dir}/1/...)")
        except ModelLoadError as exc:
            entry.error = exc.message
            log.error("model %s: %s", name, exc.message)
            selected = []
        on_disk_now = {v: version_fingerprint(model_dir / str(v)) for v in selected} if reuse else {}
        with self._lock:
            old = self._entries.get(name)
            for v in selected:
                current = old.versions.get(v) if old is not None else None
                if current is not None and _unchanged(current, entry.config, on_disk_now.get(v)):
                    entry.versions[v] = current  # the same files and configuration: kept as it is
                    continue
                if current is not None and current.state is State.READY:
                    entry.versions[v] = current  # keeps serving while it is read again
                else:
                    entry.versions[v] = ModelVersion(name, v, model_dir / str(v), config=entry.config)
                entry.pending.append(v)
            if old is not None:  # what it no longer serves answers until this load is done
                for v, mv in old.versions.items():
                    if v not in entry.versions and mv.state is State.READY:
                        entry.versions[v] = mv
                        entry.outgoing.add(v)
                entry.previous = old.shares()
            entry.refresh()
            self._entries[name] = entry
            self._set_key_header(name, entry.config.traffic.key_header)
        if old is not None:  # what the new entry does not carry over
            kept = set(map(id, entry.versions.values()))
            self._retire(mv for mv in old.versions.values() if id(mv) not in kept)
        return entry

    def load(self, name: str, reuse: bool = False) -> ModelEntry:
        """Load (or reload) one model's served versions, synchronously (``reuse``:
        see :meth:`prepare`)."""
        entry = self.prepare(name, reuse)
        for v in list(entry.pending):
            self.load_version(entry, v)
        self.finish(entry)
        return entry

    def finish(self, entry: ModelEntry) -> None:
        """The load of ``entry`` is done: retire the versions it no longer serves
        (``entry.outgoing``), which answered meanwhile."""
        with self._lock:
            gone = []
            if self._entries.get(entry.name) is entry and (entry.outgoing or entry.previous):
                gone = [entry.versions.pop(v) for v in sorted(entry.outgoing)]
                entry.outgoing.clear()
                entry.previous = {}
                entry.refresh()
        self._retire(gone)

    def _served(self, config: ModelConfig, on_disk: list[int], model_dir: Path) -> list[int]:
        """The versions a model serves: the version policy's among those that are
        not its shadow, and every version its [traffic] section names
        (ModelLoadError for one without a directory, or a shadow with nothing
        beside it to answer)."""
        traffic = config.traffic
        named = traffic.versions
        missing = [v for v in named if v not in on_disk]
        if missing:
            what = "traffic.shadow" if missing[0] == traffic.shadow else "traffic.split"
            raise ModelLoadError(
                f"{model_dir / 'model.toml'}: {what} names version {missing[0]}, which has no version directory"
            )
        served = set(config.version_policy.select([v for v in on_disk if v != traffic.shadow])) | set(named)
        if traffic.shadow is not None and served == {traffic.shadow}:
            raise ModelLoadError(
                f"{model_dir / 'model.toml'}: traffic.shadow is version {traffic.shadow} and no other version is "
                "served: a shadow answers no request"
            )
        return sorted(served)

    def _set_key_header(self, name: str, header: str) -> None:
        """Record (or, with "", forget) a model's key header (call with the lock held)."""
        if self.key_headers.get(name, "") != header:
            headers = {k: v for k, v in self.key_headers.items() if k != name}
            if header:
                headers[name] = header
            self.key_headers = headers

    def load_version(self, entry: ModelEntry, version: int) -> ModelVersion:
        """Load one version of a prepared model, recording READY or FAILED."""
        path = entry.path / str(version)
        started = time.monotonic()
        fingerprint = version_fingerprint(path)  # before reading: a change meanwhile reads it again later
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
            mv = ModelVersion(entry.name, version, path, State.FAILED, error=exc.message, config=entry.config,
                              fingerprint=fingerprint)  # fmt: skip
            log.error("model %s version %d: %s", entry.name, version, exc.message)
        except Exception:  # a bug or an unexpected library error: keep the others loading
            log.exception("model %s version %d: unexpected error while loading", entry.name, version)
            mv = ModelVersion(
                entry.name, version, path, State.FAILED,
                error="unexpected error while loading (see the server log)", config=entry.config,
                fingerprint=fingerprint,
            )  # fmt: skip
        else:
            mv = ModelVersion(
                entry.name, version, path, State.READY, model=model, loaded_at=time.time(), config=entry.config,
                monitor=monitor, fingerprint=fingerprint, members=members,
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
            self._set_key_header(name, "")
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
        baseline = None
        if members and members[0].model.signature.tabular:  # a folded ensemble explains from its reference means
            baseline = explanation_baseline(path, members[0].model.signature.n_features, self.files)
        try:
            model = build_ensemble(ensemble, members, final, self.n_threads, baseline=baseline)
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
        """The ready version asked for (by default, what a request without a version
        and without a key gets: the newest ready one, or the split's pick)."""
        return self.route(name, version)[0]

    def route(self, name: str, version: int | None = None, key: str = "") -> tuple[ModelVersion, Traffic | None]:
        """The ready version a request gets, and — when it named no version and the
        model has a [traffic] section — the model's :class:`Traffic` (its shadow).
        ``key`` places the request in the split (sticky); "" picks by weight at
        random."""
        entry = self.entry(name)
        if version is not None:
            return self._version(entry, version), None
        traffic = entry.traffic
        mv = entry.newest_ready if traffic is None else traffic.pick(key)
        if mv is not None:
            return mv, traffic
        if entry.state is State.LOADING:
            raise Unavailable(f"model {name!r} is loading")
        if entry.state is State.READY:  # only its shadow is ready
            raise Unavailable(f"model {name!r} has no version ready to take traffic (its shadow takes none)")
        raise Unavailable(f"model {name!r} failed to load")

    def _version(self, entry: ModelEntry, version: int) -> ModelVersion:
        name = entry.name
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

    # ------------------------------------------------------------- watching
    def fingerprints(self) -> dict[str, tuple[Hashable, ...]]:
        """What each model directory on disk looks like now — its model.toml and
        every file of its version directories, by name, size, times and inode —
        so that a watcher can tell a change (and a directory still being written:
        one whose fingerprint is not the same twice in a row). Reads no file."""
        out: dict[str, tuple[Hashable, ...]] = {}
        for name in self.model_names():
            model_dir = self.root / name
            try:
                names = sorted(p.name for p in os.scandir(model_dir))
            except OSError:
                out[name] = ("unreadable",)
                continue
            toml = _stat_key(model_dir / "model.toml")
            versions = tuple((n, version_fingerprint(model_dir / n)) for n in names if VERSION_RE.match(n))
            out[name] = (toml, versions)
        return out


def _unchanged(mv: ModelVersion, config: ModelConfig, fingerprint: tuple[Hashable, ...] | None) -> bool:
    """True when ``mv`` was read (READY or FAILED) from the files whose
    ``fingerprint`` its directory has now, under a configuration equivalent to
    ``config`` (None: not asked, read it again)."""
    return (
        bool(fingerprint)
        and mv.state is not State.LOADING
        and mv.fingerprint == fingerprint
        and mv.config.same_versions(config)
    )


#: at most this many files and directories make a version directory's fingerprint
FINGERPRINT_ENTRIES = 256


def _stat_key(path: Path) -> tuple[Hashable, ...]:
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def version_fingerprint(path: Path) -> tuple[Hashable, ...]:
    """A version directory's files as they are now (name, type, size, modification
    and change times, inode of each, symbolic links followed; at most
    FINGERPRINT_ENTRIES): the same tuple means the same files, unless something
    rewrote a file in place within one tick of the file system's clock without
    changing its size. () for a directory that is not there."""
    out: list[tuple[Hashable, ...]] = []
    stack = [(path, "")]
    while stack and len(out) < FINGERPRINT_ENTRIES:
        directory, prefix = stack.pop()
        try:
            names = sorted(e.name for e in os.scandir(directory))
        except FileNotFoundError:
            if not prefix:
                return ()
            names = []
        except OSError:
            names = []
        for n in names[:FINGERPRINT_ENTRIES]:
            key = _stat_key(directory / n)
            out.append((prefix + n, *key))
            if key and key[0] == stat.S_IFDIR:
                stack.append((directory / n, f"{prefix}{n}/"))
    return tuple(out)


class Traffic:
    """Where a model's requests that name no version go (``[traffic]`` in
    model.toml, or a load in progress), as of the last change of its versions: made
    by :meth:`ModelEntry.refresh` and replaced whole, so requests read it without a
    lock.

    The split's versions divide [0, 1) in ascending version order, each a band as
    wide as its weight's share. A request with a key lands at a point of it drawn
    from a hash of the model's name and the key (the same in every process), so the
    same key meets the same version; changing the weights moves only the keys of
    the bands that moved. A version that is not READY takes nothing: a key that
    lands in its band is placed again, by a second hash, among the READY ones by
    their weights (so a caller whose version is down sticks to its stand-in). A
    request without a key is placed at random.

    Without a split, the newest version served (not the shadow, not one a load is
    retiring) takes everything once it is READY. Until then — none of the split
    READY, or that version not yet — while a load is in progress the versions that
    took the traffic before it keep it, in the same shares; otherwise, and after
    them, the newest ready version that is not the shadow answers.
    """

    __slots__ = (
        "_bounds", "_members", "_previous", "_previous_bounds", "_ready", "_ready_bounds", "_salt",
        "fallback", "fraction", "preferred", "shadow", "shares",
    )  # fmt: skip

    def __init__(self, entry: ModelEntry) -> None:
        config = entry.config.traffic
        self._bounds: list[float] = []  # cumulative weights, one per split version
        self._members: list[ModelVersion | None] = []  # READY record, or None
        self._ready_bounds: list[float] = []
        self._ready: list[ModelVersion] = []
        total = 0.0
        for version, weight in config.split:
            mv = _ready(entry, version)
            total += weight
            self._bounds.append(total)
            self._members.append(mv)
            if mv is not None:
                self._ready_bounds.append((self._ready_bounds or [0.0])[-1] + weight)
                self._ready.append(mv)
        #: without a split: the newest version served, once READY (None: a split, or not ready)
        self.preferred: ModelVersion | None = None
        if not config.split:
            newest = max((v for v in entry.versions if v != config.shadow and v not in entry.outgoing), default=None)
            self.preferred = None if newest is None else _ready(entry, newest)
        # while a load is in progress: the versions that took the traffic before it
        self._previous_bounds: list[float] = []
        self._previous: list[ModelVersion] = []
        for version, share in sorted(entry.previous.items()):
            mv = _ready(entry, version)
            if mv is not None and share > 0:
                self._previous_bounds.append((self._previous_bounds or [0.0])[-1] + share)
                self._previous.append(mv)
        #: the newest ready version that is not the shadow: the answer when nothing above applies
        self.fallback = entry.newest_ready
        shadow = entry.versions.get(config.shadow) if config.shadow is not None else None
        #: the READY shadow version (None: none, or not ready)
        self.shadow = shadow if shadow is not None and shadow.state is State.READY else None
        self.fraction = config.shadow_fraction
        self._salt = entry.name.encode("utf-8", "surrogatepass") + b"\0"
        #: the share of requests without a version each version takes now
        self.shares: dict[int, float] = (
            _shares(self._ready, self._ready_bounds)
            if self._ready
            else {self.preferred.version: 1.0}
            if self.preferred is not None
            else _shares(self._previous, self._previous_bounds)
            if self._previous
            else {self.fallback.version: 1.0}
            if self.fallback is not None
            else {}
        )

    def pick(self, key: str) -> ModelVersion | None:
        """The version a request with sticky ``key`` ("" for none) gets."""
        ready = self._ready
        if ready:
            if not key:
                return ready[_band(self._ready_bounds, random.random())]
            digest = self._digest(key)
            mv = self._members[_band(self._bounds, int.from_bytes(digest[:4], "big") / 2**32)]
            if mv is not None:
                return mv
            return ready[_band(self._ready_bounds, int.from_bytes(digest[4:], "big") / 2**32)]
        if self.preferred is not None:
            return self.preferred
        if self._previous:
            u = int.from_bytes(self._digest(key)[:4], "big") / 2**32 if key else random.random()
            return self._previous[_band(self._previous_bounds, u)]
        return self.fallback

    def _digest(self, key: str) -> bytes:
        return hashlib.blake2b(self._salt + key.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def _ready(entry: ModelEntry, version: int) -> ModelVersion | None:
    """The record of ``version`` when it is READY, else None."""
    mv = entry.versions.get(version)
    return mv if mv is not None and mv.state is State.READY else None


def _shares(members: list[ModelVersion], bounds: list[float]) -> dict[int, float]:
    return {mv.version: w / bounds[-1] for mv, w in zip(members, _widths(bounds), strict=True)}


def _band(bounds: list[float], u: float) -> int:
    """The band of cumulative ``bounds`` that the point ``u`` ∈ [0, 1) falls in."""
    return min(bisect.bisect_right(bounds, u * bounds[-1]), len(bounds) - 1)


def _widths(bounds: list[float]) -> list[float]:
    return [b - a for a, b in zip([0.0, *bounds[:-1]], bounds, strict=True)]
