"""The clients over TLS, mutual TLS and with a bearer token, against real servers (throwaway CA)."""

import subprocess
import sys

import grpc
import numpy as np
import pytest

from stedq.clients import QualityClient, QualityError
from tests.conftest import REPO_ROOT
from tests.server_support import ThreadedServer, model_bundle, random_images, server_settings
from tests.tls_support import write_test_pki

TOKEN = "acquisition-token"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return write_test_pki(tmp_path_factory.mktemp("client-pki"), client_name="microscope-pc")


@pytest.fixture(scope="module")
def tls_server(pki):
    settings = server_settings(model_bundle(), tls_cert=pki / "server.pem", tls_key=pki / "server.key", token=TOKEN)
    with ThreadedServer(settings) as running:
        yield running


@pytest.fixture(scope="module")
def mtls_server(pki):
    settings = server_settings(model_bundle(), tls_cert=pki / "server.pem", tls_key=pki / "server.key",
                               tls_client_ca=pki / "ca.pem")
    with ThreadedServer(settings) as running:
        yield running


def test_tls_with_token(tls_server, pki):
    images = random_images(2, seed=31)
    with QualityClient(tls_server.address, tls=pki / "ca.pem", token=TOKEN) as client:
        client.wait_ready(timeout=10)
        scores = client.score(images)
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))
    with QualityClient(tls_server.address, tls=pki / "ca.pem", token="wrong") as client:
        with pytest.raises(QualityError) as info:
            client.score(images)
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    with QualityClient(tls_server.address, token=TOKEN, retries=0, timeout=5) as plaintext:
        with pytest.raises(QualityError) as info:
            plaintext.score(images)
        assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_needs_the_client_certificate(mtls_server, pki):
    images = random_images(1, seed=32)
    with QualityClient(mtls_server.address, tls=pki / "ca.pem", client_cert=pki / "client.pem",
                       client_key=pki / "client.key") as client:
        assert client.score(images).shape == (1,)
    with QualityClient(mtls_server.address, tls=pki / "ca.pem", retries=0, timeout=5) as anonymous:
        with pytest.raises(QualityError) as info:
            anonymous.score(images)
        assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_stedq_score_over_tls_from_settings(tls_server, pki, tmp_path):
    np.save(tmp_path / "x.npy", np.round(random_images(1, seed=33)[0] * 65535).astype(np.uint16))
    command = [sys.executable, "-m", "stedq", "score", str(tmp_path / "x.npy"), "--server", tls_server.address,
               "--tls-cert", str(pki / "ca.pem")]
    good = subprocess.run([*command, "--token", TOKEN], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert good.returncode == 0, good.stderr
    assert "x.npy" in good.stdout
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert refused.returncode == 3 and "refused the client" in refused.stderr and "--token" in refused.stderr
