"""Contract tests over every registered fusion network (2D and 3D), and missing-modality inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medanomaly.errors import InputError
from medanomaly.models.fusion_common import fusion_names
from medanomaly.registry import MODELS
from medanomaly.types import Volume

NAMES = fusion_names()


def test_fusion_models_registered():
    assert {"fusion_early", "fusion_feature", "fusion_decision", "fusion_hybrid"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dims", [2, 3])
def test_fusion_models_contract(name, dims, tmp_path):
    factory = MODELS.get(name)
    size = factory.example_size
    net = factory(modalities=("CT", "MR"), spatial_dims=dims, **factory.example_params)
    assert net.task == "fusion" and net.modalities == ("CT", "MR")
    x = torch.randn(4, 2, *([size] * dims))
    present = torch.tensor([[True, True], [True, False], [False, True], [True, True]])
    out = net(x, present)
    assert out.shape == (4, 2) and torch.isfinite(out).all()
    # a missing modality's voxels never reach the output
    net.eval()
    x2 = x.clone()
    x2[1, 1] = 1e3 * torch.randn_like(x2[1, 1])
    x2[2, 0] = 1e3 * torch.randn_like(x2[2, 0])
    with torch.no_grad():
        assert torch.allclose(net(x, present), net(x2, present), atol=1e-5)
    # gradients reach every branch when all modalities are present
    net.train()
    net(x).sum().backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if "encoder" in n)
    # safetensors round trip
    from medanomaly.train.checkpoint import load_weights, save_weights

    path = save_weights(net, tmp_path / "w.safetensors")
    again = factory(modalities=("CT", "MR"), spatial_dims=dims, **factory.example_params)
    load_weights(again, path)
    net.eval(), again.eval()
    with torch.no_grad():
        assert torch.allclose(net(x, present), again(x, present))


@pytest.mark.parametrize("name", NAMES)
def test_fusion_models_refuse_bad_input(name):
    factory = MODELS.get(name)
    net = factory(modalities=("CT", "MR"), **factory.example_params)
    with pytest.raises(ValueError, match="expected input"):
        net(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="at least one modality"):
        net(torch.zeros(2, 2, 16, 16), torch.tensor([[False, False], [True, True]]))
    with pytest.raises(ValueError, match="distinct"):
        factory(modalities=("CT", "CT"))


def test_fusion_models_options():
    x = torch.randn(2, 3, 16, 16)
    for combine in ("mean", "weighted", "stacker"):
        net = MODELS.create("fusion_decision", modalities=("T1", "T2", "PD"), widths=(4,), combine=combine)
        logits, branches = net.forward_all(x)
        assert logits.shape == (2, 2) and branches.shape == (2, 3, 2)
    net = MODELS.create("fusion_feature", modalities=("T1", "T2", "PD"), widths=(4,), mode="attention")
    net(x, torch.tensor([[True, False, True], [False, False, True]]))
    weights = net.fuser.last_attention_
    assert torch.allclose(weights.sum(dim=1), torch.ones(2))
    assert weights[0, 1] == 0 and weights[1, 2] == 1
    mean_net = MODELS.create("fusion_decision", modalities=("A", "B"), widths=(4,), combine="mean")
    logits, branches = mean_net.forward_all(x[:, :2], torch.tensor([[True, False], [True, True]]))
    assert torch.allclose(logits[0], branches[0, 0]) and torch.allclose(logits[1], branches[1].mean(dim=0))
    with pytest.raises(ValueError, match="combine"):
        MODELS.create("fusion_decision", modalities=("A", "B"), combine="max")


def test_fusion_missing_modality_inference_is_flagged(trained_hybrid):
    from medanomaly.fusion.infer import predict_volumes

    net, _ = trained_hybrid
    rng = np.random.default_rng(0)
    t1 = Volume(rng.normal(size=(1, 40, 40)).astype(np.float32), meta={"modality": "MR"})
    pd = t1.with_array(rng.normal(size=(1, 40, 40)).astype(np.float32))
    full = predict_volumes(net, {"T1": t1, "PD": pd}, size=(32, 32))
    assert full.flags == () and abs(sum(full.scores) - 1) < 1e-6
    only_t1 = predict_volumes(net, {"T1": t1, "PD": None}, size=(32, 32))
    assert only_t1.flags == ("missing_modality:PD",)
    only_pd = predict_volumes(net, {"PD": pd}, size=(32, 32))
    assert only_pd.flags == ("missing_modality:T1",)
    assert only_pd.to_json()["flags"] == ["missing_modality:T1"]
    with pytest.raises(InputError, match="no modality present"):
        predict_volumes(net, {"T1": None, "PD": None}, size=(32, 32))
    with pytest.raises(InputError, match="grids differ"):
        predict_volumes(net, {"T1": t1, "PD": Volume(pd.array, spacing=(2.0, 2.0, 1.0))}, size=(32, 32))
    with pytest.raises(InputError, match="^PD holds a CT image, expected MR$"):
        predict_volumes(net, {"T1": t1, "PD": pd.with_meta(modality="CT")}, size=(32, 32))
    with pytest.raises(InputError, match="unknown modalities"):
        predict_volumes(net, {"FLAIR": t1}, size=(32, 32))


def test_fusion_missing_modality_keeps_skill(trained_hybrid, sim_splits):
    """Trained with modality dropout: with one contrast removed, the lesions the other shows are still found."""
    from sklearn.metrics import roc_auc_score

    from medanomaly.fusion.training import predict_proba

    net, fit = trained_hybrid
    te = sim_splits["test"]
    vis = te.visible_in
    p_all = predict_proba(net, te.images)[:, 1]
    assert roc_auc_score(te.labels, p_all) > 0.7, fit.history[-1]
    for keep, name in ((0, "T1"), (1, "PD")):
        present = np.zeros((len(te), 2), bool)
        present[:, keep] = True
        p = predict_proba(net, te.images, present)[:, 1]
        sel = (vis == "none") | (vis == name)
        assert roc_auc_score(te.labels[sel], p[sel]) > 0.7, name
