"""The CAM family's arithmetic: from activations (and gradients) to maps.

The formulas follow pytorch-grad-cam 1.5.7 (Jacob Gildenblat et al.) so the maps agree
with it; see each function.  Maps are computed for a batch of images and targets at once:
activations ``A (N, C, h, w)``, gradients ``G (N, T, C, h, w)``, result ``(N, T, h, w)``.
The perturbation CAMs rerun the model (Ablation-CAM only the part after the layer, through
:class:`~convlens.probe.Probe`'s ``replace``).

>>> import torch
>>> A, G = torch.rand(2, 4, 6, 6), torch.randn(2, 1, 4, 6, 6)
>>> tuple(grad_cam(A, G).shape)
(2, 1, 6, 6)
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import LayerError
from ...probe import Probe
from .registry import family

GRADIENT_CAMS = family("gradient")  # one shared backward of the target score at the layer
SECOND_ORDER_CAMS = family("second-order", "contrast")  # a backward of their own
FREE_CAMS = family("activation")
PERTURBATION_CAMS = family("perturbation")
CAM_METHODS = GRADIENT_CAMS + SECOND_ORDER_CAMS + FREE_CAMS + PERTURBATION_CAMS
#: methods whose map is a sum over channels of weighted activations, so ``eigen_smooth`` applies
SMOOTHABLE = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "gradcamelementwise", "shapleycam",
              "finercam", "scorecam", "ablationcam", "fem")
#: methods that are a first component already: ``eigen_smooth`` leaves them as they are
PROJECTIONS = ("eigencam", "eigengradcam", "kpcacam")


# -- gradient CAMs: (A (N,C,h,w), G (N,T,C,h,w)) -> weighted activations (N,T,C,h,w) ---------------

def _acts(A: torch.Tensor) -> torch.Tensor:
    return A.detach().float().unsqueeze(1)  # (N, 1, C, h, w)


def weighted_grad_cam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Grad-CAM: channel weights = spatial mean of the gradient."""
    return G.mean(dim=(-2, -1), keepdim=True) * _acts(A)


def weighted_grad_cam_pp(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (pytorch-grad-cam's closed form with exp of the score dropped)."""
    a = _acts(A)
    g2 = G * G
    g3 = g2 * G
    sum_a = a.sum(dim=(-2, -1), keepdim=True)
    aij = g2 / (2 * g2 + sum_a * g3 + 1e-6)
    aij = torch.where(G != 0, aij, torch.zeros_like(aij))
    return (G.clamp(min=0) * aij).sum(dim=(-2, -1), keepdim=True) * a


def weighted_xgrad_cam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM: weights = sum(G * A) / sum(A)."""
    a = _acts(A)
    sum_a = a.sum(dim=(-2, -1), keepdim=True)
    return (G * a / (sum_a + 1e-7)).sum(dim=(-2, -1), keepdim=True) * a


def weighted_hires_cam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """HiResCAM: element-wise gradient x activation."""
    return G * _acts(A)


def weighted_layer_cam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """LayerCAM: element-wise ReLU(gradient) x activation."""
    return G.clamp(min=0) * _acts(A)


def weighted_elementwise(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Grad-CAM element-wise: ReLU(gradient x activation), element by element."""
    return (G * _acts(A)).clamp(min=0)


def reduce_channels(X: torch.Tensor, eigen_smooth: bool = False) -> torch.Tensor:
    """Weighted activations ``(..., C, h, w)`` to raw maps ``(..., h, w)``: their sum over channels,
    or with ``eigen_smooth`` their oriented first principal component (pytorch-grad-cam's option)."""
    return first_component(X) if eigen_smooth else X.sum(-3)


def grad_cam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Grad-CAM raw maps ``(N, T, h, w)``, before ReLU."""
    return weighted_grad_cam(A, G).sum(2)


def grad_cam_pp(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ raw maps."""
    return weighted_grad_cam_pp(A, G).sum(2)


def xgrad_cam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM raw maps."""
    return weighted_xgrad_cam(A, G).sum(2)


def hires_cam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """HiResCAM raw maps."""
    return weighted_hires_cam(A, G).sum(2)


def layer_cam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """LayerCAM raw maps."""
    return weighted_layer_cam(A, G).sum(2)


def orient(proj: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``proj`` ``(B, n)`` with each row's sign chosen so that it correlates positively (or not
    negatively) with ``reference`` ``(B, n)``.

    A principal component's sign is arbitrary (LAPACK builds differ: torch's SVD and NumPy's
    give opposite signs on some inputs), and after the ReLU of a CAM the two signs give two
    different maps.  The projection is centred, so the sign of its dot product with the
    reference is the sign of their correlation; a zero correlation keeps the sign as it is.
    """
    dot = (proj * (reference - reference.mean(dim=-1, keepdim=True))).sum(-1, keepdim=True)
    return torch.where(dot < 0, -proj, proj)


def first_component(X: torch.Tensor) -> torch.Tensor:
    """Projection of ``(..., C, h, w)`` maps on their first principal component: ``(..., h, w)``,
    oriented.

    Like pytorch-grad-cam's ``get_2d_projection``: pixels are samples, channels
    features, centred per channel; batched SVD in float64.  Unlike it, the sign is fixed:
    the projection correlates positively with the channel sum of ``X`` (the activation for
    Eigen-CAM, activation x gradient for Eigen-Grad-CAM), see :func:`orient`.  So the map is the
    same whatever the LAPACK, and it is pytorch-grad-cam's map or the one of the opposite sign.
    """
    lead, (C, h, w) = X.shape[:-3], X.shape[-3:]
    M = torch.nan_to_num(X.detach().double()).reshape(-1, C, h * w).transpose(1, 2)  # (B, hw, C)
    total = M.sum(-1)  # (B, hw): the channel sum, before centring
    M = M - M.mean(dim=1, keepdim=True)
    _, _, Vh = torch.linalg.svd(M, full_matrices=False)
    proj = (M @ Vh[:, 0, :].unsqueeze(-1))[..., 0]  # (B, hw)
    return orient(proj, total).reshape(*lead, h, w).float()


def kernel_component(A: torch.Tensor, kernel: str = "sigmoid", gamma: float | None = None) -> torch.Tensor:
    """KPCA-CAM's projection ``(N, h, w)``: the first kernel principal component of the centred
    pixels (scikit-learn's ``KernelPCA``, as pytorch-grad-cam), oriented as :func:`first_component`."""
    from sklearn.decomposition import KernelPCA  # ~1 s to import: only when KPCA-CAM runs

    N, C, h, w = A.shape
    M = torch.nan_to_num(A.detach().double()).reshape(N, C, h * w).transpose(1, 2).cpu().numpy()
    total = torch.from_numpy(M.sum(-1))
    out = []
    for m in M:
        m = m - m.mean(axis=0)
        out.append(torch.from_numpy(KernelPCA(n_components=1, kernel=kernel, gamma=gamma).fit_transform(m)[:, 0]))
    proj = orient(torch.stack(out), total)
    return proj.reshape(N, h, w).float().to(A.device)


def fem_weights(A: torch.Tensor, k: float = 2.0) -> torch.Tensor:
    """FEM's channel weights ``(N, C)``: the share of each channel's pixels above its mean + k std."""
    a = A.detach().float()
    mean = a.mean(dim=(-2, -1), keepdim=True)
    std = a.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return (a > mean + k * std).float().mean(dim=(-2, -1))


def eigen_grad_cam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Eigen-Grad-CAM: oriented first principal component of gradient x activation."""
    return first_component(G * _acts(A))


def eigen_cam(A: torch.Tensor, T: int) -> torch.Tensor:
    """Eigen-CAM: oriented first principal component of the activations (class-independent)."""
    return first_component(A.detach().float()).unsqueeze(1).expand(-1, T, -1, -1)


#: gradient CAMs as weighted activations (N,T,C,h,w); Eigen-Grad-CAM is a projection of its own
WEIGHTED: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "gradcam": weighted_grad_cam, "gradcam++": weighted_grad_cam_pp, "xgradcam": weighted_xgrad_cam,
    "hirescam": weighted_hires_cam, "layercam": weighted_layer_cam, "gradcamelementwise": weighted_elementwise,
}
GRADIENT_FORMULAS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    **{name: (lambda A, G, f=f: f(A, G).sum(2)) for name, f in WEIGHTED.items()}, "eigengradcam": eigen_grad_cam,
}


# -- normalisation and upsampling ------------------------------------------------------------

def normalize_maps(cam: torch.Tensor, relu: bool = True) -> torch.Tensor:
    """ReLU, then min-max each map (last two dims) to [0, 1] (pytorch-grad-cam's ``scale_cam_image``)."""
    if relu:
        cam = cam.clamp(min=0)
    # amin/amax: 30x faster than min/max with indices on (32, 1, 224, 224) maps (2 CPU threads)
    lo = cam.amin(dim=(-2, -1), keepdim=True)
    hi = cam.amax(dim=(-2, -1), keepdim=True) - lo
    return (cam - lo) / (hi + 1e-7)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (half-pixel centres, like OpenCV's resize) of ``(N, T, h, w)`` maps to ``size``."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    N, T = maps.shape[:2]
    up = F.interpolate(maps.reshape(N * T, 1, *maps.shape[-2:]), size=size, mode="bilinear", align_corners=False)
    return up.reshape(N, T, *size)


# -- perturbation CAMs ---------------------------------------------------------------------

def select_channels(rank: torch.Tensor, k: int | None) -> torch.Tensor:
    """Boolean (N, C): the top-k channels by ``rank`` per image (all if k is None or >= C)."""
    N, C = rank.shape
    if k is None or k >= C:
        return torch.ones(N, C, dtype=torch.bool, device=rank.device)
    idx = rank.topk(k, dim=1).indices
    return torch.zeros(N, C, dtype=torch.bool, device=rank.device).scatter_(1, idx, True)


#: ``score(output, rows) -> (n, T)``: the target scores of the images ``rows`` (None: all) from the
#: model's output for them (see :class:`~convlens.lens.cam.objectives.Columns`)
Scorer = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@torch.inference_mode()
def score_cam(model: nn.Module, x: torch.Tensor, A: torch.Tensor, score: Scorer, T: int,
              selected: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Score-CAM's channel weights ``(N, T, C)``: softmax over channels of the target score on
    image x mask_c.

    ``mask_c`` is channel c upsampled to the input (bilinear, corners aligned, as
    pytorch-grad-cam does) and min-max normalised.  Only ``selected`` (N, C)
    channels are evaluated; the others get weight 0.  Channels with a constant
    map give an all-zero mask, hence the same score: it is computed once per image.
    Masked inputs of all images and channels are flattened and run in batches
    of ``batch_size``.
    """
    N, C, h, w = A.shape
    H, W = x.shape[-2:]
    A = A.detach().float()
    const = (A.amax(dim=(-2, -1)) - A.amin(dim=(-2, -1))) == 0  # (N, C)
    scores = torch.full((N, C, T), float("-inf"), device=A.device)
    todo = selected & ~const
    zero_sel = selected & const
    if zero_sel.any():
        rows = zero_sel.any(dim=1).nonzero(as_tuple=True)[0]
        s0 = score(model(torch.zeros_like(x[rows])).float(), rows)  # the masked input is exactly zero
        s0_full = torch.zeros(N, T, device=A.device)
        s0_full[rows] = s0.float()
        scores = torch.where(zero_sel.unsqueeze(-1), s0_full.unsqueeze(1).expand(N, C, T), scores)
    img_idx, ch_idx = todo.nonzero(as_tuple=True)
    for start in range(0, img_idx.numel(), batch_size):
        ii, cc = img_idx[start:start + batch_size], ch_idx[start:start + batch_size]
        m = F.interpolate(A[ii, cc].unsqueeze(1), size=(H, W), mode="bilinear", align_corners=True)
        lo, hi = m.amin(dim=(-2, -1), keepdim=True), m.amax(dim=(-2, -1), keepdim=True)
        m = (m - lo) / (hi - lo + 1e-8)
        scores[ii, cc] = score(model(x[ii] * m).float(), ii).float()
    weights = torch.softmax(scores, dim=1)  # over channels; unevaluated (-inf) get 0
    return torch.nan_to_num(weights, nan=0.0).transpose(1, 2)


@torch.inference_mode()
def ablation_cam(model: nn.Module, layer: str, x: torch.Tensor, A: torch.Tensor, output: torch.Tensor,
                 score: Scorer, selected: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Ablation-CAM's channel weights ``(N, T, C)``: relative drop of the target score when a
    channel is ablated.

    As pytorch-grad-cam: the channel is set to 0 when the activation's minimum is
    0 (ReLU outputs), else to ``min - 1e7``; unselected channels weigh 0.  Only the
    part of the network after ``layer`` is recomputed: the ablated activations of
    one image are injected at the layer while the layers before it run on that
    single image (batch 1, broadcast); if the model cannot broadcast that way
    (checked against the unablated output) the whole network is run per batch.
    """
    N, C, h, w = A.shape
    A = A.detach()
    orig = score(output.detach().float(), None).float()  # (N, T)
    T = orig.shape[1]
    ablated = orig.unsqueeze(1).expand(N, C, T).clone()  # unselected: no drop
    broadcast_ok: bool | None = None
    for i in range(N):  # each image: big batches of ablations
        chans = selected[i].nonzero(as_tuple=True)[0]
        a = A[i]
        value = 0.0 if float(a.min()) == 0.0 else float(a.min()) - 1e7
        for start in range(0, chans.numel(), batch_size):
            cc = chans[start:start + batch_size]
            P = cc.numel()
            batch = a.unsqueeze(0).repeat(P + 1, 1, 1, 1)  # last row: unablated (a check)
            batch[torch.arange(P, device=a.device), cc] = value
            out = None
            if broadcast_ok is not False:
                out = inject(model, layer, x[i:i + 1], batch)
                ok = (out is not None and out.shape[0] == P + 1
                      and torch.allclose(out[-1].float(), output[i].float(), rtol=1e-3, atol=1e-3))
                if broadcast_ok is None:
                    broadcast_ok = ok
                if not ok:
                    broadcast_ok, out = False, None
            if out is None:
                out = inject(model, layer, x[i:i + 1].expand(P + 1, *x.shape[1:]), batch)
            rows = torch.full((P,), i, dtype=torch.long, device=a.device)
            ablated[i, cc] = score(out[:P].float(), rows).float()
    return ((orig.unsqueeze(1) - ablated) / orig.unsqueeze(1)).transpose(1, 2)


def inject(model: nn.Module, layer: str, x: torch.Tensor, replacement: torch.Tensor) -> torch.Tensor | None:
    """Run ``model(x)`` with ``layer``'s output replaced; None if the model rejects the shapes."""
    try:
        with Probe(model, [layer], replace=lambda _n, _o: replacement.clone()) as probe:
            out = probe.run(x)
    except (RuntimeError, LayerError):
        return None
    return out if isinstance(out, torch.Tensor) and out.ndim == 2 else None


def scale_maps(per_layer: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Raw maps ``(N, T, h, w)`` per layer to heatmaps on ``size``: ReLU and min-max each layer's maps,
    upsample, average over layers, min-max again (as pytorch-grad-cam does)."""
    ups = [upsample(normalize_maps(c.float()), size) for c in per_layer]
    mean = ups[0] if len(ups) == 1 else torch.stack(ups).mean(0)
    return normalize_maps(mean, relu=False)
