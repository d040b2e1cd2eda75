"""tritonclient.grpc against a running stedq server; prints what it saw as JSON.

Run by tests/test_server_kserve_triton.py in a separate process: tritonclient.grpc and stedq's own
generated KServe v2 modules both register the protobuf package `inference`, and one Python process
cannot hold both (duplicate symbol in the descriptor pool). This process imports no stedq module.

usage: python tests/kserve_triton_probe.py HOST:PORT MODEL_NAME IMAGES.npz
IMAGES.npz holds `fp32` (N, 1, 224, 224) float32 in [0, 1] and `u16` (M, 224, 224) uint16.
"""

from __future__ import annotations

import json
import sys

import grpc
import numpy as np
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException


def status_of(call) -> dict:
    try:
        call()
    except InferenceServerException as exc:
        return {"status": exc.status(), "message": exc.message()}
    return {"status": "OK", "message": ""}


def raw_infer(client: tc.InferenceServerClient, model: str, images: np.ndarray, datatype: str,
              request_id: str) -> dict:
    """The usual tritonclient path: set_data_from_numpy sends the tensor as raw_input_contents."""
    image = tc.InferInput("image", list(images.shape), datatype)
    image.set_data_from_numpy(images)
    result = client.infer(model, [image], request_id=request_id,
                          outputs=[tc.InferRequestedOutput("score"), tc.InferRequestedOutput("fit")])
    response = result.get_response()
    return {"scores": result.as_numpy("score").tolist(), "id": response.id,
            "fit": [v.decode() for v in result.as_numpy("fit").ravel()],
            "model_name": response.model_name, "model_version": response.model_version,
            "raw_outputs": len(response.raw_output_contents)}


def typed_infer(stub, model: str, images: np.ndarray, datatype: str, request_id: str) -> dict:
    """Typed contents (fp32_contents / uint_contents) with tritonclient's generated v2 stubs: the
    tritonclient.grpc InferInput always sends raw bytes, so this is how its users send typed values
    (as Triton's own grpc_explicit_*_content_client examples do)."""
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    tensor = request.inputs.add(name="image", datatype=datatype, shape=list(images.shape))
    if datatype == "FP32":
        tensor.contents.fp32_contents.extend(images.ravel().tolist())
    else:
        tensor.contents.uint_contents.extend(images.ravel().astype(np.uint32).tolist())
    response = stub.ModelInfer(request, timeout=30)
    output = response.outputs[0]
    return {"scores": np.asarray(output.contents.fp32_contents, dtype=np.float32).reshape(list(output.shape)).tolist(),
            "id": response.id, "output": [output.name, output.datatype, list(output.shape)],
            "raw_outputs": len(response.raw_output_contents)}


def main() -> None:
    url, model, path = sys.argv[1:4]
    data = np.load(path)
    fp32, u16 = data["fp32"], data["u16"][:, None]   # [N, 1, H, W], as the model metadata declares
    client = tc.InferenceServerClient(url=url)
    report: dict = {
        "server_live": client.is_server_live(),
        "server_ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "unknown_model_ready": client.is_model_ready("no-such-model"),
        "server_metadata": client.get_server_metadata(as_json=True),
        "model_metadata": client.get_model_metadata(model, as_json=True),
    }
    report["statistics_before"] = client.get_inference_statistics(model, as_json=True)
    report["raw_fp32"] = raw_infer(client, model, fp32, "FP32", "raw-fp32")
    report["raw_u16"] = raw_infer(client, model, u16, "UINT16", "raw-u16")
    report["raw_u8"] = raw_infer(client, model, (u16 >> 8).astype(np.uint8), "UINT8", "raw-u8")
    with grpc.insecure_channel(url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        report["typed_fp32"] = typed_infer(stub, model, fp32, "FP32", "typed-fp32")
        report["typed_u16"] = typed_infer(stub, model, u16, "UINT16", "typed-u16")
    report["statistics_after"] = client.get_inference_statistics(model, as_json=True)
    report["statistics_all"] = client.get_inference_statistics(as_json=True)   # every model
    report["model_config"] = client.get_model_config(model, as_json=True)

    def infer(images, datatype="FP32", shape=None, model_name=model, version=""):
        image = tc.InferInput("image", list(shape or images.shape), datatype)
        image._raw_content = images.tobytes()  # bypass the client-side shape check: test the server's
        return lambda: client.infer(model_name, [image], model_version=version)

    report["errors"] = {
        "unknown_model": status_of(infer(fp32, model_name="no-such-model")),
        "wrong_version": status_of(infer(fp32, version="999")),
        "unknown_model_metadata": status_of(lambda: client.get_model_metadata("no-such-model")),
        "unknown_model_config": status_of(lambda: client.get_model_config("no-such-model")),
        "unknown_model_statistics": status_of(lambda: client.get_inference_statistics("no-such-model")),
        "unknown_version_statistics": status_of(lambda: client.get_inference_statistics(model, "999")),
        "wrong_byte_length": status_of(infer(fp32[:, :, :100], shape=fp32.shape)),
        "wrong_shape": status_of(infer(fp32[:, :, :63, :100])),
        "out_of_range": status_of(infer(fp32 + 1.0)),  # above 1 whatever the brightness
        "bad_datatype": status_of(infer(fp32.astype(np.float64), datatype="FP64")),
        "unknown_output": status_of(lambda: client.infer(
            model, [tc.InferInput("image", list(fp32.shape), "FP32").set_data_from_numpy(fp32)],
            outputs=[tc.InferRequestedOutput("nope")])),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
