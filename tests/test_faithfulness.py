"""Faithfulness metrics (convlens/lens/faithfulness.py) against the peers on the same maps and model.

The peers are test dependencies: TorchCAM's DeletionInsertionMetric and ClassificationMetric,
pytorch-grad-cam's ROAD and Drop/Increase in Confidence. Their CAM extractor is handed our fixed
maps, so only the protocols are compared.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from torch import nn

from convlens.errors import SpecError
from convlens.lens import faithfulness as fa


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        t = net(x).argmax(1)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    maps = torch.stack([torch.exp(-((xx - a) ** 2 + (yy - b) ** 2) / 0.05)
                        for a, b in [(0.3, 0.3), (0.5, 0.6), (0.7, 0.2), (0.4, 0.8)]])
    return net, x, maps, t


class _Fixed:
    """A TorchCAM extractor that returns the given maps."""

    def __init__(self, net, maps):
        self.model, self.maps = net, maps

    def __call__(self, class_idx=None, scores=None, **_):
        return [self.maps]

    def fuse_cams(self, cams):
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self):
        yield


def test_deletion_insertion_equal_torchcam(setup):
    from torchcam.metrics import DeletionInsertionMetric

    net, x, maps, t = setup
    fr, de, ins = fa.deletion_insertion(net, x, maps, t, steps=20, batch_size=16)
    assert fr[0] == 0 and fr[-1] == 1 and de.shape == ins.shape == (4, fr.numel())
    for i in range(4):
        m = DeletionInsertionMetric(_Fixed(net, maps[i:i + 1]), lambda z: z.softmax(-1), steps=20)
        m.update(x[i:i + 1], class_idx=[int(t[i])])
        s = m.summary()
        assert abs(float(fa.auc(fr, de[i])) - s["deletion_auc"]) < 1e-4
        assert abs(float(fa.auc(fr, ins[i])) - s["insertion_auc"]) < 1e-4


def test_average_drop_increase_equal_torchcam_and_grad_cam(setup):
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    from torchcam.metrics import ClassificationMetric

    net, x, maps, t = setup
    drop, inc = fa.average_drop_increase(net, x, maps, t)
    m = ClassificationMetric(_Fixed(net, maps), lambda z: z.softmax(-1))
    m.update(x, class_idx=t.tolist())
    assert abs(float(drop.mean()) - m.summary()["avg_drop"] * 100) < 0.5
    assert abs(float(inc.mean()) - m.summary()["conf_increase"] * 100) < 0.5
    # pytorch-grad-cam's DropInConfidence is the absolute drop max(0, p - p'): ours divided by p
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in t]
    theirs = DropInConfidence()(x, maps.numpy(), targets, net).ravel()
    with torch.no_grad():
        p = net(x).softmax(-1).gather(1, t[:, None])[:, 0].numpy()
    assert np.allclose(drop.numpy(), theirs / p * 100, atol=0.5)


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_agrees_with_grad_cam_per_image_and_fraction(setup, order):
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    net, x, maps, t = setup
    fracs = (0.2, 0.5, 0.8)
    ours = fa.road(net, x, maps, t, fractions=fracs, order=order).numpy()
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in t]
    peer = ROADMostRelevantFirst if order == "morf" else ROADLeastRelevantFirst
    # their percentile is the share kept; our fraction the share removed
    theirs = np.stack([peer(percentile=round(100 * (1 - f)))(x, maps.numpy(), targets, net).ravel()
                       for f in fracs], 1)
    assert ours.shape == (4, 3)
    assert np.abs(ours - theirs).max() < 0.02


def test_imputation_solves_the_linear_system():
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    g = torch.Generator().manual_seed(1)
    img = torch.rand(3, 24, 20, generator=g)
    removed = torch.rand(24, 20, generator=g) > 0.4
    theirs = NoisyLinearImputer(noise=0)(img, (~removed).float())
    ours = fa.impute(img[None], removed[None], noise=0, iterations=200)[0]
    assert torch.allclose(ours, theirs, atol=1e-3)
    assert torch.equal(ours[:, ~removed], img[:, ~removed])  # known pixels untouched


def test_bad_parameters_name_themselves(setup):
    net, x, maps, t = setup
    with pytest.raises(SpecError, match="steps") as e:
        fa.deletion_insertion(net, x, maps, t, steps=0)
    assert e.value.param == "steps"
    with pytest.raises(SpecError, match="fractions"):
        fa.road(net, x, maps, t, fractions=(0.0,))
    with pytest.raises(SpecError, match="order"):
        fa.road(net, x, maps, t, order="middle")
