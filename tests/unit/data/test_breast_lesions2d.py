"""The common 2D lesion annotation: boxes in pixels and mm, maps, splits, disk round trip, samples."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.data.lesion_samples import image_level_set, lesion_crops
from medanomaly.data.lesion_store import read_lesion_set, write_lesion_set
from medanomaly.data.lesions2d import (
    Lesion2D,
    LesionImage,
    LesionSet,
    lesion_from_crop,
    lesion_from_mask,
    reduce_crop,
    reduce_image,
    reduce_mask,
)
from medanomaly.errors import InputError
from medanomaly.types import Volume


def _image(h: int = 40, w: int = 60, spacing=(0.5, 0.25, 1.0), origin=(10.0, -5.0, 2.0), direction=None) -> Volume:
    rng = np.random.default_rng(0)
    return Volume(rng.random((1, h, w)).astype(np.float32), spacing=spacing, origin=origin,
                  direction=np.eye(3) if direction is None else direction, meta={"modality": "MG", "view": "CC"})


def _rect(shape, x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_box_in_pixels_and_mm_follows_spacing_origin_and_direction():
    img = _image()
    les = lesion_from_mask(img, _rect((40, 60), 6, 4, 16, 9), "benign", "mass", {"birads": "2"})
    assert les.box_px == (6, 4, 16, 9) and les.mask.shape == (5, 10) and les.mask.all()
    # pixel i covers index [i - 0.5, i + 0.5]: x 5.5 .. 15.5 -> 10 + 0.5 * (5.5, 15.5)
    assert les.box_mm == pytest.approx((12.75, -4.125, 17.75, -2.875))
    assert les.size_mm == pytest.approx((5.0, 1.25)) and les.area_mm2() == pytest.approx(50 * 0.125)
    assert les.center_px == pytest.approx((11.0, 6.5))
    flipped = _image(direction=np.diag([-1.0, 1.0, 1.0]))  # x runs toward -x in patient space
    f = lesion_from_mask(flipped, _rect((40, 60), 6, 4, 16, 9), "benign")
    assert f.box_mm[0] < f.box_mm[2] and f.box_mm[0] == pytest.approx(10 - 0.5 * 15.5)
    finding = les.to_finding(img, score=0.7, with_mask=True)
    assert finding.label == "benign" and finding.score == 0.7
    assert finding.center_mm == pytest.approx((10 + 0.5 * 10.5, -5 + 0.25 * 6, 2.0))
    (x0, y0, z0), (x1, y1, z1) = finding.bbox_mm
    assert (x0, y0, x1, y1) == pytest.approx(les.box_mm) and (z0, z1) == pytest.approx((1.5, 2.5))
    assert finding.mask.same_grid(img) and finding.mask.array.sum() == 50
    assert les.to_json()["attributes"] == {"birads": "2"}


def test_bad_masks_and_boxes_are_refused():
    img = _image()
    with pytest.raises(InputError, match="empty"):
        lesion_from_mask(img, np.zeros((40, 60)), "benign")
    with pytest.raises(InputError, match="does not fit"):
        lesion_from_mask(img, np.ones((10, 10)), "benign")
    with pytest.raises(ValueError, match="mask shape"):
        Lesion2D("benign", (0, 0, 4, 4), (0, 0, 1, 1), np.ones((3, 4)))
    with pytest.raises(InputError, match="outside"):
        lesion_from_crop(img, (70, 50, 80, 60), np.ones((10, 10)), "benign")
    clipped = lesion_from_crop(img, (55, 35, 65, 45), np.ones((10, 10)), "benign")
    assert clipped.box_px == (55, 35, 60, 40) and clipped.mask.shape == (5, 5)
    with pytest.raises(ValueError, match="one-slice"):
        LesionImage(Volume(np.zeros((2, 4, 4))))
    with pytest.raises(ValueError, match="outside"):
        LesionImage(_image(10, 10), (lesion_from_mask(img, _rect((40, 60), 20, 20, 30, 30), "benign"),))


def test_image_label_instance_and_class_maps():
    img = _image()
    a = lesion_from_mask(img, _rect((40, 60), 5, 5, 15, 15), "malignant", "mass")
    b = lesion_from_mask(img, _rect((40, 60), 10, 10, 30, 20), "benign", "calcification_cluster")
    item = LesionImage(img, (a, b), "p1", "k1")
    assert item.label == "malignant" and LesionImage(img).label == "normal"
    inst = item.instance_map()
    assert inst.dtype == np.uint16 and inst[6, 6] == 1 and inst[18, 25] == 2 and inst[12, 12] == 2  # drawn later
    cls = item.class_map()
    assert cls[12, 12] == 3 and cls[18, 25] == 1 and cls[0, 0] == 0  # the more severe lesion wins the overlap
    assert [f.label for f in item.findings()] == ["malignant", "benign"]


def _toy_set(n_patients: int = 12) -> LesionSet:
    items = []
    labels = ("benign", "uncertain", "malignant", None)
    for p in range(n_patients):
        for view in ("CC", "MLO"):
            img = _image(24, 32)
            label = labels[p % 4]
            lesions = () if label is None else (lesion_from_mask(img, _rect((24, 32), 4, 4, 9 + p % 3, 10), label),)
            items.append(LesionImage(img, lesions, f"P{p}", f"P{p}_{view}", view=view, attributes={"density": "b"}))
    return LesionSet(tuple(items), source="toy")


def test_patient_splits_keep_patients_together_and_counts_have_no_ids():
    s = _toy_set().with_patient_splits(val=0.25, test=0.25, seed=3)
    splits_of: dict[str, set[str]] = {}
    for it in s:
        splits_of.setdefault(it.patient_id, set()).add(it.split)
    assert all(len(v) == 1 for v in splits_of.values())
    assert {it.split for it in s} == {"train", "val", "test"}
    again = _toy_set().with_patient_splits(val=0.25, test=0.25, seed=3)
    assert list(again.splits) == list(s.splits)
    summary = s.summary()
    assert sum(v["images"] for v in summary["splits"].values()) == 24
    assert "P0" not in str(summary)
    assert sum(row["normal_images"] for row in s.lesion_counts().values()) == 6
    assert len(s.split("test")) == int(np.sum(s.splits == "test"))
    with pytest.raises(ValueError, match="not in"):
        LesionSet(s.items, class_names=("benign",))


def test_write_and_read_back_exactly(tmp_path):
    s = _toy_set(4).with_patient_splits(val=0.25, test=0.25, seed=0)
    folder = write_lesion_set(s, tmp_path / "set")
    back = read_lesion_set(folder)
    assert len(back) == len(s) and back.source == "toy" and back.class_names == s.class_names
    for a, b in zip(s, back, strict=True):
        assert np.array_equal(a.image.array, b.image.array) and a.image.same_grid(b.image)
        assert (a.patient_id, a.key, a.split, a.view, dict(a.attributes)) == (b.patient_id, b.key, b.split, b.view,
                                                                              dict(b.attributes))
        assert b.image.meta["view"] == "CC" or b.image.meta["view"] == a.image.meta["view"]
        for la, lb in zip(a.lesions, b.lesions, strict=True):
            assert (la.label, la.box_px, la.kind) == (lb.label, lb.box_px, lb.kind)
            assert la.box_mm == pytest.approx(lb.box_mm) and np.array_equal(la.mask, lb.mask)
    assert not list(tmp_path.glob("*.partial*"))
    with pytest.raises(InputError, match="exists"):
        write_lesion_set(s, folder)
    twice = LesionSet(s.items + s.items[:1])
    with pytest.raises(InputError, match="unique"):
        write_lesion_set(twice, tmp_path / "twice")
    assert not (tmp_path / "twice").exists() and not list(tmp_path.glob("*.partial*"))
    (folder / "dataset.json").unlink()
    with pytest.raises(InputError, match="dataset.json"):
        read_lesion_set(folder)


def test_block_reduction_keeps_millimetres():
    img = _image(41, 63, spacing=(0.1, 0.1, 1.0), origin=(0.0, 0.0, 0.0))
    mask = _rect((41, 63), 20, 10, 33, 25)
    full = lesion_from_mask(img, mask, "benign")
    small = reduce_image(img, 4)
    assert small.shape == (1, 11, 16) and small.spacing == pytest.approx((0.4, 0.4, 1.0))
    assert small.index_to_physical((0, 0, 0))[:2] == pytest.approx((0.15, 0.15))  # centre of the first 4x4 block
    box, crop = reduce_crop(full.box_px, full.mask, 4)
    reduced = lesion_from_crop(small, box, crop, "benign")
    direct = lesion_from_mask(small, reduce_mask(mask, 4), "benign")
    assert reduced.box_px == direct.box_px and np.array_equal(reduced.mask, direct.mask)
    assert np.allclose(reduced.box_mm, full.box_mm, atol=0.4)  # within one reduced pixel
    assert reduce_image(img, 1) is img


def test_lesion_crops_and_image_level_samples():
    s = _toy_set(8).with_patient_splits(val=0.25, test=0.25, seed=1)
    crops = lesion_crops(s, (16, 16))
    assert crops.images.shape == (12, 1, 16, 16)
    assert sorted(set(crops.labels.tolist())) == [0, 1, 2] and crops.class_names == s.class_names
    by_key = {it.key: it for it in s}
    for key, pid, split in zip(crops.keys, crops.patient_ids, crops.splits, strict=True):
        item = by_key[key.split("#")[0]]
        assert (item.patient_id, item.split) == (pid, split)
    whole = image_level_set(s, ("normal", "benign", "uncertain", "malignant"), (16, 16))
    assert len(whole) == 16 and whole.class_counts().tolist() == [4, 4, 4, 4]
    with pytest.raises(InputError, match="no image"):
        image_level_set(s.split("test").split("nothing"), ("benign",), (16, 16))
