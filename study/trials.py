"""Trials of one tester: every (image, system) pair once, in a random order, with the two scores on
random sides.

A trial shows one image with its target (the expert's label) and one system's prediction as "A" and
"B". The order of the trials and which score is "A" are drawn from the tester's own seed and stored
with the study, so a tester's sequence can be reproduced and audited. The random baseline (as in the
paper) predicts labels drawn from the training labels, drawn afresh for each tester.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from stedq.training.userstudy import random_baseline_predictions

NETWORK, RANDOM = "network", "random"
ANSWERS = ("A", "B", "equal", "discard")   # what the tester clicks; CHOICES is what it means


@dataclass(frozen=True)
class Trial:
    position: int        # 0-based place in the tester's sequence
    image: int           # index into the study's images
    system: str
    prediction: float
    a_is: str            # "target" or "prediction": which score is shown as "A"


def make_trials(n_images: int, predictions: Mapping[str, Sequence[float]], systems: Sequence[str],
                baseline_labels: Sequence[float], seed: int) -> list[Trial]:
    """One tester's trials. `predictions` holds one score per image for every system except "random",
    whose scores are drawn here from `baseline_labels`."""
    rng = np.random.default_rng(seed)
    scores: dict[str, np.ndarray] = {}
    for system in systems:
        if system == RANDOM:
            scores[system] = random_baseline_predictions(baseline_labels, n_images, rng)
        elif system in predictions:
            scores[system] = np.asarray(predictions[system], dtype=np.float64)
        else:
            raise ValueError(f"no predictions for system {system!r} (have: {', '.join(predictions) or 'none'})")
        if scores[system].shape != (n_images,):
            raise ValueError(f"system {system!r}: {scores[system].size} predictions for {n_images} images")
    pairs = [(image, system) for system in systems for image in range(n_images)]
    order = rng.permutation(len(pairs))
    a_is_target = rng.random(len(pairs)) < 0.5
    return [Trial(position=position, image=pairs[index][0], system=pairs[index][1],
                  prediction=float(np.clip(scores[pairs[index][1]][pairs[index][0]], 0.0, 1.0)),
                  a_is="target" if a_is_target[position] else "prediction")
            for position, index in enumerate(order)]


def choice_of(answer: str, a_is: str) -> str:
    """What a click means: "A"/"B" become "target"/"prediction" through the trial's sides."""
    if answer not in ANSWERS:
        raise ValueError(f"answer {answer!r} is not one of {', '.join(ANSWERS)}")
    if answer == "A":
        return a_is
    if answer == "B":
        return "prediction" if a_is == "target" else "target"
    return answer


def answer_for(choice: str, a_is: str) -> str:
    """The click that means `choice` (the simulated testers answer through the same path as people)."""
    if choice in ("equal", "discard"):
        return choice
    return "A" if choice == a_is else "B"
