"""The methods named after pytorch-grad-cam's classes agree with it (r >= 0.99), and the
``eigen_smooth`` / ``aug_smooth`` options do.

ResNet-18 (torchvision, seeded random weights, 128 px) at ``layer4`` and the built-in
EfficientNet-Lite0 at ``bn2`` on two photos; same layer, same targets.  Guided backprop gives an
input gradient (H, W, 3): both sides are reduced the same way (max over colours of |.|, min-max).
Eigen, KPCA and ``eigen_smooth`` projections are compared with PGC's oriented as convlens orients
them (tests/pgc_support.py).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from convlens.errors import ConvlensError
from convlens.lens.cam import explain
from convlens.lens.cam.targets import METHODS, parse_methods
from convlens.methods import METHODS as REGISTRY
from convlens.models import wrap_module
from pgc_support import oriented_pgc, pearson

warnings.filterwarnings("ignore")
pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget  # noqa: E402

NEW = ["gradcamelementwise", "fullgrad", "kpcacam", "shapleycam", "finercam", "fem", "guidedbackprop",
       "guidedgradcam"]


@pytest.fixture(scope="module")
def resnet():
    import torchvision

    torch.manual_seed(0)
    return wrap_module(torchvision.models.resnet18().eval(), input_size=(3, 128, 128))


@pytest.fixture(scope="module")
def cases(resnet, builtin_model, sample_photos):
    torch.manual_seed(1)
    eff = builtin_model.preprocess([sample_photos["chelsea"], sample_photos["astronaut"]])
    return {"resnet": (resnet, "layer4", torch.randn(2, 3, 128, 128), [3, 500]),
            "builtin": (builtin_model, "bn2", eff, [281, 834])}


def _check(ours, theirs, what, threshold=0.99):
    for i in range(ours.shape[0]):
        r = pearson(ours[i], theirs[i])
        assert r >= threshold, f"{what} image {i}: r = {r:.4f}"


def _colour_max(g):  # (N, H, W, 3) or (N, 3, H, W) -> (N, H, W) in [0, 1]
    g = np.abs(np.asarray(g, dtype=np.float64))
    m = g.max(axis=-1) if g.shape[-1] == 3 else g.max(axis=1)
    lo = m.min(axis=(-2, -1), keepdims=True)
    return (m - lo) / (m.max(axis=(-2, -1), keepdims=True) - lo + 1e-12)


def _guided(module, x, classes):
    from pytorch_grad_cam import GuidedBackpropReLUModel

    net = copy.deepcopy(module)  # PGC puts new ReLUs back into the model it guided
    gb = GuidedBackpropReLUModel(net, device="cpu")
    return np.stack([gb(x[i:i + 1], target_category=int(k)) for i, k in enumerate(classes)])


def _pgc_maps(method, module, layer, x, classes):
    tgts = [ClassifierOutputTarget(int(k)) for k in classes]
    if method == "finercam":
        from pytorch_grad_cam import FinerCAM

        with FinerCAM(module, [layer]) as cam:
            return np.concatenate([cam(x[i:i + 1], target_idx=int(k)) for i, k in enumerate(classes)])
    if method == "guidedbackprop":
        return _colour_max(_guided(module, x, classes))
    if method == "guidedgradcam":
        with pgc.GradCAM(module, [layer]) as cam:
            mask = cam(x, tgts)
        return _colour_max(mask[..., None] * _guided(module, x, classes))
    cls = {"gradcamelementwise": pgc.GradCAMElementWise, "kpcacam": pgc.KPCA_CAM, "shapleycam": pgc.ShapleyCAM,
           "fem": pgc.FEM, "fullgrad": pgc.FullGrad}[method]
    with cls(module, [layer] if method != "fullgrad" else []) as cam, oriented_pgc():
        return cam(x, tgts)


@pytest.mark.parametrize("which", ["resnet", "builtin"])
def test_new_methods_agree_with_pytorch_grad_cam(which, cases):
    lm, name, x, classes = cases[which]
    layer = dict(lm.module.named_modules())[name]
    per_image = torch.tensor([classes]).T  # one class per image
    methods = NEW if which == "resnet" else [m for m in NEW if m != "fullgrad"]
    ex = explain(lm, x, method=methods, target=per_image, layer=name)
    for m in methods:
        _check(ex[m].heatmaps[:, 0].numpy(), _pgc_maps(m, lm.module, layer, x, classes), f"{which} {m}")
    assert sum(len(mod._forward_hooks) for mod in lm.module.modules()) == 0
    assert all(p.requires_grad for p in lm.module.parameters())


def test_shapleycam_with_a_softmax_target_agrees_and_differs_from_gradcam(cases):
    lm, name, x, classes = cases["resnet"]
    layer = lm.module.layer4
    ex = explain(lm, x, method="shapleycam,gradcam", target="softmax", layer=name)  # the predicted class's
    top = [row[0].index for row in ex.targets]
    with torch.no_grad():
        assert top == lm.module(x).argmax(1).tolist()
    with pgc.ShapleyCAM(lm.module, [layer]) as cam:
        theirs = cam(x, [ClassifierOutputSoftmaxTarget(k) for k in top])
    assert float(ex["shapleycam"].heatmaps.amax()) > 0
    _check(ex["shapleycam"].heatmaps[:, 0].numpy(), theirs, "shapleycam softmax")
    # the Hessian term matters here (not with a logit, through a linear head)
    assert not torch.allclose(ex["shapleycam"].heatmaps, ex["gradcam"].heatmaps, atol=1e-3)


@pytest.mark.parametrize("which", ["resnet", "builtin"])
def test_eigen_smooth_agrees_with_pytorch_grad_cam(which, cases):
    lm, name, x, classes = cases[which]
    layer = dict(lm.module.named_modules())[name]
    tgts = [ClassifierOutputTarget(int(k)) for k in classes]
    ex = explain(lm, x, method="gradcam,layercam,gradcamelementwise", target=torch.tensor([classes]).T,
                 layer=name, eigen_smooth=True)
    for m, cls in (("gradcam", pgc.GradCAM), ("layercam", pgc.LayerCAM),
                   ("gradcamelementwise", pgc.GradCAMElementWise)):
        with cls(lm.module, [layer]) as cam, oriented_pgc():
            theirs = cam(x, tgts, eigen_smooth=True)
        _check(ex[m].heatmaps[:, 0].numpy(), theirs, f"{which} {m} eigen_smooth")


def test_aug_smooth_agrees_with_pytorch_grad_cam(cases):
    lm, name, x, classes = cases["resnet"]
    ex = explain(lm, x, method="gradcam,gradcam++", target=torch.tensor([classes]).T, layer=name, aug_smooth=True)
    tgts = [ClassifierOutputTarget(int(k)) for k in classes]
    for m, cls in (("gradcam", pgc.GradCAM), ("gradcam++", pgc.GradCAMPlusPlus)):
        with cls(lm.module, [lm.module.layer4]) as cam:
            theirs = cam(x, tgts, aug_smooth=True)
        _check(ex[m].heatmaps[:, 0].numpy(), theirs, f"{m} aug_smooth")
    plain = explain(lm, x, method="gradcam", target=torch.tensor([classes]).T, layer=name)
    assert not torch.allclose(plain.heatmaps, ex["gradcam"].heatmaps, atol=1e-3)


def test_registry_declares_every_method_once_and_old_names_still_parse():
    assert list(METHODS) == list(REGISTRY)
    for m in REGISTRY.values():
        assert m.name and m.family and m.help and m.formula
    old = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigengradcam", "eigencam", "scorecam",
           "ablationcam", "saliency", "smoothgrad", "ig", "occlusion"]
    assert parse_methods(old) == old
    assert parse_methods("grad-cam,gradcampp,eigen-cam,integrated-gradients") == ["gradcam", "gradcam++",
                                                                                 "eigencam", "ig"]
    assert parse_methods(NEW) == NEW
    with pytest.raises(ConvlensError, match="unknown method 'fulgrad'; did you mean"):
        parse_methods("fulgrad")


def test_options_are_refused_in_one_line_where_they_do_not_apply(resnet):
    x = torch.randn(1, 3, 128, 128)
    with pytest.raises(ConvlensError, match="eigen_smooth applies to"):
        explain(resnet, x, method="saliency", eigen_smooth=True)
    with pytest.raises(ConvlensError, match="finercam contrasts"):
        explain(resnet, x, method="finercam", target="softmax:3")
    with pytest.raises(ConvlensError, match="takes class targets only"):
        explain(resnet, x, method="saliency", target="tabby cat vs bull mastiff")


def _unfused(module):
    """The same network with each timm ``BatchNormAct2d`` split into ``BatchNorm2d`` + its drop and
    activation: pytorch-grad-cam's FullGrad then sees every bias (it skips the fused type)."""
    net = copy.deepcopy(module)
    for name, m in list(net.named_modules()):
        if type(m).__name__ == "BatchNormAct2d":
            bn = torch.nn.BatchNorm2d(m.num_features, eps=m.eps, momentum=m.momentum)
            bn.load_state_dict({k: v for k, v in m.state_dict().items() if "." not in k})
            parent, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, child, torch.nn.Sequential(bn, m.drop, m.act))
    return net.eval()


def test_fullgrad_on_the_builtin_model_agrees_with_pytorch_grad_cam_unfused(cases):
    """EfficientNet-Lite0's norms are timm's fused BatchNormAct2d (its ReLU6 applied inside):
    convlens reads each bias gradient before the activation. pytorch-grad-cam, given the same
    network with the norms unfused, is the oracle (on the fused model it finds no bias layer and
    returns the input-gradient term alone, which convlens's map must not be)."""
    lm, _, x, classes = cases["builtin"]
    twin = _unfused(lm.module)
    assert not any(type(m).__name__ == "BatchNormAct2d" for m in twin.modules())
    with torch.no_grad():
        assert torch.allclose(twin(x), lm.module(x), atol=1e-4)
    ours = explain(lm, x, method="fullgrad", target=torch.tensor([classes]).T).heatmaps[:, 0].numpy()
    tgts = [ClassifierOutputTarget(int(k)) for k in classes]
    with pgc.FullGrad(twin, []) as cam:
        _check(ours, cam(x, tgts), "builtin fullgrad")
    with pgc.FullGrad(lm.module, []) as cam:  # the fused model: pytorch-grad-cam's input term alone
        alone = cam(x, tgts)
    assert all(pearson(ours[i], alone[i]) < 0.95 for i in range(len(classes)))
    assert sum(len(mod._forward_hooks) + len(mod._forward_pre_hooks) for mod in lm.module.modules()) == 0


def test_fullgrad_refuses_a_batchnorm_it_cannot_read_in_one_line():
    class ScaledBN(torch.nn.BatchNorm2d):  # does more than the norm: where its bias acts is unknown
        def forward(self, x):
            return 2 * super().forward(x)

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), ScaledBN(4), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    lm = wrap_module(net.eval(), input_size=(3, 16, 16))
    with pytest.raises(ConvlensError, match=r"FullGrad cannot read the bias gradient of '1' \(ScaledBN") as err:
        explain(lm, torch.randn(1, 3, 16, 16), method="fullgrad")
    assert "\n" not in str(err.value)
