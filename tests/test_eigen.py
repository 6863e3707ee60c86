"""Eigen-CAM and Eigen-Grad-CAM with a fixed orientation.

The first principal component's sign is arbitrary (LAPACK decides); convlens orients the
projection to correlate positively with the channel-summed activation (Eigen-Grad-CAM: with the
summed activation x gradient).  Checked on 8 small CNNs (random init): r >= 0.99 against
pytorch-grad-cam with its projection oriented the same way, PGC's own map is that reference or
the one of the opposite sign, and a flipped SVD sign does not change convlens's map.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from convlens.lens.cam import default_layer, explain
from convlens.lens.cam import formulas as fm
from convlens.models import wrap_module
from pgc_support import oriented_pgc, pearson

warnings.filterwarnings("ignore", category=UserWarning)
pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

SIZE = 96


def _torchvision(name):
    import torchvision

    return lambda: getattr(torchvision.models, name)(weights=None)


def _timm(name):
    import timm

    return lambda: timm.create_model(name, pretrained=False)


CNNS = {
    "resnet18": _torchvision("resnet18"), "mobilenet_v3_small": _torchvision("mobilenet_v3_small"),
    "squeezenet1_1": _torchvision("squeezenet1_1"), "shufflenet_v2_x0_5": _torchvision("shufflenet_v2_x0_5"),
    "mnasnet0_5": _torchvision("mnasnet0_5"), "timm_resnet10t": _timm("resnet10t"),
    "timm_mobilenetv3_small_050": _timm("mobilenetv3_small_050"), "timm_regnetx_002": _timm("regnetx_002"),
}


def _model(name):
    torch.manual_seed(0)
    return wrap_module(CNNS[name]().eval(), input_size=(3, SIZE, SIZE))


def _pgc(method, module, layer, x, targets, sign=None):
    cls = pgc.EigenCAM if method == "eigencam" else pgc.EigenGradCAM
    tgts = [ClassifierOutputTarget(int(k)) for k in targets]
    if sign is None:
        with cls(module, [layer]) as cam:
            return cam(x, tgts)
    with cls(module, [layer]) as cam, oriented_pgc(sign):
        return cam(x, tgts)


@pytest.mark.parametrize("name", sorted(CNNS))
def test_eigen_methods_match_the_oriented_reference_and_pgc_up_to_sign(name):
    lm = _model(name)
    torch.manual_seed(1)
    x = torch.randn(2, 3, SIZE, SIZE)
    layer = default_layer(lm)
    module = dict(lm.module.named_modules())[layer]
    ex = explain(lm, x, method="eigencam,eigengradcam", target=3, layer=layer)
    for method in ("eigencam", "eigengradcam"):
        ours = ex[method].heatmaps[:, 0].numpy()
        ref = _pgc(method, lm.module, module, x, [3, 3], sign=1.0)
        opposite = _pgc(method, lm.module, module, x, [3, 3], sign=-1.0)
        plain = _pgc(method, lm.module, module, x, [3, 3])
        for i in range(2):
            r = pearson(ours[i], ref[i])
            assert r >= 0.99, f"{name} {method} image {i}: r = {r:.4f} against the oriented reference"
            # PGC's own map is the oriented one or the opposite one: the same projection up to sign
            same = np.allclose(plain[i], ref[i], atol=1e-4) or np.allclose(plain[i], opposite[i], atol=1e-4)
            assert same, f"{name} {method} image {i}: PGC's map is neither sign of the projection"


def test_a_flipped_svd_sign_leaves_the_map_unchanged(monkeypatch):
    lm = _model("resnet18")
    torch.manual_seed(2)
    x = torch.randn(2, 3, SIZE, SIZE)
    before = explain(lm, x, method="eigencam,eigengradcam,gradcam", target=[1, 2], layer="layer3",
                     eigen_smooth=False)
    smooth_before = explain(lm, x, method="gradcam", target=[1, 2], layer="layer3", eigen_smooth=True)
    real = torch.linalg.svd
    calls = []

    def flipped(M, full_matrices=True):
        U, S, Vh = real(M, full_matrices=full_matrices)
        calls.append(1)
        return -U, S, -Vh

    monkeypatch.setattr(torch.linalg, "svd", flipped)
    after = explain(lm, x, method="eigencam,eigengradcam,gradcam", target=[1, 2], layer="layer3")
    smooth_after = explain(lm, x, method="gradcam", target=[1, 2], layer="layer3", eigen_smooth=True)
    assert calls, "the SVD was not patched"
    assert torch.allclose(before.maps, after.maps, atol=1e-5)
    assert torch.allclose(smooth_before.maps, smooth_after.maps, atol=1e-5)
    # without the orientation the flipped sign would give another map: the test can fail
    A = torch.randn(1, 8, 5, 5)
    raw_flip = fm.first_component(A)
    monkeypatch.setattr(torch.linalg, "svd", real)
    assert torch.allclose(raw_flip, fm.first_component(A), atol=1e-5)
    assert not torch.allclose(fm.normalize_maps(raw_flip), fm.normalize_maps(-raw_flip), atol=1e-3)


def test_orientation_is_positive_correlation_with_the_channel_sum():
    torch.manual_seed(3)
    X = torch.randn(4, 16, 6, 6) + torch.linspace(0, 3, 36).reshape(1, 1, 6, 6)
    proj = fm.first_component(X).reshape(4, -1)
    total = X.sum(1).reshape(4, -1)
    for p, s in zip(proj, total):
        assert float(((p - p.mean()) * (s - s.mean())).sum()) >= 0
