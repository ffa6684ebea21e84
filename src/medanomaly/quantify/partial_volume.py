"""Partial-volume lesion volume of a CT lesion surrounded by lung parenchyma (mL).

A binary mask counts each voxel wholly in or out. On 5 mm slices a 6-10 mm nodule's top and bottom slices
hold a fraction of it each, and a half-maximum boundary drops them: masks then measure 6-10 mm nodules
17-36 % small (docs/lung_nodules_runs.md). Partial-volume analysis (Kuhnigk et al., IEEE TMI 25(4):417-434,
2006, for solid lung nodules) counts every voxel near the boundary by the fraction of lesion its HU says
it holds, since a voxel's HU is the occupancy-weighted mix of lesion and parenchyma:

1. **Where**: the mask and the voxels one voxel around it (26-neighbourhood), inside the parenchyma
   (the lung: chest wall and mediastinum outside it never count).
2. **Parenchyma** ``mu_p``: the median HU of the parenchyma in a shell ``shell_mm`` (5-15 mm) around the
   mask (the median leaves vessels out); its noise ``sigma`` from the shell's median absolute deviation.
3. **Lesion** ``mu_l``: the ``lesion_percentile`` (90th) HU inside the mask: the top decile resists both
   the partial volume at the border and single noisy voxels.
4. **Volume** = sum of ``clip((HU - mu_p) / (mu_l - mu_p), 0, 1)`` x voxel volume, less the bias clipping
   adds to each parenchyma voxel around the mask: zero-mean noise clipped at 0 averages
   ``sigma_f / sqrt(2 pi)`` (``sigma_f = sigma / (mu_l - mu_p)``), which matters for nodules of a few voxels.

Limit: under about 8 mm on 5 mm slices no voxel may be wholly lesion; ``mu_l`` is then partial-volumed itself and
the volume comes out high (a 7 mm ball centred on a slice boundary: +38 %; nodules under 6 mm on the validation scans:
+14 to +20 %).

When the contrast is too low to tell fractions (``mu_l - mu_p`` under :data:`MIN_CONTRAST_SD` noise SDs)
or no parenchyma surrounds the mask, the mask's own volume is returned.

Chosen on the lung recipe's validation scans (LIDC val shapes in the training lung, never the held-out
ones): against the inserted nodules' true volume the mask's relative bias was -24 % (nodules >= 6 mm:
-21 %), this estimate's +4 % (>= 6 mm: -2 %), synthetic, 36 nodules.

Example:
    >>> import numpy as np
    >>> ct = np.full((5, 20, 20), -850.0); ct[2, 8:12, 8:12] = 40.0; ct[1, 8:12, 8:12] = -405.0  # half a slice
    >>> mask = ct > -400; lung = np.ones(ct.shape, bool)
    >>> round(float(mask.sum()), 1), round(partial_volume_ml(ct, mask, lung, (1.0, 1.0, 1.0)) * 1000, 1)
    (16.0, 24.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medanomaly.boxes import padded_box
from medanomaly.geometry import voxel_volume_mm3
from medanomaly.types import Finding

__all__ = ["MIN_CONTRAST_SD", "partial_volume_ml", "with_partial_volume"]

#: Lesion-to-parenchyma contrast below this many parenchyma noise SDs: fractions are noise, the mask's volume stands.
MIN_CONTRAST_SD = 4.0


def partial_volume_ml(
    ct_hu: np.ndarray,
    mask: np.ndarray,
    parenchyma: np.ndarray,
    spacing: tuple[float, float, float],
    shell_mm: tuple[float, float] = (5.0, 15.0),
    lesion_percentile: float = 90.0,
    direction: Any = None,
) -> float:
    """The lesion's partial-volume volume (mL; see the module docstring).

    Args:
        ct_hu: CT in HU (z, y, x).
        mask: the lesion (boolean, z, y, x, non-empty).
        parenchyma: the tissue around the lesion (boolean, z, y, x): the lung mask.
        spacing: voxel spacing (mm, x/y/z).
        shell_mm: inner and outer distance (mm) from the mask of the parenchyma sampled for ``mu_p``.
        lesion_percentile: percentile of the mask's HU taken as the lesion's attenuation.
        direction: the grid's direction; on a sheared grid (a gantry-tilted CT) a voxel holds |det direction| times
            the product of the spacings (the shell's distances stay those of the spacings: a small error at a tilt).
    """
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    voxel_ml = voxel_volume_mm3(spacing, direction) / 1000.0
    mask_ml = float(mask.sum()) * voxel_ml
    if not mask.any():
        return 0.0
    spacing_zyx = np.asarray(spacing[::-1], float)
    box = padded_box(mask, shell_mm[1], spacing_zyx)
    core, tissue = mask[box], np.asarray(parenchyma[box], bool) & ~mask[box]
    hu = np.asarray(ct_hu[box], np.float32)
    dist = ndimage.distance_transform_edt(~core, sampling=tuple(spacing_zyx))
    shell = tissue & (dist > shell_mm[0]) & (dist <= shell_mm[1])
    if not shell.any():
        return mask_ml
    mu_p = float(np.median(hu[shell]))
    sigma = 1.4826 * float(np.median(np.abs(hu[shell] - mu_p)))
    mu_l = float(np.percentile(hu[core], lesion_percentile))
    contrast = mu_l - mu_p
    if contrast <= MIN_CONTRAST_SD * max(sigma, 1.0):
        return mask_ml
    ring = ndimage.binary_dilation(core, structure=np.ones((3, 3, 3), bool)) & tissue
    fractions = np.clip((hu[core | ring] - mu_p) / contrast, 0.0, 1.0)
    clip_bias = (sigma / contrast) / float(np.sqrt(2.0 * np.pi))
    return max(float(fractions.sum()) - clip_bias * float(ring.sum()), 0.0) * voxel_ml


def with_partial_volume(finding: Finding, ct_hu: np.ndarray, parenchyma: np.ndarray,
                        spacing: tuple[float, float, float], direction: Any = None) -> Finding:  # fmt: skip
    """``finding`` with its measurements' ``partial_volume_ml`` (mL) in ``parenchyma`` (boolean, z, y, x, on the
    finding's mask grid: the lung mask); a finding without mask or measurements is returned as it is."""
    from dataclasses import replace

    if finding.mask is None or finding.measurements is None:
        return finding
    volume = partial_volume_ml(ct_hu, np.asarray(finding.mask.array) > 0, parenchyma, spacing, direction=direction)
    return replace(finding, measurements=replace(finding.measurements, partial_volume_ml=volume))
