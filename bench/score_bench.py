"""Score and sanity-check speed against the peers and against the bare model work, one run.

    .venv/bin/python bench/score_bench.py            # everything (a few minutes on 2 cores)
    .venv/bin/python bench/score_bench.py --quick    # ROAD with 2 fractions, fewer repeats

bench/RESULTS.md gives it run plain (``OMP_WAIT_POLICY`` unset, as in a user's shell) and as ``make
bench`` runs it (``OMP_WAIT_POLICY=PASSIVE``, see the Makefile). PASSIVE makes every parallel torch
operation wake its threads (~60 us: 72 us against 19 us on one thread for a multiply of 156k values),
which the forwards and ROAD's many small operations feel; unset, torch's threads spin a while after
each operation, which the sanity check's SSIM thread feels. ``--glibc-defaults``: glibc's own
allocator policy instead of the one ``import convlens`` sets (``convlens/_alloc.py``).

Lines (ratio = how many times faster ours is, or for the "vs forwards" lines, the bare work's time over
ours: 1.0 means we cost exactly the model's forwards):

- ROAD most-relevant-first, 4 fractions x 4 images of 224 on the built-in model, Grad-CAM maps:
  ours (:func:`convlens.lens.faithfulness.road`, forwards in batches of ``FORWARD_BATCH``, 32, as
  ``score`` runs them) vs
  pytorch-grad-cam's ``ROADMostRelevantFirst`` (their scipy sparse solve per image and percentile;
  measured once, it takes ~5-20 s depending on the machine), with the largest per-image and
  per-fraction difference of the scores (their noise is unseeded: both at noise 0 here); ours runs
  its forwards through the folded copy of the network, made by the warm-up call and cached (the
  one-off cost of folding is printed under deletion+insertion, not included in either line); then
  ours vs the bare forwards ROAD needs (4 images + 16 imputed copies through the same folded copy,
  same batches): the peer's time over that floor is the most any ROAD could be ahead of the peer;
- deletion + insertion (20 steps, 8 images), timed in interleaved rounds (so that load from elsewhere
  on the machine hits every contender alike), with the difference of the mean AUCs:
  * ``TorchCAM (batch 32)``: TorchCAM's ``DeletionInsertionMetric`` as it comes (its default batch
    32, the same as ours: ``FORWARD_BATCH``);
  * ``TorchCAM (batch 8)``: the same in batches of 8 (the model's own batch size on a CPU);
  * ``bare fwd, user's module``: plain ``module(x)`` forwards of the user's (unfolded) network, as many
    inputs as ours forwards (the distinct inputs of the protocol: 8 images, 1 shared all-zero
    baseline, 2 x 8 x 19 interior points = 313) in the same batches; above 1.0 means ours costs less
    than running those inputs through the user's module, which the folded batch norms make possible;
  * ``bare fwd, folded module``: the same forwards through the folded copy ours runs
    (:mod:`convlens.lens.folding`), i.e. the overhead of everything but the model (1.0 = none);
  the one-off cost of folding (cached per model) is printed, not included;
- sanity (all stages, 5 methods, 8 images): ours vs the forwards and backwards it needs (one
  forward + one backward per stage, from :func:`convlens.lens.cam.explain`'s shared pass) -- here
  measured as ``stages x explain`` of the original model; both warmed up, then timed in interleaved rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from _common import setup, timeit_many  # bench/ is on sys.path when run as a script

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PHOTOS = ROOT.parent / "shared" / "data" / "photos"


def line(what: str, ours: float, peer_name: str, peer: float, unit: str = "s") -> None:
    ratio = peer / ours if ours else float("nan")
    print(f"{what:<48} ours {ours:8.3f} {unit}   {peer_name:<26} {peer:8.3f} {unit}   ratio {ratio:6.2f}x", flush=True)


def images(n: int) -> list[str]:
    pics = [str(p) for p in sorted(PHOTOS.iterdir()) if p.name != "truncated.jpg"] if PHOTOS.is_dir() else []
    if not pics:
        import tempfile

        from PIL import Image
        from skimage import data
        d = Path(tempfile.mkdtemp())
        for name in ("chelsea", "coffee", "astronaut", "rocket"):
            Image.fromarray(getattr(data, name)()).save(d / f"{name}.png")
            pics.append(str(d / f"{name}.png"))
    return (pics * n)[:n]


class _Fixed:
    """A TorchCAM extractor that returns given maps."""

    def __init__(self, net, maps):
        self.model, self.maps = net, maps

    def __call__(self, class_idx=None, scores=None, **_):
        return [self.maps]

    def fuse_cams(self, cams):
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self):
        yield


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["road", "delins", "sanity"], default=None, help="One comparison only.")
    ap.add_argument("--glibc-defaults", action="store_true",
                    help="glibc's own allocator policy (default: as `import convlens` sets it, see _common.py)")
    args = ap.parse_args()
    print(setup(args.threads), "| OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "unset"))
    from convlens.lens import faithfulness as fa
    from convlens.lens.cam import explain
    from convlens.lens.cam.verb import prepare
    from convlens.lens.sanity import sanity, stage_groups
    from convlens.models import load_model

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    lm = load_model(device=dev)
    module = lm.module.eval()
    x4 = prepare(lm, images(4)).batch
    ex = explain(lm, x4, method="gradcam")
    maps4 = ex.maps[0, :, 0].float()
    t4 = torch.tensor([s[0].index for s in ex.targets], device=x4.device)

    def want(part: str) -> bool:
        return args.only in (None, part)

    # -- ROAD ------------------------------------------------------------------------------
    from pytorch_grad_cam.metrics.road import ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    from torchcam.metrics import DeletionInsertionMetric

    fracs = (0.2, 0.5) if args.quick else (0.2, 0.4, 0.6, 0.8)
    if want("road"):
        road_line(fa, module, x4, maps4, t4, fracs, ROADMostRelevantFirst, ClassifierOutputSoftmaxTarget,
                  fa.FORWARD_BATCH)
    if want("delins"):
        delins(fa, lm, module, explain, prepare, DeletionInsertionMetric)
    if want("sanity"):
        sanity_line(lm, explain, prepare, sanity, stage_groups, args.quick)


def road_line(fa, module, x4, maps4, t4, fracs, ROADMostRelevantFirst, ClassifierOutputSoftmaxTarget, bs) -> None:
    from convlens.lens.folding import inference_copy

    # the floor: the forwards the protocol needs (each image once, each imputed copy once) through the
    # same folded copy ours uses, in the same batches; peer / this = the largest ratio any ROAD could reach
    net, n_inputs = inference_copy(module), x4.shape[0] * (1 + len(fracs))
    xs = x4.repeat_interleave(1 + len(fracs), 0)

    def bare():
        with torch.inference_mode():
            for s in range(0, n_inputs, bs):
                net(xs[s:s + bs])

    # ours and its floor in interleaved rounds (this box's speed drifts by 20-30% within a minute)
    t = timeit_many({"ours": lambda: fa.road(module, x4, maps4, t4, fractions=fracs, noise=0.0, batch_size=bs),
                     "bare": bare}, repeat=5)
    ours, floor = t["ours"], t["bare"]
    o = fa.road(module, x4, maps4, t4, fractions=fracs, noise=0.0, batch_size=bs).cpu().numpy()
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in t4]
    t0 = time.perf_counter()
    theirs = []
    for f in fracs:
        metric = ROADMostRelevantFirst(percentile=round(100 * (1 - f)))
        metric.perturbation.imputer.noise = 0.0  # noise 0 on both sides, so the scores compare
        theirs.append(metric(x4, maps4.cpu().numpy(), targets, module).ravel())
    peer = time.perf_counter() - t0
    theirs = np.stack(theirs, 1)
    line(f"ROAD MoRF {len(fracs)} fractions x 4 images", ours, "pytorch-grad-cam", peer)
    print(f"{'':<48} max |ours - theirs| = {np.abs(o - theirs).max():.4f}", flush=True)
    line(f"ROAD vs its {n_inputs} bare forwards (folded module)", ours, "bare forwards", floor)
    print(f"{'':<48} the most any ROAD could be ahead of pytorch-grad-cam here: {peer / floor:.1f}x", flush=True)


def delins(fa, lm, module, explain, prepare, DeletionInsertionMetric) -> None:
    from convlens.lens.folding import fold_batchnorm, inference_copy

    x8 = prepare(lm, images(8)).batch
    ex8 = explain(lm, x8, method="gradcam")
    maps8 = ex8.maps[0, :, 0].float()
    t8 = torch.tensor([s[0].index for s in ex8.targets], device=x8.device)
    # ours in score's batch size (FORWARD_BATCH, 32), TorchCAM in its default (also 32) and in the
    # model's own on a CPU (8), bare forwards in ours
    steps, bs = 20, fa.FORWARD_BATCH
    t0 = time.perf_counter()
    fold_batchnorm(module)
    fold_s = time.perf_counter() - t0
    folded = inference_copy(module)  # the cached copy ours uses
    # the distinct inputs ours forwards: 8 images + 1 all-zero baseline (shared by deletion's last and
    # insertion's first point of every image) + 2 x 8 x (points - 2) interior points
    S = len(fa.step_counts(x8.shape[-1] * x8.shape[-2], steps))
    n_inputs = 8 + 1 + 2 * 8 * (S - 2)
    xb = x8[:1].expand(bs, -1, -1, -1).contiguous()

    def bare(net):
        def run():
            with torch.inference_mode():
                for s in range(0, n_inputs, bs):
                    net(xb[: min(bs, n_inputs - s)])
        return run

    def torchcam(batch_size=32):  # 32: TorchCAM's default
        m = DeletionInsertionMetric(_Fixed(module, maps8), lambda z: z.softmax(-1), steps=steps,
                                    batch_size=batch_size)
        m.update(x8, class_idx=t8.tolist())
        return m.summary()

    def ours_run():
        return fa.deletion_insertion(module, x8, maps8, t8, steps=steps, batch_size=bs)

    fr, de, ins = ours_run()
    tc = torchcam()
    dauc = abs(float(fa.auc(fr, de).mean()) - tc["deletion_auc"])
    iauc = abs(float(fa.auc(fr, ins).mean()) - tc["insertion_auc"])
    # interleaved rounds, so that load from elsewhere on the machine hits every contender alike
    t = timeit_many({"ours": ours_run, "torchcam": torchcam, "torchcam_8": lambda: torchcam(8),
                     "bare": bare(module), "bare_folded": bare(folded)}, repeat=3)
    line(f"deletion+insertion {steps} steps x 8 images", t["ours"], "TorchCAM (batch 32)", t["torchcam"])
    line(f"deletion+insertion {steps} steps x 8 images", t["ours"], "TorchCAM (batch 8)", t["torchcam_8"])
    print(f"{'':<48} |mean AUC ours - TorchCAM|: deletion {dauc:.5f}, insertion {iauc:.5f}", flush=True)
    line(f"deletion+insertion vs {n_inputs} bare forwards", t["ours"], "bare fwd, user's module", t["bare"])
    line(f"deletion+insertion vs {n_inputs} bare forwards", t["ours"], "bare fwd, folded module", t["bare_folded"])
    print(f"{'':<48} (folding the batch norms: {fold_s:.3f} s once per model, cached; not in the times above)",
          flush=True)



def sanity_line(lm, explain, prepare, sanity, stage_groups, quick: bool) -> None:
    x8 = prepare(lm, images(8)).batch
    methods = "gradcam,gradcam++,xgradcam,layercam,hirescam"
    stages = len(stage_groups(lm)) + 1
    # interleaved rounds after a warm-up of each, so that neither profits from running second
    t = timeit_many({"ours": lambda: sanity(lm, x8, method=methods),
                     "need": lambda: [explain(lm, x8, method=methods) for _ in range(stages)]},
                    repeat=1 if quick else 5)
    ours, need = t["ours"], t["need"]
    line(f"sanity {stages} stages x 5 methods x 8 images", ours, "stages x (forward+backward)", need)
    print(f"{'':<48} i.e. {ours / need:.2f}x the cost of the passes it needs", flush=True)


if __name__ == "__main__":
    main()
