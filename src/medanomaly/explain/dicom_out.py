"""DICOM output of an explanation, so a PACS viewer shows it next to the study.

The overlay is written as a highdicom Secondary Capture (``SCImage``): RGB, 8 bit, the scan's
axial slice(s) in a display window with the heatmap blended in and the lesion contour burnt in,
at native resolution with the slice's pixel spacing and patient orientation (``L``, ``P``, after
reorientation to LPS). With a source DICOM dataset the new series joins its study (patient and
study attributes are copied by highdicom); without one a new study is made with an anonymous
patient, never with identifying data.

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> img = Volume(np.random.rand(4, 16, 16).astype(np.float32))
    >>> heat = img.with_array(np.random.rand(4, 16, 16).astype(np.float32))
    >>> [p.name for p in write_secondary_capture(img, heat, "/tmp/sc_doctest")]
    ['explanation_000.dcm']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.io.dicom_reference import quiet_person_name
from medanomaly.io.staged import write_staged
from medanomaly.types import Volume


def blend_slice(image: Volume, map_volume: Volume, z: int, *, mask: Volume | None = None,
                window: tuple[float, float] | None = None, alpha: float = 0.45,
                threshold: float = 0.15) -> np.ndarray:  # fmt: skip
    """RGB uint8 ``(Y, X, 3)`` of axial slice ``z`` (LPS) with the heatmap (inferno) and lesion contour
    (a flat map, empty or constant, is not blended in)."""
    from matplotlib import colormaps
    from scipy.ndimage import binary_erosion

    from medanomaly.explain.overlay import _to_lps, _window
    from medanomaly.preprocess.intensity import window_array

    img, heat = _to_lps(image), _to_lps(map_volume)
    lo, hi = _window(img, window)
    grey = window_array(img.array[z], lo, hi)
    rgb = np.repeat(grey[..., None], 3, axis=2) if grey.ndim == 2 else grey[..., :3]
    harr = np.asarray(heat.array, dtype=np.float32)
    vmax = float(harr.max()) if harr.max() > 0 else 1.0
    h = np.clip(harr[z] / vmax, 0, 1)
    colour = colormaps["inferno"](h)[..., :3]
    from medanomaly.explain.maps import is_flat

    a = np.where((h >= threshold) & (not is_flat(harr)), alpha, 0.0)[..., None]  # a flat map shows nothing
    rgb = rgb * (1 - a) + colour * a
    if mask is not None:
        m = np.asarray(_to_lps(mask).array[z]) > 0
        edge = m & ~binary_erosion(m)
        rgb[edge] = (0.0, 1.0, 1.0)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def write_secondary_capture(image: Volume, map_volume: Volume, out_dir: str | Path, *,
                            mask: Volume | None = None, slices: str = "peak", reference: Any = None,
                            series_description: str = "medanomaly explanation",
                            stem: str = "explanation", **blend_options: Any) -> list[Path]:  # fmt: skip
    """Write the overlay as DICOM Secondary Capture file(s) in ``out_dir``.

    Args:
        slices: "peak" (the axial slice through the map's maximum) or "all" (one file per slice).
        reference: a pydicom Dataset of the source study (its patient/study are reused), or None.
    """
    import highdicom as hd
    from pydicom.uid import generate_uid

    from medanomaly.explain.overlay import _to_lps

    if not map_volume.same_grid(image):
        raise InputError("the map is not on the image grid; resample it first")
    if slices not in ("peak", "all"):
        raise InputError(f"slices must be 'peak' or 'all', got {slices!r}")
    heat = _to_lps(map_volume)
    oriented = _to_lps(image)
    from medanomaly.explain.maps import peak_index

    peak_z = int(peak_index(heat.array)[0])
    zs = [peak_z] if slices == "peak" else list(range(oriented.shape[0]))
    series_uid = generate_uid()
    study_uid = generate_uid()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sx, sy, _ = oriented.spacing
    written = []
    for number, z in enumerate(zs, start=1):
        rgb = blend_slice(image, map_volume, z, mask=mask, **blend_options)
        common = dict(
            pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=8,
            coordinate_system="PATIENT", series_instance_uid=series_uid, series_number=900,
            sop_instance_uid=generate_uid(), instance_number=number, manufacturer="medanomaly",
            pixel_spacing=(float(sy), float(sx)), patient_orientation=("L", "P"),
        )  # fmt: skip
        with quiet_person_name():  # highdicom quotes a one-component PatientName: PHI on stderr
            if reference is not None:
                sc = hd.sc.SCImage.from_ref_dataset(ref_dataset=reference, **common)
            else:
                sc = hd.sc.SCImage(study_instance_uid=study_uid, patient_id="ANONYMOUS",
                                   patient_name="Anonymous^", **common)  # fmt: skip
        # Laterality (General Series, Type 2C): dciodvfy requires it for a capture that names no body part; the
        # source's R / L when it has one, else empty (permitted when unknown)
        side = str(reference.get("Laterality", "") if reference is not None else "")
        sc.Laterality = side if side in ("R", "L") else ""
        sc.SeriesDescription = series_description
        sc.ImageComments = f"axial slice {z}; {map_volume.meta.get('description', 'attribution map')}"
        if image.meta.get("synthetic"):
            sc.ImageComments += "; synthetic"
        path = write_staged(out / f"{stem}_{z:03d}.dcm", lambda staged: sc.save_as(staged))  # noqa: B023 - called at once
        written.append(path)
    return written
