"""Deep Feature Factorization (``cl.factorize``) against pytorch-grad-cam's
``DeepFeatureFactorization``: the same concepts, heatmaps (r >= 0.99) and concept scores; a view."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import convlens as cl
from convlens.errors import ConvlensError
from convlens.models import wrap_module
from pgc_support import pearson

warnings.filterwarnings("ignore")
pytest.importorskip("pytorch_grad_cam")


@pytest.fixture(scope="module")
def resnet():
    import torchvision

    torch.manual_seed(0)
    return wrap_module(torchvision.models.resnet18().eval(), input_size=(3, 96, 96))


def test_factorize_agrees_with_pytorch_grad_cam(resnet):
    from pytorch_grad_cam.feature_factorization.deep_feature_factorization import DeepFeatureFactorization

    torch.manual_seed(1)
    x = torch.randn(2, 3, 96, 96)
    ours = cl.factorize(resnet, x, k=3, layer="layer4")
    dff = DeepFeatureFactorization(resnet.module, resnet.module.layer4, computation_on_concepts=resnet.module.fc)
    concepts, heatmaps, outputs = dff(x, n_components=3)
    dff.activations_and_grads.release()
    assert np.allclose(ours.concepts.numpy(), concepts, atol=1e-4)
    for i in range(2):
        for j in range(3):
            r = pearson(ours.heatmaps[i, j].numpy(), heatmaps[i][j])
            assert r >= 0.99, f"image {i} concept {j}: r = {r:.4f}"
    probs = torch.softmax(torch.from_numpy(outputs), -1)
    for j in range(3):
        top = ours.classes[j][0]
        assert top.index == int(probs[j].argmax()) and top.probability == pytest.approx(float(probs[j].max()), rel=1e-4)
    assert ours.heatmaps.shape == (2, 3, 96, 96) and float(ours.heatmaps.min()) >= 0 and float(ours.heatmaps.max()) <= 1
    d = ours.to_dict()
    assert d["k"] == 3 and len(d["concepts"]) == 3 and len(d["concepts"][0]["share"]) == 2
    assert sum(len(m._forward_hooks) for m in resnet.module.modules()) == 0


def test_factorize_refuses_what_it_cannot_do_in_one_line(resnet):
    x = torch.randn(1, 3, 96, 96)
    with pytest.raises(ConvlensError, match="no classifier of the model takes 256 features"):
        cl.factorize(resnet, x, k=2, layer="layer3")
    with pytest.raises(ConvlensError, match="k must be at least 1"):
        cl.factorize(resnet, x, k=0)
    with pytest.raises(ConvlensError, match="k must be at most"):
        cl.factorize(resnet, x, k=100000)
