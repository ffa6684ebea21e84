"""Paired manifest: missing files flagged, swapped modalities and mismatched grids refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from medanomaly.data.sources import real_data
from medanomaly.errors import InputError
from medanomaly.fusion.data import (
    check_modalities,
    detect_modality,
    load_case,
    load_paired_dataset,
    read_manifest,
    sample_to_array,
)
from medanomaly.io import write
from medanomaly.types import Volume


def _write_pair(folder: Path, pid: str, shift_origin: bool = False) -> tuple[Path, Path]:
    """A real CT slice and a second channel on the same grid (NRRD)."""
    import medanomaly

    ct = medanomaly.read(real_data("pydicom/CT_small.dcm"))
    mr = ct.with_array(np.sqrt(np.abs(ct.array.astype(np.float32))), modality="MR")
    if shift_origin:
        mr = Volume(mr.array, mr.spacing, (mr.origin[0] + 5.0, *mr.origin[1:]), mr.direction, meta=dict(mr.meta))
    return write(ct, folder / f"{pid}_ct.nrrd"), write(mr, folder / f"{pid}_mr.nrrd")


def _manifest(folder: Path, rows: list[str]) -> Path:
    path = folder / "manifest.csv"
    path.write_text("patient_id,ct_path,mr_path,label\n" + "\n".join(rows) + "\n")
    return path


def test_fusion_data_manifest_loads_and_flags_missing_file(tmp_path):
    _write_pair(tmp_path, "p1")
    _write_pair(tmp_path, "p2")
    (tmp_path / "p2_mr.nrrd").unlink()  # one modality of one patient is gone
    manifest = read_manifest(
        _manifest(tmp_path, ["p1,p1_ct.nrrd,p1_mr.nrrd,0", "p2,p2_ct.nrrd,p2_mr.nrrd,1", "p3,nope.nrrd,,1"])
    )
    assert manifest.modalities == ("CT", "MR")
    assert [c.patient_id for c in manifest.cases] == ["p1", "p2"]
    assert manifest.cases[1].flags == ("missing_modality:MR",)
    assert manifest.problems == (("p3", "no file found for any modality"),)
    samples, problems = load_paired_dataset(manifest)
    assert len(samples) == 2 and problems == [("p3", "no file found for any modality")]
    array, present = sample_to_array(samples[1], ("CT", "MR"), (32, 32))
    assert array.shape == (2, 32, 32) and present.tolist() == [True, False]
    assert not array[1].any() and array[0].max() <= 1.0


def test_fusion_data_refuses_different_grids(tmp_path):
    _write_pair(tmp_path, "p1", shift_origin=True)
    manifest = read_manifest(_manifest(tmp_path, ["p1,p1_ct.nrrd,p1_mr.nrrd,1"]))
    with pytest.raises(InputError, match="grids differ.*medanomaly register"):
        load_case(manifest.cases[0])
    samples, problems = load_paired_dataset(manifest)  # in a batch: reported, skipped
    assert samples == [] and "grids differ" in problems[0][1]


def test_fusion_data_detects_swapped_dicom_modalities(tmp_path):
    ct, mr = real_data("pydicom/CT_small.dcm"), real_data("pydicom/MR_small.dcm")
    assert detect_modality(ct) == "CT" and detect_modality(mr) == "MR"
    shutil.copy(ct, tmp_path / "a.dcm")
    shutil.copy(mr, tmp_path / "b.dcm")
    manifest = read_manifest(_manifest(tmp_path, ["p1,b.dcm,a.dcm,0", "p2,a.dcm,b.dcm,0"]))
    with pytest.raises(InputError, match="modalities swapped: ct_path holds MR and mr_path holds CT"):
        load_case(manifest.cases[0])
    # correct columns: the modality check passes, and the real CT and MR are of two frames of reference
    with pytest.raises(InputError, match="MR is in another frame of reference than CT.*data.alignment: register"):
        load_case(manifest.cases[1])


def test_fusion_data_detects_modality_from_volume_meta():
    with pytest.raises(InputError, match="ct_path holds a MR image, expected CT"):
        check_modalities({"CT": "MR", "MR": "MR"})
    check_modalities({"CT": "CT", "MR": None})  # unknown is not an error
    check_modalities({"T1": "MR", "PD": "MR"})
    vol = Volume(np.zeros((1, 4, 4)), meta={"modality": "CT"})
    assert detect_modality(Path("x.nii.gz"), vol) == "CT"


def test_fusion_data_manifest_errors(tmp_path):
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("patient_id,ct_path,label\np1,a.nrrd,0\n")
    with pytest.raises(InputError, match="two '<modality>_path' columns"):
        read_manifest(bad)
    _write_pair(tmp_path, "p1")
    manifest = read_manifest(
        _manifest(tmp_path, ["p1,p1_ct.nrrd,p1_mr.nrrd,x", "p1,p1_ct.nrrd,p1_mr.nrrd,0", "p1,p1_ct.nrrd,p1_mr.nrrd,1"])
    )
    assert len(manifest.cases) == 1
    reasons = [r for _, r in manifest.problems]
    assert "label must be an integer" in reasons[0] and "duplicate" in reasons[1]


def test_cases_are_converted_as_they_load_and_the_arrays_memory_is_checked_first(tmp_path, monkeypatch):
    """build_splits held every case's images at native size before resizing, and never estimated the memory."""
    from medanomaly.config import parse_config
    from medanomaly.fusion import data as fusion_data
    from medanomaly.fusion.task import build_splits

    for pid in ("p1", "p2"):
        _write_pair(tmp_path, pid)
    manifest = read_manifest(_manifest(tmp_path, ["p1,p1_ct.nrrd,p1_mr.nrrd,0", "p2,p2_ct.nrrd,p2_mr.nrrd,1"]))
    converted, problems = load_paired_dataset(manifest, convert=lambda s: (s.patient_id, s.label))
    assert converted == [("p1", 0), ("p2", 1)] and problems == []

    def no_loading(*_args, **_kwargs):
        raise AssertionError("a case was loaded before the memory check")

    monkeypatch.setattr(fusion_data, "load_case", no_loading)
    monkeypatch.setattr("medanomaly.io.limits.available_memory_bytes", lambda: 100_000)
    cfg = parse_config({"task": "fusion", "data": {"source": "manifest", "manifest": str(tmp_path / "manifest.csv"),
                                                   "modalities": ["CT", "MR"], "size": [64, 64]}})  # fmt: skip
    with pytest.raises(InputError, match=r"2 images of 2 x 64 x 64 need about 128 KiB of memory but 97\.66 KiB is "
                                         r"available: use fewer patients or a smaller data.size"):  # fmt: skip
        build_splits(cfg)


def test_a_case_on_two_grids_is_registered_as_it_loads_when_the_config_asks(tmp_path):
    """``data.alignment: register``: a CT and a second channel 5 mm apart (another grid, no frame of reference
    recorded) were refused ("grids differ"); registered, the second lands on the CT's grid, its anatomy on the CT's."""
    _write_pair(tmp_path, "p1", shift_origin=True)
    manifest = read_manifest(_manifest(tmp_path, ["p1,p1_ct.nrrd,p1_mr.nrrd,1"]))
    with pytest.raises(InputError, match="another frame of reference"):
        load_case(manifest.cases[0], alignment="resample")  # NRRD records no frame: coordinates cannot be trusted
    sample = load_case(manifest.cases[0], alignment="register")
    ct, mr = sample.volumes["CT"], sample.volumes["MR"]
    assert mr.same_grid(ct) and any("registration" in k for k in mr.meta)
    expected = np.sqrt(np.abs(ct.array.astype(np.float32)))
    inner = (slice(None), slice(10, -10), slice(10, -10))
    assert np.corrcoef(mr.array[inner].ravel(), expected[inner].ravel())[0, 1] > 0.98
    samples, problems = load_paired_dataset(manifest, alignment="register")
    assert len(samples) == 1 and problems == []


def test_a_case_of_two_frames_of_reference_on_one_grid_is_refused_unless_registered(tmp_path):
    """Training took a CT and an MR recording two DICOM frames of reference on grids of one size and fused them voxel
    by voxel, while prediction refused such a pair: the loader now refuses it as prediction does (the case skipped,
    named with the config key that registers it); one frame, or registration asked, loads."""
    import medanomaly

    _write_pair(tmp_path, "p1")
    manifest = read_manifest(_manifest(tmp_path, ["p1,p1_ct.nrrd,p1_mr.nrrd,1"]))

    def frames(ct_frame: str, mr_frame: str):
        def reader(path: Path) -> Volume:
            volume = medanomaly.read(path)
            return volume.with_meta(frame_of_reference_uid=ct_frame if "_ct" in path.name else mr_frame)

        return reader

    samples, problems = load_paired_dataset(manifest, reader=frames("1.2.3", "1.2.4"))
    assert samples == [] and problems == [
        ("p1", "MR is in another frame of reference than CT: its voxels are not CT's places; data.alignment: register "
               "registers it onto CT")]  # fmt: skip
    assert load_case(manifest.cases[0], frames("1.2.3", "1.2.3")).volumes["MR"] is not None
    registered = load_case(manifest.cases[0], frames("1.2.3", "1.2.4"), alignment="register")
    assert registered.volumes["MR"].same_grid(registered.volumes["CT"])
