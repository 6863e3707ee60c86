"""`convlens report`: self-contained HTML for images explained and for a training run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from convlens.cli import main


def assert_self_contained(html: str) -> None:
    """One file: every image is a data: URI, no scripts, nothing fetched from a network."""
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert "<script" not in html and "<link" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_images_report_via_cli(tmp_path, sample_photos, capsys):
    out = tmp_path / "rep"
    code = main(["report", str(sample_photos["chelsea"]), str(sample_photos["coffee"]), "--out", str(out),
                 "--method", "gradcam", "--top-k", "3", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    info = json.loads(captured.out)
    assert info["kind"] == "images" and Path(info["report"]) == (out / "index.html").resolve()
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]  # one file, no temporaries left
    html = (out / "index.html").read_text()
    assert_self_contained(html)
    assert html.count('class="cam"') == 2 and "chelsea.png" in html and "coffee.png" in html
    assert "tiger cat" in html or "tabby" in html  # the cat is recognised
    assert "espresso" in html or "cup" in html
    assert "gradcam" in html and "bn2" in html


def test_run_report(tmp_path):
    from convlens.report import report
    from web_support import runs_root

    run = runs_root() / "digits-tiny"
    path = report(run=run, out=tmp_path / "run-report", top_n=4)
    html = path.read_text()
    assert_self_contained(html)
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"{100 * metrics['accuracy']:.1f}%" in html  # re-evaluated on the same split: same number
    assert html.count("<tr><td>") == 10  # one per-class row per digit
    for section in ("History", "Confusion matrix", "Top losses"):
        assert section in html
    assert "Grad-CAM for the true and for the predicted class" in html


@pytest.mark.parametrize("args, words", [
    (["report"], "exactly one"),
    (["report", "a.png", "--run", "somewhere"], "exactly one"),
    (["report", "--run", "."], "not a run directory"),
    (["report", "--demo", "--run", "x"], "exactly one"),
    (["report", "NOFILE.png"], "no such file"),
    (["report", "{cat}", "--method", "gradcam,nope"], "unknown --method 'nope'"),
    (["report", "{cat}", "--top-k", "0"], "--top-k"),
])
def test_report_bad_input(tmp_path, sample_photos, capsys, args, words):
    out = tmp_path / "never"
    args = [a.replace("{cat}", str(sample_photos["chelsea"])) for a in args] + ["--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_not_an_image_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    out = tmp_path / "out"
    assert main(["report", str(bad), "--out", str(out)]) == 2
    assert "not an image" in capsys.readouterr().err and not out.exists()


def test_the_report_verb_and_its_module_are_one_name():
    """``cl.report(...)`` is the verb whether or not ``convlens.report`` (the module) was imported."""
    import convlens as cl
    import convlens.report as module
    from convlens.errors import SpecError

    assert callable(cl.report) and callable(module)
    for verb in (cl.report, module, module.report):
        with pytest.raises(SpecError, match="exactly one"):
            verb()
