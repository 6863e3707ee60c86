"""Capturing every layer's feature maps vs a plain forward of the same batch.

Goal (issue 3): the journey's capture of every layer costs at most 1.2x a plain
forward.  Prints one line per comparison: ours, the plain forward, the ratio.

    .venv/bin/python bench/journey_bench.py [--batch 16] [--repeat 5]
"""

from __future__ import annotations

import argparse

import torch

from _common import line, setup, timeit_many
from convlens.lens.journey import journey
from convlens.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--glibc-defaults", action="store_true",
                    help="glibc's own allocator policy (default: as `import convlens` sets it, see _common.py)")
    args = ap.parse_args()
    print("journey_bench:", setup())
    for name in ("effnet-lite0", "torchvision:resnet18"):
        lm = load_model(name, pretrained=False, device=args.device) if name.startswith("torchvision") \
            else load_model(name, device=args.device)
        torch.manual_seed(0)
        x = torch.randn(args.batch, *lm.config.input_size, device=lm.device)
        # every module with feature maps of its own (Identity placeholders only repeat their input)
        every = [r.name for r in lm.layers() if r.is_spatial and r.type != "Identity"]
        stages = lm.stage_layers()

        # timeit_many calls these within this iteration; the defaults bind this model's values anyway
        @torch.inference_mode()
        def plain(lm=lm, x=x):
            lm.module(x)

        t = timeit_many({
            "plain": plain,
            "all": lambda lm=lm, x=x, every=every: journey(lm, x, layers=every, channels="all"),
            "stages": lambda lm=lm, x=x, stages=stages: journey(lm, x, layers=stages, channels="0-31"),
        }, args.repeat)
        t_plain, t_all, t_stages = t["plain"], t["all"], t["stages"]
        line(f"{name} b{args.batch}: every layer ({len(every)}), all channels", t_all, t_plain, peer_name="forward")
        line(f"{name} b{args.batch}: {len(stages)} stages, 32 channels", t_stages, t_plain, peer_name="forward")


if __name__ == "__main__":
    main()
