"""Generated files are current: the gRPC stubs (proto/generate.py) and the demo
model repository (examples/make_demo_repo.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import scorewire

from .parity import assert_labels_equal

ROOT = Path(__file__).resolve().parent.parent
STUBS = ROOT / "src" / "scorewire" / "grpc" / "_gen"


def test_grpc_stubs_are_current(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), str(tmp_path)], check=True)
    fresh = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    committed = {p.relative_to(STUBS): p.read_text() for p in STUBS.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert sorted(fresh) == sorted(committed), "run `make proto`"
    stale = [str(p) for p in fresh if fresh[p] != committed[p]]
    assert not stale, f"stale stubs {stale}: run `make proto`"


def test_stubs_import_in_a_fresh_interpreter():
    """Importable on the installed protobuf runtime (gencode version check passes)."""
    code = (
        "import google.protobuf, scorewire.grpc._gen.scorewire.v1.scorewire_pb2_grpc, "
        "scorewire.grpc._gen.inference.grpc_service_pb2_grpc; print(google.protobuf.__version__)"
    )
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip()


def _close(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        # retraining may differ in the last bits across BLAS builds
        return bool(np.isclose(a, b, rtol=1e-7, atol=1e-9))
    return bool(a == b)


def test_demo_repository_is_current(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_demo_repo.py"), str(tmp_path)], check=True)
    shipped = scorewire.demo_repository()
    fresh_files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    shipped_files = sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert fresh_files == shipped_files, "run `make demo`"
    for rel in fresh_files:
        new, old = tmp_path / rel, shipped / rel
        if rel.suffix == ".json":
            assert _close(json.loads(new.read_text()), json.loads(old.read_text())), f"{rel} is stale: run `make demo`"
        elif rel.suffix == ".onnx":
            X = np.random.default_rng(0).random((200, 4)).astype(np.float32) * 8
            a = scorewire.load_model(new).predict(X)
            b = scorewire.load_model(old).predict(X)
            np.testing.assert_allclose(a["probabilities"], b["probabilities"], rtol=1e-6)
            # the same where those last bits cannot change the best class
            assert_labels_equal(a["label"], b["label"], b["probabilities"], 1e-6)
        else:
            assert new.read_text() == old.read_text(), f"{rel} is stale: run `make demo`"


def test_demo_repository_loads_completely():
    repo = scorewire.ModelRepository(scorewire.demo_repository())
    repo.load_all()
    backends = {e.name: e.versions[1].model.backend for e in repo.entries()}
    assert backends == {
        "breast-cancer": "native",
        "diabetes": "native",
        "iris-forest": "onnxruntime",
        "wine": "native",
    }


#: protobuf 7, installed beside the test environment by `make test`'s setup
PROTOBUF_7 = ROOT / ".venv" / "protobuf7"


def test_stubs_import_on_protobuf_7():
    """The test environment runs protobuf 6 (tritonclient pins < 7); the stubs must
    also import on protobuf 7, which a production install may resolve to."""
    assert (PROTOBUF_7 / "google" / "protobuf").is_dir(), f"{PROTOBUF_7} is missing: `make test` installs it"
    code = (
        "import google.protobuf as p; assert p.__version__.startswith('7.'), p.__version__; "
        "from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2, scorewire_pb2_grpc; "
        "from scorewire.grpc._gen.inference import grpc_service_pb2, grpc_service_pb2_grpc; "
        "print(p.__version__, scorewire_pb2.Tensor(raw=b'x').SerializeToString())"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROTOBUF_7), str(ROOT / "src")])}
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("7.")
