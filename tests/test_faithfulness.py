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
    ours = fa.impute(img[None], removed[None], noise=0, cycles=8)[0]
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


# -- speed work: folded batch norms, 'SAME' convolutions, deduplicated inputs, ROAD's agreement ------

class _Residual(nn.Module):
    """conv -> bn whose conv output also feeds a skip: that pair must not be folded."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def _bn_net():
    from timm.layers import BatchNormAct2d

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), BatchNormAct2d(8, act_layer=nn.ReLU6),
                        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), _Residual(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    for m in net.modules():  # running statistics far from (0, 1), so a wrong fold shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return net.eval()


def test_folded_copy_equals_the_original_and_leaves_it_untouched():
    from convlens.lens.folding import fold_batchnorm, inference_copy

    net = _bn_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ids = {k: id(v) for k, v in net.named_parameters()}
    grads = {k: v.requires_grad for k, v in net.named_parameters()}
    folded = fold_batchnorm(net)
    assert folded is not None and folded is not net
    bns = [m for m in folded.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 1  # the two plain pairs folded; the residual's (conv output used twice) kept
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(folded(x), net(x), atol=1e-5, rtol=1e-5)
    # the user's module: same values, same parameter objects, flags, mode, no hooks added
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert ids == {k: id(v) for k, v in net.named_parameters()}
    assert grads == {k: v.requires_grad for k, v in net.named_parameters()}
    assert not net.training and isinstance(net[3], nn.BatchNorm2d)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    # training mode (batch statistics) or hooks on the module: no copy, the module itself
    net.train()
    assert inference_copy(net) is net
    net.eval()
    handle = net[2].register_forward_hook(lambda *a: None)
    try:
        assert inference_copy(net) is net
    finally:
        handle.remove()
    assert inference_copy(net) is not net


@pytest.mark.parametrize("size", [(16, 16), (17, 17), (16, 21), (15, 10)])
def test_same_padding_convolutions_run_without_padding_their_input(size):
    """timm's Conv2dSame (TensorFlow 'SAME', as in every tf_ model) becomes SamePadConv in the copy:
    the same outputs for even, odd and rectangular inputs (uneven padding on either axis), strides 1
    and 2, depthwise and dense, kernels 3 and 5; the user's module keeps its Conv2dSame."""
    from timm.layers import Conv2dSame

    from convlens.lens.folding import SamePadConv, inference_copy

    torch.manual_seed(0)
    net = nn.Sequential(Conv2dSame(3, 8, 3, stride=2, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        Conv2dSame(8, 8, 5, stride=2, groups=8), Conv2dSame(8, 8, 3, stride=1),
                        Conv2dSame(8, 4, (3, 5), stride=(2, 1)), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    net[1].running_mean.uniform_(-1, 1)
    copy_ = inference_copy(net)
    assert copy_ is not net
    assert [type(m) for m in copy_.modules() if isinstance(m, nn.Conv2d)] == [SamePadConv] * 4
    assert sum(type(m) is Conv2dSame for m in net.modules()) == 4
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert torch.allclose(copy_(x), net(x), atol=1e-5, rtol=1e-5)


def test_inference_copy_follows_changes_of_the_module():
    from convlens.lens.folding import inference_copy

    net = _bn_net()
    x = torch.randn(2, 3, 16, 16)
    first = inference_copy(net)
    assert inference_copy(net) is first  # cached
    with torch.no_grad():
        net[3].running_mean.add_(0.5)  # in place, as training or load_state_dict would
        copy_ = inference_copy(net)
        assert copy_ is not first
        assert torch.allclose(copy_(x), net(x), atol=1e-5, rtol=1e-5)


def test_unique_rows_groups_exact_duplicates():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(5, 3, 8, 8, generator=g)
    b = a.clone()
    b[2, 0, 0, 0] += 1e-6  # one value apart: not a duplicate
    x = torch.cat([a, a[[0, 3]], b[2:3], torch.zeros(2, 3, 8, 8)])
    first, inverse = fa.unique_rows(x)
    assert torch.equal(x[first][inverse], x)
    assert first.numel() == 5 + 1 + 1  # a's rows, b[2], one zero row
    assert inverse[5] == inverse[0] and inverse[6] == inverse[3] and inverse[7] != inverse[2]


def _naive_curves(net, x, maps, t, steps, base, start):
    """The protocol written plainly: one input per image, curve and point, no deduplication."""
    N, C, H, W = x.shape
    ranks = fa.ranks_of(maps)
    counts = fa.step_counts(H * W, steps)
    de, ins = torch.zeros(N, len(counts)), torch.zeros(N, len(counts))
    with torch.no_grad():
        for i in range(N):
            for j, k in enumerate(counts):
                top = (ranks[i] < k).view(1, H, W)
                pd = net(torch.where(top, base[i], x[i])[None]).softmax(-1)[0, t[i]]
                pi = net(torch.where(top, x[i], start[i])[None]).softmax(-1)[0, t[i]]
                de[i, j], ins[i, j] = pd, pi
    return de, ins


@pytest.mark.parametrize("insert_from", ["baseline", "blur"])
def test_deduplicated_curves_equal_the_plain_protocol(setup, insert_from):
    net, x, maps, t = setup
    # the same image scored for two maps (as score does for several methods), and a repeated map
    xs, ms, ts = x[[0, 1, 0, 2, 1]], maps[[0, 1, 2, 2, 3]], t[[0, 1, 0, 2, 1]]
    fr, de, ins = fa.deletion_insertion(net, xs, ms, ts, steps=7, insert_from=insert_from, batch_size=6)
    base = torch.zeros_like(xs)
    start = base if insert_from == "baseline" else fa.blurred(xs)
    nde, nins = _naive_curves(net, xs, ms, ts, 7, base, start)
    assert torch.allclose(de, nde, atol=1e-6) and torch.allclose(ins, nins, atol=1e-6)
    # a per-image baseline (not shared) and steps=1 (no interior point)
    own = torch.rand_like(xs)
    fr1, de1, ins1 = fa.deletion_insertion(net, xs, ms, ts, steps=1, baseline=own, batch_size=3)
    nde1, nins1 = _naive_curves(net, xs, ms, ts, 1, own, own)
    assert fr1.tolist() == [0.0, 1.0]
    assert torch.allclose(de1, nde1, atol=1e-6) and torch.allclose(ins1, nins1, atol=1e-6)


def test_folded_forwards_give_the_same_curves():
    net = _bn_net()
    torch.manual_seed(1)
    x = torch.randn(3, 3, 16, 16)
    maps = torch.rand(3, 16, 16)
    t = torch.tensor([0, 3, 4])
    a = fa.deletion_insertion(net, x, maps, t, steps=5, fold=True)
    b = fa.deletion_insertion(net, x, maps, t, steps=5, fold=False)
    assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(a, b))
    ra = fa.road(net, x, maps, t, fractions=(0.3, 0.7), noise=0, fold=True)
    rb = fa.road(net, x, maps, t, fractions=(0.3, 0.7), noise=0, fold=False)
    assert torch.allclose(ra, rb, atol=1e-5)


def test_multigrid_converges_to_the_exact_solve():
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    g = torch.Generator().manual_seed(2)
    img = torch.rand(2, 3, 40, 36, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 36), indexing="ij")
    removed = torch.stack([((xx - 0.4) ** 2 + (yy - 0.5) ** 2) < 0.1,  # a blob (MoRF-like)
                           ((xx - 0.4) ** 2 + (yy - 0.5) ** 2) > 0.02])  # all but a blob (LeRF-like)
    theirs = torch.stack([NoisyLinearImputer(noise=0)(img[i], (~removed[i]).float()) for i in range(2)])
    errors = [(fa.impute(img, removed, noise=0, cycles=c) - theirs).abs().max().item() for c in (0, 2, 4, 10)]
    assert errors[-1] < 1e-4
    assert all(b < a for a, b in zip(errors, errors[1:]))  # every extra V-cycle brings it closer


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_agrees_with_grad_cam_on_the_builtin_model(builtin_model, sample_photos, order):
    """The default (full multigrid, no extra cycle) against pytorch-grad-cam's exact sparse solve, noise 0
    on both sides, per image and fraction; the fractions where the cascade this replaced needed the
    most iterations (2 conjugate-gradient iterations failed at 0.1 on coffee and 0.6 on rocket)."""
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from convlens.lens.cam import explain
    from convlens.lens.cam.verb import prepare

    x = prepare(builtin_model, [str(sample_photos[n]) for n in ("chelsea", "coffee", "rocket", "astronaut")]).batch
    ex = explain(builtin_model, x, method="gradcam")
    maps = ex.maps[0, :, 0].float()
    t = torch.tensor([s[0].index for s in ex.targets])
    module = builtin_model.module.eval()
    fracs = (0.1, 0.6, 0.9)
    ours = fa.road(module, x, maps, t, fractions=fracs, order=order, noise=0.0).numpy()
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in t]
    theirs = []
    peer = ROADMostRelevantFirst if order == "morf" else ROADLeastRelevantFirst
    for f in fracs:
        metric = peer(percentile=round(100 * (1 - f)))
        metric.perturbation.imputer.noise = 0.0
        theirs.append(metric(x, maps.numpy(), targets, module).ravel())
    assert np.abs(ours - np.stack(theirs, 1)).max() < 0.02
