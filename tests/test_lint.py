"""`make lint` as a test: ruff and mypy stay clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_ruff():
    r = subprocess.run([str(BIN / "ruff"), "check", "src", "tests", "bench", "examples"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy():
    r = subprocess.run([str(BIN / "mypy")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


#: copies of third-party files, kept as they are (the standard health.proto)
VENDORED = ("tests/clients/ts/proto/",)


def test_documents_cited_are_in_the_repository():
    """Every `*.md` a file of the project names (outside a URL) is a file of the
    project: its code, tests and docs never send a reader to a document they do
    not have."""
    import re

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    missing = []
    for rel in tracked:
        if rel.startswith(VENDORED):
            continue
        try:
            text = (ROOT / rel).read_text()
        except (UnicodeDecodeError, OSError):
            continue
        text = re.sub(r"[a-z]+://\S+", "", text)
        for cited in set(re.findall(r"[\w./-]*\w\.md\b", text)):
            if not any(t == cited or t.endswith("/" + cited.lstrip("./")) for t in tracked):
                missing.append(f"{rel}: {cited}")
    assert not missing, missing
