"""Pictures at the course's sizes: small images enlarged crisply, titles not clipped, the CAM
crop drawn softly, the raw heatmap as a PNG, top losses of a dense model in rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from convlens.errors import SpecError
from convlens.lens.featurevis import visualize
from convlens.models import wrap_module
from convlens.render.confusion import confusion_image, top_losses_image
from convlens.render.grid import cell_for, grid, stack
from convlens.render.overlay import overlay


def test_cell_for_enlarges_by_whole_factors_and_shrinks_large():
    assert cell_for((28, 28)) == (112, 112)
    assert cell_for((60, 64)) == (128, 120)
    assert cell_for((8, 8)) == (128, 128)
    assert cell_for((224, 224), 160) == (160, 160)
    assert cell_for((300, 450), 150) == (150, 100)


def test_grid_multiline_titles_take_their_lines():
    a = Image.new("RGB", (10, 10), "red")
    one = grid([[a, a]], row_titles=["r"], col_titles=["x", "y"], cell=20)
    two = grid([[a, a]], row_titles=["r\nsecond"], col_titles=["x\nunder", "y"], cell=20)
    assert two.height > one.height  # the header's second line is room, not overdrawn
    assert stack(one, two).size == (max(one.width, two.width), one.height + two.height + 6)
    with pytest.raises(SpecError, match="at least one image"):
        grid([[None]])


def test_a_long_title_wraps_on_a_narrow_grid_instead_of_being_cut():
    from PIL import ImageDraw

    from convlens.render.grid import _wrap_text, font

    a = Image.new("RGB", (10, 10), "red")
    title = "activation maximization: class objective of a two-class model"
    short = grid([[a]], title="short", cell=60)
    long = grid([[a]], title=title, subtitle="2 images of 64x60, shown 2x with square pixels", cell=60)
    assert long.width == short.width and long.height > short.height + 40  # more lines, same width
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = _wrap_text(title, draw, font(16, bold=True), 200)
    assert " ".join(lines) == title and len(lines) >= 3  # every word kept
    assert all(draw.textlength(t, font=font(16, bold=True)) <= 200 for t in lines)
    # a single word longer than the line is cut with an ellipsis rather than overflowing
    assert _wrap_text("x" * 80, draw, font(13), 50)[0].endswith("…")


def test_featurevis_grid_at_28px_is_enlarged():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    lm = wrap_module(net, input_size=(1, 28, 28), mean=(0.0,), std=(1 / 255,))
    res = visualize(lm, "0", channels="0-3", steps=4)
    fig = res.figure()
    # four 28x28 images, each enlarged 5x (140 px) with captions: wider than 4 x 140
    assert fig.width >= 4 * 140 and fig.height >= 140
    arr = np.asarray(fig)
    assert (arr != 255).any()


def test_overlay_box_washes_out_the_cut_off_part_softly():
    pic = np.full((40, 80, 3), 100, np.uint8)
    heat = np.zeros((40, 40), np.float32)
    plain = np.asarray(overlay(pic, np.zeros((40, 80), np.float32), alpha=0.5))
    boxed = np.asarray(overlay(pic, np.pad(heat, ((0, 0), (20, 20))), alpha=0.5, box=(20, 0, 60, 40)))
    # outside the box: the picture washed out, no colour map (grey stays grey)
    assert boxed[20, 5, 0] == boxed[20, 5, 1] == boxed[20, 5, 2] and boxed[20, 5, 0] > 100
    # inside the box: the same blend as without a box
    assert (boxed[20, 30] == plain[20, 30]).all()
    # the box's edge is a thin line, drawn in part (dashed), not a filled rectangle
    edge = boxed[:, 20, 0]
    assert 0 < (edge != boxed[20, 30, 0]).sum() < 40
    # a box covering the whole picture changes nothing (a plain resize)
    assert (np.asarray(overlay(pic, np.zeros((40, 80)), box=(0, 0, 80, 40))) == plain).all()


def test_top_losses_without_cams_wrap_into_rows():
    imgs = [np.full((28, 28), 30 * i, np.uint8) for i in range(9)]
    caps = [f"3 -> 5, loss {i}.00" for i in range(9)]
    fig = top_losses_image(imgs, caps)
    assert fig.width > fig.height  # 5 + 4 in two rows, not one tall column
    with_cams = top_losses_image(imgs[:2], caps[:2], [[imgs[0], imgs[1]], [imgs[0], imgs[1]]])
    assert with_cams.height > with_cams.width / 2


def test_two_class_confusion_keeps_its_tick_labels():
    fig = confusion_image([[50, 3], [4, 40]], ["open", "sunglasses"])
    arr = np.asarray(fig)
    # nothing drawn on the image's last column or row: no label cut at the edge
    assert (arr[:, -1] == 255).all() and (arr[-1] == 255).all()


def test_explanation_saves_the_raw_heatmap_png_and_a_grid_with_a_colour_bar(tmp_path):
    from convlens.lens.cam import explain

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    lm = wrap_module(net, input_size=(1, 28, 28), mean=(0.0,), std=(1 / 255,))
    img = Image.new("L", (28, 28), 0)
    img.paste(255, (14, 0, 28, 28))
    ex = explain(lm, [img], method="gradcam,gradcam++", layer="0")
    saved = ex.save(tmp_path / "ex")
    pngs = saved["heatmap_png"]
    assert len(pngs) == 2 and len({p.name for p in pngs}) == 2
    for rec, png in zip(saved.records, pngs):
        heat = np.load(rec["heatmap"])
        raw = np.asarray(Image.open(png))
        assert raw.shape == heat.shape and raw.dtype == np.uint8
        assert np.abs(raw.astype(float) / 255 - heat).max() <= 0.5 / 255 + 1e-6
    fig = ex.figure(0)
    grid_only = grid([[img]], cell=224)
    assert fig.height > 2 * 224 + 20 and fig.width > grid_only.width  # 2 methods, bar under them
    assert ex.seen_box(0) is None  # a 28x28 picture for a 28x28 model: nothing cut off
