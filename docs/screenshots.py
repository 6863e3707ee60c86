"""Regenerate the README screenshots of the web explorer (docs/explorer-*.png).

Starts the explorer on a free loopback port with a freshly trained digits run (or
``--runs DIR``), drives Debian's Chromium through Playwright and saves:

* ``docs/explorer-cam.png``: a sample photo, its top-5 predictions and the Grad-CAM overlay;
* ``docs/explorer-run.png``: a training run (metrics, curves, confusion, top losses).

    .venv/bin/python docs/screenshots.py [--runs DIR] [--epochs 12]
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def wait_js(page, expression: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not page.evaluate(f"() => Boolean({expression})"):
        if time.time() > deadline:
            raise TimeoutError(expression)
        page.wait_for_timeout(100)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", help="a folder of runs (default: train digits into a temporary one)")
    ap.add_argument("--epochs", type=int, default=12)
    args = ap.parse_args()

    import uvicorn
    from playwright.sync_api import sync_playwright

    from convlens.web import create_app

    runs = args.runs
    if runs is None:
        from convlens.train import train

        runs = tempfile.mkdtemp(prefix="convlens-shots-")
        train("digits", epochs=args.epochs, seed=0, out=str(Path(runs) / "digits-cnn"), progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(runs_dir=runs), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
            page.goto(f"http://127.0.0.1:{port}/")
            wait_js(page, "document.querySelector('#cam-caption').textContent.startsWith('gradcam')")
            page.wait_for_timeout(300)
            page.screenshot(path=str(HERE / "explorer-cam.png"))
            page.click("#tab-runs")
            page.wait_for_selector("#run-losses figure.loss")
            wait_js(page, "document.querySelector('#run-curves').naturalWidth > 0")
            page.screenshot(path=str(HERE / "explorer-run.png"), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
    print("wrote", HERE / "explorer-cam.png", HERE / "explorer-run.png")


if __name__ == "__main__":
    main()
