"""``convlens kernels``: JSON contract, files only under --out, exit 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convlens.cli import main


@pytest.fixture(scope="module")
def camera_png(tmp_path_factory):
    from skimage import data

    path = tmp_path_factory.mktemp("camera") / "camera.png"
    Image.fromarray(data.camera()).save(path)
    return path


@pytest.fixture()
def bar_png(tmp_path):
    img = np.zeros((9, 9), dtype=np.uint8)
    img[:, 3:6] = 255
    path = tmp_path / "bar.png"
    Image.fromarray(img).save(path)
    return path


def run(capsys, *args):
    code = main(["kernels", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_with_out_writes_the_figure_and_reports_shapes(capsys, tmp_path, camera_png):
    out_dir = tmp_path / "lab"
    code, out, err = run(capsys, camera_png, "--kernel", "sobel-x", "--pool", "max",
                         "--out", out_dir, "--json")
    assert code == 0
    assert err == ""
    result = json.loads(out)
    assert result["kernel"]["name"] == "sobel-x"
    assert result["shapes"] == [[512, 512], [510, 510], [255, 255]]
    assert result["arithmetic"][0] == "512x512 * 3x3 (valid, stride 1) -> 510x510"
    assert result["pool"] == {"type": "max", "size": 2, "stride": 2}
    figure = result["files"]["figure"]
    assert figure == str(out_dir / "kernels.png")
    assert Image.open(figure).size[0] > 1000
    assert all(Path(p).is_relative_to(out_dir) for p in result["files"].values())
    assert {p.name for p in out_dir.iterdir()} == {
        "kernels.png", "kernel.npy", "01_conv_1.npy", "02_max_pool_2x2.npy"}


def test_matrix_repeat_and_rgb_options(capsys, bar_png):
    code, out, err = run(capsys, bar_png, "--kernel", "1,0,-1;1,0,-1;1,0,-1", "--repeat", "3",
                         "--color", "rgb", "--json")
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert result["kernel"]["name"] == "custom"
    assert result["channels"] == 3
    assert result["shapes"] == [[9, 9], [7, 7], [5, 5], [3, 3]]
    assert "files" in result and result["files"] == {}


def test_stride_padding_and_pool_stride(capsys, bar_png):
    code, out, _ = run(capsys, bar_png, "-k", "0,1;1,0", "--padding", "same", "--stride", "2",
                       "--pool", "avg", "--pool-size", "3", "--pool-stride", "1", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["shapes"] == [[9, 9], [5, 5], [3, 3]]
    assert result["arithmetic"] == ["9x9 * 2x2 (same, stride 2) -> 5x5",
                                    "5x5 avg pool 3x3 (stride 1) -> 3x3"]


def test_table_without_out_writes_nothing(capsys, tmp_path, monkeypatch, bar_png):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    code, out, err = run(capsys, bar_png, "--kernel", "vertical", "--repeat", "3")
    assert (code, err) == (0, "")
    for text in ("conv 3", "7x7", "5x5", "3x3", "9x9 * 3x3 (valid, stride 1) -> 7x7"):
        assert text in out
    assert list(work.iterdir()) == []


def test_table_with_out_names_the_png(capsys, tmp_path):
    code, out, _ = run(capsys, "demo", "--kernel", "gaussian", "--out", tmp_path / "o")
    assert code == 0
    assert "kernels.png" in out
    assert (tmp_path / "o" / "kernels.png").is_file()


def test_demo_word_wins_over_a_demo_folder(capsys, tmp_path, monkeypatch):
    """After ``make demo`` a ``demo/`` folder sits in the working directory: the word ``demo``
    is still the built-in 9x9 bar (the README runs these two commands in this order)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "index.html").write_text("<html></html>")
    code, out, err = run(capsys, "demo", "--kernel", "gaussian", "--out", "o")
    assert (code, err) == (0, "")
    assert "kernels.png" in out and (tmp_path / "o" / "kernels.png").is_file()
    code, out, err = run(capsys, "demo", "--kernel", "vertical", "--repeat", "3", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["shapes"] == [[9, 9], [7, 7], [5, 5], [3, 3]]


def test_a_file_named_demo_is_reached_by_its_path(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((12, 12), dtype=np.uint8)).save(tmp_path / "demo", format="PNG")
    code, out, _ = run(capsys, "./demo", "--kernel", "vertical", "--json")
    assert code == 0 and json.loads(out)["shapes"] == [[12, 12], [10, 10]]
    code, out, _ = run(capsys, "demo", "--kernel", "vertical", "--json")
    assert code == 0 and json.loads(out)["shapes"] == [[9, 9], [7, 7]]


@pytest.mark.parametrize("args,words", [
    (["--kernel", "1,0,-1;1,0"], ["--kernel", "ragged"]),
    (["--kernel", "1,0,-1;1,zero,-1"], ["--kernel", "'zero'", "not a number"]),
    (["--kernel", "sobel"], ["--kernel 'sobel' is not a known name", "sobel-x"]),
    (["--kernel", "vertical", "--stride", "0"], ["--stride"]),
    (["--kernel", "vertical", "--pool", "max", "--pool-size", "0"], ["--pool-size"]),
    (["--kernel", "vertical", "--repeat", "0"], ["--repeat"]),
    (["--kernel", "vertical", "--repeat", "9"], ["--repeat 9", "at most 4"]),
    (["--kernel", ";".join([",".join(["1"] * 11)] * 11)], ["--kernel", "11x11", "larger"]),
    (["--kernel", "vertical", "--padding", "full"], ["--padding"]),
    (["--kernel", "vertical", "--pool", "median"], ["--pool"]),
    (["--kernel", "vertical", "--color", "hsv"], ["--color"]),
    # hostile numbers: refused in one line before any allocation
    (["--kernel", "vertical", "--padding", "20000"], ["--padding", "up to 1024"]),
    (["--kernel", "vertical", "--padding", "same", "--repeat", "400"], ["--repeat", "up to 16"]),
    (["--kernel", "1e39,0;0,1"], ["--kernel", "overflows float32"]),
    (["--kernel", "1e308,0;0,1"], ["--kernel", "overflows float32"]),
    (["--kernel", "nan,0;0,1"], ["--kernel", "NaN"]),
    (["--kernel", "vertical", "--stride", "99999999999"], ["--stride"]),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(capsys, tmp_path, bar_png, args, words):
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, bar_png, *args, "--out", out_dir, "--json")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convlens: error:")
    for word in words:
        assert word in lines[0]
    assert not out_dir.exists()


def test_missing_image_exits_2(capsys, tmp_path):
    code, out, err = run(capsys, tmp_path / "nope.png", "--kernel", "vertical", "--out", tmp_path / "o")
    assert code == 2 and out == ""
    assert "nope.png" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_several_kernels_give_a_gallery_in_one_figure(capsys, tmp_path):
    out_dir = tmp_path / "g"
    code, out, err = run(capsys, "demo", "--kernel", "emboss", "--kernel", "sharpen", "--out", out_dir, "--json")
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert [k["kernel"]["name"] for k in result["kernels"]] == ["emboss", "sharpen"]  # not only the last
    assert result["files"]["figure"] == str(out_dir / "kernels.png")
    assert len(result["files"]["kernel"]) == 2 and {"emboss_conv_1", "sharpen_conv_1"} <= set(result["files"])
    code, out, _ = run(capsys, "demo", "-k", "emboss", "-k", "sharpen")
    assert code == 0 and "kernel emboss" in out and "kernel sharpen" in out


def test_npy_and_csv_numbers_from_the_command_line(capsys, tmp_path):
    x = np.zeros((9, 9))
    x[0:3, 0], x[0:3, 2] = [3.2, 0.43, 0.3], [0.5, 1.0, 0.3]
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "k.csv").write_text("1,0,-1\n1,0,-1\n1,0,-1\n")
    code, out, err = run(capsys, tmp_path / "x.npy", "--kernel", tmp_path / "k.csv", "--json")
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert result["input"]["values"] == "numbers" and result["kernel"]["name"] == "k"
    assert abs(result["stages"][0]["max"] - 2.13) < 1e-5
    (tmp_path / "bad.csv").write_text("1,2\n3\n")
    code, out, err = run(capsys, tmp_path / "bad.csv", "--kernel", "vertical")
    assert code == 2 and "ragged rows" in err and len(err.strip().splitlines()) == 1
