"""A fusion call's Spatial Registration: which series it can relate, and what it says of them (dciodvfy-clean)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medanomaly.deploy.dicom_reg import build_registration, can_register_frames
from medanomaly.errors import InputError

MATRIX = (1.0, 0.0, 0.0, -6.0, 0.0, 1.0, 0.0, -6.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def _series(tmp_path: Path, name: str, frame: str | None, study: str = "1.2.826.0.1.3680043.8.498.11"):
    """(SourceSeries, headers) of a 4-slice MR series of ``frame`` (None: no frame of reference recorded)."""
    from medanomaly.deploy.dicom_source import load_source_series, series_headers
    from medanomaly.io import read
    from medanomaly.io.dicom_writer import write_dicom_series
    from medanomaly.types import Volume

    meta = {"modality": "MR", **({"frame_of_reference_uid": frame} if frame else {})}
    volume = Volume(np.arange(4 * 16 * 16, dtype=np.float32).reshape(4, 16, 16), spacing=(1.0, 1.0, 2.0), meta=meta)
    files = write_dicom_series(volume, tmp_path / name, study_uid=study)
    read_back = read(tmp_path / name)
    return load_source_series(files, read_back), series_headers(files, str(read_back.meta["series_uid"]))


def test_a_registration_relates_the_first_frame_to_each_moved_one_and_passes_dciodvfy(tmp_path: Path) -> None:
    from medanomaly.deploy.atomic import atomic_save_dataset
    from medanomaly.deploy.dicom_out import dciodvfy

    t1, _ = _series(tmp_path, "t1", "1.2.826.0.1.3680043.8.498.21")
    _, pd = _series(tmp_path, "pd", "1.2.826.0.1.3680043.8.498.22", study="1.2.826.0.1.3680043.8.498.12")
    ds = build_registration(t1, [(pd, MATRIX)], run_id="r1", algorithm="fusion")
    assert ds.Modality == "REG" and ds.StudyInstanceUID == t1.study_uid
    first, moved = ds.RegistrationSequence
    assert (first.FrameOfReferenceUID, moved.FrameOfReferenceUID) == ("1.2.826.0.1.3680043.8.498.21",
                                                                      "1.2.826.0.1.3680043.8.498.22")  # fmt: skip
    matrix = moved.MatrixRegistrationSequence[0].MatrixSequence[0]
    assert [float(v) for v in matrix.FrameOfReferenceTransformationMatrix] == list(MATRIX)
    assert len(moved.ReferencedImageSequence) == 4 and matrix.FrameOfReferenceTransformationMatrixType == "RIGID"
    other = ds.StudiesContainingOtherReferencedInstancesSequence  # the PD is of another study
    assert other[0].StudyInstanceUID == "1.2.826.0.1.3680043.8.498.12"
    assert build_registration(t1, [(pd, MATRIX)], run_id="r1").SOPInstanceUID == ds.SOPInstanceUID  # a rerun: same
    assert dciodvfy(atomic_save_dataset(tmp_path / "reg.dcm", ds)).errors == []


def test_series_of_one_frame_or_of_none_get_no_registration(tmp_path: Path) -> None:
    """A PD registered within the T1's own frame (a patient who moved in one session): an item of that frame would
    contradict the first's identity; a series recording no frame cannot be related."""
    t1, _ = _series(tmp_path, "t1", "1.2.826.0.1.3680043.8.498.31")
    _, same = _series(tmp_path, "same", "1.2.826.0.1.3680043.8.498.31")
    _, none = _series(tmp_path, "none", None)
    for header in none:  # our writer always records one: as a foreign series that records none
        del header.FrameOfReferenceUID
    assert not can_register_frames(t1, [(same, MATRIX)]) and not can_register_frames(t1, [(none, MATRIX)])
    assert not can_register_frames(t1, [])
    with pytest.raises(InputError, match="each moved series another than the first's"):
        build_registration(t1, [(same, MATRIX)])
