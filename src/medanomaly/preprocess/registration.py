"""Bring modality B (moving) into modality A's (fixed) grid with SimpleITK.

Stages run in order: **rigid** (Euler 2D/3D, centred on the fixed image's geometric centre),
then optionally **affine** (initialised from the rigid result) and **B-spline** (free-form
deformation on top of the linear part). The metric is Mattes mutual information by default, so
different contrasts (T1 -> PD, CT -> MR) register; ``metric="mean_squares"`` suits one contrast.

Conventions follow ITK: the returned transform maps a point of the **fixed** image (LPS mm) to
the matching point of the **moving** image; resampling the moving image through it lands it on
the fixed grid. The residual is reported as Mattes mutual information between the fixed image
and the resampled moving image (in nats, sign flipped from ITK's metric so that higher = better
aligned), and as target registration error (TRE, mm) when a true transform is known.

We wrap SimpleITK's ``ImageRegistrationMethod`` rather than write an optimiser: it is the
reference implementation the ITK Software Guide validates on these very images.

Example:
    >>> from medanomaly.data.sources import real_data
    >>> from medanomaly.preprocess.registration import load_scalar, register
    >>> fixed = load_scalar(real_data("itk/BrainProtonDensitySliceBorder20.png"))  # doctest: +SKIP
    >>> moving = load_scalar(real_data("itk/BrainProtonDensitySliceShifted13x17y.png"))  # doctest: +SKIP
    >>> result = register(fixed, moving)  # doctest: +SKIP
    >>> [round(t) for t in result.rigid.translation_mm]  # doctest: +SKIP
    [13, 17]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medanomaly.errors import InputError, raise_if_out_of_memory
from medanomaly.preprocess.checks import require_float32_range
from medanomaly.types import Volume

if TYPE_CHECKING:  # pragma: no cover
    import SimpleITK as sitk

STAGES = ("rigid", "affine", "bspline")
#: The resolution levels of every stage: the images shrunk 2x (smoothed 1 voxel), then at full resolution.
SHRINK_FACTORS = (2, 1)
METRICS = ("mattes", "mean_squares")


@dataclass(frozen=True)
class RigidParameters:
    """The rigid part of a transform, fixed -> moving.

    Attributes:
        angles_deg: rotation angle(s) in degrees: one for 2D, three (x, y, z Euler) for 3D.
        translation_mm: translation applied after rotating about ``center_mm`` (x, y[, z]).
        center_mm: centre of rotation in LPS mm.
    """

    angles_deg: tuple[float, ...]
    translation_mm: tuple[float, ...]
    center_mm: tuple[float, ...]


@dataclass(frozen=True, eq=False)
class RegistrationResult:
    """What :func:`register` returns.

    Attributes:
        resampled: the moving image resampled onto the fixed Volume's grid (fixed geometry).
        transform: SimpleITK transform mapping fixed-image points to moving-image points (mm).
        rigid: the rigid stage's parameters (angle, translation, centre).
        stages: the stages that ran, in order.
        mutual_information_before: Mattes MI (nats, higher = better) of fixed vs. moving resampled
            with the identity transform (the misalignment we started from).
        mutual_information: Mattes MI after registration.
        tre_mm: mean target registration error in mm, when a true transform was given, else None.
    """

    resampled: Volume
    transform: Any
    rigid: RigidParameters
    stages: tuple[str, ...]
    mutual_information_before: float
    mutual_information: float
    tre_mm: float | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (no image data)."""
        return {
            "stages": list(self.stages),
            "angles_deg": [round(a, 4) for a in self.rigid.angles_deg],
            "translation_mm": [round(t, 4) for t in self.rigid.translation_mm],
            "center_mm": [round(c, 4) for c in self.rigid.center_mm],
            "mutual_information_before": round(self.mutual_information_before, 5),
            "mutual_information": round(self.mutual_information, 5),
            "tre_mm": None if self.tre_mm is None else round(self.tre_mm, 4),
        }


# --------------------------------------------------------------------------------------- helpers
def as_scalar(volume: Volume) -> Volume:
    """A float32 scalar Volume: multi-component images (grey PNGs stored as RGB) are averaged; values float32 cannot
    hold are refused (:func:`~medanomaly.preprocess.checks.require_float32_range`: they became infinite behind
    numpy's overflow warning, then "non-finite voxels")."""
    require_float32_range(volume, "registration")
    array = volume.array.astype(np.float32)
    if array.ndim == 4:
        array = array.mean(axis=3)
    return volume.with_array(array)


def load_scalar(path: str | Path, modality: str | None = None, frame: int | None = None) -> Volume:
    """Read an image with :func:`medanomaly.io.read` (``frame``: one frame of a cine loop or one volume of a 4D image,
    :func:`medanomaly.io.frames.read_frame`) and make it a float32 scalar Volume."""
    from medanomaly.io.frames import read_frame

    volume = as_scalar(read_frame(path, frame))
    return volume.with_meta(modality=modality) if modality else volume


def to_sitk_image(volume: Volume) -> sitk.Image:
    """Float32 scalar SimpleITK image; one-slice Volumes become 2D images (in-plane geometry)."""
    import SimpleITK as sitk

    scalar = as_scalar(volume)
    if not scalar.is_2d:
        return sitk.Cast(scalar.to_sitk(), sitk.sitkFloat32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(scalar.array[0]))
    image.SetSpacing(scalar.spacing[:2])
    image.SetOrigin(scalar.origin[:2])
    image.SetDirection(tuple(scalar.direction[:2, :2].ravel()))
    return sitk.Cast(image, sitk.sitkFloat32)


def _check_pair(fixed: Volume, moving: Volume) -> None:
    if fixed.is_2d != moving.is_2d:
        raise InputError(
            f"cannot register a {'2D' if moving.is_2d else '3D'} moving image to a "
            f"{'2D' if fixed.is_2d else '3D'} fixed image"
        )
    for name, vol in (("fixed", fixed), ("moving", moving)):
        check_registrable(vol, name)
        if vol.is_2d and abs(float(np.linalg.det(np.asarray(vol.direction)[:2, :2]))) < 1e-6:
            raise InputError(f"{name} image is one slice whose plane is not axial: 2D registration works in the "
                             "x-y plane")  # fmt: skip


def check_registrable(vol: Volume, name: str = "the") -> None:
    """Refuse an image registration cannot use: too small (under 8 pixels in-plane or 4 slices), NaN or
    infinite voxels, or constant.

    Raises:
        InputError: naming ``name`` ("fixed", "moving") and the reason.
    """
    if min(vol.shape[1:]) < 8 or (not vol.is_2d and vol.shape[0] < 4):
        raise InputError(f"{name} image too small to register: shape {vol.shape}")
    if not np.isfinite(vol.array).all():
        raise InputError(f"{name} image has non-finite voxels")
    if float(np.ptp(vol.array)) == 0.0:
        raise InputError(f"{name} image is constant: nothing to register")


def check_options(stages: Sequence[str], metric: str, init: str = "geometry") -> None:
    """One InputError line for stages, a metric or a start :func:`register` does not know (before any image is read,
    for the CLI)."""
    if not stages or stages[0] != "rigid" or any(s not in STAGES for s in stages) or len(set(stages)) != len(stages):
        raise InputError(f"stages must start with 'rigid' and use {STAGES} once each, got {list(stages)}")
    if metric not in METRICS:
        raise InputError(f"metric must be one of {METRICS}, got {metric!r}")
    if init not in ("geometry", "moments"):
        raise InputError(f"init must be 'geometry' or 'moments', got {init!r}")


def mattes_mutual_information(
    fixed: Volume, moving: Volume, transform: sitk.Transform | None = None, bins: int = 32
) -> float:
    """Mattes mutual information (nats; higher = better aligned) of fixed vs. transformed moving.

    ITK's metric is the negative MI (it is minimised); we flip the sign. A constant image (for
    example a moving image resampled where it does not overlap the fixed one) shares no information:
    0.0 (ITK refuses its zero-width histogram).
    """
    import SimpleITK as sitk

    if transform is None and any(np.ptp(np.asarray(v.array)) == 0 for v in (fixed, moving)):
        return 0.0
    fixed_img, moving_img = to_sitk_image(fixed), to_sitk_image(moving)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(transform or sitk.Transform(fixed_img.GetDimension(), sitk.sitkIdentity))
    return -float(method.MetricEvaluate(fixed_img, moving_img))


def _rigid_parameters(transform: sitk.Transform, dim: int) -> RigidParameters:
    import SimpleITK as sitk

    if dim == 2:
        euler = sitk.Euler2DTransform(transform)
        angles = (float(np.degrees(euler.GetAngle())),)
    else:
        euler = sitk.Euler3DTransform(transform)
        angles = tuple(float(np.degrees(a)) for a in (euler.GetAngleX(), euler.GetAngleY(), euler.GetAngleZ()))
    return RigidParameters(
        angles_deg=angles,
        translation_mm=tuple(float(t) for t in euler.GetTranslation()),
        center_mm=tuple(float(c) for c in euler.GetCenter()),
    )


def rigid_transform(
    angles_deg: Sequence[float], translation_mm: Sequence[float], center_mm: Sequence[float]
) -> sitk.Transform:
    """A SimpleITK Euler transform (2D: one angle; 3D: three) from degrees and mm, fixed -> moving."""
    import SimpleITK as sitk

    if len(center_mm) == 2:
        tx = sitk.Euler2DTransform()
        tx.SetAngle(float(np.radians(angles_deg[0])))
    else:
        tx = sitk.Euler3DTransform()
        tx.SetRotation(*(float(np.radians(a)) for a in angles_deg))
    tx.SetCenter(tuple(float(c) for c in center_mm))
    tx.SetTranslation(tuple(float(t) for t in translation_mm))
    return tx


def target_registration_error(
    transform: sitk.Transform, true_transform: sitk.Transform, points_mm: np.ndarray
) -> float:
    """Mean distance (mm) between where ``transform`` and ``true_transform`` send ``points_mm`` (N, dim)."""
    points = np.asarray(points_mm, dtype=np.float64)
    errors = [
        np.linalg.norm(np.subtract(transform.TransformPoint(tuple(p)), true_transform.TransformPoint(tuple(p))))
        for p in points
    ]
    return float(np.mean(errors))


def foreground_points(volume: Volume, n: int = 200, seed: int = 0) -> np.ndarray:
    """Up to ``n`` physical points (mm, in the image's own dimension) sampled inside the foreground.

    Foreground = voxels above the Otsu threshold; used as targets for TRE.
    """
    from medanomaly.preprocess.tissue_masks import otsu_threshold

    scalar = as_scalar(volume)
    array = scalar.array
    zyx = np.argwhere(array > otsu_threshold(array))
    rng = np.random.default_rng(seed)
    if len(zyx) > n:
        zyx = zyx[rng.choice(len(zyx), n, replace=False)]
    xyz = zyx[:, ::-1].astype(np.float64)
    points = scalar.index_to_physical(xyz)
    return points[:, :2] if scalar.is_2d else points


# --------------------------------------------------------------------------------------- register
def _method(
    metric: str, bins: int, sampling: float, seed: int, iterations: int, bspline: bool = False
) -> sitk.ImageRegistrationMethod:
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    if metric == "mattes":
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    else:
        method.SetMetricAsMeanSquares()
    method.SetMetricSamplingStrategy(method.REGULAR)
    method.SetMetricSamplingPercentage(sampling, seed + 1)  # ITK reads seed 0 as "the wall clock": never reproducible
    method.SetInterpolator(sitk.sitkLinear)
    if bspline:  # LBFGS-B takes no parameter scales
        method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=iterations)
    else:
        method.SetOptimizerAsRegularStepGradientDescent(
            learningRate=2.0, minStep=1e-4, numberOfIterations=iterations, relaxationFactor=0.7
        )
        method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(SHRINK_FACTORS))
    method.SetSmoothingSigmasPerLevel([1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return method


#: ITK threads a registration runs on: one makes it reproducible. On several, ITK's Mattes metric sums its joint
#: histogram in the order the threads finish, and the registered atlas (``anomaly/atlas.py``) gave 5, 6, 7, 8 and 9
#: findings (anomaly score 2.78-2.96) on brain1 in five runs of ``medanomaly predict`` on 2 threads; on one, 7 and
#: 2.872 every time, in about the same wall time (15.8-18.3 s against 14.9-19.7 s, this 2-core machine).
REGISTRATION_THREADS = 1


class _ItkThreads:
    """Who holds ITK's global default thread count (:func:`itk_threads`): the count set, the default to restore, and
    the blocks each Python thread holds (none held: the default is ITK's own again)."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.threads: int | None = None
        self.before = 0
        self.holders: dict[int, int] = {}


_ITK_THREADS = _ItkThreads()


@contextmanager
def itk_threads(threads: int) -> Iterator[None]:
    """ITK's global default number of threads set to ``threads`` inside the block (objects made in it take it: the
    registration method, its metric), restored when the last block leaves.

    The default is process-wide, so blocks in Python threads of one process are coordinated: blocks asking the same
    count run side by side (registrations one ITK thread each, SimpleITK releases the GIL while it works); a block
    asking another count waits until they have all left. A block of another count inside one's own is refused
    (RuntimeError: it would wait for itself).
    """
    import SimpleITK as sitk

    threads, me, state = int(threads), threading.get_ident(), _ITK_THREADS
    with state.changed:
        if state.holders.get(me) and state.threads != threads:
            raise RuntimeError(f"itk_threads({threads}) inside itk_threads({state.threads}) of the same thread")
        state.changed.wait_for(lambda: not state.holders or state.threads == threads)
        if not state.holders:
            state.before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
            state.threads = threads
        state.holders[me] = state.holders.get(me, 0) + 1
    try:
        yield
    finally:
        with state.changed:
            state.holders[me] -= 1
            if not state.holders[me]:
                del state.holders[me]
            if not state.holders:
                sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(state.before)
                state.threads = None
                state.changed.notify_all()


def _flatten(transform: sitk.Transform) -> sitk.Transform:
    import SimpleITK as sitk

    if isinstance(transform, sitk.CompositeTransform) and transform.GetNumberOfTransforms() == 1:
        return transform.GetNthTransform(0)
    return transform


#: Seconds between two progress lines of a registration (a B-spline stage on two brain MRIs runs for minutes).
PROGRESS_EVERY_S = 15.0


class _Progress:
    """Progress lines of a registration, at most one every :data:`PROGRESS_EVERY_S` seconds, through ``say``: the
    stage, its resolution level, the optimiser's iteration, the metric and the seconds since the start (the B-spline
    stage on brain1 / brain2 ran over 6 minutes without a word)."""

    def __init__(self, say: Callable[[str], None] | None) -> None:
        self.say, self.start, self.last = say, time.monotonic(), time.monotonic()

    def watch(self, method: sitk.ImageRegistrationMethod, stage: str) -> sitk.ImageRegistrationMethod:
        import SimpleITK as sitk

        if self.say is None:
            return method

        def tick() -> None:
            now = time.monotonic()
            if now - self.last >= PROGRESS_EVERY_S:
                self.last = now
                level = f"level {method.GetCurrentLevel() + 1} of {len(SHRINK_FACTORS)}"
                self.say(f"registration: {stage} stage, {level}, iteration {method.GetOptimizerIteration()}, metric "
                         f"{method.GetMetricValue():.4f}, {now - self.start:.0f} s")  # fmt: skip

        method.AddCommand(sitk.sitkIterationEvent, tick)
        return method


def _rigid_stage(init: str, fixed_img: sitk.Image, moving_img: sitk.Image, metric: str, bins: int, sampling: float,
                 seed: int, iterations: int, watch: _Progress) -> sitk.Transform:  # fmt: skip
    """The rigid (Euler) stage from a centred start (``init``: geometric centres or centres of mass)."""
    import SimpleITK as sitk

    euler = sitk.Euler2DTransform() if fixed_img.GetDimension() == 2 else sitk.Euler3DTransform()
    centring = sitk.CenteredTransformInitializerFilter
    initial = sitk.CenteredTransformInitializer(
        fixed_img, moving_img, euler, centring.MOMENTS if init == "moments" else centring.GEOMETRY
    )
    method = watch.watch(_method(metric, bins, sampling, seed, iterations), "rigid")
    method.SetInitialTransform(initial, inPlace=False)
    return _flatten(method.Execute(fixed_img, moving_img))


def _affine_stage(rigid: sitk.Transform, fixed_img: sitk.Image, moving_img: sitk.Image, metric: str, bins: int,
                  sampling: float, seed: int, iterations: int, watch: _Progress) -> sitk.Transform:  # fmt: skip
    """The affine stage, started from the rigid result (same matrix, translation and centre)."""
    import SimpleITK as sitk

    dim = fixed_img.GetDimension()
    affine = sitk.AffineTransform(dim)
    linear = sitk.Euler2DTransform(rigid) if dim == 2 else sitk.Euler3DTransform(rigid)
    affine.SetMatrix(linear.GetMatrix())
    affine.SetTranslation(linear.GetTranslation())
    affine.SetCenter(linear.GetCenter())
    method = watch.watch(_method(metric, bins, sampling, seed, iterations), "affine")
    method.SetInitialTransform(affine, inPlace=False)
    return _flatten(method.Execute(fixed_img, moving_img))


def _bspline_stage(current: sitk.Transform, mesh: int, fixed_img: sitk.Image, moving_img: sitk.Image, metric: str,
                   bins: int, sampling: float, seed: int, iterations: int, watch: _Progress) -> sitk.Transform:  # fmt: skip
    """The B-spline stage (``mesh`` control-grid cells per axis) on top of ``current``; returns the composite."""
    import SimpleITK as sitk

    bspline = sitk.BSplineTransformInitializer(fixed_img, [mesh] * fixed_img.GetDimension())
    method = watch.watch(_method(metric, bins, sampling, seed, iterations, bspline=True), "bspline")
    method.SetMovingInitialTransform(current)
    method.SetInitialTransform(bspline, inPlace=True)
    method.Execute(fixed_img, moving_img)
    return sitk.CompositeTransform([current, bspline])


def _stages(init: str, stages: tuple[str, ...], bspline_mesh: int, run: tuple[Any, ...]) -> tuple[Any, Any]:
    """(the rigid transform, the last stage's) of the stages asked, rigid first; ITK's refusal is one InputError."""
    try:
        rigid = _rigid_stage(init, *run)
        current = rigid
        if "affine" in stages:
            current = _affine_stage(rigid, *run)
        if "bspline" in stages:
            current = _bspline_stage(current, bspline_mesh, *run)
    except RuntimeError as exc:  # ITK's optimiser refuses: one line, not a C++ trace
        raise_if_out_of_memory(exc)
        from medanomaly.io.itk import itk_reason

        raise InputError(f"registration failed: {itk_reason(exc)}") from None
    return rigid, current


def register(
    fixed: Volume,
    moving: Volume,
    *,
    stages: Sequence[str] = ("rigid",),
    metric: str = "mattes",
    bins: int = 32,
    sampling: float = 0.5,
    iterations: int = 300,
    bspline_mesh: int = 4,
    true_transform: sitk.Transform | None = None,
    seed: int = 0,
    init: str = "geometry",
    progress: Callable[[str], None] | None = None,
    threads: int = REGISTRATION_THREADS,
) -> RegistrationResult:
    """Register ``moving`` to ``fixed``: rigid, then optionally affine and B-spline.

    Args:
        fixed: the reference image (its grid is the output grid), e.g. CT or T1.
        moving: the image brought into the fixed grid, e.g. MR or PD.
        stages: a prefix-ordered subset of ``("rigid", "affine", "bspline")``; rigid always first.
        metric: ``"mattes"`` (mutual information, multi-modal) or ``"mean_squares"`` (one contrast).
        bins: histogram bins for Mattes MI.
        sampling: fraction of fixed voxels sampled by the metric (regular grid, seeded).
        iterations: optimiser iterations per resolution level.
        bspline_mesh: B-spline control-grid cells per axis.
        true_transform: the known fixed -> moving transform, to report TRE in mm.
        seed: metric sampling seed: the same seed on one ITK thread gives the same result (ITK gets seed + 1: it
            reads 0 as "the wall clock", which made results vary run to run).
        init: centring of the rigid start: ``"geometry"`` (the images' geometric centres) or
            ``"moments"`` (their intensity centres of mass: robust when the field of view differs,
            e.g. a skull-stripped template against a head scan whose brain mask is given).
        progress: called with a progress line (stage, level, iteration, metric, seconds) at most every
            :data:`PROGRESS_EVERY_S` seconds; None: silent.
        threads: ITK threads of the registration (:data:`REGISTRATION_THREADS`, 1: reproducible). On several the
            Mattes metric sums its histogram in the order the threads finish, so a B-spline result can differ in
            the third decimal of the mutual information from run to run (0.96581 or 0.97091 on ITK's brain slices).

    Returns:
        A :class:`RegistrationResult` with the resampled moving Volume on the fixed grid.

    Raises:
        InputError: 2D vs 3D mismatch, tiny or constant images, unknown stage or metric.
    """
    import SimpleITK as sitk

    stages = tuple(stages)
    check_options(stages, metric, init)
    _check_pair(fixed, moving)
    fixed_img, moving_img = to_sitk_image(fixed), to_sitk_image(moving)
    dim = fixed_img.GetDimension()
    run = (fixed_img, moving_img, metric, bins, sampling, seed, iterations, _Progress(progress))
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a whole number of at least 1, got {threads!r}")
    identity = sitk.Transform(dim, sitk.sitkIdentity)
    with itk_threads(threads):  # the stages and the reported metric alike, to the last digit
        rigid, current = _stages(init, stages, bspline_mesh, run)
        resampled = resample_to(fixed, moving, current)
        mi_before = mattes_mutual_information(fixed, resample_to(fixed, moving, identity), bins=bins)
        mi_after = mattes_mutual_information(fixed, resampled, bins=bins)
    rigid_params = _rigid_parameters(rigid, dim)
    tre = None
    if true_transform is not None:
        tre = target_registration_error(current, true_transform, foreground_points(fixed, seed=seed))
    return RegistrationResult(
        resampled=resampled,
        transform=current,
        rigid=rigid_params,
        stages=stages,
        mutual_information_before=mi_before,
        mutual_information=mi_after,
        tre_mm=tre,
    )


def demons_refine(fixed: Volume, moving: Volume, transform: sitk.Transform, iterations: int = 50,
                  smooth_mm: float = 4.0, threads: int = REGISTRATION_THREADS) -> sitk.Transform:  # fmt: skip
    """A deformable refinement on top of ``transform`` (fixed -> moving): ``moving`` is resampled onto
    ``fixed``'s grid, histogram-matched to it (one contrast for the demons forces), and SimpleITK's
    fast symmetric-forces demons estimates a displacement field on the fixed grid, smoothed by a
    Gaussian of SD ``smooth_mm`` mm per iteration (larger = stiffer; a lesion much larger than it is
    not squeezed away). Returns the composite (field first, then ``transform``), fixed -> moving.
    Runs on ``threads`` ITK threads (:func:`itk_threads`; the demons stop early when the field's RMS change, a sum
    over threads, falls under ITK's level, so one thread is what makes it reproducible).
    """
    import SimpleITK as sitk

    if iterations <= 0:
        return transform
    fixed_img = to_sitk_image(as_scalar(fixed))
    warped = to_sitk_image(resample_to(fixed, moving, transform))
    warped = sitk.HistogramMatching(warped, fixed_img, numberOfHistogramLevels=64, numberOfMatchPoints=15,
                                    thresholdAtMeanIntensity=True)  # fmt: skip
    with itk_threads(threads):
        demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
        demons.SetNumberOfIterations(int(iterations))
        demons.SetSmoothDisplacementField(True)
        demons.SetStandardDeviations([float(smooth_mm) / sp for sp in fixed_img.GetSpacing()])  # voxels per axis
        field = demons.Execute(fixed_img, warped)
    displacement = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    return sitk.CompositeTransform([transform, displacement])


def resample_to(fixed: Volume, moving: Volume, transform: sitk.Transform, interpolator: str = "linear") -> Volume:
    """Resample ``moving`` through ``transform`` (fixed -> moving) onto ``fixed``'s grid.

    The result has the fixed Volume's geometry and the moving Volume's metadata (its modality).
    Outside the moving image the value is the moving image's minimum (background).
    """
    import SimpleITK as sitk

    interp = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}[interpolator]
    scalar = as_scalar(moving)
    out = sitk.Resample(
        to_sitk_image(scalar), to_sitk_image(fixed), transform, interp, float(scalar.array.min()), sitk.sitkFloat32
    )
    array = sitk.GetArrayFromImage(out)
    if fixed.is_2d:
        array = array[np.newaxis]
    return Volume(array, fixed.spacing, fixed.origin, fixed.direction, meta=dict(moving.meta))


def write_transform(transform: sitk.Transform, path: str | Path) -> Path:
    """Write a transform as an ITK text transform file (``.tfm``: plain text, no pickle), all-or-nothing."""
    import SimpleITK as sitk

    from medanomaly.io.itk import itk_path
    from medanomaly.io.staged import write_staged

    return write_staged(path, lambda staged: sitk.WriteTransform(transform, itk_path(staged, name=path)))
