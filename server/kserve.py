"""KServe v2 gRPC inference protocol (`inference.GRPCInferenceService`) beside stedq.v1.

Existing v2 clients (tritonclient.grpc, KServe/MLServer tooling) work against stedq unchanged. This
is a thin adapter: tensors are decoded by `kserve_tensors` (which uses the server's image decoding)
and every image is scored by the shared `Scorer`, so v2 requests are batched together with v1
requests and metered the same way.

Served model: `settings.model_name` (default "quality"), input "image" FP32 [-1, 1, 224, 224] in
[0, 1] (UINT16 and UINT8 are accepted too and rescaled by their range, as in stedq.v1), output
"score" FP32 [-1, 1].
"""

from __future__ import annotations

import time

import grpc

from stedq import __version__
from stedq.pixels import InvalidInput
from stedq.server.scoring import Scorer
from stedq.server.status import SCORING_ERRORS, deadline_of, send_timing, status_for
from stedq.settings import Settings

try:
    from stedq.kserve import grpc_service_pb2 as pb
    from stedq.kserve import grpc_service_pb2_grpc as pb_grpc
    from stedq.server.kserve_tensors import (
        FIT_OUTPUT,
        INPUT_DATATYPE,
        INPUT_NAME,
        INPUT_SHAPE,
        OUTPUT_NAME,
        decode_request,
        encode_response,
        payload_of,
    )
except TypeError as exc:  # protobuf's "duplicate symbol 'inference.…'": one such module per process
    raise ImportError(
        "the KServe v2 protocol cannot be loaded in this process: another module (tritonclient.grpc, "
        f"mlserver, ...) already registered the protobuf package 'inference' ({exc})") from exc

SERVER_NAME = "stedq"
PLATFORM = "onnxruntime_onnx"
# No optional v2 extensions (model repository, shared memory, statistics, ...) are served.
EXTENSIONS: list[str] = []


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, scorer: Scorer, settings: Settings):
        self._scorer = scorer
        self._model_name = settings.model_name

    # --- which model a request names
    def _serves(self, name: str, version: str) -> bool:
        return name == self._model_name and version in ("", self._scorer.model_info.version)

    async def _require_model(self, name: str, version: str, served_version: str,
                             context: grpc.aio.ServicerContext) -> None:
        if name != self._model_name:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"model_name: unknown model '{name}' (this server serves '{self._model_name}')")
        if version not in ("", served_version):
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"model_version: model '{name}' has no version '{version}' "
                                f"(serving version '{served_version}'; leave it empty for the current one)")

    # --- health
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=bool(self._scorer.ready))

    async def ModelReady(self, request, context):
        # As Triton does: an unknown model or version is "not ready", not an error.
        return pb.ModelReadyResponse(ready=bool(self._scorer.ready) and self._serves(request.name, request.version))

    # --- metadata
    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)

    async def ModelMetadata(self, request, context):
        info = self._scorer.model_info
        await self._require_model(request.name, request.version, info.version, context)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=self._model_name, versions=[info.version], platform=PLATFORM,
            # any height and width from MIN_IMAGE_SIZE up (smaller padded, larger tiled and averaged)
            inputs=[tensor(name=INPUT_NAME, datatype=INPUT_DATATYPE, shape=list(INPUT_SHAPE))],
            outputs=[tensor(name=OUTPUT_NAME, datatype="FP32", shape=[-1, 1]),
                     tensor(name=FIT_OUTPUT, datatype="BYTES", shape=[-1, 1])])

    # --- inference
    async def ModelInfer(self, request, context):
        arrived = time.perf_counter()
        info = self._scorer.model_info  # read before scoring, as stedq.v1 does (a reload may swap the model)
        await self._require_model(request.model_name, request.model_version, info.version, context)
        timing: dict[str, float] = {}
        try:
            with self._scorer.admit(*payload_of(request)):
                decoded = decode_request(request, info.fit)
                timing["decode"] = time.perf_counter() - arrived
                results = await self._scorer.score(decoded.images, deadline=deadline_of(context), timing=timing)
        except (InvalidInput, *SCORING_ERRORS) as exc:
            await context.abort(status_for(exc), str(exc))
        send_timing(context, timing, arrived)
        if self._scorer.metrics is not None:
            self._scorer.metrics.count_fits(decoded.fits)
        return encode_response(request, decoded, [r.score for r in results], model_name=self._model_name,
                               model_version=info.version)


def add_kserve_servicer(server: grpc.aio.Server, scorer: Scorer, settings: Settings) -> None:
    """Register `inference.GRPCInferenceService` on `server`, scoring through `scorer`."""
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(KServeServicer(scorer, settings), server)
