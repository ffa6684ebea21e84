"""Predict from whatever modalities a patient has, and say which were missing.

:func:`predict_volumes` takes a mapping modality -> Volume (None or absent = missing), checks that
the present ones share one grid and that none sits under the wrong name (DICOM ``Modality``),
builds the network input, and returns a :class:`~medanomaly.types.Prediction` whose ``flags``
name every missing modality (``"missing_modality:MR"``). With no modality at all it refuses.

Example:
    >>> # prediction = predict_volumes(model, {"CT": ct_volume, "MR": None}, size=(64, 64))
    >>> # prediction.flags == ("missing_modality:MR",)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from medanomaly.errors import InputError
from medanomaly.engine.contract import finite_output
from medanomaly.fusion.data import PairedSample, model_inputs, sample_to_array
from medanomaly.types import Prediction, Volume

CLASS_NAMES = ("normal", "abnormal")


def predict_array(
    model, array: np.ndarray, present: np.ndarray, class_names: Sequence[str] = CLASS_NAMES
) -> Prediction:
    """Prediction for one network input (M, *spatial) and its presence vector (M,)."""
    from medanomaly.fusion.training import predict_proba

    present = np.asarray(present, bool)
    if not present.any():
        raise InputError("no modality present: nothing to predict from")
    probs = finite_output(predict_proba(model, array[np.newaxis], present[np.newaxis])[0], "the fusion probabilities")
    flags = tuple(f"missing_modality:{name}" for name, ok in zip(model.modalities, present, strict=True) if not ok)
    return Prediction(
        scores=tuple(float(p) for p in probs),
        class_names=tuple(class_names),
        label=str(class_names[int(np.argmax(probs))]),
        flags=flags,
    )


def predict_volumes(
    model,
    volumes: Mapping[str, Volume | None],
    size: Sequence[int],
    windows: Mapping[str, tuple[float, float]] | None = None,
    class_names: Sequence[str] = CLASS_NAMES,
) -> Prediction:
    """Predict from co-registered Volumes keyed by modality name; missing ones are flagged.

    Raises:
        InputError: unknown modality names, no modality present, different grids, or a Volume
            whose own modality contradicts its key (swapped inputs).
    """
    full = model_inputs(volumes, model.modalities)
    sample = PairedSample("case", full, -1)
    array, present = sample_to_array(sample, model.modalities, size, windows)
    return predict_array(model, array, present, class_names)
