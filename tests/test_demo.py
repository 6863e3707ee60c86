"""`convlens demo`: one self-contained, offline HTML page with the tour's nine sections (run here
with ``--quick``: every section, with the least work that draws it), a progress line per section."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import signal
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from convlens.cli import main


class _Page(HTMLParser):
    """Collects section ids, every src/href attribute, and the img tags per section."""

    def __init__(self):
        super().__init__()
        self.sections: list[str] = []
        self.links: list[tuple[str, str, str]] = []  # (tag, attr, value)
        self.images: dict[str, list[str]] = {}
        self._section = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and a.get("id"):
            self._section = a["id"]
            self.sections.append(a["id"])
        for k, v in attrs:
            if k in ("src", "href", "srcset", "action", "data", "poster") and v is not None:
                self.links.append((tag, k, v))
        if tag == "img":
            self.images.setdefault(self._section, []).append(a.get("src") or "")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("demo") / "site"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["demo", "--out", str(out), "--json", "--quick"])
    html = (out / "index.html").read_text(encoding="utf-8") if (out / "index.html").exists() else ""
    page = _Page()
    page.feed(html)
    return {"code": code, "out": out, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(),
            "html": html, "page": page}


SECTIONS = ["kernels", "filters", "predictions", "journey", "cams", "faithfulness", "dreams", "training", "layers"]


def test_demo_runs_and_prints_json(demo):
    assert demo["code"] == 0, demo["stderr"]
    result = json.loads(demo["stdout"])  # --json: stdout is JSON and nothing else
    assert Path(result["report"]) == (demo["out"] / "index.html").resolve()
    assert result["model"] == "effnet-lite0" and result["seconds"] > 0 and result["quick"] is True
    assert list(result["sections"]) == SECTIONS and all(v >= 0 for v in result["sections"].values())
    assert sum(result["sections"].values()) <= result["seconds"]
    assert sorted(p.name for p in demo["out"].iterdir()) == ["index.html"]  # no temporary leftovers


def test_demo_prints_one_progress_line_per_section(demo):
    from convlens.report import DEMO_SECTIONS

    lines = [ln for ln in demo["stderr"].splitlines() if ln.startswith("demo [")]
    assert len(lines) == len(SECTIONS) + 1, demo["stderr"]  # the model, then each section once, in order
    assert re.fullmatch(r"demo \[0/9\] model effnet-lite0 loaded: \d+\.\d s", lines[0])
    for k, (line, key) in enumerate(zip(lines[1:], SECTIONS), 1):
        assert re.fullmatch(rf"demo \[{k}/9\] {re.escape(DEMO_SECTIONS[key])}: \d+\.\d s", line), line
    assert "Traceback" not in demo["stderr"]


def test_demo_has_the_sections_in_order(demo):
    assert demo["page"].sections == SECTIONS
    for anchor in SECTIONS:
        assert f'href="#{anchor}"' in demo["html"]


def test_demo_is_self_contained_and_offline(demo):
    links = demo["page"].links
    assert links, "no src/href attributes parsed"
    for tag, attr, value in links:
        assert not re.match(r"\s*(https?:)?//", value, re.I), (tag, attr, value)
        if tag == "img":
            assert value.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")), value[:40]
        else:
            assert value.startswith("#"), (tag, attr, value)
    assert "<link" not in demo["html"] and "<script src" not in demo["html"]  # stylesheet is inlined
    assert "<style" in demo["html"]
    assert "url(http" not in demo["html"].replace(" ", "")


def _decode(uri: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    img.load()
    return img


def _part(html: str, key: str) -> str:
    start = html.index(f'<section id="{key}"')
    return html[start:html.index("</section>", start)]


def test_demo_content_means_something(demo):
    page, html = demo["page"], demo["html"]
    # kernels lab: the named kernels and the 9x9 -> 7x7 -> 5x5 -> 3x3 arithmetic
    assert len(page.images["kernels"]) >= 7 and "sobel-x" in html and "vertical-edge" in html
    assert re.search(r"9\s*[x×]\s*9", html) and re.search(r"3\s*[x×]\s*3", html)
    # predictions: four photos, with the cat and the espresso recognised in words
    assert len(page.images["predictions"]) == 4
    pred = _part(html, "predictions")
    assert "espresso" in pred and re.search(r"tabby|tiger cat|Egyptian cat", pred)
    # the journey: one grid per conv/pool stage of the built-in model
    assert len(page.images["journey"]) == 9
    for name in ["conv_stem", "blocks.0", "blocks.6", "conv_head"]:
        assert f"<code>{name}</code>" in html
    grid = _decode(page.images["journey"][0])
    assert grid.width > 400 and grid.height > 200
    # layers: the table of every module
    layers = _part(html, "layers")
    assert "conv_stem" in layers and "classifier" in layers and "4,652,008" in html
    assert layers.count("<tr") >= 50
    for uri in page.images["predictions"] + page.images["kernels"][:2]:
        assert _decode(uri).size[0] > 0


def test_demo_filters_sit_beside_the_kernels_they_resemble(demo):
    part = _part(demo["html"], "filters")
    assert "<code>conv_stem</code>" in part and "32×3×3×3" in part and "cosine similarity" in part
    pairs, every = (_decode(u) for u in demo["page"].images["filters"])
    assert pairs.width > 500 and pairs.height > 250  # 4 filters (quick) x 3 rows: filter, summed, kernel
    assert every.width > 800 and every.height > 400  # all 32 filters, 8 a row


def test_demo_cams_show_each_method_and_two_classes(demo):
    part = _part(demo["html"], "cams")
    imgs = demo["page"].images["cams"]
    assert len(imgs) == 2 * 2 + 3  # quick: 2 photos x (gradcam, eigencam), then the pair and its two maps
    for method in ("gradcam", "eigencam"):
        assert f"<b>{method}</b> (<code>bn2</code>)" in part  # a sentence per method, with its layer
    assert "without gradients" in part and "mean gradient" in part
    assert re.search(r"<code>skimage\.data\.chelsea\(\)</code><br>(tiger cat|tabby)", part)
    assert "no photo with two animals" in part
    two = part[part.index("Two classes"):]
    assert re.search(r"gradcam</b> · (tiger cat|tabby).*gradcam</b> · espresso", two, re.S)
    sizes = {_decode(u).size for u in imgs[-3:]}
    assert len(sizes) == 1 and next(iter(sizes))[0] == next(iter(sizes))[1]  # the square pair, 3 times


def test_demo_faithfulness_dreams_and_training(demo):
    html, imgs = demo["html"], demo["page"].images
    faith = _part(html, "faithfulness")
    assert "Deletion" in faith and "insertion" in faith and "random" in faith and "centre" in faith
    assert re.search(r"best first by deletion: [a-z+]+( › [a-z+]+){2}", faith)  # gradcam, random, centre
    assert len(imgs["faithfulness"]) == 1 and _decode(imgs["faithfulness"][0]).height > 300
    dreams = _part(html, "dreams")
    assert "<code>blocks.4</code>" in dreams and "Only 2 steps" in dreams
    assert len(imgs["dreams"]) == 2 + 2  # quick: channels 0-1 and the photos' first two predicted classes
    assert "ch 0" in dreams and re.search(r"class \d+ (tiger cat|tabby)", dreams)
    training = _part(html, "training")
    acc = re.search(r"test accuracy <b>(\d+\.\d)%</b> on (\d+) images", training)
    assert acc and 0 <= float(acc.group(1)) <= 100 and int(acc.group(2)) > 100
    assert "digits" in training and "conv16" in training
    assert len(imgs["training"]) == 3  # curves, confusion matrix, top losses with Grad-CAM
    curves, confusion, losses = (_decode(u) for u in imgs["training"])
    assert curves.width > 600 and confusion.width > 400 and losses.height > 200


def test_tiny_settings_and_the_sections_table_agree():
    from convlens.report import DEMO_SECTIONS, TourSettings

    assert list(DEMO_SECTIONS) == SECTIONS
    full, quick = TourSettings(), TourSettings.quick()
    assert quick.vis_steps < full.vis_steps and quick.epochs < full.epochs
    assert quick.score_steps < full.score_steps and len(quick.cam_photos) < len(full.cam_photos)
    assert 2 <= len(full.score_methods) <= 3 and 2 <= full.score_photos <= 3  # the issue: 2-3 of each


def test_filter_kernel_figure_finds_a_planted_sobel():
    import torch
    from torch import nn

    from convlens.lens.filters import filters
    from convlens.models import wrap_module
    from convlens.report import filter_kernel_figure, nearest_pairs

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[2] = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 3  # the same on R, G, B
        net[0].weight[1, 0] = torch.tensor([[1.0, 1, 1], [0, 0, 0], [-1, -1, -1]]) * 0.01  # too weak to show
    grid = filters(wrap_module(net, input_size=(3, 16, 16)))
    assert grid.matches[2].kernel == "sobel-x" and abs(grid.matches[2].score - 1) < 1e-5
    assert nearest_pairs(grid, 8) == [2]  # the weak filter and the zero ones are left out
    with torch.no_grad():
        net[0].weight[1, 0] *= 100  # now as strong as the Sobel one, a horizontal edge but not quite:
        net[0].weight[1, 0, 2, 2] = -0.3  # both shown, the exact match first
    grid = filters(wrap_module(net, input_size=(3, 16, 16)))
    assert nearest_pairs(grid, 8) == [2, 1] and nearest_pairs(grid, 1) == [2]
    fig = filter_kernel_figure(grid, 8)
    assert fig.height > 250 and fig.getpixel((fig.width - 5, fig.height // 2)) == (255, 255, 255)


@pytest.mark.parametrize("case", ["out_is_a_file", "out_under_a_file", "unknown_model"])
def test_demo_bad_arguments_fail_fast_in_one_line(tmp_path, capsys, case):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should go")
    args = {"out_is_a_file": ["--out", str(blocker)],
            "out_under_a_file": ["--out", str(blocker / "sub")],
            "unknown_model": ["--out", str(tmp_path / "d"), "--model", "nope"]}[case]
    code = main(["demo", "--json", *args])
    cap = capsys.readouterr()
    assert code == 2 and cap.out == "" and "Traceback" not in cap.err
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convlens: error:")
    assert ("--out" in lines[0]) == (case != "unknown_model")
    assert blocker.read_text() == "a file where the folder should go" and not (tmp_path / "d").exists()


def test_interrupted_demo_leaves_nothing_and_says_so(tmp_path):
    out = tmp_path / "site"
    env = {**__import__("os").environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from convlens.cli import main; main()", "demo", "--quick",
                             "--json", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("demo [2/9]"):  # two sections done: the page is not written yet
            break
    else:
        proc.wait(timeout=60)
        pytest.fail("the demo ended before its second section: " + "".join(seen))
    proc.send_signal(signal.SIGTERM)
    err, stdout = proc.stderr.read(), proc.stdout.read()
    proc.wait(timeout=120)
    assert proc.returncode == 130 and stdout == "", err
    said = [ln for ln in err.splitlines() if ln.startswith("convlens:")]
    assert said == [f"convlens: interrupted; nothing was written to {out}"], err
    assert list(tmp_path.iterdir()) == []


def test_the_tour_of_a_model_that_is_not_imagenet(tmp_path):
    """Any model the CLI loads tours too: a small 3-class CNN (no ``blocks.4``, fewer than 5
    classes), every section drawn, the page never calling its classes ImageNet's."""
    import torch
    from torch import nn

    from convlens.models import wrap_module
    from convlens.report import TourSettings, demo_report

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))
    lm = wrap_module(net, input_size=(3, 32, 32), class_names=["ant", "bee", "wasp"], name="tiny")
    done: list[str] = []
    path = demo_report(tmp_path / "tour", lm, settings=TourSettings.quick(), done=lambda k, s: done.append(k))
    assert done == SECTIONS and path == tmp_path / "tour" / "index.html"
    html = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(html)
    assert page.sections == SECTIONS
    assert "ImageNet" not in html and "Top-3 classes of tiny" in html
    assert "its training data" in _part(html, "filters")
    dreams = _part(html, "dreams")
    assert "<code>3</code>" in dreams  # the default layer (the last conv), since there is no blocks.4
    assert len(page.images["predictions"]) == 4 and len(page.images["dreams"]) == 4
