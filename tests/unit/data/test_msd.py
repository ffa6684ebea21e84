"""The MSD layout's listing: pairs read in order, every path kept inside the folder, each problem one line naming the
entry's number and never its file name."""

from __future__ import annotations

import json

import pytest

from medanomaly.data.msd import MsdFolder
from medanomaly.errors import InputError


def _task(root, training, **extra):
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    for name in ("a", "b"):
        (root / "imagesTr" / f"{name}.nii.gz").write_bytes(b"x")
        (root / "labelsTr" / f"{name}.nii.gz").write_bytes(b"x")
    (root / "dataset.json").write_text(json.dumps({"training": training, **extra}))
    return root


def _entry(name):
    return {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}


def test_msd_pairs_modalities_and_channel_names(tmp_path) -> None:
    data = MsdFolder(_task(tmp_path, [_entry("a"), _entry("b")], modality={"0": "T2", "1": "ADC"}))
    assert [(p.number, p.image.name, p.label.parent.name) for p in data.pairs] == [(1, "a.nii.gz", "labelsTr"),
                                                                                  (2, "b.nii.gz", "labelsTr")]
    assert data.describe_channel(1) == "volume 1 (ADC)" and data.describe_channel(None) == "one volume"


@pytest.mark.parametrize(("training", "why"), [
    ([], "lists no training cases"),
    ([_entry("a"), {"image": "/etc/passwd", "label": "./labelsTr/a.nii.gz"}], "entry 2's image is not a path inside"),
    ([{"image": "./imagesTr/../../x.nii.gz", "label": "./labelsTr/a.nii.gz"}], "entry 1's image is not a path inside"),
    ([{"image": "./imagesTr/a.nii.gz"}], "entry 1 is not an image/label pair"),
    ([{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/patient_smith.nii.gz"}], "entry 1's label file is missing"),
])  # fmt: skip
def test_msd_listing_problems_are_one_line(tmp_path, training, why) -> None:
    with pytest.raises(InputError) as err:
        MsdFolder(_task(tmp_path, training))
    assert why in str(err.value) and "\n" not in str(err.value) and "smith" not in str(err.value)


def test_msd_folder_problems(tmp_path) -> None:
    with pytest.raises(InputError, match="MSD task folder not found"):
        MsdFolder(tmp_path / "none")
    with pytest.raises(InputError, match="not an MSD task folder"):
        MsdFolder(tmp_path)
    (tmp_path / "dataset.json").write_text("{broken")
    with pytest.raises(InputError, match="dataset.json is truncated or not valid JSON"):
        MsdFolder(tmp_path)
    outside = tmp_path.parent / "outside.nii.gz"
    outside.write_bytes(b"x")
    task = _task(tmp_path / "t", [_entry("a")])
    (task / "imagesTr" / "link.nii.gz").symlink_to(outside)
    (task / "dataset.json").write_text(json.dumps({"training": [{"image": "./imagesTr/link.nii.gz",
                                                                 "label": "./labelsTr/a.nii.gz"}]}))
    with pytest.raises(InputError, match="entry 1's image leads out of the folder"):
        MsdFolder(task)
