"""Any vision model (issue 28, items 1 and 4): every layer of CNNs and transformers, from timm and
torchvision, reads as a correct spatial grid or is refused in one line; Grad-CAM at the automatic
layer agrees with pytorch-grad-cam (the oracle, given the ``reshape_transform`` its docs use)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
import torchvision
from torch import nn

import convlens as cl
from convlens.errors import ConvlensError, LayerError
from convlens.lens.cam.layers import check_layers, default_layer

S = 64  # the walk's input size: small, so the forward of every model stays cheap


def _timm(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kw)


def _tv(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None, **kw)


#: name -> (module builder, input size); models that need 224 px are marked slow below
WALK = {
    "timm:resnet18": (lambda: _timm("resnet18"), S),
    "timm:efficientnet_b0": (lambda: _timm("efficientnet_b0"), S),
    "timm:convnext_tiny": (lambda: _timm("convnext_tiny"), S),
    "timm:vit_small_patch16_224": (lambda: _timm("vit_small_patch16_224", img_size=S), S),
    "timm:deit_small_distilled_patch16_224": (lambda: _timm("deit_small_distilled_patch16_224", img_size=S), S),
    "timm:vit_small_patch14_reg4_dinov2": (
        lambda: _timm("vit_small_patch14_reg4_dinov2", img_size=56, num_classes=10), 56),
    "timm:mobilevitv2_050": (lambda: _timm("mobilevitv2_050"), 256),  # its own size: see test_layouts
    "timm:swin_tiny_patch4_window7_224": (lambda: _timm("swin_tiny_patch4_window7_224"), 224),
    "torchvision:resnet18": (lambda: _tv("resnet18"), S),
    "torchvision:densenet121": (lambda: _tv("densenet121"), S),
    "torchvision:vit_b_16": (lambda: _tv("vit_b_16", image_size=S), S),
    "torchvision:swin_t": (lambda: _tv("swin_t"), S),
    "torchvision:convnext_tiny": (lambda: _tv("convnext_tiny"), S),
}
SLOW_WALK = {"timm:swin_tiny_patch4_window7_224", "torchvision:vit_b_16", "torchvision:densenet121",
             "timm:convnext_tiny", "torchvision:convnext_tiny"}


def _grid_sizes(size: int) -> set[int]:
    """Every grid side a layer of a square ``size`` input can have (strides 1 to 64, floor or ceil)."""
    return {f(size / 2 ** k) for k in range(9) for f in (math.floor, math.ceil)} | {1}


def _raw_outputs(module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each module's first output as it emits it (the test's own hooks, independent of the Probe)."""
    raw: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda _m, _i, o, n=n: raw.setdefault(n, o.detach().clone())
                                       if isinstance(o, torch.Tensor) else None)
               for n, m in module.named_modules() if n]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return raw


@pytest.mark.parametrize("spec", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW_WALK else k for k in WALK])
def test_every_layer_is_a_correct_grid_or_a_one_line_refusal(spec):
    build, size = WALK[spec]
    lm = cl.load_model(build(), input_size=(3, size, size), name=spec)
    table = lm.layers()
    raw = _raw_outputs(lm.module, lm.example_input())
    sides = _grid_sizes(size)
    readable = refused = 0
    for name, out in raw.items():
        info = table[name]
        if info.is_spatial:
            readable += 1
            c, h, w = info.output_shape
            assert h == w and h in sides, (name, info.output_shape)  # a square input gives a square grid
            shape = tuple(out.shape[1:])
            if info.layout == "nchw":
                assert shape == (c, h, w), name
            elif info.layout == "nhwc":
                assert shape == (h, w, c), name
            else:  # tokens: the patch grid, after the prefix tokens the model declares
                assert info.layout == "tokens" and shape[1] == c, name
                assert shape[0] - h * w in (0, getattr(lm.module, "num_prefix_tokens", 1)), name
        else:
            refused += 1
            why = table.refusal(name)
            assert why and "\n" not in why
            if len(out.shape) >= 3:  # a would-be map: the verb refuses it in one line naming one that works
                with pytest.raises(LayerError) as err:
                    check_layers(lm, [name])
                assert "\n" not in str(err.value) and repr(default_layer(lm)) in str(err.value)
    auto = default_layer(lm)
    assert table[auto].is_spatial and table[auto].output_shape[1] > 1
    assert readable > 5
    ex = cl.explain(lm, torch.randn(2, 3, size, size), method="gradcam", target=[1])
    assert ex.maps.shape == (1, 2, 1, size, size) and torch.isfinite(ex.maps).all()


def test_transformer_automatic_layers_are_the_ones_practitioners_use():
    vit = cl.load_model(_timm("vit_small_patch16_224", img_size=S), input_size=(3, S, S))
    assert default_layer(vit) == "blocks.11.norm1"
    tv_vit = cl.load_model(_tv("vit_b_16", image_size=32), input_size=(3, 32, 32))
    assert default_layer(tv_vit) == "encoder.layers.encoder_layer_11.ln_1"
    assert tv_vit.layers()["encoder.layers.encoder_layer_11.ln_1"].output_shape == (768, 2, 2)
    swin = cl.load_model(_tv("swin_t"), input_size=(3, S, S))
    assert default_layer(swin) == "features.7.1.norm1" and swin.layers()["features.7.1.norm1"].layout == "nhwc"
    dense = cl.load_model(_tv("densenet121"), input_size=(3, S, S))
    assert default_layer(dense) == "features"  # its last child features.norm5: the same tensor
    mvit = cl.load_model(_timm("mobilevitv2_050"), input_size=(3, 256, 256))
    assert default_layer(mvit) == "stages"  # a hybrid: its last stage, not a transformer block


def test_attention_internals_are_refused_not_misread():
    """The issue's case: ``blocks.11.attn.k_norm`` (heads x tokens x dim) was read as C x H x W."""
    lm = cl.load_model(_timm("vit_small_patch16_224", img_size=S), input_size=(3, S, S))
    with pytest.raises(LayerError, match=r"blocks\.11\.attn\.k_norm.*cannot be read as a spatial grid.*"
                                         r"try 'blocks\.11\.norm1'"):
        cl.explain(lm, torch.randn(1, 3, S, S), layer="blocks.11.attn.k_norm")


# -- agreement with pytorch-grad-cam ---------------------------------------------------------------

def _tokens(prefix: int, side: int):
    """pytorch-grad-cam's ViT ``reshape_transform``: drop the prefix tokens, tokens to a grid."""
    def transform(t):
        return t[:, prefix:].reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)
    return transform


def _nhwc(t):  # its Swin transform for channels-last stages
    return t.permute(0, 3, 1, 2)


#: name -> (pytorch-grad-cam's layer at the automatic layer, its reshape_transform)
ORACLE = {
    "timm:vit_small_patch16_224": ("blocks.11.norm1", _tokens(1, 14)),
    "timm:deit_small_patch16_224": ("blocks.11.norm1", _tokens(1, 14)),
    "timm:swin_tiny_patch4_window7_224": ("layers.3.blocks.1.norm1", _nhwc),
    "timm:convnext_tiny": ("stages.3", None),
    "torchvision:vit_b_16": ("encoder.layers.encoder_layer_11.ln_1", _tokens(1, 14)),
    "torchvision:swin_t": ("features.7.1.norm1", _nhwc),
    "torchvision:densenet121": ("features.norm5", None),
    "timm:mobilevitv2_050": ("stages", None),
}
FAST_ORACLE = {"timm:vit_small_patch16_224"}


def _saved(spec: str, tmp_path) -> str:
    """Random weights (a random head too: torchvision zeroes some) as safetensors in ``tmp_path``."""
    from safetensors.torch import save_file

    kind, name = spec.split(":")
    net = _timm(name) if kind == "timm" else _tv(name)
    torch.manual_seed(1)
    for m in net.modules():  # torchvision's ViT head starts at zero, which would make every map flat
        if isinstance(m, nn.Linear) and m.out_features == 1000:
            nn.init.normal_(m.weight, std=0.05)
            nn.init.normal_(m.bias, std=0.05)
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return str(path)


@pytest.mark.parametrize("spec", [k if k in FAST_ORACLE else pytest.param(k, marks=pytest.mark.slow) for k in ORACLE])
def test_gradient_cams_at_the_automatic_layer_agree_with_pytorch_grad_cam(spec, tmp_path):
    from pytorch_grad_cam import GradCAM, GradCAMElementWise, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    lm = cl.load_model(spec, weights=_saved(spec, tmp_path))
    layer, transform = ORACLE[spec]
    auto = default_layer(lm)
    # the same module, or a Sequential whose last child it is (the same tensor)
    assert lm.get_layer(auto) is lm.get_layer(layer) or list(lm.get_layer(auto).children())[-1] is lm.get_layer(layer)
    torch.manual_seed(2)
    x = torch.randn(2, *lm.config.input_size)
    with torch.no_grad():
        target = int(lm(x)[0].argmax())
    methods = [("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus), ("xgradcam", XGradCAM), ("layercam", LayerCAM),
               ("hirescam", HiResCAM), ("gradcamelementwise", GradCAMElementWise)]  # every gradient CAM
    ex = cl.explain(lm, x, method=[m for m, _ in methods], target=[target])
    for k, (_, oracle) in enumerate(methods):
        with oracle(model=lm.module, target_layers=[lm.get_layer(layer)], reshape_transform=transform) as cam:
            ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)] * 2)
        ours = ex.maps[k, :, 0].numpy()
        for i in range(2):
            assert ref[i].std() > 0 and ours[i].std() > 0
            r = np.corrcoef(ours[i].ravel(), ref[i].ravel())[0, 1]
            assert r >= 0.99, (spec, methods[k][0], i, r)


# -- detection and segmentation ---------------------------------------------------------------------

def test_detection_models_are_refused_in_one_line():
    with pytest.raises(ConvlensError, match="detection models .* not supported") as err:
        cl.load_model("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", pretrained=False)
    assert "\n" not in str(err.value)
    det = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
    with pytest.raises(ConvlensError, match="FasterRCNN is a detection model") as err:
        cl.load_model(det)
    assert "\n" not in str(err.value)


def test_segmentation_models_load_and_explain():
    from dataclasses import replace

    from convlens.lens.cam import Segmentation

    lm = cl.load_model("torchvision:lraspp_mobilenet_v3_large", pretrained=False)
    lm.config = replace(lm.config, input_size=(3, S, S))
    x = torch.randn(2, 3, S, S)
    assert lm.task == "segmentation" and lm.num_classes == 21 and lm.class_names[0] == "__background__"
    with torch.no_grad():
        raw = lm.raw(x)
        assert raw["out"].shape == (2, 21, S, S)
        assert torch.allclose(lm(x), raw["out"].mean(dim=(-2, -1)), atol=1e-5)  # the classification view
    assert len(lm.predict(x[0], top_k=3)[0].predictions) == 3
    assert default_layer(lm).startswith("backbone.")
    ex = cl.explain(lm, x, target=Segmentation(15, mask=np.ones((S, S), bool)))  # the mask target (methods)
    assert ex.maps.shape == (1, 2, 1, S, S)
    net = torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=3)
    live = cl.load_model(net, input_size=(3, 32, 32))
    assert live.task == "segmentation" and live.num_classes == 3 and default_layer(live) == "backbone.layer4"
    assert sorted(live.module.state_dict()) == sorted(net.state_dict())
