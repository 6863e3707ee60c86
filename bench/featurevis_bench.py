"""Activation maximization: convlens (8 channels in one batch) vs Lucent (one render per channel).

Same model (the built-in EfficientNet-Lite0), layer, steps, image size, learning
rate (Adam 0.05), parameterization (decorrelated Fourier + colour decorrelation)
and Lucent-style robustness transforms on both sides.  Lucent's ``render_vis``
gets the model's own normalisation (mean = std = 0.5) as its last transform
(``preprocess=False``: its built-in ``normalize()`` assumes ImageNet statistics).
Each side's final image is quantized to 8 bits and measured the same way (the
channel's mean activation on the clean image, no transforms).

    .venv/bin/python bench/featurevis_bench.py [--layer blocks.4] [--steps 128] [--channels 8]

Prints one line per comparison: what, ours, peer, ratio.  Lucent (``torch-lucent``,
the ``bench`` extra) is optional: without it, ours runs alone.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings

import torch


def lucent_available() -> bool:
    try:
        import lucent.optvis.render  # noqa: F401
    except Exception:  # ImportError, or an old kornia that fails to import
        return False
    return True


def run_lucent(lm, layer: str, channel: int, steps: int, size: int, seed: int) -> tuple[torch.Tensor, float]:
    """One Lucent render; returns its final image (1, 3, H, W) in [0, 1] and the seconds it took."""
    from lucent.optvis import objectives, param, render, transform

    torch.manual_seed(seed + channel)
    net = copy.deepcopy(lm.module)  # Lucent leaves its hooks on the model: give it a copy
    mean = torch.tensor(lm.config.mean).view(1, -1, 1, 1)
    std = torch.tensor(lm.config.std).view(1, -1, 1, 1)
    transforms = transform.standard_transforms.copy() + [lambda x: (x - mean) / std]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imgs = render.render_vis(net, objectives.channel(layer.replace(".", "_"), channel),
                                 lambda: param.image(size), transforms=transforms, thresholds=(steps,),
                                 preprocess=False, progress=False, show_image=False, fixed_image_size=None)
    dt = time.perf_counter() - t0
    img = torch.from_numpy(imgs[-1]).permute(0, 3, 1, 2).float()
    return img, dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layer", default="blocks.4")
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from convlens.lens.featurevis import activation_of, visualize
    from convlens.models import load_model

    lm = load_model()
    chans = list(range(args.channels))
    what = f"{args.layer} x{args.channels} channels, {args.steps} steps, {args.size}px, {args.threads} threads"
    print(f"featurevis bench: {what}; torch {torch.__version__}, cpu_count {os.cpu_count()}", flush=True)
    visualize(lm, args.layer, [0], steps=2)  # warm-up (allocator, kernels) outside the timing

    t0 = time.perf_counter()
    ours = visualize(lm, args.layer, chans, steps=args.steps, size=args.size, seed=args.seed, batch_size=len(chans))
    t_ours = time.perf_counter() - t0
    ours_act = ours.activations

    if not lucent_available():
        print("lucent not installed (pip install -e '.[bench]'): ours alone")
        print(f"{'time, all channels (s)':<40} ours {t_ours:8.2f}")
        for c, a in zip(chans, ours_act.tolist()):
            print(f"{f'activation ch {c}':<40} ours {a:8.2f}")
        return 0

    luc_imgs, luc_times = [], []
    for c in chans:
        img, dt = run_lucent(lm, args.layer, c, args.steps, args.size, args.seed)
        luc_imgs.append(img)
        luc_times.append(dt)
        print(f"  lucent channel {c}: {dt:.2f} s", file=sys.stderr, flush=True)
    luc = (torch.cat(luc_imgs).clamp(0, 1) * 255).round() / 255
    if luc.shape[-2:] != (lm.config.height, lm.config.width):
        luc = torch.nn.functional.interpolate(luc, size=(lm.config.height, lm.config.width), mode="bilinear")
    luc_act = activation_of(lm, args.layer, luc, chans)
    t_luc = sum(luc_times)

    print(f"{'what':<44} {'ours':>9} {'lucent':>9} {'ratio':>7}")
    print(f"{'time, ' + str(len(chans)) + ' channels (s)':<44} {t_ours:9.2f} {t_luc:9.2f} {t_ours / t_luc:7.3f}")
    print(f"{'time per channel (s)':<44} {t_ours / len(chans):9.2f} {t_luc / len(chans):9.2f} "
          f"{t_ours / t_luc:7.3f}")
    for c, a, b in zip(chans, ours_act.tolist(), luc_act.tolist()):
        print(f"{f'activation {args.layer} ch {c}':<44} {a:9.2f} {b:9.2f} {a / b if b else float('nan'):7.2f}")
    worst = min(a / b if b > 0 else float("inf") for a, b in zip(ours_act.tolist(), luc_act.tolist()))
    print(f"{'min activation ratio over channels':<44} {'':>9} {'':>9} {worst:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
