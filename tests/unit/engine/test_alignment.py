"""A fusion input's modalities aligned onto the first: registration (any frame of reference) on ITK's real T1 and PD
slices of one subject, the PD moved as a patient moves between two series."""

from __future__ import annotations

import re

import numpy as np
import pytest

from medanomaly.data.sources import real_data
from medanomaly.engine.alignment import align_to_first, alignment_of, onto_first_by_registration, registration_flags
from medanomaly.errors import InputError
from medanomaly.types import Volume

#: How far the PD is moved (rows, columns: y, x pixels of 1 mm).
MOVE = (7, -5)


def _slice(name: str, move: tuple[int, int] = (0, 0)) -> Volume:
    from PIL import Image

    path = real_data(f"itk/{'BrainT1Slice' if name == 'T1' else 'BrainProtonDensitySlice'}.png")
    pixels = np.asarray(Image.open(path).convert("L"), np.float32)
    moved = np.full_like(pixels, pixels.min())
    rows, cols = pixels.shape
    dy, dx = move
    moved[max(dy, 0):rows + min(dy, 0), max(dx, 0):cols + min(dx, 0)] = \
        pixels[max(-dy, 0):rows + min(-dy, 0), max(-dx, 0):cols + min(-dx, 0)]  # fmt: skip
    return Volume(moved[None], spacing=(1.0, 1.0, 3.0), meta={"modality": "MR"})


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    inner = (slice(None), slice(20, -20), slice(20, -20))  # away from the border the move left empty
    return float(np.corrcoef(a[inner].ravel(), b[inner].ravel())[0, 1])


def test_a_moved_pd_is_registered_back_onto_the_t1_and_the_transform_is_said() -> None:
    t1, pd, moved = _slice("T1"), _slice("PD"), _slice("PD", MOVE)
    assert _correlation(moved.array, pd.array) < 0.8  # the move matters
    out = onto_first_by_registration({"T1": t1, "PD": moved})
    assert out["T1"] is t1 and out["PD"].same_grid(t1)
    assert _correlation(out["PD"].array, pd.array) > 0.99
    (flag,) = registration_flags(out)
    translation = [float(v) for v in re.search(r"translation \(([^)]*)\) mm", flag).group(1).split(", ")]
    assert flag.startswith("registered:PD rigid onto T1: rotation ") and "mutual information" in flag
    assert translation == pytest.approx([MOVE[1], MOVE[0]], abs=0.3)  # fixed -> moving point: x then y, mm
    assert registration_flags({"T1": t1, "PD": moved}) == ()


def test_a_missing_modality_stays_missing_and_none_aligns_nothing() -> None:
    t1 = _slice("T1")
    assert onto_first_by_registration({"T1": None, "PD": t1}) == {"T1": None, "PD": t1}
    assert align_to_first({"T1": t1, "PD": None}, "register") == {"T1": t1, "PD": None}
    moved = _slice("PD", MOVE)
    assert align_to_first({"T1": t1, "PD": moved}, "none")["PD"] is moved


def test_what_registration_cannot_align_is_one_line_naming_both() -> None:
    t1 = _slice("T1")
    flat = t1.with_array(np.zeros_like(t1.array))
    with pytest.raises(InputError, match="PD registered onto T1: moving image is constant"):
        onto_first_by_registration({"T1": t1, "PD": flat})
    with pytest.raises(InputError, match="give one"):
        alignment_of(True, True)
    with pytest.raises(InputError, match="alignment must be one of none, resample, register"):
        align_to_first({"T1": t1}, "guess")


def test_a_registration_that_leaves_them_less_alike_is_refused(monkeypatch) -> None:
    """The optimiser can end worse than it started (a local optimum far off): that is not predicted on."""
    from medanomaly.preprocess import registration

    real = registration.register

    def worse(fixed, moving, **kwargs):
        result = real(fixed, moving, **kwargs)
        return type(result)(result.resampled, result.transform, result.rigid, result.stages,
                            mutual_information_before=result.mutual_information + 0.5,
                            mutual_information=result.mutual_information)  # fmt: skip

    monkeypatch.setattr(registration, "register", worse)
    with pytest.raises(InputError, match=r"less alike than the start \(mutual information .* -> .*\); not predicted"):
        onto_first_by_registration({"T1": _slice("T1"), "PD": _slice("PD", MOVE)})


def test_a_large_image_is_registered_on_a_coarser_copy_and_moved_at_full_resolution(monkeypatch) -> None:
    """A 10.5 M-voxel pair took 50 s and 0.9 GB at full resolution (8.8 s and 0.5 GB on a copy of 2 M voxels, the same
    transform): past the limit the registration runs on a coarser copy, its transform applied to the full image."""
    from medanomaly.engine import alignment

    monkeypatch.setattr(alignment, "MAX_REGISTRATION_VOXELS", 10_000)  # the 181 x 217 slices: about 2 mm pixels
    t1, pd, moved = _slice("T1"), _slice("PD"), _slice("PD", MOVE)
    out = onto_first_by_registration({"T1": t1, "PD": moved})
    assert out["PD"].same_grid(t1) and _correlation(out["PD"].array, pd.array) > 0.98
    (flag,) = registration_flags(out)
    translation = [float(v) for v in re.search(r"translation \(([^)]*)\) mm", flag).group(1).split(", ")]
    assert translation == pytest.approx([MOVE[1], MOVE[0]], abs=0.6) and flag.endswith("(registered at 2.0 mm)")
