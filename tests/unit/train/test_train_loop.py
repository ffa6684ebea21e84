"""The training loop learns, stops early, resumes exactly, and the extras (ensembles, TTA) behave."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from medanomaly.errors import InputError
from medanomaly.registry import MODELS
from medanomaly.train.ensemble import combine, weights_from_scores
from medanomaly.train.loop import TrainSettings, fit, predict_logits, quick_scores, softmax
from medanomaly.train.tta import predict_proba_tta

BASE = TrainSettings(epochs=6, batch_size=16, lr=0.01, progress=False, patience=50, scheduler="none")


def _net(seed: int = 0):
    torch.manual_seed(seed)
    return MODELS.create("compact_cnn", num_classes=2, widths=(4, 8), hidden=0, stem_stride=1)


def test_train_fit_learns_a_separable_toy_problem(toy, tmp_path: Path) -> None:
    train, val = toy
    settings = BASE.replace(loss="focal", class_weights="balanced", weighted_sampling=True, l2=1e-4,
                            augment=BASE.augment.model_copy(update={"flip": True, "rotate_deg": 10}))
    result = fit(_net(), train, val, settings, run_dir=tmp_path)
    assert result.best_score > 0.9 and result.history[result.best_epoch]["val_auc"] == result.best_score
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "history.json").is_file()
    assert result.images_per_second > 0


def test_train_early_stopping_and_bad_settings(toy) -> None:
    train, val = toy
    frozen = BASE.replace(epochs=20, lr=1e-12, patience=2, early_stopping_metric="loss")
    result = fit(_net(), train, val, frozen)
    assert result.stopped_early and result.epochs_run == 3
    with pytest.raises(ValidationError, match="early_stopping_metric"):
        BASE.replace(early_stopping_metric="f2")
    three = MODELS.create("compact_cnn", in_channels=3, num_classes=2, widths=(4,))
    with pytest.raises(InputError, match="1 channel"):
        fit(three, train, val, BASE)


def test_train_resume_continues_exactly(toy, tmp_path: Path) -> None:
    train, val = toy
    s = BASE.replace(epochs=3, scheduler="cosine", augment={"flip": True, "noise_std": 0.02})
    full = _net()
    fit(full, train, val, s)  # uninterrupted
    # interrupt after the second epoch, then resume into a differently initialised network
    class Stop(Exception):
        pass

    def stop(epoch, record):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        fit(_net(), train, val, s, run_dir=tmp_path, on_epoch=stop)
    resumed = _net(seed=123)  # different init: everything must come from the checkpoint
    result = fit(resumed, train, val, s, run_dir=tmp_path, resume=True)
    assert result.epochs_run == 3
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_train_ensemble_tta_and_scores(toy) -> None:
    p = np.array([[[0.8, 0.2], [0.6, 0.4]], [[0.6, 0.4], [0.1, 0.9]]])  # (members, cases, classes)
    np.testing.assert_allclose(combine(p, "average"), [[0.7, 0.3], [0.35, 0.65]])
    np.testing.assert_allclose(combine(p, "vote", weights=[3, 1]), [[1.0, 0.0], [0.75, 0.25]])
    assert weights_from_scores([0.5, 1.5]).tolist() == [0.25, 0.75]
    with pytest.raises(InputError):
        combine(p, "median")
    train, _ = toy
    net = _net().eval()
    tta = predict_proba_tta(net, train.images[:4])
    manual = np.mean([softmax(predict_logits(net, np.flip(train.images[:4], axis=a).copy()))
                      for a in ((), (2,), (3,))], axis=0)
    np.testing.assert_allclose(tta, manual, rtol=1e-5)
    s = quick_scores(np.array([0, 1, 1, 0]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]]))
    assert s["accuracy"] == 0.75 and s["auc"] == 1.0
