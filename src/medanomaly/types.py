"""The small typed objects that travel through medanomaly.

Conventions, stated once for the whole package:

* **Geometry is LPS** (DICOM/ITK patient coordinates, millimetres). ``spacing``, ``origin`` and
  index tuples are in ITK order **(x, y, z)**; voxel arrays are stored NumPy-style **(z, y, x)**,
  exactly as ``SimpleITK.GetArrayFromImage`` returns them. A 2D image is a ``Volume`` with one slice.
* **Higher score = more abnormal.** Every detector, classifier and anomaly model returns scores
  where a larger value means "more likely a lesion / disease".
* **No PHI** in ``Volume.meta``: only technical keys (modality, series UID, rescale, source format).

Example:
    >>> import numpy as np
    >>> v = Volume(np.zeros((2, 3, 4), np.float32), spacing=(0.5, 0.5, 2.0))
    >>> v.index_to_physical((1, 2, 1)).tolist()
    [0.5, 1.0, 2.0]
    >>> v.physical_to_index((0.5, 1.0, 2.0)).tolist()
    [1.0, 2.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from medanomaly.geometry import Vec3, as_vec3, grid_metric_zyx, is_valid_direction, voxel_problem, voxel_volume_mm3

if TYPE_CHECKING:  # pragma: no cover
    import SimpleITK as sitk

#: Metadata keys a Volume may carry. Anything else is dropped: it could hold PHI.
SAFE_META_KEYS = frozenset(
    {
        "modality",
        "series_uid",
        "study_uid",
        "frame_of_reference_uid",  # the patient coordinate system the geometry is in (a structure set must share it)
        "sop_class_uid",
        "transfer_syntax",
        "rescale_applied",
        "rescale_slope",
        "rescale_intercept",
        "source_format",
        "n_frames",
        "n_series",
        "photometric",
        "body_part",
        "view",
        "laterality",
        "units",
        "window_center",
        "window_width",
        "skipped_files",
        "skipped_reasons",
        "synthetic",
        "description",
        "channels",
        "label",
        "exif_orientation",  # a picture turned upright as its EXIF orientation (2..8) says
        "frame_axis",  # "time": a cine loop's frames are time points stacked on z (spacing 1), not slices
        "spacing_assumed",  # the file states no pixel spacing: 1 mm was taken, so "mm" are pixels
        "spacing_assumed_directions",  # the LPS directions of the axes so taken (io.assumed_spacing)
        "orientation_assumed",  # a DICOM ImageOrientationPatient that gives no plane: read as axial
        "print_resolution_dpi",  # a JPEG's / TIFF's print density (x, y): how large to print it, not used as spacing
        "model_pixels",  # a model input without patient geometry: overlays label axes in pixels, not mm
        "registration",  # a fusion input registered onto the first modality: the transform found (engine.alignment)
        "registration_matrix",  # the same as a 4 x 4 matrix, moving -> fixed (a DICOM Spatial Registration's)
    }
)


@dataclass(frozen=True, eq=False)
class Volume:
    """Voxels plus their place in the patient: the one image type of medanomaly.

    Attributes:
        array: voxels, shape (z, y, x) for scalar images or (z, y, x, c) for multi-component
            images (RGB ultrasound, colour Doppler). CT voxels are in HU once rescaled.
        spacing: voxel size in mm, (x, y, z).
        origin: physical position of voxel (0, 0, 0) in mm, LPS, (x, y, z).
        direction: 3x3 direction cosines; column ``i`` is the LPS direction of index axis ``i``.
        meta: technical metadata only (see ``SAFE_META_KEYS``); never patient identity.
    """

    array: np.ndarray
    spacing: Vec3 = (1.0, 1.0, 1.0)
    origin: Vec3 = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim == 2:
            array = array[np.newaxis]
        if array.ndim not in (3, 4):
            raise ValueError(f"Volume array must be (z,y,x) or (z,y,x,c), got shape {array.shape}")
        spacing, origin = as_vec3(self.spacing, "spacing"), as_vec3(self.origin, "origin")
        problem = voxel_problem(array, spacing, origin)
        if problem:
            from medanomaly.errors import InputError  # errors and types are base-layer siblings; a ValueError

            raise InputError(problem)
        direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if not is_valid_direction(direction):
            raise ValueError(f"direction must be a finite, invertible 3x3 matrix, got {direction.tolist()}")
        unsafe = set(self.meta) - SAFE_META_KEYS
        if unsafe:
            raise ValueError(f"meta keys not allowed (possible PHI): {sorted(unsafe)}")
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    # ----------------------------------------------------------------------------- shape
    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (z, y, x)."""
        return tuple(int(s) for s in self.array.shape[:3])  # type: ignore[return-value]

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        """Spatial size in ITK order (x, y, z)."""
        z, y, x = self.shape
        return (x, y, z)

    @property
    def n_components(self) -> int:
        """1 for scalar images, 3 for RGB."""
        return 1 if self.array.ndim == 3 else int(self.array.shape[3])

    @property
    def is_2d(self) -> bool:
        return self.shape[0] == 1

    @property
    def modality(self) -> str:
        return str(self.meta.get("modality", "OT"))

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm^3: the product of the spacings, times |det direction| on a sheared grid (a
        sheared NIfTI sform, a gantry-tilted CT converted without correction), where the product overstates it
        (by 1 / cos(tilt): 6 % at 20 degrees)."""
        return voxel_volume_mm3(self.spacing, self.direction)

    @property
    def grid_metric_zyx(self) -> np.ndarray:
        """The grid's lengths: a 3x3 upper-triangular matrix R such that ``|R @ (dz, dy, dx)|`` is the length in mm
        of that index step (:func:`grid_metric_zyx`)."""
        return grid_metric_zyx(self.spacing, self.direction)

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous index (x, y, z, 1) to LPS mm."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction @ np.diag(self.spacing)
        affine[:3, 3] = self.origin
        return affine

    # ----------------------------------------------------------------------------- geometry
    def index_to_physical(self, index_xyz: Sequence[float] | np.ndarray) -> np.ndarray:
        """Map continuous index (x, y, z), or an (N, 3) array of them, to LPS mm."""
        idx = np.asarray(index_xyz, dtype=np.float64)
        matrix = self.direction @ np.diag(self.spacing)
        return idx @ matrix.T + np.asarray(self.origin)

    def physical_to_index(self, point_mm: Sequence[float] | np.ndarray) -> np.ndarray:
        """Map LPS mm point(s) to continuous index (x, y, z); round for the nearest voxel."""
        pts = np.asarray(point_mm, dtype=np.float64)
        matrix = self.direction @ np.diag(self.spacing)
        return (pts - np.asarray(self.origin)) @ np.linalg.inv(matrix).T

    def same_grid(self, other: Volume, tol: float = 1e-4) -> bool:
        """True when both volumes share shape, spacing, origin and direction (within ``tol`` mm)."""
        return self.grid_mismatch(other, tol) is None

    def grid_mismatch(self, other: Volume, tol: float = 1e-4) -> str | None:
        """What differs between this grid and ``other``'s, in words (None: the same grid within ``tol`` mm):
        shape (z, y, x), spacing (x, y, z) mm, origin (LPS mm) or direction, this grid's value first.

        Example:
            >>> a = Volume(np.zeros((2, 4, 4)), spacing=(1.0, 1.0, 2.0))
            >>> a.grid_mismatch(a.with_array(np.ones((2, 4, 4)))) is None
            True
            >>> a.grid_mismatch(Volume(np.zeros((2, 4, 4)), spacing=(1.0, 1.0, 3.0)))
            'spacing (1, 1, 2) mm vs (1, 1, 3) mm'
        """
        if self.shape != other.shape:
            return f"shape {self.shape} vs {other.shape}"
        for name, mine, theirs, unit in (("spacing", self.spacing, other.spacing, " mm"),
                                         ("origin", self.origin, other.origin, " mm"),
                                         ("direction", self.direction, other.direction, "")):
            if not np.allclose(mine, theirs, atol=tol):
                return f"{name} {_rounded(mine)}{unit} vs {_rounded(theirs)}{unit}"
        return None

    def placed_on(self, other: Volume, tol: float = 1e-3) -> Volume | None:
        """This image's voxels on ``other``'s grid (zeros elsewhere) when its voxel centres are ``other``'s, up to
        ``tol`` voxels: the same spacing and axes (any order or sign) and an origin a whole number of voxels away,
        all inside ``other`` (a DICOM SEG spans only the slices its segments touch, its slices maybe in reverse);
        None when they are not (then nothing is resampled here).

        Example:
            >>> big = Volume(np.zeros((4, 4, 4)))
            >>> part = Volume(np.ones((2, 4, 4)), origin=(0.0, 0.0, 1.0))
            >>> part.placed_on(big).array[:, 0, 0].tolist()
            [0.0, 1.0, 1.0, 0.0]
        """
        if self.array.ndim != other.array.ndim:
            return None
        index_map = np.linalg.inv(other.affine_lps) @ self.affine_lps  # this (x, y, z) index -> other's
        linear, offset = index_map[:3, :3], index_map[:3, 3]
        rounded = np.round(linear)
        permutation = np.abs(rounded).argmax(axis=0)  # other's axis of each of this image's axes
        if not (np.allclose(linear, rounded, atol=tol) and np.allclose(offset, np.round(offset), atol=tol)
                and np.all(np.abs(rounded).sum(axis=0) == 1) and len(set(permutation.tolist())) == 3):
            return None
        signs = rounded[permutation, [0, 1, 2]]
        data = np.moveaxis(self.array, (0, 1, 2), (2, 1, 0))  # (x, y, z[, c])
        data = np.flip(data, axis=tuple(a for a in range(3) if signs[a] < 0))
        data = np.moveaxis(data, (0, 1, 2), tuple(int(p) for p in permutation))  # in other's (x, y, z) order
        far_corner = (index_map @ np.append(np.asarray(self.shape[::-1]) - 1.0, 1.0))[:3]
        starts = np.rint(np.minimum(offset, far_corner)).astype(int)  # the lowest index of other that this covers
        ends = starts + np.asarray(data.shape[:3])
        target_xyz = np.zeros((*other.shape[::-1], *self.array.shape[3:]), self.array.dtype)
        if starts.min() < 0 or np.any(ends > np.asarray(target_xyz.shape[:3])):
            return None
        target_xyz[starts[0]:ends[0], starts[1]:ends[1], starts[2]:ends[2]] = data
        return other.with_array(np.ascontiguousarray(np.moveaxis(target_xyz, (0, 1, 2), (2, 1, 0))), **dict(self.meta))

    # ----------------------------------------------------------------------------- derive
    def with_array(self, array: np.ndarray, **meta: Any) -> Volume:
        """A new Volume on the same grid with other voxels (and optionally updated meta)."""
        array = np.asarray(array)
        if array.shape[:3] != self.array.shape[:3] and not (
            array.ndim == 2 and self.is_2d and array.shape == self.array.shape[1:3]
        ):
            raise ValueError(f"array shape {array.shape} does not fit grid {self.shape}")
        return replace(self, array=array, meta={**self.meta, **meta})

    def with_meta(self, **meta: Any) -> Volume:
        return replace(self, meta={**self.meta, **meta})

    # ----------------------------------------------------------------------------- SimpleITK
    def to_sitk(self) -> sitk.Image:
        """Convert to a SimpleITK image with identical geometry."""
        import SimpleITK as sitk

        is_vector = self.array.ndim == 4
        array = self.array
        if array.dtype == np.bool_:  # SimpleITK has no bool pixel type
            array = array.astype(np.uint8)
        elif array.dtype == np.float16:  # nor a half-float one ("dtype: float16 is not supported"); exact in float32
            array = array.astype(np.float32)
        elif not array.dtype.isnative:  # big-endian arrays (old DICOM) are not accepted
            array = array.astype(array.dtype.newbyteorder("="))
        image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=is_vector)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(tuple(self.direction.ravel()))
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, **meta: Any) -> Volume:
        """Build a Volume from a SimpleITK image (2D images become one slice)."""
        import SimpleITK as sitk

        array = sitk.GetArrayFromImage(image)
        dim = image.GetDimension()
        if dim == 2:
            spacing = (*image.GetSpacing(), 1.0)
            origin = (*image.GetOrigin(), 0.0)
            d2 = np.asarray(image.GetDirection()).reshape(2, 2)
            direction = np.eye(3)
            direction[:2, :2] = d2
            array = array[np.newaxis]
        elif dim == 3:
            spacing, origin = image.GetSpacing(), image.GetOrigin()
            direction = np.asarray(image.GetDirection()).reshape(3, 3)
        else:
            raise ValueError(f"only 2D and 3D images are supported, got {dim}D")
        return cls(array, spacing=spacing, origin=origin, direction=direction, meta=meta)

    def __repr__(self) -> str:
        return (
            f"Volume(shape={self.shape}, components={self.n_components}, dtype={self.array.dtype}, "
            f"spacing={tuple(round(s, 4) for s in self.spacing)}, modality={self.modality})"
        )


#: Modalities whose voxels are not Hounsfield units.
NON_HU_MODALITIES = frozenset({"MR", "US", "MG", "CR", "DX", "XA", "RF", "PT", "NM", "OP", "SM", "IVUS"})


#: Smallest share of voxels at or below -500 HU for a CT in HU: its air (outside the body, lungs,
#: airways). The CTs we read hold 21-60 %; an MRI's few negative interpolation values do not count
#: (nibabel's anatomical.nii T1: 0.08 % of voxels below 0, minimum -610, used to be called CT).
MIN_AIR_FRACTION = 0.01


def looks_like_hu(volume: Volume) -> bool:
    """True when the values are plausible for CT in HU: air (minimum -3100..-500 HU and at least
    :data:`MIN_AIR_FRACTION` of the voxels at or below -500 HU), no huge values."""
    arr = volume.array
    lo, hi = float(np.min(arr)), float(np.max(arr))
    return -3100.0 <= lo <= -500.0 and hi <= 40000.0 and float(np.mean(arr <= -500.0)) >= MIN_AIR_FRACTION


def require_scalar(volume: Volume, what: str = "this step") -> Volume:
    """Refuse a multi-component (colour) volume where one value per voxel is needed.

    Raises:
        InputError: naming ``what`` and the number of components.
    """
    if volume.n_components != 1:
        from medanomaly.errors import InputError  # errors and types are base-layer siblings

        raise InputError(f"{what} needs a scalar image (one value per voxel), got {volume.n_components} "
                         "components (a colour image?)")  # fmt: skip
    return volume


#: The largest magnitude float32 holds, the type every model and step computes in (a reader that would overflow it
#: keeps float64; the models and steps then refuse such values: :func:`medanomaly.preprocess.checks.require_float32_range`).
FLOAT32_MAX = float(np.finfo(np.float32).max)


def is_cine_loop(volume: Volume) -> bool:
    """Whether ``volume`` is a cine loop: several frames in time (``meta["frame_axis"] == "time"``) stacked on z."""
    return volume.meta.get("frame_axis") == "time" and volume.shape[0] > 1


def require_slices(volume: Volume, what: str = "this step") -> Volume:
    """Refuse a cine loop (``meta["frame_axis"] == "time"``, more than one frame) where z must be a length: its frames
    are time points stacked on z with spacing 1, and a volume in mL would sum them.

    Raises:
        InputError: naming ``what`` and the number of frames.
    """
    if is_cine_loop(volume):
        from medanomaly.errors import InputError  # errors and types are base-layer siblings

        raise InputError(f"{what} needs slices in space, got a cine loop of {volume.shape[0]} frames in time (its z "
                         "is time, not mm); give --frame N to take one frame, or save one frame as its own "
                         "image")  # fmt: skip
    return volume


def intensity_unit(image: Volume) -> str:
    """``HU`` for a CT (modality CT, or an unlabelled image whose values look like HU:
    :func:`looks_like_hu`), else ``a.u.`` (an MR or ultrasound signal has no physical unit).

    Example:
        >>> intensity_unit(Volume(np.zeros((1, 2, 2)), meta={"modality": "MR"}))
        'a.u.'
    """
    modality = image.modality.upper()
    if modality == "CT":
        return "HU"
    if modality in NON_HU_MODALITIES:
        return "a.u."
    return "HU" if looks_like_hu(image) else "a.u."


@dataclass(frozen=True)
class Measurements:
    """Quantitative description of one lesion, in physical units.

    Attributes:
        volume_ml: lesion volume in millilitres (voxel count x voxel volume).
        partial_volume_ml: the lesion's partial-volume volume, mL (each boundary voxel counted by the fraction of
            lesion its HU holds: :mod:`medanomaly.quantify.partial_volume`); ``nan`` when not computed (only the
            lung recipe computes it, for lesions in lung parenchyma).
        max_diameter_mm: largest 3D distance between two surface points, mm.
        long_axis_mm / short_axis_mm: RECIST-style axes on the axial slice of largest extent, mm.
        mean / max / std: intensity statistics inside the mask, in ``intensity_unit``.
        solid_fraction: fraction of voxels above the solid threshold (CT: -300 HU), 0..1; ``nan`` when the
            intensities are not HU.
        mesh_volume_ml ... max_2d_diameter_column_mm: IBSI / pyradiomics shape features
            (:data:`SHAPE_FEATURES`; definitions in :mod:`medanomaly.quantify.shape`); ``nan`` when
            not computed.
        intensity_unit: ``HU`` (CT) or ``a.u.`` (MR and other signal without a physical unit); the findings
            JSON names the statistics ``mean_hu`` ... for HU and ``mean_intensity`` ... otherwise.
        area_mm2: for a one-slice image (a mammogram, an ultrasound frame, a radiograph), the lesion's area in the
            image plane, mm² (pixel count x pixel area): the size to read there, since ``volume_ml`` and the 3D shape
            features then describe a slab one slice thick; ``nan`` for a volume.
    """

    volume_ml: float
    max_diameter_mm: float
    long_axis_mm: float = float("nan")
    short_axis_mm: float = float("nan")
    mean: float = float("nan")
    max: float = float("nan")
    std: float = float("nan")
    solid_fraction: float = float("nan")
    n_voxels: int = 0
    mesh_volume_ml: float = float("nan")
    surface_area_mm2: float = float("nan")
    sphericity: float = float("nan")
    major_axis_mm: float = float("nan")
    minor_axis_mm: float = float("nan")
    least_axis_mm: float = float("nan")
    elongation: float = float("nan")
    flatness: float = float("nan")
    max_2d_diameter_slice_mm: float = float("nan")
    max_2d_diameter_row_mm: float = float("nan")
    max_2d_diameter_column_mm: float = float("nan")
    intensity_unit: str = "HU"
    partial_volume_ml: float = float("nan")
    area_mm2: float = float("nan")


#: Intensity statistics of :class:`Measurements` and their findings-JSON names for HU and for other units.
INTENSITY_KEYS: dict[str, tuple[str, str]] = {"mean": ("mean_hu", "mean_intensity"), "max": ("max_hu", "max_intensity"),
                                              "std": ("std_hu", "std_intensity")}  # fmt: skip


#: Shape-feature fields of :class:`Measurements`, written under these names in findings JSON.
SHAPE_FEATURES: tuple[str, ...] = (
    "mesh_volume_ml", "surface_area_mm2", "sphericity", "major_axis_mm", "minor_axis_mm",
    "least_axis_mm", "elongation", "flatness", "max_2d_diameter_slice_mm", "max_2d_diameter_row_mm",
    "max_2d_diameter_column_mm",
)


@dataclass(frozen=True, eq=False)
class Finding:
    """One lesion found in one image. Higher ``score`` = more likely a true lesion.

    Attributes:
        center_mm: lesion centre in LPS mm (x, y, z).
        bbox_mm: ((x0, y0, z0), (x1, y1, z1)) physical bounding box, LPS mm.
        score: detector confidence; higher = more abnormal.
        label: a short class name ("nodule", "mass", ...).
        mask: the lesion mask on the source image grid (uint8), when segmented.
        measurements: physical measurements, when quantified.
    """

    center_mm: Vec3
    bbox_mm: tuple[Vec3, Vec3]
    score: float
    label: str = "lesion"
    mask: Volume | None = None
    measurements: Measurements | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict (the `findings.json` schema). Intensity statistics are ``mean_hu``, ``max_hu``,
        ``std_hu`` and ``solid_fraction`` for a CT in HU; ``mean_intensity``, ``max_intensity``, ``std_intensity``
        and ``intensity_unit`` for other images (an MR signal is not HU)."""
        out: dict[str, Any] = {
            "label": self.label,
            "center_mm": [round(float(c), 3) for c in self.center_mm],
            "bbox_mm": [[round(float(c), 3) for c in corner] for corner in self.bbox_mm],
            "score": float(self.score),
        }
        m = self.measurements
        if m is not None:
            out.update(
                volume_ml=m.volume_ml,
                max_diameter_mm=m.max_diameter_mm,
                long_axis_mm=m.long_axis_mm,
                short_axis_mm=m.short_axis_mm,
                n_voxels=m.n_voxels,
            )
            hu = m.intensity_unit == "HU"
            out.update({names[0 if hu else 1]: getattr(m, field) for field, names in INTENSITY_KEYS.items()})
            if hu:
                out["solid_fraction"] = m.solid_fraction
            else:
                out["intensity_unit"] = m.intensity_unit
            out.update({name: getattr(m, name) for name in SHAPE_FEATURES})
            if np.isfinite(m.partial_volume_ml):
                out["partial_volume_ml"] = m.partial_volume_ml
            if np.isfinite(m.area_mm2):
                out["area_mm2"] = m.area_mm2
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        """The inverse of :meth:`to_json` (masks are not stored in JSON; measurements are, when present).

        Example:
            >>> f = Finding((1.0, 2.0, 3.0), ((0.0, 0.0, 0.0), (2.0, 4.0, 6.0)), 0.9, "nodule")
            >>> Finding.from_json(f.to_json()).to_json() == f.to_json()
            True
        """
        try:
            center = tuple(float(c) for c in data["center_mm"])
            box = data.get("bbox_mm") or [center, center]
            lo, hi = (tuple(float(c) for c in corner) for corner in box)
            score = float("nan") if data.get("score") is None else float(data["score"])
            if len(center) != 3 or len(lo) != 3 or len(hi) != 3:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise ValueError("a finding needs center_mm [x, y, z] (bbox_mm and score optional)") from None
        measurements = None
        if data.get("volume_ml") is not None:
            names = {key: field for field, keys in INTENSITY_KEYS.items() for key in keys}
            fields = {f for f in Measurements.__dataclass_fields__}
            values = {names.get(k, k): (float("nan") if v is None else v) for k, v in data.items()
                      if names.get(k, k) in fields}  # fmt: skip
            measurements = Measurements(**values)
        return cls(center, (lo, hi), score, str(data.get("label", "lesion")), measurements=measurements)  # type: ignore[arg-type]


#: The decision of a prediction that abstains (never a class name: a class may be called "uncertain").
ABSTAIN = "abstain"
#: Prefix of a flag that says why a prediction abstains although it is confident: a quality check of the
#: pipeline failed (e.g. ``quality_check_failed:no_atlas_registration_passed``), so its map is not to be read.
QUALITY_FAILED = "quality_check_failed"


def quality_check_failed(flags: tuple[str, ...]) -> bool:
    """True when one of a prediction's ``flags`` says a quality check failed (:data:`QUALITY_FAILED`)."""
    return any(f.startswith(QUALITY_FAILED) for f in flags)


@dataclass(frozen=True, eq=False)
class Prediction:
    """What a model says about one image.

    Attributes:
        scores: per-class probabilities (classification) or one anomaly score; higher = more abnormal.
        class_names: names matching ``scores``.
        label: the class the model calls (always one of ``class_names``, even when it abstains).
        abstained: True when confidence was below the abstention threshold, or a quality check failed
            (a ``QUALITY_FAILED`` flag says which): the call is then not to be acted on. Distinct from a
            class that is itself named "uncertain" (BI-RADS 3-like): ``decision`` is ``"abstain"`` only
            for an abstention.
        anomaly_map: a voxel-wise score map on the input grid, when the model gives one.
        findings: localised lesions, when the model detects.
        flags: notes on the prediction (e.g. ``"missing_modality:MR"``).
    """

    scores: tuple[float, ...]
    class_names: tuple[str, ...]
    label: str
    abstained: bool = False
    anomaly_map: Volume | None = None
    findings: tuple[Finding, ...] = ()
    flags: tuple[str, ...] = ()

    @property
    def decision(self) -> str:
        """What to act on: the called class, or ``"abstain"`` (low confidence or a failed quality check)."""
        return ABSTAIN if self.abstained else self.label

    @property
    def score(self) -> float:
        """One image-level score, higher = more abnormal: the anomaly score, the best finding's
        score, or the probability of the last class (the "most abnormal" one by convention)."""
        if self.findings and not self.scores:
            return max(float(f.score) for f in self.findings)
        return float(self.scores[-1]) if self.scores else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "decision": self.decision,
            "abstained": self.abstained,
            "probabilities": dict(zip(self.class_names, map(float, self.scores), strict=True)),
            "findings": [f.to_json() for f in self.findings],
            "flags": list(self.flags),
        }


def _rounded(values: Sequence[float] | np.ndarray) -> str:
    """Numbers for a message: up to 3 decimals, no trailing zeros, as a tuple."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    return "(" + ", ".join(f"{v:.3f}".rstrip("0").rstrip(".") for v in flat) + ")"
