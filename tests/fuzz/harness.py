"""What every fuzz target here shares: how it runs under atheris, its seed corpus,
and the oracle's rule for exceptions.

A target is a module ``fuzz_<name>.py`` beside this one with a function
``one_input(data: bytes) -> None`` that raises (or crashes, or hangs, or grows the
process past libFuzzer's ``-rss_limit_mb``) exactly when scorewire misbehaves on
``data``. Run as a script, it fuzzes that function with libFuzzer's flags::

    python tests/fuzz/fuzz_model_json.py -max_total_time=60 -timeout=10

Without a corpus directory on the command line it reads its seed corpus
(``corpus/<name>/``, kept in the repository) and writes what it finds to
``.fuzz/<name>/`` at the repository's top (not kept); crashes go to
``.fuzz/artifacts/``. Imported (the tests do), it does nothing but define
``one_input``: atheris is imported, and scorewire instrumented, only by
:func:`main` and :func:`instrumented` when the target runs as a fuzzer.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORPUS = HERE / "corpus"
WORK = ROOT / ".fuzz"

#: the modules whose Python code guides the fuzzer (coverage and comparisons)
INSTRUMENTED = ["scorewire", "json", "tomllib", "defusedxml", "xml.etree", "onnx", "google.protobuf"]


def instrumented(module_name: str) -> contextlib.AbstractContextManager[object]:
    """Wrap a target's imports: instrumented for atheris when the target runs as a
    fuzzer (``module_name`` is ``"__main__"``), plain imports otherwise."""
    if module_name != "__main__":
        return contextlib.nullcontext()
    import atheris

    return atheris.instrument_imports(include=INSTRUMENTED)  # type: ignore[no-any-return]


def main(name: str, one_input: Callable[[bytes], None]) -> None:
    """Fuzz ``one_input`` with the command line's libFuzzer flags (and corpus
    directories; by default ``.fuzz/<name>/`` then the seed corpus)."""
    import atheris

    argv = list(sys.argv)
    if not any(not arg.startswith("-") for arg in argv[1:]):
        work = WORK / name
        work.mkdir(parents=True, exist_ok=True)
        argv.append(str(work))
        argv.append(str(CORPUS / name))
    if not any(arg.startswith("-artifact_prefix=") for arg in argv[1:]):
        (WORK / "artifacts").mkdir(parents=True, exist_ok=True)
        argv.insert(1, f"-artifact_prefix={WORK / 'artifacts'}/{name}-")
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def seeds(name: str) -> Iterator[Path]:
    """The files of a target's corpus in the repository (seeds and regressions)."""
    yield from sorted(p for p in (CORPUS / name).iterdir() if p.is_file())


class Choices:
    """Reads choices from a fuzzer's input, front to back; zeros once it runs out
    (so every input is a valid sequence of choices). The same input always makes
    the same choices, with or without atheris."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def int(self, n_bytes: int) -> int:
        value = 0
        for _ in range(n_bytes):
            value = value << 8 | self.byte()
        return value

    def below(self, n: int) -> int:
        """A number in [0, n)."""
        return self.int(1 if n <= 256 else 2 if n <= 65536 else 4) % n

    def chance(self, one_in: int) -> bool:
        return self.below(one_in) == 0

    def pick(self, options: list | tuple):  # type: ignore[type-arg]
        return options[self.below(len(options))]

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def rest(self) -> bytes:
        return self.take(self.left())
