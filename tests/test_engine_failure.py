"""An onnxruntime session that really fails at run time (a graph whose Reshape cannot hold the batch)
behind a real server: each API reports INTERNAL naming the inference failure, a stream answers that
request with the error and goes on, and the server scores again once the good model is back."""

from __future__ import annotations

import copy

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from stedq.kserve import grpc_service_pb2 as kpb
from stedq.kserve import grpc_service_pb2_grpc as kpb_grpc
from stedq.v1 import quality_pb2 as pb
from stedq.v1 import quality_pb2_grpc as pb_grpc
from tests.server_support import ThreadedServer, model_bundle, pb_image, server_settings


def failing_session(input_name: str, output_name: str) -> ort.InferenceSession:
    """A model that accepts the input's declared shape but fails in onnxruntime when run: 224*224 values
    per image do not reshape to rows of 13."""
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 1, "H", "W"])
    y = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, None)
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [13, -1])
    graph = helper.make_graph([helper.make_node("Reshape", [input_name, "shape"], ["rows"]),
                               helper.make_node("ReduceMean", ["rows"], [output_name], axes=[1], keepdims=0)],
                              "fails", [x], [y], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def server():
    with ThreadedServer(server_settings(model_bundle())) as running:
        yield running


@pytest.fixture
def failing_engine(server):
    scorer = server.server.scorer
    good = scorer.engine
    broken = copy.copy(good)
    broken.session = failing_session(good.input_name, good.output_name)
    with pytest.raises(Exception, match="reshape"):   # it really fails in onnxruntime
        broken.run(np.zeros((1, 1, 224, 224), np.float32))
    scorer.swap(broken)
    yield
    scorer.swap(good)


def test_an_inference_failure_is_internal_in_every_api_and_the_server_recovers(server, failing_engine):
    image = pb_image(np.random.default_rng(0).poisson(20, (224, 224)).astype(np.uint16))
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.QualityServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Score(pb.ScoreRequest(images=[image]), timeout=30)
        assert error.value.code() == grpc.StatusCode.INTERNAL
        assert "inference failed" in error.value.details()

        answers = list(stub.ScoreStream(iter([pb.ScoreStreamRequest(request_id="a", images=[image]),
                                              pb.ScoreStreamRequest(request_id="b", images=[image])]), timeout=30))
        assert [a.request_id for a in answers] == ["a", "b"]
        assert all(a.error.code == grpc.StatusCode.INTERNAL.value[0] and "inference failed" in a.error.message
                   for a in answers), answers

        request = kpb.ModelInferRequest(model_name="quality")
        request.inputs.add(name="image", datatype="FP32", shape=[1, 1, 224, 224])
        request.raw_input_contents.append(np.full((1, 1, 224, 224), 0.1, np.float32).tobytes())
        with pytest.raises(grpc.RpcError) as error:
            kpb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
        assert error.value.code() == grpc.StatusCode.INTERNAL and "inference failed" in error.value.details()


def test_the_server_scores_again_once_the_good_engine_is_back(server):
    """Runs after the failures above (the fixture swapped the good engine back): nothing stuck."""
    image = pb_image(np.random.default_rng(0).poisson(20, (224, 224)).astype(np.uint16))
    with grpc.insecure_channel(server.address) as channel:
        response = pb_grpc.QualityServiceStub(channel).Score(pb.ScoreRequest(images=[image]), timeout=30)
    assert len(response.results) == 1 and 0.0 <= response.results[0].score <= 1.0
