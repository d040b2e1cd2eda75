"""`stedq loop`: the acquisition control-loop example, wired to the server and the simulator."""

from __future__ import annotations

import sys
from pathlib import Path

from stedq.clients.client import QualityClient
from stedq.clients.errors import QualityError
from stedq.clients.loop import (
    MissingScoreScorer,
    StreamScorer,
    axes_from_ranges,
    format_step,
    run_loop,
    save_json,
    save_plot,
    simulated_fields,
)
from stedq.clients.optimizer import ThompsonOptimizer
from stedq.settings import settings_from_args


def run(args) -> int:
    settings = settings_from_args(args)
    from stedq.training.data.microscope import PARAMETER_RANGES  # pysted: the `train` extra

    if args.start:  # check them before connecting anything
        for start in args.start:
            for name, value in start.items():
                low, high = PARAMETER_RANGES[name]
                if not low <= value <= high:
                    print(f"stedq loop: --start {name}={value:g} is outside the simulated range {low:g}-{high:g}",
                          file=sys.stderr)
                    return 2
    ranges, acquire = PARAMETER_RANGES, simulated_fields(args.structure, args.seed)
    if args.imspector is not None:
        from stedq.clients.imspector import ImspectorError, ImspectorMicroscope, connect, load_loop_config

        try:
            config = load_loop_config(args.imspector.read_text(), PARAMETER_RANGES)
        except (OSError, ImspectorError) as exc:
            print(f"stedq loop: --imspector {args.imspector}: {exc}", file=sys.stderr)
            return 2
        if args.score_source != "server":
            print("stedq loop: --imspector has no simulator label: use --score-source server", file=sys.stderr)
            return 2
        try:
            imspector = connect(config.host)
        except (ImportError, RuntimeError) as exc:
            print(f"stedq loop: cannot reach Imspector{' on ' + config.host if config.host else ''}: {exc} "
                  "(pip install 'stedq[imspector]'; Imspector with Run Server on)", file=sys.stderr)
            return 3
        ranges = config.ranges
        acquire = ImspectorMicroscope(imspector, config.parameters, channel=config.channel,
                                      pre_channel=config.pre_channel, post_channel=config.post_channel)
    client = None
    if args.score_source == "server":
        client = QualityClient.from_settings(settings)
        try:
            client.wait_ready(timeout=min(settings.timeout_s, 10.0))
            info = client.model_info()
        except QualityError as exc:
            print(f"stedq loop: cannot use the stedq server at {settings.server}: {exc}. "
                  "Start `stedq serve`, pass --server HOST:PORT, or try --score-source label.", file=sys.stderr)
            client.close()
            return 3
        print(f"scoring with {info.name} {info.version} ({info.variant}) at {settings.server} over one stream")
        # a real microscope goes on when the server is down or slow: that acquisition's score is missing
        score = MissingScoreScorer(client) if args.imspector is not None else StreamScorer(client)
    else:
        def score(image, info):
            return info["label"]

    optimizer = ThompsonOptimizer(axes_from_ranges(ranges), max_bleaching=args.max_bleaching,
                                  seed=args.seed, initial_points=args.start, initial_random=args.random_start)
    best = [float("-inf")]

    def progress(step):
        if step.bleaching <= args.max_bleaching:
            best[0] = max(best[0], step.score)
        print(format_step(step, best[0]), flush=True)

    try:
        steps = run_loop(optimizer, acquire, score, args.iterations, progress)
    except QualityError as exc:
        print(f"stedq loop: scoring failed: {exc}", file=sys.stderr)
        return 3
    finally:
        if client is not None:
            score.close()
            client.close()
    recommendation = optimizer.recommendation()
    out = Path(args.out)
    plot = save_plot(out / "loop.png", steps, args.max_bleaching,
                     "server score" if args.score_source == "server" else "expert label",
                     optimizer.initial_random)
    data = save_json(out / "loop.json", steps, recommendation,
                     {"structure": args.structure, "seed": args.seed, "max_bleaching": args.max_bleaching,
                      "start": args.start or [], "random_start": args.random_start,
                      "score_source": args.score_source, "server": settings.server})
    last = steps[-4:]
    print(f"last {len(last)} acquisitions: mean {'score' if client else 'label'} "
          f"{sum(s.score for s in last) / len(last):.3f}, mean simulator label "
          f"{sum(s.label for s in last) / len(last):.3f}")
    print("recommended: " + ", ".join(f"{k} = {v:.3g}" for k, v in recommendation.items()))
    print(f"wrote {plot} and {data}")
    return 0
