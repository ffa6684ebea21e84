"""Train, save, load and apply a classification run (single model, seeds ensemble or k-fold).

A run directory written by :func:`train_run` holds::

    config.yaml            the validated config (written by the CLI)
    classifier.json        class names, input size, members, temperature, thresholds, synthetic flag
    members/<i>/model.safetensors, history.json, checkpoint/   one folder per ensemble member
    train.json             what each member's training did (epochs, best validation score, images/s)
    splits.json            images per split and class (no patient ids)

Everything learned after training (temperature, binary decision threshold, abstention threshold)
is fitted on the VALIDATION split, never on test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.classify.config import ClassificationConfig
from medanomaly.data.arrays import LabelledImages
from medanomaly.errors import ConfigError, InputError, unfit_file
from medanomaly.evaluate.decision import DecisionRule
from medanomaly.jsonio import read_json, write_text_atomic
from medanomaly.train.ensemble import METHODS as ENSEMBLE_METHODS
from medanomaly.train.ensemble import normalised_weights


# ----------------------------------------------------------------------------------- data
def load_data(cfg: ClassificationConfig) -> LabelledImages:
    """Load the configured dataset, assign patient-level splits, and check it before training.

    Raises:
        InputError: a patient in two splits, a class with no sample in train/val (or test when
            a test split exists), or a channel count the config does not expect.
    """
    from medanomaly.data.splits import check_classes_present, check_patient_splits, patient_split
    from medanomaly.registry import DATASETS

    params = dict(cfg.data.dataset.params)
    for key, want in (("image_size", list(cfg.data.image_size)), ("channels", cfg.data.channels)):
        given = params.setdefault(key, want)
        if (list(given) if isinstance(given, list | tuple) else given) != want:  # the network is built for data.*
            raise ConfigError(f"data.dataset.params.{key}={given} contradicts data.{key} ({want}); set data.{key}")
    if cfg.data.class_names is not None:
        params.setdefault("class_names", tuple(cfg.data.class_names))
    data: LabelledImages = DATASETS.create(cfg.data.dataset.name, **params)
    if len(data) == 0:
        raise InputError(f"dataset {cfg.data.dataset.name!r} has no images")
    if data.channels != cfg.data.channels:
        raise InputError(f"images have {data.channels} channel(s), data.channels is {cfg.data.channels}")
    if cfg.data.resplit or not np.all(np.isin(data.splits, ("train", "val", "test"))):
        data = data.with_splits(patient_split(data.patient_ids, data.labels, cfg.data.val_fraction,
                                              cfg.data.test_fraction, seed=cfg.seed))
    check_patient_splits(data.patient_ids, data.splits)
    required = ("train", "val") + (("test",) if np.any(data.splits == "test") else ())
    check_classes_present(data.labels, data.splits, data.class_names, required)
    return data


def split_summary(data: LabelledImages) -> dict[str, Any]:
    """Images (and patients) per split and class, for ``splits.json`` (no ids)."""
    out: dict[str, Any] = {"class_names": list(data.class_names), "synthetic": data.synthetic}
    for split in ("train", "val", "test"):
        sub = data.split(split)
        out[split] = {"images": len(sub), "patients": int(len(np.unique(sub.patient_ids))),
                      "per_class": dict(zip(data.class_names, sub.class_counts().tolist(), strict=True))}
    return out


# ----------------------------------------------------------------------------------- model
def build_model(cfg: ClassificationConfig, n_classes: int):
    """Instantiate the configured classifier for this data."""
    from medanomaly.registry import MODELS

    factory, params = _classifier_call(cfg, n_classes)
    return MODELS.build(cfg.model.name, factory, params)


def check_model_input(cfg: ClassificationConfig) -> None:
    """Refuse, before any image is read, a classifier that cannot take ``data.image_size`` inputs (a network
    deeper than the image: PyTorch failed at the first batch, after the data work)."""
    from medanomaly.models.limits import check_input_shape

    factory, params = _classifier_call(cfg, len(cfg.data.class_names or ()) or 2)
    shape = (2, cfg.data.channels, *cfg.data.image_size)
    check_input_shape(cfg.model.name, factory, params, shape, "data.image_size")


def _classifier_call(cfg: ClassificationConfig, n_classes: int) -> tuple[Any, dict[str, Any]]:
    """The registered classifier factory of ``cfg.model`` and its keywords for this data."""
    from medanomaly.models._classifier import TASK
    from medanomaly.registry import MODELS

    params = dict(cfg.model.params)
    for key, want in (("in_channels", cfg.data.channels), ("num_classes", n_classes),
                      ("spatial_dims", len(cfg.data.image_size))):
        if key in params and params[key] != want:
            raise ConfigError(f"model.params.{key}={params[key]} contradicts the data ({want})")
        params[key] = want
    factory = MODELS.get(cfg.model.name)
    if getattr(factory, "task", None) != TASK:
        raise ConfigError(f"model {cfg.model.name!r} is not a classifier")
    return factory, params


def train_settings(cfg: ClassificationConfig, seed: int | None = None):
    """The loop's :class:`~medanomaly.train.settings.TrainSettings`: the ``train:`` section as it
    is, with the run's seed (or ``seed``)."""
    from medanomaly.train.settings import TrainSettings

    return TrainSettings.from_config(cfg.train, seed=cfg.seed if seed is None else seed)


# ----------------------------------------------------------------------------------- ensemble
@dataclass(frozen=True, eq=False)
class Classifier:
    """A trained run ready to predict: members, combination, calibration and thresholds.

    Attributes:
        models: the member networks (eval mode).
        class_names: class order of the probabilities.
        image_size / channels: model input (see :func:`medanomaly.data.arrays.to_model_array`).
        method / weights: ensemble combination.
        decision: the rule learned on validation (temperature, binary threshold, abstention):
            :class:`medanomaly.evaluate.decision.DecisionRule`.
        tta: average over flips at prediction time.
        synthetic: trained on simulated data.
        intensity: intensity mapping of the training images (applied again by ``predict``).
    """

    models: tuple[Any, ...]
    class_names: tuple[str, ...]
    image_size: tuple[int, ...]
    channels: int
    method: str = "average"
    weights: tuple[float, ...] | None = None
    decision: DecisionRule = DecisionRule(fitted_on="none")
    tta: bool = False
    synthetic: bool = False
    intensity: str = "percentile"

    def raw_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Combined member probabilities (N, K) before temperature scaling."""
        from medanomaly.evaluate.calibration import softmax
        from medanomaly.train.ensemble import combine
        from medanomaly.train.loop import predict_logits
        from medanomaly.train.tta import predict_proba_tta

        members = []
        for model in self.models:
            if self.tta:
                members.append(predict_proba_tta(model, images, batch_size=batch_size))
            else:
                members.append(softmax(predict_logits(model, images, batch_size)))
        return combine(np.stack(members), self.method, self.weights)

    @property
    def temperature(self) -> float:
        return self.decision.temperature

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Calibrated class probabilities (N, K)."""
        return self.decision.calibrate(self.raw_proba(images, batch_size))

    def call(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(called class index per row, abstained mask) under the learned decision rule."""
        return self.decision.call(probs)


def member_weights(run_dir: Path, n_members: int) -> list[str]:
    """The member weights files, relative to the run folder (recorded in model.json)."""
    return [f"members/{i}/model.safetensors" for i in range(n_members)]


def _member_dirs(run_dir: Path) -> list[Path]:
    return sorted((p for p in (run_dir / "members").glob("*") if p.is_dir()), key=lambda p: int(p.name))


def fit_members(cfg: ClassificationConfig, data: LabelledImages, run_dir: Path | None,
                progress: bool | None = None) -> tuple[list[Any], list[Any], dict[str, Any] | None]:
    """Train the configured members; returns (models, FitResults, cross-validation summary or None).

    ``ensemble.folds >= 2``: k-fold cross-validation by patient on the training split (one member
    per fold, validation split untouched for calibration); else ``ensemble.members`` seeds.
    """
    import torch

    from medanomaly.train.cv import cross_validate
    from medanomaly.train.loop import fit

    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    settings = train_settings(cfg)
    if progress is not None:
        settings = settings.replace(progress=progress)
    train, val = data.split("train"), data.split("val")
    n_classes = len(data.class_names)
    if cfg.ensemble.folds >= 2:
        cv = cross_validate(lambda: build_model(cfg, n_classes), train, settings, cfg.ensemble.folds,
                            cfg.seed, run_dir, resume=cfg.train.resume)
        return list(cv.models), list(cv.results), cv.to_json()
    models, results = [], []
    for i in range(cfg.ensemble.members):
        member = settings.replace(seed=cfg.seed + i)
        torch.manual_seed(member.seed)
        model = build_model(cfg, n_classes)
        member_dir = run_dir / "members" / str(i) if run_dir is not None else None
        results.append(fit(model, train, val, member, member_dir, resume=cfg.train.resume))
        models.append(model)
    return models, results, None


def calibrate(cfg: ClassificationConfig, models: list[Any], results: list[Any],
              val: LabelledImages, synthetic: bool) -> Classifier:
    """Combine members and learn the decision rule on validation (:func:`~medanomaly.evaluate.decision.learn_decision`)."""
    from medanomaly.evaluate.decision import learn_decision
    from medanomaly.train.ensemble import weights_from_scores

    weights = None
    if cfg.ensemble.weighted and len(models) > 1:
        scores = np.array([r.best_score for r in results])
        if cfg.train.early_stopping_metric == "loss":  # lower is better: weight by exp(-loss)
            scores = np.exp(-scores)
        weights = tuple(float(w) for w in weights_from_scores(scores))
    clf = Classifier(models=tuple(models), class_names=val.class_names, image_size=val.image_size,
                     channels=val.channels, method=cfg.ensemble.method, weights=weights,
                     tta=cfg.evaluate.tta, synthetic=synthetic, intensity=val.intensity)
    ev = cfg.evaluate
    decision = learn_decision(val.labels, clf.raw_proba(val.images), calibrate=ev.calibrate,
                              threshold_rule=ev.threshold_rule, abstain_confidence=ev.abstain_confidence,
                              abstain_coverage=ev.abstain_coverage)  # fmt: skip
    return _replace(clf, decision=decision)


def _replace(clf: Classifier, **changes: Any) -> Classifier:
    from dataclasses import replace

    return replace(clf, **changes)


# ----------------------------------------------------------------------------------- save / load
def save_classifier(clf: Classifier, cfg: ClassificationConfig, run_dir: Path) -> Path:
    """Write ``classifier.json`` (weights are already in ``members/<i>/model.safetensors``)."""
    from medanomaly.train.checkpoint import save_weights

    for i, model in enumerate(clf.models):
        save_weights(model, run_dir / "members" / str(i) / "model.safetensors")
    info = {
        "class_names": list(clf.class_names), "image_size": list(clf.image_size), "channels": clf.channels,
        "model": cfg.model.name, "model_params": dict(cfg.model.params), "members": len(clf.models),
        "method": clf.method, "weights": list(clf.weights) if clf.weights else None,
        "decision": clf.decision.to_json(), "tta": clf.tta, "synthetic": clf.synthetic,
        "intensity": clf.intensity,
        "fitted_on": "val",
    }
    path = run_dir / "classifier.json"
    write_text_atomic(path, json.dumps(info, indent=2))
    return path


def load_classifier(run_dir: str | Path) -> Classifier:
    """Load a trained run (config + ``classifier.json`` + member weights)."""
    from medanomaly.config import load_config
    from medanomaly.train.checkpoint import load_weights

    run_dir = Path(run_dir)
    info_path = run_dir / "classifier.json"
    if not info_path.is_file():
        raise InputError("not a trained classification run (no classifier.json)", run_dir)
    cfg = load_config(run_dir / "config.yaml")
    with unfit_file(info_path, "classifier values"):
        info = read_json(info_path)
        members = int(info["members"])
        fields = {"class_names": tuple(str(name) for name in info["class_names"]),
                  "image_size": tuple(info["image_size"]), "channels": int(info["channels"]), "method": info["method"],
                  "weights": tuple(info["weights"]) if info["weights"] else None, "tta": bool(info["tta"]),
                  "synthetic": bool(info["synthetic"]), "intensity": str(info.get("intensity", "percentile"))}
        check_ensemble(members, fields["method"], fields["weights"])
    models = []
    for member in _member_dirs(run_dir)[:members]:
        model = build_model(cfg, len(fields["class_names"]))
        load_weights(model, member / "model.safetensors").eval()
        models.append(model)
    if len(models) != members:
        raise InputError(f"run has {len(models)} of {members} member weights", run_dir)
    return Classifier(models=tuple(models), decision=_decision(info, run_dir), **fields)


def check_ensemble(members: int, method: Any, weights: Any) -> None:
    """ValueError unless ``classifier.json`` describes an ensemble the run can combine: at least one member, a known
    method, and none or one finite non-negative weight per member (0 members, a method of ``x`` or weights of ``x``
    were tracebacks from the first prediction's combine)."""
    if members < 1:
        raise ValueError(f"members must be at least 1, got {members}")
    if method not in ENSEMBLE_METHODS:
        raise ValueError(f"unknown ensemble method {method!r} (known: {', '.join(ENSEMBLE_METHODS)})")
    if weights is not None:
        normalised_weights(members, weights)


def _decision(info: dict[str, Any], run_dir: Path) -> DecisionRule:
    """The stored decision rule, validated (a NaN or out-of-range threshold is refused in one line)."""
    try:
        return DecisionRule(**info["decision"])  # validates its own values
    except (KeyError, TypeError, ValueError):
        raise InputError("classifier.json has no valid decision rule", run_dir) from None


def train_run(cfg: ClassificationConfig, run_dir: str | Path) -> Classifier:
    """Load data, train the members, calibrate on validation and write the run directory."""
    run_dir = Path(run_dir)
    check_model_input(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(cfg)
    write_text_atomic(run_dir / "splits.json", json.dumps(split_summary(data), indent=2))
    models, results, cv = fit_members(cfg, data, run_dir)
    clf = calibrate(cfg, models, results, data.split("val"), data.synthetic)
    save_classifier(clf, cfg, run_dir)
    write_text_atomic(run_dir / "train.json", json.dumps(
        {"synthetic": data.synthetic, "cross_validation": cv, "members": [r.to_json() for r in results]},
        indent=1, default=float))
    return clf
