"""Agreement with the established implementations (pytorch-grad-cam, Captum, TorchCAM).

Same model, layer, target and images; Pearson r of the upsampled maps >= 0.99.
Built-in EfficientNet-Lite0 (real weights) and a torchvision ResNet-18 with
seeded random weights.  pytorch-grad-cam's exact Score-CAM and Ablation-CAM
on the built-in model cost ~1 min each (1,280 full forwards), so their
agreement there is measured in bench/cam_bench.py; here they run on the ResNet.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from convlens.lens.cam import explain
from convlens.models import wrap_module
from pgc_support import oriented_pgc

warnings.filterwarnings("ignore", category=UserWarning)

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

PEERS = {
    "gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM,
    "hirescam": pgc.HiResCAM, "layercam": pgc.LayerCAM, "eigengradcam": pgc.EigenGradCAM,
    "eigencam": pgc.EigenCAM, "scorecam": pgc.ScoreCAM, "ablationcam": pgc.AblationCAM,
}
CHEAP = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigengradcam", "eigencam"]


def pearson(a, b) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def peer_maps(method, module, layer, x, targets):
    """pytorch-grad-cam's maps (N, T, H, W) for per-column targets (its Eigen projections oriented
    as convlens orients them: see pgc_support)."""
    cols = []
    for t in range(targets.shape[1]):
        with PEERS[method](module, [layer]) as cam, oriented_pgc():
            cam.batch_size = 64
            cols.append(cam(x, [ClassifierOutputTarget(int(k)) for k in targets[:, t]]))
    return np.stack(cols, axis=1)


@pytest.fixture(scope="module")
def resnet():
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    return wrap_module(net, input_size=(3, 128, 128))


@pytest.fixture(scope="module")
def eff_batch(builtin_model, sample_photos):
    return builtin_model.preprocess([sample_photos["chelsea"], sample_photos["astronaut"]])


def check(ours, theirs, method, threshold=0.99):
    N, T = ours.shape[:2]
    for i in range(N):
        for t in range(T):
            r = pearson(ours[i, t].cpu().numpy(), theirs[i, t])
            assert r >= threshold, f"{method} image {i} target {t}: r = {r:.4f}"


def test_gradient_cams_agree_with_pytorch_grad_cam_builtin(builtin_model, eff_batch):
    res = explain(builtin_model, eff_batch, method=CHEAP, target=[281, 834], layer="bn2")
    targets = torch.tensor([[s.index for s in row] for row in res.targets])
    for m in CHEAP:
        theirs = peer_maps(m, builtin_model.module, builtin_model.module.bn2, eff_batch, targets)
        check(res[m].heatmaps, theirs, m)


def test_gradient_cams_agree_with_pytorch_grad_cam_resnet(resnet):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 128, 128)
    res = explain(resnet, x, method=CHEAP, target=[3, 500], layer="layer4")
    targets = torch.tensor([[3, 500]] * 2)
    for m in CHEAP:
        check(res[m].heatmaps, peer_maps(m, resnet.module, resnet.module.layer4, x, targets), m)


@pytest.mark.slow
def test_scorecam_and_ablationcam_exact_agree_with_pytorch_grad_cam(resnet):
    torch.manual_seed(2)
    x = torch.randn(1, 3, 128, 128)
    res = explain(resnet, x, method="scorecam,ablationcam", target=7, layer="layer4", channels="all")
    targets = torch.tensor([[7]])
    exact = {}
    for m in ("scorecam", "ablationcam"):
        exact[m] = peer_maps(m, resnet.module, resnet.module.layer4, x, targets)
        check(res[m].heatmaps, exact[m], m)
    # the default fast Score-CAM (top-128 of 512 channels) stays close to the exact map
    fast = explain(resnet, x, method="scorecam", target=7, layer="layer4")
    check(fast.heatmaps, exact["scorecam"], "scorecam top-128", threshold=0.95)


def _captum_gradcam(module, layer, x, targets, size):
    from captum.attr import LayerAttribution, LayerGradCam

    lgc = LayerGradCam(module, layer)
    cols = []
    for t in range(targets.shape[1]):
        a = lgc.attribute(x, target=targets[:, t].tolist(), relu_attributions=True)
        cols.append(LayerAttribution.interpolate(a, size, interpolate_mode="bilinear")[:, 0])
    return torch.stack(cols, 1).detach().numpy()


def _torchcam_gradcam(module, layer_name, x, targets, size):
    from torchcam.methods import GradCAM

    cols = []
    with GradCAM(module, target_layer=layer_name) as extractor:
        for t in range(targets.shape[1]):
            module.zero_grad()
            scores = module(x)
            cam = extractor(targets[:, t].tolist(), scores)[0]
            cols.append(torch.nn.functional.interpolate(cam[:, None], size=size, mode="bilinear",
                                                        align_corners=False)[:, 0])
    return torch.stack(cols, 1).detach().numpy()


@pytest.mark.parametrize("which", ["builtin", "resnet"])
def test_gradcam_agrees_with_captum_and_torchcam(which, builtin_model, eff_batch, resnet):
    if which == "builtin":
        lm, x, layer, name = builtin_model, eff_batch, builtin_model.module.bn2, "bn2"
    else:
        torch.manual_seed(3)
        lm, x, layer, name = resnet, torch.randn(2, 3, 128, 128), resnet.module.layer4, "layer4"
    res = explain(lm, x, method="gradcam", target=[1, 281], layer=name)
    targets = torch.tensor([[1, 281]] * x.shape[0])
    size = tuple(x.shape[-2:])
    check(res.heatmaps, _captum_gradcam(lm.module, layer, x, targets, size), "captum LayerGradCam")
    check(res.heatmaps, _torchcam_gradcam(lm.module, name, x, targets, size), "torchcam GradCAM")
    assert sum(len(m._forward_hooks) for m in lm.module.modules()) == 0
