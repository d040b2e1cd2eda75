"""`python -m stedq.healthcheck` (the containers' HEALTHCHECK) against real gRPC health servers on
127.0.0.1: plaintext and TLS, configured by the same STEDQ_* variables as the server."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from concurrent import futures

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from stedq import healthcheck
from tests.server_support import free_port

SERVICE = "stedq.v1.QualityService"


class RecordMetadata(grpc.ServerInterceptor):
    """Keeps the metadata of the last call, to see what the probe sends."""

    def __init__(self):
        self.last: dict[str, str] = {}

    def intercept_service(self, continuation, handler_call_details):
        self.last = dict(handler_call_details.invocation_metadata)
        return continuation(handler_call_details)


def start_health_server(credentials=None):
    recorder = RecordMetadata()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=[recorder])
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    address = "127.0.0.1:0"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    server.start()
    return server, servicer, port, recorder


@pytest.fixture
def plain_server():
    server, servicer, port, recorder = start_health_server()
    yield servicer, port, recorder
    server.stop(None)


def run_probe(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """The HEALTHCHECK command as the container runs it: env only (plus optional flags)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STEDQ_")}
    return subprocess.run([sys.executable, "-m", "stedq.healthcheck", *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def probe(monkeypatch, capsys):
    """The same probe in this process (faster): returns (exit code, what it printed)."""
    def run(env: dict[str, str], *args: str) -> tuple[int, str]:
        for name in [n for n in os.environ if n.startswith("STEDQ_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = healthcheck.main(list(args))
        return code, capsys.readouterr().out
    return run


def test_serving_server_passes_with_the_containers_env(plain_server):
    servicer, port, recorder = plain_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    # the image sets STEDQ_HOST=0.0.0.0 (bind everywhere); the probe then dials loopback
    out = run_probe({"STEDQ_HOST": "0.0.0.0", "STEDQ_PORT": str(port), "STEDQ_TOKEN": "s3cret"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == f"127.0.0.1:{port} (server): SERVING"
    assert recorder.last.get("authorization") == "Bearer s3cret"


def test_not_serving_and_unknown_services_fail(plain_server, probe):
    servicer, port, _ = plain_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    env = {"STEDQ_PORT": str(port)}
    code, out = probe(env, "--service", SERVICE)
    assert code == 1 and "NOT_SERVING" in out
    code, out = probe(env, "--service", "no.such.Service")
    assert code == 1 and "NOT_FOUND" in out
    servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    assert probe(env, "--service", SERVICE)[0] == 0
    # flags win over the environment
    assert probe({"STEDQ_PORT": "1"}, "--port", str(port))[0] == 0


def test_nothing_listening_fails_fast(probe):
    started = time.monotonic()
    code, out = probe({"STEDQ_PORT": str(free_port())}, "--timeout", "2")
    assert code == 1 and "UNAVAILABLE" in out
    assert time.monotonic() - started < 10


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    (tmp_path / "tls.crt").write_bytes(cert_pem)
    (tmp_path / "tls.key").write_bytes(key_pem)
    return cert_pem, key_pem


def test_tls_server_is_checked_with_its_own_certificate(tmp_path, probe):
    cert_pem, key_pem = _self_signed(tmp_path)
    server, servicer, port, _ = start_health_server(grpc.ssl_server_credentials([(key_pem, cert_pem)]))
    try:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        env = {"STEDQ_PORT": str(port), "STEDQ_TLS_CERT": str(tmp_path / "tls.crt"),
               "STEDQ_TLS_KEY": str(tmp_path / "tls.key")}
        code, out = probe(env)
        assert code == 0, out
        # a certificate for another name is refused, not silently accepted
        code, out = probe(env, "--tls-server-name", "elsewhere.example")
        assert code == 1 and "UNAVAILABLE" in out
    finally:
        server.stop(None)


def test_unreadable_ca_is_a_clear_error(tmp_path, probe):
    with pytest.raises(SystemExit) as exc:
        probe({"STEDQ_PORT": "1", "STEDQ_TLS_CERT": str(tmp_path / "missing.crt")})
    assert "cannot read the TLS CA certificate" in str(exc.value) and "missing.crt" in str(exc.value)
