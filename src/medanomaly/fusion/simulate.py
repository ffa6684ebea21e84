"""Lesions simulated consistently in two real MRI contrasts (labelled synthetic).

The anatomy is real: ITK's co-registered T1 and proton-density (PD) slices of one subject
(``itk/BrainT1Slice.png``, ``itk/BrainProtonDensitySlice.png``). Every sample is a 64x64 crop of
the pair, cut after the *same* random rotation, scale and flip in both contrasts, so the
contrasts stay registered. Half the samples receive a lesion: **one mask**, inserted in both
contrasts with **modality-specific contrast**:

* ``"T1"`` lesions (like T1-bright subacute blood or fat): hyper-intense in T1, within a few
  percent of the surrounding tissue in PD;
* ``"PD"`` lesions (like oedema): hyper-intense in PD, within a few percent in T1;
* ``"both"`` lesions (a minority): moderately bright in both.

(Hyper-intense in both cases: dark lesions hide among dark sulci and CSF, and a network trained
in seconds on a few hundred crops does not find them; the fusion question does not need them.)

So a single-contrast model can only find the lesions its contrast shows, and fusion has
something to gain. Noise is added per contrast after insertion. Everything here is synthetic
and every output says so (``synthetic=True``).

Split without leakage of lesions and with little leakage of anatomy: crop centres of the
``"train"``/``"val"`` splits lie in the image's left half, those of ``"test"`` in the right half.
(One subject only: the anatomy is shared across splits; the lesions never are.)

Random = sample parameters, then apply the deterministic op, and record what was applied
(:class:`SimulatedLesion`), as TorchIO does.

Example:
    >>> from medanomaly.fusion.simulate import simulate_pairs
    >>> data = simulate_pairs(8, split="train", seed=0)  # doctest: +SKIP
    >>> data.images.shape, data.modalities  # doctest: +SKIP
    ((8, 2, 64, 64), ('T1', 'PD'))
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from medanomaly.errors import InputError
from medanomaly.jsonio import write_text_atomic

MODALITIES = ("T1", "PD")
SPLITS = ("train", "val", "test")
LESION_TYPES = ("T1", "PD", "both")


@dataclass(frozen=True)
class SimulatedLesion:
    """What was inserted into one sample (crop pixel coordinates).

    Attributes:
        center_yx: lesion centre in the crop, pixels.
        radii_yx: ellipse semi-axes, pixels (1 pixel = 1 mm on the ITK slices).
        angle_deg: ellipse orientation.
        visible_in: ``"T1"``, ``"PD"`` or ``"both"``: where the contrast is strong.
        contrast: relative intensity change per modality (-0.4 = 40 % darker).
    """

    center_yx: tuple[float, float]
    radii_yx: tuple[float, float]
    angle_deg: float
    visible_in: str
    contrast: tuple[tuple[str, float], ...]


@dataclass(frozen=True, eq=False)
class MultiContrastSet:
    """Simulated paired samples.

    Attributes:
        images: (N, 2, size, size) float32, channels in ``modalities`` order, z-scored per crop.
        labels: (N,) int64, 1 = lesion inserted.
        masks: (N, size, size) uint8 lesion masks (all zero for normal samples).
        lesions: per sample, the :class:`SimulatedLesion` applied, or None.
        modalities: channel names, ``("T1", "PD")``.
        split: which split these samples were drawn for.
        synthetic: always True: numbers measured on this data are synthetic.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    lesions: tuple[SimulatedLesion | None, ...]
    modalities: tuple[str, ...] = MODALITIES
    split: str = "train"
    synthetic: bool = True

    @property
    def visible_in(self) -> np.ndarray:
        """Per sample: ``"none"``, ``"T1"``, ``"PD"`` or ``"both"``."""
        return np.asarray([les.visible_in if les else "none" for les in self.lesions])

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@lru_cache(maxsize=1)
def load_brain_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The real T1 and PD slices (float32 in [0, 1], 217x181, 1 mm) and their brain/head mask."""
    from scipy.ndimage import binary_erosion, binary_fill_holes
    from skimage.filters import threshold_otsu

    from medanomaly.data.sources import real_data
    from medanomaly.fusion.registration import load_scalar

    t1 = load_scalar(real_data("itk/BrainT1Slice.png")).array[0] / 255.0
    pd = load_scalar(real_data("itk/BrainProtonDensitySlice.png")).array[0] / 255.0
    mask = binary_fill_holes(pd > threshold_otsu(pd))
    mask = binary_erosion(mask, iterations=6)
    return t1.astype(np.float32), pd.astype(np.float32), mask


def _crop_matrix(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    angle = rng.uniform(-180.0, 180.0)
    scale = rng.uniform(0.9, 1.1)
    flip = bool(rng.integers(2))
    theta = np.radians(angle)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    matrix = rot / scale
    if flip:
        matrix = matrix @ np.diag([1.0, -1.0])
    return matrix, {"angle_deg": angle, "scale": scale, "flip": float(flip)}


def crop_pair(
    images: tuple[np.ndarray, ...], center_yx: tuple[float, float], matrix: np.ndarray, size: int
) -> list[np.ndarray]:
    """Deterministic: sample each image on the same rotated/scaled/flipped ``size`` grid at a centre."""
    from scipy.ndimage import affine_transform

    half = (size - 1) / 2.0
    offset = np.asarray(center_yx) - matrix @ np.array([half, half])
    return [
        affine_transform(img, matrix, offset=offset, output_shape=(size, size), order=1, mode="constant")
        for img in images
    ]


def lesion_mask(size: int, lesion: SimulatedLesion) -> np.ndarray:
    """Deterministic soft ellipse (0..1) drawn from a lesion record."""
    from scipy.ndimage import gaussian_filter

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = lesion.center_yx
    ry, rx = lesion.radii_yx
    t = np.radians(lesion.angle_deg)
    dy, dx = yy - cy, xx - cx
    u = dy * np.cos(t) + dx * np.sin(t)
    v = -dy * np.sin(t) + dx * np.cos(t)
    hard = ((u / ry) ** 2 + (v / rx) ** 2) <= 1.0
    return np.clip(gaussian_filter(hard.astype(np.float64), 1.0), 0.0, 1.0)


def insert_lesion(crops: dict[str, np.ndarray], lesion: SimulatedLesion) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Deterministic: one mask, a relative intensity change per modality. Returns (crops, hard mask)."""
    size = next(iter(crops.values())).shape[0]
    soft = lesion_mask(size, lesion)
    contrast = dict(lesion.contrast)
    out = {name: (img * (1.0 + contrast.get(name, 0.0) * soft)).astype(np.float32) for name, img in crops.items()}
    return out, (soft >= 0.5).astype(np.uint8)


def sample_lesion(
    rng: np.random.Generator, tissue: np.ndarray, strong: tuple[float, float], weak: float, p_both: float
) -> SimulatedLesion:
    """Draw a lesion's parameters: centre inside tissue, radius 3-7 px, which contrast shows it."""
    size = tissue.shape[0]
    ys, xs = np.nonzero(tissue[8 : size - 8, 8 : size - 8])
    if len(ys):
        k = rng.integers(len(ys))
        center = (float(ys[k] + 8), float(xs[k] + 8))
    else:
        center = (size / 2.0, size / 2.0)
    radii = (float(rng.uniform(3.0, 7.0)), float(rng.uniform(3.0, 7.0)))
    kind = "both" if rng.random() < p_both else str(rng.choice(["T1", "PD"]))
    a_strong = float(rng.uniform(*strong))
    a_weak = float(rng.uniform(0.0, weak))
    sign = 1.0 if rng.random() < 0.5 else -1.0  # the weak contrast may go either way
    if kind == "T1":
        contrast = (("T1", a_strong), ("PD", sign * a_weak))
    elif kind == "PD":
        contrast = (("T1", sign * a_weak), ("PD", a_strong))
    else:
        contrast = (("T1", 0.6 * a_strong), ("PD", 0.6 * a_strong))
    return SimulatedLesion(center, radii, float(rng.uniform(0, 180)), kind, contrast)


def simulate_pairs(
    n: int,
    split: str = "train",
    seed: int = 0,
    size: int = 64,
    lesion_fraction: float = 0.5,
    strong_contrast: tuple[float, float] = (0.6, 1.0),
    weak_contrast: float = 0.05,
    p_both: float = 0.2,
    noise: float = 0.04,
) -> MultiContrastSet:
    """Simulate ``n`` co-registered T1/PD crops, a fraction with a lesion (labelled synthetic).

    Args:
        n: number of samples.
        split: ``"train"``/``"val"`` (crop centres in the left half) or ``"test"`` (right half).
        seed: the random seed (different splits should use different seeds too).
        size: crop side, pixels (1 mm).
        lesion_fraction: probability that a sample has a lesion (label 1).
        strong_contrast: range of the relative change in the contrast that shows the lesion.
        weak_contrast: maximum relative change in the other contrast.
        p_both: probability that a lesion is moderately visible in both contrasts.
        noise: Gaussian noise standard deviation, relative to the [0, 1] image range.

    Raises:
        InputError: unknown split or a non-positive ``n``/``size``.
    """
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    if n <= 0 or size < 24:
        raise InputError(f"need n > 0 and size >= 24, got n={n}, size={size}")
    t1, pd, mask = load_brain_pair()
    half = mask.shape[1] // 2
    region = mask.copy()
    if split == "test":
        region[:, :half] = False
    else:
        region[:, half:] = False
    ys, xs = np.nonzero(region)
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    images = np.zeros((n, len(MODALITIES), size, size), np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    labels = (rng.random(n) < lesion_fraction).astype(np.int64)
    lesions: list[SimulatedLesion | None] = []
    for i in range(n):
        k = rng.integers(len(ys))
        matrix, _ = _crop_matrix(rng)
        c_t1, c_pd, c_mask = crop_pair((t1, pd, mask.astype(np.float32)), (ys[k], xs[k]), matrix, size)
        crops = {"T1": c_t1, "PD": c_pd}
        lesion = None
        if labels[i]:
            lesion = sample_lesion(rng, c_mask > 0.5, strong_contrast, weak_contrast, p_both)
            crops, masks[i] = insert_lesion(crops, lesion)
        lesions.append(lesion)
        for c, name in enumerate(MODALITIES):
            noisy = crops[name] + rng.normal(0.0, noise, crops[name].shape)
            images[i, c] = (noisy - noisy.mean()) / (noisy.std() + 1e-6)
    return MultiContrastSet(images, labels, masks, tuple(lesions), MODALITIES, split)


def write_manifest(data: MultiContrastSet, folder: str | Path, prefix: str = "sim") -> Path:
    """Write a simulated set as NRRD pairs plus a ``patient_id,t1_path,pd_path,label`` manifest.

    Each image carries ``modality=MR`` and ``synthetic`` in its metadata. Returns the manifest path.
    """
    from medanomaly.io import write
    from medanomaly.types import Volume

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["patient_id,t1_path,pd_path,label"]
    for i in range(len(data)):
        pid = f"{prefix}{i:04d}"
        names = []
        for c, name in enumerate(data.modalities):
            file = f"{pid}_{name.lower()}.nrrd"
            write(Volume(data.images[i, c], meta={"modality": "MR", "synthetic": True}), folder / file)
            names.append(file)
        lines.append(f"{pid},{names[0]},{names[1]},{int(data.labels[i])}")
    manifest = folder / "manifest.csv"
    write_text_atomic(manifest, "\n".join(lines) + "\n")
    return manifest
