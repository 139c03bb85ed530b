"""Generate the Python gRPC stubs from proto/ into src/scorewire/grpc/_gen/.

    python proto/generate.py [OUT_DIR]

Run by `make proto`; tests/test_generated.py re-runs it into a temporary folder
and fails when the committed stubs differ. Use the grpcio-tools release pinned in
pyproject.toml: its gencode must import on protobuf 6 (tritonclient's pin) and 7.

protoc writes imports as they are in the .proto tree (``from scorewire.v1 import``);
they are rewritten to the package-relative location of the stubs.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "src" / "scorewire" / "grpc" / "_gen"
FILES = ["scorewire/v1/scorewire.proto", "inference/model_config.proto", "inference/grpc_service.proto"]
PREFIX = "scorewire.grpc._gen"


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *FILES,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in sorted([*out.rglob("*.py"), *out.rglob("*.pyi")]):
        text = path.read_text()
        fixed = re.sub(r"^from (scorewire\.v1|inference) import", rf"from {PREFIX}.\1 import", text, flags=re.M)
        if fixed != text:
            path.write_text(fixed)
    for d in [out, *[p for p in out.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
