"""Training speed and accuracy: convlens vs the seed course's Keras recipe, side by side.

Prints one line per comparison: what, ours, peer, ratio.  The peer is TensorFlow/Keras
(optional: ``pip install tensorflow-cpu``); without it the script prints ours alone and
the Keras numbers recorded in issue 6 (2 CPU threads, TensorFlow 2.21) for reference.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/train_bench.py [--skip-defungi] [--only ddp]

``--only load``: training beside a process that keeps one core busy, torch's thread policy left unset
against ``OMP_WAIT_POLICY=PASSIVE`` (what the ``convlens`` command sets).

``--only ddp``: the data-parallel line, 2 processes x 1 thread against 1 process x 2 threads on the
faces (identity) and DeFungi (frozen effnet-lite0) recipes, the same seed and global batch.

The data come from ../shared/data (skipped with a message when absent).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(2)
DATA = Path(os.environ.get("CONVLENS_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
RECORDED_KERAS = {"identity": (0.840, 223.0), "eyes": (0.962, 21.0)}  # issue 6, TF 2.21, 2 threads
AUG = {"identity": "rotate=10,translate=0.1,zoom=0.1", "eyes": "rotate=10,translate=0.08,zoom=0.08,flip=h"}
OPTS = {"identity": dict(epochs=20, batch_size=32), "eyes": dict(epochs=25, batch_size=32)}


def line(what: str, ours: str, peer: str, ratio: str) -> None:
    print(f"{what:<58} | ours {ours:<22} | peer {peer:<26} | {ratio}", flush=True)


def ratio(peer_s: float, ours_s: float) -> str:
    r = peer_s / ours_s
    return f"{r:.1f}x faster" if r >= 1 else f"{1 / r:.1f}x slower"


def ours_faces(label: str) -> tuple[float, float, float]:
    """Accuracy, wall seconds and process CPU seconds (a loaded machine shows wall >> cpu / 2)."""
    from convlens.train import train

    t0, c0 = time.perf_counter(), time.process_time()
    run = train(f"cmu-faces:{DATA / 'cmu_faces'}", label=label, augment=AUG[label], seed=0, progress=False,
                **OPTS[label])
    return run.metrics["accuracy"], time.perf_counter() - t0, time.process_time() - c0


def keras_faces(label: str) -> tuple[float, float] | None:
    """The seed's recipe: 3 conv blocks 32/64/128, dense 128/64, dropout 0.2, 5x offline augmentation."""
    try:
        import tensorflow as tf
    except ImportError:
        return None
    from convlens.data import load_source, make_split

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    tf.keras.utils.set_random_seed(0)
    t0 = time.perf_counter()
    ds = load_source(f"cmu-faces:{DATA / 'cmu_faces'}", label=label)
    split = make_split(ds, seed=0, val=0.1, test=0.2)
    x = ds.images.permute(0, 2, 3, 1).numpy().astype("float32")
    y = ds.labels.numpy()
    xtr, ytr = x[split.train.numpy()], y[split.train.numpy()]
    xva, yva = x[split.val.numpy()], y[split.val.numpy()]
    xte, yte = x[split.test.numpy()], y[split.test.numpy()]
    aug = tf.keras.Sequential([tf.keras.layers.RandomRotation(0.05), tf.keras.layers.RandomTranslation(0.1, 0.1),
                               tf.keras.layers.RandomZoom(0.1)])
    t_aug = time.perf_counter()
    copies = [xtr] + [aug(xtr, training=True).numpy() for _ in range(5)]
    xtr5, ytr5 = np.concatenate(copies), np.concatenate([ytr] * 6)
    t_aug = time.perf_counter() - t_aug
    n = ds.num_classes
    L = tf.keras.layers
    model = tf.keras.Sequential([
        L.Input(shape=x.shape[1:]), L.Rescaling(1 / 255.0),
        L.Conv2D(32, 3, padding="same", activation="relu"), L.MaxPooling2D(),
        L.Conv2D(64, 3, padding="same", activation="relu"), L.MaxPooling2D(),
        L.Conv2D(128, 3, padding="same", activation="relu"), L.MaxPooling2D(),
        L.Flatten(), L.Dense(128, activation="relu"), L.Dropout(0.2), L.Dense(64, activation="relu"),
        L.Dropout(0.2), L.Dense(n, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(xtr5, ytr5, validation_data=(xva, yva), epochs=20, batch_size=32, verbose=0)
    acc = float((model.predict(xte, verbose=0).argmax(-1) == yte).mean())
    total = time.perf_counter() - t0
    print(f"  (keras {label}: {t_aug:.0f} s augmentation + {total - t_aug:.0f} s load/fit/eval)", flush=True)
    return acc, total


def augment_bench() -> None:
    from torchvision.transforms import v2

    from convlens.data import parse_augment

    x = torch.randint(0, 256, (437, 1, 60, 64), dtype=torch.uint8)
    ours = parse_augment("rotate=15,translate=0.1,zoom=0.1")
    tv = v2.RandomAffine(15, translate=(0.1, 0.1), scale=(0.9, 1.1))
    ours(x[:8])
    t0 = time.perf_counter()
    for _ in range(3):
        ours(x)
    t_ours = (time.perf_counter() - t0) / 3
    t0 = time.perf_counter()
    torch.stack([tv(xi) for xi in x])
    t_tv = time.perf_counter() - t0
    line("augment 437 faces 64x60 (batched affine vs v2 per sample)", f"{t_ours * 1000:.0f} ms",
         f"{t_tv * 1000:.0f} ms (torchvision)", f"{t_tv / t_ours:.1f}x faster")


def defungi_bench() -> None:
    from convlens.data import load_source, make_split
    from convlens.models.arch import build_arch
    from convlens.train import train

    t0 = time.perf_counter()
    run = train(f"folder:{DATA / 'defungi'}", arch="effnet-lite0", freeze=True, epochs=30, seed=0, progress=False)
    t_run = time.perf_counter() - t0
    ds = load_source(f"folder:{DATA / 'defungi'}")
    split = make_split(ds)
    net = build_arch("effnet-lite0", ds.input_size, 2).eval()
    x = ds.images[torch.cat([split.train, split.val])]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(x), 64):
            net.features(x[i:i + 64].float())
    t_fwd = time.perf_counter() - t0
    line(f"DeFungi frozen effnet-lite0 run (acc {run.metrics['accuracy']:.3f})", f"{t_run:.1f} s whole run",
         f"{t_fwd:.1f} s one forward ({len(x)} img)", f"{t_run / t_fwd:.2f}x one forward")


#: the two recipes of the data-parallel line: (name, data and options); batch sizes are global (1 process)
DDP_RECIPES = {
    "faces": (["--data", f"cmu-faces:{DATA / 'cmu_faces'}", "--label", "identity", "--augment", AUG["identity"],
               "--epochs", "20", "--seed", "0"], 32),
    "fungi": (["--data", f"folder:{DATA / 'defungi'}", "--arch", "effnet-lite0", "--freeze", "--epochs", "30",
               "--seed", "0"], 32),
}


def _train_cli(args: list[str], out: Path, threads: int | None) -> tuple[dict, dict, float]:
    """One ``convlens train`` process (and the ones it starts): its config, JSON document and wall seconds."""
    import json
    import subprocess

    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join(x for x in (str(Path(__file__).resolve().parents[1]),
                                                      os.environ.get("PYTHONPATH", "")) if x)}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "convlens.cli", "train", *args, "--out", str(out), "--json"],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"convlens train failed: {proc.stderr[-2000:]}")
    return json.loads((out / "config.json").read_text()), json.loads(proc.stdout), wall


def _training_rate(config: dict) -> tuple[float, float]:
    """Training images per second (epochs x training split over the epochs' seconds plus the one-off
    feature pass of a frozen backbone) and those seconds; process start-up and data loading left out."""
    import csv

    path = Path(config["_path"]) / "history.csv"
    rows = list(csv.DictReader(path.open()))
    seconds = sum(float(r["seconds"]) for r in rows) + float(config["result"].get("features_seconds", 0.0))
    return config["split"]["train"] * len(rows) / seconds, seconds


def ddp_bench() -> None:
    """2 processes x 1 thread (gloo, the same global batch) vs 1 process x 2 threads, same seed."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name, (args, batch) in DDP_RECIPES.items():
            res = {}
            for label, extra, threads in (("1x2", ["--batch-size", str(batch)], 2),
                                          ("2x1", ["--batch-size", str(batch // 2), "--devices", "2"], None)):
                out = Path(tmp) / f"{name}-{label}"
                config, doc, wall = _train_cli(args + extra, out, threads)
                config["_path"] = str(out)
                rate, sec = _training_rate(config)
                res[label] = (rate, sec, wall, doc["metrics"]["accuracy"], config["distributed"]["world_size"])
            (r1, _, w1, a1, _), (r2, _, w2, a2, ws) = res["1x2"], res["2x1"]
            line(f"DDP {name}: {ws} proc x 1 thread vs 1 proc x 2 threads (train img/s)",
                 f"{r2:.0f} img/s, acc {a2:.3f}, {w2:.0f} s wall", f"{r1:.0f} img/s, acc {a1:.3f}, {w1:.0f} s wall",
                 f"{r2 / r1:.2f}x")


#: one short training in a fresh process (the library, which leaves the thread policy as it finds it)
_LOAD_TRAIN = ("import time, convlens as cl; t = time.perf_counter(); "
               "cl.train('digits', arch='conv16-pool-conv32-pool-fc64', epochs=3, batch_size=32, seed=0, "
               "progress=False); print(time.perf_counter() - t)")


def load_bench(rounds: int = 2) -> None:
    """Training while another process keeps one core busy: the OpenMP policy torch gets when nothing
    is set (its threads spin while they wait) against ``OMP_WAIT_POLICY=PASSIVE``, the policy the
    ``convlens`` command chooses; interleaved, the median of ``rounds`` each."""
    import subprocess

    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    times: dict[str, list[float]] = {"plain": [], "PASSIVE": []}
    try:
        for _ in range(rounds):
            for policy in times:
                env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
                env["PYTHONPATH"] = os.pathsep.join(x for x in (str(Path(__file__).resolve().parents[1]),
                                                                 os.environ.get("PYTHONPATH", "")) if x)
                if policy != "plain":
                    env["OMP_WAIT_POLICY"] = policy
                proc = subprocess.run([sys.executable, "-c", _LOAD_TRAIN], capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    raise SystemExit(f"training failed: {proc.stderr[-2000:]}")
                times[policy].append(float(proc.stdout.strip().splitlines()[-1]))
    finally:
        hog.kill()
        hog.wait()
    plain, passive = float(np.median(times["plain"])), float(np.median(times["PASSIVE"]))
    line("digits, 3 epochs, beside a busy process: PASSIVE vs plain", f"{passive:.1f} s (PASSIVE)",
         f"{plain:.1f} s (policy unset)", ratio(plain, passive))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-defungi", action="store_true")
    ap.add_argument("--skip-keras", action="store_true")
    ap.add_argument("--only", choices=["augment", "faces", "defungi", "ddp", "load"], default=None)
    args = ap.parse_args()
    if args.only in (None, "augment"):
        augment_bench()
    if args.only in (None, "load"):
        load_bench()
    if not DATA.is_dir():
        print(f"real data folder {DATA} is absent: skipping the faces and DeFungi comparisons")
        return 0
    for label in ("identity", "eyes") if args.only in (None, "faces") else ():
        acc, sec, cpu = ours_faces(label)
        peer = None if args.skip_keras else keras_faces(label)
        ours = f"{acc:.3f} in {sec:.1f} s (cpu {cpu:.0f} s)"
        if peer is None:
            k_acc, k_sec = RECORDED_KERAS[label]
            line(f"CMU faces {label} 64x60, files to metrics", ours,
                 f"{k_acc:.3f} in {k_sec:.0f} s (recorded)", ratio(k_sec, sec) + " (vs recorded)")
        else:
            line(f"CMU faces {label} 64x60, files to metrics", ours,
                 f"{peer[0]:.3f} in {peer[1]:.1f} s (keras)", ratio(peer[1], sec))
    if not args.skip_defungi and args.only in (None, "defungi"):
        defungi_bench()
    if args.only in (None, "ddp"):
        ddp_bench()
    return 0


if __name__ == "__main__":
    sys.exit(main())
