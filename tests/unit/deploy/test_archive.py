"""Archive walking (safe: loops, non-UTF-8 names, unreadable files, non-image objects) and series choice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medanomaly.deploy.archive import read_series, walk_archive
from medanomaly.deploy.select import kernel_class, parse_rule, parse_size, select_series
from medanomaly.errors import InputError


def test_walk_groups_by_series_uid_and_reports_clutter(small_archive) -> None:
    index = walk_archive(small_archive.root)
    dicom = {s.key for s in index.series if s.kind == "dicom"}
    assert set(small_archive.good) | set(small_archive.bad) | set(small_archive.localizers) == dicom
    assert len([s for s in index.series if s.kind == "volume"]) == 1  # the NIfTI copy
    reasons = {p.where: p.reason for p in index.problems}
    assert any("SR" in r for r in reasons.values()) and any("RTPLAN" in r for r in reasons.values())
    assert reasons["misc/broken.dcm"] == "not a DICOM file"
    assert "misc/caf\\xe9-notes.txt" in reasons  # the non-UTF-8 name, shown escaped
    # the symlink loop misc/loop -> root is entered once: no series counted twice
    for s in index.series:
        assert len(s.files) == len({f.resolve() for f in s.files})
        assert s.n_frames == (len(s.files) if s.kind == "dicom" else 8)


def test_files_of_one_series_in_two_folders_are_one_series(tmp_path: Path, make_ct) -> None:
    from medanomaly.io.dicom_writer import write_dicom_series

    files = write_dicom_series(make_ct(), tmp_path / "a", series_uid="1.2.3.4", study_uid="1.2.3")
    (tmp_path / "b").mkdir()
    for f in files[::2]:
        f.rename(tmp_path / "b" / f.name)
    index = walk_archive(tmp_path)
    (entry,) = index.series
    assert entry.key == "1.2.3.4" and entry.n_frames == len(files)
    assert read_series(entry).shape == make_ct().shape


def test_a_hostile_files_megabyte_of_description_is_kept_to_a_few_characters(tmp_path: Path, make_ct) -> None:
    """A SeriesDescription (LO: 64 characters) of 60,000 was kept whole, and every --series-filter ~ rule and fusion
    pairing expression was matched against it; a kernel too long for its VR's length field (written as UN, read as
    bytes) was kept as the text "b'B30f...'"."""
    import pydicom

    from medanomaly.io.dicom_writer import write_dicom_series

    files = write_dicom_series(make_ct(), tmp_path / "s", description="T1")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SeriesDescription, ds.ConvolutionKernel = "T1 " + "x" * 60_000, "B30f" + "y" * 100_000
        ds.save_as(f)
    (entry,) = walk_archive(tmp_path).series
    assert entry.description.startswith("T1 x") and entry.kernel.startswith("B30f")
    assert len(entry.description) == len(entry.kernel) == 128


def test_unreadable_file_is_a_problem_not_a_crash(tmp_path: Path, make_ct) -> None:
    from medanomaly.io.dicom_writer import write_dicom_series

    files = write_dicom_series(make_ct(), tmp_path / "s")
    if os.geteuid() == 0:  # root reads everything: make the file unreadable another way
        files[0].unlink()
        os.symlink(tmp_path / "missing", files[0])
    else:
        files[0].chmod(0)
    index = walk_archive(tmp_path)
    assert len(index.problems) == 1 and index.problems[0].where == "s/slice_0000.dcm"
    assert len(index.series) == 1


def test_a_link_out_of_the_archive_is_not_followed(tmp_path: Path, make_ct) -> None:
    """A link to ``/etc`` made the walk read 839 files outside the archive (a link to ``/``, the whole file system);
    a series behind a link out of the archive is not the archive's either. Links inside it are followed."""
    from medanomaly.io.dicom_writer import write_dicom_series

    write_dicom_series(make_ct(), tmp_path / "elsewhere" / "s", series_uid="1.2.3.9")
    archive = tmp_path / "archive"
    write_dicom_series(make_ct(seed=1), archive / "own", series_uid="1.2.3.8")
    os.symlink(tmp_path / "elsewhere", archive / "out_link")
    os.symlink("/etc", archive / "etc_link")
    os.symlink(archive / "own", archive / "in_link")
    index = walk_archive(archive)
    assert [s.key for s in index.series] == ["1.2.3.8"] and len(index.series[0].files) == make_ct().shape[0]
    assert {(p.where, p.reason) for p in index.problems} == {("out_link", "link out of the archive: not followed"),
                                                              ("etc_link", "link out of the archive: not followed")}


def test_a_named_pipe_in_the_archive_is_reported_not_passed_over(tmp_path: Path, make_ct) -> None:
    """A named pipe among the slices was left out without a word (neither a series file nor a problem)."""
    from medanomaly.io.dicom_writer import write_dicom_series

    write_dicom_series(make_ct(), tmp_path / "s", series_uid="1.2.3.7")
    os.mkfifo(tmp_path / "s" / "pipe.dcm")
    index = walk_archive(tmp_path)
    assert [s.key for s in index.series] == ["1.2.3.7"] and len(index.series[0].files) == make_ct().shape[0]
    assert [(p.where, p.reason) for p in index.problems] == [
        ("s/pipe.dcm", "not a regular file (a device, a named pipe or a socket)")]


def test_a_nifti_pair_is_one_series_keyed_by_its_voxels_too(tmp_path: Path) -> None:
    """A NIfTI pair is one series (its .img indexed through its .hdr, not a "not a DICOM file" problem), read as the
    image; the key of a header whose voxels sit in another file (.img, an .nhdr's or .mhd's data) hashes those
    voxels too: replaced voxels under an unchanged header had kept the key, and a rerun reused the old result. A
    header naming data outside its folder is a problem of the walk."""
    import nibabel as nib
    import numpy as np

    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    nib.save(nib.Nifti1Pair(data, np.eye(4)), tmp_path / "pair.hdr")
    nhdr = "NRRD0004\ntype: short\ndimension: 3\nsizes: 6 5 4\nencoding: raw\nendian: little\ndata file: {}\n\n"
    (tmp_path / "scan.raw").write_bytes(data.tobytes())
    (tmp_path / "scan.nhdr").write_text(nhdr.format("scan.raw"))
    (tmp_path / "evil.nhdr").write_text(nhdr.format("/etc/passwd"))
    index = walk_archive(tmp_path)
    keys = {s.files[0].name: s.key for s in index.series}
    assert sorted(keys) == ["pair.hdr", "scan.nhdr"]
    assert [(p.where, p.reason.split(" (")[0]) for p in index.problems] == [
        ("evil.nhdr", "header names a data file outside its folder")]
    assert np.array_equal(read_series(next(s for s in index.series if s.files[0].suffix == ".hdr")).array,
                          data.transpose(2, 1, 0))  # fmt: skip
    nib.save(nib.Nifti1Pair(data[::-1].copy(), np.eye(4)), tmp_path / "pair.hdr")  # same header, other voxels
    (tmp_path / "scan.raw").write_bytes(data[::-1].tobytes())
    again = {s.files[0].name: s.key for s in walk_archive(tmp_path).series}
    assert again["pair.hdr"] != keys["pair.hdr"] and again["scan.nhdr"] != keys["scan.nhdr"]


def test_missing_archive_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        walk_archive(tmp_path / "nope")


def test_detection_picks_the_thinnest_soft_axial_ct_per_study(small_archive) -> None:
    import dataclasses

    index = walk_archive(small_archive.root)
    base = next(s for s in index.series if s.key == small_archive.good[0])
    thin = dataclasses.replace(base, key="thin", slice_thickness=1.0, kernel="B31f")
    bone = dataclasses.replace(base, key="bone", slice_thickness=0.6, kernel="B70f")
    cor = dataclasses.replace(base, key="cor", slice_thickness=0.5, orientation="coronal")
    mr = dataclasses.replace(base, key="mr", modality="MR")
    decisions = {d.entry.key: d for d in select_series([base, thin, bone, cor, mr], "lung_nodule")}
    assert decisions["thin"].status == "run"
    assert decisions[base.key].status == "skipped" and "thin" in decisions[base.key].reason
    assert decisions["bone"].status == "skipped"  # thinner, but a bone kernel
    assert "not axial" in decisions["cor"].reason and "not CT" in decisions["mr"].reason
    # another task runs every series passing the filters
    other = {d.entry.key: d.status for d in select_series([base, mr], "classification", ["Modality=MR"])}
    assert other == {base.key: "skipped", "mr": "run"}


def test_series_over_the_memory_limit_is_refused_by_uid(small_archive) -> None:
    index = walk_archive(small_archive.root)
    entry = next(s for s in index.series if s.key == small_archive.good[0])
    assert entry.estimated_bytes == 64 * 64 * 8 * 4  # rows x columns x frames x float32
    (d,) = select_series([entry], "lung_nodule", memory_limit=entry.estimated_bytes - 1)
    assert d.status == "refused" and entry.key in d.reason and "over the limit" in d.reason
    (d,) = select_series([entry], "lung_nodule", memory_limit=entry.estimated_bytes)
    assert d.status == "run"


@pytest.mark.parametrize(
    ("text", "field", "op"),
    [("Modality=CT", "modality", "="), ("SliceThickness<=2.5", "slice_thickness", "<="),
     ("ConvolutionKernel~B3", "kernel", "~"), ("orientation!=axial", "orientation", "!=")],
)  # fmt: skip
def test_parse_rule(text: str, field: str, op: str) -> None:
    rule = parse_rule(text)
    assert (rule.field, rule.op) == (field, op)


@pytest.mark.parametrize("text", ["Modality", "PatientName=X", "SliceThickness<thin", "SeriesDescription~("])
def test_bad_rules_are_one_line(text: str) -> None:
    with pytest.raises(InputError, match="series filter"):
        parse_rule(text)


def test_kernel_classes_and_sizes() -> None:
    assert [kernel_class(k) for k in ("B31f", "Br40", "LUNG", "B60f", "BONEPLUS", "FC13", "")] == [
        "soft", "soft", "lung", "bone", "bone", "soft", "unknown"]  # fmt: skip
    assert parse_size("4G") == 4 << 30 and parse_size("512MiB") == 512 << 20 and parse_size(1000) == 1000
    with pytest.raises(InputError):
        parse_size("lots")


def test_selection_policy_follows_task_and_input_modality() -> None:
    from types import SimpleNamespace

    from medanomaly.deploy.select import selection_policy

    assert selection_policy("lung_nodule") == "ct_detection"
    assert selection_policy("detection", SimpleNamespace(input={"modality": "CT"})) == "ct_detection"
    assert selection_policy("detection", SimpleNamespace(input={"modality": "MG"})) == "detection"
    assert selection_policy("classification", None) == "classification"


def test_two_copies_of_one_volume_are_two_series_and_both_run(tmp_path: Path, make_ct) -> None:
    """Volume files were keyed by their size and first MiB alone: two copies of one CT (or two of one size whose
    first MiB agree) shared a key, and the selection then skipped both ("not selected: study's detection series is
    file-..."), so an archive of them was processed not at all. The key now holds the file's place (hashed)."""
    from medanomaly.io import write

    volume = make_ct(shape=(6, 24, 20))
    write(volume, tmp_path / "a" / "scan.nii.gz")
    write(volume, tmp_path / "b" / "scan.nii.gz")
    write(volume, tmp_path / "scan.nrrd")
    index = walk_archive(tmp_path)
    keys = [s.key for s in index.series]
    assert len(keys) == 3 and len(set(keys)) == 3 and not any("scan" in k for k in keys)
    assert [d.status for d in select_series(index.series, "lung_nodule")] == ["run", "run", "run"]
    assert [s.key for s in walk_archive(tmp_path).series] == keys  # the same keys again: a rerun resumes
