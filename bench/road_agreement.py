"""How close ROAD's multigrid imputation comes to pytorch-grad-cam's exact sparse solve, on many photos.

    .venv/bin/python bench/road_agreement.py            # 14 photos x 2 methods x 2 orders x 5 fractions (~2.5 min)
    .venv/bin/python bench/road_agreement.py --quick    # 4 photos, fractions 0.1 and 0.9

The photos: ``../shared/data/photos`` when present, and scikit-image's samples (camera, cat, horse,
hubble_deep_field, immunohistochemistry, page, retina, plus chelsea, coffee, astronaut, rocket when
the shared photos are absent). Maps: Grad-CAM and LayerCAM of the built-in model, each image's top
class. For each (method, order, image, fraction), the largest difference of our ROAD score
(:func:`convlens.lens.faithfulness.road`, noise 0) from pytorch-grad-cam's ``ROADMostRelevantFirst`` /
``ROADLeastRelevantFirst`` (noise 0), with no extra V-cycle (the default) and with one; and the
imputed pixels' distance from the peer's exact imputation (rms and largest). The issue's bound: 0.02.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from _common import DATA, setup  # bench/ is on sys.path when run as a script

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def photos(quick: bool) -> list[str]:
    from PIL import Image
    from skimage import data

    shared = DATA / "photos"
    pics = [str(p) for p in sorted(shared.iterdir()) if p.name != "truncated.jpg"] if shared.is_dir() else []
    names = ["camera", "cat", "horse", "hubble_deep_field", "immunohistochemistry", "page", "retina"]
    if not pics:
        names = ["chelsea", "coffee", "astronaut", "rocket", *names]
    tmp = Path(tempfile.mkdtemp())
    for name in names:
        a = getattr(data, name)()
        a = a if a.dtype == np.uint8 else (a * 255).astype(np.uint8)
        Image.fromarray(a).convert("RGB").save(tmp / f"{name}.png")
        pics.append(str(tmp / f"{name}.png"))
    return pics[:4] if quick else pics


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    print(setup(2))
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer, ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from convlens.lens import faithfulness as fa
    from convlens.lens.cam import explain
    from convlens.lens.cam.verb import prepare
    from convlens.models import load_model

    lm = load_model()
    module = lm.module.eval()
    pics = photos(args.quick)
    names = [Path(p).name for p in pics]
    x = prepare(lm, pics).batch
    fracs = (0.1, 0.9) if args.quick else (0.1, 0.3, 0.5, 0.7, 0.9)
    worst = {0: 0.0, 1: 0.0}
    pixel_errors = []
    t0 = time.perf_counter()
    for method in ("gradcam", "layercam"):
        ex = explain(lm, x, method=method)
        maps = ex.maps[0, :, 0].float()
        t = torch.tensor([s[0].index for s in ex.targets])
        targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in t]
        for order, peer in (("morf", ROADMostRelevantFirst), ("lerf", ROADLeastRelevantFirst)):
            theirs = []
            for f in fracs:
                metric = peer(percentile=round(100 * (1 - f)))
                metric.perturbation.imputer.noise = 0.0
                theirs.append(metric(x, maps.numpy(), targets, module).ravel())
            theirs = np.stack(theirs, 1)
            for cycles in (0, 1):
                ours = fa.road(module, x, maps, t, fractions=fracs, order=order, noise=0.0, cycles=cycles).numpy()
                diff = np.abs(ours - theirs)
                i, j = np.unravel_index(diff.argmax(), diff.shape)
                worst[cycles] = max(worst[cycles], float(diff.max()))
                print(f"{method:<9} {order}  cycles {cycles}: largest |ours - theirs| {diff.max():.4f} "
                      f"({names[i]}, fraction {fracs[j]}), mean {diff.mean():.4f}", flush=True)
            # the imputed pixels themselves, for the middle fraction
            m = maps.flatten(1) if order == "morf" else 1 - maps.flatten(1)
            q = torch.quantile(m, torch.tensor([1 - fracs[len(fracs) // 2]]), dim=1).T
            removed = ~(m < q).view(-1, *x.shape[-2:])
            exact = torch.stack([NoisyLinearImputer(noise=0)(x[k], (~removed[k]).float()) for k in range(len(x))])
            pixel_errors.append((fa.impute(x, removed, noise=0) - exact).flatten())
    e = torch.cat(pixel_errors).abs()
    print(f"worst over all: {worst[0]:.4f} (no extra cycle, the default), {worst[1]:.4f} (one extra cycle); "
          f"bound 0.02", flush=True)
    print(f"imputed pixels at the middle fraction vs the exact solve: rms {e.pow(2).mean().sqrt():.5f}, "
          f"largest {e.max():.4f}  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
