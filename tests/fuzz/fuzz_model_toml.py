"""Fuzz target: ``model.toml`` (``scorewire.formats.model_toml``).

Oracle, for any bytes: ``parse_model_config`` returns a ModelConfig or raises
ModelLoadError — one line that starts with the file's name — and nothing else;
a config's version policy selects among versions and its batching answers for
both backends without raising. Nothing hangs (``-timeout``) or grows past
``-rss_limit_mb``.
"""

from __future__ import annotations

try:
    from . import harness
except ImportError:  # run as a script
    import harness  # type: ignore[no-redef]

with harness.instrumented(__name__):
    from scorewire.errors import ModelLoadError
    from scorewire.formats.model_toml import parse_model_config

SOURCE = "models/m/model.toml"


def one_input(data: bytes) -> None:
    try:
        config = parse_model_config(data, source=SOURCE)
    except ModelLoadError as exc:
        assert exc.message.startswith(SOURCE + ": "), exc.message
        assert "\n" not in exc.message and len(exc.message) < 500, exc.message
        return
    selected = config.version_policy.select([1, 2, 3, 10])
    assert set(selected) <= {1, 2, 3, 10}
    assert config.batching.enabled_for("native") in (True, False)
    assert config.batching.enabled_for("onnxruntime") in (True, False)


if __name__ == "__main__":
    harness.main("model_toml", one_input)
