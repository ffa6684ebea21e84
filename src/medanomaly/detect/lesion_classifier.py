"""Second stage of 2D detection: each found lesion called benign / uncertain / malignant, or abstained.

A small CNN (a registered classifier, default ``compact_cnn``) is trained on square crops around
the annotated lesions of the training images (:func:`medanomaly.data.lesion_samples.lesion_crops`:
the longer box side plus a margin, at least 8 mm, percentile-normalised, resized) with
cross-entropy through the one training loop (:func:`medanomaly.train.engine.train`). On the
validation lesions a :class:`medanomaly.evaluate.decision.DecisionRule` is learned (temperature,
then an abstention threshold that answers ``abstain_coverage`` of them): the same rule classification
runs use. At prediction, a finding's mask becomes a lesion of the image and is cropped by the same
function, so training and prediction crops cannot differ.

Example:
    >>> from medanomaly.evaluate.decision import DecisionRule
    >>> clf = LesionClassifier(("benign", "uncertain", "malignant"), crop_size=(32, 32))
    >>> clf.crop_size
    (32, 32)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.config import distinct_names
from medanomaly.data.lesions2d import LesionImage, LesionSet, lesion_from_mask
from medanomaly.detect.detection_config import MAX_SIDE
from medanomaly.errors import ConfigError, InputError, first_reason
from medanomaly.jsonio import read_json
from medanomaly.types import Finding, Volume

__all__ = ["LesionClassifier", "CLASSIFIER_WEIGHTS", "CLASSIFIER_JSON"]

CLASSIFIER_WEIGHTS = "lesion_classifier.safetensors"
CLASSIFIER_JSON = "lesion_classifier.json"


def _crops(lesions: LesionSet, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    from medanomaly.data.lesion_samples import lesion_crops

    data = lesion_crops(lesions, size)
    return np.asarray(data.images, np.float32), np.asarray(data.labels, np.int64)


class LesionClassifier:
    """Crop classifier with a learned decision rule (see the module docstring).

    Args:
        class_names: lesion classes, least to most severe.
        model_name / model_params: a registered classifier.
        crop_size: (y, x) pixels of the crop fed to the network.
        epochs / batch_size / lr / seed: training.
        abstain_coverage: fraction of validation lesions answered (1 = never abstain).
    """

    def __init__(self, class_names: Sequence[str], model_name: str = "compact_cnn",
                 model_params: dict[str, Any] | None = None, crop_size: Sequence[int] = (48, 48), epochs: int = 30,
                 batch_size: int = 32, lr: float = 2e-3, seed: int = 0, abstain_coverage: float = 0.9) -> None:  # fmt: skip
        self.class_names = tuple(class_names)
        if not self.class_names or not distinct_names(self.class_names):
            raise ConfigError(f"lesion class names must be distinct non-empty names, got {list(self.class_names)}")
        self.model_name, self.model_params = model_name, dict(model_params or {})
        self.crop_size = tuple(int(c) for c in crop_size)
        if len(self.crop_size) != 2 or not all(1 <= c <= MAX_SIDE for c in self.crop_size):  # a recorded crop of 0 or
            raise ConfigError(f"crop_size must be 2 sizes of 1..{MAX_SIDE} pixels, got {list(crop_size)}")  # 10^30
        self.epochs, self.batch_size, self.lr, self.seed = int(epochs), int(batch_size), float(lr), int(seed)
        self.abstain_coverage = float(abstain_coverage)

    def _network(self) -> Any:
        from medanomaly.registry import MODELS

        return MODELS.create(self.model_name, **self._network_params())

    def _network_params(self) -> dict[str, Any]:
        """The classifier's keywords: one grey-level channel, one output per class, then ``model_params``."""
        fixed = {"in_channels": 1, "num_classes": len(self.class_names)}
        clash = sorted(set(fixed) & set(self.model_params))
        if clash:
            raise ConfigError(f"classifier.model.params may not set {', '.join(clash)} (fixed by the lesion crops)")
        return {**fixed, **self.model_params}

    def check_network(self) -> None:
        """Refuse, before any data work, a classifier that cannot take ``crop_size`` crops (on the meta device:
        :func:`medanomaly.models.limits.check_input_shape`)."""
        from medanomaly.models.limits import check_input_shape
        from medanomaly.registry import MODELS

        check_input_shape(self.model_name, MODELS.get(self.model_name), self._network_params(), (2, 1, *self.crop_size),
                          "classifier.crop_size")

    def fit(self, train: LesionSet, val: LesionSet, progress: bool = True) -> LesionClassifier:
        """Train on the lesions of ``train``; learn the decision rule on those of ``val``."""
        import torch

        from medanomaly.evaluate.decision import learn_decision
        from medanomaly.train.batches import ArrayBatches
        from medanomaly.train.engine import Hooks, LoopOptions
        from medanomaly.train.engine import train as train_loop

        x, y = _crops(train, self.crop_size)  # type: ignore[arg-type]
        if len(set(y.tolist())) < 2:
            raise InputError("the training images hold lesions of fewer than two classes")
        counts = np.bincount(y, minlength=len(self.class_names)).astype(np.float64)
        weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(counts), dtype=torch.float32)
        torch.manual_seed(self.seed)
        net = self._network()

        def optimizer(model: Any, steps_per_epoch: int, total: int) -> tuple[Any, Any]:
            opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=1e-4)
            return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=total)

        hooks = Hooks(loss=lambda xb, yb, model, extras: torch.nn.functional.cross_entropy(model(xb), yb, weight=weights),
                      optimizer=optimizer)  # fmt: skip
        batch = min(self.batch_size, max(2, len(x)))
        batches = lambda ctx: ArrayBatches(torch.from_numpy(x), torch.from_numpy(y), batch, self.seed, ctx,  # noqa: E731
                                           transform=_flip, min_per_rank=2)  # fmt: skip
        train_loop(net, batches, hooks, LoopOptions(epochs=self.epochs, seed=self.seed, progress=progress,
                                                    title="train lesion classifier"))  # fmt: skip
        self.model_ = net.eval()
        xv, yv = _crops(val, self.crop_size) if any(it.lesions for it in val) else (x, y)  # type: ignore[arg-type]
        self.rule_ = learn_decision(yv, self.raw_proba(xv), calibrate=True, threshold_rule="argmax",
                                    abstain_coverage=self.abstain_coverage)  # fmt: skip
        self.rule_fitted_on_ = "val" if any(it.lesions for it in val) else "train (no validation lesions)"
        return self

    def raw_proba(self, crops: np.ndarray) -> np.ndarray:
        """(N, K) softmax of the network on crops (N, 1, y, x)."""
        import torch

        if len(crops) == 0:
            return np.zeros((0, len(self.class_names)))
        from medanomaly.train.distributed import module_device

        x = torch.from_numpy(np.ascontiguousarray(crops, np.float32)).to(module_device(self.model_))
        with torch.no_grad():
            logits = self.model_(x)
        return torch.softmax(logits, dim=1).cpu().numpy().astype(np.float64)

    def crops_for(self, image: Volume, findings: Sequence[Finding]) -> np.ndarray:
        """Crops (N, 1, y, x) around the findings' masks, cut exactly as the training crops."""
        lesions = [lesion_from_mask(image, np.asarray(f.mask.array), self.class_names[0])
                   for f in findings if f.mask is not None and np.any(f.mask.array)]  # fmt: skip
        if len(lesions) != len(findings):
            raise InputError("every finding to classify needs a non-empty mask")
        if not lesions:
            return np.zeros((0, 1, *self.crop_size), np.float32)
        return _crops(LesionSet((LesionImage(image, tuple(lesions)),), self.class_names), self.crop_size)[0]  # type: ignore[arg-type]

    def classify(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(calibrated probabilities (N, K), called class index (N,), abstained (N,))."""
        probs = self.rule_.calibrate(self.raw_proba(crops))
        called, abstained = self.rule_.call(probs) if len(probs) else (np.zeros(0, int), np.zeros(0, bool))
        return probs, called, abstained

    # ------------------------------------------------------------------ persist
    def save(self, run_dir: str | Path) -> None:
        from medanomaly.jsonio import write_json
        from medanomaly.train.checkpoint import save_weights

        run_dir = Path(run_dir)
        save_weights(self.model_, run_dir / CLASSIFIER_WEIGHTS)
        params = {"class_names": list(self.class_names), "model_name": self.model_name,
                  "model_params": self.model_params, "crop_size": list(self.crop_size), "epochs": self.epochs,
                  "batch_size": self.batch_size, "lr": self.lr, "seed": self.seed,
                  "abstain_coverage": self.abstain_coverage}  # fmt: skip
        write_json(run_dir / CLASSIFIER_JSON, {"params": params, "rule": self.rule_.to_json(),
                                               "rule_fitted_on": self.rule_fitted_on_})  # fmt: skip

    @classmethod
    def load(cls, run_dir: str | Path) -> LesionClassifier:
        from medanomaly.evaluate.decision import DecisionRule
        from medanomaly.train.checkpoint import load_weights

        run_dir = Path(run_dir)
        try:
            doc = read_json(run_dir / CLASSIFIER_JSON)
            clf = cls(**doc["params"])
            clf.check_network()  # a recorded crop the network cannot take failed at the first finding
            net = load_weights(clf._network(), run_dir / CLASSIFIER_WEIGHTS)
            clf.rule_ = DecisionRule(**doc["rule"])
        except InputError as exc:  # ours (a ConfigError too): named after the file that gave the value
            if exc.path is not None:
                raise
            raise InputError(f"lesion classifier values do not fit ({exc.reason})", run_dir / CLASSIFIER_JSON) from None
        except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"lesion classifier files missing or do not fit ({type(exc).__name__}: "
                             f"{first_reason(exc)})", run_dir / CLASSIFIER_JSON) from None  # fmt: skip
        clf.model_ = net.eval()
        clf.rule_fitted_on_ = doc.get("rule_fitted_on", "val")
        return clf


def _flip(x: Any, y: Any, extras: dict[str, Any], rng: np.random.Generator) -> tuple[Any, Any, dict[str, Any]]:
    """Random left-right / up-down flips of a crop batch (lesion class does not depend on orientation)."""
    if rng.random() < 0.5:
        x = x.flip(-1)
    if rng.random() < 0.5:
        x = x.flip(-2)
    return x, y, extras
