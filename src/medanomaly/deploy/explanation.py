"""Explanation maps of a deployed model's calls: ``serve --explain METHOD`` (the viewer draws the map over the image) and
``predict ARCHIVE`` / ``pacs`` / ``listen`` ``--explain METHOD`` (the map as a DICOM Parametric Map beside the result).

A classifier's or a whole-image detector's call is explained on the image's grid (:func:`medanomaly.explain.maps.explain`,
the map ``medanomaly explain RUN IMAGE`` writes). An anomaly model's own map is its explanation and is written as it
is; a lung nodule detector's findings carry their masks, and its per-finding explanations stay an offline tool
(``medanomaly explain``); a fusion model's call is explained with every modality present. The map is relative attribution
(no unit): where the model looked, not where disease is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.types import Volume

__all__ = ["MAX_EXPLAIN_VOXELS", "explained", "explainer_for"]

#: Most voxels of a model's input a served call is explained on. A gradient map keeps every layer's activations of
#: the whole input (a U-Net detector on a whole CT: many GB), and one worker's failure to allocate them would end the
#: service's process; a classifier's input (its image size) is far below it.
MAX_EXPLAIN_VOXELS = 4_000_000


def explainer_for(model: Any, method: str, name: str) -> Callable[[Volume], Volume] | None:
    """A function from an image to the explanation map of ``model``'s call on it (a fusion model's: from one image whose
    components are its modalities, :func:`medanomaly.engine.verbs.stacked`), or None when the model's own outputs are
    its explanation (an anomaly map, a lung detector's finding masks).

    Raises:
        InputError: ``method`` is not an explainer, or ``model`` cannot be explained (an exported ONNX package), naming
            the model; raised when the service starts, before any upload.
    """
    from medanomaly.explain.driver import check_options

    try:
        ex = model.explainable()
        check_options(ex, 80.0, None, method)
    except InputError as exc:
        raise InputError(f"--explain {method}: model {name!r} cannot be explained: {exc.reason}") from None
    if ex.kind == "anomaly" or ex.patch_size is not None:
        return None

    def explain_call(volume: Volume) -> Volume:
        from medanomaly.explain.maps import explain

        grid = ex.preprocess(volume) if ex.preprocess is not None else volume
        voxels = int(np.prod(grid.shape))
        if voxels > MAX_EXPLAIN_VOXELS:  # checked before the work: gradients of a whole CT would take the service down
            raise InputError(f"the model's input is {voxels:,} voxels, more than the {MAX_EXPLAIN_VOXELS:,} a served "
                             "explanation takes; run `medanomaly explain` on it")  # fmt: skip
        return explain(ex.model, volume, method, target=ex.target, preprocess=lambda _: grid, output_fn=ex.output_fn)

    explain_call.method = method  # type: ignore[attr-defined]  # named in each result's "explanation"
    return explain_call


def explained(explainer: Callable[[Volume], Volume] | None, image: Volume | Exception, prediction: Any,
              reason: Callable[[BaseException], str]) -> tuple[Volume | None, dict[str, Any]] | None:
    """The explanation map of a call and what it is: ``(map, {"method", "class"})``; ``(None, {"method", "error":
    reason(exc)})`` when the map cannot be made (the call stands without it; ``image`` may itself be the exception
    saying why); None without an explainer or for a model that gives its own map. The service and the batch share it.
    """
    if explainer is None or prediction.anomaly_map is not None:
        return None
    method = getattr(explainer, "method", "")
    try:
        if isinstance(image, Exception):  # why this call cannot be explained
            raise image
        return explainer(image), {"method": method, "class": prediction.label}
    except Exception as exc:  # noqa: BLE001 - the call's results stand without its explanation
        return None, {"method": method, "error": reason(exc)}
