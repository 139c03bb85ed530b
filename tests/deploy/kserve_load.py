"""Load KServe objects into the KServe SDK's models, refusing any field they lack.

Run by tests/deploy/test_kserve.py with the Python of the SDK's own virtual
environment (``make kserve-sdk``): it reads YAML documents on stdin and prints, as
JSON, for each document its kind and the problems found (empty when it loads).

The SDK's models are OpenAPI-generated classes (``openapi_types``: attribute → type,
``attribute_map``: attribute → JSON key) that themselves ignore unknown keys; here
every key must name an attribute, recursively (Kubernetes types come from the
``kubernetes`` client the SDK uses), and the object must serialise back to every
value of the input.
"""

from __future__ import annotations

import json
import re
import sys
from importlib import metadata
from typing import Any

import kserve
import kubernetes.client
import yaml

CLASSES = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}
SCALARS = {"str": str, "int": int, "bool": bool, "float": (int, float)}


def model_class(name: str) -> type:
    for module in (kserve, kserve.models, kubernetes.client, kubernetes.client.models):
        if hasattr(module, name):
            return getattr(module, name)
    raise LookupError(f"no model class {name}")


def build(value: Any, type_name: str, path: str, problems: list[str]) -> Any:
    if value is None:
        return None
    m = re.fullmatch(r"(?:list|List)\[(.+)\]", type_name)
    if m:
        if not isinstance(value, list):
            problems.append(f"{path}: a list expected")
            return value
        return [build(v, m.group(1), f"{path}[{i}]", problems) for i, v in enumerate(value)]
    m = re.fullmatch(r"dict\(str, (.+)\)", type_name) or re.fullmatch(r"Dict\[str, (.+)\]", type_name)
    if m:
        if not isinstance(value, dict):
            problems.append(f"{path}: a map expected")
            return value
        return {k: build(v, m.group(1), f"{path}.{k}", problems) for k, v in value.items()}
    if type_name in SCALARS:
        if not isinstance(value, SCALARS[type_name]) or (type_name != "bool" and isinstance(value, bool)):
            problems.append(f"{path}: {type_name} expected, got {value!r}")
        return value
    if type_name in ("object", "datetime", "date"):
        return value
    cls = model_class(type_name)
    if not isinstance(value, dict):
        problems.append(f"{path}: an object ({type_name}) expected")
        return value
    by_key = {key: attr for attr, key in cls.attribute_map.items()}
    kwargs = {}
    for key, item in value.items():
        if key not in by_key:
            problems.append(f"{path}.{key}: unknown field of {type_name}")
            continue
        attr = by_key[key]
        kwargs[attr] = build(item, cls.openapi_types[attr], f"{path}.{key}", problems)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        problems.append(f"{path}: {type_name}: {err}")
        return None


def serialise(value: Any) -> Any:
    """A model object back to its JSON form (camelCase keys, unset fields left out)."""
    if isinstance(value, list):
        return [serialise(v) for v in value]
    if isinstance(value, dict):
        return {k: serialise(v) for k, v in value.items()}
    if hasattr(value, "openapi_types"):
        return {
            value.attribute_map[attr]: serialise(getattr(value, attr))
            for attr in value.openapi_types
            if getattr(value, attr) is not None
        }
    return value


def carried(doc: Any, out: Any, path: str, problems: list[str]) -> None:
    """Every value of ``doc`` is in ``out`` (the SDK may add defaults of its own)."""
    if isinstance(doc, dict) and isinstance(out, dict):
        for key, item in doc.items():
            if key not in out:
                problems.append(f"{path}.{key}: lost by the SDK's object")
            else:
                carried(item, out[key], f"{path}.{key}", problems)
    elif isinstance(doc, list) and isinstance(out, list) and len(doc) == len(out):
        for i, (a, b) in enumerate(zip(doc, out, strict=True)):
            carried(a, b, f"{path}[{i}]", problems)
    elif doc != out:
        problems.append(f"{path}: {doc!r} became {out!r}")


def main() -> None:
    results = []
    for doc in yaml.safe_load_all(sys.stdin):
        if not doc:
            continue
        key = (doc.get("apiVersion"), doc.get("kind"))
        problems: list[str] = []
        if key not in CLASSES:
            problems.append(f"not a KServe kind this loader knows: {key}")
        else:
            obj = build(doc, CLASSES[key], doc["kind"], problems)
            if not problems:
                carried(doc, serialise(obj), doc["kind"], problems)
        results.append({"kind": doc.get("kind"), "name": doc.get("metadata", {}).get("name"), "class": CLASSES.get(key), "problems": problems})
    json.dump({"kserve": metadata.version("kserve"), "objects": results}, sys.stdout)


if __name__ == "__main__":
    main()
