"""Pixel attributions through Captum: saliency, SmoothGrad, Integrated Gradients, occlusion.

Captum does the attribution (we do not rewrite it); this module picks sensible
settings for image classifiers, batches images and targets, and reduces the
``(N, C, H, W)`` attributions to one ``(N, T, H, W)`` heatmap per target in
[0, 1]:

* ``saliency``  |gradient|, max over colour channels (Simonyan et al.);
* ``smoothgrad`` the same, averaged over noisy copies (sigma = 15% of the input range);
* ``ig``        Integrated Gradients from a black image, |attribution| summed over channels;
* ``occlusion`` the drop of the target score when a patch is greyed out (positive part).

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
>>> maps = attribute(net, torch.randn(1, 3, 16, 16), "saliency", torch.tensor([[1]]))
>>> tuple(maps.shape), float(maps.max())
((1, 1, 16, 16), 1.0)
"""

from __future__ import annotations

import torch
from torch import nn

PIXEL_METHODS = ("saliency", "smoothgrad", "ig", "occlusion")


def _normalize(maps: torch.Tensor) -> torch.Tensor:
    lo = maps.amin(dim=(-2, -1), keepdim=True)  # amin/amax: no index search, much faster than min/max
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - lo) / (hi - lo + 1e-12)


def attribute(model: nn.Module, x: torch.Tensor, method: str, targets: torch.Tensor, *,
              baseline: torch.Tensor | None = None, nt_samples: int = 16, ig_steps: int = 32,
              window: int | None = None, internal_batch_size: int = 64) -> torch.Tensor:
    """Heatmaps ``(N, T, H, W)`` in [0, 1] for ``targets`` ``(N, T)`` with a Captum method.

    ``baseline``: the reference input for IG and occlusion (a normalised black
    image for IG and the zero input, i.e. the mean colour, for occlusion, by default).
    """
    from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion, Saliency

    N, C, H, W = x.shape
    x = x.detach()
    out = []
    with torch.inference_mode(False), torch.enable_grad():
        for t in range(targets.shape[1]):
            tgt = targets[:, t].tolist()
            if method == "saliency":
                a = Saliency(model).attribute(x.clone().requires_grad_(True), target=tgt, abs=True)
                m = a.amax(1)
            elif method == "smoothgrad":
                sigma = 0.15 * float(x.max() - x.min())
                nt = NoiseTunnel(Saliency(model))
                a = nt.attribute(x.clone().requires_grad_(True), nt_type="smoothgrad", nt_samples=nt_samples,
                                 nt_samples_batch_size=max(1, internal_batch_size // max(N, 1)),
                                 stdevs=sigma, target=tgt, abs=True)
                m = a.amax(1)
            elif method == "ig":
                base = baseline if baseline is not None else torch.zeros_like(x)
                a = IntegratedGradients(model).attribute(
                    x.clone().requires_grad_(True), baselines=base, target=tgt, n_steps=ig_steps,
                    internal_batch_size=internal_batch_size)
                m = a.abs().sum(1)
            elif method == "occlusion":
                win = window or max(8, round(min(H, W) / 7))
                stride = max(1, win // 2)
                with torch.no_grad():
                    a = Occlusion(model).attribute(
                        x, sliding_window_shapes=(C, win, win), strides=(C, stride, stride),
                        baselines=0.0 if baseline is None else baseline, target=tgt,
                        perturbations_per_eval=max(1, internal_batch_size // max(N, 1)))
                m = a.sum(1).clamp(min=0)
            else:  # pragma: no cover - checked by the caller
                raise ValueError(method)
            out.append(_normalize(m.detach().float()))
    return torch.stack(out, dim=1)
