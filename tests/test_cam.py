"""explain(): results, targets, layers, geometry, hygiene and bad input (fast, mostly tiny models)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from torch import nn

from convlens.errors import LayerError, SpecError, TargetError
from convlens.lens.cam import Explanation, default_layer, explain
from convlens.models import wrap_module

GRADIENT_AND_FREE = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigengradcam", "eigencam"]


class Blob(nn.Module):
    """A tiny CNN whose class-1 logit is the mean of a bright-blob detector, so CAMs must find the blob."""

    def __init__(self, boom: bool = False):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(4, 4, 3, padding=1, stride=2), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)
        self.boom = boom
        with torch.no_grad():
            self.features[0].weight.zero_()
            self.features[0].bias.zero_()
            self.features[0].weight[:, :, 1, 1] = 1.0  # brightness
            self.features[0].bias.fill_(-1.5)  # only bright pixels pass
            self.features[2].weight.zero_()
            self.features[2].bias.zero_()
            self.features[2].weight[:, :, 1, 1] = torch.eye(4)
            self.fc.weight.zero_()
            self.fc.bias.zero_()
            self.fc.weight[1] = 1.0
            self.fc.bias[0] = 0.1

    def forward(self, x):
        f = self.features(x)
        if self.boom:
            raise RuntimeError("boom after the target layer")
        return self.fc(self.pool(f).flatten(1))


def blob_image(cx: int, cy: int, size: int = 32) -> np.ndarray:
    img = np.zeros((size, size, 3), dtype=np.uint8)
    img[cy - 3:cy + 3, cx - 3:cx + 3] = 255
    return img


@pytest.fixture(scope="module")
def tiny():
    return wrap_module(Blob().eval(), input_size=(3, 32, 32), mean=(0.0,) * 3, std=(1.0,) * 3,
                       class_names=["dark", "bright blob"])


def hook_count(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in module.modules())


def test_default_layer_and_blob_localisation(tiny):
    assert default_layer(tiny) == "features"  # TorchCAM picks the same
    imgs = [blob_image(8, 8), blob_image(24, 20)]
    ex = explain(tiny, imgs, method=GRADIENT_AND_FREE + ["scorecam", "ablationcam"], target="bright blob")
    assert isinstance(ex, Explanation) and ex.methods == GRADIENT_AND_FREE + ["scorecam", "ablationcam"]
    assert ex.maps.shape == (9, 2, 1, 32, 32)
    for m in ex.methods:
        e = ex[m]
        assert e.heatmaps.shape == (2, 1, 32, 32), m
        assert float(e.heatmaps.min()) >= 0 and float(e.heatmaps.max()) <= 1
        for i, (cx, cy) in enumerate([(8, 8), (24, 20)]):
            px, py = e.peak(i, 0)
            assert abs(px - cx) <= 4 and abs(py - cy) <= 4, (m, i, (px, py))
        assert e.targets[0][0].index == 1 and e.targets[0][0].label == "bright blob"


def test_targets_forms(builtin_model, sample_photos):
    cat = sample_photos["chelsea"]
    ex = explain(builtin_model, cat, target="top3")
    assert ex.heatmaps.shape == (1, 3, 224, 224)
    probs = [s.probability for s in ex.targets[0]]
    assert probs == sorted(probs, reverse=True)
    assert ex.targets[0][0].index in (281, 282, 285)  # tabby / tiger cat / Egyptian cat
    ex2 = explain(builtin_model, cat, target=["Tabby Cat", 282, "tabby, tabby cat"])
    assert [s.index for s in ex2.targets[0]] == [281, 282, 281]
    assert torch.allclose(ex2.heatmaps[0, 0], ex2.heatmaps[0, 2])
    default = explain(builtin_model, cat)  # default: the predicted class
    assert default.targets[0][0].index == ex.targets[0][0].index
    assert torch.allclose(default.heatmaps[0, 0], ex.heatmaps[0, 0], atol=1e-5)


def test_tensor_batch_input_and_original_geometry(builtin_model, sample_photos):
    from convlens.images import load_image

    path = sample_photos["coffee"]
    pil = load_image(path)
    w, h = pil.size  # 600 x 400
    from_path = explain(builtin_model, path, method="gradcam")
    batch = builtin_model.preprocess([path, path])
    from_tensor = explain(builtin_model, batch, method="gradcam")
    assert from_tensor.heatmaps.shape == (2, 1, 224, 224)
    assert torch.allclose(from_tensor.heatmaps[0], from_path.heatmaps[0], atol=1e-4)
    assert from_tensor.heatmap(0, 0).shape == (224, 224)  # no original: the input grid
    orig = from_path.heatmap(0, 0, size="original")
    assert orig.shape == (h, w) and orig.dtype == np.float32
    x0, y0, x1, y1 = builtin_model.config.crop_box(w, h)
    assert x0 > 10  # landscape: the centre crop cuts the sides off ...
    assert orig[:, : int(x0) - 1].max() == 0 and orig[:, int(x1) + 1:].max() == 0  # ... and they are 0
    assert orig.max() > 0.95
    px, py = from_path.peak(0, 0)
    assert orig[py, px] > 0.9  # the peak maps onto the original where the map is highest
    ov = from_path.overlay(0, 0)
    assert ov.size == (w, h)
    ov_t = from_tensor.overlay(1, 0, cmap="viridis")
    assert ov_t.size == (224, 224)
    d = from_path.to_dict()
    assert d["method"] == "gradcam" and d["layer"] == "bn2"
    assert d["images"][0]["targets"][0]["peak"] == [px, py]
    assert from_path._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


def test_several_layers_are_averaged(builtin_model, sample_photos):
    ex = explain(builtin_model, sample_photos["chelsea"], layer=["blocks.5", "bn2"])
    assert ex.layers == ["blocks.5", "bn2"]
    one = explain(builtin_model, sample_photos["chelsea"], layer="bn2")
    r = np.corrcoef(ex.heatmaps.flatten().numpy(), one.heatmaps.flatten().numpy())[0, 1]
    assert 0.3 < r < 0.9999  # related to the bn2 map, but not the same


def test_inplace_layer_matches_out_of_place_reference():
    """A ResNet block output modified in place later (out += identity; relu_) still gets correct gradients."""
    import copy

    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    lm = wrap_module(net, input_size=(3, 96, 96))
    x = torch.randn(2, 3, 96, 96)
    ex = explain(lm, x, layer="layer4.0.bn2", target=[3, 7])
    ref = copy.deepcopy(net)
    for m in ref.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    acts = {}

    def keep(_m, _i, o):  # keep bn2's own output; `out += identity` then works on a copy
        acts["a"] = o
        return o.clone()

    h = ref.layer4[0].bn2.register_forward_hook(keep)
    try:
        logits = ref(x)
    finally:
        h.remove()
    for t, cls in enumerate([3, 7]):
        g = torch.autograd.grad(logits[:, cls].sum(), acts["a"], retain_graph=True)[0]
        cam = (g.mean((2, 3), keepdim=True) * acts["a"]).sum(1).clamp(min=0)
        cam = cam - cam.flatten(1).min(1).values[:, None, None]
        cam = cam / (cam.flatten(1).max(1).values[:, None, None] + 1e-7)
        cam = torch.nn.functional.interpolate(cam[:, None], size=(96, 96), mode="bilinear", align_corners=False)[:, 0]
        cam = (cam - cam.amin((1, 2), keepdim=True)) / (cam.amax((1, 2), keepdim=True) + 1e-7)  # as pytorch-grad-cam
        assert torch.allclose(ex.heatmaps[:, t], cam.detach(), atol=1e-4)
    assert hook_count(net) == 0


class Gated(nn.Module):
    """The target's output is multiplied by a tensor made before it (as in squeeze-excite blocks):
    that tensor must be saved for the backward, which inference tensors cannot be."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        early = self.a(x)
        return self.fc((self.b(early) * early).mean((2, 3)))


def test_tensor_from_before_the_target_saved_for_backward():
    torch.manual_seed(0)
    net = Gated().eval()
    lm = wrap_module(net, input_size=(3, 16, 16), mean=(0.0,) * 3, std=(1.0,) * 3)
    x = torch.randn(2, 3, 16, 16)
    ex = explain(lm, x, layer="b", target=[2])
    acts = {}
    h = net.b.register_forward_hook(lambda _m, _i, o: acts.setdefault("b", o))
    try:
        logits = net(x)
    finally:
        h.remove()
    g = torch.autograd.grad(logits[:, 2].sum(), acts["b"])[0]
    cam = (g.mean((2, 3), keepdim=True) * acts["b"]).sum(1).clamp(min=0).detach()
    cam = cam - cam.flatten(1).min(1).values[:, None, None]
    cam = cam / (cam.flatten(1).max(1).values[:, None, None] + 1e-7)
    cam = (cam - cam.amin((1, 2), keepdim=True)) / (cam.amax((1, 2), keepdim=True) + 1e-7)  # as pytorch-grad-cam
    assert torch.allclose(ex.heatmaps[:, 0], cam, atol=1e-5)
    assert hook_count(net) == 0 and not torch.is_inference_mode_enabled() and torch.is_grad_enabled()


def _tensor_count() -> int:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_repeated_calls_leave_no_hooks_and_no_growth(tiny):
    module = tiny.module
    flags = [p.requires_grad for p in module.parameters()]
    module.train()  # mode must come back as it was
    img = blob_image(16, 16)
    methods = ["gradcam", "gradcam++", "eigencam", "ablationcam", "scorecam", "saliency"]
    explain(tiny, img, method=methods)
    gc.collect()
    before = _tensor_count()
    for i in range(200):
        explain(tiny, img, method=methods if i % 20 == 0 else "gradcam")
    gc.collect()
    after = _tensor_count()
    assert hook_count(module) == 0
    assert after - before <= 5, (before, after)
    assert module.training is True
    assert [p.requires_grad for p in module.parameters()] == flags
    assert all(p.grad is None for p in module.parameters())
    module.eval()


def test_builtin_leaves_no_hooks(builtin_model, sample_photos):
    for _ in range(3):
        explain(builtin_model, sample_photos["rocket"], method="gradcam,eigencam,saliency")
    assert hook_count(builtin_model.module) == 0
    assert not builtin_model.module.training
    assert all(p.requires_grad for p in builtin_model.module.parameters())
    assert torch.is_grad_enabled()


def test_exception_inside_call_leaves_no_hook():
    lm = wrap_module(Blob(boom=False).eval(), input_size=(3, 32, 32), class_names=["a", "b"])
    lm.module.boom = True
    with pytest.raises(RuntimeError, match="boom"):
        explain(lm, blob_image(8, 8), method="gradcam,eigencam", layer="features.3", target=1)
    assert hook_count(lm.module) == 0
    assert torch.is_grad_enabled()  # the grad mode switched on at the layer is restored


# -- bad input ---------------------------------------------------------------------------------

def test_unknown_method(tiny):
    with pytest.raises(SpecError, match=r"unknown method 'gradcm'.*did you mean: gradcam"):
        explain(tiny, blob_image(8, 8), method="gradcm")


def test_unknown_layer_names_closest(builtin_model):
    with pytest.raises(LayerError, match=r"unknown layer 'conv_haed'.*did you mean: .*conv_head"):
        explain(builtin_model, np.zeros((32, 32, 3), np.uint8), layer="conv_haed")


def test_layer_without_spatial_output(builtin_model):
    with pytest.raises(LayerError, match=r"layer 'classifier' has no spatial output"):
        explain(builtin_model, np.zeros((32, 32, 3), np.uint8), layer="classifier")
    with pytest.raises(LayerError, match=r"1x1"):
        explain(builtin_model, np.zeros((32, 32, 3), np.uint8), layer="global_pool.pool")


def test_bad_targets(builtin_model):
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(TargetError, match=r"class index 1000 is out of range"):
        explain(builtin_model, img, target=1000)
    with pytest.raises(TargetError, match=r"unknown class label 'bull mastif'.*did you mean: bull mastiff"):
        explain(builtin_model, img, target="bull mastif")
    with pytest.raises(TargetError, match=r"out of range"):
        explain(builtin_model, img, target=-1)


def test_model_without_conv_layer():
    mlp = wrap_module(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)), input_size=(3, 8, 8))
    with pytest.raises(LayerError, match=r"no convolutional layer"):
        explain(mlp, np.zeros((8, 8, 3), np.uint8))
    # pixel attributions need no layer
    ex = explain(mlp, np.zeros((8, 8, 3), np.uint8), method="saliency")
    assert ex.heatmaps.shape == (1, 1, 8, 8)


def test_bad_channels_and_batch(tiny):
    with pytest.raises(SpecError, match="channels"):
        explain(tiny, blob_image(8, 8), method="scorecam", channels="many")
    with pytest.raises(SpecError, match="channels"):
        explain(tiny, blob_image(8, 8), method="scorecam", channels=0)
    with pytest.raises(SpecError, match="batch_size"):
        explain(tiny, blob_image(8, 8), batch_size=0)


@pytest.mark.data
def test_dog_and_cat_peaks_on_both_png(builtin_model, photos):
    """The Grad-CAM paper's picture: bull mastiff (243) peaks on the dog, tabby cat (281) on the cat."""
    methods = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "scorecam", "ablationcam"]
    ex = explain(builtin_model, photos / "both.png", method=methods, target=["bull mastiff", "tabby cat"])
    assert [s.index for s in ex.targets[0]] == [243, 281]

    def on_dog(x, y):  # the dog stands upper middle (224 x 224 picture)
        return 70 <= x <= 170 and y <= 125

    def on_cat(x, y):  # the cat lies across the bottom, below the dog's paws
        return 30 <= x <= 215 and y >= 130 and not (80 <= x <= 135 and y <= 150)

    for m in ex.methods:
        e = ex[m]
        assert on_dog(*e.peak(0, 0)), (m, "dog", e.peak(0, 0))
        assert on_cat(*e.peak(0, 1)), (m, "cat", e.peak(0, 1))


# -- predict_explain ---------------------------------------------------------------------------

def test_predict_explain_matches_predict_and_explain(builtin_model, sample_photos):
    from convlens.lens import predict_explain

    paths = [str(sample_photos[n]) for n in ("chelsea", "coffee", "rocket")]
    preds, ex = predict_explain(builtin_model, paths, top_k=3, batch_size=2)
    want = builtin_model.predict(paths, top_k=3, batch_size=2)
    assert [p.to_dict() for p in preds] == [p.to_dict() for p in want]  # bit-identical probabilities
    ref = explain(builtin_model, paths, method="gradcam", target=None, batch_size=2)
    assert isinstance(ex, Explanation) and ex.methods == ["gradcam"] and ex.layers == ref.layers == ["bn2"]
    assert torch.equal(ex.maps, ref.maps)
    assert [[s.index for s in row] for row in ex.targets] == [[p.top.index] for p in preds]
    assert ex.to_dict() == ref.to_dict()
    default = explain(builtin_model, paths)  # explain's own batching: the same maps within float noise
    assert torch.allclose(ex.maps, default.maps, atol=1e-5)
    assert hook_count(builtin_model.module) == 0


def test_predict_explain_bad_input(tiny):
    from convlens.lens import predict_explain

    with pytest.raises(SpecError, match="top_k must be at least 1") as info:
        predict_explain(tiny, blob_image(8, 8), top_k=0)
    assert info.value.param == "top_k"
    preds, ex = predict_explain(tiny, [blob_image(8, 8), blob_image(20, 20)], top_k=5)
    assert len(preds) == 2 and len(preds[0].predictions) == 2 and ex.heatmaps.shape == (2, 1, 32, 32)


# -- per-image targets -----------------------------------------------------------------------------

def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def test_per_image_targets_equal_the_same_classes_asked_for_all():
    lm = wrap_module(_small_net(), input_size=(3, 16, 16), class_names=list("abcd"))
    x = torch.randn(5, 3, 16, 16)
    methods = "gradcam,gradcam++,eigencam,scorecam,saliency"
    every = explain(lm, x, method=methods, target=[0, 1, 2, 3])
    rows = torch.tensor([[0, -1], [1, 1], [2, 3], [3, 0], [-1, -1]])
    pred = lm.probabilities(x).argmax(1)
    want = torch.where(rows >= 0, rows, pred[:, None])
    for form in (rows, rows.numpy(), rows.int()):
        ex = explain(lm, x, method=methods, target=form, batch_size=2)  # rows sliced per batch
        assert [[s.index for s in r] for r in ex.targets] == want.tolist()
        for i in range(5):
            for j in range(2):
                assert torch.allclose(ex.maps[:, i, j], every.maps[:, i, int(want[i, j])], atol=1e-5), (i, j)
                assert ex.targets[i][j].probability == pytest.approx(every.targets[i][int(want[i, j])].probability)
    # a 1-D tensor is a list of classes for every image, as a list is
    assert torch.equal(explain(lm, x, target=torch.tensor([1, 2])).maps, explain(lm, x, target=[1, 2]).maps)


def test_a_repeated_target_column_costs_no_second_backward(monkeypatch):
    from convlens.lens.cam import verb

    lm = wrap_module(_small_net(), input_size=(3, 16, 16), class_names=list("abcd"))
    x = torch.randn(3, 3, 16, 16)
    seen: list[int] = []
    real = verb._grads

    def counting(methods, output, acts, cols):
        seen.append(len(cols))
        return real(methods, output, acts, cols)

    monkeypatch.setattr(verb, "_grads", counting)
    ex = explain(lm, x, target=torch.full((3, 3), -1))  # the prediction three times: one backward
    assert seen == [1] and ex.heatmaps.shape == (3, 3, 16, 16)
    assert torch.equal(ex.heatmaps[:, 0], ex.heatmaps[:, 2])
    seen.clear()
    explain(lm, x, target=torch.tensor([[0, 1, 0], [0, 2, 0], [0, 3, 0]]))
    assert seen == [2]


def test_per_image_targets_predict_explain(tiny):
    from convlens.lens import predict_explain

    imgs = [blob_image(8, 8), blob_image(20, 20), np.zeros((32, 32, 3), np.uint8)]
    preds, ex = predict_explain(tiny, imgs, top_k=2, target=np.array([[-1, 0], [-1, 1], [-1, 1]]), batch_size=2)
    ref = explain(tiny, imgs, target=[0, 1])
    assert [[s.index for s in r] for r in ex.targets] == [[p.top.index, c] for p, c in zip(preds, (0, 1, 1))]
    for i, c in enumerate((0, 1, 1)):
        assert torch.allclose(ex.heatmaps[i, 1], ref.heatmaps[i, c], atol=1e-6)
    assert hook_count(tiny.module) == 0


def test_predict_explain_takes_inputs_prepared_elsewhere(tiny):
    """The web server preprocesses uploads on its I/O threads and hands the verb the batch with the
    pictures it came from: the maps, names and sizes are those of explaining the pictures."""
    from PIL import Image

    from convlens.lens import predict_explain
    from convlens.lens.cam.verb import Inputs, prepare

    imgs = [Image.fromarray(blob_image(8, 8)), Image.fromarray(blob_image(20, 20))]
    direct_preds, direct = predict_explain(tiny, imgs, top_k=2)
    ready = prepare(tiny, imgs)
    inputs = Inputs(ready.batch, ["a.png", "b.png"], ready.sizes, list(imgs))
    preds, ex = predict_explain(tiny, inputs, top_k=2)
    assert [p.to_dict()["predictions"] for p in preds] == [p.to_dict()["predictions"] for p in direct_preds]
    assert torch.equal(ex.maps, direct.maps)
    assert ex.images == ["a.png", "b.png"] and ex.sizes == direct.sizes and ex.inputs is None
    assert ex.sources[0] is imgs[0]
    assert prepare(tiny, inputs) is inputs


def test_bad_per_image_targets(tiny):
    img = [blob_image(8, 8), blob_image(20, 20)]
    with pytest.raises(TargetError, match=r"per-image targets have 3 rows for 2 image\(s\)"):
        explain(tiny, img, target=torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(TargetError, match=r"class indices 0..1 or -1 .*got -2..0"):
        explain(tiny, img, target=torch.tensor([[0], [-2]]))
    with pytest.raises(TargetError, match=r"class indices 0..1 or -1 .*got 0..2"):
        explain(tiny, img, target=np.array([[0], [2]]))
    with pytest.raises(TargetError, match=r"must be class indices \(got a tensor of torch.float32\)"):
        explain(tiny, img, target=torch.zeros(2, 1))
    with pytest.raises(TargetError, match=r"must be class indices \(got an array of float64\)"):
        explain(tiny, img, target=np.zeros((2, 1)))
    with pytest.raises(TargetError, match=r"at least one column"):
        explain(tiny, img, target=torch.zeros(2, 0, dtype=torch.long))
    assert hook_count(tiny.module) == 0
