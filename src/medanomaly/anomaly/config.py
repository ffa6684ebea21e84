"""The ``anomaly`` task's config (``task: anomaly``).

Example YAML::

    task: anomaly
    data: {train: [mni152, ch2], val: [ch2better], size: 96, slab_mm: 5.0, step_mm: 2.0, copies: 3}
    method: {name: autoencoder, params: {channels: [16, 32, 64]}}
    train: {epochs: 30, batch_size: 16, lr: 0.002, eval_every: 5, threads: 2}
    threshold: {target_fpr: 0.01, sigmas: [0, 1, 2, 3]}
    evaluate: {cases: [brain1, brain2], n_bootstrap: 1000}

Chest CT (``data.domain: chest_ct``, see :mod:`medanomaly.anomaly.chest`): ``train``/``val`` name a
pyradiomics chest CT (lung1 or lung2) whose lesion grown by ``exclude_margin_mm`` is excluded;
``evaluate.cases`` must be the *other* CT (leave-one-patient-out)::

    data: {domain: chest_ct, train: [lung1], val: [lung1], window: lung, exclude_margin_mm: 20}
    evaluate: {cases: [lung2]}

2D images (``data.domain: folder2d``, see :mod:`medanomaly.anomaly.images2d`): ``data.folder`` is a
folder tree (train/normal, val/normal, test/normal, test/abnormal, optional test/masks) or a
MedMNIST-style ``.npz`` whose ``normal_label`` is the normal class; ``train``/``val``/``evaluate.cases``
are not used::

    data: {domain: folder2d, folder: data/xray_normal, size: 64}
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from medanomaly.config import ComponentConfig, RunConfig, Section, first_repeat

__all__ = ["AnomalyConfig", "AnomalyTestFolder"]


#: Bounds of the common grid's side (pixels): the config's, and what a recorded run may hold.
MIN_SIZE, MAX_SIZE = 16, 512
#: Largest Gaussian smoothing of a map (mm, or pixels on the 2D common grid) a config may offer or a run record.
MAX_SIGMA = 100.0


#: Most volumes a list of the config may name (each is read and registered or sliced).
MAX_NAMED = 1000


def check_named_once(field: str, names: tuple[str, ...]) -> None:
    """A ValueError (pydantic reports it) naming the first name ``field`` lists twice."""
    repeated = first_repeat(names)
    if repeated is not None:
        raise ValueError(f"{field} names {repeated!r} twice: each volume counts once")


class AnomalyDataConfig(Section):
    """Normal training and validation data: brains (``NORMAL_BRAINS`` names, ``real_data`` keys or
    paths) or, with ``domain: chest_ct``, chest CTs whose lesion (plus a margin) is excluded."""

    model_config = ConfigDict(allow_inf_nan=False)

    domain: Literal["brain_mr", "chest_ct", "folder2d"] = "brain_mr"
    train: tuple[str, ...] = Field(("mni152", "ch2"), max_length=MAX_NAMED)
    val: tuple[str, ...] = Field(("ch2better",), max_length=MAX_NAMED)
    size: int = Field(96, ge=MIN_SIZE, le=MAX_SIZE)
    slab_mm: float = Field(5.0, ge=0.0, le=20.0)
    step_mm: float = Field(2.0, ge=0.0, le=20.0)
    copies: int = Field(3, ge=0, le=50)
    rotate_deg: float = Field(6.0, ge=0.0, le=45.0)
    scale: float = Field(0.06, ge=0.0, le=0.5)
    bias: float = Field(0.3, ge=0.0, le=1.0)
    window: str = "lung"  # chest_ct: a preprocess.intensity.WINDOWS name (HU window)
    exclude_margin_mm: float = Field(20.0, ge=0.0, le=100.0)  # chest_ct: lesion grown by this, mm
    holdout_every: int = Field(4, ge=2, le=50)  # chest_ct: 1 lung slice in N validates when train == val
    folder: str = ""  # folder2d: the image folder tree or MedMNIST-style .npz
    normal_label: int = Field(0, ge=0)  # folder2d .npz: the label of normal images
    intensity: Literal["dataset", "image"] = "dataset"  # folder2d: training-set window, or per-image percentiles

    @field_validator("window")
    @classmethod
    def _known_window(cls, value: str) -> str:
        from medanomaly.preprocess.intensity import WINDOWS

        if value not in WINDOWS:
            raise ValueError(f"unknown CT window {value!r}; valid: {', '.join(WINDOWS)}")
        return value

    @model_validator(mode="after")
    def _named_once(self) -> "AnomalyDataConfig":
        """Brains and CTs are named at least once and at most once: an empty list was a NumPy traceback after the
        data work, a name given 50 times trained on 50 copies of one volume without a word."""
        for field in ("train", "val"):
            names = getattr(self, field)
            if not names and self.domain != "folder2d":
                raise ValueError(f"{field} names no {'CT' if self.domain == 'chest_ct' else 'brain'}: give one")
            check_named_once(field, names)
        return self


class AnomalyTrainConfig(Section):
    model_config = ConfigDict(allow_inf_nan=False)

    epochs: int = Field(30, ge=1, le=10_000)
    batch_size: int = Field(16, ge=1, le=4096)
    lr: float = Field(2e-3, gt=0.0, le=1.0)
    eval_every: int = Field(5, ge=1)
    threads: int = Field(2, ge=1, le=256)


class AnomalyThresholdConfig(Section):
    """Thresholds from normal validation data only; smoothing chosen on synthetic anomalies."""

    model_config = ConfigDict(allow_inf_nan=False)

    target_fpr: float = Field(0.01, gt=0.0, lt=1.0)
    # Gaussian smoothings (mm) of the map the validation chooses from: at least one (none was a max() traceback)
    sigmas: tuple[Annotated[float, Field(ge=0.0, le=MAX_SIGMA)], ...] = Field((0.0, 1.0, 2.0, 3.0), min_length=1,
                                                                          max_length=50)


class AnomalyTestFolder(Section):
    """Labelled test cases of the user's own, in the Medical Segmentation Decathlon's layout (:mod:`medanomaly.data.msd`:
    ``dataset.json``, ``imagesTr/``, ``labelsTr/``; MSD Task01_BrainTumour is BraTS): each ``training`` pair is a test
    case, scored as brain1 and brain2 are. ``channel``: the volume of a 4D image (MSD BrainTumour: 0 FLAIR, 1 T1w,
    2 T1gd, 3 T2w); ``labels``: the label values that count as lesion (empty: every value above 0, BraTS's whole
    tumour); ``max_cases``: the first so many pairs, in the listing's order."""

    model_config = ConfigDict(allow_inf_nan=False)

    root: str = Field(min_length=1, max_length=4096)
    channel: int | None = Field(None, ge=0, le=100_000)
    labels: tuple[Annotated[int, Field(ge=1, le=2**31 - 1)], ...] = Field((), max_length=1000)
    max_cases: int = Field(20, ge=1, le=MAX_NAMED)


class AnomalyEvaluateConfig(Section):
    """The case study: the named pyradiomics ``cases`` and, with ``folder``, the labelled cases of an MSD-layout folder
    (:class:`AnomalyTestFolder`; 3D brain runs); ``simulated_nodules`` (chest CT only): held-out simulated nodules
    (SYNTHETIC, LIDC test-split shapes) inserted in each test CT's lungs, scored apart from its real lesion."""

    cases: tuple[str, ...] = Field(("brain1", "brain2"), max_length=MAX_NAMED)
    folder: AnomalyTestFolder | None = None
    n_bootstrap: int = Field(1000, ge=0, le=100_000)
    min_finding_ml: float = Field(0.1, ge=0.0)
    max_fpr: float = Field(0.3, gt=0.0, le=1.0)  # AUPRO integration limit
    simulated_nodules: int = Field(0, ge=0, le=20)
    simulated_seed: int = 0

    @field_validator("cases")
    @classmethod
    def _cases_once(cls, cases: tuple[str, ...]) -> tuple[str, ...]:
        check_named_once("cases", cases)
        return cases


class AnomalyConfig(RunConfig):
    """An anomaly run: normal data, one method, training, thresholds, the case study."""

    task: Literal["anomaly"] = "anomaly"
    data: AnomalyDataConfig = AnomalyDataConfig()
    method: ComponentConfig = ComponentConfig(name="autoencoder")
    train: AnomalyTrainConfig = AnomalyTrainConfig()
    threshold: AnomalyThresholdConfig = AnomalyThresholdConfig()
    evaluate: AnomalyEvaluateConfig = AnomalyEvaluateConfig()

    @model_validator(mode="after")
    def _chest_leave_one_patient_out(self) -> "AnomalyConfig":
        """Chest CT: known cases only, and never test on a CT whose parenchyma trained the model;
        2D folders: a folder is named; 3D: at least one test case."""
        if self.data.domain == "folder2d" and not self.data.folder:
            raise ValueError("data.domain folder2d needs data.folder (an image folder tree or a .npz file)")
        if self.data.domain != "folder2d" and not self.evaluate.cases and not self.evaluate.folder:
            # evaluate had ended in a numpy traceback
            raise ValueError(f"evaluate.cases is empty: name the {self.data.domain} scans to test on (or give "
                             "evaluate.folder)")
        if self.evaluate.folder is not None and self.data.domain != "brain_mr":
            raise ValueError(f"evaluate.folder (an MSD-layout test folder) is for 3D brain runs, not {self.data.domain}")
        if self.data.domain != "chest_ct":
            return self
        from medanomaly.anomaly.chest import CHEST_CASES

        for name in (*self.data.train, *self.data.val, *self.evaluate.cases):
            if name not in CHEST_CASES:
                raise ValueError(f"chest_ct cases must be {' or '.join(CHEST_CASES)}, got {name!r}")
        leaked = set(self.evaluate.cases) & set(self.data.train + self.data.val)
        if leaked:
            raise ValueError(f"chest_ct test case(s) {sorted(leaked)} also train or validate (leave-one-patient-out)")
        return self
