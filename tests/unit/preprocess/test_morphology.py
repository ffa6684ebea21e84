"""In-plane disk morphology by row runs: equal to SciPy's, voxel for voxel."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medanomaly.preprocess.morphology import (
    dilate_in_plane,
    elliptic_disk,
    erode_in_plane,
    open_in_plane,
    physical_disk,
)

CROSS = np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool)


def _structures() -> list[np.ndarray]:
    out = [CROSS, np.ones((1, 3, 5), bool), np.ones((1, 1, 1), bool)]
    for radius, sy, sx in ((3.0, 0.7, 0.7), (3.0, 0.6, 0.9), (8.0, 1.0, 1.0), (1.0, 1.0, 2.5), (10.0, 0.9, 0.9)):
        out += [elliptic_disk(radius, sy, sx), physical_disk(radius, sy, sx)]
    return out


def _masks(rng: np.random.Generator) -> list[np.ndarray]:
    blobs = ndimage.binary_dilation(rng.random((3, 40, 37)) < 0.05, iterations=3)
    return [
        blobs,
        rng.random((2, 29, 31)) < 0.8,  # mostly foreground: erosion decides at the image border
        rng.random((2, 5, 60)) < 0.9,  # fewer rows than most disks
        np.ones((2, 12, 9), bool),
        np.zeros((1, 10, 10), bool),
        np.pad(np.ones((1, 1, 1), bool), ((1, 0), (1, 28), (2, 27))),  # one pixel by a corner: the box is clipped
    ]


@pytest.mark.parametrize("index", range(len(_structures())))
def test_equal_to_scipy(index: int) -> None:
    structure = _structures()[index]
    for mask in _masks(np.random.default_rng(index)):
        np.testing.assert_array_equal(erode_in_plane(mask, structure), ndimage.binary_erosion(mask, structure))
        np.testing.assert_array_equal(dilate_in_plane(mask, structure), ndimage.binary_dilation(mask, structure))
        np.testing.assert_array_equal(open_in_plane(mask, structure), ndimage.binary_opening(mask, structure))


def test_slab_by_slab_equals_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long volumes go a few slices at a time (bounded temporaries): here one slice per pass."""
    from medanomaly.preprocess import morphology

    monkeypatch.setattr(morphology, "_SLAB_PIXELS", 1)
    mask = np.random.default_rng(5).random((7, 33, 29)) < 0.75
    disk = elliptic_disk(3.0, 1.0, 1.5)
    np.testing.assert_array_equal(open_in_plane(mask, disk), ndimage.binary_opening(mask, disk))
    np.testing.assert_array_equal(dilate_in_plane(mask, disk), ndimage.binary_dilation(mask, disk))


def test_rows_wider_than_int16_runs() -> None:
    """Rows of 16,384 pixels or more count their runs in int32 (int16 would overflow)."""
    mask = np.random.default_rng(9).random((1, 6, 20_000)) < 0.9
    mask[0, 2:4, :19_000] = False  # 19,000 pixels of background before the first foreground pixel
    disk = elliptic_disk(2.0, 1.0, 1.0)
    np.testing.assert_array_equal(open_in_plane(mask, disk), ndimage.binary_opening(mask, disk))
    sparse = np.zeros_like(mask)
    sparse[0, 3, 19_500] = True
    sparse[0, 0, 0] = True  # the box spans the whole row
    np.testing.assert_array_equal(dilate_in_plane(sparse, disk), ndimage.binary_dilation(sparse, disk))


def test_a_single_slice_array_takes_a_2d_structure() -> None:
    mask = np.random.default_rng(7).random((30, 30)) < 0.7
    disk = elliptic_disk(2.0, 1.0, 1.0)
    np.testing.assert_array_equal(open_in_plane(mask, disk[0]), ndimage.binary_opening(mask, disk[0]))


def test_elliptic_disk_radii_follow_the_spacing() -> None:
    disk = elliptic_disk(3.0, 0.6, 1.5)  # 5 rows up and down, 2 columns left and right
    assert disk.shape == (1, 11, 5)
    assert disk[0, 5].all() and disk[0, :, 2].all() and not disk[0, 0, 0]


@pytest.mark.parametrize(("radius", "sy", "sx"), [(20.0, 0.8, 0.8), (1.5, 0.5703125, 0.5703125), (3.0, 0.6, 0.9),
                                                   (2.0, 1.0, 1.0), (0.5, 0.8, 0.8), (0.5, 0.1, 0.1)])
def test_physical_disk_is_the_distance_transform_thresholded(radius: float, sy: float, sx: float) -> None:
    """The pixels SciPy's distance transform puts within ``radius`` of the centre, ties included: 0.5 mm on 0.1 mm
    pixels takes 81 (comparing squared distances, 73: (3 x 0.1)^2 + (4 x 0.1)^2 rounds above 0.25)."""
    disk = physical_disk(radius, sy, sx)[0]
    point = np.ones(disk.shape, bool)
    point[disk.shape[0] // 2, disk.shape[1] // 2] = False
    assert np.array_equal(disk, ndimage.distance_transform_edt(point, sampling=(sy, sx)) <= radius)


@pytest.mark.parametrize(
    "structure",
    [
        np.ones((1, 2, 3), bool),  # even size: no centre
        np.ones((3, 3, 3), bool),  # crosses slices
        np.array([[1, 0, 1]], bool),  # a row with a gap
        np.array([[0, 1, 1], [1, 1, 0], [1, 1, 0]], bool),  # not point-symmetric
        np.zeros((3, 3), bool),
    ],
)
def test_refuses_a_structure_it_cannot_decompose(structure: np.ndarray) -> None:
    with pytest.raises(ValueError):
        erode_in_plane(np.ones((1, 5, 5), bool), structure)
