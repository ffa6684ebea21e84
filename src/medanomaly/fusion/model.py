"""A trained fusion run behind the engine contract (:class:`medanomaly.engine.TaskModel`).

A fusion model takes several co-registered modalities of one patient. ``predict`` accepts either
a mapping ``modality -> Volume`` (None or absent = missing, flagged ``missing_modality:<name>``) or
one Volume whose components are the modalities in the model's order. ``explainable()`` wraps the
network so the explainers see an ordinary ``(B, M, *spatial)`` input with every modality present.

Example:
    >>> from medanomaly.engine import load_model                               # doctest: +SKIP
    >>> load_model("runs/fusion").predict({"T1": t1, "PD": None}).flags          # doctest: +SKIP
    ('missing_modality:PD',)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.engine.contract import ModelBase, require_volume
from medanomaly.engine.run import RunInfo
from medanomaly.errors import InputError
from medanomaly.fusion.infer import CLASS_NAMES, predict_volumes
from medanomaly.io.limits import check_least_size
from medanomaly.types import Prediction, Volume

__all__ = ["FusionModel", "run_info", "all_present", "check_classes", "check_recorded"]


def run_info(config: Any, modalities: tuple[str, ...], synthetic: bool, weights: str) -> RunInfo:
    """``model.json`` of a trained fusion run."""
    from medanomaly.preprocess.recipes import fusion_steps

    data = config.data
    return RunInfo(
        task="fusion", class_names=CLASS_NAMES, weights=(weights,), synthetic=synthetic,
        preprocessing=fusion_steps(modalities, data.size, dict(data.windows)),
        input={"spatial_dims": len(data.size), "channels": len(modalities), "modalities": list(modalities),
               "image_size": list(data.size)},
        extra={"model": config.model.model_dump(mode="json"), "windows": {k: list(v) for k, v in data.windows.items()},
               "volumes": dict(data.volumes), **({"alignment": data.alignment} if data.alignment != "none" else {})},
    )  # fmt: skip


def check_recorded(info: RunInfo, path: Path) -> None:
    """Refuse, in one line naming ``path`` (model.json), a recorded input or windows the fusion model cannot be built
    or run with: modalities and an ``image_size`` of ``spatial_dims`` sizes must be there (the engine has typed them),
    and ``extra.windows`` must map modality names to finite ``[low, high]`` ranges (an edited or foreign model.json
    without them, with a 3D size for a 2D network or windows of ``None`` was a traceback at load or at the first
    prediction)."""
    from medanomaly.config import is_finite_range
    from medanomaly.errors import InputError

    given = info.input
    if not given.get("modalities") or given.get("spatial_dims") is None or given.get("image_size") is None:
        raise InputError("the recorded input needs modalities, spatial_dims and image_size", path)
    if len(given["image_size"]) != given["spatial_dims"]:
        raise InputError(f"the recorded image_size {given['image_size']} is not {given['spatial_dims']}D", path)
    windows = info.extra.get("windows", {})
    if not (isinstance(windows, dict) and all(n in given["modalities"] and is_finite_range(w) for n, w in windows.items())):
        raise InputError("the recorded windows must map modality names to finite [low, high] ranges", path)
    volumes = info.extra.get("volumes", {})
    if not (isinstance(volumes, dict) and all(n in given["modalities"] and type(k) is int and k >= 0
                                              for n, k in volumes.items())):  # fmt: skip
        raise InputError("the recorded volumes must map modality names to volume numbers (0, 1, ...)", path)
    from medanomaly.engine.alignment import ALIGNMENTS

    if info.extra.get("alignment", "none") not in ALIGNMENTS:
        raise InputError(f"the recorded alignment must be one of {', '.join(ALIGNMENTS)}", path)


def check_classes(info: RunInfo, network: Any, path: Path) -> None:
    """One line naming ``path`` unless model.json names as many classes as the network has outputs."""
    from medanomaly.errors import InputError

    outputs = getattr(network, "num_classes", len(info.class_names))
    if len(info.class_names) != outputs:
        raise InputError(f"{len(info.class_names)} class names {list(info.class_names)} for a network of {outputs} "
                         "outputs", path)  # fmt: skip


def all_present(network: Any) -> Any:
    """A torch module ``x -> network(x, present=all)``: the fusion network with a plain signature
    (explainers and ONNX export call ``model(x)``)."""
    import torch
    from torch import nn

    class AllPresent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = network
            self.spatial_dims = getattr(network, "spatial_dims", None)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            present = torch.ones(x.shape[0], x.shape[1], dtype=torch.bool, device=x.device)
            return self.net(x, present)

    return AllPresent().eval()


class FusionModel(ModelBase):
    """Multimodal classifier (early / feature / decision / hybrid fusion) loaded from a run."""

    def __init__(self, info: RunInfo, run_dir: Path, network: Any) -> None:
        super().__init__(info, run_dir)
        self.net = network.eval()

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.info.input["modalities"])

    def split_components(self, volume: Volume) -> dict[str, Volume | None]:
        """One Volume per modality from a multi-component Volume (components in the model's order)."""
        m = len(self.modalities)
        if m == 1 and volume.n_components == 1:
            return {self.modalities[0]: volume}
        if volume.n_components != m:
            raise InputError(f"the fusion model expects {m} modalities {list(self.modalities)} as components "
                             f"(or one file per modality), got {volume.n_components} component(s)")  # fmt: skip
        return {name: volume.with_array(np.asarray(volume.array[..., j])) for j, name in enumerate(self.modalities)}

    def predict(self, volume: Volume | Mapping[str, Volume | None]) -> Prediction:  # type: ignore[override]
        """The prediction from one image per modality (a mapping, None for a missing one) or from one image whose
        components are the modalities; each image checked for its size and the memory its prediction takes, an error
        naming its modality. Its values (NaN, beyond float32), names and grids are checked together when the input is
        built (:func:`medanomaly.fusion.data.sample_to_array`: ``T1: image has 1 NaN/infinite voxels``)."""
        volumes = volume if isinstance(volume, Mapping) else self.split_components(require_volume(volume))
        for name, image in volumes.items():
            if image is not None:
                try:
                    check_least_size(require_volume(image))
                    self.check_memory(image)
                except InputError as exc:
                    raise InputError(f"{name}: {exc.reason}", exc.path) from None
        return self._predict_volumes(volumes)

    def _predict(self, volume: Volume) -> Prediction:
        return self._predict_volumes(self.split_components(volume))

    def _predict_volumes(self, volumes: Mapping[str, Volume | None]) -> Prediction:
        windows = {k: tuple(v) for k, v in self.info.extra.get("windows", {}).items()}
        p = predict_volumes(self.net, volumes, self.info.input["image_size"], windows, self.class_names)
        return Prediction(scores=p.scores, class_names=p.class_names, label=p.label, flags=p.flags + self.flags())

    def check_input(self, volume: Volume, path: Any = None) -> None:
        """What every model asks of an image (:meth:`check_image`); modality names and grids are checked when the
        input is built, and a 2D network takes a 3D image's middle slice (its rule in training)."""
        self.check_image(volume, path)

    def network(self) -> Any:
        """The fusion network with every modality present (``model(x)``, x: (B, M, *spatial))."""
        return all_present(self.net)

    def explainable(self) -> Any:
        from medanomaly.explain.adapters import Explainable

        def preprocess(volume: Volume) -> Volume:
            return self.preprocessing(volume).volume

        return Explainable(model=all_present(self.net), preprocess=preprocess, class_names=self.class_names,
                           kind="fusion", synthetic=self.synthetic, runner=self)  # fmt: skip
