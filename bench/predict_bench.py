"""``predict`` on 32 photos vs a hand-written timm forward loop with PIL preprocessing.

Goal (issue 3): at least as fast as the hand-written loop (same run, ratio printed).
Photos: scikit-image's samples plus ../shared/data/photos when present, saved as
files and cycled to 32, so both sides decode real files.

    .venv/bin/python bench/predict_bench.py [--n 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from _common import DATA, line, setup, timeit_many
from convlens.models import load_model


def photo_files(folder: Path, n: int) -> list[Path]:
    from skimage import data

    files = []
    for name in ("chelsea", "coffee", "astronaut", "rocket", "cat", "hubble_deep_field"):
        p = folder / f"{name}.png"
        Image.fromarray(np.asarray(getattr(data, name)())).save(p)
        files.append(p)
    photos = DATA / "photos"
    if photos.is_dir():
        files += sorted(q for q in photos.iterdir()
                        if q.suffix.lower() in {".png", ".jpg", ".jfif"} and q.name != "truncated.jpg")
    return list(itertools.islice(itertools.cycle(files), n))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print("predict_bench:", setup())
    lm = load_model()
    module = lm.module
    transform = create_transform(**resolve_data_config({}, model=module))
    transform.transforms[-1].mean = torch.tensor([0.5, 0.5, 0.5])  # the built-in weights' normalisation
    transform.transforms[-1].std = torch.tensor([0.5, 0.5, 0.5])

    with tempfile.TemporaryDirectory() as tmp:
        files = photo_files(Path(tmp), args.n)

        @torch.inference_mode()
        def hand_written():
            out = []
            for f in files:
                x = transform(Image.open(f).convert("RGB")).unsqueeze(0)
                p = module(x).softmax(-1)
                v, i = p.topk(5)
                out.append((i[0].tolist(), v[0].tolist()))
            return out

        def ours():
            return lm.predict(files, top_k=5)

        a, b = hand_written(), ours()
        agree = sum(x[0][0] == y.top.index for x, y in zip(a, b))
        t = timeit_many({"hand": hand_written, "ours": ours}, args.repeat)
        t_hand, t_ours = t["hand"], t["ours"]
        line(f"predict {args.n} photos, top-5 ({agree}/{args.n} top-1 agree)", t_ours, t_hand, peer_name="timm loop")
        print(f"{'throughput':<58} ours {args.n / t_ours:9.1f} img/s   timm loop {args.n / t_hand:9.1f} img/s")


if __name__ == "__main__":
    main()
