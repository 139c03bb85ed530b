"""The fuzz targets in the test suite: every corpus file (seeds, and the inputs the
fuzzers found, kept as regressions) replayed through its target in-process, and
each target run for a short, seeded, fixed number of inputs under atheris in a
subprocess (``make fuzz`` runs them for longer)."""

from __future__ import annotations

import importlib
import platform
import subprocess
import sys

import pytest

from .harness import CORPUS, HERE, seeds

TARGETS = sorted(p.stem.removeprefix("fuzz_") for p in HERE.glob("fuzz_*.py"))
#: inputs each target tries in the smoke run: a few seconds each (onnx builds sessions)
RUNS = {"onnx": 300}
DEFAULT_RUNS = 2000


def test_every_target_has_a_seed_corpus():
    assert sorted(p.name for p in CORPUS.iterdir() if p.is_dir()) == TARGETS
    for name in TARGETS:
        assert any(seeds(name)), name


@pytest.mark.parametrize("name", TARGETS)
def test_corpus_replays(name):
    """Each corpus file, through its target as a plain function: no failure."""
    target = importlib.import_module(f"tests.fuzz.fuzz_{name}")
    for path in seeds(name):
        target.one_input(path.read_bytes())


@pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64", reason="atheris ships wheels for Linux x86-64 only"
)
@pytest.mark.parametrize("name", TARGETS)
def test_fuzz_smoke(name, tmp_path):
    """A short, seeded atheris run of the target from its seed corpus: libFuzzer
    finds no failure, no input over the per-input timeout, no growth past the RSS
    limit, and finishes its runs."""
    runs = RUNS.get(name, DEFAULT_RUNS)
    work = tmp_path / "corpus"
    work.mkdir()
    command = [
        sys.executable, str(HERE / f"fuzz_{name}.py"), f"-runs={runs}", "-seed=20261203", "-timeout=60",
        "-rss_limit_mb=3072", f"-artifact_prefix={tmp_path}/", str(work), str(CORPUS / name),
    ]  # fmt: skip
    r = subprocess.run(command, capture_output=True, text=True, timeout=280, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    assert f"Done {runs} runs" in r.stderr, r.stderr[-3000:]
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
