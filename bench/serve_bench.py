"""Load bench of `convlens serve` against what this machine can do, measured in the same run.

A round is ``POST /api/predict`` (a fresh 224x224 PNG upload, so no cache can answer) then
``GET /api/cam`` (Grad-CAM of the top class) on the returned image id.  Loopback only, bounded.

1. **bound**: in this process (default torch threads, as the server runs), the library calls the
   server makes for a round, on a batch of 16 images per call: decode the 16 PNGs,
   ``predict_explain`` (top-5 + Grad-CAM from one forward), the CAM payloads (PNG heatmaps);
   images per second;
2. **capacity**: the real server (``convlens serve`` in a subprocess, a free port), CLIENTS
   closed-loop clients x ROUNDS rounds: server rounds/s against 0.7x the bound; the statuses
   (5xx other than the deliberate 503 of a full queue are failures); the server's RSS after
   warm-up, after the run and after each further wave (it should level off); the CPU time of the
   server, of the load generator (the clients run in this process, on the same cores) and of
   anything else on the machine during the run, and the idle cores left;
3. **latency under load**: open-loop Poisson arrivals (a bounded count) at 50% of the capacity
   just measured: p50/p95/p99 of the round and the arrival rate achieved (targets p50 <= 150 ms,
   p99 <= 400 ms);
4. **single client**: one client, round p50 against the direct in-process call of the same
   library work for one image (target <= 1.2x).

Uploads are encoded before each phase, so the clients' own PNG encoding does not compete with the
server for the cores.  The machine is shared: say so when the load average is high.

    .venv/bin/python bench/serve_bench.py [--clients 20] [--rounds 50] [--queue 32] [--quick]

``--quick``: 20 clients x 10 rounds, 60 open-loop arrivals, 10 single-client rounds, no waves.
Never part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of a process so far: ``pid``, or this process."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU time all cores of the machine spent not idle so far (from /proc/stat)."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def base_image() -> np.ndarray:
    from skimage import data

    return np.asarray(Image.fromarray(data.chelsea()).resize((224, 224), Image.Resampling.BILINEAR))


def variant(base: np.ndarray, k: int) -> bytes:
    """The base photo with a few pixels changed: a different upload (and id) each time."""
    arr = base.copy()
    arr[k % 224, (k // 224) % 224] = [(k * 37) % 256, (k * 91) % 256, (k * 13) % 256]
    arr[0, 0, 0] = k % 256
    arr[1, 0, 0] = (k // 256) % 256
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


# -- in-process: the bound and the direct call ---------------------------------------------

def library_round(m, datas: list[bytes]) -> None:
    """The library work of the server's rounds for these uploads, in one batched call."""
    from convlens.images import load_image
    from convlens.lens import predict_explain
    from convlens.web.payloads import cam_payloads
    from convlens.web.state import StoredImage

    items = [StoredImage(f"upload:{i:016x}", f"{i}.png", load_image(d, name=f"{i}.png")) for i, d in enumerate(datas)]
    _, ex = predict_explain(m, [s.image for s in items], top_k=5)
    cam_payloads(m, ex, items)


def in_process(m, base: np.ndarray, calls: int, batch: int, start: int) -> list[float]:
    """Seconds of each of ``calls`` library rounds over ``batch`` fresh uploads (after 1 warm-up)."""
    times = []
    for c in range(calls + 1):
        datas = [variant(base, start + c * batch + i) for i in range(batch)]
        t0 = time.perf_counter()
        library_round(m, datas)
        if c:
            times.append(time.perf_counter() - t0)
    return times


# -- over HTTP -----------------------------------------------------------------------------

async def one_round(c, data: bytes, name: str, out: dict) -> float | None:
    """Seconds of one predict + Grad-CAM round, None when a request failed (counted)."""
    t0 = time.perf_counter()
    resp = await c.post("/api/predict", files={"file": (name, data, "image/png")})
    out["status"][resp.status_code] = out["status"].get(resp.status_code, 0) + 1
    if resp.status_code != 200:
        if resp.status_code == 503:
            await asyncio.sleep(float(resp.headers.get("retry-after", "1")))
        return None
    resp = await c.get("/api/cam", params={"image": resp.headers["x-convlens-image"], "method": "gradcam"})
    out["status"][resp.status_code] = out["status"].get(resp.status_code, 0) + 1
    if resp.status_code != 200:
        return None
    return time.perf_counter() - t0


def new_out() -> dict:
    return {"round": [], "status": {}}


async def closed_loop(url: str, clients: int, rounds: int, uploads: list[bytes]) -> dict:
    import httpx

    out = new_out()

    async def client(c, cid: int) -> None:
        for r in range(rounds):
            s = await one_round(c, uploads[cid * rounds + r], f"c{cid}-{r}.png", out)
            if s is not None:
                out["round"].append(s)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c, i) for i in range(clients)))
        out["seconds"] = time.perf_counter() - t0
    return out


async def open_loop(url: str, rate: float, uploads: list[bytes], seed: int = 0) -> dict:
    """Rounds started at Poisson arrival times of ``rate`` per second, whatever the answers do."""
    import httpx

    out = new_out()
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=256)) as c:
        tasks = []
        t0 = time.perf_counter()
        at = 0.0
        for k, data in enumerate(uploads):
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one_round(c, data, f"o{k}.png", out)))
            at += rng.expovariate(rate)
        started = time.perf_counter() - t0
        out["round"] = [s for s in await asyncio.gather(*tasks) if s is not None]
        out["seconds"] = time.perf_counter() - t0
        out["arrival_rate"] = (len(uploads) - 1) / started if started > 0 else float("nan")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=50, help="rounds (predict + cam) per closed-loop client")
    ap.add_argument("--queue", type=int, default=32, help="the server's --queue")
    ap.add_argument("--bound-calls", type=int, default=8, help="in-process calls of 16 images for the bound")
    ap.add_argument("--arrivals", type=int, default=200, help="open-loop rounds at 50%% of capacity")
    ap.add_argument("--single", type=int, default=30, help="single-client rounds (and as many direct calls)")
    ap.add_argument("--waves", type=int, default=3, help="extra closed-loop waves after the run, to watch memory")
    ap.add_argument("--quick", action="store_true", help="20 x 10 rounds, 60 arrivals, 10 single rounds, no waves")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.bound_calls, args.arrivals, args.single, args.waves = 10, 3, 60, 10, 0

    import torch

    from convlens.models import load_model

    print(f"# serve bench: predict + Grad-CAM rounds on fresh 224x224 PNGs; {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; load average {os.getloadavg()[0]:.1f}", flush=True)
    base = base_image()
    m = load_model()
    bound_times = in_process(m, base, args.bound_calls, 16, 1_000_000)
    bound = 16 / statistics.median(bound_times)
    direct = [s * 1000 for s in in_process(m, base, args.single, 1, 2_000_000)]
    direct_p50 = statistics.median(direct)
    del m
    print(f"bound (in-process, 16 images per call: decode + predict_explain + CAM payloads): {bound:.1f} images/s "
          f"(median of {args.bound_calls} calls, spread {16 / max(bound_times):.1f}-{16 / min(bound_times):.1f})",
          flush=True)

    port = free_port()
    exe = Path(sys.executable).with_name("convlens")
    proc = subprocess.Popen([str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--queue", str(args.queue)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    seq = iter(range(10**9))

    def uploads(n: int) -> list[bytes]:
        return [variant(base, next(seq)) for _ in range(n)]

    try:
        import httpx

        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(url + "/api/info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                print("server did not start: " + (proc.stderr.read().decode() if proc.poll() is not None else ""))
                return 1
            time.sleep(0.2)
        asyncio.run(closed_loop(url, 4, 3, uploads(12)))  # warm-up: first forward/backward, allocator
        rss0 = rss_mb(proc.pid)
        cap_uploads = uploads(args.clients * args.rounds)
        cpu0 = (cpu_seconds(proc.pid), cpu_seconds(), busy_seconds())
        cap = asyncio.run(closed_loop(url, args.clients, args.rounds, cap_uploads))
        cpu1 = (cpu_seconds(proc.pid), cpu_seconds(), busy_seconds())
        rss1 = rss_mb(proc.pid)
        waves = []  # more waves of the same load: the memory should level off, not keep growing
        for _ in range(args.waves):
            wave_rounds = max(1, args.rounds // 5)
            asyncio.run(closed_loop(url, args.clients, wave_rounds, uploads(args.clients * wave_rounds)))
            waves.append(rss_mb(proc.pid))
        capacity = len(cap["round"]) / cap["seconds"]
        lat = asyncio.run(open_loop(url, 0.5 * capacity, uploads(args.arrivals)))
        single = asyncio.run(closed_loop(url, 1, args.single, uploads(args.single)))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    bad = 0
    for name, res in (("capacity", cap), ("open loop", lat), ("single", single)):
        st = res["status"]
        fails = sum(v for k, v in st.items() if k >= 500 and k != 503)
        bad += fails
        print(f"{name}: statuses {dict(sorted(st.items()))}; 5xx other than 503: {fails}")
    n_ok = len(cap["round"])
    ms = [s * 1000 for s in lat["round"]]
    one = [s * 1000 for s in single["round"]]
    print(f"server RSS: {rss0:.0f} MB after warm-up, {rss1:.0f} MB after the capacity run, then after each further "
          f"wave: " + (", ".join(f"{w:.0f}" for w in waves) or "-") + " MB")
    srv, gen, busy = (b - a for a, b in zip(cpu0, cpu1))
    n_cpu = os.cpu_count() or 1
    print(f"CPU during the capacity run (ms per round, cores): server {1000 * srv / max(1, n_ok):.1f} "
          f"({srv / cap['seconds']:.2f}), load generator (the clients, this process) {1000 * gen / max(1, n_ok):.1f} "
          f"({gen / cap['seconds']:.2f}), anything else {max(0.0, busy - srv - gen) / cap['seconds']:.2f}, "
          f"idle {max(0.0, n_cpu - busy / cap['seconds']):.2f} of {n_cpu}")
    print("what | ours | target | ratio")
    print(f"capacity: {args.clients} closed-loop clients x {args.rounds} rounds (rounds/s) | {capacity:.1f} "
          f"({n_ok}/{args.clients * args.rounds} in {cap['seconds']:.1f} s) | >= 0.7 x bound {bound:.1f} = "
          f"{0.7 * bound:.1f} | {capacity / bound:.2f}x bound")
    print(f"latency, open loop at {lat['arrival_rate']:.1f} rounds/s arriving (50% of capacity), {len(ms)} rounds: "
          f"p50 / p95 / p99 (ms) | {pct(ms, .5):.0f} / {pct(ms, .95):.0f} / {pct(ms, .99):.0f} | "
          "<= 150 / - / <= 400 | -")
    print(f"single client round p50 (ms) vs direct in-process call (decode + predict_explain + CAM payloads, one "
          f"image) | {pct(one, .5):.0f} | <= 1.2 x {direct_p50:.0f} = {1.2 * direct_p50:.0f} | "
          f"{pct(one, .5) / direct_p50:.2f}x")
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
