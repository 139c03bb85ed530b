"""JSON documents written from a fuzzer's choices, for the model.json and
reference.json targets: the documents' own keys and values most of the time, so
the fuzzer spends its runs past ``json.loads``, with values at the edges (huge
integers, floats at and past the float64 range, deep nesting, long lists, wrong
types)."""

from __future__ import annotations

import json

try:
    from .harness import Choices
except ImportError:  # run from a target that runs as a script
    from harness import Choices  # type: ignore[no-redef]

NUMBERS = ["0", "1", "-1", "0.5", "1e308", "-1e308", "1e309", "1e-320", "9" * 310, "-" + "9" * 400,
           "9" * 4301, "2", "3", "4", "100", "1.0", "9223372036854775807", "9223372036854775808",
           "-9223372036854775809", "NaN", "Infinity", "1E400"]  # fmt: skip
WORDS = ["", "a", "b", "input", "value", "label", "probabilities", "decision", "linear", "logistic",
         "multinomial", "ovr", "sigmoid", "scores", "float32", "float64", "scorewire.linear",
         "scorewire.reference", "\u00e9", "\ud800", "__class__", "py/object"]  # fmt: skip


def value(c: Choices, keys: list[str], depth: int = 0) -> str:
    """One JSON value, as text."""
    kind = c.below(10)
    if kind <= 2 or depth > 6:
        return c.pick(NUMBERS)  # type: ignore[no-any-return]
    if kind == 3:
        return json.dumps(c.pick(WORDS))
    if kind == 4:
        return c.pick(["true", "false", "null"])  # type: ignore[no-any-return]
    if kind == 5:  # a long flat list of numbers
        n = c.pick([0, 1, 2, 3, 10, 300, 5000])
        item = c.pick(NUMBERS)
        return "[" + ",".join([item] * n) + "]"
    if kind == 6:
        return "[" * 50 + "]" * 50 if c.chance(4) else "[" * 3000 + "]" * 3000
    if kind <= 8:
        return "[" + ",".join(value(c, keys, depth + 1) for _ in range(c.below(5))) + "]"
    return obj(c, keys, depth + 1)


def obj(c: Choices, keys: list[str], depth: int = 0) -> str:
    items = []
    for _ in range(c.below(12)):
        key = c.pick(keys) if not c.chance(10) else c.pick(WORDS)
        items.append(f"{json.dumps(key)}: {value(c, keys, depth)}")
    return "{" + ", ".join(items) + "}"


def document(c: Choices, base: dict, keys: list[str]) -> bytes:  # type: ignore[type-arg]
    """``base`` (a valid document) with some of its fields replaced by generated
    values, or added, or left out."""
    doc = {k: json.dumps(v) for k, v in base.items()}
    for _ in range(c.below(4)):
        key = c.pick(keys)
        if c.chance(5):
            doc.pop(key, None)
        else:
            doc[key] = value(c, keys)
    return ("{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in doc.items()) + "}").encode("utf-8", "surrogatepass")
