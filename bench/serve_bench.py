"""Load test of `convlens serve`: concurrent clients doing predict + Grad-CAM on a 224 image.

Starts the real server (`convlens serve`, loopback only, a free port) in a subprocess,
then runs CLIENTS concurrent clients x REQUESTS rounds; a round is
``POST /api/predict`` (a fresh 224x224 PNG upload, so no cache can answer) followed by
``GET /api/cam`` (Grad-CAM of the top class) on the returned image id.  It prints
p50/p95 of each request kind and of the round, the status codes (5xx other than the
deliberate 503 of a full queue count as failures), the server's memory before and
after, and one line per comparison against the peer: the same predict + Grad-CAM
called directly in one process, one image at a time (no HTTP, no batching).

    .venv/bin/python bench/serve_bench.py [--clients 20] [--requests 50] [--queue 32] [--quick]

``--quick``: 20 clients x 10 rounds, 5 direct calls, no extra waves (about a minute).

Never part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
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


def base_image() -> np.ndarray:
    from skimage import data

    return np.asarray(Image.fromarray(data.chelsea()).resize((224, 224), Image.Resampling.BILINEAR))


def variant(base: np.ndarray, k: int) -> bytes:
    """The base photo with a few pixels changed: a different upload (and id) each time."""
    arr = base.copy()
    arr[k % 224, (k // 224) % 224] = [(k * 37) % 256, (k * 91) % 256, (k * 13) % 256]
    arr[0, 0, 0] = k % 256
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def direct_baseline(n: int) -> float:
    """Median ms of predict + Grad-CAM called in-process, one image at a time."""
    from convlens.lens.cam import explain
    from convlens.models import load_model

    m = load_model()
    base = base_image()
    times = []
    for k in range(n + 2):
        img = Image.open(io.BytesIO(variant(base, 10_000 + k)))
        t0 = time.perf_counter()
        m.predict([img], top_k=5)
        explain(m, [img], method="gradcam")
        if k >= 2:
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def _ok(resp, out: dict) -> bool:
    """Count the status; on a non-200 wait as asked (503 ``Retry-After``) and say so."""
    out["status"][resp.status_code] = out["status"].get(resp.status_code, 0) + 1
    if resp.status_code == 200:
        return True
    await asyncio.sleep(float(resp.headers.get("retry-after", "1")) if resp.status_code == 503 else 0)
    return False


async def client(c, cid: int, rounds: int, base: np.ndarray, out: dict) -> None:
    for r in range(rounds):
        k = cid * 100_000 + r
        t0 = time.perf_counter()
        resp = await c.post("/api/predict", files={"file": (f"c{cid}-{r}.png", variant(base, k), "image/png")})
        t1 = time.perf_counter()
        if not await _ok(resp, out):
            continue
        out["predict"].append((t1 - t0) * 1000)
        image_id = resp.headers["x-convlens-image"]
        resp = await c.get("/api/cam", params={"image": image_id, "method": "gradcam"})
        t2 = time.perf_counter()
        if not await _ok(resp, out):
            continue
        out["cam"].append((t2 - t1) * 1000)
        out["round"].append((t2 - t0) * 1000)


async def load(url: str, clients: int, rounds: int) -> dict:
    import httpx

    base = base_image()
    out: dict = {"predict": [], "cam": [], "round": [], "status": {}}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c, i, rounds, base, out) for i in range(clients)))
        out["seconds"] = time.perf_counter() - t0
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=50, help="rounds (predict + cam) per client")
    ap.add_argument("--queue", type=int, default=32, help="the server's --queue")
    ap.add_argument("--baseline", type=int, default=20, help="direct calls for the peer median")
    ap.add_argument("--waves", type=int, default=3, help="extra waves after the run, to watch memory")
    ap.add_argument("--quick", action="store_true", help="a short run: 10 rounds per client, 5 direct calls, no waves")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.baseline, args.waves = 10, 5, 0

    print(f"# serve bench: {args.clients} clients x {args.requests} rounds of predict + Grad-CAM on a 224x224 "
          f"PNG, queue {args.queue}, {os.cpu_count()} CPUs, torch threads default; load avg "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    direct = direct_baseline(args.baseline)

    port = free_port()
    exe = Path(sys.executable).with_name("convlens")
    proc = subprocess.Popen([str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--queue", str(args.queue)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
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
        asyncio.run(load(url, 4, 2))  # warm-up: first forward/backward, allocator
        rss0 = rss_mb(proc.pid)
        res = asyncio.run(load(url, args.clients, args.requests))
        rss1 = rss_mb(proc.pid)
        waves = []  # more waves of the same load: the memory should level off, not keep growing
        for _ in range(args.waves):
            asyncio.run(load(url, args.clients, max(1, args.requests // 5)))
            waves.append(rss_mb(proc.pid))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    st = res["status"]
    bad = sum(v for k, v in st.items() if k >= 500 and k != 503)
    n_ok = len(res["round"])
    print(f"statuses {dict(sorted(st.items()))}; 5xx other than 503: {bad}; rounds ok {n_ok}/"
          f"{args.clients * args.requests} in {res['seconds']:.1f} s ({2 * n_ok / res['seconds']:.1f} req/s)")
    print(f"server RSS: {rss0:.0f} MB after warm-up, {rss1:.0f} MB after the run, then after each further wave of "
          f"{args.clients} x {max(1, args.requests // 5)} rounds: " + ", ".join(f"{w:.0f}" for w in waves) + " MB")
    p50, p95 = pct(res["round"], 0.5), pct(res["round"], 0.95)
    print("what | ours | peer | ratio")
    print(f"predict p50 / p95 (ms, HTTP, {args.clients} concurrent) | {pct(res['predict'], .5):.0f} / "
          f"{pct(res['predict'], .95):.0f} | - | -")
    print(f"grad-cam p50 / p95 (ms, HTTP, {args.clients} concurrent) | {pct(res['cam'], .5):.0f} / "
          f"{pct(res['cam'], .95):.0f} | - | -")
    print(f"predict+grad-cam round p50 (ms) vs direct in-process call, one client | {p50:.0f} | {direct:.0f} | "
          f"{p50 / direct:.2f}")
    print(f"predict+grad-cam round p95 (ms) | {p95:.0f} | - | -")
    per_round_ms = res["seconds"] * 1000 / max(1, n_ok)
    print(f"server time per round at {args.clients} concurrent (ms, throughput) vs direct one-at-a-time | "
          f"{per_round_ms:.0f} | {direct:.0f} | {per_round_ms / direct:.2f}")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
