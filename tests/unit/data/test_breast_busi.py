"""BUSI on a fixture in the release layout: Dataset_BUSI_with_GT/{benign,malignant,normal}/
``<class> (N).png`` (RGB) with ``<class> (N)_mask.png`` and sometimes ``_mask_1.png``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medanomaly.data.busi import load_busi, load_busi_lesions
from medanomaly.errors import InputError
from medanomaly.registry import DATASETS

H, W = 90, 120


def _png(path: Path, array: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGB":
        array = np.repeat(array[..., None], 3, axis=2)
    Image.fromarray(array.astype(np.uint8), mode=mode).save(path)


def _ellipse(cx: int, cy: int, rx: int, ry: int, shape=(H, W)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def write_busi(root: Path) -> Path:
    """The release layout: 2 benign (one with two masks), 2 malignant, 1 normal, plus problems."""
    base = root / "Dataset_BUSI_with_GT"
    rng = np.random.default_rng(0)

    def image(lesions: list[np.ndarray]) -> np.ndarray:
        img = 120 + 25 * rng.standard_normal((H, W))
        for m in lesions:
            img[m] = 30
        return img.clip(0, 255)

    b1 = _ellipse(40, 40, 20, 10)
    b2a, b2b = _ellipse(30, 30, 10, 8), _ellipse(90, 60, 12, 9)
    _png(base / "benign" / "benign (1).png", image([b1]), "RGB")
    _png(base / "benign" / "benign (1)_mask.png", b1 * 255, "L")
    _png(base / "benign" / "benign (2).png", image([b2a, b2b]), "RGB")
    _png(base / "benign" / "benign (2)_mask.png", b2a * 255, "L")
    _png(base / "benign" / "benign (2)_mask_1.png", b2b * 255, "L")
    m1 = _ellipse(60, 45, 12, 20)
    _png(base / "malignant" / "malignant (1).png", image([m1]), "RGB")
    _png(base / "malignant" / "malignant (1)_mask.png", m1 * 255, "L")
    _png(base / "malignant" / "malignant (2).png", image([]), "RGB")  # its mask is missing
    _png(base / "malignant" / "malignant (3).png", image([m1]), "RGB")
    _png(base / "malignant" / "malignant (3)_mask.png", np.zeros((50, 50)), "L")  # mask of another size
    _png(base / "normal" / "normal (1).png", image([]), "RGB")
    _png(base / "normal" / "normal (1)_mask.png", np.zeros((H, W)), "L")
    (base / "benign" / "Thumbs.db").write_bytes(b"\x00\x01")  # not part of the release: ignored
    return base


@pytest.fixture()
def busi(tmp_path: Path) -> Path:
    write_busi(tmp_path)
    return tmp_path


def test_lesions_boxes_classes_and_extra_masks(busi):
    s = load_busi_lesions(busi)
    items = {it.key: it for it in s}
    assert set(items) == {"benign (1)", "benign (2)", "malignant (1)", "normal (1)"}
    b1 = items["benign (1)"]
    assert b1.image.modality == "US" and b1.image.shape == (1, H, W) and not b1.synthetic
    assert [(les.label, les.kind) for les in b1.lesions] == [("benign", "mass")]
    assert b1.lesions[0].box_px == (20, 30, 61, 51)
    assert np.array_equal(b1.lesions[0].full_mask((H, W)), _ellipse(40, 40, 20, 10))
    assert [les.box_px for les in items["benign (2)"].lesions] == [(20, 22, 41, 39), (78, 51, 103, 70)]
    assert items["benign (2)"].lesions[1].attributes["mask_file"] == "benign (2)_mask_1.png"
    mal = items["malignant (1)"]
    assert mal.label == "malignant" and mal.lesions[0].height_px > mal.lesions[0].width_px
    assert items["normal (1)"].lesions == () and items["normal (1)"].label == "normal"
    grey = np.asarray(Image.open(busi / "Dataset_BUSI_with_GT/benign/benign (1).png").convert("L"), dtype=np.float32)
    assert np.array_equal(b1.image.array[0], grey)


def test_problems_are_reported_and_spacing_is_marked_unknown(busi):
    s = load_busi_lesions(busi / "Dataset_BUSI_with_GT")  # the inner folder works too
    assert sorted(s.skipped) == ["malignant (2): no mask file",
                                 "malignant (3): mask malignant (3)_mask.png is 50 x 50 px, the image 120 x 90"]
    it = s[0]
    assert it.attributes["spacing_known"] is False and it.image.spacing[:2] == (1.0, 1.0)
    scaled = load_busi_lesions(busi, pixel_mm=0.1)
    les = next(x for x in scaled if x.key == "benign (1)").lesions[0]
    assert les.box_mm == pytest.approx((1.95, 2.95, 6.05, 5.05)) and scaled[0].attributes["spacing_known"] is True
    with pytest.raises(InputError, match="not a BUSI folder"):
        load_busi_lesions(busi / "Dataset_BUSI_with_GT" / "benign")


def test_patient_splits_default_per_image_or_from_a_table(busi):
    s = load_busi_lesions(busi, val=0.25, test=0.25)
    assert len(set(s.patient_ids)) == len(s)  # no ids in the release: each image its own patient
    table = busi / "patients.csv"
    table.write_text("key,patient_id\nbenign (1),W7\nbenign (2),W7\nmalignant (1),W9\n")
    grouped = load_busi_lesions(busi, patients=table, val=0.25, test=0.25, seed=2)
    pid = {it.key: (it.patient_id, it.split) for it in grouped}
    assert pid["benign (1)"][0] == pid["benign (2)"][0] == "W7" and pid["benign (1)"][1] == pid["benign (2)"][1]
    (busi / "bad.csv").write_text("image,who\n")
    with pytest.raises(InputError, match="key,patient_id"):
        load_busi_lesions(busi, patients=busi / "bad.csv")


def test_classification_view_normal_benign_malignant(busi):
    data = DATASETS.create("busi", root=busi, image_size=(32, 32), channels=1)
    assert data.class_names == ("normal", "benign", "malignant")
    labels = {k: data.class_names[i] for k, i in zip(data.keys, data.labels, strict=True)}
    assert labels == {"benign (1)": "benign", "benign (2)": "benign", "malignant (1)": "malignant",
                      "normal (1)": "normal"}
    no_normal = load_busi(busi, class_names=("benign", "malignant"), image_size=(32, 32))
    assert len(no_normal) == 3 and DATASETS.create("busi_lesions", root=busi).source == "busi"
