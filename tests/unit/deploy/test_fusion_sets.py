"""A fusion model's series of one study paired by modality: which series is which, and what a study that cannot make
one set says."""

from __future__ import annotations

import pytest

from medanomaly.deploy.archive import SeriesEntry
from medanomaly.deploy.fusion_sets import modality_matchers, pair_studies, parse_modality_series
from medanomaly.deploy.select import Decision
from medanomaly.errors import InputError


def _entry(key: str, study: str, description: str = "", modality: str = "MR", **kw) -> SeriesEntry:
    return SeriesEntry(key, study, "dicom", modality=modality, description=description, **kw)


def _matched(names, entry, rules=()) -> list[str]:
    matchers = modality_matchers(names, parse_modality_series(rules, names))
    return [name for name, match in matchers.items() if match(entry)]


@pytest.mark.parametrize(("description", "modality", "expected"), [
    ("AX T1W SE", "MR", ["T1"]), ("t1_mprage_sag", "MR", ["T1"]), ("T1WI", "MR", ["T1"]), ("pd_tse_tra", "MR", ["PD"]),
    ("T1rho map", "MR", []), ("PDFS", "MR", []), ("T1 chest", "CT", []), ("", "MR", []), ("T12 T1 PD", "MR", ["T1", "PD"]),
])  # fmt: skip
def test_a_sequence_name_matches_a_word_of_the_description_of_its_modality(description, modality, expected):
    assert _matched(("T1", "PD"), _entry("1", "9", description, modality)) == expected


def test_a_modality_name_matches_the_dicom_modality_and_a_rule_replaces_the_default():
    ct, mr = _entry("1", "9", "T1 chest", "CT"), _entry("2", "9", "anything", "MR")
    assert _matched(("CT", "MRI"), ct) == ["CT"] and _matched(("CT", "MRI"), mr) == ["MRI"]
    assert _matched(("T1", "PD"), mr, ["PD=any"]) == ["PD"]
    assert _matched(("T1", "PD"), _entry("3", "9", "pd_fs"), ["PD=^pd_"]) == ["PD"]


@pytest.mark.parametrize(("rule", "reason"), [
    ("PD", "NAME=REGEX"), ("PD=", "NAME=REGEX"), ("T2=x", "the model's modalities are T1, PD"),
    ("PD=(", "not a regular expression"), ("PD=" + "x" * 201, "over 200 characters"),
])  # fmt: skip
def test_a_bad_modality_series_rule_is_one_line(rule, reason):
    with pytest.raises(InputError, match=reason.replace("(", r"\(")):
        parse_modality_series([rule], ("T1", "PD"))
    with pytest.raises(InputError, match="given twice"):
        parse_modality_series(["PD=a", "PD=b"], ("T1", "PD"))


def _pair(entries, names=("T1", "PD"), refused=()):
    decisions = [Decision(e, "refused", "series x: needs ~9 GiB") if e.key in refused else Decision(e, "run")
                 for e in entries]  # fmt: skip
    out, sets = pair_studies(decisions, names, modality_matchers(names), lambda key: f"S-{key}")
    return {d.entry.key: (d.status, d.reason) for d in out}, sets


def test_each_study_makes_one_set_run_on_its_first_modality_and_the_others_name_that_row():
    got, sets = _pair([_entry("a", "s1", "pd"), _entry("b", "s1", "T1"), _entry("c", "s2", "PD"),
                       _entry("d", "s1", "localizer T1", image_type=("ORIGINAL", "LOCALIZER")), _entry("e", "s1", "DWI")])
    assert got["b"] == ("run", "") and got["a"] == ("skipped", "PD of the fusion set in the row of series S-b")
    assert got["c"] == ("run", "") and got["d"][0] == got["e"][0] == "skipped"
    assert "no modality of the fusion model" in got["e"][1]
    assert [(n, e and e.key) for n, e in sets["b"].members] == [("T1", "b"), ("PD", "a")]
    assert [(n, e and e.key) for n, e in sets["c"].members] == [("T1", None), ("PD", "c")]  # T1 missing: flagged


def test_a_study_with_two_series_for_a_modality_is_an_error_on_each_naming_them():
    got, sets = _pair([_entry("a", "s1", "T1 pre"), _entry("b", "s1", "T1 post"), _entry("c", "s1", "PD"),
                       _entry("d", "s2", "T1 PD")])  # fmt: skip
    assert {k: s for k, (s, _) in got.items()} == {"a": "error", "b": "error", "c": "error", "d": "error"} and not sets
    assert got["a"][1] == ("2 series of its study match T1 (S-a, S-b): tell them apart with --modality-series "
                           "NAME=REGEX")  # fmt: skip
    assert got["d"][1].startswith("series S-d matches T1 and PD")


def test_a_reason_names_a_few_series_of_a_large_study_and_counts_the_rest():
    """Every matched series of a study with hundreds of T1 series had a reason naming all of them (quadratic)."""
    got, _ = _pair([_entry(f"k{i}", "s1", "T1") for i in range(300)] + [_entry(f"d{i}", "s1", "T1 PD") for i in range(9)])
    reason = got["k0"][1]
    assert reason.startswith("309 series of its study match T1 (S-k0, S-k1, S-k2, S-k3, S-k4 and 304 more)")
    assert "4 more series match two" in reason and len(reason) < 500, reason


def test_a_member_over_the_memory_limit_refuses_the_set():
    got, sets = _pair([_entry("a", "s1", "T1"), _entry("b", "s1", "PD")], refused={"b"})
    assert got["a"] == ("refused", "PD: series x: needs ~9 GiB") and got["b"][0] == "refused" and not sets
    got, _ = _pair([_entry("a", "s1", "T1"), _entry("c", "s1", "DWI")], refused={"c"})
    assert got["c"] == ("refused", "series x: needs ~9 GiB")  # matching no modality, it is still refused, not skipped
    got, _ = _pair([_entry("a", "s1", "T1"), _entry("b", "s1", "PD")], refused={"a"})
    assert got["a"] == ("refused", "T1: series x: needs ~9 GiB")
    assert got["b"] == ("skipped", "PD of the fusion set in the row of series S-a")


def test_by_patient_a_ct_and_an_mr_of_two_studies_make_one_set_and_a_series_naming_no_patient_stays_in_its_study():
    """A CT study and an MR study of one patient (the cardiac case study's two visits): by study each was a set of
    its own with the other modality missing."""
    ct = _entry("1", "study-ct", modality="CT", patient_key="p1")
    mr = _entry("2", "study-mr", modality="MR", patient_key="p1")
    lone = _entry("3", "study-x", modality="MR")  # no PatientID: paired within its study only
    decisions = [Decision(e, "run") for e in (ct, mr, lone)]
    by_study = pair_studies(decisions, ("CT", "MR"), modality_matchers(("CT", "MR")))[1]
    assert set(by_study) == {"1", "2", "3"}
    out, sets = pair_studies(decisions, ("CT", "MR"), modality_matchers(("CT", "MR")), by="patient")
    assert set(sets) == {"1", "3"} and dict(sets["1"].members) == {"CT": ct, "MR": mr}
    assert [d.status for d in out] == ["run", "skipped", "run"]
    two = [Decision(_entry(k, f"s{k}", modality="CT", patient_key="p2"), "run") for k in ("4", "5")]
    out, sets = pair_studies(two, ("CT", "MR"), modality_matchers(("CT", "MR")), by="patient")
    assert not sets and all(d.reason.startswith("2 series of its patient match CT (4, 5)") for d in out)


def test_a_partner_series_read_error_names_the_archive_s_file_through_the_keyed_id(tmp_path) -> None:
    """``partner_error``: a reason naming a reader's link (``000001.dcm``) becomes a problem naming the archive's file
    as results show it (``file_id``); a reason naming no file adds none (it is the row's own reason already)."""
    from medanomaly.deploy.fusion_sets import FusionSet, partner_problems

    files = [tmp_path / "mr" / f"slice{i}.dcm" for i in range(3)]
    ct, mr = _entry("1.2.3", "9", modality="CT"), _entry("1.2.4", "9", files=files)
    fusion = FusionSet((("ct", ct), ("mr", mr)))

    def problems(reason: str) -> list:
        record = {"partner_error": {"series": "id-1.2.4", "reason": reason}}
        return partner_problems(fusion, record, tmp_path, lambda f: f"key({f})", lambda e: f"id-{e.key}")

    (problem,) = problems("gap of 10 mm after 000001.dcm")
    assert (problem.where, problem.kind) == ("id-1.2.4", "series")
    assert problem.reason == "gap of 10 mm after key(mr/slice1.dcm)"
    assert problems("pixel data cannot be decoded") == []
