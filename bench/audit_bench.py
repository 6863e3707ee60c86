"""The data-set audit's speed and scale lines (issue 13), one run.

    .venv/bin/python bench/audit_bench.py            # every line at the issue's sizes (long on 2 cores)
    .venv/bin/python bench/audit_bench.py --quick    # the same lines on small sizes (a check that it runs)

Lines:

- local engine throughput (images/s of ``cl.audit``: decoding, the model, the maps, writing Parquet)
  vs ``cl.explain`` alone on the same image files at its best batch (issue: >= 0.9x);
- peak memory (VmHWM of a fresh process) of the local audit over 1,000 and 20,000 generated
  images (issue: growth under 10%);
- Ray engine with 2 local workers vs the local engine, on the same images (issue: >= 0.8x on this
  2-core machine; on a GPU machine one GPU actor vs the bare GPU explain, >= 0.9x), its rate after
  start-up and the start-up apart, and the same on ``--ray-images`` (8,000) where start-up is amortised;
- the interventions (issue 29: the maps' hypotheses and the global statistics tested by masking, on a
  sample of each class's images, batched) against the rest of the same audit of 2,000 images, end
  to end (issue: they add at most 30% to the audit's time);
- SpRAy (clustering and judging) of 10,000 maps of one class, as the audit runs it (on a sample of
  ``spray.SAMPLE`` maps, the rest assigned) and all clustered (issue: under 60 s on 2 cores).

Ratios are ours over the reference for throughputs (higher is better) and reference over ours for
times. Generated images and a small CNN stand in for real data, so that no line needs a download.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from _common import setup  # bench/ is on sys.path when run as a script

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HERE = Path(__file__).resolve()
ROUNDS = 4  # interleaved rounds of explain and the local audit


def line(what: str, ours: float, ref_name: str, ref: float, unit: str, higher_better: bool = True) -> None:
    ratio = (ours / ref if higher_better else ref / ours) if ours and ref else float("nan")
    print(f"{what:<52} ours {ours:10.2f} {unit:<9} {ref_name:<22} {ref:10.2f} {unit:<9} ratio {ratio:6.2f}x",
          flush=True)


def write_images(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` RGB PNGs in two class folders (a bright or a dark square in noise)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in ("dark", "light"):
        (root / c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = i % 2
        a = rng.normal(110, 30, (size, size, 3))
        x, y = rng.integers(0, size // 2, 2)
        a[y:y + size // 3, x:x + size // 3] += 80 if c else -80
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(root / ("light" if c else "dark") / f"{i:06d}.png")
    return root


def small_model(size: int):
    import convlens as cl

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 2))
    return cl.load_model(net, input_size=(3, size, size), class_names=["dark", "light"])


def throughput(args, tmp: Path, ray_line: bool = True) -> None:
    import convlens as cl

    n, size = (96, 64) if args.quick else (2000, 128)
    n = args.images or n
    data = write_images(tmp / "tp", n, size)
    files = sorted(str(p) for p in data.rglob("*.png"))
    lm = small_model(size)

    def explain_rate(b: int) -> float:
        t0 = time.perf_counter()
        cl.explain(lm, files, "gradcam", batch_size=b)
        return n / (time.perf_counter() - t0)

    rates = {b: explain_rate(b) for b in ((8, 32) if args.quick else (8, 16, 32, 64))}
    best_b = max(rates, key=rates.get)
    # explain at its best batch and the audit at the same batch, in interleaved rounds (on this box
    # either one's rate drifts by 20-30% over a minute): the best of each over the same number of
    # rounds, the same statistic on both sides (the sweep above only picks the batch)
    best, local, local_all = 0.0, 0.0, 0.0
    for _ in range(1 if args.quick else ROUNDS):
        best = max(best, explain_rate(best_b))
        shutil.rmtree(tmp / "tp-audit", ignore_errors=True)
        a, e = timed_audit(lm, data, tmp / "tp-audit", batch_size=best_b)
        local, local_all = max(local, a), max(local_all, e)
    rounds = "1 round" if args.quick else f"best of {ROUNDS} interleaved rounds"
    line(f"local audit vs explain alone ({n} images of {size}, batch {best_b}, {rounds})", local,
         "explain (best batch)", best, "images/s")
    line("  the same, end to end (+ SpRAy, overview, HTML page)", local_all, "explain (best batch)", best,
         "images/s")
    if not ray_line:
        return
    try:
        import ray  # noqa: F401
    except ImportError:
        print("ray engine: skipped (the ray extra is not installed)")
        return
    ray_vs_local(lm, data, tmp, n, best_b, local, "")
    big = 0 if args.quick else args.ray_images
    if big and big > n:
        # Ray's start-up is fixed: the same comparison on a larger audit, where it is amortised
        data_big = write_images(tmp / "tp-big", big, size, seed=1)
        local_big, _ = timed_audit(lm, data_big, tmp / "tp-big-audit", batch_size=best_b)
        ray_vs_local(lm, data_big, tmp, big, best_b, local_big, f" ({big} images)")


def ray_vs_local(lm, data: Path, tmp: Path, n: int, batch: int, local: float, what: str) -> None:
    """One Ray audit of ``data`` with 2 local workers (Ray started before), against ``local`` images/s."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        marks: list[tuple[float, int]] = []
        out = tmp / f"tp-ray-{n}"
        shutil.rmtree(out, ignore_errors=True)
        remote, _ = timed_audit(lm, data, out, engine="ray", workers=2, batch_size=batch,
                                shard_size=max(16, n // 16), marks=marks)
    finally:
        ray.shutdown()
    line(f"ray engine, 2 local workers (Ray started before){what}", remote, "local engine", local, "images/s")
    # the same run without its start-up: from the second shard done (each actor has started and
    # done one) to the last, i.e. the rate once the two model actors are up
    (t1, d1), (t2, d2) = marks[1], marks[-1]
    line("  ray, after the actors' start-up (shard 2 to last)", (d2 - d1) / (t2 - t1), "local engine", local,
         "images/s")
    print(f"  ray start-up: {marks[0][0] - marks_start(marks):.1f} s to the first shard, "
          f"{len(marks)} shards", flush=True)


def marks_start(marks) -> float:
    return marks_start.t0  # type: ignore[attr-defined]


def timed_audit(lm, data, out, marks: list | None = None, **kw) -> tuple[float, float]:
    """(images/s of the per-image phase: from the start of the work to the last shard, images/s end
    to end) of one audit; ``marks`` gets ``(time, images done)`` of every progress call."""
    from convlens.audit import audit

    marks_: dict[str, float] = {}

    def started(m, r):
        marks_.setdefault("start", time.perf_counter())
        marks_start.t0 = marks_["start"]  # type: ignore[attr-defined]

    def progressed(done, total):
        marks_["last"] = time.perf_counter()
        if marks is not None:
            marks.append((marks_["last"], done))

    marks = marks if marks is not None else None
    t0 = time.perf_counter()
    res = audit(lm, data, out=out, on_start=started, progress=progressed, **kw)
    marks_dict = marks_
    total = time.perf_counter() - t0
    n = res.images + len(res.skipped)
    return n / (marks_dict["last"] - marks_dict["start"]), n / total


def memory_child(n: int, root: str) -> None:
    """In a fresh process: audit the first ``n`` images of ``root``; print the peak RSS in MiB."""
    from convlens.audit import audit

    files = sorted(str(p) for p in Path(root).rglob("*.png"))[:n]
    out = Path(tempfile.mkdtemp(prefix="audit-mem-"))
    try:
        audit(small_model(32), files, out=out / "a", shard_size=256)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    # VmHWM, the peak of this process's own memory: ru_maxrss would be at least the parent's RSS at
    # the fork (Linux keeps it across fork and exec), and this bench's parent has run Ray by now
    hwm = next(int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in Path("/proc/self/status").read_text()
                                             .splitlines() if ":" in ln) if k == "VmHWM")
    print(json.dumps({"rss_mib": hwm / 1024}))


def memory(args, tmp: Path) -> None:
    small, large = (300, 1500) if args.quick else (1000, 20000)
    data = write_images(tmp / "mem", large, 32)
    rss = {}
    for n in (small, large):
        done = subprocess.run([sys.executable, str(HERE), "--memory-child", str(n), str(data)], check=True,
                              capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        rss[n] = json.loads(done.stdout.strip().splitlines()[-1])["rss_mib"]
    line(f"peak memory, audit of {large} vs {small} images", rss[large], f"{small} images", rss[small], "MiB",
         higher_better=False)


def spray(args) -> None:
    from convlens.audit import strategies

    n = 2000 if args.quick else 10000
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    centres = rng.uniform(6, 26, (n, 2))
    centres[: n // 5] = (28, 4)  # a fifth look at one corner
    maps = np.exp(-((xx[None] - centres[:, 0, None, None]) ** 2 + (yy[None] - centres[:, 1, None, None]) ** 2)
                  / 18.0).astype(np.float32)
    maps += rng.uniform(0, 0.05, maps.shape).astype(np.float32)
    peaks = np.stack([(centres[:, 0] + 0.5) / 32, (centres[:, 1] + 0.5) / 32], axis=1)
    other = rng.uniform(0.2, 0.8, (n, 2))
    from convlens.audit.spray import SAMPLE

    strategies(maps[:50], peaks[:50], None, other)  # scikit-learn's import (~1 s) is not SpRAy's time
    default = f"default: clustered on {SAMPLE}, the rest assigned" if n > SAMPLE else "default: all clustered"
    for sample, how in ((SAMPLE, default), (None, "all clustered")):
        t0 = time.perf_counter()
        clusters = strategies(maps, peaks, None, other, sample=sample)
        dt = time.perf_counter() - t0
        line(f"SpRAy on {n} maps of one class, {how} ({len(clusters)} clusters, "
             f"{sum(c.flagged for c in clusters)} flagged)", dt, "the issue's bound", 60.0, "s", higher_better=False)


def interventions(args, tmp: Path) -> None:
    """The interventions' share of an audit: the audit end to end, with :func:`convlens.audit.verb.intervene`
    timed apart (the best of ``ROUNDS`` rounds each, on the same images)."""
    from convlens.audit import verb

    n, size = (96, 64) if args.quick else (2000, 128)
    n = args.images or n
    data = write_images(tmp / "iv", n, size, seed=2)
    lm = small_model(size)
    original = verb.intervene
    spent: list[float] = []

    def timed(*a, **k):
        t0 = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            spent.append(time.perf_counter() - t0)

    verb.intervene = timed
    try:
        best_total, best_iv, tested = float("inf"), float("inf"), 0
        for _ in range(1 if args.quick else 2):
            shutil.rmtree(tmp / "iv-audit", ignore_errors=True)
            t0 = time.perf_counter()
            res = verb.audit(lm, data, out=tmp / "iv-audit")
            total = time.perf_counter() - t0
            best_total, best_iv, tested = min(best_total, total), min(best_iv, spent[-1]), len(res.verdicts)
    finally:
        verb.intervene = original
    rest = best_total - best_iv
    line(f"interventions ({tested} tests) vs the rest of the audit ({n} images of {size})", best_iv,
         "the audit without them", rest, "s", higher_better=False)
    print(f"  interventions add {100 * best_iv / rest:.1f}% to the audit's time (issue: <= 30%)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a check that every line runs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=None,
                    help="images for the throughput and Ray lines (default 2,000; Ray's start-up is fixed, so "
                         "its ratio grows with the size)")
    ap.add_argument("--ray-images", type=int, default=8000,
                    help="also compare Ray with the local engine on an audit of this many images (0: not), where "
                         "Ray's fixed start-up is amortised (default 8,000)")
    ap.add_argument("--only", action="append", choices=("throughput", "ray", "memory", "spray", "interventions"),
                    help="run only these lines (repeatable; default: all); 'ray' includes the local line it "
                    "compares with")
    ap.add_argument("--memory-child", nargs=2, metavar=("N", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        torch.set_num_threads(args.threads)
        memory_child(int(args.memory_child[0]), args.memory_child[1])
        return
    print(setup(args.threads) + (" (quick)" if args.quick else ""), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="audit-bench-"))
    try:
        only = set(args.only or ("throughput", "ray", "memory", "spray", "interventions"))
        if only & {"throughput", "ray"}:
            throughput(args, tmp, ray_line="ray" in only)
        if "interventions" in only:
            interventions(args, tmp)
        if "memory" in only:
            memory(args, tmp)
        if "spray" in only:
            spray(args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
