"""`stedq score` and `stedq loop` (handlers import their heavy parts when they run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stedq.settings import add_settings_arguments

CLIENT_SETTINGS = ["server", "timeout_s", "token"]

SCORE_DESCRIPTION = """\
Score STED images against a running stedq server (`stedq serve`).

PATHs are files, folders (searched recursively for .tif/.tiff/.png/.npy) or glob patterns
(quote them: 'data/**/*.tif'). Multi-page TIFF and OME-TIFF stacks, and N×H×W .npy arrays, give one
score per frame. Images larger than the model input (224×224) are tiled by the server into a
quality map; --map writes it as a PNG overlay.

exit status: 0 all scored; 1 some inputs could not be read or were rejected (the others are still
scored and reported); 3 the server could not be reached or refused the client.

examples:
  stedq score samples/
  stedq score 'scans/*.ome.tif' --server microscope-pc:50051 --csv scores.csv
  stedq score big_field.tif --map maps/ --json -
"""

LOOP_DESCRIPTION = """\
Tune a simulated STED microscope (pysted) with the quality score: each iteration the optimizer
(constrained Thompson sampling over dwell time, excitation and depletion power) picks parameters,
the microscope images a fresh field of view, the server scores the image, and the optimizer learns
from the score and the bleaching. Prints progress; writes a convergence plot (PNG) and the steps
(JSON). Needs the `train` extra (pysted) and, with --score-source server, a running server.
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1], got {value}")
    return value


def _parameters(text: str) -> dict[str, float]:
    try:
        dwell, excitation, depletion = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DWELL_US,EXCITATION_UW,DEPLETION_MW, got {text!r}") from None
    return {"dwell_time_us": dwell, "p_ex_uw": excitation, "p_sted_mw": depletion}


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, CLIENT_SETTINGS)
    # Settings.tls_cert is the server's own certificate; a client uses the same variable for the
    # certificate (or CA) it trusts, so the flag gets a client-side description.
    parser.add_argument("--tls-cert", dest="tls_cert", default=None, metavar="PEM",
                        help="connect with TLS, trusting this CA or self-signed server certificate "
                             "[env STEDQ_TLS_CERT; default: plaintext]")


def register(subparsers: argparse._SubParsersAction) -> None:
    score = subparsers.add_parser(
        "score", help="score image files against a running server", description=SCORE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    score.add_argument("paths", nargs="+", metavar="PATH", help="TIFF/PNG/NPY files, folders or globs")
    score.add_argument("--csv", metavar="FILE", help="write the results as CSV (- for stdout)")
    score.add_argument("--json", metavar="FILE", help="write the results as JSON (- for stdout)")
    score.add_argument("--map", metavar="DIR",
                       help="write a quality-map overlay PNG per image larger than the model input")
    score.add_argument("--batch-size", type=_positive_int, default=32, metavar="N",
                       help="images per request (large batches are also split by message size) [default: 32]")
    score.add_argument("--retries", type=_non_negative_int, default=3, metavar="N",
                       help="retries while the server is unavailable, with backoff [default: 3]")
    add_client_arguments(score)
    score.set_defaults(func=_score)

    loop = subparsers.add_parser(
        "loop", help="example: tune a simulated STED microscope with the score",
        description=LOOP_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    loop.add_argument("--iterations", type=_positive_int, default=30, help="acquisitions [default: 30]")
    loop.add_argument("--structure", default="actin", choices=["actin", "tubulin"],
                      help="simulated sample [default: actin]")
    loop.add_argument("--seed", type=int, default=0, help="seed of the samples and the optimizer [default: 0]")
    loop.add_argument("--max-bleaching", type=_fraction, default=0.15,
                      help="largest fraction of the field's fluorophores one acquisition may bleach [default: 0.15]")
    loop.add_argument("--start", action="append", type=_parameters, metavar="DWELL,EXC,STED",
                      help="first acquisitions' settings (µs, µW, mW), e.g. the microscope's current "
                           "ones; repeat for several [default: random]")
    loop.add_argument("--random-start", type=_non_negative_int, default=4, metavar="N",
                      help="random settings tried (after --start ones) before the optimizer takes over "
                           "until N are known [default: 4]")
    loop.add_argument("--score-source", choices=["server", "label"], default="server",
                      help="server: the stedq server's score; label: the simulator's own expert label "
                           "(checks the optimizer without a server) [default: server]")
    loop.add_argument("--imspector", type=Path, default=None, metavar="CONFIG.json",
                      help="run on a real microscope through Abberior Imspector (specpy) instead of the "
                           "simulator: CONFIG maps dwell_time_us, p_ex_uw, p_sted_mw to Imspector parameter "
                           "paths, units and ranges, and names the STED and confocal pre/post channels "
                           "(docs/clients.md; needs the imspector extra)")
    loop.add_argument("--out", default="loop", metavar="DIR",
                      help="folder for loop.png and loop.json [default: ./loop]")
    add_client_arguments(loop)
    loop.set_defaults(func=_loop)


def _score(args: argparse.Namespace) -> int:
    from stedq.clients.score_command import run

    return run(args)


def _loop(args: argparse.Namespace) -> int:
    from stedq.clients.loop_command import run

    return run(args)
