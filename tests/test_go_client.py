"""A Go client, generated from proto/, against a real server.

tests/clients/go/main.go is a Go program written only from the .proto files: its
scorewire.v1 types and stubs come from protoc-gen-go and protoc-gen-go-grpc, its
health client is grpc-go's own. It checks health Check and Watch (through an
unload and a load), typed and raw Predict, PredictStream (order, ids, encodings, an
error mid-stream) and malformed requests itself, and prints one JSON object.

1. The tools are installed (Debian's Go toolchain, grpc-go, protoc and its Go
   plugins, by `make test`'s setup: `make go-client`): a failure, never a skip,
   when they are not.
2. tests/clients/go/build.sh generates the Go code and builds the client (offline,
   GOPATH mode) every time; its source is gofmt-clean.
3. A server starts with `scorewire serve --port 0`.
4. The client, given the server's address, exits 0 and reports no failed check.
Result: its probabilities, decisions and labels for its 3 rows equal the in-process
`load_model(...).predict(rows)` to 1e-12 relative, typed, raw and streamed alike,
and the pure-NumPy reference scorer within the parity tolerances; the malformed
requests get INVALID_ARGUMENT with the message a Python client gets.

The README's Go example is built the same way and run against a server.
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
from scorewire.formats.linear_json import load_linear_json
from scorewire.grpc.stubs import pb, pb_grpc

from .parity import assert_decisions_close, assert_proba_close, decided_rows, decision_scale
from .reference import reference_scores
from .servers import ROOT, server_process

GO = ROOT / "tests" / "clients" / "go"
BUILD_SH = GO / "build.sh"
CLIENT = GO / "build" / "scorewire-go-client"
#: where Debian's golang-*-dev packages put their sources (GOPATH mode)
DEBIAN_GOPATH = Path("/usr/share/gocode")
GRPC_GO = DEBIAN_GOPATH / "src" / "google.golang.org" / "grpc"
TOOLS = ("go", "gofmt", "protoc", "protoc-gen-go", "protoc-gen-go-grpc")
#: what `make go-client` installs
DEBIAN_PACKAGES = "golang-go golang-google-grpc-dev golang-goprotobuf-dev protoc-gen-go-grpc protobuf-compiler"
MODEL_DIR = scorewire.demo_repository() / "breast-cancer" / "1"
STREAM_REQUESTS = 20


def _tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not (GRPC_GO / "health" / "grpc_health_v1").is_dir():
        missing.append(f"grpc-go in {DEBIAN_GOPATH}")
    if missing:
        pytest.fail(
            f"the Go client test needs {', '.join(missing)}: `make go-client` (part of `make test`) "
            f"installs them (Debian: apt-get install {DEBIAN_PACKAGES})",
            pytrace=False,
        )


def _run(cmd: list[str], what: str, timeout: float, cwd: Path = GO) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}",
            pytrace=False,
        )
    return proc


def build(main: Path = GO, out: Path = CLIENT) -> Path:
    """Generates the Go code from proto/ and builds ``main``; the program's path.

    NOTE: called in the tests, not in a fixture, so that missing tools make a test
    FAIL (a fixture would report an ERROR).
    """
    _tools()
    _run([str(BUILD_SH), str(main), str(out)], "tests/clients/go/build.sh (protoc, go build)", 600)
    assert out.is_file(), f"the build wrote no {out}"
    return out


def _report(proc: subprocess.CompletedProcess[str]) -> dict:
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"the client (exit {proc.returncode}) printed no JSON\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}",
            pytrace=False,
        )


def _python_refusal(addr: str, tensor: pb.Tensor) -> tuple[grpc.StatusCode, str]:
    """What a Python client is told for the same malformed request."""
    request = pb.PredictRequest(model="breast-cancer", input=tensor)
    with grpc.insecure_channel(addr) as channel, pytest.raises(grpc.RpcError) as err:
        pb_grpc.PredictServiceStub(channel).Predict(request, timeout=30)
    return err.value.code(), err.value.details()


@pytest.mark.slow
def test_go_client_matches_in_process_model() -> None:
    # 1., 2. the tools and the build; the source as gofmt writes it
    client = build()
    unformatted = _run(["gofmt", "-l", "main.go"], "gofmt -l", 60).stdout.strip()
    assert not unformatted, f"run gofmt -w on {unformatted}"
    # 3. a real server, as users run it
    with server_process() as server:
        # 4. the generated client against it
        proc = subprocess.run(
            [str(client), server.addr], cwd=GO, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL
        )
        report = _report(proc)
        rows = np.asarray(report["rows"], dtype=np.float64)
        # what a Python client is told for the Go client's malformed requests
        raw = rows.astype("<f8").tobytes()
        malformed = {
            "raw_too_short": pb.Tensor(dtype=pb.FLOAT64, shape=rows.shape, raw=raw[: 2 * 30 * 8]),
            "raw_and_typed": pb.Tensor(dtype=pb.FLOAT64, shape=rows.shape, raw=raw, double_values=rows.ravel()),
        }
        python_refusals = {name: _python_refusal(server.addr, t) for name, t in malformed.items()}
    assert report["failures"] == [], f"the client's checks failed: {report['failures']}\n{proc.stderr}"
    assert proc.returncode == 0 and report["ok"], proc.stderr

    # what it saw: health, Watch through the unload and the load
    assert report["health"] == {"": "SERVING", "model/breast-cancer": "SERVING"}
    assert report["codes"] == {"health_unknown_model": grpc.StatusCode.NOT_FOUND.value[0]}
    watched = [s for i, s in enumerate(report["watch"]) if i == 0 or s != report["watch"][i - 1]]
    assert watched == ["SERVING", "NOT_SERVING", "SERVING"], report["watch"]
    # the stream: every answer in order, the bad message refused and the stream going on
    stream = report["stream"]
    assert stream["in_order"] and stream["status"] == 0
    assert stream["sent"] == stream["received"] == STREAM_REQUESTS + 1
    assert stream["responses"] == STREAM_REQUESTS
    assert [(e["request_id"], e["code"]) for e in stream["errors"]] == [("go-stream-bad", 3)]  # INVALID_ARGUMENT
    assert stream["errors"][0]["message"]
    # malformed unary requests: INVALID_ARGUMENT, with what Python is told
    for name, (code, message) in python_refusals.items():
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, code, message)
        assert report["refusals"][name] == {"code": code.value[0], "message": message}
        assert "Traceback" not in message and len(message) < 200

    # Result: the server's answers, as the in-process API and the NumPy reference give them
    assert rows.shape == (3, 30)
    model = scorewire.load_model(MODEL_DIR)
    expected = model.predict(rows)
    typed, raw_scores = report["typed"], report["raw"]
    assert not typed["raw"] and raw_scores["raw"]
    assert typed["version"] == raw_scores["version"] == 1
    streamed = np.asarray(stream["probabilities"], dtype=np.float64)
    for what, got in [
        ("typed", typed["probabilities"]),
        ("raw", raw_scores["probabilities"]),
        ("stream", streamed),
    ]:
        want = expected["probabilities"][stream["scored_rows"]] if what == "stream" else expected["probabilities"]
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=1e-12, atol=0, err_msg=what)
    for scores in (typed, raw_scores):
        np.testing.assert_allclose(
            np.asarray(scores["decision"], dtype=np.float64), expected["decision"].reshape(-1), rtol=1e-12, atol=0
        )
        np.testing.assert_array_equal(np.asarray(scores["labels"]), expected["label"].astype(str))
    spec = load_linear_json(MODEL_DIR / "model.json")
    reference = reference_scores(spec, rows)
    assert_proba_close(np.asarray(typed["probabilities"]), reference["probabilities"], "float64")
    scale = decision_scale(rows, spec.coef, spec.intercept)
    assert_decisions_close(typed["decision"], reference["decision"], scale, "float64")
    # main.go checks each label against the sign of its decision: no row of its data
    # may be within rounding of the tie (row 541's decision is -0.18)
    assert decided_rows(expected["decision"], 1e-6).all()


@pytest.mark.slow
def test_the_readme_go_example_runs_as_written(tmp_path) -> None:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- go-example -->\n```go\n(.*?)```\n<!-- /go-example -->", text, re.S)
    assert block, "the README lost its go-example"
    code = block.group(1)
    assert "127.0.0.1:50051" in code
    # the example calls the API as the tested client does
    source = (GO / "main.go").read_text()
    for name in re.findall(r"\b(?:pb|grpc_health_v1|grpc|status)\.[A-Z]\w*", code):
        assert name in source, f"the README's Go example uses {name}, which main.go does not"
    with server_process() as server:
        (tmp_path / "main.go").write_text(code.replace("127.0.0.1:50051", server.addr))
        example = build(tmp_path / "main.go", tmp_path / "example")
        out = _run([str(example)], "the README's Go example", 120, cwd=tmp_path).stdout.splitlines()
        short_row = pb.Tensor(dtype=pb.FLOAT64, shape=[1, 29], double_values=np.ones(29))
        refused = _python_refusal(server.addr, short_row)
    assert len(out) == 2, out
    # SERVING, the version, and the probabilities of a row of ones
    m = re.fullmatch(r"SERVING (\d+) \[(\S+) (\S+)\]", out[0])
    assert m, out[0]
    want = scorewire.load_model(MODEL_DIR).predict(np.ones((1, 30)))["probabilities"][0]
    assert int(m.group(1)) == 1
    np.testing.assert_allclose([float(m.group(2)), float(m.group(3))], want, rtol=1e-12, atol=1e-300)
    # the refusal: INVALID_ARGUMENT, with what a Python client is told
    assert refused[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert out[1] == f"InvalidArgument {refused[1]}"
