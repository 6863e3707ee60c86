"""Issue 30, no silent surprises: an all-zero CAM is drawn with a note and flagged, the raw CAM grid
(e.g. 7x7) can be shown as the lecture did, and a boxes file may cover more images than those scored.

The models are tiny convnets with a planted head: class 0 weighs every channel positively (a map
with positive evidence), class 1 negatively after a ReLU (Grad-CAM's weighted sum is <= 0
everywhere, so its ReLU leaves nothing: no positive evidence), and class 1 is the predicted one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from convlens.cli import main
from convlens.errors import SpecError
from convlens.lens.cam import explain
from convlens.lens.score import score
from convlens.models.lensmodel import LensModel
from convlens.models.preprocess import Preprocess
from convlens.render.overlay import NO_EVIDENCE, is_empty, mark_empty, overlay
from convlens.report import explained_report

INK = (33, 37, 41)  # the note's text colour


def tiny(h: int, w: int, c: int = 3) -> LensModel:
    """A convnet for ``h`` x ``w`` inputs whose last feature map is (h/4) x (w/4) (7x7 at 28x28)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=4, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    with torch.no_grad():
        net[-1].weight[0] = net[-1].weight[0].abs() + 0.1
        net[-1].weight[1] = -(net[-1].weight[1].abs() + 0.1)
        net[-1].bias[1] = 10.0  # the predicted class, with no positive evidence anywhere
    pre = Preprocess(input_size=(c, h, w), mean=(0.5,) * c, std=(0.5,) * c, crop_pct=1.0)
    return LensModel(net, pre, ["open", "closed", "other"], name="tiny")


def picture(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8))


def ink(img: Image.Image) -> int:
    """Pixels in the note's exact text colour (a grey picture never has them)."""
    return int((np.asarray(img.convert("RGB")) == INK).all(-1).sum())


def blue_cast(img: Image.Image) -> float:
    """Mean blue minus mean red: jet's lowest colour is dark blue."""
    a = np.asarray(img.convert("RGB")).astype(float)
    return float(a[..., 2].mean() - a[..., 0].mean())


# -- 1. an all-zero map is noted and flagged --------------------------------------------------

@pytest.mark.parametrize("w, h, c", [(28, 28, 1), (64, 60, 3), (224, 224, 3)])
def test_empty_map_is_flagged_and_drawn_with_a_note(w, h, c):
    ex = explain(tiny(h, w, c), [picture(w, h)], target=[0, 1])
    assert not ex.empty(0, 0) and ex.empty(0, 1)
    t = ex.to_dict()["images"][0]["targets"]
    assert (t[0]["empty"], t[1]["empty"]) == (False, True) and t[1]["empties"] == {"gradcam": True}
    assert [r["empty"] for r in ex.records()] == [False, True]
    # the overlay: grey (no dark-blue cast), its size kept, the note written where it can be read
    ov = ex.overlay(0, 1)
    assert abs(blue_cast(ov)) < 3 and ov.size == (w, h) and (ink(ov) > 20) == (w >= 64)
    assert ink(ex.overlay(0, 1, note=False)) == 0 and ink(ex.overlay(0, 0)) == 0
    assert blue_cast(ex.overlay(0, 0)) != pytest.approx(0, abs=3)  # a real map keeps its colours
    # the figure: the empty cell is grey with the note; the legend says what grey means
    fig = ex.figure(0)
    cells = ex.figure(0)  # same figure twice: deterministic
    assert np.array_equal(np.asarray(fig), np.asarray(cells))
    right = fig.crop((fig.width * 2 // 3 + 10, 40, fig.width - 10, fig.height - 60))
    assert ink(right) > 50 and abs(blue_cast(right)) < 3


def test_overlay_of_an_empty_heatmap():
    pic = Image.new("RGB", (100, 80), (120, 90, 60))
    zero = np.zeros((7, 7), np.float32)
    assert is_empty(zero) and is_empty(torch.zeros(3, 3)) and not is_empty(np.eye(3))
    assert is_empty(np.full((2, 2), np.nan))
    out = overlay(pic, zero)
    assert out.size == pic.size and ink(out) > 20 and abs(blue_cast(out)) < 3
    assert ink(overlay(pic, zero, note=False)) == 0
    assert ink(overlay(pic.resize((40, 32)), zero)) == 0  # too small to write on: grey only, size kept
    assert np.array_equal(np.asarray(overlay(pic, zero, alpha=0.0)), np.asarray(pic))
    small = mark_empty(Image.new("RGB", (28, 28), "grey"))
    assert small.size == (224, 224) and ink(small) > 20


def test_report_cam_panels_note_an_empty_map(tmp_path):
    lm = tiny(28, 28, 1)
    path = tmp_path / "digit.png"
    picture(28, 28).convert("L").save(path)
    html = explained_report([str(path)], tmp_path / "rep", model=lm).read_text()
    assert NO_EVIDENCE in html and "closed" in html


# -- 2. the raw CAM grid ------------------------------------------------------------------------

def test_raw_grid_is_kept_and_drawn_crisp():
    ex = explain(tiny(28, 28, 1), [picture(28, 28)], target=[0, 1])
    g = ex.grid(0, 0)
    assert g.shape == (7, 7) and g.dtype == np.float32 and g.max() == pytest.approx(1.0, abs=1e-3)
    assert ex.to_dict()["raw_grids"] == {"gradcam": [7, 7]} and ex.to_dict()["grid"] == [28, 28]
    # the map drawn is the grid upsampled (bilinear) and min-max scaled again
    up = F.interpolate(torch.from_numpy(g)[None, None], size=(28, 28), mode="bilinear", align_corners=False)[0, 0]
    up = (up - up.min()) / (up.max() - up.min())
    assert torch.allclose(up, ex.maps[0, 0, 0].float(), atol=1e-4)
    img = ex.raw_image(0, 0)
    a = np.asarray(img)
    assert img.size == (224, 224)  # 7 cells of 32 pixels, nearest neighbours: each cell one colour
    assert all(len(np.unique(a[r * 32:(r + 1) * 32, k * 32:(k + 1) * 32].reshape(-1, 3), axis=0)) == 1
               for r in range(7) for k in range(7))
    assert ink(ex.raw_image(0, 1)) > 20 and abs(blue_cast(ex.raw_image(0, 1))) < 8  # empty grid: grey, noted
    assert ex.figure(0, raw=True).height > ex.figure(0).height + 150
    assert ex["gradcam"].take([0]).grid(0, 0).shape == (7, 7)


def test_no_raw_grid_for_a_pixel_method():
    ex = explain(tiny(28, 28, 1), [picture(28, 28)], method="gradcam,saliency")
    assert list(ex.to_dict()["raw_grids"]) == ["gradcam"]
    with pytest.raises(SpecError, match="no raw grid for saliency") as e:
        ex.grid(0, 0, "saliency")
    assert e.value.param == "raw"
    ex.figure(0, raw=True)  # the pixel method's row simply has no grid under it


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def tiny_cli(monkeypatch):
    import convlens.cli.cmd_explain as cmd

    lm = tiny(28, 28, 1)
    monkeypatch.setattr(cmd, "load", lambda model, weights=None, device="cpu": lm)
    return lm


def test_cli_explain_raw_saves_the_grids(capsys, tmp_path, tiny_cli):
    path = tmp_path / "digit.png"
    picture(28, 28).convert("L").save(path)
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "explain", str(path), "--target", "0", "--target", "1", "--raw",
                            "--out", str(out), "--json")
    assert code == 0, err
    records = json.loads(stdout)
    assert [r["empty"] for r in records] == [False, True]
    for r in records:
        raw = Image.open(r["raw"])
        assert raw.size == (224, 224) and r["raw"].endswith("_raw.png")
        assert Image.open(r["overlay"]).size == (28, 28)
    assert len(np.unique(np.asarray(Image.open(records[0]["raw"])).reshape(-1, 3), axis=0)) <= 49
    assert (out / "digit" / "grid.png").is_file()
    # the human table names the empty map
    code, stdout, err = run(capsys, "explain", str(path), "--target", "1")
    assert code == 0, err
    assert NO_EVIDENCE in stdout.replace("\n", " ").replace("  ", " ") or NO_EVIDENCE in " ".join(stdout.split())


def test_cli_raw_needs_out(capsys, tmp_path, tiny_cli):
    path = tmp_path / "digit.png"
    picture(28, 28).save(path)
    code, _, err = run(capsys, "explain", str(path), "--raw")
    assert code == 2 and "--raw" in err and "--out" in err and len(err.strip().splitlines()) == 1


# -- 3. one boxes file for a whole data set ------------------------------------------------------

@pytest.fixture
def three(tmp_path):
    paths = []
    for k in range(3):
        p = tmp_path / f"img{k}.png"
        picture(64, 60, seed=k).save(p)
        paths.append(p)
    return paths


@pytest.mark.parametrize("form", ["json", "csv"])
def test_boxes_file_covering_more_images_than_scored(tmp_path, three, form):
    lm = tiny(60, 64)
    if form == "json":
        boxes = tmp_path / "boxes.json"
        boxes.write_text(json.dumps({p.name: [[0, 0, 32, 30]] for p in three}))
    else:
        boxes = tmp_path / "boxes.csv"
        boxes.write_text("image,x0,y0,x1,y1\n" + "".join(f"{p.name},0,0,32,30\n" for p in three))
    sc = score(lm, [str(three[1])], method="gradcam", metric="pointing,energy", target=0, boxes=str(boxes))
    assert sc.values["pointing"].shape == (len(sc.methods), 1, 1) and bool(sc.has_boxes.all())
    assert len(sc.rows()) == len(sc.methods) * 2  # methods and baselines x metrics, for the one image scored
    e = float(sc.values["energy"][0, 0, 0])
    assert 0.0 <= e <= 1.0


def test_an_image_scored_without_a_box_is_named(tmp_path, three):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({three[0].name: [[0, 0, 32, 30]], "elsewhere.png": [[0, 0, 4, 4]]}))
    with pytest.raises(SpecError, match="no box for image .*img2.png") as e:
        score(tiny(60, 64), [str(three[0]), str(three[2])], metric="pointing", target=0, boxes=str(boxes))
    assert e.value.param == "boxes" and "\n" not in str(e.value)
    with pytest.raises(SpecError, match="not among the images"):
        score(tiny(60, 64), [str(three[2])], metric="pointing", target=0,
              boxes={"elsewhere.png": [[0, 0, 4, 4]]})


def test_boxes_for_other_images_do_not_matter_without_box_metrics(tmp_path, three):
    sc = score(tiny(60, 64), [str(three[0])], metric="avgdrop", target=0,
               boxes={three[0].name: [[0, 0, 4, 4]], "elsewhere.png": [[0, 0, 4, 4]]})
    assert sc.values["avgdrop"].shape[1] == 1


# -- the explorer says it too ------------------------------------------------------------------

@pytest.mark.parametrize("w, h", [(28, 28), (64, 60)])
def test_explorer_notes_an_empty_map_in_words(w, h):
    """The CAM view's payload flags an all-zero map and carries the note, which the page writes as
    text over the picture (readable at 28x28, where a note drawn into the picture could not be)."""
    import io

    from convlens.web import create_app
    from web_support import local_client

    buf = io.BytesIO()
    picture(w, h).save(buf, format="PNG")
    with local_client(create_app(models=[tiny(h, w)])) as c:
        image = c.post("/api/images", files={"file": ("pic.png", buf.getvalue(), "image/png")}).json()["id"]
        empty = c.get("/api/cam", params={"image": image, "target": 1}).json()
        full = c.get("/api/cam", params={"image": image, "target": 0}).json()
    assert empty["empty"] is True and empty["note"] == NO_EVIDENCE
    assert full["empty"] is False and full["note"] is None
