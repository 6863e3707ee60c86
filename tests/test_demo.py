"""`convlens demo`: one self-contained, offline HTML page with the four sections."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
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
        code = main(["demo", "--out", str(out), "--json"])
    html = (out / "index.html").read_text(encoding="utf-8") if (out / "index.html").exists() else ""
    page = _Page()
    page.feed(html)
    return {"code": code, "out": out, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(),
            "html": html, "page": page}


def test_demo_runs_and_prints_json(demo):
    assert demo["code"] == 0, demo["stderr"]
    result = json.loads(demo["stdout"])  # --json: stdout is JSON and nothing else
    assert Path(result["report"]) == (demo["out"] / "index.html").resolve()
    assert result["model"] == "effnet-lite0" and result["seconds"] > 0
    assert sorted(p.name for p in demo["out"].iterdir()) == ["index.html"]  # no temporary leftovers


def test_demo_has_the_four_sections_in_order(demo):
    assert demo["page"].sections == ["kernels", "predictions", "journey", "layers"]
    for anchor in ("#kernels", "#predictions", "#journey", "#layers"):
        assert f'href="{anchor}"' in demo["html"]


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


def test_demo_content_means_something(demo):
    page, html = demo["page"], demo["html"]
    # kernels lab: the named kernels and the 9x9 -> 7x7 -> 5x5 -> 3x3 arithmetic
    assert len(page.images["kernels"]) >= 7 and "sobel-x" in html and "vertical-edge" in html
    assert re.search(r"9\s*[x×]\s*9", html) and re.search(r"3\s*[x×]\s*3", html)
    # predictions: four photos, with the cat and the espresso recognised in words
    assert len(page.images["predictions"]) == 4
    pred = html[html.index('id="predictions"'):html.index('id="journey"')]
    assert "espresso" in pred and re.search(r"tabby|tiger cat|Egyptian cat", pred)
    # the journey: one grid per conv/pool stage of the built-in model
    assert len(page.images["journey"]) == 9
    for name in ["conv_stem", "blocks.0", "blocks.6", "conv_head"]:
        assert f"<code>{name}</code>" in html
    grid = _decode(page.images["journey"][0])
    assert grid.width > 400 and grid.height > 200
    # layers: the table of every module
    layers = html[html.index('id="layers"'):]
    assert "conv_stem" in layers and "classifier" in layers and "4,652,008" in html
    assert layers.count("<tr") >= 50
    for uri in page.images["predictions"] + page.images["kernels"][:2]:
        assert _decode(uri).size[0] > 0


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
