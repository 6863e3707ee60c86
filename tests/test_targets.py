"""Targets other than a class logit, against pytorch-grad-cam's target classes (r >= 0.99).

Softmax probability (``ClassifierOutputSoftmaxTarget``), a one-logit binary model
(``BinaryClassifierOutputTarget``), raw outputs (``RawScoresOutputTarget``), a segmentation
model's class over a mask (``SemanticSegmentationTarget``, torchvision LRASPP), similarity to an
embedding (PGC's tutorial ``SimilarityToConceptTarget``) and "A vs B" (a logit-difference
callable, which PGC takes as a target); the string syntax of the CLI; one-line refusals.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import convlens as cl
from convlens.errors import ConvlensError
from convlens.lens.cam import Embedding, RawOutput, Segmentation, Sigmoid, Softmax, Versus, explain
from convlens.lens.cam.targets import parse_target, target_spec
from convlens.models import wrap_module
from pgc_support import pearson

warnings.filterwarnings("ignore")
pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import (  # noqa: E402
    BinaryClassifierOutputTarget,
    ClassifierOutputSoftmaxTarget,
    RawScoresOutputTarget,
    SemanticSegmentationTarget,
)

METHODS = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "layercam": pgc.LayerCAM,
           "hirescam": pgc.HiResCAM}


def _agree(lm, x, layer_name, target, pgc_targets, methods=METHODS, module=None):
    ex = explain(lm, x, method=list(methods), target=target, layer=layer_name)
    net = module if module is not None else lm.module
    layer = dict(lm.module.named_modules())[layer_name]  # the same module inside a wrapper
    for m, cls in methods.items():
        with cls(net, [layer]) as cam:
            theirs = cam(x, pgc_targets)
        ours = ex[m].heatmaps[:, 0].numpy()
        for i in range(x.shape[0]):
            assert float(np.ptp(theirs[i])) > 0, f"{m}: PGC's map is flat, the comparison would be void"
            r = pearson(ours[i], theirs[i])
            assert r >= 0.99, f"{m} image {i}: r = {r:.4f}"
    return ex


@pytest.fixture(scope="module")
def resnet():
    import torchvision

    torch.manual_seed(0)
    return wrap_module(torchvision.models.resnet18().eval(), input_size=(3, 96, 96))


def _small(out_features):
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, out_features)).eval()


def test_softmax_probability_agrees(resnet):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        top = resnet.module(x).argmax(1).tolist()
    ex = _agree(resnet, x, "layer4", Softmax(None), [ClassifierOutputSoftmaxTarget(k) for k in top])
    with torch.no_grad():
        probs = torch.softmax(resnet.module(x), -1)
    assert ex.targets[0][0].probability == pytest.approx(float(probs[0, top[0]]), rel=1e-4)
    # the label or index spelling
    k = top[0]
    a = explain(resnet, x, target=Softmax(k), layer="layer4")
    b = explain(resnet, x, target=f"softmax:{k}", layer="layer4")
    assert torch.equal(a.maps, b.maps)


@pytest.mark.parametrize("positive", [True, False])
def test_sigmoid_binary_model_agrees(positive):
    lm = wrap_module(_small(1), input_size=(3, 32, 32))
    torch.manual_seed(2)
    x = torch.randn(2, 3, 32, 32)
    ex = _agree(lm, x, "2", Sigmoid(positive), [BinaryClassifierOutputTarget(int(positive))] * 2)
    with torch.no_grad():
        z = float(lm.module(x[:1]).squeeze())
    p = 1 / (1 + np.exp(-z))
    assert ex.targets[0][0].probability == pytest.approx(p if positive else 1 - p, rel=1e-4)
    assert ex.targets[0][0].label.startswith("positive" if positive else "negative")


def test_sigmoid_on_a_multi_class_model_is_refused(resnet):
    with pytest.raises(ConvlensError, match="needs a model with one output"):
        explain(resnet, torch.randn(1, 3, 96, 96), target="sigmoid", layer="layer4")


def test_raw_outputs_agree_for_a_regression_model():
    lm = wrap_module(_small(1), input_size=(3, 32, 32))
    torch.manual_seed(3)
    x = torch.randn(2, 3, 32, 32)
    ex = _agree(lm, x, "2", RawOutput(), [RawScoresOutputTarget()] * 2)
    assert ex.targets[0][0].label == "raw output" and ex.title(0, 0) == "raw output"
    assert ex.targets[0][0].probability != ex.targets[0][0].probability  # NaN: no probability to show


def test_a_versus_b_is_the_logit_difference(resnet):
    torch.manual_seed(5)
    x = torch.randn(2, 3, 96, 96)
    names = resnet.class_names
    a, b = names.index(next(n for n in names if n.startswith("tabby"))), names.index("bull mastiff")
    ex = _agree(resnet, x, "layer4", "tabby cat vs bull mastiff", [lambda o: o[a] - o[b]] * 2)
    assert ex.targets[0][0].label == "tabby vs bull mastiff" and ex.targets[0][0].index == a
    with torch.no_grad():
        z = resnet.module(x[:1])[0]
    assert ex.targets[0][0].probability == pytest.approx(float(torch.sigmoid(z[a] - z[b])), rel=1e-4)
    assert torch.equal(ex["gradcam"].maps, explain(resnet, x, target=Versus(a, b), layer="layer4").maps)


class _Out(nn.Module):
    """PGC's tutorial wrapper: a torchvision segmentation model's ``["out"]``."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)["out"]


@pytest.fixture(scope="module", params=["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
def lraspp(request):
    import torchvision

    torch.manual_seed(0)
    net = getattr(torchvision.models.segmentation, request.param)(weights=None, weights_backbone=None,
                                                                  num_classes=5).eval()
    return wrap_module(net, input_size=(3, 96, 96), class_names=["background", "cat", "dog", "car", "tree"])


def test_segmentation_class_over_a_mask_agrees(lraspp):
    torch.manual_seed(6)
    x = torch.randn(1, 3, 96, 96)
    wrapped = _Out(lraspp.module)
    with torch.no_grad():
        out = wrapped(x)[0]
    k = int(out.argmax(0).flatten().mode().values)  # the class predicted most: its predicted pixels
    mask = (out.argmax(0) == k).float().numpy()
    _agree(lraspp, x, "backbone.16", Segmentation(k), [SemanticSegmentationTarget(k, mask)],
           methods={"gradcam": pgc.GradCAM, "hirescam": pgc.HiResCAM}, module=wrapped)
    # a mask of the user's: the left half, for another class
    half = np.zeros((96, 96), np.float32)
    half[:, :48] = 1
    other = (k + 1) % 5
    ex = _agree(lraspp, x, "backbone.16", Segmentation(other, mask=half), [SemanticSegmentationTarget(other, half)],
                methods={"gradcam": pgc.GradCAM}, module=wrapped)
    assert ex.targets[0][0].label == f"{lraspp.class_names[other]} (mask)"
    # the string form picks the predicted pixels; a class with none is refused in one line
    assert torch.equal(explain(lraspp, x, target=f"seg:{k}", layer="backbone.16").maps,
                       explain(lraspp, x, target=Segmentation(k), layer="backbone.16").maps)
    absent = next(c for c in range(5) if not (out.argmax(0) == c).any())
    with pytest.raises(ConvlensError, match="no pixel of image 0 is predicted as"):
        explain(lraspp, x, target=Segmentation(absent), layer="backbone.16")
    with pytest.raises(ConvlensError, match="not class scores"):  # a class target: one line (capture.py)
        explain(lraspp, x, target="cat", layer="backbone.16")


class _Similarity:
    """PGC's tutorial ``SimilarityToConceptTarget``."""

    def __init__(self, features):
        self.features = features

    def __call__(self, model_output):
        return torch.nn.CosineSimilarity(dim=0)(model_output, self.features)


def test_embedding_similarity_agrees(tmp_path):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    net.fc = nn.Identity()  # a feature extractor: (N, 512)
    lm = wrap_module(net.eval(), input_size=(3, 96, 96), class_names=[f"f{i}" for i in range(512)])
    torch.manual_seed(7)
    x = torch.randn(2, 3, 96, 96)
    ref = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        vec = net(ref)[0]
    ex = _agree(lm, x, "layer4", Embedding(vec), [_Similarity(vec)] * 2)
    assert ex.targets[0][0].label == "similarity to the reference"
    # the reference as an image: the model embeds it first
    from PIL import Image

    pic = tmp_path / "ref.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(pic)
    by_image = explain(lm, x, target=f"similar:{pic}", layer="layer4")
    with torch.no_grad():
        v2 = net(lm.preprocess([pic]))[0]
    assert torch.allclose(by_image.maps, explain(lm, x, target=Embedding(v2), layer="layer4").maps, atol=1e-5)


def test_target_strings_parse_to_the_target_objects(resnet):
    assert parse_target("softmax:tabby cat") == Softmax("tabby cat")
    assert parse_target("softmax:281") == Softmax(281)
    assert parse_target("sigmoid") == Sigmoid(True) and parse_target("sigmoid:0") == Sigmoid(False)
    assert parse_target("tabby cat vs bull mastiff") == Versus("tabby cat", "bull mastiff")
    assert parse_target("raw") == RawOutput()
    assert parse_target("seg:cat").cls == "cat" and parse_target("similar:a.jpg").reference == "a.jpg"
    assert parse_target("tabby cat") == "tabby cat"
    spec = target_spec(["top2", "softmax:1", "raw"], resnet.class_names)
    assert spec == [("top", 2), Softmax(1), RawOutput()]
    with pytest.raises(ConvlensError, match="sigmoid takes"):
        parse_target("sigmoid:maybe")
    with pytest.raises(ConvlensError, match="unknown class label"):
        explain(resnet, torch.randn(1, 3, 96, 96), target="softmax:no such class")
    assert callable(cl.Embedding) and cl.Softmax is Softmax


def test_cli_takes_the_target_syntax(tmp_path, capsys):
    import json

    from PIL import Image

    from convlens.cli import main

    pic = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 60, 3), dtype=np.uint8)).save(pic)
    code = main(["explain", str(pic), "--target", "tabby cat vs bull mastiff", "--target", "softmax:tabby cat",
                 "--method", "gradcam,fem", "--eigen-smooth", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    rows = json.loads(out.out)
    assert [(r["method"], r["target"]["label"]) for r in rows] == [
        ("gradcam", "tabby vs bull mastiff"), ("gradcam", "tabby, tabby cat"),
        ("fem", "tabby vs bull mastiff"), ("fem", "tabby, tabby cat")]
    code = main(["explain", str(pic), "--target", "sigmoid", "--json"])
    err = capsys.readouterr().err
    assert code == 2 and "needs a model with one output" in err and len(err.strip().splitlines()) == 1
