"""Search regions for the heatmap detector: where in an image lesions are looked for, by name.

A detector config names its search region (``region.name``); the region is computed on the
input image, mapped onto the detector grid by nearest neighbour and grown by ``margin_mm``
(:func:`medanomaly.detect.infer.grid_region`). The network only runs on the region's bounding box
and a finding's centre must lie in the region itself (not the margin).

=========== ===================================================================================
name        region
=========== ===================================================================================
``lung``    both lungs of a chest CT (:func:`medanomaly.preprocess.lungs.lung_region`): the lung
            recipe; refuses an image that is not a chest CT in HU
``breast``  the breast of a mammogram or breast ultrasound
            (:func:`medanomaly.preprocess.tissue_masks.breast_mask`: Otsu, largest part, pectoral muscle
            removed on MLO views); refuses a CT in HU
``body``    the patient's body (:func:`medanomaly.preprocess.segment.body_mask`)
``none``    the whole image
=========== ===================================================================================

Add one with ``@SEARCH_REGIONS.register("name")`` on a function ``image -> uint8 Volume`` on the
image's grid (non-zero = searched).

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> img = Volume(np.zeros((1, 8, 8), np.float32), spacing=(0.5, 0.5, 1.0))
    >>> int(SEARCH_REGIONS.get("none")(img).array.sum())
    64
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from medanomaly.registry import Registry
from medanomaly.types import Volume

__all__ = ["SEARCH_REGIONS", "region_mask", "search_region"]

#: Search-region plug-ins: ``name -> function(image) -> uint8 mask Volume on the image grid``.
SEARCH_REGIONS: Registry[Callable[[Volume], Volume]] = Registry("search region")


@SEARCH_REGIONS.register("lung")
def lung(image: Volume) -> Volume:
    """Both lungs (1 right, 2 left) of a chest CT in HU; refuses anything else in one line."""
    from medanomaly.preprocess.lungs import lung_region, require_chest_ct

    return lung_region(require_chest_ct(image))


@SEARCH_REGIONS.register("breast")
def breast(image: Volume) -> Volume:
    """The breast of a mammogram (pectoral muscle removed on MLO) or of a breast ultrasound."""
    from medanomaly.preprocess.tissue_masks import breast_mask

    return breast_mask(image)


@SEARCH_REGIONS.register("body")
def body(image: Volume) -> Volume:
    """The body (Otsu threshold outside CT, -500 HU on CT; largest part, holes filled)."""
    from medanomaly.preprocess.segment import body_mask

    return body_mask(image)


@SEARCH_REGIONS.register("none")
def everywhere(image: Volume) -> Volume:
    """The whole image."""
    return image.with_array(np.ones(image.shape, np.uint8))


def region_mask(name: str, image: Volume) -> Volume:
    """The named region of ``image`` on its own grid (uint8, non-zero = searched)."""
    return SEARCH_REGIONS.get(name)(image)


def search_region(name: str, image: Volume, spacing_mm: tuple[float, float, float],
                  margin_mm: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(search region grown by ``margin_mm``, the region itself) on the detector grid of ``spacing_mm``.

    Raises:
        InputError: from the plug-in (wrong modality), or the region is empty.
    """
    from medanomaly.detect.infer import grid_region
    from medanomaly.errors import InputError

    mask = region_mask(name, image)
    binary = mask.with_array((np.asarray(mask.array) > 0).astype(np.uint8))
    grown = grid_region(binary, spacing_mm, None, margin_mm)
    core = grid_region(binary, spacing_mm, None, 0.0)
    if not core.any():
        raise InputError(f"the {name} search region is empty in this image")
    return grown, core
