"""Colour images for models that take grey ones: ITU-R BT.601 luma.

An ultrasound scanner stores its B-mode frames as RGB, palette colour or YBR (read as RGB: 90-95 % of the pixels of
pydicom's ``US1_UNCR.dcm`` and ``OBXXXX1A.dcm`` have three equal channels; the rest is the banner, the annotations and
a Doppler overlay), and a picture may be saved in colour. A model trained on grey images takes their luma
(0.299 R + 0.587 G + 0.114 B, as DICOM's YBR_FULL and most viewers weigh them); an alpha channel is dropped.
Only three or four components are colours: two are, say, a T1 and a PD stacked for a fusion model.

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> grey, coloured = grey_volume(Volume(np.full((1, 2, 2, 3), [255, 0, 0], np.uint8)))
    >>> grey.shape, round(float(grey.array[0, 0, 0]), 2), coloured
    ((1, 2, 2), 76.24, True)
"""

from __future__ import annotations

import numpy as np

from medanomaly.types import Volume

__all__ = ["LUMA_WEIGHTS", "grey_volume", "luma"]

#: ITU-R BT.601 luma weights (R, G, B) used to turn a colour image into grey.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luma(rgb: np.ndarray) -> np.ndarray:
    """float32 luma of an array whose last axis holds R, G, B (and perhaps alpha, ignored)."""
    return (np.asarray(rgb)[..., :3].astype(np.float32) @ np.asarray(LUMA_WEIGHTS, np.float32)).astype(np.float32)


def grey_volume(volume: Volume) -> tuple[Volume, bool]:
    """(``volume`` with one grey component, whether it had colour): RGB(A) -> :func:`luma`; three equal channels are
    the grey itself (not counted as colour); a grey volume, or one of another component count (two modalities
    stacked, channels that are not colours: refused where a model takes one; a picture's alpha is dropped when it is
    read), is returned as it is."""
    if volume.n_components not in (3, 4):
        return volume, False
    rgb = np.asarray(volume.array)[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return volume.with_array(rgb[..., 0]), False
    return volume.with_array(luma(rgb)), True
