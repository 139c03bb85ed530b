"""Helpers of the ensemble tests: member models on disk, data with a margin, and a
model that records how it is called."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from scorewire.formats.linear_json import dump_linear_json
from scorewire.formats.linear_spec import LinearSpec

#: the class labels of the classifiers below
CLASSES = ("ant", "bee", "cat")


def linear_doc(kind: str, coef, intercept, classes=None, **extra) -> dict:
    doc = {"format": "scorewire.linear", "format_version": 1, "kind": kind,
           "coefficients": np.asarray(coef, dtype=float).tolist(), "intercepts": np.asarray(intercept, dtype=float).tolist()}  # fmt: skip
    if classes is not None:
        doc["classes"] = list(classes)
    return {**doc, **extra}


def write_json_model(root: Path, name: str, doc: dict, version: int = 1) -> Path:
    """``root/name/version/model.json``."""
    vdir = root / name / str(version)
    vdir.mkdir(parents=True, exist_ok=True)
    (vdir / "model.json").write_text(json.dumps(doc))
    return vdir


def write_spec(root: Path, name: str, spec: LinearSpec, version: int = 1) -> Path:
    vdir = root / name / str(version)
    vdir.mkdir(parents=True, exist_ok=True)
    dump_linear_json(spec, vdir / "model.json")
    return vdir


def write_ensemble(root: Path, name: str, toml: str, versions=(1,)) -> Path:
    """``root/name/model.toml`` and empty version directories."""
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "model.toml").write_text(toml)
    for v in versions:
        (root / name / str(v)).mkdir(exist_ok=True)
    return root / name


def members_toml(combiner: str, members, **extra) -> str:
    """An [ensemble] section: members as names or tables ({"model": name, key: value})."""
    lines = ["[ensemble]", f'combiner = "{combiner}"'] + [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    for m in members:
        keys = dict(m) if isinstance(m, dict) else {"model": m}
        name = keys.pop("model")
        lines += ["", "[[ensemble.members]]", f'model = "{name}"'] + [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def margin_blobs(rng: np.random.Generator, n: int = 300, d: int = 6, k: int = 3, sep: float = 8.0):
    """k classes whose centres are at least ``sep`` apart, each row within 2.5 of its
    centre: data with a margin (of ``sep`` - 5), where a fitted model's labels are far
    from its ties."""
    centres = rng.normal(size=(k, d))
    gaps = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1))[np.triu_indices(k, 1)]
    centres *= sep / gaps.min()
    y = np.arange(n) % k
    noise = rng.normal(size=(n, d))
    noise *= np.minimum(1.0, 2.5 / np.linalg.norm(noise, axis=1, keepdims=True))
    return centres[y] + noise, y


def regression_data(rng: np.random.Generator, n: int = 300, d: int = 6):
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) * 10 + np.sin(X[:, 0]) * 3 + 50 + rng.normal(size=n) * 0.1
    return X, y


class Recording:
    """A model that records each predict call: (rows, outputs asked for)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.signature, self.backend, self.native_reason = inner.signature, inner.backend, inner.native_reason
        self.calls: list[tuple[int, tuple[str, ...] | None]] = []

    def output_names(self, requested):
        return self.inner.output_names(requested)

    def predict(self, X, outputs=None):
        self.calls.append((X.shape[0], None if outputs is None else tuple(outputs)))
        return self.inner.predict(X, outputs)
