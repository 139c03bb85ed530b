"""Fuzz target: ``model.json`` (``scorewire.formats.linear_json``) and the native model
the loader makes of it.

Oracle, for any bytes: ``parse_linear_json`` returns a LinearSpec or raises
ModelLoadError — one line that starts with the file's name — and nothing else;
a spec becomes a ``NativeLinearModel`` whose signature can be read and which
scores a few rows into the outputs its signature lists (the explanations when named,
the others by default), or the load fails with a ModelLoadError. Nothing allocates more than the size limit says (libFuzzer's
``-rss_limit_mb``), nothing hangs (``-timeout``).

The first byte chooses how the rest is read: as the file itself, or as the choices
that write one (see ``documents.py``).
"""

from __future__ import annotations

try:
    from . import documents, harness
except ImportError:  # run as a script
    import documents  # type: ignore[no-redef]
    import harness  # type: ignore[no-redef]

with harness.instrumented(__name__):
    import numpy as np

    from scorewire.backends.native import NativeLinearModel
    from scorewire.errors import ModelLoadError
    from scorewire.formats.linear_json import parse_linear_json
    from scorewire.types import EXPLANATIONS

SOURCE = "models/m/1/model.json"
BASE = {
    "format": "scorewire.linear", "format_version": 1, "kind": "logistic",
    "coefficients": [[0.5, -1.25, 2.0]], "intercepts": [0.1], "classes": [0, 1],
    "feature_names": ["age", "income", "debt"], "dtype": "float64",
}  # fmt: skip
KEYS = [*BASE, "outputs", "input_name"]


def check_error(exc: ModelLoadError) -> None:
    assert exc.message.startswith(SOURCE + ": "), exc.message
    assert "\n" not in exc.message and len(exc.message) < 500, exc.message


def score(spec) -> None:  # type: ignore[no-untyped-def]
    """The loader's model of a spec scores a few rows as its signature says."""
    try:
        model = NativeLinearModel(spec, n_threads=1)
        signature = model.signature
    except ModelLoadError as exc:
        check_error(exc)
        return
    if spec.n_features > 100_000:
        return
    X = np.linspace(-1, 1, 3 * spec.n_features).reshape(3, spec.n_features).astype(spec.dtype)
    out = model.predict(X, signature.output_names)  # the explanations are given only by name
    assert set(out) == {o.name for o in signature.outputs}
    assert set(model.predict(X)) == set(signature.output_names) - set(EXPLANATIONS)
    for o in signature.outputs:
        got = out[o.name].shape
        # -1: the rows; any other dimension is as the signature states it (the base value's)
        assert len(got) == len(o.shape) and got == tuple(3 if s == -1 else s for s in o.shape), (o, got)


def document(data: bytes) -> bytes:
    if not data or data[0] & 1 == 0:
        return data[1:]
    return documents.document(harness.Choices(data[1:]), BASE, KEYS)


def one_input(data: bytes) -> None:
    try:
        spec = parse_linear_json(document(data), source=SOURCE)
    except ModelLoadError as exc:
        check_error(exc)
        return
    score(spec)


if __name__ == "__main__":
    harness.main("model_json", one_input)
