"""The journey: feature maps of each conv/pool stage, equal to a manual forward, and its CLI."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from convlens.cli import main
from convlens.errors import LayerError, SpecError
from convlens.lens.journey import journey, parse_channels
from convlens.models import wrap_module

STAGES = ["conv_stem"] + [f"blocks.{i}" for i in range(7)] + ["conv_head"]


@pytest.fixture
def cli_model(reuse_builtin):
    """Let `convlens journey` reuse the session's built-in model instead of loading it again."""
    import convlens.cli.cmd_journey as cmd

    return reuse_builtin(cmd)


def _manual(module: torch.nn.Module, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    mods = dict(module.named_modules())
    got: dict[str, torch.Tensor] = {}
    hs = [mods[n].register_forward_hook(lambda _m, _i, o, n=n: got.__setitem__(n, o.detach().clone())) for n in names]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in hs:
            h.remove()
    return got


# -- the API -------------------------------------------------------------------------
def test_maps_equal_a_manual_forward(builtin_model, sample_photos):
    layers = ["conv_stem", "blocks.1", "blocks.4", "conv_head"]
    j = journey(builtin_model, sample_photos["chelsea"], layers=layers, channels="all")
    x = builtin_model.preprocess(sample_photos["chelsea"])
    want = _manual(builtin_model.module, layers, x)
    for n in layers:
        assert j.maps[n].shape == want[n].shape and j.maps[n].dtype == torch.float32
        assert torch.allclose(j.maps[n], want[n], atol=1e-5), n
        assert j.channels[n] == list(range(want[n].shape[1])) and j.shapes[n] == tuple(want[n].shape[1:])
    assert j.types["conv_stem"].startswith("Conv2d") and j.image_names == [str(sample_photos["chelsea"])]
    # what the model saw, back in [0, 1]
    assert j.inputs.shape == (1, 3, 224, 224) and 0 <= j.inputs.min() and j.inputs.max() <= 1
    assert torch.allclose(j.inputs, builtin_model.config.denormalize(x), atol=1e-6)


def test_inplace_modified_resnet_layer_keeps_the_value_before_the_change():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    lm = wrap_module(resnet18(weights=None), input_size=(3, 64, 64), class_names=[str(i) for i in range(1000)])
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    names = ["layer1.0.bn2", "layer2.1.bn2", "bn1", "layer3"]
    assert {"layer1.0.bn2", "layer2.1.bn2", "bn1"} <= lm.layers().inplace_mutated
    want, after = {}, {}  # cloned right when produced / the same tensors by reference
    mods = dict(lm.module.named_modules())

    def hook(_m, _i, o, n):
        want[n], after[n] = o.detach().clone(), o

    hs = [mods[n].register_forward_hook(lambda m, i, o, n=n: hook(m, i, o, n)) for n in names]
    with torch.no_grad():
        lm.module(x)
    for h in hs:
        h.remove()
    assert not torch.allclose(after["layer1.0.bn2"], want["layer1.0.bn2"])  # the trap is real
    j = journey(lm, x, layers=names, channels="all")
    for n in names:
        assert torch.allclose(j.maps[n], want[n], atol=1e-6), n
    assert j.image_names == ["image 0", "image 1"]


def test_channel_selection_and_defaults(builtin_model, sample_photos):
    j = journey(builtin_model, sample_photos["coffee"], layers="conv_stem, blocks.6", channels="0,5,8-10")
    for n in ("conv_stem", "blocks.6"):
        assert j.channels[n] == [0, 5, 8, 9, 10] and j.maps[n].shape[1] == 5
    x = builtin_model.preprocess(sample_photos["coffee"])
    want = _manual(builtin_model.module, ["blocks.6"], x)["blocks.6"]
    assert torch.allclose(j.maps["blocks.6"], want[:, [0, 5, 8, 9, 10]], atol=1e-5)
    # several layers: a channel beyond a small layer is dropped there, kept in the bigger one
    assert parse_channels("20-40", 32, strict=False) == list(range(20, 32))
    assert parse_channels("20-40", 320, strict=False) == list(range(20, 41))
    assert parse_channels(None, 320) == list(range(32)) and parse_channels(None, 16) == list(range(16))
    assert parse_channels("all", 4) == [0, 1, 2, 3] and parse_channels([3, 1, 3], 4) == [3, 1]


@pytest.mark.parametrize("spec,words", [
    ("5-2", "backwards"), ("x", "not a channel"), ("1,,a", "not a channel"), ("40", "out of range"),
    ("-1", "not a channel"),
])
def test_bad_channel_specs(spec, words):
    with pytest.raises(SpecError, match=words):
        parse_channels(spec, 32, layer="conv_stem")


def test_comparison_has_one_row_per_image(builtin_model, sample_photos):
    names = ["chelsea", "coffee", "astronaut"]
    j = journey(builtin_model, [sample_photos[n] for n in names], layers="blocks.2")
    assert j.maps["blocks.2"].shape[:2] == (3, 8)  # 8 channels by default when comparing
    heights = []
    for k in (1, 2, 3):
        sub = dataclasses.replace(j, image_names=j.image_names[:k], inputs=j.inputs[:k],
                                  maps={n: m[:k] for n, m in j.maps.items()})
        img = sub.compare("blocks.2")
        heights.append(img.height)
        if k == 3:
            assert img.width == j.figure("blocks.2").width
    step = heights[1] - heights[0]
    assert step > 40 and heights[2] - heights[1] == step  # each image adds one row of the same height
    single = dataclasses.replace(j, image_names=j.image_names[:1], inputs=j.inputs[:1],
                                 maps={n: m[:1] for n, m in j.maps.items()})
    assert single.figure("blocks.2").size == single.grid("blocks.2").size
    assert j._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


def test_api_errors(builtin_model, sample_photos):
    with pytest.raises(LayerError, match="blocks.9.*did you mean"):
        journey(builtin_model, sample_photos["chelsea"], layers="blocks.9")
    with pytest.raises(SpecError, match="classifier.*no feature maps"):
        journey(builtin_model, sample_photos["chelsea"], layers="classifier")
    with pytest.raises(SpecError, match="no layer names"):
        journey(builtin_model, sample_photos["chelsea"], layers=" , ")


def test_small_grayscale_model_every_conv_and_pool(tmp_path):
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10))
    lm = wrap_module(net, input_size=(1, 28, 28), mean=(0.5,), std=(0.5,))
    img = Image.new("L", (56, 56), 0)
    img.paste(255, (28, 0, 56, 56))  # right half white: a vertical edge in the middle
    j = journey(lm, img)
    assert j.layers == ["0", "2", "3"] and j.shapes["0"] == (4, 26, 26) and j.shapes["2"] == (4, 13, 13)
    x = lm.preprocess(img)
    want = _manual(net, ["0"], x)["0"]
    assert torch.allclose(j.maps["0"], want, atol=1e-6)
    # the first conv's response varies only across the edge (columns), not down the rows
    assert torch.allclose(j.maps["0"][0, :, 0], j.maps["0"][0, :, -1], atol=1e-5)
    before = j.to_dict()
    saved = j.save(tmp_path / "g")
    assert [Path(f["grid"]).name for f in saved.records] == ["00_0.png", "01_2.png", "02_3.png"]
    assert [p.name for p in saved["grid"]] == ["00_0.png", "01_2.png", "02_3.png"]
    assert saved["input"] == [tmp_path / "g" / "input_00.png"] and j.to_dict() == before
    assert Image.open(tmp_path / "g" / "input_00.png").size == (28, 28)


# -- the CLI -------------------------------------------------------------------------
def _check_default_run(out: Path, capsys, image: Path) -> None:
    assert main(["journey", str(image), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    pngs = sorted(p.name for p in out.glob("*.png"))
    grids = [p for p in pngs if not p.startswith("input_") and p != "overview.png"]
    assert len(grids) == 9 and "input_00.png" in pngs and "overview.png" in pngs
    assert [f["layer"] for f in result["layers"]] == STAGES
    assert result["images"] == [str(image)] and result["model"] == "effnet-lite0"
    for f in result["layers"]:
        assert Path(f["grid"]).is_file() and f["channels"] == list(range(min(32, f["output_shape"][0])))
    assert not list(out.glob("*.tmp"))
    img = Image.open(out / grids[0])
    assert img.mode == "RGB" and img.width > 400 and img.height > 200


def test_cli_journey_default_stages_skimage(sample_photos, tmp_path, capsys):
    _check_default_run(tmp_path / "j", capsys, sample_photos["chelsea"])  # real model load, no patch


@pytest.mark.data
def test_cli_journey_default_stages_shared_photo(photos, tmp_path, capsys, cli_model):
    _check_default_run(tmp_path / "j", capsys, photos / "chelsea.png")


def test_cli_channels_and_comparison(sample_photos, tmp_path, capsys, cli_model):
    out = tmp_path / "c"
    assert main(["journey", str(sample_photos["chelsea"]), "--out", str(out), "--channels", "0-3",
                 "--layers", "conv_stem,blocks.3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [f["channels"] for f in result["layers"]] == [[0, 1, 2, 3], [0, 1, 2, 3]]

    out2 = tmp_path / "cmp"
    imgs = [str(sample_photos["chelsea"]), str(sample_photos["rocket"])]
    assert main(["journey", *imgs, "--out", str(out2), "--layers", "blocks.1", "--cmap", "magma"]) == 0
    text = capsys.readouterr().out
    assert "blocks.1" in text and "8 ch" in text
    assert sorted(p.name for p in out2.iterdir()) == ["00_blocks_1.png", "input_00.png", "input_01.png"]


@pytest.mark.parametrize("args,words", [
    (["--channels", "5-2"], "backwards"),
    (["--channels", "x"], "not a channel"),
    (["--layers", "conv_stem", "--channels", "32-33"], "out of range"),
    (["--layers", "blocks.9"], "unknown layer"),
    (["--layers", "classifier"], "no feature maps"),
    (["--layers", ","], "no layer names"),
    (["--cmap", "nope"], "nope"),
    (["--layers", "conv_stem", "--out", "{file}"], "not a directory"),
    (["--layers", "conv_stem", "--out", "{file}/sub"], "not a directory"),
])
def test_cli_bad_specs_exit_2_and_write_nothing(sample_photos, tmp_path, capsys, cli_model, args, words):
    out = tmp_path / "never"
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    args = [a.replace("{file}", str(blocker)) for a in args]
    default_out = [] if "--out" in args else ["--out", str(out)]  # a repeated --out is an error of its own
    code = main(["journey", str(sample_photos["chelsea"]), *default_out, "--json", *args])
    cap = capsys.readouterr()
    assert code == 2 and cap.out == ""
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in cap.err
    assert not out.exists() or not any(out.iterdir())
    assert blocker.read_text() == "keep me"


def test_whole_journey_in_one_picture_and_images_by_layers(tmp_path):
    """A Journey in a notebook shows every layer (not only the first); several images give one
    images x layers figure; small 28x28 inputs are enlarged with crisp square pixels."""
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10))
    lm = wrap_module(net, input_size=(1, 28, 28), mean=(0.5,), std=(0.5,))
    imgs = [Image.new("L", (28, 28), v) for v in (0, 128)]
    imgs[0].paste(255, (14, 0, 28, 28))
    one = journey(lm, imgs[0])
    whole = Image.open(io.BytesIO(one._repr_png_()))
    first = one.figure(one.layers[0])
    assert whole.size == one.overview().size and whole.size != first.size
    assert whole.height > 3 * 112  # the input and a row per layer (3 layers), 4x enlarged
    many = journey(lm, imgs)
    across = many.figure()
    assert across.size == many.across().size
    assert across.height >= 2 * 112 and across.width >= 4 * 112  # 2 images x (input + 3 layers)
    assert many.across(channel="mean").size == across.size
    with pytest.raises(SpecError, match="channel 9 was not kept"):
        many.across(channel=9)
    with pytest.raises(SpecError, match="image 5 is out of range"):
        one.overview(5)
    saved = many.save(tmp_path / "j")
    assert saved["overview"] == [tmp_path / "j" / "overview.png"]
    assert Image.open(saved["overview"][0]).size == across.size
