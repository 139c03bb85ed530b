"""Fuzz target: ``reference.json`` (``scorewire.formats.reference``) and the drift
monitor a loaded version makes of it.

Oracle, for any bytes: ``Reference.parse`` returns a Reference or raises
ModelLoadError — one line that starts with the file's name — and nothing else; a
Reference becomes a DriftMonitor (or a ModelLoadError when its histograms would
pass the size limit, counted before they are allocated) that bins a few rows and
reports one PSI per feature. Nothing hangs (``-timeout``) or grows past
``-rss_limit_mb``.

The first byte chooses how the rest is read: as the file itself, or as the choices
that write one (see ``documents.py``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

try:
    from . import documents, harness
except ImportError:  # run as a script
    import documents  # type: ignore[no-redef]
    import harness  # type: ignore[no-redef]

with harness.instrumented(__name__):
    import numpy as np

    from scorewire.errors import ModelLoadError
    from scorewire.formats.files import ModelFiles
    from scorewire.formats.reference import Reference
    from scorewire.monitoring.drift import DriftMonitor

SOURCE = "models/m/1/reference.json"
FEATURE = {"name": "a", "count": 10, "mean": 0.5, "std": 0.1, "min": 0, "max": 1,
           "bin_edges": [0.25, 0.5, 0.75], "bin_fractions": [0.25, 0.25, 0.25, 0.25]}  # fmt: skip
BASE = {"format": "scorewire.reference", "format_version": 1, "n_rows": 10, "features": [FEATURE, FEATURE]}
KEYS = [*BASE, *FEATURE]
#: small, so that the fuzzer meets the limits on the inputs it makes
FILES = ModelFiles(max_bytes=1 << 20)


def check_error(exc: ModelLoadError) -> None:
    assert exc.message.startswith(SOURCE + ": "), exc.message
    assert "\n" not in exc.message and len(exc.message) < 500, exc.message


def document(data: bytes) -> bytes:
    if not data or data[0] & 1 == 0:
        return data[1:]
    return documents.document(harness.Choices(data[1:]), BASE, KEYS)


def one_input(data: bytes) -> None:
    try:
        reference = Reference.parse(document(data), SOURCE)
    except ModelLoadError as exc:
        check_error(exc)
        return
    d = len(reference.features)
    # the loader's way in: the file in a version directory, read with the limits
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "reference.json").write_bytes(document(data))
        try:
            monitor = DriftMonitor.from_version_dir(tmp, d, files=FILES, seed=1)
        except ModelLoadError as exc:
            assert "over the limit" in exc.message, exc.message
            return
    assert monitor is not None
    monitor.observe(np.linspace(-2, 2, 8 * d).reshape(8, d))
    assert len(monitor.snapshot().psi) == d


if __name__ == "__main__":
    harness.main("reference", one_input)
