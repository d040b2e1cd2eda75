"""Randomized STED samples ("datamaps"): molecule counts per pixel on a 224x224 grid.

Samples are drawn in nanometres (coordinates in units of PIXEL_NM = 20 nm) and rasterized at the
acquisition's pixel size (15-35 nm in real STED data; 20 nm by default): a 224 px field then covers
3.4-7.8 um of the same kind of sample, as a user zooming the scan would see it.

- actin-like: axons whose actin forms rings every ~190 nm (the membrane-associated periodic skeleton
  seen in the paper's hippocampal neurons); a ring seen from the side projects to a line across the axon,
  denser at its edges.
- axon networks: 3-7 such axons crossing and overlapping over a diffuse label, densely labelled fields
  as real axonal F-actin images show them (few empty pixels).
- dense axon networks (`--dense-axons`): the same fields as real axonal F-actin shows them at 15-20 nm,
  smooth and evenly labelled: filled shafts of uneven brightness whose ring lattice holds part of the
  label, actin patches, a diffuse label varying across the field.
- dendritic actin-like: a dendrite shaft (1-2 um wide) filled with a mesh of short, randomly oriented
  actin filaments, with brighter spine heads along its edge (the dendritic F-actin of real STED data).
- synaptic puncta: nanoclusters (~50-100 nm) of synaptic proteins (PSD95, Bassoon, Homer1c-like), one to
  four per synapse, synapses scattered along a few unseen dendrites, over a faint diffuse label.
- tubulin bundles: an axon's microtubules, 4-12 parallel filaments 30-80 nm apart following one path.
- bundle networks: 4-9 such bundles crossing and overlapping, a few single microtubules, a diffuse label:
  the densely labelled tubulin field, as axon networks are for F-actin (a kind `kind=` can ask for; not
  in the training mix, see TRAINING_KINDS).
- tubulin-like: long, gently curved filaments (microtubules, ~25 nm thick) crossing the field.
- pysted's own real-structure maps ("factin", "tubulin"), randomly flipped/rotated and rescaled, add the
  irregularity of real samples to a share of the images.

Molecule counts are kept low (a few thousand per field) because pysted's cost grows with them.
"""

from __future__ import annotations

import numpy as np

PIXEL_NM = 20.0
FIELD_PX = 224
RING_PERIOD_NM = 190.0
STRUCTURES = ("actin", "tubulin")
REAL_MAP_SHARE = 0.2   # share of samples drawn from pysted's real-structure datamaps
# The training folder ("actin", after the paper's training protein) mixes these synthetic kinds; the unseen
# "tubulin" folder keeps single filaments (and pysted's tubulin maps) only.
# Bundle networks are left out: in the mix (15 %) they cost the synthetic regression 0.872 -> 0.820 and
# changed nothing on real tubulin (docs/training.md, twelfth 2.0.0 candidate).
TRAINING_KINDS = {"rings": 0.20, "network": 0.20, "mesh": 0.25, "puncta": 0.15, "bundles": 0.20}
PIXEL_SIZES_NM = (15.0, 20.0, 25.0, 30.0, 35.0)
PYSTED_MAP_NAME = {"actin": "factin", "tubulin": "tubulin"}


def _smooth_path(rng: np.random.Generator, n_points: int, step_px: float, turn_sd: float,
                 start: np.ndarray, heading: float) -> np.ndarray:
    """Points of a smooth random curve (correlated random walk of the heading), `step_px` apart."""
    # Heading changes are smoothed so the curve bends gently rather than jittering.
    turns = np.convolve(rng.normal(0, turn_sd, n_points + 20), np.ones(20) / 20, mode="same")[:n_points]
    headings = heading + np.cumsum(turns)
    steps = step_px * np.stack([np.cos(headings), np.sin(headings)], axis=1)
    return start + np.cumsum(steps, axis=0)


def _through_field(rng: np.random.Generator, extent: float, turn_sd: float, step_px: float = 1.0) -> np.ndarray:
    """A curve that enters on one side of a field `extent` wide (20 nm units) and crosses it."""
    center = rng.uniform(0.2 * extent, 0.8 * extent, size=2)
    heading = rng.uniform(0, 2 * np.pi)
    n = int(2.0 * extent / step_px)
    forward = _smooth_path(rng, n, step_px, turn_sd, center, heading)
    backward = _smooth_path(rng, n, step_px, turn_sd, center, heading + np.pi)
    return np.concatenate([backward[::-1], center[None], forward])


def _rasterize(points: np.ndarray, pixel_nm: float = PIXEL_NM) -> np.ndarray:
    """Count molecules (coordinates in 20 nm units) per `pixel_nm` pixel; those outside the field are dropped."""
    grid = np.zeros((FIELD_PX, FIELD_PX), dtype=np.int64)
    idx = np.floor(points * (PIXEL_NM / pixel_nm)).astype(np.int64)
    inside = (idx >= 0).all(axis=1) & (idx < FIELD_PX).all(axis=1)
    np.add.at(grid, (idx[inside, 0], idx[inside, 1]), 1)
    return grid


def _diffuse_label(rng: np.random.Generator, extent: float, low: float, high: float) -> np.ndarray:
    """Molecules scattered uniformly over the field (low-high per 224 px field at 20 nm): unspecific label."""
    return rng.uniform(0, extent, (rng.poisson(rng.uniform(low, high) * (extent / FIELD_PX) ** 2), 2))


def _frame(path: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit tangents and normals along a path."""
    tangents = np.gradient(path, axis=0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    return tangents, np.stack([-tangents[:, 1], tangents[:, 0]], axis=1)


def _ringed_axon(rng: np.random.Generator, extent: float, width_px: float) -> list[np.ndarray]:
    """One axon crossing the field with a periodic ring lattice (~190 nm), random bend, ring density and gaps."""
    points = []
    path = _through_field(rng, extent, turn_sd=rng.uniform(0.002, 0.02))
    period_px = rng.normal(RING_PERIOD_NM, 6) / PIXEL_NM
    per_ring = rng.uniform(0.8, 2.0) * width_px         # molecules per ring
    tangents, normals = _frame(path)
    phase = rng.uniform(0, period_px)
    for k in np.arange(phase, len(path) - 1, period_px):
        i = int(k)
        if rng.random() < 0.08:                         # a missing ring, as in real lattices
            continue
        n = rng.poisson(per_ring * rng.uniform(0.6, 1.4))
        # A ring seen from the side: x = r sin(theta) is densest at the membrane edges.
        across = 0.5 * width_px * np.sin(rng.uniform(-np.pi / 2, np.pi / 2, n))
        along = rng.normal(0, 0.6, n)                   # ~25 nm ring thickness
        points.append(path[i] + across[:, None] * normals[i] + along[:, None] * tangents[i])
    # Sparse actin between the rings (and the axon's faint outline).
    n_between = rng.poisson(0.25 * len(path) * width_px / period_px)
    t = rng.integers(0, len(path), n_between)
    across = 0.5 * width_px * rng.uniform(-1, 1, n_between)
    points.append(path[t] + across[:, None] * normals[t])
    return points


def actin_rings(rng: np.random.Generator, extent: float) -> np.ndarray:
    """1-2 axons with a periodic ring lattice, 360-800 nm wide."""
    return np.concatenate([part for _ in range(rng.choice([1, 1, 2]))
                           for part in _ringed_axon(rng, extent, rng.uniform(18, 40))])


def axon_network(rng: np.random.Generator, extent: float) -> np.ndarray:
    """A densely labelled field, as axonal F-actin in cultured neurons is usually imaged: 3-7 ringed axons
    crossing and overlapping (300-700 nm wide), over a diffuse label of the tissue around them. Few
    pixels are empty and the median count is structure, not background (the sparse kinds are 50-80 %
    empty)."""
    points = [part for _ in range(int(rng.integers(3, 8)))
              for part in _ringed_axon(rng, extent, rng.uniform(15, 35))]
    points.append(_diffuse_label(rng, extent, 300, 1500))
    return np.concatenate(points)


def _smooth_density(rng: np.random.Generator, extent: float, scale_px: float, spread: float):
    """A positive density over the field (mean ~1) varying smoothly over ~`scale_px` (20 nm units): the
    uneven labelling and out-of-plane tissue of a real sample, log-normal with log-sd `spread`."""
    from scipy.ndimage import gaussian_filter

    cells = int(np.ceil(extent / 2))                            # 40 nm cells
    log_density = gaussian_filter(rng.normal(size=(cells, cells)), scale_px / 2, mode="wrap")
    log_density *= spread / max(float(log_density.std()), 1e-12)
    return np.exp(log_density)


def _sample_density(rng: np.random.Generator, density: np.ndarray, n: int) -> np.ndarray:
    """`n` molecules placed in the 40 nm cells of `density` in proportion to it (uniform within a cell)."""
    cells = rng.choice(density.size, size=n, p=(density / density.sum()).ravel())
    return 2.0 * (np.stack(np.unravel_index(cells, density.shape), axis=1) + rng.uniform(0, 1, (n, 2)))


def _filled_axon(rng: np.random.Generator, extent: float, width_px: float, ring_share: float) -> list[np.ndarray]:
    """One axon as a dense field shows it: a shaft filled with actin whose density drifts along the axon
    (over ~0.5-1.5 um) and a few brighter patches, with the ring lattice carrying `ring_share` of it."""
    path = _through_field(rng, extent, turn_sd=rng.uniform(0.002, 0.02))
    tangents, normals = _frame(path)
    brightness = rng.lognormal(0.0, 0.5)                        # axons differ in how much label they hold
    per_px = brightness * rng.uniform(0.8, 1.6) * width_px / 9.5   # molecules per 20 nm of axon length
    drift = np.convolve(rng.normal(0, 1, len(path) + 150), np.ones(150) / np.sqrt(150), mode="same")[:len(path)]
    along = np.exp(0.4 * drift)
    # The shaft: positions across a filled cylinder's projection, denser where the drift is high.
    n_fill = rng.poisson((1 - ring_share) * per_px * len(path))
    t = rng.choice(len(path), n_fill, p=along / along.sum())
    across = 0.5 * width_px * np.sqrt(rng.uniform(0, 1, n_fill)) * np.cos(rng.uniform(0, 2 * np.pi, n_fill))
    points = [path[t] + across[:, None] * normals[t] + rng.normal(0, 0.5, (n_fill, 2))]
    # The ring lattice (~190 nm), a missing ring now and then; a ring seen from the side is densest at the edges.
    period_px = rng.normal(RING_PERIOD_NM, 6) / PIXEL_NM
    for k in np.arange(rng.uniform(0, period_px), len(path) - 1, period_px):
        i = int(k)
        if rng.random() < 0.08:
            continue
        n = rng.poisson(ring_share * per_px * period_px * along[i])
        across = 0.5 * width_px * np.sin(rng.uniform(-np.pi / 2, np.pi / 2, n))
        points.append(path[i] + across[:, None] * normals[i] + rng.normal(0, 0.6, n)[:, None] * tangents[i])
    for _ in range(rng.poisson(len(path) / 150)):               # actin patches, 80-200 nm
        i = int(rng.integers(len(path)))
        centre = path[i] + 0.4 * width_px * rng.uniform(-1, 1) * normals[i]
        n = rng.poisson(brightness * rng.uniform(15, 50))
        points.append(centre + rng.normal(0, rng.uniform(2, 5), (n, 2)))
    return points


def dense_axon_network(rng: np.random.Generator, extent: float) -> np.ndarray:
    """Axonal F-actin as a densely labelled field (the `--dense-axons` data): 4-9 axons 300-700 nm wide,
    crossing and overlapping, each a filled shaft of uneven brightness whose ring lattice holds 20-60 % of
    its label, over a diffuse label that varies across the field (~1 um). Its autocorrelation falls to
    half at ~10 px at 20 nm and the median pixel is ~10-15 % of the bright signal, where `axon_network`'s
    sharp lattices give 4 px and 6 % (docs/training.md)."""
    ring_share = rng.uniform(0.2, 0.6)
    points = [part for _ in range(int(rng.integers(4, 10)))
              for part in _filled_axon(rng, extent, rng.uniform(15, 35), ring_share)]
    points.append(_uneven_diffuse_label(rng, extent, 1500, 4000))
    return np.concatenate(points)


def _uneven_diffuse_label(rng: np.random.Generator, extent: float, low: float, high: float) -> np.ndarray:
    """Unspecific label (low-high molecules per 224 px field at 20 nm) whose density varies smoothly across
    the field (~0.5-1.2 um, log-sd 0.3-0.8), as labelling and out-of-plane tissue vary in a real sample."""
    density = _smooth_density(rng, extent, rng.uniform(25, 60), rng.uniform(0.3, 0.8))
    return _sample_density(rng, density, rng.poisson(rng.uniform(low, high) * (extent / FIELD_PX) ** 2))


def actin_mesh(rng: np.random.Generator, extent: float) -> np.ndarray:
    """A dendrite: a curved shaft filled with short filaments at random angles, and spine heads on its edge."""
    path = _through_field(rng, extent, turn_sd=rng.uniform(0.002, 0.015))
    width_px = rng.uniform(40, 90)                              # 0.8-1.8 um dendrite
    _, normals = _frame(path)
    points = []
    for _ in range(int(rng.integers(800, 1600))):               # filaments of 100-400 nm
        i = int(rng.integers(len(path)))
        u = rng.uniform(-1, 1)                                  # cortical actin: denser under the membrane
        centre = path[i] + 0.5 * width_px * np.sign(u) * abs(u) ** 0.35 * normals[i]
        angle, length = rng.uniform(0, np.pi), rng.uniform(5, 20)
        n = rng.poisson(length * rng.uniform(0.8, 1.6))
        t = rng.uniform(-0.5, 0.5, n) * length
        points.append(centre + t[:, None] * np.array([np.cos(angle), np.sin(angle)]) + rng.normal(0, 0.5, (n, 2)))
    for _ in range(int(rng.integers(3, 12))):                   # spine heads: dense actin puncta
        i = int(rng.integers(len(path)))
        side = rng.choice([-1.0, 1.0])
        centre = path[i] + side * (0.5 * width_px + rng.uniform(5, 25)) * normals[i]
        n = rng.poisson(rng.uniform(40, 160))
        points.append(centre + rng.normal(0, rng.uniform(2, 5), (n, 2)))
    return np.concatenate(points)


def synapse_puncta(rng: np.random.Generator, extent: float) -> np.ndarray:
    """Synapses along 1-3 (unlabelled) dendrites: 1-4 nanoclusters each, over a faint diffuse label."""
    points = []
    for _ in range(int(rng.integers(1, 4))):
        path = _through_field(rng, extent, turn_sd=rng.uniform(0.002, 0.02))
        _, normals = _frame(path)
        for _ in range(int(rng.poisson(rng.uniform(6, 14) * extent / FIELD_PX))):
            i = int(rng.integers(len(path)))
            synapse = path[i] + rng.normal(0, 25) * normals[i]         # spines up to ~0.5 um off the shaft
            for _ in range(int(rng.integers(1, 5))):                    # nanoclusters ~50-100 nm, ~80 nm apart
                centre = synapse + rng.normal(0, 4, 2)
                n = rng.poisson(rng.uniform(15, 60))
                points.append(centre + rng.normal(0, rng.uniform(1.0, 2.2), (n, 2)))
    points.append(_diffuse_label(rng, extent, 100, 400))
    return np.concatenate(points)


def _microtubule_bundle(rng: np.random.Generator, extent: float) -> list[np.ndarray]:
    """One axon's microtubules crossing the field: 4-12 parallel filaments, 30-80 nm apart, each wandering."""
    points = []
    path = _through_field(rng, extent, turn_sd=rng.uniform(0.002, 0.015), step_px=0.5)
    _, normals = _frame(path)
    n_tubes = int(rng.integers(4, 13))
    spacing = rng.uniform(1.5, 4.0)
    offsets = (np.arange(n_tubes) - (n_tubes - 1) / 2) * spacing
    for offset in offsets:
        wander = np.convolve(rng.normal(0, 0.6, len(path) + 200), np.ones(200) / 14, mode="same")[:len(path)]
        keep = rng.random(len(path)) < rng.uniform(0.4, 1.1) * 0.5
        line = path + (offset + wander)[:, None] * normals
        points.append(line[keep] + rng.normal(0, 0.5, (int(keep.sum()), 2)))
    return points


def tubulin_bundles(rng: np.random.Generator, extent: float) -> np.ndarray:
    """1-2 axons, each a bundle of microtubules along one path."""
    return np.concatenate([part for _ in range(int(rng.choice([1, 1, 2])))
                           for part in _microtubule_bundle(rng, extent)])


def _crossing_bundles(rng: np.random.Generator, extent: float, fewest: int, most: int) -> list[np.ndarray]:
    """`fewest`-`most` axons' microtubule bundles crossing the field and 0-3 single microtubules."""
    points = [part for _ in range(int(rng.integers(fewest, most + 1))) for part in _microtubule_bundle(rng, extent)]
    for _ in range(int(rng.integers(0, 4))):
        path = _through_field(rng, extent, turn_sd=rng.uniform(0.005, 0.04), step_px=0.5)
        keep = rng.random(len(path)) < rng.uniform(0.4, 1.1)
        points.append(path[keep] + rng.normal(0, 0.5, (int(keep.sum()), 2)))
    return points


def bundle_network(rng: np.random.Generator, extent: float) -> np.ndarray:
    """A densely labelled tubulin field: 4-9 axons' microtubule bundles crossing and overlapping, with a
    few single microtubules between them, over a diffuse label (as axon_network is for F-actin)."""
    points = _crossing_bundles(rng, extent, 4, 9)
    points.append(_diffuse_label(rng, extent, 300, 1500))
    return np.concatenate(points)


def dense_bundle_network(rng: np.random.Generator, extent: float) -> np.ndarray:
    """Axonal tubulin as a densely labelled field (the `--dense-bundles` data): 3-7 microtubule bundles
    crossing and single microtubules over a strong, uneven diffuse label (its median pixel ~20 %
    (17-33 %) of the bright signal, where bundle_network's uniform label gives ~11 % and tubulin_bundles
    0 %); autocorrelation half-width ~13 px at 20 nm."""
    points = _crossing_bundles(rng, extent, 3, 7)
    points.append(_uneven_diffuse_label(rng, extent, 6000, 12000))
    return np.concatenate(points)


def tubulin_filaments(rng: np.random.Generator, extent: float) -> np.ndarray:
    """3-10 gently curved filaments crossing the field, with labelling density varying along them."""
    points = []
    for _ in range(rng.integers(3, 11)):
        path = _through_field(rng, extent, turn_sd=rng.uniform(0.005, 0.04), step_px=0.5)
        density = rng.uniform(0.8, 2.2)                     # molecules per pixel of length
        keep = rng.random(len(path)) < density * 0.5
        segment = path[keep]
        jitter = rng.normal(0, 0.5, segment.shape)          # ~25 nm microtubule diameter
        points.append(segment + jitter)
    return np.concatenate(points)


def pysted_real_map(structure: str, rng: np.random.Generator, pixel_nm: float = PIXEL_NM) -> np.ndarray:
    """One of pysted's real-structure datamaps (20 nm pixels), flipped/rotated, zoomed to `pixel_nm`
    (mirrored past its edge when the field grows), scaled to a few thousand molecules per 20 nm field."""
    from pysted.data.loader import DatamapLoader
    from scipy.ndimage import zoom

    maps = DatamapLoader(PYSTED_MAP_NAME[structure])
    base = maps[int(rng.integers(len(maps)))]
    base = np.rot90(base, int(rng.integers(4)))
    if rng.random() < 0.5:
        base = base[:, ::-1]
    total = rng.uniform(2500, 5000) * (pixel_nm / PIXEL_NM) ** 2
    if pixel_nm != PIXEL_NM:
        base = np.clip(zoom(np.asarray(base, np.float64), PIXEL_NM / pixel_nm, order=1), 0, None)
        if base.shape[0] < FIELD_PX:
            base = np.pad(base, (0, FIELD_PX - base.shape[0]), mode="symmetric")
        base = base[:FIELD_PX, :FIELD_PX]
    expected = base / max(float(base.sum()), 1e-9) * total
    return rng.poisson(expected).astype(np.int64)


# `stedq data synth --dense-axons / --dense-bundles`: a kind of the training mix -> its dense-field twin.
DENSE_FIELDS = {"axons": ("network", "dense-network"), "bundles": ("bundles", "dense-bundle-network")}
GENERATORS = {"rings": actin_rings, "network": axon_network, "dense-network": dense_axon_network,
              "mesh": actin_mesh, "puncta": synapse_puncta, "bundles": tubulin_bundles, "bundle-network": bundle_network,
              "dense-bundle-network": dense_bundle_network, "filaments": tubulin_filaments}


def random_datamap(structure: str, rng: np.random.Generator, pixel_nm: float = PIXEL_NM,
                   kind: str | None = None, dense: tuple[str, ...] = ()) -> tuple[np.ndarray, str]:
    """(molecule counts per `pixel_nm` pixel, source) for one randomized sample of `structure`;
    `kind` forces one synthetic generator (GENERATORS), as the contact sheets do; `dense` names the mix's
    kinds drawn as dense fields instead (DENSE_FIELDS: "axons", "bundles"), every other kind as before."""
    if structure not in STRUCTURES:
        raise ValueError(f"unknown structure {structure!r}; choose one of {', '.join(STRUCTURES)}")
    extent = FIELD_PX * pixel_nm / PIXEL_NM
    if kind is None:
        if rng.random() < REAL_MAP_SHARE:
            return pysted_real_map(structure, rng, pixel_nm), f"pysted-{PYSTED_MAP_NAME[structure]}"
        kind = "filaments" if structure == "tubulin" else \
            str(rng.choice(list(TRAINING_KINDS), p=list(TRAINING_KINDS.values())))
        kind = next((dense_kind for name, (mix_kind, dense_kind) in DENSE_FIELDS.items()
                     if name in dense and kind == mix_kind), kind)
    return _rasterize(GENERATORS[kind](rng, extent), pixel_nm), f"synthetic-{kind}"
