"""The public Python client, ``scorewire.Client`` and its asyncio twin, against a
real server on loopback: NumPy in and out, streams with in-band errors, feedback,
the model listings, health, deadlines, TLS and tokens; UNAVAILABLE retried for the
calls safe to repeat (and only those), against a scripted gRPC server; its API
pinned; the README's Python examples run as written."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import shutil
import subprocess
import sys
import threading
from concurrent import futures

import grpc
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris, load_wine

import scorewire
from scorewire.grpc import stubs
from scorewire.grpc.client import FeedbackResult, ModelInfo, NotReady, Prediction, ServedModel
from scorewire.repository import ModelRepository
from scorewire.settings import Settings
from scorewire.types import EXPLANATIONS

from ..security.certs import Authority
from ..servers import ROOT, InProcessServer

DEMO = scorewire.demo_repository()
WINE = scorewire.load_model(DEMO / "wine" / "1")
IRIS = scorewire.load_model(DEMO / "iris-forest" / "1")
BREAST = scorewire.load_model(DEMO / "breast-cancer" / "1")
X_WINE = load_wine().data[::20]
X_IRIS = load_iris().data[::15].astype(np.float32)
X_BREAST, Y_BREAST = load_breast_cancer(return_X_y=True)
TOKEN = "client-test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    for name in ("wine", "iris-forest", "breast-cancer"):
        shutil.copytree(DEMO / name, root / name)
    return root


@pytest.fixture(scope="module")
def server(repo_dir):
    srv = InProcessServer(Settings(port=0, drain_delay_s=0), ModelRepository(repo_dir, n_threads=1))
    yield srv
    srv.stop()


# ------------------------------------------------------------- the API, pinned
def shape_of(fn) -> list[tuple[str, str, object]]:
    return [(p.name, p.kind.name, p.default) for p in inspect.signature(fn).parameters.values()]


E = inspect.Parameter.empty
OPTIONS = [
    ("timeout", "KEYWORD_ONLY", 30.0), ("ca", "KEYWORD_ONLY", None), ("cert", "KEYWORD_ONLY", None),
    ("key", "KEYWORD_ONLY", None), ("token", "KEYWORD_ONLY", None), ("max_message_mb", "KEYWORD_ONLY", None),
    ("retries", "KEYWORD_ONLY", True),
]  # fmt: skip
CALL_TIMEOUT = ("timeout", "KEYWORD_ONLY", None)
API = {
    "__init__": [("self", "POSITIONAL_OR_KEYWORD", E), ("target", "POSITIONAL_OR_KEYWORD", "127.0.0.1:50051"), *OPTIONS],
    "predict": [
        ("self", "POSITIONAL_OR_KEYWORD", E), ("model", "POSITIONAL_OR_KEYWORD", E), ("X", "POSITIONAL_OR_KEYWORD", E),
        ("outputs", "KEYWORD_ONLY", ()), ("version", "KEYWORD_ONLY", 0), ("request_id", "KEYWORD_ONLY", ""), CALL_TIMEOUT,
        ("metadata", "KEYWORD_ONLY", None),
    ],
    "stream": [
        ("self", "POSITIONAL_OR_KEYWORD", E), ("model", "POSITIONAL_OR_KEYWORD", E),
        ("batches", "POSITIONAL_OR_KEYWORD", E), ("outputs", "KEYWORD_ONLY", ()), ("version", "KEYWORD_ONLY", 0),
        ("request_ids", "KEYWORD_ONLY", None), CALL_TIMEOUT, ("metadata", "KEYWORD_ONLY", None),
    ],
    "feedback": [
        ("self", "POSITIONAL_OR_KEYWORD", E), ("model", "POSITIONAL_OR_KEYWORD", E), ("truth", "POSITIONAL_OR_KEYWORD", E),
        CALL_TIMEOUT,
    ],
    "models": [("self", "POSITIONAL_OR_KEYWORD", E), CALL_TIMEOUT],
    "model": [("self", "POSITIONAL_OR_KEYWORD", E), ("name", "POSITIONAL_OR_KEYWORD", E), CALL_TIMEOUT],
    "served": [
        ("self", "POSITIONAL_OR_KEYWORD", E), ("model", "POSITIONAL_OR_KEYWORD", E),
        ("version", "POSITIONAL_OR_KEYWORD", 0), CALL_TIMEOUT,
    ],
    "health": [("self", "POSITIONAL_OR_KEYWORD", E), ("service", "POSITIONAL_OR_KEYWORD", ""), CALL_TIMEOUT],
    "close": [("self", "POSITIONAL_OR_KEYWORD", E)],
}  # fmt: skip


@pytest.mark.parametrize("cls", [scorewire.Client, scorewire.AsyncClient], ids=["sync", "async"])
def test_the_client_api_is_pinned(cls):
    public = sorted(n for n in vars(cls) if not n.startswith("_") or n == "__init__")
    assert public == sorted(API)
    assert {name: shape_of(getattr(cls, name)) for name in API} == API
    if cls is scorewire.AsyncClient:
        assert inspect.isasyncgenfunction(cls.stream)
        assert all(inspect.iscoroutinefunction(getattr(cls, n)) for n in API if n not in ("__init__", "stream"))
    else:
        assert not any(inspect.iscoroutinefunction(getattr(cls, n)) for n in API)
    assert [f.name for f in Prediction.__dataclass_fields__.values()] == ["model", "version", "request_id", "outputs", "error"]
    assert list(FeedbackResult.__dataclass_fields__) == ["outcomes", "matched", "unknown", "expired", "duplicate", "invalid"]
    assert list(ModelInfo.__dataclass_fields__) == ["name", "state", "versions", "ready", "error", "warnings", "traffic"]
    assert list(ServedModel.__dataclass_fields__) == [
        "version", "input_dtype", "n_features", "task", "feature_names", "classes", "outputs", "roles", "backend",
        "explanation_baseline", "inputs", "tabular",
    ]  # fmt: skip
    assert set(stubs.__all__) == {"array_to_tensor", "oip", "oip_grpc", "pb", "pb_grpc", "tensor_to_array"}
    assert hasattr(stubs.pb_grpc, "PredictServiceStub") and hasattr(stubs.oip_grpc, "GRPCInferenceServiceStub")


# --------------------------------------------------------- against a server
def test_predict_returns_the_models_outputs_as_numpy(server):
    expected = WINE.predict(X_WINE)
    with scorewire.Client(server.addr, timeout=30) as client:
        p = client.predict("wine", X_WINE, outputs=["probabilities", "label"], request_id="wine-1")
        assert (p.model, p.version, p.request_id, p.error) == ("wine", 1, "wine-1", None)
        assert sorted(p) == ["label", "probabilities"] and len(p) == 2 and "label" in p
        assert isinstance(p["probabilities"], np.ndarray) and p["probabilities"].shape == (len(X_WINE), 3)
        np.testing.assert_allclose(p["probabilities"], expected["probabilities"], rtol=1e-12, atol=0)
        np.testing.assert_array_equal(p["label"], expected["label"])
        # every output but the explanations when none is named; float32 rows go as
        # float32 (iris-forest's input)
        assert set(client.predict("wine", X_WINE[:2])) == set(WINE.signature.output_names) - set(EXPLANATIONS)
        q = client.predict("iris-forest", X_IRIS, outputs=("probabilities",), version=1)
        np.testing.assert_allclose(q["probabilities"], IRIS.predict(X_IRIS)["probabilities"], rtol=1e-6)
        # a list of rows works as an array does
        np.testing.assert_allclose(client.predict("wine", X_WINE[:1].tolist())["probabilities"],
                                   expected["probabilities"][:1], rtol=1e-12)  # fmt: skip


def test_a_refused_call_raises_client_error_with_its_status(server):
    with scorewire.Client(server.addr, timeout=30) as client:
        cases = {
            "NOT_FOUND": lambda: client.predict("no-such-model", X_WINE),
            "INVALID_ARGUMENT": lambda: client.predict("wine", np.zeros((2, 5))),
        }
        for code, call in cases.items():
            with pytest.raises(scorewire.ClientError) as err:
                call()
            assert err.value.code == code and err.value.details and "Traceback" not in err.value.details
            assert str(err.value).startswith(code + ": ")
        with pytest.raises(scorewire.ClientError) as err:
            client.predict("wine", X_WINE, version=7)
        assert err.value.code == "NOT_FOUND"
        with pytest.raises(scorewire.ClientError) as err:
            client.model("no-such-model")
        assert err.value.code == "NOT_FOUND"
        with pytest.raises(NotReady):
            client.served("wine", 7)
        assert client.health() == "SERVING"


def test_stream_answers_in_order_with_refusals_in_band(server):
    batches = [X_WINE[:2], np.zeros((1, 5)), X_WINE[2:5]]
    expected = WINE.predict(X_WINE[:5])["probabilities"]
    with scorewire.Client(server.addr, timeout=30) as client:
        answers = list(client.stream("wine", batches, outputs=["probabilities"], request_ids=["s-0", "s-1", "s-2"]))
    assert [a.request_id for a in answers] == ["s-0", "s-1", "s-2"]
    assert answers[1].error is not None and answers[1].error.code == "INVALID_ARGUMENT" and len(answers[1]) == 0
    assert answers[0].error is None and answers[2].error is None
    np.testing.assert_allclose(np.vstack([answers[0]["probabilities"], answers[2]["probabilities"]]), expected, rtol=1e-12)


def test_feedback_joins_earlier_request_ids(server):
    rows = X_BREAST[:4]
    with scorewire.Client(server.addr, timeout=30) as client:
        for i in range(2):
            client.predict("breast-cancer", rows[2 * i : 2 * i + 2], request_id=f"fb-{i}")
        result = client.feedback("breast-cancer", {"fb-0": Y_BREAST[:2], "fb-1": Y_BREAST[2:4].tolist(), "fb-nope": [1]})
        assert result.outcomes == {"fb-0": "MATCHED", "fb-1": "MATCHED", "fb-nope": "UNKNOWN_ID"}
        assert (result.matched, result.unknown, result.duplicate) == (2, 1, 0)
        again = client.feedback("breast-cancer", [("fb-0", Y_BREAST[:2])])  # pairs work as a mapping does
        assert again.outcomes == {"fb-0": "DUPLICATE"} and again.duplicate == 1


def test_models_served_and_health(server):
    with scorewire.Client(server.addr, timeout=30) as client:
        models = {m.name: m for m in client.models()}
        assert sorted(models) == ["breast-cancer", "iris-forest", "wine"]
        assert models["wine"].state == "READY" and models["wine"].versions == {1: "READY"}
        wine = client.served("wine")
        assert wine == models["wine"].ready[1] == client.model("wine").ready[1]
        assert (wine.version, wine.input_dtype, wine.n_features, wine.task) == (1, "float64", 13, "classification")
        assert wine.classes == tuple(str(c) for c in WINE.signature.classes)
        assert wine.roles["probabilities"] == "probabilities" and wine.backend == "native"
        assert client.served("iris-forest").input_dtype == "float32"
        assert client.health() == "SERVING" and client.health("model/wine") == "SERVING"
        with pytest.raises(scorewire.ClientError) as err:
            client.health("model/no-such-model")
        assert err.value.code == "NOT_FOUND"


def test_the_async_client_gives_what_the_sync_one_does(server):
    async def run():
        async with scorewire.AsyncClient(server.addr, timeout=30) as client:
            p = await client.predict("wine", X_WINE, outputs=["probabilities"], request_id="a-1")
            streamed = [a async for a in client.stream("wine", [X_WINE[:1], np.zeros((1, 2))], request_ids=["a-2", "a-3"])]
            fb = await client.feedback("breast-cancer", {"a-nope": [0]})
            with pytest.raises(scorewire.ClientError) as err:
                await client.predict("no-such-model", X_WINE)
            return p, streamed, fb, await client.models(), await client.served("wine"), await client.health("model/wine"), err.value

    loop = asyncio.new_event_loop()
    try:
        p, streamed, fb, models, served, health, err = loop.run_until_complete(run())
    finally:
        loop.close()
    with scorewire.Client(server.addr, timeout=30) as client:
        np.testing.assert_array_equal(p["probabilities"], client.predict("wine", X_WINE, outputs=["probabilities"])["probabilities"])
        assert models == client.models() and served == client.served("wine")
    assert (p.request_id, p.version) == ("a-1", 1)
    assert [a.request_id for a in streamed] == ["a-2", "a-3"] and streamed[1].error.code == "INVALID_ARGUMENT"
    assert streamed[0]["label"].shape == (1,)
    assert fb.outcomes == {"a-nope": "UNKNOWN_ID"} and health == "SERVING" and err.code == "NOT_FOUND"


def test_tls_and_a_token(repo_dir, tmp_path):
    ca = Authority(tmp_path / "pki")
    cert = ca.server()
    access = tmp_path / "access.toml"
    access.write_text(f'[[token]]\nname = "app"\ntoken = "{TOKEN}"\ngroups = ["data"]\n')
    srv = InProcessServer(
        Settings(port=0, drain_delay_s=0, tls_cert=cert.cert, tls_key=cert.key, auth_tokens=access),
        ModelRepository(repo_dir, n_threads=1),
    )
    try:
        with scorewire.Client(srv.addr, ca=ca.cert, token=TOKEN, timeout=30) as client:
            assert client.predict("wine", X_WINE[:1])["label"].shape == (1,)
        with scorewire.Client(srv.addr, ca=ca.cert, timeout=30) as client, pytest.raises(scorewire.ClientError) as err:
            client.predict("wine", X_WINE[:1])
        assert err.value.code == "UNAUTHENTICATED" and TOKEN not in str(err.value)

        async def run():
            async with scorewire.AsyncClient(srv.addr, ca=ca.cert, token=TOKEN, timeout=30) as client:
                return await client.predict("wine", X_WINE[:1])

        loop = asyncio.new_event_loop()
        try:
            assert loop.run_until_complete(run())["label"].shape == (1,)
        finally:
            loop.close()
    finally:
        srv.stop()
    with pytest.raises(ValueError, match="need ca"):
        scorewire.Client("127.0.0.1:1", cert=cert.cert, key=cert.key)
    with pytest.raises(ValueError, match="go together"):
        scorewire.Client("127.0.0.1:1", ca=ca.cert, cert=cert.cert)


# ------------------------------------------- retries and deadlines, scripted
class Scripted(stubs.pb_grpc.PredictServiceServicer):
    """Answers UNAVAILABLE to the first ``failures`` calls of each method, then OK;
    a Predict for model "hang" waits until ``release`` is set."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        self.release = threading.Event()

    def _attempt(self, method: str, context) -> None:
        with self.lock:
            self.calls[method] = n = self.calls.get(method, 0) + 1
        if n <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "draining")

    def Predict(self, request, context):
        if request.model == "hang":
            self.release.wait(60)
            return stubs.pb.PredictResponse()
        self._attempt("Predict", context)
        out = stubs.array_to_tensor(np.array([[0.25]]), raw=True)
        return stubs.pb.PredictResponse(model=request.model, version=3, outputs={"value": out})

    def Feedback(self, request, context):
        self._attempt("Feedback", context)
        return stubs.pb.FeedbackResponse()


@contextlib.contextmanager
def scripted(failures: int):
    servicer = Scripted(failures)
    srv = grpc.server(futures.ThreadPoolExecutor(4))
    stubs.pb_grpc.add_PredictServiceServicer_to_server(servicer, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        servicer.release.set()
        srv.stop(None)


def test_unavailable_is_retried_for_predict_and_not_for_feedback():
    with scripted(failures=2) as (servicer, addr), scorewire.Client(addr, timeout=30) as client:
        p = client.predict("m", X_WINE[:1])
        assert p.version == 3 and p["value"].tolist() == [[0.25]]
        assert servicer.calls["Predict"] == 3  # two refusals, then the answer
        with pytest.raises(scorewire.ClientError) as err:
            client.feedback("m", {"r": [1]})
        assert err.value.code == "UNAVAILABLE" and servicer.calls["Feedback"] == 1
    with scripted(failures=1) as (servicer, addr), scorewire.Client(addr, timeout=30, retries=False) as client:
        with pytest.raises(scorewire.ClientError) as err:
            client.predict("m", X_WINE[:1])
        assert err.value.code == "UNAVAILABLE" and servicer.calls["Predict"] == 1


def test_the_async_client_retries_too():
    async def run(addr):
        async with scorewire.AsyncClient(addr, timeout=30) as client:
            return await client.predict("m", X_WINE[:1])

    with scripted(failures=3) as (servicer, addr):
        loop = asyncio.new_event_loop()
        try:
            assert loop.run_until_complete(run(addr)).version == 3
        finally:
            loop.close()
        assert servicer.calls["Predict"] == 4


def test_a_call_past_its_deadline_raises_deadline_exceeded():
    with scripted(failures=0) as (_, addr), scorewire.Client(addr, timeout=30) as client:
        with pytest.raises(scorewire.ClientError) as err:
            client.predict("hang", X_WINE[:1], timeout=0.2)
        assert err.value.code == "DEADLINE_EXCEEDED"
        assert client.predict("m", X_WINE[:1]).version == 3  # the client is still usable


# ------------------------------------------------------- the README's examples
@pytest.mark.parametrize("marker", ["python-example", "feedback-example"])
def test_the_readme_python_examples_run_as_written(server, marker):
    """Run in a fresh interpreter against the test server (its port for 50051)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- {marker} -->\n```python\n(.*?)```\n<!-- /{marker} -->", text, re.S)
    assert block, f"the README lost its {marker}"
    code = block.group(1)
    assert "_gen" not in code and "_codec" not in code and "127.0.0.1:50051" in code
    out = subprocess.run([sys.executable, "-c", code.replace("127.0.0.1:50051", server.addr)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    if marker == "python-example":
        lines = out.stdout.splitlines()
        assert lines[0].startswith("(3, 3) [") and lines[0].endswith("] 1")
        assert len(lines) == 5 and lines[3] == "SERVING"
        assert lines[4] == "['breast-cancer', 'iris-forest', 'wine'] ('0', '1', '2')"
    else:
        assert out.stdout.strip() == "MATCHED"


def test_no_readme_python_block_imports_private_modules():
    text = (ROOT / "README.md").read_text()
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        assert not re.search(r"scorewire\.\S*\._", block), block
