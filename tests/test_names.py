"""Names are data (issue 27, item 4): file, class and run names holding bytes that are not UTF-8
(carried by Python as lone surrogates, ``\\udcff``) or control characters (ANSI escapes, BEL,
newlines) are printed escaped by the CLI (``\\x1b``, ``\\xff``, ``\\n``), keep ``--json`` valid UTF-8
JSON, and never crash a figure, an HTML page or a Parquet shard.  The files are real, named with
``os.fsencode``-style bytes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from convlens.cli import main
from convlens.render.figures import agg_figure, figure_image
from convlens.render.files import figure_text, json_safe, shown, text_safe
from convlens.render.grid import grid, titled

TINY = "conv4-bn-pool-gap"
CLASSES = (b"caf\xe9", b"\x1b[31mred\x1b[0m", b"new\nline")  # Latin-1 bytes, an ANSI colour, a newline
FILE = b"img\xff%d\x1b]0;pwned\x07.png"  # a stray byte, and the escape that retitles a terminal


def _raw(text: str) -> bool:
    """Whether ``text`` holds anything a terminal would act on, or that is not Unicode text."""
    return any(c in text for c in "\x1b\x07\r") or any(0xD800 <= ord(c) <= 0xDFFF for c in text)


@pytest.fixture(scope="module")
def named(tmp_path_factory) -> tuple[Path, Path]:
    """A folder of 3 classes x 6 images with hostile names, and a tiny run trained on it."""
    from convlens.train import train

    root = tmp_path_factory.mktemp("names")
    data = os.path.join(os.fsencode(root), b"data")
    rng = np.random.default_rng(0)
    for cls in CLASSES:
        d = os.path.join(data, cls)
        os.makedirs(d)
        for i in range(6):
            img = Image.fromarray((rng.random((16, 16, 3)) * 255).astype("uint8"))
            img.save(os.fsdecode(os.path.join(d, FILE % i)), format="PNG")
    run = root / "run"
    train(f"folder:{os.fsdecode(data)}", arch=TINY, epochs=1, out=str(run), progress=False)
    return Path(os.fsdecode(data)), run


def test_shown_escapes_control_characters_and_stray_bytes_only():
    assert shown(os.fsdecode(b"caf\xe9/\x1b[31mred\x07\n.png")) == "caf\\xe9/\\x1b[31mred\\x07\\n.png"
    assert shown("été 猫 a b.png") == "été 猫 a b.png"  # ordinary names read as they are
    assert shown(Path(os.fsdecode(b"a\xff"))) == "a\\xff"
    assert text_safe(os.fsdecode(b"a\xff\n")) == "a\\xff\n"  # text: newlines kept, bytes shown
    assert figure_text("line\x1b\nnext\udcff") == "line\\x1b\nnext\\xff"
    assert json.dumps(json_safe({os.fsdecode(b"k\xff"): [os.fsdecode(b"v\xfe"), 1]})) == '{"k\\\\xff": ["v\\\\xfe", 1]}'


def test_figures_and_grids_draw_hostile_names(tmp_path):
    bad = os.fsdecode(b"caf\xe9 \x1b[31mred")
    fig = agg_figure((3, 2))
    ax = fig.subplots()
    ax.set_xticks([0, 1], labels=[bad, "ok"])
    ax.set_title(bad)
    fig.tight_layout()  # measures the text: FreeType refused the surrogate with a TypeError here
    assert figure_image(fig).size == (300, 200)
    cell = Image.new("RGB", (8, 8))
    assert grid([[cell, cell]], row_titles=[bad], col_titles=[[bad, "b\nc"]], title=bad, subtitle=bad).width > 0
    assert titled(cell, bad, bad, left=cell, left_caption=bad).width > 0


def test_predict_prints_names_escaped_and_json_stays_utf8(named, capsys):
    data, run = named
    assert main(["predict", str(data), "--model", str(run)]) == 0
    out = capsys.readouterr().out
    assert not _raw(out), out
    assert "img\\xff0\\x1b]0;pwned\\x07.png" in out and "\\x1b[31mred\\x1b[0m" in out and "new\\nline" in out
    assert main(["predict", str(data), "--model", str(run), "--json"]) == 0
    text = capsys.readouterr().out
    text.encode("utf-8")  # strict: no lone surrogate reached stdout
    assert "\\udc" not in text  # nor a lone-surrogate escape inside the JSON
    rows = json.loads(text)
    labels = {p["label"] for r in rows for p in r["predictions"]}
    assert labels == {"caf\\xe9", "\x1b[31mred\x1b[0m", "new\nline"}  # JSON escapes the control characters
    assert {r["image"].rsplit("/", 1)[-1] for r in rows} >= {"img\\xff0\x1b]0;pwned\x07.png"}


def test_an_error_naming_a_hostile_file_is_one_escaped_line(named, capsys):
    data, run = named
    bad = os.fsdecode(os.path.join(os.fsencode(data), b"missing\x1b[2J\xff.png"))
    code = main(["predict", bad, "--model", str(run)])
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("convlens: error:") and not _raw(err), err
    assert "missing\\x1b[2J\\xff.png" in err


def test_evaluate_and_report_of_a_run_with_hostile_class_names(named, tmp_path, capsys):
    data, run = named
    assert main(["evaluate", str(run), "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert not _raw(out) and "caf\\xe9" in out
    assert Image.open(tmp_path / "ev" / "confusion.png").size[0] > 100
    assert Image.open(tmp_path / "ev" / "top_losses.png").size[0] > 100
    json.loads((tmp_path / "ev" / "metrics.json").read_bytes().decode("utf-8"))
    assert main(["report", "--run", str(run), "--out", str(tmp_path / "rep"), "--json"]) == 0
    capsys.readouterr()
    html = (tmp_path / "rep" / "index.html").read_bytes().decode("utf-8")  # strict UTF-8
    assert "caf\\xe9" in html and "\\x1b[31mred" in html and not _raw(html)


def test_audit_of_files_with_non_utf8_names(named, tmp_path, capsys):
    data, run = named
    out = tmp_path / "aud"
    assert main(["audit", str(data), "--model", str(run), "--out", str(out), "--json"]) == 0
    text = capsys.readouterr().out
    text.encode("utf-8")
    assert json.loads(text)["images"] == 18
    ids = [i for p in sorted((out / "shards").glob("*.parquet")) for i in pq.read_table(p).column("id").to_pylist()]
    assert len(ids) == 18 and all("\\xff" in i for i in ids)
    json.loads((out / "summary.json").read_bytes().decode("utf-8"))
    assert "caf\\xe9" in (out / "index.html").read_bytes().decode("utf-8")
