"""Training patches on the detector grid, drawn from simulated scans.

Each simulated scan is resampled once to the detector grid (:class:`GridScan`). A batch mixes
three kinds of patch centres (fractions from the config):

* **positive**: a random voxel of an inserted nodule (so large nodules are seen off-centre too);
* **hard negative**: a random lung voxel denser than -500 HU (vessels, fissures, the pleura:
  what nodules are confused with), or, once :meth:`PatchSampler.set_mined` gave a scan a pool, with
  probability ``mined_fraction`` one of the network's own false positives there (:mod:`medanomaly.detect.mining`);
* **random**: any voxel of the training lung.

A patch is rejected when it touches the exclusion zone (real lesions + margin), so real lesions
never appear in training material; the number of tries is bounded, and a patch size or margin
that leaves no admissible patch is refused in one line naming the keys to change. Augmentation: flips along x and y, 90-degree in-plane
rotations, and a small HU offset (+-20 HU).

Example:
    >>> import numpy as np
    >>> img = np.zeros((8, 32, 32), np.float32); tgt = np.zeros_like(img, dtype=np.uint8)
    >>> tgt[4, 16, 16] = 1
    >>> scan = GridScan("toy", img, tgt, np.ones_like(tgt, bool), np.zeros_like(tgt, bool), img)
    >>> x, y = PatchSampler([scan], (4, 16, 16)).sample(np.random.default_rng(0), 2)
    >>> x.shape, y.shape
    ((2, 1, 4, 16, 16), (2, 1, 4, 16, 16))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medanomaly.detect.config import TrainConfig
from medanomaly.detect.grid import to_grid, window
from medanomaly.detect.simulate import SimScan
from medanomaly.errors import InputError

__all__ = ["GridScan", "PatchSampler", "to_grid_scan"]

HARD_NEGATIVE_HU = -500.0

#: Draws allowed per patch before the sampler gives up (with at least ``MIN_TRIES`` per batch).
TRIES_PER_PATCH = 200
MIN_TRIES = 2000

_DEFAULTS = TrainConfig()  # the config is the one source of the patch-mix defaults


@dataclass(frozen=True, eq=False)
class GridScan:
    """A simulated scan on the detector grid (all arrays (z, y, x)).

    Attributes:
        name: scan name.
        image: windowed CT in [0, 1], float32.
        target: nodule mask (0/1), uint8.
        allowed: voxels that may be patch centres (the training lung minus the exclusion zone).
        exclude: exclusion zone (real lesions + margin); patches touching it are rejected.
        hu: CT in HU on the grid (for hard-negative mining), float32.
    """

    name: str
    image: np.ndarray
    target: np.ndarray
    allowed: np.ndarray
    exclude: np.ndarray
    hu: np.ndarray


def to_grid_scan(scan: SimScan, spacing: tuple[float, float, float], hu_window: tuple[float, float]) -> GridScan:
    """Resample a :class:`SimScan` (CT, nodule labels, lung side, exclusion) to the detector grid."""
    ct = to_grid(scan.ct, spacing)
    hu = np.asarray(ct.array, np.float32)
    labels = np.asarray(to_grid(scan.labels, spacing, nearest=True).array)
    target = labels > 0
    keep_every_nodule(target, labels, ct, scan.truths)
    lung = np.asarray(to_grid(scan.source.lung, spacing, nearest=True).array) == scan.side
    if scan.source.exclude is not None:
        exclude = np.asarray(to_grid(scan.source.exclude, spacing, nearest=True).array) > 0
    else:
        exclude = np.zeros(hu.shape, bool)
    return GridScan(
        name=scan.name,
        image=window(hu, *hu_window),
        target=target.astype(np.uint8),
        allowed=lung & ~exclude,
        exclude=exclude,
        hu=hu,
    )


def keep_every_nodule(target: np.ndarray, labels: np.ndarray, grid: Any, truths: list[Any]) -> int:
    """Give every nodule at least the grid voxel at its centre in ``target`` (in place); returns how many needed it.

    Labels resampled by nearest neighbour can lose a nodule smaller than the grid's voxels altogether (a 3.3 mm
    nodule on 1.25 x 1.25 x 5 mm voxels: 5 of 295 training nodules of a full run), and training then teaches that
    it is background; the hard-negative sampler may even centre patches on it. ``labels`` holds nodule ``i`` of
    ``truths`` as ``i + 1`` on ``grid`` (a Volume), as the simulations write them.
    """
    restored = 0
    for i, truth in enumerate(truths):
        if (labels == i + 1).any():
            continue
        zyx = np.rint(np.asarray(grid.physical_to_index(truth.center_mm))[::-1]).astype(int)
        if np.all(zyx >= 0) and np.all(zyx < np.asarray(target.shape)):
            target[tuple(zyx)] = True
            restored += 1
    return restored


class PatchSampler:
    """Draws augmented (image, target) patch batches from :class:`GridScan` s.

    Args:
        scans: scans on the detector grid.
        patch_size: (z, y, x) voxels.
        positive_fraction: share of patches centred on a nodule voxel.
        hard_negative_fraction: share centred on dense lung voxels (> -500 HU) outside nodules.
        hard_level: the ``hu`` value above which an allowed voxel outside the target is a hard
            negative (default -500 HU; a 2D detector passes a level in its own intensity unit).
        per_lesion: positive centres pick a lesion (connected component of the target) uniformly,
            then one of its voxels, so a 4 mm nodule is drawn as often as a 25 mm one (False: a
            voxel of any lesion, which favours large lesions by their volume).
        mined_fraction: share of a scan's hard-negative patches centred on its mined false positives once it has
            any (:meth:`set_mined`); until then, and with 0, the sampler draws exactly as without mining.
        hard_positive_weight: with ``per_lesion``, a nodule whose highest probability at the last mining round was
            under the mining level (:meth:`set_lesion_peaks`: one the network misses) is drawn this many times as
            often as one it finds; 1 (or before any round) draws every nodule equally, exactly as without it.
    """

    def __init__(
        self,
        scans: list[GridScan],
        patch_size: tuple[int, int, int],
        positive_fraction: float = _DEFAULTS.positive_fraction,
        hard_negative_fraction: float = _DEFAULTS.hard_negative_fraction,
        hard_level: float = HARD_NEGATIVE_HU,
        per_lesion: bool = False,
        mined_fraction: float = _DEFAULTS.mined_fraction,
        hard_positive_weight: float = 1.0,
    ) -> None:
        self.scans = scans
        self.patch_size = tuple(int(p) for p in patch_size)
        self.positive_fraction = positive_fraction
        self.hard_negative_fraction = hard_negative_fraction
        self._pos = [np.argwhere(s.target > 0) for s in scans]
        self._lesions = [_lesion_voxels(s.target) for s in scans] if per_lesion else None
        self._hard = [np.argwhere(s.allowed & (s.hu > hard_level) & (s.target == 0)) for s in scans]
        self._any = [np.argwhere(s.allowed) for s in scans]
        self.mined_fraction = mined_fraction
        self._mined = [np.empty((0, 3), np.int64) for _ in scans]
        self.hard_positive_weight = float(hard_positive_weight)
        self._lesion_p: list[np.ndarray | None] = [None for _ in scans]
        if not any(len(p) for p in self._any):
            raise ValueError("no voxel may be a patch centre (empty lungs or everything excluded)")

    def set_mined(self, index: int, centres: np.ndarray) -> None:
        """Replace scan ``index``'s pool of mined false-positive centres ((k, 3) voxels, z, y, x); only the
        scan's admissible voxels are kept."""
        centres = np.asarray(centres, np.int64).reshape(-1, 3)
        if len(centres):
            centres = centres[self.scans[index].allowed[tuple(centres.T)]]
        self._mined[index] = centres

    def set_lesion_peaks(self, index: int, prob: np.ndarray, level: float) -> int | None:
        """Weigh scan ``index``'s nodules by the network's heatmap ``prob`` on it (same grid): those whose
        highest probability is under ``level`` get ``hard_positive_weight``. Returns how many are under it (None
        for a sampler without ``per_lesion``, which does not know its nodules one by one)."""
        if self._lesions is None:
            return None
        if not self._lesions[index]:
            return 0
        peaks = np.array([float(prob[tuple(vox.T)].max()) for vox in self._lesions[index]])
        missed = peaks < level
        if self.hard_positive_weight != 1.0:
            weights = np.where(missed, self.hard_positive_weight, 1.0)
            self._lesion_p[index] = weights / weights.sum()
        return int(missed.sum())

    def _lesion_pool(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """The voxels of one nodule of scan ``index``: uniformly, or by the weights :meth:`set_lesion_peaks` set."""
        lesions, p = self._lesions[index], self._lesion_p[index]  # type: ignore[index]
        return lesions[rng.integers(len(lesions)) if p is None else rng.choice(len(lesions), p=p)]

    def _hard_pool(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """The centres of a hard-negative draw: the scan's mined false positives with probability ``mined_fraction``
        (or always when it has no dense voxel), else its dense lung voxels (empty: a random patch instead). The
        generator is only drawn from when the scan has a mined pool and ``mined_fraction`` > 0, so a sampler without
        mining draws as before."""
        mined, dense = self._mined[index], self._hard[index]
        if len(mined) == 0 or self.mined_fraction == 0:
            return dense
        if len(dense) == 0 or rng.random() < self.mined_fraction:
            return mined
        return dense

    def _box(self, scan: GridScan, centre: np.ndarray, rng: np.random.Generator) -> tuple[slice, ...]:
        size = np.array(self.patch_size)
        jitter = rng.integers(-(size // 4), size // 4 + 1)
        start = centre + jitter - size // 2
        start = np.clip(start, 0, np.maximum(np.array(scan.image.shape) - size, 0))
        return tuple(slice(int(a), int(a + n)) for a, n in zip(start, size, strict=True))

    def _crop(self, array: np.ndarray, box: tuple[slice, ...], fill: float) -> np.ndarray:
        out = np.full(self.patch_size, fill, dtype=array.dtype)
        part = array[box]
        out[tuple(slice(0, n) for n in part.shape)] = part
        return out

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """One batch: images (B, 1, z, y, x) float32 and targets (B, 1, z, y, x) float32.

        Raises:
            InputError: no admissible patch (clear of the exclusion zone) in a bounded number of tries.
        """
        xs, ys = [], []
        tries, limit = 0, max(MIN_TRIES, TRIES_PER_PATCH * batch_size)
        while len(xs) < batch_size:
            tries += 1
            if tries > limit:
                raise InputError(
                    f"no training patch of {list(self.patch_size)} voxels (z, y, x) stays clear of the excluded "
                    f"zone around the real lesions: {len(xs)} of {batch_size} found in {limit} tries; make "
                    f"train.patch_size smaller or simulation.exclude_margin_mm smaller")
            i = int(rng.integers(len(self.scans)))
            scan = self.scans[i]
            u = rng.random()
            if u < self.positive_fraction and len(self._pos[i]):
                pool = self._pos[i] if self._lesions is None else self._lesion_pool(i, rng)
            elif u < self.positive_fraction + self.hard_negative_fraction and len(hard := self._hard_pool(i, rng)):
                pool = hard
            else:
                pool = self._any[i]
            if len(pool) == 0:
                continue
            box = self._box(scan, pool[rng.integers(len(pool))], rng)
            if scan.exclude[box].any():
                continue  # never show a real lesion's neighbourhood
            img = self._crop(scan.image, box, 0.0)
            tgt = self._crop(scan.target, box, 0).astype(np.float32)
            img, tgt = _augment(img, tgt, rng)
            xs.append(img)
            ys.append(tgt)
        return np.stack(xs)[:, None].astype(np.float32), np.stack(ys)[:, None].astype(np.float32)


def _lesion_voxels(target: np.ndarray) -> list[np.ndarray]:
    """The (z, y, x) voxels of each lesion (26-connected component) of a target mask."""
    from scipy import ndimage

    labels, n = ndimage.label(target > 0, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return []
    coords = np.argwhere(labels > 0)
    ids = labels[tuple(coords.T)]
    order = np.argsort(ids, kind="stable")
    starts = np.searchsorted(ids[order], np.arange(1, n + 2))
    return [coords[order[starts[k]:starts[k + 1]]] for k in range(n)]


def _augment(img: np.ndarray, tgt: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if rng.random() < 0.5:
        img, tgt = img[:, :, ::-1], tgt[:, :, ::-1]
    if rng.random() < 0.5:
        img, tgt = img[:, ::-1, :], tgt[:, ::-1, :]
    if img.shape[1] == img.shape[2]:
        k = int(rng.integers(4))
        img, tgt = np.rot90(img, k, axes=(1, 2)), np.rot90(tgt, k, axes=(1, 2))
    img = np.clip(img + rng.uniform(-20.0, 20.0) / 1400.0, 0.0, 1.0)
    return np.ascontiguousarray(img), np.ascontiguousarray(tgt)
