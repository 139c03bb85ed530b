"""``model.json``: scorewire's native format for linear and logistic models.

Example (a binary logistic model over three features)::

    {
      "format": "scorewire.linear",
      "format_version": 1,
      "kind": "logistic",
      "coefficients": [[0.5, -1.25, 2.0]],
      "intercepts": [0.1],
      "classes": [0, 1],
      "feature_names": ["age", "income", "debt"],
      "dtype": "float64"
    }

Fields (the README documents them for users):

format, format_version
    ``"scorewire.linear"`` and ``1``.
kind
    ``linear`` (regression: ``value = X @ coefficients.T + intercepts``),
    ``logistic`` (binary: one coefficient row, two classes,
    ``P(classes[1]) = sigmoid(z)``), ``multinomial`` (softmax over one row per class),
    ``ovr`` (one-vs-rest: per-class sigmoids normalised to sum 1, as scikit-learn's
    SGDClassifier with log loss), ``sigmoid`` (per-class sigmoids, not normalised) or
    ``scores`` (a classifier whose "probabilities" are the raw decisions).
coefficients
    A list of rows, one per target (regression) or decision column, each with one
    weight per feature. A flat list is one row.
intercepts
    One per coefficient row (a number is accepted for one row).
classes
    Class labels in decision-column order (classifiers only): all integers or all
    strings.
feature_names
    Optional, one per feature.
dtype
    The input dtype the model declares: ``float64`` (default) or ``float32``.
outputs
    Optional map from output name to role (``value``, ``decision``,
    ``probabilities``, ``label``); default: each role under its own name.
input_name
    Optional name of the input tensor (default ``input``).
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

import numpy as np

from ..errors import ModelLoadError
from .files import DEFAULT, ModelFiles, quoted
from .linear_spec import LinearSpec, default_outputs

FORMAT = "scorewire.linear"
FORMAT_VERSION = 1

#: kind -> (task, link)
KINDS = {
    "linear": ("regression", "identity"),
    "logistic": ("classification", "logistic"),
    "multinomial": ("classification", "softmax"),
    "ovr": ("classification", "ovr"),
    "sigmoid": ("classification", "sigmoid"),
    "scores": ("classification", "identity"),
}
_KIND_OF = {v: k for k, v in KINDS.items()}

_FIELDS = {
    "format", "format_version", "kind", "coefficients", "intercepts", "classes",
    "feature_names", "dtype", "outputs", "input_name",
}  # fmt: skip


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def parse_linear_json(data: bytes | str, source: str = "model.json", files: ModelFiles = DEFAULT) -> LinearSpec:
    """Parse a model.json document; ModelLoadError naming ``source`` when invalid
    (or when its coefficients would take more than ``files.max_bytes``)."""
    try:
        doc = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ModelLoadError(f"{source}: not valid JSON ({str(exc)[:120]})") from None
    try:
        return _spec_from_doc(doc, files)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{source}: {exc.message}") from None


def load_linear_json(path: str | os.PathLike[str], files: ModelFiles = DEFAULT) -> LinearSpec:
    """Read a model.json file (see :class:`~scorewire.formats.files.ModelFiles`)."""
    return parse_linear_json(files.read_file(path), source=os.fspath(path), files=files)


def spec_from_document(doc: Any, files: ModelFiles = DEFAULT) -> LinearSpec:
    """A spec from a model.json document already parsed (a dict, e.g. a TOML table);
    ModelLoadError, not naming a file, when it is not a valid one."""
    return _spec_from_doc(doc, files)


def _spec_from_doc(doc: Any, files: ModelFiles = DEFAULT) -> LinearSpec:
    if not isinstance(doc, dict):
        raise ModelLoadError("the document must be a JSON object")
    unknown = sorted(set(doc) - _FIELDS)
    if unknown:
        raise ModelLoadError(f"unknown field(s) {', '.join(quoted(k) for k in unknown[:5])}")
    if doc.get("format") != FORMAT:
        raise ModelLoadError(f'"format" must be "{FORMAT}"')
    if doc.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(f'"format_version" must be {FORMAT_VERSION}')
    kind = doc.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ModelLoadError(f'"kind" must be one of {sorted(KINDS)}')
    task, link = KINDS[kind]
    coef = _matrix(doc.get("coefficients"), "coefficients", files)
    intercepts = doc.get("intercepts", [0.0] * coef.shape[0])
    if isinstance(intercepts, (int, float)) and not isinstance(intercepts, bool):
        intercepts = [intercepts]
    intercept = _vector(intercepts, "intercepts")
    classes = doc.get("classes")
    if task == "classification":
        if not isinstance(classes, list) or not classes:
            raise ModelLoadError('a classifier needs a non-empty "classes" list')
        ints = all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
        if not ints and not all(isinstance(c, str) for c in classes):
            raise ModelLoadError('"classes" must be all integers or all strings')
        classes = tuple(classes)
    elif classes is not None:
        raise ModelLoadError('a regression model has no "classes"')
    names = doc.get("feature_names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ModelLoadError('"feature_names" must be a list of strings')
        names = tuple(names)
    outputs = doc.get("outputs") or {}
    if not isinstance(outputs, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in outputs.items()
    ):
        raise ModelLoadError('"outputs" must map output names to roles')
    input_name = doc.get("input_name", "input")
    if not isinstance(input_name, str) or not input_name:
        raise ModelLoadError('"input_name" must be a non-empty string')
    dtype = doc.get("dtype", "float64")
    if dtype not in ("float32", "float64"):
        raise ModelLoadError('"dtype" must be "float32" or "float64"')
    return LinearSpec(
        task=task,
        link=link,
        coef=coef,
        intercept=intercept,
        classes=classes,
        feature_names=names,
        dtype=dtype,
        outputs=outputs,
        input_name=input_name,
    )


def _is_number(v: object) -> bool:
    """A finite JSON number that float64 holds (an integer past its range is not)."""
    if isinstance(v, float):
        return math.isfinite(v)
    return isinstance(v, int) and not isinstance(v, bool) and -sys.float_info.max <= v <= sys.float_info.max


def _vector(v: object, field: str) -> np.ndarray:
    if not isinstance(v, list) or not v or not all(_is_number(x) for x in v):
        raise ModelLoadError(f'"{field}" must be a non-empty list of finite numbers')
    return np.asarray(v, dtype=np.float64)


def _matrix(v: object, field: str, files: ModelFiles = DEFAULT) -> np.ndarray:
    if isinstance(v, list) and v and not isinstance(v[0], list):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(r, list) for r in v):
        raise ModelLoadError(f'"{field}" must be a list of rows of numbers')
    n = sum(len(r) for r in v)
    if 8 * n > files.max_bytes:
        raise files.too_large(f"{n} {field} would take", 8 * n)
    rows = [_vector(r, field) for r in v]
    if len({r.size for r in rows}) != 1:
        raise ModelLoadError(f'"{field}" rows must all have the same length')
    return np.vstack(rows)


def spec_to_doc(spec: LinearSpec) -> dict[str, Any]:
    """The model.json document for a spec (exact: floats round-trip through repr)."""
    kind = _KIND_OF.get((spec.task, spec.link))
    if kind is None:  # pragma: no cover - every valid (task, link) pair has a kind
        raise ModelLoadError(f"no model.json kind for {spec.task}/{spec.link}")
    doc: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "coefficients": spec.coef.tolist(),
        "intercepts": spec.intercept.tolist(),
    }
    if spec.classes is not None:
        doc["classes"] = [c.item() if isinstance(c, np.generic) else c for c in spec.classes]
    if spec.feature_names is not None:
        doc["feature_names"] = list(spec.feature_names)
    doc["dtype"] = spec.dtype
    if dict(spec.outputs) != default_outputs(spec.task):
        doc["outputs"] = dict(spec.outputs)
    if spec.input_name != "input":
        doc["input_name"] = spec.input_name
    return doc


def dump_linear_json(spec: LinearSpec, path: str | os.PathLike[str]) -> None:
    """Write a model.json file (floats written with full round-trip precision)."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(spec_to_doc(spec), fh, indent=1)
        fh.write("\n")
