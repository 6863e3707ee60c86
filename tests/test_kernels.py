"""The kernels lab: named and custom kernels, padding/stride/pooling arithmetic, figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from convlens.errors import SpecError
from convlens.kernels import (
    KERNELS,
    KernelResult,
    apply_kernel,
    conv_output_size,
    demo_image,
    kernel_names,
    parse_kernel,
    plan_stages,
    pool_output_size,
    same_padding,
)


def bar_image(size: int = 32, width: int = 6, vertical: bool = True) -> np.ndarray:
    img = np.zeros((size, size), dtype=np.uint8)
    start = (size - width) // 2
    if vertical:
        img[:, start:start + width] = 255
    else:
        img[start:start + width, :] = 255
    return img


def correlate_valid(x: np.ndarray, k: np.ndarray, stride: int = 1) -> np.ndarray:
    """Independent oracle: cross-correlation with NumPy windows (no torch)."""
    windows = sliding_window_view(x, k.shape)
    return (windows * k).sum(axis=(-1, -2))[::stride, ::stride]


# ------------------------------------------------------------------ meaning


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_vertical_edge_lights_up_a_vertical_bar(padding):
    size = 64 if padding == "same" else 32  # same padding adds a little border response
    img = bar_image(size)
    vertical = apply_kernel(img, "vertical-edge", padding=padding).energy()
    horizontal = apply_kernel(img, "horizontal-edge", padding=padding).energy()
    assert vertical > 0
    assert vertical >= 10 * horizontal


def test_sobel_x_beats_sobel_y_on_a_vertical_bar_and_the_reverse_when_turned():
    upright, lying = bar_image(), bar_image(vertical=False)
    assert apply_kernel(upright, "sobel-x").energy() >= 10 * apply_kernel(upright, "sobel-y").energy()
    assert apply_kernel(lying, "sobel-y").energy() >= 10 * apply_kernel(lying, "sobel-x").energy()
    assert apply_kernel(lying, "horizontal").energy() >= 10 * apply_kernel(lying, "vertical").energy()


def test_vertical_edge_values_on_the_demo_bar():
    r = apply_kernel(demo_image(), "1,0,-1;1,0,-1;1,0,-1")
    row = r.output[0, 0].tolist()
    assert row == pytest.approx([0, -3, -3, 0, 3, 3, 0])  # dark->bright is negative
    assert torch.all(r.output[0] == r.output[0, :1])  # every row the same


def test_blur_of_a_constant_image_stays_constant_in_the_interior():
    img = np.full((12, 12), 128, dtype=np.uint8)
    for name in ("box-blur", "gaussian-blur"):
        out = apply_kernel(img, name, padding="same").output[0]
        interior = out[1:-1, 1:-1]
        assert torch.allclose(interior, torch.full_like(interior, 128 / 255), atol=1e-6)
        assert out[0, 0] < interior[0, 0]  # zero padding darkens the border


def test_identity_kernel_returns_the_input():
    img = np.random.default_rng(0).integers(0, 256, (10, 11), dtype=np.uint8)
    r = apply_kernel(img, "identity", padding="same")
    assert torch.equal(r.output, r.input)


# ------------------------------------------------------------------ shapes


def test_repeat_three_shrinks_9_7_5_3():
    r = apply_kernel(demo_image(), "vertical", repeat=3)
    assert r.shapes == [(9, 9), (7, 7), (5, 5), (3, 3)]
    assert [s.label for s in r.stages] == ["conv 1", "conv 2", "conv 3"]
    d = r.to_dict()
    assert d["shapes"] == [[9, 9], [7, 7], [5, 5], [3, 3]]
    assert d["arithmetic"] == [
        "9x9 * 3x3 (valid, stride 1) -> 7x7",
        "7x7 * 3x3 (valid, stride 1) -> 5x5",
        "5x5 * 3x3 (valid, stride 1) -> 3x3",
    ]
    # repeated application really feeds each output to the next step
    k = KERNELS["vertical-edge"]
    expected = demo_image().astype(np.float64) / 255
    for _ in range(3):
        expected = correlate_valid(expected, k)
    assert np.allclose(r.output[0].numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("n", [7, 8, 9])
def test_same_padding_keeps_the_size_for_odd_and_even_kernels(n, k):
    img = np.random.default_rng(n * 10 + k).integers(0, 256, (n, n + 1), dtype=np.uint8)
    r = apply_kernel(img, np.ones((k, k)), padding="same")
    assert r.shapes[-1] == (n, n + 1)


def test_same_padding_puts_the_extra_pixel_bottom_right_like_tensorflow():
    assert same_padding(9, 2) == (0, 1)
    assert same_padding(9, 4) == (1, 2)
    img = np.random.default_rng(1).integers(0, 256, (6, 6), dtype=np.uint8)
    x = img / 255
    top_left = apply_kernel(img, "1,0;0,0", padding="same").output[0].numpy()
    assert np.allclose(top_left, x, atol=1e-6)  # no padding before, so no shift
    bottom_right = apply_kernel(img, "0,0;0,1", padding="same").output[0].numpy()
    assert np.allclose(bottom_right[:-1, :-1], x[1:, 1:], atol=1e-6)
    assert np.all(bottom_right[-1] == 0) and np.all(bottom_right[:, -1] == 0)


@pytest.mark.parametrize(
    "n,k,stride,padding,expected",
    [
        (9, 3, 1, "valid", 7),
        (9, 3, 2, "valid", 4),
        (10, 3, 3, "valid", 3),
        (9, 3, 2, "same", 5),
        (10, 4, 3, "same", 4),
        (224, 7, 2, 3, 112),
        (5, 5, 1, "valid", 1),
        (9, 2, 1, "valid", 8),
    ],
)
def test_conv_output_size_arithmetic(n, k, stride, padding, expected):
    assert conv_output_size(n, k, stride, padding) == expected
    img = np.zeros((n, n), dtype=np.uint8)
    r = apply_kernel(img, np.ones((k, k)), stride=stride, padding=padding)
    assert r.shapes[-1] == (expected, expected)
    if padding == "same":
        assert expected == math.ceil(n / stride)


def test_stride_two_matches_a_numpy_oracle():
    img = np.random.default_rng(2).integers(0, 256, (11, 9), dtype=np.uint8)
    k = KERNELS["sobel-x"]
    r = apply_kernel(img, "sobel-x", stride=2)
    assert r.shapes == [(11, 9), (5, 4)]
    assert np.allclose(r.output[0].numpy(), correlate_valid(img / 255, k, 2), atol=1e-5)
    assert r.to_dict()["arithmetic"] == ["11x9 * 3x3 (valid, stride 2) -> 5x4"]


@pytest.mark.parametrize("n,expected", [(7, 3), (5, 2), (9, 4), (3, 1), (8, 4)])
def test_odd_sizes_under_2x2_pooling_floor(n, expected):
    assert pool_output_size(n, 2) == expected
    r = apply_kernel(np.zeros((n, n), dtype=np.uint8), "1", pool="max")
    assert r.shapes == [(n, n), (n, n), (expected, expected)]


def test_conv_then_pool_9_7_3():
    r = apply_kernel(demo_image(), "vertical", pool="max", pool_size=2)
    assert r.shapes == [(9, 9), (7, 7), (3, 3)]
    assert r.to_dict()["arithmetic"][-1] == "7x7 max pool 2x2 (stride 2) -> 3x3"
    assert r.stages[-1].label == "max pool 2x2"


def test_pool_with_its_own_stride():
    assert pool_output_size(7, 3, 1) == 5
    r = apply_kernel(np.zeros((7, 7), dtype=np.uint8), "1", pool="avg", pool_size=3, pool_stride=1)
    assert r.shapes[-1] == (5, 5)
    assert r.stages[-1].label == "avg pool 3x3 stride 1"


def test_max_and_avg_pooling_values_on_a_known_array():
    arr = np.array([[10, 20, 30, 40],
                    [50, 60, 70, 80],
                    [90, 100, 110, 120],
                    [130, 140, 150, 160],
                    [1, 2, 3, 4]], dtype=np.uint8)  # odd last row is dropped (floor)
    mx = apply_kernel(arr, "1", pool="max").output[0].numpy() * 255
    av = apply_kernel(arr, "1", pool="avg").output[0].numpy() * 255
    assert np.allclose(mx, [[60, 80], [140, 160]], atol=1e-3)
    assert np.allclose(av, [[35, 55], [115, 135]], atol=1e-3)


def test_plan_stages_without_computing():
    plans = plan_stages((28, 28), (5, 5), repeat=2, pool="avg")
    assert [p.out_shape for p in plans] == [(24, 24), (20, 20), (10, 10)]
    assert [p.kind for p in plans] == ["conv", "conv", "pool"]


# ------------------------------------------------------------------ channels and custom kernels


def test_rgb_is_per_channel_and_matches_a_manual_convolution():
    from skimage import data

    patch = data.astronaut()[100:140, 180:230]  # 40x50 RGB
    r = apply_kernel(patch, "sobel-x", color="rgb")
    assert r.input.shape == (3, 40, 50)
    assert r.output.shape == (3, 38, 48)
    k = KERNELS["sobel-x"]
    for c in range(3):
        assert np.allclose(r.output[c].numpy(), correlate_valid(patch[..., c] / 255, k), atol=1e-5)
    gray = apply_kernel(patch, "sobel-x")
    assert gray.output.shape == (1, 38, 48)


@pytest.mark.parametrize("spec,size,valid_shape", [
    ("1,-1;1,-1", 2, (8, 8)),
    ("1 2 3 4; 5 6 7 8; 0 0 0 0; -1 -2 -3 -4", 4, (6, 6)),
])
def test_custom_even_kernels(spec, size, valid_shape):
    name, k = parse_kernel(spec)
    assert name == "custom" and k.shape == (size, size)
    img = np.random.default_rng(size).integers(0, 256, (9, 9), dtype=np.uint8)
    r = apply_kernel(img, spec)
    assert r.shapes[-1] == valid_shape
    assert np.allclose(r.output[0].numpy(), correlate_valid(img / 255, k), atol=1e-4)
    assert apply_kernel(img, spec, padding="same").shapes[-1] == (9, 9)


# ------------------------------------------------------------------ parsing


def test_named_kernels_and_aliases():
    assert {"identity", "vertical-edge", "horizontal-edge", "sobel-x", "sobel-y", "laplacian",
            "outline", "sharpen", "box-blur", "gaussian-blur", "emboss"} <= set(kernel_names())
    for alias, canonical in [("vertical", "vertical-edge"), ("horizontal", "horizontal-edge"),
                             ("blur", "box-blur"), ("gaussian", "gaussian-blur"),
                             ("Sobel_X", "sobel-x"), ("SOBEL Y", "sobel-y")]:
        assert parse_kernel(alias)[0] == canonical
    for name in ("box-blur", "gaussian-blur", "identity", "sharpen"):
        assert KERNELS[name].sum() == pytest.approx(1.0)
    for name in ("vertical-edge", "horizontal-edge", "sobel-x", "sobel-y", "laplacian", "outline"):
        assert KERNELS[name].sum() == pytest.approx(0.0)


def test_parse_kernel_accepts_strings_lists_and_arrays():
    expected = [[1.0, 0.0, -1.0]] * 3
    for spec in ("1,0,-1;1,0,-1;1,0,-1", "1 0 -1\n1 0 -1\n1 0 -1", " 1, 0, -1 ; 1,0,-1; 1,0,-1; ",
                 "[[1,0,-1],[1,0,-1],[1,0,-1]]", "[1 0 -1; 1 0 -1; 1 0 -1]",
                 expected, np.array(expected), torch.tensor(expected)):
        name, k = parse_kernel(spec)
        assert name == "custom" and k.tolist() == expected
    assert parse_kernel("1/9,1/9;1/9,1/9")[1] == pytest.approx(np.full((2, 2), 1 / 9))
    assert parse_kernel("1,0,-1")[1].shape == (1, 3)  # a single row
    assert parse_kernel("1;0;-1")[1].shape == (3, 1)  # a single column
    named = parse_kernel("sharpen")[1]
    named[0, 0] = 99  # a copy: the registry is not changed
    assert KERNELS["sharpen"][0, 0] == 0


@pytest.mark.parametrize("spec,words", [
    ("1,0,-1;1,0", ["kernel", "ragged", "row 2"]),
    ("1,x,-1;1,0,-1", ["kernel", "'x'", "not a number"]),
    ("1,,2", ["kernel", "empty"]),
    ("1,2;;3,4", ["kernel", "row 2 is empty"]),
    ("sobel-z", ["kernel 'sobel-z' is not a known name", "sobel-x", "vertical-edge"]),
    ("gausian", ["did you mean", "gaussian"]),
    ("", ["kernel", "empty"]),
    ([[1, 2], [3]], ["kernel", "ragged"]),
    ([["a", "b"]], ["kernel", "not numbers"]),
    (np.zeros((2, 2, 2)), ["kernel", "2-D"]),
    ("nan,1", ["kernel", "NaN"]),
])
def test_malformed_kernels_raise_spec_error(spec, words):
    with pytest.raises(SpecError) as info:
        parse_kernel(spec)
    msg = str(info.value)
    assert "\n" not in msg
    assert "--" not in msg  # the library names its parameter, never a CLI flag
    assert info.value.param == "kernel"
    for word in words:
        assert word in msg


@pytest.mark.parametrize("kwargs,param,words", [
    ({"stride": 0}, "stride", ["stride", "positive"]),
    ({"stride": -2}, "stride", ["stride"]),
    ({"pool": "max", "pool_size": 0}, "pool_size", ["pool_size", "positive"]),
    ({"pool": "max", "pool_stride": 0}, "pool_stride", ["pool_stride"]),
    ({"pool": "min"}, "pool", ["pool", "max or avg"]),
    ({"repeat": 0}, "repeat", ["repeat", "positive"]),
    ({"repeat": 5}, "repeat", ["repeat 5", "at most 4"]),
    ({"padding": "half"}, "padding", ["padding", "valid, same"]),
    ({"padding": -1}, "padding", ["padding"]),
    ({"color": "cmyk"}, "color", ["color", "gray or rgb"]),
    ({"kernel": np.ones((11, 11))}, "kernel", ["kernel", "11x11", "9x9", "larger than the image"]),
    ({"pool": "avg", "pool_size": 8}, "pool_size", ["pool_size 8", "7x7"]),
])
def test_bad_settings_raise_spec_error_naming_the_argument(kwargs, param, words):
    kernel = kwargs.pop("kernel", "vertical")
    with pytest.raises(SpecError) as info:
        apply_kernel(demo_image(), kernel, **kwargs)
    assert info.value.param == param and "--" not in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_big_kernel_is_fine_with_same_padding():
    assert apply_kernel(demo_image(), np.ones((11, 11)), padding="same").shapes[-1] == (9, 9)


# ------------------------------------------------------------------ result object


def test_to_dict_is_json_able_and_complete():
    import json

    r = apply_kernel(demo_image(), "gaussian", color="rgb", padding="same", stride=2, pool="avg")
    d = json.loads(json.dumps(r.to_dict()))
    assert d["kernel"]["name"] == "gaussian-blur"
    assert d["kernel"]["matrix"][1][1] == pytest.approx(0.25)
    assert d["color"] == "rgb" and d["channels"] == 3
    assert (d["stride"], d["padding"], d["repeat"]) == (2, "same", 1)
    assert d["pool"] == {"type": "avg", "size": 2, "stride": 2}
    assert d["input"]["shape"] == [9, 9]
    assert d["shapes"] == [[9, 9], [5, 5], [2, 2]]
    assert d["arithmetic"] == ["9x9 * 3x3 (same, stride 2) -> 5x5", "5x5 avg pool 2x2 (stride 2) -> 2x2"]
    assert "files" not in d  # pure: what was saved is in the Saved record, not here
    assert all({"min", "max", "mean", "energy"} <= set(s) for s in d["stages"])


def test_figure_save_and_repr_png(tmp_path):
    import io

    r = apply_kernel(demo_image(), "vertical", repeat=2, pool="max")
    assert isinstance(r, KernelResult)
    png = r._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(png))
    assert img.mode == "RGB"
    assert img.width > 3 * img.height  # input | kernel | 3 stages side by side
    assert np.asarray(img).std() > 10  # not blank
    before = r.to_dict()
    saved = r.save(tmp_path / "lab")
    assert saved.dir == tmp_path / "lab" and r.to_dict() == before
    assert saved.first("figure") == tmp_path / "lab" / "kernels.png"
    assert Image.open(saved.first("figure")).size == img.size
    assert sorted(p.name for p in (tmp_path / "lab").iterdir()) == [
        "01_conv_1.npy", "02_conv_2.npy", "03_max_pool_2x2.npy", "kernel.npy", "kernels.png"]
    stages = {rec["key"]: rec["file"] for rec in saved.records}
    assert list(stages) == ["conv_1", "conv_2", "max_pool_2x2"]
    assert np.load(stages["max_pool_2x2"]).shape == (1, 2, 2)
    assert np.load(saved.first("kernel")).tolist() == KERNELS["vertical-edge"].tolist()


def test_demo_image_and_image_sources(tmp_path):
    img = demo_image()
    assert img.shape == (9, 9) and img[:, 3:6].min() == 255 and img[:, :3].max() == 0
    path = tmp_path / "bar.png"
    Image.fromarray(img).save(path)
    from_path = apply_kernel(path, "vertical")
    from_pil = apply_kernel(Image.fromarray(img), "vertical")
    assert torch.equal(from_path.output, from_pil.output)
    assert from_path.to_dict()["image"] == str(path)


def test_old_module_name_is_the_lab_itself():
    import convlens
    import convlens.kernels
    import convlens.lens.kernels

    assert convlens.kernels is convlens.lens.kernels
    assert convlens.kernels.apply_kernel is apply_kernel
    assert isinstance(apply_kernel(demo_image(), "sobel-x"), convlens.view.View)


# ------------------------------------------------------------------ your own numbers


def _numbers_9x9() -> np.ndarray:
    x = np.zeros((9, 9))
    x[0:3, 0] = [3.2, 0.43, 0.3]
    x[0:3, 2] = [0.5, 1.0, 0.3]
    x[4:7, 4:7] = 1.5
    return x


def test_arrays_of_numbers_are_convolved_as_they_are():
    x = _numbers_9x9()
    r = apply_kernel(x, "vertical-edge")
    # by hand: (3.2 + 0.43 + 0.3) - (0.5 + 1.0 + 0.3) = 2.13 (not 0.682 from a [0, 1], 8-bit copy)
    assert abs(float(r.output[0, 0, 0]) - 2.13) < 1e-5
    assert np.allclose(r.output[0].numpy(), correlate_valid(x, KERNELS["vertical-edge"]), atol=1e-5)
    assert r.values == "numbers" and r.to_dict()["input"] == {
        "shape": [9, 9], "values": "numbers", "min": 0.0, "max": pytest.approx(3.2)}
    assert torch.allclose(r.input[0].double(), torch.from_numpy(x), atol=1e-6)
    # ints and tensors too; uint8 stays pixels (0..255 -> 0..1), as an image would
    ints = np.arange(81).reshape(9, 9) * 7
    assert np.array_equal(apply_kernel(ints, "1").output[0].numpy(), ints)
    assert np.allclose(apply_kernel(torch.from_numpy(x), "1").output[0].numpy(), x, atol=1e-6)
    assert apply_kernel(demo_image(), "1").values == "pixels" \
        and float(apply_kernel(demo_image(), "1").output.max()) == 1.0


def test_numbers_in_colour_and_gray():
    x = np.random.default_rng(0).normal(size=(6, 7, 3)) * 5
    rgb = apply_kernel(x, "1", color="rgb")
    assert rgb.input.shape == (3, 6, 7) and np.allclose(rgb.output.permute(1, 2, 0).numpy(), x, atol=1e-5)
    gray = apply_kernel(x, "1")
    assert np.allclose(gray.output[0].numpy(), x @ np.array([0.299, 0.587, 0.114]), atol=1e-4)
    assert apply_kernel(x[..., 0], "1", color="rgb").input.shape == (3, 6, 7)


@pytest.mark.parametrize("bad, words", [
    (np.zeros((2, 3, 4, 5)), "HxW or HxWx3"), (np.zeros((4, 4, 5)), "HxW or HxWx3"),
    (np.full((4, 4), np.nan), "NaN"), (np.zeros((0, 3)), "HxW"),
])
def test_bad_number_arrays_name_the_image(bad, words):
    with pytest.raises(SpecError, match=words) as exc:
        apply_kernel(bad, "1")
    assert exc.value.param == "image"


def test_npy_and_csv_matrices_for_the_image_and_the_kernel(tmp_path):
    from convlens.lens.kernels import read_matrix

    x = _numbers_9x9()
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "x.csv").write_text("\n".join(",".join(f"{v:g}" for v in row) for row in x) + "\n")
    (tmp_path / "k.csv").write_text("# a vertical edge\n1 0 -1\n1 0 -1\n1 0 -1\n")
    np.save(tmp_path / "k.npy", KERNELS["sobel-x"])
    assert np.array_equal(read_matrix(tmp_path / "x.csv"), x) and np.array_equal(read_matrix(tmp_path / "x.npy"), x)
    r = apply_kernel(tmp_path / "x.csv", tmp_path / "k.csv")
    assert r.kernel_name == "k" and r.values == "numbers" and abs(float(r.output[0, 0, 0]) - 2.13) < 1e-5
    assert r.to_dict()["image"] == str(tmp_path / "x.csv")
    s = apply_kernel(str(tmp_path / "x.npy"), str(tmp_path / "k.npy"))
    assert np.allclose(s.output[0].numpy(), correlate_valid(x, KERNELS["sobel-x"]), atol=1e-5)
    (tmp_path / "ragged.csv").write_text("1,2,3\n4,5\n")
    (tmp_path / "word.csv").write_text("1,2\n3,x\n")
    (tmp_path / "bad.npy").write_bytes(b"nope")
    for path, param, words in [(tmp_path / "ragged.csv", "image", "ragged rows: line 2 has 2 entries"),
                               (tmp_path / "word.csv", "image", "line 2: 'x' is not a number"),
                               (tmp_path / "bad.npy", "image", "not a NumPy .npy array")]:
        with pytest.raises(SpecError, match=words) as exc:
            apply_kernel(path, "1")
        assert exc.value.param == param
    with pytest.raises(SpecError, match="kernel .*nokernel.npy: no such file") as exc:
        apply_kernel(x, str(tmp_path / "nokernel.npy"))
    assert exc.value.param == "kernel"


def test_several_kernels_make_one_gallery(tmp_path):
    from convlens.lens.kernels import KernelGallery, apply_kernels

    g = apply_kernels(demo_image(), ["emboss", "sharpen", "1,0;0,-1", "0,1;-1,0"], pool="max")
    assert isinstance(g, KernelGallery) and isinstance(g, convlens_view())
    assert g.keys == ["emboss", "sharpen", "custom", "custom_2"]
    assert [r.kernel_name for r in g.results] == ["emboss", "sharpen", "custom", "custom"]
    assert torch.equal(g.results[1].output, apply_kernel(demo_image(), "sharpen", pool="max").output)
    d = g.to_dict()
    assert [k["key"] for k in d["kernels"]] == g.keys and d["input"]["shape"] == [9, 9]
    img = g.figure()
    assert img.height > 3 * apply_kernel(demo_image(), "emboss", pool="max").figure().height  # four rows
    saved = g.save(tmp_path / "g")
    assert g.to_dict() == d
    names = sorted(p.name for p in (tmp_path / "g").iterdir())
    assert "kernels.png" in names and "custom_2_kernel.npy" in names and "emboss_02_max_pool_2x2.npy" in names
    assert len(saved["kernel"]) == 4 and len(saved.records) == 8 and len({r["file"] for r in saved.records}) == 8
    assert apply_kernels(demo_image(), ["emboss"]).kernel_name == "emboss"  # one kernel: its own result
    with pytest.raises(SpecError, match="at least one kernel"):
        apply_kernels(demo_image(), [])


def convlens_view():
    import convlens.view

    return convlens.view.View


# -- hostile numbers: bounded before anything is allocated ---------------------------------------------


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if a convolution or a padding runs (the refusal must come first)."""
    import convlens.lens.kernels.apply as kmod  # where apply_kernel looks up _conv and _pool

    def boom(*_a, **_k):
        raise AssertionError("computed before refusing")

    monkeypatch.setattr(kmod, "_conv", boom)
    monkeypatch.setattr(kmod, "_pool", boom)


@pytest.mark.parametrize("kwargs, param, words", [
    ({"padding": "20000"}, "padding", ["padding", "up to 1024"]),
    ({"padding": 20000}, "padding", ["padding", "up to 1024"]),
    ({"padding": "same", "repeat": 400}, "repeat", ["repeat", "up to 16"]),
    ({"padding": 1000, "repeat": 3, "color": "rgb"}, "repeat", ["MiB", "fewer repeats"]),
    ({"padding": "1" * 40}, "padding", ["padding"]),
    ({"stride": 10**12}, "stride", ["stride"]),
    ({"stride": True}, "stride", ["stride"]),
    ({"pool": "max", "pool_size": 2.5}, "pool_size", ["pool_size"]),
    ({"kernel": "1e39,0;0,1"}, "kernel", ["overflows float32", "row 1, column 1"]),
    ({"kernel": "0,1e308;0,1"}, "kernel", ["overflows float32", "row 1, column 2"]),
    ({"kernel": [[float("nan"), 1.0]]}, "kernel", ["NaN"]),
    ({"kernel": np.ones((65, 65))}, "kernel", ["65x65", "at most 64x64"]),
    ({"image": np.zeros((5000, 10))}, "image", ["4096"]),
    ({"image": torch.zeros(3, 10, 5000)}, "image", ["4096"]),
])
def test_hostile_numbers_are_refused_before_any_work(no_compute, kwargs, param, words):
    from PIL import Image

    image = kwargs.pop("image", Image.new("RGB", (192, 144), (40, 90, 200)))
    kernel = kwargs.pop("kernel", "vertical-edge")
    with pytest.raises(SpecError) as info:
        apply_kernel(image, kernel, **kwargs)
    msg = str(info.value)
    assert info.value.param == param and "\n" not in msg, msg
    for word in words:
        assert word in msg, msg


def test_a_huge_image_file_is_refused(tmp_path, no_compute):
    from PIL import Image

    path = tmp_path / "wide.png"
    Image.new("L", (5000, 8)).save(path)
    with pytest.raises(SpecError, match="5000x8 is too large") as info:
        apply_kernel(path, "vertical")
    assert info.value.param == "image"


def test_values_overflowing_float32_while_computing_are_an_error():
    big = "1e30,1e30;1e30,1e30"
    apply_kernel(demo_image(), big)  # 1e30 * 255/255 * 4: still finite
    with pytest.raises(SpecError, match="conv 2 overflows float32") as info:
        apply_kernel(demo_image(), big, repeat=2)
    assert info.value.param == "kernel"


def test_the_bounds_themselves_still_work():
    from convlens.options import MAX_PADDING, MAX_REPEAT

    r = apply_kernel(demo_image(), "box-blur", padding="same", repeat=MAX_REPEAT)
    assert len(r.stages) == MAX_REPEAT and r.shapes[-1] == (9, 9)
    r = apply_kernel(demo_image(), "identity", padding=str(MAX_PADDING))
    assert r.shapes[-1] == (9 + 2 * MAX_PADDING - 2,) * 2
    assert np.isfinite(r.to_dict()["stages"][0]["energy"])


def test_a_huge_npy_matrix_is_refused_from_its_header(tmp_path, no_compute):
    """The shape is read from the header (the file is mapped, never loaded), so a 40000x40000 array
    written as a sparse file is refused without reading 12 GB."""
    from numpy.lib import format as npformat

    path = tmp_path / "huge.npy"
    with open(path, "wb") as f:
        npformat.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (40000, 40000)})
        f.truncate(f.tell() + 40000 * 40000 * 8)  # sparse: no disk used
    with pytest.raises(SpecError, match=r"\(40000, 40000\) is too large") as info:
        apply_kernel(path, "vertical")
    assert info.value.param == "image"
