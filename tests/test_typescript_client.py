"""A typed TypeScript client, generated from proto/, against a real server.

tests/clients/ts/client.ts is a Node program written only from the .proto files:
its types come from proto-loader-gen-types, its stubs from @grpc/grpc-js. It
checks health, the signature, typed and raw Predict, PredictStream (order, ids,
an error mid-stream) and NOT_FOUND itself, and prints one JSON object.

1. node and npm are on PATH (a failure, never a skip, when they are not).
2. node_modules is installed from the lockfile (by `make test`'s setup: `make
   ts-client`; the test installs nothing) and current; `npm run build` (generate
   types, tsc) every time.
3. A server starts with `scorewire serve --port 0`.
4. `node dist/client.js ADDR` exits 0 and reports no failed check.
Result: its probabilities, decisions and labels for its 3 rows equal the
in-process `load_model(...).predict(rows)` to 1e-12 relative, typed and raw alike.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest

import scorewire

from .parity import decided_rows
from .servers import ROOT, server_process

TS = ROOT / "tests" / "clients" / "ts"
#: touched after a successful `npm ci` (by `make ts-client`)
CI_STAMP = TS / "node_modules" / ".stamp-ci"
MIN_NODE = 20  # package.json engines; @types/node 20
STREAM_REQUESTS = 50


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH: the TypeScript client test needs Node.js >= {MIN_NODE} and npm "
            "(Debian: apt-get install nodejs npm)",
            pytrace=False,
        )
    return path


def _run(cmd: list[str], what: str, timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        cmd, cwd=TS, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}",
            pytrace=False,
        )
    return proc


def _install_is_stale() -> bool:
    if not CI_STAMP.exists():
        return True
    installed = CI_STAMP.stat().st_mtime
    return any(
        installed < (TS / name).stat().st_mtime for name in ("package.json", "package-lock.json")
    )


def build_client() -> Path:
    """Installs and builds tests/clients/ts; the path of the compiled client.

    NOTE: called in the test, not in a fixture, so that missing tools make the
    test FAIL (a fixture would report an ERROR).
    """
    # 1. the tools
    node, npm = _tool("node"), _tool("npm")
    version = _run([node, "--version"], "node --version", 30).stdout.strip()
    m = re.match(r"v(\d+)\.", version)
    if not m or int(m.group(1)) < MIN_NODE:
        pytest.fail(
            f"node {version} is too old: the TypeScript client needs Node.js >= {MIN_NODE}",
            pytrace=False,
        )
    # 2. installed from the lockfile by `make test`'s setup; generate types and compile
    if _install_is_stale():
        pytest.fail(
            f"{TS / 'node_modules'} is missing or older than package.json / package-lock.json: "
            "`make ts-client` (part of `make test`) installs it",
            pytrace=False,
        )
    _run([npm, "run", "--silent", "build"], "npm run build (proto-loader-gen-types, tsc)", 300)
    built = TS / "dist" / "client.js"
    assert built.is_file(), f"the build wrote no {built}"
    return built


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["plaintext", "mutual-tls"])
def test_typescript_client_matches_in_process_model(transport, tmp_path) -> None:
    # 1., 2. node and npm, the install and the build
    client_js = build_client()
    # 3. a real server, as users run it (with mutual TLS: certificates made here)
    server_args: list[str] = []
    client_args: list[str] = []
    credentials = None
    if transport == "mutual-tls":
        from .security.certs import Authority

        ca = Authority(tmp_path / "pki")
        cert, client = ca.server(), ca.client("ts-client", "spiffe://scorewire.test/ts")
        server_args = ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key), "--tls-client-ca", str(ca.cert)]
        client_args = ["--ca", str(ca.cert), "--cert", str(client.cert), "--key", str(client.key)]
        credentials = grpc.ssl_channel_credentials(ca.cert.read_bytes(), client.key.read_bytes(), client.cert.read_bytes())
    with server_process(*server_args, credentials=credentials) as server:
        # 4. the generated client against it
        proc = subprocess.run(
            [_tool("node"), str(client_js), server.addr, *client_args],
            cwd=TS,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"the client (exit {proc.returncode}) printed no JSON\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}",
            pytrace=False,
        )
    assert report["failures"] == [], (
        f"the client's checks failed: {report['failures']}\n{proc.stderr}"
    )
    assert proc.returncode == 0 and report["ok"], proc.stderr

    # what it saw
    assert report["health"] == {"": "SERVING", "model/breast-cancer": "SERVING"}
    assert report["model"]["dtype"] == "FLOAT64"
    assert report["model"]["feature_count"] == 30
    assert report["stream_count"] == STREAM_REQUESTS
    assert report["stream"]["in_order"] and report["stream"]["status"] == 0
    assert [e["code"] for e in report["stream"]["errors"]] == [3]  # INVALID_ARGUMENT
    assert report["codes"] == {
        "health_unknown_model": 5,  # NOT_FOUND
        "stream_bad_feature_count": 3,  # INVALID_ARGUMENT
        "predict_unknown_model": 5,  # NOT_FOUND
    }

    # Result: the same numbers as the in-process API for the same rows
    rows = np.asarray(report["rows"], dtype=np.float64)
    assert rows.shape == (3, 30)
    model = scorewire.load_model(scorewire.demo_repository() / "breast-cancer" / "1")
    expected = model.predict(rows)
    for key in ("probabilities", "probabilities_raw"):
        got = np.asarray(report[key], dtype=np.float64)
        np.testing.assert_allclose(got, expected["probabilities"], rtol=1e-12, atol=0, err_msg=key)
    np.testing.assert_allclose(
        np.asarray(report["decision"], dtype=np.float64),
        expected["decision"].reshape(-1),
        rtol=1e-12,
        atol=0,
    )
    np.testing.assert_array_equal(np.asarray(report["labels"]), expected["label"])
    # client.ts checks each label against the argmax of its probabilities: no row of
    # its data may be within rounding of the tie (row 541's decision is -0.18)
    assert decided_rows(expected["decision"], 1e-6).all()
