"""CAM speed against the peers, one run: ours, each peer, ratio (one line per comparison).

    .venv/bin/python bench/cam_bench.py            # all comparisons (about 3-5 minutes on 2 cores)
    .venv/bin/python bench/cam_bench.py --quick    # throughput only (no Score-/Ablation-CAM)
    .venv/bin/python bench/cam_bench.py --only vit # ViT-S/16 and Swin-T only (Grad-CAM, rollout)

Throughput is images per second of the median of ``--repeats`` interleaved rounds after a warm-up
of every contender (the median: single runs on this shared 2-core box vary by 5-10%),
on 2 CPU threads (``torch.set_num_threads(2)``).  Score-CAM/Ablation-CAM of
pytorch-grad-cam are measured once on a single image (they take ~1 min).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from _common import timeit_many  # bench/ is on sys.path when run as a script

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"


def line(what: str, ours: float, peer_name: str, peer: float, unit: str, higher_is_better: bool = True) -> None:
    ratio = ours / peer if higher_is_better else peer / ours
    print(f"{what:<44} ours {ours:9.2f} {unit:<6} {peer_name:<22} {peer:9.2f} {unit:<6} ratio {ratio:6.2f}x",
          flush=True)


def pearson(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel())[0, 1])


def throughput(label: str, lm, plain, layer_name: str, batch: int, repeats: int) -> dict[str, float]:
    """Grad-CAM img/s of ours and each peer; ``plain`` is the same network as the user has it (NCHW).

    Ours runs ``lm`` (a LensModel stores its convolutions channels-last, models/layout.py). The
    forward-only baseline and the peers run ``plain``, the model as the user would hand it to them;
    the peers also run on ``lm.module`` (the same channels-last module as ours), and the plain
    forward on it too, so the lines show both what a user gets and where the gain comes from.
    """
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import GradCAM as TCGradCAM

    from convlens.lens.cam import explain

    torch.manual_seed(0)
    x = torch.randn(batch, *lm.config.input_size)
    with torch.inference_mode():
        pred = plain(x).argmax(1)
    tl = pred.tolist()

    def fwd(module):
        def run():
            with torch.inference_mode():
                module(x)
        return run

    def ours():
        explain(lm, x, method="gradcam", target=None, layer=layer_name, batch_size=batch)

    def captum(module):
        layer = dict(module.named_modules())[layer_name]
        return lambda: LayerGradCam(module, layer).attribute(x, target=tl, relu_attributions=True)

    def torchcam(module):
        def run():
            with TCGradCAM(module, target_layer=layer_name) as ex:
                scores = module(x)
                ex(tl, scores)
        return run

    def pgc(module):
        layer = dict(module.named_modules())[layer_name]

        def run():
            with GradCAM(module, [layer]) as cam:
                cam(x, [ClassifierOutputTarget(k) for k in tl])
        return run

    cl = lm.module
    fns = {"forward-only": fwd(plain), "convlens gradcam": ours, "captum LayerGradCam": captum(plain),
           "torchcam GradCAM": torchcam(plain), "pytorch-grad-cam GradCAM": pgc(plain),
           "forward-only, channels-last": fwd(cl), "captum, channels-last": captum(cl),
           "torchcam, channels-last": torchcam(cl)}
    # Interleaved rounds after a warm-up of every contender: timing one contender after the other
    # favoured whoever ran later (allocator and CPU warm-up made the first, forward-only, look up
    # to 1.5x slower than the same forward measured again at the end).
    out = {name: batch / t for name, t in timeit_many(fns, repeats).items()}
    what = f"Grad-CAM {label} b{batch} (img/s)"
    for peer in fns:
        if peer != "convlens gradcam":
            line(what, out["convlens gradcam"], peer, out[peer], "img/s")
    return out


def _tokens_to_grid(side: int):
    """pytorch-grad-cam's ViT ``reshape_transform`` as its tutorial writes it (class token dropped)."""
    def reshape_transform(tensor):
        result = tensor[:, 1:, :].reshape(tensor.size(0), side, side, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)
    return reshape_transform


def _nhwc_to_grid(tensor):
    """pytorch-grad-cam's reshape for timm's Swin, whose stages output (N, H, W, C)."""
    return tensor.permute(0, 3, 1, 2)


def transformer(label: str, lm, plain, layer_name: str, reshape, batch: int, repeats: int,
                attention: bool = False) -> None:
    """Grad-CAM on a timm transformer at its automatic layer: ours against pytorch-grad-cam as its
    users run it (the same layer, its ``reshape_transform``, on the model as timm builds it) and
    against the forward alone of the same module (cost: our time over the forward's); with
    ``attention``, attention rollout against the same forward too."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from convlens.lens.cam import default_layer, explain

    assert default_layer(lm) == layer_name, (default_layer(lm), layer_name)
    torch.manual_seed(0)
    x = torch.randn(batch, *lm.config.input_size)
    with torch.inference_mode():
        tl = plain(x).argmax(1).tolist()

    def fwd(module):
        def run():
            with torch.inference_mode():
                module(x)
        return run

    def pgc():
        layer = dict(plain.named_modules())[layer_name]

        def run():
            with GradCAM(plain, [layer], reshape_transform=reshape) as cam:
                cam(x, [ClassifierOutputTarget(k) for k in tl])
        return run

    fns = {"forward-only": fwd(lm.module),
           "convlens gradcam": lambda: explain(lm, x, method="gradcam", batch_size=batch),
           "pytorch-grad-cam GradCAM": pgc()}
    if attention:
        fns["convlens rollout"] = lambda: explain(lm, x, method="rollout", batch_size=batch)
    t = timeit_many(fns, repeats)
    what = f"Grad-CAM {label} b{batch} (img/s)"
    ours = batch / t["convlens gradcam"]
    line(what, ours, "pytorch-grad-cam GradCAM", batch / t["pytorch-grad-cam GradCAM"], "img/s")
    line(what, ours, "forward-only", batch / t["forward-only"], "img/s")
    print(f"{'  Grad-CAM cost over the forward alone':<44} {t['convlens gradcam'] / t['forward-only']:6.2f}x"
          "  (target <= 1.15x; >= 1.3x pytorch-grad-cam)", flush=True)
    if attention:
        line(f"rollout {label} b{batch} (img/s)", batch / t["convlens rollout"], "forward-only",
             batch / t["forward-only"], "img/s")
        print(f"{'  rollout cost over the forward alone':<44} {t['convlens rollout'] / t['forward-only']:6.2f}x"
              "  (target <= 1.2x)", flush=True)


def transformers(batch: int, repeats: int) -> None:
    """ViT-S/16 and Swin-T (timm, random weights: the speed does not depend on them)."""
    import timm

    from convlens.models import wrap_module

    for name, layer, reshape, attention in (
            ("vit_small_patch16_224", "blocks.11.norm1", _tokens_to_grid(14), True),
            ("swin_tiny_patch4_window7_224", "layers.3.blocks.1.norm1", _nhwc_to_grid, False)):
        torch.manual_seed(0)
        plain = timm.create_model(name, pretrained=False).eval()
        lm = wrap_module(copy.deepcopy(plain), input_size=(3, 224, 224), name=f"timm:{name}")
        transformer(name, lm, plain, layer, reshape, batch, repeats, attention=attention)


def five_cams(lm, batch: int, repeats: int) -> None:
    from convlens.lens.cam import explain

    torch.manual_seed(0)
    x = torch.randn(batch, *lm.config.input_size)
    fns = {"one": lambda: explain(lm, x, method="gradcam", batch_size=batch),
           "five": lambda: explain(lm, x, method="gradcam,gradcam++,xgradcam,hirescam,layercam",
                                   batch_size=batch)}
    med = timeit_many(fns, repeats)
    one, five = med["one"], med["five"]
    print(f"{'5 gradient CAMs vs 1 Grad-CAM, ' + lm.name + f' b{batch}':<44} ours {five:9.3f} s      "
          f"{'one gradcam':<22} {one:9.3f} s      cost   {five / one:6.2f}x", flush=True)


def perturbation(lm, image, method: str, peer_cls, channels) -> None:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from convlens.lens.cam import explain

    x = lm.preprocess([image])
    layer_name = "bn2"
    t = time.perf_counter()
    ex = explain(lm, x, method=method, layer=layer_name, channels=channels)
    ours = time.perf_counter() - t
    target = ex.targets[0][0].index
    layer = dict(lm.module.named_modules())[layer_name]
    with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bars
        t = time.perf_counter()
        with peer_cls(lm.module, [layer]) as cam:
            cam.batch_size = 32
            theirs = cam(x, [ClassifierOutputTarget(target)])
        peer = time.perf_counter() - t
    r = pearson(ex.heatmaps[0, 0].numpy(), theirs[0])
    what = f"{method} {lm.name} 1 image, channels={channels or 'default'} (s)"
    line(what, ours, "pytorch-grad-cam (all)", peer, "s", higher_is_better=False)
    print(f"{'  r to the exact all-channel map':<44} {r:.4f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--only", choices=("cnn", "vit"), default=None,
                    help="cnn: ResNet-50 and the built-in model; vit: ViT-S/16 and Swin-T at batch 8")
    ap.add_argument("--glibc-defaults", action="store_true",
                    help="glibc's own allocator policy (default: as `import convlens` sets it, see _common.py)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from _common import allocator

    print(allocator(), "(process-wide: every contender alike)")
    torch.set_num_threads(2)
    import torchvision

    from convlens.models import load_model, wrap_module

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    if args.only == "vit":
        transformers(8, args.repeats)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        return
    eff = load_model()
    eff_plain = copy.deepcopy(eff.module).to(memory_format=torch.contiguous_format)  # as timm builds it
    torch.manual_seed(0)
    r50_plain = torchvision.models.resnet50().eval()
    r50 = wrap_module(copy.deepcopy(r50_plain), name="resnet50")
    repeats = args.repeats
    throughput("resnet50", r50, r50_plain, "layer4", 16, repeats)
    throughput("effnet-lite0", eff, eff_plain, "bn2", 32, repeats)
    five_cams(eff, 32, repeats)
    if args.only is None:
        transformers(8, repeats)
    if args.quick:
        return
    from pytorch_grad_cam import AblationCAM, ScoreCAM

    image = PHOTOS / "both.png" if PHOTOS.is_dir() else None
    if image is None:
        from skimage import data

        image = data.chelsea()
    perturbation(eff, image, "scorecam", ScoreCAM, None)
    perturbation(eff, image, "ablationcam", AblationCAM, None)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
