"""TLS, mutual TLS and bearer-token auth on a real server, with a throwaway CA made by `cryptography`."""


import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stedq.v1 import quality_pb2 as pb
from stedq.v1 import quality_pb2_grpc as pb_grpc
from tests.server_support import ThreadedServer, model_bundle, pb_image, server_settings
from tests.tls_support import write_test_pki

TOKEN = "s3cret-token"
HOST_OVERRIDE = (("grpc.ssl_target_name_override", "localhost"),)
REQUEST = pb.ScoreRequest(images=[pb_image(np.zeros((224, 224), np.uint8))])


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return write_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_server(pki):
    settings = server_settings(model_bundle(), tls_cert=pki / "server.pem", tls_key=pki / "server.key",
                               tls_client_ca=pki / "ca.pem", token=TOKEN)
    with ThreadedServer(settings) as running:
        yield running


def _secure_channel(server, pki, *, client_cert: bool = True):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / "client.key").read_bytes() if client_cert else None,
        certificate_chain=(pki / "client.pem").read_bytes() if client_cert else None)
    return grpc.secure_channel(server.address, credentials, options=HOST_OVERRIDE)


def test_mtls_with_the_token_scores(mtls_server, pki):
    with _secure_channel(mtls_server, pki) as channel:
        response = pb_grpc.QualityServiceStub(channel).Score(
            REQUEST, metadata=[("authorization", f"Bearer {TOKEN}")], timeout=30)
    assert 0.0 <= response.results[0].score <= 1.0


@pytest.mark.parametrize("metadata, message", [
    ([], "missing 'authorization' metadata"),
    ([("authorization", "Bearer wrong")], "invalid bearer token"),
    ([("authorization", TOKEN)], "invalid bearer token"),    # the "Bearer " scheme is required
])
def test_without_the_right_token_it_is_unauthenticated(mtls_server, pki, metadata, message):
    with _secure_channel(mtls_server, pki) as channel:
        stub = pb_grpc.QualityServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Score(REQUEST, metadata=metadata, timeout=30)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED and message in error.value.details()
        with pytest.raises(grpc.RpcError) as streamed:  # streams are guarded too
            list(stub.ScoreStream(iter([pb.ScoreStreamRequest(request_id="a")]), metadata=metadata, timeout=30))
        assert streamed.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # health probes need no token (kubelet and the container HEALTHCHECK cannot send one)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_mtls_refuses_clients_without_a_certificate_and_plaintext(mtls_server, pki):
    with _secure_channel(mtls_server, pki, client_cert=False) as channel:
        with pytest.raises(grpc.RpcError) as error:
            pb_grpc.QualityServiceStub(channel).Score(REQUEST, metadata=[("authorization", f"Bearer {TOKEN}")],
                                                      timeout=10)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(mtls_server.address) as channel:
        with pytest.raises(grpc.RpcError) as error:
            pb_grpc.QualityServiceStub(channel).Score(REQUEST, timeout=10)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_without_client_ca_accepts_any_client_and_limits_message_size(pki):
    settings = server_settings(model_bundle(), tls_cert=pki / "server.pem", tls_key=pki / "server.key",
                               max_message_mb=1)
    with ThreadedServer(settings) as server, _secure_channel(server, pki, client_cert=False) as channel:
        stub = pb_grpc.QualityServiceStub(channel)
        assert len(stub.Score(REQUEST, timeout=30).results) == 1
        too_big = pb.ScoreRequest(images=[pb_image(np.zeros((224, 224), np.float32))] * 6)  # ~1.2 MB
        with pytest.raises(grpc.RpcError) as error:
            stub.Score(too_big, timeout=30)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
