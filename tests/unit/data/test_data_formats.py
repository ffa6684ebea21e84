"""INbreast and LIDC-IDRI parsing helpers (whole-file loading is in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medanomaly.data.inbreast import birads_class, parse_point, read_rois
from medanomaly.data.lidc import cluster_reads, malignancy_class, read_lidc_xml
from medanomaly.errors import InputError


def test_data_inbreast_birads_mapping_and_points() -> None:
    assert [birads_class(b) for b in ("1", "2", "3", "4a", "4B", "5", "6")] == [
        "benign", "benign", "uncertain", "malignant", "malignant", "malignant", "malignant"]
    with pytest.raises(InputError, match="unknown BI-RADS"):
        birads_class("7")
    assert parse_point("(12.5, 3)") == (12.5, 3.0)
    assert parse_point("(1.0, 2.0, 0.0)") == (1.0, 2.0)


def test_data_inbreast_rejects_non_plist(tmp_path: Path) -> None:
    path = tmp_path / "1.xml"
    path.write_text("<html>not a plist")
    with pytest.raises(InputError, match="plist"):
        read_rois(path)


def test_data_lidc_median_rule_and_clustering() -> None:
    assert [malignancy_class(r) for r in ([1, 2], [2, 3], [3, 3, 4], [2, 4], [5])] == [
        "benign", "benign", "uncertain", "uncertain", "malignant"]
    centroids = np.array([[0.0, 0, 0], [3.0, 0, 0], [50.0, 0, 0]])
    groups = sorted(sorted(g) for g in cluster_reads(centroids, [0, 1, 0], cluster_mm=5.0))
    assert groups == [[0, 1], [2]]


def test_data_lidc_xml_requires_the_lidc_root(tmp_path: Path) -> None:
    path = tmp_path / "x.xml"
    path.write_text('<?xml version="1.0"?><IdriReadMessage xmlns="http://www.nih.gov"/>')
    with pytest.raises(InputError, match="LidcReadMessage"):
        read_lidc_xml(path)


def test_data_nodule_patches_lung_rads_rule() -> None:
    from medanomaly.data.nodule_patches import lung_rads_category, lung_rads_class

    assert [lung_rads_category("solid", "sphere", d) for d in (5.9, 6.0, 8.0, 15.0)] == ["2", "3", "4A", "4B"]
    assert [lung_rads_category("part_solid", "sphere", 10.0, f) for f in (0.5, 0.7, 0.9)] == ["3", "4A", "4B"]
    assert lung_rads_category("part_solid", "sphere", 5.0, 0.9) == "2"
    assert lung_rads_category("ground_glass", "lobulated", 29.0) == "2"
    assert lung_rads_category("solid", "spiculated", 7.0) == "4X"
    assert lung_rads_category("solid", "spiculated", 4.0) == "2"  # too small to matter
    assert lung_rads_class("solid", "sphere", 7.0) == "uncertain"


def test_data_nodule_patch_crop_keeps_geometry() -> None:
    from medanomaly.data.nodule_patches import _crop
    from medanomaly.types import Volume

    arr = np.arange(10 * 12 * 14, dtype=np.float32).reshape(10, 12, 14)
    vol = Volume(arr, spacing=(0.7, 0.8, 2.5), origin=(-10.0, 5.0, 30.0))
    sub = _crop(vol, np.array([5, 6, 7]), np.array([2, 3, 4]))
    assert sub.shape == (5, 7, 9)
    # the same voxel value sits at the same physical point in both volumes
    np.testing.assert_allclose(sub.index_to_physical((0, 0, 0)), vol.index_to_physical((3, 3, 3)))
    assert sub.array[0, 0, 0] == arr[3, 3, 3]
