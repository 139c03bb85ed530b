"""Keras models read without Keras or TensorFlow, reduced to a :class:`LinearSpec`.

Two files are read: the Keras 3 format (``.keras``: a zip holding ``config.json``,
the architecture, and ``model.weights.h5``, the weights) and the legacy HDF5 format
(``.h5``, written by Keras 2 and 3: the architecture in the ``model_config``
attribute, the weights under ``model_weights/<layer name>/``). The JSON is parsed by
the standard library, the weights are read by h5py; nothing in either file is
executed, and a layer scorewire does not know is refused, never guessed at.

A network is accepted when it computes a linear function followed by at most one
link: a ``Sequential`` model, or a ``Functional`` one that is a single chain from one
input to one output, made of::

    InputLayer                           rank-2 input (rows, features)
    Normalization   (axis -1 or None)    x' = (x - mean) / max(sqrt(variance), 1e-7)
                    (invert=True)        x' = mean + x * max(sqrt(variance), 1e-7)
    Rescaling                            x' = x * scale + offset
    Dropout, Identity, GaussianNoise,    nothing at inference
      GaussianDropout, AlphaDropout
    Dense           (activation linear)  x' = x @ kernel + bias   (any number of them)
    Dense           (activation sigmoid or softmax), or a linear Dense followed by
      Activation("sigmoid" | "softmax") or Softmax(axis=-1): the last layer that
      computes anything

Every affine step is folded into one ``coef``/``intercept`` (exactly, in float64),
and the link decides the task::

    last activation   units   ->  task / link                 classes
    linear            k           regression
    sigmoid           1           classification / logistic   0, 1
    sigmoid           k > 1       classification / sigmoid    0 .. k-1 (one
                                                              probability each)
    softmax           k > 1       classification / softmax    0 .. k-1

Anything else — a hidden non-linearity, a second input, embeddings, a quantised or
LoRA-adapted Dense, a softmax over one unit — is a ModelLoadError of one line that
says what was found and to convert the model to ONNX instead (onnxruntime serves
every other model).
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError
from .files import quoted
from .linear_spec import LinearSpec

__all__ = ["HDF5_MAGIC", "ZIP_MAGIC", "is_keras_file", "read_keras"]

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

#: what Keras's backend.epsilon() is by default: Normalization's floor on sqrt(variance)
_EPSILON = 1e-7

#: the variables a layer has, in the order the Keras 3 format numbers them
_VARIABLES = {"Dense": ("kernel", "bias"), "Normalization": ("mean", "variance", "count")}

#: layers that do nothing at inference
_PASS_THROUGH = frozenset({"Dropout", "Identity", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization"})

_ONNX_HINT = (
    "convert it to ONNX (Keras 3: model.export('model.onnx', format='onnx'); Keras 2: tf2onnx) "
    "and serve model.onnx on onnxruntime"
)


@dataclass
class _Layer:
    cls: str
    name: str
    config: Mapping[str, Any]
    inbound: list[str]
    weights: dict[str, np.ndarray] = field(default_factory=dict)


def is_keras_file(head: bytes) -> bool:
    """Whether a file's first bytes are those of a file :func:`read_keras` reads."""
    return head.startswith(ZIP_MAGIC) or head.startswith(HDF5_MAGIC)


def read_keras(path: str | os.PathLike[str]) -> LinearSpec:
    """The LinearSpec of a saved Keras model (``.keras`` or legacy ``.h5``)."""
    label = Path(path).name
    with open(path, "rb") as fh:
        head = fh.read(8)
    try:
        if head.startswith(ZIP_MAGIC):
            model_config, layers = _read_zip(path, label)
        elif head.startswith(HDF5_MAGIC):
            model_config, layers = _read_h5(path, label)
        else:
            raise ModelLoadError(f"{label}: not a Keras model file (a .keras zip or an HDF5 .h5)")
        return _linear_spec(model_config, layers, label)
    except ModelLoadError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OSError, zipfile.BadZipFile) as exc:
        # a file that is not what its first bytes promise, or a config we cannot follow
        raise ModelLoadError(f"{label}: not a Keras model scorewire can read ({type(exc).__name__})") from None


# --------------------------------------------------------------------- files
def _read_zip(path: str | os.PathLike[str], label: str) -> tuple[dict[str, Any], list[_Layer]]:
    import h5py

    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        if "config.json" not in names or "model.weights.h5" not in names:
            raise ModelLoadError(f"{label}: a zip file, but not a Keras model (no config.json and model.weights.h5)")
        config = json.loads(zf.read("config.json"))
        weights_bytes = zf.read("model.weights.h5")
    layers = _layers_of(config, label)
    with h5py.File(io.BytesIO(weights_bytes), "r") as h5:
        stored = h5.get("layers")
        groups = _groups_by_layer_name(stored, layers) if stored is not None else {}
        for layer in layers:
            group = groups.get(layer.name)
            roles = _VARIABLES.get(layer.cls)
            if group is None or "vars" not in group or roles is None:
                continue  # a layer with no weights, or one the folding refuses
            variables = group["vars"]
            for key in variables:
                i = int(key)
                if i >= len(roles):
                    raise ModelLoadError(f"{label}: layer {quoted(layer.name)} ({layer.cls}) has an unexpected variable {i}")
                layer.weights[roles[i]] = np.asarray(variables[key][()], dtype=np.float64)
    return config, layers


def _groups_by_layer_name(stored: Any, layers: list[_Layer]) -> dict[str, Any]:
    """The weight group of each layer. Keras 3 names a layer's group after its class
    (``dense``, ``dense_1``, … in the model's layer order) and keeps the layer's
    own name in the group's ``vars`` attributes; both agree, the name is preferred."""
    by_name: dict[str, Any] = {}
    for key in stored:
        vars_group = stored[key].get("vars")
        name = vars_group.attrs.get("name") if vars_group is not None else None
        if isinstance(name, bytes):
            name = name.decode()
        if isinstance(name, str):
            by_name[name] = stored[key]
    if by_name:
        return by_name
    counts: dict[str, int] = {}
    for layer in layers:  # older writers: the class's snake_case name, counted
        base = re.sub(r"(?<!^)(?=[A-Z])", "_", layer.cls).lower()
        n = counts.get(base, 0)
        counts[base] = n + 1
        key = base if n == 0 else f"{base}_{n}"
        if key in stored:
            by_name[layer.name] = stored[key]
    return by_name


def _read_h5(path: str | os.PathLike[str], label: str) -> tuple[dict[str, Any], list[_Layer]]:
    import h5py

    with h5py.File(path, "r") as h5:
        raw = h5.attrs.get("model_config")
        if raw is None:
            raise ModelLoadError(f"{label}: an HDF5 file without a model config (weights only?): save the whole model")
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        layers = _layers_of(config, label)
        stored = h5.get("model_weights", h5)
        for layer in layers:
            group = stored.get(layer.name)
            if group is None:
                continue
            for weight_name in group.attrs.get("weight_names", ()):
                weight_name = weight_name.decode() if isinstance(weight_name, bytes) else str(weight_name)
                role = weight_name.rsplit("/", 1)[-1].split(":", 1)[0]  # "dense/kernel:0" → kernel
                layer.weights[role] = np.asarray(group[weight_name][()], dtype=np.float64)
    return config, layers


# ------------------------------------------------------------- architecture
def _layers_of(config: Mapping[str, Any], label: str) -> list[_Layer]:
    """The layers the model computes, in order, from the input to the output."""
    cls = config.get("class_name")
    body = config.get("config") or {}
    raw_layers = body.get("layers") if isinstance(body, Mapping) else None
    if cls not in ("Sequential", "Functional", "Model") or not isinstance(raw_layers, list):
        raise ModelLoadError(f"{label}: a Keras {quoted(cls)}, not a Sequential or Functional model; {_ONNX_HINT}")
    layers = [
        _Layer(
            cls=str(raw.get("class_name")),
            name=str(raw.get("name") or raw.get("config", {}).get("name")),
            config=raw.get("config") or {},
            inbound=_inbound_names(raw.get("inbound_nodes") or [], label),
        )
        for raw in raw_layers
    ]
    if cls == "Sequential":
        return layers
    inputs, outputs = body.get("input_layers") or [], body.get("output_layers") or []
    if _count_tensors(inputs) != 1 or _count_tensors(outputs) != 1:
        raise ModelLoadError(f"{label}: a model with several inputs or outputs is not linear; {_ONNX_HINT}")
    by_name = {layer.name: layer for layer in layers}
    chain: list[_Layer] = []
    name = _first_name(outputs)
    while True:  # from the output back to the input: a single chain
        layer = by_name.get(name)
        if layer is None or layer in chain:
            raise ModelLoadError(f"{label}: the model's graph is not a chain of layers; {_ONNX_HINT}")
        chain.append(layer)
        if not layer.inbound:
            break
        name = layer.inbound[0]
    return chain[::-1]


def _count_tensors(spec: Any) -> int:
    # Keras 3: ["name", 0, 0] for one, [["a", 0, 0], ["b", 0, 0]] for several
    if isinstance(spec, list) and spec and isinstance(spec[0], str):
        return 1
    return len(spec) if isinstance(spec, list) else 0


def _first_name(spec: list[Any]) -> str:
    return str(spec[0] if isinstance(spec[0], str) else spec[0][0])


def _inbound_names(nodes: list[Any], label: str) -> list[str]:
    """The layers feeding a layer of a Functional model (none for an input)."""
    if not nodes:
        return []
    if len(nodes) != 1:
        raise ModelLoadError(f"{label}: a layer called more than once (shared layers) is not a chain; {_ONNX_HINT}")
    node = nodes[0]
    if isinstance(node, Mapping):  # Keras 3: {"args": [tensor], "kwargs": {...}}
        args = node.get("args") or []
        tensors = [a for a in args if isinstance(a, Mapping)]
        lists = [a for a in args if isinstance(a, list)]
        if lists or len(tensors) != 1:
            raise ModelLoadError(f"{label}: a layer with several inputs is not linear; {_ONNX_HINT}")
        return [str(tensors[0]["config"]["keras_history"][0])]
    if len(node) != 1:  # Keras 2: [["name", 0, 0, {}], ...]
        raise ModelLoadError(f"{label}: a layer with several inputs is not linear; {_ONNX_HINT}")
    return [str(node[0][0])]


# ------------------------------------------------------------------ folding
def _activation(value: Any) -> str:
    if value is None:
        return "linear"
    if isinstance(value, Mapping):  # {"class_name": "function", "config": "sigmoid", ...}
        inner = value.get("config")
        value = inner if isinstance(inner, str) else value.get("class_name")
    return str(value)


def _vector(value: Any, d: int, what: str, label: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size not in (1, d):
        raise ModelLoadError(f"{label}: {what} has {arr.size} values for {d} features")
    return np.broadcast_to(arr, (d,)).astype(np.float64)


def _input_width(layers: list[_Layer], config: Mapping[str, Any], label: str) -> tuple[int | None, str]:
    """The feature count and dtype the model declares (None: read from the first Dense)."""
    body = config.get("config") or {}
    shape = body.get("build_input_shape")
    dtype = "float32"
    for layer in layers:
        if layer.cls == "InputLayer":
            shape = layer.config.get("batch_shape") or layer.config.get("batch_input_shape") or shape
            dtype = str(layer.config.get("dtype") or dtype)
            break
        declared = layer.config.get("batch_input_shape") or layer.config.get("batch_shape")
        if declared:  # Keras 2's Sequential: on the first layer
            shape = declared
            break
    if shape is None:
        return None, dtype
    if not isinstance(shape, list) or len(shape) != 2 or not isinstance(shape[1], int):
        raise ModelLoadError(f"{label}: an input of shape {shape} is not (rows, features); {_ONNX_HINT}")
    return int(shape[1]), dtype


def _linear_spec(config: Mapping[str, Any], layers: list[_Layer], label: str) -> LinearSpec:
    d, dtype = _input_width(layers, config, label)
    if d is None:
        dense = next((layer for layer in layers if layer.cls == "Dense"), None)
        if dense is None or "kernel" not in dense.weights:
            raise ModelLoadError(f"{label}: no Dense layer: not a linear model scorewire can serve; {_ONNX_HINT}")
        d = int(dense.weights["kernel"].shape[0])
    coef = np.eye(d)  # the input so far is x @ coef + intercept
    intercept = np.zeros(d)
    link = None  # the last activation, once one that is not linear was applied
    seen_dense = False

    def refuse(layer: _Layer, why: str) -> ModelLoadError:
        return ModelLoadError(f"{label}: layer {quoted(layer.name)} ({layer.cls}) {why}: not a linear model; {_ONNX_HINT}")

    for layer in layers:
        cfg = layer.config
        if layer.cls == "InputLayer" or layer.cls in _PASS_THROUGH:
            continue
        if link is not None:
            raise refuse(layer, f"comes after the {link} activation")
        if layer.cls == "Normalization":
            axis = cfg.get("axis", -1)
            if axis not in (-1, 1, [-1], [1], None, (-1,), (1,)):
                raise refuse(layer, f"normalises along axis {axis}")
            mean = cfg.get("mean") if cfg.get("mean") is not None else layer.weights.get("mean")
            variance = cfg.get("variance") if cfg.get("variance") is not None else layer.weights.get("variance")
            if mean is None or variance is None:
                raise refuse(layer, "has no mean and variance (never adapted)")
            std = np.maximum(np.sqrt(_vector(variance, coef.shape[1], "the variance", label)), _EPSILON)
            mean_v = _vector(mean, coef.shape[1], "the mean", label)
            if cfg.get("invert"):
                coef, intercept = coef * std, intercept * std + mean_v
            else:
                coef, intercept = coef / std, (intercept - mean_v) / std
        elif layer.cls == "Rescaling":
            scale = _vector(cfg.get("scale", 1.0), coef.shape[1], "the scale", label)
            offset = _vector(cfg.get("offset", 0.0), coef.shape[1], "the offset", label)
            coef, intercept = coef * scale, intercept * scale + offset
        elif layer.cls == "Dense":
            if cfg.get("lora_rank") or cfg.get("quantization_config") or cfg.get("dtype") == "int8":
                raise refuse(layer, "is quantised or LoRA-adapted")
            kernel = layer.weights.get("kernel")
            if kernel is None or kernel.ndim != 2 or kernel.shape[0] != coef.shape[1]:
                raise refuse(layer, "has no kernel matching its input")
            bias = layer.weights.get("bias") if cfg.get("use_bias", True) else None
            units = kernel.shape[1]
            bias_v = np.zeros(units) if bias is None else _vector(bias, units, "the bias", label)
            coef, intercept = coef @ kernel, intercept @ kernel + bias_v
            seen_dense = True
            act = _activation(cfg.get("activation"))
            if act != "linear":
                link = act
        elif layer.cls == "Activation":
            act = _activation(cfg.get("activation"))
            if act != "linear":
                link = act
        elif layer.cls == "Softmax":
            if cfg.get("axis", -1) not in (-1, 1, [-1], [1]):
                raise refuse(layer, f"takes the softmax along axis {cfg.get('axis')}")
            link = "softmax"
        else:
            raise refuse(layer, "is not one scorewire folds")
        if link is not None and link not in ("sigmoid", "softmax"):
            raise refuse(layer, f"applies the {quoted(link)} activation")
    if not seen_dense:
        raise ModelLoadError(f"{label}: no Dense layer: not a model scorewire can serve; {_ONNX_HINT}")
    k = coef.shape[1]
    spec_dtype = "float64" if dtype == "float64" else "float32"
    common = {"coef": coef.T, "intercept": intercept, "dtype": spec_dtype}
    if link is None:
        return LinearSpec(task="regression", link="identity", **common)  # type: ignore[arg-type]
    if link == "softmax" and k == 1:
        raise ModelLoadError(f"{label}: a softmax over one unit is always 1: not a classifier; use sigmoid")
    if link == "sigmoid" and k == 1:
        return LinearSpec(task="classification", link="logistic", classes=(0, 1), **common)  # type: ignore[arg-type]
    return LinearSpec(task="classification", link=link, classes=tuple(range(k)), **common)  # type: ignore[arg-type]
