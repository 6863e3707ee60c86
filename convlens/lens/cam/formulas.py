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

GRADIENT_CAMS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigengradcam")
FREE_CAMS = ("eigencam",)
PERTURBATION_CAMS = ("scorecam", "ablationcam")
CAM_METHODS = GRADIENT_CAMS + FREE_CAMS + PERTURBATION_CAMS


# -- gradient CAMs: (A (N,C,h,w), G (N,T,C,h,w)) -> raw maps (N,T,h,w), before ReLU --------------

def _acts(A: torch.Tensor) -> torch.Tensor:
    return A.detach().float().unsqueeze(1)  # (N, 1, C, h, w)


def grad_cam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Grad-CAM: channel weights = spatial mean of the gradient."""
    w = G.mean(dim=(-2, -1), keepdim=True)
    return (w * _acts(A)).sum(2)


def grad_cam_pp(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (pytorch-grad-cam's closed form with exp of the score dropped)."""
    a = _acts(A)
    g2 = G * G
    g3 = g2 * G
    sum_a = a.sum(dim=(-2, -1), keepdim=True)
    aij = g2 / (2 * g2 + sum_a * g3 + 1e-6)
    aij = torch.where(G != 0, aij, torch.zeros_like(aij))
    w = (G.clamp(min=0) * aij).sum(dim=(-2, -1), keepdim=True)
    return (w * a).sum(2)


def xgrad_cam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM: weights = sum(G * A) / sum(A)."""
    a = _acts(A)
    sum_a = a.sum(dim=(-2, -1), keepdim=True)
    w = (G * a / (sum_a + 1e-7)).sum(dim=(-2, -1), keepdim=True)
    return (w * a).sum(2)


def hires_cam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """HiResCAM: element-wise gradient x activation, summed over channels."""
    return (G * _acts(A)).sum(2)


def layer_cam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """LayerCAM: element-wise ReLU(gradient) x activation, summed over channels."""
    return (G.clamp(min=0) * _acts(A)).sum(2)


def first_component(X: torch.Tensor) -> torch.Tensor:
    """Projection of ``(..., C, h, w)`` maps on their first principal component: ``(..., h, w)``.

    Like pytorch-grad-cam's ``get_2d_projection``: pixels are samples, channels
    features, centred per channel; batched SVD in float64 (sign as LAPACK gives it).
    """
    lead, (C, h, w) = X.shape[:-3], X.shape[-3:]
    M = torch.nan_to_num(X.detach().double()).reshape(-1, C, h * w).transpose(1, 2)  # (B, hw, C)
    M = M - M.mean(dim=1, keepdim=True)
    _, _, Vh = torch.linalg.svd(M, full_matrices=False)
    proj = M @ Vh[:, 0, :].unsqueeze(-1)  # (B, hw, 1)
    return proj.reshape(*lead, h, w).float()


def eigen_grad_cam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Eigen-Grad-CAM: first principal component of gradient x activation."""
    return first_component(G * _acts(A))


def eigen_cam(A: torch.Tensor, T: int) -> torch.Tensor:
    """Eigen-CAM: first principal component of the activations (class-independent)."""
    return first_component(A.detach().float()).unsqueeze(1).expand(-1, T, -1, -1)


GRADIENT_FORMULAS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "gradcam": grad_cam, "gradcam++": grad_cam_pp, "xgradcam": xgrad_cam,
    "hirescam": hires_cam, "layercam": layer_cam, "eigengradcam": eigen_grad_cam,
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


@torch.inference_mode()
def score_cam(model: nn.Module, x: torch.Tensor, A: torch.Tensor, targets: torch.Tensor,
              selected: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Score-CAM: weights = softmax over channels of the target score on image x mask_c.

    ``mask_c`` is channel c upsampled to the input (bilinear, corners aligned, as
    pytorch-grad-cam does) and min-max normalised.  Only ``selected`` (N, C)
    channels are evaluated; the others get weight 0.  Channels with a constant
    map give an all-zero mask, hence the same score: it is computed once.
    Masked inputs of all images and channels are flattened and run in batches
    of ``batch_size``.
    """
    N, C, h, w = A.shape
    H, W = x.shape[-2:]
    T = targets.shape[1]
    A = A.detach().float()
    const = (A.amax(dim=(-2, -1)) - A.amin(dim=(-2, -1))) == 0  # (N, C)
    scores = torch.full((N, C, T), float("-inf"), device=A.device)
    todo = selected & ~const
    zero_sel = selected & const
    if zero_sel.any():
        s0 = model(torch.zeros_like(x[:1])).float()  # the masked input is exactly zero
        s0_t = s0[0][targets]  # (N, T)
        scores = torch.where(zero_sel.unsqueeze(-1), s0_t.unsqueeze(1).expand(N, C, T), scores)
    img_idx, ch_idx = todo.nonzero(as_tuple=True)
    for start in range(0, img_idx.numel(), batch_size):
        ii, cc = img_idx[start:start + batch_size], ch_idx[start:start + batch_size]
        m = F.interpolate(A[ii, cc].unsqueeze(1), size=(H, W), mode="bilinear", align_corners=True)
        lo, hi = m.amin(dim=(-2, -1), keepdim=True), m.amax(dim=(-2, -1), keepdim=True)
        m = (m - lo) / (hi - lo + 1e-8)
        out = model(x[ii] * m).float()
        scores[ii, cc] = out.gather(1, targets[ii])
    weights = torch.softmax(scores, dim=1)  # over channels; unevaluated (-inf) get 0
    weights = torch.nan_to_num(weights, nan=0.0)
    return torch.einsum("nct,nchw->nthw", weights, A)


@torch.inference_mode()
def ablation_cam(model: nn.Module, layer: str, x: torch.Tensor, A: torch.Tensor, logits: torch.Tensor,
                 targets: torch.Tensor, selected: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Ablation-CAM: weights = relative drop of the target score when a channel is ablated.

    As pytorch-grad-cam: the channel is set to 0 when the activation's minimum is
    0 (ReLU outputs), else to ``min - 1e7``; unselected channels weigh 0.  Only the
    part of the network after ``layer`` is recomputed: the ablated activations of
    one image are injected at the layer while the layers before it run on that
    single image (batch 1, broadcast); if the model cannot broadcast that way
    (checked against the unablated scores) the whole network is run per batch.
    """
    N, C, h, w = A.shape
    T = targets.shape[1]
    A = A.detach()
    orig = logits.detach().float().gather(1, targets)  # (N, T)
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
                      and torch.allclose(out[-1].float(), logits[i].float(), rtol=1e-3, atol=1e-3))
                if broadcast_ok is None:
                    broadcast_ok = ok
                if not ok:
                    broadcast_ok, out = False, None
            if out is None:
                out = inject(model, layer, x[i:i + 1].expand(P + 1, *x.shape[1:]), batch)
            ablated[i, cc] = out[:P].float()[:, targets[i]]
    weights = (orig.unsqueeze(1) - ablated) / orig.unsqueeze(1)  # (N, C, T)
    return torch.einsum("nct,nchw->nthw", weights, A.float())


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
