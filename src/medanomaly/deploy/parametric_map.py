"""An anomaly or heat map as a DICOM Parametric Map (32-bit float pixels, highdicom).

The map is put on the source grid first (linear interpolation when the model made it on its
own grid), then written frame by frame against the source images, with a real-world value
mapping that says what the numbers mean (unitless score, higher = more abnormal; identity
slope/intercept, so the stored floats are the scores).

Example:
    >>> pm = build_parametric_map(prediction.anomaly_map, source, volume, run_id="r1")  # doctest: +SKIP
    >>> pm.FloatPixelData is not None                                                  # doctest: +SKIP
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from medanomaly.deploy.codes import deterministic_uid, finding_site, unit
from medanomaly.deploy.dicom_source import MANUFACTURER, MODEL_NAME, SourceSeries, software_version
from medanomaly.errors import InputError
from medanomaly.types import Volume

if TYPE_CHECKING:  # pragma: no cover
    import highdicom as hd

__all__ = ["PM_SERIES_NUMBER", "build_parametric_map", "map_on_source_grid"]

PM_SERIES_NUMBER = 903
#: Paired organs: a map over the whole organ covers both sides (FrameLaterality "B").
_PAIRED = frozenset({"lung", "breast", "kidney"})
#: Site -> BodyPartExamined defined term (PS3.16 Annex L), used when the source has none.
_BODY_PART = {"lung": "CHEST", "chest": "CHEST", "breast": "BREAST", "brain": "BRAIN", "liver": "LIVER",
              "kidney": "KIDNEY"}  # fmt: skip


def map_on_source_grid(score_map: Volume, volume: Volume) -> np.ndarray:
    """The map as float32 (z, y, x) on ``volume``'s grid (linear resampling when the grids differ).

    Raises:
        InputError: the map is not scalar or holds no finite value.
    """
    if score_map.n_components != 1:
        raise InputError("an anomaly map must be scalar (one value per voxel)")
    if not score_map.same_grid(volume, tol=1e-3):
        from medanomaly.preprocess.resample import resample_like

        score_map = resample_like(score_map.with_array(np.asarray(score_map.array, np.float32)), volume, "linear",
                                  default=float(np.nanmin(score_map.array)))  # fmt: skip
    array = np.asarray(score_map.array, dtype=np.float32)
    if not np.isfinite(array).any():
        raise InputError("the anomaly map holds no finite value")
    return np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)


def build_parametric_map(
    score_map: Volume,
    source: SourceSeries,
    volume: Volume,
    *,
    run_id: str = "",
    label: str = "anomaly score",
    site: str | None = "lung",
) -> hd.pm.ParametricMap:
    """A DICOM Parametric Map (float) of a voxel-wise score map on the source series.

    Args:
        score_map: voxel-wise scores (higher = more abnormal), on ``volume``'s grid or any grid
            overlapping it.
        source: the source series headers matched to ``volume``.
        volume: the image the map was made from.
        run_id: identifies the model run; enters the deterministic UIDs.
        label: what the values are (LUT explanation), e.g. "anomaly score" or "nodule probability".
        site: anatomic site the map covers ("lung", "breast", "brain", ...): written as the
            Frame Anatomy (region + laterality "B" for paired organs, "U" otherwise), or None.
    """
    import highdicom as hd

    array = source.frames(map_on_source_grid(score_map, volume))
    lo, hi = float(array.min()), float(array.max())
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="SCORE",
        lut_explanation=f"{label} (higher = more abnormal)"[:64],
        unit=unit("1"),
        value_range=(lo, hi),
        slope=1.0,
        intercept=0.0,
    )
    width = max(hi - lo, 1e-6)  # LINEAR_EXACT: a width under 1 (a 0..1 attribution map) is valid DICOM only with it
    pm = hd.pm.ParametricMap(
        source_images=list(source.datasets),
        pixel_array=np.ascontiguousarray(array, dtype=np.float32),
        series_instance_uid=deterministic_uid(run_id, source.series_uid, "pm-series"),
        series_number=PM_SERIES_NUMBER,
        sop_instance_uid=deterministic_uid(run_id, source.series_uid, "pm"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=software_version(),
        device_serial_number="0",
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=(lo + hi) / 2.0, window_width=width,
                                                         voi_lut_function="LINEAR_EXACT")],  # fmt: skip
        series_description=f"{label} map"[:64],
    )
    if site:
        _add_frame_anatomy(pm, site)
    body_part = source.datasets[0].get("BodyPartExamined") or _BODY_PART.get((site or "").strip().lower())
    if body_part:  # tells validators whether General Series Laterality is needed (paired part)
        pm.BodyPartExamined = str(body_part)
    else:  # Type 2C when the part may be paired: present and empty (unknown) when nothing says which part
        pm.Laterality = ""
    return pm


def _add_frame_anatomy(pm: hd.pm.ParametricMap, site: str) -> None:
    """Frame Anatomy functional group (shared by all frames): anatomic region and frame laterality."""
    from pydicom.dataset import Dataset

    code = finding_site(site)
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = code.value, code.scheme_designator, code.meaning
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = [region]
    anatomy.FrameLaterality = "B" if site.strip().lower() in _PAIRED else "U"
    pm.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [anatomy]
