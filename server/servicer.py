"""stedq.v1.QualityService: a thin adapter between protobuf messages and the Scorer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import grpc
import numpy as np

from stedq.fit import FitQuery
from stedq.pixels import (
    MIN_IMAGE_SIZE,
    InvalidInput,
    decode_image,
    model_input_buffer,
    parse_dtype,
    parse_intensity,
)
from stedq.server.scoring import ImageScore, Scorer
from stedq.server.status import SCORING_ERRORS, deadline_of, send_timing, status_for
from stedq.timing import format_timing
from stedq.v1 import quality_pb2 as pb
from stedq.v1 import quality_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["QualityService"].full_name
# Requests bigger than this are decoded in a worker thread, so a huge upload does not stall the
# event loop (and every other client) while its pixels are converted.
DECODE_OFF_LOOP_BYTES = 4 << 20


def decode_images(images, field: str = "images") -> tuple[list[np.ndarray], list[FitQuery]]:
    """stedq.v1.Image messages -> float32 (H, W) model inputs (stedq.pixels) and what each image's fit
    verdict needs (stedq.fit); InvalidInput names the image."""
    if not images:
        raise InvalidInput(f"{field}: empty batch; send at least one image")
    inputs, queries = [], []
    buffer = model_input_buffer([(image.height, image.width) for image in images])
    for index, image in enumerate(images):
        where = f"{field}[{index}]"
        inputs.append(decode_image(image.data, int(image.dtype), image.height, image.width, field=where,
                                   intensity=int(image.intensity), out=None if buffer is None else buffer[index]))
        dtype = parse_dtype(int(image.dtype), field=where)
        queries.append(FitQuery(dtype, parse_intensity(int(image.intensity), dtype, field=where),
                                image.pixel_size_nm or None))
    return inputs, queries


async def decode_images_async(images, field: str = "images") -> tuple[list[np.ndarray], list[FitQuery]]:
    if sum(len(image.data) for image in images) < DECODE_OFF_LOOP_BYTES:
        return decode_images(images, field)
    return await asyncio.get_running_loop().run_in_executor(None, decode_images, images, field)


def payload_of(images) -> tuple[int, list[tuple[int, int]]]:
    """What a request carries, for admission: pixel bytes received and the (H, W) each image claims."""
    return sum(len(image.data) for image in images), [(image.height, image.width) for image in images]


def to_proto(result: ImageScore, image: pb.Image, fit: list[str]) -> pb.ImageScore:
    """One result, echoing what the request said of its image (pixel size), with its fit verdict."""
    message = pb.ImageScore(score=result.score, pixel_size_nm=image.pixel_size_nm, fit=fit)
    if result.map is not None:
        tiles = result.map
        message.map.CopyFrom(pb.QualityMap(rows=tiles.rows, cols=tiles.cols, tile_size=tiles.tile_size,
                                           stride=tiles.stride, scores=tiles.scores))
    return message


class QualityServicer(pb_grpc.QualityServiceServicer):
    def __init__(self, scorer: Scorer):
        self.scorer = scorer

    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        arrived = time.perf_counter()
        info = self.scorer.model_info
        version = info.version
        timing: dict[str, float] = {}
        try:
            with self.scorer.admit(*payload_of(request.images)):
                images, queries = await decode_images_async(request.images)
                timing["decode"] = time.perf_counter() - arrived
                results, fits = await self.scorer.score_with_fits(images, queries, deadline=deadline_of(context),
                                                                  timing=timing)
        except (InvalidInput, *SCORING_ERRORS) as exc:
            await context.abort(status_for(exc), str(exc))
        send_timing(context, timing, arrived)
        if self.scorer.metrics is not None:
            self.scorer.metrics.count_fits(fits)
        return pb.ScoreResponse(results=[to_proto(*answer) for answer in zip(results, request.images, fits,
                                                                              strict=True)],
                                client_id=request.client_id,
                                model_version=version)

    async def ScoreStream(self, request_iterator, context: grpc.aio.ServicerContext):
        """Requests are scored concurrently (so they batch together) and each is answered as soon as it
        is done, carrying its request_id; a failed request is answered with `error` and the stream goes on."""
        answers: asyncio.Queue[pb.ScoreStreamResponse | None] = asyncio.Queue()
        pending: set[asyncio.Task] = set()

        async def answer(request: pb.ScoreStreamRequest) -> None:
            try:
                response = await self._answer(request, context)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - every request is answered, whatever failed
                log.exception("stream request %r failed", request.request_id)
                response = pb.ScoreStreamResponse(
                    request_id=request.request_id, error=pb.Error(
                        code=grpc.StatusCode.INTERNAL.value[0],
                        message=f"internal error scoring request {request.request_id!r} (logged by the server)"))
            answers.put_nowait(response)

        async def read() -> None:
            try:
                async for request in request_iterator:
                    task = asyncio.ensure_future(answer(request))   # answers before it ends, never raises
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                if pending:
                    await asyncio.gather(*pending)
            finally:
                answers.put_nowait(None)   # the writer never waits for a reader that has stopped

        reader = asyncio.ensure_future(read())
        try:
            while (response := await answers.get()) is not None:
                yield response
            await reader  # re-raises a failure of the request stream itself
        finally:
            for task in (reader, *pending):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _answer(self, request: pb.ScoreStreamRequest, context) -> pb.ScoreStreamResponse:
        arrived = time.perf_counter()
        info = self.scorer.model_info
        version = info.version
        timing: dict[str, float] = {}
        try:
            with self.scorer.admit(*payload_of(request.images)):
                images, queries = await decode_images_async(request.images)
                timing["decode"] = time.perf_counter() - arrived
                results, fits = await self.scorer.score_with_fits(images, queries, deadline=deadline_of(context),
                                                                  timing=timing)
            if self.scorer.metrics is not None:
                self.scorer.metrics.count_fits(fits)
        except (InvalidInput, *SCORING_ERRORS) as exc:
            code = status_for(exc)
            return pb.ScoreStreamResponse(request_id=request.request_id, model_version=version,
                                          error=pb.Error(code=code.value[0], message=str(exc)))
        return pb.ScoreStreamResponse(request_id=request.request_id, model_version=version,
                                      results=[to_proto(*answer) for answer in zip(results, request.images, fits,
                                                                                    strict=True)],
                                      timing_ms=format_timing({**timing, "total": time.perf_counter() - arrived}))

    async def GetModelInfo(self, request, context) -> pb.ModelInfo:
        info = self.scorer.model_info
        return pb.ModelInfo(
            name=info.name, version=info.version, input_height=info.input_height,
            input_width=info.input_width, normalization_mean=info.normalization_mean,
            normalization_std=info.normalization_std, providers=info.providers,
            max_batch_size=info.max_batch_size, tile_stride=info.tile_stride, variant=info.variant,
            min_image_size=MIN_IMAGE_SIZE, max_request_inputs=self.scorer.settings.max_queue_size,
            metadata=info.metadata, device=info.device, input_transform=info.input_transform)
