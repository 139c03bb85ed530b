"""Fuzz target: ``model.pmml`` (``scorewire.formats.pmml``, read with defusedxml) and
the native model the loader makes of it.

Oracle, for any bytes: ``parse_pmml`` returns a LinearSpec or raises
ModelLoadError — one line that starts with the file's name — and nothing else; a
spec becomes a model that scores a few rows as its signature says (see
fuzz_model_json). Nothing hangs (``-timeout``) or grows past ``-rss_limit_mb``:
no entity expansion, no external reference, no allocation the document declares
beyond the size limit.
"""

from __future__ import annotations

try:
    from . import harness
    from .fuzz_model_json import score
except ImportError:  # run as a script
    import harness  # type: ignore[no-redef]
    from fuzz_model_json import score  # type: ignore[no-redef]

with harness.instrumented(__name__):
    from scorewire.errors import ModelLoadError
    from scorewire.formats.files import ModelFiles
    from scorewire.formats.pmml import parse_pmml

SOURCE = "models/m/1/model.pmml"
#: small, so that the fuzzer meets the limits on the inputs it makes
FILES = ModelFiles(max_bytes=1 << 20)


def one_input(data: bytes) -> None:
    try:
        spec = parse_pmml(data, source=SOURCE, files=FILES)
    except ModelLoadError as exc:
        assert exc.message.startswith(SOURCE + ": "), exc.message
        assert "\n" not in exc.message and len(exc.message) < 800, exc.message
        return
    score(spec)


if __name__ == "__main__":
    harness.main("pmml", one_input)
