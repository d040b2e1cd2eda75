"""`stedq score PATH...`: score image files against a running server; table, CSV, JSON, map overlays.

Exit status: 0 all scored; 1 some inputs could not be read or were rejected (the others are scored and
reported); 3 the server could not be reached, did not answer in time or refused the client (nothing
more can be scored). The CSV/JSON are written (atomically) in every case, with what was scored.
Images over one request's limits are scored in bands of tile rows (stedq.clients.large).
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from stedq.bundle import write_atomic
from stedq.clients.client import QualityClient
from stedq.clients.errors import QualityError
from stedq.clients.large import Limits, needs_bands, score_in_bands
from stedq.files import Frame, ReadError, expand_paths, read_frames
from stedq.settings import settings_from_args

EXIT_INPUT_ERRORS = 1
EXIT_SERVER = 3
# Codes meaning "this server will answer nothing", as opposed to "this image was rejected".
FATAL_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
               grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
               grpc.StatusCode.UNIMPLEMENTED)
COLUMNS = ["file", "frame", "height", "width", "pixel_size_nm", "score", "fit", "tiles", "tile_scores",
           "model_version", "map_png", "error"]


@dataclass
class Row:
    file: str
    frame: str = ""
    height: int | None = None
    width: int | None = None
    pixel_size_nm: float | None = None   # from the file's metadata, as the server echoed it
    score: float | None = None
    fit: str = ""                        # "ok", or the reasons the image is outside the training data (";")
    tiles: str = ""                      # "ROWSxCOLS" of the quality map
    tile_scores: list[list[float]] | None = None   # the quality map, row-major rows
    model_version: str = ""
    map_png: str = ""
    error: str = ""


def server_hint(error: QualityError, target: str, timeout_s: float | None = None) -> str:
    if error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        limit = f"{timeout_s:g} s" if timeout_s else "its deadline"
        return (f"the stedq server at {target} did not answer within {limit} (DEADLINE_EXCEEDED); raise the "
                "deadline with --timeout-s SECONDS or STEDQ_TIMEOUT_S")
    if error.code == grpc.StatusCode.UNAVAILABLE:
        return (f"cannot reach the stedq server at {target} (UNAVAILABLE: {error.details}). "
                "Is `stedq serve` running there? Choose another with --server HOST:PORT or STEDQ_SERVER.")
    if error.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return f"the server at {target} refused the client ({error}); check --token / STEDQ_TOKEN"
    return f"the server at {target} failed: {error}"


def smallest_size(info) -> int:
    """The smallest height/width the server scores (older servers: the model input size)."""
    return info.min_image_size or info.input_height or 1


def size_problem(minimum: int, height: int, width: int) -> str:
    """The refusal of a frame below `minimum`, in the server's words ("" when it can be scored)."""
    if height >= minimum and width >= minimum:
        return ""
    return f"image is {height}x{width}, smaller than the minimum {minimum}x{minimum} the model can score"


def map_filename(frame: Frame) -> str:
    stem = Path(frame.path).name
    label = re.sub(r"[^A-Za-z0-9=]+", "_", frame.frame).strip("_")
    return f"{stem}{'_' + label if label else ''}.map.png"


def score_frames(client: QualityClient, frames: list[Frame], batch_size: int, map_dir: Path | None,
                 rows: list[Row]) -> None:
    """Score frames in batches, appending a row each; a batch the server rejects is retried image by
    image so that the error lands on the image that caused it. Fatal server errors propagate."""
    for start in range(0, len(frames), batch_size):
        batch = frames[start:start + batch_size]
        try:
            results = client.score_images([f.image for f in batch], intensity=[f.intensity for f in batch],
                                          pixel_size_nm=[f.pixel_size_nm for f in batch])
        except (QualityError, ValueError, TypeError) as exc:
            if isinstance(exc, QualityError) and exc.code in FATAL_CODES:
                raise
            if len(batch) == 1:
                rows.append(_row(batch[0], error=error_text(exc)))
                continue
            for frame in batch:
                score_frames(client, [frame], 1, map_dir, rows)
            continue
        for frame, result in zip(batch, results, strict=True):
            rows.append(result_row(frame, result, client.model_version, map_dir, rows))


def error_text(error: Exception) -> str:
    """An image's error row: the server's code and message, or what made it unsendable."""
    if isinstance(error, QualityError):
        return f"{error.code.name}: {error.details}"
    return str(error).removeprefix("image 0: ")


def score_large(client: QualityClient, frame: Frame, limits: Limits, map_dir: Path | None,
                rows: list[Row]) -> None:
    """One frame over a request's limits, in bands; its row (or error row) appended."""
    try:
        result = score_in_bands(client, frame.image, limits, intensity=frame.intensity,
                                pixel_size_nm=frame.pixel_size_nm)
    except (QualityError, ValueError, TypeError) as exc:
        if isinstance(exc, QualityError) and exc.code in FATAL_CODES:
            raise
        rows.append(_row(frame, error=error_text(exc)))
        return
    rows.append(result_row(frame, result, client.model_version, map_dir, rows))


def result_row(frame: Frame, result, model_version: str, map_dir: Path | None, rows: list[Row]) -> Row:
    row = _row(frame, score=result.score, pixel_size_nm=result.pixel_size_nm, model_version=model_version,
               fit=";".join(result.fit))
    if result.map is not None:
        row.tiles = "{}x{}".format(*result.map.scores.shape)
        row.tile_scores = [[round(float(v), 6) for v in line] for line in result.map.scores]
        if map_dir is not None:
            from stedq.clients.overlay import save_overlay

            taken = {r.map_png for r in rows}
            png, copy = map_dir / map_filename(frame), 1
            while str(png) in taken:  # same file name in another folder: keep both maps
                copy += 1
                png = map_dir / map_filename(frame).replace(".map.png", f"-{copy}.map.png")
            png = save_overlay(png, frame.image, result.map,
                               f"{frame.name}: mean score {result.score:.3f}, fit: {row.fit or 'unknown'}")
            row.map_png = str(png)
    return row


def _row(frame: Frame, **fields) -> Row:
    return Row(file=frame.path, frame=frame.frame, height=frame.image.shape[0], width=frame.image.shape[1],
               **fields)


def print_table(rows: list[Row], out) -> None:
    headers = ["file", "frame", "size", "score", "fit", "tiles"]
    table = [[r.file, r.frame, f"{r.height}x{r.width}" if r.height else "",
              f"{r.score:.4f}" if r.score is not None else "error", r.fit, r.tiles] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in table)) if table else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), file=out)
    for line in table:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip(), file=out)


def write_csv(path: str, rows: list[Row]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        values = asdict(row)
        values["tile_scores"] = json.dumps(row.tile_scores) if row.tile_scores is not None else ""
        writer.writerow({k: ("" if v is None else v) for k, v in values.items()})
    _write(path, buffer.getvalue())


def write_json(path: str, rows: list[Row], target: str, model: dict | None) -> None:
    text = json.dumps({"server": target, "model": model, "results": [asdict(r) for r in rows]}, indent=2)
    _write(path, text + "\n")


def _write(path: str, text: str) -> None:
    """stdout for '-', else the whole file at once (a reader never sees half a report)."""
    if path == "-":
        sys.stdout.write(text)
    else:
        write_atomic(Path(path), text.encode())


def run(args) -> int:
    settings = settings_from_args(args)
    files, read_errors = expand_paths(args.paths)
    rows = [Row(file=e.path, error=e.problem) for e in read_errors]
    map_dir = Path(args.map) if args.map else None
    client = QualityClient.from_settings(settings, retries=args.retries)
    try:
        try:
            info = client.model_info()
        except QualityError as exc:
            print(f"stedq score: {server_hint(exc, settings.server, settings.timeout_s)}", file=sys.stderr)
            _report(rows, args, settings.server, None)
            return EXIT_SERVER
        minimum = smallest_size(info)
        limits = Limits.of(client, info)
        from tqdm import tqdm

        # Frames of consecutive files share requests (one file per request would leave the server's
        # batching idle); an error row flushes the pending frames first, so rows stay in input order.
        pending: list[Frame] = []

        def flush() -> None:
            score_frames(client, pending, args.batch_size, map_dir, rows)
            pending.clear()

        try:
            for path in tqdm(files, desc="scoring", unit="file", disable=None, file=sys.stderr):
                try:
                    frames = read_frames(path)
                except ReadError as exc:
                    flush()
                    rows.append(Row(file=exc.path, error=exc.problem))
                    continue
                for frame in frames:
                    problem = size_problem(minimum, *frame.image.shape)
                    if problem or needs_bands(frame.image.shape, frame.image.itemsize, limits):
                        flush()
                        if problem:
                            rows.append(_row(frame, error=problem))
                        else:
                            score_large(client, frame, limits, map_dir, rows)
                        continue
                    pending.append(frame)
                    if len(pending) >= args.batch_size:
                        flush()
            flush()
        except QualityError as exc:
            print(f"stedq score: {server_hint(exc, settings.server, settings.timeout_s)}", file=sys.stderr)
            _report(rows, args, settings.server, info)
            return EXIT_SERVER
    finally:
        client.close()
    return _report(rows, args, settings.server, info)


def _report(rows: list[Row], args, target: str, info) -> int:
    """Table/CSV/JSON of everything scored so far; problems on stderr; the exit status."""
    model = {"name": info.name, "version": info.version, "variant": info.variant} if info is not None else None
    if args.csv:
        write_csv(args.csv, rows)
    if args.json:
        write_json(args.json, rows, target, model)
    if "-" not in (args.csv, args.json):
        print_table([r for r in rows if not r.error], sys.stdout)
    failed = [r for r in rows if r.error]
    for row in failed:
        name = f"{row.file}[{row.frame}]" if row.frame else row.file
        print(f"stedq score: {name}: {row.error}", file=sys.stderr)
    if failed:
        print(f"stedq score: {len(failed)} of {len(rows)} inputs could not be scored", file=sys.stderr)
        return EXIT_INPUT_ERRORS
    return 0
