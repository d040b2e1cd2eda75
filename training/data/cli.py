"""`stedq data synth|preview|calibrate|check|ceiling|fit`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SYNTH_EPILOG = """\
output: OUT/actin/ and OUT/tubulin/, each a labelled folder (<name>-<score>.tiff, labels.csv,
manifest.json) that `stedq train` reads; OUT/DONE when all are complete. Re-running the same command
resumes an interrupted run; the same --seed gives the same bytes.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser(
        "data", help="generate, preview and check STED datasets",
        description="Synthetic STED data (pysted physics) with expert-like labels, and checks of real data.")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    synth = data_sub.add_parser(
        "synth", help="simulate a labelled STED dataset", epilog=SYNTH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Simulate STED acquisitions (pysted) of randomized actin-like and tubulin-like samples "
                    "with sampled acquisition parameters, labelled by a virtual expert (docs/data.md).")
    synth.add_argument("--out", required=True, type=Path, help="output folder")
    synth.add_argument("--actin", type=int, default=2000, metavar="N",
                       help="actin-like images (default: 2000; the paper had 1140)")
    synth.add_argument("--tubulin", type=int, default=94, metavar="N",
                       help="tubulin-like images (default: 94, the paper's unseen-protein set)")
    synth.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    synth.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    synth.add_argument("--balanced", action="store_true",
                       help="aim for a uniform label distribution instead of the paper-like one")
    synth.add_argument("--pixel-nm", type=float, default=None, metavar="NM",
                       help="one pixel size for every image (default: drawn per image, 15-35 nm); the other "
                            "draws stay those of the same --seed, so the two sets differ in pixel size only")
    synth.add_argument("--dense-axons", action=argparse.BooleanOptionalAction,
                       help="draw the axon networks of the actin mix as dense, diffusely labelled fields (filled "
                            "shafts, rings holding 20-60 %% of the label, an uneven diffuse label; default, data "
                            "2.1); --no-dense-axons draws data 2.0's sparse ring lattices. Every other image "
                            "stays the same bytes")
    synth.add_argument("--dense-bundles", action=argparse.BooleanOptionalAction,
                       help="draw the tubulin bundles of the actin mix as dense fields (3-7 crossing bundles and "
                            "single microtubules over a strong, uneven diffuse label; default, data 2.1); "
                            "--no-dense-bundles draws data 2.0's 1-2 bundles on a dark field")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.set_defaults(func=_synth)

    preview = data_sub.add_parser(
        "preview", help="contact sheet and label histogram PNGs",
        description="Write a contact sheet (images per quality bin) and a label histogram of a labelled "
                    "folder, like the paper's Figures 4, 6 and 7.")
    preview.add_argument("folder", type=Path, help="labelled folder (or a synth output with sub-folders)")
    preview.add_argument("--out", type=Path, default=None,
                         help="folder for the PNGs (default: the dataset folder)")
    preview.add_argument("--per-bin", type=int, default=4, help="images per quality bin (default: 4)")
    preview.add_argument("--real", type=Path, default=None, metavar="DIR",
                         help="real STED images (e.g. validation/real-dev) to compare photon counts with")
    preview.set_defaults(func=_preview)

    calibrate = data_sub.add_parser(
        "calibrate", help="plots documenting the virtual-expert label",
        description="Plot resolution against depletion power, the label over (depletion, dwell) and, for a "
                    "generated folder, the label against its components (docs/data.md).")
    calibrate.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNGs (default: docs)")
    calibrate.add_argument("--dataset", type=Path, default=None,
                           help="a generated structure folder with labels.csv, e.g. data/synth/actin")
    calibrate.set_defaults(func=_calibrate)

    check = data_sub.add_parser(
        "check", help="check a folder of labelled images and report all problems",
        description="Read every image and label of a folder (<name>-<score>.tif(f), or images + labels.csv) "
                    "and report every problem at once. Exit status 1 if there is any.")
    check.add_argument("folder", type=Path, help="dataset folder")
    check.set_defaults(func=_check)

    ceiling = data_sub.add_parser(
        "ceiling", help="what the labels allow an image-only model to reach",
        description="Spearman and RMSE against the labels of two oracles: the labeller's noise-free quality, "
                    "and the pixel-size-blind oracle (every input of the label known exactly but the pixel "
                    "size, which the 224x224 counts do not state): what an image-only model can be expected "
                    "to reach on this data. Needs a synthetic labels.csv (the label's inputs per image).",
        epilog="example:\n  stedq data ceiling data/synth4/actin data/synth4/tubulin --prior data/synth4/actin",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ceiling.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help="labelled synthetic folders")
    ceiling.add_argument("--prior", type=Path, default=None, metavar="FOLDER",
                         help="the folder whose pixel sizes the oracle averages over (default: each folder's own; "
                              "give the training data for an unseen set)")
    ceiling.add_argument("--json", action="store_true", help="print JSON instead of text")
    ceiling.set_defaults(func=_ceiling)

    fit = data_sub.add_parser(
        "fit", help="does the model fit these images? the fit verdict per file",
        description="Read every image of a folder (or files, globs) as `stedq score` does and say, per file "
                    "and frame, whether it lies inside what the model was trained on: 'ok', or the reasons "
                    "(counts_high, counts_low, saturated, stretched, normalised, offset, pixel_size, "
                    "no_structure; docs/server.md). No server and no labels needed. Exit status 1 when any "
                    "file is flagged or unreadable.")
    fit.add_argument("paths", nargs="+", type=str, metavar="PATH", help="files, folders or globs")
    fit.add_argument("--model", type=Path, default=None, metavar="BUNDLE",
                     help="bundle whose training statistics to compare with (default: the bundled model)")
    fit.add_argument("--json", metavar="FILE", help="write the verdicts as JSON (- for stdout)")
    fit.set_defaults(func=_fit)


def _synth(args: argparse.Namespace) -> int:
    from stedq.training.data.structures import DENSE_FIELDS
    from stedq.training.data.synth import DEFAULT_DENSE, generate

    counts = {name: n for name, n in (("actin", args.actin), ("tubulin", args.tubulin)) if n > 0}
    if not counts:
        raise SystemExit("stedq data synth: nothing to do (--actin and --tubulin are both 0)")
    if args.pixel_nm is not None and not 5.0 <= args.pixel_nm <= 100.0:
        raise SystemExit(f"stedq data synth: --pixel-nm {args.pixel_nm:g} is outside 5-100 nm")
    generate(args.out, counts, seed=args.seed, workers=max(1, args.workers), balanced=args.balanced,
             progress=not args.no_progress, pixel_nm=args.pixel_nm,
             dense=tuple(name for name in DENSE_FIELDS if _flag(getattr(args, f"dense_{name}"), name in DEFAULT_DENSE)))
    print(f"wrote {', '.join(f'{n} {s}' for s, n in counts.items())} images under {args.out}")
    return 0


def _flag(value: bool | None, default: bool) -> bool:
    """A --x/--no-x flag: its default where neither was given (None: defaults live with the code, not here)."""
    return default if value is None else value


def _fit(args: argparse.Namespace) -> int:
    import json

    import stedq
    from stedq.bundle import BundleError, read_manifest
    from stedq.files import ReadError, expand_paths, read_frames
    from stedq.fit import FIT_OK, FitStatistics, check_fit
    from stedq.pixels import InvalidInput, to_model_input

    bundle = args.model or stedq.DEFAULT_MODEL_DIR
    try:
        manifest = read_manifest(bundle)
    except BundleError as exc:
        raise SystemExit(f"stedq data fit: {exc}") from None
    if not manifest.fit:
        raise SystemExit(f"stedq data fit: {bundle} carries no training statistics (export it again)")
    stats = FitStatistics.from_dict(manifest.fit)
    files, errors = expand_paths(args.paths)
    rows = [{"file": e.path, "frame": "", "fit": [], "error": e.problem} for e in errors]
    for path in files:
        try:
            frames = read_frames(path)
        except ReadError as exc:
            rows.append({"file": exc.path, "frame": "", "fit": [], "error": exc.problem})
            continue
        for frame in frames:
            try:
                image = to_model_input(frame.image, frame.intensity)
            except InvalidInput as exc:
                rows.append({"file": frame.path, "frame": frame.frame, "fit": [], "error": str(exc)})
                continue
            rows.append({"file": frame.path, "frame": frame.frame, "error": "", "fit": check_fit(
                image, stats, dtype=frame.image.dtype.name, intensity=frame.intensity,
                pixel_size_nm=frame.pixel_size_nm)})
    if args.json:
        text = json.dumps({"model": {"name": manifest.name, "version": manifest.version}, "results": rows},
                          indent=2)
        print(text) if args.json == "-" else Path(args.json).write_text(text + "\n")
    if args.json != "-":
        width = max([len(r["file"] + r["frame"]) + 2 for r in rows] + [4])
        for row in rows:
            name = f"{row['file']}[{row['frame']}]" if row["frame"] else row["file"]
            print(f"{name:<{width}}  {row['error'] or ', '.join(row['fit'])}")
    flagged = [r for r in rows if r["error"] or r["fit"] != [FIT_OK]]
    if flagged and args.json != "-":
        print(f"{len(flagged)} of {len(rows)} images flagged or unreadable (model {manifest.version})",
              file=sys.stderr)
    return 1 if flagged else 0


def _ceiling(args: argparse.Namespace) -> int:
    import json

    from stedq.training.data.ceiling import COLUMNS, ceiling_markdown, label_ceiling

    results, missing = {}, []
    for folder in args.folders:
        results[str(folder)] = label_ceiling(folder, prior_folder=args.prior)
        if results[str(folder)] is None:
            missing.append(folder)
            print(f"stedq data ceiling: {folder}: no labels.csv with the label's inputs ({', '.join(COLUMNS)}): "
                  f"only synthetic data from `stedq data synth` records them", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for folder, ceiling in results.items():
            if ceiling is not None:
                print(f"{folder}: {ceiling_markdown(ceiling).replace('**', '')}", end="")
    return 1 if missing else 0


def _preview(args: argparse.Namespace) -> int:
    from stedq.training.data.preview import preview

    for png in preview(args.folder, args.out, per_bin=args.per_bin, real=args.real):
        print(png)
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from stedq.training.data.calibration import calibrate

    for png in calibrate(args.out, args.dataset):
        print(png)
    return 0


def _check(args: argparse.Namespace) -> int:
    from stedq.training.data.loader import check_labelled_folder

    report = check_labelled_folder(args.folder)
    for problem in report.problems:
        print(problem, file=sys.stderr)
    labels = [label for _, label, _ in report.entries]
    if labels:
        import numpy as np

        types = ", ".join(f"{n} {dtype}" for dtype, n in sorted(report.dtypes.items()))
        print(f"{args.folder}: {len(labels)} readable labelled images ({types}); labels "
              f"mean {np.mean(labels):.3f}, min {min(labels):.3f}, max {max(labels):.3f}")
    if report.problems:
        print(f"{args.folder}: {len(report.problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.folder}: OK")
    return 0
