"""The explorer in a real browser: Debian's Chromium driven by Python Playwright.

One server (uvicorn on a free loopback port) and one browser per module.  Every
test records the requests the page makes and checks that none leaves the server.
Screenshots land in tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = next((p for p in (os.environ.get("CONVLENS_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p and Path(p).exists()), None)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
TIMEOUT = 90_000  # ms: the CI box has 2 cores shared with everything else

if CHROMIUM is None:
    pytest.skip("no Chromium found (install Debian's `chromium`; `make test` does it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="python playwright is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(app):
    """Run ``app`` under uvicorn on a free loopback port; yields its base URL."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        if time.time() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def server(builtin_model):
    from convlens.web import create_app
    from web_support import runs_root

    yield from serve(create_app(models=[builtin_model], runs_dir=runs_root()))


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(browser, server):
    """One page for the whole tour (the steps build on each other, like a person clicking)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, device_scale_factor=1)
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT)
    pg.requests = []  # every URL the page asked for
    pg.console_errors = []
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.on("console", lambda m: m.type == "error" and pg.console_errors.append(m.text))
    pg.goto(server + "/")
    yield pg
    context.close()


def wait_js(page, expression: str, timeout: float = TIMEOUT / 1000) -> None:
    """Poll a JS expression until truthy.  (Playwright's wait_for_function evaluates its
    predicate with eval(), which the page's CSP forbids: that is the point of the CSP.)"""
    deadline = time.time() + timeout
    while True:
        if page.evaluate(f"() => Boolean({expression})"):
            return
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for: {expression}")
        page.wait_for_timeout(100)


def outside(urls: list[str], server: str) -> list[str]:
    return [u for u in urls if not (u.startswith(server + "/") or u.startswith("data:") or u.startswith("blob:"))]


def bar_labels(page) -> list[str]:
    return page.locator("#predictions .bar .label").all_inner_texts()


def test_page_loads_sample_and_predictions(page, server):
    page.wait_for_selector("#predictions .bar")
    # the Content-Security-Policy is in force: no eval, no inline script
    inline_ran = page.evaluate("() => { const s = document.createElement('script');"
                               " s.textContent = 'window.__inline = 1'; document.head.append(s);"
                               " return window.__inline === 1; }")
    assert inline_ran is False
    page.wait_for_timeout(100)
    assert any("Content Security Policy" in e for e in page.console_errors)
    page.console_errors.clear()
    assert page.locator("#predictions .bar").count() == 5
    assert "cat" in bar_labels(page)[0].lower()  # chelsea, the first sample, is a tabby
    assert page.locator(".sample.active").get_attribute("data-id") == "sample:chelsea"
    page.locator(".sample[data-id='sample:coffee']").click()
    wait_js(page, "document.querySelector('#current-name').textContent === 'coffee.png'")
    wait_js(page, "[...document.querySelectorAll('#predictions .label')].some(e => /espresso|cup/.test(e.textContent))")
    assert outside(page.requests, server) == []


def test_cam_switch_method_and_target(page, server):
    page.locator(".sample[data-id='sample:chelsea']").click()
    wait_js(page, "document.querySelector('#current-name').textContent === 'chelsea.png'")
    page.locator("#tab-cam").click()
    wait_js(page, "document.querySelector('#cam-caption').textContent.startsWith('gradcam')"
                           " && document.querySelector('#cam-caption').textContent.includes('chelsea')")
    grad = page.locator("#cam-heat").get_attribute("src")
    assert grad.startswith("data:image/png;base64,")
    layers = page.locator("#cam-layer option").all_inner_texts()  # what it can map, with the grid
    assert layers[0] == "auto (bn2)" and "bn2 · BatchNormAct2d · 7x7 grid · 1280 ch" in layers
    assert not any(t.startswith(("global_pool", "classifier")) for t in layers)
    assert "tiger cat" in page.locator("#cam-target").inner_text()

    page.select_option("#cam-method", "eigencam")
    wait_js(page, "document.querySelector('#cam-caption').textContent.startsWith('eigencam')")
    eigen = page.locator("#cam-heat").get_attribute("src")
    assert eigen != grad  # another method, another picture

    page.select_option("#cam-method", "gradcam")
    wait_js(page, "document.querySelector('#cam-caption').textContent.startsWith('gradcam')")
    second = page.locator("#predictions .bar").nth(1)
    label = second.locator(".label").inner_text()
    second.click()
    wait_js(page, f"document.querySelector('#cam-target').textContent.includes({label!r})")
    assert page.locator("#predictions .bar.active").count() == 1

    page.locator("#cam-alpha").fill("0.8")
    assert page.evaluate("getComputedStyle(document.querySelector('#cam-heat')).opacity") == "0.8"
    page.screenshot(path=str(ARTIFACTS / "explorer-cam.png"), full_page=True)
    assert outside(page.requests, server) == []


def test_upload_a_file(page, server, sample_photos):
    page.set_input_files("#file", str(sample_photos["astronaut"]))
    wait_js(page, "document.querySelector('#current-name').textContent === 'astronaut.png'")
    wait_js(page, "document.querySelector('#cam-caption').textContent.includes('astronaut')")  # CAM follows
    assert page.locator(".sample.active").count() == 0
    assert page.locator("#error").is_hidden()


def test_upload_a_bad_file_shows_the_error(page, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a picture")
    page.set_input_files("#file", str(bad))
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert "notes.png" in error.inner_text() and "not an image" in error.inner_text()
    page.screenshot(path=str(ARTIFACTS / "explorer-bad-upload.png"))


def test_journey_slider_and_channel(page, server):
    page.locator(".sample[data-id='sample:chelsea']").click()
    page.locator("#tab-journey").click()
    page.wait_for_selector("#journey-tiles .channel")
    assert "conv_stem" in page.locator("#journey-layer").inner_text()
    assert page.locator("#journey-tiles .channel").count() == 32
    page.locator("#journey-slider").fill("4")
    wait_js(page, "document.querySelector('#journey-layer').textContent.includes('blocks.3')")
    wait_js(page, "document.querySelectorAll('#journey-tiles .channel').length === 48")
    page.locator("#journey-tiles .channel").nth(5).click()
    page.locator("#journey-big").wait_for(state="visible")
    assert "channel 5" in page.locator("#journey-big-caption").inner_text()
    page.screenshot(path=str(ARTIFACTS / "explorer-journey.png"))
    assert outside(page.requests, server) == []


def test_late_predictions_keep_the_journey_layer_the_slider_chose(page, server):
    """Predictions arriving after the user moved the slider refresh the view: the refresh asks for
    the layer the slider shows (it used to ask for the previous one and win the race)."""
    held: dict[str, list] = {"predict": [], "journey": []}
    released = {"predict": False, "journey": False}

    def hold(kind):
        def handler(route):
            if released[kind]:
                route.continue_()
            else:
                held[kind].append(route)
        return handler

    def release(kind):
        released[kind] = True
        for route in held[kind]:
            route.continue_()

    page.route("**/api/predict", hold("predict"))
    page.route(lambda url: "/api/journey?" in url and "blocks.3" in url, hold("journey"))
    page.locator(".sample[data-id='sample:chelsea']").click()
    page.locator("#tab-journey").click()
    page.wait_for_selector("#journey-tiles .channel")
    page.locator("#journey-slider").fill("4")
    while not held["journey"]:  # the slider's request is on its way (and held)
        page.wait_for_timeout(50)
    release("predict")  # the predictions land now: the page refreshes its view
    wait_js(page, "document.querySelectorAll('#predictions .bar').length > 0")
    release("journey")
    wait_js(page, "!document.querySelector('#journey-status').textContent.includes('computing')")
    assert "blocks.3" in page.locator("#journey-layer").inner_text()


def test_kernels_lab_updates_live(page, server):
    page.locator("#tab-kernels").click()
    page.wait_for_selector("#kernel-stages figure.stage")
    first = page.locator("#kernel-stages .shape").last.inner_text()
    page.locator("#kernel-stride").fill("2")
    wait_js(page, f"document.querySelector('#kernel-stages .shape:last-of-type') &&"
                           f" [...document.querySelectorAll('#kernel-stages .shape')].pop().textContent !== {first!r}")
    h, w = (int(v) for v in first.split("×"))
    assert page.locator("#kernel-stages .shape").last.inner_text() == f"{(h - 1) // 2 + 1}×{(w - 1) // 2 + 1}"
    page.select_option("#kernel-pool", "max")
    wait_js(page, "document.querySelectorAll('#kernel-stages figure.stage').length === 2")
    page.locator("#kernel-matrix input").first.fill("abc")
    page.locator("#error").wait_for(state="visible")
    assert "abc" in page.locator("#error").inner_text()
    page.locator("#kernel-matrix input").first.fill("1")
    page.locator("#error").wait_for(state="hidden")
    page.select_option("#kernel-name", "sobel-x")
    wait_js(page, "document.querySelector('#kernel-status').textContent.includes('sobel-x')")
    page.screenshot(path=str(ARTIFACTS / "explorer-kernels.png"))
    assert outside(page.requests, server) == []


def test_open_a_run(page, server):
    page.locator("#tab-runs").click()
    page.wait_for_selector(".run-card[data-run='digits-tiny'].active")
    assert page.locator("#run-title").inner_text() == "digits-tiny"
    assert page.locator("#run-confusion tbody tr").count() == 10
    assert page.locator("#run-per-class tbody tr").count() == 10
    page.wait_for_selector("#run-losses figure.loss")
    assert page.locator("#run-losses figure.loss").count() == 8
    wait_js(page, "document.querySelector('#run-curves').complete"
                  " && document.querySelector('#run-curves').naturalWidth > 0")
    page.screenshot(path=str(ARTIFACTS / "explorer-run.png"), full_page=True)
    page.locator("#run-use").click()
    wait_js(page, "document.querySelector('#model').value === 'run:digits-tiny'")
    wait_js(page, "document.querySelectorAll('#predictions .bar').length === 5"
                           " && /^[0-9]$/.test(document.querySelector('#predictions .label').textContent)")
    assert outside(page.requests, server) == []
    # the only console errors are the deliberate bad requests (4xx) of the tests above
    assert all("status of 4" in e for e in page.console_errors), page.console_errors


def test_pick_two_runs_and_compare_them(browser, builtin_model, tmp_path):
    from convlens.train import train
    from convlens.web import create_app
    from web_support import runs_root

    root = tmp_path / "runs"
    shutil.copytree(runs_root() / "digits-tiny", root / "digits-tiny")
    train("digits", arch="fc32", epochs=2, batch_size=64, seed=0, out=str(root / "digits-dense"), progress=False)
    for url in serve(create_app(models=[builtin_model], runs_dir=root)):
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        pg = context.new_page()
        pg.set_default_timeout(TIMEOUT)
        requests: list[str] = []
        pg.on("request", lambda r, requests=requests: requests.append(r.url))  # this page's list
        pg.goto(url + "/")
        pg.locator("#tab-runs").click()
        pg.wait_for_selector("#compare-form:not([hidden])")
        assert pg.locator("#compare-a option").count() == 2
        assert pg.locator("#compare-a").input_value() != pg.locator("#compare-b").input_value()
        pg.locator("#compare-go").click()
        wait_js(pg, "!document.querySelector('#compare').hidden && document.querySelector('#compare-figure').complete"
                    " && document.querySelector('#compare-figure').naturalWidth > 0")
        assert pg.locator("#compare-table tbody tr").count() == 2
        assert " vs " in pg.locator("#compare-title").inner_text()
        pg.locator("#compare").screenshot(path=str(ARTIFACTS / "explorer-compare.png"))
        # the same run twice is refused in the page, before any request
        pg.select_option("#compare-b", pg.locator("#compare-a").input_value())
        pg.locator("#compare-go").click()
        wait_js(pg, "document.querySelector('#error')"
                    " && document.querySelector('#error').textContent.includes('two different')")
        assert outside(requests, url) == []
        context.close()


def test_report_opens_offline_in_chromium(browser, builtin_model, sample_photos, tmp_path):
    from convlens.report import explained_report, run_report
    from web_support import runs_root

    reports = [run_report(runs_root() / "digits-tiny", tmp_path / "run", top_n=3),
               explained_report([sample_photos["chelsea"]], tmp_path / "images", builtin_model, methods="gradcam")]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    requests: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    for path in reports:
        pg.goto(path.resolve().as_uri())
        pg.wait_for_load_state("load")
        images = pg.evaluate("() => [...document.images].map(i => [i.complete, i.naturalWidth])")
        assert images and all(done and width > 0 for done, width in images)  # every picture decodes
        pg.screenshot(path=str(ARTIFACTS / f"report-{path.parent.name}.png"), full_page=True)
    context.close()
    assert [u for u in requests if not u.startswith("data:")] == [p.resolve().as_uri() for p in reports]


def test_the_demo_tour_opens_offline_with_every_section_drawn(browser, tmp_path):
    """`make demo`'s page in Chromium: the nine sections (kernels to layers) are there and
    visible, every image of each decodes, and the page asks for nothing but itself."""
    import contextlib
    import io

    from convlens.cli import main

    out = tmp_path / "demo"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["demo", "--out", str(out), "--quick"]) == 0
    page_url = (out / "index.html").resolve().as_uri()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    requests: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.goto(page_url)
    pg.wait_for_load_state("load")
    # the big grids load lazily: scroll through the page as a reader does, then every image is in
    for i in range(pg.locator("section[id]").count()):
        pg.locator("section[id]").nth(i).scroll_into_view_if_needed()
    wait_js(pg, "[...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout=30)
    sections = pg.evaluate("""() => [...document.querySelectorAll('section[id]')].map(s => [s.id,
        s.getBoundingClientRect().height, [...s.querySelectorAll('img')].map(i => [i.complete, i.naturalWidth])])""")
    names = [s[0] for s in sections]
    for want in ["kernels", "filters", "predictions", "journey", "cams", "faithfulness", "dreams", "training",
                 "layers"]:
        assert want in names, names
    for name, height, images in sections:
        assert height > 40, f"section {name} is not drawn ({height} px)"
        assert all(done and width > 0 for done, width in images), f"section {name}: an image did not decode"
        if name != "layers":
            assert images, f"section {name} has no picture"
    for name in ("cams", "training"):
        pg.locator(f"section#{name}").screenshot(path=str(ARTIFACTS / f"demo-{name}.png"))
    context.close()
    assert [u for u in requests if not u.startswith("data:")] == [page_url]


@pytest.mark.parametrize("w, h", [(28, 28), (64, 60), (224, 224)])
def test_cam_view_says_no_positive_evidence_in_words(browser, tmp_path, w, h):
    """A map with no positive evidence (the planted tiny model's predicted class) is shown with the
    picture washed out and the note written as text over it, readable at 28x28 as at 224x224."""
    from convlens.web import create_app
    from test_polish import picture, tiny

    path = tmp_path / f"pic{w}x{h}.png"
    picture(w, h).save(path)
    for base in serve(create_app(models=[tiny(h, w)])):
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
        pg = context.new_page()
        pg.set_default_timeout(TIMEOUT)
        pg.goto(base + "/")
        pg.set_input_files("#file", str(path))
        wait_js(pg, f"document.querySelector('#current-name').textContent === {path.name!r}")
        pg.locator("#tab-cam").click()
        wait_js(pg, "document.querySelector('#cam-caption').textContent.includes(" + repr(path.name) + ")")
        note = pg.locator("#cam-empty")
        assert note.is_visible() and note.inner_text() == "no positive evidence for this class"
        box = note.bounding_box()
        assert box["width"] >= 150 and box["height"] >= 14  # text at the page's size, not the picture's
        assert "empty" in pg.locator("#cam-stack").get_attribute("class")
        assert not pg.locator("#cam-heat").is_visible()  # no colour map's lowest colour passed off as a map
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        pg.locator("#view-cam").screenshot(path=str(ARTIFACTS / f"explorer-cam-empty-{w}x{h}.png"))
        context.close()
