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
from stedq.pixels import MIN_IMAGE_SIZE, InvalidInput
from stedq.server.scoring import Scorer
from stedq.server.statistics import VersionStatistics
from stedq.server.status import SCORING_ERRORS, deadline_of, send_timing, status_for
from stedq.settings import Settings

try:
    from stedq.kserve import grpc_service_pb2 as pb
    from stedq.kserve import grpc_service_pb2_grpc as pb_grpc
    from stedq.kserve import model_config_pb2 as config_pb
    from stedq.server.kserve_tensors import (
        DATATYPES,
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
# Triton's extension names for the optional RPCs served (no model repository, shared memory, ...).
EXTENSIONS: list[str] = ["model_configuration", "statistics"]


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, scorer: Scorer, settings: Settings):
        self._scorer = scorer
        self._model_name = settings.model_name
        self._settings = settings

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

    async def ModelConfig(self, request, context):
        info = self._scorer.model_info
        await self._require_model(request.name, request.version, info.version, context)
        return pb.ModelConfigResponse(config=model_config(self._model_name, info, self._scorer.engine.info.path.name,
                                                          self._settings))

    async def ModelStatistics(self, request, context):
        """Every version served since start-up, or the one asked for (Triton's semantics)."""
        if request.name not in ("", self._model_name):
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"name: unknown model '{request.name}' (this server serves '{self._model_name}')")
        versions = self._scorer.statistics.snapshot()
        versions.setdefault(self._scorer.model_info.version, VersionStatistics())  # served, nothing asked yet
        if request.version:
            if request.version not in versions:
                await context.abort(grpc.StatusCode.NOT_FOUND,
                                    f"version: model '{self._model_name}' has served no version '{request.version}' "
                                    f"(served: {', '.join(versions) or 'none yet'})")
            versions = {request.version: versions[request.version]}
        return pb.ModelStatisticsResponse(model_stats=[model_statistics(self._model_name, version, stats)
                                                       for version, stats in versions.items()])

    # --- inference
    async def ModelInfer(self, request, context):
        arrived = time.perf_counter()
        info = self._scorer.model_info  # read before scoring, as stedq.v1 does (a reload may swap the model)
        await self._require_model(request.model_name, request.model_version, info.version, context)
        timing: dict[str, float] = {}
        try:
            with self._scorer.admit(*payload_of(request)):
                decoded = decode_request(request)
                timing["decode"] = time.perf_counter() - arrived
                results, fits = await self._scorer.score_with_fits(decoded.images, decoded.fit_queries,
                                                                   deadline=deadline_of(context), timing=timing)
        except (InvalidInput, *SCORING_ERRORS) as exc:
            await context.abort(status_for(exc), str(exc))
        send_timing(context, timing, arrived)
        if self._scorer.metrics is not None:
            self._scorer.metrics.count_fits(fits)
        return encode_response(request, decoded, [r.score for r in results], fits, model_name=self._model_name,
                               model_version=info.version)


# --- converters for the Triton extensions

def model_config(name: str, info, filename: str, settings: Settings):
    """What stedq really does with the model, as Triton's ModelConfig states it. Dims leave out the
    batch axis (max_batch_size > 0); any height and width from MIN_IMAGE_SIZE up is accepted: smaller
    than the model input is padded, larger is tiled and averaged. max_batch_size is the most inputs per
    model execution; one request may carry more (split over executions, up to max_queue_size)."""
    batching = (config_pb.ModelDynamicBatching(
        max_queue_delay_microseconds=round(settings.max_queue_delay_ms * 1000)) if settings.batching else None)
    parameters = {"min_image_size": MIN_IMAGE_SIZE, "tile_size": info.input_height,
                  "tile_stride": info.tile_stride, "max_request_inputs": settings.max_queue_size,
                  "variant": info.variant, "providers": ",".join(info.providers),
                  "input_transform": info.input_transform,
                  "accepted_datatypes": ",".join(DATATYPES), "pixel_contract": "integer datatypes are photon counts; FP32 is counts / 65535 unless the "
                                    "input parameter 'intensity' is 'counts'"}
    return config_pb.ModelConfig(
        name=name, platform=PLATFORM, backend="onnxruntime", max_batch_size=info.max_batch_size,
        version_policy=config_pb.ModelVersionPolicy(latest=config_pb.ModelVersionPolicy.Latest(num_versions=1)),
        input=[config_pb.ModelInput(name=INPUT_NAME, data_type=config_pb.TYPE_FP32, dims=list(INPUT_SHAPE[1:]))],
        output=[config_pb.ModelOutput(name=OUTPUT_NAME, data_type=config_pb.TYPE_FP32, dims=[1]),
                config_pb.ModelOutput(name=FIT_OUTPUT, data_type=config_pb.TYPE_STRING, dims=[1])],
        dynamic_batching=batching, default_model_filename=filename,
        parameters={k: config_pb.ModelParameter(string_value=str(v)) for k, v in parameters.items()})


def _duration(d):
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def model_statistics(name: str, version: str, stats):
    """One version's counters (server/statistics.py) as Triton's ModelStatistics."""
    return pb.ModelStatistics(
        name=name, version=version, last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count, execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(stats.success), fail=_duration(stats.fail), queue=_duration(stats.queue),
            compute_input=_duration(stats.compute_input), compute_infer=_duration(stats.compute_infer)),
        batch_stats=[pb.InferBatchStatistics(batch_size=size, compute_infer=_duration(d))
                     for size, d in stats.batches.items()])


def add_kserve_servicer(server: grpc.aio.Server, scorer: Scorer, settings: Settings) -> None:
    """Register `inference.GRPCInferenceService` on `server`, scoring through `scorer`."""
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(KServeServicer(scorer, settings), server)
