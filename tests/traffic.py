"""Helpers for the traffic and polling tests: models whose every answer says which
file it was read from, and the README's examples."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FEATURES = 3


def linear_json(value: float, features: int = FEATURES) -> str:
    """A regression whose ``value`` is ``value`` for every row: a model whose
    answer names the artifact that gave it."""
    return json.dumps({
        "format": "scorewire.linear", "format_version": 1, "kind": "linear",
        "coefficients": [[0.0] * features], "intercepts": [float(value)],
    })  # fmt: skip


def classifier_json(coefficients: list[list[float]], intercepts: list[float], kind: str = "multinomial") -> str:
    """A classifier over FEATURES features (classes 0..k-1)."""
    k = len(coefficients) if kind != "logistic" else 2
    return json.dumps({
        "format": "scorewire.linear", "format_version": 1, "kind": kind,
        "coefficients": coefficients, "intercepts": intercepts, "classes": list(range(k)),
    })  # fmt: skip


def publish(path: Path, text: str) -> None:
    """Write a file whole: beside its place under a name starting with a dot, then
    renamed over it (the README's atomic publish)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def publish_version(model_dir: Path, version: int, text: str) -> None:
    """A version directory made beside the others, then renamed into place."""
    tmp = model_dir / f".{version}.tmp"
    tmp.mkdir(parents=True)
    (tmp / "model.json").write_text(text)
    os.rename(tmp, model_dir / str(version))


def readme_block(marker: str, lang: str) -> str:
    """The README's fenced block between ``<!-- marker -->`` and ``<!-- /marker -->``."""
    text = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- {marker} -->\n```{lang}\n(.*?)```\n<!-- /{marker} -->", text, re.S)
    assert block, f"the README lost its {marker} block"
    return block.group(1)
